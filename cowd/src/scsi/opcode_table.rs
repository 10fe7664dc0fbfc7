//! The table of every command a [`Disk`](super::disk::Disk) accepts: operation code, service
//! action, CDB usage data and timeouts.
//!
//! The CDB usage data is both what REPORT SUPPORTED OPERATION CODES reports and what
//! [`decode`](super::cdb::decode) enforces: a CDB bit outside the usage data is refused with
//! INVALID FIELD IN CDB. Byte 0 is the operation code; for a command with a service action,
//! the service action sits in bits 4..0 of byte 1, as in the CDB. The last byte is CONTROL:
//! cowd supports neither NACA nor vendor bits there, so it is always 00h.
//!
//! Rows are sorted by operation code, then service action.

use super::opcodes::{CommandInfo, Offered, Timeout};

const QUICK: Timeout = Timeout {
    nominal: 1,
    recommended: 10,
};
const MEDIA: Timeout = Timeout {
    nominal: 5,
    recommended: 60,
};
const LONG: Timeout = Timeout {
    nominal: 30,
    recommended: 600,
};

const fn row(
    name: &'static str,
    opcode: u8,
    service_action: Option<u8>,
    usage: &'static [u8],
    timeout: Timeout,
    offered: Offered,
) -> CommandInfo {
    CommandInfo {
        name,
        opcode,
        service_action,
        usage,
        timeout,
        offered,
    }
}

use Offered::{Always, WithCopy, WithUnmap};

/// READ (10/12/16) and WRITE (10/12/16): DPO, FUA and FUA_NV are accepted; RDPROTECT /
/// WRPROTECT are not (no protection information).
const RW_FLAGS: u8 = 0x1A;
/// VERIFY (10/12/16): DPO and BYTCHK.
const VERIFY_FLAGS: u8 = 0x16;
/// GROUP NUMBER.
const GROUP: u8 = 0x1F;
const FF: u8 = 0xFF;

/// Every command cowd implements.
pub static COMMANDS: &[CommandInfo] = &[
    row(
        "TEST UNIT READY",
        0x00,
        None,
        &[0x00, 0, 0, 0, 0, 0],
        QUICK,
        Always,
    ),
    row(
        "REQUEST SENSE",
        0x03,
        None,
        &[0x03, 0x01, 0, 0, FF, 0],
        QUICK,
        Always,
    ),
    row(
        "READ (6)",
        0x08,
        None,
        &[0x08, 0x1F, FF, FF, FF, 0],
        MEDIA,
        Always,
    ),
    row(
        "WRITE (6)",
        0x0A,
        None,
        &[0x0A, 0x1F, FF, FF, FF, 0],
        MEDIA,
        Always,
    ),
    row(
        "INQUIRY",
        0x12,
        None,
        &[0x12, 0x01, FF, FF, FF, 0],
        QUICK,
        Always,
    ),
    row(
        "MODE SELECT (6)",
        0x15,
        None,
        &[0x15, 0x10, 0, 0, FF, 0],
        QUICK,
        Always,
    ),
    row(
        "MODE SENSE (6)",
        0x1A,
        None,
        &[0x1A, 0x08, FF, FF, FF, 0],
        QUICK,
        Always,
    ),
    row(
        "START STOP UNIT",
        0x1B,
        None,
        &[0x1B, 0x01, 0, 0x0F, 0xF5, 0],
        LONG,
        Always,
    ),
    row(
        "READ CAPACITY (10)",
        0x25,
        None,
        &[0x25, 0, FF, FF, FF, FF, 0, 0, 0x01, 0],
        QUICK,
        Always,
    ),
    row(
        "READ (10)",
        0x28,
        None,
        &[0x28, RW_FLAGS, FF, FF, FF, FF, GROUP, FF, FF, 0],
        MEDIA,
        Always,
    ),
    row(
        "WRITE (10)",
        0x2A,
        None,
        &[0x2A, RW_FLAGS, FF, FF, FF, FF, GROUP, FF, FF, 0],
        MEDIA,
        Always,
    ),
    row(
        "VERIFY (10)",
        0x2F,
        None,
        &[0x2F, VERIFY_FLAGS, FF, FF, FF, FF, GROUP, FF, FF, 0],
        MEDIA,
        Always,
    ),
    row(
        "PRE-FETCH (10)",
        0x34,
        None,
        &[0x34, 0x02, FF, FF, FF, FF, GROUP, FF, FF, 0],
        MEDIA,
        Always,
    ),
    row(
        "SYNCHRONIZE CACHE (10)",
        0x35,
        None,
        &[0x35, 0x02, FF, FF, FF, FF, GROUP, FF, FF, 0],
        LONG,
        Always,
    ),
    row(
        "WRITE SAME (10)",
        0x41,
        None,
        &[0x41, 0x08, FF, FF, FF, FF, GROUP, FF, FF, 0],
        LONG,
        Always,
    ),
    row(
        "UNMAP",
        0x42,
        None,
        &[0x42, 0x00, 0, 0, 0, 0, GROUP, FF, FF, 0],
        LONG,
        WithUnmap,
    ),
    row(
        "MODE SELECT (10)",
        0x55,
        None,
        &[0x55, 0x10, 0, 0, 0, 0, 0, FF, FF, 0],
        QUICK,
        Always,
    ),
    row(
        "MODE SENSE (10)",
        0x5A,
        None,
        &[0x5A, 0x18, FF, FF, 0, 0, 0, FF, FF, 0],
        QUICK,
        Always,
    ),
    row(
        "EXTENDED COPY (LID1)",
        0x83,
        Some(0x00),
        &[0x83, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, FF, FF, FF, FF, 0, 0],
        LONG,
        WithCopy,
    ),
    row(
        "RECEIVE COPY STATUS (LID1)",
        0x84,
        Some(0x00),
        &[0x84, 0x00, FF, 0, 0, 0, 0, 0, 0, 0, FF, FF, FF, FF, 0, 0],
        QUICK,
        WithCopy,
    ),
    row(
        "RECEIVE COPY OPERATING PARAMETERS",
        0x84,
        Some(0x03),
        &[0x84, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, FF, FF, FF, FF, 0, 0],
        QUICK,
        WithCopy,
    ),
    row(
        "RECEIVE COPY FAILURE DETAILS (LID1)",
        0x84,
        Some(0x04),
        &[0x84, 0x04, FF, 0, 0, 0, 0, 0, 0, 0, FF, FF, FF, FF, 0, 0],
        QUICK,
        WithCopy,
    ),
    row(
        "READ (16)",
        0x88,
        None,
        &[
            0x88, RW_FLAGS, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, GROUP, 0,
        ],
        MEDIA,
        Always,
    ),
    row(
        "WRITE (16)",
        0x8A,
        None,
        &[
            0x8A, RW_FLAGS, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, GROUP, 0,
        ],
        MEDIA,
        Always,
    ),
    row(
        "VERIFY (16)",
        0x8F,
        None,
        &[
            0x8F,
            VERIFY_FLAGS,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            FF,
            GROUP,
            0,
        ],
        MEDIA,
        Always,
    ),
    row(
        "PRE-FETCH (16)",
        0x90,
        None,
        &[
            0x90, 0x02, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, GROUP, 0,
        ],
        MEDIA,
        Always,
    ),
    row(
        "SYNCHRONIZE CACHE (16)",
        0x91,
        None,
        &[
            0x91, 0x02, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, GROUP, 0,
        ],
        LONG,
        Always,
    ),
    row(
        "WRITE SAME (16)",
        0x93,
        None,
        &[
            0x93, 0x09, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, GROUP, 0,
        ],
        LONG,
        Always,
    ),
    row(
        "READ CAPACITY (16)",
        0x9E,
        Some(0x10),
        &[
            0x9E, 0x10, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x01, 0,
        ],
        QUICK,
        Always,
    ),
    row(
        "GET LBA STATUS",
        0x9E,
        Some(0x12),
        &[
            0x9E, 0x12, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0,
        ],
        QUICK,
        WithUnmap,
    ),
    row(
        "REPORT LUNS",
        0xA0,
        None,
        &[0xA0, 0, FF, 0, 0, 0, FF, FF, FF, FF, 0, 0],
        QUICK,
        Always,
    ),
    row(
        "REPORT SUPPORTED OPERATION CODES",
        0xA3,
        Some(0x0C),
        &[0xA3, 0x0C, 0x87, FF, FF, FF, FF, FF, FF, FF, 0, 0],
        QUICK,
        Always,
    ),
    row(
        "READ (12)",
        0xA8,
        None,
        &[0xA8, RW_FLAGS, FF, FF, FF, FF, FF, FF, FF, FF, GROUP, 0],
        MEDIA,
        Always,
    ),
    row(
        "WRITE (12)",
        0xAA,
        None,
        &[0xAA, RW_FLAGS, FF, FF, FF, FF, FF, FF, FF, FF, GROUP, 0],
        MEDIA,
        Always,
    ),
    row(
        "VERIFY (12)",
        0xAF,
        None,
        &[0xAF, VERIFY_FLAGS, FF, FF, FF, FF, FF, FF, FF, FF, GROUP, 0],
        MEDIA,
        Always,
    ),
];
