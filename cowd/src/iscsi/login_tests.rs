//! Login tests: libiscsi's logins without and with CHAP, each refusal and its status, the C
//! bit in both directions, and the response headers.

use super::super::chap::{Challenge, ChapCredentials, ChapIdentity, response as chap_response};
use super::super::negotiate::{AuthPolicy, TargetConfig, TargetEntry};
use super::super::text::{KeyValues, parse};
use super::super::values::hex;
use super::*;

const INITIATOR: &str = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test";
const DISK: &str = "iqn.2024-01.org.cowd:disk";
const ISID: [u8; 6] = [0x80, 1, 2, 3, 4, 5];

fn config() -> TargetConfig {
    TargetConfig {
        targets: vec![TargetEntry {
            name: DISK.into(),
            alias: None,
            addresses: Vec::new(),
        }],
        ..TargetConfig::default()
    }
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

fn login(config: TargetConfig) -> Login {
    let challenge = Challenge {
        id: 3,
        bytes: vec![0xc3; 16],
    };
    Login::new(
        Negotiation::new(config).with_chap_challenge(challenge),
        0x1234,
    )
}

fn request(current: Stage, next: Option<Stage>) -> LoginRequest {
    LoginRequest {
        stage: LoginStage {
            current,
            next,
            cont: false,
        },
        version_max: 0,
        version_min: 0,
        isid: ISID,
        tsih: 0,
        itt: 77,
        cid: 0,
        cmd_sn: 1,
        exp_stat_sn: 0,
    }
}

fn text(pairs: &[(&str, &str)]) -> Vec<u8> {
    encode(pairs)
}

fn answers(reply: &LoginReply) -> KeyValues {
    parse(&reply.data).unwrap()
}

fn hello() -> Vec<(&'static str, &'static str)> {
    vec![
        ("InitiatorName", INITIATOR),
        ("TargetName", DISK),
        ("SessionType", "Normal"),
    ]
}

/// libiscsi without a CHAP user: one request from the operational stage to full feature.
#[test]
fn libiscsi_without_chap() {
    let mut l = login(config());
    let mut keys = hello();
    keys.extend([
        ("HeaderDigest", "None,CRC32C"),
        ("MaxRecvDataSegmentLength", "262144"),
    ]);
    let req = request(Stage::Operational, Some(Stage::FullFeature));
    let reply = l.step(&req, &text(&keys)).unwrap();
    let want_stage = LoginStage {
        current: Stage::Operational,
        next: Some(Stage::FullFeature),
        cont: false,
    };
    assert_eq!(reply.stage, want_stage);
    assert_eq!(
        reply.tsih, 0x1234,
        "the final response carries the new TSIH"
    );
    let a = answers(&reply);
    assert!(a.contains(&("TargetPortalGroupTag".into(), "1".into())));
    assert!(a.contains(&("HeaderDigest".into(), "None".into())));
    assert!(l.is_complete());
    assert_eq!(l.params().max_xmit_data_segment_length, 262144);
    assert_eq!(l.step(&req, &[]), Err(LoginError::AlreadyComplete));
}

/// libiscsi with a CHAP user: AuthMethod (T=1, answered T=0), CHAP_A, CHAP_N/CHAP_R (T=1),
/// then the operational stage.
#[test]
fn libiscsi_with_chap() {
    let mut l = login(chap_config());
    let mut keys = hello();
    keys.push(("AuthMethod", "CHAP,None"));
    let to_operational = request(Stage::Security, Some(Stage::Operational));
    let reply = l.step(&to_operational, &text(&keys)).unwrap();
    assert_eq!(reply.stage.next, None, "no transit while CHAP runs");
    assert_eq!(reply.tsih, 0);
    assert!(answers(&reply).contains(&("AuthMethod".into(), "CHAP".into())));
    let reply = l
        .step(&request(Stage::Security, None), &text(&[("CHAP_A", "5")]))
        .unwrap();
    let a = answers(&reply);
    assert!(a.contains(&("CHAP_C".into(), hex(&[0xc3; 16]))));
    let r = hex(&chap_response(3, b"initiator-secret", &[0xc3; 16]));
    let keys = [("CHAP_N", "alice"), ("CHAP_R", r.as_str())];
    let reply = l.step(&to_operational, &text(&keys)).unwrap();
    assert_eq!(reply.stage.current, Stage::Security);
    assert_eq!(reply.stage.next, Some(Stage::Operational));
    assert!(!l.is_complete());
    let keys = [("MaxBurstLength", "262144")];
    let to_full = request(Stage::Operational, Some(Stage::FullFeature));
    let reply = l.step(&to_full, &text(&keys)).unwrap();
    assert_eq!(reply.stage.next, Some(Stage::FullFeature));
    let a = answers(&reply);
    assert!(a.contains(&("MaxRecvDataSegmentLength".into(), "262144".into())));
    assert!(l.is_complete());
    assert_eq!(l.params().chap_name.as_deref(), Some("alice"));
}

/// Runs requests and returns the status of the first failure.
fn fails(config: TargetConfig, steps: &[(LoginRequest, Vec<u8>)]) -> LoginStatus {
    let mut l = login(config);
    for (req, data) in steps {
        if let Err(e) = l.step(req, data) {
            return e.status();
        }
    }
    panic!("the login did not fail");
}

#[test]
fn refusals_and_their_status() {
    let hello = text(&hello());
    let op_to_full = request(Stage::Operational, Some(Stage::FullFeature));
    let mut v1 = op_to_full;
    v1.version_min = 1;
    v1.version_max = 2;
    assert_eq!(
        fails(config(), &[(v1, hello.clone())]),
        LoginStatus::UnsupportedVersion
    );
    let mut join = op_to_full;
    join.tsih = 9;
    assert_eq!(
        fails(config(), &[(join, hello.clone())]),
        LoginStatus::SessionDoesNotExist
    );
    let skip = [(op_to_full, hello.clone())];
    assert_eq!(
        fails(chap_config(), &skip),
        LoginStatus::AuthenticationFailure
    );
    let leave = [(
        request(Stage::Security, Some(Stage::Operational)),
        hello.clone(),
    )];
    assert_eq!(
        fails(chap_config(), &leave),
        LoginStatus::AuthenticationFailure
    );
    let unknown = text(&[("InitiatorName", INITIATOR), ("TargetName", "iqn.x:y")]);
    assert_eq!(
        fails(config(), &[(op_to_full, unknown)]),
        LoginStatus::NotFound
    );
    let nameless = text(&[("TargetName", DISK)]);
    assert_eq!(
        fails(config(), &[(op_to_full, nameless)]),
        LoginStatus::MissingParameter
    );
    let ffp = request(Stage::FullFeature, None);
    assert_eq!(
        fails(config(), &[(ffp, hello.clone())]),
        LoginStatus::InitiatorError
    );
    let backwards = request(Stage::Operational, Some(Stage::Security));
    assert_eq!(
        fails(config(), &[(backwards, hello.clone())]),
        LoginStatus::InitiatorError
    );
    let mut t_and_c = op_to_full;
    t_and_c.stage.cont = true;
    assert_eq!(
        fails(config(), &[(t_and_c, hello.clone())]),
        LoginStatus::InitiatorError
    );
    let stay = request(Stage::Security, None);
    let mut other_isid = stay;
    other_isid.isid[5] = 9;
    let changed = [(stay, hello.clone()), (other_isid, Vec::new())];
    assert_eq!(fails(config(), &changed), LoginStatus::InitiatorError);
    let wrong_stage = [(stay, hello.clone()), (op_to_full, Vec::new())];
    assert_eq!(fails(config(), &wrong_stage), LoginStatus::InitiatorError);
    let garbage = [(stay, b"no equals sign\0".to_vec())];
    assert_eq!(fails(config(), &garbage), LoginStatus::InitiatorError);
}

/// A text split over two requests (C=1, then C=0): the first gets an empty response.
#[test]
fn continued_request_text() {
    let mut l = login(config());
    let all = text(&hello());
    let (head, tail) = all.split_at(20);
    let mut first = request(Stage::Operational, None);
    first.stage.cont = true;
    let reply = l.step(&first, head).unwrap();
    assert_eq!(reply.data, Vec::<u8>::new());
    assert_eq!((reply.stage.next, reply.stage.cont), (None, false));
    let last = request(Stage::Operational, Some(Stage::FullFeature));
    let reply = l.step(&last, tail).unwrap();
    assert_eq!(reply.stage.next, Some(Stage::FullFeature));
}

/// An answer over 8192 bytes goes out in pieces with C=1; the transit comes with the last.
#[test]
fn continued_response_text() {
    let mut l = login(config());
    let mut keys: Vec<(String, String)> = hello()
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    for i in 0..500 {
        keys.push((format!("X-k{i}"), "1".into()));
    }
    let to_full = request(Stage::Operational, Some(Stage::FullFeature));
    let mut received = Vec::new();
    let mut reply = l.step(&to_full, &encode(&keys)).unwrap();
    let mut pieces = 1;
    while reply.stage.cont {
        assert_eq!(reply.data.len(), MAX_LOGIN_DATA_LEN as usize);
        assert_eq!(reply.stage.next, None);
        received.extend_from_slice(&reply.data);
        assert_eq!(l.step(&to_full, b"X=1\0"), Err(LoginError::UnexpectedText));
        reply = l.step(&to_full, &[]).unwrap();
        pieces += 1;
    }
    received.extend_from_slice(&reply.data);
    assert!(pieces >= 2);
    assert_eq!(reply.stage.next, Some(Stage::FullFeature));
    let a = parse(&received).unwrap();
    assert!(a.contains(&("X-k499".into(), "NotUnderstood".into())));
}

/// The last piece transits only if its own request asks to (RFC 7143 §11.13.3); a later
/// request that asks gets the transit.
#[test]
fn last_piece_without_transit_request() {
    let mut l = login(config());
    let mut keys: Vec<(String, String)> = hello()
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    for i in 0..500 {
        keys.push((format!("X-k{i}"), "1".into()));
    }
    let to_full = request(Stage::Operational, Some(Stage::FullFeature));
    let stay = request(Stage::Operational, None);
    let mut reply = l.step(&to_full, &encode(&keys)).unwrap();
    while reply.stage.cont {
        reply = l.step(&stay, &[]).unwrap();
    }
    assert_eq!(reply.stage.next, None);
    assert!(!l.is_complete());
    let reply = l.step(&to_full, &[]).unwrap();
    assert_eq!(reply.stage.next, Some(Stage::FullFeature));
    assert!(l.is_complete());
}

#[test]
fn response_headers() {
    let req = request(Stage::Operational, Some(Stage::FullFeature));
    let reply = LoginReply {
        stage: LoginStage {
            current: Stage::Operational,
            next: Some(Stage::FullFeature),
            cont: false,
        },
        tsih: 0x1234,
        data: b"A=1\0".to_vec(),
    };
    let seq = Sequence {
        stat_sn: 5,
        exp_cmd_sn: 2,
        max_cmd_sn: 9,
    };
    let bhs = response(&req, &reply, seq).encode();
    let want: [u8; 48] = [
        0x23, 0x87, 0x00, 0x00, // Login Response; T=1 CSG=1 NSG=3; versions 0
        0x00, 0x00, 0x00, 0x04, // no AHS; 4 bytes of text
        0x80, 0x01, 0x02, 0x03, // ISID
        0x04, 0x05, 0x12, 0x34, //   ...; TSIH
        0x00, 0x00, 0x00, 0x4d, // ITT 77
        0x00, 0x00, 0x00, 0x00, // reserved
        0x00, 0x00, 0x00, 0x05, // StatSN
        0x00, 0x00, 0x00, 0x02, // ExpCmdSN
        0x00, 0x00, 0x00, 0x09, // MaxCmdSN
        0x00, 0x00, 0x00, 0x00, // status 0/0
        0, 0, 0, 0, 0, 0, 0, 0, // reserved
    ];
    assert_eq!(bhs, want);
    let bhs = failure(&req, LoginStatus::NotFound, seq).encode();
    assert_eq!((bhs[1], bhs[36], bhs[37]), (0x04, 0x02, 0x03));
    assert_eq!(&bhs[4..8], &[0, 0, 0, 0]);
}

#[test]
fn status_codes() {
    for s in LoginStatus::ALL {
        assert_eq!(LoginStatus::from_wire(s.class(), s.detail()), Some(s));
    }
    assert_eq!(LoginStatus::AuthenticationFailure.class(), 2);
    assert_eq!(LoginStatus::AuthenticationFailure.detail(), 1);
    assert_eq!(LoginStatus::OutOfResources as u16, 0x0302);
    assert_eq!(LoginStatus::from_wire(2, 0x0c), None);
}
