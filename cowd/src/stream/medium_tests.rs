//! Media: kinds from file types, whole records on files, capacity as an end of medium,
//! filemark records, and a character device that is not a tape refused as one.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

use super::*;
use crate::stream::record::{Designator, MIN_RECORD_SIZE, RecordHeader, RecordKind, Timestamp};

fn data_record(sequence: u64, record_size: u32) -> Vec<u8> {
    let h = RecordHeader {
        kind: RecordKind::Data,
        record_size,
        stream_id: 7,
        sequence,
        medium: 0,
        designator: Designator::new(b"naa").unwrap(),
        block_size: 512,
        source_offset: sequence * 100,
        started: Timestamp::now(),
    };
    let mut out = vec![0; record_size as usize];
    record::encode(&h, &[sequence as u8; 100], &mut out).unwrap();
    out
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

#[test]
fn a_character_device_that_is_not_a_tape_is_refused_as_one() {
    for spec in [
        MediumSpec::new("/dev/null"),
        MediumSpec::new("/dev/null").with_kind(MediumKind::Tape),
    ] {
        let e = Medium::open_write(&spec, 4096).unwrap_err();
        assert!(matches!(e, MediumError::NotATape { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("/dev/null is a character device but not a tape"),
            "{msg}"
        );
        assert!(msg.contains("MTIOCGET"), "{msg}");
        assert!(msg.contains("kind fifo"), "{msg}");
        assert!(matches!(
            Medium::open_read(&spec),
            Err(MediumError::NotATape { .. })
        ));
    }
    // Given the kind Fifo, it is a plain byte stream.
    let spec = MediumSpec::new("/dev/null").with_kind(MediumKind::Fifo);
    let mut sink = Medium::open_write(&spec, 4096).unwrap();
    assert_eq!(sink.kind(), MediumKind::Fifo);
    assert_eq!(sink.write_filemark().unwrap(), WriteOutcome::Written);
    assert!(matches!(
        sink.rewind(),
        Err(MediumError::Unsupported { .. })
    ));
}

#[test]
fn kinds_come_from_file_types_and_must_fit_them() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    mkfifo(&fifo);
    let file = dir.path().join("new.stream");
    let m = Medium::open_write(&MediumSpec::new(&file), 4096).unwrap();
    assert_eq!(m.kind(), MediumKind::File);
    let refusals = [
        MediumSpec::new(dir.path()),
        MediumSpec::new(&fifo).with_kind(MediumKind::File),
        MediumSpec::new(&file).with_kind(MediumKind::Tape),
        MediumSpec::new(&file).with_kind(MediumKind::Fifo),
        MediumSpec::new(&fifo).with_capacity(1 << 20),
    ];
    for spec in refusals {
        let e = Medium::open_write(&spec, 4096).unwrap_err();
        assert!(matches!(e, MediumError::Refused { .. }), "{spec:?}: {e}");
    }
    let e = Medium::open_read(&MediumSpec::new(dir.path().join("absent"))).unwrap_err();
    assert!(e.to_string().contains("absent"), "{e}");
}

#[test]
fn a_file_holding_data_is_never_written_over_and_a_new_one_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.stream");
    std::fs::write(&old, b"last night's backup").unwrap();
    let e = Medium::open_write(&MediumSpec::new(&old), 4096).unwrap_err();
    assert!(e.to_string().contains("holds 19 bytes already"), "{e}");
    assert_eq!(std::fs::read(&old).unwrap(), b"last night's backup");
    let empty = dir.path().join("empty.stream");
    std::fs::write(&empty, b"").unwrap();
    Medium::open_write(&MediumSpec::new(&empty), 4096).unwrap();
    let new = dir.path().join("new.stream");
    drop(Medium::open_write(&MediumSpec::new(&new), 4096).unwrap());
    let mode = std::fs::metadata(&new).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
}

#[test]
fn records_past_a_files_capacity_are_an_end_of_medium_and_leave_it_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.stream");
    let rs = MIN_RECORD_SIZE;
    let spec = MediumSpec::new(&path).with_capacity(3 * u64::from(rs) + 100);
    let mut m = Medium::open_write(&spec, rs).unwrap();
    for seq in 0..3 {
        assert_eq!(
            m.write_record(&data_record(seq, rs)).unwrap(),
            WriteOutcome::Written
        );
    }
    assert_eq!(
        m.write_record(&data_record(3, rs)).unwrap(),
        WriteOutcome::EndOfMedium
    );
    assert_eq!(m.write_filemark().unwrap(), WriteOutcome::EndOfMedium);
    assert_eq!(m.bytes_written(), 3 * u64::from(rs));
    m.close().unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 3 * u64::from(rs));
}

#[test]
fn a_file_reads_back_as_records_a_filemark_and_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.stream");
    let spec = MediumSpec::new(&path);
    let mut m = Medium::open_write(&spec, 1024).unwrap();
    let records = [data_record(0, 1024), data_record(1, 1024)];
    for r in &records {
        assert_eq!(m.write_record(r).unwrap(), WriteOutcome::Written);
    }
    assert_eq!(m.write_filemark().unwrap(), WriteOutcome::Written);
    m.close().unwrap();
    let mut m = Medium::open_read(&spec).unwrap();
    for r in &records {
        assert_eq!(m.read_record().unwrap(), ReadOutcome::Record(r));
    }
    assert_eq!(m.read_record().unwrap(), ReadOutcome::Filemark);
    assert_eq!(m.read_record().unwrap(), ReadOutcome::EndOfData);
    assert_eq!(m.read_record().unwrap(), ReadOutcome::EndOfData);
}

#[test]
fn a_file_cut_inside_a_record_or_with_a_bad_header_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.stream");
    let mut bytes = data_record(0, 1024);
    bytes.extend_from_slice(&data_record(1, 1024)[..700]);
    std::fs::write(&path, &bytes).unwrap();
    let mut m = Medium::open_read(&MediumSpec::new(&path)).unwrap();
    assert!(matches!(m.read_record().unwrap(), ReadOutcome::Record(_)));
    let e = m.read_record().unwrap_err();
    assert!(
        matches!(
            e,
            MediumError::Truncated {
                got: 700,
                want: 1024,
                ..
            }
        ),
        "{e}"
    );
    std::fs::write(&path, &bytes[..1024 + 50]).unwrap();
    let mut m = Medium::open_read(&MediumSpec::new(&path)).unwrap();
    let _ = m.read_record().unwrap();
    assert!(matches!(
        m.read_record(),
        Err(MediumError::Truncated {
            got: 50,
            want: 128,
            ..
        })
    ));
    bytes[1024 + 20] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let mut m = Medium::open_read(&MediumSpec::new(&path)).unwrap();
    let _ = m.read_record().unwrap();
    let e = m.read_record().unwrap_err();
    assert!(e.to_string().contains("header checksum"), "{e}");
}

/// The ioctl numbers are the kernel's (`<linux/mtio.h>` on x86-64: `_IOW('m', 1, struct
/// mtop)` and `_IOR('m', 2, struct mtget)`).
#[cfg(target_arch = "x86_64")]
#[test]
fn tape_ioctl_numbers_are_the_kernels() {
    assert_eq!(tape::MTIOCTOP, 0x4008_6d01);
    assert_eq!(tape::MTIOCGET, 0x8030_6d02);
}
