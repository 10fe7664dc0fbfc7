//! [`Filler`]: the background half of a live restore, restoring every chunk clients have not
//! asked for yet.
//!
//! ```text
//!   workers (N, nice 10) ── wait while clients fetch (≤ 1 s) ── next chunk: prioritized
//!                           ranges first, then the cursor ──> restore_chunk
//!   this thread ── every second: persist the restored map ── at the end: once more
//! ```
//!
//! A chunk a client already restored is skipped (the map says so); a chunk that cannot be
//! restored is recorded by the device and passed over, so one bad chunk costs only its own
//! blocks. The persist every second bounds what a crash makes the filler do again.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::live::{By, LiveDevice};
use crate::device::BlockDevice;

/// The longest a worker waits for client fetches to end before it takes its next chunk.
const YIELD_AT_MOST: Duration = Duration::from_secs(1);

/// Nice value of the workers: clients' requests (on other threads) get the CPUs first.
const WORKER_NICE: libc::c_int = 10;

/// How often the restored map is made durable while the filler runs.
const PERSIST_EVERY: Duration = Duration::from_secs(1);

/// How a filler run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filled {
    /// Every chunk is restored.
    Complete,
    /// [`Filler::stop`] was called.
    Stopped,
    /// These chunks could not be restored (the rest is).
    Incomplete(usize),
}

/// Where the workers take their next chunk.
#[derive(Debug, Default)]
struct Queue {
    /// Chunk ranges to restore before the rest, oldest first.
    priority: VecDeque<Range<usize>>,
    /// The next chunk in device order.
    cursor: usize,
}

/// The background restore of one [`LiveDevice`].
#[derive(Debug)]
pub struct Filler {
    device: Arc<LiveDevice>,
    queue: Mutex<Queue>,
    stop: AtomicBool,
    /// Bytes per second the filler may restore (`None`: as fast as it can).
    max_rate: Option<u64>,
    /// Bytes restored by this run, for pacing.
    paced: AtomicU64,
}

impl Filler {
    pub fn new(device: Arc<LiveDevice>, max_rate: Option<u64>) -> Filler {
        Filler {
            device,
            queue: Mutex::new(Queue::default()),
            stop: AtomicBool::new(false),
            max_rate: max_rate.filter(|r| *r > 0),
            paced: AtomicU64::new(0),
        }
    }

    /// Restores the chunks holding `len` bytes at `offset` before the others.
    pub fn prioritize(&self, offset: u64, len: u64) {
        let cs = self.device.chunk_size();
        let first = (offset / cs) as usize;
        let end = (offset.saturating_add(len).div_ceil(cs) as usize).min(self.device.chunks());
        if first < end {
            self.queue.lock().unwrap().priority.push_back(first..end);
        }
    }

    /// Makes the workers stop after their current chunk.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// The next chunk with something to restore, prioritized ranges first.
    fn next(&self) -> Option<usize> {
        let mut q = self.queue.lock().unwrap();
        while let Some(r) = q.priority.front_mut() {
            while r.start < r.end && self.device.chunk_restored(r.start) {
                r.start += 1;
            }
            if r.start < r.end {
                r.start += 1;
                return Some(r.start - 1);
            }
            q.priority.pop_front();
        }
        let n = self.device.chunks();
        while q.cursor < n {
            let i = q.cursor;
            q.cursor += 1;
            if !self.device.chunk_restored(i) && !self.device.failures().contains_key(&i) {
                return Some(i);
            }
        }
        None
    }

    /// Sleeps until the bytes restored so far (by every worker) are due at the rate limit, in
    /// slices of at most a second so that a stop is seen. (Capping the whole sleep at a second
    /// made each worker restore at least a chunk a second, whatever the limit.)
    fn pace(&self, started: Instant, bytes: u64) {
        let Some(rate) = self.max_rate else { return };
        let total = self.paced.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let due = started + Duration::from_secs_f64(total as f64 / rate as f64);
        loop {
            let now = Instant::now();
            if due <= now || self.stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep((due - now).min(Duration::from_secs(1)));
        }
    }

    /// Restores everything with `workers` threads, persisting the map every second; returns
    /// when done, stopped, or every chunk was tried.
    pub fn run(&self, workers: usize) -> Filled {
        let started = Instant::now();
        let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
        std::thread::scope(|scope| {
            for _ in 0..workers.max(1) {
                let done_tx = done_tx.clone();
                scope.spawn(move || {
                    let _done = done_tx;
                    lower_priority();
                    while !self.stop.load(Ordering::Relaxed) {
                        self.device.yield_to_clients(YIELD_AT_MOST);
                        let Some(i) = self.next() else { break };
                        let before = self.device.counters.bytes.load(Ordering::Relaxed);
                        if let Err(why) = self.device.restore_chunk(i, By::Filler) {
                            tracing::warn!(chunk = i, %why, "live restore: chunk not restored");
                        }
                        let after = self.device.counters.bytes.load(Ordering::Relaxed);
                        self.pace(started, after.saturating_sub(before));
                    }
                });
            }
            drop(done_tx);
            // Every worker holds a sender; the channel disconnects when the last one ends.
            while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                done_rx.recv_timeout(PERSIST_EVERY)
            {
                if self.device.map().dirty() {
                    if let Err(e) = self.device.flush() {
                        tracing::warn!(error = %e, "live restore: cannot persist the restored map");
                    }
                }
            }
        });
        if self.stop.load(Ordering::Relaxed) {
            return Filled::Stopped;
        }
        match self.device.failures().len() {
            0 if self.device.map().is_complete() => Filled::Complete,
            0 => Filled::Incomplete(0),
            n => Filled::Incomplete(n),
        }
    }
}

/// Lowers the calling thread's CPU priority to [`WORKER_NICE`] (on Linux a nice value is a
/// thread's own); failing to is harmless.
fn lower_priority() {
    // SAFETY: plain syscalls on the calling thread, no memory involved.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, WORKER_NICE);
    }
}
