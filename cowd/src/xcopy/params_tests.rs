//! Tests of [`parse`] and [`encode`]: SPC-4, SPC-2 and Legato lists written out byte by byte
//! from the published layouts; the malformed lists libiscsi's ExtendedCopy tests send, with the
//! sense each expects; other refusals with their field pointers; and properties: valid lists
//! round-trip, and no input makes `parse` panic or answer a sense the standard does not name.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

use super::*;

/// An NAA IEEE Registered Extended designator (type 3, 16 bytes), as in VPD page 83h.
const NAA: [u8; 16] = [
    0x60, 0x01, 0x40, 0x50, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x0d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
];

/// An identification (E4h) target descriptor naming `NAA`, with `device` parameters in bytes
/// 28–31, as libiscsi's `populate_tgt_desc` writes it.
pub(super) fn ident_target(peripheral_type: u8, device: [u8; 4]) -> Vec<u8> {
    let mut d = vec![
        0xE4,            // 0: type code: identification descriptor
        peripheral_type, // 1: LU ID TYPE 00b, NUL 0, PERIPHERAL DEVICE TYPE
        0x00,
        0x00, // 2-3: RELATIVE INITIATOR PORT IDENTIFIER
        0x01, // 4: CODE SET binary
        0x03, // 5: ASSOCIATION 0 (LU), DESIGNATOR TYPE 3 (NAA)
        0x00, // 6: reserved
        0x10, // 7: DESIGNATOR LENGTH 16
    ];
    d.extend_from_slice(&NAA); // 8-23: DESIGNATOR
    d.extend_from_slice(&[0; 4]); // 24-27: unused designator bytes
    d.extend_from_slice(&device); // 28-31: device type specific parameters
    d
}

/// A disk with 512-byte blocks: PAD 0, DISK BLOCK LENGTH 000200h.
pub(super) const DISK_512: [u8; 4] = [0x00, 0x00, 0x02, 0x00];

/// A block→block (02h) segment descriptor, as libiscsi's `populate_seg_desc_b2b` writes it.
pub(super) fn b2b(src: u16, dst: u16, blocks: u16, src_lba: u64, dst_lba: u64) -> Vec<u8> {
    let mut d = vec![
        0x02, // 0: type code: block→block
        0x00, // 1: DC 0, CAT 0
        0x00, 0x18, // 2-3: DESCRIPTOR LENGTH 24
    ];
    d.extend_from_slice(&src.to_be_bytes()); // 4-5: SOURCE TARGET DESCRIPTOR INDEX
    d.extend_from_slice(&dst.to_be_bytes()); // 6-7: DESTINATION TARGET DESCRIPTOR INDEX
    d.extend_from_slice(&[0, 0]); // 8-9: reserved
    d.extend_from_slice(&blocks.to_be_bytes()); // 10-11: BLOCK DEVICE NUMBER OF BLOCKS
    d.extend_from_slice(&src_lba.to_be_bytes()); // 12-19: SOURCE LBA
    d.extend_from_slice(&dst_lba.to_be_bytes()); // 20-27: DESTINATION LBA
    d
}

/// An SPC list as libiscsi's `populate_param_header` heads it: LIST ID USAGE 00b, priority 0.
pub(super) fn spc_list<T: AsRef<[u8]>, S: AsRef<[u8]>>(
    list_id: u8,
    targets: &[T],
    segments: &[S],
    inline: &[u8],
) -> Vec<u8> {
    let t: Vec<u8> = targets.iter().flat_map(|d| d.as_ref().to_vec()).collect();
    let s: Vec<u8> = segments.iter().flat_map(|d| d.as_ref().to_vec()).collect();
    let mut l = vec![list_id, 0x00];
    l.extend_from_slice(&(t.len() as u16).to_be_bytes());
    l.extend_from_slice(&[0; 4]);
    l.extend_from_slice(&(s.len() as u32).to_be_bytes());
    l.extend_from_slice(&(inline.len() as u32).to_be_bytes());
    [l, t, s, inline.to_vec()].concat()
}

fn naa_disk() -> TargetDescriptor {
    TargetDescriptor::Identification {
        relative_initiator_port: 0,
        code_set: 1,
        association: 0,
        designator_type: 3,
        designator: NAA.to_vec(),
        device: DeviceParams::Block {
            block_len: 512,
            pad: false,
        },
    }
}

fn fc() -> Limits {
    Limits {
        fc_n_port_names: true,
        ..Limits::default()
    }
}

#[track_caller]
pub(super) fn assert_sense(r: Result<CopyList, ParamError>, want: (u8, u8, u8)) -> ParamError {
    let e = r.expect_err("the list must be refused");
    assert_eq!(e.sense(), want, "{e}");
    e
}

pub(super) const LIST_LENGTH: (u8, u8, u8) = (0x05, 0x1A, 0x00);
pub(super) const INVALID_FIELD: (u8, u8, u8) = (0x05, 0x26, 0x00);

#[test]
fn spc4_block_to_block_as_libiscsi_sends_it() {
    #[rustfmt::skip]
    let list = [
        // Header
        0x01,                   // 0: LIST IDENTIFIER 1
        0x10,                   // 1: STR 0, LIST ID USAGE 10b (discard), PRIORITY 0
        0x00, 0x20,             // 2-3: TARGET DESCRIPTOR LIST LENGTH 32
        0x00, 0x00, 0x00, 0x00, // 4-7: reserved
        0x00, 0x00, 0x00, 0x1C, // 8-11: SEGMENT DESCRIPTOR LIST LENGTH 28
        0x00, 0x00, 0x00, 0x00, // 12-15: INLINE DATA LENGTH 0
        // Target descriptor 0 (bytes 16-47)
        0xE4,                   // type code: identification descriptor
        0x00,                   // LU ID TYPE 00b, NUL 0, PERIPHERAL DEVICE TYPE 00h
        0x00, 0x00,             // RELATIVE INITIATOR PORT IDENTIFIER
        0x01,                   // CODE SET: binary
        0x03,                   // ASSOCIATION 00b, DESIGNATOR TYPE 3h (NAA)
        0x00,                   // reserved
        0x10,                   // DESIGNATOR LENGTH 16
        0x60, 0x01, 0x40, 0x50, 0x00, 0x00, 0x00, 0x00, // DESIGNATOR
        0xc0, 0x0d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x00, 0x00, 0x00, 0x00, // rest of the 20-byte designator field
        0x00,                   // PAD 0
        0x00, 0x02, 0x00,       // DISK BLOCK LENGTH 512
        // Segment descriptor 0 (bytes 48-75)
        0x02,                   // type code: block→block
        0x00,                   // DC 0, CAT 0
        0x00, 0x18,             // DESCRIPTOR LENGTH 24
        0x00, 0x00,             // SOURCE TARGET DESCRIPTOR INDEX 0
        0x00, 0x00,             // DESTINATION TARGET DESCRIPTOR INDEX 0
        0x00, 0x00,             // reserved
        0x08, 0x00,             // BLOCK DEVICE NUMBER OF BLOCKS 2048
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // SOURCE LBA 0
        0x00, 0x00, 0x00, 0x00, 0x00, 0x0F, 0xF8, 0x00, // DESTINATION LBA 0FF800h
    ];
    let want = CopyList {
        format: Format::Spc,
        list_id: 1,
        str_bit: false,
        list_id_usage: 0b10,
        priority: 0,
        targets: vec![naa_disk()],
        segments: vec![Segment::BlockToBlock {
            src: 0,
            dst: 0,
            blocks: 2048,
            src_lba: 0,
            dst_lba: 0xF_F800,
            dc: false,
            cat: false,
        }],
        inline: vec![],
    };
    let got = parse(&list, &Limits::default()).unwrap();
    assert_eq!(got, want);
    assert!(got.nrcr());
    assert_eq!(encode(&got), list);
}

#[test]
fn spc2_disk_to_tape_and_back() {
    #[rustfmt::skip]
    let list = [
        // Header
        0x2A,                   // 0: LIST IDENTIFIER
        0x31,                   // 1: STR 1, NRCR 1 (bit 4), PRIORITY 1
        0x00, 0x40,             // 2-3: TARGET DESCRIPTOR LIST LENGTH 64
        0x00, 0x00, 0x00, 0x00, // 4-7: reserved
        0x00, 0x00, 0x00, 0x30, // 8-11: SEGMENT DESCRIPTOR LIST LENGTH 48
        0x00, 0x00, 0x00, 0x00, // 12-15: INLINE DATA LENGTH 0
        // Target descriptor 0 (16-47): the disk
        0xE4, 0x00, 0x00, 0x01, // E4h, disk (00h), RELATIVE INITIATOR PORT 1
        0x01, 0x03, 0x00, 0x10, // binary, LU/NAA, reserved, 16 bytes
        0x60, 0x01, 0x40, 0x50, 0x00, 0x00, 0x00, 0x00,
        0xc0, 0x0d, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
        0x00, 0x00, 0x00, 0x00,
        0x04, 0x00, 0x02, 0x00, // PAD 1, DISK BLOCK LENGTH 512
        // Target descriptor 1 (48-79): the tape
        0xE4, 0x01, 0x00, 0x00, // E4h, sequential access (01h)
        0x02, 0x01, 0x00, 0x08, // ASCII, LU/T10 vendor ID, reserved, 8 bytes
        b'C', b'O', b'W', b'D', b'T', b'A', b'P', b'E',
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00,
        0x01, 0x01, 0x00, 0x00, // FIXED 1, STREAM BLOCK LENGTH 64 KiB
        // Segment descriptor 0 (80-103): block→stream
        0x00, 0x00, 0x00, 0x14, // 00h, CAT 0, DESCRIPTOR LENGTH 20
        0x00, 0x00, 0x00, 0x01, // source 0, destination 1
        0x00,                   // reserved
        0x01, 0x00, 0x00,       // STREAM DEVICE TRANSFER LENGTH 64 KiB
        0x00, 0x00,             // reserved
        0x00, 0x80,             // BLOCK DEVICE NUMBER OF BLOCKS 128
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, // BLOCK DEVICE LBA 1000h
        // Segment descriptor 1 (104-127): stream→block
        0x01, 0x01, 0x00, 0x14, // 01h, CAT 1, DESCRIPTOR LENGTH 20
        0x00, 0x01, 0x00, 0x00, // source 1, destination 0
        0x00, 0x01, 0x00, 0x00, // reserved, STREAM DEVICE TRANSFER LENGTH 64 KiB
        0x00, 0x00, 0x00, 0x80, // reserved, 128 blocks
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, // LBA 2000h
    ];
    let got = parse(&list, &Limits::default()).unwrap();
    assert_eq!((got.list_id, got.str_bit, got.priority), (0x2A, true, 1));
    assert!(got.nrcr());
    assert_eq!(
        got.targets[0].device(),
        &DeviceParams::Block {
            block_len: 512,
            pad: true
        }
    );
    assert_eq!(
        got.targets[1],
        TargetDescriptor::Identification {
            relative_initiator_port: 0,
            code_set: 2,
            association: 0,
            designator_type: 1,
            designator: b"COWDTAPE".to_vec(),
            device: DeviceParams::Stream {
                fixed: true,
                pad: false,
                block_len: 64 << 10
            },
        }
    );
    let to_tape = Segment::BlockToStream {
        src: 0,
        dst: 1,
        transfer_len: 64 << 10,
        blocks: 128,
        lba: 0x1000,
        cat: false,
    };
    let from_tape = Segment::StreamToBlock {
        src: 1,
        dst: 0,
        transfer_len: 64 << 10,
        blocks: 128,
        lba: 0x2000,
        cat: true,
    };
    assert_eq!(got.segments, [to_tape, from_tape]);
    assert_eq!(encode(&got), list);
}

#[rustfmt::skip]
const LEGATO: [u8; 100] = [
    // Header: 12 bytes, no INLINE DATA LENGTH
    0x07,                   // 0: LIST IDENTIFIER
    0x00,                   // 1: flags
    0x00, 0x40,             // 2-3: TARGET DESCRIPTOR LIST LENGTH 64
    0x00, 0x00, 0x00, 0x00, // 4-7: reserved
    0x00, 0x00, 0x00, 0x18, // 8-11: SEGMENT DESCRIPTOR LIST LENGTH 24
    // Target descriptor 0 (12-43): FC disk
    0xE0,                   // type code: Fibre Channel N_Port_Name
    0x00,                   // LU ID TYPE 00b (LUN), NUL 0, disk
    0x00, 0x00,             // RELATIVE INITIATOR PORT IDENTIFIER
    0x50, 0x06, 0x01, 0x60, 0x3b, 0x20, 0x19, 0x0e, // N_PORT_NAME
    0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // LOGICAL UNIT IDENTIFIER: LUN 1
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // reserved
    0x00, 0x00, 0x02, 0x00, // PAD 0, DISK BLOCK LENGTH 512
    // Target descriptor 1 (44-75): FC tape
    0xE0, 0x01, 0x00, 0x00, // E0h, LUN, sequential access
    0x50, 0x01, 0x04, 0xf0, 0x00, 0xa1, 0xb2, 0xc3,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // LUN 0
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x80, 0x00, // FIXED 1, STREAM BLOCK LENGTH 32 KiB
    // Segment descriptor 0 (76-99): block→stream
    0x00, 0x00, 0x00, 0x14, // 00h, DESCRIPTOR LENGTH 20
    0x00, 0x00, 0x00, 0x01, // source 0, destination 1
    0x00, 0x00, 0x80, 0x00, // reserved, STREAM DEVICE TRANSFER LENGTH 32 KiB
    0x00, 0x00, 0x00, 0x40, // reserved, 64 blocks
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, // LBA 1000h
];

#[test]
fn legato_list_starts_its_targets_at_byte_12() {
    let got = parse(&LEGATO, &fc()).unwrap();
    assert_eq!(got.format, Format::Legato);
    assert_eq!(
        got.targets[0],
        TargetDescriptor::FcNPortName {
            relative_initiator_port: 0,
            name: [0x50, 0x06, 0x01, 0x60, 0x3b, 0x20, 0x19, 0x0e],
            lu_id_type: 0,
            lu_id: [0, 1, 0, 0, 0, 0, 0, 0],
            device: DeviceParams::Block {
                block_len: 512,
                pad: false
            },
        }
    );
    assert_eq!(
        got.segments,
        [Segment::BlockToStream {
            src: 0,
            dst: 1,
            transfer_len: 32 << 10,
            blocks: 64,
            lba: 0x1000,
            cat: false,
        }]
    );
    assert!(got.inline.is_empty());
    assert_eq!(encode(&got), LEGATO);

    // Without FC names, the list's first descriptor is an unsupported type (at byte 12).
    let e = assert_sense(parse(&LEGATO, &Limits::default()), (0x05, 0x26, 0x07));
    assert_eq!(e.field_pointer(), Some(12));
    // Cut short inside its segment list: a length error, not a misread as SPC.
    assert_sense(parse(&LEGATO[..99], &fc()), LIST_LENGTH);
}

#[test]
fn empty_list_is_nothing_to_do_and_short_headers_are_length_errors() {
    assert_eq!(parse(&[], &Limits::default()), Ok(CopyList::default()));
    assert_sense(parse(&[0; 15], &Limits::default()), LIST_LENGTH);
    // Byte 12 neither 00h nor E0h on a short list: read as SPC, refused by its length.
    let mut odd = [0u8; 14];
    odd[12] = 0x12;
    assert_sense(parse(&odd, &Limits::default()), LIST_LENGTH);
    // A header alone, all zero: a valid list with nothing in it.
    assert_eq!(parse(&[0; 16], &Limits::default()), Ok(CopyList::default()));
}

/// Found by fuzzing: E0h at byte 12 with an empty target list is no Legato list (which would
/// encode to a 12-byte list read back as a short SPC one), but an SPC inline data length.
#[test]
fn legato_marker_without_targets_is_spc() {
    let mut list = [0u8; 13];
    list[12] = 0xE0;
    assert_sense(parse(&list, &fc()), LIST_LENGTH);
    let mut list = [0u8; 16];
    list[12] = 0xE0;
    assert_sense(parse(&list, &fc()), (0x05, 0x26, 0x0B));
}

/// libiscsi `ExtendedCopy.Param`: the parameter list length cuts a descriptor.
#[test]
fn libiscsi_param_truncated_descriptors() {
    let list = spc_list(
        1,
        &[ident_target(0, DISK_512)],
        &[b2b(0, 0, 2048, 0, 1 << 20)],
        &[],
    );
    assert_eq!(list.len(), 16 + 32 + 28);
    assert_sense(parse(&list[..16 + 32 - 1], &Limits::default()), LIST_LENGTH);
    assert_sense(
        parse(&list[..list.len() - 1], &Limits::default()),
        LIST_LENGTH,
    );
    assert!(parse(&list, &Limits::default()).is_ok());
}

/// libiscsi `ExtendedCopy.DescrLimits`: one descriptor more than OPERATING PARAMETERS
/// reports, then lists longer than the maximum descriptor list length.
#[test]
fn libiscsi_descriptor_limits() {
    let limits = Limits::default();
    let (max_t, max_s) = (
        usize::from(limits.max_target_descriptors),
        usize::from(limits.max_segment_descriptors),
    );
    let seg = b2b(0, 0, 2048, 0, 1 << 20);

    let targets = vec![ident_target(0, DISK_512); max_t + 1];
    let e = assert_sense(
        parse(&spc_list(1, &targets, &[&seg], &[]), &limits),
        (0x05, 0x26, 0x06),
    );
    assert_eq!(e.field_pointer(), Some(2));

    let segments = vec![seg.clone(); max_s + 1];
    let one = [ident_target(0, DISK_512)];
    let e = assert_sense(
        parse(&spc_list(2, &one, &segments, &[]), &limits),
        (0x05, 0x26, 0x08),
    );
    assert_eq!(e.field_pointer(), Some(8));

    // As the test sizes it: max + 1 targets, then as many segments as fill the larger of the
    // two buffers it allocates.
    let alloc = (16 + (max_t + 1) * 32 + (max_s + 1) * 28)
        .max(16 + limits.max_descriptor_list_length as usize + 28);
    let count = (alloc - 16 - (max_t + 1) * 32) / 28;
    let list = spc_list(3, &targets, &vec![seg; count], &[]);
    assert_sense(parse(&list, &limits), LIST_LENGTH);
}

/// libiscsi `ExtendedCopy.DescrType`: an FC N_Port_Name target descriptor and a
/// stream→stream segment descriptor are unsupported descriptor type codes.
#[test]
fn libiscsi_unsupported_descriptor_types() {
    let mut fc_target = ident_target(0, DISK_512);
    fc_target[0] = 0xE0;
    fc_target[4..28].fill(0); // populate_tgt_desc fills only E4h descriptors
    let list = spc_list(1, &[fc_target], &[b2b(0, 0, 2048, 0, 1 << 20)], &[]);
    let e = assert_sense(parse(&list, &Limits::default()), (0x05, 0x26, 0x07));
    assert_eq!(e.field_pointer(), Some(16));
    // With FC names implemented the same list is valid.
    assert!(parse(&list, &fc()).is_ok());

    // populate_seg_desc_hdr for 03h: DESCRIPTOR LENGTH 16, indices 0, nothing else.
    let s2s = vec![
        0x03, 0x00, 0x00, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let list = spc_list(1, &[ident_target(0, DISK_512)], &[s2s], &[]);
    let e = assert_sense(parse(&list, &Limits::default()), (0x05, 0x26, 0x09));
    assert_eq!(e.field_pointer(), Some(48));
}

/// libiscsi `ExtendedCopy.ValidateSegDescr`: a destination index past the target list is
/// COPY ABORTED (the test accepts no additional sense, UNREACHABLE COPY TARGET or COPY TARGET
/// DEVICE NOT REACHABLE).
#[test]
fn libiscsi_index_past_the_target_list() {
    let list = spc_list(
        1,
        &[ident_target(0, DISK_512)],
        &[b2b(0, 1, 2048, 0, 0)],
        &[],
    );
    let e = assert_sense(parse(&list, &Limits::default()), (0x0A, 0x08, 0x04));
    assert_eq!(e.segment(), Some(0));
    assert_eq!(e.field_pointer(), Some(48 + 6));
    assert_eq!(e.sense_key_specific(), Some([0x80, 0x00, 54]));
}

/// libiscsi `ExtendedCopy.ValidateTgtDescr` on an SPC-4 target: a reserved LU ID TYPE is
/// ignored (and so is NUL, obsolete in SPC-4).
#[test]
fn libiscsi_reserved_lu_id_type_is_ignored() {
    let mut t = ident_target(0, DISK_512);
    t[1] = 0b1000_0000; // LU ID TYPE 10b
    let list = spc_list(1, &[&t], &[b2b(0, 0, 2048, 0, 0)], &[]);
    assert_eq!(
        parse(&list, &Limits::default()).unwrap().targets,
        [naa_disk()]
    );
    t[1] = 0b0010_0000; // NUL
    let list = spc_list(1, &[t], &[b2b(0, 0, 2048, 0, 0)], &[]);
    assert!(parse(&list, &Limits::default()).is_ok());
}

#[test]
fn invalid_fields_point_at_their_byte() {
    let disk = ident_target(0, DISK_512);
    let seg = b2b(0, 0, 8, 0, 0);
    let field = |list: Vec<u8>, limits: &Limits| {
        let e = assert_sense(parse(&list, limits), INVALID_FIELD);
        let byte = e.field_pointer().unwrap();
        assert_eq!(
            e.sense_key_specific(),
            Some([0x80, (byte >> 8) as u8, byte as u8])
        );
        byte
    };

    let mut long = disk.clone();
    long[7] = 21; // DESIGNATOR LENGTH beyond 20 bytes
    let list = spc_list(1, &[long], &[&seg], &[]);
    assert_eq!(field(list, &Limits::default()), 16 + 7);

    let mut short = seg.clone();
    short[3] = 0x14; // block→block with the block→stream DESCRIPTOR LENGTH
    let list = spc_list(1, &[&disk], &[short], &[]);
    assert_eq!(field(list, &Limits::default()), 48 + 2);

    let list = spc_list(1, &[&disk], &[b2b(0x0800, 0, 8, 0, 0)], &[]);
    assert_eq!(field(list, &Limits::default()), 48 + 4, "reserved CSCD ID");

    let tape = ident_target(1, [0x01, 0x00, 0x02, 0x00]);
    let list = spc_list(1, &[&disk, &tape], &[b2b(0, 1, 8, 0, 0)], &[]);
    assert_eq!(
        field(list, &Limits::default()),
        48 + 32 + 6,
        "block→block onto a tape"
    );

    let small = Limits {
        max_segment_length: 4096,
        ..Limits::default()
    };
    let list = spc_list(1, &[&disk], &[b2b(0, 0, 9, 0, 0)], &[]);
    assert_eq!(field(list, &small), 48 + 10, "9 blocks of 512 bytes > 4096");
    let list = spc_list(1, &[disk], &[b2b(0, 0, 8, 0, 0)], &[]);
    assert!(parse(&list, &small).is_ok());
}

#[test]
fn stream_segments_check_their_ends_and_transfer_length() {
    let disk = ident_target(0, DISK_512);
    let tape = ident_target(1, [0x00, 0x00, 0x00, 0x00]);
    let to_tape = |src: u16, dst: u16, transfer: u32| {
        let mut d = vec![0x00, 0x00, 0x00, 0x14];
        d.extend_from_slice(&src.to_be_bytes());
        d.extend_from_slice(&dst.to_be_bytes());
        d.extend_from_slice(&transfer.to_be_bytes()); // byte 8 reserved, 9-11 the length
        d.extend_from_slice(&[0, 0, 0, 1]);
        d.extend_from_slice(&0u64.to_be_bytes());
        d
    };
    let targets = [disk, tape];
    let ok = spc_list(1, &targets, &[to_tape(0, 1, 1 << 20)], &[]);
    assert!(parse(&ok, &Limits::default()).is_ok());
    let list = spc_list(1, &targets, &[to_tape(0, 1, (1 << 20) + 1)], &[]);
    let e = assert_sense(parse(&list, &Limits::default()), INVALID_FIELD);
    assert_eq!(e.field_pointer(), Some(80 + 9));
    let list = spc_list(1, &targets, &[to_tape(1, 0, 512)], &[]);
    let e = assert_sense(parse(&list, &Limits::default()), INVALID_FIELD);
    assert_eq!(e.field_pointer(), Some(80 + 4), "source is the tape");
    let list = spc_list(1, &targets, &[to_tape(LOCAL_LU, LOCAL_LU, 512)], &[]);
    let e = assert_sense(parse(&list, &Limits::default()), INVALID_FIELD);
    assert_eq!(e.field_pointer(), Some(80 + 6), "the local LU is no stream");
}

#[test]
fn local_lu_is_a_block_device() {
    let list = spc_list::<&[u8], _>(9, &[], &[b2b(LOCAL_LU, LOCAL_LU, 16, 0, 64)], &[]);
    let got = parse(&list, &Limits::default()).unwrap();
    assert!(got.targets.is_empty());
    assert_eq!(encode(&got), list);
}

#[test]
fn other_refusals() {
    let disk = ident_target(0, DISK_512);
    let seg = b2b(0, 0, 8, 0, 0);

    // Inline data beyond the maximum: refused, pointing at INLINE DATA LENGTH.
    let list = spc_list(1, &[&disk], &[&seg], &[1, 2, 3, 4, 5]);
    let tight = Limits {
        max_inline_data: 4,
        ..Limits::default()
    };
    let e = assert_sense(parse(&list, &tight), (0x05, 0x26, 0x0B));
    assert_eq!(e.field_pointer(), Some(12));
    assert_eq!(
        parse(&list, &Limits::default()).unwrap().inline,
        [1, 2, 3, 4, 5]
    );

    // N_Port_ID (E1h) target descriptor.
    let mut e1 = disk.clone();
    e1[0] = 0xE1;
    let list = spc_list(1, &[e1], &[&seg], &[]);
    assert_sense(parse(&list, &Limits::default()), (0x05, 0x26, 0x07));

    // A target list of 33 bytes, a segment list that ends inside a descriptor or its header.
    let mut list = spc_list(1, &[&disk], &[&seg], &[]);
    list[3] = 33;
    assert_sense(parse(&list, &Limits::default()), LIST_LENGTH);
    let list = spc_list(1, &[&disk], &[&seg[..27]], &[]);
    assert_sense(parse(&list, &Limits::default()), LIST_LENGTH);
    let list = spc_list(1, &[&disk], &[&seg[..], &[2, 0, 0]], &[]);
    assert_sense(parse(&list, &Limits::default()), LIST_LENGTH);

    // Bytes past the inline data are ignored.
    let mut list = spc_list(1, &[disk], &[seg], &[]);
    list.extend_from_slice(&[0xFF; 5]);
    assert!(parse(&list, &Limits::default()).is_ok());
}

#[test]
fn implemented_codes_follow_the_limits() {
    assert_eq!(
        Limits::default().implemented_descriptor_codes(),
        [0x00, 0x01, 0x02, 0x04, 0x05, 0xE4]
    );
    assert_eq!(
        fc().implemented_descriptor_codes(),
        [0x00, 0x01, 0x02, 0x04, 0x05, 0xE0, 0xE4]
    );
    let l = Limits::default();
    // Each count is reached before the descriptor list length (see `Limits::default`).
    let t = u32::from(l.max_target_descriptors) + 1;
    let s = u32::from(l.max_segment_descriptors) + 1;
    assert!(t * 32 + 28 <= l.max_descriptor_list_length);
    assert!(32 + s * 28 <= l.max_descriptor_list_length);
}

// Properties.

fn device() -> impl Strategy<Value = DeviceParams> {
    prop_oneof![
        (0u32..1 << 24, any::<bool>())
            .prop_map(|(block_len, pad)| DeviceParams::Block { block_len, pad }),
        (any::<bool>(), any::<bool>(), 0u32..1 << 24).prop_map(|(fixed, pad, block_len)| {
            DeviceParams::Stream {
                fixed,
                pad,
                block_len,
            }
        }),
        (2u8..32, any::<[u8; 4]>()).prop_map(|(peripheral_type, params)| DeviceParams::Other {
            peripheral_type,
            params
        }),
    ]
}

fn fc_target() -> impl Strategy<Value = TargetDescriptor> {
    (
        any::<u16>(),
        any::<[u8; 8]>(),
        0u8..4,
        any::<[u8; 8]>(),
        device(),
    )
        .prop_map(
            |(relative_initiator_port, name, lu_id_type, lu_id, device)| {
                TargetDescriptor::FcNPortName {
                    relative_initiator_port,
                    name,
                    lu_id_type,
                    lu_id,
                    device,
                }
            },
        )
}

fn target() -> impl Strategy<Value = TargetDescriptor> {
    let ident = (
        any::<u16>(),
        0u8..16,
        0u8..4,
        0u8..16,
        vec(any::<u8>(), 0..=20),
        device(),
    )
        .prop_map(
            |(
                relative_initiator_port,
                code_set,
                association,
                designator_type,
                designator,
                device,
            )| {
                TargetDescriptor::Identification {
                    relative_initiator_port,
                    code_set,
                    association,
                    designator_type,
                    designator,
                    device,
                }
            },
        );
    prop_oneof![ident, fc_target()]
}

/// A segment's fields, before its ends are chosen among the targets (and its inline range
/// within the list's inline data); the last is an embedded data field.
type RawSegment = (u8, Index, Index, u16, u64, u64, bool, bool, u32, Vec<u8>);

fn raw_segment() -> impl Strategy<Value = RawSegment> {
    (
        0u8..5,
        any::<Index>(),
        any::<Index>(),
        any::<u16>(),
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
        0u32..1 << 24,
        vec(any::<u8>(), 0..17).prop_map(|mut field| {
            field.truncate(field.len() / 4 * 4);
            field
        }),
    )
}

/// Makes `raw` a valid segment over `targets` and `inline_len` bytes of inline data: ends of
/// the right device types (the local LU is always a block device), inline ranges within the
/// inline data; block→block when no target is a stream device.
fn segment(targets: &[TargetDescriptor], inline_len: usize, raw: RawSegment) -> Segment {
    let (kind, a, b, blocks, lba1, lba2, dc, cat, transfer_len, field) = raw;
    let mut block = vec![LOCAL_LU];
    let mut stream = vec![];
    for (i, t) in targets.iter().enumerate() {
        match t.device() {
            DeviceParams::Block { .. } => block.push(i as u16),
            DeviceParams::Stream { .. } => stream.push(i as u16),
            DeviceParams::Other { .. } => {}
        }
    }
    let pick = |pool: &[u16], i: Index| pool[i.index(pool.len())];
    match kind {
        1 if !stream.is_empty() => Segment::BlockToStream {
            src: pick(&block, a),
            dst: pick(&stream, b),
            transfer_len,
            blocks,
            lba: lba1,
            cat,
        },
        2 if !stream.is_empty() => Segment::StreamToBlock {
            src: pick(&stream, a),
            dst: pick(&block, b),
            transfer_len,
            blocks,
            lba: lba1,
            cat,
        },
        3 if !stream.is_empty() => {
            let offset = a.index(inline_len / 4 + 1) * 4;
            Segment::InlineToStream {
                dst: pick(&stream, b),
                transfer_len,
                offset: offset as u32,
                bytes: (lba1 % (inline_len.saturating_sub(offset) as u64 + 1)) as u32,
                cat,
            }
        }
        4 if !stream.is_empty() => Segment::EmbeddedToStream {
            dst: pick(&stream, b),
            transfer_len,
            bytes: (lba1 % (field.len() as u64 + 1)) as u16,
            field,
            cat,
        },
        _ => Segment::BlockToBlock {
            src: pick(&block, a),
            dst: pick(&block, b),
            blocks,
            src_lba: lba1,
            dst_lba: lba2,
            dc,
            cat,
        },
    }
}

/// Any valid list within [`roomy`] limits; Legato lists start with an FC target and carry no
/// inline data.
fn copy_list() -> impl Strategy<Value = CopyList> {
    let head = (any::<u8>(), any::<bool>(), 0u8..4, 0u8..8);
    let legato = (
        fc_target(),
        vec(target(), 0..5),
        Just(vec![]),
        Just(Format::Legato),
    )
        .prop_map(|(first, rest, inline, format)| ([vec![first], rest].concat(), inline, format));
    let spc = (
        vec(target(), 0..6),
        vec(any::<u8>(), 0..64),
        Just(Format::Spc),
    );
    let body = prop_oneof![legato, spc];
    (head, body, vec(raw_segment(), 0..8)).prop_map(
        |((list_id, str_bit, list_id_usage, priority), (targets, inline, format), raw)| {
            let segments = raw
                .into_iter()
                .map(|r| segment(&targets, inline.len(), r))
                .collect();
            CopyList {
                format,
                list_id,
                str_bit,
                list_id_usage,
                priority,
                targets,
                segments,
                inline,
            }
        },
    )
}

fn roomy() -> Limits {
    Limits {
        max_inline_data: 64,
        max_stream_transfer_size: 0,
        fc_n_port_names: true,
        ..Limits::default()
    }
}

/// What every refusal must satisfy: a sense the standard names for EXTENDED COPY, and a field
/// pointer inside the list.
fn check_refusal(e: &ParamError, list: &[u8]) -> Result<(), TestCaseError> {
    let (key, asc, ascq) = e.sense();
    let named = matches!(
        (key, asc, ascq),
        (0x05, 0x1A, 0x00)
            | (0x05, 0x26, 0x00 | 0x06..=0x09 | 0x0B)
            | (0x0A, 0x08, 0x04)
            | (0x0A, 0x26, 0x0B)
    );
    prop_assert!(named, "{e}: sense {key:#x}/{asc:#x}/{ascq:#x}");
    if let Some(p) = e.field_pointer() {
        prop_assert!(
            usize::from(p) < list.len(),
            "{e}: pointer {p} outside the list"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Round trip: every valid list encodes to bytes that parse back to it.
    #[test]
    fn valid_lists_round_trip(list in copy_list()) {
        let bytes = encode(&list);
        prop_assert_eq!(parse(&bytes, &roomy()), Ok(list));
    }

    /// No input makes `parse` panic; what it accepts re-encodes canonically, what it refuses
    /// it refuses with a sense the standard names.
    #[test]
    fn any_bytes_parse_or_refuse(bytes in vec(any::<u8>(), 0..4096), tight in any::<bool>()) {
        let limits = if tight { Limits::default() } else { roomy() };
        match parse(&bytes, &limits) {
            Ok(list) => prop_assert_eq!(parse(&encode(&list), &limits), Ok(list)),
            Err(e) => check_refusal(&e, &bytes)?,
        }
    }

    /// Valid lists with bytes changed or cut: the same, on inputs that get past the header.
    #[test]
    fn damaged_lists_parse_or_refuse(
        list in copy_list(),
        damage in vec((any::<Index>(), any::<u8>()), 0..6),
        cut in proptest::option::of(any::<Index>()),
    ) {
        let mut bytes = encode(&list);
        for (at, v) in damage {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        if let Some(at) = cut {
            bytes.truncate(at.index(bytes.len() + 1));
        }
        match parse(&bytes, &roomy()) {
            Ok(list) => prop_assert_eq!(parse(&encode(&list), &roomy()), Ok(list)),
            Err(e) => check_refusal(&e, &bytes)?,
        }
    }
}
