//! Filesystem readers: which bytes of a device the filesystem on it uses.
//!
//! A backup needs to copy only the blocks a filesystem uses. [`probe`] recognizes the
//! filesystem on a device by its superblock and reads its allocation metadata (descriptors and
//! bitmaps, never file data) into a [`UsedMap`]; [`used_blocks`] turns that map into block
//! numbers of the backup's block size.
//!
//! ```text
//!   device ──> probe ──> ext4::probe ──> Used(map) | Unsupported { reason } | Unknown
//!                      └─> ntfs::probe (tried while the answer is Unknown)
//!   UsedMap ──> used_blocks(block size) ──> RoaringBitmap of blocks to back up
//! ```
//!
//! The rule every reader follows: a map is returned only when it can be trusted. Whatever a
//! reader does not understand (an unknown feature, metadata that is inconsistent or fails its
//! checksum, a journal that still needs recovery so the bitmaps may be stale) makes it answer
//! [`Probe::Unsupported`], and the caller then backs up every block: never a smaller map.
//! Bytes a reader knows nothing about (past the filesystem's end, say) count as used.
//!
//! A map describes the device as it is when read, so a backup must read it as of its snapshot
//! point: with the filesystem frozen (a frozen ext4 has its journal checkpointed, a live one
//! is refused) and before writes are admitted again, or through the snapshot's view. A map read
//! later could miss blocks that were in use at the snapshot point and freed since.

pub mod diff;
pub mod ext4;
pub mod ntfs;
pub mod open;
pub mod partitions;
pub mod tree;

use std::fmt;

use roaring::RoaringBitmap;

use crate::device::{BlockDevice, DeviceError, IoBuf};

/// What a filesystem reader found on a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsedMap {
    /// The filesystem's name: `"ext2"`, `"ext3"` or `"ext4"` (one reader serves the family),
    /// or `"ntfs"`.
    pub filesystem: &'static str,
    /// The filesystem's block size in bytes: the NTFS cluster size; with ext4 bigalloc,
    /// allocation is by clusters of several blocks, and `used` is then cluster-granular.
    pub fs_block_size: u32,
    /// Bytes from the start of the device that the filesystem spans (its block count times its
    /// block size). What lies between this and `total_bytes` is counted as used.
    pub fs_bytes: u64,
    /// Byte ranges in use, `(start, end)` half-open, sorted, merged (neither overlapping nor
    /// adjacent), within `0..total_bytes`.
    pub used: Vec<(u64, u64)>,
    /// Sum of the lengths of `used`.
    pub used_bytes: u64,
    /// Size of the device that was read.
    pub total_bytes: u64,
}

/// The answer of a filesystem reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// A filesystem whose used map could be read and trusted.
    Used(UsedMap),
    /// A filesystem was recognized, but its used map cannot be given: an unsupported feature,
    /// metadata that is inconsistent, or a state in which its bitmaps may be stale.
    Unsupported {
        filesystem: &'static str,
        reason: String,
    },
    /// No known filesystem.
    Unknown,
}

/// A filesystem reader could not read the device.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("reading the {what} of the {filesystem} filesystem: {source}")]
    Read {
        filesystem: &'static str,
        what: String,
        #[source]
        source: DeviceError,
    },
}

/// Recognizes the filesystem on `dev` and reads its used map.
///
/// Errors are only device read errors; everything about the filesystem itself is in the
/// [`Probe`].
pub fn probe(dev: &dyn BlockDevice) -> Result<Probe, FsError> {
    match ext4::probe(dev)? {
        Probe::Unknown => ntfs::probe(dev),
        found => Ok(found),
    }
}

/// Detects a known filesystem on `dev` and returns its used-byte map, or `Ok(None)` if no
/// filesystem is recognized or its map cannot be trusted (the reason is logged). `None` means
/// "back up every block".
pub fn used_map(dev: &dyn BlockDevice) -> Result<Option<UsedMap>, FsError> {
    match probe(dev)? {
        Probe::Used(map) => {
            tracing::info!(
                filesystem = map.filesystem,
                used_bytes = map.used_bytes,
                total_bytes = map.total_bytes,
                ranges = map.used.len(),
                "filesystem used map read"
            );
            Ok(Some(map))
        }
        Probe::Unsupported { filesystem, reason } => {
            tracing::warn!(
                filesystem,
                reason = %reason,
                "filesystem not read; every block counts as used"
            );
            Ok(None)
        }
        Probe::Unknown => {
            tracing::info!("no known filesystem; every block counts as used");
            Ok(None)
        }
    }
}

/// The used map expressed in blocks of `block_size` bytes: a block is in the set if any byte
/// of it is used. Bytes between `map.total_bytes` and `device_size` (a device that grew) are
/// unknown to the map and count as used. Block numbers must fit in a `u32` (callers refuse
/// devices with more blocks); blocks beyond that are not representable and are left out.
///
/// # Panics
/// If `block_size` is 0.
pub fn used_blocks(map: &UsedMap, block_size: u32, device_size: u64) -> RoaringBitmap {
    assert!(block_size > 0, "block size 0");
    let bs = u64::from(block_size);
    let last_block = device_size.div_ceil(bs).min(1 << 32);
    let mut out = RoaringBitmap::new();
    let mut add = |start: u64, end: u64| {
        let end = end.min(device_size);
        if start >= end {
            return;
        }
        let first = start / bs;
        let last = ((end - 1) / bs).min(last_block.saturating_sub(1));
        if first <= last {
            out.insert_range(first as u32..=last as u32);
        }
    };
    for &(start, end) in &map.used {
        add(start, end);
    }
    add(map.total_bytes, device_size);
    out
}

impl fmt::Display for UsedMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} of {} bytes used in {} ranges (block size {})",
            self.filesystem,
            self.used_bytes,
            self.total_bytes,
            self.used.len(),
            self.fs_block_size
        )
    }
}

/// Builds a sorted, merged list of byte ranges from ranges that come mostly in ascending
/// order (a bitmap scanned group by group); the few that come out of order are kept aside and
/// merged in at the end.
#[derive(Debug, Default)]
struct RangeSet {
    ranges: Vec<(u64, u64)>,
    late: Vec<(u64, u64)>,
}

impl RangeSet {
    fn add(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        match self.ranges.last_mut() {
            Some(last) if start >= last.0 => {
                if start <= last.1 {
                    last.1 = last.1.max(end);
                } else {
                    self.ranges.push((start, end));
                }
            }
            Some(_) => self.late.push((start, end)),
            None => self.ranges.push((start, end)),
        }
    }

    fn finish(mut self) -> Vec<(u64, u64)> {
        if self.late.is_empty() {
            return self.ranges;
        }
        self.late.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(self.ranges.len() + self.late.len());
        let mut a = self.ranges.into_iter().peekable();
        let mut b = self.late.into_iter().peekable();
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x <= y => a.next(),
                (Some(_), None) => a.next(),
                _ => b.next(),
            };
            let Some((s, e)) = next else { break };
            match out.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => out.push((s, e)),
            }
        }
        out
    }
}

/// Reads `len` bytes at `offset`, which the caller has checked lie within the device. The read
/// is widened to the device's minimum alignment (for `O_DIRECT`) into an aligned buffer.
fn read_bytes(
    dev: &dyn BlockDevice,
    offset: u64,
    len: usize,
    fs: &'static str,
    what: impl FnOnce() -> String,
) -> Result<Chunk, FsError> {
    let align = u64::from(dev.block_sizes().minimum.max(1));
    let start = offset / align * align;
    let end = (offset + len as u64)
        .next_multiple_of(align)
        .min(dev.size())
        .max(offset + len as u64);
    let mut buf = IoBuf::new((end - start) as usize);
    dev.read_at(&mut buf, start)
        .map_err(|source| FsError::Read {
            filesystem: fs,
            what: what(),
            source,
        })?;
    Ok(Chunk {
        buf,
        skip: (offset - start) as usize,
        len,
    })
}

/// Reads `dst.len()` bytes at `offset` (checked by the caller to lie within the device)
/// into `dst`: straight in when the device is byte granular, else through [`read_bytes`]'s
/// aligned buffer. File data goes this way: a fresh buffer per read would cost a page fault
/// per 4 KiB, more than the copy.
fn read_into(
    dev: &dyn BlockDevice,
    dst: &mut [u8],
    offset: u64,
    fs: &'static str,
    what: impl FnOnce() -> String,
) -> Result<(), FsError> {
    if dev.block_sizes().minimum <= 1 {
        return dev.read_at(dst, offset).map_err(|source| FsError::Read {
            filesystem: fs,
            what: what(),
            source,
        });
    }
    let data = read_bytes(dev, offset, dst.len(), fs, what)?;
    dst.copy_from_slice(&data);
    Ok(())
}

/// Bytes read by [`read_bytes`].
struct Chunk {
    buf: IoBuf,
    skip: usize,
    len: usize,
}

impl std::ops::Deref for Chunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.skip..self.skip + self.len]
    }
}

/// Calls `f(first, end)` for each run of set bits among the first `n` bits of `bitmap`
/// (little-endian bit order: bit `i` of byte `j` is bit `8j + i`).
fn bit_runs(bitmap: &[u8], n: u64, mut f: impl FnMut(u64, u64)) {
    // Bits past `n` in the last byte (the padding of a short last group) are cut off here.
    let mut emit = |s: u64, e: u64| {
        let e = e.min(n);
        if s < e {
            f(s, e);
        }
    };
    let mut run_start: Option<u64> = None;
    let bytes = n.div_ceil(8) as usize;
    for (j, &byte) in bitmap[..bytes].iter().enumerate() {
        let base = j as u64 * 8;
        match byte {
            0x00 => {
                if let Some(s) = run_start.take() {
                    emit(s, base);
                }
            }
            0xFF => {
                run_start.get_or_insert(base);
            }
            _ => {
                for i in 0..8 {
                    if byte & (1 << i) != 0 {
                        run_start.get_or_insert(base + i);
                    } else if let Some(s) = run_start.take() {
                        emit(s, base + i);
                    }
                }
            }
        }
    }
    if let Some(s) = run_start {
        emit(s, bytes as u64 * 8);
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Opens an image file for a test. Other tests spawn processes concurrently, and a child
/// holds a copy of every descriptor (and so the file's flock) between its fork and its exec:
/// an open that finds the file "busy" is retried for a while.
#[cfg(test)]
fn open_image(path: &std::path::Path, read_only: bool) -> crate::device::FileDevice {
    let opts = crate::device::FileOptions {
        read_only,
        direct: false,
    };
    try_open_image(path, opts).unwrap_or_else(|e| panic!("{e}"))
}

/// [`open_image`] with any options, returning the error other than "busy".
#[cfg(test)]
fn try_open_image(
    path: &std::path::Path,
    opts: crate::device::FileOptions,
) -> Result<crate::device::FileDevice, crate::device::OpenError> {
    use crate::device::{FileDevice, OpenError};
    let mut tries = 0;
    loop {
        match FileDevice::open(path, opts) {
            Err(OpenError::Busy { .. }) if tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

/// A read-only device over an image that counts the bytes read from it (how much of a
/// filesystem a used map reads).
#[cfg(test)]
#[derive(Debug)]
struct Counting {
    inner: crate::device::FileDevice,
    read: std::sync::atomic::AtomicU64,
}

#[cfg(test)]
impl Counting {
    fn new(inner: crate::device::FileDevice) -> Counting {
        Counting {
            inner,
            read: Default::default(),
        }
    }

    fn bytes_read(&self) -> u64 {
        self.read.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
impl crate::device::BlockDevice for Counting {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn capabilities(&self) -> crate::device::Capabilities {
        self.inner.capabilities()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> crate::device::Result<()> {
        self.read
            .fetch_add(buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.inner.read_at(buf, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_set_merges_in_order_and_late_ranges() {
        let mut r = RangeSet::default();
        r.add(10, 20);
        r.add(20, 30);
        r.add(25, 28);
        r.add(40, 50);
        r.add(0, 5);
        r.add(5, 10);
        r.add(45, 60);
        r.add(33, 34);
        r.add(7, 7);
        assert_eq!(r.finish(), vec![(0, 30), (33, 34), (40, 60)]);
    }

    #[test]
    fn used_blocks_rounds_out_and_counts_unknown_tail() {
        let map = UsedMap {
            filesystem: "ext4",
            fs_block_size: 4096,
            fs_bytes: 1 << 20,
            used: vec![(0, 1), (8192, 8193), (65536, 131072)],
            used_bytes: 65538,
            total_bytes: 1 << 20,
        };
        let b = used_blocks(&map, 4096, 1 << 20);
        assert_eq!(b.iter().collect::<Vec<_>>()[..3], [0, 2, 16]);
        assert_eq!(b.len(), 2 + 16);
        let b = used_blocks(&map, 65536, 1 << 20);
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![0, 1]);
        // The device grew by one block: unknown, so used.
        let b = used_blocks(&map, 65536, (1 << 20) + 65536);
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![0, 1, 16]);
    }
}
