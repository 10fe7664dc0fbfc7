//! [`LiveDevice`]: a destination being restored, served read-write while the restore runs.
//!
//! ```text
//!   read  ── all blocks restored? ─yes──────────────────────────────> destination
//!              └─no─> restore their chunks (chunk lock, once) ──────> destination
//!   write ── all blocks restored? ─yes──────────────────────────────> destination
//!              └─no─> chunk locks; partial edge block not restored:
//!                     restore its chunk first; write; mark every touched block restored
//!   filler ─ restore_chunk(i) ─> chunk lock; load from the repository (digest checked);
//!                                write only blocks still missing; mark them restored
//!   flush / FUA ─> persist the restored map (destination synced first, see `restored`)
//! ```
//!
//! The rule that keeps client data safe: repository data is written to a block only under its
//! chunk's lock and only while the block is not restored, and a client write that restores a
//! block marks it under the same lock after writing. Bits are never cleared, so once a client
//! wrote a block nothing from the repository reaches it again; across a crash, the persist
//! order of `RestoredMap` gives the same for every write the client had flushed.
//!
//! Chunk locks are stripes (a chunk maps to `i % STRIPES`), taken in ascending stripe order by
//! a write spanning chunks, one at a time by reads and the filler; nothing else is locked while
//! one is held, except the map's own short lock. Holding it while the chunk is loaded is what
//! makes concurrent readers of one chunk fetch it once: the second waits, then finds it done.
//!
//! Client fetches come first: while a client request waits for a chunk, the filler starts no
//! new chunk (see [`LiveDevice::yield_to_clients`]), and its threads run at a lower CPU
//! priority.
//!
//! A chunk the repository cannot supply (missing, corrupt, repository gone) fails only the
//! requests that need it, with EIO; the reason is kept for `status`. A write covering whole
//! blocks needs no repository and succeeds.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use super::restored::RestoredMap;
use super::source::ChunkSource;
use crate::device::{
    BlockDevice, BlockSizes, Capabilities, DeviceError, ErrorKind, Extent, Op, Result, ZeroFlags,
    push_extent,
};

/// Chunk lock stripes: enough that a client's chunk rarely shares one with the few chunks the
/// filler works on (a shared stripe makes the client wait for an unrelated chunk).
const STRIPES: usize = 4096;

thread_local! {
    static CHUNK: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Who restored a chunk (for the counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// A client's read or partial write needed it.
    Client,
    /// The background filler.
    Filler,
}

/// Counters of a live restore.
#[derive(Debug, Default)]
pub struct LiveCounters {
    /// Chunks restored because a client needed them.
    pub on_demand: AtomicU64,
    /// Chunks restored by the filler.
    pub filled: AtomicU64,
    /// Bytes written from the repository to the destination.
    pub bytes: AtomicU64,
}

/// A destination under restore (see the module documentation).
#[derive(Debug)]
pub struct LiveDevice {
    inner: Arc<dyn BlockDevice>,
    /// The generation; `None` once every block is restored (or when it could not be opened).
    source: RwLock<Option<Arc<dyn ChunkSource>>>,
    /// Chunk size of the source, kept when the source is gone.
    chunk_size: u64,
    /// Bytes the source covers (the destination may be larger; the rest is its own).
    source_size: u64,
    map: RestoredMap,
    stripes: Vec<Mutex<()>>,
    /// Zero chunks need no write: the destination was created empty (sparse) for the restore.
    fresh: bool,
    /// Chunks that could not be restored, with why (cleared when a later attempt works).
    failures: Mutex<BTreeMap<usize, String>>,
    /// Every block restored and the map final: a plain pass-through from now on.
    done: AtomicBool,
    /// Client requests waiting for chunks from the repository.
    client_fetches: Mutex<usize>,
    /// Signalled when `client_fetches` drops to zero.
    no_client_fetches: Condvar,
    pub counters: LiveCounters,
}

/// A client request waiting for the repository, counted while it lives.
struct ClientFetch<'d>(&'d LiveDevice);

impl<'d> ClientFetch<'d> {
    fn new(d: &'d LiveDevice) -> ClientFetch<'d> {
        *d.client_fetches.lock().unwrap() += 1;
        ClientFetch(d)
    }
}

impl Drop for ClientFetch<'_> {
    fn drop(&mut self) {
        let mut n = self.0.client_fetches.lock().unwrap();
        *n -= 1;
        if *n == 0 {
            self.0.no_client_fetches.notify_all();
        }
    }
}

impl LiveDevice {
    /// Serves `inner` while `source` is restored onto it; `map` says what already is (see
    /// [`premark`](Self::premark) for a new one). `fresh`: `inner` was created empty.
    pub fn new(
        inner: Arc<dyn BlockDevice>,
        source: Option<Arc<dyn ChunkSource>>,
        chunk_size: u32,
        source_size: u64,
        map: RestoredMap,
        fresh: bool,
    ) -> LiveDevice {
        LiveDevice {
            inner,
            source: RwLock::new(source),
            chunk_size: u64::from(chunk_size),
            source_size,
            map,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            fresh,
            failures: Mutex::new(BTreeMap::new()),
            done: AtomicBool::new(false),
            client_fetches: Mutex::new(0),
            no_client_fetches: Condvar::new(),
            counters: LiveCounters::default(),
        }
    }

    /// Marks in a new map what needs no restore: blocks beyond the source, and (on a fresh
    /// destination, which reads as zeroes) the source's zero chunks.
    pub fn premark(map: &RestoredMap, source: &dyn ChunkSource, fresh: bool) {
        let cs = u64::from(source.chunk_size());
        let size = source.device_size();
        let b = u64::from(map.block());
        map.insert(size.div_ceil(b).min(u64::from(map.blocks())) as u32..map.blocks());
        if fresh {
            for i in 0..source.chunks() {
                if source.is_zero(i) {
                    let start = i as u64 * cs;
                    map.insert(map.blocks_of(start, cs.min(size - start)));
                }
            }
        }
    }

    /// The restored map.
    pub fn map(&self) -> &RestoredMap {
        &self.map
    }

    /// Bytes per chunk of the source.
    pub fn chunk_size(&self) -> u64 {
        self.chunk_size
    }

    /// Number of chunks the source covers.
    pub fn chunks(&self) -> usize {
        self.source_size.div_ceil(self.chunk_size) as usize
    }

    /// Bytes of chunk `i`.
    fn chunk_range(&self, i: usize) -> Range<u64> {
        let start = i as u64 * self.chunk_size;
        start..(start + self.chunk_size).min(self.source_size)
    }

    /// Chunk `i` holds no block left to restore.
    pub fn chunk_restored(&self, i: usize) -> bool {
        let r = self.chunk_range(i);
        self.map
            .contains(self.map.blocks_of(r.start, r.end - r.start))
    }

    /// The chunks `len` bytes at `offset` touch, limited to the source.
    fn chunks_of(&self, offset: u64, len: u64) -> Range<usize> {
        let end = (offset + len).min(self.source_size);
        if offset >= end {
            return 0..0;
        }
        (offset / self.chunk_size) as usize..end.div_ceil(self.chunk_size) as usize
    }

    /// Every block is restored and the map is final.
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Chunks that could not be restored (chunk index → why), so far.
    pub fn failures(&self) -> BTreeMap<usize, String> {
        self.failures.lock().unwrap().clone()
    }

    /// Waits while client requests wait for the repository, for at most `limit` (so that the
    /// filler still moves when clients fetch without pause); the filler calls it before each
    /// chunk, which gives client fetches the repository, the disk and the CPUs first.
    pub fn yield_to_clients(&self, limit: Duration) {
        let until = Instant::now() + limit;
        let mut n = self.client_fetches.lock().unwrap();
        while *n > 0 {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            n = self.no_client_fetches.wait_timeout(n, left).unwrap().0;
        }
    }

    fn lock(&self, i: usize) -> MutexGuard<'_, ()> {
        self.stripes[i % STRIPES].lock().unwrap()
    }

    /// Restores what is missing of chunk `i`; `Ok(false)` when nothing was.
    pub fn restore_chunk(&self, i: usize, by: By) -> std::result::Result<bool, String> {
        if self.chunk_restored(i) {
            return Ok(false);
        }
        let _g = self.lock(i);
        self.restore_chunk_locked(i, by)
    }

    /// [`restore_chunk`](Self::restore_chunk) with chunk `i`'s stripe already held.
    fn restore_chunk_locked(&self, i: usize, by: By) -> std::result::Result<bool, String> {
        let r = self.chunk_range(i);
        let blocks = self.map.blocks_of(r.start, r.end - r.start);
        let missing = self.map.missing(blocks.clone());
        if missing.is_empty() {
            return Ok(false);
        }
        let result = self.write_missing(i, &r, &missing);
        let mut failures = self.failures.lock().unwrap();
        match result {
            Ok(bytes) => {
                // Under the chunk lock, after the writes returned: see the module docs.
                self.map.insert(blocks);
                failures.remove(&i);
                self.counters.bytes.fetch_add(bytes, Ordering::Relaxed);
                let c = match by {
                    By::Client => &self.counters.on_demand,
                    By::Filler => &self.counters.filled,
                };
                c.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            Err(e) => {
                let why = format!("chunk {i} (bytes {}..{}): {e}", r.start, r.end);
                failures.insert(i, why.clone());
                Err(why)
            }
        }
    }

    /// Writes the source's data of chunk `i` (bytes `r`) to the `missing` runs of blocks.
    fn write_missing(
        &self,
        i: usize,
        r: &Range<u64>,
        missing: &[Range<u32>],
    ) -> std::result::Result<u64, String> {
        let source = self.source.read().unwrap().clone().ok_or_else(|| {
            "the repository is not available to this restore (see its status)".to_string()
        })?;
        let b = u64::from(self.map.block());
        let runs = missing.iter().map(|m| {
            let start = (u64::from(m.start) * b).max(r.start);
            start..(u64::from(m.end) * b).min(r.end)
        });
        if source.is_zero(i) {
            let flags = ZeroFlags {
                may_trim: true,
                ..ZeroFlags::default()
            };
            for run in runs {
                if !self.fresh {
                    self.inner
                        .write_zeroes(run.start, run.end - run.start, flags)
                        .map_err(|e| e.to_string())?;
                }
            }
            return Ok(0);
        }
        CHUNK.with(|buf| {
            let mut buf = buf.borrow_mut();
            source.load(i, &mut buf)?;
            let mut bytes = 0;
            for run in runs {
                let at = (run.start - r.start) as usize..(run.end - r.start) as usize;
                self.inner
                    .write_at(&buf[at], run.start, false)
                    .map_err(|e| e.to_string())?;
                bytes += run.end - run.start;
            }
            Ok(bytes)
        })
    }

    /// Restores every chunk `len` bytes at `offset` touch that still misses blocks.
    fn ensure(&self, op: Op, offset: u64, len: u64) -> Result<()> {
        if self.map.contains(self.map.blocks_of(offset, len)) {
            return Ok(());
        }
        let _fetch = ClientFetch::new(self);
        for i in self.chunks_of(offset, len) {
            self.restore_chunk(i, By::Client)
                .map_err(|why| unrestorable(op, offset, len, why))?;
        }
        Ok(())
    }

    /// Runs `f`, a change of `len` bytes at `offset`, so that no repository data lands on it:
    /// under the locks of the chunks it touches, after completing partial blocks that are not
    /// restored, marking its blocks restored when `f` returned. Returns whether a bit was set.
    fn modify(&self, op: Op, offset: u64, len: u64, f: impl FnOnce() -> Result<()>) -> Result<()> {
        let blocks = self.map.blocks_of(offset, len);
        if self.map.contains(blocks.clone()) {
            return f();
        }
        let chunks = self.chunks_of(offset, len);
        let mut stripes: Vec<usize> = chunks.clone().map(|i| i % STRIPES).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let _guards: Vec<_> = stripes
            .iter()
            .map(|&s| self.stripes[s].lock().unwrap())
            .collect();
        let b = u64::from(self.map.block());
        let end = offset + len;
        let mut edges = Vec::new();
        if offset % b != 0 {
            edges.push(offset / b);
        }
        if end % b != 0 && end < self.size() {
            edges.push(end / b);
        }
        for e in edges {
            let block = e as u32;
            if block < self.map.blocks() && !self.map.contains(block..block + 1) {
                let i = (e * b / self.chunk_size) as usize;
                let _fetch = ClientFetch::new(self);
                self.restore_chunk_locked(i, By::Client)
                    .map_err(|why| unrestorable(op, offset, len, why))?;
            }
        }
        f()?;
        self.map.insert(blocks);
        Ok(())
    }

    /// Makes completed writes durable and the map with them (see `restored`).
    fn persist(&self, op: Op) -> Result<()> {
        if self.is_done() {
            return self.inner.flush();
        }
        self.map
            .persist(|| self.inner.flush().map_err(io::Error::other))
            .map_err(|e| DeviceError {
                kind: ErrorKind::Io,
                op,
                offset: 0,
                len: 0,
                source: Some(io::Error::other(e.to_string())),
            })
    }

    /// Ends the restore once every block is restored: the map is persisted one last time,
    /// the source (and its lease on the backup) is let go, and requests go straight through.
    pub fn finish(&self) -> std::result::Result<(), String> {
        if !self.map.is_complete() {
            let left = u64::from(self.map.blocks()) - self.map.count();
            return Err(format!("{left} blocks are not restored"));
        }
        self.persist(Op::Flush).map_err(|e| e.to_string())?;
        self.done.store(true, Ordering::Release);
        self.source.write().unwrap().take();
        Ok(())
    }

    /// Lets the source go without finishing (the restore stops; unrestored blocks give EIO).
    pub fn drop_source(&self, why: &str) -> Option<Arc<dyn ChunkSource>> {
        let s = self.source.write().unwrap().take();
        if s.is_some() {
            tracing::info!(why, "live restore: repository released");
        }
        s
    }
}

fn unrestorable(op: Op, offset: u64, len: u64, why: String) -> DeviceError {
    DeviceError {
        kind: ErrorKind::Io,
        op,
        offset,
        len,
        source: Some(io::Error::other(format!(
            "not yet restored, and the repository cannot supply it: {why}"
        ))),
    }
}

impl BlockDevice for LiveDevice {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn block_sizes(&self) -> BlockSizes {
        self.inner.block_sizes()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            cache: true,
            ..self.inner.capabilities()
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        if !self.is_done() {
            self.ensure(Op::Read, offset, buf.len() as u64)?;
        }
        self.inner.read_at(buf, offset)
    }

    fn try_read_at(&self, buf: &mut [u8], offset: u64) -> Result<bool> {
        if self.is_done()
            || self
                .map
                .contains(self.map.blocks_of(offset, buf.len() as u64))
        {
            return self.inner.try_read_at(buf, offset);
        }
        Ok(false)
    }

    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        if self.is_done() {
            return self.inner.write_at(buf, offset, fua);
        }
        self.modify(Op::Write, offset, buf.len() as u64, || {
            self.inner.write_at(buf, offset, fua)
        })?;
        if fua && self.map.dirty() {
            // An unpersisted bit may stand for this very block: without it on disk a crash
            // would restore the block again over this durable write.
            self.persist(Op::Write)?;
        }
        Ok(())
    }

    fn try_write_at(&self, buf: &[u8], offset: u64, fua: bool) -> Result<bool> {
        if self.is_done()
            || (!fua
                && self
                    .map
                    .contains(self.map.blocks_of(offset, buf.len() as u64)))
        {
            return self.inner.try_write_at(buf, offset, fua);
        }
        Ok(false)
    }

    fn write_zeroes(&self, offset: u64, len: u64, flags: ZeroFlags) -> Result<()> {
        if self.is_done() {
            return self.inner.write_zeroes(offset, len, flags);
        }
        self.modify(Op::WriteZeroes, offset, len, || {
            self.inner.write_zeroes(offset, len, flags)
        })?;
        if flags.fua && self.map.dirty() {
            self.persist(Op::WriteZeroes)?;
        }
        Ok(())
    }

    fn trim(&self, offset: u64, len: u64, fua: bool) -> Result<()> {
        // A trim is a hint; blocks not restored yet get their old data, which a trimmed block
        // may show anyway.
        if self.is_done() || self.map.contains(self.map.blocks_of(offset, len)) {
            return self.inner.trim(offset, len, fua);
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.persist(Op::Flush)
    }

    fn cache(&self, offset: u64, len: u64) -> Result<()> {
        if self.is_done() {
            return self.inner.cache(offset, len);
        }
        self.ensure(Op::Cache, offset, len)
    }

    fn extents(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        if self.is_done() {
            return self.inner.extents(offset, len);
        }
        let end = offset + len;
        let mut out = Vec::new();
        let mut at = offset;
        while at < end {
            let i = (at / self.chunk_size) as usize;
            let n = if at < self.source_size {
                (self.chunk_range(i).end - at).min(end - at)
            } else {
                end - at
            };
            let blocks = self.map.blocks_of(at, n);
            if at >= self.source_size || self.map.contains(blocks.clone()) {
                let mut done = 0;
                for e in self.inner.extents(at, n)? {
                    let length = e.length.min(n - done);
                    push_extent(&mut out, Extent { length, ..e });
                    done += length;
                    if done >= n {
                        break;
                    }
                }
                if done < n {
                    // The layer below answered short: report the rest of this range as data.
                    push_extent(
                        &mut out,
                        Extent {
                            length: n - done,
                            hole: false,
                            zero: false,
                        },
                    );
                }
            } else {
                let zero = self.map.none_of(blocks)
                    && self
                        .source
                        .read()
                        .unwrap()
                        .as_ref()
                        .is_some_and(|s| s.is_zero(i));
                push_extent(
                    &mut out,
                    Extent {
                        length: n,
                        hole: zero,
                        zero,
                    },
                );
            }
            at += n;
        }
        Ok(out)
    }
}
