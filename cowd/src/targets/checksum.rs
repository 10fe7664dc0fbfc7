//! The checksum of a raw image backup: `PATH.sha256` beside the image, in the format of
//! `sha256sum` (`<64 hex digits>  <file name>`), so the image can be verified later with
//! `cowctl verify --image PATH` or `sha256sum -c PATH.sha256` from the image's directory.
//!
//! It is computed when the image is complete and durable, by reading the image back in order
//! (the mover writes blocks in any order, so no running hash is possible); the image was just
//! written, so this reads mostly from the page cache.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::device::BlockDevice;

/// Bytes hashed per read.
const STEP: usize = 4 << 20;

/// `PATH.sha256`.
pub fn checksum_path(image: &Path) -> PathBuf {
    let mut s = image.as_os_str().to_owned();
    s.push(".sha256");
    s.into()
}

/// The SHA-256 of the whole device `dev`, as lowercase hex.
pub fn sha256_of(dev: &dyn BlockDevice) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; STEP];
    let size = dev.size();
    let mut at = 0u64;
    while at < size {
        let n = (size - at).min(STEP as u64) as usize;
        dev.read_at(&mut buf[..n], at)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        h.update(&buf[..n]);
        at += n as u64;
    }
    let mut hex = String::with_capacity(64);
    for b in h.finalize() {
        let _ = write!(hex, "{b:02x}");
    }
    Ok(hex)
}

/// Writes `PATH.sha256` for `image` (atomically, durably, mode 0600).
pub fn write(image: &Path, hex: &str) -> std::io::Result<()> {
    let name = image.file_name().unwrap_or_default().to_string_lossy();
    let line = format!("{hex}  {name}\n");
    crate::files::write_atomic(&checksum_path(image), line.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::MemoryDevice;

    #[test]
    fn the_checksum_is_sha256sums() {
        let dev = MemoryDevice::new(1 << 20);
        dev.write_at(b"abc", 0, false).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("b.img");
        std::fs::write(&img, {
            let mut v = vec![0u8; 1 << 20];
            v[..3].copy_from_slice(b"abc");
            v
        })
        .unwrap();
        let hex = sha256_of(&dev).unwrap();
        write(&img, &hex).unwrap();
        let out = std::process::Command::new("sha256sum")
            .arg("-c")
            .arg("b.img.sha256")
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}
