//! The copy manager through `Disk::execute`: lists written byte by byte from the published
//! layouts (SPC-4 LID1 and Legato), copies checked byte for byte, the sense data of every
//! refusal, list identifiers and held results, and what the manager reports about itself.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::device::{BlockDevice, Checked, FaultDevice, MemoryDevice, OpMask};
use crate::scsi::{Abort, Disk, Nexus, Status};
use crate::snapshot::engine::Engine;
use crate::xcopy::params::Limits;
use crate::xcopy::testing::*;

const COPY_STATUS: u8 = 0x00;
const OPERATING_PARAMETERS: u8 = 0x03;
const FAILED_SEGMENT_DETAILS: u8 = 0x04;
/// Where the first target descriptor and, after `n` targets, the first segment start.
const FIRST_TARGET: u16 = 16;
fn first_segment(targets: u16) -> u16 {
    16 + 32 * targets
}

#[test]
fn an_spc_list_copies_within_the_unit_that_received_it() {
    let rig = Rig::memory(1);
    let d = &rig.disks[0];
    let data = pattern(64 << 10, 1);
    put(d, 100, &data);
    #[rustfmt::skip]
    let list = [
        0x05, 0x10, 0x00, 0x00, // LIST IDENTIFIER 5, LIST ID USAGE 10b; no target descriptors
        0x00, 0x00, 0x00, 0x00, // reserved
        0x00, 0x00, 0x00, 0x1C, // SEGMENT DESCRIPTOR LIST LENGTH 28
        0x00, 0x00, 0x00, 0x00, // INLINE DATA LENGTH 0
        0x02, 0x00, 0x00, 0x18, // block→block, DC 0, CAT 0; DESCRIPTOR LENGTH 24
        0xFF, 0xFF, 0xFF, 0xFF, // source and destination: the unit that received the command
        0x00, 0x00, 0x00, 0x80, // reserved; BLOCK DEVICE NUMBER OF BLOCKS 128
        0, 0, 0, 0, 0, 0, 0, 100,       // SOURCE BLOCK DEVICE LOGICAL BLOCK ADDRESS 100
        0, 0, 0, 0, 0, 0, 0x10, 0x00,   // DESTINATION BLOCK DEVICE LOGICAL BLOCK ADDRESS 4096
    ];
    assert_eq!(xcopy(d, &list).status, Status::Good);
    assert_eq!(get(d, 4096, data.len()), data);
    assert_eq!(get(d, 4096 + 128, 512), [0u8; 512], "one block too far");
    assert_eq!(get(d, 4095, 512), [0u8; 512], "one block too early");
}

#[test]
fn units_named_by_their_naa_designators_copy_to_each_other() {
    let rig = Rig::memory(3);
    let (a, b) = (&rig.disks[0], &rig.disks[1]);
    let data = pattern(3 << 20, 2);
    put(b, 8, &data);
    #[rustfmt::skip]
    let mut target = [
        0xE4, 0x00, 0x00, 0x00, // identification; LU ID TYPE 0, NUL 0, block device; port 0
        0x01, 0x03, 0x00, 0x08, // binary; associated with the LU, NAA; DESIGNATOR LENGTH 8
        0, 0, 0, 0, 0, 0, 0, 0, // the designator (below)
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // rest of the designator field
        0x00, 0x00, 0x02, 0x00, // PAD 0; DISK BLOCK LENGTH 512
    ];
    target[8..16].copy_from_slice(&rig.naa(1));
    let blocks = (data.len() / 512) as u16;
    // Received by unit 0: from unit 1 (descriptor 0) to itself, then back to unit 1 further on.
    let list = spc_list(
        1,
        0b10,
        &[target],
        &[
            b2b(0, 0xFFFF, blocks, 8, 16, false),
            b2b(0xFFFF, 0, blocks, 16, 2000, false),
        ],
    );
    assert_eq!(xcopy(a, &list).status, Status::Good);
    assert_eq!(get(a, 16, data.len()), data);
    assert_eq!(get(b, 2000, data.len()), data);
    assert_eq!(
        get(&rig.disks[2], 16, 4096),
        [0u8; 4096],
        "unit 2 untouched"
    );
    assert_eq!(rig.units.holds.load(Ordering::SeqCst), 0, "holds released");
}

#[test]
fn block_lengths_and_the_dc_bit_count_the_blocks() {
    // Unit 0 has 512-byte blocks, unit 1 4096-byte blocks.
    let rig = Rig::over(
        vec![
            Arc::new(MemoryDevice::new(SIZE)),
            Arc::new(Shaped::new(SIZE, 4096, 1 << 20)),
        ],
        Limits::default(),
    );
    let (small, big) = (&rig.disks[0], &rig.disks[1]);
    assert_eq!((small.block_size(), big.block_size()), (512, 4096));
    let data = pattern(8192, 3);
    put(small, 0, &data);
    let stated = naa_target(rig.naa(1), 0, 4096);
    let own = naa_target(rig.naa(1), 0, 0);

    // DC 0: 16 source blocks; DC 1: 2 destination blocks; both 8 KiB.
    let by_source = spc_list(1, 0b10, &[stated], &[b2b(0xFFFF, 0, 16, 0, 10, false)]);
    assert_eq!(xcopy(small, &by_source).status, Status::Good);
    assert_eq!(get(big, 10, 8192), data);
    let by_destination = spc_list(2, 0b10, &[own], &[b2b(0xFFFF, 0, 2, 0, 20, true)]);
    assert_eq!(xcopy(small, &by_destination).status, Status::Good);
    assert_eq!(get(big, 20, 8192), data);

    // 3 source blocks are not whole destination blocks.
    let inexact = spc_list(3, 0b10, &[own], &[b2b(0xFFFF, 0, 3, 0, 30, false)]);
    assert_eq!(
        sense_of(&xcopy(small, &inexact)),
        ((COPY_ABORTED, 0x26, 0x0A), Some(first_segment(1) + 10))
    );
    // A DISK BLOCK LENGTH that is not the unit's.
    let wrong = spc_list(
        4,
        0b10,
        &[naa_target(rig.naa(1), 0, 512)],
        &[b2b(0xFFFF, 0, 16, 0, 40, false)],
    );
    assert_eq!(
        sense_of(&xcopy(small, &wrong)),
        ((COPY_ABORTED, 0x0D, 0x03), Some(FIRST_TARGET + 29))
    );
    assert_eq!(
        get(big, 30, 4096 * 20),
        vec![0u8; 4096 * 20],
        "nothing written"
    );
}

/// A list of one target descriptor and one segment, and the COPY ABORTED sense it gets.
struct Refusal {
    what: &'static str,
    target: [u8; 32],
    segment: Vec<u8>,
    /// ASC, ASCQ.
    asc: (u8, u8),
    /// FIELD POINTER.
    pointer: u16,
}

impl Refusal {
    fn new(what: &'static str, target: [u8; 32], segment: Vec<u8>) -> Refusal {
        Refusal {
            what,
            target,
            segment,
            asc: (0, 0),
            pointer: 0,
        }
    }

    fn is(self, asc: (u8, u8), pointer: u16) -> Refusal {
        Refusal {
            asc,
            pointer,
            ..self
        }
    }
}

#[test]
fn targets_that_cannot_be_reached_or_written_abort_before_any_data_moves() {
    let rig = Rig::over(
        vec![
            Arc::new(MemoryDevice::new(SIZE)),
            Arc::new(Checked::new(Arc::new(MemoryDevice::new(SIZE)), true)),
        ],
        Limits::default(),
    );
    let d = &rig.disks[0];
    let blocks = (SIZE / 512) as u16 / 4;
    let seg = first_segment(1);
    let none = |b| naa_target([b; 8], 0, 512);
    let unit = |u, pdt, len| naa_target(rig.naa(u), pdt, len);
    let cases = [
        Refusal::new(
            "designator of no unit",
            none(0x30),
            b2b(0, 0xFFFF, 8, 0, 0, false),
        )
        .is((0x08, 0x04), FIRST_TARGET),
        Refusal::new(
            "source beyond the end",
            unit(0, 0, 0),
            b2b(0, 0xFFFF, blocks, 8184, 0, false),
        )
        .is((0x0D, 0x02), seg + 12),
        Refusal::new(
            "destination beyond the end",
            unit(0, 0, 0),
            b2b(0xFFFF, 0, 2048, 0, 8191, false),
        )
        .is((0x0D, 0x02), seg + 20),
        Refusal::new(
            "an LBA that wraps",
            unit(0, 0, 0),
            b2b(0xFFFF, 0, 1, 0, u64::MAX, false),
        )
        .is((0x0D, 0x02), seg + 20),
        Refusal::new(
            "read-only destination",
            unit(1, 0, 512),
            b2b(0xFFFF, 0, 8, 0, 0, false),
        )
        .is((0x27, 0x00), seg + 6),
        Refusal::new(
            "a stream naming a disk",
            unit(0, 1, 0),
            block_stream(0x00, 0xFFFF, 0, 8, 0),
        )
        .is((0x0D, 0x03), FIRST_TARGET + 1),
        Refusal::new(
            "an unknown stream",
            naa_target([0x31; 8], 1, 0),
            block_stream(0x01, 0, 0xFFFF, 8, 0),
        )
        .is((0x08, 0x04), FIRST_TARGET),
    ];
    for c in cases {
        let (what, sense) = (c.what, (COPY_ABORTED, c.asc.0, c.asc.1));
        let list = spc_list(1, 0, &[c.target], &[c.segment]);
        assert_eq!(
            sense_of(&xcopy(d, &list)),
            (sense, Some(c.pointer)),
            "{what}"
        );
        let details = good(rcr(d, FAILED_SEGMENT_DETAILS, 1, 1024));
        assert_eq!(details[56], 0x02, "{what}: CHECK CONDITION held");
        assert_eq!(
            fixed_sense(&details[60..]),
            (sense, Some(c.pointer)),
            "{what}"
        );
        assert_eq!(details[60 + 8..60 + 12], [0, 0, 0, 0], "{what}: segment 0");
        let status = good(rcr(d, COPY_STATUS, 1, 12));
        assert_eq!((status[4], &status[5..7]), (0x02, &[0u8, 0][..]), "{what}");
    }
    assert_eq!(get(d, 8191, 512), [0u8; 512], "no partial copy");
    assert_eq!(rig.units.holds.load(Ordering::SeqCst), 0, "holds released");
}

#[test]
fn a_device_error_aborts_the_list_at_its_segment() {
    let (faulty, faults) = FaultDevice::new(Arc::new(MemoryDevice::new(SIZE)));
    let rig = Rig::over(vec![Arc::new(faulty)], Limits::default());
    let d = &rig.disks[0];
    // The second segment reads from 2 MiB on; its second piece fails.
    faults.fail_range(OpMask::READ, (2 << 20) + (1 << 20) + 4096, 512);
    let list = spc_list(
        9,
        0,
        &[],
        &[
            b2b(0xFFFF, 0xFFFF, 256, 0, 1024, false),
            b2b(0xFFFF, 0xFFFF, 4096, 4096, 0, false),
        ],
    );
    let at = first_segment(0) + 28 + 4;
    assert_eq!(
        sense_of(&xcopy(d, &list)),
        ((COPY_ABORTED, 0x0D, 0x01), Some(at))
    );
    let status = good(rcr(d, COPY_STATUS, 9, 12));
    #[rustfmt::skip]
    assert_eq!(status, [
        0x00, 0x00, 0x00, 0x08, // AVAILABLE DATA
        0x02,                   // completed with error
        0x00, 0x01,             // one segment processed
        0x00,                   // bytes
        0x00, 0x12, 0x00, 0x00, // 128 KiB of segment 0, 1 MiB of segment 1
    ]);
    let details = good(rcr(d, FAILED_SEGMENT_DETAILS, 9, 1024));
    assert_eq!(
        u32::from_be_bytes(details[0..4].try_into().unwrap()),
        56 + 18
    );
    assert_eq!(
        details[60 + 8..60 + 12],
        [0, 0, 0, 1],
        "COMMAND-SPECIFIC INFORMATION: segment 1"
    );
    assert_eq!(
        fixed_sense(&details[60..]),
        ((COPY_ABORTED, 0x0D, 0x01), Some(at))
    );
    assert_eq!(
        sense_of(&rcr(d, COPY_STATUS, 9, 12)).0,
        INVALID_FIELD_IN_CDB,
        "all reported"
    );
}

#[test]
fn parameter_list_errors_keep_their_sense_and_hold_nothing() {
    let rig = Rig::memory(1);
    let d = &rig.disks[0];
    let one = [naa_target(rig.naa(0), 0, 512)];
    let seg = || b2b(0, 0, 8, 0, 8, false);
    let mut truncated = spc_list(1, 0, &one, &[seg()]);
    truncated.pop();
    let too_many = spc_list(1, 0, &[one[0]; 17], &[seg()]);
    let past_the_list = spc_list(1, 0, &one, &[b2b(0, 1, 8, 0, 8, false)]);
    let mut stream_to_stream = spc_list(1, 0, &one, &[seg()]);
    stream_to_stream[first_segment(1) as usize] = 0x03;
    let cases = [
        (truncated, (ILLEGAL_REQUEST, 0x1A, 0x00), None),
        (too_many, (ILLEGAL_REQUEST, 0x26, 0x06), Some(2)),
        (
            past_the_list,
            (COPY_ABORTED, 0x08, 0x04),
            Some(first_segment(1) + 6),
        ),
        (
            stream_to_stream,
            (ILLEGAL_REQUEST, 0x26, 0x09),
            Some(first_segment(1)),
        ),
    ];
    for (list, sense, pointer) in cases {
        assert_eq!(sense_of(&xcopy(d, &list)), (sense, pointer));
        assert_eq!(
            sense_of(&rcr(d, COPY_STATUS, 1, 12)).0,
            INVALID_FIELD_IN_CDB
        );
    }
}

#[test]
fn a_legato_list_needs_fibre_channel_names() {
    #[rustfmt::skip]
    let list = [
        0x01, 0x00, 0x00, 0x20, // LIST IDENTIFIER 1, hold; TARGET DESCRIPTOR LIST LENGTH 32
        0x00, 0x00, 0x00, 0x00, // reserved
        0x00, 0x00, 0x00, 0x1C, // SEGMENT DESCRIPTOR LIST LENGTH 28 (no inline data length)
        0xE0, 0x00, 0x00, 0x00, // Fibre Channel N_Port_Name; LU ID TYPE 00b (LUN); block device
        0x20, 0x00, 0x00, 0x25, 0xB5, 0x00, 0x00, 0x01, // N_PORT_NAME
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // LU IDENTIFIER: LUN 0
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // reserved
        0x00, 0x00, 0x02, 0x00, // DISK BLOCK LENGTH 512
        0x02, 0x00, 0x00, 0x18, // block→block
        0x00, 0x00, 0xFF, 0xFF, // from the FC unit to the receiving unit
        0x00, 0x00, 0x00, 0x08, // 8 blocks
        0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0,
    ];
    // Without FC names (the default) the descriptor type is not implemented...
    let rig = Rig::memory(1);
    assert_eq!(
        sense_of(&xcopy(&rig.disks[0], &list)),
        ((ILLEGAL_REQUEST, 0x26, 0x07), Some(12))
    );
    // ...and with them, nothing answers to that name yet.
    let fc = Limits {
        fc_n_port_names: true,
        ..Limits::default()
    };
    let rig = Rig::over(vec![Arc::new(MemoryDevice::new(SIZE))], fc);
    assert_eq!(
        sense_of(&xcopy(&rig.disks[0], &list)),
        ((COPY_ABORTED, 0x08, 0x04), Some(12))
    );
    assert_eq!(good(rcr(&rig.disks[0], COPY_STATUS, 1, 12))[4], 0x02);
}

#[test]
fn results_are_held_as_list_id_usage_says() {
    let rig = Rig::memory(1);
    let d = &rig.disks[0];
    let copy = |id, usage| spc_list(id, usage, &[], &[b2b(0xFFFF, 0xFFFF, 16, 0, 64, false)]);

    // 00b: held until COPY STATUS reports it (FAILED SEGMENT DETAILS has none to give).
    assert_eq!(xcopy(d, &copy(3, 0b00)).status, Status::Good);
    assert_eq!(good(rcr(d, FAILED_SEGMENT_DETAILS, 3, 1024)), [0, 0, 0, 0]);
    assert_eq!(good(rcr(d, COPY_STATUS, 3, 5)).len(), 5, "a cut answer...");
    #[rustfmt::skip]
    assert_eq!(good(rcr(d, COPY_STATUS, 3, 12)), [
        0, 0, 0, 8, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x20, 0x00, // completed, 1 segment, 8 KiB
    ], "...does not count as reported");
    let unknown = sense_of(&rcr(d, COPY_STATUS, 3, 12));
    assert_eq!(unknown, (INVALID_FIELD_IN_CDB, Some(2)));
    // 10b and 11b: nothing held.
    assert_eq!(xcopy(d, &copy(4, 0b10)).status, Status::Good);
    assert_eq!(
        sense_of(&rcr(d, COPY_STATUS, 4, 12)).0,
        INVALID_FIELD_IN_CDB
    );
    assert_eq!(xcopy(d, &copy(0, 0b11)).status, Status::Good);
    assert_eq!(
        sense_of(&rcr(d, COPY_STATUS, 0, 12)).0,
        INVALID_FIELD_IN_CDB
    );
    // 01b is reserved; 11b wants LIST IDENTIFIER 0.
    assert_eq!(
        sense_of(&xcopy(d, &copy(5, 0b01))),
        ((ILLEGAL_REQUEST, 0x26, 0x00), Some(1))
    );
    assert_eq!(
        xcopy(d, &copy(5, 0b01)).sense.unwrap()[15],
        0x80 | 0x08 | 4,
        "bit 4"
    );
    assert_eq!(
        sense_of(&xcopy(d, &copy(5, 0b11))),
        ((ILLEGAL_REQUEST, 0x26, 0x00), Some(0))
    );
    // Held results belong to the unit's nexuses: they go when the last one ends.
    let (first, second) = (rig.managers[0].nexus(), rig.managers[0].nexus());
    assert_eq!(xcopy(d, &copy(6, 0b00)).status, Status::Good);
    drop(first);
    assert_eq!(
        good(rcr(d, FAILED_SEGMENT_DETAILS, 6, 1024)),
        [0, 0, 0, 0],
        "still held"
    );
    drop(second);
    assert_eq!(
        sense_of(&rcr(d, COPY_STATUS, 6, 12)).0,
        INVALID_FIELD_IN_CDB
    );
}

/// Unit 0 over memory, unit 1 over a device whose reads wait at the gate.
fn gated_rig() -> (Rig, Arc<Gate>) {
    let gate = Arc::new(Gate::default());
    let rig = Rig::over(
        vec![
            Arc::new(MemoryDevice::new(SIZE)),
            Arc::new(Shaped::new(SIZE, 512, 1 << 20).gated(gate.clone())),
        ],
        Limits::default(),
    );
    (rig, gate)
}

#[test]
fn a_running_list_keeps_its_identifier_and_its_targets() {
    let (rig, gate) = gated_rig();
    let d = rig.disks[0].clone();
    let from_gated = spc_list(
        7,
        0,
        &[naa_target(rig.naa(1), 0, 0)],
        &[b2b(0, 0xFFFF, 64, 0, 0, false)],
    );
    let list = from_gated.clone();
    let copying = std::thread::spawn(move || xcopy(&d, &list));
    gate.wait_for_reader();

    let d = &rig.disks[0];
    assert_eq!(
        rig.units.holds.load(Ordering::SeqCst),
        1,
        "the source is held"
    );
    let status = good(rcr(d, COPY_STATUS, 7, 12));
    assert_eq!(
        (status[4], status[6]),
        (0x00, 0),
        "in progress, no segment done"
    );
    assert_eq!(good(rcr(d, FAILED_SEGMENT_DETAILS, 7, 1024)), [0, 0, 0, 0]);
    assert_eq!(
        sense_of(&xcopy(d, &from_gated)),
        ((ILLEGAL_REQUEST, 0x00, 0x16), None),
        "OPERATION IN PROGRESS"
    );
    let other = spc_list(8, 0, &[], &[b2b(0xFFFF, 0xFFFF, 1, 0, 1, false)]);
    assert_eq!(
        xcopy(d, &other).status,
        Status::Good,
        "another identifier runs"
    );

    gate.open();
    assert_eq!(copying.join().unwrap().status, Status::Good);
    assert_eq!(rig.units.holds.load(Ordering::SeqCst), 0, "released");
    assert_eq!(good(rcr(d, COPY_STATUS, 7, 12))[4], 0x01, "completed");
}

#[test]
fn an_aborted_list_stops_within_a_piece_and_its_results_say_so() {
    let (rig, gate) = gated_rig();
    let data = pattern(3 << 20, 4);
    put(&rig.disks[1], 0, &data);
    // 3 MiB from the gated unit to unit 0: three pieces, each read through the gate.
    let list = spc_list(
        6,
        0,
        &[naa_target(rig.naa(1), 0, 0)],
        &[b2b(0, 0xFFFF, 6144, 0, 0, false)],
    );
    let abort = Arc::new(Abort::new());
    let (d, aborted) = (rig.disks[0].clone(), abort.clone());
    let copying = std::thread::spawn(move || xcopy_task(&d, &Nexus::default(), &aborted, &list));
    gate.wait_for_reader();
    abort.set();
    gate.open();
    let d = &rig.disks[0];
    assert_eq!(
        sense_of(&copying.join().unwrap()),
        ((ABORTED_COMMAND, 0x00, 0x00), None)
    );
    assert_eq!(get(d, 0, 1 << 20), data[..1 << 20], "the piece under way");
    assert_eq!(
        get(d, 2048, 2 << 20),
        vec![0u8; 2 << 20],
        "nothing after it"
    );
    let status = good(rcr(d, COPY_STATUS, 6, 12));
    assert_eq!(status[4], 0x02, "completed with error");
    assert_eq!(status[8..12], [0x00, 0x10, 0x00, 0x00], "1 MiB");
    let details = good(rcr(d, FAILED_SEGMENT_DETAILS, 6, 1024));
    assert_eq!(
        fixed_sense(&details[60..]),
        ((ABORTED_COMMAND, 0x00, 0x00), None)
    );
    assert_eq!(rig.units.holds.load(Ordering::SeqCst), 0, "released");
}

#[test]
fn overlapping_ranges_copy_as_through_a_buffer_in_pieces_the_device_takes() {
    let shaped = Arc::new(Shaped::new(SIZE, 512, 64 << 10));
    let rig = Rig::over(
        vec![shaped.clone() as Arc<dyn BlockDevice>],
        Limits::default(),
    );
    let d = &rig.disks[0];
    let data = pattern((5 << 20) / 2, 4);
    for (src, dst) in [(0u64, 1024u64), (1024, 0)] {
        put(d, src, &data);
        let blocks = (data.len() / 512) as u16;
        let list = spc_list(
            1,
            0b10,
            &[],
            &[b2b(0xFFFF, 0xFFFF, blocks, src, dst, false)],
        );
        assert_eq!(xcopy(d, &list).status, Status::Good, "{src} -> {dst}");
        assert_eq!(get(d, dst, data.len()), data, "{src} -> {dst}");
    }
    assert_eq!(shaped.largest.load(Ordering::SeqCst), 64 << 10);
}

#[test]
fn copies_write_through_the_units_whole_stack() {
    let engine = Arc::new(Engine::new(Arc::new(MemoryDevice::new(SIZE))));
    let rig = Rig::over(
        vec![engine.clone() as Arc<dyn BlockDevice>],
        Limits::default(),
    );
    let d: &Disk = &rig.disks[0];
    let list = spc_list(1, 0b10, &[], &[b2b(0xFFFF, 0xFFFF, 128, 0, 2048, false)]);
    assert_eq!(xcopy(d, &list).status, Status::Good);
    // The copy-before-write layer saw the write (its change map has the 64 KiB at 1 MiB),
    // and nothing else.
    let changed = engine.cbt().snapshot().changed;
    assert_eq!(changed.iter().collect::<Vec<_>>(), [16]);
}

#[test]
fn operating_parameters_and_the_third_party_copy_page() {
    let rig = Rig::memory(1);
    let d = &rig.disks[0];
    let p = good(rcr(d, OPERATING_PARAMETERS, 0, 1024));
    assert_eq!(
        (&p[34..36], p[36]),
        (&[0u8, 16][..], 16),
        "16 lists at once"
    );
    let page = good(d.execute(&[0x12, 0x01, 0x8F, 0x04, 0x00, 0x00], 1024, &[]));
    #[rustfmt::skip]
    let want: &[u8] = &[
        0x00, 0x8F, 0x00, 0x68, // direct access, page 8Fh, PAGE LENGTH 104
        0x00, 0x01, 0x00, 0x0C, // Supported Commands, 12 bytes
        0x08,                   // COMMANDS SUPPORTED LIST LENGTH
        0x83, 0x01, 0x00,       // EXTENDED COPY: LID1
        0x84, 0x03, 0x00, 0x03, 0x04, // RECEIVE COPY RESULTS: 00h, 03h, 04h
        0x00, 0x00, 0x00,       // pad
        0x00, 0x04, 0x00, 0x1C, // Parameter Data, 28 bytes
        0x00, 0x00, 0x00, 0x00, // reserved
        0x00, 0x10, 0x00, 0x40, // 16 CSCD descriptors, 64 segment descriptors
        0x00, 0x00, 0x09, 0x00, // MAXIMUM DESCRIPTOR LIST LENGTH 2304
        0x00, 0x01, 0x00, 0x00, // MAXIMUM INLINE DATA LENGTH 64 KiB
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // reserved
        0x00, 0x08, 0x00, 0x08, // Supported Descriptors, 8 bytes
        0x06, 0x00, 0x01, 0x02, // 6 codes: 00h, 01h, 02h,
        0x04, 0x05, 0xE4,       // 04h, 05h, E4h
        0x00,                   // pad
        0x00, 0x0C, 0x00, 0x04, // Supported CSCD Descriptor IDs, 4 bytes
        0x00, 0x02, 0xFF, 0xFF, // one ID: FFFFh
        0x80, 0x01, 0x00, 0x20, // General Copy Operations, 32 bytes
        0x00, 0x00, 0x00, 0x10, // TOTAL CONCURRENT COPIES 16
        0x00, 0x00, 0x00, 0x10, // MAXIMUM IDENTIFIED CONCURRENT COPIES 16
        0x00, 0x00, 0x00, 0x00, // MAXIMUM SEGMENT LENGTH: no limit
        0x00, 0x00,             // granularities: bytes
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // reserved
    ];
    assert_eq!(page, want);
}

#[test]
fn an_empty_list_of_segments_completes() {
    let rig = Rig::memory(1);
    let d = &rig.disks[0];
    assert_eq!(xcopy(d, &spc_list(2, 0, &[], &[])).status, Status::Good);
    assert_eq!(
        good(rcr(d, COPY_STATUS, 2, 12)),
        [0, 0, 0, 8, 0x01, 0, 0, 0, 0, 0, 0, 0]
    );
}
