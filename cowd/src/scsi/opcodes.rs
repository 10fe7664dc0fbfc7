//! The supported commands ([`COMMANDS`], in `opcode_table.rs`) and REPORT SUPPORTED OPERATION
//! CODES (SPC-4 6.35), which reports them.
//!
//! One table serves both directions: [`lookup`] finds the row for a CDB (the decoder checks
//! the CDB against the row's usage data), and [`report`] encodes rows as parameter data
//! (all-commands format, or one-command format for reporting options 1, 2 and 3, with
//! command timeouts descriptors when RCTD is set). Which rows a logical unit offers depends
//! on what it can do ([`Offered`]).

use super::sense::Sense;

pub use super::opcode_table::COMMANDS;

/// Command timeouts descriptor values, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout {
    pub nominal: u32,
    pub recommended: u32,
}

/// When a logical unit offers a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    Always,
    /// Only with an EXTENDED COPY engine ([`CopyCommands`](super::copy::CopyCommands)).
    WithCopy,
    /// Only when the device can deallocate (LBPU in the Logical Block Provisioning VPD page).
    WithUnmap,
}

/// One supported command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandInfo {
    pub name: &'static str,
    pub opcode: u8,
    /// The service action, in bits 4..0 of CDB byte 1.
    pub service_action: Option<u8>,
    /// CDB usage data; its length is the CDB length.
    pub usage: &'static [u8],
    pub timeout: Timeout,
    pub offered: Offered,
}

/// What a logical unit can do, deciding which rows it offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    pub copy: bool,
    pub unmap: bool,
}

impl Features {
    /// True when `info` is offered.
    pub fn offers(self, info: &CommandInfo) -> bool {
        match info.offered {
            Offered::Always => true,
            Offered::WithCopy => self.copy,
            Offered::WithUnmap => self.unmap,
        }
    }
}

/// The mask of the SERVICE ACTION field in CDB byte 1.
pub const SERVICE_ACTION_MASK: u8 = 0x1F;

/// Finds the row for a CDB, or the sense data for an unknown operation code or service action.
pub fn lookup(cdb: &[u8]) -> Result<&'static CommandInfo, Sense> {
    let opcode = *cdb.first().ok_or_else(Sense::invalid_field_in_command_iu)?;
    let mut rows = COMMANDS.iter().filter(|c| c.opcode == opcode).peekable();
    let first = rows.peek().copied().ok_or_else(Sense::invalid_opcode)?;
    if first.service_action.is_none() {
        return Ok(first);
    }
    let sa = cdb.get(1).ok_or_else(Sense::invalid_field_in_command_iu)? & SERVICE_ACTION_MASK;
    rows.find(|c| c.service_action == Some(sa))
        .ok_or_else(|| Sense::invalid_field_in_cdb(1, Some(4)))
}

/// The REPORTING OPTIONS of REPORT SUPPORTED OPERATION CODES.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reporting {
    /// 000b: every command.
    All,
    /// 001b: one operation code that has no service actions.
    OpcodeOnly { opcode: u8 },
    /// 010b: one operation code and service action.
    ServiceAction { opcode: u8, service_action: u16 },
    /// 011b: one operation code, with its service action if it has them.
    Either { opcode: u8, service_action: u16 },
}

/// SUPPORT field values of the one-command format.
const SUPPORT_NONE: u8 = 0b001;
const SUPPORT_STANDARD: u8 = 0b011;

/// Field pointer of the REPORTING OPTIONS field, for the senses that refuse an option.
fn bad_option() -> Sense {
    Sense::invalid_field_in_cdb(2, Some(2))
}

/// The full (untruncated) parameter data of REPORT SUPPORTED OPERATION CODES.
pub fn report(what: Reporting, rctd: bool, features: Features) -> Result<Vec<u8>, Sense> {
    let offered = || COMMANDS.iter().filter(move |c| features.offers(c));
    let (opcode, wanted_sa) = match what {
        Reporting::All => return Ok(all_commands(offered(), rctd)),
        Reporting::OpcodeOnly { opcode } => (opcode, None),
        Reporting::ServiceAction {
            opcode,
            service_action,
        }
        | Reporting::Either {
            opcode,
            service_action,
        } => (opcode, Some(service_action)),
    };
    let rows: Vec<&CommandInfo> = offered().filter(|c| c.opcode == opcode).collect();
    let Some(first) = rows.first() else {
        return Ok(one_command(None, rctd));
    };
    let has_sa = first.service_action.is_some();
    let found = match what {
        Reporting::OpcodeOnly { .. } if has_sa => return Err(bad_option()),
        Reporting::ServiceAction { .. } if !has_sa => return Err(bad_option()),
        _ if !has_sa => Some(*first).filter(|_| wanted_sa.unwrap_or(0) == 0),
        _ => rows
            .iter()
            .find(|c| c.service_action.map(u16::from) == wanted_sa)
            .copied(),
    };
    Ok(one_command(found, rctd))
}

fn all_commands<'a>(rows: impl Iterator<Item = &'a CommandInfo>, rctd: bool) -> Vec<u8> {
    let mut out = vec![0u8; 4];
    for c in rows {
        let sa = u16::from(c.service_action.unwrap_or(0));
        out.push(c.opcode);
        out.push(0);
        out.extend_from_slice(&sa.to_be_bytes());
        out.push(0);
        let mut flags = 0;
        if rctd {
            flags |= 0x02;
        }
        if c.service_action.is_some() {
            flags |= 0x01;
        }
        out.push(flags);
        out.extend_from_slice(&(c.usage.len() as u16).to_be_bytes());
        if rctd {
            out.extend_from_slice(&timeouts_descriptor(c.timeout));
        }
    }
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out
}

fn one_command(row: Option<&CommandInfo>, rctd: bool) -> Vec<u8> {
    let Some(c) = row else {
        return vec![0, SUPPORT_NONE, 0, 0];
    };
    let mut out = vec![0, SUPPORT_STANDARD];
    if rctd {
        out[1] |= 0x80;
    }
    out.extend_from_slice(&(c.usage.len() as u16).to_be_bytes());
    out.extend_from_slice(c.usage);
    if rctd {
        out.extend_from_slice(&timeouts_descriptor(c.timeout));
    }
    out
}

/// The command timeouts descriptor (SPC-4 6.35.4): length 0Ah, then the two timeouts.
fn timeouts_descriptor(t: Timeout) -> [u8; 12] {
    let mut d = [0u8; 12];
    d[1] = 0x0A;
    d[4..8].copy_from_slice(&t.nominal.to_be_bytes());
    d[8..12].copy_from_slice(&t.recommended.to_be_bytes());
    d
}

#[cfg(test)]
#[path = "opcodes_tests.rs"]
mod tests;
