//! Client-side encryption of a repository: the master key, AES-256-GCM sealing of what is
//! stored (chunk bodies, indexes, manifests, wrapped keys; ring's implementation), and the keyed
//! BLAKE3 that names the chunks of an encrypted repository.
//!
//! A sealed object is `nonce (12) ‖ ciphertext ‖ tag (16)`; the nonce is random (96 bits from
//! the OS). The associated data binds each object to what it claims to be (a chunk's header
//! with its name, a backup id), so a stored object moved under another name, or changed in one
//! byte, fails to open. With random nonces one key seals at most 2³² objects before the
//! chance of a repeated nonce reaches 2⁻³² (NIST SP 800-38D, 8.3): 16 PiB of 4 MiB chunks.
//!
//! The master key is 64 bytes: 32 for sealing, 32 for naming chunks. It never leaves memory
//! unwrapped; `keys.rs` stores it wrapped by keys derived from passphrases or key files.

use std::fmt;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::{Zeroize, Zeroizing};

use super::digest::Naming;
use super::{Digest, Repo, RepoError};

/// Bytes of a nonce.
pub const NONCE_LEN: usize = 12;
/// Bytes of an authentication tag.
pub const TAG_LEN: usize = 16;
/// What sealing adds to an object's length.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
/// Bytes of a master key (sealing key ‖ naming key).
pub const MASTER_KEY_LEN: usize = 64;

/// A sealed object did not open: it was changed, is not what it is stored as, or the key is
/// another repository's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed (changed, misplaced, or sealed with another key)")]
pub struct Tampered;

/// `n` random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .expect("the operating system's random number generator works");
    b
}

/// Seals and opens with one 256-bit key.
#[derive(Clone)]
pub struct Sealer(LessSafeKey);

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Sealer {
        let key = UnboundKey::new(&AES_256_GCM, key).expect("a 256-bit key");
        Sealer(LessSafeKey::new(key))
    }

    /// Appends `nonce ‖ AES-256-GCM(plain) ‖ tag` to `out`, with a random nonce.
    pub fn seal(&self, aad: &[u8], plain: &[u8], out: &mut Vec<u8>) {
        self.seal_with_nonce(&random_bytes::<NONCE_LEN>(), aad, plain, out);
    }

    /// [`seal`](Sealer::seal) with a given nonce: for known-answer tests only; a nonce must
    /// never be used twice with one key.
    pub(crate) fn seal_with_nonce(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        plain: &[u8],
        out: &mut Vec<u8>,
    ) {
        out.reserve(plain.len() + SEAL_OVERHEAD);
        out.extend_from_slice(nonce);
        let start = out.len();
        out.extend_from_slice(plain);
        let tag = self
            .0
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                &mut out[start..],
            )
            .expect("AES-GCM seals any object shorter than 64 GiB");
        out.extend_from_slice(tag.as_ref());
    }

    /// Opens `sealed` (as made by [`seal`](Sealer::seal) with the same `aad`) into `out`
    /// (cleared first).
    pub fn open(&self, aad: &[u8], sealed: &[u8], out: &mut Vec<u8>) -> Result<(), Tampered> {
        out.clear();
        if sealed.len() < SEAL_OVERHEAD {
            return Err(Tampered);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at NONCE_LEN");
        let tag = Tag::try_from(tag).expect("split at TAG_LEN");
        out.extend_from_slice(body);
        let r = self.0.open_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            tag,
            out,
            0..,
        );
        if r.is_err() {
            out.zeroize();
            out.clear();
            return Err(Tampered);
        }
        Ok(())
    }
}

/// A repository's master key: seals its objects and names its chunks.
#[derive(Clone)]
pub struct MasterKey {
    bytes: Zeroizing<[u8; MASTER_KEY_LEN]>,
    sealer: Sealer,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A fresh random key.
    pub fn generate() -> MasterKey {
        MasterKey::from_bytes(&random_bytes::<MASTER_KEY_LEN>())
    }

    pub fn from_bytes(bytes: &[u8; MASTER_KEY_LEN]) -> MasterKey {
        let bytes = Zeroizing::new(*bytes);
        let sealer = Sealer::new(bytes[..32].try_into().expect("32 bytes"));
        MasterKey { bytes, sealer }
    }

    /// The key's bytes, for wrapping.
    pub fn bytes(&self) -> &[u8; MASTER_KEY_LEN] {
        &self.bytes
    }

    fn naming_key(&self) -> &[u8; 32] {
        self.bytes[32..].try_into().expect("32 bytes")
    }

    /// The name of a chunk holding `data`: BLAKE3 keyed with the naming key, so equal data has
    /// unrelated names in repositories with different keys.
    pub fn chunk_name(&self, data: &[u8]) -> Digest {
        Digest(*blake3::keyed_hash(self.naming_key(), data).as_bytes())
    }

    /// A short public fingerprint of the key (to tell keys apart; reveals nothing of it).
    pub fn fingerprint(&self) -> String {
        let h = blake3::keyed_hash(self.naming_key(), b"cowd-repo key fingerprint");
        super::digest::to_hex(&h.as_bytes()[..8])
    }

    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }
}

/// First bytes of a sealed index or manifest file.
const OBJECT_MAGIC: &[u8; 8] = b"COWDSEAL";

/// What a sealed file is (part of its associated data).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Object {
    Manifest,
    Index,
}

impl Object {
    fn aad(self, backup: &str) -> Vec<u8> {
        let kind = match self {
            Object::Manifest => "manifest",
            Object::Index => "index",
        };
        format!("cowd-repo {kind} of backup {backup}").into_bytes()
    }
}

impl Repo {
    /// True when the repository is encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.inner.key.is_some()
    }

    pub(crate) fn key(&self) -> Option<&MasterKey> {
        self.inner.key.as_ref()
    }

    /// The master key's fingerprint, when the repository is encrypted.
    pub fn key_fingerprint(&self) -> Option<String> {
        self.key().map(MasterKey::fingerprint)
    }

    /// The repository's format version ([`super::VERSION_1`] or [`super::VERSION`]).
    pub fn format(&self) -> u32 {
        if self.inner.sha256_names {
            super::VERSION_1
        } else {
            super::VERSION
        }
    }

    /// How this repository names its chunks.
    pub fn naming(&self) -> Naming<'_> {
        match (self.key(), self.inner.sha256_names) {
            (Some(k), _) => Naming::Keyed(k),
            (None, true) => Naming::Sha256,
            (None, false) => Naming::Blake3,
        }
    }

    /// How this repository names chunks, as text: `sha256`, `blake3`, or
    /// `blake3-keyed:<key fingerprint>`. Two repositories with the same naming give the same
    /// data the same name.
    pub fn chunk_naming(&self) -> String {
        match self.naming() {
            Naming::Sha256 => "sha256".to_owned(),
            Naming::Blake3 => super::CHUNK_NAMES_BLAKE3.to_owned(),
            Naming::Keyed(k) => format!("{}:{}", super::CHUNK_NAMES_KEYED, k.fingerprint()),
        }
    }

    /// The name of a chunk holding `data` in this repository.
    pub fn name_of(&self, data: &[u8]) -> Digest {
        self.naming().of(data)
    }

    /// The bytes to store for `plain`, object `what` of backup `backup`: `plain` itself, or
    /// sealed in an encrypted repository.
    pub(crate) fn seal_object(&self, what: Object, backup: &str, plain: Vec<u8>) -> Vec<u8> {
        match self.key() {
            None => plain,
            Some(k) => {
                let mut out = OBJECT_MAGIC.to_vec();
                k.sealer().seal(&what.aad(backup), &plain, &mut out);
                out
            }
        }
    }

    /// The plain bytes of stored object `what` of backup `backup` (read from `path`).
    pub(crate) fn open_object(
        &self,
        what: Object,
        backup: &str,
        path: &std::path::Path,
        stored: Vec<u8>,
    ) -> Result<Vec<u8>, RepoError> {
        let Some(k) = self.key() else {
            return Ok(stored);
        };
        let corrupt = |problem: String| RepoError::Corrupt {
            path: path.to_owned(),
            problem,
        };
        let Some(sealed) = stored.strip_prefix(OBJECT_MAGIC) else {
            return Err(corrupt(
                "not sealed (an encrypted repository seals every object)".into(),
            ));
        };
        let mut plain = Vec::new();
        k.sealer()
            .open(&what.aad(backup), sealed, &mut plain)
            .map_err(|e| corrupt(e.to_string()))?;
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn aes_256_gcm_known_answers() {
        // McGrew & Viega, "The Galois/Counter Mode of Operation", test cases 13 and 14.
        let s = Sealer::new(&[0; 32]);
        let mut out = Vec::new();
        s.seal_with_nonce(&[0; 12], b"", b"", &mut out);
        assert_eq!(out[12..], unhex("530f8afbc74536b9a963b4f1c4cb738b"));
        out.clear();
        s.seal_with_nonce(&[0; 12], b"", &[0; 16], &mut out);
        assert_eq!(
            out[12..],
            unhex("cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919")
        );
        let mut plain = Vec::new();
        s.open(b"", &out, &mut plain).unwrap();
        assert_eq!(plain, [0; 16]);
    }

    #[test]
    fn every_changed_byte_and_other_aad_or_key_fail() {
        let k = MasterKey::generate();
        let mut sealed = Vec::new();
        k.sealer()
            .seal(b"chunk abc", b"some plain text", &mut sealed);
        assert_eq!(sealed.len(), 15 + SEAL_OVERHEAD);
        let mut out = Vec::new();
        k.sealer().open(b"chunk abc", &sealed, &mut out).unwrap();
        assert_eq!(out, b"some plain text");
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert_eq!(k.sealer().open(b"chunk abc", &bad, &mut out), Err(Tampered));
            assert!(out.is_empty());
        }
        assert_eq!(
            k.sealer().open(b"chunk abd", &sealed, &mut out),
            Err(Tampered)
        );
        let other = MasterKey::generate();
        assert_eq!(
            other.sealer().open(b"chunk abc", &sealed, &mut out),
            Err(Tampered)
        );
        assert_eq!(k.sealer().open(b"", &sealed[..20], &mut out), Err(Tampered));
        // Two seals of the same data differ (fresh nonces).
        let mut again = Vec::new();
        k.sealer()
            .seal(b"chunk abc", b"some plain text", &mut again);
        assert_ne!(again, sealed);
    }

    #[test]
    fn chunk_names_are_keyed_blake3() {
        // BLAKE3's published test vectors (test_vectors.json): key "whats the Elvish word for
        // friend", input of length 0.
        let mut bytes = [0u8; 64];
        bytes[32..].copy_from_slice(b"whats the Elvish word for friend");
        let k = MasterKey::from_bytes(&bytes);
        assert_eq!(
            k.chunk_name(b"").to_string(),
            "92b2b75604ed3c761f9d6f62392c8a9227ad0ea3f09573e783f1498a4ed60d26"
        );
        let other = MasterKey::generate();
        assert_ne!(k.chunk_name(b"data"), other.chunk_name(b"data"));
        assert_eq!(k.fingerprint().len(), 16);
        assert_eq!(format!("{k:?}"), "MasterKey(..)");
    }
}
