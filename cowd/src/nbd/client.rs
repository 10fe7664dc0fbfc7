//! The NBD client: an export of another server as a [`BlockDevice`] (a mover's copy target).
//!
//! ```text
//!  connect: socket (timeout) ─ greeting ─ GO(export, BLOCK_SIZE) ─ INFO… ─ ACK ─> NbdDevice
//!
//!  thread A ─┐             ┌─ request (+ payload) ─────────> server
//!  thread B ─┼─ lock(conn) ┤   one request in flight
//!  thread C ─┘             └─ simple reply (+ data) <──────
//! ```
//!
//! Invariant: whenever the connection's lock is free and `broken` is unset, the stream is
//! between requests (nothing half sent, nothing half read). An I/O error, a timeout, a framing
//! error or a panic in the middle of a request breaks it, so the connection is marked broken
//! and shut down, and every later request fails at once with [`ErrorKind::Io`]: the caller (a
//! data mover) fails over to another path; this device never reconnects on its own. An errno
//! reply from the server keeps the stream in step and fails only its request.
//!
//! Every socket operation has the timeout given at connect, so a dead or frozen server gives
//! an error, never a hang. Only simple replies are negotiated; requests larger than the
//! server's maximum payload (or 64 MiB for TRIM and WRITE_ZEROES) go out as several.
//!
//! Connecting the socket (optionally from a given local address) is `client/socket.rs`, the
//! handshake `client/handshake.rs`; this file is the device and its transmission phase.

mod handshake;
mod socket;

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, Shutdown};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::proto::*;
use super::stream::Stream;
use super::uri::NbdUri;
use crate::device::{
    BlockDevice, BlockSizes, Capabilities, DeviceError, ErrorKind, Op, Result, ZeroFlags,
};

/// TRIM and WRITE_ZEROES go out in pieces of at most this many bytes, so the server's work
/// for one request stays well inside the timeout (a multiple of every legal minimum block).
const ZERO_CHUNK: u64 = 64 << 20;

/// Why [`NbdDevice::connect`] failed. Every message names the URI.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Nothing answered: connection refused or timed out, no route, no socket file.
    #[error("{uri}: cannot reach the NBD server: {source}")]
    Unreachable { uri: String, source: io::Error },
    /// The server answered, then went silent, closed, or announced its shutdown.
    #[error("{uri}: lost the NBD server during the handshake: {source}")]
    Lost { uri: String, source: io::Error },
    /// The server refused the export (unknown, policy, TLS required, ...).
    #[error("{uri}: the NBD server refused export {export:?}: {reason}")]
    Refused {
        uri: String,
        export: String,
        reason: String,
    },
    /// The peer broke the protocol, or is not an NBD server this client can talk to.
    #[error("{uri}: NBD handshake failed: {reason}")]
    Protocol { uri: String, reason: String },
}

impl ConnectError {
    /// The path is down (nothing answers, or it stopped answering); another path may work.
    /// False when a server answered and refused: the same request elsewhere is no better.
    pub fn unreachable(&self) -> bool {
        matches!(
            self,
            ConnectError::Unreachable { .. } | ConnectError::Lost { .. }
        )
    }
}

/// An export on an NBD server, reached over one connection.
pub struct NbdDevice {
    uri: NbdUri,
    size: u64,
    /// Transmission flags (`TFLAG_*`); 0 when the server did not set `HAS_FLAGS`.
    flags: u16,
    sizes: BlockSizes,
    timeout: Duration,
    /// The connection. Held for a whole request, from sending it to reading its reply's last
    /// byte: one request in flight is what lets a std mutex be the whole scheduler (no reply
    /// demultiplexing, no reader thread); a mover that needs more parallel NBD I/O opens more
    /// devices.
    conn: Mutex<Conn>,
}

struct Conn {
    stream: Stream,
    cookie: u64,
    /// Why the stream is out of step (then shut down); set once, never cleared.
    broken: Option<String>,
}

/// Where a request's payload goes.
enum Payload<'a> {
    None,
    Send(&'a [u8]),
    Receive(&'a mut [u8]),
}

impl NbdDevice {
    /// Connects to `uri` and negotiates its export; `timeout` bounds every socket operation,
    /// then and for the device's whole life.
    pub fn connect(uri: &NbdUri, timeout: Duration) -> std::result::Result<Self, ConnectError> {
        NbdDevice::connect_from(uri, None, timeout)
    }

    /// Like [`connect`](Self::connect), from the local address `from` (an initiator port) for
    /// a TCP URI; a Unix socket URI ignores `from`.
    pub fn connect_from(
        uri: &NbdUri,
        from: Option<IpAddr>,
        timeout: Duration,
    ) -> std::result::Result<Self, ConnectError> {
        let timeout = timeout.max(Duration::from_millis(1));
        let mut stream = socket::connect(&uri.address, from, timeout).map_err(|source| {
            ConnectError::Unreachable {
                uri: uri.to_string(),
                source,
            }
        })?;
        let agreed = handshake::negotiate(&mut stream, uri, timeout)?;
        Ok(NbdDevice {
            uri: uri.clone(),
            size: agreed.size,
            flags: agreed.flags,
            sizes: agreed.sizes,
            timeout,
            conn: Mutex::new(Conn {
                stream,
                cookie: 0,
                broken: None,
            }),
        })
    }

    pub fn uri(&self) -> &NbdUri {
        &self.uri
    }

    /// True once an I/O or protocol error broke the connection (every request now fails).
    pub fn is_broken(&self) -> bool {
        self.lock().broken.is_some()
    }

    fn has(&self, tflag: u16) -> bool {
        self.flags & tflag != 0
    }

    /// The connection, also after a thread panicked holding it (which breaks it).
    fn lock(&self) -> MutexGuard<'_, Conn> {
        self.conn.lock().unwrap_or_else(|poisoned| {
            let mut c = poisoned.into_inner();
            if c.broken.is_none() {
                c.broken = Some("a thread panicked in the middle of a request".into());
                let _ = c.stream.shutdown(Shutdown::Both);
            }
            c
        })
    }

    /// Sends one request and reads its reply, under the connection's lock.
    fn request(
        &self,
        op: Op,
        cmd: u16,
        flags: u16,
        offset: u64,
        len: u64,
        p: Payload,
    ) -> Result<()> {
        let mut conn = self.lock();
        let io_error = |e: io::Error| DeviceError {
            kind: ErrorKind::Io,
            op,
            offset,
            len,
            source: Some(io::Error::new(e.kind(), format!("{}: {e}", self.uri))),
        };
        if let Some(why) = &conn.broken {
            let msg = format!("connection broken earlier ({why}); not reconnecting");
            return Err(io_error(io::Error::new(io::ErrorKind::NotConnected, msg)));
        }
        match conn.round_trip(cmd, flags, offset, len as u32, p) {
            Ok(0) => Ok(()),
            Ok(errno) => Err(DeviceError {
                kind: error_kind(errno, flags & CMD_FLAG_FAST_ZERO != 0),
                op,
                offset,
                len,
                source: Some(io::Error::from_raw_os_error(errno as i32)),
            }),
            Err(e) => {
                let e = explain(e, self.timeout);
                conn.broken = Some(e.to_string());
                let _ = conn.stream.shutdown(Shutdown::Both);
                Err(io_error(e))
            }
        }
    }

    /// FUA for a request: the flag when the server takes it, else a flush afterwards.
    fn fua_flag(&self, fua: bool) -> u16 {
        if fua && self.has(TFLAG_SEND_FUA) {
            CMD_FLAG_FUA
        } else {
            0
        }
    }

    fn flush_unless_fua(&self, fua: bool) -> Result<()> {
        if fua && !self.has(TFLAG_SEND_FUA) {
            self.flush()
        } else {
            Ok(())
        }
    }

    fn refuse_if_read_only(&self, op: Op, offset: u64, len: u64) -> Result<()> {
        match self.has(TFLAG_READ_ONLY) {
            true => Err(DeviceError::new(ErrorKind::ReadOnly, op, offset, len)),
            false => Ok(()),
        }
    }

    /// Sends `cmd` (TRIM or WRITE_ZEROES) for `len` bytes in pieces of [`ZERO_CHUNK`].
    fn ranged(&self, op: Op, cmd: u16, flags: u16, offset: u64, len: u64) -> Result<()> {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(ZERO_CHUNK);
            self.request(op, cmd, flags, offset + done, n, Payload::None)?;
            done += n;
        }
        Ok(())
    }
}

impl Conn {
    /// One request and its simple reply; the server's errno (0: success).
    fn round_trip(
        &mut self,
        cmd: u16,
        flags: u16,
        offset: u64,
        len: u32,
        p: Payload,
    ) -> io::Result<u32> {
        self.cookie += 1;
        let h = request_header(cmd, flags, self.cookie, offset, len);
        let out: &[u8] = if let Payload::Send(b) = &p { b } else { &[] };
        self.stream
            .write_all_vectored(&mut [IoSlice::new(&h), IoSlice::new(out)])?;
        let mut r = [0u8; SIMPLE_REPLY_LEN];
        self.stream.read_exact(&mut r)?;
        let invalid = |msg| io::Error::new(io::ErrorKind::InvalidData, msg);
        match be32(&r, 0) {
            SIMPLE_REPLY_MAGIC => {}
            m => {
                return Err(invalid(format!(
                    "reply magic {m:#x}, expected a simple reply"
                )));
            }
        }
        if be64(&r, 8) != self.cookie {
            let msg = format!("reply to cookie {}, expected {}", be64(&r, 8), self.cookie);
            return Err(invalid(msg));
        }
        let errno = be32(&r, 4);
        if let (0, Payload::Receive(buf)) = (errno, p) {
            self.stream.read_exact(buf)?;
        }
        Ok(errno)
    }
}

impl BlockDevice for NbdDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn block_sizes(&self) -> BlockSizes {
        self.sizes
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            read_only: self.has(TFLAG_READ_ONLY),
            flush: self.has(TFLAG_SEND_FLUSH),
            fua: self.has(TFLAG_SEND_FUA),
            trim: self.has(TFLAG_SEND_TRIM),
            zero: self.has(TFLAG_SEND_WRITE_ZEROES),
            fast_zero: self.has(TFLAG_SEND_FAST_ZERO),
            multi_conn: self.has(TFLAG_CAN_MULTI_CONN),
            cache: false,
            extents: false,
            rotational: self.has(TFLAG_ROTATIONAL),
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let max = self.sizes.maximum as usize;
        for (i, piece) in buf.chunks_mut(max).enumerate() {
            let at = offset + (i * max) as u64;
            let n = piece.len() as u64;
            self.request(Op::Read, CMD_READ, 0, at, n, Payload::Receive(piece))?;
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.refuse_if_read_only(Op::Write, offset, buf.len() as u64)?;
        let max = self.sizes.maximum as usize;
        let flags = self.fua_flag(fua);
        for (i, piece) in buf.chunks(max).enumerate() {
            let at = offset + (i * max) as u64;
            let n = piece.len() as u64;
            self.request(Op::Write, CMD_WRITE, flags, at, n, Payload::Send(piece))?;
        }
        self.flush_unless_fua(fua)
    }

    /// Without `SEND_WRITE_ZEROES` the zeroes are written as data (`capabilities().zero` says
    /// so), and a fast zero is refused at once with [`ErrorKind::NotFast`].
    fn write_zeroes(&self, offset: u64, len: u64, flags: ZeroFlags) -> Result<()> {
        self.refuse_if_read_only(Op::WriteZeroes, offset, len)?;
        let not_fast = || {
            Err(DeviceError::new(
                ErrorKind::NotFast,
                Op::WriteZeroes,
                offset,
                len,
            ))
        };
        if !self.has(TFLAG_SEND_WRITE_ZEROES) {
            if flags.fast {
                return not_fast();
            }
            let zeroes = vec![0u8; len.min(u64::from(self.sizes.maximum)) as usize];
            let mut done = 0;
            while done < len {
                let n = (len - done).min(zeroes.len() as u64);
                self.write_at(&zeroes[..n as usize], offset + done, flags.fua)?;
                done += n;
            }
            return Ok(());
        }
        if flags.fast && !self.has(TFLAG_SEND_FAST_ZERO) {
            return not_fast();
        }
        let mut f = self.fua_flag(flags.fua);
        if !flags.may_trim {
            f |= CMD_FLAG_NO_HOLE;
        }
        if flags.fast {
            f |= CMD_FLAG_FAST_ZERO;
        }
        self.ranged(Op::WriteZeroes, CMD_WRITE_ZEROES, f, offset, len)?;
        self.flush_unless_fua(flags.fua)
    }

    /// Without `SEND_TRIM` a trim does nothing (it is a hint), beyond the flush `fua` asks for.
    fn trim(&self, offset: u64, len: u64, fua: bool) -> Result<()> {
        self.refuse_if_read_only(Op::Trim, offset, len)?;
        if self.has(TFLAG_SEND_TRIM) {
            self.ranged(Op::Trim, CMD_TRIM, self.fua_flag(fua), offset, len)?;
            self.flush_unless_fua(fua)
        } else if fua {
            self.flush()
        } else {
            Ok(())
        }
    }

    fn flush(&self) -> Result<()> {
        match self.has(TFLAG_SEND_FLUSH) {
            true => self.request(Op::Flush, CMD_FLUSH, 0, 0, 0, Payload::None),
            false => Ok(()),
        }
    }
}

impl Drop for NbdDevice {
    /// Says goodbye (`NBD_CMD_DISC`, no reply) on a connection still in step.
    fn drop(&mut self) {
        let conn = self.conn.get_mut().unwrap_or_else(|p| p.into_inner());
        if conn.broken.is_none() {
            let h = request_header(CMD_DISC, 0, conn.cookie + 1, 0, 0);
            let _ = conn.stream.write_all(&h);
        }
        let _ = conn.stream.shutdown(Shutdown::Both);
    }
}

impl fmt::Debug for NbdDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NbdDevice")
            .field("uri", &self.uri.to_string())
            .field("size", &self.size)
            .field("flags", &format_args!("{:#x}", self.flags))
            .field("block_sizes", &self.sizes)
            .finish_non_exhaustive()
    }
}

/// The error kind of a server's errno reply (NBD sends a subset of the Linux errno values).
pub(crate) fn error_kind(errno: u32, fast_zero: bool) -> ErrorKind {
    match errno {
        EPERM => ErrorKind::ReadOnly,
        ENOSPC => ErrorKind::NoSpace,
        EINVAL => ErrorKind::OutOfRange,
        ENOTSUP if fast_zero => ErrorKind::NotFast,
        ENOTSUP => ErrorKind::Unsupported,
        _ => ErrorKind::Io,
    }
}

fn request_header(cmd: u16, flags: u16, cookie: u64, offset: u64, len: u32) -> [u8; REQUEST_LEN] {
    let mut h = [0u8; REQUEST_LEN];
    h[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    h[4..6].copy_from_slice(&flags.to_be_bytes());
    h[6..8].copy_from_slice(&cmd.to_be_bytes());
    h[8..16].copy_from_slice(&cookie.to_be_bytes());
    h[16..24].copy_from_slice(&offset.to_be_bytes());
    h[24..28].copy_from_slice(&len.to_be_bytes());
    h
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(b[at..at + 2].try_into().unwrap())
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// Rewords the errors of a silent or closed peer.
fn explain(e: io::Error, timeout: Duration) -> io::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {timeout:?}"),
        ),
        io::ErrorKind::UnexpectedEof => io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ),
        _ => e,
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
