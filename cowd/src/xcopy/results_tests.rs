//! Tests of the RECEIVE COPY RESULTS encoders: each answer written out byte by byte from the
//! SPC-3 layouts, read back the way libiscsi's unmarshaller reads it, and cut to any
//! allocation length without changing AVAILABLE DATA.

use proptest::prelude::*;

use super::*;

#[test]
fn copy_status_bytes() {
    let s = CopyStatus {
        status: CopyManagerStatus::CompletedWithError,
        held_data_discarded: true,
        segments_processed: 3,
        units: TransferUnits::Mebibytes,
        transfer_count: 0x0102_0304,
    };
    #[rustfmt::skip]
    let want = [
        0x00, 0x00, 0x00, 0x08, // AVAILABLE DATA 8
        0x82,                   // HDD 1, COPY MANAGER STATUS 02h (completed with error)
        0x00, 0x03,             // SEGMENTS PROCESSED 3
        0x02,                   // TRANSFER COUNT UNITS: mebibytes
        0x01, 0x02, 0x03, 0x04, // TRANSFER COUNT
    ];
    assert_eq!(copy_status(&s, 1024), want);
    assert_eq!(copy_status(&s, 5), want[..5]);
    assert_eq!(copy_status(&s, 0), [0u8; 0]);
}

#[test]
fn transfer_count_takes_the_smallest_unit_that_fits() {
    assert_eq!(TransferUnits::scale(0), (TransferUnits::Bytes, 0));
    assert_eq!(
        TransferUnits::scale(u64::from(u32::MAX)),
        (TransferUnits::Bytes, u32::MAX)
    );
    assert_eq!(
        TransferUnits::scale(1 << 32),
        (TransferUnits::Kibibytes, 1 << 22)
    );
    assert_eq!(
        TransferUnits::scale(5 << 40),
        (TransferUnits::Mebibytes, 5 << 20)
    );
    assert_eq!(
        TransferUnits::scale(1 << 52),
        (TransferUnits::Gibibytes, 1 << 22)
    );
    let (units, count) = TransferUnits::scale(u64::MAX);
    assert_eq!(
        (units, count),
        (TransferUnits::Tebibytes, (u64::MAX >> 40) as u32)
    );
}

#[test]
fn operating_parameters_of_the_default_limits() {
    let p = OperatingParameters::from_limits(&Limits::default());
    #[rustfmt::skip]
    let want = [
        0x00, 0x00, 0x00, 0x2E, // AVAILABLE DATA 46 (40 + 6 codes)
        0x01, 0x00, 0x00, 0x00, // SNLID 1, reserved
        0x00, 0x10,             // MAXIMUM TARGET DESCRIPTOR COUNT 16
        0x00, 0x40,             // MAXIMUM SEGMENT DESCRIPTOR COUNT 64
        0x00, 0x00, 0x09, 0x00, // MAXIMUM DESCRIPTOR LIST LENGTH 2304
        0x00, 0x00, 0x00, 0x00, // MAXIMUM SEGMENT LENGTH: no limit
        0x00, 0x01, 0x00, 0x00, // MAXIMUM INLINE DATA LENGTH 64 KiB
        0x00, 0x00, 0x00, 0x00, // HELD DATA LIMIT 0
        0x00, 0x10, 0x00, 0x00, // MAXIMUM STREAM DEVICE TRANSFER SIZE 1 MiB
        0x00, 0x00,             // reserved
        0x00, 0x01,             // TOTAL CONCURRENT COPIES 1
        0x01,                   // MAXIMUM CONCURRENT COPIES 1
        0x00, 0x00, 0x00,       // DATA SEGMENT, INLINE DATA, HELD DATA GRANULARITY (log2)
        0x00, 0x00, 0x00,       // reserved
        0x06,                   // IMPLEMENTED DESCRIPTOR LIST LENGTH 6
        0x00, 0x01, 0x02,       // block→stream, stream→block, block→block
        0x04, 0x05,             // inline→stream, embedded→stream
        0xE4,                   // identification
    ];
    let got = operating_parameters(&p, 1024);
    assert_eq!(got, want);

    // What libiscsi reads (it refuses AVAILABLE DATA < 40).
    let u16_at = |i: usize| u16::from_be_bytes([got[i], got[i + 1]]);
    let u32_at = |i: usize| u32::from_be_bytes(got[i..i + 4].try_into().unwrap());
    assert!(u32_at(0) >= 40);
    assert_eq!(u32_at(0) as usize + 4, got.len());
    assert_eq!((u16_at(8), u16_at(10)), (16, 64));
    assert_eq!(
        &got[44..44 + usize::from(got[43])],
        [0x00, 0x01, 0x02, 0x04, 0x05, 0xE4]
    );
}

#[test]
fn operating_parameters_list_fc_names_when_implemented() {
    let limits = Limits {
        fc_n_port_names: true,
        ..Limits::default()
    };
    let p = OperatingParameters {
        total_concurrent_copies: 0x0102,
        max_concurrent_copies: 8,
        ..OperatingParameters::from_limits(&limits)
    };
    let got = operating_parameters(&p, 1024);
    assert_eq!(got[..4], 47u32.to_be_bytes());
    assert_eq!(got[34..37], [0x01, 0x02, 8]);
    assert_eq!(got[43..], [7, 0x00, 0x01, 0x02, 0x04, 0x05, 0xE0, 0xE4]);
    // LIO's short answer: 54 bytes asked, the whole 51 given.
    assert_eq!(operating_parameters(&p, 54).len(), 51);
    assert_eq!(operating_parameters(&p, 40).len(), 40);
}

#[test]
fn failed_segment_details_bytes() {
    assert_eq!(failed_segment_details(None, 1024), [0, 0, 0, 0]);
    assert_eq!(failed_segment_details(None, 2), [0, 0]);
    let sense = vec![0x70, 0x00, 0x0A, 0, 0, 0, 0, 0x0A, 0, 0, 0, 0, 0x0D, 0x02];
    let d = FailedSegmentDetails {
        scsi_status: 0x02,
        sense: sense.clone(),
    };
    let got = failed_segment_details(Some(&d), 1024);
    assert_eq!(got.len(), 60 + sense.len());
    assert_eq!(got[..4], (56 + sense.len() as u32).to_be_bytes()); // AVAILABLE DATA
    assert!(got[4..56].iter().all(|&b| b == 0)); // reserved
    assert_eq!(got[56..58], [0x02, 0x00]); // COPY COMMAND STATUS: CHECK CONDITION, reserved
    assert_eq!(got[58..60], [0x00, 14]); // SENSE DATA LENGTH
    assert_eq!(got[60..], sense);
}

proptest! {
    /// Any allocation length gives a prefix of the whole answer, whose AVAILABLE DATA counts
    /// the bytes after it.
    #[test]
    fn answers_are_cut_to_the_allocation_length(
        alloc in prop_oneof![0u32..80, any::<u32>()],
        codes in proptest::collection::vec(any::<u8>(), 0..300),
        sense in proptest::collection::vec(any::<u8>(), 0..300),
        count in any::<u64>(),
    ) {
        let (units, transfer_count) = TransferUnits::scale(count);
        let status = CopyStatus {
            status: CopyManagerStatus::InProgress,
            held_data_discarded: false,
            segments_processed: 0,
            units,
            transfer_count,
        };
        let params = OperatingParameters {
            implemented: codes,
            ..OperatingParameters::from_limits(&Limits::default())
        };
        let details = FailedSegmentDetails { scsi_status: 2, sense };
        let answers = [
            (copy_status(&status, u32::MAX), copy_status(&status, alloc)),
            (
                operating_parameters(&params, u32::MAX),
                operating_parameters(&params, alloc),
            ),
            (
                failed_segment_details(Some(&details), u32::MAX),
                failed_segment_details(Some(&details), alloc),
            ),
        ];
        for (whole, cut) in answers {
            let available = u32::from_be_bytes(whole[..4].try_into().unwrap());
            prop_assert_eq!(available as usize + 4, whole.len());
            prop_assert_eq!(cut.len(), whole.len().min(alloc as usize));
            prop_assert!(whole.starts_with(&cut));
        }
    }
}
