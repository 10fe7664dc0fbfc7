//! [`extract`]: files of a [`FileTree`] copied out to a directory, as `tar -x` would leave
//! them: contents with their holes, mode, owner, times, symbolic links, hard links, device
//! nodes and FIFOs.
//!
//! The destination must be new or empty, and every name is created by this code with
//! `O_EXCL`/`mkdir` and never through a link (`O_NOFOLLOW`), so a hostile filesystem (a name
//! with `/` or `..`, a symlink and a directory of one name) cannot make it write elsewhere.
//! A directory's own mode and times are set after its entries are written (they change its
//! mtime); a file's owner before its mode (chown clears set-uid bits).
//!
//! A file's data is read by several threads a piece at a time and written by one (see
//! `copy_ranges`): reading a generation is loading, checking and decompressing chunks.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::{File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use cowd_api::files::ExtractReport;

use super::files::FilesError;
use crate::fs::tree::{FileTree, Ino, Kind, Stat, Time, lookup};
use crate::repo::chunk_threads;

/// Bytes read and written at once by one thread: a repository chunk at most, so that threads
/// copying neighbouring pieces mostly need different chunks.
const PIECE: u64 = 4 << 20;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FilesError + '_ {
    move |source| FilesError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A name from the filesystem as one path component, refused if it could leave its directory.
fn component(name: &[u8]) -> Result<&OsStr, FilesError> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(FilesError::Invalid(format!(
            "a file named {:?} in the backup cannot be extracted",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(OsStr::from_bytes(name))
}

/// What is written, and what is left to do at the end.
struct Extraction<'t> {
    tree: &'t dyn FileTree,
    report: ExtractReport,
    /// The first path each multiply-linked file was written to.
    links: HashMap<Ino, PathBuf>,
    /// Directories whose mode and times are set once their entries are written, deepest last.
    dirs: Vec<(PathBuf, Stat)>,
}

/// Extracts `paths` of `tree` into `to` (created if missing; must be empty otherwise). A
/// path naming a directory brings the directory and everything below it; `/` brings the
/// root's entries.
pub fn extract(
    tree: &dyn FileTree,
    paths: &[String],
    to: &Path,
) -> Result<ExtractReport, FilesError> {
    let started = Instant::now();
    if paths.is_empty() {
        return Err(FilesError::Invalid(
            "no --path given: nothing to extract".into(),
        ));
    }
    std::fs::create_dir_all(to).map_err(io(to))?;
    if std::fs::read_dir(to).map_err(io(to))?.next().is_some() {
        return Err(FilesError::Invalid(format!(
            "{}: not empty; extract into a new or empty directory",
            to.display()
        )));
    }
    let mut x = Extraction {
        tree,
        report: ExtractReport {
            files: 0,
            dirs: 0,
            symlinks: 0,
            hard_links: 0,
            specials: 0,
            bytes: 0,
            elapsed_s: 0.0,
        },
        links: HashMap::new(),
        dirs: Vec::new(),
    };
    for p in paths {
        let ino = lookup(tree, p.as_bytes())?;
        let name = p.rsplit('/').find(|s| !s.is_empty() && *s != ".");
        match name {
            None => {
                // The root: its entries go straight into `to`.
                for e in tree.read_dir(ino)? {
                    x.entry(to, &e.name, e.ino)?;
                }
            }
            Some(n) => x.entry(to, n.as_bytes(), ino)?,
        }
    }
    // Deepest first: a parent's mtime is set after its children changed it.
    while let Some((path, st)) = x.dirs.pop() {
        set_meta(&path, &st, true)?;
    }
    x.report.elapsed_s = cowd_api::units::thousandths(started.elapsed().as_secs_f64());
    Ok(x.report)
}

impl Extraction<'_> {
    /// Writes the file `ino` as `dir/name`, recursively for a directory.
    fn entry(&mut self, dir: &Path, name: &[u8], ino: Ino) -> Result<(), FilesError> {
        let mut todo = vec![(dir.join(component(name)?), ino)];
        while let Some((path, ino)) = todo.pop() {
            let st = self.tree.stat(ino)?;
            if st.kind != Kind::Dir && st.nlink > 1 {
                if let Some(first) = self.links.get(&ino) {
                    std::fs::hard_link(first, &path).map_err(io(&path))?;
                    self.report.hard_links += 1;
                    continue;
                }
                self.links.insert(ino, path.clone());
            }
            match st.kind {
                Kind::Dir => {
                    std::fs::create_dir(&path).map_err(io(&path))?;
                    self.report.dirs += 1;
                    for e in self.tree.read_dir(ino)? {
                        todo.push((path.join(component(&e.name)?), e.ino));
                    }
                    self.dirs.push((path, st));
                    continue;
                }
                Kind::File => self.file(&path, &st)?,
                Kind::Symlink => {
                    let target = self.tree.read_link(ino)?;
                    std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path)
                        .map_err(io(&path))?;
                    self.report.symlinks += 1;
                }
                k => {
                    let fmt = match k {
                        Kind::CharDevice => libc::S_IFCHR,
                        Kind::BlockDevice => libc::S_IFBLK,
                        Kind::Fifo => libc::S_IFIFO,
                        _ => libc::S_IFSOCK,
                    };
                    let c = CString::new(path.as_os_str().as_bytes())
                        .map_err(|e| FilesError::Invalid(e.to_string()))?;
                    // SAFETY: a valid NUL-terminated path; mknod has no other preconditions.
                    if unsafe { libc::mknod(c.as_ptr(), fmt | 0o600, st.rdev as libc::dev_t) } != 0
                    {
                        return Err(io(&path)(std::io::Error::last_os_error()));
                    }
                    self.report.specials += 1;
                }
            }
            set_meta(&path, &st, st.kind != Kind::Symlink)?;
        }
        Ok(())
    }

    /// A regular file: only its allocated ranges are written, so holes stay holes.
    fn file(&mut self, path: &Path, st: &Stat) -> Result<(), FilesError> {
        let f: File = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(io(path))?;
        let extents = self.tree.extents(st.ino)?;
        let mut ranges: Vec<(u64, u64)> = extents
            .iter()
            .filter(|e| !e.unwritten)
            .map(|e| (e.logical, (e.logical + e.len).min(st.size)))
            .filter(|(a, b)| a < b)
            .collect();
        if extents.is_empty() && st.size > 0 {
            // A reader without a map for this file: read it all.
            ranges.push((0, st.size));
        }
        self.report.bytes += copy_ranges(self.tree, st.ino, &ranges, &f, path)?;
        f.set_len(st.size).map_err(io(path))?;
        self.report.files += 1;
        Ok(())
    }
}

/// Copies the byte ranges `ranges` of file `ino` into `f`, a piece at a time, and returns the
/// bytes written. Loading, checking and decompressing chunks is most of the work: up to
/// [`chunk_threads`] threads read the pieces (in file order, each its own), and this thread
/// alone writes them, since parallel writes to one file only queue on its inode lock, and
/// starts their writeback at once (as an offline restore does). The first error stops every
/// thread and is returned.
fn copy_ranges(
    tree: &dyn FileTree,
    ino: Ino,
    ranges: &[(u64, u64)],
    f: &File,
    path: &Path,
) -> Result<u64, FilesError> {
    let pieces: Vec<(u64, u64)> = ranges
        .iter()
        .flat_map(|&(start, end)| {
            (start..end)
                .step_by(PIECE as usize)
                .map(move |at| (at, (at + PIECE).min(end)))
        })
        .collect();
    let threads = chunk_threads().min(pieces.len());
    if threads <= 1 {
        let mut buf = vec![0u8; PIECE as usize];
        let mut total = 0;
        for &(start, end) in &pieces {
            let n = read_piece(tree, ino, start, end, &mut buf)?;
            total += write_piece(f, path, start, &buf[..n])?;
        }
        return Ok(total);
    }
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    // Pieces read, to write; buffers written, to reuse (two per reader keep both sides busy).
    let (read_tx, read_rx) = crossbeam_channel::bounded(threads);
    let (free_tx, free_rx) = crossbeam_channel::unbounded();
    for _ in 0..2 * threads {
        free_tx
            .send(vec![0u8; PIECE as usize])
            .expect("the receiver is here");
    }
    std::thread::scope(|s| {
        for _ in 0..threads {
            let (read_tx, free_rx) = (read_tx.clone(), free_rx.clone());
            let (next, failed, pieces) = (&next, &failed, &pieces);
            s.spawn(move || {
                while !failed.load(Ordering::Relaxed) {
                    let Some(&(start, end)) = pieces.get(next.fetch_add(1, Ordering::Relaxed))
                    else {
                        return;
                    };
                    let Ok(mut buf) = free_rx.recv() else { return };
                    let piece = read_piece(tree, ino, start, end, &mut buf).map(|n| (start, n));
                    if piece.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    if read_tx.send(piece.map(|(at, n)| (at, n, buf))).is_err() {
                        return;
                    }
                }
            });
        }
        drop(read_tx);
        let mut total = 0;
        let mut first_error = None;
        for piece in read_rx {
            match piece {
                Ok((at, n, buf)) => {
                    if first_error.is_none() {
                        match write_piece(f, path, at, &buf[..n]) {
                            Ok(n) => total += n,
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                first_error = Some(e);
                            }
                        }
                    }
                    let _ = free_tx.send(buf);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(total), Err)
    })
}

/// Writes `data` at `at` of `f` and starts its writeback; returns the bytes written.
fn write_piece(f: &File, path: &Path, at: u64, data: &[u8]) -> Result<u64, FilesError> {
    f.write_all_at(data, at).map_err(io(path))?;
    crate::files::start_writeback(f, at, data.len());
    Ok(data.len() as u64)
}

/// Reads bytes `start..end` of file `ino` into `buf`; returns how many it got (fewer when the
/// file is shorter than its map says).
fn read_piece(
    tree: &dyn FileTree,
    ino: Ino,
    start: u64,
    end: u64,
    buf: &mut [u8],
) -> Result<usize, FilesError> {
    let want = (end - start) as usize;
    let mut got = 0;
    while got < want {
        let n = tree.read_at(ino, start + got as u64, &mut buf[got..want])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(got)
}

fn timespec(t: Time) -> libc::timespec {
    libc::timespec {
        tv_sec: t.secs as libc::time_t,
        tv_nsec: t.nanos as libc::c_long,
    }
}

/// Owner, mode (not of a symlink) and times of `path`, never following a link.
fn set_meta(path: &Path, st: &Stat, chmod: bool) -> Result<(), FilesError> {
    std::os::unix::fs::lchown(path, Some(st.uid), Some(st.gid)).map_err(io(path))?;
    if chmod {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(st.mode))
            .map_err(io(path))?;
    }
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| FilesError::Invalid(e.to_string()))?;
    let times = [timespec(st.atime), timespec(st.mtime)];
    // SAFETY: a valid path and two timespecs, as utimensat(2) wants.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(io(path)(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
#[path = "extract_tests.rs"]
mod tests;
