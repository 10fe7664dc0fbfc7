//! [`RepoTarget`]: a backup written into a repository as a new generation.
//!
//! ```text
//!  mover writes (any order, each byte once) ──> whole chunk in one write? ──yes──┐
//!        │ no: staging file (sparse, in the repository's tmp/)                   v
//!        └──> chunk complete (all its bytes received) ──> read it back ──> workers: BLAKE3,
//!                                                                zstd, store (deduplicated)
//!  finish: every fresh chunk stored and settled ── index (fresh digests + the parent's for
//!          the rest) ── manifest ── commit (the backup appears only now)
//! ```
//!
//! A whole chunk the mover hands over in its own buffer (`write_owned`) is queued as it is,
//! not copied; the buffer goes back to the mover with a later `write_owned`. Into a directory
//! a worker writes the chunk file without waiting for the disk; the files are synced and
//! named 64 at a time (`repo::deferred`), not one `fdatasync` per chunk (full backup of the
//! bench's image 1.94 → 1.78 s on 2 CPUs).
//!
//! Chunks the plan marks *inherited* (unchanged since the parent) are never written: their
//! digests come from the parent's index. Chunks that receive only zeroes are recorded as zero
//! chunks without being hashed. A fresh chunk of which the backup read less than a quarter is
//! stored as a patch over the parent's chunk (`repo::patch`: the changed bytes, merged with the
//! parent's patch of it), so a scattered change costs what it changed, not whole chunks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crossbeam_channel::{Receiver, Sender};
use roaring::RoaringBitmap;

use super::{BackupTarget, TargetError};
use crate::device::{BlockDevice, FileDevice, FileOptions, IoBuf};
use crate::repo::{
    Blocks, Counts, Deferred, Digest, InProgress, Index, Later, Layout, Manifest, Mode, Patch,
    PatchRef, Repo, Status,
};

/// Deferred chunk files and patches settled at once (`Shared::defer`): 64 chunks are at most
/// 256 MiB written ahead of their sync.
const SETTLE_BATCH: usize = 64;

/// What the generation is, decided at the snapshot point.
#[derive(Debug, Clone)]
pub struct Generation {
    pub id: String,
    pub export: String,
    pub device_size: u64,
    pub block_size: u32,
    pub mode: Mode,
    /// The parent and its index (incremental backups).
    pub parent: Option<(String, Index)>,
    pub full_reason: Option<String>,
    pub blocks: Blocks,
    pub filesystem: Option<String>,
    pub snapshot_time: SystemTime,
    pub started: SystemTime,
}

enum Source {
    /// A whole chunk in one write: the mover's buffer handed over (`write_owned`), or a copy.
    Whole(IoBuf),
    Staged,
}

struct Job {
    chunk: usize,
    source: Source,
}

#[derive(Debug, Default)]
struct Stats {
    zero: AtomicU64,
    new: AtomicU64,
    reused: AtomicU64,
    patched: AtomicU64,
    bytes_read: AtomicU64,
    bytes_stored: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    repo: Repo,
    staging: FileDevice,
    staging_path: std::path::PathBuf,
    layout: Layout,
    digests: Mutex<Vec<Option<Digest>>>,
    /// Patches stored for fresh chunks (their digest above is the parent's).
    patches: Mutex<std::collections::BTreeMap<usize, PatchRef>>,
    /// Chunk files and patches written but not yet synced and in place (`Repo::settle` at
    /// finish); true for a whole chunk (counted new or reused once settled).
    deferred: Mutex<Vec<(Deferred, bool)>>,
    /// Buffers of staged chunks done with, for the next one (at most `spare_max`): a backup
    /// reuses the same few instead of allocating 4 MiB per chunk, which the allocator kept
    /// long after.
    spare: Mutex<Vec<Vec<u8>>>,
    /// Buffers of whole chunks done with (at most `spare_max`): given back to the mover by
    /// `write_owned`, or filled by `write`.
    spare_whole: Mutex<Vec<IoBuf>>,
    spare_max: usize,
    error: Mutex<Option<String>>,
    stats: Stats,
    /// Blocks of fresh chunks that come from the parent's chunk, not from the mover.
    overlay: std::sync::OnceLock<Overlay>,
}

#[derive(Debug)]
struct Overlay {
    inherited: RoaringBitmap,
    block_size: u64,
    parent: Index,
}

impl Overlay {
    /// Byte ranges (relative to the chunk) of chunk `i` taken from the parent.
    fn ranges(&self, layout: &Layout, i: usize) -> Vec<(usize, usize)> {
        let (start, len) = (layout.chunk_offset(i), layout.chunk_len(i) as u64);
        let bs = self.block_size;
        let (first, last) = ((start / bs) as u32, ((start + len - 1) / bs) as u32);
        let mut out: Vec<(usize, usize)> = Vec::new();
        for b in (first..=last).filter(|b| self.inherited.contains(*b)) {
            let (s, e) = (
                (u64::from(b) * bs).max(start),
                ((u64::from(b) + 1) * bs).min(start + len),
            );
            let (s, e) = ((s - start) as usize, (e - start) as usize);
            match out.last_mut() {
                Some(r) if r.1 == s => r.1 = e,
                _ => out.push((s, e)),
            }
        }
        out
    }
}

/// The parts of `0..len` not in `ranges` (sorted, apart).
fn complement(ranges: &[(usize, usize)], len: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(ranges.len() + 1);
    let mut at = 0;
    for &(s, e) in ranges {
        if s > at {
            out.push((at, s));
        }
        at = e;
    }
    if at < len {
        out.push((at, len));
    }
    out
}

/// A repository generation being written.
#[derive(Debug)]
pub struct RepoTarget {
    shared: Arc<Shared>,
    generation: Mutex<Generation>,
    /// Chunks this backup writes (the rest are inherited).
    fresh: Mutex<Option<RoaringBitmap>>,
    received: Vec<AtomicU64>,
    jobs: Mutex<Option<Sender<Job>>>,
    workers: Mutex<Vec<std::thread::JoinHandle<()>>>,
    backup: Mutex<Option<InProgress>>,
}

fn failed(why: String) -> TargetError {
    TargetError::Refused {
        path: "repository".into(),
        why,
    }
}

impl Shared {
    fn fail(&self, why: String) {
        self.error.lock().unwrap().get_or_insert(why);
    }

    /// Fills the parts of chunk `i` this backup did not read with the parent's data.
    fn overlay_parent(&self, i: usize, chunk: &mut [u8]) -> Result<(), String> {
        let Some(o) = self.overlay.get() else {
            return Ok(());
        };
        let ranges = o.ranges(&self.layout, i);
        if ranges.is_empty() || o.parent.is_zero(i) {
            return Ok(()); // nothing inherited, or the parent's chunk reads as zeroes
        }
        let mut parent = self.buffer();
        let loaded = self.repo.load_entry(&o.parent, i, &mut parent);
        if loaded.is_ok() {
            for (s, e) in ranges {
                chunk[s..e].copy_from_slice(&parent[s..e]);
            }
        }
        self.recycle(parent);
        loaded.map_err(|e| format!("reading chunk {i} of the parent: {e}"))
    }

    /// Stores fresh chunk `i` as a patch over the parent's chunk when the bytes read (merged
    /// with the parent's patch of it) are [worth it](Patch::worth_it). False: store it whole.
    fn try_patch(&self, i: usize) -> Result<bool, String> {
        let Some(o) = self.overlay.get() else {
            return Ok(false);
        };
        let inherited = o.ranges(&self.layout, i);
        let (len, offset) = (self.layout.chunk_len(i), self.layout.chunk_offset(i));
        let read = complement(&inherited, len);
        if inherited.is_empty() || read.iter().map(|r| r.1 - r.0).sum::<usize>() >= len / 4 {
            return Ok(false);
        }
        let new = Patch::build(len, &read, |s, buf| {
            self.staging.read_at(buf, offset + s as u64)
        })
        .map_err(|e| format!("reading chunk {i} back from the staging file: {e}"))?;
        let patch = match self.repo.load_patch(&o.parent, i) {
            Ok(Some(old)) => Patch::merge(&old, &new),
            Ok(None) => new,
            Err(e) => return Err(format!("reading the patch of chunk {i} of the parent: {e}")),
        };
        if !patch.worth_it() {
            return Ok(false);
        }
        // Small: written now, synced with the others at finish (`repo::deferred`).
        let encoded = patch.encode();
        let later = (self.repo.store_chunk_later(&encoded))
            .map_err(|e| format!("storing the patch of chunk {i}: {e}"))?;
        let _ = self.staging.trim(offset, len as u64, false);
        self.stats.patched.fetch_add(1, Ordering::Relaxed);
        let r = PatchRef {
            digest: later.digest(),
            len: encoded.len() as u32,
        };
        match later {
            Later::Stored(s) => self.count_stored(&s),
            Later::Pending(d) => self.defer(d, false),
        }
        self.patches.lock().unwrap().insert(i, r);
        self.digests.lock().unwrap()[i] = Some(o.parent.digests[i]);
        Ok(true)
    }

    /// An empty buffer with room for a chunk.
    fn buffer(&self) -> Vec<u8> {
        let spare = self.spare.lock().unwrap().pop();
        spare.unwrap_or_else(|| Vec::with_capacity(self.layout.chunk_size as usize))
    }

    /// A buffer for a whole chunk of `len` bytes: a spare one when it is large enough.
    fn whole_buffer(&self, len: usize) -> IoBuf {
        let spare = self.spare_whole.lock().unwrap().pop();
        let spare = spare.filter(|b| b.capacity() >= len);
        let mut b = spare.unwrap_or_else(|| IoBuf::new(self.layout.chunk_size as usize));
        b.set_len(len);
        b
    }

    fn recycle(&self, mut v: Vec<u8>) {
        let mut spare = self.spare.lock().unwrap();
        if spare.len() < self.spare_max {
            v.clear();
            spare.push(v);
        }
    }

    fn recycle_whole(&self, v: IoBuf) {
        let mut spare = self.spare_whole.lock().unwrap();
        if spare.len() < self.spare_max {
            spare.push(v);
        }
    }

    fn count_stored(&self, s: &crate::repo::Stored) {
        self.stats
            .bytes_stored
            .fetch_add(s.stored_bytes, Ordering::Relaxed);
    }

    fn process(&self, job: Job) {
        let len = self.layout.chunk_len(job.chunk);
        let offset = self.layout.chunk_offset(job.chunk);
        let data = match job.source {
            Source::Whole(b) => return self.store(job.chunk, b, |b| self.recycle_whole(b)),
            Source::Staged => {
                match self.try_patch(job.chunk) {
                    Ok(true) => return,
                    Ok(false) => {}
                    Err(e) => return self.fail(e),
                }
                let mut v = self.buffer();
                v.resize(len, 0);
                if let Err(e) = self.staging.read_at(&mut v, offset) {
                    return self.fail(format!(
                        "reading chunk {} back from the staging file: {e}",
                        job.chunk
                    ));
                }
                let _ = self.staging.trim(offset, len as u64, false);
                if let Err(e) = self.overlay_parent(job.chunk, &mut v) {
                    return self.fail(e);
                }
                v
            }
        };
        self.store(job.chunk, data, |v| self.recycle(v));
    }

    /// Stores fresh chunk `i`; `release` gets its buffer back as soon as the repository is
    /// done with it (`Repo::store_chunk_releasing`). Into a directory the chunk file is synced
    /// with others later (`defer`: one `fdatasync` per chunk kept a worker off the CPU ~2 ms).
    fn store<B: std::ops::Deref<Target = [u8]>>(&self, i: usize, data: B, release: impl FnOnce(B)) {
        match self.repo.store_chunk_releasing(data, release) {
            Ok(Later::Stored(s)) => self.stored(i, s),
            Ok(Later::Pending(d)) => {
                self.digests.lock().unwrap()[i] = Some(d.digest());
                self.defer(d, true);
            }
            Err(e) => self.fail(format!("storing chunk {i}: {e}")),
        }
    }

    /// Keeps `d` for the next settle; settles a full batch now, so that a large backup holds
    /// a bounded list (and `tmp/` a bounded number of files) and its end waits on few.
    fn defer(&self, d: Deferred, whole: bool) {
        let batch = {
            let mut deferred = self.deferred.lock().unwrap();
            deferred.push((d, whole));
            if deferred.len() < SETTLE_BATCH {
                return;
            }
            std::mem::take(&mut *deferred)
        };
        if let Err(e) = self.settle(batch) {
            self.fail(e);
        }
    }

    /// Syncs and names deferred chunk files and patches, and counts them.
    fn settle(&self, batch: Vec<(Deferred, bool)>) -> Result<(), String> {
        let (deferred, whole): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let settled = (self.repo.settle(deferred)).map_err(|e| format!("storing chunks: {e}"))?;
        for (s, whole) in settled.iter().zip(whole) {
            self.count_stored(s);
            if whole {
                let counter = if s.new {
                    &self.stats.new
                } else {
                    &self.stats.reused
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Records fresh chunk `i`, stored.
    fn stored(&self, i: usize, stored: crate::repo::Stored) {
        let s = &self.stats;
        if stored.digest.is_zero() {
            s.zero.fetch_add(1, Ordering::Relaxed);
        } else if stored.new {
            s.new.fetch_add(1, Ordering::Relaxed);
        } else {
            s.reused.fetch_add(1, Ordering::Relaxed);
        }
        self.count_stored(&stored);
        self.digests.lock().unwrap()[i] = Some(stored.digest);
    }
}

fn worker(shared: Arc<Shared>, rx: Receiver<Job>) {
    for job in rx {
        shared.process(job);
    }
}

impl RepoTarget {
    /// Starts generation `g` in `repo` (its chunks are all fresh until [`set_fresh`]).
    ///
    /// [`set_fresh`]: RepoTarget::set_fresh
    pub fn create(repo: Repo, g: Generation, workers: usize) -> Result<RepoTarget, TargetError> {
        let chunk_size = repo.chunk_size();
        let layout = Layout {
            chunk_size,
            device_size: g.device_size,
        };
        if let Some((p, idx)) = &g.parent {
            if idx.chunk_size != chunk_size || idx.device_size != g.device_size {
                return Err(failed(format!(
                    "parent {p} has another chunk or device size"
                )));
            }
        }
        let backup = repo
            .begin(&g.id, g.parent.as_ref().map(|p| p.0.as_str()))
            .map_err(|e| failed(e.to_string()))?;
        let staging_path = repo.tmp_path();
        let f = crate::files::create_private(&staging_path)
            .map_err(|e| failed(format!("staging file: {e}")))?;
        f.set_len(g.device_size)
            .map_err(|e| failed(format!("staging file: {e}")))?;
        drop(f);
        let staging = FileDevice::open(&staging_path, FileOptions::default())
            .map_err(|e| failed(e.to_string()))?;
        let n = layout.chunks();
        // Chunks waiting for a worker: two per CPU, however many workers wait on requests to
        // object storage (each queued chunk is up to 4 MiB of memory).
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let queue = (2 * workers).clamp(1, 2 * cpus);
        let shared = Arc::new(Shared {
            repo,
            staging,
            staging_path,
            layout,
            digests: Mutex::new(vec![None; n]),
            patches: Mutex::default(),
            deferred: Mutex::default(),
            spare: Mutex::default(),
            spare_whole: Mutex::default(),
            spare_max: queue + workers.max(1) + 1,
            error: Mutex::new(None),
            stats: Stats::default(),
            overlay: std::sync::OnceLock::new(),
        });
        let (tx, rx) = crossbeam_channel::bounded(queue);
        let mut handles = Vec::new();
        for _ in 0..workers.max(1) {
            let (s, rx) = (shared.clone(), rx.clone());
            let h = std::thread::Builder::new()
                .name("cowd-chunks".into())
                .spawn(move || worker(s, rx))
                .map_err(|e| failed(e.to_string()))?;
            handles.push(h);
        }
        Ok(RepoTarget {
            shared,
            generation: Mutex::new(g),
            fresh: Mutex::new(None),
            received: (0..n).map(|_| AtomicU64::new(0)).collect(),
            jobs: Mutex::new(Some(tx)),
            workers: Mutex::new(handles),
            backup: Mutex::new(Some(backup)),
        })
    }

    pub fn chunk_size(&self) -> u32 {
        self.shared.layout.chunk_size
    }

    /// Chunks the backup writes; the others take the parent's digest (or are zero chunks
    /// without a parent). Of fresh chunks, the `inherited` blocks (of `block_size` bytes) are
    /// not written by the mover but copied from the parent's chunk. Call before the mover
    /// starts.
    pub fn set_fresh(&self, fresh: RoaringBitmap, inherited: RoaringBitmap, block_size: u32) {
        let parent = self.generation.lock().unwrap().parent.clone();
        if let Some((_, index)) = parent.filter(|_| !inherited.is_empty()) {
            let o = Overlay {
                inherited,
                block_size: u64::from(block_size),
                parent: index,
            };
            let mut need = vec![0u64; self.received.len()];
            for i in &fresh {
                let i = i as usize;
                let taken: usize = o
                    .ranges(&self.shared.layout, i)
                    .iter()
                    .map(|r| r.1 - r.0)
                    .sum();
                need[i] = taken as u64;
            }
            // What the parent provides counts as received from the start.
            for (i, n) in need.into_iter().enumerate().filter(|(_, n)| *n > 0) {
                self.received[i].store(n, Ordering::Release);
            }
            let _ = self.shared.overlay.set(o);
        }
        *self.fresh.lock().unwrap() = Some(fresh);
    }

    /// Updates what the manifest will say about the generation.
    pub fn update(&self, f: impl FnOnce(&mut Generation)) {
        f(&mut self.generation.lock().unwrap());
    }

    fn submit(&self, job: Job) -> Result<(), TargetError> {
        let tx = self.jobs.lock().unwrap().clone();
        match tx {
            Some(tx) => tx
                .send(job)
                .map_err(|_| failed("chunk workers stopped".into())),
            None => Err(failed("the backup is finished".into())),
        }
    }

    fn check(&self) -> Result<(), TargetError> {
        match self.shared.error.lock().unwrap().clone() {
            Some(e) => Err(failed(e)),
            None => Ok(()),
        }
    }

    /// True when `n` bytes at `in_chunk` of chunk `i` are all of it, and none came before.
    fn is_whole(&self, i: usize, in_chunk: u64, n: u64) -> bool {
        in_chunk == 0
            && n == self.shared.layout.chunk_len(i) as u64
            && self.received[i].load(Ordering::Acquire) == 0
    }

    /// Queues chunk `i`, received whole in `buf`.
    fn submit_whole(&self, i: usize, buf: IoBuf) -> Result<(), TargetError> {
        self.received[i].fetch_add(buf.len() as u64, Ordering::AcqRel);
        self.submit(Job {
            chunk: i,
            source: Source::Whole(buf),
        })
    }

    /// Accounts `len` bytes of chunk `i`; queues the chunk when it is complete.
    fn received(&self, i: usize, len: u64) -> Result<(), TargetError> {
        let total = self.received[i].fetch_add(len, Ordering::AcqRel) + len;
        let want = self.shared.layout.chunk_len(i) as u64;
        if total > want {
            return Err(failed(format!(
                "chunk {i} received {total} bytes, more than its {want}"
            )));
        }
        if total == want {
            self.submit(Job {
                chunk: i,
                source: Source::Staged,
            })?;
        }
        Ok(())
    }

    /// Splits `offset..offset+len` into per-chunk pieces: (chunk, offset in it, length).
    fn pieces(&self, offset: u64, len: u64) -> impl Iterator<Item = (usize, u64, u64)> + '_ {
        let cs = u64::from(self.shared.layout.chunk_size);
        let end = offset + len;
        let mut at = offset;
        std::iter::from_fn(move || {
            (at < end).then(|| {
                let i = (at / cs) as usize;
                let n = (cs - at % cs).min(end - at);
                let p = (i, at % cs, n);
                at += n;
                p
            })
        })
    }
}

impl BackupTarget for RepoTarget {
    fn repository(&self) -> Option<&std::path::Path> {
        Some(self.shared.repo.root())
    }

    fn describe(&self) -> String {
        format!(
            "repository {} ({})",
            self.shared.repo.root().display(),
            self.generation.lock().unwrap().id
        )
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), TargetError> {
        self.check()?;
        self.shared
            .stats
            .bytes_read
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        let base = offset;
        for (i, in_chunk, n) in self.pieces(offset, data.len() as u64) {
            let start =
                (i as u64 * u64::from(self.shared.layout.chunk_size) + in_chunk - base) as usize;
            let piece = &data[start..start + n as usize];
            if self.is_whole(i, in_chunk, n) {
                let mut b = self.shared.whole_buffer(piece.len());
                b.copy_from_slice(piece);
                self.submit_whole(i, b)?;
            } else {
                self.shared
                    .staging
                    .write_at(piece, offset + start as u64, false)?;
                self.received(i, n)?;
            }
        }
        Ok(())
    }

    /// A whole chunk is kept as it is and queued (no copy); anything else is [`write`]n.
    ///
    /// [`write`]: BackupTarget::write
    fn write_owned(&self, offset: u64, buf: IoBuf) -> Result<Option<IoBuf>, TargetError> {
        let cs = u64::from(self.shared.layout.chunk_size);
        let i = (offset / cs) as usize;
        if i >= self.received.len() || !self.is_whole(i, offset % cs, buf.len() as u64) {
            self.write(offset, &buf)?;
            return Ok(Some(buf));
        }
        self.check()?;
        let stats = &self.shared.stats;
        stats
            .bytes_read
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.submit_whole(i, buf)?;
        Ok(self.shared.spare_whole.lock().unwrap().pop())
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), TargetError> {
        self.check()?;
        for (i, in_chunk, n) in self.pieces(offset, len) {
            if self.is_whole(i, in_chunk, n) {
                self.received[i].fetch_add(n, Ordering::AcqRel);
                self.shared.stats.zero.fetch_add(1, Ordering::Relaxed);
                self.shared.digests.lock().unwrap()[i] = Some(Digest::ZERO);
            } else {
                // The staging file is sparse: a range never written reads as zeroes.
                self.received(i, n)?;
            }
        }
        Ok(())
    }

    fn finish(&self) -> Result<(), TargetError> {
        drop(self.jobs.lock().unwrap().take());
        for h in self.workers.lock().unwrap().drain(..) {
            let _ = h.join();
        }
        self.check()?;
        let rest = std::mem::take(&mut *self.shared.deferred.lock().unwrap());
        self.shared.settle(rest).map_err(failed)?;
        let g = self.generation.lock().unwrap().clone();
        let fresh = self.fresh.lock().unwrap().clone();
        let digests = self.shared.digests.lock().unwrap().clone();
        let mut index = Index::new(self.shared.layout.chunk_size, g.device_size);
        index.patches = self.shared.patches.lock().unwrap().clone();
        let mut inherited = 0u64;
        for (i, d) in digests.iter().enumerate() {
            let is_fresh = fresh.as_ref().is_none_or(|f| f.contains(i as u32));
            index.digests[i] = match (d, is_fresh, &g.parent) {
                (Some(d), _, _) => *d,
                (None, false, Some((_, parent))) => {
                    inherited += 1;
                    if let Some(p) = parent.patch(i) {
                        index.patches.insert(i, *p);
                    }
                    parent.digests[i]
                }
                (None, false, None) => Digest::ZERO,
                (None, true, _) => {
                    let got = self.received[i].load(Ordering::Acquire);
                    let want = self.shared.layout.chunk_len(i);
                    return Err(failed(format!(
                        "chunk {i} is incomplete: {got} of {want} bytes received"
                    )));
                }
            };
        }
        let s = &self.shared.stats;
        let counts = Counts {
            chunks_total: index.digests.len() as u64,
            chunks_zero: (0..index.digests.len())
                .filter(|&i| index.is_zero(i))
                .count() as u64,
            chunks_new: s.new.load(Ordering::Relaxed),
            chunks_reused: s.reused.load(Ordering::Relaxed),
            chunks_inherited: inherited,
            chunks_patched: s.patched.load(Ordering::Relaxed),
            bytes_read: s.bytes_read.load(Ordering::Relaxed),
            bytes_new_stored: s.bytes_stored.load(Ordering::Relaxed),
        };
        let ended = SystemTime::now();
        let manifest = Manifest {
            id: g.id.clone(),
            export: g.export.clone(),
            device_size: g.device_size,
            block_size: g.block_size,
            chunk_size: index.chunk_size,
            snapshot_time: g.snapshot_time,
            started_time: g.started,
            ended_time: ended,
            duration_s: ended
                .duration_since(g.started)
                .unwrap_or_default()
                .as_secs_f64(),
            mode: g.mode,
            parent: g.parent.as_ref().map(|p| p.0.clone()),
            full_reason: g.full_reason.clone(),
            blocks: g.blocks,
            filesystem: g.filesystem.clone(),
            counts,
            index_sha256: String::new(),
            status: Status::Complete,
        };
        let backup = self
            .backup
            .lock()
            .unwrap()
            .take()
            .ok_or_else(|| failed("already finished".into()))?;
        backup
            .commit(&manifest, &index)
            .map_err(|e| failed(e.to_string()))?;
        let _ = std::fs::remove_file(&self.shared.staging_path);
        Ok(())
    }

    fn abort(&self) {
        drop(self.jobs.lock().unwrap().take());
        for h in self.workers.lock().unwrap().drain(..) {
            let _ = h.join();
        }
        // Chunk files and patches written but never settled: their files go.
        self.shared.deferred.lock().unwrap().clear();
        if let Some(b) = self.backup.lock().unwrap().take() {
            b.abort();
        }
        let _ = std::fs::remove_file(&self.shared.staging_path);
    }
}

#[cfg(test)]
#[path = "repo_tests.rs"]
mod tests;
