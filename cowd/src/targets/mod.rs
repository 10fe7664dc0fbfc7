//! Backup targets: where the mover writes a backup, behind one trait.
//!
//! The mover writes each block of the device's image at T exactly once, in any order, then calls
//! `finish` (make it durable and visible) or `abort` (the backup failed: remove what is partial).
//! [`RawImage`] (a sparse file, or an existing file or block device) and [`RepoTarget`] (a
//! generation of a repository)
//! implement it.

pub mod checksum;
mod raw;
mod repo;

pub use raw::RawImage;
pub use repo::{Generation, RepoTarget};

use crate::device::{DeviceError, IoBuf};

/// Why a target failed.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("target {path}: {why}")]
    Refused { path: String, why: String },
    #[error("target {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("target: {0}")]
    Device(#[from] DeviceError),
}

/// A destination of backup data.
pub trait BackupTarget: Send + Sync + std::fmt::Debug {
    /// Human-readable location (path).
    fn describe(&self) -> String;

    /// The repository this target writes a generation into, if it does.
    fn repository(&self) -> Option<&std::path::Path> {
        None
    }

    /// Writes `data` at `offset` of the image.
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), TargetError>;

    /// Writes all of `buf` at `offset`, keeping the buffer instead of copying it where the
    /// target can; gives a buffer back for the caller's next read (`buf` itself, or one the
    /// target is done with), or none.
    fn write_owned(&self, offset: u64, buf: IoBuf) -> Result<Option<IoBuf>, TargetError> {
        self.write(offset, &buf)?;
        Ok(Some(buf))
    }

    /// Records `len` bytes at `offset` as zeroes.
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), TargetError>;

    /// Makes the complete backup durable and visible under its final name.
    fn finish(&self) -> Result<(), TargetError>;

    /// Gives up: removes partial output the target created itself.
    fn abort(&self);
}
