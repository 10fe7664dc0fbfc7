//! [`diff`]: the files that differ between two states of one filesystem (two generations of
//! an export), found from the device ranges that changed rather than by reading every file.
//!
//! ```text
//!   changed ranges (chunks whose digests differ) ─┐
//!   walk both trees' directories side by side ────┼─> name only in old: Removed, only in new: Added
//!                                                 │   kind differs: Type
//!   same name, same file number, and its record   │
//!   (inode, MFT record) in no changed range ──────┴─> unchanged, nothing else read
//!   otherwise: stat both ─> size, target, data in changed ranges differ: Modified
//!                         └> mode, owner, mtime, rdev differ: Metadata
//! ```
//!
//! Why skipping by record is exact for changes made through the filesystem: writing a file's
//! data, truncating, renaming over it, chmod, chown, touch, linking all rewrite the file's
//! record (at the least its ctime), so a file whose record bytes are identical in both
//! generations was not touched. When the record did change, the data is compared only where
//! it can differ: if both generations map the file to the same extents, only the extents
//! inside changed ranges are read (and data kept in the record, like ext4 inline data, which
//! changed with it); if the mapping changed, the whole file is compared. What is read is
//! therefore the directories, the changed records and the changed data, not the filesystem.
//!
//! Directories are compared by mode and owner only: their times and sizes change with their
//! entries, which are reported themselves. Access and change times are not compared.

use std::collections::{BTreeMap, HashSet};

use super::tree::{Entry, FileTree, Ino, Kind, Stat, TreeError};

/// Entries walked at most, in both trees together.
const WALK_LIMIT: usize = 20_000_000;
/// Bytes compared per read.
const PIECE: usize = 1 << 20;

/// How a path differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// Only in the newer tree.
    Added,
    /// Only in the older tree.
    Removed,
    /// Data, size or link target differ.
    Modified,
    /// Mode, owner, modification time or device number differ; the data is the same.
    Metadata,
    /// A different kind of file under the same name.
    Type,
}

/// One path that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    /// Absolute, `/`-separated.
    pub path: Vec<u8>,
    pub change: Change,
    /// The kind in the newer tree (in the older one for `Removed`).
    pub kind: Kind,
}

/// Byte ranges of the filesystem that may differ: sorted, merged, half-open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    /// From any ranges `(start, end)`, in any order.
    pub fn new(mut r: Vec<(u64, u64)>) -> Ranges {
        r.retain(|&(s, e)| s < e);
        r.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(r.len());
        for (s, e) in r {
            match out.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => out.push((s, e)),
            }
        }
        Ranges(out)
    }

    /// Total bytes covered.
    pub fn bytes(&self) -> u64 {
        self.0.iter().map(|(s, e)| e - s).sum()
    }

    /// Whether any byte of `start..start + len` is in a range.
    pub fn overlaps(&self, start: u64, len: u64) -> bool {
        let end = start.saturating_add(len);
        // The first range ending after `start`.
        let i = self.0.partition_point(|&(_, e)| e <= start);
        self.0.get(i).is_some_and(|&(s, _)| s < end)
    }
}

/// The differences between `old` and `new`, sorted by path. `changed` holds every byte range
/// of the filesystem that may differ between them (filesystem offsets); bytes outside it must
/// be identical in both, or the answer is incomplete.
pub fn diff(
    old: &dyn FileTree,
    new: &dyn FileTree,
    changed: &Ranges,
) -> Result<Vec<Changed>, TreeError> {
    let mut d = Differ {
        old,
        new,
        changed,
        out: Vec::new(),
        walked: 0,
        seen: HashSet::new(),
    };
    d.dir(old.root(), new.root(), &[])?;
    d.out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(d.out)
}

struct Differ<'a> {
    old: &'a dyn FileTree,
    new: &'a dyn FileTree,
    changed: &'a Ranges,
    out: Vec<Changed>,
    walked: usize,
    /// Directory pairs entered (a corrupt tree may link a directory into itself).
    seen: HashSet<(Ino, Ino)>,
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    p.extend_from_slice(dir);
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

impl Differ<'_> {
    fn count(&mut self, n: usize) -> Result<(), TreeError> {
        self.walked += n;
        if self.walked > WALK_LIMIT {
            return Err(TreeError::Unsupported {
                filesystem: self.new.filesystem(),
                feature: format!("a diff of more than {WALK_LIMIT} files"),
            });
        }
        Ok(())
    }

    fn listing(
        &mut self,
        tree: &dyn FileTree,
        ino: Ino,
    ) -> Result<BTreeMap<Vec<u8>, Entry>, TreeError> {
        let list = tree.read_dir(ino)?;
        self.count(list.len())?;
        Ok(list.into_iter().map(|e| (e.name.clone(), e)).collect())
    }

    fn dir(&mut self, old: Ino, new: Ino, path: &[u8]) -> Result<(), TreeError> {
        if !self.seen.insert((old, new)) {
            return Ok(());
        }
        let mut a = self.listing(self.old, old)?;
        let b = self.listing(self.new, new)?;
        for (name, y) in b {
            let p = join(path, &name);
            match a.remove(&name) {
                None => self.whole(Change::Added, &y, p)?,
                Some(x) if x.kind != y.kind => {
                    self.push(p.clone(), Change::Type, y.kind);
                    if x.kind == Kind::Dir {
                        self.below(Change::Removed, self.old, x.ino, &p)?;
                    }
                    if y.kind == Kind::Dir {
                        self.below(Change::Added, self.new, y.ino, &p)?;
                    }
                }
                Some(x) => self.same_kind(&x, &y, p)?,
            }
        }
        for (name, x) in a {
            self.whole(Change::Removed, &x, join(path, &name))?;
        }
        Ok(())
    }

    fn push(&mut self, path: Vec<u8>, change: Change, kind: Kind) {
        self.out.push(Changed { path, change, kind });
    }

    /// `e` and, for a directory, everything below it, all added or all removed.
    fn whole(&mut self, change: Change, e: &Entry, path: Vec<u8>) -> Result<(), TreeError> {
        self.push(path.clone(), change, e.kind);
        if e.kind == Kind::Dir {
            let tree = if change == Change::Added {
                self.new
            } else {
                self.old
            };
            self.below(change, tree, e.ino, &path)?;
        }
        Ok(())
    }

    fn below(
        &mut self,
        change: Change,
        tree: &dyn FileTree,
        dir: Ino,
        path: &[u8],
    ) -> Result<(), TreeError> {
        let mut todo = vec![(dir, path.to_vec())];
        let mut seen = HashSet::new();
        while let Some((ino, p)) = todo.pop() {
            if !seen.insert(ino) {
                continue;
            }
            let list = tree.read_dir(ino)?;
            self.count(list.len())?;
            for e in list {
                let q = join(&p, &e.name);
                if e.kind == Kind::Dir {
                    todo.push((e.ino, q.clone()));
                }
                self.push(q, change, e.kind);
            }
        }
        Ok(())
    }

    /// Whether file `ino`'s record may have changed (or cannot be placed).
    fn record_changed(&self, tree: &dyn FileTree, ino: Ino) -> Result<bool, TreeError> {
        Ok(match tree.record(ino)? {
            Some((at, len)) => self.changed.overlaps(at, len),
            None => true,
        })
    }

    fn same_kind(&mut self, x: &Entry, y: &Entry, path: Vec<u8>) -> Result<(), TreeError> {
        let untouched = x.ino == y.ino
            && !self.record_changed(self.old, x.ino)?
            && !self.record_changed(self.new, y.ino)?;
        if !untouched {
            let (sa, sb) = (self.old.stat(x.ino)?, self.new.stat(y.ino)?);
            if let Some(change) = self.compare(&sa, &sb)? {
                self.push(path.clone(), change, y.kind);
            }
        }
        if y.kind == Kind::Dir {
            self.dir(x.ino, y.ino, &path)?;
        }
        Ok(())
    }

    /// How two files of the same kind differ, if they do.
    fn compare(&self, a: &Stat, b: &Stat) -> Result<Option<Change>, TreeError> {
        let owner = a.mode != b.mode || a.uid != b.uid || a.gid != b.gid;
        if a.kind == Kind::Dir {
            return Ok(owner.then_some(Change::Metadata));
        }
        let modified = match a.kind {
            Kind::File => a.size != b.size || !self.same_data(a, b)?,
            Kind::Symlink => self.old.read_link(a.ino)? != self.new.read_link(b.ino)?,
            _ => false,
        };
        Ok(if modified {
            Some(Change::Modified)
        } else if owner || a.mtime != b.mtime || a.rdev != b.rdev {
            Some(Change::Metadata)
        } else {
            None
        })
    }

    /// Whether two regular files of equal size hold the same bytes, reading only what can
    /// differ.
    fn same_data(&self, a: &Stat, b: &Stat) -> Result<bool, TreeError> {
        let (ea, eb) = (self.old.extents(a.ino)?, self.new.extents(b.ino)?);
        let ranges: Vec<(u64, u64)> = if ea == eb {
            // Same mapping: only data in changed ranges, or kept in the (changed) record.
            ea.iter()
                .filter(|e| e.physical.is_none_or(|p| self.changed.overlaps(p, e.len)))
                .map(|e| (e.logical, e.logical.saturating_add(e.len).min(a.size)))
                .collect()
        } else {
            vec![(0, a.size)]
        };
        let (mut ba, mut bb) = (vec![0u8; PIECE], vec![0u8; PIECE]);
        for (start, end) in ranges {
            let mut at = start;
            while at < end {
                let n = ((end - at) as usize).min(PIECE);
                let ka = read_full(self.old, a.ino, at, &mut ba[..n])?;
                let kb = read_full(self.new, b.ino, at, &mut bb[..n])?;
                if ka != kb || ba[..ka] != bb[..kb] {
                    return Ok(false);
                }
                if ka < n {
                    break;
                }
                at += n as u64;
            }
        }
        Ok(true)
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(
    tree: &dyn FileTree,
    ino: Ino,
    offset: u64,
    buf: &mut [u8],
) -> Result<usize, TreeError> {
    let mut done = 0;
    while done < buf.len() {
        let k = tree.read_at(ino, offset + done as u64, &mut buf[done..])?;
        if k == 0 {
            break;
        }
        done += k;
    }
    Ok(done)
}

#[cfg(test)]
#[path = "diff_tests.rs"]
mod tests;
