//! [`Backups`]: tracks, cancels and reports the backup sessions of all exports (starting one
//! is `start`'s).
//!
//! Live sessions are kept per export; ended ones (this run and, from the state directory,
//! earlier runs) are kept as reports. Lock order: `Book::state` is never held while a
//! session's own locks are taken (reports are built after it is released).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::generation::PlanError;
use super::record::Records;
use crate::mover::MoverConfig;
use crate::snapshot::container::ContainerError;
use crate::snapshot::point::PointError;
use crate::snapshot::quiesce::QuiesceError;
use crate::snapshot::session::{Policy, Report, Session};
use crate::targets::TargetError;

/// Defaults for every backup, from the daemon's flags or config file.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub state_dir: PathBuf,
    /// Where containers are created when a request names none.
    pub container_dir: PathBuf,
    pub container_size: u64,
    pub block_size: u32,
    pub quiet_period: Duration,
    pub quiet_timeout: Duration,
    pub policy: Policy,
    /// Longest a filesystem stays frozen.
    pub freeze_limit: Duration,
    /// Longest writes in flight may take to drain at T.
    pub drain_limit: Duration,
    pub mover: MoverConfig,
    /// Repository used when a request names no target.
    pub repo: Option<PathBuf>,
    /// Key file that unlocks `repo` at start when it is encrypted.
    pub repo_key_file: Option<PathBuf>,
    /// How to reach repositories in object storage (`s3://`), beside the AWS environment.
    pub s3: crate::repo::S3Options,
    /// Bytes of the local cache of chunks read from object storage (`STATE_DIR/cache`; 0:
    /// none).
    pub cache_size: u64,
    /// Accept `target_faults` in requests (testing only).
    pub allow_fault_injection: bool,
}

impl Defaults {
    pub fn new(state_dir: &Path) -> Defaults {
        Defaults {
            state_dir: state_dir.to_owned(),
            container_dir: state_dir.join("containers"),
            container_size: 1 << 30,
            block_size: 64 << 10,
            quiet_period: Duration::from_secs(3),
            quiet_timeout: Duration::from_secs(80),
            policy: Policy::default(),
            freeze_limit: Duration::from_secs(10),
            drain_limit: Duration::from_secs(10),
            mover: MoverConfig::default(),
            allow_fault_injection: false,
            repo: None,
            repo_key_file: None,
            s3: crate::repo::S3Options::default(),
            cache_size: crate::repo::DEFAULT_CACHE_SIZE,
        }
    }
}

/// Why a backup did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("export {export} already has a backup in progress ({id}); wait for it or cancel it")]
    Busy { export: String, id: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Quiesce(#[from] QuiesceError),
    #[error(transparent)]
    Point(#[from] PointError),
    #[error("cannot start the mover: {0}")]
    Mover(std::io::Error),
}

/// Why an operation on a running backup was refused.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("export {0} has no backup in progress")]
    NoBackup(String),
    #[error("{0}")]
    Invalid(String),
}

/// Longest a start waits for an ended backup of the same export to release its container.
const RELEASE_LIMIT: Duration = Duration::from_secs(30);

/// All backup sessions of the daemon.
#[derive(Debug)]
pub struct Backups {
    pub(super) defaults: Defaults,
    pub(super) records: Records,
    pub(super) book: Arc<Book>,
}

/// Which sessions run and which have ended. One lock: a session moves from `live` to `ended`
/// in one step, so a reader never sees it in both or in neither.
#[derive(Debug, Default)]
pub(super) struct Book {
    /// Covers [`Sessions`]; never held while a session's own locks are taken.
    state: Mutex<Sessions>,
    /// Signalled when a session moves from `live` to `ended`.
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Sessions {
    /// Running sessions by export. A session leaves as soon as its mover has finished or
    /// aborted the target and disposed of the container, so nothing of it stays open.
    live: HashMap<String, Arc<Session>>,
    /// Exports whose backup is being started (quiescing, taking T).
    starting: HashSet<String>,
    /// Reports of ended sessions (this run and earlier ones), newest first.
    ended: Vec<Report>,
}

impl Book {
    /// Records the end of session `s`: its report joins the ended ones and the session
    /// leaves `live`. Both references are dropped before waiters are woken, so that the
    /// container and the target are closed when `wait` returns (unless a status request
    /// holds the session for a moment).
    pub(super) fn end(&self, s: Arc<Session>, r: Report) {
        let mut st = self.state.lock().unwrap();
        let live = match st.live.get(&s.export) {
            Some(l) if l.id == s.id => st.live.remove(&s.export),
            _ => None,
        };
        st.ended.insert(0, r);
        drop(st);
        drop((live, s));
        self.changed.notify_all();
    }

    /// Waits until session `id` is no longer live, or `timeout` passes.
    fn wait_ended(&self, id: &str, timeout: Duration) {
        let st = self.state.lock().unwrap();
        drop(
            self.changed
                .wait_timeout_while(st, timeout, |st| st.live.values().any(|s| s.id == id))
                .unwrap(),
        );
    }
}

impl Backups {
    /// Opens the state directory, recovering records of sessions a crash interrupted.
    pub fn open(defaults: Defaults) -> std::io::Result<Backups> {
        std::fs::create_dir_all(&defaults.state_dir)?;
        let records = Records::open(&defaults.state_dir)?;
        let ended = records.recover()?;
        Ok(Backups {
            defaults,
            records,
            book: Arc::new(Book {
                state: Mutex::new(Sessions {
                    ended,
                    ..Sessions::default()
                }),
                changed: Condvar::new(),
            }),
        })
    }

    pub fn defaults(&self) -> &Defaults {
        &self.defaults
    }

    /// Claims `export` for a start: one start at a time per export, and none while a backup
    /// runs. A backup that has ended but is still releasing its container is waited for.
    pub(super) fn claim(&self, export: &str) -> Result<(), StartError> {
        let mut st = self.book.state.lock().unwrap();
        loop {
            let busy = |id: &str| StartError::Busy {
                export: export.to_owned(),
                id: id.to_owned(),
            };
            match st.live.get(export).map(|s| (s.running(), s.id.clone())) {
                Some((true, id)) => return Err(busy(&id)),
                Some((false, id)) => {
                    let (next, waited) = self
                        .book
                        .changed
                        .wait_timeout_while(st, RELEASE_LIMIT, |st| {
                            st.live.get(export).is_some_and(|s| s.id == id)
                        })
                        .unwrap();
                    if waited.timed_out() {
                        return Err(busy(&id));
                    }
                    st = next;
                }
                None if st.starting.insert(export.to_owned()) => return Ok(()),
                None => return Err(busy("one being started")),
            }
        }
    }

    /// Releases the claim `claim` took (the start succeeded or gave up).
    pub(super) fn release_claim(&self, export: &str) {
        self.book.state.lock().unwrap().starting.remove(export);
    }

    /// Tracks a session that has taken its snapshot point.
    pub(super) fn track(&self, s: Arc<Session>) {
        let mut st = self.book.state.lock().unwrap();
        st.live.insert(s.export.clone(), s);
    }

    fn live(&self, export: &str) -> Option<Arc<Session>> {
        self.book.state.lock().unwrap().live.get(export).cloned()
    }

    fn live_by_id(&self, id: &str) -> Option<Arc<Session>> {
        let st = self.book.state.lock().unwrap();
        st.live.values().find(|s| s.id == id).cloned()
    }

    /// A backup of `export` is being started or runs.
    pub fn running(&self, export: &str) -> bool {
        let st = self.book.state.lock().unwrap();
        st.starting.contains(export) || st.live.get(export).is_some_and(|s| s.running())
    }

    /// Reports of live and ended sessions, optionally of one export; live first, newest first.
    ///
    /// A report never says a backup ended while it still holds its container or target: a
    /// session whose state is final but whose mover is still letting go is waited for (see
    /// [`report`](Self::report)).
    pub fn reports(&self, export: Option<&str>) -> Vec<Report> {
        let ending: Vec<String> = {
            let st = self.book.state.lock().unwrap();
            st.live
                .values()
                .filter(|s| !s.running())
                .map(|s| s.id.clone())
                .collect()
        };
        for id in &ending {
            self.book.wait_ended(id, RELEASE_LIMIT);
        }
        let st = self.book.state.lock().unwrap();
        let live: Vec<Arc<Session>> = st.live.values().cloned().collect();
        let mut out = st.ended.clone();
        drop(st);
        let mut live: Vec<Report> = live.iter().map(|s| s.report()).collect();
        live.append(&mut out);
        live.retain(|r| export.is_none_or(|e| r.export == e));
        live
    }

    /// The repository session `id` writes or wrote to, without waiting for anything.
    pub fn repo_of(&self, id: &str) -> Option<String> {
        if let Some(s) = self.live_by_id(id) {
            return s.report().repo;
        }
        let st = self.book.state.lock().unwrap();
        st.ended
            .iter()
            .find(|r| r.id == id)
            .and_then(|r| r.repo.clone())
    }

    /// The report of session `id`.
    ///
    /// A session's state turns final (failed, say) in the thread that saw the failure, a
    /// moment before its mover has aborted the target and disposed of the container. A report
    /// of that moment would let a client act on "failed" (`cowctl wait` returns, a test looks
    /// at open files, an operator runs `losetup -d`) while the files are still open; so a
    /// final state is reported only once the session has left the live table, which is when
    /// it has let go of everything.
    pub fn report(&self, id: &str) -> Option<Report> {
        if let Some(s) = self.live_by_id(id) {
            if s.running() {
                return Some(s.report());
            }
            drop(s);
            self.book.wait_ended(id, RELEASE_LIMIT);
            if let Some(s) = self.live_by_id(id) {
                // Still letting go after the limit: say so as it is.
                return Some(s.report());
            }
        }
        let st = self.book.state.lock().unwrap();
        st.ended.iter().find(|r| r.id == id).cloned()
    }

    /// Waits up to `timeout` for session `id` to end and release what it held; returns its
    /// report.
    pub fn wait(&self, id: &str, timeout: Duration) -> Option<Report> {
        self.book.wait_ended(id, timeout);
        self.report(id)
    }

    /// Cancels the backup of `export`.
    pub fn cancel(&self, export: &str) -> Result<Report, SessionError> {
        let s = self
            .live(export)
            .filter(|s| s.running())
            .ok_or_else(|| SessionError::NoBackup(export.to_owned()))?;
        s.cancel();
        Ok(self
            .wait(&s.id, Duration::from_secs(10))
            .unwrap_or_else(|| s.report()))
    }

    /// Moves `length` bytes at `offset` to the front of the mover's schedule.
    pub fn prioritize(
        &self,
        export: &str,
        offset: u64,
        length: u64,
    ) -> Result<Report, SessionError> {
        let s = self
            .live(export)
            .filter(|s| s.running())
            .ok_or_else(|| SessionError::NoBackup(export.to_owned()))?;
        let end = offset
            .checked_add(length)
            .filter(|&e| e <= s.size && length > 0);
        let Some(end) = end else {
            return Err(SessionError::Invalid(format!(
                "range {offset}+{length} is empty or beyond the device ({} bytes)",
                s.size
            )));
        };
        let bs = u64::from(s.block_size);
        s.prioritize((offset / bs) as u32..end.div_ceil(bs) as u32);
        Ok(s.report())
    }

    /// Waits (up to `limit`) until every live session has ended and cleaned up.
    pub fn wait_all(&self, limit: Duration) {
        let st = self.book.state.lock().unwrap();
        drop(
            self.book
                .changed
                .wait_timeout_while(st, limit, |st| !st.live.is_empty())
                .unwrap(),
        );
    }

    /// Fails every live session (the daemon is stopping).
    pub fn stop_all(&self, reason: &str) {
        let live: Vec<Arc<Session>> = self.live_sessions();
        for s in live {
            s.fail(reason);
        }
    }

    fn live_sessions(&self) -> Vec<Arc<Session>> {
        let st = self.book.state.lock().unwrap();
        st.live.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Instant, SystemTime};

    use roaring::RoaringBitmap;

    use super::*;
    use crate::snapshot::container::{Container, Protected};
    use crate::snapshot::session::{Policy, Setup, State};
    use crate::targets::RawImage;

    /// A session of a 64 KiB export with a file container and a raw image target in `dir`.
    fn session(dir: &std::path::Path) -> Arc<Session> {
        let export = dir.join("disk.img");
        std::fs::write(&export, vec![0u8; 65536]).unwrap();
        let protected = Protected::of(&export).unwrap();
        let container =
            Container::create(&dir.join("c.cow"), 1 << 20, 4096, "s-1", &protected).unwrap();
        let target = Arc::new(RawImage::create(&dir.join("out.img"), 65536).unwrap());
        let mut pending = RoaringBitmap::new();
        pending.insert_range(0..16);
        Arc::new(Session::new(Setup {
            id: "s-1".into(),
            export: "disk".into(),
            size: 65536,
            block_size: 4096,
            pending,
            zeroes: RoaringBitmap::new(),
            container,
            target,
            policy: Policy::default(),
            snapshot_time: SystemTime::now(),
            setup: Duration::ZERO,
            quiesce: "none".into(),
        }))
    }

    #[test]
    fn a_final_state_is_reported_only_once_the_session_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let backups = Arc::new(Backups::open(Defaults::new(&dir.path().join("state"))).unwrap());
        let s = session(dir.path());
        backups.track(s.clone());
        // The writer saw the target fail: the state is final, the mover still cleans up.
        s.fail("target write failed");
        let (b2, started) = (backups.clone(), Instant::now());
        let reader = std::thread::spawn(move || (b2.report("s-1").unwrap(), started.elapsed()));
        std::thread::sleep(Duration::from_millis(200));
        assert!(!reader.is_finished(), "a failed report before the release");
        // The mover's last step: the session leaves the book, dropping its files.
        let r = s.report();
        backups.book.end(s, r);
        let (report, waited) = reader.join().unwrap();
        assert_eq!(report.state, State::Failed);
        assert!(waited >= Duration::from_millis(200), "{waited:?}");
        assert_eq!(backups.reports(None).len(), 1);
    }
}
