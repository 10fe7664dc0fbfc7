//! [`Slice`]: a read-only window of a device (a partition), as a device of its own.

use std::sync::Arc;

use super::{BlockDevice, BlockSizes, Capabilities, DeviceError, ErrorKind, Op, Result, ZeroFlags};

/// Bytes `start .. start + len` of `inner`, read-only.
#[derive(Debug)]
pub struct Slice {
    inner: Arc<dyn BlockDevice>,
    start: u64,
    len: u64,
}

impl Slice {
    /// The window; `start + len` must lie within `inner`.
    pub fn new(inner: Arc<dyn BlockDevice>, start: u64, len: u64) -> Slice {
        assert!(
            start.checked_add(len).is_some_and(|e| e <= inner.size()),
            "slice outside the device"
        );
        Slice { inner, start, len }
    }
}

impl BlockDevice for Slice {
    fn size(&self) -> u64 {
        self.len
    }

    fn block_sizes(&self) -> BlockSizes {
        self.inner.block_sizes()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            read_only: true,
            ..Capabilities::default()
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.inner.read_at(buf, self.start + offset)
    }

    fn write_at(&self, _: &[u8], offset: u64, _: bool) -> Result<()> {
        Err(DeviceError::new(ErrorKind::ReadOnly, Op::Write, offset, 0))
    }

    fn write_zeroes(&self, offset: u64, len: u64, _: ZeroFlags) -> Result<()> {
        Err(DeviceError::new(
            ErrorKind::ReadOnly,
            Op::WriteZeroes,
            offset,
            len,
        ))
    }

    fn trim(&self, offset: u64, len: u64, _: bool) -> Result<()> {
        Err(DeviceError::new(ErrorKind::ReadOnly, Op::Trim, offset, len))
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }
}
