//! EXTENDED COPY (LID1) parameter lists: parsing and encoding (pure; fuzzed).
//!
//! [`parse`] turns the Data-Out buffer of an EXTENDED COPY (83h, service action 00h) into a
//! [`CopyList`], or into a [`ParamError`] that names the sense to answer with; [`encode`] writes a
//! list back in its [`Format`]. `parse` never panics and allocates no more than the list holds.
//!
//! ```text
//!   SPC-2 / SPC-4 (LID1)                         Legato (vendor)
//!   0       LIST IDENTIFIER                      0       LIST IDENTIFIER
//!   1       STR(5) LIST ID USAGE(4:3) PRIO(2:0)  1       the same
//!   2..4    TARGET DESCRIPTOR LIST LENGTH        2..4    the same
//!   4..8    reserved                             4..8    reserved
//!   8..12   SEGMENT DESCRIPTOR LIST LENGTH       8..12   the same
//!   12..16  INLINE DATA LENGTH                   12..    target descriptors (32 bytes each)
//!   16..    target descriptors (32 bytes each)           segment descriptors
//!           segment descriptors                          (no inline data)
//!           inline data
//! ```
//!
//! The two formats differ at byte 12: E0h there, with a target descriptor list that is not
//! empty, is the type code of the Fibre Channel N_Port_Name target descriptor Legato's lists
//! start with; in an SPC list it would be the high byte of an inline data length of at least
//! 3.5 GiB, far beyond any [`Limits::max_inline_data`]. Anything else at byte 12 is read as SPC
//! and the length checks decide.
//!
//! Layouts, checked against three sources (none copied): T10 SPC-2 r20 §7.2 (header, segment
//! descriptors 00h/01h/02h, CAT/DC), SPC-4 (identification descriptor E4h, CSCD IDs 0000h–07FFh
//! and FFFFh, LIST ID USAGE), and the bytes the conformance suite and two targets use: libiscsi
//! `test-tool/iscsi-support.c` (`populate_tgt_desc`, `populate_seg_desc_b2b`,
//! `populate_param_header`), Linux LIO `drivers/target/target_core_xcopy.c`, FreeBSD CTL
//! `sys/cam/scsi/scsi_all.h` (`scsi_ec_cscd_id`, `scsi_ec_segment_b2b`, `scsi_ec_cscd_dtsp`).
//!
//! Checks, in this order (libiscsi's ExtendedCopy tests depend on it):
//! 1. a list shorter than its header: PARAMETER LIST LENGTH ERROR;
//! 2. target + segment lists longer than [`Limits::max_descriptor_list_length`]: PARAMETER
//!    LIST LENGTH ERROR (before any count, as `ExtendedCopy.DescrLimits` expects);
//! 3. inline data longer than [`Limits::max_inline_data`]: INLINE DATA LENGTH EXCEEDED;
//! 4. a list shorter than header + lists + inline data: PARAMETER LIST LENGTH ERROR (bytes
//!    beyond that are ignored, as LIO does);
//! 5. each target descriptor: count, type code, fields; then each segment descriptor: count,
//!    type code, DESCRIPTOR LENGTH, CSCD IDs, device types, lengths; for 04h (inline data →
//!    stream, SPC-4 6.4.6.6) an INLINE DATA OFFSET that is a multiple of 4 and a range within
//!    the inline data (beyond it: COPY ABORTED, INLINE DATA LENGTH EXCEEDED, pointing at
//!    the count), for 05h (embedded data → stream, 6.4.6.7) a DESCRIPTOR LENGTH that
//!    is a multiple of 4 and a count within the EMBEDDED DATA field (else INVALID FIELD IN
//!    PARAMETER LIST).
//!
//! A CSCD ID (source or destination index) names a target descriptor of the list (0000h–07FFh)
//! or, as SPC-4 allows, FFFFh: the logical unit that received the command, a block device. An ID
//! past the end of the list is COPY ABORTED / UNREACHABLE COPY TARGET, which is what libiscsi's
//! `ExtendedCopy.ValidateSegDescr` expects and what FreeBSD CTL answers; reserved IDs
//! (0800h–FFFEh) are INVALID FIELD IN PARAMETER LIST, as in LIO.

use std::ops::Range;

/// ILLEGAL REQUEST.
const ILLEGAL_REQUEST: u8 = 0x05;
/// COPY ABORTED.
const COPY_ABORTED: u8 = 0x0A;

const SPC_HEADER_LEN: usize = 16;
const LEGATO_HEADER_LEN: usize = 12;
/// Every target descriptor cowd implements is 32 bytes long.
const TARGET_LEN: usize = 32;
const MAX_DESIGNATOR_LEN: usize = 20;
/// The highest CSCD ID that indexes the target descriptor list (SPC-4 "CSCD descriptor ID").
const MAX_LIST_INDEX: u16 = 0x07FF;

/// Segment descriptor type code: block device to stream device.
pub const SEG_BLOCK_TO_STREAM: u8 = 0x00;
/// Segment descriptor type code: stream device to block device.
pub const SEG_STREAM_TO_BLOCK: u8 = 0x01;
/// Segment descriptor type code: block device to block device.
pub const SEG_BLOCK_TO_BLOCK: u8 = 0x02;
/// Segment descriptor type code: the list's inline data to a stream device.
pub const SEG_INLINE_TO_STREAM: u8 = 0x04;
/// Segment descriptor type code: data embedded in the descriptor to a stream device.
pub const SEG_EMBEDDED_TO_STREAM: u8 = 0x05;
/// Target descriptor type code: Fibre Channel N_Port_Name.
pub const TARGET_FC_N_PORT_NAME: u8 = 0xE0;
/// Target descriptor type code: identification descriptor (a VPD 83h designator).
pub const TARGET_IDENTIFICATION: u8 = 0xE4;
/// The CSCD ID of the logical unit the EXTENDED COPY command was sent to.
pub const LOCAL_LU: u16 = 0xFFFF;

/// Total length of a block→block segment descriptor (DESCRIPTOR LENGTH 0018h).
const B2B_LEN: usize = 28;
/// Total length of a block↔stream segment descriptor (DESCRIPTOR LENGTH 0014h).
const BLOCK_STREAM_LEN: usize = 24;
/// Total length of an inline→stream segment descriptor (DESCRIPTOR LENGTH 0010h).
const INLINE_STREAM_LEN: usize = 20;
/// Where the data of an embedded→stream segment descriptor starts (DESCRIPTOR LENGTH n−3,
/// a multiple of 4, so the data is zero-padded to a multiple of 4).
const EMBEDDED_DATA_AT: usize = 16;
/// The most embedded data a descriptor holds: DESCRIPTOR LENGTH is 16 bits and a multiple of 4.
const MAX_EMBEDDED: usize = (0xFFFF - (EMBEDDED_DATA_AT - 4)) & !3;

const PDT_BLOCK: u8 = 0x00;
const PDT_STREAM: u8 = 0x01;

/// Which header the list has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// SPC-2 / SPC-4 LID1: 16-byte header with an INLINE DATA LENGTH field.
    #[default]
    Spc,
    /// Legato's vendor format: 12-byte header, no inline data.
    Legato,
}

/// What the copy manager accepts; the same values are reported by RECEIVE COPY RESULTS
/// (OPERATING PARAMETERS) and the Third-party Copy VPD page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_target_descriptors: u16,
    pub max_segment_descriptors: u16,
    /// Largest target descriptor list plus segment descriptor list, in bytes.
    pub max_descriptor_list_length: u32,
    /// Largest amount of data one segment may write, in bytes; 0 for no limit. Checked where
    /// the target descriptors give the block length.
    pub max_segment_length: u32,
    /// Largest inline data (the bytes after the segment descriptors, which 04h segments
    /// write to streams).
    pub max_inline_data: u32,
    /// Largest STREAM DEVICE TRANSFER LENGTH, in bytes; 0 for no limit.
    pub max_stream_transfer_size: u32,
    /// Fibre Channel N_Port_Name target descriptors (E0h, and so Legato's format) are
    /// implemented: on when the copy manager has FC names it can resolve (port groups).
    pub fc_n_port_names: bool,
}

impl Default for Limits {
    /// 16 targets: a serverless backup names its source LUNs (a volume striped over a few),
    /// one or two destinations and a tape; 64 segments, as FreeBSD CTL allows (LIO allows 2
    /// and 1), keep one command's parse bounded while a backup application splits a file's
    /// extents over several commands. The descriptor list length leaves room for that many of
    /// the largest descriptors, so each count is reached before the length (libiscsi's
    /// `DescrLimits` sends count + 1 descriptors and expects the count's sense). 64 KiB of
    /// inline data: a tape label or a backup application's catalog record, not bulk data;
    /// 1 MiB stream transfers, a tape drive's usual largest block; no segment length limit;
    /// FC names off, as libiscsi's `DescrType` expects of a copy manager without FC names to
    /// resolve.
    fn default() -> Limits {
        let (targets, segments) = (16u16, 64u16);
        Limits {
            max_target_descriptors: targets,
            max_segment_descriptors: segments,
            max_descriptor_list_length: u32::from(targets) * TARGET_LEN as u32
                + u32::from(segments) * B2B_LEN as u32,
            max_segment_length: 0,
            max_inline_data: 64 << 10,
            max_stream_transfer_size: 1 << 20,
            fc_n_port_names: false,
        }
    }
}

impl Limits {
    /// Whether target descriptors of type `code` are implemented.
    pub fn supports_target(&self, code: u8) -> bool {
        code == TARGET_IDENTIFICATION || (code == TARGET_FC_N_PORT_NAME && self.fc_n_port_names)
    }

    /// The implemented segment and target descriptor type codes, ascending (for OPERATING
    /// PARAMETERS and the Supported Descriptors VPD descriptor).
    pub fn implemented_descriptor_codes(&self) -> Vec<u8> {
        let mut codes = vec![
            SEG_BLOCK_TO_STREAM,
            SEG_STREAM_TO_BLOCK,
            SEG_BLOCK_TO_BLOCK,
            SEG_INLINE_TO_STREAM,
            SEG_EMBEDDED_TO_STREAM,
        ];
        if self.fc_n_port_names {
            codes.push(TARGET_FC_N_PORT_NAME);
        }
        codes.push(TARGET_IDENTIFICATION);
        codes
    }
}

/// Device type specific parameters (bytes 28–31 of a target descriptor), by PERIPHERAL DEVICE
/// TYPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceParams {
    /// Direct access block device (00h): PAD, DISK BLOCK LENGTH (0: the device's own).
    Block { block_len: u32, pad: bool },
    /// Sequential access device (01h): FIXED, PAD, STREAM BLOCK LENGTH.
    Stream {
        fixed: bool,
        pad: bool,
        block_len: u32,
    },
    /// Any other peripheral device type (02h–1Fh), its parameters kept as sent; no segment
    /// type cowd implements accepts it.
    Other {
        peripheral_type: u8,
        params: [u8; 4],
    },
}

/// One target descriptor (a CSCD descriptor in SPC-4 words).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetDescriptor {
    /// E4h: a designator as in the Device Identification VPD page (83h). LU ID TYPE and NUL are
    /// ignored (obsolete in SPC-4; libiscsi's `ValidateTgtDescr` wants a reserved LU ID TYPE
    /// accepted).
    Identification {
        relative_initiator_port: u16,
        code_set: u8,
        association: u8,
        designator_type: u8,
        /// At most 20 bytes.
        designator: Vec<u8>,
        device: DeviceParams,
    },
    /// E0h: an FC port and a logical unit behind it (LU ID TYPE 00b: a LUN; 01b: a proxy
    /// token).
    FcNPortName {
        relative_initiator_port: u16,
        name: [u8; 8],
        lu_id_type: u8,
        lu_id: [u8; 8],
        device: DeviceParams,
    },
}

impl TargetDescriptor {
    /// Its device type specific parameters.
    pub fn device(&self) -> &DeviceParams {
        match self {
            TargetDescriptor::Identification { device, .. }
            | TargetDescriptor::FcNPortName { device, .. } => device,
        }
    }
}

/// One segment descriptor. `src` and `dst` are CSCD IDs: an index into
/// [`CopyList::targets`], or [`LOCAL_LU`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// 02h. `blocks` counts destination blocks when `dc` is set, source blocks otherwise.
    BlockToBlock {
        src: u16,
        dst: u16,
        blocks: u16,
        src_lba: u64,
        dst_lba: u64,
        dc: bool,
        cat: bool,
    },
    /// 00h: `blocks` source blocks from `lba`, written in `transfer_len`-byte writes.
    BlockToStream {
        src: u16,
        dst: u16,
        transfer_len: u32,
        blocks: u16,
        lba: u64,
        cat: bool,
    },
    /// 01h: read in `transfer_len`-byte reads, `blocks` destination blocks written from `lba`.
    StreamToBlock {
        src: u16,
        dst: u16,
        transfer_len: u32,
        blocks: u16,
        lba: u64,
        cat: bool,
    },
    /// 04h: `bytes` bytes of the list's inline data, from `offset` (a multiple of 4), to the
    /// stream.
    InlineToStream {
        dst: u16,
        transfer_len: u32,
        offset: u32,
        bytes: u32,
        cat: bool,
    },
    /// 05h: the first `bytes` bytes of `field`, the descriptor's EMBEDDED DATA field (a
    /// multiple of 4 long, zero-padded, as sent), to the stream.
    EmbeddedToStream {
        dst: u16,
        transfer_len: u32,
        bytes: u16,
        field: Vec<u8>,
        cat: bool,
    },
}

impl Segment {
    /// Its source and destination CSCD IDs; no source for data the list carries.
    pub fn ends(&self) -> (Option<u16>, u16) {
        match *self {
            Segment::BlockToBlock { src, dst, .. }
            | Segment::BlockToStream { src, dst, .. }
            | Segment::StreamToBlock { src, dst, .. } => (Some(src), dst),
            Segment::InlineToStream { dst, .. } | Segment::EmbeddedToStream { dst, .. } => {
                (None, dst)
            }
        }
    }

    /// Bytes of its descriptor, as [`parse`] read it and [`encode`] writes it.
    pub fn encoded_len(&self) -> usize {
        match self {
            Segment::BlockToBlock { .. } => B2B_LEN,
            Segment::BlockToStream { .. } | Segment::StreamToBlock { .. } => BLOCK_STREAM_LEN,
            Segment::InlineToStream { .. } => INLINE_STREAM_LEN,
            Segment::EmbeddedToStream { field, .. } => {
                EMBEDDED_DATA_AT + field.len().min(MAX_EMBEDDED).next_multiple_of(4)
            }
        }
    }

    /// The data a list carries for it (inline or embedded); `None` for a segment that copies
    /// from a device.
    pub fn carried<'a>(&'a self, list: &'a CopyList) -> Option<&'a [u8]> {
        match self {
            Segment::InlineToStream { offset, bytes, .. } => {
                let start = *offset as usize;
                list.inline.get(start..start.checked_add(*bytes as usize)?)
            }
            Segment::EmbeddedToStream { bytes, field, .. } => field.get(..usize::from(*bytes)),
            _ => None,
        }
    }
}

/// A parsed EXTENDED COPY (LID1) parameter list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CopyList {
    pub format: Format,
    pub list_id: u8,
    /// STR: the disk references are mostly sequential over striped disks.
    pub str_bit: bool,
    /// LIST ID USAGE (SPC-3 on: 00b hold data, 10b discard it, 11b no list ID); in SPC-2
    /// bit 4 alone was NRCR, see [`CopyList::nrcr`].
    pub list_id_usage: u8,
    pub priority: u8,
    pub targets: Vec<TargetDescriptor>,
    pub segments: Vec<Segment>,
    pub inline: Vec<u8>,
}

impl CopyList {
    /// SPC-2's NO RECEIVE COPY RESULTS bit (the high bit of LIST ID USAGE).
    pub fn nrcr(&self) -> bool {
        self.list_id_usage & 0b10 != 0
    }
}

/// Why a parameter list is refused; [`ParamError::sense`] gives the sense to answer with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("parameter list length error: {0}")]
    ParameterListLength(&'static str),
    #[error("invalid field in parameter list at byte {byte}: {what}")]
    InvalidField { byte: usize, what: &'static str },
    #[error("more than {max} target descriptors")]
    TooManyTargets { max: u16 },
    #[error("unsupported target descriptor type code {code:#04x} at byte {byte}")]
    UnsupportedTargetType { code: u8, byte: usize },
    #[error("more than {max} segment descriptors")]
    TooManySegments { max: u16 },
    #[error("unsupported segment descriptor type code {code:#04x} at byte {byte}")]
    UnsupportedSegmentType { code: u8, byte: usize },
    #[error("inline data length {len} exceeds the maximum {max}")]
    InlineDataLengthExceeded { len: u32, max: u32 },
    #[error("segment {segment} writes inline data past the end of the list's {len} bytes")]
    InlineDataBeyond { segment: u16, len: u32, byte: usize },
    #[error("segment {segment} names target descriptor {index}, which the list does not have")]
    UnreachableTarget {
        segment: u16,
        index: u16,
        byte: usize,
    },
}

/// Byte offsets of the header fields that errors point at.
const TARGET_LIST_LENGTH_AT: usize = 2;
const SEGMENT_LIST_LENGTH_AT: usize = 8;
const INLINE_DATA_LENGTH_AT: usize = 12;

impl ParamError {
    /// (sense key, ASC, ASCQ).
    pub fn sense(&self) -> (u8, u8, u8) {
        match self {
            ParamError::ParameterListLength(_) => (ILLEGAL_REQUEST, 0x1A, 0x00),
            ParamError::InvalidField { .. } => (ILLEGAL_REQUEST, 0x26, 0x00),
            ParamError::TooManyTargets { .. } => (ILLEGAL_REQUEST, 0x26, 0x06),
            ParamError::UnsupportedTargetType { .. } => (ILLEGAL_REQUEST, 0x26, 0x07),
            ParamError::TooManySegments { .. } => (ILLEGAL_REQUEST, 0x26, 0x08),
            ParamError::UnsupportedSegmentType { .. } => (ILLEGAL_REQUEST, 0x26, 0x09),
            ParamError::InlineDataLengthExceeded { .. } => (ILLEGAL_REQUEST, 0x26, 0x0B),
            ParamError::InlineDataBeyond { .. } => (COPY_ABORTED, 0x26, 0x0B),
            ParamError::UnreachableTarget { .. } => (COPY_ABORTED, 0x08, 0x04),
        }
    }

    /// The byte of the parameter list the error is about, for the FIELD POINTER of the
    /// sense-key specific bytes (none when it does not fit in 16 bits).
    pub fn field_pointer(&self) -> Option<u16> {
        let byte = match self {
            ParamError::ParameterListLength(_) => return None,
            ParamError::InvalidField { byte, .. }
            | ParamError::UnsupportedTargetType { byte, .. }
            | ParamError::UnsupportedSegmentType { byte, .. }
            | ParamError::UnreachableTarget { byte, .. }
            | ParamError::InlineDataBeyond { byte, .. } => *byte,
            ParamError::TooManyTargets { .. } => TARGET_LIST_LENGTH_AT,
            ParamError::TooManySegments { .. } => SEGMENT_LIST_LENGTH_AT,
            ParamError::InlineDataLengthExceeded { .. } => INLINE_DATA_LENGTH_AT,
        };
        u16::try_from(byte).ok()
    }

    /// The three SENSE-KEY SPECIFIC bytes: SKSV set, C/D (ILLEGAL REQUEST) or SD (COPY
    /// ABORTED) zero — the pointer counts from the start of the parameter list — no bit pointer.
    pub fn sense_key_specific(&self) -> Option<[u8; 3]> {
        let [hi, lo] = self.field_pointer()?.to_be_bytes();
        Some([0x80, hi, lo])
    }

    /// The segment number for the COMMAND-SPECIFIC INFORMATION field of a COPY ABORTED sense.
    pub fn segment(&self) -> Option<u16> {
        match self {
            ParamError::UnreachableTarget { segment, .. }
            | ParamError::InlineDataBeyond { segment, .. } => Some(*segment),
            _ => None,
        }
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be24(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([0, b[at], b[at + 1], b[at + 2]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// Where the header puts the three parts of the list.
struct Layout {
    targets: Range<usize>,
    segments: Range<usize>,
    inline: Range<usize>,
}

/// Reads the header and checks its lengths against the limits and the list (checks 1–4).
fn layout(list: &[u8], format: Format, limits: &Limits) -> Result<Layout, ParamError> {
    let header_len = match format {
        Format::Spc => SPC_HEADER_LEN,
        Format::Legato => LEGATO_HEADER_LEN,
    };
    if list.len() < header_len {
        return Err(ParamError::ParameterListLength(
            "parameter list shorter than its header",
        ));
    }
    let target_len = u64::from(be16(list, TARGET_LIST_LENGTH_AT));
    let segment_len = u64::from(be32(list, SEGMENT_LIST_LENGTH_AT));
    let inline_len = match format {
        Format::Spc => be32(list, INLINE_DATA_LENGTH_AT),
        Format::Legato => 0,
    };
    if target_len + segment_len > u64::from(limits.max_descriptor_list_length) {
        return Err(ParamError::ParameterListLength(
            "descriptor lists longer than the maximum descriptor list length",
        ));
    }
    if inline_len > limits.max_inline_data {
        return Err(ParamError::InlineDataLengthExceeded {
            len: inline_len,
            max: limits.max_inline_data,
        });
    }
    let end = header_len as u64 + target_len + segment_len + u64::from(inline_len);
    if end > list.len() as u64 {
        return Err(ParamError::ParameterListLength(
            "parameter list shorter than its header says",
        ));
    }
    // All three fit in the list, so in usize.
    let segments_at = header_len + target_len as usize;
    let inline_at = segments_at + segment_len as usize;
    Ok(Layout {
        targets: header_len..segments_at,
        segments: segments_at..inline_at,
        inline: inline_at..end as usize,
    })
}

/// Parses an EXTENDED COPY (LID1) parameter list. An empty list (PARAMETER LIST LENGTH 0, "not
/// an error") is an empty [`CopyList`].
pub fn parse(list: &[u8], limits: &Limits) -> Result<CopyList, ParamError> {
    if list.is_empty() {
        return Ok(CopyList::default());
    }
    let legato = list.get(LEGATO_HEADER_LEN) == Some(&TARGET_FC_N_PORT_NAME)
        && be16(list, TARGET_LIST_LENGTH_AT) != 0;
    let format = if legato { Format::Legato } else { Format::Spc };
    let layout = layout(list, format, limits)?;
    let targets = parse_targets(list, layout.targets, limits)?;
    let inline_len = layout.inline.len() as u32;
    let segments = parse_segments(list, layout.segments, &targets, limits, inline_len)?;
    Ok(CopyList {
        format,
        list_id: list[0],
        str_bit: list[1] & 0x20 != 0,
        list_id_usage: (list[1] >> 3) & 0b11,
        priority: list[1] & 0b111,
        targets,
        segments,
        inline: list[layout.inline].to_vec(),
    })
}

fn parse_targets(
    list: &[u8],
    range: Range<usize>,
    limits: &Limits,
) -> Result<Vec<TargetDescriptor>, ParamError> {
    let max = limits.max_target_descriptors;
    let mut targets = Vec::with_capacity((range.len() / TARGET_LEN).min(usize::from(max)));
    let mut at = range.start;
    while at < range.end {
        if targets.len() == usize::from(max) {
            return Err(ParamError::TooManyTargets { max });
        }
        let code = list[at];
        if !limits.supports_target(code) {
            return Err(ParamError::UnsupportedTargetType { code, byte: at });
        }
        if range.end - at < TARGET_LEN {
            return Err(ParamError::ParameterListLength(
                "target descriptor list ends inside a descriptor",
            ));
        }
        targets.push(target(&list[at..at + TARGET_LEN], at)?);
        at += TARGET_LEN;
    }
    Ok(targets)
}

/// One 32-byte target descriptor of an implemented type, found at byte `at` of the list.
fn target(d: &[u8], at: usize) -> Result<TargetDescriptor, ParamError> {
    let relative_initiator_port = be16(d, 2);
    let device = device_params(d[1] & 0x1F, [d[28], d[29], d[30], d[31]]);
    if d[0] == TARGET_FC_N_PORT_NAME {
        return Ok(TargetDescriptor::FcNPortName {
            relative_initiator_port,
            name: d[4..12].try_into().unwrap(),
            lu_id_type: d[1] >> 6,
            lu_id: d[12..20].try_into().unwrap(),
            device,
        });
    }
    let len = usize::from(d[7]);
    if len > MAX_DESIGNATOR_LEN {
        return Err(ParamError::InvalidField {
            byte: at + 7,
            what: "designator longer than 20 bytes",
        });
    }
    Ok(TargetDescriptor::Identification {
        relative_initiator_port,
        code_set: d[4] & 0x0F,
        association: (d[5] >> 4) & 0b11,
        designator_type: d[5] & 0x0F,
        designator: d[8..8 + len].to_vec(),
        device,
    })
}

fn device_params(peripheral_type: u8, p: [u8; 4]) -> DeviceParams {
    let block_len = be24(&p, 1);
    let pad = p[0] & 0x04 != 0;
    match peripheral_type {
        PDT_BLOCK => DeviceParams::Block { block_len, pad },
        PDT_STREAM => DeviceParams::Stream {
            fixed: p[0] & 0x01 != 0,
            pad,
            block_len,
        },
        _ => DeviceParams::Other {
            peripheral_type,
            params: p,
        },
    }
}

fn parse_segments(
    list: &[u8],
    range: Range<usize>,
    targets: &[TargetDescriptor],
    limits: &Limits,
    inline_len: u32,
) -> Result<Vec<Segment>, ParamError> {
    let max = limits.max_segment_descriptors;
    let mut segments = Vec::with_capacity((range.len() / BLOCK_STREAM_LEN).min(usize::from(max)));
    let mut at = range.start;
    while at < range.end {
        if segments.len() == usize::from(max) {
            return Err(ParamError::TooManySegments { max });
        }
        if range.end - at < 4 {
            return Err(ParamError::ParameterListLength(
                "segment descriptor list ends inside a descriptor header",
            ));
        }
        let code = list[at];
        let stated = usize::from(be16(list, at + 2)) + 4;
        let len = match code {
            SEG_BLOCK_TO_BLOCK => B2B_LEN,
            SEG_BLOCK_TO_STREAM | SEG_STREAM_TO_BLOCK => BLOCK_STREAM_LEN,
            SEG_INLINE_TO_STREAM => INLINE_STREAM_LEN,
            // DESCRIPTOR LENGTH: a multiple of 4 that covers the fixed fields.
            SEG_EMBEDDED_TO_STREAM if stated >= EMBEDDED_DATA_AT && stated % 4 == 0 => stated,
            SEG_EMBEDDED_TO_STREAM => 0,
            _ => return Err(ParamError::UnsupportedSegmentType { code, byte: at }),
        };
        if stated != len {
            return Err(ParamError::InvalidField {
                byte: at + 2,
                what: "descriptor length does not match the descriptor type code",
            });
        }
        if range.end - at < len {
            return Err(ParamError::ParameterListLength(
                "segment descriptor list ends inside a descriptor",
            ));
        }
        let checker = SegmentChecker {
            at,
            number: segments.len() as u16,
            targets,
            limits,
            inline_len,
        };
        segments.push(checker.segment(&list[at..at + len])?);
        at += len;
    }
    Ok(segments)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Block,
    Stream,
}

/// Checks one segment descriptor against the target descriptors and the limits.
struct SegmentChecker<'a> {
    /// Byte of the list where the descriptor starts.
    at: usize,
    /// Its number in the segment list.
    number: u16,
    targets: &'a [TargetDescriptor],
    limits: &'a Limits,
    /// Bytes of inline data the list carries.
    inline_len: u32,
}

impl SegmentChecker<'_> {
    fn invalid(&self, offset: usize, what: &'static str) -> ParamError {
        ParamError::InvalidField {
            byte: self.at + offset,
            what,
        }
    }

    /// Checks the CSCD ID at `offset` names a device of `kind`; gives the block length the
    /// target descriptor states, if it is a block device and states one.
    fn endpoint(&self, d: &[u8], offset: usize, kind: Kind) -> Result<Option<u32>, ParamError> {
        let index = be16(d, offset);
        if index == LOCAL_LU {
            return match kind {
                Kind::Block => Ok(None),
                Kind::Stream => Err(self.invalid(offset, "the local logical unit is no stream")),
            };
        }
        if index > MAX_LIST_INDEX {
            return Err(self.invalid(offset, "reserved CSCD descriptor ID"));
        }
        let Some(target) = self.targets.get(usize::from(index)) else {
            return Err(ParamError::UnreachableTarget {
                segment: self.number,
                index,
                byte: self.at + offset,
            });
        };
        match (kind, target.device()) {
            (Kind::Block, DeviceParams::Block { block_len, .. }) => {
                Ok(Some(*block_len).filter(|&l| l != 0))
            }
            (Kind::Stream, DeviceParams::Stream { .. }) => Ok(None),
            (Kind::Block, _) => Err(self.invalid(offset, "target is not a block device")),
            (Kind::Stream, _) => Err(self.invalid(offset, "target is not a stream device")),
        }
    }

    /// `blocks` blocks of `block_len` bytes (when known) within the maximum segment length.
    fn length(&self, blocks: u16, block_len: Option<u32>, offset: usize) -> Result<(), ParamError> {
        let max = u64::from(self.limits.max_segment_length);
        match block_len {
            Some(len) if max != 0 && u64::from(blocks) * u64::from(len) > max => {
                Err(self.invalid(offset, "segment longer than the maximum segment length"))
            }
            _ => Ok(()),
        }
    }

    fn transfer_len(&self, d: &[u8]) -> Result<u32, ParamError> {
        let len = be24(d, 9);
        let max = self.limits.max_stream_transfer_size;
        if max != 0 && len > max {
            return Err(self.invalid(9, "stream transfer longer than the maximum"));
        }
        Ok(len)
    }

    /// One segment descriptor of an implemented type and the right length.
    fn segment(&self, d: &[u8]) -> Result<Segment, ParamError> {
        let (src, dst) = (be16(d, 4), be16(d, 6));
        let (dc, cat) = (d[1] & 0x02 != 0, d[1] & 0x01 != 0);
        match d[0] {
            SEG_BLOCK_TO_BLOCK => {
                let src_len = self.endpoint(d, 4, Kind::Block)?;
                let dst_len = self.endpoint(d, 6, Kind::Block)?;
                let blocks = be16(d, 10);
                self.length(blocks, if dc { dst_len } else { src_len }, 10)?;
                Ok(Segment::BlockToBlock {
                    src,
                    dst,
                    blocks,
                    src_lba: be64(d, 12),
                    dst_lba: be64(d, 20),
                    dc,
                    cat,
                })
            }
            SEG_BLOCK_TO_STREAM => {
                let src_len = self.endpoint(d, 4, Kind::Block)?;
                self.endpoint(d, 6, Kind::Stream)?;
                let transfer_len = self.transfer_len(d)?;
                let blocks = be16(d, 14);
                self.length(blocks, src_len, 14)?;
                Ok(Segment::BlockToStream {
                    src,
                    dst,
                    transfer_len,
                    blocks,
                    lba: be64(d, 16),
                    cat,
                })
            }
            SEG_STREAM_TO_BLOCK => {
                self.endpoint(d, 4, Kind::Stream)?;
                let dst_len = self.endpoint(d, 6, Kind::Block)?;
                let transfer_len = self.transfer_len(d)?;
                let blocks = be16(d, 14);
                self.length(blocks, dst_len, 14)?;
                Ok(Segment::StreamToBlock {
                    src,
                    dst,
                    transfer_len,
                    blocks,
                    lba: be64(d, 16),
                    cat,
                })
            }
            SEG_INLINE_TO_STREAM => {
                self.endpoint(d, 6, Kind::Stream)?;
                let transfer_len = self.transfer_len(d)?;
                let (offset, bytes) = (be32(d, 12), be32(d, 16));
                if offset % 4 != 0 {
                    return Err(self.invalid(12, "inline data offset not a multiple of 4"));
                }
                if u64::from(offset) + u64::from(bytes) > u64::from(self.inline_len) {
                    return Err(ParamError::InlineDataBeyond {
                        segment: self.number,
                        len: self.inline_len,
                        byte: self.at + 16,
                    });
                }
                Ok(Segment::InlineToStream {
                    dst,
                    transfer_len,
                    offset,
                    bytes,
                    cat,
                })
            }
            _ => {
                self.endpoint(d, 6, Kind::Stream)?;
                let transfer_len = self.transfer_len(d)?;
                let bytes = be16(d, 12);
                if usize::from(bytes) > d.len() - EMBEDDED_DATA_AT {
                    return Err(self.invalid(12, "more embedded bytes than the descriptor holds"));
                }
                Ok(Segment::EmbeddedToStream {
                    dst,
                    transfer_len,
                    bytes,
                    field: d[EMBEDDED_DATA_AT..].to_vec(),
                    cat,
                })
            }
        }
    }
}

/// Encodes a list in its format. Fields are masked to their widths, designators cut at 20
/// bytes, embedded data fields at 65,520 (and zero-padded to a multiple of 4, the count cut
/// to the field), and a Legato list's inline data (which that format cannot carry) dropped; a Legato
/// list must start with an FC N_Port_Name target to be read back as one. Lists [`parse`]
/// returns encode to a list that parses back to them.
pub fn encode(list: &CopyList) -> Vec<u8> {
    let targets: Vec<u8> = list.targets.iter().flat_map(encode_target).collect();
    let segments: Vec<u8> = list.segments.iter().flat_map(encode_segment).collect();
    let mut out = Vec::with_capacity(SPC_HEADER_LEN + targets.len() + segments.len());
    out.push(list.list_id);
    out.push(
        u8::from(list.str_bit) << 5 | (list.list_id_usage & 0b11) << 3 | (list.priority & 0b111),
    );
    out.extend_from_slice(
        &u16::try_from(targets.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(
        &u32::try_from(segments.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    let inline: &[u8] = match list.format {
        Format::Spc => &list.inline,
        Format::Legato => &[],
    };
    if list.format == Format::Spc {
        out.extend_from_slice(
            &u32::try_from(inline.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
    }
    out.extend_from_slice(&targets);
    out.extend_from_slice(&segments);
    out.extend_from_slice(inline);
    out
}

fn encode_target(t: &TargetDescriptor) -> [u8; TARGET_LEN] {
    let mut d = [0u8; TARGET_LEN];
    let (peripheral_type, params) = encode_device(t.device());
    d[1] = peripheral_type;
    d[28..32].copy_from_slice(&params);
    match t {
        TargetDescriptor::Identification {
            relative_initiator_port,
            code_set,
            association,
            designator_type,
            designator,
            ..
        } => {
            let len = designator.len().min(MAX_DESIGNATOR_LEN);
            d[0] = TARGET_IDENTIFICATION;
            d[2..4].copy_from_slice(&relative_initiator_port.to_be_bytes());
            d[4] = code_set & 0x0F;
            d[5] = (association & 0b11) << 4 | (designator_type & 0x0F);
            d[7] = len as u8;
            d[8..8 + len].copy_from_slice(&designator[..len]);
        }
        TargetDescriptor::FcNPortName {
            relative_initiator_port,
            name,
            lu_id_type,
            lu_id,
            ..
        } => {
            d[0] = TARGET_FC_N_PORT_NAME;
            d[1] |= (lu_id_type & 0b11) << 6;
            d[2..4].copy_from_slice(&relative_initiator_port.to_be_bytes());
            d[4..12].copy_from_slice(name);
            d[12..20].copy_from_slice(lu_id);
        }
    }
    d
}

/// PERIPHERAL DEVICE TYPE and the four device type specific bytes.
fn encode_device(device: &DeviceParams) -> (u8, [u8; 4]) {
    let with_len = |flags: u8, len: u32| {
        let [_, a, b, c] = len.to_be_bytes();
        [flags, a, b, c]
    };
    match *device {
        DeviceParams::Block { block_len, pad } => {
            (PDT_BLOCK, with_len(u8::from(pad) << 2, block_len))
        }
        DeviceParams::Stream {
            fixed,
            pad,
            block_len,
        } => (
            PDT_STREAM,
            with_len(u8::from(pad) << 2 | u8::from(fixed), block_len),
        ),
        DeviceParams::Other {
            peripheral_type,
            params,
        } => (peripheral_type & 0x1F, params),
    }
}

fn encode_segment(s: &Segment) -> Vec<u8> {
    let header = |code: u8, flags: u8, len: usize, src: u16, dst: u16| {
        let mut d = vec![0u8; len];
        d[0] = code;
        d[1] = flags;
        d[2..4].copy_from_slice(&((len - 4) as u16).to_be_bytes());
        d[4..6].copy_from_slice(&src.to_be_bytes());
        d[6..8].copy_from_slice(&dst.to_be_bytes());
        d
    };
    match *s {
        Segment::BlockToBlock {
            src,
            dst,
            blocks,
            src_lba,
            dst_lba,
            dc,
            cat,
        } => {
            let flags = u8::from(dc) << 1 | u8::from(cat);
            let mut d = header(SEG_BLOCK_TO_BLOCK, flags, B2B_LEN, src, dst);
            d[10..12].copy_from_slice(&blocks.to_be_bytes());
            d[12..20].copy_from_slice(&src_lba.to_be_bytes());
            d[20..28].copy_from_slice(&dst_lba.to_be_bytes());
            d
        }
        Segment::BlockToStream {
            src,
            dst,
            transfer_len,
            blocks,
            lba,
            cat,
        }
        | Segment::StreamToBlock {
            src,
            dst,
            transfer_len,
            blocks,
            lba,
            cat,
        } => {
            let code = match s {
                Segment::BlockToStream { .. } => SEG_BLOCK_TO_STREAM,
                _ => SEG_STREAM_TO_BLOCK,
            };
            let mut d = header(code, u8::from(cat), BLOCK_STREAM_LEN, src, dst);
            d[9..12].copy_from_slice(&transfer_len.to_be_bytes()[1..]);
            d[14..16].copy_from_slice(&blocks.to_be_bytes());
            d[16..24].copy_from_slice(&lba.to_be_bytes());
            d
        }
        Segment::InlineToStream {
            dst,
            transfer_len,
            offset,
            bytes,
            cat,
        } => {
            let code = SEG_INLINE_TO_STREAM;
            let mut d = header(code, u8::from(cat), INLINE_STREAM_LEN, 0, dst);
            d[9..12].copy_from_slice(&transfer_len.to_be_bytes()[1..]);
            d[12..16].copy_from_slice(&offset.to_be_bytes());
            d[16..20].copy_from_slice(&bytes.to_be_bytes());
            d
        }
        Segment::EmbeddedToStream {
            dst,
            transfer_len,
            bytes,
            ref field,
            cat,
        } => {
            let field = &field[..field.len().min(MAX_EMBEDDED)];
            let code = SEG_EMBEDDED_TO_STREAM;
            let mut d = header(code, u8::from(cat), s.encoded_len(), 0, dst);
            d[9..12].copy_from_slice(&transfer_len.to_be_bytes()[1..]);
            let bytes = bytes.min(field.len() as u16);
            d[12..14].copy_from_slice(&bytes.to_be_bytes());
            d[EMBEDDED_DATA_AT..EMBEDDED_DATA_AT + field.len()].copy_from_slice(field);
            d
        }
    }
}

#[cfg(test)]
#[path = "params_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "params_inline_tests.rs"]
mod inline_tests;
