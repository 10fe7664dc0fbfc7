//! [`NtfsTree`]: the files of an NTFS volume, read from its MFT.
//!
//! ```text
//!  boot sector ── cluster size, record size, MFT at cluster m
//!  file record n ── byte n * record size of $MFT's unnamed $DATA (its runs, from record 0)
//!     "FILE" record, fixups undone; attributes in it, or in the extension records its
//!     $ATTRIBUTE_LIST names:
//!       $STANDARD_INFORMATION  times, file attributes (read-only, system, ...)
//!       $FILE_NAME             one per name (hard links; DOS 8.3 names are extra ones)
//!       $DATA (unnamed)        the content: resident in the record, or runs of clusters
//!       $INDEX_ROOT / $INDEX_ALLOCATION / $BITMAP "$I30"   a directory's entries
//!       $REPARSE_POINT         symbolic links, junctions, and tags other drivers interpret
//!  directories: the entries of $INDEX_ROOT, then of every index block $BITMAP marks in use,
//!               read in order (no B-tree walk, so no cycle to follow)
//! ```
//!
//! Unix view, as ntfs-3g gives it without a user mapping: inode numbers are file record
//! numbers (the root is 5); NTFS keeps no Unix owner or mode, so every file is uid 0, gid 0,
//! mode 0o644 (0o444 if read-only), directories 0o755, symbolic links 0o777. `mtime`, `atime`
//! and `ctime` are the $STANDARD_INFORMATION modification, access and MFT-change times. A
//! file's size is its unnamed $DATA length (0 for a directory; a link's target length for a
//! symbolic link); `nlink` counts its non-DOS names. Each name is listed once: a DOS 8.3 name
//! is left out when the file has a long name. The root's system files ($MFT, $Extend, ...:
//! record numbers below 16, and `$` names below 24) are hidden, as ntfs-3g hides them.
//! Special files are recognised as ntfs-3g writes them: symbolic links as reparse points
//! (`IO_REPARSE_TAG_SYMLINK`, and junctions) or as Interix system files (`IntxLNK\x01` and a
//! UTF-16 target, which is what `ln -s` on an ntfs-3g mount makes), devices as `IntxCHR` /
//! `IntxBLK`, FIFOs and sockets as system files of 0 and 1 bytes. An absolute reparse link's
//! target is its print name (`C:/dir/file`: the volume it names is not known here).
//!
//! Not supported (an error naming it): compressed and encrypted files, and files whose data
//! another driver supplies through a reparse point (WOF compression, deduplication, cloud
//! files, HSM). Alternate data streams are ignored. Volumes Windows left hibernated or with a
//! log to replay are read as they are.
//!
//! Written for a generation served from the repository: file data is read straight from the
//! clusters a read needs; records, index blocks and attribute lists go through a small cache
//! of 4 KiB blocks, and parsed records through a small cache of their own. Every number from
//! the device is checked (runs inside the volume, sizes covered by their runs, records inside
//! the MFT, extension records belonging to their base), lists are bounded (runs per file,
//! extension records, directory size), and nothing is followed recursively.
//!
//! The on-disk structures are parsed in `ntfs_tree_attrs.rs` (pure functions over bytes);
//! records, their attribute streams and the device reads are in `ntfs_tree_records.rs`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{FS, OEM_ID};
use crate::device::BlockDevice;
use crate::fs::read_bytes;
use crate::fs::tree::{Entry, FileExtent, FileTree, Ino, Kind, MetaRegion, Stat, TreeError};

#[path = "ntfs_tree_attrs.rs"]
mod attrs;
#[path = "ntfs_tree_records.rs"]
mod records;

use attrs::{
    ATTR_BITMAP, ATTR_COMPRESSED, ATTR_DATA, ATTR_ENCRYPTED, ATTR_INDEX_ALLOCATION,
    ATTR_INDEX_ROOT, ATTR_LIST, ATTR_REPARSE_POINT, Boot, FileName, Interix, NAMESPACE_DOS,
    RECORD_DIRECTORY, Run, TAG_MOUNT_POINT, TAG_SYMLINK, Value, Volume,
};
use records::{Data, Node, Stream};

const ROOT: Ino = 5;
const EXTEND: Ino = 11;
/// Records below this are system files.
const SYSTEM_RECORDS: u64 = 16;
/// Records below this are reserved for system files (`$` names here are hidden in the root).
const RESERVED_RECORDS: u64 = 24;
/// $STANDARD_INFORMATION file attributes.
const FILE_READ_ONLY: u32 = 0x1;
const FILE_SYSTEM: u32 = 0x4;
const FILE_ENCRYPTED: u32 = 0x4000;
/// $FILE_NAME flag of a directory.
const NAME_IS_DIRECTORY: u32 = 0x1000_0000;
/// Metadata is read and cached in blocks of this size.
const META: u64 = 4096;
const CACHE_BLOCKS: usize = 512;
const CACHE_RECORDS: usize = 1024;
/// Bounds on what one file may hold (a listing is held in memory, as ext4_tree's).
const MAX_DIR_BYTES: u64 = 256 << 20;
const MAX_RUNS: usize = 1 << 18;
const MAX_EXTENSIONS: usize = 1024;
const MAX_LIST_BYTES: u64 = 1 << 20;
const MAX_REPARSE_BYTES: u64 = 16 << 10;
/// An Interix link: the magic, then a target of at most PATH_MAX UTF-16 units.
const MAX_LINK_BYTES: u64 = 8 + 2 * 4096;
/// Device reads of file data are split into pieces of this size.
const READ_PIECE: usize = 1 << 20;

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

fn fs_error(e: crate::fs::FsError) -> TreeError {
    match e {
        crate::fs::FsError::Read { source, .. } => TreeError::Io(source),
    }
}

/// A poisoned cache is still a valid cache (entries are inserted whole).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn is_name(name: &[u16], s: &str) -> bool {
    name.iter().copied().eq(s.encode_utf16())
}

/// The files of one NTFS volume.
#[derive(Debug)]
pub struct NtfsTree {
    dev: Arc<dyn BlockDevice>,
    boot: Boot,
    /// The runs of $MFT's unnamed $DATA, and how many records they hold.
    mft: Vec<Run>,
    records: u64,
    /// Metadata blocks of `META` bytes by number (a bounded map, emptied when full). Taken
    /// alone, never with `nodes`.
    cache: Mutex<HashMap<u64, Arc<Vec<u8>>>>,
    /// Parsed file records (bounded the same way). Taken alone, never with `cache`.
    nodes: Mutex<HashMap<Ino, Arc<Node>>>,
}

impl NtfsTree {
    /// Opens the NTFS volume on `dev`; [`TreeError::Unknown`] if there is none.
    pub fn open(dev: Arc<dyn BlockDevice>) -> Result<NtfsTree, TreeError> {
        if dev.size() < 512 {
            return Err(TreeError::Unknown);
        }
        let raw =
            read_bytes(dev.as_ref(), 0, 512, FS, || "boot sector".to_owned()).map_err(fs_error)?;
        if &raw[3..11] != OEM_ID {
            return Err(TreeError::Unknown);
        }
        let boot = attrs::boot(&raw).map_err(|e| corrupt(format!("boot sector: {e}")))?;
        if boot.size > dev.size() {
            return Err(corrupt(format!(
                "the volume ({} bytes) is larger than the device ({} bytes): truncated?",
                boot.size,
                dev.size()
            )));
        }
        let first = Run {
            vcn: 0,
            lcn: Some(boot.mft_lcn),
            len: boot.record_size.div_ceil(boot.cluster),
        };
        if boot.mft_lcn + first.len > boot.clusters {
            return Err(corrupt("the MFT starts at the end of the volume".into()));
        }
        let mut tree = NtfsTree {
            dev,
            boot,
            mft: vec![first],
            records: 1,
            cache: Mutex::new(HashMap::new()),
            nodes: Mutex::new(HashMap::new()),
        };
        let opened = tree.read_mft().and_then(|()| {
            let root = tree.node(ROOT)?;
            if root.flags & RECORD_DIRECTORY == 0 {
                return Err(corrupt("the root (record 5) is not a directory".into()));
            }
            Ok(())
        });
        match opened {
            Err(TreeError::NotFound(what)) => Err(corrupt(format!("system file {what}"))),
            other => other.map(|()| tree),
        }
    }

    /// Locates the MFT: record 0's own runs first (they hold the extension records its
    /// attribute list may name), then all of its runs.
    fn read_mft(&mut self) -> Result<(), TreeError> {
        let (_, attrs0) = self.parse(0, &mut { MAX_RUNS })?;
        let own = attrs0
            .iter()
            .find_map(|a| match &a.value {
                Value::NonResident(p) if a.ty == ATTR_DATA && a.name.is_empty() => Some(p.clone()),
                _ => None,
            })
            .filter(|p| p.first_vcn == 0)
            .ok_or_else(|| corrupt("$MFT: no data runs in record 0".into()))?;
        self.set_mft(own.runs, own.next_vcn, own.size);
        lock(&self.nodes).clear();
        let mft = self.node(0)?;
        let s = mft
            .stream(ATTR_DATA, "", self.cluster())?
            .ok_or_else(|| corrupt("$MFT has no data".into()))?;
        let Data::Runs(runs) = s.data else {
            return Err(corrupt("$MFT is resident".into()));
        };
        let next = runs.last().map_or(0, |r| r.vcn + r.len);
        self.set_mft(runs, next, s.size);
        lock(&self.nodes).clear();
        if self.records < SYSTEM_RECORDS {
            return Err(corrupt(format!("an MFT of {} records", self.records)));
        }
        Ok(())
    }

    fn set_mft(&mut self, runs: Vec<Run>, next_vcn: u64, size: u64) {
        let covered = next_vcn.saturating_mul(self.cluster());
        self.records = size.min(covered) / self.boot.record_size;
        self.mft = runs;
    }

    fn cluster(&self) -> u64 {
        self.boot.cluster
    }

    fn volume(&self) -> Volume {
        Volume {
            clusters: self.boot.clusters,
            max_vcn: i64::MAX as u64 / self.cluster(),
        }
    }

    fn reparse(&self, n: &Node) -> Result<Option<Vec<u8>>, TreeError> {
        match n.stream(ATTR_REPARSE_POINT, "", self.cluster())? {
            Some(s) => self.whole(&s, MAX_REPARSE_BYTES, "reparse point").map(Some),
            None => Ok(None),
        }
    }

    fn reparse_tag(&self, n: &Node) -> Result<Option<u32>, TreeError> {
        Ok(self.reparse(n)?.map(|v| attrs::u32_at(&v, 0).unwrap_or(0)))
    }

    /// What kind of file `n` is, and its device number.
    fn kind_of(&self, n: &Node) -> Result<(Kind, u64), TreeError> {
        if let Some(TAG_SYMLINK | TAG_MOUNT_POINT) = self.reparse_tag(n)? {
            return Ok((Kind::Symlink, 0));
        }
        if n.flags & RECORD_DIRECTORY != 0 {
            return Ok((Kind::Dir, 0));
        }
        if n.ino < SYSTEM_RECORDS || n.file_attributes() & FILE_SYSTEM == 0 {
            return Ok((Kind::File, 0));
        }
        // A system file: maybe an Interix special file.
        let Some(s) = n.stream(ATTR_DATA, "", self.cluster())? else {
            return Ok((Kind::File, 0));
        };
        if s.flags & (ATTR_COMPRESSED | ATTR_ENCRYPTED) != 0 {
            return Ok((Kind::File, 0));
        }
        match s.size {
            0 => return Ok((Kind::Fifo, 0)),
            1 => return Ok((Kind::Socket, 0)),
            _ => {}
        }
        let mut head = [0u8; 24];
        let got = self.read_stream(&s, 0, &mut head, true)?;
        let dev = |major: u64, minor: u64| libc::makedev(major as u32, minor as u32);
        Ok(match attrs::interix(&head[..got]) {
            Some(Interix::Symlink) => (Kind::Symlink, 0),
            Some(Interix::Char(major, minor)) => (Kind::CharDevice, dev(major, minor)),
            Some(Interix::Block(major, minor)) => (Kind::BlockDevice, dev(major, minor)),
            None => (Kind::File, 0),
        })
    }

    /// The unnamed $DATA of `n`, if this reader can read it.
    fn data(&self, n: &Node) -> Result<Option<Stream>, TreeError> {
        let s = n.stream(ATTR_DATA, "", self.cluster())?;
        if let Some(s) = &s {
            if s.flags & ATTR_ENCRYPTED != 0 || n.file_attributes() & FILE_ENCRYPTED != 0 {
                return Err(unsupported("encrypted files"));
            }
            if s.flags & ATTR_COMPRESSED != 0 {
                return Err(unsupported("compressed files"));
            }
        }
        if let Some(tag) = self.reparse_tag(n)? {
            if let Some(what) = data_elsewhere(tag) {
                return Err(unsupported(&format!(
                    "files whose data is kept elsewhere ({what}, reparse tag {tag:#x})"
                )));
            }
        }
        Ok(s)
    }

    /// The target of `n` if it is a symbolic link.
    fn link(&self, n: &Node) -> Result<Option<Vec<u8>>, TreeError> {
        if let Some(v) = self.reparse(n)? {
            if let Some(target) = attrs::reparse_target(&v).map_err(|e| n.bad(e))? {
                return Ok(Some(target));
            }
        }
        if self.kind_of(n)?.0 != Kind::Symlink {
            return Ok(None);
        }
        let s = self
            .data(n)?
            .ok_or_else(|| n.bad("an Interix link without data"))?;
        let v = self.whole(&s, MAX_LINK_BYTES, "Interix link")?;
        if v.len() % 2 != 0 {
            return Err(n.bad("an Interix link of an odd length"));
        }
        Ok(Some(attrs::utf8(&attrs::units(&v[8..]))))
    }

    /// The names and records of directory `n`'s index, as stored.
    fn index(&self, n: &Node) -> Result<Vec<(u64, FileName)>, TreeError> {
        let cl = self.cluster();
        let root = n
            .resident(ATTR_INDEX_ROOT, "$I30")
            .ok_or_else(|| n.bad("a directory without $INDEX_ROOT"))?;
        let mut out = Vec::new();
        attrs::index_area(root, 16)
            .and_then(|area| attrs::index_entries(area, &mut out))
            .map_err(|e| n.bad(format!("index root: {e}")))?;
        let Some(alloc) = n.stream(ATTR_INDEX_ALLOCATION, "$I30", cl)? else {
            return Ok(out);
        };
        let block = u64::from(attrs::u32_at(root, 8).map_err(|e| n.bad(e))?);
        if !(512..=65536).contains(&block) || !block.is_power_of_two() {
            return Err(n.bad(format!("index blocks of {block} bytes")));
        }
        if alloc.size > MAX_DIR_BYTES {
            return Err(n.bad(format!("a directory index of {} bytes", alloc.size)));
        }
        let bitmap = match n.stream(ATTR_BITMAP, "$I30", cl)? {
            Some(s) => Some(self.whole(&s, MAX_DIR_BYTES / 512 / 8 + 8, "index bitmap")?),
            None => None,
        };
        let mut buf = vec![0u8; block as usize];
        for i in 0..alloc.size / block {
            let in_use = |bm: &Vec<u8>| {
                bm.get((i / 8) as usize)
                    .is_some_and(|b| b >> (i % 8) & 1 != 0)
            };
            if !bitmap.as_ref().is_none_or(in_use) {
                continue;
            }
            self.read_stream(&alloc, i * block, &mut buf, true)?;
            attrs::fixup(&mut buf, b"INDX")
                .and_then(|()| attrs::index_entries(attrs::index_area(&buf, 0x18)?, &mut out))
                .map_err(|e| n.bad(format!("index block {i}: {e}")))?;
        }
        Ok(out)
    }

    /// The device regions of `n`'s non-resident attributes, named after `file`.
    fn regions(&self, n: &Node, file: &str, out: &mut Vec<MetaRegion>) {
        let cl = self.cluster();
        for a in &n.attrs {
            let Value::NonResident(p) = &a.value else {
                continue;
            };
            let name = String::from_utf8_lossy(&attrs::utf8(&a.name)).into_owned();
            let what = match (a.ty, name.as_str()) {
                (ATTR_DATA, "") => file.to_owned(),
                (ATTR_INDEX_ALLOCATION, "$I30") => format!("index of directory {}", n.ino),
                (_, "") => format!("{file}:{}", type_name(a.ty)),
                (_, stream) => format!("{file}:{stream}"),
            };
            for r in &p.runs {
                if let Some(lcn) = r.lcn {
                    out.push(MetaRegion {
                        start: lcn * cl,
                        len: r.len * cl,
                        what: what.clone(),
                    });
                }
            }
        }
    }
}

/// Reparse tags whose file data another driver supplies (reading the stored data would give
/// the wrong bytes).
fn data_elsewhere(tag: u32) -> Option<&'static str> {
    match tag {
        0x8000_0017 => Some("WOF compression"),
        0x8000_0013 => Some("deduplication"),
        0xC000_0004 | 0x8000_0006 => Some("HSM"),
        t if t & 0xFFFF_0FFF == 0x9000_001A => Some("cloud files"),
        _ => None,
    }
}

fn type_name(ty: u32) -> String {
    match ty {
        ATTR_LIST => "$ATTRIBUTE_LIST".into(),
        ATTR_BITMAP => "$BITMAP".into(),
        ATTR_INDEX_ALLOCATION => "$INDEX_ALLOCATION".into(),
        t => format!("attribute {t:#x}"),
    }
}

impl FileTree for NtfsTree {
    fn filesystem(&self) -> &'static str {
        FS
    }

    fn root(&self) -> Ino {
        ROOT
    }

    fn stat(&self, ino: Ino) -> Result<Stat, TreeError> {
        let n = self.node(ino)?;
        let (kind, rdev) = self.kind_of(&n)?;
        let si = n.std_info()?;
        let at = |o: usize| attrs::time(attrs::u64_at(si, o).unwrap_or(0));
        let read_only = n.file_attributes() & FILE_READ_ONLY != 0;
        let (mode, size) = match kind {
            Kind::Dir => (0o755, 0),
            Kind::Symlink => (0o777, self.link(&n)?.map_or(0, |t| t.len() as u64)),
            _ => {
                let size = n
                    .stream(ATTR_DATA, "", self.cluster())?
                    .map_or(0, |s| s.size);
                (if read_only { 0o444 } else { 0o644 }, size)
            }
        };
        let nlink = n
            .names()?
            .iter()
            .filter(|f| f.namespace != NAMESPACE_DOS)
            .count() as u32;
        Ok(Stat {
            ino,
            kind,
            mode,
            uid: 0,
            gid: 0,
            size,
            nlink,
            rdev,
            atime: at(0x18),
            mtime: at(0x08),
            ctime: at(0x10),
        })
    }

    fn read_dir(&self, ino: Ino) -> Result<Vec<Entry>, TreeError> {
        let n = self.node(ino)?;
        if n.flags & RECORD_DIRECTORY == 0 {
            return Err(TreeError::NotADirectory(format!("file record {ino}")));
        }
        let found = self.index(&n)?;
        let long: HashSet<u64> = found
            .iter()
            .filter(|(_, f)| f.namespace != NAMESPACE_DOS)
            .map(|(r, _)| *r)
            .collect();
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (r, f) in found {
            if f.namespace == NAMESPACE_DOS && long.contains(&r) {
                continue;
            }
            let name = attrs::utf8(&f.name);
            if name.is_empty() || name == b"." || name == b".." {
                continue;
            }
            let system = r < SYSTEM_RECORDS || (name[0] == b'$' && r < RESERVED_RECORDS);
            if (ino == ROOT && system) || !seen.insert((r, name.clone())) {
                continue;
            }
            // The kind from the record; from the index's copy of the name if it is unreadable.
            let kind = match self.node(r).and_then(|m| self.kind_of(&m)) {
                Ok((k, _)) => k,
                Err(_) if f.flags & NAME_IS_DIRECTORY != 0 => Kind::Dir,
                Err(_) => Kind::File,
            };
            out.push(Entry { name, ino: r, kind });
        }
        Ok(out)
    }

    fn read_at(&self, ino: Ino, offset: u64, buf: &mut [u8]) -> Result<usize, TreeError> {
        let n = self.node(ino)?;
        match self.kind_of(&n)?.0 {
            Kind::File => match self.data(&n)? {
                Some(s) => self.read_stream(&s, offset, buf, false),
                None => Ok(0),
            },
            Kind::Dir => Err(TreeError::NotFound(format!(
                "file record {ino} is a directory"
            ))),
            _ => Ok(0),
        }
    }

    fn extents(&self, ino: Ino) -> Result<Vec<FileExtent>, TreeError> {
        let n = self.node(ino)?;
        if n.flags & RECORD_DIRECTORY != 0 {
            return Ok(Vec::new());
        }
        let Some(s) = self.data(&n)? else {
            return Ok(Vec::new());
        };
        let runs = match s.data {
            Data::Resident(_) if s.size == 0 => return Ok(Vec::new()),
            Data::Resident(_) => {
                return Ok(vec![FileExtent {
                    logical: 0,
                    physical: None,
                    len: s.size,
                    unwritten: false,
                }]);
            }
            Data::Runs(runs) => runs,
        };
        let cl = self.cluster();
        let mut out = Vec::new();
        for r in runs {
            let logical = r.vcn * cl;
            if logical >= s.size {
                break;
            }
            let Some(lcn) = r.lcn else { continue };
            let end = logical + (r.len * cl).min(s.size - logical);
            // Past the valid data length the clusters are allocated but read as zeroes.
            let valid = s.valid.clamp(logical, end);
            for (from, to, unwritten) in [(logical, valid, false), (valid, end, true)] {
                if from < to {
                    out.push(FileExtent {
                        logical: from,
                        physical: Some(lcn * cl + (from - logical)),
                        len: to - from,
                        unwritten,
                    });
                }
            }
        }
        Ok(out)
    }

    fn read_link(&self, ino: Ino) -> Result<Vec<u8>, TreeError> {
        let n = self.node(ino)?;
        self.link(&n)?
            .ok_or_else(|| TreeError::NotFound(format!("file record {ino} is not a symbolic link")))
    }

    fn metadata(&self) -> Result<Vec<MetaRegion>, TreeError> {
        let mut out = Vec::new();
        let sector = self.boot.sector;
        if self.boot.size + sector <= self.dev.size() {
            out.push(MetaRegion {
                start: self.boot.size,
                len: sector,
                what: "$Boot (backup boot sector)".into(),
            });
        }
        for ino in 0..SYSTEM_RECORDS {
            let n = match self.node(ino) {
                Ok(n) => n,
                // Reserved records not in use.
                Err(TreeError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let names = n.names()?;
            let file = names
                .iter()
                .find(|f| f.namespace != NAMESPACE_DOS)
                .map_or_else(
                    || format!("file record {ino}"),
                    |f| String::from_utf8_lossy(&attrs::utf8(&f.name)).into_owned(),
                );
            self.regions(&n, &file, &mut out);
        }
        // The files in $Extend ($ObjId, $Quota, $Reparse, $UsnJrnl, ...).
        for e in self.read_dir(EXTEND)?.iter().take(64) {
            if e.name.first() == Some(&b'$') && e.ino >= SYSTEM_RECORDS {
                let n = self.node(e.ino)?;
                let file = format!("$Extend/{}", String::from_utf8_lossy(&e.name));
                self.regions(&n, &file, &mut out);
            }
        }
        out.sort_by_key(|r| r.start);
        Ok(out)
    }

    fn record(&self, ino: Ino) -> Result<Option<(u64, u64)>, TreeError> {
        let (rs, cl) = (self.boot.record_size, self.cluster());
        if ino >= self.records {
            return Ok(None);
        }
        let at = ino * rs;
        Ok(self.mft.iter().find_map(|r| {
            let (start, end) = (r.vcn * cl, (r.vcn + r.len) * cl);
            match r.lcn {
                Some(lcn) if start <= at && at + rs <= end => Some((lcn * cl + at - start, rs)),
                _ => None,
            }
        }))
    }
}

#[cfg(test)]
#[path = "ntfs_tree_tests.rs"]
mod tests;
