//! [`Patch`]: the bytes of one chunk an incremental backup changed, stored instead of the whole
//! chunk, and [`Repo::load_entry`], which reads a chunk of an index as base + patch.
//!
//! A scattered change touches many chunks in a few places each. Storing each touched chunk anew
//! costs a whole chunk's read, hash, compression and write per 64 KiB changed; a patch costs the
//! changed bytes. An index entry is then a *base* (a whole chunk, as before) and at most one
//! patch over it ([`PatchRef`]). A later incremental that changes the chunk again merges the old
//! patch into the new one ([`Patch::merge`]) rather than stacking a second, so a chunk is always
//! read as at most two objects and a restore never replays a chain; once a patch would cover a
//! quarter of the chunk ([`Patch::worth_it`]) the chunk is stored whole again.
//!
//! A patch is stored as a chunk object (named, compressed, sealed and checked like one), so
//! every mechanism that keeps, copies, verifies or collects chunks covers patches unchanged.
//! Its plain bytes:
//!
//! ```text
//! offset  size        field
//!      0     8        magic b"COWDPTCH"
//!      8     4        chunk_len: length of the chunk it applies to (little-endian)
//!     12     4        count of ranges
//!     16     8*count  (start u32, end u32): ascending, non-empty, apart, within chunk_len
//!      …     Σ len    the ranges' bytes, in order
//! ```

use super::{Digest, Index, Repo, RepoError};

const MAGIC: &[u8; 8] = b"COWDPTCH";
const HEADER_LEN: usize = 16;

/// A patch stored as a chunk: its name and its plain (encoded) length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PatchRef {
    pub digest: Digest,
    pub len: u32,
}

/// Why bytes are not a valid patch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PatchFormatError(pub String);

/// New bytes for some ranges of a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    chunk_len: usize,
    /// `(start, end)` byte ranges of the chunk: ascending, non-empty, not touching.
    ranges: Vec<(usize, usize)>,
    /// The ranges' bytes, concatenated in order.
    data: Vec<u8>,
}

impl Patch {
    /// A patch of `ranges` of a chunk of `chunk_len` bytes, their bytes filled by `fill(start,
    /// buffer)`. Ranges that touch or overlap are joined; empty ones dropped.
    pub fn build<E>(
        chunk_len: usize,
        ranges: &[(usize, usize)],
        mut fill: impl FnMut(usize, &mut [u8]) -> Result<(), E>,
    ) -> Result<Patch, E> {
        let ranges = union(ranges.iter().copied(), chunk_len);
        let mut data = vec![0u8; ranges.iter().map(|r| r.1 - r.0).sum()];
        let mut at = 0;
        for &(s, e) in &ranges {
            fill(s, &mut data[at..at + e - s])?;
            at += e - s;
        }
        Ok(Patch {
            chunk_len,
            ranges,
            data,
        })
    }

    /// Bytes of the chunk the patch replaces.
    pub fn covered(&self) -> usize {
        self.data.len()
    }

    /// The ranges it replaces.
    pub fn ranges(&self) -> &[(usize, usize)] {
        &self.ranges
    }

    /// True while storing the patch is cheaper than storing the chunk whole and reading two
    /// objects for it is worth it: the patch covers less than a quarter of the chunk.
    pub fn worth_it(&self) -> bool {
        self.covered() < self.chunk_len / 4
    }

    /// Writes the patch's bytes over `chunk` (of the length the patch is for).
    pub fn apply(&self, chunk: &mut [u8]) {
        assert_eq!(
            chunk.len(),
            self.chunk_len,
            "patch for another chunk length"
        );
        let mut at = 0;
        for &(s, e) in &self.ranges {
            chunk[s..e].copy_from_slice(&self.data[at..at + e - s]);
            at += e - s;
        }
    }

    /// One patch with the effect of `older` then `newer` (`newer`'s bytes win where both
    /// write).
    pub fn merge(older: &Patch, newer: &Patch) -> Patch {
        assert_eq!(
            older.chunk_len, newer.chunk_len,
            "patches of different chunks"
        );
        let all = older.ranges.iter().chain(&newer.ranges).copied();
        let ranges = union(all, older.chunk_len);
        // Where each output range's bytes start in `data`.
        let mut starts = Vec::with_capacity(ranges.len());
        let mut total = 0;
        for &(s, e) in &ranges {
            starts.push(total);
            total += e - s;
        }
        let mut data = vec![0u8; total];
        for p in [older, newer] {
            let mut at = 0;
            for &(s, e) in &p.ranges {
                // The output range holding `s`: the last one starting at or before it.
                let k = ranges.partition_point(|r| r.0 <= s) - 1;
                let o = starts[k] + (s - ranges[k].0);
                data[o..o + e - s].copy_from_slice(&p.data[at..at + e - s]);
                at += e - s;
            }
        }
        Patch {
            chunk_len: older.chunk_len,
            ranges,
            data,
        }
    }

    /// The stored form (see the module's header).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER_LEN + 8 * self.ranges.len() + self.data.len());
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&(self.chunk_len as u32).to_le_bytes());
        b.extend_from_slice(&(self.ranges.len() as u32).to_le_bytes());
        for &(s, e) in &self.ranges {
            b.extend_from_slice(&(s as u32).to_le_bytes());
            b.extend_from_slice(&(e as u32).to_le_bytes());
        }
        b.extend_from_slice(&self.data);
        b
    }

    /// Parses a stored patch for a chunk of `chunk_len` bytes, checking every field.
    pub fn decode(b: &[u8], chunk_len: usize) -> Result<Patch, PatchFormatError> {
        let bad = |s: String| Err(PatchFormatError(s));
        if b.len() < HEADER_LEN || &b[..8] != MAGIC {
            return bad("not a patch (bad magic or too short)".into());
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize;
        if u32_at(8) != chunk_len {
            return bad(format!(
                "a patch for a chunk of {} bytes, not {chunk_len}",
                u32_at(8)
            ));
        }
        let count = u32_at(12);
        let table_end = count
            .checked_mul(8)
            .and_then(|n| n.checked_add(HEADER_LEN))
            .filter(|&n| n <= b.len());
        let Some(table_end) = table_end else {
            return bad(format!("{count} ranges do not fit in {} bytes", b.len()));
        };
        let mut ranges = Vec::with_capacity(count);
        let mut total = 0usize;
        for k in 0..count {
            let (s, e) = (u32_at(HEADER_LEN + 8 * k), u32_at(HEADER_LEN + 8 * k + 4));
            let after_previous = ranges.last().is_none_or(|&(_, pe)| s > pe);
            if s >= e || e > chunk_len || !after_previous {
                return bad(format!(
                    "range {k} ({s}..{e}) is out of order or out of bounds"
                ));
            }
            ranges.push((s, e));
            total += e - s;
        }
        if b.len() - table_end != total {
            return bad(format!(
                "{} bytes of data for ranges of {total}",
                b.len() - table_end
            ));
        }
        Ok(Patch {
            chunk_len,
            ranges,
            data: b[table_end..].to_vec(),
        })
    }
}

/// The ranges' union within `0..limit`: sorted, empty ones dropped, touching ones joined.
fn union(ranges: impl Iterator<Item = (usize, usize)>, limit: usize) -> Vec<(usize, usize)> {
    let mut v: Vec<(usize, usize)> = ranges
        .map(|(s, e)| (s, e.min(limit)))
        .filter(|(s, e)| s < e)
        .collect();
    v.sort_unstable();
    let mut out: Vec<(usize, usize)> = Vec::with_capacity(v.len());
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

impl Repo {
    /// Reads chunk `i` of `index` into `out`: its base, with its patch applied when it has one.
    pub fn load_entry(&self, index: &Index, i: usize, out: &mut Vec<u8>) -> Result<(), RepoError> {
        self.entry(index, i, out, false)
    }

    /// [`Repo::load_entry`] through [`Repo::load_chunk_kept`] (readers that come back).
    pub fn load_entry_kept(
        &self,
        index: &Index,
        i: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), RepoError> {
        self.entry(index, i, out, true)
    }

    /// The patch of chunk `i` of `index`, read and checked; `None` when it has none.
    pub fn load_patch(&self, index: &Index, i: usize) -> Result<Option<Patch>, RepoError> {
        self.patch_of(index, i, false)
    }

    fn entry(
        &self,
        index: &Index,
        i: usize,
        out: &mut Vec<u8>,
        keep: bool,
    ) -> Result<(), RepoError> {
        self.load(&index.digests[i], index.chunk_len(i), out, keep)?;
        if let Some(p) = self.patch_of(index, i, keep)? {
            p.apply(out);
        }
        Ok(())
    }

    fn patch_of(&self, index: &Index, i: usize, keep: bool) -> Result<Option<Patch>, RepoError> {
        let Some(r) = index.patch(i) else {
            return Ok(None);
        };
        let mut raw = Vec::new();
        self.load(&r.digest, r.len as usize, &mut raw, keep)?;
        Patch::decode(&raw, index.chunk_len(i))
            .map(Some)
            .map_err(|e| RepoError::Corrupt {
                path: self.chunk_path(&r.digest),
                problem: format!("patch of chunk {i}: {e}"),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fill_from(src: &[u8]) -> impl FnMut(usize, &mut [u8]) -> Result<(), ()> + '_ {
        move |s, buf| {
            buf.copy_from_slice(&src[s..s + buf.len()]);
            Ok(())
        }
    }

    #[test]
    fn build_joins_and_sorts_ranges() {
        let src: Vec<u8> = (0..100u8).collect();
        let ranges = [(50, 60), (10, 20), (20, 22), (55, 58), (70, 70)];
        let p = Patch::build(100, &ranges, fill_from(&src)).unwrap();
        assert_eq!(p.ranges(), &[(10, 22), (50, 60)]);
        assert_eq!(p.covered(), 22);
        let mut chunk = vec![0u8; 100];
        p.apply(&mut chunk);
        assert_eq!(&chunk[10..22], &src[10..22]);
        assert_eq!(&chunk[50..60], &src[50..60]);
        assert!(chunk[..10].iter().chain(&chunk[22..50]).all(|&b| b == 0));
        assert!(p.worth_it());
        let big = Patch::build(100, &[(0, 25)], fill_from(&src)).unwrap();
        assert!(!big.worth_it());
    }

    #[test]
    fn layout_and_every_corruption_is_refused() {
        let src = vec![7u8; 64];
        let p = Patch::build(64, &[(4, 8), (32, 40)], fill_from(&src)).unwrap();
        let b = p.encode();
        assert_eq!(&b[..8], b"COWDPTCH");
        assert_eq!(b.len(), 16 + 2 * 8 + 12);
        assert_eq!(Patch::decode(&b, 64).unwrap(), p);
        assert!(Patch::decode(&b, 65).unwrap_err().0.contains("64 bytes"));
        // Every header and table byte matters; data bytes are the chunk's to check.
        for i in 0..32 {
            for flip in [0x01u8, 0x80] {
                let mut c = b.clone();
                c[i] ^= flip;
                assert!(Patch::decode(&c, 64).is_err(), "flip {flip:#x} at {i}");
            }
        }
        assert!(Patch::decode(&b[..b.len() - 1], 64).is_err());
        let mut long = b.clone();
        long.push(0);
        assert!(Patch::decode(&long, 64).is_err());
        let mut huge = b.clone();
        huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Patch::decode(&huge, 64).is_err());
    }

    fn ranges_strategy(len: usize) -> impl Strategy<Value = Vec<(usize, usize)>> {
        proptest::collection::vec((0..len, 0..len), 0..12)
            .prop_map(|v| v.into_iter().map(|(a, b)| (a.min(b), a.max(b))).collect())
    }

    proptest! {
        #[test]
        fn merge_is_applying_both_in_turn(
            len in 1usize..300,
            seed in any::<u64>(),
            a in ranges_strategy(300),
            b in ranges_strategy(300),
        ) {
            let mut rng = fastrand::Rng::with_seed(seed);
            let base: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            let one: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            let two: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            let older = Patch::build(len, &a, fill_from(&one)).unwrap();
            let newer = Patch::build(len, &b, fill_from(&two)).unwrap();
            let mut want = base.clone();
            older.apply(&mut want);
            newer.apply(&mut want);
            let merged = Patch::merge(&older, &newer);
            let mut got = base.clone();
            merged.apply(&mut got);
            prop_assert_eq!(&got, &want);
            let again = Patch::decode(&merged.encode(), len).unwrap();
            prop_assert_eq!(&again, &merged);
            prop_assert!(merged.covered() <= older.covered() + newer.covered());
        }

        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..80), len in 0usize..64) {
            let mut b = b;
            if b.len() >= 8 {
                b[..8].copy_from_slice(MAGIC);
            }
            let _ = Patch::decode(&b, len);
        }
    }
}
