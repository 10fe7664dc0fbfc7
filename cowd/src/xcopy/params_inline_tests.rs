//! Tests of segments 04h (inline data → stream) and 05h (embedded data → stream): lists
//! written byte by byte from SPC-4's tables 153 and 154, and each refusal those sections
//! name, with its sense and field pointer.

use super::tests::{
    DISK_512, INVALID_FIELD, LIST_LENGTH, assert_sense, b2b, ident_target, spc_list,
};
use super::*;

/// A tape in fixed-block mode: FIXED 1, STREAM BLOCK LENGTH 64 KiB.
const TAPE_64K: [u8; 4] = [0x01, 0x01, 0x00, 0x00];

/// An inline→stream (04h) descriptor, SPC-4 table 153.
fn inline_seg(dst: u16, offset: u32, bytes: u32) -> Vec<u8> {
    let mut d = vec![
        0x04, // 0: type code: inline data → stream
        0x00, // 1: CAT 0
        0x00, 0x10, // 2-3: DESCRIPTOR LENGTH 16
        0x00, 0x00, // 4-5: reserved (no source)
    ];
    d.extend_from_slice(&dst.to_be_bytes()); // 6-7: DESTINATION CSCD DESCRIPTOR ID
    d.extend_from_slice(&[0x00, 0x01, 0x00, 0x00]); // 8: reserved, 9-11: TRANSFER LENGTH 64 KiB
    d.extend_from_slice(&offset.to_be_bytes()); // 12-15: INLINE DATA OFFSET
    d.extend_from_slice(&bytes.to_be_bytes()); // 16-19: INLINE DATA NUMBER OF BYTES
    d
}

/// An embedded→stream (05h) descriptor, SPC-4 table 154: `count` bytes said, `field` the
/// EMBEDDED DATA field as given (its length sets DESCRIPTOR LENGTH).
fn embedded_seg(dst: u16, count: u16, field: &[u8]) -> Vec<u8> {
    let mut d = vec![0x05, 0x01]; // 0: type code: embedded data → stream; 1: CAT 1
    d.extend_from_slice(&(12 + field.len() as u16).to_be_bytes()); // 2-3: DESCRIPTOR LENGTH
    d.extend_from_slice(&[0x00, 0x00]); // 4-5: reserved (no source)
    d.extend_from_slice(&dst.to_be_bytes()); // 6-7: DESTINATION CSCD DESCRIPTOR ID
    d.extend_from_slice(&[0x00, 0x00, 0x02, 0x00]); // 8: reserved, 9-11: TRANSFER LENGTH 512
    d.extend_from_slice(&count.to_be_bytes()); // 12-13: EMBEDDED DATA NUMBER OF BYTES
    d.extend_from_slice(&[0x00, 0x00]); // 14-15: reserved
    d.extend_from_slice(field); // 16-n: EMBEDDED DATA, zero-padded
    d
}

/// A disk (target 0) and a tape (target 1).
fn disk_and_tape() -> [Vec<u8>; 2] {
    [ident_target(0x00, DISK_512), ident_target(0x01, TAPE_64K)]
}

#[test]
fn a_label_a_backup_and_a_catalog_record_to_tape() {
    // 05h: a 10-byte label embedded, 12 bytes of field; 00h: 64 blocks of the disk; 04h:
    // 6 bytes of inline data from offset 4.
    let label = b"COWD LABEL\0\0";
    let segments = [
        embedded_seg(1, 10, label),
        [
            &[0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x01][..], // 00h, source 0, dest 1
            &[0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40],     // 64 KiB writes, 64 blocks
            &[0, 0, 0, 0, 0, 0, 0x10, 0],                          // LBA 1000h
        ]
        .concat(),
        inline_seg(1, 4, 6),
    ];
    let inline = *b"skipCATLOGpad";
    let list = spc_list(3, &disk_and_tape(), &segments, &inline[..12]);
    let got = parse(&list, &Limits::default()).unwrap();
    let embedded = Segment::EmbeddedToStream {
        dst: 1,
        transfer_len: 512,
        bytes: 10,
        field: label.to_vec(),
        cat: true,
    };
    let inline_seg = Segment::InlineToStream {
        dst: 1,
        transfer_len: 64 << 10,
        offset: 4,
        bytes: 6,
        cat: false,
    };
    assert_eq!(got.segments[0], embedded);
    assert_eq!(got.segments[2], inline_seg);
    assert_eq!(got.inline, b"skipCATLOGpa");
    assert_eq!(got.segments[0].carried(&got), Some(&b"COWD LABEL"[..]));
    assert_eq!(got.segments[1].carried(&got), None);
    assert_eq!(got.segments[2].carried(&got), Some(&b"CATLOG"[..]));
    assert_eq!(got.segments[0].ends(), (None, 1));
    assert_eq!(got.segments[1].ends(), (Some(0), 1));
    let lens: Vec<usize> = got.segments.iter().map(Segment::encoded_len).collect();
    assert_eq!(lens, [28, 24, 20]);
    assert_eq!(encode(&got), list);
}

#[test]
fn inline_data_to_the_end_and_none_at_all_are_fine() {
    let [disk, tape] = disk_and_tape();
    let list = spc_list(1, &[&disk, &tape], &[inline_seg(1, 8, 4)], &[7; 12]);
    let got = parse(&list, &Limits::default()).unwrap();
    assert_eq!(got.segments[0].carried(&got), Some(&[7u8; 4][..]));
    // "A value of zero shall not be considered an error", even with no inline data.
    let list = spc_list(1, &[&disk, &tape], &[inline_seg(1, 0, 0)], &[]);
    let got = parse(&list, &Limits::default()).unwrap();
    assert_eq!(got.segments[0].carried(&got), Some(&[][..]));
    let list = spc_list(1, &[&disk, &tape], &[embedded_seg(1, 0, &[])], &[]);
    let got = parse(&list, &Limits::default()).unwrap();
    assert_eq!(got.segments[0].carried(&got), Some(&[][..]));
    assert_eq!(encode(&got), list);
}

#[test]
fn inline_data_refusals_name_the_standards_sense() {
    let [disk, tape] = disk_and_tape();
    let seg_at = 16 + 64 + 28;
    let with = |seg: Vec<u8>, inline: &[u8]| {
        spc_list(1, &[&disk, &tape], &[b2b(0, 0, 1, 0, 1), seg], inline)
    };

    // Past the inline data: COPY ABORTED, INLINE DATA LENGTH EXCEEDED, at the count, with
    // the segment's number.
    let list = with(inline_seg(1, 8, 5), &[0; 12]);
    let e = assert_sense(parse(&list, &Limits::default()), (0x0A, 0x26, 0x0B));
    assert_eq!(e.field_pointer(), Some(seg_at as u16 + 16));
    assert_eq!(e.segment(), Some(1));
    // An offset and count that overflow 32 bits together are past it too.
    let list = with(inline_seg(1, 0xFFFF_FFFC, 8), &[0; 12]);
    assert_sense(parse(&list, &Limits::default()), (0x0A, 0x26, 0x0B));

    // INLINE DATA OFFSET not a multiple of 4.
    let list = with(inline_seg(1, 2, 1), &[0; 12]);
    let e = assert_sense(parse(&list, &Limits::default()), INVALID_FIELD);
    assert_eq!(e.field_pointer(), Some(seg_at as u16 + 12));

    // A disk, or the local unit, as the destination.
    for dst in [0, LOCAL_LU] {
        let list = with(inline_seg(dst, 0, 4), &[0; 12]);
        let e = assert_sense(parse(&list, &Limits::default()), INVALID_FIELD);
        assert_eq!(e.field_pointer(), Some(seg_at as u16 + 6));
    }

    // DESCRIPTOR LENGTH other than 0010h.
    let mut seg = inline_seg(1, 0, 4);
    seg[3] = 0x14;
    seg.extend_from_slice(&[0; 4]);
    let e = assert_sense(
        parse(&with(seg, &[0; 12]), &Limits::default()),
        INVALID_FIELD,
    );
    assert_eq!(e.field_pointer(), Some(seg_at as u16 + 2));

    // Cut inside the descriptor.
    let seg = inline_seg(1, 0, 4)[..19].to_vec();
    assert_sense(parse(&with(seg, &[]), &Limits::default()), LIST_LENGTH);
}

#[test]
fn embedded_data_refusals_name_the_standards_sense() {
    let [disk, tape] = disk_and_tape();
    let seg_at = 16 + 64;
    let list_of = |seg: Vec<u8>| spc_list(1, &[&disk, &tape], &[seg], &[]);

    // More bytes than DESCRIPTOR LENGTH − 12: ILLEGAL REQUEST, INVALID FIELD, at the count.
    let e = assert_sense(
        parse(&list_of(embedded_seg(1, 9, &[1; 8])), &Limits::default()),
        INVALID_FIELD,
    );
    assert_eq!(e.field_pointer(), Some(seg_at as u16 + 12));

    // DESCRIPTOR LENGTH not a multiple of 4, or short of the fixed fields.
    for field_len in [5usize, 6, 7] {
        let seg = embedded_seg(1, 4, &vec![1; field_len]);
        let e = assert_sense(parse(&list_of(seg), &Limits::default()), INVALID_FIELD);
        assert_eq!(e.field_pointer(), Some(seg_at as u16 + 2));
    }
    let mut seg = embedded_seg(1, 0, &[]);
    seg[3] = 8;
    seg.truncate(12);
    let e = assert_sense(parse(&list_of(seg), &Limits::default()), INVALID_FIELD);
    assert_eq!(e.field_pointer(), Some(seg_at as u16 + 2));

    // A disk as the destination.
    let e = assert_sense(
        parse(&list_of(embedded_seg(0, 4, &[1; 4])), &Limits::default()),
        INVALID_FIELD,
    );
    assert_eq!(e.field_pointer(), Some(seg_at as u16 + 6));

    // Cut inside the data.
    let seg = embedded_seg(1, 8, &[1; 8]);
    let list = list_of(seg[..22].to_vec());
    assert_sense(parse(&list, &Limits::default()), LIST_LENGTH);
}

#[test]
fn a_padded_embedded_field_keeps_its_length_and_the_segments_after_it_their_place() {
    let [disk, tape] = disk_and_tape();
    // 3 bytes said in a 16-byte field (longer than the 4 they need), then a 02h segment.
    let field = [b'a', b'b', b'c', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let segments = [embedded_seg(1, 3, &field), b2b(0, 0, 1, 0, 1)];
    let list = spc_list(1, &[&disk, &tape], &segments, &[]);
    let got = parse(&list, &Limits::default()).unwrap();
    assert_eq!(got.segments[0].carried(&got), Some(&b"abc"[..]));
    assert_eq!(got.segments[0].encoded_len(), 32);
    assert!(matches!(got.segments[1], Segment::BlockToBlock { .. }));
    assert_eq!(encode(&got), list);
}

#[test]
fn the_encoder_pads_embedded_data_and_cuts_the_count_to_the_field() {
    let seg = Segment::EmbeddedToStream {
        dst: 0,
        transfer_len: 0,
        bytes: 9,
        field: vec![1, 2, 3, 4, 5],
        cat: false,
    };
    let list = CopyList {
        targets: vec![TargetDescriptor::Identification {
            relative_initiator_port: 0,
            code_set: 1,
            association: 0,
            designator_type: 3,
            designator: vec![1; 16],
            device: DeviceParams::Stream {
                fixed: false,
                pad: false,
                block_len: 0,
            },
        }],
        segments: vec![seg],
        ..CopyList::default()
    };
    let bytes = encode(&list);
    let d = &bytes[16 + 32..];
    assert_eq!(d.len(), 24);
    assert_eq!(
        d[2..4],
        [0x00, 0x14],
        "DESCRIPTOR LENGTH 20: 12 + 8 bytes of field"
    );
    assert_eq!(d[12..14], [0x00, 0x05], "the count cut to the field");
    assert_eq!(d[16..], [1, 2, 3, 4, 5, 0, 0, 0]);
    let back = parse(&bytes, &Limits::default()).unwrap();
    assert_eq!(
        back.segments[0].carried(&back),
        Some(&[1u8, 2, 3, 4, 5][..])
    );
}

#[test]
fn the_largest_embedded_field_round_trips() {
    let [disk, tape] = disk_and_tape();
    // DESCRIPTOR LENGTH FFFCh: the largest multiple of 4, 65,520 bytes of field.
    let field: Vec<u8> = (0..65_520u32).map(|i| (i % 251) as u8).collect();
    let seg = embedded_seg(1, 65_519, &field);
    assert_eq!(seg[2..4], [0xFF, 0xFC]);
    let list = spc_list(1, &[&disk, &tape], &[seg], &[]);
    let roomy = Limits {
        max_descriptor_list_length: 1 << 20,
        ..Limits::default()
    };
    let got = parse(&list, &roomy).unwrap();
    assert_eq!(got.segments[0].encoded_len(), 65_536);
    assert_eq!(got.segments[0].carried(&got), Some(&field[..65_519]));
    assert_eq!(encode(&got), list);
    // The default limits leave no room for it: a length error, not a panic.
    assert_sense(parse(&list, &Limits::default()), LIST_LENGTH);
}
