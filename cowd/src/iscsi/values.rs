//! Values of iSCSI text keys (RFC 7143 §6.1): numbers (decimal, `0x` hex, `0b` base64),
//! binary values (CHAP challenges and responses), booleans and lists (pure).
//!
//! Parsing is strict where the RFC is: a decimal constant has no leading zeros (Linux reads
//! `010` as octal, so refusing it avoids answering a value the peer meant differently), a hex
//! or base64 constant has at least one digit, a regular number fits 64 bits. Hex digits may be
//! either case; base64 is RFC 4648's alphabet with its `=` padding.

/// The largest binary value (CHAP_C, CHAP_R) accepted, in bytes (RFC 7143 §12.1.3 limits
/// CHAP challenges to 1024 bytes).
pub const MAX_BINARY_LEN: usize = 1024;

/// `Yes` / `No`.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "Yes" => Some(true),
        "No" => Some(false),
        _ => None,
    }
}

/// `Yes` / `No`.
pub fn bool_str(b: bool) -> &'static str {
    if b { "Yes" } else { "No" }
}

/// A regular numerical value: decimal, `0x`/`0X` hex or `0b`/`0B` base64, below 2^64.
pub fn parse_number(s: &str) -> Option<u64> {
    let bytes = match s.as_bytes() {
        [b'0', b'x' | b'X', ..] | [b'0', b'b' | b'B', ..] => parse_binary(s)?,
        [b'0'] => return Some(0),
        [b'1'..=b'9', rest @ ..] if rest.iter().all(u8::is_ascii_digit) => {
            return s.parse().ok();
        }
        _ => return None,
    };
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    let significant = &bytes[first..];
    if significant.len() > 8 {
        return None;
    }
    Some(significant.iter().fold(0u64, |n, &b| n << 8 | u64::from(b)))
}

/// A binary value in hex (`0x`, an odd number of digits has an implied leading zero) or base64
/// (`0b`), at most [`MAX_BINARY_LEN`] bytes.
pub fn parse_binary(s: &str) -> Option<Vec<u8>> {
    let bytes = match s.as_bytes() {
        [b'0', b'x' | b'X', digits @ ..] => decode_hex(digits)?,
        [b'0', b'b' | b'B', digits @ ..] => decode_base64(digits)?,
        _ => return None,
    };
    (!bytes.is_empty() && bytes.len() <= MAX_BINARY_LEN).then_some(bytes)
}

/// `0x` and lowercase hex digits.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 + 2 * bytes.len());
    s.push_str("0x");
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// `0b` and base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + bytes.len().div_ceil(3) * 4);
    s.push_str("0b");
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(char::from(BASE64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// The items of a list-of-values.
pub fn list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',')
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn decode_hex(digits: &[u8]) -> Option<Vec<u8>> {
    if digits.is_empty() || digits.len() > 2 * MAX_BINARY_LEN + 1 {
        return None;
    }
    let mut out = Vec::with_capacity(digits.len().div_ceil(2));
    let (head, rest) = digits.split_at(digits.len() % 2);
    if let [d] = head {
        out.push(hex_digit(*d)?);
    }
    for pair in rest.chunks(2) {
        out.push(hex_digit(pair[0])? << 4 | hex_digit(pair[1])?);
    }
    Some(out)
}

fn base64_digit(c: u8) -> Option<u32> {
    BASE64.iter().position(|&d| d == c).map(|i| i as u32)
}

fn decode_base64(digits: &[u8]) -> Option<Vec<u8>> {
    if digits.is_empty() || digits.len() % 4 != 0 || digits.len() / 4 * 3 > MAX_BINARY_LEN + 2 {
        return None;
    }
    let pad = digits.iter().rev().take_while(|&&c| c == b'=').count();
    if pad > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(digits.len() / 4 * 3);
    for (i, quad) in digits.chunks(4).enumerate() {
        let last = i == digits.len() / 4 - 1;
        let used = if last { 4 - pad } else { 4 };
        let mut n = 0u32;
        for (j, &c) in quad.iter().enumerate() {
            let d = if j < used { base64_digit(c)? } else { 0 };
            n |= d << (18 - 6 * j);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..used]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_three_encodings() {
        assert_eq!(parse_number("0"), Some(0));
        assert_eq!(parse_number("8192"), Some(8192));
        assert_eq!(parse_number("0x2000"), Some(8192));
        assert_eq!(parse_number("0X2000"), Some(8192));
        assert_eq!(parse_number("0bIAA="), Some(8192));
        assert_eq!(parse_number("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_number("18446744073709551616"), None);
        assert_eq!(parse_number("0x000000000000000001"), Some(1));
        assert_eq!(parse_number("0x010000000000000000"), None);
        for bad in ["", "010", "-1", "+1", "1 ", "0x", "0b", "12a", "0xg", "Yes"] {
            assert_eq!(parse_number(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn binary_round_trips() {
        let bytes: Vec<u8> = (0u8..=255).collect();
        for n in [1, 2, 3, 4, 16, 255, 256] {
            let b = &bytes[..n];
            assert_eq!(parse_binary(&hex(b)).as_deref(), Some(b));
            assert_eq!(parse_binary(&base64(b)).as_deref(), Some(b));
        }
        assert_eq!(base64(b"Man"), "0bTWFu");
        assert_eq!(base64(b"Ma"), "0bTWE=");
        assert_eq!(base64(b"M"), "0bTQ==");
        assert_eq!(parse_binary("0xABC"), Some(vec![0x0a, 0xbc]));
        assert_eq!(parse_binary("0bTQ"), None, "unpadded");
        assert_eq!(parse_binary("0bT==="), None);
        assert_eq!(parse_binary("0bTQ=A"), None);
        assert_eq!(parse_binary("1234"), None, "decimal is not a binary value");
        assert!(parse_binary(&hex(&[7; MAX_BINARY_LEN])).is_some());
        assert!(parse_binary(&hex(&[7; MAX_BINARY_LEN + 1])).is_none());
    }

    #[test]
    fn booleans_and_lists() {
        assert_eq!(parse_bool("Yes"), Some(true));
        assert_eq!(parse_bool("no"), None);
        assert_eq!(bool_str(false), "No");
        assert_eq!(list("CRC32C,None").collect::<Vec<_>>(), ["CRC32C", "None"]);
    }
}
