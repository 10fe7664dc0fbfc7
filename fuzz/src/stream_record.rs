//! The `stream_record` target: [`decode`] / [`encode`] of cowd's stream (tape) records.
//!
//! Input: a mode byte, then a candidate record. Mode 0 decodes the bytes as they are. Any
//! other mode first makes both CRC-32C fields of the candidate good (where the layout in
//! `cowd/src/stream/record.rs` puts them), so that the checks behind the checksums (version,
//! kind, sizes, designator, reserved bytes, time, payload length, padding) see arbitrary
//! values, then flips the bit the mode byte names. `decode` never panics; what it accepts
//! encodes back to the same bytes, and the same record with a bit flipped is refused. The
//! payload decoders of StreamHeader and Trailer records never panic on any payload.

use cowd::stream::record::{Description, HEADER_LEN, Totals, decode, encode};

/// Where the header keeps its payload length, payload CRC and own CRC.
const PAYLOAD_LEN_AT: usize = 92;
const PAYLOAD_CRC_AT: usize = 96;
const HEADER_CRC_AT: usize = 124;

/// `stream_record` fuzz input: a mode byte, then a candidate record.
pub fn fuzz_stream_record(data: &[u8]) {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let mut record = bytes.to_vec();
    if mode != 0 {
        fix_checksums(&mut record);
    }
    check_stream_record(&record, usize::from(mode) * 131);
}

/// Makes the payload CRC (when the payload length fits the input) and the header CRC good.
fn fix_checksums(record: &mut [u8]) {
    if record.len() < HEADER_LEN {
        return;
    }
    let len = u32::from_le_bytes(record[PAYLOAD_LEN_AT..][..4].try_into().unwrap()) as usize;
    if let Some(payload) = record.get(HEADER_LEN..HEADER_LEN.saturating_add(len)) {
        let crc = crc32c(payload);
        record[PAYLOAD_CRC_AT..][..4].copy_from_slice(&crc.to_le_bytes());
    }
    let crc = crc32c(&record[..HEADER_CRC_AT]);
    record[HEADER_CRC_AT..][..4].copy_from_slice(&crc.to_le_bytes());
}

/// CRC-32C (Castagnoli, reflected), bit by bit: the fuzz crate depends on nothing but cowd.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0x82F6_3B78 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// [`decode`] never panics; an accepted record re-encodes to `record` and refuses the flip of
/// bit `flip` (modulo its length).
pub fn check_stream_record(record: &[u8], flip: usize) {
    let _ = Description::decode(record);
    let _ = Totals::decode(record);
    let Ok((header, payload)) = decode(record) else {
        return;
    };
    let _ = Description::decode(payload);
    let _ = Totals::decode(payload);
    let mut again = vec![0xA5; record.len()];
    encode(&header, payload, &mut again).expect("an accepted record encodes");
    assert!(
        again == record,
        "{header:?} does not encode back to its bytes"
    );
    let bit = flip % (record.len() * 8);
    let mut damaged = record.to_vec();
    damaged[bit / 8] ^= 1 << (bit % 8);
    assert!(decode(&damaged).is_err(), "flip of bit {bit} not detected");
}

/// Seeds: one record of each kind as cowd writes them, in both modes.
pub fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    use cowd::stream::record::{Designator, RecordHeader, RecordKind, Timestamp};
    let header = |kind, record_size| RecordHeader {
        kind,
        record_size,
        stream_id: 0x5eed_0000_0000_0001,
        sequence: 1,
        medium: 0,
        designator: Designator::new(&[0x60, 0x01, 0x40, 0x5f, 0xa0, 0xb1, 0xc2, 0xd3]).unwrap(),
        block_size: 512,
        source_offset: 4096,
        started: Timestamp {
            secs: 1_700_000_000,
            nanos: 5,
        },
    };
    let description = Description {
        bytes_before: 0,
        records_before: 0,
        source_length: Some(1 << 30),
        label: "seed".into(),
    }
    .encode()
    .unwrap();
    let totals = Totals {
        data_bytes: 1000,
        data_records: 3,
        sha256: [0x11; 32],
    }
    .encode();
    let data: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
    let records: [(&str, &str, RecordKind, u32, &[u8]); 4] = [
        (
            "stream_header",
            "stream_header_fixed",
            RecordKind::StreamHeader,
            512,
            &description,
        ),
        ("data", "data_fixed", RecordKind::Data, 1024, &data),
        (
            "trailer",
            "trailer_fixed",
            RecordKind::Trailer,
            512,
            &totals,
        ),
        ("filemark", "filemark_fixed", RecordKind::Filemark, 512, &[]),
    ];
    let mut s = Vec::new();
    for (raw, fixed, kind, size, payload) in records {
        let mut record = vec![0; size as usize];
        encode(&header(kind, size), payload, &mut record).unwrap();
        let mut refixed = record.clone();
        fix_checksums(&mut refixed);
        assert!(
            refixed == record,
            "fix_checksums disagrees with cowd's CRC-32C"
        );
        s.push(("stream_record", raw, [&[0u8][..], &record].concat()));
        s.push(("stream_record", fixed, [&[1u8][..], &record].concat()));
    }
    s
}
