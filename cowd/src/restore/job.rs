//! [`RestoreJob`]: writing one generation to a file or device, with progress.
//!
//! A new path becomes a sparse file written as `PATH.partial` and renamed when complete; an
//! existing file or block device (at least as large as the backup) is written in place. Every
//! chunk is verified against its digest as it is read; zero chunks become holes (punched on
//! an existing target). Worker threads read, verify and write chunks in parallel.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use cowd_api::units::thousandths;
use tracing::{info, warn};

use super::ending::{Ending, RestoreEnd};
use crate::repo::{Index, Repo};
use crate::targets::{BackupTarget, RawImage};

pub use cowd_api::restores::{RestoreState, RestoreStatus};

/// One restore in progress or ended.
#[derive(Debug)]
pub struct RestoreJob {
    id: String,
    backup: String,
    to: PathBuf,
    total: u64,
    done: AtomicU64,
    bytes: AtomicU64,
    started: Instant,
    started_time: SystemTime,
    end: Ending,
}

impl RestoreJob {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn status(&self) -> RestoreStatus {
        let end = self.end.get();
        let elapsed = end
            .as_ref()
            .map_or_else(|| self.started.elapsed(), |e| e.elapsed);
        let bytes = self.bytes.load(Ordering::Relaxed);
        RestoreStatus {
            id: self.id.clone(),
            backup: self.backup.clone(),
            to: self.to.display().to_string(),
            state: end.as_ref().map_or(RestoreState::Running, |e| e.state),
            reason: end.and_then(|e| e.reason),
            chunks_total: self.total,
            chunks_done: self.done.load(Ordering::Relaxed),
            bytes_written: bytes,
            elapsed_s: thousandths(elapsed.as_secs_f64()),
            mib_s: thousandths(bytes as f64 / elapsed.as_secs_f64().max(1e-3) / f64::from(1 << 20)),
            started_time: humantime::format_rfc3339_seconds(self.started_time).to_string(),
            live: false,
            export: None,
            chunks_on_demand: 0,
            chunks_failed: 0,
            note: None,
        }
    }

    /// Waits until the restore ends or `timeout` passes.
    pub fn wait(&self, timeout: Duration) -> RestoreStatus {
        self.end.wait(timeout);
        self.status()
    }

    /// The restore has ended.
    pub fn ended(&self) -> bool {
        self.end.get().is_some()
    }

    /// Where it writes.
    pub fn to(&self) -> &Path {
        &self.to
    }

    fn finish(&self, r: Result<(), String>) {
        let (state, reason) = match r {
            Ok(()) => (RestoreState::Done, None),
            Err(e) => (RestoreState::Failed, Some(e)),
        };
        self.end.set(RestoreEnd {
            state,
            reason,
            elapsed: self.started.elapsed(),
        });
    }
}

/// Copies chunk `i` of `index` to the target.
fn restore_chunk(
    repo: &Repo,
    index: &Index,
    i: usize,
    target: &RawImage,
    buf: &mut Vec<u8>,
) -> Result<u64, String> {
    let (off, len) = (index.chunk_offset(i), index.chunk_len(i));
    if index.is_zero(i) {
        target
            .write_zeroes(off, len as u64)
            .map_err(|e| e.to_string())?;
        return Ok(0);
    }
    repo.load_entry(index, i, buf)
        .map_err(|e| format!("chunk {i}: {e}"))?;
    target.write(off, buf).map_err(|e| e.to_string())?;
    Ok(len as u64)
}

impl RestoreJob {
    /// Starts restoring backup `backup` of `repo` to `to` with `workers` threads, as restore
    /// `id`.
    pub fn start(
        id: String,
        repo: Repo,
        backup: &str,
        to: &Path,
        workers: usize,
    ) -> Result<Arc<RestoreJob>, String> {
        // Held until the restore ends: prune keeps the backup meanwhile.
        let lease = repo
            .lease(backup, &format!("restore {id}"))
            .map_err(|e| e.to_string())?;
        let manifest = repo.manifest(backup).map_err(|e| e.to_string())?;
        let index = Arc::new(repo.index(backup).map_err(|e| e.to_string())?);
        let target =
            Arc::new(RawImage::create(to, manifest.device_size).map_err(|e| e.to_string())?);
        let job = Arc::new(RestoreJob {
            id,
            backup: backup.to_owned(),
            to: to.to_owned(),
            total: index.digests.len() as u64,
            done: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            started: Instant::now(),
            started_time: SystemTime::now(),
            end: Ending::default(),
        });
        let next = Arc::new(AtomicUsize::new(0));
        let error: Arc<Mutex<Option<String>>> = Arc::default();
        let mut handles = Vec::new();
        for _ in 0..workers.max(1) {
            let (repo, index, target, job, next, error) = (
                repo.clone(),
                index.clone(),
                target.clone(),
                job.clone(),
                next.clone(),
                error.clone(),
            );
            handles.push(std::thread::spawn(move || {
                let mut buf = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= index.digests.len() || error.lock().unwrap().is_some() {
                        return;
                    }
                    match restore_chunk(&repo, &index, i, &target, &mut buf) {
                        Ok(n) => {
                            job.bytes.fetch_add(n, Ordering::Relaxed);
                            job.done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            error.lock().unwrap().get_or_insert(e);
                        }
                    }
                }
            }));
        }
        let j = job.clone();
        std::thread::Builder::new()
            .name("cowd-restore".into())
            .spawn(move || {
                for h in handles {
                    let _ = h.join();
                }
                let failure = error.lock().unwrap().take();
                let r = match failure {
                    Some(e) => Err(e),
                    None => target.finish().map_err(|e| e.to_string()),
                };
                if r.is_err() {
                    target.abort();
                }
                match &r {
                    Ok(()) => info!(restore = %j.id, "restore complete"),
                    Err(e) => warn!(restore = %j.id, error = %e, "restore failed"),
                }
                drop(lease);
                j.finish(r);
            })
            .map_err(|e| e.to_string())?;
        Ok(job)
    }
}
