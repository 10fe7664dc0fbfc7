//! Decoding: fields, refusals with their field pointers, data-out lengths, totality.

use proptest::prelude::*;

use super::*;
use crate::scsi::opcodes::COMMANDS;
use crate::scsi::sense::{FieldPointer, SenseKey};

fn pointer(s: &Sense) -> (u8, u8, Option<(u16, Option<u8>)>) {
    (
        s.asc,
        s.ascq,
        s.field_pointer
            .map(|FieldPointer { byte, bit, .. }| (byte, bit)),
    )
}

#[test]
fn read_and_write_fields() {
    let mut c = [0u8; 16];
    c[0] = 0x2A;
    c[1] = 0x18;
    c[2..6].copy_from_slice(&0x0102_0304u32.to_be_bytes());
    c[7..9].copy_from_slice(&7u16.to_be_bytes());
    let rw = ReadWrite {
        blocks: Blocks {
            lba: 0x0102_0304,
            count: 7,
        },
        dpo: true,
        fua: true,
    };
    assert_eq!(
        decode(&c),
        Ok(Command::Write(rw)),
        "trailing CDB bytes are ignored"
    );
    assert_eq!(
        decode(&[0x08, 0x1F, 0xFF, 0xFE, 0x00, 0]),
        Ok(Command::Read(ReadWrite {
            blocks: Blocks {
                lba: 0x1F_FFFE,
                count: 256
            },
            dpo: false,
            fua: false
        })),
        "READ (6): 21-bit LBA, zero blocks means 256"
    );
    let mut r16 = [0u8; 16];
    r16[0] = 0x88;
    r16[2..10].copy_from_slice(&u64::MAX.to_be_bytes());
    r16[10..14].copy_from_slice(&9u32.to_be_bytes());
    let Ok(Command::Read(rw)) = decode(&r16) else {
        panic!("READ (16)")
    };
    assert_eq!((rw.blocks.lba, rw.blocks.count), (u64::MAX, 9));
}

#[test]
fn protection_information_is_refused_at_its_field() {
    for prot in 1..8u8 {
        let c = [0x28, prot << 5, 0, 0, 0, 0, 0, 0, 1, 0];
        let s = decode(&c).unwrap_err();
        assert_eq!(s.key, SenseKey::IllegalRequest);
        assert_eq!(pointer(&s).0, 0x24);
        assert_eq!(s.field_pointer.unwrap().byte, 1);
    }
}

#[test]
fn refusals_and_their_pointers() {
    // Unknown operation code.
    assert_eq!(decode(&[0xC0, 0, 0, 0, 0, 0]), Err(Sense::invalid_opcode()));
    // Unknown service action of SERVICE ACTION IN (16).
    let mut c = [0u8; 16];
    c[0] = 0x9E;
    c[1] = 0x1F;
    assert_eq!(
        pointer(&decode(&c).unwrap_err()),
        (0x24, 0, Some((1, Some(4))))
    );
    // NACA in CONTROL.
    let c = [0x00, 0, 0, 0, 0, 0x04];
    assert_eq!(
        pointer(&decode(&c).unwrap_err()),
        (0x24, 0, Some((5, Some(2))))
    );
    // INQUIRY with EVPD = 0 and a page code.
    assert_eq!(
        pointer(&decode(&[0x12, 0, 0x80, 0, 0xFF, 0]).unwrap_err()),
        (0x24, 0, Some((2, None)))
    );
    // VERIFY with BYTCHK = 10b.
    let c = [0x2F, 0x04, 0, 0, 0, 0, 0, 0, 1, 0];
    assert_eq!(
        pointer(&decode(&c).unwrap_err()),
        (0x24, 0, Some((1, Some(2))))
    );
    // READ CAPACITY (10) with an LBA but no PMI.
    let c = [0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0];
    assert_eq!(
        pointer(&decode(&c).unwrap_err()),
        (0x24, 0, Some((2, None)))
    );
    // REPORT SUPPORTED OPERATION CODES with reporting options 4.
    let c = [0xA3, 0x0C, 0x04, 0, 0, 0, 0, 0, 0x10, 0, 0, 0];
    assert_eq!(
        pointer(&decode(&c).unwrap_err()),
        (0x24, 0, Some((2, Some(2))))
    );
    // A CDB shorter than its operation code needs, or none at all.
    assert_eq!(
        decode(&[0x28, 0, 0]),
        Err(Sense::invalid_field_in_command_iu())
    );
    assert_eq!(decode(&[]), Err(Sense::invalid_field_in_command_iu()));
    assert_eq!(decode(&[0x9E]), Err(Sense::invalid_field_in_command_iu()));
}

/// Usage data and decoder agree: every bit outside a command's usage data is refused with
/// INVALID FIELD IN CDB pointing at exactly that bit.
#[test]
fn every_bit_outside_the_usage_data_is_refused() {
    for row in COMMANDS {
        let base = |cdb: &mut Vec<u8>| {
            cdb[0] = row.opcode;
            if let Some(sa) = row.service_action {
                cdb[1] = sa;
            }
        };
        for byte in 1..row.usage.len() {
            let mut allowed = row.usage[byte];
            if byte == 1 && row.service_action.is_some() {
                allowed |= 0x1F;
            }
            for bit in 0..8u8 {
                if allowed & (1 << bit) != 0 {
                    continue;
                }
                let mut cdb = vec![0u8; row.usage.len()];
                base(&mut cdb);
                cdb[byte] |= 1 << bit;
                let got = decode(&cdb).map(|_| ()).unwrap_err();
                assert_eq!(
                    pointer(&got),
                    (0x24, 0, Some((byte as u16, Some(bit)))),
                    "{} byte {byte} bit {bit}",
                    row.name
                );
            }
        }
        let mut cdb = vec![0u8; row.usage.len()];
        base(&mut cdb);
        assert!(decode(&cdb).is_ok(), "{} with all fields zero", row.name);
    }
}

#[test]
fn data_out_lengths() {
    let w10 = [0x2A, 0, 0, 0, 0, 0, 0, 0, 4, 0];
    assert_eq!(data_out_len(&w10, 512), Ok(2048));
    assert_eq!(data_out_len(&w10, 4096), Ok(16384));
    let mut ws16 = [0u8; 16];
    ws16[0] = 0x93;
    ws16[13] = 8;
    assert_eq!(
        data_out_len(&ws16, 512),
        Ok(512),
        "one block, whatever the count"
    );
    ws16[1] = 0x01;
    assert_eq!(data_out_len(&ws16, 512), Ok(0), "NDOB");
    assert_eq!(
        data_out_len(&[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], 512),
        Ok(24)
    );
    assert_eq!(data_out_len(&[0x15, 0x10, 0, 0, 16, 0], 512), Ok(16));
    assert_eq!(data_out_len(&[0x28, 0, 0, 0, 0, 0, 0, 0, 4, 0], 512), Ok(0));
    let verify = [0x2F, 0x02, 0, 0, 0, 0, 0, 0, 3, 0];
    assert_eq!(data_out_len(&verify, 512), Ok(1536));
    let verify_same = [0x2F, 0x06, 0, 0, 0, 0, 0, 0, 3, 0];
    assert_eq!(data_out_len(&verify_same, 512), Ok(512));
    let mut huge = [0u8; 16];
    huge[0] = 0x8A;
    huge[10..14].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        pointer(&data_out_len(&huge, 512).unwrap_err()),
        (0x24, 0, Some((10, None)))
    );
}

/// Decoding is total: any bytes give a command or sense data, and the data-out length of a
/// command is defined.
fn arbitrary_cdb() -> impl Strategy<Value = Vec<u8>> {
    let opcodes: Vec<u8> = COMMANDS.iter().map(|c| c.opcode).collect();
    (
        prop::sample::select(opcodes),
        prop::collection::vec(any::<u8>(), 0..20),
        any::<bool>(),
    )
        .prop_map(|(op, mut rest, known)| {
            if known {
                rest.insert(0, op);
            }
            rest
        })
}

proptest! {
    #[test]
    fn decode_never_panics(cdb in arbitrary_cdb(), bs in prop::sample::select(vec![512u32, 4096])) {
        match decode(&cdb) {
            Ok(cmd) => {
                let _ = cmd.data_out_bytes(bs);
                prop_assert!(data_out_len(&cdb, bs).is_ok() || cmd.data_out_bytes(bs) > u64::from(u32::MAX));
            }
            Err(s) => prop_assert_eq!(s.key, SenseKey::IllegalRequest),
        }
    }
}
