//! Files cowd creates, in directories other users may write to: never through a link someone
//! else planted, never readable by others, and durable when they say they are.
//!
//! A backup's `PATH.partial`, a restore's, a record's temp file: each is created with
//! `O_CREAT | O_EXCL | O_NOFOLLOW` and mode 0600, so a symbolic link (or any file) planted under
//! that name makes the creation fail instead of writing through it. A leftover of our own (a
//! regular file owned by this user, from a run that died) is removed first; anything else at
//! the name is refused, naming its owner.
//!
//! A path written in place (an existing image or block device) is checked the same way: a
//! symbolic link is followed only when it belongs to this user or to root (as the kernel's
//! `fs.protected_symlinks` does in sticky directories), and an existing regular file must belong
//! to this user, so nobody can hand cowd a file of theirs to fill with a disk's contents.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// A refusal; `path` is named when the caller's context does not name it already.
fn refused(path: Option<&Path>, why: String) -> io::Error {
    let msg = match path {
        Some(p) => format!("{} {why}", p.display()),
        None => why,
    };
    io::Error::new(io::ErrorKind::PermissionDenied, msg)
}

/// Creates `path` as a new private file (0600, read-write), never through a link. A regular
/// file of this user already there (a leftover of a run that died) is replaced.
pub fn create_private(path: &Path) -> io::Result<File> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() && m.uid() == euid() && m.nlink() == 1 => {
            std::fs::remove_file(path)?;
        }
        Ok(m) if m.file_type().is_symlink() => {
            return Err(refused(
                Some(path),
                format!(
                    "is a symbolic link (owner uid {}); cowd does not write through it: remove it",
                    m.uid()
                ),
            ));
        }
        Ok(m) => {
            return Err(refused(
                Some(path),
                format!(
                    "already exists (owner uid {}); cowd creates this name itself: remove it",
                    m.uid()
                ),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Checks a path that cowd is about to write in place: it must not be a symbolic link owned by
/// another user, and if it is a regular file it must belong to this user.
pub fn check_in_place(path: &Path) -> io::Result<()> {
    let link = std::fs::symlink_metadata(path)?;
    if link.file_type().is_symlink() && link.uid() != euid() && link.uid() != 0 {
        return Err(refused(
            None,
            format!(
                "is a symbolic link owned by uid {}; give the path it points to",
                link.uid()
            ),
        ));
    }
    let m = std::fs::metadata(path)?;
    if m.file_type().is_file() && m.uid() != euid() {
        return Err(refused(
            None,
            format!(
                "belongs to uid {}; cowd writes only its own files or block devices",
                m.uid()
            ),
        ));
    }
    if m.file_type().is_block_device() || m.file_type().is_file() {
        Ok(())
    } else {
        Err(refused(None, "not a regular file or block device".into()))
    }
}

/// Writes `bytes` to `path` atomically and durably: a private temp file beside it, fsync,
/// rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(path.file_name().unwrap_or_default());
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut f = create_private(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    sync_dir(dir.unwrap_or(Path::new(".")))
}

/// True when `a` and `b` name the same file or block device.
pub fn same_device(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => {
            let bdev = |m: &std::fs::Metadata| m.file_type().is_block_device().then(|| m.rdev());
            (x.dev() == y.dev() && x.ino() == y.ino())
                || (bdev(&x).is_some() && bdev(&x) == bdev(&y))
        }
        _ => false,
    }
}

/// fsync of a directory: makes the names created, renamed or removed in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Starts writing back `len` bytes at `offset` of `f` without waiting for it, so that the disk
/// works while the next data is prepared and a final flush has little left to do (advisory:
/// an error here is found again by that flush).
pub fn start_writeback(f: &File, offset: u64, len: usize) {
    // SAFETY: a plain syscall on a descriptor the caller owns; no memory is passed.
    unsafe {
        libc::sync_file_range(
            std::os::fd::AsRawFd::as_raw_fd(f),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_planted_link_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let staged = dir.path().join("b.img.partial");
        std::os::unix::fs::symlink(&victim, &staged).unwrap();
        let e = create_private(&staged).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        // A dangling link is refused too (O_EXCL), not followed to create its target.
        let dangling = dir.path().join("r.img.partial");
        std::os::unix::fs::symlink(dir.path().join("new"), &dangling).unwrap();
        assert!(create_private(&dangling).is_err());
        assert!(!dir.path().join("new").exists());
    }

    #[test]
    fn a_leftover_of_ours_is_replaced_and_the_new_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.img.partial");
        std::fs::write(&p, b"old").unwrap();
        let f = create_private(&p).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 0);
        assert_eq!(f.metadata().unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_hard_link_to_another_file_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other");
        std::fs::write(&other, b"x").unwrap();
        let p = dir.path().join("b.img.partial");
        std::fs::hard_link(&other, &p).unwrap();
        assert!(create_private(&p).is_err());
        assert!(p.exists() && other.exists());
    }

    #[test]
    fn write_atomic_leaves_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.json");
        write_atomic(&p, b"{}").unwrap();
        write_atomic(&p, b"{\"a\":1}").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"{\"a\":1}");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn in_place_checks() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("own.img");
        std::fs::write(&own, b"x").unwrap();
        check_in_place(&own).unwrap();
        let link = dir.path().join("link.img");
        std::os::unix::fs::symlink(&own, &link).unwrap();
        check_in_place(&link).unwrap(); // our own link
        assert!(check_in_place(dir.path()).is_err());
        // Another user's link, and another user's file (the tests run as root).
        let nobody = 65534;
        std::os::unix::fs::lchown(&link, Some(nobody), Some(nobody)).unwrap();
        let e = check_in_place(&link).unwrap_err();
        assert!(
            e.to_string().contains("symbolic link owned by uid 65534"),
            "{e}"
        );
        let theirs = dir.path().join("theirs.img");
        std::fs::write(&theirs, b"x").unwrap();
        std::os::unix::fs::chown(&theirs, Some(nobody), Some(nobody)).unwrap();
        let e = check_in_place(&theirs).unwrap_err();
        assert!(e.to_string().contains("belongs to uid 65534"), "{e}");
    }
}
