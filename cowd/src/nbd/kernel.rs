//! The Linux kernel NBD client side: which export a `/dev/nbdN` device is attached to.
//!
//! The kernel records, in `/sys/block/nbdN/pid`, the task that runs the device's NBD
//! connection (the `nbd-client` that called `NBD_DO_IT`). cowd knows the process id of the
//! peer of every Unix-socket connection, so the device maps to the export one of whose
//! connections belongs to that task's process (the task may be a thread: `qemu-nbd -c` calls
//! `NBD_DO_IT` in a thread of its own) or to its parent (`nbd-client` may fork after
//! connecting).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::export::Exports;

/// Why a device could not be mapped to an export.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResolveError {
    #[error("{0}: not an NBD device (expected /dev/nbdN)")]
    NotNbd(String),
    #[error("{0}: no such NBD device (is the nbd kernel module loaded?)")]
    NoDevice(String),
    #[error("{0}: not attached to any NBD server")]
    NotAttached(String),
    #[error(
        "{device}: attached by process {pid}, which is not connected to any export of this cowd"
    )]
    Elsewhere { device: String, pid: i32 },
}

/// A process-id field (`"Tgid:"`, `"PPid:"`) of `/proc/PID/status` (which exists for a thread
/// id too).
fn status_pid(proc_root: &Path, pid: i32, field: &str) -> Option<i32> {
    let status = std::fs::read_to_string(proc_root.join(pid.to_string()).join("status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().parse().ok())
}

/// Maps `device` to the export it is attached to (`sys_root`/`proc_root`: `/sys`, `/proc`).
pub fn resolve(
    device: &Path,
    exports: &Exports,
    sys_root: &Path,
    proc_root: &Path,
) -> Result<String, ResolveError> {
    let shown = device.display().to_string();
    let name = device
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if !name
        .strip_prefix("nbd")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(ResolveError::NotNbd(shown));
    }
    let dir: PathBuf = sys_root.join("block").join(name);
    if !dir.exists() {
        return Err(ResolveError::NoDevice(shown));
    }
    let pid: i32 = std::fs::read_to_string(dir.join("pid"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| ResolveError::NotAttached(shown.clone()))?;
    // The kernel's pid is the task's (thread) id; peers are known by their process id.
    let mut candidates = vec![pid];
    let mut p = match status_pid(proc_root, pid, "Tgid:") {
        Some(tgid) if tgid != pid && tgid > 1 => {
            candidates.push(tgid);
            tgid
        }
        _ => pid,
    };
    for _ in 0..3 {
        match status_pid(proc_root, p, "PPid:") {
            Some(pp) if pp > 1 => {
                candidates.push(pp);
                p = pp;
            }
            _ => break,
        }
    }
    exports
        .all()
        .into_iter()
        .find(|e| e.peer_pids().iter().any(|p| candidates.contains(p)))
        .map(|e| e.name().to_owned())
        .ok_or(ResolveError::Elsewhere { device: shown, pid })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::MemoryDevice;
    use crate::export::Export;

    #[test]
    fn maps_a_device_through_the_client_task_its_process_or_its_parent() {
        let root = tempfile::tempdir().unwrap();
        let (sys, proc_) = (root.path().join("sys"), root.path().join("proc"));
        for (dev, pid) in [
            ("nbd0", Some("4242\n")),
            ("nbd1", None),
            ("nbd2", Some("777")),
            ("nbd3", Some("5002")),
        ] {
            std::fs::create_dir_all(sys.join("block").join(dev)).unwrap();
            if let Some(p) = pid {
                std::fs::write(sys.join("block").join(dev).join("pid"), p).unwrap();
            }
        }
        std::fs::create_dir_all(proc_.join("4242")).unwrap();
        std::fs::write(
            proc_.join("4242/status"),
            "Name:\tnbd-client\nPPid:\t4000\n",
        )
        .unwrap();
        // qemu-nbd -c: NBD_DO_IT runs in thread 5002 of process 5000, which is connected.
        std::fs::create_dir_all(proc_.join("5002")).unwrap();
        std::fs::write(
            proc_.join("5002/status"),
            "Name:\tqemu-nbd\nTgid:\t5000\nPid:\t5002\nPPid:\t1\n",
        )
        .unwrap();
        let exports = Exports::default();
        let mk =
            |n: &str| Export::new(n, Path::new("/x"), Arc::new(MemoryDevice::new(4096)), false);
        let a = exports.add(mk("a")).unwrap();
        let b = exports.add(mk("b")).unwrap();
        let _ga = a.attach(1, Some(1234));
        let c = exports.add(mk("c")).unwrap();
        let _gb = b.attach(2, Some(4000));
        let _gc = c.attach(3, Some(5000));
        let r = |d: &str| resolve(Path::new(d), &exports, &sys, &proc_);
        assert_eq!(
            r("/dev/nbd0"),
            Ok("b".into()),
            "the parent of the DO_IT process connected"
        );
        assert_eq!(
            r("/dev/nbd3"),
            Ok("c".into()),
            "the process of the DO_IT thread connected"
        );
        assert_eq!(
            r("/dev/nbd1"),
            Err(ResolveError::NotAttached("/dev/nbd1".into()))
        );
        assert_eq!(
            r("/dev/nbd2"),
            Err(ResolveError::Elsewhere {
                device: "/dev/nbd2".into(),
                pid: 777
            })
        );
        assert_eq!(
            r("/dev/nbd9"),
            Err(ResolveError::NoDevice("/dev/nbd9".into()))
        );
        assert_eq!(r("/dev/sda"), Err(ResolveError::NotNbd("/dev/sda".into())));
    }

    #[test]
    fn attaching_needs_an_nbd_device() {
        let exports = Exports::default();
        let e = exports
            .add(Export::new(
                "a",
                Path::new("/x"),
                Arc::new(MemoryDevice::new(1 << 20)),
                false,
            ))
            .unwrap();
        let a = Arc::new(Attachments::default());
        let limits = crate::nbd::transmission::Limits::default();
        let err = a.attach(&e, Path::new("/dev/sda"), limits).unwrap_err();
        assert!(err.to_string().contains("not an NBD device"), "{err}");
        let err = a.attach(&e, Path::new("/dev/nbd4711"), limits).unwrap_err();
        assert!(err.to_string().contains("nbd kernel module"), "{err}");
        let err = a.detach(Path::new("/dev/nbd3")).unwrap_err();
        assert!(
            err.to_string().contains("not attached by this cowd"),
            "{err}"
        );
        assert_eq!(a.export_of(Path::new("/dev/nbd3")), None);
    }
}

/// Devices cowd attached itself (`cowctl attach`), with the kernel's NBD ioctls.
///
/// ```text
///  socketpair ── kernel end ──> NBD_SET_SOCK ── NBD_DO_IT (a thread, until disconnect)
///             └─ our end ────> transmission::serve (no handshake: the flags are set by ioctl)
/// ```
#[derive(Debug, Default)]
pub struct Attachments {
    /// Attached devices by path; an entry leaves when its `NBD_DO_IT` thread has cleaned up.
    devices: std::sync::Mutex<std::collections::HashMap<PathBuf, Attached>>,
    /// Signalled when an entry leaves `devices`.
    gone: std::sync::Condvar,
}

/// One attached device: the export it serves and the device file its threads use.
#[derive(Debug, Clone)]
struct Attached {
    export: String,
    dev: Arc<std::fs::File>,
}

/// Longest `detach` waits for the kernel to let the device go.
const DETACH_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a device could not be attached or detached.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("{device}: {why}")]
    Failed { device: String, why: String },
    #[error("{0}: not attached by this cowd")]
    NotAttached(String),
}

const NBD_SET_SOCK: libc::c_ulong = 0xab00;
const NBD_SET_BLKSIZE: libc::c_ulong = 0xab01;
const NBD_DO_IT: libc::c_ulong = 0xab03;
const NBD_CLEAR_SOCK: libc::c_ulong = 0xab04;
const NBD_CLEAR_QUE: libc::c_ulong = 0xab05;
const NBD_SET_SIZE_BLOCKS: libc::c_ulong = 0xab07;
const NBD_DISCONNECT: libc::c_ulong = 0xab08;
const NBD_SET_FLAGS: libc::c_ulong = 0xab0a;

fn nbd_ioctl(f: &std::fs::File, req: libc::c_ulong, arg: libc::c_ulong) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the NBD ioctls take an integer argument (or a file descriptor) by value.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), req, arg) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn nbd_device(device: &Path) -> Result<String, ResolveError> {
    let name = device
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let digits = name.strip_prefix("nbd").unwrap_or_default();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ResolveError::NotNbd(device.display().to_string()));
    }
    Ok(name.to_owned())
}

impl Attachments {
    /// The export a device was attached to by this daemon.
    pub fn export_of(&self, device: &Path) -> Option<String> {
        self.devices
            .lock()
            .unwrap()
            .get(device)
            .map(|d| d.export.clone())
    }

    /// Attaches `export` to the kernel device `device` (`/dev/nbdN`).
    pub fn attach(
        self: &Arc<Self>,
        export: &Arc<crate::export::Export>,
        device: &Path,
        limits: super::transmission::Limits,
    ) -> Result<(), AttachError> {
        use std::os::fd::IntoRawFd;
        nbd_device(device)?;
        let shown = device.display().to_string();
        let failed = |why: String| AttachError::Failed {
            device: shown.clone(),
            why,
        };
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1 << 63);
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Counted from here, so a replacement of the export (a live restore into it) sees it.
        let guard = export.attach(id, None).ok_or_else(|| {
            failed(format!(
                "export {} was removed or replaced meanwhile",
                export.name()
            ))
        })?;
        let dev = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(device)
        {
            Ok(f) => Arc::new(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ResolveError::NoDevice(shown).into());
            }
            Err(e) => return Err(failed(e.to_string())),
        };
        let size = export.size();
        let bs: u64 = if size % 4096 == 0 { 4096 } else { 512 };
        if size % bs != 0 {
            return Err(failed(format!(
                "export size {size} is not a multiple of 512 bytes"
            )));
        }
        let flags = super::handshake::transmission_flags(export, false);
        let (ours, kernels) =
            std::os::unix::net::UnixStream::pair().map_err(|e| failed(e.to_string()))?;
        let setup = nbd_ioctl(&dev, NBD_SET_BLKSIZE, bs as libc::c_ulong)
            .and_then(|()| nbd_ioctl(&dev, NBD_SET_SIZE_BLOCKS, (size / bs) as libc::c_ulong))
            .and_then(|()| nbd_ioctl(&dev, NBD_SET_FLAGS, libc::c_ulong::from(flags)))
            .and_then(|()| nbd_ioctl(&dev, NBD_SET_SOCK, kernels.into_raw_fd() as libc::c_ulong));
        if let Err(e) = setup {
            let _ = nbd_ioctl(&dev, NBD_CLEAR_SOCK, 0);
            let why = if e.raw_os_error() == Some(libc::EBUSY) {
                "already in use".into()
            } else {
                e.to_string()
            };
            return Err(failed(why));
        }
        self.devices.lock().unwrap().insert(
            device.to_owned(),
            Attached {
                export: export.name().to_owned(),
                dev: dev.clone(),
            },
        );
        let neg = super::request::Negotiated {
            tflags: flags,
            structured: false,
            base_allocation: false,
            max_payload: crate::device::MAX_PAYLOAD,
        };
        let stack = export.device().clone();
        std::thread::Builder::new()
            .name("cowd-nbd-serve".into())
            .spawn(move || {
                let _guard = guard;
                super::transmission::serve(super::stream::Stream::Unix(ours), stack, neg, limits);
            })
            .map_err(|e| failed(e.to_string()))?;
        let (me, path) = (self.clone(), device.to_owned());
        std::thread::Builder::new()
            .name("cowd-nbd-doit".into())
            .spawn(move || {
                if let Err(e) = nbd_ioctl(&dev, NBD_DO_IT, 0) {
                    tracing::warn!(device = %path.display(), error = %e, "NBD_DO_IT ended");
                }
                let _ = nbd_ioctl(&dev, NBD_CLEAR_QUE, 0);
                let _ = nbd_ioctl(&dev, NBD_CLEAR_SOCK, 0);
                let mut devices = me.devices.lock().unwrap();
                // Only our own entry: a later attachment of the same device is not ours.
                if devices
                    .get(&path)
                    .is_some_and(|a| Arc::ptr_eq(&a.dev, &dev))
                {
                    devices.remove(&path);
                }
                drop(devices);
                me.gone.notify_all();
                tracing::info!(device = %path.display(), "kernel NBD device detached");
            })
            .map_err(|e| failed(e.to_string()))?;
        tracing::info!(device = %device.display(), export = export.name(), "kernel NBD device attached");
        Ok(())
    }

    /// Disconnects a device this daemon attached and waits (bounded) until the kernel has let
    /// it go, so it can be attached again at once; returns its export.
    pub fn detach(&self, device: &Path) -> Result<String, AttachError> {
        nbd_device(device)?;
        let shown = device.display().to_string();
        let Some(a) = self.devices.lock().unwrap().get(device).cloned() else {
            return Err(AttachError::NotAttached(shown));
        };
        nbd_ioctl(&a.dev, NBD_DISCONNECT, 0).map_err(|e| AttachError::Failed {
            device: shown.clone(),
            why: e.to_string(),
        })?;
        let devices = self.devices.lock().unwrap();
        let (devices, waited) = self
            .gone
            .wait_timeout_while(devices, DETACH_LIMIT, |d| {
                d.get(device).is_some_and(|b| Arc::ptr_eq(&b.dev, &a.dev))
            })
            .unwrap();
        drop(devices);
        if waited.timed_out() {
            return Err(AttachError::Failed {
                device: shown,
                why: format!("still connected {DETACH_LIMIT:?} after the disconnect request"),
            });
        }
        Ok(a.export)
    }

    /// Disconnects every device (the daemon is stopping).
    pub fn detach_all(&self) {
        let devices: Vec<PathBuf> = self.devices.lock().unwrap().keys().cloned().collect();
        for d in devices {
            let _ = self.detach(&d);
        }
    }
}
