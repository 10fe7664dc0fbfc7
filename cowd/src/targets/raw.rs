//! [`RawImage`]: a backup written as a raw image the size of the device.
//!
//! A new path becomes a sparse file written under `PATH.partial` and renamed into place by
//! `finish` (so a failed backup never leaves something that looks complete). An existing block
//! device or file at least as large as the device is written in place; zero ranges are then
//! written explicitly, since old data may be there.
//!
//! Every large write starts the writeback of its range at once (`sync_file_range`), so that
//! the disk works while the next data is read and `finish`'s flush has little left to do.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{BackupTarget, TargetError, checksum};
use crate::device::{BlockDevice, FileDevice, FileOptions, ZeroFlags};
use crate::files::start_writeback;

/// A raw image target.
#[derive(Debug)]
pub struct RawImage {
    dev: Arc<dyn BlockDevice>,
    path: PathBuf,
    /// `Some(partial)` when we created a new sparse file under a temporary name.
    partial: Option<PathBuf>,
    /// The same file, for writeback hints (`None` on devices that are not files).
    hint: Option<File>,
    /// Write `PATH.sha256` at `finish` (file images of backups; see [`checksum`]).
    checksum: bool,
}

/// Writes at least this long start their writeback at once.
const WRITEBACK_MIN: usize = 256 << 10;

fn refused(path: &Path, why: impl Into<String>) -> TargetError {
    TargetError::Refused {
        path: path.display().to_string(),
        why: why.into(),
    }
}

impl RawImage {
    /// Opens `path` for an image of `size` bytes.
    pub fn create(path: &Path, size: u64) -> Result<RawImage, TargetError> {
        let io = |source| TargetError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::symlink_metadata(path) {
            Ok(_) => {
                crate::files::check_in_place(path).map_err(|e| refused(path, e.to_string()))?;
                let dev = FileDevice::open(path, FileOptions::default())
                    .map_err(|e| refused(path, e.to_string()))?;
                if dev.size() < size {
                    let why = format!("holds {} bytes; the device needs {size}", dev.size());
                    return Err(refused(path, why));
                }
                Ok(RawImage {
                    dev: Arc::new(dev),
                    path: path.to_owned(),
                    partial: None,
                    hint: File::open(path).ok(),
                    checksum: false,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut name = path
                    .file_name()
                    .ok_or_else(|| refused(path, "no file name"))?
                    .to_owned();
                name.push(".partial");
                let partial = path.with_file_name(name);
                let f = crate::files::create_private(&partial).map_err(io)?;
                f.set_len(size).map_err(io)?;
                drop(f);
                let dev = FileDevice::open(&partial, FileOptions::default())
                    .map_err(|e| refused(path, e.to_string()))?;
                Ok(RawImage {
                    dev: Arc::new(dev),
                    path: path.to_owned(),
                    hint: File::open(&partial).ok(),
                    partial: Some(partial),
                    checksum: false,
                })
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Also writes the image's checksum beside it when it is complete (a backup's image; a
    /// restore's needs none).
    pub fn with_checksum(self) -> RawImage {
        RawImage {
            checksum: true,
            ..self
        }
    }

    /// Stacks a fault-injecting layer under this target (a testing aid; see
    /// `--allow-fault-injection`).
    pub fn with_faults(self) -> (RawImage, Arc<crate::device::FaultControl>) {
        let (dev, control) = crate::device::FaultDevice::new(self.dev);
        (
            RawImage {
                dev: Arc::new(dev),
                ..self
            },
            control,
        )
    }

    /// A raw image on any device (tests stack a fault layer or use memory).
    pub fn on_device(dev: Arc<dyn BlockDevice>, path: &Path) -> RawImage {
        RawImage {
            dev,
            path: path.to_owned(),
            partial: None,
            hint: None,
            checksum: false,
        }
    }
}

impl BackupTarget for RawImage {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), TargetError> {
        self.dev.write_at(data, offset, false)?;
        if let Some(f) = self.hint.as_ref().filter(|_| data.len() >= WRITEBACK_MIN) {
            start_writeback(f, offset, data.len());
        }
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), TargetError> {
        if self.partial.is_some() {
            return Ok(()); // a new sparse file already reads as zeroes
        }
        Ok(self.dev.write_zeroes(
            offset,
            len,
            ZeroFlags {
                may_trim: true,
                ..Default::default()
            },
        )?)
    }

    fn finish(&self) -> Result<(), TargetError> {
        self.dev.flush()?;
        let io = |source| TargetError::Io {
            path: self.path.display().to_string(),
            source,
        };
        // A file image gets its checksum beside it (a block device has no "beside").
        let file = self.partial.is_some()
            || self
                .hint
                .as_ref()
                .is_some_and(|f| f.metadata().is_ok_and(|m| m.file_type().is_file()));
        let sum = if file && self.checksum {
            Some(checksum::sha256_of(self.dev.as_ref()).map_err(io)?)
        } else {
            None
        };
        if let Some(partial) = &self.partial {
            std::fs::rename(partial, &self.path).map_err(io)?;
        }
        if let Some(hex) = &sum {
            checksum::write(&self.path, hex).map_err(io)?;
        } else if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::files::sync_dir(dir).map_err(io)?;
        }
        Ok(())
    }

    fn abort(&self) {
        if let Some(partial) = &self.partial {
            let _ = std::fs::remove_file(partial);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_image_appears_only_when_finished() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("backup.img");
        let t = RawImage::create(&p, 1 << 20).unwrap();
        t.write(4096, &[5; 4096]).unwrap();
        t.write_zeroes(0, 4096).unwrap();
        assert!(!p.exists() && dir.path().join("backup.img.partial").exists());
        t.finish().unwrap();
        let data = std::fs::read(&p).unwrap();
        assert_eq!(data.len(), 1 << 20);
        assert!(data[4096..8192].iter().all(|&b| b == 5) && data[..4096].iter().all(|&b| b == 0));
        assert!(!dir.path().join("backup.img.partial").exists());
    }

    #[test]
    fn aborted_image_leaves_nothing_and_existing_targets_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.img");
        let t = RawImage::create(&p, 1 << 20).unwrap();
        t.abort();
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
        let small = dir.path().join("small.img");
        std::fs::write(&small, vec![1u8; 4096]).unwrap();
        let e = RawImage::create(&small, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("holds 4096 bytes"), "{e}");
        let big = dir.path().join("big.img");
        std::fs::write(&big, vec![1u8; 1 << 20]).unwrap();
        let t = RawImage::create(&big, 8192).unwrap();
        t.write_zeroes(0, 4096).unwrap();
        t.finish().unwrap();
        let d = std::fs::read(&big).unwrap();
        assert!(d[..4096].iter().all(|&b| b == 0) && d[4096..].iter().all(|&b| b == 1));
        t.abort();
        assert!(big.exists(), "abort never deletes an existing target");
    }
}
