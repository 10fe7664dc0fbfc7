//! [`Checked`]: the top layer of every stack; validates each request once.
//!
//! Everything below may assume: non-zero length, no overflow, inside the device, aligned to
//! the minimum block size, not a write to a read-only device, only advertised operations.
//! Errors follow the NBD rules: out-of-range writes are ENOSPC, other out-of-range requests
//! EINVAL, writes to a read-only device EPERM.

use std::sync::Arc;

use super::{
    BlockDevice, BlockSizes, CachedRange, Capabilities, DeviceError, ErrorKind, Extent, Op, Result,
    ZeroFlags,
};

/// Validating wrapper around a device stack.
#[derive(Debug)]
pub struct Checked {
    inner: Arc<dyn BlockDevice>,
    size: u64,
    align: u64,
    caps: Capabilities,
}

impl Checked {
    /// Wraps `inner`; `read_only` forces a read-only view of a writable device.
    pub fn new(inner: Arc<dyn BlockDevice>, read_only: bool) -> Self {
        let mut caps = inner.capabilities();
        caps.read_only |= read_only;
        let size = inner.size();
        let align = u64::from(inner.block_sizes().minimum.max(1));
        Checked {
            inner,
            size,
            align,
            caps,
        }
    }

    fn check(&self, op: Op, offset: u64, len: u64) -> Result<()> {
        let err = |kind| Err(DeviceError::new(kind, op, offset, len));
        let writes = matches!(op, Op::Write | Op::WriteZeroes | Op::Trim);
        if writes && self.caps.read_only {
            return err(ErrorKind::ReadOnly);
        }
        match op {
            Op::Trim if !self.caps.trim => return err(ErrorKind::Unsupported),
            Op::WriteZeroes if !self.caps.zero => return err(ErrorKind::Unsupported),
            _ => {}
        }
        let end = offset.checked_add(len);
        if len == 0 || end.is_none_or(|e| e > self.size) {
            let beyond = len != 0 && matches!(op, Op::Write | Op::WriteZeroes);
            return err(if beyond {
                ErrorKind::NoSpace
            } else {
                ErrorKind::OutOfRange
            });
        }
        // Trim is advisory: a misaligned trim is narrowed to whole blocks by `trim` instead.
        if op != Op::Trim && (offset % self.align != 0 || len % self.align != 0) {
            return err(ErrorKind::Misaligned);
        }
        Ok(())
    }
}

impl BlockDevice for Checked {
    fn size(&self) -> u64 {
        self.size
    }

    fn block_sizes(&self) -> BlockSizes {
        self.inner.block_sizes()
    }

    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.check(Op::Read, offset, buf.len() as u64)?;
        self.inner.read_at(buf, offset)
    }

    fn try_read_at(&self, buf: &mut [u8], offset: u64) -> Result<bool> {
        self.check(Op::Read, offset, buf.len() as u64)?;
        self.inner.try_read_at(buf, offset)
    }

    fn cached_range(&self, offset: u64, len: usize) -> Option<CachedRange> {
        self.check(Op::Read, offset, len as u64).ok()?;
        self.inner.cached_range(offset, len)
    }

    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.check(Op::Write, offset, buf.len() as u64)?;
        self.inner.write_at(buf, offset, fua)
    }

    fn try_write_at(&self, buf: &[u8], offset: u64, fua: bool) -> Result<bool> {
        self.check(Op::Write, offset, buf.len() as u64)?;
        self.inner.try_write_at(buf, offset, fua)
    }

    fn write_zeroes(&self, offset: u64, len: u64, flags: ZeroFlags) -> Result<()> {
        self.check(Op::WriteZeroes, offset, len)?;
        if flags.fast && !self.caps.fast_zero {
            return Err(DeviceError::new(
                ErrorKind::NotFast,
                Op::WriteZeroes,
                offset,
                len,
            ));
        }
        self.inner.write_zeroes(offset, len, flags)
    }

    fn trim(&self, offset: u64, len: u64, fua: bool) -> Result<()> {
        self.check(Op::Trim, offset, len)?;
        let start = offset.next_multiple_of(self.align);
        let end = (offset + len) / self.align * self.align;
        if end <= start {
            return if fua { self.inner.flush() } else { Ok(()) };
        }
        self.inner.trim(start, end - start, fua)
    }

    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    fn cache(&self, offset: u64, len: u64) -> Result<()> {
        self.check(Op::Cache, offset, len)?;
        self.inner.cache(offset, len)
    }

    fn extents(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        self.check(Op::Extents, offset, len)?;
        self.inner.extents(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{MemoryDevice, conformance};

    fn dev(ro: bool) -> Checked {
        Checked::new(Arc::new(MemoryDevice::new(1 << 20)), ro)
    }

    #[test]
    fn conformance() {
        conformance::run_all(&|size| {
            conformance::Subject::new(Checked::new(Arc::new(MemoryDevice::new(size)), false))
        });
    }

    #[test]
    fn ranges_follow_the_nbd_rules() {
        let d = dev(false);
        let kind = |r: Result<()>| r.unwrap_err().kind;
        let mut b = [0u8; 16];
        assert_eq!(
            kind(d.read_at(&mut b, (1 << 20) - 8)),
            ErrorKind::OutOfRange
        );
        assert_eq!(
            kind(d.write_at(&b, (1 << 20) - 8, false)),
            ErrorKind::NoSpace
        );
        assert_eq!(
            kind(d.write_at(&b, u64::MAX - 4, false)),
            ErrorKind::NoSpace
        );
        assert_eq!(kind(d.trim(u64::MAX, 2, false)), ErrorKind::OutOfRange);
        assert_eq!(kind(d.read_at(&mut [], 0)), ErrorKind::OutOfRange);
        assert_eq!(kind(d.cache(0, 0)), ErrorKind::OutOfRange);
        assert_eq!(
            d.extents(1 << 20, 1).unwrap_err().kind,
            ErrorKind::OutOfRange
        );
        let z = ZeroFlags::default();
        assert_eq!(kind(d.write_zeroes(1 << 20, 1, z)), ErrorKind::NoSpace);
        d.read_at(&mut b, (1 << 20) - 16).unwrap();
    }

    #[test]
    fn read_only_refuses_every_write() {
        let d = dev(true);
        let kind = |r: Result<()>| r.unwrap_err().kind;
        assert_eq!(kind(d.write_at(&[1], 0, false)), ErrorKind::ReadOnly);
        assert_eq!(kind(d.trim(0, 1, false)), ErrorKind::ReadOnly);
        assert_eq!(
            kind(d.write_zeroes(0, 1, ZeroFlags::default())),
            ErrorKind::ReadOnly
        );
        assert_eq!(
            d.try_write_at(&[1], 0, false).unwrap_err().kind,
            ErrorKind::ReadOnly
        );
        assert!(d.capabilities().read_only);
        d.read_at(&mut [0; 4], 0).unwrap();
    }

    #[test]
    fn misaligned_requests_are_refused_when_the_device_needs_alignment() {
        #[derive(Debug)]
        struct Sector(MemoryDevice);
        impl BlockDevice for Sector {
            fn size(&self) -> u64 {
                self.0.size()
            }
            fn block_sizes(&self) -> BlockSizes {
                BlockSizes {
                    minimum: 512,
                    ..BlockSizes::default()
                }
            }
            fn capabilities(&self) -> Capabilities {
                self.0.capabilities()
            }
            fn read_at(&self, b: &mut [u8], o: u64) -> Result<()> {
                self.0.read_at(b, o)
            }
            fn write_at(&self, b: &[u8], o: u64, f: bool) -> Result<()> {
                self.0.write_at(b, o, f)
            }
            fn write_zeroes(&self, o: u64, l: u64, f: ZeroFlags) -> Result<()> {
                self.0.write_zeroes(o, l, f)
            }
            fn trim(&self, o: u64, l: u64, f: bool) -> Result<()> {
                self.0.trim(o, l, f)
            }
            fn flush(&self) -> Result<()> {
                Ok(())
            }
        }
        let d = Checked::new(Arc::new(Sector(MemoryDevice::new(1 << 20))), false);
        let e = d.read_at(&mut [0; 512], 100).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Misaligned);
        assert_eq!(
            d.write_at(&[0; 100], 0, false).unwrap_err().kind,
            ErrorKind::Misaligned
        );
        d.write_at(&[0; 1024], 512, false).unwrap();
    }
}
