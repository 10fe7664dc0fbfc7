//! One record of a stream: a fixed-size block that says what it is (pure: bytes in, plain data
//! out, and the reverse).
//!
//! Every record of a stream has the same size (`record_size`, a multiple of 512 between
//! [`MIN_RECORD_SIZE`] and [`MAX_RECORD_SIZE`]), so a tape drive in fixed-block mode takes each
//! one as a block and `dd bs=record_size` copies a stream file record by record:
//!
//! ```text
//!   0          128                        128 + payload length           record_size
//!   ├─ header ──┼─ payload ─────────────────┼─ zero padding ──────────────────┤
//! ```
//!
//! The header, all integers little-endian:
//!
//! | offset | bytes | field                                                        |
//! |-------:|------:|--------------------------------------------------------------|
//! |      0 |     8 | magic `COWDSTRM`                                             |
//! |      8 |     2 | format version ([`VERSION`])                                 |
//! |     10 |     1 | record kind ([`RecordKind`])                                 |
//! |     11 |     1 | source designator length (0..=32)                            |
//! |     12 |     4 | record size in bytes, header included                        |
//! |     16 |     8 | stream id (random, the same in every record of a stream)     |
//! |     24 |     8 | sequence number (0, 1, 2, … over every record of the stream) |
//! |     32 |     4 | medium number (0 for the first medium of a set)              |
//! |     36 |     4 | block size of the source, bytes                              |
//! |     40 |    32 | source designator (an NAA designator), zero-padded           |
//! |     72 |     8 | source offset of the payload, bytes (Data records)           |
//! |     80 |     8 | time the stream started: seconds since the Unix epoch        |
//! |     88 |     4 | … and nanoseconds (< 10⁹)                                    |
//! |     92 |     4 | payload length                                               |
//! |     96 |     4 | CRC-32C of the payload                                       |
//! |    100 |    24 | reserved, zero                                               |
//! |    124 |     4 | CRC-32C of bytes 0..124                                      |
//!
//! The payload of a [`RecordKind::StreamHeader`] is a [`Description`], of a
//! [`RecordKind::Trailer`] a [`Totals`] (layouts at each), of a [`RecordKind::Data`] the source's
//! bytes, of a [`RecordKind::Inline`] bytes the requester sent (no source offset), of a
//! [`RecordKind::Filemark`] nothing. Kind 5 (Inline) came after the first streams were written:
//! a stream without Inline records is read by readers that do not know it, one with them is
//! refused there as of an unknown kind.
//!
//! [`decode`] accepts exactly what [`encode`] makes: both checksums, zero reserved bytes, zero
//! padding and zero designator bytes past its length are checked, so one flipped bit anywhere
//! in a record is an error, and an accepted record encodes back to the same bytes.

use thiserror::Error;

/// Bytes of the record header.
pub const HEADER_LEN: usize = 128;
/// The format version this code writes and reads.
pub const VERSION: u16 = 1;
/// The record size when none is given (64 KiB).
pub const DEFAULT_RECORD_SIZE: u32 = 64 << 10;
/// The smallest record: one 512-byte sector.
pub const MIN_RECORD_SIZE: u32 = 512;
/// The largest record (16 MiB, the most a tape block is usually allowed).
pub const MAX_RECORD_SIZE: u32 = 16 << 20;
/// Longest source designator.
pub const MAX_DESIGNATOR: usize = 32;
/// Longest label of a [`Description`], bytes of UTF-8 (so that a description fits the
/// smallest record).
pub const MAX_LABEL: usize = 256;

const MAGIC: [u8; 8] = *b"COWDSTRM";
const HEADER_CRC_AT: usize = 124;
const RESERVED: std::ops::Range<usize> = 100..124;

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// First record of the stream on each medium; its payload is a [`Description`].
    StreamHeader = 1,
    /// Bytes of the source, from the header's source offset on.
    Data = 2,
    /// Last record of the stream; its payload is the stream's [`Totals`].
    Trailer = 3,
    /// A filemark on a medium without filemarks of its own (a file, a FIFO); no payload.
    Filemark = 4,
    /// Bytes that are no part of the source (an EXTENDED COPY's inline or embedded data), in
    /// stream order between Data records; the source offset is 0.
    Inline = 5,
}

impl RecordKind {
    fn from_u8(b: u8) -> Option<RecordKind> {
        Some(match b {
            1 => RecordKind::StreamHeader,
            2 => RecordKind::Data,
            3 => RecordKind::Trailer,
            4 => RecordKind::Filemark,
            5 => RecordKind::Inline,
            _ => return None,
        })
    }
}

/// The source designator (an NAA designator of the copied logical unit), up to 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Designator {
    bytes: [u8; MAX_DESIGNATOR],
    len: u8,
}

impl Designator {
    /// A designator of `bytes`, refused when longer than [`MAX_DESIGNATOR`].
    pub fn new(bytes: &[u8]) -> Result<Designator, RecordError> {
        if bytes.len() > MAX_DESIGNATOR {
            return Err(RecordError::DesignatorTooLong(bytes.len()));
        }
        let mut d = Designator {
            bytes: [0; MAX_DESIGNATOR],
            len: bytes.len() as u8,
        };
        d.bytes[..bytes.len()].copy_from_slice(bytes);
        Ok(d)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for Designator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A point in time as the header stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    pub secs: u64,
    /// Nanoseconds, below 10⁹.
    pub nanos: u32,
}

impl Timestamp {
    /// The current time (the epoch if the clock is before it).
    pub fn now() -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp {
            secs: d.as_secs(),
            nanos: d.subsec_nanos(),
        }
    }

    /// The time as a `SystemTime`, when it is one this system can represent.
    pub fn to_system_time(self) -> Option<std::time::SystemTime> {
        let since = std::time::Duration::new(self.secs, self.nanos);
        std::time::UNIX_EPOCH.checked_add(since)
    }
}

/// The header of one record, less what [`encode`] derives from the payload (its length and
/// checksum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub kind: RecordKind,
    /// Size of every record of the stream, header included.
    pub record_size: u32,
    pub stream_id: u64,
    /// Position of this record in the stream, from 0, over every medium.
    pub sequence: u64,
    /// Which medium of a multi-medium set this record is on, from 0.
    pub medium: u32,
    pub designator: Designator,
    /// Block size of the source, bytes.
    pub block_size: u32,
    /// Where the payload of a Data record belongs in the source, bytes.
    pub source_offset: u64,
    /// When the stream started.
    pub started: Timestamp,
}

/// Why bytes are not a record, or a record cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordError {
    #[error("{0} bytes are too few for a record header ({HEADER_LEN})")]
    TooShort(usize),
    #[error("not a cowd stream record (magic {0:02x?})")]
    BadMagic([u8; 8]),
    #[error("header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    HeaderChecksum { stored: u32, computed: u32 },
    #[error("format version {0} (this cowd reads version {VERSION})")]
    UnsupportedVersion(u16),
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    #[error(
        "record size {0} is not a multiple of 512 between {MIN_RECORD_SIZE} and {MAX_RECORD_SIZE}"
    )]
    BadRecordSize(u32),
    #[error("record of {actual} bytes, its header says {declared}")]
    SizeMismatch { declared: u32, actual: usize },
    #[error("source designator of {0} bytes (at most {MAX_DESIGNATOR})")]
    DesignatorTooLong(usize),
    #[error("source designator has bytes past its length")]
    DesignatorPadding,
    #[error("reserved header bytes are not zero")]
    Reserved,
    #[error("timestamp nanoseconds {0} out of range")]
    BadTimestamp(u32),
    #[error("payload of {len} bytes does not fit a {record_size}-byte record")]
    PayloadTooLong { len: usize, record_size: u32 },
    #[error("payload checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    PayloadChecksum { stored: u32, computed: u32 },
    #[error("padding after the payload is not zero")]
    Padding,
    #[error("{what} payload malformed: {why}")]
    BadPayload {
        what: &'static str,
        why: &'static str,
    },
}

/// Payload bytes one record of `record_size` holds.
pub fn payload_capacity(record_size: u32) -> usize {
    (record_size as usize).saturating_sub(HEADER_LEN)
}

/// Checks a record size: a multiple of 512 in [`MIN_RECORD_SIZE`]..=[`MAX_RECORD_SIZE`].
pub fn check_record_size(record_size: u32) -> Result<(), RecordError> {
    if record_size % 512 != 0 || !(MIN_RECORD_SIZE..=MAX_RECORD_SIZE).contains(&record_size) {
        return Err(RecordError::BadRecordSize(record_size));
    }
    Ok(())
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
fn put(out: &mut [u8], at: usize, bytes: &[u8]) {
    out[at..at + bytes.len()].copy_from_slice(bytes);
}

/// Writes the record of `header` and `payload` into `out` (exactly `header.record_size`
/// bytes): header, payload, zero padding.
pub fn encode(header: &RecordHeader, payload: &[u8], out: &mut [u8]) -> Result<(), RecordError> {
    check_record_size(header.record_size)?;
    if out.len() != header.record_size as usize {
        return Err(RecordError::SizeMismatch {
            declared: header.record_size,
            actual: out.len(),
        });
    }
    if payload.len() > payload_capacity(header.record_size) {
        return Err(RecordError::PayloadTooLong {
            len: payload.len(),
            record_size: header.record_size,
        });
    }
    if header.started.nanos >= 1_000_000_000 {
        return Err(RecordError::BadTimestamp(header.started.nanos));
    }
    out[..HEADER_LEN].fill(0);
    put(out, 0, &MAGIC);
    put(out, 8, &VERSION.to_le_bytes());
    out[10] = header.kind as u8;
    out[11] = header.designator.len;
    put(out, 12, &header.record_size.to_le_bytes());
    put(out, 16, &header.stream_id.to_le_bytes());
    put(out, 24, &header.sequence.to_le_bytes());
    put(out, 32, &header.medium.to_le_bytes());
    put(out, 36, &header.block_size.to_le_bytes());
    put(out, 40, &header.designator.bytes);
    put(out, 72, &header.source_offset.to_le_bytes());
    put(out, 80, &header.started.secs.to_le_bytes());
    put(out, 88, &header.started.nanos.to_le_bytes());
    put(out, 92, &(payload.len() as u32).to_le_bytes());
    put(out, 96, &crc32c::crc32c(payload).to_le_bytes());
    let crc = crc32c::crc32c(&out[..HEADER_CRC_AT]);
    put(out, HEADER_CRC_AT, &crc.to_le_bytes());
    let end = HEADER_LEN + payload.len();
    out[HEADER_LEN..end].copy_from_slice(payload);
    out[end..].fill(0);
    Ok(())
}

/// The header fields [`decode_header`] reads beyond a [`RecordHeader`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadRef {
    pub len: u32,
    pub crc: u32,
}

/// Reads and checks the header in the first [`HEADER_LEN`] bytes of `bytes` (the rest is not
/// looked at): enough to learn the size of a record read from a file a header at a time.
pub fn decode_header(bytes: &[u8]) -> Result<(RecordHeader, PayloadRef), RecordError> {
    let Some(h) = bytes.get(..HEADER_LEN) else {
        return Err(RecordError::TooShort(bytes.len()));
    };
    let magic: [u8; 8] = h[..8].try_into().unwrap();
    if magic != MAGIC {
        return Err(RecordError::BadMagic(magic));
    }
    let stored = u32_at(h, HEADER_CRC_AT);
    let computed = crc32c::crc32c(&h[..HEADER_CRC_AT]);
    if stored != computed {
        return Err(RecordError::HeaderChecksum { stored, computed });
    }
    let version = u16_at(h, 8);
    if version != VERSION {
        return Err(RecordError::UnsupportedVersion(version));
    }
    let kind = RecordKind::from_u8(h[10]).ok_or(RecordError::UnknownKind(h[10]))?;
    let record_size = u32_at(h, 12);
    check_record_size(record_size)?;
    let designator_len = usize::from(h[11]);
    if designator_len > MAX_DESIGNATOR {
        return Err(RecordError::DesignatorTooLong(designator_len));
    }
    let designator_field = &h[40..40 + MAX_DESIGNATOR];
    if designator_field[designator_len..].iter().any(|&b| b != 0) {
        return Err(RecordError::DesignatorPadding);
    }
    if h[RESERVED].iter().any(|&b| b != 0) {
        return Err(RecordError::Reserved);
    }
    let nanos = u32_at(h, 88);
    if nanos >= 1_000_000_000 {
        return Err(RecordError::BadTimestamp(nanos));
    }
    let payload = PayloadRef {
        len: u32_at(h, 92),
        crc: u32_at(h, 96),
    };
    if payload.len as usize > payload_capacity(record_size) {
        return Err(RecordError::PayloadTooLong {
            len: payload.len as usize,
            record_size,
        });
    }
    let header = RecordHeader {
        kind,
        record_size,
        stream_id: u64_at(h, 16),
        sequence: u64_at(h, 24),
        medium: u32_at(h, 32),
        designator: Designator::new(&designator_field[..designator_len])?,
        block_size: u32_at(h, 36),
        source_offset: u64_at(h, 72),
        started: Timestamp {
            secs: u64_at(h, 80),
            nanos,
        },
    };
    Ok((header, payload))
}

/// Reads one whole record (`bytes` must be exactly its record size): its header and payload.
/// Never panics; every damage is an error.
pub fn decode(bytes: &[u8]) -> Result<(RecordHeader, &[u8]), RecordError> {
    let (header, payload) = decode_header(bytes)?;
    if bytes.len() != header.record_size as usize {
        return Err(RecordError::SizeMismatch {
            declared: header.record_size,
            actual: bytes.len(),
        });
    }
    let end = HEADER_LEN + payload.len as usize;
    let data = &bytes[HEADER_LEN..end];
    let computed = crc32c::crc32c(data);
    if computed != payload.crc {
        return Err(RecordError::PayloadChecksum {
            stored: payload.crc,
            computed,
        });
    }
    if !crate::device::is_zero(&bytes[end..]) {
        return Err(RecordError::Padding);
    }
    Ok((header, data))
}

/// The payload of a StreamHeader record: what the stream is, and where this medium starts.
///
/// | offset | bytes | field                                                       |
/// |-------:|------:|-------------------------------------------------------------|
/// |      0 |     8 | Data and Inline payload bytes on the media before this one  |
/// |      8 |     8 | Data and Inline records on the media before this one        |
/// |     16 |     8 | length of the source in bytes, `u64::MAX` when not known    |
/// |     24 |     2 | label length n (≤ [`MAX_LABEL`])                            |
/// |     26 |     n | label, UTF-8                                                |
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Description {
    pub bytes_before: u64,
    pub records_before: u64,
    pub source_length: Option<u64>,
    pub label: String,
}

const DESCRIPTION_FIXED: usize = 26;

impl Description {
    /// The payload bytes (`label` longer than [`MAX_LABEL`] is refused).
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        let label = self.label.as_bytes();
        if label.len() > MAX_LABEL {
            return Err(RecordError::BadPayload {
                what: "stream header",
                why: "label longer than 256 bytes",
            });
        }
        let mut out = Vec::with_capacity(DESCRIPTION_FIXED + label.len());
        out.extend_from_slice(&self.bytes_before.to_le_bytes());
        out.extend_from_slice(&self.records_before.to_le_bytes());
        out.extend_from_slice(&self.source_length.unwrap_or(u64::MAX).to_le_bytes());
        out.extend_from_slice(&(label.len() as u16).to_le_bytes());
        out.extend_from_slice(label);
        Ok(out)
    }

    pub fn decode(payload: &[u8]) -> Result<Description, RecordError> {
        let bad = |why| RecordError::BadPayload {
            what: "stream header",
            why,
        };
        if payload.len() < DESCRIPTION_FIXED {
            return Err(bad("shorter than 26 bytes"));
        }
        let n = usize::from(u16_at(payload, 24));
        if n > MAX_LABEL || payload.len() != DESCRIPTION_FIXED + n {
            return Err(bad("label length does not match the payload"));
        }
        let label = std::str::from_utf8(&payload[DESCRIPTION_FIXED..])
            .map_err(|_| bad("label not UTF-8"))?;
        let length = u64_at(payload, 16);
        Ok(Description {
            bytes_before: u64_at(payload, 0),
            records_before: u64_at(payload, 8),
            source_length: (length != u64::MAX).then_some(length),
            label: label.to_owned(),
        })
    }
}

/// The payload of the Trailer record: what the whole stream held.
///
/// | offset | bytes | field                                                        |
/// |-------:|------:|--------------------------------------------------------------|
/// |      0 |     8 | Data and Inline payload bytes in the stream                  |
/// |      8 |     8 | Data and Inline records in the stream                        |
/// |     16 |    32 | SHA-256 of every Data and Inline payload, in sequence order  |
///
/// When the data was written in one ascending contiguous run without inline bytes, the
/// SHA-256 is that of the source range itself; in general it is that of the bytes a
/// stream→block copy reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    pub data_bytes: u64,
    pub data_records: u64,
    pub sha256: [u8; 32],
}

const TOTALS_LEN: usize = 48;

impl Totals {
    pub fn encode(&self) -> [u8; TOTALS_LEN] {
        let mut out = [0u8; TOTALS_LEN];
        put(&mut out, 0, &self.data_bytes.to_le_bytes());
        put(&mut out, 8, &self.data_records.to_le_bytes());
        put(&mut out, 16, &self.sha256);
        out
    }

    pub fn decode(payload: &[u8]) -> Result<Totals, RecordError> {
        if payload.len() != TOTALS_LEN {
            return Err(RecordError::BadPayload {
                what: "trailer",
                why: "not 48 bytes",
            });
        }
        Ok(Totals {
            data_bytes: u64_at(payload, 0),
            data_records: u64_at(payload, 8),
            sha256: payload[16..48].try_into().unwrap(),
        })
    }
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
