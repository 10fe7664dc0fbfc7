//! Text keys: the `key=value\0` pairs in the data segments of Login and Text PDUs
//! (RFC 7143 §6.1), their parsing with limits and their encoding; the accumulator for a text
//! that spans several PDUs with the C bit, and the splitter for one we send that way (pure;
//! fuzzed).
//!
//! A logical text data segment (LTDS) is the data of one PDU with C=0, or of a run of PDUs
//! with C=1 ended by one with C=0. Every pair in it, the last included, ends with a NUL.
//! Limits, and what happens past them:
//!
//! | what | limit | source |
//! |---|---|---|
//! | key | 1..=63 bytes, a letter then letters, digits, `.-+@_` (`X#` may start a key) | §6.1 standard-label; `iSCSIProtocolLevel` starts lowercase |
//! | value | 255 bytes; 8192 for `CHAP_C`, `CHAP_R` | §6.1 "simple-value"; large-binary-value |
//! | LTDS | 64 KiB | cowd's choice (the RFC leaves it to the implementation) |
//!
//! Any breach, a pair without `=`, a value that is not UTF-8 and a key given twice in one
//! LTDS are a [`TextError`] (the login answers Initiator Error). Empty entries (two NULs in a
//! row, or NUL padding at the end) are skipped, as libiscsi and Linux do.

/// Longest key name.
pub const MAX_KEY_LEN: usize = 63;
/// Longest value of most keys.
pub const MAX_VALUE_LEN: usize = 255;
/// Longest value of the keys in [`LARGE_VALUE_KEYS`].
pub const MAX_LARGE_VALUE_LEN: usize = 8192;
/// Keys whose values are large binary values.
pub const LARGE_VALUE_KEYS: [&str; 2] = ["CHAP_C", "CHAP_R"];
/// Longest logical text data segment accepted.
pub const MAX_TEXT_LEN: usize = 64 << 10;

/// The answer to a key whose offered value is refused.
pub const REJECT: &str = "Reject";
/// The answer to a key that does not apply to this session.
pub const IRRELEVANT: &str = "Irrelevant";
/// The answer to a key the target does not know.
pub const NOT_UNDERSTOOD: &str = "NotUnderstood";

/// Key=value pairs in the order they came.
pub type KeyValues = Vec<(String, String)>;

/// Why a text cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("text does not end with a NUL")]
    Unterminated,
    #[error("text longer than {max} bytes")]
    TooLong { max: usize },
    #[error("key=value pair without '='")]
    NoEquals,
    #[error("invalid key name {0:?}")]
    BadKey(String),
    #[error("value of {key} is {len} bytes, more than {max}")]
    ValueTooLong { key: String, len: usize, max: usize },
    #[error("value of {0} is not UTF-8")]
    NotUtf8(String),
    #[error("key {0} given twice")]
    Duplicate(String),
}

/// Whether `key` is a valid key name.
pub fn valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    let label = |c: &u8| c.is_ascii_alphanumeric() || b".-+@_".contains(c);
    let rest = match b {
        [b'X', b'#', rest @ ..] => rest,
        [first, rest @ ..] if first.is_ascii_alphabetic() => rest,
        _ => return false,
    };
    b.len() <= MAX_KEY_LEN && rest.iter().all(label)
}

/// Longest value accepted for `key`.
pub fn max_value_len(key: &str) -> usize {
    if LARGE_VALUE_KEYS.contains(&key) {
        MAX_LARGE_VALUE_LEN
    } else {
        MAX_VALUE_LEN
    }
}

/// A key as an error message shows it: lossy, and cut after 80 bytes.
fn shown(key: &[u8]) -> String {
    String::from_utf8_lossy(&key[..key.len().min(80)]).into_owned()
}

/// Parses one LTDS.
pub fn parse(data: &[u8]) -> Result<KeyValues, TextError> {
    if data.len() > MAX_TEXT_LEN {
        return Err(TextError::TooLong { max: MAX_TEXT_LEN });
    }
    let Some(body) = data.strip_suffix(&[0]) else {
        return if data.is_empty() {
            Ok(Vec::new())
        } else {
            Err(TextError::Unterminated)
        };
    };
    let mut pairs: KeyValues = Vec::new();
    for entry in body.split(|&b| b == 0).filter(|e| !e.is_empty()) {
        let eq = entry
            .iter()
            .position(|&b| b == b'=')
            .ok_or(TextError::NoEquals)?;
        let (key, value) = (&entry[..eq], &entry[eq + 1..]);
        let key = std::str::from_utf8(key)
            .ok()
            .filter(|k| valid_key(k))
            .ok_or_else(|| TextError::BadKey(shown(key)))?;
        let max = max_value_len(key);
        if value.len() > max {
            return Err(TextError::ValueTooLong {
                key: key.to_owned(),
                len: value.len(),
                max,
            });
        }
        let value = std::str::from_utf8(value).map_err(|_| TextError::NotUtf8(key.to_owned()))?;
        if pairs.iter().any(|(k, _)| k == key) {
            return Err(TextError::Duplicate(key.to_owned()));
        }
        pairs.push((key.to_owned(), value.to_owned()));
    }
    Ok(pairs)
}

/// Encodes pairs as `key=value\0...` (no checks: the caller writes valid keys and values).
pub fn encode<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        out.extend_from_slice(k.as_ref().as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_ref().as_bytes());
        out.push(0);
    }
    out
}

/// Collects the data segments of a C-bit run into one LTDS.
#[derive(Debug, Default)]
pub struct Accumulator {
    buf: Vec<u8>,
}

impl Accumulator {
    /// Adds the data of one PDU; with `cont` clear, the LTDS is complete and parsed.
    pub fn push(&mut self, data: &[u8], cont: bool) -> Result<Option<KeyValues>, TextError> {
        if self.buf.len() + data.len() > MAX_TEXT_LEN {
            self.buf.clear();
            return Err(TextError::TooLong { max: MAX_TEXT_LEN });
        }
        self.buf.extend_from_slice(data);
        if cont {
            return Ok(None);
        }
        let text = std::mem::take(&mut self.buf);
        parse(&text).map(Some)
    }

    /// Whether part of an LTDS is waiting for its end.
    pub fn is_pending(&self) -> bool {
        !self.buf.is_empty()
    }
}

/// A text to send in PDUs of at most a given size, with C=1 on all but the last.
#[derive(Debug, Default)]
pub struct Outgoing {
    text: Vec<u8>,
    sent: usize,
}

impl Outgoing {
    pub fn new(text: Vec<u8>) -> Outgoing {
        Outgoing { text, sent: 0 }
    }

    /// The next data segment of at most `max` bytes (at least 1), and whether more follow
    /// (the C bit of the PDU that carries it).
    pub fn next_chunk(&mut self, max: usize) -> (Vec<u8>, bool) {
        let end = self.text.len().min(self.sent + max.max(1));
        let chunk = self.text[self.sent..end].to_vec();
        self.sent = end;
        (chunk, !self.is_done())
    }

    /// Whether everything has been handed out.
    pub fn is_done(&self) -> bool {
        self.sent >= self.text.len()
    }
}

#[cfg(test)]
#[path = "text_tests.rs"]
mod tests;
