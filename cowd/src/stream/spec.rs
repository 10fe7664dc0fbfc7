//! Which medium a path is: [`MediumSpec`] (a path, optionally a kind and a capacity) and the
//! [`MediumKind`] it resolves to from the file type.
//!
//! ```text
//!   character device ──MTIOCGET answers──> Tape  (else refused: give the kind Fifo)
//!   FIFO ──> Fifo      regular file or nothing there yet ──> File
//!   directory, block device, socket ──> refused
//! ```
//!
//! A kind given must fit the file type (a Tape is a character device, a File a regular file or
//! a new name, a Fifo anything else but a directory or block device), only a File takes a
//! capacity, and a symbolic link is followed only when it belongs to this user or to root (as
//! `files::check_in_place` does).

use std::fs::Metadata;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::MediumError;

/// What kind of medium a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediumKind {
    /// A Linux st tape device (non-rewinding `/dev/nstN` is the one to use).
    Tape,
    /// A regular file, written append-only.
    File,
    /// A FIFO or another byte stream without filemarks or an end of medium.
    Fifo,
}

/// A medium to open: a path, and optionally its kind and (for files) a capacity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediumSpec {
    pub path: PathBuf,
    /// `None`: from the file type.
    pub kind: Option<MediumKind>,
    /// For append-only files of a fixed size (and tests): a record that would end past this
    /// many bytes is an end of medium. Only for [`MediumKind::File`].
    pub capacity: Option<u64>,
}

impl MediumSpec {
    pub fn new(path: impl Into<PathBuf>) -> MediumSpec {
        MediumSpec {
            path: path.into(),
            kind: None,
            capacity: None,
        }
    }

    pub fn with_kind(self, kind: MediumKind) -> MediumSpec {
        MediumSpec {
            kind: Some(kind),
            ..self
        }
    }

    pub fn with_capacity(self, bytes: u64) -> MediumSpec {
        MediumSpec {
            capacity: Some(bytes),
            ..self
        }
    }
}

impl From<PathBuf> for MediumSpec {
    fn from(path: PathBuf) -> MediumSpec {
        MediumSpec::new(path)
    }
}

impl From<&Path> for MediumSpec {
    fn from(path: &Path) -> MediumSpec {
        MediumSpec::new(path)
    }
}

/// The file `path` names (`None` when nothing is there), refusing a symbolic link that belongs
/// to another user than this one or root (as `files::check_in_place` does).
pub(super) fn checked_metadata(path: &Path) -> Result<Option<Metadata>, MediumError> {
    match std::fs::symlink_metadata(path) {
        Ok(link) => {
            // SAFETY: geteuid has no preconditions.
            let euid = unsafe { libc::geteuid() };
            if link.file_type().is_symlink() && link.uid() != euid && link.uid() != 0 {
                let why = format!(
                    "is a symbolic link owned by uid {}; give the path it points to",
                    link.uid()
                );
                return Err(MediumError::refused(path, why));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(MediumError::io(path, "stat", e)),
    }
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(MediumError::io(path, "stat", e)),
    }
}

/// The kind of `spec`'s medium: the one it gives, or the file type's. A kind must fit the
/// file type (a Tape is a character device, a File a regular file or a new name, a Fifo
/// anything else but a directory or block device), and only a File takes a capacity.
pub(super) fn resolve_kind(
    spec: &MediumSpec,
    meta: Option<&Metadata>,
) -> Result<MediumKind, MediumError> {
    let path = &spec.path;
    let t = meta.map(|m| m.file_type());
    let kind = match (spec.kind, t) {
        (Some(k), _) => k,
        (None, None) => MediumKind::File,
        (None, Some(t)) if t.is_char_device() => MediumKind::Tape,
        (None, Some(t)) if t.is_fifo() => MediumKind::Fifo,
        (None, Some(t)) if t.is_file() => MediumKind::File,
        (None, Some(_)) => {
            let why = "is not a tape, FIFO or regular file (a block device is a copy target \
                       for block segments, not a stream)";
            return Err(MediumError::refused(path, why.into()));
        }
    };
    let (fits, what) = match kind {
        MediumKind::Tape => (t.is_some_and(|t| t.is_char_device()), "a character device"),
        MediumKind::File => (t.is_none_or(|t| t.is_file()), "a regular file"),
        MediumKind::Fifo => (
            t.is_some_and(|t| !t.is_file() && !t.is_dir() && !t.is_block_device()),
            "a FIFO or character device",
        ),
    };
    if !fits {
        return Err(MediumError::refused(
            path,
            format!("is not {what}, so it cannot be a {kind:?} medium"),
        ));
    }
    if spec.capacity.is_some() && kind != MediumKind::File {
        return Err(MediumError::refused(
            path,
            format!("a capacity is for File media, not {kind:?}"),
        ));
    }
    Ok(kind)
}
