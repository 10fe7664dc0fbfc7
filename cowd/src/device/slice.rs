//! [`Slice`]: a read-only window of a device (a partition), as a device of its own.

use std::sync::Arc;

use super::{BlockDevice, BlockSizes, Capabilities, Result};

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
}
