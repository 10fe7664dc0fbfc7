//! [`RepoImage`]: one generation of a repository as a read-only [`BlockDevice`].
//!
//! Reads fetch the chunks they touch (verified against their digests on load) through a small
//! cache of decompressed chunks; zero chunks read as zeroes and are reported as holes. Threads
//! that want a chunk another thread is loading wait for that load rather than repeat it, so
//! readers working on neighbouring pieces in parallel load each chunk once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crate::device::{
    BlockDevice, Capabilities, DeviceError, ErrorKind, Extent, Op, Result, push_extent,
};
use crate::repo::{Index, Lease, Repo};

const CACHE_CHUNKS: usize = 16;

/// Decompressed chunks, least recently used first, and the chunks being loaded.
#[derive(Debug, Default)]
struct Cache {
    chunks: Vec<(usize, Arc<Vec<u8>>)>,
    loading: Vec<usize>,
    /// Buffers of evicted chunks, for the next loads: a fresh 4 MiB buffer costs a page fault
    /// per 4 KiB, more than the copy into it.
    spare: Vec<Vec<u8>>,
}

/// A generation, readable like a device.
#[derive(Debug)]
pub struct RepoImage {
    repo: Repo,
    index: Index,
    cache: Mutex<Cache>,
    /// Signalled when a load ends (whether it worked or not).
    load_ended: Condvar,
    /// Chunks loaded from the repository so far.
    loaded: AtomicU64,
    /// Keeps the backup from being removed while the image can be read.
    _lease: Option<Lease>,
}

impl RepoImage {
    /// An image of the backup `index` describes; `lease` (when given) protects it from
    /// removal for as long as the image lives.
    pub fn new(repo: Repo, index: Index, lease: Option<Lease>) -> RepoImage {
        RepoImage {
            repo,
            index,
            cache: Mutex::new(Cache::default()),
            load_ended: Condvar::new(),
            loaded: AtomicU64::new(0),
            _lease: lease,
        }
    }

    /// The generation's index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Chunks loaded from the repository so far (cache hits and zero chunks not counted).
    pub fn chunks_loaded(&self) -> u64 {
        self.loaded.load(Ordering::Relaxed)
    }

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
            .load_chunk(&self.index.digests[i], len, &mut data)
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
        self.index.device_size
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
        let cs = u64::from(self.index.chunk_size);
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let i = (at / cs) as usize;
            let in_chunk = (at % cs) as usize;
            let n = (self.index.chunk_len(i) - in_chunk).min(buf.len() - done);
            if self.index.digests[i].is_zero() {
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
        let cs = u64::from(self.index.chunk_size);
        let mut out = Vec::new();
        let mut at = offset;
        let end = offset + len;
        while at < end {
            let i = (at / cs) as usize;
            let n = (cs - at % cs).min(end - at);
            let zero = self.index.digests[i].is_zero();
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
