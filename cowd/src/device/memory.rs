//! [`MemoryDevice`]: a sparse in-memory device, for tests and models.
//!
//! Storage is a set of 64 KiB pages allocated on first write, spread over sharded locks so
//! concurrent requests to different pages do not contend. Unallocated pages read as zeroes and
//! are reported as holes.

use std::collections::HashMap;
use std::sync::RwLock;

use super::{BlockDevice, Capabilities, Extent, Result, ZeroFlags, is_zero, push_extent};

const PAGE: u64 = 64 << 10;
const SHARDS: usize = 64;

type Page = Box<[u8]>;

/// A sparse device held in memory.
#[derive(Debug)]
pub struct MemoryDevice {
    size: u64,
    shards: Vec<RwLock<HashMap<u64, Page>>>,
}

impl MemoryDevice {
    /// A device of `size` bytes reading as zeroes.
    pub fn new(size: u64) -> Self {
        MemoryDevice {
            size,
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
        }
    }

    fn shard(&self, page: u64) -> &RwLock<HashMap<u64, Page>> {
        &self.shards[(page % SHARDS as u64) as usize]
    }

    /// Calls `f(page index, offset in page, byte range in the request)` for each page touched.
    fn for_pages(offset: u64, len: u64, mut f: impl FnMut(u64, usize, std::ops::Range<usize>)) {
        let mut at = offset;
        let end = offset + len;
        while at < end {
            let page = at / PAGE;
            let in_page = (at % PAGE) as usize;
            let n = (PAGE - at % PAGE).min(end - at);
            let start = (at - offset) as usize;
            f(page, in_page, start..start + n as usize);
            at += n;
        }
    }

    /// Zeroes a range; whole pages are freed.
    fn zero(&self, offset: u64, len: u64) {
        Self::for_pages(offset, len, |page, in_page, r| {
            let mut shard = self.shard(page).write().unwrap();
            if r.len() as u64 == PAGE {
                shard.remove(&page);
            } else if let Some(p) = shard.get_mut(&page) {
                p[in_page..in_page + r.len()].fill(0);
                if is_zero(p) {
                    shard.remove(&page);
                }
            }
        });
    }
}

impl BlockDevice for MemoryDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            flush: true,
            fua: true,
            trim: true,
            zero: true,
            fast_zero: true,
            multi_conn: true,
            extents: true,
            ..Capabilities::default()
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        Self::for_pages(offset, buf.len() as u64, |page, in_page, r| {
            let shard = self.shard(page).read().unwrap();
            match shard.get(&page) {
                Some(p) => buf[r.clone()].copy_from_slice(&p[in_page..in_page + r.len()]),
                None => buf[r].fill(0),
            }
        });
        Ok(())
    }

    fn try_read_at(&self, buf: &mut [u8], offset: u64) -> Result<bool> {
        self.read_at(buf, offset).map(|()| true)
    }

    fn write_at(&self, buf: &[u8], offset: u64, _fua: bool) -> Result<()> {
        Self::for_pages(offset, buf.len() as u64, |page, in_page, r| {
            let mut shard = self.shard(page).write().unwrap();
            let p = shard
                .entry(page)
                .or_insert_with(|| vec![0u8; PAGE as usize].into());
            p[in_page..in_page + r.len()].copy_from_slice(&buf[r]);
        });
        Ok(())
    }

    fn try_write_at(&self, buf: &[u8], offset: u64, fua: bool) -> Result<bool> {
        self.write_at(buf, offset, fua).map(|()| true)
    }

    fn write_zeroes(&self, offset: u64, len: u64, _flags: ZeroFlags) -> Result<()> {
        self.zero(offset, len);
        Ok(())
    }

    fn trim(&self, offset: u64, len: u64, _fua: bool) -> Result<()> {
        self.zero(offset, len);
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn extents(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        let mut out = Vec::new();
        Self::for_pages(offset, len, |page, _, r| {
            let present = self.shard(page).read().unwrap().contains_key(&page);
            let e = Extent {
                length: r.len() as u64,
                hole: !present,
                zero: !present,
            };
            push_extent(&mut out, e);
        });
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::conformance;

    #[test]
    fn conformance() {
        conformance::run_all(&|size| conformance::Subject::new(MemoryDevice::new(size)));
    }

    #[test]
    fn zeroed_pages_are_freed_and_reported_as_holes() {
        let d = MemoryDevice::new(4 * PAGE);
        d.write_at(&[7; 10], PAGE + 5, false).unwrap();
        assert!(!d.extents(PAGE, PAGE).unwrap()[0].hole);
        d.write_zeroes(PAGE, 100, ZeroFlags::default()).unwrap();
        assert!(
            d.extents(PAGE, PAGE).unwrap()[0].hole,
            "an all-zero page is dropped"
        );
        let e = d.extents(0, 4 * PAGE).unwrap();
        assert_eq!(
            e,
            vec![Extent {
                length: 4 * PAGE,
                hole: true,
                zero: true
            }]
        );
    }
}
