//! The stream format: block data on tapes, FIFOs and append-only files, for EXTENDED COPY
//! segments 00h (block → stream), 01h (stream → block), 04h/05h (inline and embedded data →
//! stream) and for cowd's own backups to tape.
//!
//! A stream is a run of fixed-size, self-describing records ([`record`]): a StreamHeader, Data
//! records carrying the source's bytes at the offsets they name (and Inline records, bytes an
//! EXTENDED COPY carried itself, segments 04h/05h), and a Trailer with the totals and a
//! SHA-256 of every payload. On one medium:
//!
//! ```text
//!   ┌──────────────┬──────┬──────┬─────┬──────┬─────────┬──────────┐
//!   │ StreamHeader │ Data │ Data │ ... │ Data │ Trailer │ filemark │   every box record_size
//!   │ seq 0, med 0 │ 1    │ 2    │     │ n    │ n + 1   │          │   bytes (the filemark is
//!   └──────────────┴──────┴──────┴─────┴──────┴─────────┴──────────┘   a tape's own on a tape)
//! ```
//!
//! A stream that does not fit one medium goes on over a list of media ([`medium`]). When a
//! write meets the end of a medium, the writer ends that medium with a filemark if it can,
//! starts the next with a StreamHeader carrying the next medium number and what came before,
//! and writes the record that did not fit again there:
//!
//! ```text
//!   medium 0: [Header seq 0][Data 1] ... [Data k]              (full)  [filemark]
//!   medium 1: [Header seq k+1, before: k data records][Data k+2] ... [Trailer][filemark]
//! ```
//!
//! Invariant kept by [`StreamWriter`] and checked by [`StreamReader`]: sequence numbers go
//! 0, 1, 2, … over every record of the stream on every medium, with no gap or repeat; every
//! record carries the stream id, record size, source designator, block size and start time of
//! the first; each medium starts with a StreamHeader carrying its medium number (its place in
//! the list of media); and the Trailer's totals and SHA-256 are those of the Data and Inline
//! records read.
//!
//! - [`record`]: the record format (pure);
//! - [`medium`]: tapes (Linux st), files and FIFOs, reading and writing whole records; which
//!   kind a path is (`spec.rs`) and the st ioctls (`tape.rs`) beside it;
//! - [`writer`]: [`StreamWriter`], block data in, records out over a list of media;
//! - [`reader`]: [`StreamReader`], records in, checked [`Chunk`]s out or restored to a
//!   [`BlockDevice`](crate::device::BlockDevice).

pub mod medium;
pub mod reader;
pub mod record;
pub mod writer;

#[cfg(test)]
mod testing;

pub use medium::{Medium, MediumError, MediumKind, MediumSpec};
pub use reader::{Chunk, ReadError, ReadErrorKind, StreamDescription, StreamReader};
pub use record::{DEFAULT_RECORD_SIZE, RecordError, RecordHeader, RecordKind};
pub use writer::{StreamInfo, StreamWriter, WriteError};

use std::path::PathBuf;

/// What a stream held, as written or as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSummary {
    pub stream_id: u64,
    /// Every record of the stream: stream headers, Data and Inline records and the Trailer.
    pub records: u64,
    /// Data and Inline records.
    pub data_records: u64,
    /// Bytes of data: the payloads of the Data records (the source's) and of the Inline
    /// records (a restore to the source's offsets passes those over, and still counts them).
    pub bytes: u64,
    /// The media the stream spans, in order.
    pub media: Vec<PathBuf>,
    /// SHA-256 of every Data and Inline payload in sequence order.
    pub sha256: [u8; 32],
}
