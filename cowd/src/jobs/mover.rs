//! A data mover: takes jobs from the table one at a time, finds a path to each copy target
//! through its initiator ports, copies, and reports.
//!
//! ```text
//!   loop: open_jobs ──> claim (exclusive) ──> may I? (initiator ports of the job's group)
//!            │                                   │ no: unavailable("no initiator port in group G")
//!            │                                   v
//!            │           for each copy target: for port in my ports (in order):
//!            │                                   for path in the target's paths (in order,
//!            │                                   those of this port or of any port): open
//!            │              none opened: unavailable("port -> path: why; ...")  (next mover)
//!            │                                   v
//!            │           resume at the job's checkpoint (block jobs; 0 for a new job)
//!            │           copy in pieces; each piece: lease fresh? claim still mine (progress)?
//!            │              a copy target's path fails mid-copy: the next path, same piece
//!            │              no path left: Failed DeviceFailure
//!            │              every `checkpoint` bytes: flush the destinations, checkpoint
//!            │           flush each block destination (durable before done)
//!            └────────── finish(Done) / finish(Failed)
//! ```
//!
//! The lease: a heartbeat thread renews the mover's lease every third of [`MoverConfig::lease`].
//! The table voids a claim when the lease runs out; the mover stops copying by itself when its
//! last renewal was sent more than half a lease ago (fencing without comparing clocks), so a
//! mover cut off from the table stops before another may take its job over. A job taken over
//! resumes at its last checkpoint: a job with block endpoints only records one every
//! [`MoverConfig::checkpoint`] bytes, after flushing its destinations (what lies before is
//! durable, and its requester may let go of the sources' data there: a backup releases those
//! blocks); the bytes after it are copied again (block copies are idempotent). A job with a
//! stream is never checkpointed: a stream is written anew from the start.

/// Bytes between checkpoints by default: a flush of the destinations every 64 MiB.
pub const CHECKPOINT: u64 = 64 << 20;

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::spec::{EndpointRef, JobError, JobId, JobSpec, Outcome, TransferSpec};
use super::table::JobTable;
use crate::device::{BlockDevice, DeviceError};
use crate::san::copy_targets::{CopyTarget, TargetKind};
use crate::san::paths::{Opened, PathError};
use crate::san::ports::Port;
use crate::stream::reader::StreamReader;
use crate::stream::writer::StreamWriter;

/// The largest piece copied at once.
pub const PIECE: u64 = 1 << 20;

/// The block size streams are written in: every segment length is a multiple of it (the
/// source's logical blocks are 512 or 4096 bytes).
const STREAM_BLOCK: u32 = 512;

/// How a mover runs.
#[derive(Debug, Clone)]
pub struct MoverConfig {
    pub name: String,
    /// Its initiator ports, in the order it tries them; empty: every initiator port.
    pub ports: Vec<String>,
    /// Lease length: a mover silent this long loses its claims.
    pub lease: Duration,
    /// How often it looks for open jobs.
    pub poll: Duration,
    /// Bytes copied between two checkpoints of a block job.
    pub checkpoint: u64,
}

impl MoverConfig {
    pub fn new(name: &str) -> MoverConfig {
        MoverConfig {
            name: name.to_owned(),
            ports: Vec::new(),
            // Half a lease (6 s) outlasts a path's I/O timeout (5 s): see `Lease::fresh`.
            lease: Duration::from_secs(12),
            poll: Duration::from_millis(100),
            checkpoint: CHECKPOINT,
        }
    }
}

/// What a mover reaches: exports, copy targets and their paths, its ports.
pub trait Reach: Send + Sync + Debug {
    /// An export's device (a source or destination), kept in service while the handle lives.
    fn export(&self, name: &str) -> Result<Arc<dyn BlockDevice>, String>;
    /// A configured copy target.
    fn copy_target(&self, name: &str) -> Option<CopyTarget>;
    /// The initiator ports among `names` (all when empty), of `group` when given.
    fn ports(&self, names: &[String], group: Option<&str>) -> Vec<Port>;
    /// Opens one path of a copy target from one port.
    fn open(&self, target: &CopyTarget, path: usize, port: &Port) -> Result<Opened, PathError>;
}

/// A running mover thread (and its heartbeat thread); stops when dropped.
#[derive(Debug)]
pub struct MoverHandle {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    table: Arc<dyn JobTable>,
    name: String,
}

impl MoverHandle {
    /// Stops the mover as if its host died: no more heartbeats, no `leave`, the copy stops at
    /// the next piece. Its claims end when the lease does.
    pub fn crash(mut self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for MoverHandle {
    fn drop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let _ = self.table.leave(&self.name);
    }
}

/// Starts a mover on threads of its own.
pub fn spawn(config: MoverConfig, table: Arc<dyn JobTable>, reach: Arc<dyn Reach>) -> MoverHandle {
    let stop = Arc::new(AtomicBool::new(false));
    let lease = Lease {
        ttl: config.lease,
        renewed: Mutex::new(None),
    };
    let mover = Arc::new(Mover {
        config: config.clone(),
        table: table.clone(),
        reach,
        stop: stop.clone(),
        lease,
    });
    // Registered before this returns: a job submitted next finds the mover alive.
    mover.renew();
    let beat = {
        let m = mover.clone();
        std::thread::Builder::new()
            .name(format!("lease-{}", config.name))
            .spawn(move || m.heartbeats())
            .expect("spawn a thread")
    };
    let work = {
        let m = mover.clone();
        std::thread::Builder::new()
            .name(format!("mover-{}", config.name))
            .spawn(move || m.work())
            .expect("spawn a thread")
    };
    MoverHandle {
        stop,
        threads: vec![beat, work],
        table,
        name: config.name,
    }
}

#[derive(Debug)]
struct Lease {
    ttl: Duration,
    /// When the last renewal that succeeded was sent.
    renewed: Mutex<Option<Instant>>,
}

impl Lease {
    /// The lease is safely ours: renewed less than half a lease ago.
    fn fresh(&self) -> bool {
        self.renewed
            .lock()
            .unwrap()
            .is_some_and(|at| at.elapsed() < self.ttl / 2)
    }
}

#[derive(Debug)]
struct Mover {
    config: MoverConfig,
    table: Arc<dyn JobTable>,
    reach: Arc<dyn Reach>,
    stop: Arc<AtomicBool>,
    lease: Lease,
}

/// A copy target opened for a job.
#[derive(Debug)]
struct Reached {
    target: CopyTarget,
    /// Index of the path in use, and the port it was opened from.
    path: usize,
    port: Port,
    opened: Opened,
    /// Paths that failed during this job (not tried again).
    failed: Vec<(usize, String)>,
}

impl Reached {
    fn describe(&self) -> String {
        format!(
            "{} -> {}",
            self.port.name, self.target.paths[self.path].spec
        )
    }
}

/// Why a job stopped before its end.
enum Stop {
    /// The mover cannot serve it: the next mover may.
    Unavailable(String),
    /// The claim or the lease is gone: another mover has or will have the job.
    Lost,
    /// It failed for good.
    Failed(Outcome),
}

impl Stop {
    /// The job failed for good at `segment` (`source`: on its source side).
    fn failed(error: JobError, segment: u16, source: bool, reason: String) -> Stop {
        Stop::Failed(Outcome::Failed {
            error,
            segment,
            source,
            reason,
        })
    }
}

impl Mover {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn heartbeats(&self) {
        let every = self.config.lease / 3;
        while !self.stopping() {
            sleep_unless(&self.stop, every);
            if !self.stopping() {
                self.renew();
            }
        }
    }

    fn renew(&self) {
        let sent = Instant::now();
        match self.table.heartbeat(&self.config.name, self.config.lease) {
            Ok(()) => *self.lease.renewed.lock().unwrap() = Some(sent),
            Err(e) => warn!(mover = %self.config.name, error = %e, "lease not renewed"),
        }
    }

    fn work(&self) {
        let name = &self.config.name;
        while !self.stopping() {
            if self.lease.fresh() {
                match self.table.open_jobs(name) {
                    Ok(jobs) => {
                        for (id, spec) in jobs {
                            if self.stopping() {
                                break;
                            }
                            match self.table.claim(id, name) {
                                Ok(true) => self.serve(id, &spec),
                                Ok(false) => {}
                                Err(e) => warn!(mover = %name, error = %e, "cannot claim"),
                            }
                        }
                    }
                    Err(e) => warn!(mover = %name, error = %e, "cannot read the job table"),
                }
            }
            sleep_unless(&self.stop, self.config.poll);
        }
    }

    /// Runs a job this mover has claimed.
    fn serve(&self, id: JobId, spec: &JobSpec) {
        let name = &self.config.name;
        debug!(mover = %name, job = id, origin = %spec.origin, "claimed");
        let result = self.run(id, spec);
        let table = &self.table;
        let reported = match result {
            Ok(bytes) => {
                info!(mover = %name, job = id, bytes, "copy done");
                table.finish(id, name, Outcome::Done { bytes }).map(|_| ())
            }
            Err(Stop::Unavailable(why)) => {
                info!(mover = %name, job = id, reason = %why, "unavailable for this job");
                table.unavailable(id, name, &why)
            }
            Err(Stop::Lost) => {
                warn!(mover = %name, job = id, "lost the job (lease or claim): stopped copying");
                Ok(())
            }
            Err(Stop::Failed(outcome)) => {
                if let Outcome::Failed { reason, .. } = &outcome {
                    warn!(mover = %name, job = id, reason = %reason, "copy failed");
                }
                table.finish(id, name, outcome).map(|_| ())
            }
        };
        if let Err(e) = reported {
            warn!(mover = %name, job = id, error = %e, "cannot report to the job table");
        }
    }

    fn run(&self, id: JobId, spec: &JobSpec) -> Result<u64, Stop> {
        let ports = self.reach.ports(&self.config.ports, spec.group.as_deref());
        if ports.is_empty() {
            return Err(Stop::Unavailable(match &spec.group {
                Some(g) => format!("no initiator port in group {g}"),
                None => "no initiator port".into(),
            }));
        }
        let mut reached = HashMap::new();
        for name in spec.copy_targets() {
            let r = self.reach_target(name, &ports, &[])?;
            reached.insert(name.to_owned(), r);
        }
        let mut exports = HashMap::new();
        for t in &spec.transfers {
            for e in [&t.src, &t.dst] {
                if let EndpointRef::Export(name) = e
                    && !exports.contains_key(name)
                {
                    let dev = self
                        .reach
                        .export(name)
                        .map_err(|why| Stop::Unavailable(format!("export {name}: {why}")))?;
                    exports.insert(name.clone(), dev);
                }
            }
        }
        let mut job = Running {
            mover: self,
            id,
            ports: &ports,
            reached,
            path: String::new(),
            exports,
            bytes: 0,
            durable: 0,
            checkpoints: false,
            buffer: Vec::new(),
            carried: &spec.carried,
            writers: HashMap::new(),
            readers: HashMap::new(),
        };
        job.describe_paths();
        let streams =
            (spec.transfers.iter()).any(|t| job.is_stream(&t.src) || job.is_stream(&t.dst));
        if !streams {
            // Unreadable: stop rather than copy from the start what may be gone already.
            job.durable = self.table.resume_at(id).map_err(|_| Stop::Lost)?;
            job.checkpoints = true;
            if job.durable > 0 {
                info!(mover = %self.config.name, job = id, durable = job.durable, "resuming at the job's checkpoint");
            }
        }
        for t in &spec.transfers {
            job.transfer(t, spec)?;
        }
        job.finish_streams()?;
        job.flush(spec)?;
        Ok(job.bytes)
    }

    /// Finds a path to copy target `name`: each port in order, each of the target's paths in
    /// order (those tied to that port or to none), skipping paths in `skip`.
    fn reach_target(&self, name: &str, ports: &[Port], skip: &[usize]) -> Result<Reached, Stop> {
        let target = self
            .reach
            .copy_target(name)
            .ok_or_else(|| Stop::Unavailable(format!("copy target {name} is not configured")))?;
        let mut tried = Vec::new();
        for port in ports {
            for (i, path) in target.paths.iter().enumerate() {
                if skip.contains(&i) || path.port.as_ref().is_some_and(|p| p != &port.name) {
                    continue;
                }
                match self.reach.open(&target, i, port) {
                    Ok(opened) => {
                        if let Err(why) = fits(&target, &opened) {
                            tried.push(format!("{} -> {}: {why}", port.name, path.spec));
                            continue;
                        }
                        debug!(mover = %self.config.name, target = name, port = %port.name,
                            path = %path.spec, "path opened");
                        return Ok(Reached {
                            target,
                            path: i,
                            port: port.clone(),
                            opened,
                            failed: Vec::new(),
                        });
                    }
                    Err(e) => {
                        info!(mover = %self.config.name, target = name, port = %port.name,
                            path = %path.spec, error = %e.message, "path not reached; trying the next");
                        tried.push(format!("{} -> {}: {}", port.name, path.spec, e.message));
                    }
                }
            }
        }
        if tried.is_empty() {
            tried.push("no path from this mover's initiator ports".into());
        }
        Err(Stop::Unavailable(format!(
            "copy target {name} not reached: {}",
            tried.join("; ")
        )))
    }
}

/// An opened path is of the target's kind.
fn fits(target: &CopyTarget, opened: &Opened) -> Result<(), String> {
    match (target.kind, opened) {
        (TargetKind::Block, Opened::Block(_)) | (TargetKind::Stream, Opened::Stream { .. }) => {
            Ok(())
        }
        (TargetKind::Block, Opened::Stream { .. }) => {
            Err("a stream, the target is a block device".into())
        }
        (TargetKind::Stream, Opened::Block(_)) => {
            Err("a block device, the target is a stream".into())
        }
    }
}

/// One job being copied by one mover.
struct Running<'a> {
    mover: &'a Mover,
    id: JobId,
    ports: &'a [Port],
    reached: HashMap<String, Reached>,
    /// The paths in use, as progress reports them (`PORT -> PATH, ...`; `local` for none):
    /// described when a path is reached, not for every piece.
    path: String,
    exports: HashMap<String, Arc<dyn BlockDevice>>,
    /// Bytes of the job's transfers, in order, copied (or durable before this mover).
    bytes: u64,
    /// The job's last checkpoint.
    durable: u64,
    /// The job is checkpointed (block endpoints only).
    checkpoints: bool,
    buffer: Vec<u8>,
    /// The bytes the job carries, which [`EndpointRef::Inline`] sources read.
    carried: &'a [u8],
    /// Streams being written, by copy target (finished when the job is).
    writers: HashMap<String, StreamWriter>,
    /// Streams being read, by copy target, with bytes read but not used yet.
    readers: HashMap<String, (StreamReader, Vec<u8>)>,
}

impl Running<'_> {
    /// Describes the paths in use again (after one was reached).
    fn describe_paths(&mut self) {
        let paths: Vec<String> = self.reached.values().map(Reached::describe).collect();
        self.path = if paths.is_empty() {
            "local".into()
        } else {
            paths.join(", ")
        };
    }

    fn transfer(&mut self, t: &TransferSpec, spec: &JobSpec) -> Result<(), Stop> {
        if self.is_stream(&t.dst) {
            return self.write_stream(t, spec);
        }
        if self.is_stream(&t.src) {
            return self.read_stream(t);
        }
        // What a checkpoint says is durable already.
        let mut done = self.durable.saturating_sub(self.bytes).min(t.bytes);
        self.bytes += done;
        while done < t.bytes {
            if self.checkpoints && self.bytes - self.durable >= self.mover.config.checkpoint {
                self.checkpoint(spec)?;
            }
            let len = PIECE.min(t.bytes - done) as usize;
            self.check()?;
            let mut buf = std::mem::take(&mut self.buffer);
            buf.resize(len, 0);
            let result = self
                .read(t, &mut buf, t.src_offset + done)
                .and_then(|()| self.write(t, &buf, t.dst_offset + done));
            self.buffer = buf;
            result?;
            done += len as u64;
            self.bytes += len as u64;
        }
        Ok(())
    }

    /// Flushes every block destination once, so that a job is done only when its data is
    /// durable (a path that fails here fails over like a write).
    fn flush(&mut self, spec: &JobSpec) -> Result<(), Stop> {
        let mut flushed: Vec<&EndpointRef> = Vec::new();
        for t in &spec.transfers {
            if flushed.contains(&&t.dst) || self.is_stream(&t.dst) {
                continue;
            }
            flushed.push(&t.dst);
            self.check()?;
            self.io(&t.dst, t.segment, false, |dev| dev.flush())?;
        }
        Ok(())
    }

    /// Makes what was copied durable, then records it as the job's checkpoint.
    fn checkpoint(&mut self, spec: &JobSpec) -> Result<(), Stop> {
        self.flush(spec)?;
        let name = &self.mover.config.name;
        match self.mover.table.checkpoint(self.id, name, self.bytes) {
            Ok(true) => {
                debug!(mover = %name, job = self.id, durable = self.bytes, "checkpoint");
                self.durable = self.bytes;
                Ok(())
            }
            Ok(false) | Err(_) => Err(Stop::Lost),
        }
    }

    /// The lease is fresh and the claim still ours; progress recorded.
    fn check(&self) -> Result<(), Stop> {
        if self.mover.stopping() || !self.mover.lease.fresh() {
            return Err(Stop::Lost);
        }
        match self
            .mover
            .table
            .progress(self.id, &self.mover.config.name, self.bytes, &self.path)
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(Stop::Lost),
            // The table is unreachable: stop; the lease decides who goes on.
            Err(_) => Err(Stop::Lost),
        }
    }

    fn read(&mut self, t: &TransferSpec, buf: &mut [u8], offset: u64) -> Result<(), Stop> {
        let (segment, ep) = (t.segment, &t.src);
        if *ep == EndpointRef::Inline {
            let range = usize::try_from(offset).ok().and_then(|start| {
                let end = start.checked_add(buf.len())?;
                self.carried.get(start..end)
            });
            let Some(bytes) = range else {
                let reason = format!("{ep} holds no {} bytes at {offset}", buf.len());
                return Err(Stop::failed(JobError::DeviceFailure, segment, true, reason));
            };
            buf.copy_from_slice(bytes);
            return Ok(());
        }
        self.io(ep, segment, true, |dev| dev.read_at(buf, offset))
    }

    fn write(&mut self, t: &TransferSpec, buf: &[u8], offset: u64) -> Result<(), Stop> {
        let (segment, ep) = (t.segment, &t.dst);
        self.io(ep, segment, false, |dev| dev.write_at(buf, offset, false))
    }

    /// Runs `op` on `ep`'s device; when a copy target's path fails, fails over to its next
    /// path and runs `op` again.
    fn io(
        &mut self,
        ep: &EndpointRef,
        segment: u16,
        source: bool,
        mut op: impl FnMut(&dyn BlockDevice) -> Result<(), DeviceError>,
    ) -> Result<(), Stop> {
        let failed = |reason| Stop::failed(JobError::DeviceFailure, segment, source, reason);
        match ep {
            EndpointRef::Export(name) => {
                let dev = &self.exports[name];
                op(dev.as_ref()).map_err(|e| failed(format!("export {name}: {e}")))
            }
            EndpointRef::Inline => Err(Stop::failed(
                JobError::DeviceType,
                segment,
                source,
                format!("{ep} is a source only, and read whole"),
            )),
            EndpointRef::CopyTarget(name) => loop {
                let r = self.reached.get_mut(name).expect("reached before copying");
                let Opened::Block(dev) = &r.opened else {
                    return Err(Stop::failed(
                        JobError::DeviceType,
                        segment,
                        source,
                        format!("copy target {name} is a stream"),
                    ));
                };
                let e = match op(dev.as_ref()) {
                    Ok(()) => return Ok(()),
                    Err(e) => e,
                };
                let what = format!("{}: {e}", r.describe());
                warn!(mover = %self.mover.config.name, job = self.id, target = %name,
                    error = %what, "path failed; trying the next");
                let mut failed_paths = std::mem::take(&mut r.failed);
                failed_paths.push((r.path, what));
                let skip: Vec<usize> = failed_paths.iter().map(|(i, _)| *i).collect();
                match self.mover.reach_target(name, self.ports, &skip) {
                    Ok(mut next) => {
                        next.failed = failed_paths;
                        self.reached.insert(name.clone(), next);
                        self.describe_paths();
                    }
                    Err(_) => {
                        let all: Vec<String> = failed_paths.into_iter().map(|(_, w)| w).collect();
                        return Err(failed(format!(
                            "copy target {name}: every path failed: {}",
                            all.join("; ")
                        )));
                    }
                }
            },
        }
    }
}

#[path = "mover_streams.rs"]
mod streams;

/// Sleeps `d`, waking early when `stop` is set.
fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while !stop.load(Ordering::Acquire) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(20)));
    }
}

#[cfg(test)]
#[path = "mover_tests.rs"]
mod tests;
