//! [`PendingSet`]: the blocks whose content at the snapshot point is still only on the device.
//!
//! A roaring bitmap of block indices behind one short mutex. Writers ask "is any block of my
//! range pending?" (one lookup, the only cost a backup adds to writes outside the set); the
//! copy-before-write path and the mover remove blocks under the block's lock.

use std::sync::Mutex;

use roaring::RoaringBitmap;

/// Blocks still to be read from the device for the current backup.
#[derive(Debug, Default)]
pub struct PendingSet {
    bits: Mutex<RoaringBitmap>,
}

impl PendingSet {
    pub fn new(bits: RoaringBitmap) -> Self {
        PendingSet {
            bits: Mutex::new(bits),
        }
    }

    pub fn len(&self) -> u64 {
        self.bits.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.bits.lock().unwrap().is_empty()
    }

    pub fn contains(&self, block: u32) -> bool {
        self.bits.lock().unwrap().contains(block)
    }

    /// True if any block in `first..=last` is pending.
    pub fn any_in(&self, first: u32, last: u32) -> bool {
        self.bits.lock().unwrap().range_cardinality(first..=last) > 0
    }

    /// The pending blocks in `first..=last`, ascending.
    pub fn in_range(&self, first: u32, last: u32) -> Vec<u32> {
        let bits = self.bits.lock().unwrap();
        if bits.range_cardinality(first..=last) == 0 {
            return Vec::new();
        }
        (first..=last).filter(|b| bits.contains(*b)).collect()
    }

    /// Removes a block; true if it was pending (the caller now owns copying it).
    pub fn remove(&self, block: u32) -> bool {
        self.bits.lock().unwrap().remove(block)
    }

    /// The first pending block at or after `from`, wrapping to the start.
    pub fn next_from(&self, from: u32) -> Option<u32> {
        let bits = self.bits.lock().unwrap();
        let before = if from == 0 { 0 } else { bits.rank(from - 1) };
        bits.select(before as u32).or_else(|| bits.min())
    }

    /// Number of consecutive pending blocks from `first` (at most `max`).
    pub fn run_len(&self, first: u32, max: u32) -> u32 {
        let bits = self.bits.lock().unwrap();
        (0..max)
            .take_while(|i| first.checked_add(*i).is_some_and(|b| bits.contains(b)))
            .count() as u32
    }

    /// Keeps only the pending blocks for which `keep` is true.
    pub fn retain(&self, keep: impl Fn(u32) -> bool) {
        let mut bits = self.bits.lock().unwrap();
        let drop: RoaringBitmap = bits.iter().filter(|b| !keep(*b)).collect();
        *bits -= drop;
    }

    /// Drops every pending block (the backup ended early).
    pub fn clear(&self) {
        self.bits.lock().unwrap().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_runs_and_wrapping_search() {
        let mut b = RoaringBitmap::new();
        b.insert_range(10..20);
        b.insert(100);
        let p = PendingSet::new(b);
        assert_eq!(p.len(), 11);
        assert!(p.any_in(0, 10) && !p.any_in(20, 99) && p.any_in(99, 100));
        assert_eq!(p.in_range(18, 101), vec![18, 19, 100]);
        assert_eq!(p.next_from(0), Some(10));
        assert_eq!(p.next_from(15), Some(15));
        assert_eq!(p.next_from(20), Some(100));
        assert_eq!(p.next_from(101), Some(10), "wraps around");
        assert_eq!(p.run_len(12, 100), 8);
        assert_eq!(p.run_len(12, 3), 3);
        assert!(p.remove(12) && !p.remove(12));
        assert_eq!(p.run_len(10, 100), 2);
        p.clear();
        assert_eq!(p.next_from(0), None);
        assert!(p.is_empty());
    }
}
