//! Byte-exact encodings of sense data and the device error mapping.

use super::*;
use crate::device::{DeviceError, ErrorKind, Op};

#[test]
fn fixed_format_with_a_field_pointer() {
    let s = Sense::invalid_field_in_cdb(2, Some(5));
    assert_eq!(
        s.encode(SenseFormat::Fixed),
        [
            0x70, 0, 0x05, 0, 0, 0, 0, 0x0A, 0, 0, 0, 0, 0x24, 0x00, 0, 0xCD, 0x00, 0x02
        ]
    );
    let p = Sense::invalid_field_in_parameter_list(0x0102, None);
    let e = p.encode(SenseFormat::Fixed);
    assert_eq!((e[12], e[13]), (0x26, 0x00));
    assert_eq!(
        &e[15..18],
        &[0x80, 0x01, 0x02],
        "SKSV, C/D = 0, no bit pointer"
    );
}

#[test]
fn fixed_format_with_information() {
    let e = Sense::miscompare(0x1234).encode(SenseFormat::Fixed);
    assert_eq!(
        e,
        [
            0xF0, 0, 0x0E, 0, 0, 0x12, 0x34, 0x0A, 0, 0, 0, 0, 0x1D, 0x00, 0, 0, 0, 0
        ]
    );
    let big = Sense::unrecovered_read_error(1 << 40).encode(SenseFormat::Fixed);
    assert_eq!(big[0], 0x70, "an INFORMATION above 32 bits is not VALID");
    assert_eq!(&big[3..7], &[0; 4]);
}

#[test]
fn descriptor_format() {
    assert_eq!(
        Sense::lba_out_of_range().encode(SenseFormat::Descriptor),
        [0x72, 0x05, 0x21, 0x00, 0, 0, 0, 0]
    );
    let mut s = Sense::invalid_field_in_cdb(9, Some(2));
    s.information = Some(0x0102_0304_0506_0708);
    assert_eq!(
        s.encode(SenseFormat::Descriptor),
        [
            0x72, 0x05, 0x24, 0x00, 0, 0, 0, 20, // header, additional length 20
            0x00, 0x0A, 0x80, 0x00, 1, 2, 3, 4, 5, 6, 7, 8, // information
            0x02, 0x06, 0x00, 0x00, 0xCA, 0x00, 0x09, 0x00, // sense key specific
        ]
    );
}

#[test]
fn codes_of_the_named_constructors() {
    let codes = |s: Sense| (s.key, s.asc, s.ascq);
    use SenseKey::*;
    assert_eq!(codes(Sense::invalid_opcode()), (IllegalRequest, 0x20, 0));
    assert_eq!(codes(Sense::lba_out_of_range()), (IllegalRequest, 0x21, 0));
    assert_eq!(
        codes(Sense::parameter_list_length_error()),
        (IllegalRequest, 0x1A, 0)
    );
    assert_eq!(
        codes(Sense::invalid_field_in_command_iu()),
        (IllegalRequest, 0x0E, 3)
    );
    assert_eq!(codes(Sense::lun_not_supported()), (IllegalRequest, 0x25, 0));
    assert_eq!(
        codes(Sense::saving_parameters_not_supported()),
        (IllegalRequest, 0x39, 0)
    );
    assert_eq!(codes(Sense::write_protected()), (DataProtect, 0x27, 0));
    assert_eq!(
        codes(Sense::space_allocation_failed()),
        (DataProtect, 0x27, 7)
    );
    assert_eq!(codes(Sense::write_error(0)), (MediumError, 0x0C, 0));
    assert_eq!(
        codes(Sense::unrecovered_read_error(0)),
        (MediumError, 0x11, 0)
    );
    assert_eq!(
        codes(Sense::internal_target_failure()),
        (HardwareError, 0x44, 0)
    );
    assert_eq!(codes(Sense::no_sense()), (NoSense, 0, 0));
}

#[test]
fn device_errors_map_to_sense() {
    let map = |kind, op| {
        let s = Sense::from_device(&DeviceError::new(kind, op, 4096, 512), 512);
        (s.key, s.asc, s.ascq, s.information)
    };
    use SenseKey::*;
    assert_eq!(
        map(ErrorKind::Io, Op::Read),
        (MediumError, 0x11, 0, Some(8)),
        "the LBA of the failed request"
    );
    assert_eq!(
        map(ErrorKind::Io, Op::Write),
        (MediumError, 0x0C, 0, Some(8))
    );
    assert_eq!(map(ErrorKind::Io, Op::Flush).1, 0x0C);
    assert_eq!(map(ErrorKind::Io, Op::Trim).1, 0x0C);
    assert_eq!(
        map(ErrorKind::ReadOnly, Op::Write),
        (DataProtect, 0x27, 0, None)
    );
    assert_eq!(
        map(ErrorKind::NoSpace, Op::Write),
        (DataProtect, 0x27, 7, None)
    );
    assert_eq!(
        map(ErrorKind::OutOfRange, Op::Read),
        (IllegalRequest, 0x21, 0, None)
    );
    for kind in [
        ErrorKind::Misaligned,
        ErrorKind::Unsupported,
        ErrorKind::NotFast,
    ] {
        assert_eq!(map(kind, Op::Write).0, HardwareError);
    }
}
