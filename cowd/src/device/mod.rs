//! The block layer: one [`BlockDevice`] trait that every layer serving blocks implements.
//!
//! A stack of layers holds `inner: Arc<dyn BlockDevice>` and forwards, in the manner of nbdkit
//! filters:
//!
//! ```text
//!   NBD frontend -> Checked -> (engine layers, later) -> FileDevice | MemoryDevice
//!                                   FaultDevice may sit anywhere in tests
//! ```
//!
//! [`Checked`] at the top validates every request once (range, alignment, read-only,
//! capability); the layers below may assume valid requests.

mod buf;
mod cached;
mod checked;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod error;
mod fault;
mod file;
mod memory;
mod slice;
mod sys;

pub use buf::{BufPool, IoBuf};
pub use cached::CachedRange;
pub use checked::Checked;
pub use error::{DeviceError, ErrorKind, Op};
pub use fault::{FaultControl, FaultDevice, OpMask};
pub use file::{FileDevice, FileOptions, OpenError};
pub use memory::MemoryDevice;
pub use slice::Slice;

/// Result of a block operation.
pub type Result<T> = std::result::Result<T, DeviceError>;

/// Request size constraints of a device, as advertised over NBD (`NBD_INFO_BLOCK_SIZE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSizes {
    /// Every offset and length must be a multiple of this (1 = byte granular).
    pub minimum: u32,
    /// The size that avoids read-modify-write or other penalties.
    pub preferred: u32,
    /// The largest payload of one READ or WRITE.
    pub maximum: u32,
}

/// The largest READ/WRITE payload cowd accepts (32 MiB).
pub const MAX_PAYLOAD: u32 = 32 << 20;

impl Default for BlockSizes {
    fn default() -> Self {
        BlockSizes {
            minimum: 1,
            preferred: 4096,
            maximum: MAX_PAYLOAD,
        }
    }
}

/// What a device can do beyond read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// Writes are refused.
    pub read_only: bool,
    /// `flush` makes completed writes durable (otherwise it is a no-op).
    pub flush: bool,
    /// `write_at(.., fua = true)` is durable on return.
    pub fua: bool,
    /// `trim` may deallocate.
    pub trim: bool,
    /// `write_zeroes` is efficient (not only a loop of writes).
    pub zero: bool,
    /// `write_zeroes` with `fast` can fail quickly instead of writing slowly.
    pub fast_zero: bool,
    /// One flush covers writes made through every handle of the device.
    pub multi_conn: bool,
    /// `cache` does something useful (prefetch).
    pub cache: bool,
    /// `extents` reports real allocation (holes), not only "all data".
    pub extents: bool,
    /// The medium seeks (spinning disk).
    pub rotational: bool,
}

/// Flags of [`BlockDevice::write_zeroes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ZeroFlags {
    /// The range may be deallocated (punched) as long as it reads back as zeroes.
    pub may_trim: bool,
    /// Fail with [`ErrorKind::NotFast`] rather than fall back to writing zeroes.
    pub fast: bool,
    /// Durable before return.
    pub fua: bool,
}

/// Allocation state of a run of bytes (`base:allocation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Bytes in this run.
    pub length: u64,
    /// Not allocated in the backing store.
    pub hole: bool,
    /// Reads as zeroes.
    pub zero: bool,
}

/// A device that serves blocks. Synchronous; shared between threads (`&self`).
///
/// Offsets and lengths are bytes. Below [`Checked`], callers guarantee `offset + len <= size`,
/// alignment to `block_sizes().minimum`, non-zero lengths and only advertised operations.
///
/// A read-only device (a snapshot view, a generation, a partition window) implements only the
/// reading side and says `read_only` in its capabilities: the writing methods' defaults refuse
/// with [`ErrorKind::ReadOnly`], and `flush` has nothing to make durable. A writable device
/// overrides all four.
pub trait BlockDevice: Send + Sync + std::fmt::Debug {
    /// Size in bytes.
    fn size(&self) -> u64;

    /// Request size constraints.
    fn block_sizes(&self) -> BlockSizes {
        BlockSizes::default()
    }

    /// Optional operations this device supports.
    fn capabilities(&self) -> Capabilities;

    /// Fills `buf` from `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;

    /// Like [`read_at`](Self::read_at), but only if it can complete without blocking (data in
    /// memory). `Ok(false)` means "not done, call `read_at` from a thread that may block".
    fn try_read_at(&self, _buf: &mut [u8], _offset: u64) -> Result<bool> {
        Ok(false)
    }

    /// Where the `len` bytes at `offset` lie whole in an open file's page cache right now,
    /// as [`read_at`](Self::read_at) would return them: a transport may send them from there
    /// ([`CachedRange::send`]) without reading them. `None` (the default): read them.
    fn cached_range(&self, _offset: u64, _len: usize) -> Option<CachedRange> {
        None
    }

    /// Writes `buf` at `offset`; with `fua` the data is durable before return.
    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        let _ = (buf, fua);
        Err(DeviceError::new(ErrorKind::ReadOnly, Op::Write, offset, 0))
    }

    /// Like [`write_at`](Self::write_at), but only if it can complete without blocking.
    fn try_write_at(&self, _buf: &[u8], _offset: u64, _fua: bool) -> Result<bool> {
        Ok(false)
    }

    /// Makes `len` bytes at `offset` read as zeroes.
    fn write_zeroes(&self, offset: u64, len: u64, flags: ZeroFlags) -> Result<()> {
        let _ = flags;
        Err(DeviceError::new(
            ErrorKind::ReadOnly,
            Op::WriteZeroes,
            offset,
            len,
        ))
    }

    /// Hints that `len` bytes at `offset` are no longer needed (contents become unspecified).
    fn trim(&self, offset: u64, len: u64, fua: bool) -> Result<()> {
        let _ = fua;
        Err(DeviceError::new(ErrorKind::ReadOnly, Op::Trim, offset, len))
    }

    /// Makes every completed write durable.
    fn flush(&self) -> Result<()> {
        Ok(())
    }

    /// Prefetches a range (a hint; may do nothing).
    fn cache(&self, _offset: u64, _len: u64) -> Result<()> {
        Ok(())
    }

    /// Allocation map of `len` bytes from `offset`: consecutive extents starting at `offset`,
    /// covering at most `len` bytes and at least one byte.
    fn extents(&self, _offset: u64, len: u64) -> Result<Vec<Extent>> {
        Ok(vec![Extent {
            length: len,
            hole: false,
            zero: false,
        }])
    }
}

/// Appends an extent, merging it with the previous one when the state is the same.
pub fn push_extent(out: &mut Vec<Extent>, e: Extent) {
    if e.length == 0 {
        return;
    }
    match out.last_mut() {
        Some(last) if last.hole == e.hole && last.zero == e.zero => last.length += e.length,
        _ => out.push(e),
    }
}

/// True when every byte of `buf` is zero (vectorises well).
pub fn is_zero(buf: &[u8]) -> bool {
    let mut chunks = buf.chunks_exact(64);
    for c in &mut chunks {
        let mut acc = 0u64;
        for w in c.chunks_exact(8) {
            acc |= u64::from_ne_bytes(w.try_into().unwrap());
        }
        if acc != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| b == 0)
}
