//! [`RestoreJob`]: writing one generation to a file or device, with progress.
//!
//! A new path becomes a sparse file written as `PATH.partial` and renamed when complete; an
//! existing file or block device (at least as large as the backup) is written in place. Every
//! chunk is verified against its digest as it is read; zero chunks become holes (punched on
//! an existing target). Worker threads read, verify and write chunks in parallel.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tracing::{info, warn};

use crate::repo::{Index, Repo};
use crate::targets::{BackupTarget, RawImage};

pub use cowd_api::restores::{RestoreState, RestoreStatus};

/// `x` rounded to thousandths (a measurement, not floating-point noise).
fn thousandths(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

/// How a restore ended.
#[derive(Debug, Clone)]
struct RestoreEnd {
    state: RestoreState,
    reason: Option<String>,
    elapsed: Duration,
}

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
    /// Set once when the restore ends; signalled by `ended`.
    end: Mutex<Option<RestoreEnd>>,
    ended: Condvar,
}

impl RestoreJob {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn status(&self) -> RestoreStatus {
        let end = self.end.lock().unwrap().clone();
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
        }
    }

    /// Waits until the restore ends or `timeout` passes.
    pub fn wait(&self, timeout: Duration) -> RestoreStatus {
        let end = self.end.lock().unwrap();
        drop(
            self.ended
                .wait_timeout_while(end, timeout, |e| e.is_none())
                .unwrap(),
        );
        self.status()
    }

    fn finish(&self, r: Result<(), String>) {
        let (state, reason) = match r {
            Ok(()) => (RestoreState::Done, None),
            Err(e) => (RestoreState::Failed, Some(e)),
        };
        *self.end.lock().unwrap() = Some(RestoreEnd {
            state,
            reason,
            elapsed: self.started.elapsed(),
        });
        self.ended.notify_all();
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
    if index.digests[i].is_zero() {
        target
            .write_zeroes(off, len as u64)
            .map_err(|e| e.to_string())?;
        return Ok(0);
    }
    repo.load_chunk(&index.digests[i], len, buf)
        .map_err(|e| format!("chunk {i}: {e}"))?;
    target.write(off, buf).map_err(|e| e.to_string())?;
    Ok(len as u64)
}

/// All restores of the daemon.
#[derive(Debug, Default)]
pub struct Restores {
    jobs: Mutex<Vec<Arc<RestoreJob>>>,
}

impl Restores {
    /// Starts restoring backup `backup` of `repo` to `to`.
    pub fn start(
        &self,
        repo: Repo,
        backup: &str,
        to: &Path,
        workers: usize,
    ) -> Result<Arc<RestoreJob>, String> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = format!(
            "restore-{}-{}",
            backup,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        // Held until the restore ends: prune keeps the backup meanwhile.
        let lease = repo
            .lease(backup, &format!("restore {id}"))
            .map_err(|e| e.to_string())?;
        let manifest = repo.manifest(backup).map_err(|e| e.to_string())?;
        let index = Arc::new(repo.index(backup).map_err(|e| e.to_string())?);
        if let Some(busy) = self
            .jobs
            .lock()
            .unwrap()
            .iter()
            .find(|j| j.to == to && j.end.lock().unwrap().is_none())
        {
            return Err(format!(
                "{} is already the target of restore {}",
                to.display(),
                busy.id
            ));
        }
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
            end: Mutex::new(None),
            ended: Condvar::new(),
        });
        {
            let mut jobs = self.jobs.lock().unwrap();
            // Keep at most a hundred restores, dropping the oldest finished ones.
            while jobs.len() >= 100 {
                match jobs.iter().position(|j| j.end.lock().unwrap().is_some()) {
                    Some(i) => drop(jobs.remove(i)),
                    None => break,
                }
            }
            jobs.push(job.clone());
        }
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

    pub fn get(&self, id: &str) -> Option<Arc<RestoreJob>> {
        self.jobs
            .lock()
            .unwrap()
            .iter()
            .find(|j| j.id == id)
            .cloned()
    }

    pub fn all(&self) -> Vec<RestoreStatus> {
        self.jobs
            .lock()
            .unwrap()
            .iter()
            .rev()
            .map(|j| j.status())
            .collect()
    }
}
