//! [`StreamReader`]: a stream read back over its media, every record checked.
//!
//! ```text
//!   medium 0 ──> StreamHeader (adopted: stream id, record size, source, start time)
//!            ──> Data ──> Chunk::Data { offset, bytes }, Inline ──> Chunk::Inline(bytes) ...
//!                                                                       filemark / end of data
//!   medium 1 ──> StreamHeader (medium 1, "before" = what was read) ──> Data ... Trailer
//!                                                  totals and SHA-256 checked ──> None
//! ```
//!
//! Checked on every record: both checksums and the encoding ([`record::decode`]); the stream
//! id, record size, source designator, block size and start time of the first StreamHeader;
//! the medium number (its place in the list of media given); the sequence number (one more
//! than the previous record's, over all media). A medium must start with a StreamHeader whose
//! counts of data before it match what was read, so a medium missing, repeated or out of order
//! is found at its first record. The stream ends at its Trailer, whose totals and SHA-256 must
//! match; media that end before a Trailer are a truncated stream. The reader stops right
//! after the Trailer (on a FIFO it reads the filemark record too, so that the writer can finish). Every error names the medium
//! (number and path) and the record (its index on that medium, from 0).
//!
//! [`StreamReader::restore_to`] writes each Data payload at its source offset, merging
//! contiguous payloads into writes aligned to the device's block size, and passes over Inline
//! payloads (they were never the source's); what it wrote before finding damage stays written,
//! and the error says where. An EXTENDED COPY stream→block segment (01h) instead reads every
//! payload as the stream's next bytes, in order (`jobs::mover`).

use std::path::PathBuf;

use sha2::{Digest, Sha256};
use thiserror::Error;

use super::StreamSummary;
use super::medium::{Medium, MediumError, MediumKind, MediumSpec, ReadOutcome};
use super::record::{
    self, Description, HEADER_LEN, RecordError, RecordHeader, RecordKind, Timestamp, Totals,
};
use crate::device::{BlockDevice, DeviceError};

/// What the stream is, from its first StreamHeader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamDescription {
    pub stream_id: u64,
    pub source_designator: Vec<u8>,
    pub block_size: u32,
    pub record_size: u32,
    pub started: Timestamp,
    pub source_length: Option<u64>,
    pub label: String,
}

/// A stream that cannot be read, and where.
#[derive(Debug, Error)]
#[error("medium {medium} ({}){}: {kind}", .path.display(),
    .record.map(|r| format!(", record {r}")).unwrap_or_default())]
pub struct ReadError {
    /// Place of the medium in the list given (its medium number).
    pub medium: u32,
    pub path: PathBuf,
    /// Index of the record on that medium, from 0 (`None`: not about one record).
    pub record: Option<u64>,
    #[source]
    pub kind: ReadErrorKind,
}

/// What is wrong.
#[derive(Debug, Error)]
pub enum ReadErrorKind {
    #[error("no media given")]
    NoMedia,
    #[error(transparent)]
    Medium(MediumError),
    #[error("damaged record: {0}")]
    Record(RecordError),
    #[error("holds no stream (it ends where its stream header should be)")]
    EmptyMedium,
    #[error("starts with a {0:?} record, not a stream header")]
    NotStreamHeader(RecordKind),
    #[error("a stream header inside the medium")]
    UnexpectedStreamHeader,
    #[error("record of stream {found:#018x}, not of stream {expected:#018x} (another backup?)")]
    WrongStream { found: u64, expected: u64 },
    #[error("record of medium {found}, read as medium {expected} (media given out of order?)")]
    WrongMedium { found: u32, expected: u32 },
    #[error("sequence number {found}, expected {expected} (records missing or repeated)")]
    Sequence { found: u64, expected: u64 },
    #[error("{0} differs from the stream's first header")]
    Changed(&'static str),
    #[error(
        "stream header says {bytes} bytes in {records} records came before this medium; \
         {read_bytes} bytes in {read_records} records were read (a medium missing or repeated?)"
    )]
    Continuation {
        bytes: u64,
        records: u64,
        read_bytes: u64,
        read_records: u64,
    },
    #[error("payload at offset {offset} of {len} bytes passes the end of the 64-bit source")]
    BadOffset { offset: u64, len: usize },
    #[error(
        "the stream ends without its trailer: it is truncated, or goes on on a medium {0} \
         that was not given"
    )]
    NoTrailer(u32),
    #[error("trailer says {what} {stored}, the stream held {read}")]
    TrailerMismatch {
        what: &'static str,
        stored: String,
        read: String,
    },
    #[error("payload at offset {offset} of {len} bytes passes the end of the {size}-byte device")]
    OutOfRange { offset: u64, len: usize, size: u64 },
    #[error("restoring: {0}")]
    Device(DeviceError),
    #[error("the stream failed earlier and is read no further")]
    Failed,
}

/// The payload of one record of data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk<'a> {
    /// Bytes of the source from `offset`.
    Data { offset: u64, bytes: &'a [u8] },
    /// Bytes that are no part of the source (inline data).
    Inline(&'a [u8]),
}

impl<'a> Chunk<'a> {
    /// Its payload.
    pub fn bytes(&self) -> &'a [u8] {
        match *self {
            Chunk::Data { bytes, .. } | Chunk::Inline(bytes) => bytes,
        }
    }

    /// Where a Data chunk's bytes go in the source, and the bytes; `None` for inline bytes.
    pub fn placed(&self) -> Option<(u64, &'a [u8])> {
        match *self {
            Chunk::Data { offset, bytes } => Some((offset, bytes)),
            Chunk::Inline(_) => None,
        }
    }
}

/// Reads one stream over a list of media (see the module documentation).
pub struct StreamReader {
    media: Vec<MediumSpec>,
    /// The medium being read: its place in `media`.
    medium_index: usize,
    current: Option<Medium>,
    /// Records read from the current medium.
    on_medium: u64,
    /// The first StreamHeader, which every record must agree with.
    first: RecordHeader,
    description: StreamDescription,
    next_sequence: u64,
    /// The last record read (a copy, so that its payload can be lent out).
    record: Vec<u8>,
    hasher: Sha256,
    data_bytes: u64,
    data_records: u64,
    /// The Trailer was read and checked.
    done: bool,
    /// An error was returned: the reader is not where the stream says, and reads no more.
    /// A `Cell`, so that [`error`](Self::error), through which every error passes, can set it.
    failed: std::cell::Cell<bool>,
}

/// Largest write `restore_to` makes.
const RESTORE_CHUNK: usize = 4 << 20;

impl std::fmt::Debug for StreamReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the buffers: a record is up to 16 MiB.
        f.debug_struct("StreamReader")
            .field("medium_index", &self.medium_index)
            .field("on_medium", &self.on_medium)
            .field("next_sequence", &self.next_sequence)
            .field("data_bytes", &self.data_bytes)
            .field("data_records", &self.data_records)
            .field("done", &self.done)
            .field("medium", &self.current)
            .finish_non_exhaustive()
    }
}

impl StreamReader {
    /// Opens the first medium and reads its StreamHeader. On a FIFO this blocks until a
    /// writer opens it.
    pub fn open<M: Into<MediumSpec>>(
        media: impl IntoIterator<Item = M>,
    ) -> Result<StreamReader, ReadError> {
        let media: Vec<MediumSpec> = media.into_iter().map(Into::into).collect();
        if media.is_empty() {
            return Err(ReadError {
                medium: 0,
                path: PathBuf::new(),
                record: None,
                kind: ReadErrorKind::NoMedia,
            });
        }
        let placeholder = RecordHeader {
            kind: RecordKind::StreamHeader,
            record_size: 0,
            stream_id: 0,
            sequence: 0,
            medium: 0,
            designator: Default::default(),
            block_size: 0,
            source_offset: 0,
            started: Timestamp::default(),
        };
        let mut r = StreamReader {
            media,
            medium_index: 0,
            current: None,
            on_medium: 0,
            first: placeholder,
            description: StreamDescription {
                stream_id: 0,
                source_designator: Vec::new(),
                block_size: 0,
                record_size: 0,
                started: Timestamp::default(),
                source_length: None,
                label: String::new(),
            },
            next_sequence: 0,
            record: Vec::new(),
            hasher: Sha256::new(),
            data_bytes: 0,
            data_records: 0,
            done: false,
            failed: std::cell::Cell::new(false),
        };
        r.start_medium()?;
        Ok(r)
    }

    /// What the stream is.
    pub fn description(&self) -> &StreamDescription {
        &self.description
    }

    /// The next Data or Inline record's payload; `None` once the Trailer is read and matches
    /// what came before it.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk<'_>>, ReadError> {
        loop {
            if self.done {
                return Ok(None);
            }
            let index = self.on_medium;
            let medium = match self.current.as_mut() {
                Some(m) if !self.failed.get() => m,
                _ => return Err(self.error(None, ReadErrorKind::Failed)),
            };
            let read = medium.read_record();
            let read = read.map_err(|e| (Some(index), ReadErrorKind::Medium(e)));
            match read {
                Ok(ReadOutcome::Filemark | ReadOutcome::EndOfData) => {
                    self.next_medium()?;
                    continue;
                }
                Ok(ReadOutcome::Record(bytes)) => {
                    self.record.clear();
                    self.record.extend_from_slice(bytes);
                }
                Err((rec, kind)) => return Err(self.error(rec, kind)),
            }
            self.on_medium += 1;
            let (header, payload) = match record::decode(&self.record) {
                Ok((h, p)) => (h, p.len()),
                Err(e) => return Err(self.error(Some(index), ReadErrorKind::Record(e))),
            };
            if header.kind == RecordKind::Filemark {
                self.next_medium()?;
                continue;
            }
            self.check(&header)
                .map_err(|kind| self.error(Some(index), kind))?;
            self.next_sequence += 1;
            let range = HEADER_LEN..HEADER_LEN + payload;
            match header.kind {
                kind @ (RecordKind::Data | RecordKind::Inline) => {
                    let offset = header.source_offset;
                    if kind == RecordKind::Data && offset.checked_add(payload as u64).is_none() {
                        let kind = ReadErrorKind::BadOffset {
                            offset,
                            len: payload,
                        };
                        return Err(self.error(Some(index), kind));
                    }
                    self.hasher.update(&self.record[range.clone()]);
                    self.data_bytes += payload as u64;
                    self.data_records += 1;
                    let bytes = &self.record[range];
                    return Ok(Some(match kind {
                        RecordKind::Data => Chunk::Data { offset, bytes },
                        _ => Chunk::Inline(bytes),
                    }));
                }
                RecordKind::Trailer => {
                    let totals = Totals::decode(&self.record[range])
                        .map_err(|e| self.error(Some(index), ReadErrorKind::Record(e)))?;
                    self.check_totals(&totals)
                        .map_err(|kind| self.error(Some(index), kind))?;
                    self.done = true;
                    self.drain_fifo();
                }
                RecordKind::StreamHeader => {
                    let kind = ReadErrorKind::UnexpectedStreamHeader;
                    return Err(self.error(Some(index), kind));
                }
                RecordKind::Filemark => unreachable!("handled above"),
            }
        }
    }

    /// On a FIFO, reads what follows the Trailer (the filemark record), so that the writer
    /// does not find the pipe closed before it is done. Other media stay right after the
    /// Trailer: on a tape, its filemark is next.
    fn drain_fifo(&mut self) {
        if let Some(m) = self
            .current
            .as_mut()
            .filter(|m| m.kind() == MediumKind::Fifo)
        {
            let _ = m.read_record();
        }
    }

    /// Reads the whole stream, checking it; what it held.
    pub fn verify(mut self) -> Result<StreamSummary, ReadError> {
        while self.next_chunk()?.is_some() {}
        Ok(self.summary())
    }

    /// Writes every Data payload at its source offset on `dev`, then flushes it; Inline
    /// payloads are passed over.
    pub fn restore_to(mut self, dev: &dyn BlockDevice) -> Result<StreamSummary, ReadError> {
        let sizes = dev.block_sizes();
        let align = sizes.minimum.max(1) as usize;
        let chunk = RESTORE_CHUNK.min(sizes.maximum as usize) / align * align;
        let chunk = chunk.max(align);
        let size = dev.size();
        // A run of contiguous payloads not yet written, and where it starts.
        let mut run: Vec<u8> = Vec::with_capacity(chunk + self.description.record_size as usize);
        let mut run_offset = 0u64;
        while let Some(next) = self.next_chunk()? {
            let Some((offset, payload)) = next.placed() else {
                continue;
            };
            let len = payload.len();
            let fits = offset + len as u64 <= size;
            let mut flushed = Ok(());
            if fits {
                if !run.is_empty() && offset != run_offset + run.len() as u64 {
                    flushed = write_run(dev, &run, run_offset);
                    run.clear();
                }
                if run.is_empty() {
                    run_offset = offset;
                }
                run.extend_from_slice(payload);
            }
            // The payload is no longer lent: errors may name the record now.
            let record = Some(self.on_medium - 1);
            if !fits {
                let kind = ReadErrorKind::OutOfRange { offset, len, size };
                return Err(self.error(record, kind));
            }
            flushed.map_err(|e| self.error(record, ReadErrorKind::Device(e)))?;
            while run.len() >= chunk {
                write_run(dev, &run[..chunk], run_offset)
                    .map_err(|e| self.error(record, ReadErrorKind::Device(e)))?;
                run.drain(..chunk);
                run_offset += chunk as u64;
            }
        }
        write_run(dev, &run, run_offset)
            .and_then(|()| dev.flush())
            .map_err(|e| self.error(None, ReadErrorKind::Device(e)))?;
        Ok(self.summary())
    }

    /// What was read so far (the whole stream once `next_chunk` has answered `None`).
    pub fn summary(&self) -> StreamSummary {
        StreamSummary {
            stream_id: self.first.stream_id,
            records: self.next_sequence,
            data_records: self.data_records,
            bytes: self.data_bytes,
            media: self.media[..=self.medium_index]
                .iter()
                .map(|m| m.path.clone())
                .collect(),
            sha256: self.hasher.clone().finalize().into(),
        }
    }

    /// A record agrees with the stream: same stream, medium, next sequence number, and the
    /// first header's constants.
    fn check(&self, h: &RecordHeader) -> Result<(), ReadErrorKind> {
        let first = &self.first;
        if h.stream_id != first.stream_id {
            return Err(ReadErrorKind::WrongStream {
                found: h.stream_id,
                expected: first.stream_id,
            });
        }
        let expected = self.medium_index as u32;
        if h.medium != expected {
            return Err(ReadErrorKind::WrongMedium {
                found: h.medium,
                expected,
            });
        }
        if h.sequence != self.next_sequence {
            return Err(ReadErrorKind::Sequence {
                found: h.sequence,
                expected: self.next_sequence,
            });
        }
        let changed = [
            (h.record_size != first.record_size, "record size"),
            (h.designator != first.designator, "source designator"),
            (h.block_size != first.block_size, "block size"),
            (h.started != first.started, "start time"),
        ];
        match changed.iter().find(|(c, _)| *c) {
            Some((_, what)) => Err(ReadErrorKind::Changed(what)),
            None => Ok(()),
        }
    }

    fn check_totals(&self, t: &Totals) -> Result<(), ReadErrorKind> {
        let sha256: [u8; 32] = self.hasher.clone().finalize().into();
        let hex = |h: &[u8; 32]| h.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let mismatch = if t.data_bytes != self.data_bytes {
            Some((
                "data bytes",
                t.data_bytes.to_string(),
                self.data_bytes.to_string(),
            ))
        } else if t.data_records != self.data_records {
            let (stored, read) = (t.data_records, self.data_records);
            Some(("data records", stored.to_string(), read.to_string()))
        } else if t.sha256 != sha256 {
            Some(("SHA-256", hex(&t.sha256), hex(&sha256)))
        } else {
            None
        };
        match mismatch {
            Some((what, stored, read)) => {
                Err(ReadErrorKind::TrailerMismatch { what, stored, read })
            }
            None => Ok(()),
        }
    }

    /// Goes on to the next medium of the list: the stream continues there.
    fn next_medium(&mut self) -> Result<(), ReadError> {
        self.current = None;
        if self.medium_index + 1 == self.media.len() {
            let next = self.medium_index as u32 + 1;
            return Err(self.error(None, ReadErrorKind::NoTrailer(next)));
        }
        self.medium_index += 1;
        self.start_medium()
    }

    /// Opens `media[medium_index]` and reads and checks its StreamHeader (the first medium's
    /// is adopted as the stream's).
    fn start_medium(&mut self) -> Result<(), ReadError> {
        let spec = &self.media[self.medium_index];
        let mut medium =
            Medium::open_read(spec).map_err(|e| self.error(None, ReadErrorKind::Medium(e)))?;
        self.on_medium = 0;
        match medium.read_record() {
            Ok(ReadOutcome::Record(bytes)) => {
                self.record.clear();
                self.record.extend_from_slice(bytes);
            }
            Ok(ReadOutcome::Filemark | ReadOutcome::EndOfData) => {
                return Err(self.error(Some(0), ReadErrorKind::EmptyMedium));
            }
            Err(e) => return Err(self.error(Some(0), ReadErrorKind::Medium(e))),
        }
        self.current = Some(medium);
        self.on_medium = 1;
        let fail = |s: &Self, kind| s.error(Some(0), kind);
        let (header, payload) =
            record::decode(&self.record).map_err(|e| fail(self, ReadErrorKind::Record(e)))?;
        if header.kind != RecordKind::StreamHeader {
            return Err(fail(self, ReadErrorKind::NotStreamHeader(header.kind)));
        }
        let description =
            Description::decode(payload).map_err(|e| fail(self, ReadErrorKind::Record(e)))?;
        if self.medium_index == 0 {
            self.adopt(&header, &description);
        }
        self.check(&header).map_err(|kind| fail(self, kind))?;
        if (description.bytes_before, description.records_before)
            != (self.data_bytes, self.data_records)
        {
            let kind = ReadErrorKind::Continuation {
                bytes: description.bytes_before,
                records: description.records_before,
                read_bytes: self.data_bytes,
                read_records: self.data_records,
            };
            return Err(fail(self, kind));
        }
        self.next_sequence += 1;
        Ok(())
    }

    fn adopt(&mut self, header: &RecordHeader, description: &Description) {
        self.first = *header;
        self.description = StreamDescription {
            stream_id: header.stream_id,
            source_designator: header.designator.as_bytes().to_vec(),
            block_size: header.block_size,
            record_size: header.record_size,
            started: header.started,
            source_length: description.source_length,
            label: description.label.clone(),
        };
    }

    fn error(&self, record: Option<u64>, kind: ReadErrorKind) -> ReadError {
        self.failed.set(true);
        ReadError {
            medium: self.medium_index as u32,
            path: self.media[self.medium_index].path.clone(),
            record,
            kind,
        }
    }
}

fn write_run(dev: &dyn BlockDevice, run: &[u8], offset: u64) -> Result<(), DeviceError> {
    if run.is_empty() {
        return Ok(());
    }
    dev.write_at(run, offset, false)
}

#[cfg(test)]
#[path = "reader_tests.rs"]
mod tests;
