//! The `iscsi_pdu` target: the pure layer of cowd's iSCSI target on any bytes an initiator
//! might send: framing under each digest setting, the BHS codec, text keys, and a whole login
//! (then Text requests) driven by the Login Requests found in the stream.
//!
//! Input: PDUs one after another, as on the wire (the seeds are real PDUs). Every check below
//! runs on every input: [`check_bhs`] on its first 48 bytes, [`check_frames`] with each of
//! the four digest settings, [`check_text`] on the whole input taken as a text, and
//! [`check_login`] on the stream.

use cowd::iscsi::chap::Challenge;
use cowd::iscsi::digest::Digests;
use cowd::iscsi::frame::{Frame, frame, pdu_len};
use cowd::iscsi::login::{self, Login, LoginReply, MAX_LOGIN_DATA_LEN, Sequence};
use cowd::iscsi::negotiate::{
    DEFAULT_MAX_BURST_LENGTH, MAX_DATA_LENGTH, MIN_DATA_LENGTH, Negotiation, PROTOCOL_LEVEL,
    SessionParams, SessionType, TargetConfig, TargetEntry,
};
use cowd::iscsi::pdu::{
    BHS_LEN, Header, LoginRequest, LoginStage, Lun, Pdu, RESERVED_TAG, ScsiCommand, Stage,
    TaskAttr, TextRequest,
};
use cowd::iscsi::text::{self, Accumulator, KeyValues, MAX_TEXT_LEN, max_value_len, valid_key};

const ALL_DIGESTS: [Digests; 4] = [
    Digests::NONE,
    Digests {
        header: true,
        data: false,
    },
    Digests {
        header: false,
        data: true,
    },
    Digests::BOTH,
];

/// The target [`check_login`] logs in to.
pub const TARGET: &str = "iqn.2024-01.org.cowd:disk";
/// The TSIH the login hands out.
const NEW_TSIH: u16 = 0x0101;

/// `iscsi_pdu` fuzz input: a stream of PDUs.
pub fn fuzz_iscsi_pdu(data: &[u8]) {
    let mut bhs = [0u8; BHS_LEN];
    let n = data.len().min(BHS_LEN);
    bhs[..n].copy_from_slice(&data[..n]);
    check_bhs(&bhs);
    for digests in ALL_DIGESTS {
        check_frames(data, digests);
    }
    check_text(data);
    check_login(data);
}

/// `decode` never panics; a decoded header encodes to a fixed point that decodes to the same
/// header with the same lengths; a refusal names the Reject to answer with.
pub fn check_bhs(bhs: &[u8; BHS_LEN]) {
    match Header::decode(bhs) {
        Ok(h) => {
            let e = h.encode();
            assert_eq!(Header::decode(&e), Ok(h), "decode(encode(h)) != h");
            assert_eq!(
                Header::decode(&e).unwrap().encode(),
                e,
                "encode is no fixed point"
            );
            assert_eq!(&e[4..8], &bhs[4..8], "the lengths changed");
        }
        Err(e) => assert!(e.reject_reason().is_some(), "{e}: no Reject reason"),
    }
}

/// `frame` never panics; each frame it returns took at most the bytes there were, exactly the
/// length its header says, and re-encodes to bytes that frame back to the same frame. Frames
/// are read one after another until more bytes are needed or one is refused.
pub fn check_frames(stream: &[u8], digests: Digests) {
    let mut rest = stream;
    while let Ok(Some((f, used))) = frame(rest, digests, MAX_DATA_LENGTH) {
        assert!(used <= rest.len(), "took {used} of {} bytes", rest.len());
        let want = pdu_len(f.header.ahs_words, f.header.data_len, digests);
        assert_eq!(used, want, "took other than the header's length");
        assert_eq!(f.data.len(), f.header.data_len as usize);
        let wire = f.encode(digests).expect("a framed PDU re-encodes");
        assert_eq!(wire.len(), used, "re-encoded to another length");
        let back = frame(&wire, digests, MAX_DATA_LENGTH);
        assert_eq!(
            back,
            Ok(Some((f, used))),
            "re-encoded frame reads back otherwise"
        );
        rest = &rest[used..];
    }
}

/// `parse` never panics; accepted pairs have valid keys and values within their limits and
/// survive `encode`; the accumulator gives the same answer for the text split in two.
pub fn check_text(bytes: &[u8]) {
    let parsed = text::parse(bytes);
    if let Ok(pairs) = &parsed {
        for (k, v) in pairs {
            assert!(valid_key(k), "accepted key {k:?}");
            assert!(
                v.len() <= max_value_len(k),
                "accepted {k}= of {} bytes",
                v.len()
            );
        }
        assert_eq!(
            &text::parse(&text::encode(pairs)),
            &parsed,
            "parse(encode(x)) != x"
        );
    }
    if bytes.len() > MAX_TEXT_LEN {
        return;
    }
    let mut acc = Accumulator::default();
    let (head, tail) = bytes.split_at(bytes.len() / 2);
    assert_eq!(acc.push(head, true), Ok(None));
    assert_eq!(
        acc.push(tail, false),
        parsed.map(Some),
        "split text parses otherwise"
    );
}

/// The configuration [`check_login`] runs against: two targets, no authentication.
pub fn login_config() -> TargetConfig {
    TargetConfig {
        targets: vec![
            TargetEntry {
                name: TARGET.into(),
                alias: Some("disk".into()),
                addresses: vec!["127.0.0.1:3260".into()],
            },
            TargetEntry {
                name: "iqn.2024-01.org.cowd:backup".into(),
                alias: None,
                addresses: Vec::new(),
            },
        ],
        ..TargetConfig::default()
    }
}

/// Drives a [`Login`] with the Login Requests of `stream`, then a negotiation with its Text
/// requests. Each reply stays in the request's stage and moves only forward, to the stage
/// asked for; its text (joined over C=1 pieces) parses; a failure has a status of class 2 or
/// 3. The session's values stay within the RFC's ranges and the configuration.
pub fn check_login(stream: &[u8]) {
    let cfg = login_config();
    let challenge = Challenge {
        id: 1,
        bytes: vec![0x11; 16],
    };
    let negotiation = Negotiation::new(cfg.clone()).with_chap_challenge(challenge);
    let mut login = Login::new(negotiation, NEW_TSIH);
    let mut answer = Vec::new();
    let mut rest = stream;
    while let Ok(Some((f, used))) = frame(rest, Digests::NONE, MAX_LOGIN_DATA_LEN) {
        rest = &rest[used..];
        let Pdu::LoginRequest(req) = f.header.pdu else {
            continue;
        };
        match login.step(&req, &f.data) {
            Ok(reply) => {
                check_reply(&req, &reply);
                answer.extend_from_slice(&reply.data);
                if !reply.stage.cont {
                    let whole = std::mem::take(&mut answer);
                    let answers = text::parse(&whole).expect("the target's answer parses");
                    check_answers(&answers);
                }
            }
            Err(e) => {
                let status = e.status();
                assert!(matches!(status.class(), 2 | 3), "{e} has status {status:?}");
                let header = login::failure(&req, status, Sequence::default());
                assert_eq!(Header::decode(&header.encode()), Ok(header));
                return;
            }
        }
        if login.is_complete() {
            break;
        }
    }
    if !login.is_complete() {
        return;
    }
    let params = login.params();
    check_params(&params, &cfg);
    check_full_feature(rest, login.into_negotiation(), &params);
}

/// Text requests after the login: the answers are valid pairs and the values stay in bounds.
fn check_full_feature(mut rest: &[u8], mut negotiation: Negotiation, params: &SessionParams) {
    let cfg = negotiation.config().clone();
    let max = params.max_recv_data_segment_length;
    while let Ok(Some((f, used))) = frame(rest, params.digests, max) {
        rest = &rest[used..];
        if !matches!(f.header.pdu, Pdu::TextRequest(_)) {
            continue;
        }
        let Ok(keys) = text::parse(&f.data) else {
            continue;
        };
        if let Ok(answers) = negotiation.offer(&keys) {
            check_answers(&answers);
            for (k, v) in &answers {
                if k == "TargetName" {
                    assert!(cfg.targets.iter().any(|t| &t.name == v), "unknown {v}");
                }
            }
        }
        check_params(&negotiation.params(), &cfg);
    }
}

fn check_reply(req: &LoginRequest, reply: &LoginReply) {
    let s = reply.stage;
    assert_eq!(s.current, req.stage.current, "reply in another stage");
    assert!(reply.data.len() <= MAX_LOGIN_DATA_LEN as usize);
    if let Some(next) = s.next {
        assert_eq!(req.stage.next, Some(next), "transit not asked for");
        assert!(next.code() > s.current.code(), "transit backwards");
        assert!(!s.cont, "transit with C=1");
    }
    let final_response = s.next == Some(Stage::FullFeature);
    let tsih = if final_response { NEW_TSIH } else { req.tsih };
    assert_eq!(reply.tsih, tsih);
    let header = login::response(req, reply, Sequence::default());
    assert_eq!(Header::decode(&header.encode()), Ok(header));
}

/// Answers are pairs a peer can parse: valid keys, values within limits and free of NULs.
fn check_answers(answers: &KeyValues) {
    for (k, v) in answers {
        assert!(valid_key(k), "answered key {k:?}");
        assert!(
            v.len() <= max_value_len(k),
            "answered {k}= of {} bytes",
            v.len()
        );
        assert!(!v.contains('\0'), "NUL in the answer to {k}");
    }
}

/// The session's values are within RFC 7143 §13's ranges and what the target allows.
pub fn check_params(p: &SessionParams, cfg: &TargetConfig) {
    let data = MIN_DATA_LENGTH..=MAX_DATA_LENGTH;
    assert!(data.contains(&p.max_xmit_data_segment_length));
    assert!(data.contains(&p.max_burst_length));
    assert!(data.contains(&p.first_burst_length));
    assert!(p.first_burst_length <= p.max_burst_length, "{p:?}");
    assert!(p.max_burst_length <= cfg.max_burst_length.max(DEFAULT_MAX_BURST_LENGTH));
    assert!(p.first_burst_length <= cfg.first_burst_length);
    assert_eq!(
        p.max_recv_data_segment_length,
        cfg.max_recv_data_segment_length
    );
    assert!((1..=cfg.max_connections).contains(&p.max_connections));
    assert!((1..=cfg.max_outstanding_r2t).contains(&p.max_outstanding_r2t));
    assert!(p.default_time2wait <= 3600 && p.default_time2retain <= 3600);
    assert_eq!(p.error_recovery_level, 0);
    assert!(p.protocol_level <= PROTOCOL_LEVEL);
    assert!(
        !p.immediate_data || cfg.immediate_data,
        "ImmediateData is an AND"
    );
    assert!(p.initial_r2t || !cfg.initial_r2t, "InitialR2T is an OR");
    if let (SessionType::Normal, Some(t)) = (p.session_type, &p.target_name) {
        assert!(cfg.targets.iter().any(|e| &e.name == t), "logged in to {t}");
    }
}

fn login_pdu(stage: LoginStage, itt: u32, data: Vec<u8>) -> Vec<u8> {
    let header = Header {
        ahs_words: 0,
        data_len: 0,
        pdu: Pdu::LoginRequest(LoginRequest {
            stage,
            version_max: 0,
            version_min: 0,
            isid: [0x80, 0x00, 0x00, 0x01, 0x02, 0x03],
            tsih: 0,
            itt,
            cid: 0,
            cmd_sn: 1,
            exp_stat_sn: 0,
        }),
    };
    Frame::new(header, data).encode(Digests::NONE).unwrap()
}

fn to_full_feature() -> LoginStage {
    LoginStage {
        current: Stage::Operational,
        next: Some(Stage::FullFeature),
        cont: false,
    }
}

/// The seed corpus of this target: (target, file name, input).
pub fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut s = Vec::new();
    let keys = [
        (
            "InitiatorName",
            "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test",
        ),
        ("TargetName", TARGET),
        ("SessionType", "Normal"),
        ("HeaderDigest", "None,CRC32C"),
        ("DataDigest", "None"),
        ("InitialR2T", "No"),
        ("ImmediateData", "Yes"),
        ("MaxBurstLength", "262144"),
        ("FirstBurstLength", "262144"),
        ("MaxRecvDataSegmentLength", "262144"),
        ("MaxConnections", "1"),
        ("ErrorRecoveryLevel", "0"),
        ("IFMarker", "No"),
    ];
    let login = login_pdu(to_full_feature(), 1, text::encode(&keys));
    s.push(("iscsi_pdu", "login_request", login.clone()));

    let mut cdb = [0u8; 16];
    cdb[0] = 0x2a; // WRITE(10), LBA 0
    cdb[8] = 1; // one block
    let write = Header {
        ahs_words: 0,
        data_len: 0,
        pdu: Pdu::ScsiCommand(ScsiCommand {
            immediate: false,
            final_: true,
            read: false,
            write: true,
            attr: TaskAttr::Simple,
            lun: Lun::ZERO,
            itt: 2,
            expected_len: 512,
            cmd_sn: 1,
            exp_stat_sn: 1,
            cdb,
        }),
    };
    let write = Frame::new(write, vec![0xa5; 512]);
    let mut stream = login;
    stream.extend_from_slice(&write.encode(Digests::NONE).unwrap());
    s.push(("iscsi_pdu", "scsi_write_immediate", stream));

    let discovery = [
        ("InitiatorName", "iqn.1994-05.com.redhat:client"),
        ("SessionType", "Discovery"),
        ("HeaderDigest", "None"),
        ("DataDigest", "None"),
        ("MaxRecvDataSegmentLength", "32768"),
    ];
    let mut stream = login_pdu(to_full_feature(), 1, text::encode(&discovery));
    let text_request = Header {
        ahs_words: 0,
        data_len: 0,
        pdu: Pdu::TextRequest(TextRequest {
            immediate: true,
            final_: true,
            cont: false,
            lun: Lun::ZERO,
            itt: 2,
            ttt: RESERVED_TAG,
            cmd_sn: 1,
            exp_stat_sn: 1,
        }),
    };
    let send_targets = Frame::new(text_request, b"SendTargets=All\0".to_vec());
    stream.extend_from_slice(&send_targets.encode(Digests::NONE).unwrap());
    s.push(("iscsi_pdu", "text_send_targets", stream));

    // The first request's text split over two PDUs with the C bit, then a transit.
    let hello = [("InitiatorName", "iqn.x:i"), ("TargetName", TARGET)];
    let whole = text::encode(&hello);
    let (head, tail) = whole.split_at(10);
    let continued = LoginStage {
        current: Stage::Security,
        next: None,
        cont: true,
    };
    let last = LoginStage {
        current: Stage::Security,
        next: Some(Stage::FullFeature),
        cont: false,
    };
    let mut stream = login_pdu(continued, 3, head.to_vec());
    stream.extend_from_slice(&login_pdu(last, 3, tail.to_vec()));
    s.push(("iscsi_pdu", "login_continued", stream));

    let nop = Header {
        ahs_words: 0,
        data_len: 0,
        pdu: Pdu::NopOut(cowd::iscsi::pdu::NopOut {
            immediate: true,
            lun: Lun::ZERO,
            itt: 4,
            ttt: RESERVED_TAG,
            cmd_sn: 5,
            exp_stat_sn: 6,
        }),
    };
    let ping = Frame::new(nop, b"ping".to_vec());
    s.push((
        "iscsi_pdu",
        "nop_out_digests",
        ping.encode(Digests::BOTH).unwrap(),
    ));
    s
}
