//! [`Digest`]: the SHA-256 that names a chunk, and its hex form (how the API and the
//! repository's files write it).
//!
//! A chunk is named by the SHA-256 of its plain (uncompressed) data; cowd computes it, this
//! crate only carries and spells it. The all-zero digest [`Digest::ZERO`] is reserved for
//! chunks whose data is all zero bytes, which are never stored: a real SHA-256 output is all
//! zero with probability 2^-256, so no stored chunk can collide with it in practice.

use std::fmt;
use std::str::FromStr;

/// The SHA-256 of a chunk's plain data (or [`Digest::ZERO`] for an all-zero chunk).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Names a chunk that is all zero bytes and is not stored.
    pub const ZERO: Digest = Digest([0; 32]);

    /// True for [`Digest::ZERO`].
    pub fn is_zero(&self) -> bool {
        *self == Digest::ZERO
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 15)] as char);
    }
    s
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Why a string is not a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseDigestError(pub String);

impl fmt::Display for ParseDigestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a SHA-256 digest (64 hex digits): {:?}", self.0)
    }
}

impl std::error::Error for ParseDigestError {}

impl FromStr for Digest {
    type Err = ParseDigestError;

    fn from_str(s: &str) -> Result<Digest, ParseDigestError> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return Err(ParseDigestError(s.to_owned()));
        }
        let mut out = [0u8; 32];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            match (nibble(pair[0]), nibble(pair[1])) {
                (Some(h), Some(l)) => out[i] = h << 4 | l,
                _ => return Err(ParseDigestError(s.to_owned())),
            }
        }
        Ok(Digest(out))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&to_hex(&self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SHA-256("abc") from FIPS 180-2.
    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn hex_both_ways() {
        let d: Digest = ABC.parse().unwrap();
        assert_eq!(d.0[..3], [0xba, 0x78, 0x16]);
        assert_eq!(d.to_string(), ABC);
        assert_eq!(ABC.to_uppercase().parse::<Digest>().unwrap(), d);
        assert_eq!(to_hex(&[0x0f, 0xa0]), "0fa0");
    }

    #[test]
    fn zero_and_errors() {
        assert!(Digest::ZERO.is_zero() && Digest::default().is_zero());
        assert_eq!(Digest::ZERO.to_string(), "0".repeat(64));
        assert!("abc".parse::<Digest>().is_err());
        let e = "g".repeat(64).parse::<Digest>().unwrap_err();
        assert!(e.to_string().contains("64 hex digits"), "{e}");
        let json = format!("\"{ABC}\"");
        let d: Digest = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), json);
        assert!(serde_json::from_str::<Digest>("\"00\"").is_err());
    }
}
