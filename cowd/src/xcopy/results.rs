//! RECEIVE COPY RESULTS (84h) parameter data for LID1 lists (pure): COPY STATUS (00h),
//! OPERATING PARAMETERS (03h) and FAILED SEGMENT DETAILS (04h).
//!
//! Each encoder builds the whole parameter data from a plain struct and cuts it to the CDB's
//! ALLOCATION LENGTH; AVAILABLE DATA always counts the whole. Layouts per SPC-3 §6.17 / SPC-4
//! (RECEIVE COPY STATUS(LID1), RECEIVE COPY OPERATING PARAMETERS, RECEIVE COPY FAILURE
//! DETAILS(LID1)), checked against libiscsi's `scsi_receivecopyresults_datain_unmarshall`
//! (what the conformance suite reads), LIO's `target_rcr_operating_parameters` and FreeBSD
//! CTL's `ctl_tpc.c` / `scsi_all.h`.
//!
//! ```text
//!   COPY STATUS (12 bytes)        FAILED SEGMENT DETAILS (60 + s bytes, or 4 when none)
//!   0..4    AVAILABLE DATA = 8    0..4    AVAILABLE DATA = 56 + s (0 when none)
//!   4       HDD(7) | STATUS(6:0)  4..56   reserved
//!   5..7    SEGMENTS PROCESSED    56      COPY COMMAND STATUS (a SCSI status)
//!   7       TRANSFER COUNT UNITS  57      reserved
//!   8..12   TRANSFER COUNT        58..60  SENSE DATA LENGTH = s
//!                                 60..    SENSE DATA
//!
//!   OPERATING PARAMETERS (44 + n bytes)
//!   0..4    AVAILABLE DATA = 40 + n          24..28  HELD DATA LIMIT
//!   4       SNLID(0)                         28..32  MAXIMUM STREAM DEVICE TRANSFER SIZE
//!   8..10   MAXIMUM TARGET DESCRIPTOR COUNT  34..36  TOTAL CONCURRENT COPIES
//!   10..12  MAXIMUM SEGMENT DESCRIPTOR COUNT 36      MAXIMUM CONCURRENT COPIES
//!   12..16  MAXIMUM DESCRIPTOR LIST LENGTH   37..40  DATA SEGMENT / INLINE / HELD GRANULARITY
//!   16..20  MAXIMUM SEGMENT LENGTH           43      IMPLEMENTED DESCRIPTOR LIST LENGTH = n
//!   20..24  MAXIMUM INLINE DATA LENGTH       44..    implemented descriptor type codes
//! ```

use super::params::Limits;

/// Service action of RECEIVE COPY RESULTS: COPY STATUS.
pub const SA_COPY_STATUS: u8 = 0x00;
/// Service action of RECEIVE COPY RESULTS: RECEIVE DATA (not implemented: no held data).
pub const SA_RECEIVE_DATA: u8 = 0x01;
/// Service action of RECEIVE COPY RESULTS: OPERATING PARAMETERS.
pub const SA_OPERATING_PARAMETERS: u8 = 0x03;
/// Service action of RECEIVE COPY RESULTS: FAILED SEGMENT DETAILS.
pub const SA_FAILED_SEGMENT_DETAILS: u8 = 0x04;

/// COPY MANAGER STATUS of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CopyManagerStatus {
    InProgress = 0x00,
    Completed = 0x01,
    CompletedWithError = 0x02,
}

/// TRANSFER COUNT UNITS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TransferUnits {
    Bytes = 0x00,
    Kibibytes = 0x01,
    Mebibytes = 0x02,
    Gibibytes = 0x03,
    Tebibytes = 0x04,
    Pebibytes = 0x05,
    Exbibytes = 0x06,
    /// Logical blocks of the destination.
    LogicalBlocks = 0xF1,
}

impl TransferUnits {
    /// The smallest binary unit in which `bytes` fits the 32-bit TRANSFER COUNT, and the count
    /// of whole units.
    pub fn scale(bytes: u64) -> (TransferUnits, u32) {
        const UNITS: [TransferUnits; 7] = [
            TransferUnits::Bytes,
            TransferUnits::Kibibytes,
            TransferUnits::Mebibytes,
            TransferUnits::Gibibytes,
            TransferUnits::Tebibytes,
            TransferUnits::Pebibytes,
            TransferUnits::Exbibytes,
        ];
        let mut count = bytes;
        for unit in UNITS {
            if let Ok(c) = u32::try_from(count) {
                return (unit, c);
            }
            count >>= 10;
        }
        // u64::MAX >> 60 is 15: the loop has returned by exbibytes.
        (TransferUnits::Exbibytes, count as u32)
    }
}

/// COPY STATUS of one list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyStatus {
    pub status: CopyManagerStatus,
    /// HDD: held data was discarded.
    pub held_data_discarded: bool,
    pub segments_processed: u16,
    pub units: TransferUnits,
    pub transfer_count: u32,
}

/// COPY STATUS parameter data (12 bytes), cut to `alloc_len`.
pub fn copy_status(s: &CopyStatus, alloc_len: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    out.extend_from_slice(&8u32.to_be_bytes());
    out.push(u8::from(s.held_data_discarded) << 7 | (s.status as u8 & 0x7F));
    out.extend_from_slice(&s.segments_processed.to_be_bytes());
    out.push(s.units as u8);
    out.extend_from_slice(&s.transfer_count.to_be_bytes());
    cut(out, alloc_len)
}

/// What OPERATING PARAMETERS reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatingParameters {
    /// SNLID: lists without a list identifier (LIST ID USAGE 11b) are supported.
    pub snlid: bool,
    pub max_target_descriptors: u16,
    pub max_segment_descriptors: u16,
    pub max_descriptor_list_length: u32,
    pub max_segment_length: u32,
    pub max_inline_data: u32,
    pub held_data_limit: u32,
    pub max_stream_transfer_size: u32,
    pub total_concurrent_copies: u16,
    pub max_concurrent_copies: u8,
    /// log2 of the granularities.
    pub data_segment_granularity: u8,
    pub inline_data_granularity: u8,
    pub held_data_granularity: u8,
    /// Implemented descriptor type codes, ascending (at most 255 are reported).
    pub implemented: Vec<u8>,
}

impl OperatingParameters {
    /// The parameters of a copy manager that parses with `limits`, holds no data (no
    /// RECEIVE DATA) and runs one copy at a time; the copy manager overrides the concurrency.
    pub fn from_limits(limits: &Limits) -> OperatingParameters {
        OperatingParameters {
            snlid: true,
            max_target_descriptors: limits.max_target_descriptors,
            max_segment_descriptors: limits.max_segment_descriptors,
            max_descriptor_list_length: limits.max_descriptor_list_length,
            max_segment_length: limits.max_segment_length,
            max_inline_data: limits.max_inline_data,
            held_data_limit: 0,
            max_stream_transfer_size: limits.max_stream_transfer_size,
            total_concurrent_copies: 1,
            max_concurrent_copies: 1,
            data_segment_granularity: 0,
            inline_data_granularity: 0,
            held_data_granularity: 0,
            implemented: limits.implemented_descriptor_codes(),
        }
    }
}

/// OPERATING PARAMETERS parameter data (44 bytes + the implemented codes), cut to
/// `alloc_len`.
pub fn operating_parameters(p: &OperatingParameters, alloc_len: u32) -> Vec<u8> {
    let codes = &p.implemented[..p.implemented.len().min(255)];
    let mut out = Vec::with_capacity(44 + codes.len());
    out.extend_from_slice(&(40 + codes.len() as u32).to_be_bytes());
    out.extend_from_slice(&[u8::from(p.snlid), 0, 0, 0]);
    out.extend_from_slice(&p.max_target_descriptors.to_be_bytes());
    out.extend_from_slice(&p.max_segment_descriptors.to_be_bytes());
    for v in [
        p.max_descriptor_list_length,
        p.max_segment_length,
        p.max_inline_data,
        p.held_data_limit,
        p.max_stream_transfer_size,
    ] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&p.total_concurrent_copies.to_be_bytes());
    out.extend_from_slice(&[
        p.max_concurrent_copies,
        p.data_segment_granularity,
        p.inline_data_granularity,
        p.held_data_granularity,
        0,
        0,
        0,
        codes.len() as u8,
    ]);
    out.extend_from_slice(codes);
    cut(out, alloc_len)
}

/// The failure of a list that completed with an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedSegmentDetails {
    /// COPY COMMAND STATUS: the SCSI status the EXTENDED COPY command ended with.
    pub scsi_status: u8,
    /// The sense data it returned (at most 65535 bytes are reported).
    pub sense: Vec<u8>,
}

/// FAILED SEGMENT DETAILS parameter data, cut to `alloc_len`: 60 bytes and the sense data, or
/// only a zero AVAILABLE DATA when there are no details for the list.
pub fn failed_segment_details(d: Option<&FailedSegmentDetails>, alloc_len: u32) -> Vec<u8> {
    let Some(d) = d else {
        return cut(0u32.to_be_bytes().to_vec(), alloc_len);
    };
    let sense = &d.sense[..d.sense.len().min(usize::from(u16::MAX))];
    let mut out = Vec::with_capacity(60 + sense.len());
    out.extend_from_slice(&(56 + sense.len() as u32).to_be_bytes());
    out.resize(56, 0);
    out.extend_from_slice(&[d.scsi_status, 0]);
    out.extend_from_slice(&(sense.len() as u16).to_be_bytes());
    out.extend_from_slice(sense);
    cut(out, alloc_len)
}

fn cut(mut data: Vec<u8>, alloc_len: u32) -> Vec<u8> {
    data.truncate(usize::try_from(alloc_len).unwrap_or(usize::MAX));
    data
}

#[cfg(test)]
#[path = "results_tests.rs"]
mod tests;
