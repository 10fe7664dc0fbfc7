//! The background mover: drains a session's blocks to its target.
//!
//! ```text
//!  reader threads (several)                           writer thread
//!  ┌────────────────────────────────────────────┐     ┌────────────────────────────┐
//!  │ 1. zero blocks (holes at T)   -> record     │     │ target.write / write_zeroes│
//!  │ 2. container above low mark   -> read slots │ ──> │ then release slots,        │
//!  │ 3. prioritized ranges, then the next pending │ ch  │ count blocks done          │
//!  │    run from a shared cursor: read the device │     └────────────────────────────┘
//!  │    without locks, then claim each block      │
//!  │    under its lock if it is still pending     │
//!  └────────────────────────────────────────────┘
//! ```
//!
//! Several readers keep several runs in flight at once (a device delivers its bandwidth only
//! with a queue), each also asking the kernel to read its following run ahead. The runs
//! being read are marked busy under the cursor's lock, so no two readers read the same run.
//!
//! Claiming after reading is what lets writers never wait behind the mover: a block still
//! pending when claimed was not written since T (every writer removes a pending block under
//! its lock before writing it), so the data read is the T content; a block no longer pending
//! is skipped (the container or another claim has it). Reading and writing overlap through a
//! short channel, so the target and the device work at the same time.

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use tracing::{debug, info};

use crate::device::{BlockDevice, BufPool, IoBuf};
use crate::snapshot::session::Session;

/// Tuning of the mover.
#[derive(Debug, Clone, Copy)]
pub struct MoverConfig {
    /// Largest run read from the device or drained from the container at once.
    pub run_bytes: usize,
    /// Work items queued between the readers and the writer.
    pub queue: usize,
    /// Reader threads, so many runs are read from the device at once.
    pub readers: usize,
    /// Bytes per second the mover may move (None: as fast as it can).
    pub max_rate: Option<u64>,
    /// Runs never cross a multiple of this many bytes (a repository's chunk size), so a run
    /// is a whole chunk whenever its blocks are all pending (0: no alignment).
    pub align: u64,
}

impl Default for MoverConfig {
    fn default() -> Self {
        MoverConfig {
            run_bytes: 4 << 20,
            queue: 3,
            readers: 4,
            max_rate: None,
            align: 0,
        }
    }
}

/// One piece of data for the target.
#[derive(Debug)]
struct Piece {
    buf_off: usize,
    target_off: u64,
    len: usize,
}

/// A unit of work for the writer thread.
#[derive(Debug, Default)]
struct Work {
    buf: Option<IoBuf>,
    pieces: Vec<Piece>,
    zeroes: Option<(u64, u64)>,
    blocks: u64,
    slots: Vec<u32>,
}

/// Starts the mover of `session`, reading the device from `dev`. `on_end` runs last, after
/// the target is finished or aborted and the container disposed; it receives the mover's
/// reference to the session (the mover's threads hold none by then), so that dropping it
/// can release the container and the target.
pub fn spawn(
    session: Arc<Session>,
    dev: Arc<dyn BlockDevice>,
    config: MoverConfig,
    on_end: Box<dyn FnOnce(Arc<Session>) + Send>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("cowd-mover".into())
        .spawn(move || {
            let (tx, rx) = crossbeam_channel::bounded(config.queue.max(1));
            // Buffers go round between the readers and the writer instead of being
            // allocated (and faulted in) for every run.
            let readers = config.readers.max(1);
            let cap = config.run_bytes.next_power_of_two() * (config.queue + readers + 2);
            let bufs = BufPool::new(cap);
            let cursor = Mutex::new(Cursor::default());
            std::thread::scope(|scope| {
                let writer = std::thread::Builder::new()
                    .name("cowd-mover-w".into())
                    .spawn_scoped(scope, || write_loop(&session, rx, config.max_rate, &bufs));
                if let Err(e) = writer {
                    session.fail(format!("cannot start the mover's writer thread: {e}"));
                    return;
                }
                for i in 1..readers {
                    let tx = tx.clone();
                    let (s, d, c, b) = (&session, dev.as_ref(), &cursor, &bufs);
                    let reader = std::thread::Builder::new()
                        .name(format!("cowd-mover-{i}"))
                        .spawn_scoped(scope, move || schedule(s, d, config, c, &tx, b));
                    if let Err(e) = reader {
                        session.fail(format!("cannot start a reader thread of the mover: {e}"));
                    }
                }
                schedule(&session, dev.as_ref(), config, &cursor, &tx, &bufs);
                drop(tx);
            });
            finish(&session);
            on_end(session);
        })
}

/// Completes or aborts the target, then disposes of the container.
fn finish(s: &Session) {
    if s.running() {
        match s.target.finish() {
            Ok(()) => s.complete(),
            Err(e) => s.fail(format!("finishing the target {}: {e}", s.target.describe())),
        }
    }
    if !matches!(s.state(), crate::snapshot::session::State::Done) {
        s.target.abort();
    }
    s.container.dispose();
    let r = s.report();
    info!(session = %s.id, state = ?r.state, blocks = r.blocks_done, cbw = r.copies_before_write,
          peak = r.container_peak, mib_s = r.mover_mib_s, "mover finished");
}

fn write_loop(s: &Session, rx: Receiver<Work>, max_rate: Option<u64>, bufs: &BufPool) {
    let start = std::time::Instant::now();
    let mut paced = 0u64;
    for mut w in rx {
        let (r, back) = write_work(s, &mut w);
        if let Some(b) = back {
            bufs.put(b);
        }
        if !r {
            continue;
        }
        for slot in w.slots {
            s.container.release(slot);
        }
        let bytes: usize = w.pieces.iter().map(|p| p.len).sum();
        s.stats
            .bytes_moved
            .fetch_add(bytes as u64, Ordering::Relaxed);
        s.stats.blocks_done.fetch_add(w.blocks, Ordering::Relaxed);
        if let Some(rate) = max_rate.filter(|r| *r > 0) {
            // Pace to the rate: sleep until the bytes moved so far are due.
            paced += bytes as u64;
            let due = std::time::Duration::from_secs_f64(paced as f64 / rate as f64);
            if let Some(ahead) = due.checked_sub(start.elapsed()) {
                // Ends early when the session does (a cancel must not wait for the pacing).
                s.wait(ahead);
            }
        }
    }
}

/// Writes one unit of work to the target; false if the session ended or the target failed.
/// Also the buffer to reuse: a run that is one piece is handed to the target whole (a
/// repository keeps it as the chunk instead of copying it), which may give another back.
fn write_work(s: &Session, w: &mut Work) -> (bool, Option<IoBuf>) {
    let buf = w.buf.take();
    if !s.running() {
        return (false, buf); // drain: the session ended, nothing more goes to the target
    }
    let mut r = Ok(());
    let mut back = None;
    match (buf, w.pieces.as_slice()) {
        (Some(buf), [p]) if p.buf_off == 0 && p.len == buf.len() => {
            r = s.target.write_owned(p.target_off, buf).map(|b| back = b);
        }
        (Some(buf), pieces) => {
            for p in pieces {
                r = s
                    .target
                    .write(p.target_off, &buf[p.buf_off..p.buf_off + p.len]);
                if r.is_err() {
                    break;
                }
            }
            back = Some(buf);
        }
        (None, _) => {}
    }
    if let (Some((off, len)), true) = (w.zeroes, r.is_ok()) {
        r = s.target.write_zeroes(off, len);
    }
    if let Err(e) = r {
        s.fail(format!(
            "writing to the target {}: {e}",
            s.target.describe()
        ));
        return (false, back);
    }
    (true, back)
}

/// Where the readers are: the next block to look at, and the runs being read.
#[derive(Debug, Default)]
struct Cursor {
    at: u32,
    busy: Vec<Range<u32>>,
}

impl Cursor {
    /// The next run no other reader is reading, marked busy; `Err(())` when the next run is
    /// being read by another reader (the caller waits a moment).
    fn take(&mut self, s: &Session, max: u32, align: u32) -> Result<Option<(u32, u32)>, ()> {
        let Some((first, n)) = next_run(s, &mut self.at, max, align) else {
            return Ok(None);
        };
        if self.busy.iter().any(|r| r.contains(&first)) {
            return Err(());
        }
        let end = first + n;
        let n = self
            .busy
            .iter()
            .filter(|r| r.start > first)
            .map(|r| r.start.min(end) - first)
            .fold(n, u32::min);
        self.busy.push(first..first + n);
        Ok(Some((first, n)))
    }

    fn done(&mut self, first: u32) {
        self.busy.retain(|r| r.start != first);
    }
}

/// One reader: decides what to move next until nothing is left or the session ends.
fn schedule(
    s: &Session,
    dev: &dyn BlockDevice,
    config: MoverConfig,
    cursor: &Mutex<Cursor>,
    tx: &Sender<Work>,
    bufs: &BufPool,
) {
    let bs = s.block_size as usize;
    let max_blocks = (config.run_bytes / bs).max(1) as u32;
    let align_blocks = (config.align / bs as u64) as u32;
    let pause = || std::thread::sleep(std::time::Duration::from_micros(200));
    // The cursor's lock is held only while a run is chosen, never while it is read.
    let take = || cursor.lock().unwrap().take(s, max_blocks, align_blocks);
    while s.running() {
        let work = if let Some(w) = zero_run(s, max_blocks, align_blocks) {
            w
        } else if s.container.queued() > 0
            && (s.container.fill().ratio() > s.policy.low_watermark || s.pending.is_empty())
        {
            match drain_container(s, max_blocks as usize, bufs) {
                Some(w) => w,
                None => return,
            }
        } else if let Ok(Some((first, n))) = take() {
            // Ask the kernel to read the pending blocks that follow ahead while this run is
            // copied; only those: after a scattered run, a run's worth of blocks read ahead
            // regardless cost 4 MiB of reading per 64 KiB piece, 8x the time of the backup.
            let follow = s.pending.run_len(first + n, max_blocks);
            let ahead = u64::from(first + n) * bs as u64;
            if follow > 0 && ahead < s.size {
                let len = (u64::from(follow) * bs as u64).min(s.size - ahead);
                let _ = dev.cache(ahead, len);
            }
            let work = copy_run(s, dev, first, n, bufs);
            cursor.lock().unwrap().done(first);
            match work {
                Some(w) => w,
                None => continue,
            }
        } else if s.pending.is_empty() && s.container.queued() == 0 {
            // Order matters: a block leaves the pending set only after it is in the container
            // queue, so "pending empty, then queue empty" means everything was handed over.
            debug!(session = %s.id, "all blocks handed to the writer");
            return;
        } else {
            // What is left is being read by other readers (or written through): look again.
            pause();
            continue;
        };
        if tx.send(work).is_err() {
            return;
        }
    }
}

/// A run of blocks that were holes at T: recorded as zeroes without reading. Like a copied
/// run, it ends at a chunk boundary, so a target sees whole zero chunks after a partial one.
fn zero_run(s: &Session, max_blocks: u32, align: u32) -> Option<Work> {
    let mut z = s.zeroes.lock().unwrap();
    let first = z.min()?;
    let n = (0..run_limit(first, max_blocks, align))
        .take_while(|i| first.checked_add(*i).is_some_and(|b| z.contains(b)))
        .count() as u32;
    z.remove_range(first..first + n);
    drop(z);
    let (off, _) = s.block_extent(first);
    let (last_off, last_len) = s.block_extent(first + n - 1);
    let len = last_off + last_len as u64 - off;
    Some(Work {
        zeroes: Some((off, len)),
        blocks: u64::from(n),
        ..Work::default()
    })
}

/// The next run of pending blocks: prioritized ranges first, then onward from the cursor.
fn next_run(s: &Session, cursor: &mut u32, max_blocks: u32, align: u32) -> Option<(u32, u32)> {
    let limit = |first: u32, max: u32| run_limit(first, max, align);
    if let Some(r) = s.next_priority() {
        let n = s
            .pending
            .run_len(r.start, limit(r.start, max_blocks.min(r.end - r.start)));
        return Some((r.start, n.max(1)));
    }
    let first = s.pending.next_from(*cursor)?;
    let n = s.pending.run_len(first, limit(first, max_blocks)).max(1);
    *cursor = first.saturating_add(n);
    Some((first, n))
}

/// At most `max` blocks from `first`, ending at the next multiple of `align` blocks (a chunk
/// boundary) if there is one.
fn run_limit(first: u32, max: u32, align: u32) -> u32 {
    if align > 1 {
        max.min(align - first % align)
    } else {
        max
    }
}

/// Reads `n` blocks from `first` off the device, then claims those still pending.
fn copy_run(
    s: &Session,
    dev: &dyn BlockDevice,
    first: u32,
    n: u32,
    bufs: &BufPool,
) -> Option<Work> {
    let (off, _) = s.block_extent(first);
    let (last_off, last_len) = s.block_extent(first + n - 1);
    let len = (last_off + last_len as u64 - off) as usize;
    let mut buf = bufs.get(len);
    if let Err(e) = dev.read_at(&mut buf, off) {
        s.fail(format!("reading the device for the backup: {e}"));
        return None;
    }
    let mut pieces: Vec<Piece> = Vec::new();
    let mut claimed = 0u64;
    for b in s.claim_read(first..first + n) {
        claimed += 1;
        let (boff, blen) = s.block_extent(b);
        let buf_off = (boff - off) as usize;
        match pieces.last_mut() {
            Some(p) if p.buf_off + p.len == buf_off => p.len += blen,
            _ => pieces.push(Piece {
                buf_off,
                target_off: boff,
                len: blen,
            }),
        }
    }
    if claimed == 0 {
        return None;
    }
    Some(Work {
        buf: Some(buf),
        pieces,
        blocks: claimed,
        ..Work::default()
    })
}

/// Reads up to `max` saved blocks out of the container.
fn drain_container(s: &Session, max: usize, bufs: &BufPool) -> Option<Work> {
    let mut taken = s.container.take(max);
    // Blocks the target does not need (free at T, or in chunks inherited from a parent) were
    // saved before the session was narrowed: give their slots back unwritten.
    let skip = s.skip.lock().unwrap();
    taken.retain(|&(block, slot)| {
        let keep = !skip.contains(block);
        if !keep {
            s.container.release(slot);
        }
        keep
    });
    drop(skip);
    if taken.is_empty() {
        return Some(Work::default());
    }
    let bs = s.block_size as usize;
    let mut buf = bufs.get(taken.len() * bs);
    let mut pieces: Vec<Piece> = Vec::with_capacity(taken.len());
    let mut slots = Vec::with_capacity(taken.len());
    for (i, &(block, slot)) in taken.iter().enumerate() {
        let (boff, blen) = s.block_extent(block);
        let at = i * bs;
        if let Err(e) = s.container.read(slot, &mut buf[at..at + blen]) {
            s.fail(format!(
                "reading block {block} back from the container: {e}"
            ));
            return None;
        }
        match pieces.last_mut() {
            Some(p)
                if p.buf_off + p.len == at
                    && p.target_off + p.len as u64 == boff
                    && p.len % bs == 0 =>
            {
                p.len += blen
            }
            _ => pieces.push(Piece {
                buf_off: at,
                target_off: boff,
                len: blen,
            }),
        }
        slots.push(slot);
    }
    Some(Work {
        buf: Some(buf),
        pieces,
        blocks: taken.len() as u64,
        slots,
        zeroes: None,
    })
}

#[cfg(test)]
mod run_tests;
