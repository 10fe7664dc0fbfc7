//! The reader: damage of every kind found and named by medium and record, a stream through a
//! real FIFO, restores to a device, and round trips of any size.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::device::MemoryDevice;
use crate::stream::record;
use crate::stream::testing::{files, info, noise, read, write, write_into};
use crate::stream::{StreamWriter, WriteError};

const RS: u32 = 4096;

/// A stream of 340 blocks over three File media of 20 records each (44 Data records: 19, 19
/// and 6 with the Trailer and a filemark); its data.
fn three_media(dir: &Path) -> (Vec<MediumSpec>, Vec<u8>) {
    let media = files(dir, 3, Some(20 * u64::from(RS)));
    let data = noise(340 * 512, 11);
    let summary = write(&media, info(RS), &data).unwrap();
    assert_eq!(summary.media.len(), 3);
    (media, data)
}

/// Rewrites record `n` of a stream file through `change`, with valid checksums.
fn rewrite(path: &Path, n: usize, change: impl FnOnce(&mut RecordHeader, &mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).unwrap();
    let rec = &mut bytes[n * RS as usize..(n + 1) * RS as usize];
    let (mut header, payload) = record::decode(rec).unwrap();
    let mut payload = payload.to_vec();
    change(&mut header, &mut payload);
    record::encode(&header, &payload, rec).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// The error reading `media` gives; checks it names `medium` and `record`.
fn read_error(media: &[MediumSpec], medium: u32, record: Option<u64>) -> ReadError {
    let e = read(media).unwrap_err();
    assert_eq!((e.medium, e.record), (medium, record), "{e}");
    assert_eq!(e.path, media[medium as usize].path, "{e}");
    e
}

#[test]
fn a_damaged_byte_is_named_by_medium_and_record() {
    let dir = tempfile::tempdir().unwrap();
    let (media, _) = three_media(dir.path());
    let path = &media[1].path;
    let mut bytes = std::fs::read(path).unwrap();
    bytes[7 * RS as usize + 1000] ^= 0x10; // in the payload of record 7 of medium 1
    std::fs::write(path, &bytes).unwrap();
    let e = read_error(&media, 1, Some(7));
    assert!(
        matches!(
            e.kind,
            ReadErrorKind::Record(RecordError::PayloadChecksum { .. })
        ),
        "{e}"
    );
    let msg = e.to_string();
    assert!(msg.starts_with("medium 1 ("), "{msg}");
    // A reader that failed reads no further.
    let mut r = StreamReader::open(media.clone()).unwrap();
    let e = loop {
        if let Err(e) = r.next_chunk() {
            break e;
        }
    };
    assert_eq!((e.medium, e.record), (1, Some(7)));
    let again = r.next_chunk().unwrap_err();
    assert!(matches!(again.kind, ReadErrorKind::Failed), "{again}");
    assert!(
        msg.contains("m1.stream), record 7: damaged record: payload checksum"),
        "{msg}"
    );

    bytes[7 * RS as usize + 1000] ^= 0x10;
    bytes[3 * RS as usize + 30] ^= 0x01; // in the header of record 3
    std::fs::write(path, &bytes).unwrap();
    let e = read_error(&media, 1, Some(3));
    assert!(e.to_string().contains("header checksum mismatch"), "{e}");
}

#[test]
fn a_stream_without_its_trailer_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let (media, _) = three_media(dir.path());
    // The last medium cut after its third record, then inside its fourth.
    let last = &media[2].path;
    let bytes = std::fs::read(last).unwrap();
    std::fs::write(last, &bytes[..3 * RS as usize]).unwrap();
    let e = read_error(&media, 2, None);
    assert!(matches!(e.kind, ReadErrorKind::NoTrailer(3)), "{e}");
    assert!(e.to_string().contains("without its trailer"), "{e}");
    std::fs::write(last, &bytes[..3 * RS as usize + 100]).unwrap();
    let e = read_error(&media, 2, Some(3));
    assert!(e.to_string().contains("ends inside a record"), "{e}");
    // A medium left out at the end; a writer that never finished.
    let e = read_error(&media[..2], 1, None);
    assert!(e.to_string().contains("medium 2 that was not given"), "{e}");
    let unfinished = vec![MediumSpec::new(dir.path().join("unfinished"))];
    let mut w = StreamWriter::new(unfinished.clone(), info(RS)).unwrap();
    write_into(&mut w, &noise(64 << 10, 12)).unwrap();
    drop(w);
    let e = read_error(&unfinished, 0, None);
    assert!(matches!(e.kind, ReadErrorKind::NoTrailer(1)), "{e}");
}

#[test]
fn media_out_of_order_missing_or_of_another_stream_are_found_at_their_first_record() {
    let dir = tempfile::tempdir().unwrap();
    let (media, _) = three_media(dir.path());
    let swapped = [media[1].clone(), media[0].clone(), media[2].clone()];
    let e = read_error(&swapped, 0, Some(0));
    assert!(
        matches!(
            e.kind,
            ReadErrorKind::WrongMedium {
                found: 1,
                expected: 0
            }
        ),
        "{e}"
    );
    let skipped = [media[0].clone(), media[2].clone()];
    let e = read_error(&skipped, 1, Some(0));
    assert!(
        matches!(
            e.kind,
            ReadErrorKind::WrongMedium {
                found: 2,
                expected: 1
            }
        ),
        "{e}"
    );

    let other = tempfile::tempdir().unwrap();
    let (other_media, _) = three_media(other.path());
    let mixed = [media[0].clone(), other_media[1].clone()];
    let e = read_error(&mixed, 1, Some(0));
    assert!(matches!(e.kind, ReadErrorKind::WrongStream { .. }), "{e}");
    assert!(e.to_string().contains("another backup"), "{e}");

    std::fs::write(&other_media[0].path, b"").unwrap();
    let e = read_error(&[media[0].clone(), other_media[0].clone()], 1, Some(0));
    assert!(matches!(e.kind, ReadErrorKind::EmptyMedium), "{e}");
}

#[test]
fn a_repeated_record_and_a_forged_payload_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let (media, _) = three_media(dir.path());
    let path = &media[0].path;
    let original = std::fs::read(path).unwrap();
    let rs = RS as usize;
    let mut repeated = original[..5 * rs].to_vec();
    repeated.extend_from_slice(&original[4 * rs..]);
    std::fs::write(path, &repeated).unwrap();
    let e = read_error(&media, 0, Some(5));
    assert!(
        matches!(
            e.kind,
            ReadErrorKind::Sequence {
                found: 4,
                expected: 5
            }
        ),
        "{e}"
    );

    // A payload changed with its checksums made good again: only the trailer can tell.
    std::fs::write(path, &original).unwrap();
    rewrite(path, 2, |_, payload| payload[0] ^= 1);
    let e = read_error(&media, 2, Some(media_records(&media[2].path) - 2));
    assert!(
        matches!(
            e.kind,
            ReadErrorKind::TrailerMismatch {
                what: "SHA-256",
                ..
            }
        ),
        "{e}"
    );

    // A record moved to another offset: the header checksum holds, the stream says the same.
    std::fs::write(path, &original).unwrap();
    rewrite(path, 2, |h, _| h.medium = 1);
    let e = read_error(&media, 0, Some(2));
    assert!(matches!(e.kind, ReadErrorKind::WrongMedium { .. }), "{e}");
    rewrite(path, 2, |h, _| {
        h.medium = 0;
        h.block_size = 4096;
    });
    let e = read_error(&media, 0, Some(2));
    assert!(
        matches!(e.kind, ReadErrorKind::Changed("block size")),
        "{e}"
    );
}

/// Records of a stream file (its filemark record included).
fn media_records(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len() / u64::from(RS)
}

#[test]
fn a_stream_goes_through_a_fifo_between_two_threads() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    let c = CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let data = noise(3 << 20, 13);
    let writer = {
        let (fifo, data) = (fifo.clone(), data.clone());
        std::thread::spawn(move || write(&[MediumSpec::new(fifo)], info(64 << 10), &data))
    };
    let reader = std::thread::spawn(move || read(&[MediumSpec::new(fifo)]));
    let written = writer.join().unwrap().unwrap();
    let (back, summary) = reader.join().unwrap().unwrap();
    assert!(back == data, "the data through the FIFO differs");
    assert_eq!(summary, written);
}

#[test]
fn a_stream_restores_to_a_device_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let media = files(dir.path(), 1, None);
    let mut w = StreamWriter::new(media.clone(), info(RS)).unwrap();
    let (a, b) = (noise(1 << 20, 14), noise(10 * 512, 15));
    w.write_blocks(512 << 10, &a).unwrap();
    w.write_blocks(8 << 20, &b).unwrap();
    w.finish().unwrap();

    let dev = MemoryDevice::new(16 << 20);
    let summary = StreamReader::open(media.clone())
        .unwrap()
        .restore_to(&dev)
        .unwrap();
    assert_eq!(summary.bytes, (a.len() + b.len()) as u64);
    let mut back = vec![0; 16 << 20];
    dev.read_at(&mut back, 0).unwrap();
    let mut expected = vec![0; 16 << 20];
    expected[512 << 10..(512 << 10) + a.len()].copy_from_slice(&a);
    expected[8 << 20..(8 << 20) + b.len()].copy_from_slice(&b);
    assert!(back == expected, "the restored device differs");

    let small = MemoryDevice::new(1 << 20);
    let e = StreamReader::open(media)
        .unwrap()
        .restore_to(&small)
        .unwrap_err();
    assert!(matches!(e.kind, ReadErrorKind::OutOfRange { .. }), "{e}");
    assert!(
        e.to_string().contains("end of the 1048576-byte device"),
        "{e}"
    );
}

#[test]
fn the_first_header_describes_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (media, _) = three_media(dir.path());
    let r = StreamReader::open(media).unwrap();
    let d = r.description();
    assert_eq!(d.source_designator, crate::stream::testing::NAA);
    assert_eq!((d.block_size, d.record_size), (512, RS));
    assert_eq!(
        (d.label.as_str(), d.source_length),
        ("test stream", Some(64 << 20))
    );
    let age = d.started.to_system_time().unwrap().elapsed().unwrap();
    assert!(age.as_secs() < 600, "{age:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Invariant: any data, in any record size, over as many media as it needs, reads back
    /// exactly, with the summary the writer gave.
    #[test]
    fn any_stream_round_trips(
        blocks in 0usize..300,
        sectors in 1u32..=24,
        capacity_records in prop::option::of(6u64..40),
        seed in any::<u64>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let rs = sectors * 512;
        let media = files(dir.path(), 64, capacity_records.map(|n| n * u64::from(rs)));
        let data = noise(blocks * 512, seed);
        let written = match write(&media, info(rs), &data) {
            Err(WriteError::EndOfMedia { .. }) => return Ok(()),
            other => other.unwrap(),
        };
        let used = written.media.len();
        let (back, summary) = read(&media[..used]).unwrap();
        prop_assert!(back == data);
        prop_assert_eq!(summary, written);
    }
}
