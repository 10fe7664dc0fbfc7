//! The record codec: round trips, every single-bit flip detected, arbitrary bytes never panic.

use proptest::prelude::*;

use super::*;

fn header(kind: RecordKind, record_size: u32) -> RecordHeader {
    RecordHeader {
        kind,
        record_size,
        stream_id: 0x1122_3344_5566_7788,
        sequence: 42,
        medium: 2,
        designator: Designator::new(&[0x60, 0x01, 0x40, 0x5f, 0xa0, 0xb1, 0xc2, 0xd3]).unwrap(),
        block_size: 512,
        source_offset: 1 << 40,
        started: Timestamp {
            secs: 1_700_000_000,
            nanos: 123_456_789,
        },
    }
}

fn record(h: &RecordHeader, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0xAA; h.record_size as usize];
    encode(h, payload, &mut out).unwrap();
    out
}

#[test]
fn a_data_record_round_trips() {
    let h = header(RecordKind::Data, 4096);
    let payload: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    let bytes = record(&h, &payload);
    assert_eq!(&bytes[..8], b"COWDSTRM");
    let (back, data) = decode(&bytes).unwrap();
    assert_eq!(back, h);
    assert_eq!(data, &payload[..]);
    assert!(bytes[HEADER_LEN + payload.len()..].iter().all(|&b| b == 0));
}

#[test]
fn every_single_bit_flip_is_detected() {
    let h = header(RecordKind::Data, 512);
    let bytes = record(&h, &[0x5A; 300]);
    for bit in 0..bytes.len() * 8 {
        let mut damaged = bytes.clone();
        damaged[bit / 8] ^= 1 << (bit % 8);
        assert!(decode(&damaged).is_err(), "flip of bit {bit} not detected");
    }
}

#[test]
fn a_full_and_an_empty_payload_fit() {
    let h = header(RecordKind::Filemark, 512);
    let filemark = record(&h, &[]);
    assert!(decode(&filemark).unwrap().1.is_empty());
    let full = vec![7u8; payload_capacity(512)];
    let h = header(RecordKind::Data, 512);
    assert_eq!(decode(&record(&h, &full)).unwrap().1, &full[..]);
    let mut out = vec![0; 512];
    let too_long = vec![7u8; payload_capacity(512) + 1];
    assert!(matches!(
        encode(&h, &too_long, &mut out),
        Err(RecordError::PayloadTooLong { .. })
    ));
}

#[test]
fn sizes_and_designators_are_checked() {
    for bad in [0, 511, 513, 1000, MAX_RECORD_SIZE + 512] {
        assert_eq!(check_record_size(bad), Err(RecordError::BadRecordSize(bad)));
    }
    assert!(check_record_size(DEFAULT_RECORD_SIZE).is_ok());
    assert!(Designator::new(&[1; 33]).is_err());
    assert_eq!(Designator::new(&[1; 32]).unwrap().as_bytes(), &[1; 32]);
    let h = header(RecordKind::Data, 1024);
    let bytes = record(&h, b"abc");
    assert_eq!(
        decode(&bytes[..512]),
        Err(RecordError::SizeMismatch {
            declared: 1024,
            actual: 512
        })
    );
    assert_eq!(decode(&bytes[..100]), Err(RecordError::TooShort(100)));
    let mut out = vec![0; 512];
    assert!(
        encode(&h, b"abc", &mut out).is_err(),
        "buffer of the wrong size"
    );
}

#[test]
fn descriptions_and_totals_round_trip() {
    let d = Description {
        bytes_before: 1 << 33,
        records_before: 77,
        source_length: Some(10 << 30),
        label: "nightly vm-disk ✓".into(),
    };
    assert_eq!(Description::decode(&d.encode().unwrap()).unwrap(), d);
    let unknown = Description::default();
    assert_eq!(
        Description::decode(&unknown.encode().unwrap()).unwrap(),
        unknown
    );
    let long = Description {
        label: "x".repeat(MAX_LABEL + 1),
        ..Description::default()
    };
    assert!(long.encode().is_err());
    // The largest description fits the smallest record.
    let largest = Description {
        label: "x".repeat(MAX_LABEL),
        ..Description::default()
    };
    assert!(largest.encode().unwrap().len() <= payload_capacity(MIN_RECORD_SIZE));
    let t = Totals {
        data_bytes: 5,
        data_records: 1,
        sha256: [9; 32],
    };
    assert_eq!(Totals::decode(&t.encode()).unwrap(), t);
    assert!(Totals::decode(&t.encode()[..47]).is_err());
}

proptest! {
    /// Invariant: `decode` never panics, and what it accepts encodes back to the same bytes.
    #[test]
    fn arbitrary_bytes_never_panic_and_accepted_records_are_canonical(
        bytes in proptest::collection::vec(any::<u8>(), 0..1200),
    ) {
        if let Ok((h, payload)) = decode(&bytes) {
            let mut again = vec![0; bytes.len()];
            encode(&h, payload, &mut again).unwrap();
            prop_assert_eq!(&again, &bytes);
        }
        let _ = Description::decode(&bytes);
        let _ = Totals::decode(&bytes);
    }

    /// Invariant: a record with a valid header but damaged bytes after it is refused, and
    /// never panics (the header alone is not trusted for the payload).
    #[test]
    fn damage_anywhere_is_an_error(
        payload in proptest::collection::vec(any::<u8>(), 0..=payload_capacity(512)),
        at in any::<prop::sample::Index>(),
        xor in 1u8..,
    ) {
        let h = header(RecordKind::Data, 512);
        let mut bytes = record(&h, &payload);
        let i = at.index(bytes.len());
        bytes[i] ^= xor;
        prop_assert!(decode(&bytes).is_err());
    }

    /// Invariant: encode then decode gives back the header and payload, for any record size.
    #[test]
    fn encode_decode_round_trip(
        sectors in 1u32..=64,
        len_seed in any::<prop::sample::Index>(),
        seq in any::<u64>(),
        offset in any::<u64>(),
        designator in proptest::collection::vec(any::<u8>(), 0..=MAX_DESIGNATOR),
    ) {
        let record_size = sectors * 512;
        let payload: Vec<u8> =
            (0..len_seed.index(payload_capacity(record_size) + 1)).map(|i| (i * 7) as u8).collect();
        let h = RecordHeader {
            sequence: seq,
            source_offset: offset,
            designator: Designator::new(&designator).unwrap(),
            ..header(RecordKind::Data, record_size)
        };
        let bytes = record(&h, &payload);
        let (back, data) = decode(&bytes).unwrap();
        prop_assert_eq!(back, h);
        prop_assert_eq!(data, &payload[..]);
    }
}
