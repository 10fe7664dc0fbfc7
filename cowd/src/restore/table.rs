//! [`Restores`]: every restore of the daemon, offline ([`RestoreJob`]) and live
//! ([`LiveRestore`]), by id; live ones also by export.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cowd_api::restores::RestoreStatus;
use tracing::{error, info};

use super::job::RestoreJob;
use super::live_job::{self, LiveError, LiveRestore, LiveStart};
use crate::export::{Export, Exports, Origin};
use crate::repo::Repo;

/// One restore of either kind.
#[derive(Debug, Clone)]
pub enum Job {
    Offline(Arc<RestoreJob>),
    Live(Arc<LiveRestore>),
}

impl Job {
    pub fn status(&self) -> RestoreStatus {
        match self {
            Job::Offline(j) => j.status(),
            Job::Live(j) => j.status(),
        }
    }

    /// Waits until the restore ends or `timeout` passes.
    pub fn wait(&self, timeout: Duration) -> RestoreStatus {
        match self {
            Job::Offline(j) => j.wait(timeout),
            Job::Live(j) => j.wait(timeout),
        }
    }

    fn id(&self) -> String {
        match self {
            Job::Offline(j) => j.id().to_owned(),
            Job::Live(j) => j.id(),
        }
    }

    fn running(&self) -> bool {
        match self {
            Job::Offline(j) => !j.ended(),
            Job::Live(j) => j.running(),
        }
    }
}

/// The restores of a daemon; live restores keep records in `STATE/restores/`.
#[derive(Debug, Default)]
pub struct Restores {
    /// Where live restores keep their records; `None`: live restores are refused.
    dir: Option<PathBuf>,
    jobs: Mutex<Vec<Job>>,
    next: AtomicU64,
}

impl Restores {
    /// The restores of a daemon with state directory `state_dir`.
    pub fn open(state_dir: &Path) -> std::io::Result<Restores> {
        let dir = state_dir.join("restores");
        std::fs::create_dir_all(&dir)?;
        // Ids continue after the highest a record holds, so a new one never takes its name.
        let (records, _) = live_job::records(&dir);
        let highest = records
            .iter()
            .filter_map(|r| r.id.rsplit('-').next()?.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        Ok(Restores {
            dir: Some(dir),
            jobs: Mutex::new(Vec::new()),
            next: AtomicU64::new(highest + 1),
        })
    }

    fn new_id(&self, kind: &str, backup: &str) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed).max(1);
        format!("{kind}-{backup}-{n}")
    }

    fn push(&self, job: Job) {
        let mut jobs = self.jobs.lock().unwrap();
        // Keep at most a hundred restores, dropping the oldest ended ones.
        while jobs.len() >= 100 {
            match jobs.iter().position(|j| !j.running()) {
                Some(i) => drop(jobs.remove(i)),
                None => break,
            }
        }
        jobs.push(job);
    }

    /// Starts restoring backup `backup` of `repo` to `to`.
    pub fn start(
        &self,
        repo: Repo,
        backup: &str,
        to: &Path,
        workers: usize,
    ) -> Result<Arc<RestoreJob>, String> {
        if let Some(busy) = self.jobs.lock().unwrap().iter().find(|j| match j {
            Job::Offline(o) => o.to() == to && !o.ended(),
            Job::Live(l) => l.running() && l.record().to == to,
        }) {
            return Err(format!(
                "{} is already the target of restore {}",
                to.display(),
                busy.id()
            ));
        }
        let job = RestoreJob::start(self.new_id("restore", backup), repo, backup, to, workers)?;
        self.push(Job::Offline(job.clone()));
        Ok(job)
    }

    /// Starts a live restore, serving its export.
    pub fn start_live(
        &self,
        req: LiveStart,
        exports: &Exports,
        workers: usize,
    ) -> Result<Arc<LiveRestore>, LiveError> {
        let dir = self.dir.as_ref().ok_or_else(|| {
            LiveError::Failed("this daemon keeps no state directory for live restores".into())
        })?;
        if let Some(l) = self.live_on(&req.export) {
            return Err(LiveError::Conflict(format!(
                "export {} is being restored live by {}",
                req.export,
                l.id()
            )));
        }
        let id = self.new_id("live", &req.backup);
        let job = LiveRestore::start(dir, id, req, exports, workers)?;
        self.push(Job::Live(job.clone()));
        Ok(job)
    }

    /// At daemon start: serves the export of every live restore recorded, resuming those not
    /// done. Problems are logged; the daemon starts anyway.
    pub fn resume(&self, exports: &Exports, workers: usize) {
        let Some(dir) = &self.dir else { return };
        let (records, bad) = live_job::records(dir);
        for b in bad {
            error!(record = %b, "unreadable live restore record; left in place");
        }
        for r in records {
            let (id, export) = (r.id.clone(), r.export.clone());
            match LiveRestore::resume(dir, r, exports, workers) {
                Ok(Some(job)) => {
                    info!(restore = %id, export = %export, "live restore resumed");
                    self.push(Job::Live(job));
                }
                Ok(None) => info!(restore = %id, export = %export, "restored export served"),
                Err(e) => {
                    error!(restore = %id, export = %export, error = %e, "cannot resume the live restore")
                }
            }
        }
    }

    /// The running live restore serving `export`.
    pub fn live_on(&self, export: &str) -> Option<Arc<LiveRestore>> {
        self.jobs.lock().unwrap().iter().find_map(|j| match j {
            Job::Live(l) if l.running() && l.export() == export => Some(l.clone()),
            _ => None,
        })
    }

    /// `export` was removed: a live restore serving it ends, its record goes.
    pub fn export_removed(&self, export: &Export) {
        let Origin::Restore(id) = export.origin() else {
            return;
        };
        if let Some(Job::Live(l)) = self.get(id) {
            l.removed();
        } else if let Some(dir) = &self.dir {
            // A finished restore's export, served again from its record at the daemon's start.
            let _ = std::fs::remove_file(dir.join(format!("{id}.json")));
        }
    }

    /// Stops every live restore's filler (daemon stop); their records stay for the next start.
    pub fn stop_all(&self) {
        let live: Vec<_> = self
            .jobs
            .lock()
            .unwrap()
            .iter()
            .filter_map(|j| match j {
                Job::Live(l) => Some(l.clone()),
                Job::Offline(_) => None,
            })
            .collect();
        for l in live {
            l.stop();
        }
    }

    pub fn get(&self, id: &str) -> Option<Job> {
        self.jobs
            .lock()
            .unwrap()
            .iter()
            .find(|j| j.id() == id)
            .cloned()
    }

    /// Every restore, newest first.
    pub fn all(&self) -> Vec<RestoreStatus> {
        let jobs = self.jobs.lock().unwrap().clone();
        jobs.iter().rev().map(Job::status).collect()
    }
}
