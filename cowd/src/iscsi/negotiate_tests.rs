//! Negotiation tests: what libiscsi offers and what the target answers, discovery sessions
//! and SendTargets, each refusal, and properties of the results on arbitrary offers.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::super::chap::{ChapCredentials, ChapIdentity, response};
use super::super::values::hex;
use super::*;

const INITIATOR: &str = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test";
const DISK: &str = "iqn.2024-01.org.cowd:disk";
const BACKUP: &str = "iqn.2024-01.org.cowd:backup";

fn kv(pairs: &[(&str, &str)]) -> KeyValues {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn map(pairs: &KeyValues) -> BTreeMap<&str, &str> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

fn config() -> TargetConfig {
    TargetConfig {
        targets: vec![
            TargetEntry {
                name: DISK.into(),
                alias: Some("disk".into()),
                addresses: vec!["192.0.2.1:3260".into(), "[2001:db8::1]:3260".into()],
            },
            TargetEntry {
                name: BACKUP.into(),
                alias: None,
                addresses: Vec::new(),
            },
        ],
        ..TargetConfig::default()
    }
}

/// A negotiation in `stage`, as if the login had moved there.
fn at(config: TargetConfig, stage: Stage) -> Negotiation {
    let mut n = Negotiation::new(config);
    n.set_stage(stage);
    n
}

/// The one operational-stage request libiscsi sends when it has no CHAP user
/// (lib/login.c, with a larger MaxBurstLength).
fn libiscsi_offer() -> KeyValues {
    kv(&[
        ("InitiatorName", INITIATOR),
        ("TargetName", DISK),
        ("SessionType", "Normal"),
        ("HeaderDigest", "None,CRC32C"),
        ("DataDigest", "None"),
        ("InitialR2T", "No"),
        ("ImmediateData", "Yes"),
        ("MaxBurstLength", "16776192"),
        ("FirstBurstLength", "262144"),
        ("DefaultTime2Wait", "2"),
        ("DefaultTime2Retain", "0"),
        ("MaxOutstandingR2T", "1"),
        ("ErrorRecoveryLevel", "0"),
        ("IFMarker", "No"),
        ("OFMarker", "No"),
        ("MaxConnections", "1"),
        ("MaxRecvDataSegmentLength", "262144"),
        ("DataPDUInOrder", "Yes"),
        ("DataSequenceInOrder", "Yes"),
    ])
}

#[test]
fn libiscsi_operational_offer() {
    let mut n = at(config(), Stage::Operational);
    let answers = n.offer(&libiscsi_offer()).unwrap();
    let want = BTreeMap::from([
        ("TargetAlias", "disk"),
        ("TargetPortalGroupTag", "1"),
        ("HeaderDigest", "None"),
        ("DataDigest", "None"),
        ("InitialR2T", "Yes"),
        ("ImmediateData", "Yes"),
        ("MaxBurstLength", "1048576"),
        ("FirstBurstLength", "65536"),
        ("DefaultTime2Wait", "2"),
        ("DefaultTime2Retain", "0"),
        ("MaxOutstandingR2T", "1"),
        ("ErrorRecoveryLevel", "0"),
        ("IFMarker", "No"),
        ("OFMarker", "No"),
        ("MaxConnections", "1"),
        ("MaxRecvDataSegmentLength", "262144"),
        ("DataPDUInOrder", "Yes"),
        ("DataSequenceInOrder", "Yes"),
    ]);
    assert_eq!(map(&answers), want);
    assert_eq!(answers.len(), want.len(), "each key answered once");
    assert_eq!(n.check_complete(), Ok(()));
    let p = n.params();
    assert_eq!(p.initiator_name.as_deref(), Some(INITIATOR));
    assert_eq!(p.target_name.as_deref(), Some(DISK));
    assert_eq!(p.digests, Digests::NONE);
    assert_eq!(p.max_xmit_data_segment_length, 262144);
    assert_eq!(p.max_recv_data_segment_length, 262144);
    assert_eq!((p.max_burst_length, p.first_burst_length), (1 << 20, 65536));
    assert!(p.initial_r2t && p.immediate_data);
}

/// Keys left out keep the RFC defaults; the target still declares its own data length.
#[test]
fn defaults_for_keys_not_offered() {
    let mut n = at(config(), Stage::Operational);
    let hello = kv(&[("InitiatorName", INITIATOR), ("TargetName", BACKUP)]);
    let answers = n.offer(&hello).unwrap();
    let want = kv(&[
        ("TargetPortalGroupTag", "1"),
        ("MaxRecvDataSegmentLength", "262144"),
    ]);
    assert_eq!(answers, want);
    let p = n.params();
    assert_eq!(
        p,
        SessionParams {
            initiator_name: Some(INITIATOR.into()),
            target_name: Some(BACKUP.into()),
            max_recv_data_segment_length: 262144,
            ..SessionParams::default()
        }
    );
    assert_eq!(n.offer(&[]).unwrap(), Vec::new(), "declared once");
}

#[test]
fn names_in_the_first_request() {
    let mut n = at(config(), Stage::Security);
    let no_initiator = kv(&[("TargetName", DISK)]);
    assert_eq!(
        n.offer(&no_initiator),
        Err(NegotiateError::MissingInitiatorName)
    );
    let mut n = at(config(), Stage::Security);
    let no_target = kv(&[("InitiatorName", INITIATOR)]);
    assert_eq!(n.offer(&no_target), Err(NegotiateError::MissingTargetName));
    let mut n = at(config(), Stage::Security);
    let elsewhere = kv(&[("InitiatorName", INITIATOR), ("TargetName", "iqn.x:y")]);
    let err = NegotiateError::TargetNotFound("iqn.x:y".into());
    assert_eq!(n.offer(&elsewhere), Err(err));
    let mut n = at(config(), Stage::Security);
    let discovery = kv(&[("InitiatorName", INITIATOR), ("SessionType", "Discovery")]);
    assert_eq!(n.offer(&discovery), Ok(Vec::new()));
    assert_eq!(n.session_type(), SessionType::Discovery);
}

#[test]
fn discovery_session_and_send_targets() {
    let mut n = at(config(), Stage::Operational);
    let offer = kv(&[
        ("InitiatorName", INITIATOR),
        ("SessionType", "Discovery"),
        ("MaxBurstLength", "4096"),
        ("ImmediateData", "Yes"),
        ("HeaderDigest", "CRC32C"),
    ]);
    let answers = n.offer(&offer).unwrap();
    let want = BTreeMap::from([
        ("MaxBurstLength", "Irrelevant"),
        ("ImmediateData", "Irrelevant"),
        ("HeaderDigest", "CRC32C"),
        ("MaxRecvDataSegmentLength", "262144"),
    ]);
    assert_eq!(map(&answers), want);
    n.check_complete().unwrap();
    n.set_stage(Stage::FullFeature);
    let all = n.offer(&kv(&[("SendTargets", "All")])).unwrap();
    let want = kv(&[
        ("TargetName", DISK),
        ("TargetAddress", "192.0.2.1:3260,1"),
        ("TargetAddress", "[2001:db8::1]:3260,1"),
        ("TargetName", BACKUP),
    ]);
    assert_eq!(all, want);
    let one = n.offer(&kv(&[("SendTargets", BACKUP)])).unwrap();
    assert_eq!(one, kv(&[("TargetName", BACKUP)]));
    let none = n.offer(&kv(&[("SendTargets", "iqn.x:y")])).unwrap();
    assert_eq!(none, Vec::new());
    let empty = n.offer(&kv(&[("SendTargets", "")])).unwrap();
    assert_eq!(empty, kv(&[("SendTargets", "Reject")]));
}

#[test]
fn send_targets_in_a_normal_session() {
    let mut n = at(config(), Stage::Operational);
    n.offer(&kv(&[("InitiatorName", INITIATOR), ("TargetName", BACKUP)]))
        .unwrap();
    n.set_stage(Stage::FullFeature);
    let own = n.offer(&kv(&[("SendTargets", "")])).unwrap();
    assert_eq!(own, kv(&[("TargetName", BACKUP)]));
    let all = n.offer(&kv(&[("SendTargets", "All")])).unwrap();
    assert_eq!(all, kv(&[("SendTargets", "Reject")]));
    let other = n.offer(&kv(&[("SendTargets", DISK)])).unwrap();
    assert_eq!(
        other,
        Vec::new(),
        "a normal session sees its own target only"
    );
    let mrdsl = kv(&[("MaxRecvDataSegmentLength", "4096")]);
    assert_eq!(
        n.offer(&mrdsl),
        Ok(Vec::new()),
        "declared again in a Text request"
    );
    assert_eq!(n.params().max_xmit_data_segment_length, 4096);
    let err = NegotiateError::WrongStage {
        key: "MaxBurstLength".into(),
        stage: Stage::FullFeature,
    };
    assert_eq!(n.offer(&kv(&[("MaxBurstLength", "4096")])), Err(err));
}

#[test]
fn negotiated_once_declared_consistently() {
    let mut n = at(config(), Stage::Operational);
    n.offer(&libiscsi_offer()).unwrap();
    let again = n.offer(&kv(&[("MaxBurstLength", "8192")]));
    assert_eq!(
        again,
        Err(NegotiateError::Renegotiated("MaxBurstLength".into()))
    );
    let same = kv(&[
        ("InitiatorName", INITIATOR),
        ("TargetName", DISK),
        ("SessionType", "Normal"),
    ]);
    assert_eq!(n.offer(&same), Ok(Vec::new()), "libiscsi repeats these");
    let changed = n.offer(&kv(&[("SessionType", "Discovery")]));
    assert!(matches!(changed, Err(NegotiateError::Redeclared { .. })));
    let changed = n.offer(&kv(&[("InitiatorName", "iqn.x:other")]));
    assert!(matches!(changed, Err(NegotiateError::Redeclared { .. })));
}

#[test]
fn keys_out_of_their_stage() {
    let hello = [("InitiatorName", INITIATOR), ("TargetName", DISK)];
    let wrong = |stage, key: &str, value: &str| {
        let mut n = at(config(), stage);
        let mut offer = kv(&hello);
        offer.push((key.into(), value.into()));
        n.offer(&offer)
    };
    let err = |key: &str, stage| {
        Err(NegotiateError::WrongStage {
            key: key.into(),
            stage,
        })
    };
    assert_eq!(
        wrong(Stage::Security, "HeaderDigest", "None"),
        err("HeaderDigest", Stage::Security)
    );
    assert_eq!(
        wrong(Stage::Operational, "AuthMethod", "None"),
        err("AuthMethod", Stage::Operational)
    );
    assert_eq!(
        wrong(Stage::Operational, "CHAP_A", "5"),
        err("CHAP_A", Stage::Operational)
    );
    assert_eq!(
        wrong(Stage::Operational, "SendTargets", "All"),
        err("SendTargets", Stage::Operational)
    );
    assert_eq!(
        wrong(Stage::Operational, "TargetAddress", "x"),
        Err(NegotiateError::NotForTarget("TargetAddress".into()))
    );
}

#[test]
fn unknown_obsolete_and_answer_values() {
    let mut n = at(config(), Stage::Operational);
    let offer = kv(&[
        ("InitiatorName", INITIATOR),
        ("TargetName", DISK),
        ("X-com.example.Feature", "1"),
        ("NewKey", "x"),
        ("X#NodeArchitecture", "libiscsi/1.20"),
        ("IFMarkInt", "2048~8192"),
        ("ImmediateData", "Irrelevant"),
        ("iSCSIProtocolLevel", "2"),
        ("TaskReporting", "ResponseFence,RFC3720"),
    ]);
    let answers = n.offer(&offer).unwrap();
    let answers = map(&answers);
    assert_eq!(answers["X-com.example.Feature"], "NotUnderstood");
    assert_eq!(answers["NewKey"], "NotUnderstood");
    assert_eq!(answers["IFMarkInt"], "Irrelevant");
    assert_eq!(answers["iSCSIProtocolLevel"], "1");
    assert_eq!(answers["TaskReporting"], "RFC3720");
    assert!(!answers.contains_key("X#NodeArchitecture"));
    assert!(!answers.contains_key("ImmediateData"));
}

#[test]
fn digest_policies() {
    let answer = |policy, offered: &str| {
        let cfg = TargetConfig {
            digests: policy,
            ..config()
        };
        let mut n = at(cfg, Stage::Operational);
        let offer = kv(&[
            ("InitiatorName", INITIATOR),
            ("TargetName", DISK),
            ("HeaderDigest", offered),
            ("DataDigest", offered),
        ]);
        let answers = n.offer(&offer).unwrap();
        let got = map(&answers)["HeaderDigest"].to_owned();
        (got, n.params().digests, n.check_complete())
    };
    let both = Digests::BOTH;
    let none = Digests::NONE;
    let allowed = DigestPolicy::Allowed;
    assert_eq!(
        answer(allowed, "CRC32C,None"),
        ("CRC32C".into(), both, Ok(()))
    );
    assert_eq!(
        answer(allowed, "None,CRC32C"),
        ("None".into(), none, Ok(()))
    );
    assert_eq!(
        answer(allowed, "MD5,CRC32C"),
        ("CRC32C".into(), both, Ok(()))
    );
    assert_eq!(
        answer(DigestPolicy::Off, "CRC32C"),
        ("Reject".into(), none, Ok(()))
    );
    let required = DigestPolicy::Required;
    assert_eq!(
        answer(required, "None,CRC32C"),
        ("CRC32C".into(), both, Ok(()))
    );
    let refused = Err(NegotiateError::DigestRequired("HeaderDigest"));
    assert_eq!(answer(required, "None"), ("Reject".into(), none, refused));
}

#[test]
fn invalid_values() {
    for (key, value) in [
        ("MaxBurstLength", "511"),
        ("MaxBurstLength", "16777216"),
        ("MaxRecvDataSegmentLength", "0x"),
        ("FirstBurstLength", "010"),
        ("InitialR2T", "yes"),
        ("ErrorRecoveryLevel", "3"),
        ("MaxConnections", "0"),
        ("DefaultTime2Wait", "3601"),
        ("SessionType", "Other"),
        ("IFMarker", "Maybe"),
    ] {
        let mut n = at(config(), Stage::Operational);
        let mut offer = kv(&[("InitiatorName", INITIATOR), ("TargetName", DISK)]);
        offer.retain(|(k, _)| k != key);
        offer.push((key.into(), value.into()));
        let err = NegotiateError::InvalidValue {
            key: key.into(),
            value: value.into(),
        };
        assert_eq!(n.offer(&offer), Err(err), "{key}={value}");
    }
}

/// FirstBurstLength is bounded by the MaxBurstLength of the same request, in any order.
#[test]
fn first_burst_is_at_most_max_burst() {
    let mut n = at(config(), Stage::Operational);
    let offer = kv(&[
        ("InitiatorName", INITIATOR),
        ("TargetName", DISK),
        ("FirstBurstLength", "65536"),
        ("MaxBurstLength", "8192"),
    ]);
    let answers = n.offer(&offer).unwrap();
    assert_eq!(map(&answers)["FirstBurstLength"], "8192");
    assert_eq!(n.params().first_burst_length, 8192);
    let mut n = at(config(), Stage::Operational);
    let offer = kv(&[
        ("InitiatorName", INITIATOR),
        ("TargetName", DISK),
        ("MaxBurstLength", "8192"),
    ]);
    n.offer(&offer).unwrap();
    assert_eq!(
        n.params().first_burst_length,
        8192,
        "the default is cut too"
    );
}

fn chap_config() -> TargetConfig {
    TargetConfig {
        auth: AuthPolicy::Chap(ChapCredentials {
            initiator: ChapIdentity {
                name: "alice".into(),
                secret: b"initiator-secret".to_vec(),
            },
            target: None,
        }),
        ..config()
    }
}

fn challenge() -> Challenge {
    Challenge {
        id: 9,
        bytes: vec![0x5a; 16],
    }
}

#[test]
fn auth_methods() {
    let hello = |method: &str| {
        kv(&[
            ("InitiatorName", INITIATOR),
            ("TargetName", DISK),
            ("AuthMethod", method),
        ])
    };
    let mut n = at(config(), Stage::Security);
    let answers = n.offer(&hello("CHAP,None")).unwrap();
    assert_eq!(map(&answers)["AuthMethod"], "None");
    assert!(n.security_done() && !n.auth_required());
    let mut n = at(config(), Stage::Security);
    let err = NegotiateError::AuthMethodRejected("CHAP".into());
    assert_eq!(n.offer(&hello("CHAP")), Err(err));
    let mut n = at(chap_config(), Stage::Security);
    assert_eq!(n.offer(&hello("CHAP")), Err(NegotiateError::NoChallenge));
    let mut n = at(chap_config(), Stage::Security);
    let err = NegotiateError::AuthMethodRejected("None".into());
    assert_eq!(n.offer(&hello("None")), Err(err));
}

/// The security stage as libiscsi runs it with a CHAP user.
#[test]
fn chap_through_offers() {
    let mut n = at(chap_config(), Stage::Security).with_chap_challenge(challenge());
    let first = kv(&[
        ("InitiatorName", INITIATOR),
        ("TargetName", DISK),
        ("SessionType", "Normal"),
        ("AuthMethod", "CHAP,None"),
    ]);
    let answers = n.offer(&first).unwrap();
    assert_eq!(map(&answers)["AuthMethod"], "CHAP");
    assert!(n.auth_required() && n.security_in_progress() && !n.security_done());
    let answers = n.offer(&kv(&[("CHAP_A", "5")])).unwrap();
    assert_eq!(map(&answers)["CHAP_I"], "9");
    let r = response(9, b"initiator-secret", &challenge().bytes);
    let answers = n
        .offer(&kv(&[("CHAP_N", "alice"), ("CHAP_R", &hex(&r))]))
        .unwrap();
    assert_eq!(answers, Vec::new());
    assert!(n.security_done() && !n.security_in_progress());
    assert_eq!(n.params().chap_name.as_deref(), Some("alice"));
    let err = NegotiateError::Renegotiated("AuthMethod".into());
    assert_eq!(n.offer(&kv(&[("AuthMethod", "CHAP")])), Err(err));
}

#[test]
fn chap_keys_without_chap() {
    let mut n = at(config(), Stage::Security);
    let offer = kv(&[
        ("InitiatorName", INITIATOR),
        ("TargetName", DISK),
        ("CHAP_A", "5"),
    ]);
    let err = NegotiateError::Chap(ChapError::Unexpected("CHAP_A".into()));
    assert_eq!(n.offer(&offer), Err(err));
}

#[test]
fn config_validation() {
    assert_eq!(config().validate(), Ok(()));
    assert_eq!(TargetConfig::default().validate(), Ok(()));
    let bad = |c: TargetConfig| c.validate().unwrap_err();
    let small = TargetConfig {
        max_burst_length: 65536,
        ..config()
    };
    assert!(matches!(bad(small), ConfigError::BelowDefault { .. }));
    let huge = TargetConfig {
        max_recv_data_segment_length: 1 << 24,
        ..config()
    };
    assert!(matches!(bad(huge), ConfigError::OutOfRange { .. }));
    let first = TargetConfig {
        first_burst_length: 2 << 20,
        ..config()
    };
    assert_eq!(bad(first), ConfigError::FirstBurstAboveMax);
    let mut twice = config();
    twice.targets.push(twice.targets[0].clone());
    assert_eq!(bad(twice), ConfigError::BadTargetName(DISK.into()));
    let mut short = chap_config();
    if let AuthPolicy::Chap(c) = &mut short.auth {
        c.initiator.secret = b"short".to_vec();
    }
    assert_eq!(bad(short), ConfigError::ShortSecret("alice".into()));
    let mut same = chap_config();
    if let AuthPolicy::Chap(c) = &mut same.auth {
        c.target = Some(ChapIdentity {
            name: "cowd".into(),
            secret: c.initiator.secret.clone(),
        });
    }
    assert_eq!(bad(same), ConfigError::SameSecret);
}

/// A numeric value in and around the RFC ranges, in the three encodings.
fn numeric() -> impl Strategy<Value = String> {
    let n = prop_oneof![
        0u64..=4,
        500u64..=70_000,
        (1u64 << 24) - 2..(1 << 24) + 2,
        any::<u64>()
    ];
    (n, 0u8..4).prop_map(|(n, how)| match how {
        0 | 1 => n.to_string(),
        2 => format!("0x{n:x}"),
        _ => super::super::values::base64(&n.to_be_bytes()),
    })
}

fn boolean_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Yes".to_owned()),
        Just("No".to_owned()),
        Just("Maybe".to_owned())
    ]
}

fn operational_key() -> impl Strategy<Value = (String, String)> {
    let numeric_keys = proptest::sample::select(vec![
        "MaxConnections",
        "MaxRecvDataSegmentLength",
        "MaxBurstLength",
        "FirstBurstLength",
        "DefaultTime2Wait",
        "DefaultTime2Retain",
        "MaxOutstandingR2T",
        "ErrorRecoveryLevel",
        "iSCSIProtocolLevel",
    ]);
    let boolean_keys = proptest::sample::select(vec![
        "InitialR2T",
        "ImmediateData",
        "DataPDUInOrder",
        "DataSequenceInOrder",
    ]);
    prop_oneof![
        (numeric_keys, numeric()).prop_map(|(k, v)| (k.to_owned(), v)),
        (boolean_keys, boolean_value()).prop_map(|(k, v)| (k.to_owned(), v)),
    ]
}

fn any_config() -> impl Strategy<Value = TargetConfig> {
    (
        512u32..=MAX_DATA_LENGTH,
        DEFAULT_MAX_BURST_LENGTH..=MAX_DATA_LENGTH,
        1u16..=65535,
        0u16..=3600,
        0u16..=3600,
        any::<[bool; 4]>(),
    )
        .prop_map(|(mrdsl, max_burst, r2t, wait, retain, b)| TargetConfig {
            max_recv_data_segment_length: mrdsl,
            max_burst_length: max_burst,
            first_burst_length: DEFAULT_FIRST_BURST_LENGTH,
            max_outstanding_r2t: r2t,
            default_time2wait: wait,
            default_time2retain: retain,
            initial_r2t: b[0],
            immediate_data: b[1],
            data_pdu_in_order: b[2],
            data_sequence_in_order: b[3],
            ..config()
        })
}

proptest! {
    /// Whatever the offer and the configuration: an accepted answer of a min key is at most
    /// the offer and ours, of a max key at least both; an AND key is Yes only if both said
    /// Yes, an OR key Yes if either did; and the session's values stay in the RFC's ranges,
    /// with FirstBurstLength at most MaxBurstLength.
    #[test]
    fn answers_follow_the_rules(cfg in any_config(), offer in proptest::collection::vec(operational_key(), 0..12)) {
        prop_assert_eq!(cfg.validate(), Ok(()));
        let mut n = at(cfg.clone(), Stage::Operational);
        let mut seen = std::collections::BTreeSet::new();
        let mut keys = kv(&[("InitiatorName", INITIATOR), ("TargetName", DISK)]);
        keys.extend(offer.into_iter().filter(|(k, _)| seen.insert(k.clone())));
        let Ok(answers) = n.offer(&keys) else {
            return Ok(());
        };
        let offered = map(&keys);
        let num = |s: &str| parse_number(s).unwrap();
        let yes = |s: &str| s == "Yes";
        for (k, a) in &answers {
            let Some(o) = offered.get(k.as_str()) else { continue };
            match k.as_str() {
                "MaxConnections" => prop_assert!(num(a) <= num(o).min(u64::from(cfg.max_connections))),
                "MaxBurstLength" => prop_assert!(num(a) <= num(o).min(u64::from(cfg.max_burst_length))),
                "FirstBurstLength" => prop_assert!(num(a) <= num(o).min(u64::from(cfg.first_burst_length))),
                "MaxOutstandingR2T" => prop_assert!(num(a) <= num(o).min(u64::from(cfg.max_outstanding_r2t))),
                "DefaultTime2Retain" => prop_assert!(num(a) <= num(o).min(u64::from(cfg.default_time2retain))),
                "ErrorRecoveryLevel" => prop_assert_eq!(num(a), 0),
                "iSCSIProtocolLevel" => prop_assert!(num(a) <= num(o).min(1)),
                "DefaultTime2Wait" => prop_assert!(num(a) >= num(o).max(u64::from(cfg.default_time2wait))),
                "ImmediateData" => prop_assert_eq!(yes(a), yes(o) && cfg.immediate_data),
                "InitialR2T" => prop_assert_eq!(yes(a), yes(o) || cfg.initial_r2t),
                "DataPDUInOrder" => prop_assert_eq!(yes(a), yes(o) || cfg.data_pdu_in_order),
                "DataSequenceInOrder" => prop_assert_eq!(yes(a), yes(o) || cfg.data_sequence_in_order),
                _ => {}
            }
        }
        let p = n.params();
        let data = MIN_DATA_LENGTH..=MAX_DATA_LENGTH;
        prop_assert!(data.contains(&p.max_xmit_data_segment_length));
        prop_assert!(data.contains(&p.max_burst_length));
        prop_assert!(data.contains(&p.first_burst_length));
        prop_assert!(p.first_burst_length <= p.max_burst_length);
        prop_assert!(p.max_burst_length <= cfg.max_burst_length.max(DEFAULT_MAX_BURST_LENGTH));
        prop_assert!(p.max_connections >= 1 && p.max_outstanding_r2t >= 1);
        prop_assert!(p.default_time2wait <= 3600 && p.default_time2retain <= 3600);
        prop_assert_eq!(p.error_recovery_level, 0);
        prop_assert!(p.protocol_level <= PROTOCOL_LEVEL);
        prop_assert_eq!(p.max_recv_data_segment_length, cfg.max_recv_data_segment_length);
    }
}
