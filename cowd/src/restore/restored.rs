//! [`RestoredMap`]: which blocks of a live restore's destination hold their final data, and the
//! file that keeps that across a crash.
//!
//! A bit is set once a block's data is on the destination: copied from the repository, or
//! written by a client (which makes the repository's copy irrelevant). Bits are only ever set,
//! never cleared, and a bit is set only after the write that justifies it has returned.
//!
//! Persisting is a group commit in one order:
//!
//! ```text
//!   1. copy the bits (every write they stand for has returned)
//!   2. make the destination durable (fdatasync)    ── the data of every copied bit is safe
//!   3. write the copy atomically (tmp, fsync, rename, fsync dir)
//! ```
//!
//! so a bit on disk always stands for durable data. A crash loses at most bits set after the
//! last persist; their blocks are restored again from the repository, which is what a disk
//! does with writes it had not flushed. A FLUSH or FUA write of a client persists before it is
//! answered, so a write the client knows durable is never covered by repository data.
//!
//! File layout (little-endian): magic `COWDRST1`, block size u32, block count u32, the roaring
//! bitmap's portable serialisation, SHA-256 of everything before it. A damaged file is an
//! error, never an empty map: an empty map would let repository data overwrite client writes.

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use roaring::RoaringBitmap;
use sha2::{Digest as _, Sha256};

const MAGIC: &[u8; 8] = b"COWDRST1";

/// The restored blocks of one destination.
#[derive(Debug)]
pub struct RestoredMap {
    block: u32,
    blocks: u32,
    /// The restored blocks. Writers hold the write lock only to insert.
    bits: RwLock<RoaringBitmap>,
    /// Bumped (under `bits`' write lock) whenever a bit is set.
    changes: AtomicU64,
    /// The value of `changes` the file on disk reflects (`None`: no file written yet); its
    /// lock also serialises persists.
    persisted: Mutex<Option<u64>>,
    path: Option<PathBuf>,
}

/// Why a map file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: damaged restored-block map ({why}); the restore cannot resume safely")]
    Damaged { path: PathBuf, why: String },
}

impl RestoredMap {
    /// A map of `blocks` blocks of `block` bytes with none restored, persisted to `path`
    /// (in memory only without one).
    pub fn new(block: u32, blocks: u32, path: Option<PathBuf>) -> RestoredMap {
        RestoredMap {
            block,
            blocks,
            bits: RwLock::new(RoaringBitmap::new()),
            changes: AtomicU64::new(0),
            persisted: Mutex::new(None),
            path,
        }
    }

    /// Reads the map persisted at `path`; it must describe `blocks` blocks of `block` bytes.
    pub fn load(path: &Path, block: u32, blocks: u32) -> Result<RestoredMap, MapError> {
        let bytes = std::fs::read(path).map_err(|source| MapError::Io {
            path: path.to_owned(),
            source,
        })?;
        let damaged = |why: String| MapError::Damaged {
            path: path.to_owned(),
            why,
        };
        let bits = decode(&bytes, block, blocks).map_err(damaged)?;
        let map = RestoredMap::new(block, blocks, Some(path.to_owned()));
        *map.bits.write().unwrap() = bits;
        *map.persisted.lock().unwrap() = Some(0);
        Ok(map)
    }

    /// Bytes per block.
    pub fn block(&self) -> u32 {
        self.block
    }

    /// Blocks in the map.
    pub fn blocks(&self) -> u32 {
        self.blocks
    }

    /// The blocks touched by `len` bytes at `offset`.
    pub fn blocks_of(&self, offset: u64, len: u64) -> Range<u32> {
        let b = u64::from(self.block);
        let end = (offset + len).div_ceil(b).min(u64::from(self.blocks));
        (offset / b) as u32..end as u32
    }

    /// Restored blocks.
    pub fn count(&self) -> u64 {
        self.bits.read().unwrap().len()
    }

    /// Every block is restored.
    pub fn is_complete(&self) -> bool {
        self.count() == u64::from(self.blocks)
    }

    /// Every block of `r` is restored.
    pub fn contains(&self, r: Range<u32>) -> bool {
        r.is_empty() || self.bits.read().unwrap().contains_range(r)
    }

    /// No block of `r` is restored.
    pub fn none_of(&self, r: Range<u32>) -> bool {
        r.is_empty() || self.bits.read().unwrap().range_cardinality(r) == 0
    }

    /// The runs of blocks of `r` not restored, in order.
    pub fn missing(&self, r: Range<u32>) -> Vec<Range<u32>> {
        let bits = self.bits.read().unwrap();
        let mut out = Vec::new();
        let mut start = None;
        for b in r.clone() {
            match (bits.contains(b), start) {
                (false, None) => start = Some(b),
                (true, Some(s)) => {
                    out.push(s..b);
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            out.push(s..r.end);
        }
        out
    }

    /// Marks `r` restored; call only once the data of every block in it is on the destination.
    /// Returns whether any bit was new.
    pub fn insert(&self, r: Range<u32>) -> bool {
        if r.is_empty() {
            return false;
        }
        let mut bits = self.bits.write().unwrap();
        let new = bits.insert_range(r) > 0;
        if new {
            self.changes.fetch_add(1, Ordering::Relaxed);
        }
        new
    }

    /// Bits set since the file was last written.
    pub fn dirty(&self) -> bool {
        *self.persisted.lock().unwrap() != Some(self.changes.load(Ordering::Relaxed))
    }

    /// Makes every bit set before the call durable: copies the bits, calls `sync_data` (which
    /// must make the destination's completed writes durable), then writes the file. A persist
    /// already covering this call's bits (another thread's) is enough. Without a path only
    /// `sync_data` runs.
    pub fn persist(&self, sync_data: impl FnOnce() -> io::Result<()>) -> Result<(), MapError> {
        let wanted = self.changes.load(Ordering::Relaxed);
        let mut persisted = self.persisted.lock().unwrap();
        let Some(path) = &self.path else {
            return sync_data().map_err(|source| MapError::Io {
                path: PathBuf::from("destination"),
                source,
            });
        };
        if persisted.is_some_and(|p| p >= wanted) {
            return sync_data().map_err(|source| MapError::Io {
                path: path.clone(),
                source,
            });
        }
        let (bytes, at) = {
            let bits = self.bits.read().unwrap();
            (
                encode(&bits, self.block, self.blocks),
                self.changes.load(Ordering::Relaxed),
            )
        };
        sync_data().map_err(|source| MapError::Io {
            path: path.clone(),
            source,
        })?;
        crate::files::write_atomic(path, &bytes).map_err(|source| MapError::Io {
            path: path.clone(),
            source,
        })?;
        *persisted = Some(at);
        Ok(())
    }

    /// The map file, if the map has one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

fn encode(bits: &RoaringBitmap, block: u32, blocks: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + bits.serialized_size() + 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&block.to_le_bytes());
    out.extend_from_slice(&blocks.to_le_bytes());
    bits.serialize_into(&mut out).expect("writing to a Vec");
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

fn decode(bytes: &[u8], block: u32, blocks: u32) -> Result<RoaringBitmap, String> {
    if bytes.len() < 16 + 32 {
        return Err(format!("{} bytes: too short", bytes.len()));
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body).as_slice() != sum {
        return Err("checksum mismatch".into());
    }
    if &body[..8] != MAGIC {
        return Err("not a restored-block map".into());
    }
    let word = |at: usize| u32::from_le_bytes(body[at..at + 4].try_into().unwrap());
    if (word(8), word(12)) != (block, blocks) {
        return Err(format!(
            "it describes {} blocks of {} bytes, the destination {blocks} of {block}",
            word(12),
            word(8)
        ));
    }
    let bits = RoaringBitmap::deserialize_from(&body[16..]).map_err(|e| e.to_string())?;
    if bits.max().is_some_and(|m| m >= blocks) {
        return Err("a block beyond the end is marked".into());
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_lists_the_gaps_in_order() {
        let m = RestoredMap::new(4096, 100, None);
        assert_eq!(m.missing(0..10), vec![0..10]);
        m.insert(2..4);
        m.insert(7..8);
        assert_eq!(m.missing(0..10), vec![0..2, 4..7, 8..10]);
        assert!(m.contains(2..4) && !m.contains(2..5) && m.contains(5..5));
        assert!(m.none_of(4..7) && !m.none_of(3..5));
        assert_eq!(m.blocks_of(4095, 2), 0..2);
        assert_eq!(m.blocks_of(0, 4096 * 200), 0..100);
    }

    #[test]
    fn a_persisted_map_loads_back_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.map");
        let m = RestoredMap::new(4096, 1000, Some(path.clone()));
        assert!(m.insert(10..500) && !m.insert(20..30));
        let mut synced = 0;
        m.persist(|| {
            synced += 1;
            Ok(())
        })
        .unwrap();
        assert!(!m.dirty() && synced == 1);
        let back = RestoredMap::load(&path, 4096, 1000).unwrap();
        assert_eq!(back.missing(0..1000), vec![0..10, 500..1000]);
        assert!(matches!(
            RestoredMap::load(&path, 4096, 999),
            Err(MapError::Damaged { .. })
        ));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let e = RestoredMap::load(&path, 4096, 1000).unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
    }

    #[test]
    fn bits_reach_the_file_only_after_the_data_sync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.map");
        let m = RestoredMap::new(4096, 10, Some(path.clone()));
        m.insert(0..1);
        let e = m.persist(|| Err(io::Error::other("disk gone")));
        assert!(e.is_err() && !path.exists() && m.dirty());
        m.persist(|| Ok(())).unwrap();
        assert_eq!(RestoredMap::load(&path, 4096, 10).unwrap().count(), 1);
    }
}
