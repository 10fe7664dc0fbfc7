//! [`GenerationFiles`]: the files of a backup generation, read straight from the repository
//! (list, read, map), without restoring the device, without root, loop devices or a mount;
//! [`diff_generations`]: the files that differ between two generations of one export.
//!
//! ```text
//!   Repo ── RepoImage (leased; loads only the chunks read) ── fs::open::open_tree
//!            (partition table, then the ext2/3/4 or NTFS reader) ── FileTree
//! ```

use std::sync::Arc;
use std::time::Instant;

use cowd_api::files::{
    Change, Diff, DiffEntry, FileInfo, FileKind, FileMap, Listing, MappedExtent, Owner,
};

use super::RepoImage;
use crate::fs::diff::{self, Ranges};
use crate::fs::open::{Opened, open_tree};
use crate::fs::tree::{FileTree, Ino, Kind, Stat, TreeError, lookup};
use crate::repo::{Repo, RepoError};

/// Entries a range map walks at most (a filesystem with more is mapped in part, and says so).
const MAP_WALK_LIMIT: usize = 10_000_000;

/// Why a file operation on a generation failed.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// The files of one generation.
#[derive(Debug)]
pub struct GenerationFiles {
    backup: String,
    image: Arc<RepoImage>,
    opened: Opened,
}

pub(crate) fn kind(k: Kind) -> FileKind {
    match k {
        Kind::File => FileKind::File,
        Kind::Dir => FileKind::Dir,
        Kind::Symlink => FileKind::Symlink,
        Kind::CharDevice => FileKind::CharDevice,
        Kind::BlockDevice => FileKind::BlockDevice,
        Kind::Fifo => FileKind::Fifo,
        Kind::Socket => FileKind::Socket,
    }
}

impl GenerationFiles {
    /// Opens backup `id` of `repo` (leased while this lives) and the filesystem on it.
    pub fn open(
        repo: Repo,
        id: &str,
        partition: Option<u32>,
    ) -> Result<GenerationFiles, FilesError> {
        let lease = repo.lease(id, "reading its files")?;
        let index = repo.index(id)?;
        let image = Arc::new(RepoImage::new(repo, index, Some(lease)));
        let opened = open_tree(image.clone(), partition)?;
        Ok(GenerationFiles {
            backup: id.to_owned(),
            image,
            opened,
        })
    }

    pub fn tree(&self) -> &dyn FileTree {
        self.opened.tree.as_ref()
    }

    fn info(&self, name: &[u8], st: &Stat) -> Result<FileInfo, FilesError> {
        let target = match st.kind {
            Kind::Symlink => {
                Some(String::from_utf8_lossy(&self.tree().read_link(st.ino)?).into_owned())
            }
            _ => None,
        };
        Ok(FileInfo {
            name: String::from_utf8_lossy(name).into_owned(),
            kind: kind(st.kind),
            mode: st.mode,
            uid: st.uid,
            gid: st.gid,
            size: st.size,
            nlink: st.nlink,
            ino: st.ino,
            mtime_s: st.mtime.secs,
            mtime_ns: st.mtime.nanos,
            target,
        })
    }

    /// The entries of directory `path` (sorted by name), or the file at `path`.
    pub fn list(&self, path: &str) -> Result<Listing, FilesError> {
        let t = self.tree();
        let ino = lookup(t, path.as_bytes())?;
        let st = t.stat(ino)?;
        let mut entries = Vec::new();
        let mut dir = None;
        if st.kind == Kind::Dir {
            let name = path.rsplit('/').find(|p| !p.is_empty()).unwrap_or("/");
            dir = Some(self.info(name.as_bytes(), &st)?);
            let mut list = t.read_dir(ino)?;
            list.sort_by(|a, b| a.name.cmp(&b.name));
            for e in list {
                entries.push(self.info(&e.name, &t.stat(e.ino)?)?);
            }
        } else {
            let name = path.rsplit('/').next().unwrap_or(path).as_bytes();
            entries.push(self.info(name, &st)?);
        }
        Ok(Listing {
            backup: self.backup.clone(),
            filesystem: t.filesystem().to_owned(),
            path: path.to_owned(),
            is_dir: st.kind == Kind::Dir,
            entries,
            dir,
        })
    }

    /// Up to `len` bytes of file `path` from `offset` (fewer at its end).
    pub fn read(&self, path: &str, offset: u64, len: usize) -> Result<Vec<u8>, FilesError> {
        let t = self.tree();
        let ino = lookup(t, path.as_bytes())?;
        let st = t.stat(ino)?;
        if st.kind != Kind::File {
            return Err(FilesError::Invalid(format!("{path}: not a regular file")));
        }
        let n = (st.size.saturating_sub(offset)).min(len as u64) as usize;
        let mut buf = vec![0u8; n];
        let mut done = 0;
        while done < n {
            let k = t.read_at(ino, offset + done as u64, &mut buf[done..])?;
            if k == 0 {
                break;
            }
            done += k;
        }
        buf.truncate(done);
        Ok(buf)
    }

    fn map(&self, path: Option<String>) -> FileMap {
        FileMap {
            backup: self.backup.clone(),
            filesystem: self.tree().filesystem().to_owned(),
            fs_offset: self.opened.offset,
            path,
            extents: Vec::new(),
            owners: Vec::new(),
        }
    }

    /// Where the bytes of file `path` lie on the device.
    pub fn map_path(&self, path: &str) -> Result<FileMap, FilesError> {
        let t = self.tree();
        let ino = lookup(t, path.as_bytes())?;
        let mut m = self.map(Some(path.to_owned()));
        m.extents = t
            .extents(ino)?
            .into_iter()
            .map(|e| MappedExtent {
                file_offset: e.logical,
                device_offset: e.physical.map(|p| p + self.opened.offset),
                length: e.len,
                unwritten: e.unwritten,
            })
            .collect();
        Ok(m)
    }

    /// Who owns `len` bytes at device offset `offset`: files (by path) and metadata.
    pub fn map_range(&self, offset: u64, len: u64) -> Result<FileMap, FilesError> {
        if len == 0 {
            return Err(FilesError::Invalid("--length 0: nothing to map".into()));
        }
        let t = self.tree();
        let base = self.opened.offset;
        let (start, end) = (offset, offset.saturating_add(len));
        let mut m = self.map(None);
        let overlap = |s: u64, l: u64| -> Option<(u64, u64)> {
            let from = s.saturating_add(base);
            let (a, b) = (from.max(start), from.saturating_add(l).min(end));
            // `then`, not `then_some`: `b - a` only when it does not underflow.
            (a < b).then(|| (a, b - a))
        };
        for r in t.metadata()? {
            if let Some((at, l)) = overlap(r.start, r.len) {
                m.owners.push(Owner {
                    device_offset: at,
                    length: l,
                    owner: r.what,
                    kind: "metadata".into(),
                });
            }
        }
        let mut todo: Vec<(String, Ino)> = vec![(String::new(), t.root())];
        let mut seen = std::collections::HashSet::new();
        let mut walked = 0usize;
        while let Some((dir_path, dir)) = todo.pop() {
            for e in t.read_dir(dir)? {
                walked += 1;
                if walked > MAP_WALK_LIMIT {
                    return Err(FilesError::Invalid(format!(
                        "more than {MAP_WALK_LIMIT} files: the map was not completed"
                    )));
                }
                let p = format!("{dir_path}/{}", String::from_utf8_lossy(&e.name));
                if e.kind == Kind::Dir {
                    if seen.insert(e.ino) {
                        todo.push((p.clone(), e.ino));
                    } else {
                        continue;
                    }
                }
                for x in t.extents(e.ino)? {
                    let Some(phys) = x.physical else { continue };
                    if let Some((at, l)) = overlap(phys, x.len) {
                        m.owners.push(Owner {
                            device_offset: at,
                            length: l,
                            owner: p.clone(),
                            kind: "file".into(),
                        });
                    }
                }
            }
        }
        m.owners
            .sort_by(|a, b| (a.device_offset, &a.owner).cmp(&(b.device_offset, &b.owner)));
        Ok(m)
    }
}

fn change(c: diff::Change) -> Change {
    match c {
        diff::Change::Added => Change::Added,
        diff::Change::Removed => Change::Removed,
        diff::Change::Modified => Change::Modified,
        diff::Change::Metadata => Change::Metadata,
        diff::Change::Type => Change::Type,
    }
}

/// The files that differ from backup `old` to backup `new` of one export: the chunks whose
/// digests differ, then [`diff::diff`] over both filesystems.
pub fn diff_generations(
    repo: Repo,
    old: &str,
    new: &str,
    partition: Option<u32>,
) -> Result<Diff, FilesError> {
    let started = Instant::now();
    let (ma, mb) = (repo.manifest(old)?, repo.manifest(new)?);
    if ma.export != mb.export {
        return Err(FilesError::Invalid(format!(
            "{old} is a backup of {}, {new} of {}: diff compares generations of one export",
            ma.export, mb.export
        )));
    }
    let a = GenerationFiles::open(repo.clone(), old, partition)?;
    let b = GenerationFiles::open(repo, new, partition)?;
    let (ia, ib) = (a.image.index(), b.image.index());
    if ia.device_size != ib.device_size || ia.chunk_size != ib.chunk_size {
        return Err(FilesError::Invalid(format!(
            "{old} is of a device of {} bytes in chunks of {}, {new} of {} bytes in chunks of \
             {}: compare their files with ls",
            ia.device_size, ia.chunk_size, ib.device_size, ib.chunk_size
        )));
    }
    if a.opened.offset != b.opened.offset || a.tree().filesystem() != b.tree().filesystem() {
        return Err(FilesError::Invalid(format!(
            "{old} and {new} hold different filesystems ({} at {}, {} at {})",
            a.tree().filesystem(),
            a.opened.offset,
            b.tree().filesystem(),
            b.opened.offset
        )));
    }
    // The differing chunks, as offsets in the filesystem.
    let base = a.opened.offset;
    let differ: Vec<usize> = (0..ia.digests.len())
        .filter(|&i| !ia.same_chunk(ib, i))
        .collect();
    let ranges = Ranges::new(
        differ
            .iter()
            .map(|&i| {
                let s = ia.chunk_offset(i);
                let e = s + ia.chunk_len(i) as u64;
                (s.saturating_sub(base), e.saturating_sub(base))
            })
            .collect(),
    );
    let entries = diff::diff(a.tree(), b.tree(), &ranges)?
        .into_iter()
        .map(|c| DiffEntry {
            path: String::from_utf8_lossy(&c.path).into_owned(),
            change: change(c.change),
            kind: kind(c.kind),
        })
        .collect();
    Ok(Diff {
        from: old.to_owned(),
        to: new.to_owned(),
        export: mb.export,
        filesystem: b.tree().filesystem().to_owned(),
        chunks: ia.digests.len() as u64,
        chunks_changed: differ.len() as u64,
        chunks_read: a.image.chunks_loaded() + b.image.chunks_loaded(),
        entries,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}
