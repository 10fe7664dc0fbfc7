//! CHAP tests: known MD5 answers, the exchange as libiscsi runs it (one-way and mutual), and
//! each way it fails.

use super::super::text::KeyValues;
use super::super::values::base64;
use super::*;

fn kv(pairs: &[(&str, &str)]) -> KeyValues {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn credentials(mutual: bool) -> ChapCredentials {
    ChapCredentials {
        initiator: ChapIdentity {
            name: "alice".into(),
            secret: b"initiator-secret".to_vec(),
        },
        target: mutual.then(|| ChapIdentity {
            name: "cowd".into(),
            secret: b"target-secret1".to_vec(),
        }),
    }
}

fn challenge() -> Challenge {
    Challenge {
        id: 1,
        bytes: (0u8..16).collect(),
    }
}

/// MD5 values computed independently (Python's hashlib).
#[test]
fn md5_known_answers() {
    let r = response(1, b"initiator-secret", &(0u8..16).collect::<Vec<_>>());
    assert_eq!(hex(&r), "0xb8560a1a75e50351791f3b3e58ec4520");
    let r = response(7, b"secret", &[1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(hex(&r), "0x5bcc06f518a0d62562ac86640126379c");
}

#[test]
fn one_way_exchange() {
    let mut chap = Chap::new(credentials(false), challenge());
    let answers = chap.step(&kv(&[("CHAP_A", "7,5")])).unwrap();
    let want = kv(&[
        ("CHAP_A", "5"),
        ("CHAP_I", "1"),
        ("CHAP_C", "0x000102030405060708090a0b0c0d0e0f"),
    ]);
    assert_eq!(answers, want);
    assert!(!chap.is_done());
    let r = "0xB8560A1A75E50351791F3B3E58EC4520";
    let answers = chap
        .step(&kv(&[("CHAP_N", "alice"), ("CHAP_R", r)]))
        .unwrap();
    assert_eq!(answers, Vec::new());
    assert!(chap.is_done());
    let again = chap.step(&kv(&[("CHAP_A", "5")]));
    assert_eq!(again, Err(ChapError::Unexpected("CHAP_A".into())));
}

#[test]
fn base64_response_is_accepted() {
    let mut chap = Chap::new(credentials(false), challenge());
    chap.step(&kv(&[("CHAP_A", "5")])).unwrap();
    let r = response(1, b"initiator-secret", &challenge().bytes);
    let keys = kv(&[("CHAP_N", "alice"), ("CHAP_R", &base64(&r))]);
    assert_eq!(chap.step(&keys), Ok(Vec::new()));
}

#[test]
fn mutual_exchange() {
    let mut chap = Chap::new(credentials(true), challenge());
    chap.step(&kv(&[("CHAP_A", "5")])).unwrap();
    let r = response(1, b"initiator-secret", &challenge().bytes);
    let theirs = hex(&[0xaa; 16]);
    let keys = kv(&[
        ("CHAP_N", "alice"),
        ("CHAP_R", &hex(&r)),
        ("CHAP_I", "66"),
        ("CHAP_C", &theirs),
    ]);
    let want = kv(&[
        ("CHAP_N", "cowd"),
        ("CHAP_R", "0x388b3c639cab580394edac4969c9912e"),
    ]);
    assert_eq!(chap.step(&keys), Ok(want));
    assert!(chap.is_done());
}

/// Runs the exchange up to the response and returns what the response step says.
fn respond(creds: ChapCredentials, keys: &[(&str, &str)]) -> Result<KeyValues, ChapError> {
    let mut chap = Chap::new(creds, challenge());
    chap.step(&kv(&[("CHAP_A", "5")])).unwrap();
    let result = chap.step(&kv(keys));
    if result.is_err() {
        assert_eq!(chap.step(&kv(keys)), Err(ChapError::AlreadyFailed));
    }
    result
}

#[test]
fn failures() {
    let good = hex(&response(1, b"initiator-secret", &challenge().bytes));
    let bad = hex(&response(1, b"wrong-secret-value", &challenge().bytes));
    let c = || credentials(false);
    assert_eq!(
        respond(c(), &[("CHAP_N", "alice"), ("CHAP_R", &bad)]),
        Err(ChapError::BadResponse)
    );
    assert_eq!(
        respond(c(), &[("CHAP_N", "bob"), ("CHAP_R", &good)]),
        Err(ChapError::UnknownName("bob".into()))
    );
    assert_eq!(
        respond(c(), &[("CHAP_N", "alice")]),
        Err(ChapError::Missing("CHAP_R"))
    );
    assert_eq!(
        respond(c(), &[("CHAP_N", "alice"), ("CHAP_R", "12345")]),
        Err(ChapError::Malformed("CHAP_R"))
    );
    let mutual = [("CHAP_N", "alice"), ("CHAP_R", &good), ("CHAP_I", "2")];
    assert_eq!(respond(c(), &mutual), Err(ChapError::Missing("CHAP_C")));
    let theirs = hex(&[0xaa; 16]);
    let mutual = [
        ("CHAP_N", "alice"),
        ("CHAP_R", &good),
        ("CHAP_I", "2"),
        ("CHAP_C", &theirs),
    ];
    assert_eq!(respond(c(), &mutual), Err(ChapError::NoTargetIdentity));
    let ours = hex(&challenge().bytes);
    let reflected = [
        ("CHAP_N", "alice"),
        ("CHAP_R", &good),
        ("CHAP_I", "2"),
        ("CHAP_C", &ours),
    ];
    assert_eq!(
        respond(credentials(true), &reflected),
        Err(ChapError::Reflection)
    );
    let mut chap = Chap::new(c(), challenge());
    let sha256 = chap.step(&kv(&[("CHAP_A", "7")]));
    assert_eq!(sha256, Err(ChapError::NoAlgorithm));
    let mut chap = Chap::new(c(), challenge());
    let early = chap.step(&kv(&[("CHAP_N", "alice"), ("CHAP_R", &good)]));
    assert_eq!(early, Err(ChapError::Unexpected("CHAP_N".into())));
}
