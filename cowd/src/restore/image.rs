//! [`RepoImage`]: one generation of a repository as a read-only [`BlockDevice`].
//!
//! Reads fetch the chunks they touch (verified against their digests on load) through a small
//! cache of decompressed chunks; zero chunks read as zeroes and are reported as holes. Threads
//! that want a chunk another thread is loading wait for that load rather than repeat it, so
//! readers working on neighbouring pieces in parallel load each chunk once.
//!
//! Read-ahead: when reads move from one chunk to the next, the following [`READ_AHEAD`] chunks
//! are loaded by two threads of the image's own, so a sequential reader (a copy of the served
//! generation, a file read from a backup) finds them loaded instead of waiting for each GET
//! of a repository in object storage, or each decompression, in turn. Chunks of object
//! storage are also kept in the daemon's local chunk cache (`Repo::load_chunk_kept`).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crate::device::{
    BlockDevice, Capabilities, DeviceError, ErrorKind, Extent, Op, Result, push_extent,
};
use crate::repo::{Index, Lease, Repo};

const CACHE_CHUNKS: usize = 16;
/// Chunks loaded ahead of a sequential reader (a quarter of the cache, so that read-ahead
/// never pushes out what the readers are still on).
pub const READ_AHEAD: usize = 4;
const READ_AHEAD_THREADS: usize = 2;

/// Decompressed chunks, least recently used first, and the chunks being loaded.
#[derive(Debug, Default)]
struct Cache {
    chunks: Vec<(usize, Arc<Vec<u8>>)>,
    loading: Vec<usize>,
    /// Chunks handed to the read-ahead threads, not yet being loaded.
    queued: Vec<usize>,
    /// Buffers of evicted chunks, for the next loads: a fresh 4 MiB buffer costs a page fault
    /// per 4 KiB, more than the copy into it.
    spare: Vec<Vec<u8>>,
}

/// What the readers and the read-ahead threads share.
#[derive(Debug)]
struct Shared {
    repo: Repo,
    index: Index,
    cache: Mutex<Cache>,
    /// Signalled when a load ends (whether it worked or not).
    load_ended: Condvar,
    /// Chunks loaded from the repository so far.
    loaded: AtomicU64,
    /// The image is gone: the read-ahead threads drop what is queued.
    closed: AtomicBool,
    /// Keeps the backup from being removed while the image can be read.
    _lease: Option<Lease>,
}

/// A generation, readable like a device.
#[derive(Debug)]
pub struct RepoImage {
    shared: Arc<Shared>,
    /// The chunk read last (`usize::MAX`: none yet).
    last: AtomicUsize,
    /// To the read-ahead threads, started at the first sequential read; they end when it is
    /// dropped (with the image), after the load they are in.
    ahead: Mutex<Option<crossbeam_channel::Sender<usize>>>,
}

impl RepoImage {
    /// An image of the backup `index` describes; `lease` (when given) protects it from
    /// removal for as long as the image lives.
    pub fn new(repo: Repo, index: Index, lease: Option<Lease>) -> RepoImage {
        RepoImage {
            shared: Arc::new(Shared {
                repo,
                index,
                cache: Mutex::new(Cache::default()),
                load_ended: Condvar::new(),
                loaded: AtomicU64::new(0),
                closed: AtomicBool::new(false),
                _lease: lease,
            }),
            last: AtomicUsize::new(usize::MAX),
            ahead: Mutex::new(None),
        }
    }

    /// The generation's index.
    pub fn index(&self) -> &Index {
        &self.shared.index
    }

    /// Chunks loaded from the repository so far (cache hits and zero chunks not counted;
    /// loads ahead of the readers counted).
    pub fn chunks_loaded(&self) -> u64 {
        self.shared.loaded.load(Ordering::Relaxed)
    }

    /// Chunk `i`, for a reader: when the previous read was on chunk `i - 1`, the chunks after
    /// `i` are loaded ahead.
    fn chunk(&self, i: usize) -> Result<Arc<Vec<u8>>> {
        let prev = self.last.swap(i, Ordering::Relaxed);
        // Not `wrapping_add`: the first read (no previous, `usize::MAX`) of chunk 0 would count
        // as sequential, and the test that says it does not failed when the read-ahead beat it.
        if prev.checked_add(1) == Some(i) {
            self.read_ahead(i);
        }
        self.shared.chunk(i)
    }

    /// Hands the chunks after `i` that are neither loaded nor on their way to the read-ahead
    /// threads.
    fn read_ahead(&self, i: usize) {
        let index = &self.shared.index;
        let end = (i + 1 + READ_AHEAD).min(index.digests.len());
        let wanted: Vec<usize> = {
            let mut cache = self.shared.cache.lock().unwrap();
            let wanted: Vec<usize> = (i + 1..end)
                .filter(|&j| {
                    !index.is_zero(j)
                        && !cache.queued.contains(&j)
                        && !cache.loading.contains(&j)
                        && !cache.chunks.iter().any(|c| c.0 == j)
                })
                .collect();
            cache.queued.extend(&wanted);
            wanted
        };
        if wanted.is_empty() {
            return;
        }
        let mut ahead = self.ahead.lock().unwrap();
        let tx = ahead.get_or_insert_with(|| {
            let (tx, rx) = crossbeam_channel::unbounded::<usize>();
            for n in 0..READ_AHEAD_THREADS {
                let (rx, shared) = (rx.clone(), self.shared.clone());
                let spawned = std::thread::Builder::new()
                    .name(format!("read-ahead-{n}"))
                    .spawn(move || {
                        for j in rx {
                            if shared.closed.load(Ordering::Relaxed) {
                                break;
                            }
                            shared.cache.lock().unwrap().queued.retain(|&q| q != j);
                            // A failed load is the reader's to report, when it gets there.
                            let _ = shared.chunk(j);
                        }
                    });
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "no read-ahead thread");
                }
            }
            tx
        });
        for j in wanted {
            let _ = tx.send(j);
        }
    }
}

impl Drop for RepoImage {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Relaxed);
    }
}

impl Shared {
    fn chunk(&self, i: usize) -> Result<Arc<Vec<u8>>> {
        let mut cache = self.cache.lock().unwrap();
        loop {
            if let Some(p) = cache.chunks.iter().position(|c| c.0 == i) {
                let hit = cache.chunks.remove(p);
                cache.chunks.push(hit.clone());
                return Ok(hit.1);
            }
            if !cache.loading.contains(&i) {
                break;
            }
            // Another thread is loading it; if that load fails, this one tries for itself.
            cache = self.load_ended.wait(cache).unwrap();
        }
        cache.loading.push(i);
        let buf = cache.spare.pop().unwrap_or_default();
        drop(cache);
        let loaded = self.load(i, buf);
        let mut cache = self.cache.lock().unwrap();
        cache.loading.retain(|&c| c != i);
        if let Ok(data) = &loaded {
            if cache.chunks.len() >= CACHE_CHUNKS {
                let (_, old) = cache.chunks.remove(0);
                // Unless a reader still holds it.
                if let Ok(old) = Arc::try_unwrap(old) {
                    cache.spare.push(old);
                }
            }
            cache.chunks.push((i, data.clone()));
        }
        drop(cache);
        self.load_ended.notify_all();
        loaded
    }

    /// Chunk `i` from the repository, into `data`.
    fn load(&self, i: usize, mut data: Vec<u8>) -> Result<Arc<Vec<u8>>> {
        let len = self.index.chunk_len(i);
        self.repo
            .load_entry_kept(&self.index, i, &mut data)
            .map_err(|e| DeviceError {
                kind: ErrorKind::Io,
                op: Op::Read,
                offset: self.index.chunk_offset(i),
                len: len as u64,
                source: Some(std::io::Error::other(e.to_string())),
            })?;
        self.loaded.fetch_add(1, Ordering::Relaxed);
        Ok(Arc::new(data))
    }
}

impl BlockDevice for RepoImage {
    fn size(&self) -> u64 {
        self.shared.index.device_size
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            read_only: true,
            extents: true,
            multi_conn: true,
            ..Capabilities::default()
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let cs = u64::from(self.shared.index.chunk_size);
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let i = (at / cs) as usize;
            let in_chunk = (at % cs) as usize;
            let n = (self.shared.index.chunk_len(i) - in_chunk).min(buf.len() - done);
            if self.shared.index.is_zero(i) {
                buf[done..done + n].fill(0);
            } else {
                let c = self.chunk(i)?;
                buf[done..done + n].copy_from_slice(&c[in_chunk..in_chunk + n]);
            }
            done += n;
        }
        Ok(())
    }

    fn extents(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        let cs = u64::from(self.shared.index.chunk_size);
        let mut out = Vec::new();
        let mut at = offset;
        let end = offset + len;
        while at < end {
            let i = (at / cs) as usize;
            let n = (cs - at % cs).min(end - at);
            let zero = self.shared.index.is_zero(i);
            push_extent(
                &mut out,
                Extent {
                    length: n,
                    hole: zero,
                    zero,
                },
            );
            at += n;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::testutil::{backup, data, repo};
    use std::time::{Duration, Instant};

    /// Waits until `img` has loaded `n` chunks; false if it never does within 10 s.
    fn loads_reach(img: &RepoImage, n: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while img.chunks_loaded() < n {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    #[test]
    fn a_sequential_reader_finds_the_next_chunks_loaded_ahead() {
        let (_d, r) = repo();
        let image = data(12, 1);
        let index = backup(&r, "a", None, 1, &image);
        let cs = r.chunk_size() as usize;
        let img = RepoImage::new(r, index, None);
        let mut buf = vec![0u8; cs];
        img.read_at(&mut buf, 0).unwrap();
        assert_eq!(img.chunks_loaded(), 1, "one read, no read-ahead yet");
        // From chunk 0 into chunk 1: sequential, so 2..=1+READ_AHEAD are loaded ahead.
        img.read_at(&mut buf, cs as u64).unwrap();
        assert!(loads_reach(&img, 2 + READ_AHEAD as u64));
        for i in 2..2 + READ_AHEAD {
            // Already loaded: each read only extends the read-ahead by one chunk.
            img.read_at(&mut buf, (i * cs) as u64).unwrap();
            assert_eq!(buf, image[i * cs..(i + 1) * cs], "chunk {i}");
        }
        assert!(loads_reach(&img, (2 + 2 * READ_AHEAD) as u64));
        // It never runs past the end.
        for i in 2 + READ_AHEAD..12 {
            img.read_at(&mut buf, (i * cs) as u64).unwrap();
            assert_eq!(buf, image[i * cs..(i + 1) * cs], "chunk {i}");
        }
        assert_eq!(img.chunks_loaded(), 12);
    }

    #[test]
    fn scattered_reads_load_only_what_they_touch() {
        let (_d, r) = repo();
        let image = data(12, 2);
        let index = backup(&r, "a", None, 1, &image);
        let cs = r.chunk_size() as u64;
        let img = RepoImage::new(r, index, None);
        let mut buf = vec![0u8; 100];
        for i in [5u64, 2, 9, 0, 7] {
            img.read_at(&mut buf, i * cs + 10).unwrap();
            assert_eq!(buf, image[(i * cs + 10) as usize..][..100]);
        }
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(img.chunks_loaded(), 5);
    }
}
