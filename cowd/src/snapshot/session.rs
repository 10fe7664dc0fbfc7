//! [`Session`]: one backup of one export, from its snapshot point to its end.
//!
//! ```text
//!   Running ──mover done──> Done
//!      │ ──error / overflow policy──> Failed (reason)
//!      └──cancel──> Cancelled
//! ```
//!
//! The session owns the pending set, the block locks and the container. Writers call
//! [`Session::copy_before_write`] for the blocks they touch; the mover (see `crate::mover`)
//! claims the rest. Any end other than Done drops the pending set at once, so writers stop
//! paying for the backup immediately; a failure never fails a write (invariant 5).

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use cowd_api::units::thousandths;
use roaring::RoaringBitmap;
use tracing::{info, warn};

use super::container::Container;
use super::locks::BlockLocks;
use super::pending::PendingSet;
use crate::device::{BlockDevice, IoBuf};
use crate::targets::BackupTarget;

pub use cowd_api::backups::{BackupState as State, BackupStatus as Report, OnOverflow};

/// Throttling and scheduling knobs of a session.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Fill ratio above which writes needing a copy are delayed.
    pub high_watermark: f64,
    /// Fill ratio above which the mover drains the container before copying pending blocks.
    pub low_watermark: f64,
    /// Longest delay of one write at a full-but-not-overflowing container.
    pub max_delay: Duration,
    pub cbw_timeout: Duration,
    pub on_overflow: OnOverflow,
    /// Pending neighbours of a copied block that the mover takes early (0 = off).
    pub neighbours: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            high_watermark: 0.75,
            low_watermark: 0.10,
            max_delay: Duration::from_millis(50),
            cbw_timeout: Duration::from_secs(30),
            on_overflow: OnOverflow::FailBackup,
            neighbours: 0,
        }
    }
}

impl Policy {
    /// Checks the watermarks (ratios; shown as percentages, the unit operators type).
    pub fn check(&self) -> Result<(), String> {
        let (high, low) = (self.high_watermark, self.low_watermark);
        let pct = |r: f64| format!("{}%", (r * 1e4).round() / 100.0);
        if !(high > 0.0 && high <= 1.0) {
            return Err(format!(
                "high watermark {}: must be above 0% and at most 100%",
                pct(high)
            ));
        }
        if !(0.0..1.0).contains(&low) {
            return Err(format!(
                "low watermark {}: must be at least 0% and below 100%",
                pct(low)
            ));
        }
        if low >= high {
            return Err(format!(
                "low watermark {} must be below the high watermark {}",
                pct(low),
                pct(high)
            ));
        }
        Ok(())
    }
}

/// The states in the order of their codes in [`Session`]'s `AtomicU8` (0 = running): the one
/// mapping, both ways. `State` is the API's type, so the codes live here.
const STATE_CODES: [State; 4] = [State::Running, State::Done, State::Failed, State::Cancelled];

fn state_code(s: State) -> u8 {
    STATE_CODES
        .iter()
        .position(|&c| c == s)
        .expect("every state has a code") as u8
}

fn state_of(code: u8) -> State {
    STATE_CODES[usize::from(code)]
}

/// Counters of a session (all monotonic).
#[derive(Debug, Default)]
pub struct Stats {
    pub cbw_copies: AtomicU64,
    pub throttled_writes: AtomicU64,
    pub throttle_ns: AtomicU64,
    pub waited_writes: AtomicU64,
    pub wait_ns: AtomicU64,
    pub blocks_done: AtomicU64,
    pub bytes_moved: AtomicU64,
}

/// Everything fixed at the snapshot point.
#[derive(Debug)]
pub struct Setup {
    pub id: String,
    pub export: String,
    pub size: u64,
    pub block_size: u32,
    pub pending: RoaringBitmap,
    /// Blocks known to read as zeroes at T (holes): recorded without reading.
    pub zeroes: RoaringBitmap,
    pub container: Container,
    pub target: Arc<dyn BackupTarget>,
    pub policy: Policy,
    pub snapshot_time: SystemTime,
    /// How long writes were held to take the snapshot point.
    pub setup: Duration,
    /// How the snapshot point was quiesced (for the report).
    pub quiesce: String,
}

/// One backup in progress or ended.
///
/// Locks: the pending set and the container have their own internal locks; `locks` holds one
/// lock per block (taken in ascending block order; a writer reserves its container slot
/// before it takes a block lock, so no block lock is held while waiting for space). Every
/// `Mutex` field covers only itself and is held only for the access, never while another of
/// the session's locks is taken, except a block lock, which may be held while the pending set
/// and the container are touched (that is what makes a claim and a copy atomic).
#[derive(Debug)]
pub struct Session {
    pub id: String,
    /// Blocks the target does not need; saved copies of them are dropped by the mover.
    pub skip: Mutex<RoaringBitmap>,
    /// Blocks the target will receive (pending + zeroes + saved copies it needs).
    expected: AtomicU64,
    /// Blocks to read from the device at T (after any narrowing).
    to_copy: AtomicU64,
    /// The export's change map as it was at T (set by the snapshot point).
    pub cbt_at_t: Mutex<Option<super::cbt::Checkpoint>>,
    pub export: String,
    pub size: u64,
    pub block_size: u32,
    pub blocks_total: u64,
    pub pending: PendingSet,
    pub zeroes: Mutex<RoaringBitmap>,
    pub locks: BlockLocks,
    pub container: Container,
    pub target: Arc<dyn BackupTarget>,
    pub policy: Policy,
    pub stats: Stats,
    pub snapshot_time: SystemTime,
    setup_ns: AtomicU64,
    pub quiesce: String,
    started: Instant,
    /// One of [`STATE_CODES`]; changes once, from running to how it ended.
    state: AtomicU8,
    /// Set once, right after `state` leaves `Running`; covered by its own lock, which is
    /// never held while another lock of the session is taken.
    end: Mutex<Option<Ended>>,
    /// Signalled when `end` is set.
    ended: Condvar,
    /// Ranges the mover takes first; its own lock, held only to push or pop.
    priority: Mutex<VecDeque<Range<u32>>>,
    /// With `--freeze`: when the filesystem was frozen and thawed (T lies between).
    freeze: Mutex<Option<FreezeWindow>>,
}

/// How a session ended.
#[derive(Debug, Clone)]
struct Ended {
    /// Why it failed or was cancelled (empty when done).
    reason: String,
    at: SystemTime,
    /// From the start to the end.
    elapsed: Duration,
}

/// When the filesystem was frozen and thawed around T.
#[derive(Debug, Clone, Copy)]
struct FreezeWindow {
    frozen: SystemTime,
    thawed: SystemTime,
}

/// The report of a session being started (before T), for the crash record: a constructor of
/// the API's type that only the daemon needs.
pub trait StartingReport {
    fn starting(
        id: &str,
        export: &str,
        target: &str,
        container: Option<&std::path::Path>,
        block_size: u32,
    ) -> Report;
}

impl StartingReport for Report {
    fn starting(
        id: &str,
        export: &str,
        target: &str,
        container: Option<&std::path::Path>,
        block_size: u32,
    ) -> Report {
        Report {
            id: id.to_owned(),
            export: export.to_owned(),
            state: State::Running,
            reason: None,
            target: target.to_owned(),
            snapshot_time: rfc3339(SystemTime::now()),
            ended_time: None,
            quiesce: "starting".into(),
            setup_ms: 0.0,
            block_size,
            blocks_total: 0,
            blocks_done: 0,
            repo: None,
            container_path: container.map(|p| p.display().to_string()),
            container_slots: 0,
            container_used: 0,
            container_peak: 0,
            copies_before_write: 0,
            throttled_writes: 0,
            throttle_delay_ms: 0.0,
            waited_writes: 0,
            wait_ms: 0.0,
            moved_bytes: 0,
            elapsed_s: 0.0,
            mover_mib_s: 0.0,
            eta_s: None,
            frozen_at: None,
            thawed_at: None,
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

impl Session {
    pub fn new(s: Setup) -> Session {
        let blocks_total = s.size.div_ceil(u64::from(s.block_size));
        Session {
            id: s.id,
            export: s.export,
            size: s.size,
            block_size: s.block_size,
            blocks_total,
            pending: PendingSet::new(s.pending),
            zeroes: Mutex::new(s.zeroes),
            locks: BlockLocks::default(),
            container: s.container,
            target: s.target,
            policy: s.policy,
            stats: Stats::default(),
            snapshot_time: s.snapshot_time,
            setup_ns: AtomicU64::new(s.setup.as_nanos() as u64),
            quiesce: s.quiesce,
            started: Instant::now(),
            state: AtomicU8::new(state_code(State::Running)),
            end: Mutex::new(None),
            ended: Condvar::new(),
            priority: Mutex::new(VecDeque::new()),
            freeze: Mutex::new(None),
            cbt_at_t: Mutex::new(None),
            skip: Mutex::new(RoaringBitmap::new()),
            expected: AtomicU64::new(blocks_total),
            to_copy: AtomicU64::new(0),
        }
    }

    /// Records the window during which the filesystem was frozen around T.
    pub fn set_freeze_window(&self, from: SystemTime, to: SystemTime) {
        *self.freeze.lock().unwrap() = Some(FreezeWindow {
            frozen: from,
            thawed: to,
        });
    }

    /// Narrows the backup after T, before the mover starts: only blocks in `wanted` go to the
    /// target; those of them in `free` are recorded as zeroes instead of read. Copies already
    /// saved for unwanted or free blocks are dropped by the mover.
    pub fn restrict(&self, wanted: &RoaringBitmap, free: &RoaringBitmap) {
        let mut all = RoaringBitmap::new();
        all.insert_range(0..self.blocks_total as u32);
        let mut skip = all - wanted;
        skip |= free;
        let mut zeroes = self.zeroes.lock().unwrap();
        *zeroes &= wanted;
        *zeroes |= &(wanted & free);
        self.pending.retain(|b| !skip.contains(b));
        let saved = self
            .container
            .queued_blocks()
            .into_iter()
            .filter(|b| !skip.contains(*b))
            .count();
        let expected = self.pending.len() + zeroes.len() + saved as u64;
        drop(zeroes);
        self.expected.store(expected, Ordering::Relaxed);
        self.to_copy
            .store(self.pending.len() + saved as u64, Ordering::Relaxed);
        *self.skip.lock().unwrap() = skip;
    }

    /// Fixes the counts at T (called by the snapshot point while writes are held).
    pub fn count_at_t(&self) {
        let pending = self.pending.len();
        let zeroes = self.zeroes.lock().unwrap().len();
        self.expected.store(pending + zeroes, Ordering::Relaxed);
        self.to_copy.store(pending, Ordering::Relaxed);
    }

    /// Blocks to read from the device (or the container) for the backup.
    pub fn blocks_to_copy(&self) -> u64 {
        self.to_copy.load(Ordering::Relaxed)
    }

    /// Blocks the target receives in all.
    pub fn expected_blocks(&self) -> u64 {
        self.expected.load(Ordering::Relaxed)
    }

    /// Records how long writes were held to take T.
    pub fn set_setup(&self, d: Duration) {
        self.setup_ns.store(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// How long writes were held to take T.
    pub fn setup(&self) -> Duration {
        Duration::from_nanos(self.setup_ns.load(Ordering::Relaxed))
    }

    pub fn state(&self) -> State {
        state_of(self.state.load(Ordering::Acquire))
    }

    pub fn running(&self) -> bool {
        self.state() == State::Running
    }

    /// Byte range of block `b` (the last block may be short).
    pub fn block_extent(&self, b: u32) -> (u64, usize) {
        let off = u64::from(b) * u64::from(self.block_size);
        (
            off,
            (self.size - off).min(u64::from(self.block_size)) as usize,
        )
    }

    /// First and last block touched by `len > 0` bytes at `offset`.
    pub fn block_range(&self, offset: u64, len: u64) -> (u32, u32) {
        let bs = u64::from(self.block_size);
        ((offset / bs) as u32, ((offset + len - 1) / bs) as u32)
    }

    /// Ends the session in `state` (once); false if it had already ended.
    fn end(&self, state: State, reason: String) -> bool {
        if state == State::Running {
            return false;
        }
        let (from, to) = (state_code(State::Running), state_code(state));
        if self
            .state
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        if state != State::Done {
            self.pending.clear();
            self.zeroes.lock().unwrap().clear();
        }
        *self.end.lock().unwrap() = Some(Ended {
            reason,
            at: SystemTime::now(),
            elapsed: self.started.elapsed(),
        });
        self.container.wake_all();
        self.ended.notify_all();
        true
    }

    /// Fails the backup with `reason` (writes are never affected).
    pub fn fail(&self, reason: impl Into<String>) {
        let reason = reason.into();
        if self.end(State::Failed, reason.clone()) {
            warn!(session = %self.id, export = %self.export, %reason, "backup failed");
        }
    }

    /// Cancels the backup.
    pub fn cancel(&self) -> bool {
        let done = self.end(State::Cancelled, "cancelled by the operator".into());
        if done {
            info!(session = %self.id, export = %self.export, "backup cancelled");
        }
        done
    }

    /// Marks the backup complete (called by the mover once the target has everything).
    pub fn complete(&self) {
        if self.end(State::Done, String::new()) {
            info!(session = %self.id, export = %self.export, elapsed = ?self.started.elapsed(), "backup complete");
        }
    }

    /// Waits until the session ends or `timeout` passes; returns the state.
    pub fn wait(&self, timeout: Duration) -> State {
        let end = self.end.lock().unwrap();
        drop(
            self.ended
                .wait_timeout_while(end, timeout, |e| e.is_none())
                .unwrap(),
        );
        self.state()
    }

    /// Moves `blocks` to the front of the mover's schedule.
    pub fn prioritize(&self, blocks: Range<u32>) {
        let mut q = self.priority.lock().unwrap();
        if q.len() < 4096 {
            q.push_back(blocks);
        }
    }

    /// The next prioritized range with a pending block in it, trimmed to start there.
    pub fn next_priority(&self) -> Option<Range<u32>> {
        let mut q = self.priority.lock().unwrap();
        while let Some(r) = q.front_mut() {
            match (r.start..r.end).find(|b| self.pending.contains(*b)) {
                Some(b) => {
                    r.start = b;
                    return Some(r.clone());
                }
                None => {
                    q.pop_front();
                }
            }
        }
        None
    }

    /// Delays a write that needs copies while the container is above the high watermark.
    fn throttle(&self) {
        let fill = self.container.fill().ratio();
        let high = self.policy.high_watermark;
        if fill <= high || high >= 1.0 {
            return;
        }
        let share = ((fill - high) / (1.0 - high)).min(1.0);
        let d = self.policy.max_delay.mul_f64(share);
        std::thread::sleep(d);
        self.stats.throttled_writes.fetch_add(1, Ordering::Relaxed);
        self.stats
            .throttle_ns
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// A free container slot, waiting for the mover when full; `None` if the session ended
    /// (including by the overflow policy).
    fn reserve_slot(&self) -> Option<u32> {
        let mut waited = None;
        let slot = loop {
            if !self.running() {
                break None;
            }
            if let Some(s) = self.container.try_reserve() {
                break Some(s);
            }
            let start = *waited.get_or_insert_with(Instant::now);
            if self.container.wait_space(start + self.policy.cbw_timeout) {
                continue;
            }
            match self.policy.on_overflow {
                OnOverflow::FailBackup => {
                    let f = self.container.fill();
                    self.fail(format!(
                        "container full ({} of {} blocks) for longer than the cbw-timeout of {:?}; \
                         on-overflow=fail-backup let writes go on without the backup",
                        f.used, f.slots, self.policy.cbw_timeout
                    ));
                }
                OnOverflow::BlockWrites => {
                    warn!(session = %self.id, "container full; writes keep waiting (on-overflow=block-writes)");
                    waited = Some(Instant::now());
                }
            }
        };
        if let Some(start) = waited {
            self.stats.waited_writes.fetch_add(1, Ordering::Relaxed);
            self.stats
                .wait_ns
                .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        slot
    }

    /// The T content of `blocks` is durable at the backup's destination (a copy job's
    /// checkpoint): they leave the pending set, so writes to them copy nothing any more, and
    /// the container lets go of their saved copies. Reading them through the snapshot view
    /// fails from now on: nobody may need them again.
    pub fn release(&self, blocks: Range<u32>) {
        if blocks.is_empty() {
            return;
        }
        for b in self.pending.in_range(blocks.start, blocks.end - 1) {
            let _held = self.locks.lock(b);
            self.pending.remove(b);
        }
        for (b, slot) in self.container.take_range(blocks) {
            let _held = self.locks.lock(b);
            self.container.release(slot);
        }
    }

    /// True when a write of `len` bytes at `offset` touches a pending block.
    pub fn needs_copy(&self, offset: u64, len: u64) -> bool {
        let (first, last) = self.block_range(offset, len);
        self.running() && self.pending.any_in(first, last)
    }

    /// Claims, of the blocks in `blocks` that the caller has just read off the device without
    /// any lock, those still pending: each leaves the pending set under its block lock. The
    /// data read for a claimed block is its content at T, because a writer removes a pending
    /// block from the set under the same lock before it writes (see `copy_before_write`); a
    /// block no longer pending was saved in the container or written since, and is not
    /// claimed. Hence the mover never holds a block lock during I/O.
    pub fn claim_read(&self, blocks: Range<u32>) -> impl Iterator<Item = u32> + '_ {
        blocks.filter(|&b| {
            let _held = self.locks.lock(b);
            self.pending.remove(b)
        })
    }

    /// Saves the T content of every pending block in the range into the container, so the
    /// caller may then overwrite it. Blocks the mover or another writer took are skipped.
    pub fn copy_before_write(&self, dev: &dyn BlockDevice, offset: u64, len: u64) {
        if !self.running() {
            return;
        }
        let (first, last) = self.block_range(offset, len);
        let blocks = self.pending.in_range(first, last);
        if blocks.is_empty() {
            return;
        }
        self.throttle();
        for b in blocks {
            let Some(slot) = self.reserve_slot() else {
                return;
            };
            let _held = self.locks.lock(b);
            if !self.pending.contains(b) {
                self.container.release(slot);
                continue;
            }
            let (off, n) = self.block_extent(b);
            let mut buf = IoBuf::new(n);
            if let Err(e) = dev.read_at(&mut buf, off) {
                self.container.release(slot);
                return self.fail(format!("reading block {b} for copy-before-write: {e}"));
            }
            if let Err(e) = self.container.store(slot, b, &buf) {
                return self.fail(format!("saving block {b} in the container: {e}"));
            }
            self.pending.remove(b);
            self.stats.cbw_copies.fetch_add(1, Ordering::Relaxed);
            if self.policy.neighbours > 0 {
                let end = b.saturating_add(1).saturating_add(self.policy.neighbours);
                self.prioritize(b.saturating_add(1)..end);
            }
        }
    }

    /// The byte ranges of `offset..offset+len` whose blocks are not pending (a TRIM may
    /// discard those; it leaves pending blocks alone, trim being only a hint).
    pub fn unpending_segments(&self, offset: u64, len: u64) -> Vec<(u64, u64)> {
        let end = offset + len;
        if !self.running() {
            return vec![(offset, len)];
        }
        let (first, last) = self.block_range(offset, len);
        let pending = self.pending.in_range(first, last);
        if pending.is_empty() {
            return vec![(offset, len)];
        }
        let bs = u64::from(self.block_size);
        let mut out = Vec::new();
        let mut at = offset;
        for b in pending {
            let (bstart, bend) = (u64::from(b) * bs, (u64::from(b) + 1) * bs);
            if bstart > at {
                out.push((at, bstart.min(end) - at));
            }
            at = at.max(bend);
        }
        if at < end {
            out.push((at, end - at));
        }
        out
    }

    /// The report the control API shows.
    pub fn report(&self) -> Report {
        let freeze = *self.freeze.lock().unwrap();
        let s = &self.stats;
        let f = self.container.fill();
        let end = self.end.lock().unwrap().clone();
        let elapsed = end
            .as_ref()
            .map(|e| e.elapsed)
            .unwrap_or_else(|| self.started.elapsed());
        let moved = s.bytes_moved.load(Ordering::Relaxed);
        let done = s.blocks_done.load(Ordering::Relaxed);
        let rate = moved as f64 / elapsed.as_secs_f64().max(1e-3);
        let total = self.expected_blocks();
        let left = total.saturating_sub(done) as f64 * f64::from(self.block_size);
        let running = self.running();
        Report {
            id: self.id.clone(),
            export: self.export.clone(),
            state: self.state(),
            reason: end
                .as_ref()
                .map(|e| e.reason.clone())
                .filter(|r| !r.is_empty()),
            target: self.target.describe(),
            snapshot_time: rfc3339(self.snapshot_time),
            ended_time: end.as_ref().map(|e| rfc3339(e.at)),
            quiesce: self.quiesce.clone(),
            setup_ms: thousandths(self.setup().as_secs_f64() * 1e3),
            block_size: self.block_size,
            blocks_total: total,
            blocks_done: done,
            repo: self.target.repository().map(|p| p.display().to_string()),
            container_path: self.container.path().map(|p| p.display().to_string()),
            container_slots: f.slots,
            container_used: f.used,
            container_peak: f.peak,
            copies_before_write: s.cbw_copies.load(Ordering::Relaxed),
            throttled_writes: s.throttled_writes.load(Ordering::Relaxed),
            throttle_delay_ms: thousandths(s.throttle_ns.load(Ordering::Relaxed) as f64 / 1e6),
            waited_writes: s.waited_writes.load(Ordering::Relaxed),
            wait_ms: thousandths(s.wait_ns.load(Ordering::Relaxed) as f64 / 1e6),
            moved_bytes: moved,
            elapsed_s: thousandths(elapsed.as_secs_f64()),
            mover_mib_s: thousandths(rate / f64::from(1 << 20)),
            eta_s: (running && rate > 0.0).then(|| thousandths(left / rate)),
            frozen_at: freeze.map(|f| rfc3339(f.frozen)),
            thawed_at: freeze.map(|f| rfc3339(f.thawed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Policy;

    fn check(high: f64, low: f64) -> Result<(), String> {
        Policy {
            high_watermark: high,
            low_watermark: low,
            ..Policy::default()
        }
        .check()
    }

    #[test]
    fn watermarks_are_checked_in_the_unit_operators_type() {
        assert_eq!(check(0.75, 0.10), Ok(()));
        assert_eq!(
            check(2.0, 0.1).unwrap_err(),
            "high watermark 200%: must be above 0% and at most 100%"
        );
        assert_eq!(
            check(0.1, 0.9).unwrap_err(),
            "low watermark 90% must be below the high watermark 10%"
        );
        assert!(check(0.5, -0.1).is_err());
        assert!(check(f64::NAN, 0.1).is_err());
    }
}
