//! The lazy page cache: file data written but not yet made durable.
//!
//! ```text
//!  write(ino, off, data) ──> DirtyFile extents (non-overlapping, merged)
//!  read(ino, off, len)   <── backing file bytes, dirty extents laid over them
//!  fsync(ino)            ──> take(ino): the extents, written to the backing file by the caller
//!  power cut             ──> discard(): every extent is gone
//! ```
//!
//! A file's size as applications see it is the larger of the backing file's size and the end
//! of its last dirty extent; so a write that extends a file is lost with its data. Truncation
//! is a metadata operation: the caller applies it to the backing file at once and clips the
//! extents here. The cache never touches a file itself: it is plain data, unit-tested below.

use std::collections::{BTreeMap, HashMap};

/// The dirty data of one file: byte ranges written since its last flush.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DirtyFile {
    /// Start offset -> bytes; extents never overlap nor touch (touching ones are merged).
    extents: BTreeMap<u64, Vec<u8>>,
}

impl DirtyFile {
    /// Lays `data` at `offset` over whatever was cached there.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = offset + data.len() as u64;
        // Every extent that overlaps or touches [offset, end) is merged into one.
        let touching: Vec<u64> = self
            .extents
            .range(..=end)
            .rev()
            .take_while(|(s, b)| **s + b.len() as u64 >= offset)
            .map(|(s, _)| *s)
            .collect();
        let mut start = offset;
        let mut stop = end;
        for s in &touching {
            start = start.min(*s);
            stop = stop.max(s + self.extents[s].len() as u64);
        }
        let mut merged = vec![0u8; (stop - start) as usize];
        for s in touching {
            let old = self.extents.remove(&s).expect("listed above");
            let at = (s - start) as usize;
            merged[at..at + old.len()].copy_from_slice(&old);
        }
        let at = (offset - start) as usize;
        merged[at..at + data.len()].copy_from_slice(data);
        self.extents.insert(start, merged);
    }

    /// Lays the cached bytes of `[offset, offset + buf.len())` over `buf`.
    pub fn overlay(&self, offset: u64, buf: &mut [u8]) {
        let end = offset + buf.len() as u64;
        for (s, b) in self.extents.range(..end) {
            let e = s + b.len() as u64;
            if e <= offset {
                continue;
            }
            let (from, to) = ((*s).max(offset), e.min(end));
            buf[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&b[(from - s) as usize..(to - s) as usize]);
        }
    }

    /// The end of the last extent (0 when clean).
    pub fn end(&self) -> u64 {
        self.extents
            .iter()
            .next_back()
            .map_or(0, |(s, b)| s + b.len() as u64)
    }

    /// Drops every cached byte at or beyond `size` (the file was truncated to `size`).
    pub fn truncate(&mut self, size: u64) {
        let beyond: Vec<u64> = self.extents.range(size..).map(|(s, _)| *s).collect();
        for s in beyond {
            self.extents.remove(&s);
        }
        if let Some((s, b)) = self.extents.iter_mut().next_back() {
            let keep = size.saturating_sub(*s) as usize;
            b.truncate(keep);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.extents.is_empty()
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.extents.values().map(|b| b.len() as u64).sum()
    }

    /// The extents in offset order, to be written to the backing file.
    pub fn extents(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.extents.iter().map(|(s, b)| (*s, b.as_slice()))
    }
}

/// The dirty data of every file, by inode.
#[derive(Debug, Default)]
pub struct PageCache {
    files: HashMap<u64, DirtyFile>,
}

impl PageCache {
    pub fn write(&mut self, ino: u64, offset: u64, data: &[u8]) {
        self.files.entry(ino).or_default().write(offset, data);
    }

    /// Lays `ino`'s cached bytes over `buf`, read from the backing file at `offset`.
    pub fn overlay(&self, ino: u64, offset: u64, buf: &mut [u8]) {
        if let Some(f) = self.files.get(&ino) {
            f.overlay(offset, buf);
        }
    }

    /// The size applications see, given the backing file's size.
    pub fn size(&self, ino: u64, backing: u64) -> u64 {
        self.files
            .get(&ino)
            .map_or(backing, |f| f.end().max(backing))
    }

    pub fn truncate(&mut self, ino: u64, size: u64) {
        if let Some(f) = self.files.get_mut(&ino) {
            f.truncate(size);
        }
    }

    /// Removes and returns `ino`'s dirty data, for the caller to write to the backing file.
    pub fn take(&mut self, ino: u64) -> DirtyFile {
        self.files.remove(&ino).unwrap_or_default()
    }

    /// Puts back data that could not be flushed, under anything written since.
    pub fn restore(&mut self, ino: u64, mut old: DirtyFile) {
        if let Some(newer) = self.files.remove(&ino) {
            for (s, b) in newer.extents() {
                old.write(s, b);
            }
        }
        if !old.is_empty() {
            self.files.insert(ino, old);
        }
    }

    pub fn is_dirty(&self, ino: u64) -> bool {
        self.files.get(&ino).is_some_and(|f| !f.is_empty())
    }

    /// Forgets a file's dirty data (the file is gone).
    pub fn forget(&mut self, ino: u64) {
        self.files.remove(&ino);
    }

    /// The power cut: every dirty byte is lost. Returns how many there were.
    pub fn discard(&mut self) -> u64 {
        let lost = self.files.values().map(DirtyFile::bytes).sum();
        self.files.clear();
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file of `len` bytes as a reader sees it: `backing` (zero-extended) under the cache.
    fn view(f: &DirtyFile, backing: &[u8], len: usize) -> Vec<u8> {
        let mut b = backing.to_vec();
        b.resize(len, 0);
        f.overlay(0, &mut b);
        b
    }

    #[test]
    fn writes_overlay_the_backing_file_and_later_writes_win() {
        let mut f = DirtyFile::default();
        f.write(2, b"abcd");
        f.write(4, b"XY");
        f.write(10, b"z");
        assert_eq!(view(&f, b"0123456789", 12), b"01abXY6789z\0");
        assert_eq!(f.end(), 11);
        // Reads of a piece see only that piece.
        let mut piece = *b"....";
        f.overlay(3, &mut piece);
        assert_eq!(&piece, b"bXY.");
    }

    #[test]
    fn overlapping_and_touching_writes_merge_into_one_extent() {
        let mut f = DirtyFile::default();
        f.write(10, b"bb");
        f.write(0, b"aa");
        f.write(2, b"cccccccc"); // touches both
        assert_eq!(f.extents().count(), 1);
        assert_eq!(f.extents().next(), Some((0, &b"aaccccccccbb"[..])));
        f.write(5, b"d"); // inside
        assert_eq!(f.extents().next(), Some((0, &b"aacccdccccbb"[..])));
        assert_eq!(f.bytes(), 12);
    }

    #[test]
    fn random_writes_match_a_plain_buffer() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..200 {
            let mut f = DirtyFile::default();
            let mut model = vec![0u8; 256];
            for _ in 0..rng.usize(1..12) {
                let off = rng.usize(0..200);
                let data: Vec<u8> = (0..rng.usize(1..56)).map(|_| rng.u8(1..)).collect();
                f.write(off as u64, &data);
                model[off..off + data.len()].copy_from_slice(&data);
            }
            assert_eq!(view(&f, &[], 256), model);
            let starts: Vec<(u64, u64)> = f.extents().map(|(s, b)| (s, b.len() as u64)).collect();
            assert!(
                starts.windows(2).all(|w| w[0].0 + w[0].1 < w[1].0),
                "{starts:?}"
            );
        }
    }

    #[test]
    fn truncate_drops_and_clips_what_lies_beyond() {
        let mut f = DirtyFile::default();
        f.write(0, b"aaaa");
        f.write(8, b"bbbb");
        f.truncate(10);
        assert_eq!(f.end(), 10);
        f.truncate(6);
        assert_eq!(f.end(), 4);
        f.truncate(2);
        assert_eq!(f.extents().next(), Some((0, &b"aa"[..])));
        f.truncate(0);
        assert!(f.is_empty());
    }

    #[test]
    fn size_take_restore_and_discard() {
        let mut c = PageCache::default();
        c.write(7, 100, b"x");
        assert_eq!(c.size(7, 50), 101);
        assert_eq!(c.size(7, 500), 500);
        assert_eq!(c.size(8, 5), 5);
        let taken = c.take(7);
        assert!(!c.is_dirty(7));
        c.write(7, 100, b"y");
        c.restore(7, taken);
        let mut b = [0u8; 1];
        c.overlay(7, 100, &mut b);
        assert_eq!(&b, b"y", "a newer write stays over restored data");
        c.write(9, 0, b"abc");
        assert_eq!(c.discard(), 4);
        assert!(!c.is_dirty(7) && !c.is_dirty(9));
    }
}
