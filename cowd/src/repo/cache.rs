//! [`ChunkCache`]: chunk objects fetched from object storage, kept in a bounded local directory
//! so that reading them again costs a local read, not a GET.
//!
//! ```text
//! DIR/<repository id>/<digest hex>     the object's bytes as stored (sealed when encrypted)
//! DIR/tmp/                             files being written (removed at open)
//! ```
//!
//! An entry is the object exactly as fetched: an encrypted repository's chunks stay sealed,
//! so the cache holds nothing readable without the key. Entries are put only after the chunk
//! was checked (header, seal, name), and are checked again on every read like any chunk, so
//! a damaged or stale entry is a miss: the caller removes it and fetches the object again.
//! Nothing is fsynced; a crash at worst loses entries.
//!
//! Readers hand what they fetched to a writer thread of the cache ([`ChunkCache::put_later`])
//! and go on: writing 4 MiB into the cache in the reader's path cost a third of a served
//! generation's first read from the store. When the writer falls behind (a queue of
//! [`WRITE_QUEUE`] chunks), chunks are not kept.
//!
//! The total size stays under the limit by evicting the least recently used entries. The
//! order lives in memory; at open it is rebuilt from the files' modification times.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use super::{Digest, held};

/// The cache's size when none is configured: 256 chunks of 4 MiB.
pub const DEFAULT_CACHE_SIZE: u64 = 1 << 30;

/// The daemon's cache (none until [`configure`] is called with a non-zero size).
static GLOBAL: Mutex<Option<Arc<ChunkCache>>> = Mutex::new(None);

/// Sets up the chunk cache of repositories in object storage: `limit` bytes in `dir`, or no
/// cache for a limit of 0. The daemon calls it at start.
pub fn configure(dir: &Path, limit: u64) -> io::Result<()> {
    let cache = match limit {
        0 => None,
        _ => Some(Arc::new(ChunkCache::open(dir, limit)?)),
    };
    *held(GLOBAL.lock()) = cache;
    Ok(())
}

/// The daemon's chunk cache, when it has one.
pub fn global() -> Option<Arc<ChunkCache>> {
    held(GLOBAL.lock()).clone()
}

/// What the cache holds, in memory.
#[derive(Debug, Default)]
struct Entries {
    /// (repository id, digest) → (bytes, last use).
    map: HashMap<(String, Digest), (u64, u64)>,
    total: u64,
    clock: u64,
}

/// Chunks waiting for the writer thread; more are not kept.
pub const WRITE_QUEUE: usize = 4;

/// A chunk for the writer thread: repository id, name, bytes.
type Pending = (String, Digest, Vec<u8>);

/// A bounded directory of chunk objects.
#[derive(Debug)]
pub struct ChunkCache {
    /// To the writer thread, started by the first [`put_later`](ChunkCache::put_later); it
    /// ends when the cache is dropped.
    writer: Mutex<Option<crossbeam_channel::Sender<Pending>>>,
    dir: PathBuf,
    limit: u64,
    entries: Mutex<Entries>,
    tmp_seq: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl ChunkCache {
    /// The cache in `dir` (created when missing), holding at most `limit` bytes; entries
    /// already there are kept, the oldest removed when they exceed the limit.
    pub fn open(dir: &Path, limit: u64) -> io::Result<ChunkCache> {
        let _ = fs::remove_dir_all(dir.join("tmp"));
        fs::create_dir_all(dir.join("tmp"))?;
        let mut found = Vec::new();
        for repo in fs::read_dir(dir)? {
            let repo = repo?;
            let name = repo.file_name().to_string_lossy().into_owned();
            if name == "tmp" || !repo.file_type()?.is_dir() {
                continue;
            }
            for f in fs::read_dir(repo.path())? {
                let f = f?;
                let m = f.metadata()?;
                match f
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<Digest>().ok())
                {
                    Some(d) if m.is_file() => {
                        let t = m.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                        found.push((t, name.clone(), d, m.len()));
                    }
                    _ => {
                        let _ = fs::remove_file(f.path());
                    }
                }
            }
        }
        found.sort_by_key(|f| f.0);
        let cache = ChunkCache {
            writer: Mutex::new(None),
            dir: dir.to_owned(),
            limit,
            entries: Mutex::new(Entries::default()),
            tmp_seq: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        };
        {
            let mut e = held(cache.entries.lock());
            for (_, repo, d, len) in found {
                e.clock += 1;
                let clock = e.clock;
                e.total += len;
                e.map.insert((repo, d), (len, clock));
            }
        }
        cache.evict();
        Ok(cache)
    }

    fn path(&self, repo: &str, d: &Digest) -> PathBuf {
        self.dir.join(repo).join(d.to_string())
    }

    /// The bytes of chunk `d` of repository `repo`, when the cache has them.
    pub fn get(&self, repo: &str, d: &Digest) -> Option<Vec<u8>> {
        let key = (repo.to_owned(), *d);
        {
            let mut e = held(self.entries.lock());
            e.clock += 1;
            let clock = e.clock;
            match e.map.get_mut(&key) {
                Some(entry) => entry.1 = clock,
                None => {
                    self.misses.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            }
        }
        // Evicted meanwhile, or removed behind our back: a miss.
        match fs::read(self.path(repo, d)) {
            Ok(bytes) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(bytes)
            }
            Err(_) => {
                self.forget(&key);
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Keeps `bytes`, checked to be chunk `d` of `repo`. Best effort: an entry that cannot
    /// be written is simply not kept.
    pub fn put(&self, repo: &str, d: &Digest, bytes: &[u8]) {
        let len = bytes.len() as u64;
        // One entry never takes more than a quarter of the cache: a cache of one chunk
        // evicts on every read and only costs writes.
        if len.saturating_mul(4) > self.limit {
            return;
        }
        let key = (repo.to_owned(), *d);
        if held(self.entries.lock()).map.contains_key(&key) {
            return;
        }
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join("tmp")
            .join(format!("{}-{seq}", std::process::id()));
        let path = self.path(repo, d);
        let written = fs::write(&tmp, bytes)
            .or_else(|e| match e.kind() {
                io::ErrorKind::NotFound => {
                    fs::create_dir_all(self.dir.join("tmp"))?;
                    fs::write(&tmp, bytes)
                }
                _ => Err(e),
            })
            .and_then(|()| {
                fs::rename(&tmp, &path).or_else(|_| {
                    fs::create_dir_all(self.dir.join(repo))?;
                    fs::rename(&tmp, &path)
                })
            });
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            tracing::debug!(error = %e, "chunk not kept in the cache");
            return;
        }
        {
            let mut e = held(self.entries.lock());
            e.clock += 1;
            let clock = e.clock;
            if e.map.insert(key, (len, clock)).is_none() {
                e.total += len;
            }
        }
        self.evict();
    }

    /// [`put`](ChunkCache::put) by the cache's writer thread, soon; not at all when it has
    /// [`WRITE_QUEUE`] chunks to write already.
    pub fn put_later(self: &Arc<Self>, repo: &str, d: &Digest, bytes: Vec<u8>) {
        let mut writer = held(self.writer.lock());
        let tx = writer.get_or_insert_with(|| {
            let (tx, rx) = crossbeam_channel::bounded::<Pending>(WRITE_QUEUE);
            let cache: Weak<ChunkCache> = Arc::downgrade(self);
            let spawned = std::thread::Builder::new()
                .name("chunk-cache".into())
                .spawn(move || {
                    for (repo, d, bytes) in rx {
                        match cache.upgrade() {
                            Some(c) => c.put(&repo, &d, &bytes),
                            None => break,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "no chunk cache writer: chunks are not kept");
            }
            tx
        });
        let _ = tx.try_send((repo.to_owned(), *d, bytes));
    }

    /// Drops chunk `d` of `repo` (found damaged or stale).
    pub fn remove(&self, repo: &str, d: &Digest) {
        self.forget(&(repo.to_owned(), *d));
        let _ = fs::remove_file(self.path(repo, d));
    }

    fn forget(&self, key: &(String, Digest)) {
        let mut e = held(self.entries.lock());
        if let Some((len, _)) = e.map.remove(key) {
            e.total -= len;
        }
    }

    /// Removes the least recently used entries until the total is within the limit.
    fn evict(&self) {
        let victims = {
            let mut e = held(self.entries.lock());
            if e.total <= self.limit {
                return;
            }
            let mut by_age: Vec<_> = e.map.iter().map(|(k, v)| (v.1, k.clone())).collect();
            by_age.sort_unstable_by_key(|v| v.0);
            let mut victims = Vec::new();
            for (_, key) in by_age {
                if e.total <= self.limit {
                    break;
                }
                let (len, _) = e.map.remove(&key).expect("listed");
                e.total -= len;
                victims.push(key);
            }
            victims
        };
        for (repo, d) in victims {
            let _ = fs::remove_file(self.path(&repo, &d));
        }
    }

    /// Bytes held.
    pub fn used(&self) -> u64 {
        held(self.entries.lock()).total
    }

    /// Reads served from the cache, and reads it could not serve.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::DigestOf;

    fn digest(n: u8) -> Digest {
        <Digest as DigestOf>::of(&[n])
    }

    #[test]
    fn keeps_entries_within_the_limit_and_evicts_the_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let c = ChunkCache::open(dir.path(), 400).unwrap();
        c.put("r", &digest(1), &[1; 100]);
        c.put("r", &digest(2), &[2; 100]);
        c.put("r", &digest(3), &[3; 100]);
        assert_eq!(c.get("r", &digest(1)).unwrap(), vec![1; 100]);
        c.put("r", &digest(4), &[4; 100]);
        assert_eq!(c.used(), 400);
        // Over the limit: 2 is the least recently used (1 was read since).
        c.put("r", &digest(5), &[5; 100]);
        assert_eq!(c.used(), 400);
        assert!(c.get("r", &digest(2)).is_none());
        assert!(!dir.path().join("r").join(digest(2).to_string()).exists());
        for n in [1, 3, 4, 5] {
            assert_eq!(c.get("r", &digest(n)).unwrap(), vec![n; 100], "{n}");
        }
        // Another repository's chunk of the same name is another entry.
        assert!(c.get("s", &digest(1)).is_none());
        assert_eq!(c.hits_and_misses(), (5, 2));
    }

    #[test]
    fn put_later_keeps_the_chunk_soon() {
        let dir = tempfile::tempdir().unwrap();
        let c = Arc::new(ChunkCache::open(dir.path(), 1000).unwrap());
        c.put_later("r", &digest(1), vec![1; 10]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while c.get("r", &digest(1)).is_none() {
            assert!(std::time::Instant::now() < deadline, "never written");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(c.get("r", &digest(1)).unwrap(), vec![1; 10]);
    }

    #[test]
    fn an_entry_larger_than_a_quarter_of_the_cache_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let c = ChunkCache::open(dir.path(), 400).unwrap();
        c.put("r", &digest(1), &[1; 101]);
        assert!(c.get("r", &digest(1)).is_none());
        assert_eq!(c.used(), 0);
    }

    #[test]
    fn entries_survive_a_reopen_oldest_evicted_first_and_strays_removed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = ChunkCache::open(dir.path(), 1000).unwrap();
            for n in 1..=4 {
                c.put("r", &digest(n), &[n; 100]);
                // Distinct modification times for the order at reopen.
                let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 + n as u64);
                fs::File::options()
                    .write(true)
                    .open(dir.path().join("r").join(digest(n).to_string()))
                    .unwrap()
                    .set_modified(t)
                    .unwrap();
            }
        }
        fs::write(dir.path().join("r").join("not-a-digest"), b"x").unwrap();
        fs::write(dir.path().join("tmp").join("1-1"), b"half").unwrap();
        let c = ChunkCache::open(dir.path(), 250).unwrap();
        assert_eq!(c.used(), 200);
        assert!(c.get("r", &digest(1)).is_none());
        assert!(c.get("r", &digest(2)).is_none());
        assert_eq!(c.get("r", &digest(3)).unwrap(), vec![3; 100]);
        assert!(!dir.path().join("r").join("not-a-digest").exists());
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn a_removed_entry_is_a_miss_and_its_file_goes() {
        let dir = tempfile::tempdir().unwrap();
        let c = ChunkCache::open(dir.path(), 1000).unwrap();
        c.put("r", &digest(1), &[1; 10]);
        c.remove("r", &digest(1));
        assert!(c.get("r", &digest(1)).is_none());
        assert_eq!(c.used(), 0);
        // A file deleted behind the cache's back is a miss too, and forgotten.
        c.put("r", &digest(2), &[2; 10]);
        fs::remove_file(dir.path().join("r").join(digest(2).to_string())).unwrap();
        assert!(c.get("r", &digest(2)).is_none());
        assert_eq!(c.used(), 0);
    }
}
