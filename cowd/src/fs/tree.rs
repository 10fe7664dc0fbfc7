//! [`FileTree`]: the files of a filesystem on a device, read-only, and where their bytes are.
//!
//! Each filesystem reader (`ext4_tree`, `ntfs_tree`) implements the trait over any
//! [`BlockDevice`](crate::device::BlockDevice), so a generation served from the repository
//! (`restore::RepoImage`, which loads only the chunks read) can be listed, read and mapped
//! without restoring it. Readers take the device's bytes as untrusted input: every count,
//! offset and link is checked, loops are bounded, and what a reader does not support is an
//! [`TreeError::Unsupported`] naming the feature, never a guess.
//!
//! Paths are byte strings (`/`-separated, as the filesystem stores names); [`lookup`] walks
//! them from the root.

use crate::device::DeviceError;

/// A file's number in its filesystem: the ext4 inode number, the NTFS file record number.
pub type Ino = u64;

/// What kind of file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

/// A point in time: seconds since the Unix epoch and nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Time {
    pub secs: i64,
    pub nanos: u32,
}

/// What `stat` says about a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub ino: Ino,
    pub kind: Kind,
    /// Permission bits with set-uid, set-gid and sticky (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Names that refer to this file (hard links).
    pub nlink: u32,
    /// Device number of a character or block device (`major << 8 | minor` in the old encoding,
    /// or the new one; see `rdev` in stat(2)).
    pub rdev: u64,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
}

/// One name in a directory (`.` and `..` are not listed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: Vec<u8>,
    pub ino: Ino,
    pub kind: Kind,
}

/// Where a range of a file's bytes lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileExtent {
    /// Offset in the file.
    pub logical: u64,
    /// Offset on the device; `None` when the data lives inside filesystem metadata (an ext4
    /// inline-data inode, an NTFS resident attribute), which `metadata_of` locates.
    pub physical: Option<u64>,
    pub len: u64,
    /// Allocated but not written (reads as zeroes).
    pub unwritten: bool,
}

/// A region of the device that holds filesystem metadata rather than file data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaRegion {
    pub start: u64,
    pub len: u64,
    /// What it is: `"superblock"`, `"inode table of group 3"`, `"journal"`, `"$MFT"`, ...
    pub what: String,
}

/// Why a filesystem operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("reading the device: {0}")]
    Io(#[from] DeviceError),
    #[error("corrupt {filesystem} filesystem: {why}")]
    Corrupt {
        filesystem: &'static str,
        why: String,
    },
    #[error("{filesystem}: {feature} is not supported")]
    Unsupported {
        filesystem: &'static str,
        feature: String,
    },
    #[error("{0}: no such file or directory")]
    NotFound(String),
    #[error("{0}: not a directory")]
    NotADirectory(String),
    #[error("no filesystem this reader knows (ext2/3/4, NTFS) at this offset")]
    Unknown,
}

/// The files of one filesystem.
pub trait FileTree: Send + Sync + std::fmt::Debug {
    /// `"ext4"`, `"ntfs"`, ...
    fn filesystem(&self) -> &'static str;
    /// The root directory.
    fn root(&self) -> Ino;
    fn stat(&self, ino: Ino) -> Result<Stat, TreeError>;
    /// The entries of directory `ino`, without `.` and `..`, in the filesystem's order.
    fn read_dir(&self, ino: Ino) -> Result<Vec<Entry>, TreeError>;
    /// Reads from `offset` of file `ino` into `buf`; returns the bytes read (0 at the end).
    /// Holes read as zeroes.
    fn read_at(&self, ino: Ino, offset: u64, buf: &mut [u8]) -> Result<usize, TreeError>;
    /// The allocated ranges of file `ino`, ordered by `logical`; what they do not cover is a
    /// hole.
    fn extents(&self, ino: Ino) -> Result<Vec<FileExtent>, TreeError>;
    /// The target of symbolic link `ino`.
    fn read_link(&self, ino: Ino) -> Result<Vec<u8>, TreeError>;
    /// The device regions holding the filesystem's own metadata (superblocks, tables, the
    /// journal or log), for mapping bytes that belong to no file.
    fn metadata(&self) -> Result<Vec<MetaRegion>, TreeError>;
    /// Where file `ino`'s own record lies on the device (its inode, its MFT record), as
    /// `(offset, len)`; `None` when the reader cannot tell without reading. A change to a file
    /// through the filesystem (its data, size, times, links) rewrites its record, so `diff`
    /// skips the files whose records did not change.
    fn record(&self, ino: Ino) -> Result<Option<(u64, u64)>, TreeError> {
        let _ = ino;
        Ok(None)
    }
}

/// The file at `path` (absolute or relative to the root; empty and `/` are the root).
pub fn lookup(tree: &dyn FileTree, path: &[u8]) -> Result<Ino, TreeError> {
    let mut ino = tree.root();
    let mut walked = Vec::new();
    for part in path
        .split(|&b| b == b'/')
        .filter(|p| !p.is_empty() && *p != b".")
    {
        let shown = || String::from_utf8_lossy(&walked).into_owned();
        if tree.stat(ino)?.kind != Kind::Dir {
            return Err(TreeError::NotADirectory(shown()));
        }
        walked.push(b'/');
        walked.extend_from_slice(part);
        if part == b".." {
            return Err(TreeError::NotFound(format!(
                "{}: paths in a generation do not use ..",
                String::from_utf8_lossy(&walked)
            )));
        }
        ino = tree
            .read_dir(ino)?
            .into_iter()
            .find(|e| e.name == part)
            .map(|e| e.ino)
            .ok_or_else(|| TreeError::NotFound(String::from_utf8_lossy(&walked).into_owned()))?;
    }
    Ok(ino)
}
