//! The data-out of one write command (RFC 7143 §4.2.5.2, §11.7): immediate data, unsolicited
//! Data-Out up to FirstBurstLength, then the R2Ts the target sends for the rest, and the
//! checks on every Data-Out PDU (pure).
//!
//! ```text
//!   offset 0 ── immediate ── unsolicited (TTT ffffffffh, F ends it) ── R2T 0 ── R2T 1 ── wanted
//!             └──────────── at most FirstBurstLength ──────────────┘  └ MaxBurstLength each ┘
//! ```
//!
//! The session negotiates DataPDUInOrder=Yes and DataSequenceInOrder=Yes, so every Data-Out
//! continues exactly where the previous one ended, and the R2Ts are answered in order. The
//! target solicits only what the CDB uses (`wanted`, at most the expected data transfer
//! length); unsolicited bytes beyond it count for the offsets but are not kept. Any
//! deviation is a [`DataOutError`]: the command fails with its [`sense`](DataOutError::sense)
//! (the connection goes on; Data-Out still arriving for the command is dropped).

use std::collections::VecDeque;

use super::pdu::{DataOut, RESERVED_TAG, ScsiCommand};
use crate::scsi::{Sense, SenseKey};

/// The negotiated values that shape a command's data-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub first_burst_length: u32,
    pub max_burst_length: u32,
    pub max_outstanding_r2t: u16,
    pub initial_r2t: bool,
    pub immediate_data: bool,
}

/// A Data-Out (or immediate data) that breaks the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataOutError {
    #[error("immediate data although ImmediateData=No")]
    ImmediateNotAllowed,
    #[error("unsolicited data (F=0) although InitialR2T=Yes")]
    UnsolicitedNotAllowed,
    #[error("{got} bytes of unsolicited data, beyond the first burst of {limit}")]
    FirstBurst { got: u64, limit: u32 },
    #[error("{got} bytes of data, beyond the expected data transfer length {expected}")]
    BeyondExpected { got: u64, expected: u32 },
    #[error("Data-Out with DataSN {got} where {expected} was due")]
    DataSn { got: u32, expected: u32 },
    #[error("Data-Out at buffer offset {got} where {expected} was due")]
    Offset { got: u32, expected: u32 },
    #[error("Data-Out with target transfer tag {0:#x}, which is not the one due")]
    UnknownTtt(u32),
    #[error("Data-Out with {got} bytes for an R2T of {len}")]
    BeyondBurst { got: u64, len: u32 },
    #[error("the F bit ended a burst {missing} bytes short")]
    ShortBurst { missing: u32 },
}

impl DataOutError {
    /// The sense data the command fails with (ABORTED COMMAND, with the additional sense
    /// codes SPC-4 has for iSCSI data transfers).
    pub fn sense(&self) -> Sense {
        let (asc, ascq) = match self {
            // UNEXPECTED UNSOLICITED DATA
            DataOutError::ImmediateNotAllowed
            | DataOutError::UnsolicitedNotAllowed
            | DataOutError::FirstBurst { .. } => (0x0c, 0x0c),
            // TOO MUCH WRITE DATA
            DataOutError::BeyondExpected { .. } | DataOutError::BeyondBurst { .. } => (0x4b, 0x02),
            // DATA OFFSET ERROR
            DataOutError::Offset { .. } => (0x4b, 0x05),
            // INVALID TARGET PORT TRANSFER TAG RECEIVED
            DataOutError::UnknownTtt(_) => (0x4b, 0x01),
            // DATA PHASE ERROR
            DataOutError::DataSn { .. } | DataOutError::ShortBurst { .. } => (0x4b, 0x00),
        };
        Sense::new(SenseKey::AbortedCommand, asc, ascq)
    }
}

/// An R2T to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct R2tRequest {
    pub ttt: u32,
    pub r2t_sn: u32,
    pub offset: u32,
    pub len: u32,
}

/// An outstanding R2T.
#[derive(Debug, Clone, Copy)]
struct Burst {
    ttt: u32,
    len: u32,
    got: u32,
    data_sn: u32,
}

/// The open unsolicited sequence.
#[derive(Debug, Clone, Copy)]
struct Unsolicited {
    data_sn: u32,
    /// End offset it may not pass.
    limit: u32,
}

/// The data-out of one command being collected.
#[derive(Debug)]
pub struct Collect {
    limits: Limits,
    expected: u32,
    /// Bytes the command uses (at most `expected`).
    wanted: u32,
    /// `wanted` bytes, of which the first `filled` hold data (the rest is scratch).
    buf: Vec<u8>,
    filled: usize,
    /// Bytes received, from offset 0 without gaps.
    received: u32,
    unsolicited: Option<Unsolicited>,
    /// End offset of the data asked for by R2Ts so far (`None` until the unsolicited part is
    /// over).
    solicited_to: Option<u32>,
    bursts: VecDeque<Burst>,
    r2t_sn: u32,
}

impl Collect {
    /// Starts collecting for `cmd`, which carried `immediate` as its data segment; the
    /// command uses `wanted` bytes.
    pub fn new(
        limits: Limits,
        cmd: &ScsiCommand,
        wanted: u32,
        immediate: &[u8],
    ) -> Result<Collect, DataOutError> {
        let expected = cmd.expected_len;
        if !immediate.is_empty() && !limits.immediate_data {
            return Err(DataOutError::ImmediateNotAllowed);
        }
        if !cmd.final_ && limits.initial_r2t {
            return Err(DataOutError::UnsolicitedNotAllowed);
        }
        let unsolicited_limit = limits.first_burst_length.min(expected);
        let len = immediate.len() as u64;
        if len > u64::from(expected) {
            return Err(DataOutError::BeyondExpected { got: len, expected });
        }
        if len > u64::from(unsolicited_limit) {
            return Err(DataOutError::FirstBurst {
                got: len,
                limit: limits.first_burst_length,
            });
        }
        let wanted = wanted.min(expected);
        let mut c = Collect {
            limits,
            expected,
            wanted,
            buf: crate::scsi::buffers::scratch(wanted as usize),
            filled: 0,
            received: 0,
            unsolicited: (!cmd.final_).then_some(Unsolicited {
                data_sn: 0,
                limit: unsolicited_limit,
            }),
            solicited_to: None,
            bursts: VecDeque::new(),
            r2t_sn: 0,
        };
        c.take(immediate);
        c.open_solicited();
        Ok(c)
    }

    /// Takes one Data-Out PDU.
    pub fn data_out(&mut self, h: &DataOut, data: &[u8]) -> Result<(), DataOutError> {
        self.check(h, data.len())?;
        self.advance(h, data.len());
        self.take(data);
        self.open_solicited();
        Ok(())
    }

    /// For a Data-Out whose `len` bytes of data are all data the command uses and that keeps
    /// every rule: its accounting done as [`data_out`](Self::data_out) would, and the buffer
    /// its data goes into at the offset given, lent until [`placed`](Self::placed) gives it
    /// back (the data is read into it, not copied). `None` otherwise (nothing changed: use
    /// `data_out`).
    pub fn place(&mut self, h: &DataOut, len: usize) -> Option<(Vec<u8>, usize)> {
        let fits = self.filled == self.received as usize && self.filled + len <= self.buf.len();
        if !fits || self.check(h, len).is_err() {
            return None;
        }
        self.advance(h, len);
        Some((std::mem::take(&mut self.buf), self.filled))
    }

    /// Takes back the buffer [`place`](Self::place) lent, with `len` bytes written at the
    /// offset it gave.
    pub fn placed(&mut self, buf: Vec<u8>, len: usize) {
        debug_assert_eq!(buf.len(), self.wanted as usize);
        self.buf = buf;
        self.filled += len;
        self.received += len as u32;
        self.open_solicited();
    }

    /// Whether a Data-Out with `len` bytes of data keeps every rule (changes nothing).
    fn check(&self, h: &DataOut, len: usize) -> Result<(), DataOutError> {
        if h.buffer_offset != self.received {
            return Err(DataOutError::Offset {
                got: h.buffer_offset,
                expected: self.received,
            });
        }
        let end = u64::from(self.received) + len as u64;
        if end > u64::from(self.expected) {
            return Err(DataOutError::BeyondExpected {
                got: end,
                expected: self.expected,
            });
        }
        if h.ttt == RESERVED_TAG {
            let Some(u) = &self.unsolicited else {
                return Err(DataOutError::UnknownTtt(h.ttt));
            };
            check_data_sn(h.data_sn, u.data_sn)?;
            if end > u64::from(u.limit) {
                return Err(DataOutError::FirstBurst {
                    got: end,
                    limit: self.limits.first_burst_length,
                });
            }
            return Ok(());
        }
        let Some(b) = self.bursts.front() else {
            return Err(DataOutError::UnknownTtt(h.ttt));
        };
        if b.ttt != h.ttt {
            return Err(DataOutError::UnknownTtt(h.ttt));
        }
        check_data_sn(h.data_sn, b.data_sn)?;
        let got = u64::from(b.got) + len as u64;
        if got > u64::from(b.len) {
            return Err(DataOutError::BeyondBurst { got, len: b.len });
        }
        if h.final_ && got != u64::from(b.len) {
            return Err(DataOutError::ShortBurst {
                missing: b.len - got as u32,
            });
        }
        Ok(())
    }

    /// The sequence state after a Data-Out that [`check`](Self::check) accepted.
    fn advance(&mut self, h: &DataOut, len: usize) {
        if h.ttt == RESERVED_TAG {
            let u = self.unsolicited.as_mut().expect("checked");
            u.data_sn = u.data_sn.wrapping_add(1);
            if h.final_ {
                self.unsolicited = None;
            }
            return;
        }
        let b = self.bursts.front_mut().expect("checked");
        b.got += len as u32;
        b.data_sn = b.data_sn.wrapping_add(1);
        if h.final_ {
            self.bursts.pop_front();
        }
    }

    /// The R2Ts to send now (none while unsolicited data may still come, or while the
    /// outstanding ones reach MaxOutstandingR2T); `next_ttt` gives each its tag.
    pub fn r2ts(&mut self, mut next_ttt: impl FnMut() -> u32) -> Vec<R2tRequest> {
        let mut out = Vec::new();
        let Some(to) = self.solicited_to else {
            return out;
        };
        let mut to = to;
        while to < self.wanted && self.bursts.len() < usize::from(self.limits.max_outstanding_r2t) {
            let len = self.limits.max_burst_length.min(self.wanted - to);
            let r = R2tRequest {
                ttt: next_ttt(),
                r2t_sn: self.r2t_sn,
                offset: to,
                len,
            };
            self.bursts.push_back(Burst {
                ttt: r.ttt,
                len,
                got: 0,
                data_sn: 0,
            });
            self.r2t_sn = self.r2t_sn.wrapping_add(1);
            to += len;
            out.push(r);
        }
        self.solicited_to = Some(to);
        out
    }

    /// All the data the command uses has arrived, and no more is due.
    pub fn is_complete(&self) -> bool {
        self.unsolicited.is_none()
            && self.bursts.is_empty()
            && self.solicited_to.is_some_and(|to| to >= self.wanted)
    }

    /// Whether `ttt` is the tag of an outstanding R2T of this command.
    pub fn has_ttt(&self, ttt: u32) -> bool {
        self.bursts.iter().any(|b| b.ttt == ttt)
    }

    /// The data collected (the bytes the command uses). Bytes that never arrived (the
    /// command is not complete) are zeros, never what the buffer held before.
    pub fn into_data(mut self) -> Vec<u8> {
        self.buf[self.filled..].fill(0);
        self.buf
    }

    /// Keeps the part of `data` (at offset `received`) the command uses.
    fn take(&mut self, data: &[u8]) {
        let n = data.len().min(self.buf.len() - self.filled);
        self.buf[self.filled..self.filled + n].copy_from_slice(&data[..n]);
        self.filled += n;
        self.received += data.len() as u32;
    }

    /// Once the unsolicited part is over, R2Ts start where it ended.
    fn open_solicited(&mut self) {
        if self.unsolicited.is_none() && self.solicited_to.is_none() {
            self.solicited_to = Some(self.received);
        }
    }
}

fn check_data_sn(got: u32, expected: u32) -> Result<(), DataOutError> {
    if got != expected {
        return Err(DataOutError::DataSn { got, expected });
    }
    Ok(())
}

#[cfg(test)]
#[path = "dataout_tests.rs"]
mod tests;
