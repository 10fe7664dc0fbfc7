//! BHS codec tests: byte-exact PDUs laid out field by field as RFC 7143 §11 draws them, the
//! reserved-value and reserved-bit rules, LUN encodings, and round-trip properties.

use proptest::prelude::*;

use super::*;

/// A BHS with every field arbitrary except the coded ones, which hold valid codes: what
/// `decode` accepts, with arbitrary reserved bits.
pub(crate) fn valid_bhs() -> impl Strategy<Value = [u8; BHS_LEN]> {
    let pick = |all: &'static [u8]| proptest::sample::select(all);
    (
        proptest::sample::select(Opcode::ALL),
        any::<[u8; BHS_LEN]>(),
        pick(&[0, 1, 2, 3, 4]),
        pick(&[1, 2, 3, 4, 5, 6, 7, 8]),
        pick(&[0, 1, 3]),
        pick(&[0, 1, 3]),
        pick(&[0, 1, 2]),
        pick(&[0, 1, 2, 3]),
        pick(&[2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]),
    )
        .prop_map(
            |(op, mut b, attr, function, csg, nsg, reason, snack, reject)| {
                b[0] = (b[0] & 0xc0) | op.code();
                match op {
                    Opcode::ScsiCommand => b[1] = (b[1] & 0xf8) | attr,
                    Opcode::TaskRequest => b[1] = (b[1] & 0x80) | function,
                    Opcode::LoginRequest | Opcode::LoginResponse => {
                        b[1] = (b[1] & 0xf0) | csg << 2 | nsg;
                    }
                    Opcode::LogoutRequest => b[1] = (b[1] & 0x80) | reason,
                    Opcode::Snack => b[1] = (b[1] & 0xf0) | snack,
                    Opcode::Reject => b[2] = reject,
                    Opcode::ScsiResponse | Opcode::DataIn => {
                        if b[1] & 0x06 == 0x06 {
                            b[1] &= !0x02;
                        }
                        if b[1] & 0x18 == 0x18 {
                            b[1] &= !0x08;
                        }
                    }
                    _ => {}
                }
                b
            },
        )
}

/// RFC 3720 Appendix B.4: a READ(10) of 2 blocks, untagged, ITT 0x14000000.
#[test]
fn scsi_command_read10() {
    let bhs: [u8; 48] = [
        0x01, 0xc0, 0x00, 0x00, // opcode 0x01; F=1 R=1 W=0 ATTR=0
        0x00, 0x00, 0x00, 0x00, // TotalAHSLength 0; DataSegmentLength 0
        0x00, 0x00, 0x00, 0x00, // LUN 0
        0x00, 0x00, 0x00, 0x00, //
        0x14, 0x00, 0x00, 0x00, // ITT
        0x00, 0x00, 0x04, 0x00, // Expected Data Transfer Length 1024
        0x00, 0x00, 0x00, 0x14, // CmdSN
        0x00, 0x00, 0x00, 0x18, // ExpStatSN
        0x28, 0x00, 0x00, 0x00, // CDB
        0x00, 0x00, 0x00, 0x00, //
        0x02, 0x00, 0x00, 0x00, //
        0x00, 0x00, 0x00, 0x00, //
    ];
    let h = Header::decode(&bhs).unwrap();
    let mut cdb = [0u8; 16];
    cdb[0] = 0x28;
    cdb[8] = 0x02;
    let want = ScsiCommand {
        immediate: false,
        final_: true,
        read: true,
        write: false,
        attr: TaskAttr::Untagged,
        lun: Lun::ZERO,
        itt: 0x1400_0000,
        expected_len: 1024,
        cmd_sn: 0x14,
        exp_stat_sn: 0x18,
        cdb,
    };
    assert_eq!(h.pdu, Pdu::ScsiCommand(want));
    assert_eq!((h.ahs_words, h.data_len), (0, 0));
    assert_eq!(h.encode(), bhs);
}

/// The first Login Request libiscsi sends without CHAP: operational stage, transit to full
/// feature, immediate.
#[test]
fn login_request() {
    let bhs: [u8; 48] = [
        0x43, 0x87, 0x00, 0x00, // I=1 opcode 0x03; T=1 C=0 CSG=1 NSG=3; Version-max 0, -min 0
        0x00, 0x00, 0x01, 0x2c, // TotalAHSLength 0; DataSegmentLength 300
        0x80, 0x12, 0x34, 0x56, // ISID (type 2, random)
        0x78, 0x9a, 0x00, 0x00, //   ...; TSIH 0
        0xde, 0xad, 0xbe, 0xef, // ITT
        0x00, 0x00, 0x00, 0x00, // CID 0; reserved
        0x00, 0x00, 0x00, 0x07, // CmdSN 7
        0x00, 0x00, 0x00, 0x00, // ExpStatSN 0
        0, 0, 0, 0, 0, 0, 0, 0, // reserved
        0, 0, 0, 0, 0, 0, 0, 0, //
    ];
    let h = Header::decode(&bhs).unwrap();
    let want = LoginRequest {
        stage: LoginStage {
            current: Stage::Operational,
            next: Some(Stage::FullFeature),
            cont: false,
        },
        version_max: 0,
        version_min: 0,
        isid: [0x80, 0x12, 0x34, 0x56, 0x78, 0x9a],
        tsih: 0,
        itt: 0xdead_beef,
        cid: 0,
        cmd_sn: 7,
        exp_stat_sn: 0,
    };
    assert_eq!(h.pdu, Pdu::LoginRequest(want));
    assert_eq!(h.data_len, 300);
    assert_eq!(h.encode(), bhs);
}

/// A failed login: Authentication Failure (0x0201), security stage, no transit.
#[test]
fn login_response_failure() {
    let bhs: [u8; 48] = [
        0x23, 0x00, 0x00, 0x00, // opcode 0x23; T=0 C=0 CSG=0; Version-max 0, -active 0
        0x00, 0x00, 0x00, 0x00, // TotalAHSLength 0; DataSegmentLength 0
        0x80, 0x12, 0x34, 0x56, // ISID
        0x78, 0x9a, 0x00, 0x00, //   ...; TSIH 0
        0x00, 0x00, 0x00, 0x01, // ITT
        0x00, 0x00, 0x00, 0x00, // reserved
        0x00, 0x00, 0x00, 0x05, // StatSN
        0x00, 0x00, 0x00, 0x07, // ExpCmdSN
        0x00, 0x00, 0x00, 0x07, // MaxCmdSN
        0x02, 0x01, 0x00, 0x00, // Status-Class 2, Status-Detail 1
        0, 0, 0, 0, 0, 0, 0, 0, // reserved
    ];
    let Pdu::LoginResponse(r) = Header::decode(&bhs).unwrap().pdu else {
        panic!("not a login response");
    };
    assert_eq!(r.stage.current, Stage::Security);
    assert_eq!(r.stage.next, None);
    assert_eq!((r.stat_sn, r.exp_cmd_sn, r.max_cmd_sn), (5, 7, 7));
    assert_eq!((r.status_class, r.status_detail), (2, 1));
}

/// A GOOD status with an underflow of 512 bytes.
#[test]
fn scsi_response_underflow() {
    let h = Header {
        ahs_words: 0,
        data_len: 0,
        pdu: Pdu::ScsiResponse(ScsiResponse {
            bidi_residual: Residual::None,
            residual: Residual::Underflow(512),
            response: RESPONSE_COMPLETED,
            status: 0,
            itt: 9,
            snack_tag: 0,
            stat_sn: 1,
            exp_cmd_sn: 2,
            max_cmd_sn: 33,
            exp_data_sn: 4,
        }),
    };
    let want: [u8; 48] = [
        0x21, 0x82, 0x00, 0x00, // opcode 0x21; 1 o=0 u=0 O=0 U=1; Response 0; Status GOOD
        0x00, 0x00, 0x00, 0x00, // TotalAHSLength; DataSegmentLength
        0, 0, 0, 0, 0, 0, 0, 0, // reserved
        0x00, 0x00, 0x00, 0x09, // ITT
        0x00, 0x00, 0x00, 0x00, // SNACK Tag
        0x00, 0x00, 0x00, 0x01, // StatSN
        0x00, 0x00, 0x00, 0x02, // ExpCmdSN
        0x00, 0x00, 0x00, 0x21, // MaxCmdSN
        0x00, 0x00, 0x00, 0x04, // ExpDataSN
        0x00, 0x00, 0x00, 0x00, // Bidirectional Read Residual Count
        0x00, 0x00, 0x02, 0x00, // Residual Count 512
    ];
    assert_eq!(h.encode(), want);
    assert_eq!(Header::decode(&want).unwrap(), h);
}

/// The last Data-In of a read, carrying GOOD status (phase collapse).
#[test]
fn data_in_with_status() {
    let want: [u8; 48] = [
        0x25, 0x81, 0x00, 0x00, // opcode 0x25; F=1 A=0 O=0 U=0 S=1; reserved; Status GOOD
        0x00, 0x00, 0x10, 0x00, // TotalAHSLength 0; DataSegmentLength 4096
        0x00, 0x01, 0, 0, 0, 0, 0, 0, // LUN 1
        0x00, 0x00, 0x00, 0x2a, // ITT
        0xff, 0xff, 0xff, 0xff, // TTT
        0x00, 0x00, 0x00, 0x03, // StatSN
        0x00, 0x00, 0x00, 0x04, // ExpCmdSN
        0x00, 0x00, 0x00, 0x44, // MaxCmdSN
        0x00, 0x00, 0x00, 0x01, // DataSN
        0x00, 0x00, 0x10, 0x00, // Buffer Offset 4096
        0x00, 0x00, 0x00, 0x00, // Residual Count
    ];
    let h = Header {
        ahs_words: 0,
        data_len: 4096,
        pdu: Pdu::DataIn(DataIn {
            final_: true,
            ack: false,
            status: Some(DataInStatus {
                status: 0,
                stat_sn: 3,
                residual: Residual::None,
            }),
            lun: Lun::single_level(1).unwrap(),
            itt: 42,
            ttt: RESERVED_TAG,
            exp_cmd_sn: 4,
            max_cmd_sn: 0x44,
            data_sn: 1,
            buffer_offset: 4096,
        }),
    };
    assert_eq!(h.encode(), want);
    assert_eq!(Header::decode(&want).unwrap(), h);
}

#[test]
fn r2t_and_reject() {
    let r2t: [u8; 48] = [
        0x31, 0x80, 0x00, 0x00, // opcode 0x31; 1
        0x00, 0x00, 0x00, 0x00, // no AHS, no data
        0x00, 0x00, 0, 0, 0, 0, 0, 0, // LUN 0
        0x00, 0x00, 0x00, 0x05, // ITT
        0x00, 0x00, 0x01, 0x00, // TTT
        0x00, 0x00, 0x00, 0x0a, // StatSN
        0x00, 0x00, 0x00, 0x0b, // ExpCmdSN
        0x00, 0x00, 0x00, 0x0c, // MaxCmdSN
        0x00, 0x00, 0x00, 0x00, // R2TSN
        0x00, 0x01, 0x00, 0x00, // Buffer Offset 65536
        0x00, 0x04, 0x00, 0x00, // Desired Data Transfer Length 256 KiB
    ];
    let Pdu::R2t(r) = Header::decode(&r2t).unwrap().pdu else {
        panic!("not an R2T");
    };
    assert_eq!(
        (r.ttt, r.buffer_offset, r.desired_len),
        (256, 65536, 256 << 10)
    );

    let reject = Header {
        ahs_words: 0,
        data_len: 48,
        pdu: Pdu::Reject(Reject {
            reason: RejectReason::ProtocolError,
            stat_sn: 1,
            exp_cmd_sn: 2,
            max_cmd_sn: 3,
            data_sn: 0,
        }),
    };
    let b = reject.encode();
    assert_eq!(&b[..8], &[0x3f, 0x80, 0x04, 0x00, 0x00, 0x00, 0x00, 0x30]);
    assert_eq!(&b[16..20], &[0xff; 4], "ITT of a Reject");
}

#[test]
fn reserved_bits_are_ignored_and_cleared() {
    let nop = Header {
        ahs_words: 0,
        data_len: 0,
        pdu: Pdu::NopOut(NopOut {
            immediate: true,
            lun: Lun::ZERO,
            itt: 1,
            ttt: RESERVED_TAG,
            cmd_sn: 2,
            exp_stat_sn: 3,
        }),
    };
    let mut b = nop.encode();
    assert_eq!(&b[..2], &[0x40, 0x80]);
    b[0] |= 0x80; // the reserved bit before I
    b[1] = 0x00; // the F bit, always 1
    b[2] = 0x55; // reserved
    b[40] = 0xaa; // reserved
    assert_eq!(Header::decode(&b).unwrap(), nop);
    assert_eq!(Header::decode(&b).unwrap().encode(), nop.encode());
}

#[test]
fn reserved_values_are_errors() {
    let reserved = |b0: u8, b1: u8, b2: u8| {
        let mut b = [0u8; 48];
        (b[0], b[1], b[2]) = (b0, b1, b2);
        Header::decode(&b)
    };
    assert_eq!(reserved(0x07, 0, 0), Err(PduError::UnknownOpcode(0x07)));
    assert_eq!(reserved(0x1c, 0, 0), Err(PduError::UnknownOpcode(0x1c)));
    let err = |field, value| Err(PduError::Reserved(ReservedValue { field, value }));
    assert_eq!(reserved(0x01, 0x85, 0), err("task attribute", 5));
    assert_eq!(reserved(0x02, 0x80, 0), err("task management function", 0));
    assert_eq!(reserved(0x02, 0x89, 0), err("task management function", 9));
    assert_eq!(reserved(0x43, 0x08, 0), err("login stage", 2), "CSG 2");
    assert_eq!(
        reserved(0x43, 0x82, 0),
        err("login stage", 2),
        "NSG 2 with T"
    );
    assert!(reserved(0x43, 0x02, 0).is_ok(), "NSG is reserved without T");
    assert_eq!(reserved(0x06, 0x83, 0), err("logout reason", 3));
    assert_eq!(reserved(0x10, 0x84, 0), err("SNACK type", 4));
    assert_eq!(reserved(0x3f, 0x80, 0x01), err("reject reason", 1));
    let both = err("residual overflow and underflow bits", 3);
    assert_eq!(reserved(0x21, 0x86, 0), both);
    assert_eq!(reserved(0x21, 0x98, 0), both);
    assert_eq!(reserved(0x25, 0x87, 0), both);
    assert!(
        reserved(0x25, 0x86, 0).is_ok(),
        "O and U are reserved without S"
    );
    assert_eq!(
        PduError::UnknownOpcode(7).reject_reason(),
        Some(RejectReason::CommandNotSupported)
    );
    let hd = PduError::HeaderDigest {
        computed: 1,
        received: 2,
    };
    assert_eq!(hd.reject_reason(), None);
}

#[test]
fn single_level_luns() {
    assert_eq!(Lun::single_level(0), Some(Lun::ZERO));
    assert_eq!(Lun::single_level(5).unwrap().0, [0, 5, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        Lun::single_level(300).unwrap().0,
        [0x41, 0x2c, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(Lun::single_level(0x3fff).unwrap().0[..2], [0x7f, 0xff]);
    assert_eq!(Lun::single_level(0x4000), None);
    for n in [0, 1, 255, 256, 1000, 0x3fff] {
        assert_eq!(Lun::single_level(n).unwrap().to_single_level(), Some(n));
    }
    assert_eq!(Lun([0x40, 7, 0, 0, 0, 0, 0, 0]).to_single_level(), Some(7));
    assert_eq!(
        Lun([0x01, 7, 0, 0, 0, 0, 0, 0]).to_single_level(),
        None,
        "bus 1"
    );
    assert_eq!(Lun([0x80, 7, 0, 0, 0, 0, 0, 0]).to_single_level(), None);
    assert_eq!(Lun([0, 7, 0, 1, 0, 0, 0, 0]).to_single_level(), None);
}

proptest! {
    /// decode(encode(h)) == h for every header decode accepts, and encode(decode(b)) is b with
    /// its reserved bits cleared (a fixed point).
    #[test]
    fn decode_encode_round_trip(b in valid_bhs()) {
        let h = Header::decode(&b).unwrap();
        let e = h.encode();
        prop_assert_eq!(Header::decode(&e), Ok(h));
        prop_assert_eq!(Header::decode(&e).unwrap().encode(), e);
        prop_assert_eq!(&e[4..8], &b[4..8], "lengths are kept");
    }

    /// decode never panics, and refuses only reserved codes.
    #[test]
    fn decode_any_bytes(b in any::<[u8; BHS_LEN]>()) {
        match Header::decode(&b) {
            Ok(h) => prop_assert_eq!(Header::decode(&h.encode()), Ok(h)),
            Err(e) => prop_assert!(e.reject_reason().is_some()),
        }
    }
}
