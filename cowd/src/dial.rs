//! Outgoing TCP connections: every address of a host in turn, optionally from a given local
//! address (an initiator port), each connect bounded by a timeout. The NBD and iSCSI clients
//! both dial through here.
//!
//! ```text
//!  tcp(host, port, from, timeout) ─ resolve ─ each address (of from's family)
//!      from None:      connect_timeout
//!      from Some(ip):  socket, bind(ip:0), non-blocking connect, poll(timeout)
//!  ─> TcpStream, blocking, TCP_NODELAY
//! ```
//!
//! Name resolution is not bounded by the timeout (std offers no way to); the callers give
//! the stream its read and write timeouts.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

/// A TCP connection to `host:port` from `from` (`None`: any local address), trying each of
/// the host's addresses within `timeout`; the last error when none answers.
pub fn tcp(
    host: &str,
    port: u16,
    from: Option<IpAddr>,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let mut last = None;
    for to in (host, port).to_socket_addrs()? {
        let tried = match from {
            None => TcpStream::connect_timeout(&to, timeout),
            Some(ip) if ip.is_ipv4() == to.is_ipv4() => connect_bound(ip, to, timeout),
            Some(_) => continue,
        };
        match tried {
            Ok(s) => {
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        let msg = match from {
            Some(ip) => format!("{host} has no address of the IP family of {ip}"),
            None => format!("{host} has no address"),
        };
        io::Error::new(io::ErrorKind::AddrNotAvailable, msg)
    }))
}
/// A TCP connection from local address `from` (any port) to `to` within `timeout`: std
/// cannot bind before connecting, so this is `socket`, `bind`, non-blocking `connect`, `poll`.
fn connect_bound(from: IpAddr, to: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let family = if to.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let kind = libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
    // SAFETY: socket(2) with constant arguments; the result is checked before use.
    let fd = unsafe { libc::socket(family, kind, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let sock = TcpStream::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let (addr, len) = raw_addr(SocketAddr::new(from, 0));
    // SAFETY: `addr` holds a socket address of `len` bytes of the socket's family.
    if unsafe { libc::bind(fd, (&raw const addr).cast(), len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let (addr, len) = raw_addr(to);
    // SAFETY: as for bind.
    if unsafe { libc::connect(fd, (&raw const addr).cast(), len) } < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        loop {
            // SAFETY: one valid pollfd for the duration of the call.
            match unsafe { libc::poll(&mut p, 1, ms) } {
                0 => return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
                n if n > 0 => break,
                _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => {}
                _ => return Err(io::Error::last_os_error()),
            }
        }
        if let Some(e) = sock.take_error()? {
            return Err(e);
        }
    }
    sock.set_nonblocking(false)?;
    Ok(sock)
}

/// `a` as a C socket address.
fn raw_addr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all zeroes is a valid `sockaddr_storage`.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `sockaddr_storage` is large and aligned enough for every socket address.
            unsafe { std::ptr::write((&raw mut st).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: as above.
            unsafe { std::ptr::write((&raw mut st).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (st, len as libc::socklen_t)
}
