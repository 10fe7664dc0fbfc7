//! The job table in etcd: the table shared by cowd and `cowd mover` processes on other hosts.
//! etcd keeps the jobs and decides who holds one; its leases are the movers' leases, so the
//! rules of [`super::table`] come from etcd's own guarantees, never from a consensus of ours.
//!
//! ```text
//!   cowd (copy manager, its mover threads) ─┐   POST /v3/kv/{range,txn}, /v3/lease/*
//!   cowd mover (host B) ────────────────────┼──────────────> etcd (one cluster, one prefix)
//!   cowd mover (host C) ────────────────────┘   JSON gateway: keys and values base64
//! ```
//!
//! Keys, under a prefix (default `/cowd/`); `<id>` is the job number in 20 decimal digits, so
//! the keys of jobs sort as their numbers do:
//!
//! | key                  | value                                 | written by (on what condition)            | lease            |
//! |----------------------|---------------------------------------|-------------------------------------------|------------------|
//! | `next`               | the next job number                   | submit (compare-and-swap on its revision) | —                |
//! | `jobs/<id>`          | `{"spec": JobSpec}`                   | submit (the same transaction)             | —                |
//! | `grace/<id>`         | empty                                 | submit (the same transaction)             | one of [`GRACE`] |
//! | `claims/<id>`        | the holder's name                     | claim (if absent, or the mover's own)     | the holder's     |
//! | `claimed/<id>`       | the last claimant (`version`: claims) | claim (the same transaction)              | —                |
//! | `marks/<id>/<mover>` | why the mover cannot serve it         | unavailable (if not ended)                | —                |
//! | `progress/<id>`      | `{"bytes", "path", "mover"}`          | progress (if the claim is the mover's)    | —                |
//! | `durable/<id>`       | the last checkpoint, in bytes         | checkpoint (if the claim is the mover's)  | —                |
//! | `outcomes/<id>`      | [`Outcome`] JSON                      | finish, settle, cancel (if absent)        | —                |
//! | `movers/<name>`      | `pid P on HOST`                       | heartbeat (if absent)                     | the mover's      |
//!
//! How the table's rules hold:
//! - a claim is put with the holder's lease: when the lease ends (expired, or revoked by
//!   `leave`), etcd deletes the claim, and the job is open again. That IS the lease rule;
//! - claim, progress and finish are transactions comparing `claims/<id>` (absent, or the
//!   mover's name) and `outcomes/<id>` (absent): exclusive, and only the holder reports;
//! - an outcome is created only where none exists (`create_revision == 0`): a job ends once;
//! - a mover is alive while `movers/<name>` lives (it carries the mover's lease). A name is
//!   registered only if absent: a second mover of the same name waits for the first's lease
//!   to end instead of sharing its claims;
//! - settle ends a job NotReachable only if, at the revision it read, no claim existed and
//!   every live mover had marked it (or none was alive and `grace/<id>` had expired): the
//!   transaction also compares that no `movers/` key changed since that revision;
//! - time is etcd's: leases and the grace period are etcd leases, never a clock of this host.
//!
//! Every change is a transaction (`/v3/kv/txn`, with `request_put` and `request_delete_range`
//! operations), conditional on the keys it must find; reads of several keys are a
//! transaction without conditions, so they see one revision.
//!
//! Waiting for an outcome polls every [`POLL`]: a watch through the JSON gateway is a
//! streaming answer that ends when the request body does, so it would need a request body
//! kept open per waiter; one small range read per waiter every 100 ms costs less. Every call
//! gives up after a timeout ([`TIMEOUT`] by default): an unreachable etcd is a [`TableError`],
//! and a mover that cannot report stops copying (its lease decides who goes on).
//!
//! Only the newest [`KEEP_ENDED`] ended jobs are kept, as in [`super::table::LocalTable`]:
//! submitting a job deletes the keys of older ended ones.

mod gateway;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use self::gateway::{Cmp, Gateway, GatewayError, Kv, LeaseId, Op, Txn};
use super::spec::{JobError, JobId, JobSpec, Outcome};
use super::table::{self, GRACE, JobTable, JobView, Result, TableError};

/// The key prefix when none is configured.
pub const DEFAULT_PREFIX: &str = "/cowd/";

/// How long one call to etcd may take.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// How often `wait` reads a job's outcome.
pub const POLL: Duration = Duration::from_millis(100);

/// Ended jobs kept (as [`super::table::LocalTable`] keeps them).
pub const KEEP_ENDED: usize = 256;

/// etcd refuses transactions of more than 128 operations (its default `--max-txn-ops`).
const MAX_TXN_OPS: usize = 128;

/// Checks etcd's client URL: `http://HOST:PORT` (no TLS, no path). Returns it without a
/// trailing slash.
pub fn check_endpoint(url: &str) -> std::result::Result<String, String> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!(
            "etcd {url:?}: give etcd's client URL as http://HOST:PORT (https is not supported)"
        ));
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!(
            "etcd {url:?}: expected http://HOST:PORT, nothing after it"
        ));
    }
    let port = authority.rsplit_once(':').map(|(_, p)| p);
    if port.is_none_or(|p| p.parse::<u16>().is_err() || authority.ends_with(']')) {
        return Err(format!(
            "etcd {url:?}: give the port, e.g. http://HOST:2379"
        ));
    }
    Ok(format!("http://{authority}"))
}

/// Checks a key prefix: not empty, ending with `/` (added when left out).
pub fn check_prefix(prefix: &str) -> std::result::Result<String, String> {
    if prefix.is_empty() || prefix.chars().any(char::is_control) {
        return Err(format!(
            "etcd prefix {prefix:?}: not empty, no control characters"
        ));
    }
    Ok(if prefix.ends_with('/') {
        prefix.to_owned()
    } else {
        format!("{prefix}/")
    })
}

/// Where the job table is in etcd, checked (the `etcd` and `etcd_prefix` settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// `http://HOST:PORT`.
    pub endpoint: String,
    /// Ends with `/`.
    pub prefix: String,
}

impl EtcdConfig {
    pub fn new(endpoint: &str, prefix: Option<&str>) -> std::result::Result<EtcdConfig, String> {
        Ok(EtcdConfig {
            endpoint: check_endpoint(endpoint)?,
            prefix: check_prefix(prefix.unwrap_or(DEFAULT_PREFIX))?,
        })
    }

    pub fn table(&self) -> std::result::Result<EtcdTable, String> {
        EtcdTable::new(&self.endpoint, &self.prefix)
    }
}

/// The job table in etcd.
#[derive(Debug)]
pub struct EtcdTable {
    etcd: Gateway,
    keys: Keys,
    grace: Duration,
    /// The lease of each mover of this process, by name. Locked only to read or change an
    /// entry, never across a call to etcd (a slow etcd must not hold up the other movers).
    leases: Mutex<HashMap<String, LeaseId>>,
}

impl EtcdTable {
    /// The table under `prefix` in the etcd at `endpoint` (`http://HOST:PORT`). Nothing is
    /// sent yet: an etcd that is down now is retried at every call.
    pub fn new(endpoint: &str, prefix: &str) -> std::result::Result<EtcdTable, String> {
        let endpoint = check_endpoint(endpoint)?;
        Ok(EtcdTable {
            etcd: Gateway::new(&endpoint, TIMEOUT),
            keys: Keys::new(&check_prefix(prefix)?),
            grace: GRACE,
            leases: Mutex::new(HashMap::new()),
        })
    }

    /// The same table, each call giving up after `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> EtcdTable {
        self.etcd = Gateway::new(self.etcd.endpoint(), timeout);
        self
    }

    /// The same table, letting a job wait `grace` for a mover when none is alive.
    pub fn with_grace(mut self, grace: Duration) -> EtcdTable {
        self.grace = grace;
        self
    }

    pub fn endpoint(&self) -> &str {
        self.etcd.endpoint()
    }

    pub fn prefix(&self) -> &str {
        &self.keys.prefix
    }

    /// The movers alive now (their lease lives).
    pub fn live_movers(&self) -> Result<Vec<String>> {
        let kvs = self.read(vec![Op::Keys(self.keys.movers())])?;
        Ok(self.snapshot(&kvs)?.movers.into_iter().collect())
    }

    fn lease_of(&self, mover: &str) -> Option<LeaseId> {
        self.leases.lock().unwrap().get(mover).copied()
    }

    /// Forgets `lease` of `mover` (etcd says it is gone): the next heartbeat registers anew.
    fn forget(&self, mover: &str, lease: LeaseId) {
        let mut leases = self.leases.lock().unwrap();
        if leases.get(mover) == Some(&lease) {
            leases.remove(mover);
        }
    }

    fn txn(&self, txn: Txn) -> Result<bool> {
        Ok(self.etcd.txn(&txn).map_err(error)?.succeeded)
    }

    /// Reads with `ops` in one transaction: one revision of the table.
    fn read(&self, ops: Vec<Op>) -> Result<Vec<Kv>> {
        Ok(self.read_at(ops)?.0)
    }

    /// Like [`read`](Self::read), with the revision read.
    fn read_at(&self, ops: Vec<Op>) -> Result<(Vec<Kv>, i64)> {
        let mut kvs = Vec::new();
        let mut revision = 0;
        for chunk in ops.chunks(MAX_TXN_OPS) {
            let r = self
                .etcd
                .txn(&Txn {
                    then: chunk.to_vec(),
                    ..Txn::default()
                })
                .map_err(error)?;
            kvs.extend(r.kvs);
            revision = revision.max(r.revision);
        }
        Ok((kvs, revision))
    }

    fn snapshot(&self, kvs: &[Kv]) -> Result<Snapshot> {
        Snapshot::from_kvs(&self.keys, kvs).map_err(|e| TableError(format!("etcd: {e}")))
    }

    /// Everything stored about `job` (and, with `movers`, the live movers), at one revision.
    fn job_at(&self, job: JobId, movers: bool) -> Result<(Stored, BTreeSet<String>, i64)> {
        let k = &self.keys;
        let mut ops = vec![
            Op::Get(k.job(job)),
            Op::Get(k.grace(job)),
            Op::Get(k.claim(job)),
            Op::Get(k.claimed(job)),
            Op::Get(k.progress(job)),
            Op::Get(k.outcome(job)),
            Op::GetPrefix(k.marks(job)),
        ];
        if movers {
            ops.push(Op::Keys(k.movers()));
        }
        let (kvs, revision) = self.read_at(ops)?;
        let mut snap = self.snapshot(&kvs)?;
        let stored = snap
            .jobs
            .remove(&job)
            .filter(|s| s.exists)
            .ok_or_else(|| TableError(format!("job {job} is not in the table")))?;
        Ok((stored, snap.movers, revision))
    }

    /// Ends `job` with `outcome` if it has none, when `when` holds too; the holder's claim
    /// goes with it.
    fn end(&self, job: JobId, mut when: Vec<Cmp>, outcome: &Outcome) -> Result<bool> {
        let k = &self.keys;
        when.push(Cmp::Present(k.job(job)));
        when.push(Cmp::Absent(k.outcome(job)));
        self.txn(Txn {
            when,
            then: vec![
                Op::put(k.outcome(job), json(outcome)),
                Op::Delete(k.claim(job)),
            ],
            otherwise: Vec::new(),
        })
    }

    /// Deletes the oldest ended jobs beyond [`KEEP_ENDED`].
    fn prune(&self) -> Result<()> {
        let ended = self.etcd.keys(&self.keys.outcomes()).map_err(error)?;
        let ids: Vec<JobId> = ended
            .iter()
            .filter_map(|kv| match self.keys.parse(&kv.key) {
                Some(Key::Outcome(id)) => Some(id),
                _ => None,
            })
            .collect();
        let Some(extra) = ids.len().checked_sub(KEEP_ENDED).filter(|&n| n > 0) else {
            return Ok(());
        };
        let ops: Vec<Op> = ids[..extra]
            .iter()
            .flat_map(|&id| self.keys.all_of(id))
            .map(Op::DeletePrefix)
            .collect();
        for chunk in ops.chunks(MAX_TXN_OPS) {
            self.txn(Txn {
                then: chunk.to_vec(),
                ..Txn::default()
            })?;
        }
        Ok(())
    }

    /// Registers `mover` under a new lease of `ttl`, if no live mover has its name.
    fn register(&self, mover: &str, ttl: Duration) -> Result<()> {
        let secs = ttl.as_secs_f64().ceil().max(1.0) as i64;
        let lease = self.etcd.grant(secs).map_err(error)?;
        let key = self.keys.mover(mover);
        let registered = self.txn(Txn {
            when: vec![Cmp::Absent(key.clone())],
            then: vec![Op::Put {
                key,
                value: whoami().into_bytes(),
                lease: Some(lease),
            }],
            otherwise: Vec::new(),
        });
        match registered {
            Ok(true) => {
                self.leases.lock().unwrap().insert(mover.to_owned(), lease);
                info!(mover, lease, ttl = secs, etcd = %self.etcd.endpoint(), "mover registered in etcd");
                Ok(())
            }
            Ok(false) => {
                let _ = self.etcd.revoke(lease);
                Err(TableError(format!(
                    "a live mover named {mover} is registered in etcd already: give every mover \
                     its own name (or wait for the old one's lease to end)"
                )))
            }
            Err(e) => {
                let _ = self.etcd.revoke(lease);
                Err(e)
            }
        }
    }

    /// Claims `job` for `mover` under `lease` if the claim is `held` (absent, or its own).
    fn claim_if(&self, job: JobId, mover: &str, lease: LeaseId, held: Cmp) -> Result<bool> {
        let k = &self.keys;
        let r = self.etcd.txn(&Txn {
            when: vec![
                Cmp::Present(k.job(job)),
                held,
                Cmp::Absent(k.outcome(job)),
                Cmp::Absent(k.mark(job, mover)),
            ],
            then: vec![
                Op::Put {
                    key: k.claim(job),
                    value: mover.as_bytes().to_vec(),
                    lease: Some(lease),
                },
                Op::put(k.claimed(job), mover.as_bytes().to_vec()),
                Op::Delete(k.progress(job)),
            ],
            otherwise: Vec::new(),
        });
        match r {
            Ok(r) => Ok(r.succeeded),
            Err(e) if e.lease_not_found() => {
                self.forget(mover, lease);
                Ok(false)
            }
            Err(e) => Err(error(e)),
        }
    }
}

fn error(e: GatewayError) -> TableError {
    TableError(e.to_string())
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("plain data serialises")
}

/// What `movers/<name>` holds, for people reading etcd: `pid P on HOST`.
fn whoami() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("pid {} on {}", std::process::id(), host.trim())
}

impl JobTable for EtcdTable {
    fn submit(&self, spec: JobSpec) -> Result<JobId> {
        let k = &self.keys;
        let record = json(&JobRecord { spec });
        let grace = self.grace.as_secs_f64().ceil().max(1.0) as i64;
        let grace = self.etcd.grant(grace).map_err(error)?;
        // The counter is compared-and-swapped: a submitter that lost the race reads again.
        for _ in 0..100 {
            let next = self.etcd.get(&k.next()).map_err(error)?;
            let (id, unchanged) = match &next {
                None => (1, Cmp::Absent(k.next())),
                Some(kv) => {
                    let id = std::str::from_utf8(&kv.value)
                        .ok()
                        .and_then(|s| s.parse::<JobId>().ok())
                        .ok_or_else(|| {
                            TableError(format!("etcd: {}next is not a number", k.prefix))
                        })?;
                    (id, Cmp::ModRevision(k.next(), kv.mod_revision))
                }
            };
            let submitted = self.txn(Txn {
                when: vec![unchanged],
                then: vec![
                    Op::put(k.next(), (id + 1).to_string().into_bytes()),
                    Op::put(k.job(id), record.clone()),
                    Op::Put {
                        key: k.grace(id),
                        value: Vec::new(),
                        lease: Some(grace),
                    },
                ],
                otherwise: Vec::new(),
            })?;
            if submitted {
                if let Err(e) = self.prune() {
                    warn!(error = %e, "cannot delete old ended jobs from etcd");
                }
                return Ok(id);
            }
        }
        Err(TableError(
            "etcd: the job counter keeps changing: too many submitters".into(),
        ))
    }

    fn heartbeat(&self, mover: &str, ttl: Duration) -> Result<()> {
        if let Some(lease) = self.lease_of(mover) {
            if self.etcd.keepalive(lease).map_err(error)? > 0 {
                return Ok(());
            }
            // Expired: its claims are gone; register again under a new lease.
            warn!(
                mover,
                lease, "the mover's lease in etcd had expired: registering again"
            );
            self.forget(mover, lease);
        }
        self.register(mover, ttl)
    }

    fn leave(&self, mover: &str) -> Result<()> {
        let lease = self.leases.lock().unwrap().remove(mover);
        match lease {
            Some(l) => self.etcd.revoke(l).map_err(error),
            None => Ok(()),
        }
    }

    fn open_jobs(&self, mover: &str) -> Result<Vec<(JobId, JobSpec)>> {
        let k = &self.keys;
        // Keys first (cheap however many jobs are kept), then the specs of the open ones.
        let kvs = self.read(vec![
            Op::Keys(k.jobs()),
            Op::GetPrefix(k.claims()),
            Op::Keys(k.outcomes()),
            Op::Keys(k.all_marks()),
        ])?;
        let open: Vec<JobId> = self
            .snapshot(&kvs)?
            .jobs
            .iter()
            .filter(|(_, s)| s.open_for(mover))
            .map(|(&id, _)| id)
            .collect();
        if open.is_empty() {
            return Ok(Vec::new());
        }
        let kvs = self.read(open.iter().map(|&id| Op::Get(k.job(id))).collect())?;
        Ok(self
            .snapshot(&kvs)?
            .jobs
            .into_iter()
            .filter_map(|(id, s)| s.spec.map(|spec| (id, spec)))
            .collect())
    }

    fn claim(&self, job: JobId, mover: &str) -> Result<bool> {
        let Some(lease) = self.lease_of(mover) else {
            return Ok(false);
        };
        let claim = self.keys.claim(job);
        Ok(
            self.claim_if(job, mover, lease, Cmp::Absent(claim.clone()))?
                || self.claim_if(
                    job,
                    mover,
                    lease,
                    Cmp::ValueIs(claim, mover.as_bytes().to_vec()),
                )?,
        )
    }

    fn progress(&self, job: JobId, mover: &str, bytes: u64, path: &str) -> Result<bool> {
        let k = &self.keys;
        let progress = Progress {
            bytes,
            path: path.to_owned(),
            mover: mover.to_owned(),
        };
        self.txn(Txn {
            when: vec![
                Cmp::ValueIs(k.claim(job), mover.as_bytes().to_vec()),
                Cmp::Absent(k.outcome(job)),
            ],
            then: vec![Op::put(k.progress(job), json(&progress))],
            otherwise: Vec::new(),
        })
    }

    fn checkpoint(&self, job: JobId, mover: &str, durable: u64) -> Result<bool> {
        let k = &self.keys;
        self.txn(Txn {
            when: vec![
                Cmp::ValueIs(k.claim(job), mover.as_bytes().to_vec()),
                Cmp::Absent(k.outcome(job)),
            ],
            then: vec![Op::put(k.durable(job), durable.to_string().into_bytes())],
            otherwise: Vec::new(),
        })
    }

    fn resume_at(&self, job: JobId) -> Result<u64> {
        let k = &self.keys;
        let kvs = self.read(vec![Op::Get(k.durable(job)), Op::Keys(k.job(job))])?;
        let stored = self.snapshot(&kvs)?.jobs.remove(&job).unwrap_or_default();
        if !stored.exists {
            return Err(TableError(format!("job {job} is not in the table")));
        }
        Ok(stored.durable)
    }

    fn unavailable(&self, job: JobId, mover: &str, reason: &str) -> Result<()> {
        let k = &self.keys;
        // An ended job keeps the marks it ended with.
        let marked = self.txn(Txn {
            when: vec![Cmp::Present(k.job(job)), Cmp::Absent(k.outcome(job))],
            then: vec![Op::put(k.mark(job, mover), reason.as_bytes().to_vec())],
            otherwise: Vec::new(),
        })?;
        if !marked {
            return Ok(());
        }
        self.txn(Txn {
            when: vec![Cmp::ValueIs(k.claim(job), mover.as_bytes().to_vec())],
            then: vec![Op::Delete(k.claim(job)), Op::Delete(k.progress(job))],
            otherwise: Vec::new(),
        })?;
        self.settle(job).map(drop)
    }

    fn finish(&self, job: JobId, mover: &str, outcome: Outcome) -> Result<bool> {
        let holds = Cmp::ValueIs(self.keys.claim(job), mover.as_bytes().to_vec());
        self.end(job, vec![holds], &outcome)
    }

    fn settle(&self, job: JobId) -> Result<Option<Outcome>> {
        let (stored, movers, revision) = self.job_at(job, true)?;
        if let Some(o) = stored.outcome {
            return Ok(Some(o));
        }
        if !stored.stranded(&movers) {
            return Ok(None);
        }
        let outcome = table::not_reachable(&stored.marks);
        let when = vec![
            Cmp::Absent(self.keys.claim(job)),
            // No mover registered since the read (one that left changes nothing).
            Cmp::PrefixModBelow(self.keys.movers(), revision + 1),
        ];
        if self.end(job, when, &outcome)? {
            return Ok(Some(outcome));
        }
        Ok(self.job_at(job, false)?.0.outcome)
    }

    fn cancel(&self, job: JobId, reason: &str) -> Result<()> {
        let outcome = Outcome::Failed {
            error: JobError::Cancelled,
            segment: 0,
            source: false,
            reason: reason.to_owned(),
        };
        self.end(job, Vec::new(), &outcome).map(drop)
    }

    fn wait(&self, job: JobId, timeout: Duration) -> Result<Option<Outcome>> {
        let deadline = Instant::now() + timeout;
        let k = &self.keys;
        loop {
            let kvs = self.read(vec![Op::Get(k.outcome(job)), Op::Keys(k.job(job))])?;
            let stored = self.snapshot(&kvs)?.jobs.remove(&job).unwrap_or_default();
            if let Some(o) = stored.outcome {
                return Ok(Some(o));
            }
            if !stored.exists {
                return Err(TableError(format!("job {job} is not in the table")));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            std::thread::sleep(left.min(POLL));
        }
    }

    fn list(&self) -> Result<Vec<JobView>> {
        let k = &self.keys;
        let kvs = self.read(vec![
            Op::GetPrefix(k.jobs()),
            Op::GetPrefix(k.claims()),
            Op::GetPrefix(k.claimed_all()),
            Op::GetPrefix(k.progresses()),
            Op::GetPrefix(k.durables()),
            Op::GetPrefix(k.outcomes()),
            Op::GetPrefix(k.all_marks()),
        ])?;
        Ok(self
            .snapshot(&kvs)?
            .jobs
            .into_iter()
            .filter_map(|(id, s)| s.view(id))
            .collect())
    }
}

/// The value of `jobs/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct JobRecord {
    spec: JobSpec,
}

/// The value of `progress/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Progress {
    bytes: u64,
    path: String,
    mover: String,
}

/// The table's keys under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Keys {
    /// Ends with `/`.
    prefix: String,
}

/// What a key of the table is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Next,
    Job(JobId),
    Grace(JobId),
    Claim(JobId),
    Claimed(JobId),
    Progress(JobId),
    Durable(JobId),
    Outcome(JobId),
    Mark(JobId, String),
    Mover(String),
}

impl Keys {
    fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    fn key(&self, rest: &str) -> Vec<u8> {
        format!("{}{rest}", self.prefix).into_bytes()
    }

    fn next(&self) -> Vec<u8> {
        self.key("next")
    }
    fn job(&self, id: JobId) -> Vec<u8> {
        self.key(&format!("jobs/{id:020}"))
    }
    fn jobs(&self) -> Vec<u8> {
        self.key("jobs/")
    }
    fn grace(&self, id: JobId) -> Vec<u8> {
        self.key(&format!("grace/{id:020}"))
    }
    fn claim(&self, id: JobId) -> Vec<u8> {
        self.key(&format!("claims/{id:020}"))
    }
    fn claims(&self) -> Vec<u8> {
        self.key("claims/")
    }
    fn claimed(&self, id: JobId) -> Vec<u8> {
        self.key(&format!("claimed/{id:020}"))
    }
    fn claimed_all(&self) -> Vec<u8> {
        self.key("claimed/")
    }
    fn progress(&self, id: JobId) -> Vec<u8> {
        self.key(&format!("progress/{id:020}"))
    }
    fn progresses(&self) -> Vec<u8> {
        self.key("progress/")
    }
    fn durable(&self, id: JobId) -> Vec<u8> {
        self.key(&format!("durable/{id:020}"))
    }
    fn durables(&self) -> Vec<u8> {
        self.key("durable/")
    }
    fn outcome(&self, id: JobId) -> Vec<u8> {
        self.key(&format!("outcomes/{id:020}"))
    }
    fn outcomes(&self) -> Vec<u8> {
        self.key("outcomes/")
    }
    fn marks(&self, id: JobId) -> Vec<u8> {
        self.key(&format!("marks/{id:020}/"))
    }
    fn mark(&self, id: JobId, mover: &str) -> Vec<u8> {
        self.key(&format!("marks/{id:020}/{mover}"))
    }
    fn all_marks(&self) -> Vec<u8> {
        self.key("marks/")
    }
    fn mover(&self, name: &str) -> Vec<u8> {
        self.key(&format!("movers/{name}"))
    }
    fn movers(&self) -> Vec<u8> {
        self.key("movers/")
    }

    /// Every key (or prefix of keys) of job `id`, to delete it.
    fn all_of(&self, id: JobId) -> [Vec<u8>; 8] {
        [
            self.job(id),
            self.grace(id),
            self.claim(id),
            self.claimed(id),
            self.progress(id),
            self.durable(id),
            self.outcome(id),
            self.marks(id),
        ]
    }

    /// What `key` is; `None` for keys outside the layout.
    fn parse(&self, key: &[u8]) -> Option<Key> {
        let rest = std::str::from_utf8(key).ok()?.strip_prefix(&self.prefix)?;
        if rest == "next" {
            return Some(Key::Next);
        }
        let (kind, rest) = rest.split_once('/')?;
        let id = |s: &str| {
            (s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<JobId>().ok())
                .flatten()
        };
        Some(match kind {
            "jobs" => Key::Job(id(rest)?),
            "grace" => Key::Grace(id(rest)?),
            "claims" => Key::Claim(id(rest)?),
            "claimed" => Key::Claimed(id(rest)?),
            "progress" => Key::Progress(id(rest)?),
            "durable" => Key::Durable(id(rest)?),
            "outcomes" => Key::Outcome(id(rest)?),
            "marks" => {
                let (job, mover) = rest.split_once('/')?;
                Key::Mark(id(job)?, mover.to_owned())
            }
            "movers" if !rest.is_empty() => Key::Mover(rest.to_owned()),
            _ => return None,
        })
    }
}

/// What was read of the table. A key read without its value (keys only) counts by its
/// presence: `exists`, `holder`, `ended`, the marks' names.
#[derive(Debug, Default)]
struct Snapshot {
    jobs: BTreeMap<JobId, Stored>,
    /// The movers alive (their key lives with their lease).
    movers: BTreeSet<String>,
}

/// What was read about one job.
#[derive(Debug, Default)]
struct Stored {
    /// `jobs/<id>` exists.
    exists: bool,
    /// Its spec, when `jobs/<id>` was read with its value.
    spec: Option<JobSpec>,
    /// Submitted less than the grace period ago.
    in_grace: bool,
    /// The holder of its claim (the claim lives as long as the holder's lease).
    holder: Option<String>,
    claims: u32,
    marks: BTreeMap<String, String>,
    progress: Option<Progress>,
    /// The last checkpoint (0 when none was read).
    durable: u64,
    /// `outcomes/<id>` exists.
    ended: bool,
    outcome: Option<Outcome>,
}

impl Snapshot {
    fn from_kvs(keys: &Keys, kvs: &[Kv]) -> std::result::Result<Snapshot, String> {
        let mut snap = Snapshot::default();
        for kv in kvs {
            let Some(key) = keys.parse(&kv.key) else {
                continue;
            };
            let text = || String::from_utf8_lossy(&kv.value).into_owned();
            let jobs = &mut snap.jobs;
            match key {
                Key::Next => {}
                Key::Job(id) => {
                    let record: Option<JobRecord> = decode(kv)?;
                    let s = jobs.entry(id).or_default();
                    s.exists = true;
                    s.spec = record.map(|r| r.spec);
                }
                Key::Grace(id) => jobs.entry(id).or_default().in_grace = true,
                Key::Claim(id) => jobs.entry(id).or_default().holder = Some(text()),
                Key::Claimed(id) => {
                    jobs.entry(id).or_default().claims = kv.version.try_into().unwrap_or(u32::MAX);
                }
                Key::Progress(id) => jobs.entry(id).or_default().progress = decode(kv)?,
                Key::Durable(id) => {
                    let n = text().parse().map_err(|e| format!("durable/{id}: {e}"))?;
                    jobs.entry(id).or_default().durable = n;
                }
                Key::Outcome(id) => {
                    let outcome = decode(kv)?;
                    let s = jobs.entry(id).or_default();
                    s.ended = true;
                    s.outcome = outcome;
                }
                Key::Mark(id, mover) => {
                    jobs.entry(id).or_default().marks.insert(mover, text());
                }
                Key::Mover(name) => {
                    snap.movers.insert(name);
                }
            }
        }
        Ok(snap)
    }
}

/// A JSON value; `None` when it was not read (keys only: a JSON value is never empty).
fn decode<T: serde::de::DeserializeOwned>(kv: &Kv) -> std::result::Result<Option<T>, String> {
    if kv.value.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(&kv.value)
        .map(Some)
        .map_err(|e| format!("{}: {e}", String::from_utf8_lossy(&kv.key)))
}

impl Stored {
    /// Open for `mover`: not ended, not held by another live mover, not marked by `mover`
    /// (a job it holds itself is open to it: see [`JobTable::open_jobs`]).
    fn open_for(&self, mover: &str) -> bool {
        self.exists
            && !self.ended
            && self.holder.as_deref().is_none_or(|h| h == mover)
            && !self.marks.contains_key(mover)
    }

    /// Nobody can serve it any more: no holder, and every live mover marked it, or none is
    /// alive and its grace period is over.
    fn stranded(&self, live: &BTreeSet<String>) -> bool {
        if self.ended || self.holder.is_some() {
            return false;
        }
        if live.is_empty() {
            return !self.in_grace;
        }
        live.iter().all(|m| self.marks.contains_key(m))
    }

    /// How `list` shows it (`None` unless its spec was read).
    fn view(self, id: JobId) -> Option<JobView> {
        let spec = self.spec?;
        let bytes = match (&self.outcome, &self.progress) {
            (Some(Outcome::Done { bytes }), _) => *bytes,
            (_, Some(p)) => p.bytes,
            (_, None) => 0,
        };
        Some(JobView {
            id,
            spec,
            mover: if self.ended { None } else { self.holder },
            path: self.progress.map(|p| p.path),
            bytes,
            durable: self.durable,
            unavailable: self.marks,
            claims: self.claims,
            outcome: self.outcome,
        })
    }
}

#[cfg(test)]
#[path = "etcd_tests.rs"]
mod tests;
