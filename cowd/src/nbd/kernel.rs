//! The Linux kernel NBD client side: which export a `/dev/nbdN` device is attached to.
//!
//! The kernel records, in `/sys/block/nbdN/pid`, the process that runs the device's NBD
//! connection (the `nbd-client` that called `NBD_DO_IT`). cowd knows the process id of the
//! peer of every Unix-socket connection, so the device maps to the export one of whose
//! connections belongs to that process (or to its parent: `nbd-client` may fork after
//! connecting).

use std::path::{Path, PathBuf};

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

fn parent_pid(proc_root: &Path, pid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(proc_root.join(pid.to_string()).join("status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
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
    let mut candidates = vec![pid];
    let mut p = pid;
    for _ in 0..3 {
        match parent_pid(proc_root, p) {
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
    use std::sync::Arc;

    #[test]
    fn maps_a_device_through_the_client_process_or_its_parent() {
        let root = tempfile::tempdir().unwrap();
        let (sys, proc_) = (root.path().join("sys"), root.path().join("proc"));
        for (dev, pid) in [
            ("nbd0", Some("4242\n")),
            ("nbd1", None),
            ("nbd2", Some("777")),
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
        let exports = Exports::default();
        let mk =
            |n: &str| Export::new(n, Path::new("/x"), Arc::new(MemoryDevice::new(4096)), false);
        let a = exports.add(mk("a")).unwrap();
        let b = exports.add(mk("b")).unwrap();
        let _ga = a.attach(1, Some(1234));
        let _gb = b.attach(2, Some(4000));
        let r = |d: &str| resolve(Path::new(d), &exports, &sys, &proc_);
        assert_eq!(
            r("/dev/nbd0"),
            Ok("b".into()),
            "the parent of the DO_IT process connected"
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
}
