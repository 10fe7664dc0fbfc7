//! [`ChunkSource`]: where a restore reads a generation's chunks, and [`Generation`], the
//! repository's.
//!
//! Live restore depends on this trait, not on the repository, so its model test can feed it
//! chunks from memory and make any of them fail.

use std::fmt::Debug;

use crate::repo::{Index, Lease, Repo};

/// The chunks of one device image.
pub trait ChunkSource: Send + Sync + Debug {
    /// Bytes per chunk (a power of two; the last chunk may be short).
    fn chunk_size(&self) -> u32;
    /// Bytes of the image.
    fn device_size(&self) -> u64;
    /// The chunk is all zeroes (nothing to read).
    fn is_zero(&self, i: usize) -> bool;
    /// Fills `out` with chunk `i`, checked against its digest; the error says why not.
    fn load(&self, i: usize, out: &mut Vec<u8>) -> Result<(), String>;

    /// Number of chunks.
    fn chunks(&self) -> usize {
        self.device_size().div_ceil(u64::from(self.chunk_size())) as usize
    }
}

/// A generation of a repository, leased (kept from removal) while the source lives.
#[derive(Debug)]
pub struct Generation {
    repo: Repo,
    index: Index,
    _lease: Lease,
}

impl Generation {
    /// Backup `id` of `repo`, leased by `user` (named when its removal is refused).
    pub fn open(repo: Repo, id: &str, user: &str) -> Result<Generation, crate::repo::RepoError> {
        let lease = repo.lease(id, user)?;
        let index = repo.index(id)?;
        Ok(Generation {
            repo,
            index,
            _lease: lease,
        })
    }
}

impl ChunkSource for Generation {
    fn chunk_size(&self) -> u32 {
        self.index.chunk_size
    }

    fn device_size(&self) -> u64 {
        self.index.device_size
    }

    fn is_zero(&self, i: usize) -> bool {
        self.index.is_zero(i)
    }

    fn load(&self, i: usize, out: &mut Vec<u8>) -> Result<(), String> {
        self.repo
            .load_entry(&self.index, i, out)
            .map_err(|e| e.to_string())
    }
}
