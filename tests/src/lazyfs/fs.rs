//! The lazyfs filesystem: a FUSE passthrough over a backing directory whose file *data* waits
//! in a [`PageCache`] until the application makes it durable, so that a power cut loses
//! exactly what a real one may lose.
//!
//! ```text
//!  application ──FUSE──> LazyFs ── metadata (create, mkdir, rename, link, unlink, symlink,
//!                          │        truncate, chmod, ...) ──> backing directory, at once
//!                          ├── write ──> PageCache (O_SYNC/O_DSYNC files: also the backing file)
//!                          ├── fsync / fdatasync ──> PageCache extents ──> backing file
//!                          └── read  <── backing file with the PageCache laid over it
//!  power cut: PageCache discarded, every later operation answers EIO
//! ```
//!
//! This is LazyFS's default model: metadata operations are durable as soon as they return, and
//! fsync of a directory is counted but has nothing to flush. So a missing directory fsync is
//! not caught here; a record renamed into place before its data was synced is.
//!
//! Inodes are the backing files' own inode numbers (the backing root is FUSE's inode 1, and an
//! inode numbered 1 takes the root's number), so `stat` shows the same identity across
//! remounts. Each known inode holds an `O_PATH` descriptor, used with the `*at` system calls
//! and reopened through `/proc/self/fd` for data. An inode with dirty data is kept (and its
//! backing inode alive) until that data is flushed or discarded, so its number is never reused
//! under the cache.
//!
//! One mutex covers all state (inode table, directory handles, cache, power switch): requests
//! are served one at a time, which keeps "cut after N operations" exact and the code plain.

use std::collections::HashMap;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, FileExt};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use super::cache::PageCache;
use super::power::{Admit, Power};

/// How long the kernel may cache entries and attributes. Every change goes through this mount,
/// so its caches stay right; after a power cut the mount is thrown away.
const TTL: Duration = Duration::from_secs(1);

/// A file or directory the kernel knows (has looked up).
#[derive(Debug)]
struct Inode {
    /// `O_PATH | O_NOFOLLOW` descriptor of the backing inode.
    path: OwnedFd,
    /// Read-write descriptor of a regular file, opened on first use.
    data: Option<File>,
    /// Lookups the kernel has not forgotten.
    lookups: u64,
}

#[derive(Debug)]
struct State {
    inodes: HashMap<u64, Inode>,
    /// Open directories: their entries (inode, kind, name) read at opendir.
    dirs: HashMap<u64, Vec<(u64, FileType, OsString)>>,
    next_fh: u64,
    cache: PageCache,
    power: Power,
    /// The backing root's own inode number (shown as 1).
    root_ino: u64,
}

/// The filesystem; clones share it (the FUSE session and the control socket each hold one).
#[derive(Debug, Clone)]
pub struct LazyFs {
    state: Arc<Mutex<State>>,
}

impl LazyFs {
    /// A filesystem over the backing directory `backing`.
    pub fn new(backing: &Path) -> io::Result<LazyFs> {
        let root = open_at(libc::AT_FDCWD, backing.as_os_str(), libc::O_PATH, 0)?;
        let root_ino = fstat(root.as_raw_fd())?.st_ino;
        let mut inodes = HashMap::new();
        let root_node = Inode {
            path: root,
            data: None,
            lookups: 1,
        };
        inodes.insert(1, root_node);
        let state = State {
            inodes,
            dirs: HashMap::new(),
            next_fh: 1,
            cache: PageCache::default(),
            power: Power::default(),
            root_ino,
        };
        Ok(LazyFs {
            state: Arc::new(Mutex::new(state)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Durability-relevant operations admitted so far.
    pub fn ops(&self) -> u64 {
        self.lock().power.ops()
    }

    /// `n` more operations happen; the next one cuts the power.
    pub fn cut_after(&self, n: u64) {
        self.lock().power.cut_after(n);
    }

    /// Cuts the power now; returns the dirty bytes lost.
    pub fn cut_now(&self) -> u64 {
        let mut s = self.lock();
        if s.power.cut_now() {
            s.cache.discard()
        } else {
            0
        }
    }

    pub fn is_off(&self) -> bool {
        self.lock().power.is_off()
    }
}

impl State {
    /// Lets a durability-relevant operation through, or fails it once the power is off.
    fn admit(&mut self) -> Result<(), Errno> {
        match self.power.admit() {
            Admit::Go => Ok(()),
            Admit::CutNow => {
                self.cache.discard();
                Err(Errno::EIO)
            }
            Admit::Off => Err(Errno::EIO),
        }
    }

    /// Lets any other operation through while the power is on.
    fn live(&self) -> Result<(), Errno> {
        if self.power.is_off() {
            Err(Errno::EIO)
        } else {
            Ok(())
        }
    }

    /// FUSE's number for a backing inode number.
    fn node_of(&self, backing_ino: u64) -> u64 {
        match backing_ino {
            i if i == self.root_ino => 1,
            1 => self.root_ino,
            i => i,
        }
    }

    fn inode(&self, ino: INodeNo) -> Result<&Inode, Errno> {
        self.inodes.get(&ino.0).ok_or(Errno::ESTALE)
    }

    fn fd(&self, ino: INodeNo) -> Result<RawFd, Errno> {
        Ok(self.inode(ino)?.path.as_raw_fd())
    }

    /// The read-write descriptor of a regular file.
    fn data(&mut self, ino: INodeNo) -> Result<&File, Errno> {
        let node = self.inodes.get_mut(&ino.0).ok_or(Errno::ESTALE)?;
        if node.data.is_none() {
            let f = File::options()
                .read(true)
                .write(true)
                .open(proc_path(node.path.as_raw_fd()))?;
            node.data = Some(f);
        }
        Ok(node.data.as_ref().expect("opened above"))
    }

    /// Looks `name` up in `parent` and counts a lookup of it; returns its attributes.
    fn lookup(&mut self, parent: INodeNo, name: &OsStr) -> Result<FileAttr, Errno> {
        let fd = open_at(self.fd(parent)?, name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        let st = fstat(fd.as_raw_fd())?;
        let node = self.node_of(st.st_ino);
        self.inodes
            .entry(node)
            .or_insert(Inode {
                path: fd,
                data: None,
                lookups: 0,
            })
            .lookups += 1;
        Ok(self.attr_of(node, &st))
    }

    fn attr(&self, ino: INodeNo) -> Result<FileAttr, Errno> {
        let st = fstat(self.fd(ino)?)?;
        Ok(self.attr_of(ino.0, &st))
    }

    /// Attributes as applications see them: the size includes dirty data.
    fn attr_of(&self, node: u64, st: &libc::stat) -> FileAttr {
        let time = |s: i64, ns: i64| {
            UNIX_EPOCH + Duration::from_secs(s.max(0) as u64) + Duration::from_nanos(ns as u64)
        };
        FileAttr {
            ino: INodeNo(node),
            size: self.cache.size(node, st.st_size as u64),
            blocks: st.st_blocks as u64,
            atime: time(st.st_atime, st.st_atime_nsec),
            mtime: time(st.st_mtime, st.st_mtime_nsec),
            ctime: time(st.st_ctime, st.st_ctime_nsec),
            crtime: SystemTime::UNIX_EPOCH,
            kind: kind(st.st_mode),
            perm: (st.st_mode & 0o7777) as u16,
            nlink: st.st_nlink as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev as u32,
            blksize: 4096,
            flags: 0,
        }
    }

    /// The FUSE number of what `name` in `parent` is now, if the kernel knows it.
    fn known_entry(&self, parent: INodeNo, name: &OsStr) -> Option<u64> {
        let st = fstat_at(self.fd(parent).ok()?, name).ok()?;
        let node = self.node_of(st.st_ino);
        self.inodes.contains_key(&node).then_some(node)
    }

    /// After an unlink or a rename over it: a file with no name left loses its dirty data.
    fn reap(&mut self, node: Option<u64>) {
        let Some(node) = node else { return };
        let gone = self
            .inodes
            .get(&node)
            .and_then(|n| fstat(n.path.as_raw_fd()).ok())
            .is_some_and(|st| st.st_nlink == 0);
        if gone {
            self.cache.forget(node);
            if self.inodes.get(&node).is_some_and(|n| n.lookups == 0) {
                self.inodes.remove(&node);
            }
        }
    }

    /// Writes `ino`'s dirty data to its backing file.
    fn flush(&mut self, ino: INodeNo) -> Result<(), Errno> {
        let dirty = self.cache.take(ino.0);
        if dirty.is_empty() {
            return Ok(());
        }
        let f = self.data(ino)?;
        let written = dirty
            .extents()
            .try_for_each(|(at, b)| f.write_all_at(b, at));
        if let Err(e) = written {
            self.cache.restore(ino.0, dirty);
            return Err(e.into());
        }
        self.forget_if_unused(ino.0);
        Ok(())
    }

    /// Drops an inode the kernel forgot once it holds no dirty data.
    fn forget_if_unused(&mut self, node: u64) {
        if node != 1
            && !self.cache.is_dirty(node)
            && self.inodes.get(&node).is_some_and(|n| n.lookups == 0)
        {
            self.inodes.remove(&node);
        }
    }
}

/// Runs `f` under the state lock and answers with its result.
macro_rules! serve {
    ($self:ident, $reply:ident, |$s:ident| $body:expr, |$ok:pat_param| $answer:expr) => {{
        let mut guard = $self.lock();
        let $s = &mut *guard;
        // A closure, so that `?` in the body ends the body and not the request handler.
        #[allow(clippy::redundant_closure_call)]
        let r: Result<_, Errno> = (|| $body)();
        drop(guard);
        match r {
            Ok($ok) => $answer,
            Err(e) => $reply.error(e),
        }
    }};
}

impl Filesystem for LazyFs {
    fn lookup(&self, _: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        serve!(
            self,
            reply,
            |s| {
                s.live()?;
                s.lookup(parent, name)
            },
            |a| reply.entry(&TTL, &a, Generation(0))
        )
    }

    fn forget(&self, _: &Request, ino: INodeNo, nlookup: u64) {
        let mut s = self.lock();
        if let Some(n) = s.inodes.get_mut(&ino.0) {
            n.lookups = n.lookups.saturating_sub(nlookup);
        }
        s.forget_if_unused(ino.0);
    }

    fn getattr(&self, _: &Request, ino: INodeNo, _: Option<FileHandle>, reply: ReplyAttr) {
        serve!(
            self,
            reply,
            |s| {
                s.live()?;
                s.attr(ino)
            },
            |a| reply.attr(&TTL, &a)
        )
    }

    fn setattr(
        &self,
        _: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _: Option<SystemTime>,
        _: Option<FileHandle>,
        _: Option<SystemTime>,
        _: Option<SystemTime>,
        _: Option<SystemTime>,
        _: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        serve!(
            self,
            reply,
            |s| {
                let fd = s.fd(ino)?;
                if let Some(size) = size {
                    s.admit()?;
                    s.data(ino)?.set_len(size)?;
                    s.cache.truncate(ino.0, size);
                }
                if let Some(mode) = mode {
                    s.admit()?;
                    let p = cstr(proc_path(fd).as_os_str());
                    // SAFETY: a NUL-terminated path that outlives the call.
                    cvt(unsafe { libc::chmod(p.as_ptr(), mode & 0o7777) })?;
                }
                if uid.is_some() || gid.is_some() {
                    s.admit()?;
                    let (u, g) = (uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX));
                    let flags = libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW;
                    // SAFETY: an empty NUL-terminated path with AT_EMPTY_PATH on our descriptor.
                    cvt(unsafe { libc::fchownat(fd, c"".as_ptr(), u, g, flags) })?;
                }
                if atime.is_some() || mtime.is_some() {
                    s.live()?;
                    let ts = [timespec(atime), timespec(mtime)];
                    let p = cstr(proc_path(fd).as_os_str());
                    // SAFETY: a NUL-terminated path and two timespecs that outlive the call.
                    cvt(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), ts.as_ptr(), 0) })?;
                }
                s.live()?;
                s.attr(ino)
            },
            |a| reply.attr(&TTL, &a)
        )
    }

    fn readlink(&self, _: &Request, ino: INodeNo, reply: ReplyData) {
        serve!(
            self,
            reply,
            |s| {
                s.live()?;
                std::fs::read_link(proc_path(s.fd(ino)?)).map_err(|_| Errno::EINVAL)
            },
            |target| reply.data(target.as_os_str().as_bytes())
        )
    }

    fn mknod(
        &self,
        _: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        serve!(
            self,
            reply,
            |s| {
                s.admit()?;
                let n = cstr(name);
                // SAFETY: a NUL-terminated name that outlives the call.
                let r =
                    unsafe { libc::mknodat(s.fd(parent)?, n.as_ptr(), mode & !umask, rdev.into()) };
                cvt(r)?;
                s.lookup(parent, name)
            },
            |a| reply.entry(&TTL, &a, Generation(0))
        )
    }

    fn mkdir(
        &self,
        _: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        serve!(
            self,
            reply,
            |s| {
                s.admit()?;
                let n = cstr(name);
                // SAFETY: a NUL-terminated name that outlives the call.
                cvt(unsafe { libc::mkdirat(s.fd(parent)?, n.as_ptr(), mode & !umask) })?;
                s.lookup(parent, name)
            },
            |a| reply.entry(&TTL, &a, Generation(0))
        )
    }

    fn unlink(&self, _: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        serve!(
            self,
            reply,
            |s| {
                s.admit()?;
                let victim = s.known_entry(parent, name);
                let n = cstr(name);
                // SAFETY: a NUL-terminated name that outlives the call.
                cvt(unsafe { libc::unlinkat(s.fd(parent)?, n.as_ptr(), 0) })?;
                s.reap(victim);
                Ok(())
            },
            |()| reply.ok()
        )
    }

    fn rmdir(&self, _: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        serve!(
            self,
            reply,
            |s| {
                s.admit()?;
                let n = cstr(name);
                // SAFETY: a NUL-terminated name that outlives the call.
                let r = unsafe { libc::unlinkat(s.fd(parent)?, n.as_ptr(), libc::AT_REMOVEDIR) };
                cvt(r)
            },
            |()| reply.ok()
        )
    }

    fn symlink(
        &self,
        _: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        serve!(
            self,
            reply,
            |s| {
                s.admit()?;
                let (t, n) = (cstr(target.as_os_str()), cstr(link_name));
                // SAFETY: NUL-terminated strings that outlive the call.
                cvt(unsafe { libc::symlinkat(t.as_ptr(), s.fd(parent)?, n.as_ptr()) })?;
                s.lookup(parent, link_name)
            },
            |a| reply.entry(&TTL, &a, Generation(0))
        )
    }

    fn rename(
        &self,
        _: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        serve!(
            self,
            reply,
            |s| {
                s.admit()?;
                let victim = s.known_entry(newparent, newname);
                let (from, to) = (cstr(name), cstr(newname));
                let (fd, newfd) = (s.fd(parent)?, s.fd(newparent)?);
                // SAFETY: NUL-terminated names that outlive the call, on our descriptors.
                let r =
                    unsafe { libc::renameat2(fd, from.as_ptr(), newfd, to.as_ptr(), flags.bits()) };
                cvt(r)?;
                s.reap(victim);
                Ok(())
            },
            |()| reply.ok()
        )
    }

    fn link(
        &self,
        _: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        serve!(
            self,
            reply,
            |s| {
                s.admit()?;
                let from = cstr(proc_path(s.fd(ino)?).as_os_str());
                let to = cstr(newname);
                let flags = libc::AT_SYMLINK_FOLLOW;
                let newfd = s.fd(newparent)?;
                // SAFETY: NUL-terminated paths that outlive the call.
                let r = unsafe {
                    libc::linkat(libc::AT_FDCWD, from.as_ptr(), newfd, to.as_ptr(), flags)
                };
                cvt(r)?;
                s.lookup(newparent, newname)
            },
            |a| reply.entry(&TTL, &a, Generation(0))
        )
    }

    fn open(&self, _: &Request, ino: INodeNo, _: OpenFlags, reply: ReplyOpen) {
        serve!(
            self,
            reply,
            |s| {
                s.live()?;
                if kind(fstat(s.fd(ino)?)?.st_mode) == FileType::RegularFile {
                    s.data(ino)?;
                }
                Ok(())
            },
            |()| reply.opened(FileHandle(0), FopenFlags::empty())
        )
    }

    fn read(
        &self,
        _: &Request,
        ino: INodeNo,
        _: FileHandle,
        offset: u64,
        size: u32,
        _: OpenFlags,
        _: Option<LockOwner>,
        reply: ReplyData,
    ) {
        serve!(
            self,
            reply,
            |s| {
                s.live()?;
                let backing = s.data(ino)?.metadata()?.len();
                let end = s.cache.size(ino.0, backing).min(offset + u64::from(size));
                let mut buf = vec![0u8; end.saturating_sub(offset) as usize];
                let f = s.data(ino)?;
                let mut got = 0;
                while got < buf.len() {
                    match f.read_at(&mut buf[got..], offset + got as u64)? {
                        0 => break, // beyond the backing file: zeroes (or dirty data)
                        n => got += n,
                    }
                }
                s.cache.overlay(ino.0, offset, &mut buf);
                Ok(buf)
            },
            |buf| reply.data(&buf)
        )
    }

    fn write(
        &self,
        _: &Request,
        ino: INodeNo,
        _: FileHandle,
        offset: u64,
        data: &[u8],
        _: WriteFlags,
        flags: OpenFlags,
        _: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        serve!(
            self,
            reply,
            |s| {
                s.admit()?;
                if flags.0 & libc::O_DSYNC != 0 {
                    // O_DSYNC and O_SYNC (which includes it): durable when it returns.
                    s.data(ino)?.write_all_at(data, offset)?;
                }
                s.cache.write(ino.0, offset, data);
                Ok(())
            },
            |()| reply.written(data.len() as u32)
        )
    }

    fn flush(&self, _: &Request, _: INodeNo, _: FileHandle, _: LockOwner, reply: ReplyEmpty) {
        // close(2) makes nothing durable.
        reply.ok();
    }

    fn fsync(&self, _: &Request, ino: INodeNo, _: FileHandle, _: bool, reply: ReplyEmpty) {
        serve!(
            self,
            reply,
            |s| {
                s.admit()?;
                s.flush(ino)
            },
            |()| reply.ok()
        )
    }

    fn opendir(&self, _: &Request, ino: INodeNo, _: OpenFlags, reply: ReplyOpen) {
        serve!(
            self,
            reply,
            |s| {
                s.live()?;
                let fd = s.fd(ino)?;
                let mut entries = vec![
                    (ino.0, FileType::Directory, OsString::from(".")),
                    (1, FileType::Directory, OsString::from("..")),
                ];
                for e in std::fs::read_dir(proc_path(fd))? {
                    let e = e?;
                    let node = s.node_of(e.ino());
                    let k = e.file_type().map_or(FileType::RegularFile, |t| {
                        FileType::from_std(t).unwrap_or(FileType::RegularFile)
                    });
                    entries.push((node, k, e.file_name()));
                }
                let fh = s.next_fh;
                s.next_fh += 1;
                s.dirs.insert(fh, entries);
                Ok(fh)
            },
            |fh| reply.opened(FileHandle(fh), FopenFlags::empty())
        )
    }

    fn readdir(
        &self,
        _: &Request,
        _: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let s = self.lock();
        if s.power.is_off() {
            return reply.error(Errno::EIO);
        }
        let Some(entries) = s.dirs.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        for (i, (node, k, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*node), i as u64 + 1, *k, name) {
                break;
            }
        }
        drop(s);
        reply.ok();
    }

    fn releasedir(&self, _: &Request, _: INodeNo, fh: FileHandle, _: OpenFlags, reply: ReplyEmpty) {
        self.lock().dirs.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _: &Request, _: INodeNo, _: FileHandle, _: bool, reply: ReplyEmpty) {
        // Metadata is durable at once in this model: nothing to flush, but it is a moment
        // worth cutting at.
        serve!(self, reply, |s| s.admit(), |()| reply.ok())
    }

    fn statfs(&self, _: &Request, _: INodeNo, reply: ReplyStatfs) {
        serve!(
            self,
            reply,
            |s| {
                s.live()?;
                // SAFETY: statvfs is plain data; fstatvfs fills it.
                let mut v: libc::statvfs = unsafe { std::mem::zeroed() };
                // SAFETY: our root descriptor and a valid out pointer.
                cvt(unsafe { libc::fstatvfs(s.fd(INodeNo::ROOT)?, &mut v) })?;
                Ok(v)
            },
            |v| reply.statfs(
                v.f_blocks,
                v.f_bfree,
                v.f_bavail,
                v.f_files,
                v.f_ffree,
                v.f_bsize as u32,
                v.f_namemax as u32,
                v.f_frsize as u32,
            )
        )
    }

    fn access(&self, _: &Request, _: INodeNo, _: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        _: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        serve!(
            self,
            reply,
            |s| {
                s.admit()?;
                let how = libc::O_CREAT | libc::O_RDWR | (flags & libc::O_EXCL);
                let file = File::from(open_at(s.fd(parent)?, name, how, mode & !umask)?);
                let a = s.lookup(parent, name)?;
                let node = s.inodes.get_mut(&a.ino.0).expect("looked up");
                node.data.get_or_insert(file);
                if flags & libc::O_TRUNC != 0 {
                    s.data(a.ino)?.set_len(0)?;
                    s.cache.truncate(a.ino.0, 0);
                    return s.attr(a.ino);
                }
                Ok(a)
            },
            |a| reply.created(&TTL, &a, Generation(0), FileHandle(0), FopenFlags::empty())
        )
    }

    fn fallocate(
        &self,
        _: &Request,
        ino: INodeNo,
        _: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        serve!(
            self,
            reply,
            |s| {
                s.admit()?;
                let zeroes = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE;
                if mode & zeroes == 0 {
                    // Preallocation changes no data: metadata, at once.
                    let f = s.data(ino)?;
                    // SAFETY: fallocate(2) on our own descriptor.
                    let r = unsafe {
                        libc::fallocate(f.as_raw_fd(), mode, offset as i64, length as i64)
                    };
                    return cvt(r);
                }
                // Punching or zeroing writes zeroes, as lazily as any write.
                let mut end = offset + length;
                if mode & libc::FALLOC_FL_KEEP_SIZE != 0 {
                    let backing = s.data(ino)?.metadata()?.len();
                    end = end.min(s.cache.size(ino.0, backing));
                }
                if end > offset {
                    s.cache
                        .write(ino.0, offset, &vec![0u8; (end - offset) as usize]);
                }
                Ok(())
            },
            |()| reply.ok()
        )
    }
}

// ---------------------------------------------------------------------------------------------
// System calls on descriptors

fn cstr(s: &OsStr) -> CString {
    CString::new(s.as_bytes()).unwrap_or_else(|_| c"\u{1}".into())
}

/// `/proc/self/fd/FD`: reopens (or links, or lists) what an `O_PATH` descriptor names.
fn proc_path(fd: RawFd) -> std::path::PathBuf {
    format!("/proc/self/fd/{fd}").into()
}

fn cvt(r: libc::c_int) -> Result<(), Errno> {
    if r < 0 {
        Err(io::Error::last_os_error().into())
    } else {
        Ok(())
    }
}

fn open_at(dir: RawFd, name: &OsStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let n = cstr(name);
    // SAFETY: a NUL-terminated name that outlives the call.
    let fd = unsafe { libc::openat(dir, n.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat just returned this descriptor to us alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat_at(dir: RawFd, name: &OsStr) -> io::Result<libc::stat> {
    let n = cstr(name);
    // SAFETY: stat is plain data.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let flags = libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH;
    // SAFETY: a NUL-terminated name and a valid out pointer.
    if unsafe { libc::fstatat(dir, n.as_ptr(), &mut st, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    fstat_at(fd, OsStr::new(""))
}

fn kind(mode: libc::mode_t) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn timespec(t: Option<TimeOrNow>) -> libc::timespec {
    match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(TimeOrNow::Now) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(TimeOrNow::SpecificTime(t)) => {
            let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
            libc::timespec {
                tv_sec: d.as_secs() as i64,
                tv_nsec: i64::from(d.subsec_nanos()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backing_root_is_inode_one_and_inode_one_takes_its_number() {
        let dir = tempfile::tempdir().unwrap();
        let fs = LazyFs::new(dir.path()).unwrap();
        let s = fs.lock();
        assert_eq!(s.node_of(s.root_ino), 1);
        assert_eq!(s.node_of(1), s.root_ino);
        assert_eq!(s.node_of(12345), 12345);
    }

    #[test]
    fn dirty_data_is_read_back_flushed_by_fsync_and_lost_by_a_cut() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"0123456789").unwrap();
        let fs = LazyFs::new(dir.path()).unwrap();
        let mut s = fs.lock();
        let a = s.lookup(INodeNo::ROOT, OsStr::new("f")).unwrap();
        s.admit().unwrap();
        s.cache.write(a.ino.0, 8, b"abcd");
        assert_eq!(s.attr(a.ino).unwrap().size, 12);
        s.flush(a.ino).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("f")).unwrap(),
            b"01234567abcd"
        );
        s.cache.write(a.ino.0, 0, b"zz");
        s.power.cut_after(0);
        assert_eq!(s.admit(), Err(Errno::EIO));
        assert!(!s.cache.is_dirty(a.ino.0));
        assert_eq!(s.lookup(INodeNo::ROOT, OsStr::new("f")).map(|_| ()), Ok(()));
        assert_eq!(s.live(), Err(Errno::EIO));
        assert_eq!(
            std::fs::read(dir.path().join("f")).unwrap(),
            b"01234567abcd"
        );
    }
}
