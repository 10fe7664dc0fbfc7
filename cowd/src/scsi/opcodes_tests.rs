//! The command table's shape and the REPORT SUPPORTED OPERATION CODES formats.

use super::*;
use crate::scsi::sense::FieldPointer;

const ALL: Features = Features {
    copy: true,
    unmap: true,
};

#[test]
fn table_is_sorted_unique_and_self_consistent() {
    let keys: Vec<(u8, u8)> = COMMANDS
        .iter()
        .map(|c| (c.opcode, c.service_action.unwrap_or(0)))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        keys, sorted,
        "sorted by operation code and service action, no duplicate"
    );
    for c in COMMANDS {
        let len = match c.opcode >> 5 {
            0 => 6,
            1 | 2 => 10,
            5 => 12,
            _ => 16,
        };
        assert_eq!(c.usage.len(), len, "{}: CDB length of its group", c.name);
        assert_eq!(c.usage[0], c.opcode, "{}", c.name);
        assert_eq!(c.usage[len - 1], 0, "{}: CONTROL", c.name);
        if let Some(sa) = c.service_action {
            assert_eq!(c.usage[1] & SERVICE_ACTION_MASK, sa, "{}", c.name);
        }
        let same_opcode = COMMANDS.iter().filter(|o| o.opcode == c.opcode);
        assert!(
            same_opcode
                .clone()
                .all(|o| o.service_action.is_some() == c.service_action.is_some()),
            "{}: an operation code has service actions for all its rows or none",
            c.name
        );
    }
}

#[test]
fn all_commands_format() {
    let d = report(Reporting::All, false, ALL).unwrap();
    assert_eq!(d.len(), 4 + 8 * COMMANDS.len());
    assert_eq!(
        u32::from_be_bytes(d[0..4].try_into().unwrap()) as usize,
        d.len() - 4
    );
    // READ CAPACITY (16): service action 10h, SERVACTV, 16-byte CDB.
    let rc16 = d[4..]
        .chunks(8)
        .find(|c| c[0] == 0x9E)
        .expect("READ CAPACITY (16) listed");
    assert_eq!(rc16, [0x9E, 0, 0x00, 0x10, 0, 0x01, 0, 16]);
    let read10 = d[4..].chunks(8).find(|c| c[0] == 0x28).unwrap();
    assert_eq!(read10, [0x28, 0, 0, 0, 0, 0x00, 0, 10]);

    let with_timeouts = report(Reporting::All, true, ALL).unwrap();
    assert_eq!(with_timeouts.len(), 4 + 20 * COMMANDS.len());
    let first = &with_timeouts[4..24];
    assert_eq!(first[5], 0x02, "CTDP");
    assert_eq!(&first[8..10], &[0x00, 0x0A], "timeouts descriptor length");
}

#[test]
fn features_decide_what_is_listed() {
    let listed = |f: Features| -> Vec<u8> {
        let d = report(Reporting::All, false, f).unwrap();
        d[4..].chunks(8).map(|c| c[0]).collect()
    };
    let bare = listed(Features::default());
    assert!(!bare.contains(&0x42) && !bare.contains(&0x83) && !bare.contains(&0x84));
    let all = listed(ALL);
    assert!(all.contains(&0x42) && all.contains(&0x83));
    assert_eq!(all.iter().filter(|&&o| o == 0x84).count(), 3);
}

#[test]
fn one_command_formats() {
    let one = |what| report(what, false, ALL);
    assert_eq!(
        one(Reporting::OpcodeOnly { opcode: 0x28 }).unwrap(),
        [
            0, 0b011, 0, 10, 0x28, 0x1A, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0x00
        ]
    );
    assert_eq!(
        one(Reporting::ServiceAction {
            opcode: 0x9E,
            service_action: 0x10
        })
        .unwrap()[..6],
        [0, 0b011, 0, 16, 0x9E, 0x10]
    );
    // Not supported at all: SUPPORT 001b and no usage data.
    assert_eq!(
        one(Reporting::OpcodeOnly { opcode: 0xC0 }).unwrap(),
        [0, 1, 0, 0]
    );
    assert_eq!(
        report(
            Reporting::OpcodeOnly { opcode: 0x42 },
            false,
            Features::default()
        )
        .unwrap(),
        [0, 1, 0, 0]
    );
    assert_eq!(
        one(Reporting::ServiceAction {
            opcode: 0x9E,
            service_action: 0x1F
        })
        .unwrap(),
        [0, 1, 0, 0]
    );
    // Reporting option 3 takes either kind.
    assert_eq!(
        one(Reporting::Either {
            opcode: 0x28,
            service_action: 0
        })
        .unwrap()[1],
        0b011
    );
    assert_eq!(
        one(Reporting::Either {
            opcode: 0x28,
            service_action: 1
        })
        .unwrap()[1],
        0b001
    );
    // Option 1 for a command with service actions, option 2 for one without: the
    // REPORTING OPTIONS field is wrong.
    let wrong = Some(FieldPointer {
        in_cdb: true,
        byte: 2,
        bit: Some(2),
    });
    let e = one(Reporting::OpcodeOnly { opcode: 0xA3 }).unwrap_err();
    assert_eq!((e.asc, e.field_pointer), (0x24, wrong));
    let e = one(Reporting::ServiceAction {
        opcode: 0x28,
        service_action: 0,
    })
    .unwrap_err();
    assert_eq!((e.asc, e.field_pointer), (0x24, wrong));
}

#[test]
fn one_command_with_timeouts() {
    let d = report(Reporting::OpcodeOnly { opcode: 0x00 }, true, ALL).unwrap();
    assert_eq!(d[1], 0x80 | 0b011, "CTDP and SUPPORT");
    assert_eq!(d.len(), 4 + 6 + 12);
    let t = &d[10..];
    assert_eq!(&t[0..2], &[0, 0x0A]);
    assert!(
        u32::from_be_bytes(t[8..12].try_into().unwrap()) > 0,
        "a recommended timeout"
    );
}

#[test]
fn lookup_by_service_action() {
    assert_eq!(lookup(&[0x9E, 0x10]).unwrap().name, "READ CAPACITY (16)");
    assert_eq!(
        lookup(&[0x9E, 0xF0]).unwrap().name,
        "READ CAPACITY (16)",
        "only bits 4..0 are the service action"
    );
    let e = lookup(&[0x84, 0x01]).unwrap_err();
    assert_eq!((e.asc, e.field_pointer.map(|f| f.byte)), (0x24, Some(1)));
    assert_eq!(lookup(&[0xFF]), Err(Sense::invalid_opcode()));
}
