//! [`Index`]: one backup's list of chunk digests, in device order, with the patches over some
//! of them (`repo::patch`), and its file `index.bin`.
//!
//! ```text
//! offset  size        field
//!      0     8        magic b"COWDIDX1"
//!      8     4        version: 1 without patches, 2 with    (all integers little-endian)
//!     12     4        chunk_size
//!     16     8        device_size
//!     24     8        count = ceil(device_size / chunk_size)
//!     32     32*count digests (Digest::ZERO for an all-zero chunk)
//!   version 2 only:
//!      …     8        patches
//!      …     44*patches  (chunk u64, digest 32, len u32): chunks ascending, each < count
//!      …     32       SHA-256 of every byte before it
//! ```
//!
//! Chunk `i` covers device bytes `i*chunk_size .. min((i+1)*chunk_size, device_size)`: the last
//! chunk may be short, and its digest is over its real length. With a patch, chunk `i` is its
//! digest's data with the patch applied. An index without patches is written as version 1, so
//! it reads as before; an older cowd refuses version 2 ("not supported") rather than misread it.

use std::collections::BTreeMap;

use sha2::{Digest as _, Sha256};

use super::{Digest, PatchRef};

const MAGIC: &[u8; 8] = b"COWDIDX1";
const VERSION: u32 = 1;
const VERSION_PATCHED: u32 = 2;
const HEADER_LEN: usize = 32;
const PATCH_LEN: usize = 44;

/// Why bytes are not a valid index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IndexFormatError(pub String);

/// The chunks of one backup, in device order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub chunk_size: u32,
    pub device_size: u64,
    pub digests: Vec<Digest>,
    /// Chunk number → the patch over its digest's data.
    pub patches: BTreeMap<usize, PatchRef>,
}

/// Number of chunks of `chunk_size` bytes that cover `device_size` bytes.
pub fn chunk_count(device_size: u64, chunk_size: u32) -> u64 {
    device_size.div_ceil(u64::from(chunk_size))
}

/// Where the chunks of a device lie, without their digests (a 1 TiB device has 262,144
/// chunks: 8 MiB of digests a backup's writer need not hold twice).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub chunk_size: u32,
    pub device_size: u64,
}

impl Layout {
    /// Number of chunks.
    pub fn chunks(&self) -> usize {
        usize::try_from(chunk_count(self.device_size, self.chunk_size)).expect("index too large")
    }

    /// Length in bytes of chunk `i` (the last one may be short).
    pub fn chunk_len(&self, i: usize) -> usize {
        let start = i as u64 * u64::from(self.chunk_size);
        let len = self
            .device_size
            .saturating_sub(start)
            .min(u64::from(self.chunk_size));
        len as usize
    }

    /// Device offset of chunk `i`.
    pub fn chunk_offset(&self, i: usize) -> u64 {
        i as u64 * u64::from(self.chunk_size)
    }
}

impl Index {
    /// An index of the right length for the device with every chunk [`Digest::ZERO`].
    ///
    /// Panics when `chunk_size` is 0.
    pub fn new(chunk_size: u32, device_size: u64) -> Index {
        assert!(chunk_size > 0, "chunk size 0");
        let n = Layout {
            chunk_size,
            device_size,
        }
        .chunks();
        Index {
            chunk_size,
            device_size,
            digests: vec![Digest::ZERO; n],
            patches: BTreeMap::new(),
        }
    }

    /// The patch over chunk `i`, if it has one.
    pub fn patch(&self, i: usize) -> Option<&PatchRef> {
        self.patches.get(&i)
    }

    /// True when chunk `i` reads as zeroes without reading anything (zero digest, no patch).
    pub fn is_zero(&self, i: usize) -> bool {
        self.digests[i].is_zero() && !self.patches.contains_key(&i)
    }

    /// True when chunk `i` is stored the same way in both indexes (same digest and patch).
    pub fn same_chunk(&self, other: &Index, i: usize) -> bool {
        self.digests[i] == other.digests[i] && self.patch(i) == other.patch(i)
    }

    /// Every stored object the index names, with its plain length: the non-zero digests (each
    /// chunk's length) and the patches. An object named twice is listed twice.
    pub fn objects(&self) -> impl Iterator<Item = (Digest, usize)> + '_ {
        let bases = (self.digests.iter().enumerate())
            .filter(|(_, d)| !d.is_zero())
            .map(|(i, d)| (*d, self.chunk_len(i)));
        bases.chain(self.patches.values().map(|p| (p.digest, p.len as usize)))
    }

    /// Renames every stored object the index names by `rename` (bases and patches).
    pub fn rename_objects(&mut self, mut rename: impl FnMut(&Digest) -> Digest) {
        for d in self.digests.iter_mut().filter(|d| !d.is_zero()) {
            *d = rename(d);
        }
        for p in self.patches.values_mut() {
            p.digest = rename(&p.digest);
        }
    }

    /// Where its chunks lie.
    pub fn layout(&self) -> Layout {
        Layout {
            chunk_size: self.chunk_size,
            device_size: self.device_size,
        }
    }

    /// Length in bytes of chunk `i` (the last one may be short).
    pub fn chunk_len(&self, i: usize) -> usize {
        self.layout().chunk_len(i)
    }

    /// Device offset of chunk `i`.
    pub fn chunk_offset(&self, i: usize) -> u64 {
        self.layout().chunk_offset(i)
    }

    /// True when the number of digests matches the device and chunk sizes.
    pub fn is_consistent(&self) -> bool {
        self.chunk_size > 0
            && self.digests.len() as u64 == chunk_count(self.device_size, self.chunk_size)
    }

    /// The file form, ending with its SHA-256 (see [`Index::checksum_of`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(
            HEADER_LEN + 32 * self.digests.len() + 8 + PATCH_LEN * self.patches.len() + 32,
        );
        let version = if self.patches.is_empty() {
            VERSION
        } else {
            VERSION_PATCHED
        };
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&version.to_le_bytes());
        b.extend_from_slice(&self.chunk_size.to_le_bytes());
        b.extend_from_slice(&self.device_size.to_le_bytes());
        b.extend_from_slice(&(self.digests.len() as u64).to_le_bytes());
        for d in &self.digests {
            b.extend_from_slice(&d.0);
        }
        if version == VERSION_PATCHED {
            b.extend_from_slice(&(self.patches.len() as u64).to_le_bytes());
            for (&i, p) in &self.patches {
                b.extend_from_slice(&(i as u64).to_le_bytes());
                b.extend_from_slice(&p.digest.0);
                b.extend_from_slice(&p.len.to_le_bytes());
            }
        }
        let sum: [u8; 32] = Sha256::digest(&b).into();
        b.extend_from_slice(&sum);
        b
    }

    /// The trailing checksum of an encoded index (its last 32 bytes), as the manifest records it.
    pub fn checksum_of(encoded: &[u8]) -> Option<Digest> {
        let tail = encoded.len().checked_sub(32)?;
        Some(Digest(encoded[tail..].try_into().ok()?))
    }

    /// Parses and checks an encoded index: magic, version, sizes, count and trailing SHA-256.
    pub fn decode(b: &[u8]) -> Result<Index, IndexFormatError> {
        let bad = |s: String| Err(IndexFormatError(s));
        if b.len() < HEADER_LEN + 32 {
            return bad(format!("{} bytes is too short for an index", b.len()));
        }
        if &b[..8] != MAGIC {
            return bad("bad magic (not a cowd index)".into());
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let version = u32_at(8);
        if version != VERSION && version != VERSION_PATCHED {
            return bad(format!("index version {version} is not supported"));
        }
        let chunk_size = u32_at(12);
        let device_size = u64_at(16);
        let count = u64_at(24);
        if chunk_size == 0 {
            return bad("chunk size 0".into());
        }
        if count != chunk_count(device_size, chunk_size) {
            return bad(format!(
                "{count} chunks do not cover {device_size} bytes in chunks of {chunk_size}"
            ));
        }
        let digests_end = count
            .checked_mul(32)
            .and_then(|n| n.checked_add(HEADER_LEN as u64));
        // Version 2: the patch count follows the digests.
        let patches_at = digests_end.filter(|_| version == VERSION_PATCHED);
        let patches = patches_at
            .and_then(|o| b.get(o as usize..o as usize + 8))
            .map_or(0, |c| u64::from_le_bytes(c.try_into().unwrap()));
        let expect = digests_end
            .and_then(|n| n.checked_add(32))
            .and_then(|n| match patches_at {
                None => Some(n),
                Some(_) => patches
                    .checked_mul(PATCH_LEN as u64)
                    .and_then(|p| p.checked_add(n + 8)),
            });
        if expect != Some(b.len() as u64) {
            return bad(format!(
                "{} bytes; {count} chunks and {patches} patches need {}",
                b.len(),
                expect.map_or("more".to_owned(), |n| n.to_string())
            ));
        }
        let body = b.len() - 32;
        let sum: [u8; 32] = Sha256::digest(&b[..body]).into();
        if sum[..] != b[body..] {
            return bad("checksum mismatch (the index is damaged)".into());
        }
        let digests_end = digests_end.unwrap() as usize;
        let digests = b[HEADER_LEN..digests_end]
            .chunks_exact(32)
            .map(|c| Digest(c.try_into().unwrap()))
            .collect();
        let mut index = Index {
            chunk_size,
            device_size,
            digests,
            patches: BTreeMap::new(),
        };
        if version == VERSION_PATCHED {
            if patches == 0 {
                return bad("version 2 without patches".into());
            }
            for e in b[digests_end + 8..body].chunks_exact(PATCH_LEN) {
                let i = u64::from_le_bytes(e[..8].try_into().unwrap());
                let after = index
                    .patches
                    .last_key_value()
                    .is_none_or(|(&k, _)| i > k as u64);
                if i >= count || !after {
                    return bad(format!(
                        "patch of chunk {i} is out of order or out of bounds"
                    ));
                }
                let p = PatchRef {
                    digest: Digest(e[8..40].try_into().unwrap()),
                    len: u32::from_le_bytes(e[40..44].try_into().unwrap()),
                };
                index.patches.insert(i as usize, p);
            }
        }
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::DigestOf;
    use proptest::prelude::*;

    fn sample() -> Index {
        let mut ix = Index::new(65536, 3 * 65536 + 100);
        ix.digests[1] = Digest::of(b"one");
        ix.digests[3] = Digest::of(b"short");
        ix
    }

    #[test]
    fn lengths_and_short_last_chunk() {
        let ix = sample();
        assert_eq!(ix.digests.len(), 4);
        assert!(ix.is_consistent());
        assert_eq!(ix.chunk_len(0), 65536);
        assert_eq!(ix.chunk_len(3), 100);
        assert_eq!(ix.chunk_offset(3), 3 * 65536);
        assert_eq!(Index::new(65536, 0).digests.len(), 0);
        assert_eq!(Index::new(65536, 65536).digests.len(), 1);
    }

    #[test]
    fn round_trip_and_layout() {
        let ix = sample();
        let b = ix.encode();
        assert_eq!(b.len(), 32 + 4 * 32 + 32);
        assert_eq!(&b[..8], b"COWDIDX1");
        assert_eq!(Index::decode(&b).unwrap(), ix);
        assert_eq!(
            Index::checksum_of(&b).unwrap(),
            Digest(Sha256::digest(&b[..b.len() - 32]).into())
        );
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let b = sample().encode();
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x40;
            assert!(Index::decode(&c).is_err(), "flip at {i} not detected");
        }
        assert!(Index::decode(&b[..b.len() - 1]).is_err());
        assert!(Index::decode(&[]).is_err());
        let mut long = b.clone();
        long.push(0);
        assert!(Index::decode(&long).is_err());
    }

    fn patched() -> Index {
        let mut ix = sample();
        let p = |s: &[u8], len| PatchRef {
            digest: Digest::of(s),
            len,
        };
        ix.patches.insert(0, p(b"p0", 40));
        ix.patches.insert(3, p(b"p3", 24));
        ix
    }

    #[test]
    fn patches_make_version_2_and_are_objects() {
        let ix = patched();
        let b = ix.encode();
        assert_eq!(&b[8..12], &2u32.to_le_bytes());
        assert_eq!(b.len(), 32 + 4 * 32 + 8 + 2 * 44 + 32);
        assert_eq!(Index::decode(&b).unwrap(), ix);
        assert_eq!(&sample().encode()[8..12], &1u32.to_le_bytes());
        assert!(!ix.is_zero(0) && ix.is_zero(2) && !ix.is_zero(3));
        assert!(!ix.same_chunk(&sample(), 0) && ix.same_chunk(&sample(), 1));
        let objects: Vec<_> = ix.objects().collect();
        assert_eq!(
            objects,
            [
                (Digest::of(b"one"), 65536),
                (Digest::of(b"short"), 100),
                (Digest::of(b"p0"), 40),
                (Digest::of(b"p3"), 24)
            ]
        );
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x40;
            assert!(Index::decode(&c).is_err(), "flip at {i} not detected");
        }
    }

    #[test]
    fn patch_table_is_checked_before_use() {
        // Entries re-signed after the change: the table's own rules catch them.
        let resign = |mut b: Vec<u8>| {
            let n = b.len() - 32;
            let sum: [u8; 32] = Sha256::digest(&b[..n]).into();
            b[n..].copy_from_slice(&sum);
            b
        };
        let b = patched().encode();
        let first = 32 + 4 * 32 + 8;
        let mut beyond = b.clone();
        beyond[first..first + 8].copy_from_slice(&4u64.to_le_bytes());
        let e = Index::decode(&resign(beyond)).unwrap_err();
        assert!(e.0.contains("out of order or out of bounds"), "{e}");
        let mut order = b.clone();
        order[first + 44..first + 52].copy_from_slice(&0u64.to_le_bytes());
        assert!(Index::decode(&resign(order)).is_err());
        let mut empty = sample().encode();
        empty.truncate(empty.len() - 32);
        empty[8..12].copy_from_slice(&2u32.to_le_bytes());
        empty.extend_from_slice(&0u64.to_le_bytes());
        empty.extend_from_slice(&[0; 32]);
        assert!(Index::decode(&resign(empty)).is_err());
    }

    #[test]
    fn huge_count_is_rejected_without_overflow() {
        let mut b = Index::new(65536, 0).encode();
        b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        b[24..32].copy_from_slice(&(u64::MAX / 65536 + 1).to_le_bytes());
        let e = Index::decode(&b).unwrap_err();
        assert!(e.0.contains("need"), "{e}");
    }

    proptest! {
        #[test]
        fn encode_decode_round_trips(
            shift in 16u32..=22,
            device_size in 0u64..(1 << 28),
            seed in any::<u64>(),
        ) {
            let mut ix = Index::new(1 << shift, device_size);
            let mut rng = fastrand::Rng::with_seed(seed);
            for d in &mut ix.digests {
                if rng.bool() {
                    rng.fill(&mut d.0);
                }
            }
            for i in 0..ix.digests.len() {
                if rng.u8(..) < 32 {
                    let mut d = Digest::ZERO;
                    rng.fill(&mut d.0);
                    ix.patches.insert(i, PatchRef { digest: d, len: rng.u32(..) });
                }
            }
            let b = ix.encode();
            prop_assert_eq!(Index::decode(&b).unwrap(), ix);
        }
    }
}
