use super::*;
use crate::scsi::{Residual as ScsiResidual, Response, Status};

const LIMITS: Limits = Limits {
    max_xmit_data_segment_length: 8192,
    max_burst_length: 20_000,
};

const SEQ: Sequence = Sequence {
    stat_sn: 5,
    exp_cmd_sn: 10,
    max_cmd_sn: 40,
};

fn data_in(f: &Frame) -> DataIn {
    match f.header.pdu {
        Pdu::DataIn(d) => d,
        other => panic!("{other:?}"),
    }
}

#[test]
fn good_data_carries_the_status_in_its_last_pdu() {
    let resp = Response {
        status: Status::Good,
        data_in: (0..50_000u32).map(|i| i as u8).collect(),
        sense: None,
        residual: ScsiResidual::Underflow(14),
    };
    let frames = answer(&resp, 3, LIMITS, SEQ);
    let pieces: Vec<(u32, usize, bool)> = frames
        .iter()
        .map(|f| (data_in(f).buffer_offset, f.data.len(), data_in(f).final_))
        .collect();
    // Pieces never cross a MaxBurstLength boundary; F ends each burst.
    assert_eq!(
        pieces,
        vec![
            (0, 8192, false),
            (8192, 8192, false),
            (16384, 3616, true),
            (20000, 8192, false),
            (28192, 8192, false),
            (36384, 3616, true),
            (40000, 8192, false),
            (48192, 1808, true),
        ]
    );
    let joined: Vec<u8> = frames.iter().flat_map(|f| f.data.clone()).collect();
    assert_eq!(joined, resp.data_in);
    for (i, f) in frames.iter().enumerate() {
        let d = data_in(f);
        assert_eq!(d.data_sn, i as u32);
        assert_eq!((d.itt, d.exp_cmd_sn, d.max_cmd_sn), (3, 10, 40));
        assert_eq!(d.status.is_some(), i == frames.len() - 1);
    }
    let last = data_in(frames.last().unwrap()).status.unwrap();
    assert_eq!((last.status, last.stat_sn), (0, 5));
    assert_eq!(last.residual, Residual::Underflow(14));
}

#[test]
fn sense_data_goes_in_a_scsi_response() {
    let sense = vec![0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0, 0, 0];
    let resp = Response {
        status: Status::CheckCondition,
        data_in: Vec::new(),
        sense: Some(sense.clone()),
        residual: ScsiResidual::None,
    };
    let frames = answer(&resp, 9, LIMITS, SEQ);
    assert_eq!(frames.len(), 1);
    let Pdu::ScsiResponse(r) = frames[0].header.pdu else {
        panic!("{:?}", frames[0].header);
    };
    assert_eq!((r.status, r.stat_sn, r.itt, r.exp_data_sn), (2, 5, 9, 0));
    assert_eq!(&frames[0].data[..2], &[0, 18]);
    assert_eq!(&frames[0].data[2..], &sense[..]);
}

#[test]
fn no_data_good_is_a_bare_scsi_response() {
    let resp = Response::good(ScsiResidual::Overflow(512));
    let frames = answer(&resp, 1, LIMITS, SEQ);
    assert_eq!(frames.len(), 1);
    let Pdu::ScsiResponse(r) = frames[0].header.pdu else {
        panic!();
    };
    assert_eq!(r.residual, Residual::Overflow(512));
    assert!(frames[0].data.is_empty());
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The parts `encode_answer` lists, joined, are the bytes of the answer's frames
        /// encoded one after the other; no data-in is copied into the buffer, and no two
        /// encoded parts touch.
        #[test]
        fn the_parts_are_the_encoded_answer(
            len in 0usize..70_000,
            seg in 1u32..20_000,
            burst in 1u32..50_000,
            sense in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..30)),
            header in any::<bool>(),
            data in any::<bool>(),
            sized in any::<bool>(),
        ) {
            let digests = Digests { header, data };
            let limits = Limits { max_xmit_data_segment_length: seg, max_burst_length: burst };
            let resp = Response {
                status: if sense.is_some() { Status::CheckCondition } else { Status::Good },
                data_in: (0..len).map(|i| (i % 251) as u8).collect(),
                sense,
                residual: ScsiResidual::None,
            };
            let mut want = Vec::new();
            for f in answer(&resp, 4, limits, SEQ) {
                f.encode_into(digests, &mut want).unwrap();
            }
            let mut g = Gathered::default();
            // The data-in from memory, or (without data digests) sent from elsewhere: the
            // same bytes on the wire.
            let payload = if sized && !data {
                Payload::Sized(resp.data_in.len())
            } else {
                Payload::Bytes(&resp.data_in)
            };
            encode_answer(&resp, payload, 4, limits, SEQ, digests, &mut g).unwrap();
            let Gathered { buf, parts } = g;
            let mut got = Vec::new();
            let mut from_data = 0;
            for (i, p) in parts.iter().enumerate() {
                match p {
                    Part::Encoded(r) => {
                        prop_assert!(!r.is_empty());
                        prop_assert!(!matches!(parts.get(i + 1), Some(Part::Encoded(_))));
                        got.extend_from_slice(&buf[r.clone()]);
                    }
                    Part::DataIn(r) => {
                        from_data += r.len();
                        got.extend_from_slice(&resp.data_in[r.clone()]);
                    }
                }
            }
            prop_assert_eq!(from_data, len);
            prop_assert_eq!(got, want);
        }
    }
}
