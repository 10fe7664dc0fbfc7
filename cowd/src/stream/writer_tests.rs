//! The writer: records on one file, a stream over several media, all media full, and what it
//! refuses.

use sha2::{Digest, Sha256};

use super::*;
use crate::stream::record::{RecordKind, decode, payload_capacity};
use crate::stream::testing::{files, info, kinds, noise, read, write, write_into};
use crate::stream::{Chunk, MediumKind, MediumSpec};

#[test]
fn a_stream_on_one_file_is_header_data_trailer_filemark() {
    let dir = tempfile::tempdir().unwrap();
    let media = files(dir.path(), 1, None);
    let data = noise(300 << 10, 1);
    let summary = write(&media, info(8192), &data).unwrap();

    let per_record = payload_capacity(8192);
    let data_records = data.len().div_ceil(per_record) as u64;
    assert_eq!(summary.data_records, data_records);
    assert_eq!(summary.records, data_records + 2);
    assert_eq!(summary.bytes, data.len() as u64);
    assert_eq!(summary.media, vec![media[0].path.clone()]);
    assert_eq!(summary.sha256, <[u8; 32]>::from(Sha256::digest(&data)));

    let kinds = kinds(&media[0].path, 8192);
    assert_eq!(kinds.len() as u64, data_records + 3);
    assert_eq!(kinds[0], RecordKind::StreamHeader);
    assert!(
        kinds[1..=data_records as usize]
            .iter()
            .all(|k| *k == RecordKind::Data)
    );
    assert_eq!(
        &kinds[kinds.len() - 2..],
        [RecordKind::Trailer, RecordKind::Filemark]
    );

    let (back, read_summary) = read(&media).unwrap();
    assert!(back == data, "the data read back differs");
    assert_eq!(read_summary, summary);
}

#[test]
fn writes_that_do_not_continue_the_last_start_a_record_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let media = files(dir.path(), 1, None);
    let mut w = StreamWriter::new(media.clone(), info(4096)).unwrap();
    let writes = [
        (1 << 20, noise(1024, 2)),
        (0, noise(512, 3)),
        (512, noise(8192, 4)),
    ];
    for (offset, data) in &writes {
        w.write_blocks(*offset, data).unwrap();
    }
    let summary = w.finish().unwrap();
    // 1024 bytes at 1 MiB; 512 + 8192 contiguous bytes from 0 in records of 3968.
    assert_eq!(summary.data_records, 1 + 3);
    let mut r = crate::stream::StreamReader::open(media).unwrap();
    let mut chunks = Vec::new();
    while let Some(chunk) = r.next_chunk().unwrap() {
        let Chunk::Data { offset, bytes } = chunk else {
            panic!("no inline data was written");
        };
        chunks.push((offset, bytes.len()));
    }
    assert_eq!(
        chunks,
        [(1 << 20, 1024), (0, 3968), (3968, 3968), (7936, 768)]
    );
}

#[test]
fn a_stream_goes_on_over_three_media_and_reads_back_exact() {
    let dir = tempfile::tempdir().unwrap();
    // 20 records a medium: a header and 19 Data records, with no room left for a filemark.
    let media = files(dir.path(), 4, Some(20 * 4096));
    let data = noise(400 * 512, 5); // 52 Data records of 3968 bytes or less
    let summary = write(&media, info(4096), &data).unwrap();
    assert_eq!(summary.media.len(), 3, "{summary:?}");

    for (n, medium) in media[..3].iter().enumerate() {
        let bytes = std::fs::read(&medium.path).unwrap();
        assert!(bytes.len() as u64 <= 20 * 4096);
        let (first, payload) = decode(&bytes[..4096]).unwrap();
        assert_eq!(first.kind, RecordKind::StreamHeader);
        assert_eq!(first.medium, n as u32);
        assert_eq!(first.stream_id, summary.stream_id);
        let description = crate::stream::record::Description::decode(payload).unwrap();
        assert_eq!(description.label, "test stream");
    }
    assert!(!media[3].path.exists(), "a fourth medium was opened");

    let (back, read_summary) = read(&media[..3]).unwrap();
    assert!(back == data, "the data read back differs");
    assert_eq!(read_summary, summary);
}

#[test]
fn when_every_medium_is_full_the_error_says_how_much_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let media = files(dir.path(), 2, Some(10 * 1024));
    let mut w = StreamWriter::new(media.clone(), info(1024)).unwrap();
    let e = write_into(&mut w, &noise(64 << 10, 6)).unwrap_err();
    let WriteError::EndOfMedia {
        written_bytes,
        media: full,
    } = &e
    else {
        panic!("{e}");
    };
    // Each medium: a header and 9 Data records, no room for a tenth or a filemark record.
    assert_eq!(*written_bytes, 2 * 9 * payload_capacity(1024) as u64);
    assert_eq!(full.len(), 2);
    assert!(e.to_string().contains("give more media"), "{e}");
    assert!(matches!(
        w.write_blocks(1 << 20, &[0; 512]),
        Err(WriteError::Failed)
    ));
    assert!(matches!(w.finish(), Err(WriteError::Failed)));
}

#[test]
fn a_medium_too_small_for_its_header_and_a_record_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    // Room for the stream header only.
    let tiny = MediumSpec::new(dir.path().join("tiny")).with_capacity(1024);
    let e = write(&[tiny], info(1024), &noise(512, 7)).unwrap_err();
    assert!(
        matches!(e, WriteError::MediumTooSmall { medium: 0, .. }),
        "{e}"
    );
    // A second medium as small: the record that did not fit the first fits nowhere.
    let first = MediumSpec::new(dir.path().join("first")).with_capacity(3 * 1024);
    let second = MediumSpec::new(dir.path().join("second")).with_capacity(1024);
    let e = write(&[first, second], info(1024), &noise(4096, 7)).unwrap_err();
    assert!(
        matches!(e, WriteError::MediumTooSmall { medium: 1, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("second"), "{e}");
}

#[test]
fn what_a_writer_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let media = || files(dir.path(), 1, None);
    let no_media: Vec<MediumSpec> = Vec::new();
    assert!(matches!(
        StreamWriter::new(no_media, info(4096)),
        Err(WriteError::NoMedia)
    ));
    let refusals = [
        StreamInfo {
            record_size: 1000,
            ..info(4096)
        },
        StreamInfo {
            source_designator: vec![1; 33],
            ..info(4096)
        },
        StreamInfo {
            label: "x".repeat(300),
            ..info(4096)
        },
        StreamInfo {
            block_size: 0,
            ..info(4096)
        },
    ];
    for bad in refusals {
        assert!(StreamWriter::new(media(), bad.clone()).is_err(), "{bad:?}");
    }
    assert!(
        !media()[0].path.exists(),
        "a refused stream created its medium"
    );
    let mut w = StreamWriter::new(media(), info(4096)).unwrap();
    for (offset, len) in [(100, 512), (0, 100), (u64::MAX - 511, 1024)] {
        let e = w.write_blocks(offset, &vec![0; len]).unwrap_err();
        assert!(matches!(e, WriteError::NotWholeBlocks { .. }), "{e}");
    }
}

#[test]
fn a_character_device_given_as_a_fifo_takes_a_stream() {
    let sink = MediumSpec::new("/dev/null").with_kind(MediumKind::Fifo);
    let summary = write(&[sink], info(4096), &noise(100 << 10, 8)).unwrap();
    assert_eq!(summary.bytes, 100 << 10);
    assert_eq!(summary.records, summary.data_records + 2);
}

#[test]
fn inline_bytes_go_between_the_data_in_records_of_their_own_and_count_in_the_totals() {
    let dir = tempfile::tempdir().unwrap();
    let media = files(dir.path(), 1, None);
    let mut w = StreamWriter::new(media.clone(), info(4096)).unwrap();
    let (label, a, note, more, b) = (
        noise(100, 20),
        noise(2048, 21),
        noise(7, 22),
        noise(5000, 23),
        noise(1024, 24),
    );
    // Inline bytes need not be whole blocks; consecutive inline writes share records (5000
    // + 7 bytes: two records of 3968 and 1039), and any inline write ends the Data record.
    w.write_inline(&label).unwrap();
    w.write_blocks(4096, &a).unwrap();
    w.write_inline(&note).unwrap();
    w.write_inline(&more).unwrap();
    w.write_blocks(4096 + 2048, &b).unwrap();
    let summary = w.finish().unwrap();

    let kinds = kinds(&media[0].path, 4096);
    use RecordKind::*;
    let want = [
        StreamHeader,
        Inline,
        Data,
        Inline,
        Inline,
        Data,
        Trailer,
        Filemark,
    ];
    assert_eq!(kinds, want);
    // Inline records have no source offset, the second of two as well.
    let file = std::fs::read(&media[0].path).unwrap();
    let offsets: Vec<u64> = (file.chunks(4096).take(6))
        .map(|r| decode(r).unwrap().0.source_offset)
        .collect();
    assert_eq!(offsets, [0, 0, 4096, 0, 0, 4096 + 2048]);
    let in_order = [&label[..], &a, &note, &more, &b].concat();
    assert_eq!(summary.bytes, in_order.len() as u64);
    assert_eq!(summary.data_records, 5);
    assert_eq!(summary.sha256, <[u8; 32]>::from(Sha256::digest(&in_order)));

    // Read back: the chunks in order; inline ones have no offset, and a restore passes them
    // over.
    let mut r = crate::stream::StreamReader::open(media.clone()).unwrap();
    let mut inline = Vec::new();
    let mut data = Vec::new();
    while let Some(chunk) = r.next_chunk().unwrap() {
        match chunk {
            Chunk::Inline(bytes) => inline.extend_from_slice(bytes),
            Chunk::Data { offset, bytes } => data.push((offset, bytes.to_vec())),
        }
    }
    assert_eq!(inline, [&label[..], &note, &more].concat());
    assert_eq!(data, [(4096, a.clone()), (4096 + 2048, b.clone())]);
    let (placed, read_summary) = read(&media).unwrap();
    assert_eq!(read_summary, summary);
    let dev = crate::device::MemoryDevice::new(16 << 10);
    let restored = crate::stream::StreamReader::open(media)
        .unwrap()
        .restore_to(&dev);
    assert_eq!(restored.unwrap(), summary);
    let mut back = vec![0; placed.len()];
    crate::device::BlockDevice::read_at(&dev, &mut back, 0).unwrap();
    assert_eq!(placed, [vec![0; 4096], a, b].concat());
    assert_eq!(back, placed);
}

#[test]
fn inline_records_go_on_over_media_like_data() {
    let dir = tempfile::tempdir().unwrap();
    // 6 records a medium: a header and 5 more (the last medium also takes the Trailer).
    let media = files(dir.path(), 4, Some(6 * 4096));
    let mut w = StreamWriter::new(media.clone(), info(4096)).unwrap();
    let label = noise(3 * 3968 + 10, 30);
    let data = noise(30 * 512, 31);
    let note = noise(9000, 32);
    w.write_inline(&label).unwrap();
    w.write_blocks(0, &data).unwrap();
    w.write_inline(&note).unwrap();
    let summary = w.finish().unwrap();
    assert!(summary.media.len() >= 3, "{:?}", summary.media);
    let in_order = [&label[..], &data, &note].concat();
    assert_eq!(summary.bytes, in_order.len() as u64);

    let mut r = crate::stream::StreamReader::open(media).unwrap();
    let (mut bytes, mut placed) = (Vec::new(), Vec::new());
    while let Some(chunk) = r.next_chunk().unwrap() {
        bytes.extend_from_slice(chunk.bytes());
        if let Some((offset, b)) = chunk.placed() {
            assert_eq!(offset, placed.len() as u64);
            placed.extend_from_slice(b);
        }
    }
    assert!(
        bytes == in_order,
        "every byte once, in order, over the media"
    );
    assert!(placed == data);
    assert_eq!(r.summary(), summary);
}
