//! [`Response`]: what the transport sends back for one command: status, data-in, sense data
//! and the residual against the initiator's expected data transfer length.
//!
//! Residuals follow SAM-5 5.4.3 / RFC 7143 11.4.5: for a data-in command the bytes the
//! command produced (already cut to its allocation length) are compared with the expected
//! length; for a data-out command, the bytes the CDB asked for. More than expected is an
//! overflow (only the expected bytes are transferred), fewer an underflow.

use super::sense::{Sense, SenseFormat};

/// The SCSI STATUS byte (SAM-5 table 33).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    Good = 0x00,
    CheckCondition = 0x02,
    ConditionMet = 0x04,
    Busy = 0x08,
    ReservationConflict = 0x18,
    TaskSetFull = 0x28,
    AcaActive = 0x30,
    TaskAborted = 0x40,
}

/// Residual of a command against the expected data transfer length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Residual {
    #[default]
    None,
    /// The command transferred this many bytes fewer than expected.
    Underflow(u32),
    /// The command wanted this many bytes more than expected.
    Overflow(u32),
}

impl Residual {
    /// The residual of a command that wanted `bytes` when `expected` were expected.
    pub fn of(bytes: u64, expected: u32) -> Residual {
        let expected64 = u64::from(expected);
        if bytes > expected64 {
            Residual::Overflow(u32::try_from(bytes - expected64).unwrap_or(u32::MAX))
        } else if bytes < expected64 {
            Residual::Underflow(expected - bytes as u32)
        } else {
            Residual::None
        }
    }
}

/// The outcome of one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: Status,
    /// Data-in, at most the expected data transfer length.
    pub data_in: Vec<u8>,
    /// Encoded sense data (with CHECK CONDITION).
    pub sense: Option<Vec<u8>>,
    pub residual: Residual,
}

impl Response {
    /// GOOD with `data` as data-in, cut to `expected` bytes.
    pub fn data_in(mut data: Vec<u8>, expected: u32) -> Response {
        let residual = Residual::of(data.len() as u64, expected);
        data.truncate(expected as usize);
        Response {
            status: Status::Good,
            data_in: data,
            sense: None,
            residual,
        }
    }

    /// GOOD without data-in.
    pub fn good(residual: Residual) -> Response {
        Response {
            status: Status::Good,
            data_in: Vec::new(),
            sense: None,
            residual,
        }
    }

    /// CHECK CONDITION with `sense` encoded in `format`.
    pub fn check_condition(sense: &Sense, format: SenseFormat, residual: Residual) -> Response {
        Response {
            status: Status::CheckCondition,
            data_in: Vec::new(),
            sense: Some(sense.encode(format)),
            residual,
        }
    }
}

/// `data` cut to an allocation length.
pub fn cut(mut data: Vec<u8>, alloc: u32) -> Vec<u8> {
    data.truncate(alloc as usize);
    data
}
