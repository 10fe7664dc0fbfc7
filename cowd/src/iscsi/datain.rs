//! The PDUs that answer one SCSI command (RFC 7143 §11.4, §11.7): its data-in cut into
//! Data-In PDUs, and its status, either in the last Data-In (GOOD without sense data) or in a
//! SCSI Response (pure).
//!
//! ```text
//!   data-in ── pieces of at most MaxXmitDataSegmentLength, F at each MaxBurstLength ──>
//!     Data-In DataSN 0, 1, ..., n-1   [S=1 with status and residual on the last, if GOOD]
//!     SCSI Response (status, sense data, residual, ExpDataSN = n)   otherwise
//! ```
//!
//! The status takes one StatSN; Data-In PDUs without status carry none.

use crate::scsi::{self, Response, Status};

use std::ops::Range;

use super::digest::Digests;
use super::frame::{Frame, encode_head, encode_padding, encode_tail};
use super::login::Sequence;
use super::pdu::{
    DataIn, DataInStatus, Header, Lun, Pdu, PduError, RESERVED_TAG, RESPONSE_COMPLETED, Residual,
    ScsiResponse,
};

/// Data-In sizes the initiator accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The initiator's MaxRecvDataSegmentLength.
    pub max_xmit_data_segment_length: u32,
    pub max_burst_length: u32,
}

/// The residual of a SCSI response in its iSCSI form.
pub fn residual(r: scsi::Residual) -> Residual {
    match r {
        scsi::Residual::None => Residual::None,
        scsi::Residual::Underflow(n) => Residual::Underflow(n),
        scsi::Residual::Overflow(n) => Residual::Overflow(n),
    }
}

/// The answer to the command `itt`: its Data-In PDUs, then a SCSI Response unless the status
/// went out with the data. `seq` is the StatSN the status takes and the window to advertise.
pub fn answer(resp: &Response, itt: u32, limits: Limits, seq: Sequence) -> Vec<Frame> {
    let (data_in, status) = plan(resp, resp.data_in.len(), itt, limits, seq);
    let mut frames: Vec<Frame> = data_in
        .into_iter()
        .map(|(h, r)| Frame::new(h, resp.data_in[r].to_vec()))
        .collect();
    frames.extend(status);
    frames
}

/// The data-in an answer carries.
#[derive(Debug, Clone, Copy)]
pub enum Payload<'a> {
    Bytes(&'a [u8]),
    /// This many bytes, sent from elsewhere.
    Sized(usize),
}

/// PDUs encoded for one vectored write: headers, padding and digests in `buf`, and where
/// each piece of the PDUs is, in the order they go out (one part, or none: `buf` is all).
#[derive(Debug, Default)]
pub struct Gathered {
    pub buf: Vec<u8>,
    pub parts: Vec<Part>,
}

/// Where the bytes of an encoded answer are, in the order they go out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Bytes of the encoding buffer (headers, padding, digests).
    Encoded(Range<usize>),
    /// Bytes of the response's data-in, sent from where they are.
    DataIn(Range<usize>),
}

/// [`answer`] on the wire without copying the data-in: headers, padding and digests are
/// appended to `gathered.buf`, and `gathered.parts` lists, in order, the ranges of that
/// buffer and of the data-in that make up the PDUs (for one vectored write). The data-in is
/// `data`: the response's own, or, for a response whose data-in is sent from elsewhere (a
/// file's page cache), `Sized` with its length (only without data digests: this side cannot
/// compute them).
pub fn encode_answer(
    resp: &Response,
    data: Payload<'_>,
    itt: u32,
    limits: Limits,
    seq: Sequence,
    digests: Digests,
    gathered: &mut Gathered,
) -> Result<(), PduError> {
    let Gathered { buf: out, parts } = gathered;
    let len = match data {
        Payload::Bytes(b) => b.len(),
        Payload::Sized(n) => {
            assert!(!digests.data, "data sent from elsewhere has no data digest");
            n
        }
    };
    let (data_in, status) = plan(resp, len, itt, limits, seq);
    for (h, r) in data_in {
        let from = out.len();
        encode_head(&h, &[], r.len(), digests, out)?;
        encoded(parts, from..out.len());
        if !r.is_empty() {
            parts.push(Part::DataIn(r.clone()));
        }
        let from = out.len();
        match data {
            Payload::Bytes(b) => encode_tail(&b[r], digests, out),
            Payload::Sized(_) => encode_padding(r.len(), out),
        }
        encoded(parts, from..out.len());
    }
    if let Some(f) = status {
        let from = out.len();
        f.encode_into(digests, out)?;
        encoded(parts, from..out.len());
    }
    Ok(())
}

/// Adds the encoded bytes `r` to `parts` (joined to the encoded bytes before them).
fn encoded(parts: &mut Vec<Part>, r: Range<usize>) {
    match parts.last_mut() {
        Some(Part::Encoded(last)) if last.end == r.start => last.end = r.end,
        _ if !r.is_empty() => parts.push(Part::Encoded(r)),
        _ => {}
    }
}

/// The Data-In headers with the part of the data-in each carries, and the SCSI Response.
fn plan(
    resp: &Response,
    data_len: usize,
    itt: u32,
    limits: Limits,
    seq: Sequence,
) -> (Vec<(Header, Range<usize>)>, Option<Frame>) {
    let pieces = pieces(data_len, limits);
    let collapse = resp.status == Status::Good && resp.sense.is_none() && !pieces.is_empty();
    let last = pieces.len().saturating_sub(1);
    let data_in = pieces
        .iter()
        .enumerate()
        .map(|(i, &(offset, len, final_))| {
            let status = (collapse && i == last).then_some(DataInStatus {
                status: resp.status as u8,
                stat_sn: seq.stat_sn,
                residual: residual(resp.residual),
            });
            let header = Header {
                ahs_words: 0,
                data_len: len as u32,
                pdu: Pdu::DataIn(DataIn {
                    final_: final_ || status.is_some(),
                    ack: false,
                    status,
                    lun: Lun::ZERO,
                    itt,
                    ttt: RESERVED_TAG,
                    exp_cmd_sn: seq.exp_cmd_sn,
                    max_cmd_sn: seq.max_cmd_sn,
                    data_sn: i as u32,
                    buffer_offset: offset as u32,
                }),
            };
            (header, offset..offset + len)
        })
        .collect();
    let status = (!collapse).then(|| response(resp, itt, pieces.len() as u32, seq));
    (data_in, status)
}

/// The SCSI Response PDU: status, residual and sense data (SenseLength, then the sense).
fn response(resp: &Response, itt: u32, exp_data_sn: u32, seq: Sequence) -> Frame {
    let data = match &resp.sense {
        Some(sense) => {
            let mut d = (sense.len() as u16).to_be_bytes().to_vec();
            d.extend_from_slice(sense);
            d
        }
        None => Vec::new(),
    };
    let header = Header {
        ahs_words: 0,
        data_len: 0,
        pdu: Pdu::ScsiResponse(ScsiResponse {
            bidi_residual: Residual::None,
            residual: residual(resp.residual),
            response: RESPONSE_COMPLETED,
            status: resp.status as u8,
            itt,
            snack_tag: 0,
            stat_sn: seq.stat_sn,
            exp_cmd_sn: seq.exp_cmd_sn,
            max_cmd_sn: seq.max_cmd_sn,
            exp_data_sn,
        }),
    };
    Frame::new(header, data)
}

/// (offset, length, ends a sequence) of each Data-In PDU for `len` bytes.
fn pieces(len: usize, limits: Limits) -> Vec<(usize, usize, bool)> {
    let seg = limits.max_xmit_data_segment_length.max(1) as usize;
    let burst = limits.max_burst_length.max(1) as usize;
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < len {
        let burst_end = (offset / burst + 1) * burst;
        let end = (offset + seg).min(burst_end).min(len);
        out.push((offset, end - offset, end == burst_end || end == len));
        offset = end;
    }
    out
}

#[cfg(test)]
#[path = "datain_tests.rs"]
mod tests;
