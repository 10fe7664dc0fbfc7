//! [`Index`]: one backup's list of chunk digests, in device order, and its file `index.bin`.
//!
//! ```text
//! offset  size        field
//!      0     8        magic b"COWDIDX1"
//!      8     4        version = 1            (all integers little-endian)
//!     12     4        chunk_size
//!     16     8        device_size
//!     24     8        count = ceil(device_size / chunk_size)
//!     32     32*count digests (Digest::ZERO for an all-zero chunk)
//!      …     32       SHA-256 of every byte before it
//! ```
//!
//! Chunk `i` covers device bytes `i*chunk_size .. min((i+1)*chunk_size, device_size)`: the last
//! chunk may be short, and its digest is over its real length.

use sha2::{Digest as _, Sha256};

use super::Digest;

const MAGIC: &[u8; 8] = b"COWDIDX1";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 32;

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
}

/// Number of chunks of `chunk_size` bytes that cover `device_size` bytes.
pub fn chunk_count(device_size: u64, chunk_size: u32) -> u64 {
    device_size.div_ceil(u64::from(chunk_size))
}

impl Index {
    /// An index of the right length for the device with every chunk [`Digest::ZERO`].
    ///
    /// Panics when `chunk_size` is 0.
    pub fn new(chunk_size: u32, device_size: u64) -> Index {
        assert!(chunk_size > 0, "chunk size 0");
        let n = usize::try_from(chunk_count(device_size, chunk_size)).expect("index too large");
        Index {
            chunk_size,
            device_size,
            digests: vec![Digest::ZERO; n],
        }
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

    /// True when the number of digests matches the device and chunk sizes.
    pub fn is_consistent(&self) -> bool {
        self.chunk_size > 0
            && self.digests.len() as u64 == chunk_count(self.device_size, self.chunk_size)
    }

    /// The file form, ending with its SHA-256 (see [`Index::checksum_of`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER_LEN + 32 * self.digests.len() + 32);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&VERSION.to_le_bytes());
        b.extend_from_slice(&self.chunk_size.to_le_bytes());
        b.extend_from_slice(&self.device_size.to_le_bytes());
        b.extend_from_slice(&(self.digests.len() as u64).to_le_bytes());
        for d in &self.digests {
            b.extend_from_slice(&d.0);
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
        if version != VERSION {
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
        let expect = count
            .checked_mul(32)
            .and_then(|n| n.checked_add((HEADER_LEN + 32) as u64));
        if expect != Some(b.len() as u64) {
            return bad(format!(
                "{} bytes; {count} chunks need {}",
                b.len(),
                expect.map_or("more".to_owned(), |n| n.to_string())
            ));
        }
        let body = b.len() - 32;
        let sum: [u8; 32] = Sha256::digest(&b[..body]).into();
        if sum[..] != b[body..] {
            return bad("checksum mismatch (the index is damaged)".into());
        }
        let digests = b[HEADER_LEN..body]
            .chunks_exact(32)
            .map(|c| Digest(c.try_into().unwrap()))
            .collect();
        Ok(Index {
            chunk_size,
            device_size,
            digests,
        })
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
            let b = ix.encode();
            prop_assert_eq!(Index::decode(&b).unwrap(), ix);
        }
    }
}
