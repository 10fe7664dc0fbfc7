//! `cowctl mount ID MOUNTPOINT` and `cowctl umount MOUNTPOINT`: a backup's files, read-only,
//! through FUSE (the `fuser` crate, no libfuse), for browsing with ordinary tools, as
//! `restic mount` does.
//!
//! ```text
//!   kernel ── FUSE ──> GenerationFs (fuser's thread) ── block_on ──> Client ── control socket
//!                        lookup / readdir: a directory's listing (`files?path=`), kept
//!                        read: 4 MiB windows of the file (`file?path=&offset=&length=`), kept
//! ```
//!
//! A generation never changes, so everything fetched is kept (a bounded number of windows)
//! and the kernel may cache names, attributes and pages for as long as the mount lives. The
//! FUSE inode of a file is its number in the filesystem (hard links share it), the root's
//! is 1. The daemon reads the repository; this process only asks it, so it needs the control
//! socket and, without root, `fusermount3`. The mount ends with `cowctl umount`, ^C or
//! SIGTERM; when it ends by `umount`, this command returns at once.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use cowd_api::files::{FileInfo, FileKind, Listing};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, Request,
};
use hyper::StatusCode;
use hyper::body::Bytes;
use tokio::runtime::Handle;

use super::Outcome;
use super::files::{Source, base, query};
use super::repo::READ_TIMEOUT;
use crate::client::{self, Client, Error};

/// How long the kernel may keep names and attributes: the generation does not change.
const TTL: Duration = Duration::from_secs(3600);
/// Bytes of a file fetched per request, and how many such windows are kept.
const WINDOW: u64 = 4 << 20;
const WINDOWS: usize = 16;
/// Directory listings kept before the oldest are dropped.
const DIRS: usize = 4096;
/// open(2)'s access modes that ask for writing: O_WRONLY, O_RDWR.
const WRITE_MODES: i32 = 0o1 | 0o2;

#[derive(Debug, Clone, clap::Args)]
pub struct MountArgs {
    /// The backup (see `cowctl backups`).
    #[arg(value_name = "ID")]
    pub id: String,
    /// An existing empty directory to show its files in.
    #[arg(value_name = "MOUNTPOINT")]
    pub mountpoint: PathBuf,
    /// Let other users than the one mounting see the files (FUSE's allow_other; without
    /// root it needs user_allow_other in /etc/fuse.conf). Their modes are enforced.
    #[arg(long)]
    pub allow_other: bool,
    #[command(flatten)]
    pub source: Source,
}

#[derive(Debug, Clone, clap::Args)]
pub struct UmountArgs {
    /// Where `cowctl mount` shows a backup.
    #[arg(value_name = "MOUNTPOINT")]
    pub mountpoint: PathBuf,
}

/// A file the kernel has looked up: the path to ask for it by, and what it is.
#[derive(Debug, Clone)]
struct Node {
    path: String,
    info: FileInfo,
}

#[derive(Debug, Default)]
struct State {
    nodes: HashMap<u64, Node>,
    /// Listings by FUSE inode, with the order they were fetched in.
    dirs: HashMap<u64, Arc<Vec<FileInfo>>>,
    dir_order: VecDeque<u64>,
    /// (FUSE inode, window start, bytes).
    windows: VecDeque<(u64, u64, Bytes)>,
}

/// The filesystem FUSE asks.
#[derive(Debug)]
struct GenerationFs {
    client: Client,
    rt: Handle,
    /// `/v1/repo/backups/ID`, and the `&repo=&partition=` of every request.
    base: String,
    query: String,
    /// The filesystem's number of its root.
    root: u64,
    state: Mutex<State>,
}

fn fuse_ino(fs_ino: u64, root: u64) -> u64 {
    if fs_ino == root {
        1
    } else {
        fs_ino.saturating_add(2)
    }
}

fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
    }
}

fn attr(ino: u64, f: &FileInfo) -> FileAttr {
    let t = if f.mtime_s >= 0 {
        UNIX_EPOCH + Duration::new(f.mtime_s as u64, f.mtime_ns.min(999_999_999))
    } else {
        UNIX_EPOCH - Duration::from_secs(f.mtime_s.unsigned_abs())
    };
    FileAttr {
        ino: INodeNo(ino),
        size: f.size,
        blocks: f.size.div_ceil(512),
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind: file_type(f.kind),
        perm: (f.mode & 0o7777) as u16,
        nlink: f.nlink,
        uid: f.uid,
        gid: f.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn child_path(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

impl GenerationFs {
    /// Runs a request of the control API from FUSE's thread; an error is printed (once per
    /// request) and answered as ENOENT for a missing path, EIO otherwise.
    fn ask<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Errno> {
        self.rt.block_on(f).map_err(|e| {
            if let Error::Api { status, .. } = &e
                && *status == StatusCode::NOT_FOUND
            {
                return Errno::ENOENT;
            }
            eprintln!("cowctl mount: {what}: {e}");
            Errno::EIO
        })
    }

    fn node(&self, ino: u64) -> Result<Node, Errno> {
        self.state
            .lock()
            .unwrap()
            .nodes
            .get(&ino)
            .cloned()
            .ok_or(Errno::ENOENT)
    }

    /// The entries of directory `ino`, fetched once.
    fn listing(&self, ino: u64) -> Result<Arc<Vec<FileInfo>>, Errno> {
        let node = self.node(ino)?;
        if node.info.kind != FileKind::Dir {
            return Err(Errno::ENOTDIR);
        }
        if let Some(l) = self.state.lock().unwrap().dirs.get(&ino) {
            return Ok(l.clone());
        }
        let url = format!(
            "{}/files?path={}{}",
            self.base,
            client::encode(&node.path),
            self.query
        );
        let c = self.client.clone().with_timeout(READ_TIMEOUT);
        let reply = self.ask(&node.path, async move { c.get::<Listing>(&url).await })?;
        let entries = Arc::new(reply.value.entries);
        let mut s = self.state.lock().unwrap();
        for e in entries.iter() {
            let child = fuse_ino(e.ino, self.root);
            s.nodes.entry(child).or_insert_with(|| Node {
                path: child_path(&node.path, &e.name),
                info: e.clone(),
            });
        }
        if s.dir_order.len() >= DIRS
            && let Some(old) = s.dir_order.pop_front()
        {
            s.dirs.remove(&old);
        }
        s.dir_order.push_back(ino);
        s.dirs.insert(ino, entries.clone());
        Ok(entries)
    }

    /// The window of file `ino` holding `offset`.
    fn window(&self, ino: u64, path: &str, start: u64) -> Result<Bytes, Errno> {
        {
            let s = self.state.lock().unwrap();
            if let Some((_, _, b)) = s.windows.iter().find(|w| w.0 == ino && w.1 == start) {
                return Ok(b.clone());
            }
        }
        let url = format!(
            "{}/file?path={}&offset={start}&length={WINDOW}{}",
            self.base,
            client::encode(path),
            self.query
        );
        let c = self.client.clone().with_timeout(READ_TIMEOUT);
        let bytes = self.ask(path, async move { c.get_bytes(&url).await })?;
        let mut s = self.state.lock().unwrap();
        if s.windows.len() >= WINDOWS {
            s.windows.pop_front();
        }
        s.windows.push_back((ino, start, bytes.clone()));
        Ok(bytes)
    }
}

impl Filesystem for GenerationFs {
    fn lookup(&self, _: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let found = self.listing(parent.0).and_then(|l| {
            let name = name.to_str().ok_or(Errno::ENOENT)?;
            l.iter()
                .find(|e| e.name == name)
                .map(|e| fuse_ino(e.ino, self.root))
                .ok_or(Errno::ENOENT)
        });
        match found.and_then(|ino| self.node(ino).map(|n| (ino, n))) {
            Ok((ino, n)) => reply.entry(&TTL, &attr(ino, &n.info), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _: &Request, ino: INodeNo, _: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino.0) {
            Ok(n) => reply.attr(&TTL, &attr(ino.0, &n.info)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _: &Request, ino: INodeNo, reply: ReplyData) {
        match self.node(ino.0) {
            Ok(Node { info, .. }) if info.kind == FileKind::Symlink => {
                reply.data(info.target.unwrap_or_default().as_bytes())
            }
            Ok(_) => reply.error(Errno::EINVAL),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & WRITE_MODES != 0 {
            return reply.error(Errno::EROFS);
        }
        match self.node(ino.0) {
            // The data never changes: the kernel may keep its pages across opens.
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(e),
        }
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
        let node = match self.node(ino.0) {
            Ok(n) if n.info.kind == FileKind::File => n,
            Ok(_) => return reply.error(Errno::EISDIR),
            Err(e) => return reply.error(e),
        };
        let end = node.info.size.min(offset.saturating_add(u64::from(size)));
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut at = offset;
        while at < end {
            let start = at / WINDOW * WINDOW;
            let w = match self.window(ino.0, &node.path, start) {
                Ok(w) => w,
                Err(e) => return reply.error(e),
            };
            let from = (at - start) as usize;
            let to = ((end - start) as usize).min(w.len());
            if from >= to {
                break; // the file is shorter than its listing said
            }
            out.extend_from_slice(&w[from..to]);
            at = start + to as u64;
        }
        reply.data(&out);
    }

    fn readdir(
        &self,
        _: &Request,
        ino: INodeNo,
        _: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let list = match self.listing(ino.0) {
            Ok(l) => l,
            Err(e) => return reply.error(e),
        };
        let dots = [
            (ino.0, FileType::Directory, "."),
            (1, FileType::Directory, ".."),
        ];
        let all = dots.into_iter().chain(list.iter().map(|e| {
            (
                fuse_ino(e.ino, self.root),
                file_type(e.kind),
                e.name.as_str(),
            )
        }));
        for (i, (n, kind, name)) in all.enumerate().skip(offset as usize) {
            if reply.add(INodeNo(n), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

pub async fn mount(client: &Client, a: &MountArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let meta = std::fs::metadata(&a.mountpoint);
    if !meta.as_ref().is_ok_and(|m| m.is_dir()) {
        return Ok(Outcome::Usage(format!(
            "{}: not a directory to mount on",
            a.mountpoint.display()
        )));
    }
    let (base, query) = (base(&a.id), query(&a.source)?);
    // The root, asked first so that a wrong id, repository or filesystem is said here.
    let url = format!("{base}/files?path=/{query}");
    let root: Listing = client
        .clone()
        .with_timeout(READ_TIMEOUT)
        .get(&url)
        .await?
        .value;
    let Some(root_info) = root.dir.clone() else {
        return Ok(Outcome::Failed(format!(
            "{}: the daemon did not describe the root directory (an older cowd?)",
            a.id
        )));
    };
    let mut state = State::default();
    state.nodes.insert(
        1,
        Node {
            path: "/".into(),
            info: root_info.clone(),
        },
    );
    let fs = GenerationFs {
        client: client.clone(),
        rt: Handle::current(),
        base,
        query,
        root: root_info.ino,
        state: Mutex::new(state),
    };
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::FSName(format!("cowd:{}", a.id)),
        MountOption::Subtype("cowd".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if a.allow_other {
        config.acl = fuser::SessionACL::All;
    }
    config.n_threads = Some(4);
    let session = match fuser::spawn_mount(fs, &a.mountpoint, &config) {
        Ok(s) => s,
        Err(e) => {
            return Ok(Outcome::Failed(format!(
                "mounting on {}: {e}",
                a.mountpoint.display()
            )));
        }
    };
    writeln!(
        out,
        "{} ({}) mounted read-only at {}; `cowctl umount {}` or ^C ends it",
        a.id,
        root.filesystem,
        a.mountpoint.display(),
        a.mountpoint.display()
    )?;
    out.flush()?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if session.guard.is_finished() {
                    // Unmounted from outside (`cowctl umount`, `fusermount3 -u`).
                    return Ok(match session.join() {
                        Ok(()) => Outcome::Success,
                        Err(e) => Outcome::Failed(format!("the mount ended: {e}")),
                    });
                }
            }
        }
    }
    let mountpoint = a.mountpoint.clone();
    let ended = tokio::task::spawn_blocking(move || session.umount_and_join()).await?;
    match ended {
        Ok(()) => Ok(Outcome::Success),
        Err(e) => {
            // Busy (a shell inside it): detach it now, it goes when its last user leaves.
            let lazy = lazy_umount(&mountpoint);
            Ok(Outcome::Failed(format!(
                "unmounting {}: {e}; {lazy}",
                mountpoint.display()
            )))
        }
    }
}

fn lazy_umount(mountpoint: &Path) -> String {
    match std::process::Command::new("fusermount3")
        .args(["-u", "-z"])
        .arg(mountpoint)
        .status()
    {
        Ok(s) if s.success() => "detached it lazily (it goes when no longer used)".into(),
        Ok(s) => format!("fusermount3 -u -z: {s}"),
        Err(e) => format!("fusermount3: {e}"),
    }
}

pub async fn umount(a: &UmountArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let run = |tool: &str, args: &[&str]| {
        std::process::Command::new(tool)
            .args(args)
            .arg(&a.mountpoint)
            .output()
    };
    let first = run("fusermount3", &["-u"]);
    let done = match &first {
        Ok(o) if o.status.success() => true,
        // fusermount3 missing (root only needs umount(8)).
        _ => run("umount", &[]).is_ok_and(|o| o.status.success()),
    };
    if done {
        writeln!(out, "{} unmounted", a.mountpoint.display())?;
        return Ok(Outcome::Success);
    }
    let why = match first {
        Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
        Err(e) => format!("fusermount3: {e}"),
    };
    Ok(Outcome::Failed(format!(
        "unmounting {}: {why}",
        a.mountpoint.display()
    )))
}
