//! [`BlockLocks`]: per-block mutual exclusion between copy-before-write and the mover.
//!
//! Blocks hash onto a fixed table of stripes; a caller locking several blocks takes their
//! stripes in ascending order (each once), so two lockers can never deadlock. Locks are held
//! only around "is it still pending? copy it, mark it done" — never around target I/O.

use std::sync::{Mutex, MutexGuard};

const STRIPES: usize = 1024;

/// The lock table of one session.
#[derive(Debug)]
pub struct BlockLocks {
    stripes: Vec<Mutex<()>>,
}

impl Default for BlockLocks {
    fn default() -> Self {
        BlockLocks {
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }
}

/// Held locks; released on drop.
#[derive(Debug)]
pub struct Held<'a>(#[allow(dead_code)] Vec<MutexGuard<'a, ()>>);

impl BlockLocks {
    fn stripe(block: u32) -> usize {
        (block as usize) % STRIPES
    }

    /// Locks one block.
    pub fn lock(&self, block: u32) -> Held<'_> {
        Held(vec![self.stripes[Self::stripe(block)].lock().unwrap()])
    }

    /// Locks every block of `blocks` (any order given; taken in ascending stripe order).
    pub fn lock_all(&self, blocks: &[u32]) -> Held<'_> {
        let mut idx: Vec<usize> = blocks.iter().map(|&b| Self::stripe(b)).collect();
        idx.sort_unstable();
        idx.dedup();
        Held(
            idx.into_iter()
                .map(|i| self.stripes[i].lock().unwrap())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn overlapping_multi_block_lockers_never_deadlock() {
        let l = Arc::new(BlockLocks::default());
        let threads: Vec<_> = (0..8u32)
            .map(|t| {
                let l = l.clone();
                std::thread::spawn(move || {
                    for i in 0..2000u32 {
                        let a = (i * 7 + t) % 3000;
                        let blocks = [a + 1030, a, a + 1, a + 2048];
                        let _h = l.lock_all(&blocks);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // The same block twice (same stripe) is taken once, not self-deadlocked.
        let _h = l.lock_all(&[5, 5, 5 + STRIPES as u32]);
    }
}
