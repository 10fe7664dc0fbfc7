//! [`StreamWriter`]: block data in, records out, over a list of media.
//!
//! ```text
//!   write_blocks(offset, bytes) ──> pending (one record's payload) ──full or not contiguous──>
//!       Data record { source offset = where pending starts } ──> medium ──end of medium──>
//!       filemark, next medium: StreamHeader { medium + 1, before } + the same record again
//!   finish() ──> last Data, Trailer { totals, SHA-256 }, filemark ──> StreamSummary
//! ```
//!
//! Each Data record carries the source offset of its own payload, so writes need not be
//! contiguous: a write that does not continue the pending payload ends that record (shorter
//! than full) and starts a new one. Writes are in whole blocks of the source's block size, so
//! every contiguous run read back restores in whole blocks.
//!
//! [`write_inline`](StreamWriter::write_inline) adds bytes that are no part of the source
//! (an EXTENDED COPY's inline or embedded data: a tape label, a catalog record) in Inline
//! records, in stream order between the Data records; consecutive inline writes share records.
//!
//! A writer that fails (a medium error, every medium full) takes no more writes. One dropped
//! without [`finish`](StreamWriter::finish) leaves a stream without a Trailer, which readers
//! report as truncated.

use std::path::PathBuf;

use sha2::{Digest, Sha256};
use thiserror::Error;

use super::StreamSummary;
use super::medium::{Medium, MediumError, MediumKind, MediumSpec, WriteOutcome};
use super::record::{
    self, DEFAULT_RECORD_SIZE, Description, Designator, RecordError, RecordHeader, RecordKind,
    Timestamp, Totals,
};

/// What a stream is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    /// The NAA designator of the source (up to 32 bytes).
    pub source_designator: Vec<u8>,
    /// Block size of the source: writes are in whole blocks.
    pub block_size: u32,
    /// Size of every record: a multiple of 512 (and of a fixed-block tape's block size).
    pub record_size: u32,
    /// Free text kept in every StreamHeader (up to 256 bytes of UTF-8).
    pub label: String,
    /// Length of the source, when known.
    pub source_length: Option<u64>,
}

impl StreamInfo {
    /// A stream of `source_designator`'s blocks in records of [`DEFAULT_RECORD_SIZE`].
    pub fn new(source_designator: &[u8], block_size: u32) -> StreamInfo {
        StreamInfo {
            source_designator: source_designator.to_vec(),
            block_size,
            record_size: DEFAULT_RECORD_SIZE,
            label: String::new(),
            source_length: None,
        }
    }
}

/// Why a stream could not be written.
#[derive(Debug, Error)]
pub enum WriteError {
    #[error("stream description: {0}")]
    Info(#[from] RecordError),
    #[error("block size 0")]
    ZeroBlockSize,
    #[error("no media to write the stream to")]
    NoMedia,
    #[error("medium {medium}: {source}")]
    Medium { medium: u32, source: MediumError },
    #[error(
        "every medium is full ({}) after {written_bytes} bytes of data: give more media",
        .media.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    EndOfMedia {
        written_bytes: u64,
        media: Vec<PathBuf>,
    },
    #[error("medium {medium} ({path}) is full before it holds its stream header and one record")]
    MediumTooSmall { medium: u32, path: PathBuf },
    #[error("a write of {len} bytes at offset {offset} is not in whole {block_size}-byte blocks")]
    NotWholeBlocks {
        offset: u64,
        len: usize,
        block_size: u32,
    },
    #[error("the stream failed earlier and takes no more writes")]
    Failed,
}

/// Writes one stream over a list of media (see the module documentation).
pub struct StreamWriter {
    info: StreamInfo,
    designator: Designator,
    stream_id: u64,
    started: Timestamp,
    media: Vec<MediumSpec>,
    /// The medium being written: its place in `media`, which is also its medium number.
    medium_index: usize,
    current: Option<Medium>,
    /// Records written on the current medium.
    on_medium: u64,
    /// Sequence number of the next record written.
    next_sequence: u64,
    /// Bytes waiting to fill a record of `pending_kind` (Data or Inline), and where a Data
    /// payload starts in the source.
    pending: Vec<u8>,
    pending_kind: RecordKind,
    pending_offset: u64,
    /// Encoding buffer: one record.
    record: Vec<u8>,
    hasher: Sha256,
    /// Payload bytes and records of data (Data and Inline) on the media so far.
    data_bytes: u64,
    data_records: u64,
    failed: bool,
}

impl std::fmt::Debug for StreamWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the buffers: a record is up to 16 MiB.
        f.debug_struct("StreamWriter")
            .field("stream_id", &self.stream_id)
            .field("medium_index", &self.medium_index)
            .field("next_sequence", &self.next_sequence)
            .field("pending_offset", &self.pending_offset)
            .field("data_bytes", &self.data_bytes)
            .field("data_records", &self.data_records)
            .field("failed", &self.failed)
            .field("medium", &self.current)
            .finish_non_exhaustive()
    }
}

impl StreamWriter {
    /// Opens the first medium and writes the StreamHeader. On a FIFO this blocks until a
    /// reader opens it.
    pub fn new<M: Into<MediumSpec>>(
        media: impl IntoIterator<Item = M>,
        info: StreamInfo,
    ) -> Result<StreamWriter, WriteError> {
        let media: Vec<MediumSpec> = media.into_iter().map(Into::into).collect();
        record::check_record_size(info.record_size)?;
        let designator = Designator::new(&info.source_designator)?;
        Description {
            label: info.label.clone(),
            ..Description::default()
        }
        .encode()?;
        if info.block_size == 0 {
            return Err(WriteError::ZeroBlockSize);
        }
        if media.is_empty() {
            return Err(WriteError::NoMedia);
        }
        let mut w = StreamWriter {
            designator,
            stream_id: fastrand::u64(1..),
            started: Timestamp::now(),
            media,
            medium_index: 0,
            current: None,
            on_medium: 0,
            next_sequence: 0,
            pending: Vec::with_capacity(record::payload_capacity(info.record_size)),
            pending_kind: RecordKind::Data,
            pending_offset: 0,
            record: vec![0; info.record_size as usize],
            hasher: Sha256::new(),
            data_bytes: 0,
            data_records: 0,
            failed: false,
            info,
        };
        w.start_medium()?;
        Ok(w)
    }

    /// The random id every record of this stream carries.
    pub fn stream_id(&self) -> u64 {
        self.stream_id
    }

    /// Adds `data`, the source's bytes from `offset`, in whole blocks.
    pub fn write_blocks(&mut self, offset: u64, data: &[u8]) -> Result<(), WriteError> {
        if self.failed {
            return Err(WriteError::Failed);
        }
        let bs = u64::from(self.info.block_size);
        let fits = offset.checked_add(data.len() as u64).is_some();
        if !fits || offset % bs != 0 || data.len() as u64 % bs != 0 {
            return Err(WriteError::NotWholeBlocks {
                offset,
                len: data.len(),
                block_size: self.info.block_size,
            });
        }
        let r = self.add(RecordKind::Data, offset, data);
        self.failed = r.is_err();
        r
    }

    /// Adds `data`, bytes that are no part of the source, after what was written so far.
    pub fn write_inline(&mut self, data: &[u8]) -> Result<(), WriteError> {
        if self.failed {
            return Err(WriteError::Failed);
        }
        let r = self.add(RecordKind::Inline, 0, data);
        self.failed = r.is_err();
        r
    }

    fn add(&mut self, kind: RecordKind, offset: u64, mut data: &[u8]) -> Result<(), WriteError> {
        let continues = kind == self.pending_kind
            && (kind == RecordKind::Inline
                || offset == self.pending_offset + self.pending.len() as u64);
        if !self.pending.is_empty() && !continues {
            self.flush_pending()?;
        }
        if self.pending.is_empty() {
            self.pending_kind = kind;
            self.pending_offset = offset;
        }
        let capacity = record::payload_capacity(self.info.record_size);
        while !data.is_empty() {
            let take = (capacity - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == capacity {
                self.flush_pending()?;
            }
        }
        Ok(())
    }

    /// Writes the last Data record, the Trailer and a filemark, and closes the last medium.
    pub fn finish(mut self) -> Result<StreamSummary, WriteError> {
        if self.failed {
            return Err(WriteError::Failed);
        }
        self.flush_pending()?;
        let totals = Totals {
            data_bytes: self.data_bytes,
            data_records: self.data_records,
            sha256: self.hasher.clone().finalize().into(),
        };
        self.emit(RecordKind::Trailer, 0, &totals.encode())?;
        self.end_medium()?;
        Ok(StreamSummary {
            stream_id: self.stream_id,
            records: self.next_sequence,
            data_records: self.data_records,
            bytes: self.data_bytes,
            media: self.media[..=self.medium_index]
                .iter()
                .map(|m| m.path.clone())
                .collect(),
            sha256: totals.sha256,
        })
    }

    fn flush_pending(&mut self) -> Result<(), WriteError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let payload = std::mem::take(&mut self.pending);
        let inline = self.pending_kind == RecordKind::Inline;
        // Inline records have no source offset.
        let offset = if inline { 0 } else { self.pending_offset };
        let r = self.emit(self.pending_kind, offset, &payload);
        if r.is_ok() {
            self.hasher.update(&payload);
            self.data_bytes += payload.len() as u64;
            self.data_records += 1;
            if !inline {
                self.pending_offset += payload.len() as u64;
            }
        }
        self.pending = payload;
        self.pending.clear();
        r
    }

    /// Writes one record, going on to the next medium when this one is full.
    fn emit(&mut self, kind: RecordKind, offset: u64, payload: &[u8]) -> Result<(), WriteError> {
        loop {
            if self.write_record(kind, offset, payload)? == WriteOutcome::Written {
                return Ok(());
            }
            if self.on_medium == 1 {
                // A medium that takes its stream header and not one record is misconfigured.
                return Err(self.too_small());
            }
            self.end_medium()?;
            self.medium_index += 1;
            if self.medium_index == self.media.len() {
                self.medium_index -= 1;
                return Err(WriteError::EndOfMedia {
                    written_bytes: self.data_bytes,
                    media: self.media.iter().map(|m| m.path.clone()).collect(),
                });
            }
            self.start_medium()?;
        }
    }

    /// Opens `media[medium_index]` and writes its StreamHeader.
    fn start_medium(&mut self) -> Result<(), WriteError> {
        let spec = &self.media[self.medium_index];
        let medium = Medium::open_write(spec, self.info.record_size)
            .map_err(|source| self.medium_error(source))?;
        self.current = Some(medium);
        self.on_medium = 0;
        let description = Description {
            bytes_before: self.data_bytes,
            records_before: self.data_records,
            source_length: self.info.source_length,
            label: self.info.label.clone(),
        }
        .encode()?;
        match self.write_record(RecordKind::StreamHeader, 0, &description)? {
            WriteOutcome::Written => Ok(()),
            WriteOutcome::EndOfMedium => Err(self.too_small()),
        }
    }

    /// Ends the current medium: a filemark if there is room, then close (a File is synced).
    fn end_medium(&mut self) -> Result<(), WriteError> {
        let Some(mut medium) = self.current.take() else {
            return Ok(());
        };
        // A full medium may have no room for the filemark: readers take its end for one. The
        // reader of a FIFO may be gone once it has the Trailer: it needs no filemark then.
        match medium.write_filemark() {
            Ok(_) => {}
            Err(MediumError::Io { source, .. })
                if medium.kind() == MediumKind::Fifo
                    && source.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(source) => return Err(self.medium_error(source)),
        }
        medium.close().map_err(|source| self.medium_error(source))
    }

    /// Encodes a record with the next sequence number and writes it to the current medium.
    fn write_record(
        &mut self,
        kind: RecordKind,
        source_offset: u64,
        payload: &[u8],
    ) -> Result<WriteOutcome, WriteError> {
        let header = RecordHeader {
            kind,
            record_size: self.info.record_size,
            stream_id: self.stream_id,
            sequence: self.next_sequence,
            medium: self.medium_index as u32,
            designator: self.designator,
            block_size: self.info.block_size,
            source_offset,
            started: self.started,
        };
        record::encode(&header, payload, &mut self.record)?;
        let medium = self
            .current
            .as_mut()
            .expect("a medium is open while writing");
        let outcome = medium.write_record(&self.record);
        let outcome = outcome.map_err(|source| self.medium_error(source))?;
        if outcome == WriteOutcome::Written {
            self.next_sequence += 1;
            self.on_medium += 1;
        }
        Ok(outcome)
    }

    fn medium_error(&self, source: MediumError) -> WriteError {
        WriteError::Medium {
            medium: self.medium_index as u32,
            source,
        }
    }

    fn too_small(&self) -> WriteError {
        WriteError::MediumTooSmall {
            medium: self.medium_index as u32,
            path: self.media[self.medium_index].path.clone(),
        }
    }
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
