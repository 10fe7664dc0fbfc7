//! Quiescing before a snapshot point: wait for a quiet period, or freeze a filesystem.
//!
//! - quiet period: the export has seen no write for `period`; if that does not happen within
//!   `timeout` the backup fails before it starts, saying so;
//! - freeze: `FIFREEZE` on a mountpoint (the kernel flushes the filesystem and holds new
//!   writes), `FITHAW` after the snapshot point. The thaw is guaranteed: on drop, on error, and
//!   by a watchdog after `limit` whatever happens (a frozen filesystem must never be left).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tracing::{info, warn};

use super::engine::Engine;

const FIFREEZE: libc::c_ulong = 0xC004_5877;
const FITHAW: libc::c_ulong = 0xC004_5878;

/// Why quiescing failed.
#[derive(Debug, thiserror::Error)]
pub enum QuiesceError {
    #[error(
        "no quiet period of {period:?} without writes came within the quiet timeout of {timeout:?}; \
         the backup did not start (use --freeze MOUNTPOINT, a longer --quiet-timeout, or --no-quiesce)"
    )]
    NoQuietPeriod { period: Duration, timeout: Duration },
    #[error("freeze {path}: {why}")]
    Freeze { path: PathBuf, why: String },
}

/// Waits until `engine` has seen no write for `period`, at most `timeout`.
pub fn wait_quiet(
    engine: &Engine,
    period: Duration,
    timeout: Duration,
) -> Result<Duration, QuiesceError> {
    let start = Instant::now();
    loop {
        let quiet = engine.quiet_for();
        if quiet >= period {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return Err(QuiesceError::NoQuietPeriod { period, timeout });
        }
        std::thread::sleep((period - quiet).min(Duration::from_millis(50)));
    }
}

fn ioctl(f: &File, req: libc::c_ulong) -> io::Result<()> {
    let mut arg: libc::c_int = 0;
    // SAFETY: FIFREEZE/FITHAW take a pointer to an int they do not keep.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), req, &mut arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A frozen filesystem; thawed when dropped (or by the watchdog).
#[derive(Debug)]
pub struct Frozen {
    dir: Arc<File>,
    path: PathBuf,
    thawed: Arc<AtomicBool>,
    since: Instant,
    at: SystemTime,
    wake: Option<crossbeam_channel::Sender<()>>,
    watchdog: Option<std::thread::JoinHandle<()>>,
}

/// Mount points listed in `/proc/self/mountinfo` text (field 5, octal escapes decoded).
fn mountpoints(mountinfo: &str) -> impl Iterator<Item = PathBuf> + '_ {
    mountinfo.lines().filter_map(|l| {
        let field = l.split(' ').nth(4)?;
        let mut out = Vec::with_capacity(field.len());
        let b = field.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let esc = b[i] == b'\\'
                && i + 3 < b.len()
                && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c));
            if esc {
                out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
                i += 4;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        let s: std::ffi::OsString = std::os::unix::ffi::OsStringExt::from_vec(out);
        Some(PathBuf::from(s))
    })
}

impl Frozen {
    /// Freezes the filesystem mounted at `mountpoint`; gives up (and makes sure it is thawed)
    /// if freezing takes longer than `limit`, and thaws by itself after `limit` in any case.
    pub fn freeze(mountpoint: &Path, limit: Duration) -> Result<Frozen, QuiesceError> {
        let err = |why: String| QuiesceError::Freeze {
            path: mountpoint.to_owned(),
            why,
        };
        let dir = Arc::new(File::open(mountpoint).map_err(|e| err(e.to_string()))?);
        if !dir.metadata().map_err(|e| err(e.to_string()))?.is_dir() {
            return Err(err(
                "not a directory (give the filesystem's mountpoint)".into()
            ));
        }
        // FIFREEZE on any directory freezes the filesystem holding it: refuse anything but a
        // mountpoint, or a typo would freeze (say) the root filesystem instead.
        let canonical = std::fs::canonicalize(mountpoint).map_err(|e| err(e.to_string()))?;
        let mounts =
            std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| err(e.to_string()))?;
        if !mountpoints(&mounts).any(|m| m == canonical) {
            return Err(err(
                "not a mountpoint (give the mountpoint of the filesystem to freeze)".into(),
            ));
        }
        let thawed = Arc::new(AtomicBool::new(false));
        let (tx, rx) = crossbeam_channel::bounded(1);
        // The owner keeps `wake`; dropping it (the thaw, or giving up) ends the watchdog's
        // wait at once, so the mountpoint is not held open longer than needed.
        let (wake, woken) = crossbeam_channel::bounded::<()>(0);
        let (d, t, p) = (dir.clone(), thawed.clone(), mountpoint.to_owned());
        // Freeze and watchdog on one thread: it freezes, reports, then thaws at the limit
        // unless the owner has thawed already.
        let watchdog = std::thread::Builder::new()
            .name("cowd-freeze".into())
            .spawn(move || {
                let start = Instant::now();
                let r = ioctl(&d, FIFREEZE);
                let ok = r.is_ok();
                let _ = tx.send(r);
                if !ok {
                    return;
                }
                let _ = woken.recv_timeout(limit.saturating_sub(start.elapsed()));
                if !t.swap(true, Ordering::AcqRel) {
                    warn!(mountpoint = %p.display(), ?limit, "freeze watchdog: thawing");
                    let _ = ioctl(&d, FITHAW);
                }
            })
            .map_err(|e| err(e.to_string()))?;
        match rx.recv_timeout(limit) {
            Ok(Ok(())) => {
                info!(mountpoint = %mountpoint.display(), "filesystem frozen");
                Ok(Frozen {
                    wake: Some(wake),
                    watchdog: Some(watchdog),
                    dir,
                    path: mountpoint.to_owned(),
                    thawed,
                    since: Instant::now(),
                    at: SystemTime::now(),
                })
            }
            Ok(Err(e)) => Err(err(format!(
                "FIFREEZE failed: {e} (is it a mountpoint of a filesystem that supports freezing?)"
            ))),
            Err(_) => Err(err(format!(
                "FIFREEZE did not complete within {limit:?}; the watchdog thaws it"
            ))),
        }
    }

    /// Thaws now; returns the wall-clock window during which the filesystem was frozen.
    pub fn thaw(self) -> (SystemTime, SystemTime) {
        let from = self.at;
        drop(self);
        (from, SystemTime::now())
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if !self.thawed.swap(true, Ordering::AcqRel) {
            match ioctl(&self.dir, FITHAW) {
                Ok(()) => {
                    info!(mountpoint = %self.path.display(), held = ?self.since.elapsed(), "filesystem thawed")
                }
                Err(e) => warn!(mountpoint = %self.path.display(), error = %e, "thaw failed"),
            }
        }
        // Wake the watchdog and wait for it, so no handle on the mountpoint outlives us.
        drop(self.wake.take());
        if let Some(w) = self.watchdog.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{BlockDevice, MemoryDevice};

    #[test]
    fn quiet_period_waits_for_silence_and_times_out_under_writes() {
        let e = Arc::new(Engine::new(Arc::new(MemoryDevice::new(1 << 20))));
        e.write_at(&[1], 0, false).unwrap();
        let waited = wait_quiet(&e, Duration::from_millis(100), Duration::from_secs(2)).unwrap();
        assert!(waited >= Duration::from_millis(80), "{waited:?}");
        let stop = Arc::new(AtomicBool::new(false));
        let (e2, s2) = (e.clone(), stop.clone());
        let writer = std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                e2.write_at(&[2], 0, false).unwrap();
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        std::thread::sleep(Duration::from_millis(30));
        let r = wait_quiet(&e, Duration::from_millis(100), Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains("100ms") && msg.contains("300ms"), "{msg}");
    }

    #[test]
    fn mountinfo_fields_are_decoded() {
        let text = "36 35 98:0 / /mnt/with\\040space rw - ext4 /dev/x rw\n\
                    37 35 98:1 / / rw - ext4 /dev/y rw\n";
        let m: Vec<PathBuf> = mountpoints(text).collect();
        assert_eq!(
            m,
            vec![PathBuf::from("/mnt/with space"), PathBuf::from("/")]
        );
    }

    #[test]
    fn freezing_a_non_mountpoint_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("file");
        std::fs::write(&f, b"x").unwrap();
        assert!(Frozen::freeze(&f, Duration::from_secs(1)).is_err());
        let e = Frozen::freeze(dir.path(), Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("not a mountpoint"), "{e}");
        assert!(Frozen::freeze(&dir.path().join("missing"), Duration::from_secs(1)).is_err());
    }
}
