//! The error of a block operation: what went wrong, in which operation, where.

use std::fmt;
use std::io;

/// The operation that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
    WriteZeroes,
    Trim,
    Flush,
    Cache,
    Extents,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Read => "read",
            Op::Write => "write",
            Op::WriteZeroes => "write-zeroes",
            Op::Trim => "trim",
            Op::Flush => "flush",
            Op::Cache => "cache",
            Op::Extents => "block-status",
        })
    }
}

/// Why an operation failed; each kind maps to one NBD errno at the protocol edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// Range beyond the end of the device, wrapping, or of length zero (EINVAL).
    #[error("range outside the device")]
    OutOfRange,
    /// A write beyond the end of the device, or the backing store is full (ENOSPC).
    #[error("no space")]
    NoSpace,
    /// Offset or length not a multiple of the minimum block size (EINVAL).
    #[error("not aligned to the minimum block size")]
    Misaligned,
    /// The device is read-only (EPERM).
    #[error("read-only device")]
    ReadOnly,
    /// The operation is not offered by this device (EINVAL).
    #[error("operation not supported")]
    Unsupported,
    /// A fast zero was asked for and cannot be done quickly (ENOTSUP).
    #[error("cannot zero quickly")]
    NotFast,
    /// The backing store failed (errno of the source, else EIO).
    #[error("I/O error")]
    Io,
}

/// A failed block operation with its context.
#[derive(Debug, thiserror::Error)]
pub struct DeviceError {
    pub kind: ErrorKind,
    pub op: Op,
    pub offset: u64,
    pub len: u64,
    #[source]
    pub source: Option<io::Error>,
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} bytes at offset {}: {}",
            self.op, self.len, self.offset, self.kind
        )?;
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl DeviceError {
    /// An error without an underlying OS error.
    pub fn new(kind: ErrorKind, op: Op, offset: u64, len: u64) -> Self {
        DeviceError {
            kind,
            op,
            offset,
            len,
            source: None,
        }
    }

    /// An error from the OS, classified by its errno.
    pub fn io(op: Op, offset: u64, len: u64, source: io::Error) -> Self {
        let kind = match source.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG) => ErrorKind::NoSpace,
            Some(libc::EROFS | libc::EPERM | libc::EACCES) => ErrorKind::ReadOnly,
            _ => ErrorKind::Io,
        };
        DeviceError {
            kind,
            op,
            offset,
            len,
            source: Some(source),
        }
    }

    /// The NBD error value for this error (a subset of Linux errno values).
    pub fn nbd_errno(&self) -> u32 {
        match self.kind {
            ErrorKind::OutOfRange | ErrorKind::Misaligned | ErrorKind::Unsupported => 22,
            ErrorKind::NoSpace => 28,
            ErrorKind::ReadOnly => 1,
            ErrorKind::NotFast => 95,
            ErrorKind::Io => match self.source.as_ref().and_then(|e| e.raw_os_error()) {
                Some(libc::ENOMEM) => 12,
                Some(libc::EINVAL) => 22,
                Some(libc::EOVERFLOW) => 75,
                Some(libc::ESHUTDOWN) => 108,
                _ => 5,
            },
        }
    }
}
