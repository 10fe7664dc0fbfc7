//! [`Container`]: the protected intermediate store of old blocks saved by copy-before-write.
//!
//! ```text
//!  offset 0            data_offset = max(4 KiB, block size)
//!  ┌────────┬────────┬────────┬─────┬────────┐
//!  │ header │ slot 0 │ slot 1 │ ... │ slot n │     header: magic, version, block size,
//!  └────────┴────────┴────────┴─────┴────────┘             slots, session id, export
//! ```
//!
//! A slot holds one block until the mover has written it to the target; then it is released
//! (and its space punched out of a file container). The container is a regular file, a
//! partition or a whole device; it is opened exclusively, created with mode 0600, refused when
//! it lives on the exported device or on a filesystem mounted from it, and never exported.

use std::collections::{HashMap, VecDeque};
use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::device::{BlockDevice, DeviceError, FileDevice, FileOptions, IoBuf, OpenError};

pub const MAGIC: &[u8; 8] = b"COWDCTR1";
const HEADER_LEN: usize = 4096;
const VERSION: u32 = 1;

/// Why a container could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("container {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("container: {0}")]
    Open(#[from] OpenError),
    #[error("container {path}: {why}")]
    Refused { path: PathBuf, why: String },
    #[error("container: {0}")]
    Device(#[from] DeviceError),
}

/// Identity of the exported device, to keep the container off it.
#[derive(Debug, Clone)]
pub struct Protected {
    pub path: PathBuf,
    /// `st_dev` and `st_ino` of the export's path.
    pub dev: u64,
    pub ino: u64,
    /// The device number when the export is a block device.
    pub rdev: Option<u64>,
}

impl Protected {
    pub fn of(path: &Path) -> io::Result<Protected> {
        let m = std::fs::metadata(path)?;
        let rdev = m.file_type().is_block_device().then(|| m.rdev());
        Ok(Protected {
            path: path.to_owned(),
            dev: m.dev(),
            ino: m.ino(),
            rdev,
        })
    }
}

#[derive(Debug, Default)]
struct Slots {
    free: Vec<u32>,
    next: u32,
    used: u32,
    peak: u32,
    index: HashMap<u32, u32>,
    queue: VecDeque<u32>,
    /// The session ended: nobody waits for space any more.
    closed: bool,
}

/// Fill level of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fill {
    pub used: u32,
    pub slots: u32,
    pub peak: u32,
}

impl Fill {
    pub fn ratio(&self) -> f64 {
        if self.slots == 0 {
            1.0
        } else {
            f64::from(self.used) / f64::from(self.slots)
        }
    }
}

/// The container of one backup session.
#[derive(Debug)]
pub struct Container {
    dev: Arc<dyn BlockDevice>,
    path: Option<PathBuf>,
    /// We created the file and remove it at the end (else: wipe the header only).
    created: bool,
    block_size: u32,
    data_offset: u64,
    slots: u32,
    state: Mutex<Slots>,
    space: Condvar,
}

fn refuse(path: &Path, why: impl Into<String>) -> ContainerError {
    ContainerError::Refused {
        path: path.to_owned(),
        why: why.into(),
    }
}

/// `major:minor` of the whole disk a partition belongs to (None for whole disks).
fn parent_disk(devnum: u64) -> Option<u64> {
    let base = format!(
        "/sys/dev/block/{}:{}",
        libc::major(devnum),
        libc::minor(devnum)
    );
    std::fs::metadata(format!("{base}/partition")).ok()?;
    let dev = std::fs::read_to_string(format!("{base}/../dev")).ok()?;
    let (ma, mi) = dev.trim().split_once(':')?;
    Some(libc::makedev(ma.parse().ok()?, mi.parse().ok()?))
}

/// The backing file of a loop device, if `devnum` is one.
fn loop_backing(devnum: u64) -> Option<PathBuf> {
    let p = format!(
        "/sys/dev/block/{}:{}/loop/backing_file",
        libc::major(devnum),
        libc::minor(devnum)
    );
    std::fs::read_to_string(p)
        .ok()
        .map(|s| PathBuf::from(s.trim()))
}

/// True when block devices `a` and `b` overlap (same, or one is a partition of the other).
fn same_disk(a: u64, b: u64) -> bool {
    a == b || parent_disk(a) == Some(b) || parent_disk(b) == Some(a)
}

/// Refuses a container location that would put it on the exported device.
fn check_protection(
    path: &Path,
    meta: Option<&std::fs::Metadata>,
    export: &Protected,
) -> Result<(), ContainerError> {
    let here = match meta {
        Some(m) => (
            m.dev(),
            Some(m.ino()),
            m.file_type().is_block_device().then(|| m.rdev()),
        ),
        None => {
            // A new file: judge the filesystem of the nearest existing ancestor directory.
            let mut dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let m = loop {
                match std::fs::metadata(dir) {
                    Ok(m) => break m,
                    Err(_) if dir.parent().is_some_and(|p| !p.as_os_str().is_empty()) => {
                        dir = dir.parent().unwrap()
                    }
                    Err(source) => {
                        return Err(ContainerError::Io {
                            path: dir.to_owned(),
                            source,
                        });
                    }
                }
            };
            (m.dev(), None, None)
        }
    };
    let (fs_dev, ino, rdev) = here;
    if ino == Some(export.ino) && fs_dev == export.dev {
        return Err(refuse(path, "is the exported device itself"));
    }
    if let (Some(r), Some(e)) = (rdev, export.rdev) {
        if same_disk(r, e) {
            return Err(refuse(
                path,
                format!("overlaps the exported device {}", export.path.display()),
            ));
        }
    }
    if let Some(e) = export.rdev {
        if rdev.is_none() && same_disk(fs_dev, e) {
            let why = format!(
                "lives on a filesystem mounted from the exported device {}",
                export.path.display()
            );
            return Err(refuse(path, why));
        }
    }
    if rdev.is_none() {
        if let Some(backing) = loop_backing(fs_dev) {
            let on_export = std::fs::metadata(&backing)
                .is_ok_and(|m| m.dev() == export.dev && m.ino() == export.ino);
            if on_export || backing == export.path {
                let why = format!(
                    "lives on a filesystem mounted (via loop) from the export {}",
                    export.path.display()
                );
                return Err(refuse(path, why));
            }
        }
    }
    Ok(())
}

impl Container {
    /// Opens or creates the container at `path`: a new file of `size` bytes (mode 0600), a
    /// stale cowd container file (reused), or a block device (`size` caps the space used).
    pub fn create(
        path: &Path,
        size: u64,
        block_size: u32,
        session: &str,
        export: &Protected,
    ) -> Result<Container, ContainerError> {
        let io = |source| ContainerError::Io {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).ok();
        check_protection(path, meta.as_ref(), export)?;
        let (created, is_block) = match &meta {
            None => {
                if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                let f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                if let Err(e) = f.set_len(size) {
                    let _ = std::fs::remove_file(path);
                    return Err(io(e));
                }
                (true, false)
            }
            Some(m) if m.file_type().is_block_device() => (false, true),
            Some(m) if m.file_type().is_file() => {
                let mut magic = [0u8; 8];
                let is_container = std::fs::File::open(path)
                    .and_then(|mut f| f.read_exact(&mut magic))
                    .is_ok()
                    && &magic == MAGIC;
                if !is_container && m.len() > 0 {
                    return Err(refuse(
                        path,
                        "exists and is not a cowd container; remove it or choose another path",
                    ));
                }
                std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                    .map_err(io)?;
                let f = OpenOptions::new().write(true).open(path).map_err(io)?;
                f.set_len(0).map_err(io)?;
                f.set_len(size).map_err(io)?;
                (true, false)
            }
            Some(_) => return Err(refuse(path, "not a regular file or block device")),
        };
        // A file this call made goes again if the container cannot be set up on it (one that
        // was there before, perhaps in use by another session, stays).
        let remove_made = || {
            if meta.is_none() {
                let _ = std::fs::remove_file(path);
            }
        };
        let dev = FileDevice::open(path, FileOptions::default()).inspect_err(|_| remove_made())?;
        let size = if is_block {
            dev.size().min(if size == 0 { u64::MAX } else { size })
        } else {
            size
        };
        let c = Container::with_device(
            Arc::new(dev),
            size,
            block_size,
            session,
            Some(path.to_owned()),
            created,
        )
        .inspect_err(|_| remove_made())?;
        Ok(c)
    }

    /// A container on any device (tests and models use memory); writes the header.
    pub fn with_device(
        dev: Arc<dyn BlockDevice>,
        size: u64,
        block_size: u32,
        session: &str,
        path: Option<PathBuf>,
        created: bool,
    ) -> Result<Container, ContainerError> {
        let data_offset = (block_size as u64).max(HEADER_LEN as u64);
        let slots = (size.min(dev.size()).saturating_sub(data_offset) / u64::from(block_size))
            .min(u64::from(u32::MAX)) as u32;
        let p = path.clone().unwrap_or_default();
        if slots == 0 {
            return Err(refuse(
                &p,
                format!(
                    "too small: it must hold at least one {block_size}-byte block after its header"
                ),
            ));
        }
        let mut h = IoBuf::new(HEADER_LEN);
        h[..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&block_size.to_le_bytes());
        h[16..24].copy_from_slice(&u64::from(slots).to_le_bytes());
        let id = session.as_bytes();
        let n = id.len().min(64);
        h[24..24 + n].copy_from_slice(&id[..n]);
        dev.write_at(&h, 0, true)?;
        Ok(Container {
            dev,
            path,
            created,
            block_size,
            data_offset,
            slots,
            state: Mutex::default(),
            space: Condvar::new(),
        })
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn slot_offset(&self, slot: u32) -> u64 {
        self.data_offset + u64::from(slot) * u64::from(self.block_size)
    }

    pub fn fill(&self) -> Fill {
        let s = self.state.lock().unwrap();
        Fill {
            used: s.used,
            slots: self.slots,
            peak: s.peak,
        }
    }

    /// Saved blocks not yet taken by the mover.
    pub fn queued(&self) -> usize {
        self.state.lock().unwrap().queue.len()
    }

    /// Reserves a free slot, if any.
    pub fn try_reserve(&self) -> Option<u32> {
        let mut s = self.state.lock().unwrap();
        let slot = match s.free.pop() {
            Some(f) => f,
            None if s.next < self.slots => {
                s.next += 1;
                s.next - 1
            }
            None => return None,
        };
        s.used += 1;
        s.peak = s.peak.max(s.used);
        Some(slot)
    }

    /// Waits until a slot may be free, at most until `deadline`, or until the container is
    /// closed (then it returns true: the caller re-checks its session and gives up).
    pub fn wait_space(&self, deadline: Instant) -> bool {
        let mut s = self.state.lock().unwrap();
        while s.used >= self.slots && !s.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self
                .space
                .wait_timeout(s, left.min(Duration::from_millis(100)))
                .unwrap()
                .0;
        }
        true
    }

    /// Writes `data` (one block, possibly short at the device end) into a reserved slot and
    /// records it as holding `block`. On error the slot is released.
    pub fn store(&self, slot: u32, block: u32, data: &[u8]) -> Result<(), DeviceError> {
        if let Err(e) = self.dev.write_at(data, self.slot_offset(slot), false) {
            self.release(slot);
            return Err(e);
        }
        let mut s = self.state.lock().unwrap();
        s.index.insert(block, slot);
        s.queue.push_back(block);
        Ok(())
    }

    /// Takes up to `max` saved blocks for the mover, ascending by block: `(block, slot)`.
    pub fn take(&self, max: usize) -> Vec<(u32, u32)> {
        let mut s = self.state.lock().unwrap();
        let n = max.min(s.queue.len());
        let mut out: Vec<(u32, u32)> = Vec::with_capacity(n);
        for _ in 0..n {
            let b = s.queue.pop_front().unwrap();
            let slot = s.index.remove(&b).expect("queued block has a slot");
            out.push((b, slot));
        }
        out.sort_unstable();
        out
    }

    /// Takes the saved blocks in `blocks` out of the container (their T content is durable
    /// elsewhere): `(block, slot)`, the slots still to be released.
    pub fn take_range(&self, blocks: std::ops::Range<u32>) -> Vec<(u32, u32)> {
        let mut s = self.state.lock().unwrap();
        s.queue.retain(|b| !blocks.contains(b));
        let taken: Vec<u32> = s
            .index
            .keys()
            .copied()
            .filter(|b| blocks.contains(b))
            .collect();
        taken
            .into_iter()
            .map(|b| (b, s.index.remove(&b).expect("just listed")))
            .collect()
    }

    /// Reads the saved copy of `block` into `buf`, if the container holds it.
    pub fn read_block(&self, block: u32, buf: &mut [u8]) -> Option<Result<(), DeviceError>> {
        let slot = *self.state.lock().unwrap().index.get(&block)?;
        Some(self.read(slot, buf))
    }

    /// The blocks saved and not yet taken by the mover.
    pub fn queued_blocks(&self) -> Vec<u32> {
        self.state.lock().unwrap().queue.iter().copied().collect()
    }

    /// Reads a slot's block into `buf` (`buf.len()` bytes).
    pub fn read(&self, slot: u32, buf: &mut [u8]) -> Result<(), DeviceError> {
        self.dev.read_at(buf, self.slot_offset(slot))
    }

    /// Frees a slot once its block is safely on the target.
    pub fn release(&self, slot: u32) {
        // Punching is an optimisation (space back to the filesystem); its failure is harmless.
        let _ = self
            .dev
            .trim(self.slot_offset(slot), u64::from(self.block_size), false);
        let mut s = self.state.lock().unwrap();
        s.used -= 1;
        s.free.push(slot);
        drop(s);
        self.space.notify_all();
    }

    /// Wakes every writer waiting for space (the session ended).
    pub fn wake_all(&self) {
        self.state.lock().unwrap().closed = true;
        self.space.notify_all();
    }

    /// Removes the container file we created, or wipes the header of a device container.
    pub fn dispose(&self) {
        match &self.path {
            Some(p) if self.created => {
                let _ = std::fs::remove_file(p);
            }
            _ => {
                let _ = self
                    .dev
                    .write_zeroes(0, HEADER_LEN as u64, Default::default());
                let _ = self.dev.flush();
            }
        }
    }
}

/// Removes what a crashed session left: a container file with our magic, or a device
/// container's header. Anything that does not carry the magic is left alone.
pub fn dispose_stale(path: &Path) -> io::Result<bool> {
    let mut magic = [0u8; 8];
    let mut f = std::fs::File::open(path)?;
    if f.read_exact(&mut magic).is_err() || &magic != MAGIC {
        return Ok(false);
    }
    let m = f.metadata()?;
    drop(f);
    if m.file_type().is_block_device() {
        let f = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_EXCL)
            .open(path)?;
        std::os::unix::fs::FileExt::write_all_at(&f, &[0u8; HEADER_LEN], 0)?;
        f.sync_all()?;
    } else {
        std::fs::remove_file(path)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::MemoryDevice;

    fn mem(size: u64, bs: u32) -> Container {
        Container::with_device(
            Arc::new(MemoryDevice::new(size)),
            size,
            bs,
            "s1",
            None,
            false,
        )
        .unwrap()
    }

    #[test]
    fn slots_fill_drain_and_reuse() {
        let c = mem(65536 + 3 * 65536, 65536);
        assert_eq!(c.fill().slots, 3);
        let a = c.try_reserve().unwrap();
        let b = c.try_reserve().unwrap();
        let d = c.try_reserve().unwrap();
        assert!(c.try_reserve().is_none());
        c.store(a, 7, &[7; 65536]).unwrap();
        c.store(b, 3, &[3; 65536]).unwrap();
        c.store(d, 9, &[9; 100]).unwrap();
        assert_eq!(
            c.fill(),
            Fill {
                used: 3,
                slots: 3,
                peak: 3
            }
        );
        assert!(!c.wait_space(Instant::now() + Duration::from_millis(20)));
        let taken = c.take(2);
        assert_eq!(
            taken.iter().map(|t| t.0).collect::<Vec<_>>(),
            vec![3, 7],
            "oldest two, sorted"
        );
        let mut buf = vec![0u8; 65536];
        c.read(taken[1].1, &mut buf).unwrap();
        assert!(buf.iter().all(|&x| x == 7));
        c.release(taken[0].1);
        assert!(c.wait_space(Instant::now()));
        assert_eq!(c.fill().used, 2);
        assert_eq!(c.fill().peak, 3);
        assert!(c.try_reserve().is_some());
    }

    #[test]
    fn header_carries_magic_and_session() {
        let dev = Arc::new(MemoryDevice::new(1 << 20));
        let _c =
            Container::with_device(dev.clone(), 1 << 20, 4096, "session-xyz", None, false).unwrap();
        let mut h = vec![0u8; 4096];
        dev.read_at(&mut h, 0).unwrap();
        assert_eq!(&h[..8], MAGIC);
        assert_eq!(&h[24..35], b"session-xyz");
        let e = Container::with_device(
            Arc::new(MemoryDevice::new(8192)),
            8192,
            65536,
            "s",
            None,
            false,
        );
        assert!(e.unwrap_err().to_string().contains("too small"));
    }

    #[test]
    fn a_container_refused_as_too_small_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let export_img = dir.path().join("export.img");
        std::fs::write(&export_img, [0u8; 4096]).unwrap();
        let export = Protected::of(&export_img).unwrap();
        let p = dir.path().join("containers/s.cow");
        let e = Container::create(&p, 8192, 65536, "s", &export).unwrap_err();
        assert!(e.to_string().contains("too small"), "{e}");
        assert!(!p.exists(), "the refused container's file is left behind");
    }

    #[test]
    fn file_container_is_private_refuses_strangers_and_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let export_img = dir.path().join("export.img");
        std::fs::File::create(&export_img)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let export = Protected::of(&export_img).unwrap();
        let e = Container::create(&export_img, 1 << 20, 65536, "s", &export).unwrap_err();
        assert!(e.to_string().contains("exported device itself"), "{e}");
        let stranger = dir.path().join("data.bin");
        std::fs::write(&stranger, b"precious").unwrap();
        let e = Container::create(&stranger, 1 << 20, 65536, "s", &export).unwrap_err();
        assert!(e.to_string().contains("not a cowd container"), "{e}");
        assert_eq!(std::fs::read(&stranger).unwrap(), b"precious");
        let p = dir.path().join("sub/container");
        let c = Container::create(&p, 1 << 20, 65536, "s", &export).unwrap();
        let mode = std::fs::metadata(&p).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let busy = Container::create(&p, 1 << 20, 65536, "s2", &export).unwrap_err();
        assert!(busy.to_string().contains("in use"), "{busy}");
        c.dispose();
        assert!(!p.exists());
        let stale = Container::create(&p, 1 << 20, 65536, "s3", &export).unwrap();
        drop(stale);
        assert!(dispose_stale(&p).unwrap());
        assert!(!p.exists());
        assert!(
            !dispose_stale(&stranger).unwrap(),
            "only cowd containers are removed"
        );
    }
}
