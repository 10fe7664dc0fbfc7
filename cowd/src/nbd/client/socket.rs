//! Connecting the client's socket: a Unix socket, or TCP from any or a given local address.
//!
//! ```text
//!  nbd+unix:///E?socket=P ── connect(P)                     (no wait: the kernel queues it)
//!  nbd://HOST:PORT/E ─ dial::tcp(HOST, PORT, from, timeout)
//! ```
//!
//! A Unix socket's connect does not wait for the server's accept (only a full backlog would
//! block it), so it needs no timeout; TCP connects are bounded by the timeout, name
//! resolution is not. The stream gets read and write timeouts before anything is sent.

use std::io;
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::dial;
use crate::nbd::stream::Stream;
use crate::nbd::uri::Address;

/// Connects to `address` and gives the stream read and write timeouts of `timeout`.
pub(super) fn connect(
    address: &Address,
    from: Option<IpAddr>,
    timeout: Duration,
) -> io::Result<Stream> {
    let s = open(address, from, timeout)?;
    match &s {
        Stream::Unix(u) => {
            u.set_read_timeout(Some(timeout))?;
            u.set_write_timeout(Some(timeout))?;
        }
        Stream::Tcp(t) => {
            t.set_read_timeout(Some(timeout))?;
            t.set_write_timeout(Some(timeout))?;
        }
    }
    Ok(s)
}

/// A Unix socket, or TCP through [`crate::dial`].
fn open(address: &Address, from: Option<IpAddr>, timeout: Duration) -> io::Result<Stream> {
    match address {
        Address::Unix(p) => UnixStream::connect(p).map(Stream::Unix),
        Address::Tcp { host, port } => dial::tcp(host, *port, from, timeout).map(Stream::Tcp),
    }
}
