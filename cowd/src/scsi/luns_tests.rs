//! LUN encodings, REPORT LUNS and the answers of an absent LUN.

use super::*;
use crate::scsi::response::Status;
use crate::scsi::testing::{inquiry, sense_of};

fn report_luns(select: u8, alloc: u32) -> [u8; 12] {
    let mut c = [0u8; 12];
    c[0] = 0xA0;
    c[2] = select;
    c[6..10].copy_from_slice(&alloc.to_be_bytes());
    c
}

#[test]
fn lun_encodings() {
    assert_eq!(encode_lun(0), [0; 8]);
    assert_eq!(
        encode_lun(5),
        [0, 5, 0, 0, 0, 0, 0, 0],
        "peripheral device addressing"
    );
    assert_eq!(encode_lun(255), [0, 255, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        encode_lun(256),
        [0x41, 0x00, 0, 0, 0, 0, 0, 0],
        "flat space addressing"
    );
    assert_eq!(encode_lun(0x3FFF), [0x7F, 0xFF, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        encode_lun(0x0001_0000_0000_0000),
        [0, 1, 0, 0, 0, 0, 0, 0],
        "raw"
    );
}

#[test]
fn report_luns_selects() {
    let all = report(0x00, &[0, 3, 300]).unwrap();
    assert_eq!(
        all,
        [
            0, 0, 0, 24, 0, 0, 0, 0, // header
            0, 0, 0, 0, 0, 0, 0, 0, // LUN 0
            0, 3, 0, 0, 0, 0, 0, 0, // LUN 3
            0x41, 0x2C, 0, 0, 0, 0, 0, 0, // LUN 300
        ]
    );
    assert_eq!(report(0x02, &[0, 3, 300]).unwrap(), all);
    assert_eq!(report(0x01, &[0, 3]).unwrap(), [0; 8], "no well-known LUNs");
    assert_eq!(
        report(0x10, &[0]),
        Err(Sense::invalid_field_in_cdb(2, None))
    );
}

#[test]
fn lun_lists_are_shared_sorted_and_unique() {
    let list = LunList::new([4, 1, 4]);
    let clone = list.clone();
    assert_eq!(clone.get(), [1, 4]);
    list.set([7, 2]);
    assert_eq!(clone.get(), [2, 7], "a clone sees the change");
    assert_eq!(LunList::default().get(), [0]);
}

#[test]
fn absent_lun_answers() {
    let luns = LunList::new([0, 1]);
    let inq = absent(&inquiry(false, 0, 36), 36, &luns);
    assert_eq!(inq.status, Status::Good);
    assert_eq!(inq.data_in.len(), 36);
    assert_eq!(inq.data_in[0], 0x7F);

    let r = absent(&report_luns(0, 64), 64, &luns);
    assert_eq!(r.status, Status::Good);
    assert_eq!(&r.data_in[..4], &[0, 0, 0, 16]);
    assert_eq!(r.residual, Residual::Underflow(64 - 24));

    let sense = absent(&[0x03, 0, 0, 0, 18, 0], 18, &luns);
    assert_eq!(
        sense.status,
        Status::Good,
        "REQUEST SENSE reports, it does not fail"
    );
    assert_eq!((sense.data_in[2], sense.data_in[12]), (0x05, 0x25));

    let tur = absent(&[0, 0, 0, 0, 0, 0], 0, &luns);
    assert_eq!(sense_of(&tur), (0x05, 0x25, 0x00));
    let vpd = absent(&inquiry(true, 0x83, 255), 255, &luns);
    assert_eq!(sense_of(&vpd), (0x05, 0x25, 0x00));
    let bad = absent(&inquiry(false, 0x80, 255), 255, &luns);
    assert_eq!(
        sense_of(&bad),
        (0x05, 0x24, 0x00),
        "a bad INQUIRY CDB is still refused as such"
    );
}
