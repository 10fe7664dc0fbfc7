//! Decoding CDBs into typed [`Command`]s.
//!
//! [`decode`] is pure and total: any byte slice gives a `Command` or the [`Sense`] that refuses
//! it, never a panic. It checks, in order:
//!
//! 1. the operation code (and service action) is in the command table;
//! 2. the slice holds the whole CDB (extra bytes, such as the zero padding of a 16-byte iSCSI
//!    CDB field, are ignored);
//! 3. no bit is set outside the command's CDB usage data (the same data REPORT SUPPORTED
//!    OPERATION CODES reports), so an unsupported option is refused with INVALID FIELD IN CDB
//!    pointing at it;
//! 4. field combinations that no logical unit accepts (EVPD=0 with a page code, BYTCHK=10b,
//!    PMI=0 with an LBA, ...).
//!
//! Checks that depend on the logical unit (capacity, limits, write protection) are left to
//! [`Disk`](super::disk::Disk).

use super::opcodes::{self, Reporting, SERVICE_ACTION_MASK};
use super::sense::Sense;

/// A range of logical blocks addressed by a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocks {
    pub lba: u64,
    /// Number of blocks (what zero means depends on the command).
    pub count: u32,
}

/// READ and WRITE (6/10/12/16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadWrite {
    pub blocks: Blocks,
    /// Disable page out: a cache hint, ignored.
    pub dpo: bool,
    /// Force unit access.
    pub fua: bool,
}

/// The BYTCHK field of VERIFY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteCheck {
    /// 00b: check the medium only, no data-out.
    Medium,
    /// 01b: compare every block with the data-out buffer.
    Compare,
    /// 11b: compare every block with the single block of the data-out buffer.
    CompareSame,
}

/// The PAGE CONTROL field of MODE SENSE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageControl {
    Current,
    Changeable,
    Default,
    Saved,
}

/// MODE SENSE (6) or (10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModeSense {
    /// MODE SENSE (10) (8-byte header) rather than (6).
    pub ten: bool,
    /// Disable block descriptors.
    pub dbd: bool,
    /// Long LBA block descriptors accepted (10 only).
    pub llbaa: bool,
    pub pc: PageControl,
    pub page: u8,
    pub subpage: u8,
    pub alloc: u32,
}

/// A decoded command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    TestUnitReady,
    RequestSense {
        descriptor: bool,
        alloc: u32,
    },
    Inquiry {
        evpd: bool,
        page: u8,
        alloc: u32,
    },
    ModeSense(ModeSense),
    ModeSelect {
        ten: bool,
        /// Page format: pages follow SPC (cowd accepts both values; its pages are the same).
        pf: bool,
        len: u32,
    },
    StartStopUnit {
        immed: bool,
        power_condition: u8,
        no_flush: bool,
        start: bool,
    },
    ReadCapacity10,
    ReadCapacity16 {
        alloc: u32,
    },
    /// GET LBA STATUS (9Eh/12h): provisioning status from `lba`.
    GetLbaStatus {
        lba: u64,
        alloc: u32,
    },
    Read(ReadWrite),
    Write(ReadWrite),
    Verify {
        blocks: Blocks,
        check: ByteCheck,
    },
    WriteSame {
        blocks: Blocks,
        unmap: bool,
        /// No data-out buffer: the block is zeroes (WRITE SAME (16) only).
        ndob: bool,
    },
    Unmap {
        len: u32,
    },
    SynchronizeCache {
        blocks: Blocks,
        immed: bool,
    },
    PreFetch {
        blocks: Blocks,
        immed: bool,
    },
    ReportLuns {
        select: u8,
        alloc: u32,
    },
    ReportSupportedOpcodes {
        what: Reporting,
        rctd: bool,
        alloc: u32,
    },
    ExtendedCopy {
        len: u32,
    },
    ReceiveCopyResults {
        service_action: u8,
        alloc: u32,
    },
}

impl Command {
    /// Bytes of data-out the CDB asks for (before any limit of the logical unit applies).
    pub fn data_out_bytes(&self, block_size: u32) -> u64 {
        let bs = u64::from(block_size);
        match *self {
            Command::Write(rw) => u64::from(rw.blocks.count) * bs,
            Command::Verify { blocks, check } => match check {
                ByteCheck::Medium => 0,
                ByteCheck::Compare => u64::from(blocks.count) * bs,
                ByteCheck::CompareSame if blocks.count == 0 => 0,
                ByteCheck::CompareSame => bs,
            },
            Command::WriteSame { ndob, .. } => {
                if ndob {
                    0
                } else {
                    bs
                }
            }
            Command::Unmap { len }
            | Command::ModeSelect { len, .. }
            | Command::ExtendedCopy { len } => u64::from(len),
            Command::TestUnitReady
            | Command::RequestSense { .. }
            | Command::Inquiry { .. }
            | Command::ModeSense(_)
            | Command::StartStopUnit { .. }
            | Command::ReadCapacity10
            | Command::ReadCapacity16 { .. }
            | Command::GetLbaStatus { .. }
            | Command::Read(_)
            | Command::SynchronizeCache { .. }
            | Command::PreFetch { .. }
            | Command::ReportLuns { .. }
            | Command::ReportSupportedOpcodes { .. }
            | Command::ReceiveCopyResults { .. } => 0,
        }
    }
}

/// Bytes of data-out a CDB asks for, so that the transport knows how much to solicit.
///
/// An error is the sense data the command will fail with; the transport then solicits
/// nothing and lets [`Disk::execute`](super::disk::Disk::execute) report it.
pub fn data_out_len(cdb: &[u8], block_size: u32) -> Result<u32, Sense> {
    let cmd = decode(cdb)?;
    u32::try_from(cmd.data_out_bytes(block_size))
        .map_err(|_| Sense::invalid_field_in_cdb(length_field(cdb[0]), None))
}

/// Byte offset of the TRANSFER LENGTH (or NUMBER OF LOGICAL BLOCKS) field of a block
/// command, for field pointers.
pub fn length_field(opcode: u8) -> u16 {
    match opcode >> 5 {
        0 => 4,
        1 | 2 => 7,
        5 => 6,
        _ => 10,
    }
}

/// Decodes a CDB.
pub fn decode(cdb: &[u8]) -> Result<Command, Sense> {
    let info = opcodes::lookup(cdb)?;
    let len = info.usage.len();
    let cdb = cdb
        .get(..len)
        .ok_or_else(Sense::invalid_field_in_command_iu)?;
    check_usage(cdb, info.usage, info.service_action.is_some())?;
    parse(cdb)
}

/// Refuses any bit outside the usage data (bytes 1.., the service action already matched).
fn check_usage(cdb: &[u8], usage: &[u8], has_sa: bool) -> Result<(), Sense> {
    for (i, (&b, &allowed)) in cdb.iter().zip(usage).enumerate().skip(1) {
        let allowed = if i == 1 && has_sa {
            allowed | SERVICE_ACTION_MASK
        } else {
            allowed
        };
        let bad = b & !allowed;
        if bad != 0 {
            let bit = 7 - bad.leading_zeros() as u8;
            return Err(Sense::invalid_field_in_cdb(i as u16, Some(bit)));
        }
    }
    Ok(())
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    (u64::from(be32(b, at)) << 32) | u64::from(be32(b, at + 4))
}

fn bit(b: u8, mask: u8) -> bool {
    b & mask != 0
}

/// Parses a CDB whose length and usage bits are already checked.
fn parse(c: &[u8]) -> Result<Command, Sense> {
    Ok(match c[0] {
        0x00 => Command::TestUnitReady,
        0x03 => Command::RequestSense {
            descriptor: bit(c[1], 0x01),
            alloc: u32::from(c[4]),
        },
        0x08 | 0x0A => {
            let rw = ReadWrite {
                blocks: Blocks {
                    lba: u64::from(be32(c, 0) & 0x001F_FFFF),
                    // A TRANSFER LENGTH of zero means 256 blocks in the 6-byte CDBs.
                    count: if c[4] == 0 { 256 } else { u32::from(c[4]) },
                },
                dpo: false,
                fua: false,
            };
            if c[0] == 0x08 {
                Command::Read(rw)
            } else {
                Command::Write(rw)
            }
        }
        0x12 => {
            let evpd = bit(c[1], 0x01);
            if !evpd && c[2] != 0 {
                return Err(Sense::invalid_field_in_cdb(2, None));
            }
            Command::Inquiry {
                evpd,
                page: c[2],
                alloc: u32::from(be16(c, 3)),
            }
        }
        0x15 | 0x55 => Command::ModeSelect {
            ten: c[0] == 0x55,
            pf: bit(c[1], 0x10),
            len: if c[0] == 0x55 {
                u32::from(be16(c, 7))
            } else {
                u32::from(c[4])
            },
        },
        0x1A | 0x5A => Command::ModeSense(mode_sense(c)),
        0x1B => Command::StartStopUnit {
            immed: bit(c[1], 0x01),
            power_condition: c[4] >> 4,
            no_flush: bit(c[4], 0x04),
            start: bit(c[4], 0x01),
        },
        0x25 => {
            check_pmi(be32(c, 2) != 0, bit(c[8], 0x01))?;
            Command::ReadCapacity10
        }
        0x9E if c[1] & SERVICE_ACTION_MASK == 0x12 => Command::GetLbaStatus {
            lba: be64(c, 2),
            alloc: be32(c, 10),
        },
        0x9E => {
            check_pmi(be64(c, 2) != 0, bit(c[14], 0x01))?;
            Command::ReadCapacity16 { alloc: be32(c, 10) }
        }
        0x28 | 0x2A | 0xA8 | 0xAA | 0x88 | 0x8A => {
            let rw = ReadWrite {
                blocks: blocks(c),
                dpo: bit(c[1], 0x10),
                fua: bit(c[1], 0x08),
            };
            if matches!(c[0], 0x28 | 0xA8 | 0x88) {
                Command::Read(rw)
            } else {
                Command::Write(rw)
            }
        }
        0x2F | 0xAF | 0x8F => Command::Verify {
            blocks: blocks(c),
            check: match (c[1] >> 1) & 0x03 {
                0b00 => ByteCheck::Medium,
                0b01 => ByteCheck::Compare,
                0b11 => ByteCheck::CompareSame,
                _ => return Err(Sense::invalid_field_in_cdb(1, Some(2))),
            },
        },
        0x34 | 0x90 => Command::PreFetch {
            blocks: blocks(c),
            immed: bit(c[1], 0x02),
        },
        0x35 | 0x91 => Command::SynchronizeCache {
            blocks: blocks(c),
            immed: bit(c[1], 0x02),
        },
        0x41 | 0x93 => Command::WriteSame {
            blocks: blocks(c),
            unmap: bit(c[1], 0x08),
            ndob: c[0] == 0x93 && bit(c[1], 0x01),
        },
        0x42 => Command::Unmap {
            len: u32::from(be16(c, 7)),
        },
        0x83 => Command::ExtendedCopy { len: be32(c, 10) },
        0x84 => Command::ReceiveCopyResults {
            service_action: c[1] & SERVICE_ACTION_MASK,
            alloc: be32(c, 10),
        },
        0xA0 => Command::ReportLuns {
            select: c[2],
            alloc: be32(c, 6),
        },
        0xA3 => report_supported_opcodes(c)?,
        // Every row of the command table is parsed above; a new row without a parser is a
        // cowd bug, reported as such rather than as an unknown command.
        _ => return Err(Sense::internal_target_failure()),
    })
}

/// LBA and number of blocks of a 10-, 12- or 16-byte block command.
fn blocks(c: &[u8]) -> Blocks {
    match c.len() {
        10 => Blocks {
            lba: u64::from(be32(c, 2)),
            count: u32::from(be16(c, 7)),
        },
        12 => Blocks {
            lba: u64::from(be32(c, 2)),
            count: be32(c, 6),
        },
        _ => Blocks {
            lba: be64(c, 2),
            count: be32(c, 10),
        },
    }
}

/// READ CAPACITY: with PMI set to zero the LBA field must be zero (SBC-3 5.16).
fn check_pmi(lba_set: bool, pmi: bool) -> Result<(), Sense> {
    if lba_set && !pmi {
        return Err(Sense::invalid_field_in_cdb(2, None));
    }
    Ok(())
}

fn mode_sense(c: &[u8]) -> ModeSense {
    let ten = c[0] == 0x5A;
    ModeSense {
        ten,
        dbd: bit(c[1], 0x08),
        llbaa: ten && bit(c[1], 0x10),
        pc: match c[2] >> 6 {
            0 => PageControl::Current,
            1 => PageControl::Changeable,
            2 => PageControl::Default,
            _ => PageControl::Saved,
        },
        page: c[2] & 0x3F,
        subpage: c[3],
        alloc: if ten {
            u32::from(be16(c, 7))
        } else {
            u32::from(c[4])
        },
    }
}

fn report_supported_opcodes(c: &[u8]) -> Result<Command, Sense> {
    let opcode = c[3];
    let service_action = be16(c, 4);
    let what = match c[2] & 0x07 {
        0 => Reporting::All,
        1 => Reporting::OpcodeOnly { opcode },
        2 => Reporting::ServiceAction {
            opcode,
            service_action,
        },
        3 => Reporting::Either {
            opcode,
            service_action,
        },
        _ => return Err(Sense::invalid_field_in_cdb(2, Some(2))),
    };
    Ok(Command::ReportSupportedOpcodes {
        what,
        rctd: bit(c[2], 0x80),
        alloc: be32(c, 6),
    })
}

#[cfg(test)]
#[path = "cdb_tests.rs"]
mod tests;
