//! The job table: copy jobs, the movers alive, and who holds which job.
//!
//! ```text
//!   requester ── submit ──> [ job: open ] <── open_jobs ── mover (heartbeat: a lease)
//!                               │ claim (exclusive, while the mover's lease lives)
//!                               v
//!                          [ claimed by M ] ── progress (false: claim lost, stop) ──┐
//!          unavailable(M, why): M marked, claim released ──> open for the others     │
//!          every live mover marked (or none alive): Failed NotReachable (settle)     │
//!          M's lease expires: the claim is void, the job is open again               │
//!                               v                                                    │
//!   requester <── wait ──  [ finished: Outcome ] <── finish (only by the holder) ────┘
//! ```
//!
//! The rules every table keeps, in process ([`LocalTable`]) or in etcd:
//! - a job has at most one claim, held by a mover whose lease lives; only the holder may record
//!   progress or finish it, and it learns at its next progress report when it lost the claim;
//!   a holder that stopped copying (cut off from the table) claims its job again, anew;
//! - a mover marked unavailable for a job never sees it again; the marks are kept with the job;
//! - a job ends once: `finish` or `settle` set its outcome, and nothing changes it after;
//! - a job nobody can serve fails: when no live mover is left unmarked and none holds it, the
//!   outcome is NotReachable with every mover's reason; when no mover is alive at all, only
//!   after a grace period from its submission (a lease: movers starting, or renewing late).
//!
//! Time is the table's: leases are measured by its clock, so movers and the table never
//! compare clocks. A mover also fences itself (see [`super::mover`]): it stops copying when
//! its own last renewal is older than half the lease, before the table can give the job away.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::spec::{JobError, JobId, JobSpec, Outcome};

/// A table could not be read or changed (etcd unreachable, for one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("job table: {0}")]
pub struct TableError(pub String);

pub type Result<T> = std::result::Result<T, TableError>;

/// Where a job stands, for `cowctl copies` and tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobView {
    pub id: JobId,
    pub spec: JobSpec,
    /// The mover holding it now, if any.
    pub mover: Option<String>,
    /// The path the holder copies through (for people: `PORT -> URI`).
    pub path: Option<String>,
    /// Bytes copied by the holder so far (or in all, once done).
    pub bytes: u64,
    /// The last checkpoint: the first this many bytes of the job's transfers (in order) are
    /// durable at their destinations, and a mover taking the job over resumes there.
    #[serde(default)]
    pub durable: u64,
    /// Movers that could not reach a copy target, and why.
    pub unavailable: BTreeMap<String, String>,
    /// How many times a mover claimed it (more than one: taken over or retried).
    pub claims: u32,
    pub outcome: Option<Outcome>,
}

impl JobView {
    /// `queued`, `copying`, `done` or `failed`.
    pub fn state(&self) -> &'static str {
        match (&self.outcome, &self.mover) {
            (Some(Outcome::Done { .. }), _) => "done",
            (Some(Outcome::Failed { .. }), _) => "failed",
            (None, Some(_)) => "copying",
            (None, None) => "queued",
        }
    }
}

/// A table of copy jobs shared by a requester and the movers.
pub trait JobTable: Send + Sync + Debug {
    /// Adds a job, open to every mover.
    fn submit(&self, spec: JobSpec) -> Result<JobId>;

    /// Registers `mover` or renews its lease for `ttl`.
    fn heartbeat(&self, mover: &str, ttl: Duration) -> Result<()>;

    /// Ends `mover`'s lease now (a mover that stops cleanly); its claims become void.
    fn leave(&self, mover: &str) -> Result<()>;

    /// The jobs `mover` may claim: not ended, not held by another live mover, not marked
    /// unavailable by it. Oldest first. A job `mover` holds itself is listed: a mover looking
    /// for jobs is not copying one, so it stopped (cut off from the table for a while) and
    /// must take the job up again, or the job, held by a live mover, would never end.
    fn open_jobs(&self, mover: &str) -> Result<Vec<(JobId, JobSpec)>>;

    /// Takes exclusive control of `job`; `false` when it is not open for `mover` any more.
    fn claim(&self, job: JobId, mover: &str) -> Result<bool>;

    /// Records the holder's progress; `false` when `mover` no longer holds the job (stop).
    fn progress(&self, job: JobId, mover: &str, bytes: u64, path: &str) -> Result<bool>;

    /// Records a checkpoint of the holder: the first `durable` bytes of the job's transfers,
    /// in order, are durable at their destinations (flushed), so a mover that takes the job
    /// over resumes there, and what they were read from is no longer needed. `false` (nothing
    /// changed) unless `mover` holds the job. A holder only moves it forward.
    fn checkpoint(&self, job: JobId, mover: &str, durable: u64) -> Result<bool>;

    /// Where a copy of `job` starts: its last checkpoint (0: from the beginning).
    fn resume_at(&self, job: JobId) -> Result<u64>;

    /// `mover` cannot serve `job` (`reason` says why): marks it and releases its claim; the
    /// job fails NotReachable if no live mover is left to try.
    fn unavailable(&self, job: JobId, mover: &str, reason: &str) -> Result<()>;

    /// Ends `job` with `outcome`; `false` (nothing changed) unless `mover` holds it.
    fn finish(&self, job: JobId, mover: &str, outcome: Outcome) -> Result<bool>;

    /// Ends `job` as NotReachable when nobody can serve it any more (no holder, every live
    /// mover marked). Returns its outcome if it has one.
    fn settle(&self, job: JobId) -> Result<Option<Outcome>>;

    /// Ends a job that is not ended yet as Cancelled (a holder sees it at its next progress).
    fn cancel(&self, job: JobId, reason: &str) -> Result<()>;

    /// The outcome of `job`, waiting up to `timeout` for it.
    fn wait(&self, job: JobId, timeout: Duration) -> Result<Option<Outcome>>;

    /// Every job the table still has, oldest first.
    fn list(&self) -> Result<Vec<JobView>>;
}

/// Waits for `job`'s outcome, settling it now and then so a job nobody can serve ends.
pub fn wait_settled(table: &dyn JobTable, job: JobId) -> Result<Outcome> {
    wait_settled_or(table, job, &|| false)
}

/// [`wait_settled`], cancelling the job once `aborted` says so (asked every 200 ms); its
/// outcome is then Cancelled, or the one it reached first.
pub fn wait_settled_or(
    table: &dyn JobTable,
    job: JobId,
    aborted: &dyn Fn() -> bool,
) -> Result<Outcome> {
    loop {
        if aborted() {
            table.cancel(job, "aborted by the initiator (task management)")?;
        }
        if let Some(o) = table.settle(job)? {
            return Ok(o);
        }
        if let Some(o) = table.wait(job, Duration::from_millis(200))? {
            return Ok(o);
        }
    }
}

/// The reason a job failed NotReachable, from every mover's mark.
pub fn not_reachable(marks: &BTreeMap<String, String>) -> Outcome {
    let reason = if marks.is_empty() {
        "no data mover is running".to_owned()
    } else {
        marks
            .iter()
            .map(|(m, why)| format!("mover {m}: {why}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    Outcome::Failed {
        error: JobError::NotReachable,
        segment: 0,
        source: false,
        reason,
    }
}

/// Ended jobs kept for `cowctl copies`.
const KEEP_ENDED: usize = 256;

/// A job table in this process: movers are threads of the daemon (or of a test).
#[derive(Debug)]
pub struct LocalTable {
    state: Mutex<State>,
    changed: Condvar,
    clock: Clock,
    /// How long a job waits for a mover when none is alive.
    grace: u64,
}

/// Default of [`LocalTable::with_grace`].
pub const GRACE: Duration = Duration::from_secs(5);

/// The table's time, in milliseconds: real, or set by a test.
#[derive(Debug)]
enum Clock {
    Real(Instant),
    Manual(Mutex<u64>),
}

#[derive(Debug, Default)]
struct State {
    next: JobId,
    jobs: BTreeMap<JobId, Entry>,
    ended: VecDeque<JobId>,
    /// Live movers: name -> lease expiry (ms).
    movers: BTreeMap<String, u64>,
}

#[derive(Debug)]
struct Entry {
    spec: JobSpec,
    /// When it was submitted (table time, ms).
    submitted: u64,
    holder: Option<String>,
    path: Option<String>,
    bytes: u64,
    durable: u64,
    unavailable: BTreeMap<String, String>,
    claims: u32,
    outcome: Option<Outcome>,
}

impl Default for LocalTable {
    fn default() -> Self {
        LocalTable::new()
    }
}

impl LocalTable {
    pub fn new() -> LocalTable {
        LocalTable::with_clock(Clock::Real(Instant::now()))
    }

    /// A table whose clock moves only by [`advance`](Self::advance) (model tests).
    pub fn manual() -> LocalTable {
        LocalTable::with_clock(Clock::Manual(Mutex::new(0)))
    }

    fn with_clock(clock: Clock) -> LocalTable {
        LocalTable {
            state: Mutex::new(State {
                next: 1,
                ..State::default()
            }),
            changed: Condvar::new(),
            clock,
            grace: GRACE.as_millis() as u64,
        }
    }

    /// The same table, letting a job wait `grace` for a mover when none is alive.
    pub fn with_grace(mut self, grace: Duration) -> LocalTable {
        self.grace = grace.as_millis() as u64;
        self
    }

    /// The movers whose lease lives.
    pub fn live_movers(&self) -> Vec<String> {
        let now = self.now();
        let s = self.state.lock().unwrap();
        s.movers
            .iter()
            .filter(|&(_, &until)| until > now)
            .map(|(m, _)| m.clone())
            .collect()
    }

    /// Moves a manual clock forward.
    pub fn advance(&self, by: Duration) {
        if let Clock::Manual(ms) = &self.clock {
            *ms.lock().unwrap() += by.as_millis() as u64;
        }
    }

    fn now(&self) -> u64 {
        match &self.clock {
            Clock::Real(start) => start.elapsed().as_millis() as u64,
            Clock::Manual(ms) => *ms.lock().unwrap(),
        }
    }

    /// Runs `change` on `job`'s entry if `mover` holds it; whether it did.
    fn if_held(&self, job: JobId, mover: &str, change: impl FnOnce(&mut Entry)) -> bool {
        let now = self.now();
        let mut s = self.state.lock().unwrap();
        if !s.holds(job, mover, now) {
            return false;
        }
        change(s.jobs.get_mut(&job).expect("held"));
        true
    }

    fn end(&self, s: &mut State, job: JobId, outcome: Outcome) {
        let Some(e) = s.jobs.get_mut(&job) else {
            return;
        };
        if e.outcome.is_some() {
            return;
        }
        e.outcome = Some(outcome);
        e.holder = None;
        s.ended.push_back(job);
        while s.ended.len() > KEEP_ENDED {
            if let Some(old) = s.ended.pop_front() {
                s.jobs.remove(&old);
            }
        }
        self.changed.notify_all();
    }
}

impl State {
    fn live(&self, mover: &str, now: u64) -> bool {
        self.movers.get(mover).is_some_and(|&until| until > now)
    }

    /// The holder of `e`, if its lease lives.
    fn holder<'a>(&self, e: &'a Entry, now: u64) -> Option<&'a str> {
        e.holder.as_deref().filter(|m| self.live(m, now))
    }

    /// `mover` holds `job`, which has not ended.
    fn holds(&self, job: JobId, mover: &str, now: u64) -> bool {
        (self.jobs.get(&job))
            .is_some_and(|e| e.outcome.is_none() && self.holder(e, now) == Some(mover))
    }

    /// Open for `mover`: not ended, not held by another live mover, not marked by `mover`. A
    /// job it holds itself is open to it: it stopped copying (see [`JobTable::open_jobs`]).
    fn open_for(&self, e: &Entry, mover: &str, now: u64) -> bool {
        e.outcome.is_none()
            && self.holder(e, now).is_none_or(|h| h == mover)
            && !e.unavailable.contains_key(mover)
    }

    /// Nobody can serve `e` any more: every live mover marked it, or none has been alive
    /// for `grace` since it was submitted.
    fn stranded(&self, e: &Entry, now: u64, grace: u64) -> bool {
        let mut live = self
            .movers
            .iter()
            .filter(|&(_, &until)| until > now)
            .peekable();
        if e.outcome.is_some() || self.holder(e, now).is_some() {
            return false;
        }
        if live.peek().is_none() {
            return now >= e.submitted + grace;
        }
        live.all(|(m, _)| e.unavailable.contains_key(m))
    }
}

impl JobTable for LocalTable {
    fn submit(&self, spec: JobSpec) -> Result<JobId> {
        let now = self.now();
        let mut s = self.state.lock().unwrap();
        let id = s.next;
        s.next += 1;
        s.jobs.insert(
            id,
            Entry {
                spec,
                submitted: now,
                holder: None,
                path: None,
                bytes: 0,
                durable: 0,
                unavailable: BTreeMap::new(),
                claims: 0,
                outcome: None,
            },
        );
        self.changed.notify_all();
        Ok(id)
    }

    fn heartbeat(&self, mover: &str, ttl: Duration) -> Result<()> {
        let now = self.now();
        let mut s = self.state.lock().unwrap();
        s.movers
            .insert(mover.to_owned(), now + ttl.as_millis() as u64);
        Ok(())
    }

    fn leave(&self, mover: &str) -> Result<()> {
        let mut s = self.state.lock().unwrap();
        s.movers.remove(mover);
        self.changed.notify_all();
        Ok(())
    }

    fn open_jobs(&self, mover: &str) -> Result<Vec<(JobId, JobSpec)>> {
        let now = self.now();
        let s = self.state.lock().unwrap();
        Ok(s.jobs
            .iter()
            .filter(|(_, e)| s.open_for(e, mover, now))
            .map(|(&id, e)| (id, e.spec.clone()))
            .collect())
    }

    fn claim(&self, job: JobId, mover: &str) -> Result<bool> {
        let now = self.now();
        let mut s = self.state.lock().unwrap();
        if !s.live(mover, now) {
            return Ok(false);
        }
        let open = s.jobs.get(&job).is_some_and(|e| s.open_for(e, mover, now));
        if !open {
            return Ok(false);
        }
        let e = s.jobs.get_mut(&job).expect("checked above");
        e.holder = Some(mover.to_owned());
        e.path = None;
        e.bytes = 0;
        e.claims += 1;
        Ok(true)
    }

    fn progress(&self, job: JobId, mover: &str, bytes: u64, path: &str) -> Result<bool> {
        Ok(self.if_held(job, mover, |e| {
            e.bytes = bytes;
            e.path = Some(path.to_owned());
        }))
    }

    fn checkpoint(&self, job: JobId, mover: &str, durable: u64) -> Result<bool> {
        Ok(self.if_held(job, mover, |e| e.durable = durable))
    }

    fn resume_at(&self, job: JobId) -> Result<u64> {
        let s = self.state.lock().unwrap();
        match s.jobs.get(&job) {
            Some(e) => Ok(e.durable),
            None => Err(TableError(format!("job {job} is not in the table"))),
        }
    }

    fn unavailable(&self, job: JobId, mover: &str, reason: &str) -> Result<()> {
        let now = self.now();
        let mut s = self.state.lock().unwrap();
        // An ended job keeps the marks it ended with.
        let Some(e) = s.jobs.get_mut(&job).filter(|e| e.outcome.is_none()) else {
            return Ok(());
        };
        e.unavailable.insert(mover.to_owned(), reason.to_owned());
        if e.holder.as_deref() == Some(mover) {
            e.holder = None;
            e.path = None;
        }
        let e = &s.jobs[&job];
        if s.stranded(e, now, self.grace) {
            let outcome = not_reachable(&e.unavailable);
            self.end(&mut s, job, outcome);
        }
        self.changed.notify_all();
        Ok(())
    }

    fn finish(&self, job: JobId, mover: &str, outcome: Outcome) -> Result<bool> {
        let now = self.now();
        let mut s = self.state.lock().unwrap();
        let holds = s.holds(job, mover, now);
        if holds {
            if let (Outcome::Done { bytes }, Some(e)) = (&outcome, s.jobs.get_mut(&job)) {
                e.bytes = *bytes;
            }
            self.end(&mut s, job, outcome);
        }
        Ok(holds)
    }

    fn settle(&self, job: JobId) -> Result<Option<Outcome>> {
        let now = self.now();
        let mut s = self.state.lock().unwrap();
        let Some(e) = s.jobs.get(&job) else {
            return Err(TableError(format!("job {job} is not in the table")));
        };
        if let Some(o) = &e.outcome {
            return Ok(Some(o.clone()));
        }
        if s.stranded(e, now, self.grace) {
            let outcome = not_reachable(&e.unavailable);
            self.end(&mut s, job, outcome.clone());
            return Ok(Some(outcome));
        }
        Ok(None)
    }

    fn cancel(&self, job: JobId, reason: &str) -> Result<()> {
        let mut s = self.state.lock().unwrap();
        let outcome = Outcome::Failed {
            error: JobError::Cancelled,
            segment: 0,
            source: false,
            reason: reason.to_owned(),
        };
        self.end(&mut s, job, outcome);
        Ok(())
    }

    fn wait(&self, job: JobId, timeout: Duration) -> Result<Option<Outcome>> {
        let deadline = Instant::now() + timeout;
        let mut s = self.state.lock().unwrap();
        loop {
            let Some(e) = s.jobs.get(&job) else {
                return Err(TableError(format!("job {job} is not in the table")));
            };
            if let Some(o) = &e.outcome {
                return Ok(Some(o.clone()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            s = self.changed.wait_timeout(s, left).unwrap().0;
        }
    }

    fn list(&self) -> Result<Vec<JobView>> {
        let now = self.now();
        let s = self.state.lock().unwrap();
        Ok(s.jobs
            .iter()
            .map(|(&id, e)| JobView {
                id,
                spec: e.spec.clone(),
                mover: s.holder(e, now).map(str::to_owned),
                path: e.path.clone(),
                bytes: e.bytes,
                durable: e.durable,
                unavailable: e.unavailable.clone(),
                claims: e.claims,
                outcome: e.outcome.clone(),
            })
            .collect())
    }
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
