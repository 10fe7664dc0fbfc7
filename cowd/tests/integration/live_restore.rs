//! Live restore (`cowd::restore::live`) against a model, over a destination that loses what
//! was not flushed.
//!
//! - `live_restore_matches_a_disk_model` (property, 256 cases): random reads, whole-block and
//!   partial (512-byte) writes with or without FUA, write-zeroes, flushes, filler steps, the
//!   end of the restore, and crashes (the destination falls back to what was made durable, the
//!   map is loaded from its file, as a restart does). The model is a disk's: between crashes a
//!   read returns exactly the last write (or the generation where none was); after a crash a
//!   sector holds its content at the last flush or FUA, or a later write; so no write the
//!   client had flushed is lost and repository data never comes back over it (DESIGN.md's
//!   durability, issue 8 item 2). Random: chunk size, destination larger than the backup or
//!   not, created for the restore (zero chunks need no write) or holding old data.
//! - `concurrent_clients_and_filler`: writers on disjoint ranges, readers and two filler
//!   threads at once; every chunk is loaded at most once, the result is exact.
//! - `an_unreadable_chunk_fails_only_its_blocks`: EIO for the blocks of a missing chunk,
//!   everything else served, whole-block writes to it still work, the filler reports it.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cowd::device::{BlockDevice, Capabilities, MemoryDevice, Result as DevResult, ZeroFlags};
use cowd::restore::live::{By, LiveDevice};
use cowd::restore::restored::RestoredMap;
use cowd::restore::source::ChunkSource;
use cowd::restore::{Filled, Filler};
use proptest::prelude::*;

const BLOCK: u32 = 4096;
const SECTOR: u64 = 512;

/// A generation in memory; chunks can be made to fail, loads are counted.
#[derive(Debug)]
struct MemSource {
    image: Vec<u8>,
    chunk: u32,
    zero: Vec<bool>,
    failing: Mutex<BTreeSet<usize>>,
    loads: Vec<AtomicU64>,
}

impl MemSource {
    fn new(image: Vec<u8>, chunk: u32) -> MemSource {
        let zero: Vec<bool> = image
            .chunks(chunk as usize)
            .map(|c| c.iter().all(|&b| b == 0))
            .collect();
        let loads = zero.iter().map(|_| AtomicU64::new(0)).collect();
        MemSource {
            image,
            chunk,
            zero,
            failing: Mutex::default(),
            loads,
        }
    }
}

impl ChunkSource for MemSource {
    fn chunk_size(&self) -> u32 {
        self.chunk
    }
    fn device_size(&self) -> u64 {
        self.image.len() as u64
    }
    fn is_zero(&self, i: usize) -> bool {
        self.zero[i]
    }
    fn load(&self, i: usize, out: &mut Vec<u8>) -> Result<(), String> {
        if self.failing.lock().unwrap().contains(&i) {
            return Err(format!("chunk {i} is missing from the repository"));
        }
        self.loads[i].fetch_add(1, Ordering::Relaxed);
        let c = self.chunk as usize;
        out.clear();
        out.extend_from_slice(&self.image[i * c..((i + 1) * c).min(self.image.len())]);
        Ok(())
    }
}

/// A memory device that keeps, besides what it reads back, what a power cut would leave:
/// everything up to the last flush, plus FUA writes.
#[derive(Debug)]
struct Volatile {
    now: MemoryDevice,
    durable: Mutex<Vec<u8>>,
}

impl Volatile {
    fn new(content: &[u8]) -> Volatile {
        let now = MemoryDevice::new(content.len() as u64);
        now.write_at(content, 0, false).unwrap();
        Volatile {
            now,
            durable: Mutex::new(content.to_vec()),
        }
    }
    fn durable(&self) -> Vec<u8> {
        self.durable.lock().unwrap().clone()
    }
    fn persist(&self, offset: u64, len: u64) {
        let mut buf = vec![0; len as usize];
        self.now.read_at(&mut buf, offset).unwrap();
        self.durable.lock().unwrap()[offset as usize..(offset + len) as usize]
            .copy_from_slice(&buf);
    }
}

impl BlockDevice for Volatile {
    fn size(&self) -> u64 {
        self.now.size()
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            flush: true,
            fua: true,
            zero: true,
            trim: true,
            ..Capabilities::default()
        }
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> DevResult<()> {
        self.now.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> DevResult<()> {
        self.now.write_at(buf, offset, false)?;
        if fua {
            self.persist(offset, buf.len() as u64);
        }
        Ok(())
    }
    fn write_zeroes(&self, offset: u64, len: u64, flags: ZeroFlags) -> DevResult<()> {
        self.now.write_zeroes(offset, len, flags)?;
        if flags.fua {
            self.persist(offset, len);
        }
        Ok(())
    }
    fn trim(&self, offset: u64, len: u64, _: bool) -> DevResult<()> {
        self.now.trim(offset, len, false)
    }
    fn flush(&self) -> DevResult<()> {
        self.persist(0, self.size());
        Ok(())
    }
}

/// What a sector holds: the generation's data, or a client write's fill byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Content {
    Gen,
    Val(u8),
}

/// A disk's model, per sector.
#[derive(Debug, Clone)]
struct Sector {
    now: Content,
    durable: Content,
    /// Written since the last flush (or FUA of this sector), oldest first.
    unflushed: Vec<Content>,
}

#[derive(Debug, Clone)]
enum Step {
    Read {
        at: u16,
        sectors: u8,
    },
    Write {
        at: u16,
        sectors: u8,
        whole: bool,
        fua: bool,
        zero: bool,
    },
    Flush,
    Fill {
        chunk: u16,
    },
    Crash,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (any::<u16>(), 1..24u8).prop_map(|(at, sectors)| Step::Read { at, sectors }),
        6 => (any::<u16>(), 1..24u8, any::<bool>(), prop::bool::weighted(0.2), prop::bool::weighted(0.15))
            .prop_map(|(at, sectors, whole, fua, zero)| Step::Write { at, sectors, whole, fua, zero }),
        1 => Just(Step::Flush),
        3 => any::<u16>().prop_map(|chunk| Step::Fill { chunk }),
        1 => Just(Step::Crash),
    ]
}

/// A generation of `len` bytes with varied data and some all-zero chunks.
fn generation(len: usize, chunk: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut image: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
    for c in image.chunks_mut(chunk) {
        if rng.u8(..4) == 0 {
            c.fill(0);
        }
    }
    image
}

struct Rig {
    dir: tempfile::TempDir,
    source: Arc<MemSource>,
    dest: Arc<Volatile>,
    dev: Arc<LiveDevice>,
    fresh: bool,
    done: bool,
}

impl Rig {
    fn new(source: Arc<MemSource>, dest_len: usize, fresh: bool, seed: u64) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let old: Vec<u8> = if fresh {
            vec![0; dest_len]
        } else {
            let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
            (0..dest_len).map(|_| rng.u8(..)).collect()
        };
        let dest = Arc::new(Volatile::new(&old));
        let map = RestoredMap::new(
            BLOCK,
            dest_len.div_ceil(BLOCK as usize) as u32,
            Some(dir.path().join("r.map")),
        );
        LiveDevice::premark(&map, source.as_ref(), fresh);
        let dev = Arc::new(LiveDevice::new(
            dest.clone(),
            Some(source.clone()),
            source.chunk,
            source.image.len() as u64,
            map,
            fresh,
        ));
        dev.flush().unwrap();
        Rig {
            dir,
            source,
            dest,
            dev,
            fresh,
            done: false,
        }
    }

    /// Power cut and restart: the destination keeps what was durable, the map its file.
    fn crash(&mut self) {
        let content = self.dest.durable();
        self.dest = Arc::new(Volatile::new(&content));
        if self.done {
            return;
        }
        let blocks = content.len().div_ceil(BLOCK as usize) as u32;
        let map = RestoredMap::load(&self.dir.path().join("r.map"), BLOCK, blocks).unwrap();
        self.dev = Arc::new(LiveDevice::new(
            self.dest.clone(),
            Some(self.source.clone()),
            self.source.chunk,
            self.source.image.len() as u64,
            map,
            self.fresh,
        ));
    }

    fn device(&self) -> Arc<dyn BlockDevice> {
        if self.done {
            self.dest.clone()
        } else {
            self.dev.clone()
        }
    }
}

/// The bytes of sector `s` holding `c`.
fn bytes(c: Content, s: u64, image: &[u8]) -> Vec<u8> {
    match c {
        Content::Gen => image[(s * SECTOR) as usize..((s + 1) * SECTOR) as usize].to_vec(),
        Content::Val(v) => vec![v; SECTOR as usize],
    }
}

/// Sector `s` of `buf` (read from sector `first`).
fn sector(buf: &[u8], first: u64, s: u64) -> &[u8] {
    let at = ((s - first) * SECTOR) as usize;
    &buf[at..at + SECTOR as usize]
}

fn run(chunk_kib: u32, chunks: usize, extra: usize, fresh: bool, seed: u64, steps: &[Step]) {
    let chunk = chunk_kib * 1024;
    // Not always a whole number of blocks.
    let gen_len = (chunks * chunk as usize)
        .saturating_sub((seed as usize % 5) * SECTOR as usize)
        .max(chunk as usize);
    let image = generation(gen_len, chunk as usize, seed);
    let source = Arc::new(MemSource::new(image.clone(), chunk));
    let dest_len = gen_len + extra;
    let mut rig = Rig::new(source, dest_len, fresh, seed);
    let sectors = dest_len as u64 / SECTOR;
    // Beyond the generation the destination keeps its own data: the model starts from it.
    let beyond: Vec<u8> = rig.dest.durable()[gen_len..].to_vec();
    let mut image_ext = image.clone();
    image_ext.extend_from_slice(&beyond);
    let mut model: Vec<Sector> = (0..sectors)
        .map(|_| Sector {
            now: Content::Gen,
            durable: Content::Gen,
            unflushed: Vec::new(),
        })
        .collect();
    let mut fill: u8 = 0;
    for st in steps {
        match *st {
            Step::Read { at, sectors: n } => {
                let first = u64::from(at) % sectors;
                let n = u64::from(n).min(sectors - first);
                let mut buf = vec![0; (n * SECTOR) as usize];
                rig.device().read_at(&mut buf, first * SECTOR).unwrap();
                for s in first..first + n {
                    let want = bytes(model[s as usize].now, s, &image_ext);
                    assert!(sector(&buf, first, s) == want, "sector {s} after {st:?}");
                }
            }
            Step::Write {
                at,
                sectors: n,
                whole,
                fua,
                zero,
            } => {
                let per_block = u64::from(BLOCK) / SECTOR;
                let (first, n) = if whole {
                    let b = (u64::from(at) % sectors) / per_block * per_block;
                    let n = (u64::from(n).div_ceil(per_block) * per_block).min(sectors - b);
                    (b, n)
                } else {
                    let f = u64::from(at) % sectors;
                    (f, u64::from(n).min(sectors - f))
                };
                fill = fill.wrapping_add(1).max(1);
                let v = if zero { 0 } else { fill };
                if zero {
                    let flags = ZeroFlags {
                        fua,
                        ..ZeroFlags::default()
                    };
                    rig.device()
                        .write_zeroes(first * SECTOR, n * SECTOR, flags)
                        .unwrap();
                } else {
                    let buf = vec![v; (n * SECTOR) as usize];
                    rig.device().write_at(&buf, first * SECTOR, fua).unwrap();
                }
                for s in &mut model[first as usize..(first + n) as usize] {
                    s.now = Content::Val(v);
                    if fua {
                        s.durable = s.now;
                        s.unflushed.clear();
                    } else {
                        s.unflushed.push(s.now);
                    }
                }
            }
            Step::Flush => {
                rig.device().flush().unwrap();
                for s in &mut model {
                    s.durable = s.now;
                    s.unflushed.clear();
                }
            }
            Step::Fill { chunk: c } => {
                if !rig.done {
                    let i = usize::from(c) % rig.dev.chunks();
                    rig.dev.restore_chunk(i, By::Filler).unwrap();
                    if rig.dev.map().is_complete() {
                        rig.dev.finish().unwrap();
                        rig.done = true;
                        // finish persists: the destination is flushed.
                        for s in &mut model {
                            s.durable = s.now;
                            s.unflushed.clear();
                        }
                    }
                }
            }
            Step::Crash => {
                rig.crash();
                let mut buf = vec![0; dest_len];
                rig.device().read_at(&mut buf, 0).unwrap();
                for (i, s) in model.iter_mut().enumerate() {
                    let got = sector(&buf, 0, i as u64);
                    let allowed = std::iter::once(s.durable).chain(s.unflushed.iter().copied());
                    let Some(got) = allowed
                        .into_iter()
                        .find(|&c| bytes(c, i as u64, &image_ext) == got)
                    else {
                        panic!(
                            "sector {i} after a crash holds none of {:?} or {:?} (first byte {})",
                            s.durable, s.unflushed, got[0]
                        );
                    };
                    s.now = got;
                    s.durable = got;
                    s.unflushed.clear();
                }
            }
        }
    }
    // The restore ends: every chunk filled, the destination is the model.
    if !rig.done {
        for i in 0..rig.dev.chunks() {
            rig.dev.restore_chunk(i, By::Filler).unwrap();
        }
        rig.dev.finish().unwrap();
    }
    let mut buf = vec![0; dest_len];
    rig.dest.read_at(&mut buf, 0).unwrap();
    for (i, s) in model.iter().enumerate() {
        let want = bytes(s.now, i as u64, &image_ext);
        assert!(sector(&buf, 0, i as u64) == want, "sector {i} at the end");
    }
}

fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cases(256))]
    #[test]
    fn live_restore_matches_a_disk_model(
        chunk_kib in prop_oneof![Just(4u32), Just(16), Just(64)],
        chunks in 1..12usize,
        extra in prop_oneof![Just(0usize), Just(8192), Just(12800)],
        fresh in any::<bool>(),
        seed in any::<u64>(),
        steps in prop::collection::vec(step(), 1..60),
    ) {
        run(chunk_kib, chunks, extra, fresh, seed, &steps);
    }
}

#[test]
fn a_flushed_write_survives_a_crash_before_the_filler_persists() {
    // The filler restored the chunk (bits in memory only), the client wrote and flushed, the
    // power went: the flush must have persisted the map, or the block comes back from the
    // repository over the client's data.
    run(
        16,
        2,
        0,
        false,
        7,
        &[
            Step::Fill { chunk: 0 },
            Step::Write {
                at: 0,
                sectors: 8,
                whole: true,
                fua: false,
                zero: false,
            },
            Step::Flush,
            Step::Crash,
            Step::Read { at: 0, sectors: 16 },
        ],
    );
}

#[test]
fn concurrent_clients_and_filler() {
    let chunk = 16 << 10;
    let image = generation(64 * chunk, chunk, 42);
    let source = Arc::new(MemSource::new(image.clone(), chunk as u32));
    let rig = Rig::new(source.clone(), image.len(), false, 42);
    let dev = rig.dev.clone();
    let filler = Filler::new(dev.clone(), None);
    let slice = image.len() / 4;
    let expected = Mutex::new(image.clone());
    std::thread::scope(|s| {
        s.spawn(|| assert_eq!(filler.run(2), Filled::Complete));
        for w in 0..4 {
            let (dev, expected) = (dev.clone(), &expected);
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(w as u64);
                for _ in 0..200 {
                    let len = rng.usize(1..16) * SECTOR as usize;
                    let at =
                        w * slice + rng.usize(..(slice - len) / SECTOR as usize) * SECTOR as usize;
                    if rng.bool() {
                        let buf = vec![rng.u8(1..); len];
                        dev.write_at(&buf, at as u64, false).unwrap();
                        expected.lock().unwrap()[at..at + len].copy_from_slice(&buf);
                    } else {
                        let mut buf = vec![0; len];
                        dev.read_at(&mut buf, at as u64).unwrap();
                        assert_eq!(buf, expected.lock().unwrap()[at..at + len]);
                    }
                }
            });
        }
    });
    dev.finish().unwrap();
    let mut buf = vec![0; image.len()];
    rig.dest.read_at(&mut buf, 0).unwrap();
    assert!(
        buf == *expected.lock().unwrap(),
        "the destination differs from the model"
    );
    for (i, l) in source.loads.iter().enumerate() {
        assert!(
            l.load(Ordering::Relaxed) <= 1,
            "chunk {i} was loaded more than once"
        );
    }
}

#[test]
fn an_unreadable_chunk_fails_only_its_blocks() {
    let chunk: usize = 16 << 10;
    let mut image = generation(8 * chunk, chunk, 3);
    image[3 * chunk] = 1; // chunk 3 holds data
    let source = Arc::new(MemSource::new(image.clone(), chunk as u32));
    source.failing.lock().unwrap().insert(3);
    let rig = Rig::new(source.clone(), image.len(), true, 3);
    let dev = rig.dev.clone();
    let mut buf = vec![0; 4096];
    let e = dev.read_at(&mut buf, 3 * chunk as u64 + 4096).unwrap_err();
    assert!(e.to_string().contains("missing from the repository"), "{e}");
    dev.read_at(&mut buf, 2 * chunk as u64).unwrap();
    assert_eq!(buf, image[2 * chunk..2 * chunk + 4096]);
    // A whole-block write needs no repository; a partial one does.
    dev.write_at(&[9; 4096], 3 * chunk as u64, false).unwrap();
    dev.read_at(&mut buf, 3 * chunk as u64).unwrap();
    assert_eq!(buf, [9; 4096]);
    assert!(
        dev.write_at(&[9; 512], 3 * chunk as u64 + 8192, false)
            .is_err()
    );
    let filler = Filler::new(dev.clone(), None);
    assert_eq!(filler.run(2), Filled::Incomplete(1));
    assert_eq!(dev.failures().keys().copied().collect::<Vec<_>>(), vec![3]);
    // The repository comes back: a read retries and the restore can finish.
    source.failing.lock().unwrap().clear();
    dev.read_at(&mut buf, 3 * chunk as u64 + 8192).unwrap();
    assert_eq!(buf, image[3 * chunk + 8192..3 * chunk + 12288]);
    assert!(dev.failures().is_empty());
    assert_eq!(Filler::new(dev.clone(), None).run(1), Filled::Complete);
    dev.finish().unwrap();
}
