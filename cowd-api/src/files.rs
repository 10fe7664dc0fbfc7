//! The files of a backup's filesystem, read from the repository without restoring the device
//! (`/v1/backups/{id}/files`, `/file`, `/extract`, `/map`).

use serde::{Deserialize, Serialize};

/// What kind of file (as `ls -l` shows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
}

/// One file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// Its name in its directory (the path's last part for a file listed by its path).
    pub name: String,
    pub kind: FileKind,
    /// Permission bits with set-uid, set-gid and sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub nlink: u32,
    /// The file's number in its filesystem (inode, MFT record).
    pub ino: u64,
    /// Modification time: seconds since the Unix epoch, and nanoseconds.
    pub mtime_s: i64,
    pub mtime_ns: u32,
    /// A symbolic link's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// `GET /v1/backups/{id}/files?path=&repo=&partition=`: a directory's entries, or the file
/// itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    pub backup: String,
    /// `ext2`, `ext3`, `ext4`, `ntfs`.
    pub filesystem: String,
    pub path: String,
    /// `path` is a directory: its entries, sorted by name; otherwise the one file.
    pub is_dir: bool,
    pub entries: Vec<FileInfo>,
    /// The directory itself, when `path` is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<FileInfo>,
}

/// `POST /v1/backups/{id}/extract`: files and directories (recursively) copied out to a new
/// or empty directory, with their metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExtractRequest {
    pub repo: Option<String>,
    pub partition: Option<u32>,
    /// Paths in the backup's filesystem.
    pub paths: Vec<String>,
    /// The directory to write them into (created if missing; must be empty).
    pub to: String,
}

/// What an extraction wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtractReport {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hard_links: u64,
    /// Device nodes, FIFOs and sockets.
    pub specials: u64,
    /// Bytes of file data written (holes left out).
    pub bytes: u64,
    pub elapsed_s: f64,
}

/// A range of a file on the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappedExtent {
    pub file_offset: u64,
    /// Offset on the device; absent for data kept inside filesystem metadata (ext4 inline
    /// data, NTFS resident attributes).
    pub device_offset: Option<u64>,
    pub length: u64,
    /// Allocated, not written: reads as zeroes.
    pub unwritten: bool,
}

/// Who owns a range of the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub device_offset: u64,
    pub length: u64,
    /// A file's path, or what metadata (`inode table of group 3`, `journal`, `$MFT`).
    pub owner: String,
    /// `file` or `metadata`.
    pub kind: String,
}

/// `GET /v1/backups/{id}/map?path=` (the extents of a file) or `?offset=&length=` (the
/// owners of a range of the device).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMap {
    pub backup: String,
    pub filesystem: String,
    /// Where the filesystem starts on the device (its partition's offset).
    pub fs_offset: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default)]
    pub extents: Vec<MappedExtent>,
    #[serde(default)]
    pub owners: Vec<Owner>,
}

/// How a path differs between two generations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Only in the newer generation.
    Added,
    /// Only in the older one.
    Removed,
    /// Data, size or link target differ.
    Modified,
    /// Mode, owner, modification time or device number differ; the data is the same.
    Metadata,
    /// A different kind of file under the same name.
    Type,
}

/// One path that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffEntry {
    pub path: String,
    pub change: Change,
    /// Its kind in the newer generation (in the older one when removed).
    pub kind: FileKind,
}

/// `GET /v1/repo/backups/{id}/diff?to=ID2`: the files that differ from backup `id` to backup
/// `ID2` of the same export, found from the chunks that differ.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diff {
    pub from: String,
    pub to: String,
    pub export: String,
    pub filesystem: String,
    /// Chunks of the device, and how many of them differ between the two.
    pub chunks: u64,
    pub chunks_changed: u64,
    /// Chunks loaded from the repository to find the changes (both generations).
    pub chunks_read: u64,
    /// Sorted by path.
    pub entries: Vec<DiffEntry>,
    pub elapsed_s: f64,
}
