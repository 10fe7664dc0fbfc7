//! CHAP in the login's security stage (RFC 7143 §12.1.3, RFC 1994): the target checks the
//! initiator's response to its challenge and, when the initiator asks (mutual CHAP), answers
//! the initiator's challenge (pure step function).
//!
//! ```text
//!  state            initiator sends                        target answers
//!  AwaitAlgorithm   CHAP_A=<A1,A2,...>                     CHAP_A=5 CHAP_I=<I> CHAP_C=<C>
//!  AwaitResponse    CHAP_N=<N> CHAP_R=<R>                  (nothing)
//!                   [CHAP_I=<I'> CHAP_C=<C'>]  (mutual)    CHAP_N=<N'> CHAP_R=<R'>
//!  Done / Failed    any CHAP key is an error
//! ```
//!
//! R = MD5(I || secret || C) (RFC 1994 §4.1), MD5 being the only algorithm offered (CHAP_A=5).
//! Values go out in hex (`0x`), the encoding libiscsi reads; both hex and base64 are accepted.
//! The challenge and its identifier come from the caller (random, at least 16 bytes: this
//! module draws nothing itself). A mutual challenge equal to ours is refused (a reflection
//! attack, §12.1.3), and so is any step after a failure.

use md5::{Digest, Md5};

use super::text::KeyValues;
use super::values::{hex, list, parse_binary, parse_number};

/// CHAP_A value of CHAP with MD5.
pub const CHAP_MD5: u64 = 5;
/// Bytes of an MD5 CHAP response.
pub const RESPONSE_LEN: usize = 16;
/// Shortest secret accepted in a configuration (96 bits, RFC 7143 §12.1.3 without IPsec).
pub const MIN_SECRET_LEN: usize = 12;

/// A CHAP name and secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ChapIdentity {
    pub name: String,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for ChapIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChapIdentity")
            .field("name", &self.name)
            .field("secret", &"<hidden>")
            .finish()
    }
}

/// What the target knows: the initiator's identity it checks, and its own for mutual CHAP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChapCredentials {
    pub initiator: ChapIdentity,
    pub target: Option<ChapIdentity>,
}

/// The target's challenge: an identifier and random bytes, drawn by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub id: u8,
    pub bytes: Vec<u8>,
}

/// Why CHAP failed (the login answers Authentication Failure, or Missing Parameter).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChapError {
    #[error("CHAP_A offers no supported algorithm (cowd supports 5, MD5)")]
    NoAlgorithm,
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("{0} was not expected at this step of CHAP")]
    Unexpected(String),
    #[error("{0} has a malformed value")]
    Malformed(&'static str),
    #[error("unknown CHAP name {0:?}")]
    UnknownName(String),
    #[error("the CHAP response does not match")]
    BadResponse,
    #[error("the initiator asked for mutual CHAP, but the target has no CHAP identity")]
    NoTargetIdentity,
    #[error("the initiator's challenge repeats the target's")]
    Reflection,
    #[error("CHAP already failed")]
    AlreadyFailed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitAlgorithm,
    AwaitResponse,
    Done,
    Failed,
}

/// One CHAP exchange, target side.
#[derive(Debug)]
pub struct Chap {
    credentials: ChapCredentials,
    challenge: Challenge,
    state: State,
}

/// MD5(id || secret || challenge).
pub fn response(id: u8, secret: &[u8], challenge: &[u8]) -> [u8; RESPONSE_LEN] {
    let mut h = Md5::new();
    h.update([id]);
    h.update(secret);
    h.update(challenge);
    h.finalize().into()
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn find<'a>(keys: &'a [(String, String)], key: &str) -> Option<&'a str> {
    keys.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

impl Chap {
    pub fn new(credentials: ChapCredentials, challenge: Challenge) -> Chap {
        Chap {
            credentials,
            challenge,
            state: State::AwaitAlgorithm,
        }
    }

    /// Whether the initiator has been authenticated (and the target, if asked).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Takes the CHAP_* keys of one login request; returns the target's answers.
    pub fn step(&mut self, keys: &[(String, String)]) -> Result<KeyValues, ChapError> {
        let result = match self.state {
            State::AwaitAlgorithm => self.algorithm(keys),
            State::AwaitResponse => self.verify(keys),
            State::Done => Err(ChapError::Unexpected(
                keys.first().map_or_else(String::new, |(k, _)| k.clone()),
            )),
            State::Failed => Err(ChapError::AlreadyFailed),
        };
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    fn only(keys: &[(String, String)], allowed: &[&str]) -> Result<(), ChapError> {
        match keys.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
            Some((k, _)) => Err(ChapError::Unexpected(k.clone())),
            None => Ok(()),
        }
    }

    fn algorithm(&mut self, keys: &[(String, String)]) -> Result<KeyValues, ChapError> {
        Self::only(keys, &["CHAP_A"])?;
        let offered = find(keys, "CHAP_A").ok_or(ChapError::Missing("CHAP_A"))?;
        if !list(offered).any(|a| parse_number(a) == Some(CHAP_MD5)) {
            return Err(ChapError::NoAlgorithm);
        }
        self.state = State::AwaitResponse;
        Ok(vec![
            ("CHAP_A".into(), CHAP_MD5.to_string()),
            ("CHAP_I".into(), self.challenge.id.to_string()),
            ("CHAP_C".into(), hex(&self.challenge.bytes)),
        ])
    }

    fn verify(&mut self, keys: &[(String, String)]) -> Result<KeyValues, ChapError> {
        Self::only(keys, &["CHAP_N", "CHAP_R", "CHAP_I", "CHAP_C"])?;
        let name = find(keys, "CHAP_N").ok_or(ChapError::Missing("CHAP_N"))?;
        let got = find(keys, "CHAP_R").ok_or(ChapError::Missing("CHAP_R"))?;
        let got = parse_binary(got).ok_or(ChapError::Malformed("CHAP_R"))?;
        let expected = &self.credentials.initiator;
        if name != expected.name {
            return Err(ChapError::UnknownName(name.to_owned()));
        }
        let want = response(self.challenge.id, &expected.secret, &self.challenge.bytes);
        if !same(&got, &want) {
            return Err(ChapError::BadResponse);
        }
        let answers = match (find(keys, "CHAP_I"), find(keys, "CHAP_C")) {
            (None, None) => Vec::new(),
            (Some(_), None) => return Err(ChapError::Missing("CHAP_C")),
            (None, Some(_)) => return Err(ChapError::Missing("CHAP_I")),
            (Some(id), Some(challenge)) => self.answer_mutual(id, challenge)?,
        };
        self.state = State::Done;
        Ok(answers)
    }

    fn answer_mutual(&self, id: &str, challenge: &str) -> Result<KeyValues, ChapError> {
        let id = parse_number(id)
            .and_then(|n| u8::try_from(n).ok())
            .ok_or(ChapError::Malformed("CHAP_I"))?;
        let challenge = parse_binary(challenge).ok_or(ChapError::Malformed("CHAP_C"))?;
        let target = self
            .credentials
            .target
            .as_ref()
            .ok_or(ChapError::NoTargetIdentity)?;
        if same(&challenge, &self.challenge.bytes) {
            return Err(ChapError::Reflection);
        }
        let r = response(id, &target.secret, &challenge);
        Ok(vec![
            ("CHAP_N".into(), target.name.clone()),
            ("CHAP_R".into(), hex(&r)),
        ])
    }
}

#[cfg(test)]
#[path = "chap_tests.rs"]
mod tests;
