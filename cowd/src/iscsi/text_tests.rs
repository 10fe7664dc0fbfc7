//! Text key tests: a real login text, every limit and its error, texts split over PDUs in
//! both directions, and the parse/encode round trip.

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

fn kv(pairs: &[(&str, &str)]) -> KeyValues {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The first login text of libiscsi (lib/login.c) without CHAP, abridged.
const LOGIN: &[u8] = b"InitiatorName=iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test\0\
TargetName=iqn.2024-01.org.cowd:disk\0SessionType=Normal\0HeaderDigest=None,CRC32C\0\
DataDigest=None\0MaxRecvDataSegmentLength=262144\0";

#[test]
fn parses_a_login_text() {
    let pairs = parse(LOGIN).unwrap();
    assert_eq!(pairs.len(), 6);
    assert_eq!(pairs[3], ("HeaderDigest".into(), "None,CRC32C".into()));
    assert_eq!(encode(&pairs), LOGIN);
    assert_eq!(parse(b""), Ok(Vec::new()));
}

#[test]
fn format_errors() {
    assert_eq!(parse(b"A=1"), Err(TextError::Unterminated));
    assert_eq!(parse(b"A=1\0B=2"), Err(TextError::Unterminated));
    assert_eq!(parse(b"A1\0"), Err(TextError::NoEquals));
    assert_eq!(parse(b"=1\0"), Err(TextError::BadKey(String::new())));
    assert_eq!(parse(b"1A=1\0"), Err(TextError::BadKey("1A".into())));
    assert_eq!(parse(b"A B=1\0"), Err(TextError::BadKey("A B".into())));
    assert_eq!(parse(b"A=\xff\0"), Err(TextError::NotUtf8("A".into())));
    assert_eq!(parse(b"A=1\0A=2\0"), Err(TextError::Duplicate("A".into())));
    assert_eq!(
        parse(b"A=x=y\0"),
        Ok(kv(&[("A", "x=y")])),
        "the first = splits"
    );
    assert_eq!(parse(b"A=\0"), Ok(kv(&[("A", "")])));
    assert_eq!(parse(b"A=1\0\0\0\0"), Ok(kv(&[("A", "1")])), "NUL padding");
}

#[test]
fn key_names() {
    for good in [
        "A",
        "HeaderDigest",
        "iSCSIProtocolLevel",
        "X-com.example.k",
        "X#NodeArchitecture",
        "CHAP_A",
        "A.b-c+d@e_f",
    ] {
        assert!(valid_key(good), "{good}");
    }
    for bad in ["", "1A", "-A", "A#", "A=B", "A/B", "Ä"] {
        assert!(!valid_key(bad), "{bad}");
    }
    let k63 = "K".repeat(63);
    assert!(valid_key(&k63));
    assert!(!valid_key(&(k63 + "K")));
}

#[test]
fn value_limits() {
    let text = |key: &str, n: usize| {
        let mut t = format!("{key}=").into_bytes();
        t.extend(std::iter::repeat_n(b'a', n));
        t.push(0);
        t
    };
    assert!(parse(&text("TargetAlias", 255)).is_ok());
    let err = TextError::ValueTooLong {
        key: "TargetAlias".into(),
        len: 256,
        max: 255,
    };
    assert_eq!(parse(&text("TargetAlias", 256)), Err(err));
    assert!(parse(&text("CHAP_C", 8192)).is_ok());
    assert!(parse(&text("CHAP_R", 8193)).is_err());
    let mut big = Vec::new();
    for i in 0..=MAX_TEXT_LEN / 8 {
        big.extend_from_slice(format!("K{i:05}=\0").as_bytes());
    }
    assert!(big.len() > MAX_TEXT_LEN);
    let max = MAX_TEXT_LEN;
    assert_eq!(parse(&big), Err(TextError::TooLong { max }));
}

/// A text split anywhere over two PDUs (C=1, then C=0) parses as the whole.
#[test]
fn accumulates_a_split_text() {
    let whole = parse(LOGIN).unwrap();
    for at in 0..=LOGIN.len() {
        let mut acc = Accumulator::default();
        assert_eq!(acc.push(&LOGIN[..at], true), Ok(None));
        assert_eq!(acc.is_pending(), at > 0);
        assert_eq!(acc.push(&LOGIN[at..], false), Ok(Some(whole.clone())));
        assert!(!acc.is_pending());
    }
    let mut acc = Accumulator::default();
    let chunk = vec![b'a'; MAX_TEXT_LEN / 2 + 1];
    assert_eq!(acc.push(&chunk, true), Ok(None));
    let max = MAX_TEXT_LEN;
    assert_eq!(acc.push(&chunk, true), Err(TextError::TooLong { max }));
    assert!(!acc.is_pending(), "the run is dropped");
}

#[test]
fn sends_a_text_in_pieces() {
    let mut out = Outgoing::new(LOGIN.to_vec());
    let mut got = Vec::new();
    loop {
        let (piece, more) = out.next_chunk(64);
        assert!(piece.len() <= 64);
        got.extend_from_slice(&piece);
        if !more {
            break;
        }
    }
    assert_eq!(got, LOGIN);
    assert!(out.is_done());
    let mut empty = Outgoing::new(Vec::new());
    assert_eq!(empty.next_chunk(8), (Vec::new(), false));
}

fn key() -> impl Strategy<Value = String> {
    "[A-Z][A-Za-z0-9.+@_-]{0,62}"
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,255}",
        "\\PC{0,60}".prop_filter("NUL-free", |v: &String| !v.contains('\0')),
    ]
}

proptest! {
    /// parse(encode(x)) == x for pairs with valid, distinct keys and values.
    #[test]
    fn parse_encode_round_trip(pairs in vec((key(), value()), 0..20)) {
        let mut seen = std::collections::BTreeSet::new();
        let pairs: KeyValues = pairs
            .into_iter()
            .filter(|(k, v)| seen.insert(k.clone()) && v.len() <= max_value_len(k))
            .collect();
        prop_assert_eq!(parse(&encode(&pairs)), Ok(pairs));
    }

    /// parse never panics; whatever it accepts is within the limits and encodes back to the
    /// text without its empty entries.
    #[test]
    fn parse_any_bytes(b in vec(prop_oneof![Just(0u8), Just(b'='), Just(b'A'), any::<u8>()], 0..200)) {
        if let Ok(pairs) = parse(&b) {
            for (k, v) in &pairs {
                prop_assert!(valid_key(k));
                prop_assert!(v.len() <= max_value_len(k));
            }
            prop_assert_eq!(parse(&encode(&pairs)), Ok(pairs));
        }
    }
}
