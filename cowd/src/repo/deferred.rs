//! Chunks stored later: [`Repo::store_chunk_later`] writes a chunk file without waiting for the
//! disk, [`Repo::settle`] makes a batch of them durable and links them into place.
//!
//! An incremental after a scattered change stores one small patch per touched chunk. Stored one
//! by one, each pays an `fdatasync` (a journal commit of its own: 2–17 ms here, most of such a
//! backup's time); a full backup's workers each waited ~2 ms per chunk off the CPU. Written with
//! their writeback started at once and synced together in batches, the first sync's journal
//! commit covers the others. A chunk still enters its name
//! only once synced, so a crash never leaves a named chunk that is partial; what a crash leaves
//! in `tmp/` is removed when the repository is next opened.

use std::fs::File;
use std::path::PathBuf;

use super::chunk::is_all_zero;
use super::{Digest, Repo, RepoError, Stored};

/// A chunk written to a temporary file: neither synced nor in place yet. Dropped without
/// [`Repo::settle`] (a backup aborted), its file is removed.
#[derive(Debug)]
pub struct Deferred {
    digest: Digest,
    tmp: PathBuf,
    size: u64,
}

impl Drop for Deferred {
    fn drop(&mut self) {
        // Settled: linked and removed already (not found).
        let _ = std::fs::remove_file(&self.tmp);
    }
}

impl Deferred {
    /// The name the chunk will have.
    pub fn digest(&self) -> Digest {
        self.digest
    }
}

/// What [`Repo::store_chunk_later`] did.
#[derive(Debug)]
pub enum Later {
    /// Stored already (object storage, a zero chunk): a PUT that returned is durable.
    Stored(Stored),
    /// To be passed to [`Repo::settle`] before a backup names it.
    Pending(Deferred),
}

impl Later {
    pub fn digest(&self) -> Digest {
        match self {
            Later::Stored(s) => s.digest,
            Later::Pending(d) => d.digest,
        }
    }
}

impl Repo {
    /// [`Repo::store_chunk`] without waiting for the disk: the chunk file is written (its
    /// writeback started) but neither synced nor linked until [`Repo::settle`]. A chunk the
    /// repository has already is refreshed instead, as `store_chunk` does; one stored by
    /// somebody else meanwhile is found out at settle.
    pub fn store_chunk_later(&self, plain: &[u8]) -> Result<Later, RepoError> {
        if self.is_remote() || is_all_zero(plain) || plain.len() > self.chunk_size() as usize {
            return self.store_chunk(plain).map(Later::Stored);
        }
        let digest = self.name_of(plain);
        if self.refresh_chunk(&digest)? {
            return Ok(Later::Stored(Stored {
                digest,
                new: false,
                stored_bytes: 0,
            }));
        }
        let tmp = self.tmp_path();
        let size = self.write_tmp(plain, digest, &tmp, false)?;
        Ok(Later::Pending(Deferred { digest, tmp, size }))
    }

    /// Syncs the chunk files of `pending` and links each into place as [`Repo::store_chunk`]
    /// does (or refreshes the chunk already there). Returns what each did, in order. On an
    /// error the files not yet linked are removed (dropped).
    pub fn settle(&self, pending: Vec<Deferred>) -> Result<Vec<Stored>, RepoError> {
        for d in &pending {
            File::open(&d.tmp)
                .and_then(|f| f.sync_data())
                .map_err(RepoError::io(&d.tmp, "sync chunk"))?;
        }
        pending
            .iter()
            .map(|d| self.link_tmp(&d.tmp, d.digest, d.size))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::repo;
    use super::*;

    #[test]
    fn chunks_appear_only_when_settled_and_settle_finds_the_ones_present() {
        let (_d, r) = repo();
        let (a, b, c) = (vec![1u8; 5000], vec![2u8; 7000], vec![3u8; 6000]);
        r.store_chunk(&c).unwrap();
        let lc = r.store_chunk_later(&c).unwrap();
        assert!(
            matches!(lc, Later::Stored(ref s) if !s.new),
            "a chunk present is refreshed, not written again"
        );
        let la = r.store_chunk_later(&a).unwrap();
        let lb = r.store_chunk_later(&b).unwrap();
        assert!(!r.has_chunk(&la.digest()), "not named before settle");
        r.store_chunk(&b).unwrap(); // stored by another backup meanwhile
        let zero = r.store_chunk_later(&[0u8; 100]).unwrap();
        assert!(matches!(zero, Later::Stored(ref s) if s.digest.is_zero()));
        let pending = [la, lb].into_iter().map(|l| match l {
            Later::Pending(d) => d,
            Later::Stored(_) => panic!("a directory repository defers"),
        });
        let stored = r.settle(pending.collect()).unwrap();
        assert_eq!((stored[0].new, stored[1].new), (true, false));
        assert!(stored[0].stored_bytes > 0 && stored[1].stored_bytes == 0);
        let mut out = Vec::new();
        r.load_chunk(&stored[0].digest, a.len(), &mut out).unwrap();
        assert_eq!(out, a);
        let tmp = std::fs::read_dir(r.root().join("tmp")).unwrap().count();
        assert_eq!(tmp, 0, "no temporary file stays");
    }
}
