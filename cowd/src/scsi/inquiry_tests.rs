//! Byte-exact standard INQUIRY data and VPD pages.

use std::sync::LazyLock;

use super::*;
use crate::device::{BlockSizes, Capabilities, MemoryDevice};
use crate::scsi::testing::{CapsDevice, SIZE, identity};

fn memory_profile() -> Profile {
    Profile::of(&MemoryDevice::new(SIZE)).unwrap()
}

fn profile_with(caps: Capabilities) -> Profile {
    Profile::of(&CapsDevice::new(SIZE, caps, BlockSizes::default())).unwrap()
}

static ID: LazyLock<LunIdentity> = LazyLock::new(identity);

fn pages(profile: &Profile) -> Inquiry<'_> {
    Inquiry {
        identity: &ID,
        profile,
        copy: None,
    }
}

#[test]
fn standard_data() {
    let p = memory_profile();
    let d = pages(&p).standard();
    assert_eq!(d.len(), 96);
    assert_eq!(&d[0..8], &[0x00, 0x00, 0x06, 0x02, 91, 0x00, 0x00, 0x02]);
    assert_eq!(&d[8..16], b"COWD    ");
    assert_eq!(&d[16..32], b"test disk       ");
    assert_eq!(&d[32..36], b"0.1 ");
    assert!(d[36..58].iter().all(|&b| b == 0));
    assert_eq!(
        &d[58..64],
        &[0x00, 0xA0, 0x04, 0x60, 0x04, 0xC0],
        "SAM-5, SPC-4, SBC-3"
    );
    assert!(d[64..].iter().all(|&b| b == 0));
}

#[test]
fn product_is_sanitised_and_defaulted() {
    let p = memory_profile();
    let mut id = identity();
    id.product = "naïve\tproduct name that is too long".into();
    let inq = Inquiry {
        identity: &id,
        profile: &p,
        copy: None,
    };
    assert_eq!(&inq.standard()[16..32], b"na_ve_product na");
    id.product.clear();
    let inq = Inquiry {
        identity: &id,
        profile: &p,
        copy: None,
    };
    assert_eq!(&inq.standard()[16..32], b"cowd export     ");
}

#[test]
fn absent_lun_standard_data() {
    let d = absent_standard();
    assert_eq!(d[0], 0x7F, "peripheral qualifier 011b, device type 1Fh");
    assert_eq!(&d[8..16], b"COWD    ");
}

#[test]
fn supported_pages() {
    let p = memory_profile();
    assert_eq!(
        pages(&p).vpd(0x00).unwrap(),
        [0, 0x00, 0, 6, 0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2]
    );
    assert_eq!(
        pages(&p).vpd(0x8F).map(|_| ()),
        Err(Sense::invalid_field_in_cdb(2, None)),
        "no third-party copy page without a copy hook"
    );
    assert_eq!(
        pages(&p).vpd(0x89),
        Err(Sense::invalid_field_in_cdb(2, None))
    );
}

#[test]
fn unit_serial_number() {
    let p = memory_profile();
    assert_eq!(pages(&p).vpd(0x80).unwrap(), b"\x00\x80\x00\x07SN-0001");
    let mut id = identity();
    id.serial.clear();
    let inq = Inquiry {
        identity: &id,
        profile: &p,
        copy: None,
    };
    assert_eq!(
        &inq.vpd(0x80).unwrap()[4..],
        b"0123456789abcdef",
        "the id when no serial"
    );
}

#[test]
fn device_identification() {
    let p = memory_profile();
    let d = pages(&p).vpd(0x83).unwrap();
    let mut expected = vec![0x00, 0x83, 0x00, 12 + 4 + 12];
    // NAA 3h: binary, logical unit, type 3, 8 bytes: 3 then the low 60 bits of the id.
    expected.extend_from_slice(&[0x01, 0x03, 0x00, 0x08]);
    expected.extend_from_slice(&[0x31, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF]);
    // T10 vendor ID: ASCII, logical unit, type 1: vendor then export name.
    expected.extend_from_slice(&[0x02, 0x01, 0x00, 12]);
    expected.extend_from_slice(b"COWD    vol0");
    assert_eq!(d, expected);
    assert_eq!(
        naa(u64::MAX),
        [0x3F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]
    );
}

#[test]
fn block_limits_of_a_thin_device() {
    let p = memory_profile();
    let d = pages(&p).vpd(0xB0).unwrap();
    assert_eq!(d.len(), 64);
    assert_eq!(&d[0..4], &[0, 0xB0, 0, 0x3C]);
    let be32 = |at: usize| u32::from_be_bytes(d[at..at + 4].try_into().unwrap());
    assert_eq!(d[4], 0, "WSNZ clear: zero blocks means to the end");
    assert_eq!(
        u16::from_be_bytes([d[6], d[7]]),
        8,
        "granularity: the 4 KiB physical block"
    );
    assert_eq!(
        be32(8),
        65536,
        "MAXIMUM TRANSFER LENGTH: 32 MiB of 512-byte blocks"
    );
    assert_eq!(be32(12), 0);
    assert_eq!(be32(20), 1 << 20, "MAXIMUM UNMAP LBA COUNT");
    assert_eq!(be32(24), 256, "MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT");
    assert_eq!(be32(28), 8, "OPTIMAL UNMAP GRANULARITY");
    assert_eq!(be32(32), 0x8000_0000, "UGAVALID, alignment 0");
    assert_eq!(
        u64::from_be_bytes(d[36..44].try_into().unwrap()),
        1 << 18,
        "MAXIMUM WRITE SAME LENGTH: 128 MiB"
    );
    assert!(d[44..].iter().all(|&b| b == 0));
}

#[test]
fn block_limits_of_a_fully_provisioned_device() {
    let p = profile_with(Capabilities::default());
    let d = pages(&p).vpd(0xB0).unwrap();
    assert!(d[20..36].iter().all(|&b| b == 0), "no UNMAP limits");
}

#[test]
fn block_device_characteristics() {
    let p = memory_profile();
    let d = pages(&p).vpd(0xB1).unwrap();
    assert_eq!(&d[0..6], &[0, 0xB1, 0, 0x3C, 0, 1], "non-rotating");
    let spinning = profile_with(Capabilities {
        rotational: true,
        ..Capabilities::default()
    });
    assert_eq!(&pages(&spinning).vpd(0xB1).unwrap()[4..6], &[0, 0]);
}

#[test]
fn logical_block_provisioning() {
    let zero = memory_profile();
    assert_eq!(
        pages(&zero).vpd(0xB2).unwrap(),
        [0, 0xB2, 0, 4, 0, 0xE4, 0x02, 0]
    );
    let trim = profile_with(Capabilities {
        trim: true,
        ..Capabilities::default()
    });
    assert_eq!(
        pages(&trim).vpd(0xB2).unwrap()[5],
        0xE0,
        "LBPU, LBPWS, LBPWS10, no LBPRZ"
    );
    let full = profile_with(Capabilities::default());
    assert_eq!(pages(&full).vpd(0xB2).unwrap(), [0, 0xB2, 0, 4, 0, 0, 0, 0]);
}
