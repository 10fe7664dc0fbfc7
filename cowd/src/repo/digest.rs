//! [`Digest`]: the SHA-256 that names a chunk. The type and its hex form are the API's
//! (`cowd_api::digest`, where [`Digest::ZERO`] is explained); computing one is the daemon's
//! ([`DigestOf`]), so a client never links a hash implementation.

use sha2::{Digest as _, Sha256};

pub use cowd_api::digest::{Digest, ParseDigestError, to_hex};

/// `Digest::of(data)`: the SHA-256 of a chunk's plain data.
pub trait DigestOf {
    fn of(data: &[u8]) -> Digest;
}

impl DigestOf for Digest {
    fn of(data: &[u8]) -> Digest {
        Digest(Sha256::digest(data).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_sha256() {
        // SHA-256("abc") from FIPS 180-2.
        let d = Digest::of(b"abc");
        assert_eq!(
            d.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert!(!Digest::of(&[0u8; 4096]).is_zero());
        let json = serde_json::to_string(&Digest::of(b"x")).unwrap();
        assert_eq!(
            serde_json::from_str::<Digest>(&json).unwrap(),
            Digest::of(b"x")
        );
    }
}
