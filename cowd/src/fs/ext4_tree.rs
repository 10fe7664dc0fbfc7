//! [`Ext4Tree`]: the files of an ext2/3/4 filesystem, read from its inodes.
//!
//! ```text
//!  inode n ── group (n-1) / inodes_per_group ── descriptor ── inode table + (n-1) % ipg * size
//!  data:  i_block = extent tree (header 0xF30A: index nodes ─> leaves of extents)
//!                 | 12 direct, single, double, triple indirect block numbers (ext2/3)
//!                 | inline data (60 bytes, then the in-inode xattr "system.data")
//!  directories: every data block read linearly (htree index blocks are empty entries to a
//!               linear reader; the tail of metadata_csum is one too)
//! ```
//!
//! Written for a generation served from the repository: a read touches only the blocks it
//! needs (inode table blocks, extent nodes, directory and file blocks), and a small cache
//! keeps the metadata blocks a walk reads again. Every number read from the device is checked
//! before it is used: block numbers inside the filesystem, extent trees at most 5 deep and
//! entries within their node, directory records within their block, sizes bounded. What is
//! not supported (encrypted files, extended attributes in their own inodes holding inline
//! data) is an error naming it. A journal that still needs recovery (a generation of a mounted
//! filesystem taken without `--freeze`) is read as it is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::super::tree::{
    Entry, FileExtent, FileTree, Ino, Kind, MetaRegion, Stat, Time, TreeError,
};
use super::{FS, INCOMPAT_FILETYPE, MAGIC, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, Step, Super};
use crate::device::BlockDevice;
use crate::fs::{le16, le32, read_bytes, read_into};

const ROOT: Ino = 2;
const JOURNAL: Ino = 8;
const EXTENT_MAGIC: u16 = 0xF30A;
const MAX_DEPTH: u16 = 5;
/// Inode flags.
const FL_ENCRYPT: u32 = 0x800;
const FL_EXTENTS: u32 = 0x8_0000;
const FL_INLINE_DATA: u32 = 0x1000_0000;
/// Metadata blocks kept in the cache.
const CACHE_BLOCKS: usize = 512;
/// A directory larger than this is refused (the kernel's largedir limit is 4 GiB; a listing
/// is held in memory).
const MAX_DIR_BYTES: u64 = 256 << 20;

/// A run of a file's blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    /// First block of the file.
    logical: u64,
    /// First block on the device.
    physical: u64,
    len: u64,
    unwritten: bool,
}

/// The parts of an inode this reader uses.
#[derive(Debug, Clone)]
struct Inode {
    ino: Ino,
    raw: Vec<u8>,
    mode: u16,
    flags: u32,
    size: u64,
}

impl Inode {
    fn kind(&self) -> Result<Kind, TreeError> {
        Ok(match self.mode & 0xF000 {
            0x8000 => Kind::File,
            0x4000 => Kind::Dir,
            0xA000 => Kind::Symlink,
            0x2000 => Kind::CharDevice,
            0x6000 => Kind::BlockDevice,
            0x1000 => Kind::Fifo,
            0xC000 => Kind::Socket,
            m => return Err(corrupt(format!("inode {}: file type {m:#x}", self.ino))),
        })
    }

    fn i_block(&self) -> &[u8] {
        &self.raw[0x28..0x28 + 60]
    }
}

fn corrupt(why: String) -> TreeError {
    TreeError::Corrupt {
        filesystem: FS,
        why,
    }
}

fn unsupported(feature: &str) -> TreeError {
    TreeError::Unsupported {
        filesystem: FS,
        feature: feature.to_owned(),
    }
}

/// The files of one ext2/3/4 filesystem.
#[derive(Debug)]
pub struct Ext4Tree {
    dev: Arc<dyn BlockDevice>,
    sb: Super,
    /// Inode table of each group (block number).
    inode_tables: Vec<u64>,
    /// Metadata blocks by number (a bounded map, emptied when full).
    cache: Mutex<HashMap<u64, Arc<Vec<u8>>>>,
    /// The block runs of the file read last (reading a large file in pieces maps it once).
    last_runs: Mutex<Option<(Ino, Arc<Vec<Run>>)>>,
}

impl Ext4Tree {
    /// Opens the ext2/3/4 filesystem on `dev`; [`TreeError::Unknown`] if there is none.
    pub fn open(dev: Arc<dyn BlockDevice>) -> Result<Ext4Tree, TreeError> {
        if dev.size() < SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE as u64 {
            return Err(TreeError::Unknown);
        }
        let raw = read_bytes(dev.as_ref(), SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, FS, || {
            "superblock".to_owned()
        })
        .map_err(fs_error)?;
        if le16(&raw, 0x38) != MAGIC {
            return Err(TreeError::Unknown);
        }
        let sb = Super::parse_for(&raw, dev.size(), false).map_err(|r| corrupt(r.0))?;
        let descs = match sb.read_descs(dev.as_ref(), 0, sb.groups) {
            Ok(d) => d,
            Err(Step::Io(e)) => return Err(fs_error(e)),
            Err(Step::Refuse(r)) => return Err(corrupt(r.0)),
        };
        let inode_tables: Vec<u64> = descs.iter().map(|d| d.inode_table).collect();
        for (g, &t) in inode_tables.iter().enumerate() {
            if !sb.in_fs(t, sb.itable_blocks) {
                return Err(corrupt(format!(
                    "group {g}: inode table at block {t}, outside the filesystem"
                )));
            }
        }
        Ok(Ext4Tree {
            dev,
            sb,
            inode_tables,
            cache: Mutex::new(HashMap::new()),
            last_runs: Mutex::new(None),
        })
    }

    /// `ext2`, `ext3` or `ext4`, as the features say.
    pub fn variant(&self) -> &'static str {
        self.sb.name
    }

    fn bs(&self) -> u64 {
        self.sb.block_size
    }

    /// Reads block `b` (checked to be inside the filesystem) through the cache.
    fn block(&self, b: u64, what: &str) -> Result<Arc<Vec<u8>>, TreeError> {
        if !self.sb.in_fs(b, 1) {
            return Err(corrupt(format!(
                "{what}: block {b} is outside the filesystem"
            )));
        }
        if let Some(hit) = self.cache.lock().unwrap().get(&b) {
            return Ok(hit.clone());
        }
        let mut buf = vec![0u8; self.bs() as usize];
        self.dev.read_at(&mut buf, b * self.bs())?;
        let data = Arc::new(buf);
        let mut cache = self.cache.lock().unwrap();
        if cache.len() >= CACHE_BLOCKS {
            cache.clear();
        }
        cache.insert(b, data.clone());
        Ok(data)
    }

    /// Inode `ino`'s table block and its offset in that block.
    fn inode_place(&self, ino: Ino) -> Result<(u64, usize), TreeError> {
        let ipg = self.sb.inodes_per_group;
        if ino == 0 || ino > self.sb.groups * ipg {
            return Err(corrupt(format!("inode number {ino} out of range")));
        }
        let (g, i) = ((ino - 1) / ipg, (ino - 1) % ipg);
        let at = i * self.sb.inode_size;
        let block = self.inode_tables[g as usize] + at / self.bs();
        Ok((block, (at % self.bs()) as usize))
    }

    fn inode(&self, ino: Ino) -> Result<Inode, TreeError> {
        let (block, off) = self.inode_place(ino)?;
        let data = self.block(block, &format!("inode {ino}"))?;
        let raw = data[off..off + self.sb.inode_size as usize].to_vec();
        let size = u64::from(le32(&raw, 0x4)) | (u64::from(le32(&raw, 0x6C)) << 32);
        Ok(Inode {
            ino,
            mode: le16(&raw, 0),
            flags: le32(&raw, 0x20),
            size,
            raw,
        })
    }

    /// Bytes of the in-inode extra fields (`i_extra_isize`).
    fn extra(&self, n: &Inode) -> usize {
        if self.sb.inode_size <= 128 {
            return 0;
        }
        usize::from(le16(&n.raw, 0x80)).min(self.sb.inode_size as usize - 128)
    }

    fn time(&self, n: &Inode, at: usize, extra_at: usize) -> Time {
        let secs = i64::from(le32(&n.raw, at) as i32);
        if self.extra(n) + 128 < extra_at + 4 {
            return Time { secs, nanos: 0 };
        }
        let extra = le32(&n.raw, extra_at);
        Time {
            secs: secs + (i64::from(extra & 3) << 32),
            nanos: (extra >> 2).min(999_999_999),
        }
    }

    /// The value of in-inode extended attribute `system.data` (inline data beyond 60 bytes).
    fn inline_xattr(&self, n: &Inode) -> Result<Vec<u8>, TreeError> {
        let start = 128 + self.extra(n);
        let end = self.sb.inode_size as usize;
        if start + 4 > end || le32(&n.raw, start) != 0xEA02_0000 {
            return Ok(Vec::new());
        }
        let base = start + 4;
        let mut at = base;
        while at + 16 <= end {
            let name_len = usize::from(n.raw[at]);
            if name_len == 0 && le32(&n.raw, at) == 0 {
                break;
            }
            let index = n.raw[at + 1];
            let value_offs = usize::from(le16(&n.raw, at + 2));
            let value_inum = le32(&n.raw, at + 4);
            let value_size = le32(&n.raw, at + 8) as usize;
            let name_end = at + 16 + name_len;
            if name_end > end {
                return Err(corrupt(format!("inode {}: extended attribute name", n.ino)));
            }
            if index == 7 && &n.raw[at + 16..name_end] == b"data" {
                if value_inum != 0 {
                    return Err(unsupported("inline data in an extended-attribute inode"));
                }
                let v = base + value_offs;
                if v + value_size > end {
                    return Err(corrupt(format!("inode {}: inline data xattr", n.ino)));
                }
                return Ok(n.raw[v..v + value_size].to_vec());
            }
            at = (name_end + 3) & !3;
        }
        Ok(Vec::new())
    }

    /// A file stored in its inode: the 60 bytes of `i_block`, then `system.data`.
    fn inline_data(&self, n: &Inode) -> Result<Vec<u8>, TreeError> {
        let mut data = n.i_block().to_vec();
        data.extend(self.inline_xattr(n)?);
        data.truncate(n.size.min(data.len() as u64) as usize);
        Ok(data)
    }

    /// The block runs of `n`, ordered by logical block.
    fn runs(&self, n: &Inode) -> Result<Arc<Vec<Run>>, TreeError> {
        if let Some((ino, runs)) = &*self.last_runs.lock().unwrap() {
            if *ino == n.ino {
                return Ok(runs.clone());
            }
        }
        let mut runs = Vec::new();
        let max_blocks = n.size.div_ceil(self.bs()).max(1);
        if n.flags & FL_EXTENTS != 0 {
            self.walk_extents(n, n.i_block(), 0, &mut runs, &mut 0)?;
        } else {
            self.walk_indirect(n, max_blocks, &mut runs)?;
        }
        runs.sort_by_key(|r| r.logical);
        for w in runs.windows(2) {
            if w[0].logical + w[0].len > w[1].logical {
                return Err(corrupt(format!("inode {}: overlapping extents", n.ino)));
            }
        }
        let runs = Arc::new(runs);
        *self.last_runs.lock().unwrap() = Some((n.ino, runs.clone()));
        Ok(runs)
    }

    fn walk_extents(
        &self,
        n: &Inode,
        node: &[u8],
        level: u16,
        out: &mut Vec<Run>,
        visited: &mut u64,
    ) -> Result<(), TreeError> {
        let bad = |why: &str| corrupt(format!("inode {}: extent tree: {why}", n.ino));
        *visited += 1;
        if *visited > 1 << 20 {
            return Err(bad("too many nodes"));
        }
        if node.len() < 12 || le16(node, 0) != EXTENT_MAGIC {
            return Err(bad("bad node header"));
        }
        let entries = usize::from(le16(node, 2));
        let depth = le16(node, 6);
        if depth > MAX_DEPTH || (level > 0 && depth + level > MAX_DEPTH) {
            return Err(bad("too deep"));
        }
        if 12 + entries * 12 > node.len() {
            return Err(bad("more entries than fit in the node"));
        }
        for e in 0..entries {
            let at = 12 + e * 12;
            let logical = u64::from(le32(node, at));
            if depth == 0 {
                let raw_len = le16(node, at + 4);
                let (len, unwritten) = if raw_len > 32768 {
                    (u64::from(raw_len - 32768), true)
                } else {
                    (u64::from(raw_len), false)
                };
                let physical =
                    (u64::from(le16(node, at + 6)) << 32) | u64::from(le32(node, at + 8));
                if len == 0 {
                    continue;
                }
                if !self.sb.in_fs(physical, len) {
                    return Err(bad("an extent points outside the filesystem"));
                }
                out.push(Run {
                    logical,
                    physical,
                    len,
                    unwritten,
                });
            } else {
                let child = (u64::from(le16(node, at + 8)) << 32) | u64::from(le32(node, at + 4));
                let data = self.block(child, &format!("inode {} extent node", n.ino))?;
                self.walk_extents(n, &data, level + 1, out, visited)?;
            }
        }
        Ok(())
    }

    /// ext2/3 block maps: 12 direct pointers, then single, double, triple indirect blocks.
    fn walk_indirect(
        &self,
        n: &Inode,
        max_blocks: u64,
        out: &mut Vec<Run>,
    ) -> Result<(), TreeError> {
        let per = self.bs() / 4;
        let mut push = |logical: u64, physical: u64| -> Result<(), TreeError> {
            if physical == 0 {
                return Ok(());
            }
            if !self.sb.in_fs(physical, 1) {
                return Err(corrupt(format!(
                    "inode {}: block {physical} outside the filesystem",
                    n.ino
                )));
            }
            match out.last_mut() {
                Some(r) if r.logical + r.len == logical && r.physical + r.len == physical => {
                    r.len += 1;
                }
                _ => out.push(Run {
                    logical,
                    physical,
                    len: 1,
                    unwritten: false,
                }),
            }
            Ok(())
        };
        let ib = n.i_block();
        for i in 0..12u64 {
            if i < max_blocks {
                push(i, u64::from(le32(ib, i as usize * 4)))?;
            }
        }
        // Walks an indirect block of `level` (1 single, 2 double, 3 triple) covering file
        // blocks from `first`.
        fn walk(
            t: &Ext4Tree,
            n: &Inode,
            block: u64,
            level: u32,
            first: u64,
            max_blocks: u64,
            push: &mut dyn FnMut(u64, u64) -> Result<(), TreeError>,
        ) -> Result<(), TreeError> {
            if block == 0 || first >= max_blocks {
                return Ok(());
            }
            let per = t.bs() / 4;
            let span = per.pow(level - 1);
            let data = t.block(block, &format!("inode {} indirect block", n.ino))?;
            for k in 0..per {
                let at = first + k * span;
                if at >= max_blocks {
                    break;
                }
                let p = u64::from(le32(&data, k as usize * 4));
                if level == 1 {
                    push(at, p)?;
                } else {
                    walk(t, n, p, level - 1, at, max_blocks, push)?;
                }
            }
            Ok(())
        }
        let mut first = 12;
        for level in 1..=3u32 {
            let p = u64::from(le32(ib, (11 + level as usize) * 4));
            walk(self, n, p, level, first, max_blocks, &mut push)?;
            first += per.pow(level);
        }
        Ok(())
    }

    /// Reads file data of `n` at `offset` into `buf` (`n` a regular file, directory or slow
    /// symlink).
    fn read_data(&self, n: &Inode, offset: u64, buf: &mut [u8]) -> Result<usize, TreeError> {
        if n.flags & FL_ENCRYPT != 0 {
            return Err(unsupported("encrypted files (fscrypt)"));
        }
        if offset >= n.size {
            return Ok(0);
        }
        let len = (buf.len() as u64).min(n.size - offset) as usize;
        let buf = &mut buf[..len];
        if n.flags & FL_INLINE_DATA != 0 {
            let data = self.inline_data(n)?;
            buf.fill(0);
            let from = (offset as usize).min(data.len());
            let k = (data.len() - from).min(len);
            buf[..k].copy_from_slice(&data[from..from + k]);
            return Ok(len);
        }
        buf.fill(0);
        let runs = self.runs(n)?;
        let bs = self.bs();
        let end = offset + len as u64;
        let first = runs.partition_point(|r| (r.logical + r.len) * bs <= offset);
        for r in &runs[first..] {
            let (rs, re) = (r.logical * bs, (r.logical + r.len) * bs);
            if rs >= end {
                break;
            }
            if r.unwritten {
                continue;
            }
            let (s, e) = (rs.max(offset), re.min(end));
            let dst = &mut buf[(s - offset) as usize..(e - offset) as usize];
            self.read_device(dst, r.physical * bs + (s - rs))?;
        }
        Ok(len)
    }

    /// Reads device bytes honouring the device's alignment.
    fn read_device(&self, dst: &mut [u8], at: u64) -> Result<(), TreeError> {
        read_into(self.dev.as_ref(), dst, at, FS, || "file data".into()).map_err(fs_error)
    }

    /// The whole content of `n` (a directory or symlink), bounded.
    fn read_all(&self, n: &Inode, limit: u64, what: &str) -> Result<Vec<u8>, TreeError> {
        if n.size > limit {
            return Err(corrupt(format!(
                "inode {}: {what} of {} bytes",
                n.ino, n.size
            )));
        }
        let mut data = vec![0u8; n.size as usize];
        self.read_data(n, 0, &mut data)?;
        Ok(data)
    }

    /// Parses directory records in `data` (whole blocks, or an inline area) into `out`.
    fn parse_dirents(
        &self,
        n: &Inode,
        data: &[u8],
        block: usize,
        out: &mut Vec<Entry>,
    ) -> Result<(), TreeError> {
        let filetype = self.sb.incompat & INCOMPAT_FILETYPE != 0;
        for (b, blk) in data.chunks(block).enumerate() {
            let mut at = 0usize;
            while at + 8 <= blk.len() {
                let ino = u64::from(le32(blk, at));
                let rec_len = usize::from(le16(blk, at + 4));
                let name_len = usize::from(blk[at + 6]);
                if rec_len < 8 || at + rec_len > blk.len() || (ino != 0 && name_len + 8 > rec_len) {
                    return Err(corrupt(format!(
                        "directory inode {}: bad record at byte {} of block {b}",
                        n.ino, at
                    )));
                }
                // An unused record (inode 0) may hold any name length: not read.
                let name = if ino == 0 {
                    &[][..]
                } else {
                    &blk[at + 8..at + 8 + name_len]
                };
                if !name.is_empty() && name != b"." && name != b".." {
                    let kind = match (filetype, blk[at + 7]) {
                        (true, 1) => Kind::File,
                        (true, 2) => Kind::Dir,
                        (true, 3) => Kind::CharDevice,
                        (true, 4) => Kind::BlockDevice,
                        (true, 5) => Kind::Fifo,
                        (true, 6) => Kind::Socket,
                        (true, 7) => Kind::Symlink,
                        _ => self.inode(ino)?.kind()?,
                    };
                    out.push(Entry {
                        name: name.to_vec(),
                        ino,
                        kind,
                    });
                }
                at += rec_len;
            }
        }
        Ok(())
    }

    /// The journal's extents (inode 8), if it has one.
    fn journal(&self) -> Result<Vec<MetaRegion>, TreeError> {
        if self.sb.incompat & super::INCOMPAT_JOURNAL_DEV != 0 {
            return Ok(Vec::new());
        }
        let n = self.inode(JOURNAL)?;
        if n.mode == 0 {
            return Ok(Vec::new());
        }
        let bs = self.bs();
        Ok(self
            .runs(&n)?
            .iter()
            .map(|r| MetaRegion {
                start: r.physical * bs,
                len: r.len * bs,
                what: "journal".into(),
            })
            .collect())
    }
}

fn fs_error(e: crate::fs::FsError) -> TreeError {
    match e {
        crate::fs::FsError::Read { source, .. } => TreeError::Io(source),
    }
}

impl FileTree for Ext4Tree {
    fn filesystem(&self) -> &'static str {
        self.sb.name
    }

    fn root(&self) -> Ino {
        ROOT
    }

    fn stat(&self, ino: Ino) -> Result<Stat, TreeError> {
        let n = self.inode(ino)?;
        if n.mode == 0 {
            return Err(TreeError::NotFound(format!("inode {ino} (not in use)")));
        }
        let kind = n.kind()?;
        let rdev = if matches!(kind, Kind::CharDevice | Kind::BlockDevice) {
            let (old, new) = (le32(n.i_block(), 0), le32(n.i_block(), 4));
            let (major, minor) = if old != 0 {
                ((old >> 8) & 0xFF, old & 0xFF)
            } else {
                (
                    (new & 0xF_FF00) >> 8,
                    (new & 0xFF) | ((new >> 12) & 0xF_FF00),
                )
            };
            libc::makedev(major, minor)
        } else {
            0
        };
        Ok(Stat {
            ino,
            kind,
            mode: u32::from(n.mode & 0o7777),
            uid: u32::from(le16(&n.raw, 0x2)) | (u32::from(le16(&n.raw, 0x78)) << 16),
            gid: u32::from(le16(&n.raw, 0x18)) | (u32::from(le16(&n.raw, 0x7A)) << 16),
            size: n.size,
            nlink: u32::from(le16(&n.raw, 0x1A)),
            rdev,
            atime: self.time(&n, 0x8, 0x8C),
            mtime: self.time(&n, 0x10, 0x88),
            ctime: self.time(&n, 0xC, 0x84),
        })
    }

    fn read_dir(&self, ino: Ino) -> Result<Vec<Entry>, TreeError> {
        let n = self.inode(ino)?;
        if n.kind()? != Kind::Dir {
            return Err(TreeError::NotADirectory(format!("inode {ino}")));
        }
        let mut out = Vec::new();
        if n.flags & FL_INLINE_DATA != 0 {
            // The parent's inode number, then records in the rest of i_block and in the xattr.
            let ib = n.i_block();
            self.parse_dirents(&n, &ib[4..], 56, &mut out)?;
            let more = self.inline_xattr(&n)?;
            if !more.is_empty() {
                let len = more.len();
                self.parse_dirents(&n, &more, len, &mut out)?;
            }
            return Ok(out);
        }
        let data = self.read_all(&n, MAX_DIR_BYTES, "directory")?;
        self.parse_dirents(&n, &data, self.bs() as usize, &mut out)?;
        Ok(out)
    }

    fn read_at(&self, ino: Ino, offset: u64, buf: &mut [u8]) -> Result<usize, TreeError> {
        let n = self.inode(ino)?;
        match n.kind()? {
            Kind::File => self.read_data(&n, offset, buf),
            Kind::Dir => Err(TreeError::NotFound(format!("inode {ino} is a directory"))),
            _ => Ok(0),
        }
    }

    fn extents(&self, ino: Ino) -> Result<Vec<FileExtent>, TreeError> {
        let n = self.inode(ino)?;
        if n.flags & FL_INLINE_DATA != 0 {
            return Ok(vec![FileExtent {
                logical: 0,
                physical: None,
                len: n.size,
                unwritten: false,
            }]);
        }
        if n.kind()? == Kind::Symlink && self.is_fast_symlink(&n) {
            return Ok(Vec::new());
        }
        let bs = self.bs();
        Ok(self
            .runs(&n)?
            .iter()
            .map(|r| FileExtent {
                logical: r.logical * bs,
                physical: Some(r.physical * bs),
                len: r.len * bs,
                unwritten: r.unwritten,
            })
            .collect())
    }

    fn read_link(&self, ino: Ino) -> Result<Vec<u8>, TreeError> {
        let n = self.inode(ino)?;
        if n.kind()? != Kind::Symlink {
            return Err(TreeError::NotFound(format!(
                "inode {ino} is not a symbolic link"
            )));
        }
        if n.flags & FL_INLINE_DATA != 0 {
            return self.inline_data(&n);
        }
        if self.is_fast_symlink(&n) {
            return Ok(n.i_block()[..n.size as usize].to_vec());
        }
        self.read_all(&n, 4096, "symbolic link")
    }

    fn metadata(&self) -> Result<Vec<MetaRegion>, TreeError> {
        let bs = self.bs();
        let mut out = Vec::new();
        let descs = match self.sb.read_descs(self.dev.as_ref(), 0, self.sb.groups) {
            Ok(d) => d,
            Err(Step::Io(e)) => return Err(fs_error(e)),
            Err(Step::Refuse(r)) => return Err(corrupt(r.0)),
        };
        if self.sb.first_data_block > 0 || bs > 1024 {
            out.push(MetaRegion {
                start: 0,
                len: 1024,
                what: "boot block".into(),
            });
        }
        for (g, d) in descs.iter().enumerate() {
            let g = g as u64;
            let base = self.sb.base_meta_blocks(g);
            if base > 0 {
                let start = self.sb.group_start(g) + u64::from(self.sb.sb_block_adjust(g));
                out.push(MetaRegion {
                    start: start * bs,
                    len: base * bs,
                    what: format!("superblock and group descriptors (group {g})"),
                });
            }
            out.push(MetaRegion {
                start: d.block_bitmap * bs,
                len: bs,
                what: format!("block bitmap of group {g}"),
            });
            out.push(MetaRegion {
                start: d.inode_bitmap * bs,
                len: bs,
                what: format!("inode bitmap of group {g}"),
            });
            out.push(MetaRegion {
                start: d.inode_table * bs,
                len: self.sb.itable_blocks * bs,
                what: format!("inode table of group {g}"),
            });
        }
        out.extend(self.journal()?);
        out.sort_by_key(|r| r.start);
        Ok(out)
    }

    fn record(&self, ino: Ino) -> Result<Option<(u64, u64)>, TreeError> {
        let (block, off) = self.inode_place(ino)?;
        Ok(Some((block * self.bs() + off as u64, self.sb.inode_size)))
    }
}

impl Ext4Tree {
    /// A symbolic link whose target is in `i_block` (no data block of its own).
    fn is_fast_symlink(&self, n: &Inode) -> bool {
        let blocks = u64::from(le32(&n.raw, 0x1C));
        let xattr_block = u64::from(le32(&n.raw, 0x68)) | (u64::from(le16(&n.raw, 0x76)) << 32);
        let ea = if xattr_block != 0 { self.bs() / 512 } else { 0 };
        n.size < 60 && blocks.saturating_sub(ea) == 0
    }
}

#[cfg(test)]
#[path = "ext4_tree_tests.rs"]
mod tests;
