//! [`Backups`]: starts, tracks, cancels and reports the backup sessions of all exports.
//!
//! Starting a backup, in order (any failure undoes what was set up and changes nothing):
//!
//! ```text
//!  check: one backup per export, valid knobs ── open the target ── create the container
//!   ── quiesce (quiet period | freeze | none) ── take T ── thaw ── start the mover
//! ```
//!
//! Live sessions are kept per export; ended ones (this run and, from the state directory,
//! earlier runs) are kept as reports.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use cowd_api::backups::{BackupStarted, StartBackup};
use tracing::{info, warn};

use super::container::{Container, ContainerError, Protected};
use super::generation;
use super::point::{self, Plan, PointError};
use super::quiesce::{self, Frozen, QuiesceError};
use super::record::Records;
use super::session::{Policy, Report, Session, StartingReport, State};
use crate::device::OpMask;
use crate::export::Export;
use crate::mover::{self, MoverConfig};
use crate::target::{BackupTarget, RawImage, TargetError};

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
    defaults: Defaults,
    records: Records,
    book: Arc<Book>,
}

/// Which sessions run and which have ended. One lock: a session moves from `live` to `ended`
/// in one step, so a reader never sees it in both or in neither.
#[derive(Debug, Default)]
struct Book {
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
    fn end(&self, s: Arc<Session>, r: Report) {
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

fn secs(name: &str, v: Option<f64>, default: Duration) -> Result<Duration, StartError> {
    match v {
        None => Ok(default),
        Some(s) => Duration::try_from_secs_f64(s)
            .map_err(|_| StartError::Invalid(format!("{name} {s}: not a duration in seconds"))),
    }
}

fn session_id(export: &str) -> String {
    let t = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let stamp: String = t.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let name: String = super::cbt::file_safe(export).chars().take(40).collect();
    format!("{name}-{stamp}-{:04x}", fastrand::u16(..))
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

    fn policy(&self, r: &StartBackup) -> Result<Policy, StartError> {
        let d = self.defaults.policy;
        let p = Policy {
            high_watermark: r.high_watermark.unwrap_or(d.high_watermark),
            low_watermark: r.low_watermark.unwrap_or(d.low_watermark),
            cbw_timeout: secs("cbw-timeout", r.cbw_timeout_s, d.cbw_timeout)?,
            on_overflow: r.on_overflow.unwrap_or(d.on_overflow),
            neighbours: r.neighbours.unwrap_or(d.neighbours),
            max_delay: d.max_delay,
        };
        p.check().map_err(StartError::Invalid)?;
        Ok(p)
    }

    /// Claims `export` for a start: one start at a time per export, and none while a backup
    /// runs. A backup that has ended but is still releasing its container is waited for.
    fn claim(&self, export: &str) -> Result<(), StartError> {
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

    /// Starts a backup of `export`; returns once the snapshot point is taken.
    pub fn start(
        &self,
        export: &Arc<Export>,
        r: &StartBackup,
    ) -> Result<BackupStarted, StartError> {
        let name = export.name().to_owned();
        self.claim(&name)?;
        struct Claim<'a>(&'a Book, String);
        impl Drop for Claim<'_> {
            fn drop(&mut self) {
                self.0.state.lock().unwrap().starting.remove(&self.1);
            }
        }
        let _claim = Claim(&self.book, name.clone());
        let block_size = r.block_size.unwrap_or(self.defaults.block_size);
        if !block_size.is_power_of_two() || !(4096..=4 << 20).contains(&block_size) {
            return Err(StartError::Invalid(format!(
                "block size {block_size}: must be a power of two from 4 KiB to 4 MiB"
            )));
        }
        let blocks = export.size().div_ceil(u64::from(block_size));
        if blocks > u64::from(u32::MAX) {
            return Err(StartError::Invalid(format!(
                "the export has {blocks} blocks of {block_size} bytes, more than 2^32; use a larger block size"
            )));
        }
        let repo_path = match (&r.repo, r.to.is_empty(), &self.defaults.repo) {
            (Some(_), false, _) => {
                return Err(StartError::Invalid(
                    "give either --to PATH or --repo DIR, not both".into(),
                ));
            }
            (Some(p), true, _) => Some(PathBuf::from(p)),
            (None, true, Some(d)) => Some(d.clone()),
            (None, true, None) => {
                return Err(StartError::Invalid(
                    "no target: give --to PATH or --repo DIR (or configure a default repository)"
                        .into(),
                ));
            }
            (None, false, _) => None,
        };
        let policy = self.policy(r)?;
        let quiet_period = secs("quiet-period", r.quiet_period_s, self.defaults.quiet_period)?;
        let quiet_timeout = secs(
            "quiet-timeout",
            r.quiet_timeout_s,
            self.defaults.quiet_timeout,
        )?;
        let id = session_id(&name);
        let protected = Protected::of(export.path())
            .map_err(|e| StartError::Invalid(format!("{}: {e}", export.path().display())))?;
        let to = PathBuf::from(&r.to);
        if repo_path.is_none()
            && Protected::of(&to).is_ok_and(|t| t.dev == protected.dev && t.ino == protected.ino)
        {
            return Err(StartError::Invalid(format!(
                "{}: the target is the exported device itself",
                r.to
            )));
        }
        if r.target_faults.is_some() && !self.defaults.allow_fault_injection {
            return Err(StartError::Invalid(
                "target_faults needs a daemon started with --allow-fault-injection (a testing aid)"
                    .into(),
            ));
        }
        let mut mover = self.defaults.mover;
        if let Some(mib) = r.max_rate_mib_s {
            if !(mib > 0.0 && mib.is_finite()) {
                return Err(StartError::Invalid(format!(
                    "max rate {mib} MiB/s: must be positive"
                )));
            }
            mover.max_rate = Some((mib * f64::from(1 << 20)) as u64);
        }
        let planned = match &repo_path {
            Some(p) => Some(generation::prepare(
                p,
                &name,
                export.size(),
                export.engine(),
                &id,
                block_size,
                r.mode.unwrap_or_default(),
                r.blocks.unwrap_or_default(),
            )?),
            None => None,
        };
        let target: Arc<dyn BackupTarget> = match (&planned, &r.target_faults) {
            (Some(p), _) => {
                mover.align = u64::from(p.target.chunk_size());
                p.target.clone()
            }
            (None, None) => Arc::new(RawImage::create(&to, export.size())?),
            (None, Some(f)) => {
                let raw = RawImage::create(&to, export.size())?;
                let (raw, control) = raw.with_faults();
                if let Some(ms) = f.delay_ms {
                    control.delay(OpMask::ALL, Duration::from_millis(ms));
                }
                if let Some(n) = f.fail_after_writes {
                    control.fail_after(OpMask::WRITE | OpMask::ZERO, n);
                }
                Arc::new(raw)
            }
        };
        let container_path = r
            .container
            .as_ref()
            .map(PathBuf::from)
            .unwrap_or_else(|| self.defaults.container_dir.join(format!("{id}.cow")));
        let size = r.container_size.unwrap_or(self.defaults.container_size);
        let container = match Container::create(&container_path, size, block_size, &id, &protected)
        {
            Ok(c) => c,
            Err(e) => {
                target.abort();
                return Err(e.into());
            }
        };
        // Until T is taken a crash must still leave a trace, so the next start can clean
        // the target and container up: a record saying "running" (see `record::recover`).
        let starting =
            Report::starting(&id, &name, &target.describe(), container.path(), block_size);
        if let Err(e) = self.records.save(&starting) {
            warn!(error = %e, "cannot write the backup record");
        }
        let undo = |c: &Container| {
            c.dispose();
            target.abort();
            self.records.remove(&id);
        };
        let mut frozen: Option<Frozen> = None;
        let quiesce = if r.no_quiesce {
            "none".to_owned()
        } else if let Some(m) = &r.freeze {
            match Frozen::freeze(Path::new(m), self.defaults.freeze_limit) {
                Ok(f) => frozen = Some(f),
                Err(e) => {
                    undo(&container);
                    return Err(e.into());
                }
            }
            format!("freeze {m}")
        } else {
            match quiesce::wait_quiet(export.engine(), quiet_period, quiet_timeout) {
                Ok(waited) => format!(
                    "quiet period {quiet_period:?} (waited {:.1} s)",
                    waited.as_secs_f64()
                ),
                Err(e) => {
                    undo(&container);
                    return Err(e.into());
                }
            }
        };
        let plan = Plan {
            id: id.clone(),
            export: name.clone(),
            block_size,
            container,
            target: target.clone(),
            policy,
            skip_holes: true,
            quiesce,
        };
        let taken = point::take(export.engine(), plan, self.defaults.drain_limit);
        let frozen_for = frozen.map(Frozen::thaw);
        let session = match taken {
            Ok(s) => s,
            Err(e) => {
                // The container was disposed by the snapshot point.
                target.abort();
                self.records.remove(&id);
                return Err(e.into());
            }
        };
        if let Some(p) = &planned {
            if let Err(e) = generation::narrow(&session, export.engine(), p) {
                session.fail(e.to_string());
            }
        }
        if let Some((from, to)) = frozen_for {
            session.set_freeze_window(from, to);
            let held = to.duration_since(from).unwrap_or_default();
            info!(session = %id, ?held, "filesystem was frozen for the snapshot point");
        }
        let report = session.report();
        if let Err(e) = self.records.save(&report) {
            warn!(error = %e, "cannot write the backup record");
        }
        self.book
            .state
            .lock()
            .unwrap()
            .live
            .insert(name.clone(), session.clone());
        let (records, book, engine) = (
            self.records.clone(),
            self.book.clone(),
            export.engine().clone(),
        );
        let on_end = Box::new(move |s: Arc<Session>| {
            engine.remove(&s.id);
            match s.state() {
                State::Done => engine.cbt().complete(&s.id),
                _ => engine.cbt().abort(&s.id),
            }
            let r = s.report();
            if let Err(e) = records.save(&r) {
                warn!(error = %e, "cannot write the backup record");
            }
            book.end(s, r);
        });
        let dev = export.engine().device().clone();
        if let Err(e) = mover::spawn(session.clone(), dev, mover, on_end) {
            session.fail(format!("cannot start the mover: {e}"));
            export.engine().remove(&id);
            export.engine().cbt().abort(&id);
            session.container.dispose();
            target.abort();
            let r = session.report();
            let _ = self.records.save(&r);
            self.book.end(session, r);
            return Err(StartError::Mover(e));
        }
        info!(session = %id, export = %name, target = %r.to, blocks = report.blocks_total, setup_ms = report.setup_ms, "backup started");
        Ok(BackupStarted {
            id,
            export: name,
            snapshot_time: report.snapshot_time,
            block_size,
            blocks_total: report.blocks_total,
            blocks_to_copy: session.blocks_to_copy(),
            setup_ms: report.setup_ms,
            quiesce: report.quiesce,
        })
    }

    fn live(&self, export: &str) -> Option<Arc<Session>> {
        self.book.state.lock().unwrap().live.get(export).cloned()
    }

    fn live_by_id(&self, id: &str) -> Option<Arc<Session>> {
        let st = self.book.state.lock().unwrap();
        st.live.values().find(|s| s.id == id).cloned()
    }

    /// Reports of live and ended sessions, optionally of one export; live first, newest first.
    pub fn reports(&self, export: Option<&str>) -> Vec<Report> {
        let st = self.book.state.lock().unwrap();
        let live: Vec<Arc<Session>> = st.live.values().cloned().collect();
        let mut out = st.ended.clone();
        drop(st);
        let mut live: Vec<Report> = live.iter().map(|s| s.report()).collect();
        live.append(&mut out);
        live.retain(|r| export.is_none_or(|e| r.export == e));
        live
    }

    /// The report of session `id`.
    pub fn report(&self, id: &str) -> Option<Report> {
        if let Some(s) = self.live_by_id(id) {
            return Some(s.report());
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
