//! MODE SENSE data byte by byte, and MODE SELECT of the Control page.

use super::*;
use crate::device::{Checked, MemoryDevice};
use crate::scsi::cdb::{Command, decode};
use crate::scsi::testing::SIZE;
use std::sync::Arc;

fn request(cdb: &[u8]) -> ModeSense {
    match decode(cdb) {
        Ok(Command::ModeSense(m)) => m,
        other => panic!("{other:?}"),
    }
}

fn six(dbd: bool, pc: u8, page: u8, subpage: u8) -> ModeSense {
    request(&crate::scsi::testing::mode_sense6(
        dbd, pc, page, subpage, 255,
    ))
}

const CACHING_PAGE: [u8; 20] = [
    0x08, 0x12, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];
const CONTROL_PAGE: [u8; 12] = [0x0A, 0x0A, 0x00, 0x10, 0x00, 0, 0, 0, 0, 0, 0, 0];
const IEC_PAGE: [u8; 12] = [0x1C, 0x0A, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0];

struct Fixture {
    profile: Profile,
    state: ModeState,
}

impl Fixture {
    fn new(read_only: bool) -> Fixture {
        let dev = Checked::new(Arc::new(MemoryDevice::new(SIZE)), read_only);
        Fixture {
            profile: Profile::of(&dev).unwrap(),
            state: ModeState::default(),
        }
    }

    fn pages(&self) -> ModePages<'_> {
        ModePages {
            profile: &self.profile,
            state: &self.state,
        }
    }
}

#[test]
fn mode_sense6_all_pages() {
    let f = Fixture::new(false);
    let d = f.pages().sense(&six(false, 0, 0x3F, 0)).unwrap();
    let mut expected = vec![55, 0x00, 0x10, 8];
    // Short block descriptor: 8192 blocks of 512 bytes.
    expected.extend_from_slice(&[0, 0, 0x20, 0x00, 0, 0, 0x02, 0x00]);
    expected.extend_from_slice(&CACHING_PAGE);
    expected.extend_from_slice(&CONTROL_PAGE);
    expected.extend_from_slice(&IEC_PAGE);
    assert_eq!(d, expected);
    let dbd = f.pages().sense(&six(true, 0, 0x3F, 0xFF)).unwrap();
    assert_eq!(
        &dbd[..4],
        &[47, 0x00, 0x10, 0],
        "no block descriptor, all subpages"
    );
}

#[test]
fn mode_sense6_one_page_and_page_controls() {
    let f = Fixture::new(false);
    let control = f.pages().sense(&six(true, 0, 0x0A, 0)).unwrap();
    assert_eq!(&control[4..], &CONTROL_PAGE);
    let changeable = f.pages().sense(&six(true, 1, 0x0A, 0)).unwrap();
    assert_eq!(
        &changeable[4..],
        &[0x0A, 0x0A, 0x04, 0, 0x08, 0, 0, 0, 0, 0, 0, 0]
    );
    let caching = f.pages().sense(&six(true, 1, 0x08, 0)).unwrap();
    assert!(
        caching[6..].iter().all(|&b| b == 0),
        "nothing changeable in Caching"
    );
    let default = f.pages().sense(&six(true, 2, 0x3F, 0)).unwrap();
    assert_eq!(default.len(), 4 + 44);
    assert_eq!(
        f.pages().sense(&six(true, 3, 0x0A, 0)),
        Err(Sense::saving_parameters_not_supported())
    );
    assert_eq!(
        f.pages().sense(&six(true, 0, 0x19, 0)),
        Err(Sense::invalid_field_in_cdb(2, Some(5)))
    );
    assert_eq!(
        f.pages().sense(&six(true, 0, 0x0A, 0x01)),
        Err(Sense::invalid_field_in_cdb(3, None))
    );
}

#[test]
fn mode_sense10_with_long_block_descriptor() {
    let f = Fixture::new(true);
    let cdb = [0x5A, 0x10, 0x08, 0, 0, 0, 0, 0x01, 0x00, 0];
    let d = f.pages().sense(&request(&cdb)).unwrap();
    assert_eq!(
        &d[..8],
        &[0, 6 + 16 + 20, 0, 0x90, 0x01, 0, 0, 16],
        "WP, DPOFUA, LONGLBA"
    );
    assert_eq!(
        &d[8..24],
        &[0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x00]
    );
    assert_eq!(&d[24..], &CACHING_PAGE);
}

/// The MODE SELECT (6) parameter list libiscsi's set_swp sends: a zero header and the current
/// Control page with changes.
fn control_select(byte2: u8, byte4: u8) -> Vec<u8> {
    let mut p = vec![0, 0, 0, 0];
    p.extend_from_slice(&CONTROL_PAGE);
    p[4 + 2] = byte2;
    p[4 + 4] = byte4;
    p
}

#[test]
fn mode_select_sets_swp_and_d_sense() {
    let f = Fixture::new(false);
    f.pages()
        .select(false, &control_select(0x04, 0x08))
        .unwrap();
    assert!(f.pages().write_protected());
    assert_eq!(f.state.sense_format(), SenseFormat::Descriptor);
    let control = f.pages().sense(&six(true, 0, 0x0A, 0)).unwrap();
    assert_eq!(&control[..8], &[15, 0, 0x90, 0, 0x0A, 0x0A, 0x04, 0x10]);
    assert_eq!(control[8], 0x08, "SWP");
    f.pages()
        .select(false, &control_select(0x00, 0x00))
        .unwrap();
    assert!(!f.pages().write_protected());
    assert_eq!(f.state.sense_format(), SenseFormat::Fixed);
}

#[test]
fn mode_select_refuses_what_is_not_changeable() {
    let f = Fixture::new(false);
    // QUEUE ALGORITHM MODIFIER is not changeable.
    let mut p = control_select(0, 0);
    p[4 + 3] = 0x00;
    assert_eq!(
        f.pages().select(false, &p),
        Err(Sense::invalid_field_in_parameter_list(7, Some(4)))
    );
    // WCE of the Caching page is not changeable.
    let mut p = vec![0, 0, 0, 0];
    p.extend_from_slice(&CACHING_PAGE);
    p[6] = 0;
    assert_eq!(
        f.pages().select(false, &p),
        Err(Sense::invalid_field_in_parameter_list(6, Some(2)))
    );
    // PS is reserved; an unknown page; a wrong page length; a truncated page.
    let mut p = control_select(0, 0);
    p[4] |= 0x80;
    assert_eq!(
        f.pages().select(false, &p),
        Err(Sense::invalid_field_in_parameter_list(4, Some(7)))
    );
    let mut p = control_select(0, 0);
    p[4] = 0x19;
    assert_eq!(
        f.pages().select(false, &p),
        Err(Sense::invalid_field_in_parameter_list(4, Some(5)))
    );
    let mut p = control_select(0, 0);
    p[5] = 0x0B;
    assert_eq!(
        f.pages().select(false, &p),
        Err(Sense::invalid_field_in_parameter_list(5, None))
    );
    let p = control_select(0, 0x08);
    assert_eq!(
        f.pages().select(false, &p[..10]),
        Err(Sense::parameter_list_length_error())
    );
    assert_eq!(
        f.pages().select(false, &[0, 0]),
        Err(Sense::parameter_list_length_error())
    );
    assert!(!f.pages().write_protected(), "nothing applied");
    // A medium type.
    assert_eq!(
        f.pages().select(false, &[0, 1, 0, 0]),
        Err(Sense::invalid_field_in_parameter_list(1, None))
    );
}

#[test]
fn mode_select_block_descriptors() {
    let f = Fixture::new(false);
    let same = [0, 0, 0, 8, 0, 0, 0x20, 0x00, 0, 0, 0x02, 0x00];
    f.pages().select(false, &same).unwrap();
    let any_count = [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0x02, 0x00];
    f.pages().select(false, &any_count).unwrap();
    let other_size = [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0x10, 0x00];
    assert_eq!(
        f.pages().select(false, &other_size),
        Err(Sense::invalid_field_in_parameter_list(9, None))
    );
    let resize = [0, 0, 0, 8, 0, 0, 0x10, 0x00, 0, 0, 0x02, 0x00];
    assert_eq!(
        f.pages().select(false, &resize),
        Err(Sense::invalid_field_in_parameter_list(4, None))
    );
    let odd_length = [0, 0, 0, 4, 0, 0, 0, 0];
    assert_eq!(
        f.pages().select(false, &odd_length),
        Err(Sense::invalid_field_in_parameter_list(3, None))
    );
    // MODE SELECT (10) with a long descriptor.
    let mut long = vec![0, 0, 0, 0, 0x01, 0, 0, 16];
    long.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x00]);
    f.pages().select(true, &long).unwrap();
}
