//! Framing tests: a PDU arriving byte by byte, digests on and off and wrong, the data segment
//! limit, additional header segments, and properties on arbitrary bytes.

use proptest::collection::vec;
use proptest::prelude::*;

use super::super::pdu::tests::valid_bhs;
use super::super::pdu::{Lun, RESERVED_TAG};
use super::super::pdu::{NopOut, ScsiCommand, TaskAttr, TextRequest};
use super::*;

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

fn text_request(data: &[u8]) -> Frame {
    let header = Header {
        ahs_words: 0,
        data_len: 0,
        pdu: Pdu::TextRequest(TextRequest {
            immediate: true,
            final_: true,
            cont: false,
            lun: Lun::ZERO,
            itt: 1,
            ttt: RESERVED_TAG,
            cmd_sn: 1,
            exp_stat_sn: 1,
        }),
    };
    Frame::new(header, data.to_vec())
}

fn nop_out() -> Frame {
    let header = Header {
        ahs_words: 0,
        data_len: 0,
        pdu: Pdu::NopOut(NopOut {
            immediate: true,
            lun: Lun::ZERO,
            itt: 2,
            ttt: RESERVED_TAG,
            cmd_sn: 2,
            exp_stat_sn: 2,
        }),
    };
    Frame::new(header, Vec::new())
}

#[test]
fn lengths() {
    assert_eq!(padded_len(0), 0);
    assert_eq!(padded_len(1), 4);
    assert_eq!(padded_len(4), 4);
    assert_eq!(padded_len(17), 20);
    assert_eq!(pdu_len(0, 0, Digests::BOTH), 52, "no data: no data digest");
    assert_eq!(pdu_len(0, 17, Digests::NONE), 68);
    assert_eq!(pdu_len(5, 17, Digests::BOTH), 48 + 20 + 4 + 20 + 4);
}

/// SendTargets=All is 15 bytes: one byte of padding, then (with digests) the data digest.
#[test]
fn text_request_on_the_wire() {
    let f = text_request(b"SendTargets=All\0");
    let wire = f.encode(Digests::NONE).unwrap();
    assert_eq!(wire.len(), 48 + 16);
    assert_eq!(&wire[4..8], &[0, 0, 0, 16]);
    let f = text_request(b"SendTargets=All");
    let wire = f.encode(Digests::BOTH).unwrap();
    assert_eq!(wire.len(), 48 + 4 + 16 + 4);
    assert_eq!(&wire[48..52], &digest::header_digest(&wire[..48], &[]));
    assert_eq!(wire[52 + 15], 0, "padding");
    assert_eq!(&wire[68..72], &digest::data_digest(b"SendTargets=All"));
}

/// Every prefix of a PDU needs more bytes; the whole takes exactly its bytes, also with the
/// next PDU behind it.
#[test]
fn arrives_byte_by_byte() {
    for digests in ALL_DIGESTS {
        let f = text_request(b"SendTargets=All\0");
        let wire = f.encode(digests).unwrap();
        for n in 0..wire.len() {
            assert_eq!(
                frame(&wire[..n], digests, 8192),
                Ok(None),
                "{digests:?} {n}"
            );
        }
        let mut two = wire.clone();
        two.extend_from_slice(&nop_out().encode(digests).unwrap());
        assert_eq!(
            frame(&two, digests, 8192),
            Ok(Some((f.clone(), wire.len())))
        );
        let (nop, used) = frame(&two[wire.len()..], digests, 8192).unwrap().unwrap();
        assert_eq!((nop, used), (nop_out(), two.len() - wire.len()));
    }
}

#[test]
fn wrong_digests() {
    let f = text_request(b"SendTargets=All\0");
    let mut wire = f.encode(Digests::BOTH).unwrap();
    wire[20] ^= 1;
    assert!(matches!(
        frame(&wire, Digests::BOTH, 8192),
        Err(PduError::HeaderDigest { .. })
    ));
    wire[20] ^= 1;
    wire[60] ^= 1;
    assert!(matches!(
        frame(&wire, Digests::BOTH, 8192),
        Err(PduError::DataDigest { .. })
    ));
    let header_only = Digests {
        header: true,
        data: false,
    };
    let mut wire = f.encode(header_only).unwrap();
    wire[60] ^= 1;
    assert!(frame(&wire, header_only, 8192).unwrap().is_some());
}

/// The limit is checked as soon as the header is in, before the data is buffered.
#[test]
fn data_segment_over_the_limit() {
    let f = text_request(&[b'a'; 8193]);
    let wire = f.encode(Digests::NONE).unwrap();
    let err = PduError::DataSegmentTooLong {
        len: 8193,
        max: 8192,
    };
    assert_eq!(frame(&wire[..48], Digests::NONE, 8192), Err(err));
    assert!(frame(&wire, Digests::NONE, 8193).unwrap().is_some());
    let bhs: [u8; 48] = wire[..48].try_into().unwrap();
    assert_eq!(wire_len(&bhs, Digests::NONE), wire.len());
}

/// A 32-byte CDB: 16 in the BHS, 16 in an extended CDB AHS of AHSLength 17.
#[test]
fn extended_cdb_and_bidi_length() {
    let cdb: Vec<u8> = (0u8..32).collect();
    let mut head = [0u8; 16];
    head.copy_from_slice(&cdb[..16]);
    let cmd = ScsiCommand {
        immediate: false,
        final_: true,
        read: true,
        write: true,
        attr: TaskAttr::Simple,
        lun: Lun::ZERO,
        itt: 3,
        expected_len: 512,
        cmd_sn: 3,
        exp_stat_sn: 3,
        cdb: head,
    };
    let mut f = Frame::new(
        Header {
            ahs_words: 0,
            data_len: 0,
            pdu: Pdu::ScsiCommand(cmd),
        },
        Vec::new(),
    );
    f.ahs = vec![
        Ahs::ExtendedCdb(cdb[16..].to_vec()),
        Ahs::BidiReadLength(4096),
    ];
    f.fix_lengths();
    assert_eq!(f.header.ahs_words, 5 + 2);
    let wire = f.encode(Digests::BOTH).unwrap();
    assert_eq!(
        &wire[48..52],
        &[0x00, 0x11, 0x01, 0x00],
        "AHSLength 17, type 1, reserved"
    );
    assert_eq!(
        &wire[68..76],
        &[0x00, 0x05, 0x02, 0x00, 0x00, 0x00, 0x10, 0x00]
    );
    let (back, used) = frame(&wire, Digests::BOTH, 0).unwrap().unwrap();
    assert_eq!(used, wire.len());
    assert_eq!(back, f);
    assert_eq!(back.cdb(), Some(cdb));
    assert_eq!(nop_out().cdb(), None);
}

#[test]
fn malformed_ahs() {
    assert_eq!(decode_ahs(&[]), Ok(Vec::new()));
    let beyond = [0x00, 0x09, 0x01, 0x00, 1, 2, 3, 4];
    assert!(matches!(decode_ahs(&beyond), Err(PduError::Ahs(_))));
    let bidi_short = [0x00, 0x01, 0x02, 0x00];
    assert!(matches!(decode_ahs(&bidi_short), Err(PduError::Ahs(_))));
    let empty_cdb = [0x00, 0x00, 0x01, 0x00];
    assert!(matches!(decode_ahs(&empty_cdb), Err(PduError::Ahs(_))));
    let reserved = [0x00, 0x01, 0x07, 0x00];
    let err = PduError::Reserved(ReservedValue {
        field: "AHS type",
        value: 7,
    });
    assert_eq!(decode_ahs(&reserved), Err(err));
    let vendor = [0x00, 0x01, 60, 0x09];
    let want = Ahs::Extension {
        ahs_type: 60,
        data: vec![9],
    };
    assert_eq!(decode_ahs(&vendor), Ok(vec![want]));
}

fn ahs() -> impl Strategy<Value = Ahs> {
    prop_oneof![
        vec(any::<u8>(), 0..40).prop_map(Ahs::ExtendedCdb),
        any::<u32>().prop_map(Ahs::BidiReadLength),
        (60u8..=63, vec(any::<u8>(), 0..12))
            .prop_map(|(ahs_type, data)| Ahs::Extension { ahs_type, data }),
    ]
}

proptest! {
    /// What `Frame::encode` writes, `frame` reads back whole, with every digest setting.
    #[test]
    fn encode_then_frame(
        bhs in valid_bhs(),
        ahs in vec(ahs(), 0..4),
        data in vec(any::<u8>(), 0..300),
        d in 0usize..4,
    ) {
        let digests = ALL_DIGESTS[d];
        let mut f = Frame { header: Header::decode(&bhs).unwrap(), ahs, data };
        f.fix_lengths();
        let wire = f.encode(digests).unwrap();
        prop_assert_eq!(wire.len(), pdu_len(f.header.ahs_words, f.header.data_len, digests));
        prop_assert_eq!(frame(&wire, digests, 300), Ok(Some((f, wire.len()))));
    }

    /// `frame` never panics; what it returns fits in the buffer and re-encodes to a frame
    /// that reads back the same.
    #[test]
    fn frame_any_bytes(buf in vec(any::<u8>(), 0..400), d in 0usize..4, max in 0u32..600) {
        let digests = ALL_DIGESTS[d];
        if let Ok(Some((f, used))) = frame(&buf, digests, max) {
            prop_assert!(used <= buf.len());
            let wire = f.encode(digests).unwrap();
            prop_assert_eq!(frame(&wire, digests, max), Ok(Some((f, wire.len()))));
        }
    }
}
