//! Where records go to and come from: a tape drive, an append-only file or a FIFO.
//!
//! ```text
//!   Tape  /dev/nstN   one write(2) per record = one tape block; filemark = MTIOCTOP MTWEOF;
//!                     a filemark reads as 0 bytes; ENOSPC (early warning) = end of medium
//!   File  a.stream    records back to back, never a seek; filemark = a Filemark record;
//!                     end of data = EOF; end of medium = ENOSPC/EDQUOT/EFBIG or `capacity`
//!   Fifo  a pipe      like File, without an end of medium; also any other byte stream
//!                     (a character device given the kind Fifo)
//! ```
//!
//! A medium holds whole records only. A File that runs out of space is cut back to its last
//! whole record; a tape block is written whole or not at all (a short write is reported as a
//! torn record, not as an end of medium). The kind comes from the file type (a character
//! device must answer MTIOCGET to be taken for a tape, a FIFO is a Fifo, a regular file or a
//! name not yet there is a File) unless [`MediumSpec::kind`] overrides it.
//!
//! Opening a FIFO blocks until the other side opens it too (the kernel's rule): the writer and
//! the reader of a FIFO run on threads of their own. A File written is new, or empty and this
//! user's (created as `files::create_private` creates, 0600 and never through a planted link);
//! a File holding data is refused, never appended to or overwritten.
//!
//! A tape in variable-block mode (`mt setblk 0`, the best fit) takes each record as one block,
//! and one read(2) returns it. In fixed-block mode the record size must be a multiple of the
//! block size (checked at open); a record is then read as its header's blocks and the rest, and
//! a record of several blocks may be torn at the early warning (an error, not an end of
//! medium): use a record size equal to the block size there.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::record::{self, HEADER_LEN, MAX_RECORD_SIZE, RecordError, RecordHeader, RecordKind};
pub use spec::{MediumKind, MediumSpec};
use spec::{checked_metadata, resolve_kind};

#[path = "spec.rs"]
mod spec;
#[path = "tape.rs"]
mod tape;

/// A failure of a medium, naming its path.
#[derive(Debug, Error)]
pub enum MediumError {
    #[error("{path}: {why}")]
    Refused { path: PathBuf, why: String },
    #[error(
        "{path} is a character device but not a tape (MTIOCGET: {source}); give the kind fifo \
         to use it as a plain stream"
    )]
    NotATape { path: PathBuf, source: io::Error },
    #[error("{path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    #[error("{path}: torn record: the drive took {written} of {len} bytes")]
    TornWrite {
        path: PathBuf,
        written: usize,
        len: usize,
    },
    #[error("{path}: ends inside a record ({got} of {want} bytes)")]
    Truncated {
        path: PathBuf,
        got: usize,
        want: usize,
    },
    #[error("{path}: unreadable record header: {source}")]
    Record { path: PathBuf, source: RecordError },
    #[error("{path}: {op} is not possible on a {kind:?} medium")]
    Unsupported {
        path: PathBuf,
        op: &'static str,
        kind: MediumKind,
    },
}

impl MediumError {
    pub(crate) fn io(path: &Path, op: &'static str, source: io::Error) -> MediumError {
        MediumError::Io {
            path: path.to_owned(),
            op,
            source,
        }
    }

    pub(crate) fn refused(path: &Path, why: String) -> MediumError {
        MediumError::Refused {
            path: path.to_owned(),
            why,
        }
    }
}

/// What became of a record or filemark written.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Written,
    /// Nothing was written: the medium is full.
    EndOfMedium,
}

/// What a read found.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome<'a> {
    /// One whole record (not yet checked beyond its header).
    Record(&'a [u8]),
    /// A filemark (a tape's, or a Filemark record).
    Filemark,
    /// Nothing more on the medium (end of a file or FIFO).
    EndOfData,
}

/// An open medium.
pub struct Medium {
    path: PathBuf,
    kind: MediumKind,
    file: File,
    writing: bool,
    /// Bytes written so far (a File's length: where its next record goes).
    written: u64,
    capacity: Option<u64>,
    /// Record size of the stream written (the size of a Filemark record).
    record_size: u32,
    /// A tape's block size in fixed-block mode; 0 in variable-block mode and for other media.
    tape_block: usize,
    /// Read buffer: one record (a tape read takes up to MAX_RECORD_SIZE at once).
    buf: Vec<u8>,
}

impl std::fmt::Debug for Medium {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the read buffer: up to 16 MiB.
        f.debug_struct("Medium")
            .field("path", &self.path)
            .field("kind", &self.kind)
            .field("writing", &self.writing)
            .field("written", &self.written)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Medium {
    /// Opens a medium to write records of `record_size` bytes. Blocks on a FIFO until a
    /// reader opens it.
    pub fn open_write(spec: &MediumSpec, record_size: u32) -> Result<Medium, MediumError> {
        let path = &spec.path;
        let meta = checked_metadata(path)?;
        let kind = resolve_kind(spec, meta.as_ref())?;
        let err = |op| move |source| MediumError::io(path, op, source);
        let file = match (kind, &meta) {
            (MediumKind::File, None) => {
                crate::files::create_private(path).map_err(err("create"))?
            }
            (MediumKind::File, Some(m)) => {
                crate::files::check_in_place(path)
                    .map_err(|e| MediumError::refused(path, e.to_string()))?;
                if m.len() != 0 {
                    return Err(MediumError::refused(
                        path,
                        format!(
                            "holds {} bytes already; cowd neither writes over nor after them: \
                             remove it or name a new file",
                            m.len()
                        ),
                    ));
                }
                OpenOptions::new()
                    .append(true)
                    .open(path)
                    .map_err(err("open"))?
            }
            (MediumKind::Fifo | MediumKind::Tape, _) => OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(err("open"))?,
        };
        let mut medium = Medium::new(spec, kind, file, true, record_size);
        medium.tape_block = medium.tape_block_size()?;
        let block = medium.tape_block;
        if block != 0 && record_size as usize % block != 0 {
            let why = format!(
                "the drive is in fixed-block mode with {block}-byte blocks; a record size of \
                 {record_size} is not a multiple (mt setblk 0 for variable blocks)"
            );
            return Err(MediumError::refused(path, why));
        }
        Ok(medium)
    }

    /// Opens a medium to read records from its current position (the start of a file; where
    /// the tape is). Blocks on a FIFO until a writer opens it.
    pub fn open_read(spec: &MediumSpec) -> Result<Medium, MediumError> {
        let path = &spec.path;
        let meta = checked_metadata(path)?;
        if meta.is_none() {
            return Err(MediumError::io(
                path,
                "open",
                io::ErrorKind::NotFound.into(),
            ));
        }
        let kind = resolve_kind(spec, meta.as_ref())?;
        let file = File::open(path).map_err(|e| MediumError::io(path, "open", e))?;
        let mut medium = Medium::new(spec, kind, file, false, 0);
        medium.tape_block = medium.tape_block_size()?;
        Ok(medium)
    }

    /// A tape's block size (0: variable-block mode), asking the drive; 0 for other media. A
    /// character device that does not answer is not a tape.
    fn tape_block_size(&self) -> Result<usize, MediumError> {
        if self.kind != MediumKind::Tape {
            return Ok(0);
        }
        let status = tape::status(&self.file).map_err(|source| MediumError::NotATape {
            path: self.path.clone(),
            source,
        })?;
        Ok((status.mt_dsreg as u64 & tape::MT_ST_BLKSIZE_MASK) as usize)
    }

    fn new(spec: &MediumSpec, kind: MediumKind, file: File, writing: bool, rs: u32) -> Medium {
        Medium {
            path: spec.path.clone(),
            kind,
            file,
            writing,
            written: 0,
            capacity: spec.capacity,
            record_size: rs,
            tape_block: 0,
            buf: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn kind(&self) -> MediumKind {
        self.kind
    }

    /// Bytes written to this medium so far (records and filemark records).
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Writes one whole record, or nothing when the medium is full.
    pub fn write_record(&mut self, rec: &[u8]) -> Result<WriteOutcome, MediumError> {
        let outcome = match self.kind {
            MediumKind::Tape => self.write_tape_block(rec)?,
            MediumKind::File => self.write_file_record(rec)?,
            MediumKind::Fifo => {
                self.file
                    .write_all(rec)
                    .map_err(|e| MediumError::io(&self.path, "write", e))?;
                WriteOutcome::Written
            }
        };
        if outcome == WriteOutcome::Written {
            self.written += rec.len() as u64;
        }
        Ok(outcome)
    }

    fn write_tape_block(&mut self, rec: &[u8]) -> Result<WriteOutcome, MediumError> {
        loop {
            // One write(2): st makes it one block.
            return match self.file.write(rec) {
                Ok(n) if n == rec.len() => Ok(WriteOutcome::Written),
                Ok(0) => Ok(WriteOutcome::EndOfMedium),
                Ok(n) => Err(MediumError::TornWrite {
                    path: self.path.clone(),
                    written: n,
                    len: rec.len(),
                }),
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => Ok(WriteOutcome::EndOfMedium),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(MediumError::io(&self.path, "write", e)),
            };
        }
    }

    fn write_file_record(&mut self, rec: &[u8]) -> Result<WriteOutcome, MediumError> {
        if let Some(cap) = self.capacity {
            if self.written + rec.len() as u64 > cap {
                return Ok(WriteOutcome::EndOfMedium);
            }
        }
        match self.file.write_all(rec) {
            Ok(()) => Ok(WriteOutcome::Written),
            Err(e) if is_full(&e) => {
                // Cut a partly written record off, so the file ends on a whole record.
                self.file
                    .set_len(self.written)
                    .map_err(|e| MediumError::io(&self.path, "truncate after a full disk", e))?;
                Ok(WriteOutcome::EndOfMedium)
            }
            Err(e) => Err(MediumError::io(&self.path, "write", e)),
        }
    }

    /// Writes a filemark: MTWEOF on a tape, a Filemark record elsewhere.
    pub fn write_filemark(&mut self) -> Result<WriteOutcome, MediumError> {
        if self.kind == MediumKind::Tape {
            return match tape::op(&self.file, tape::MTWEOF, 1) {
                Ok(()) => Ok(WriteOutcome::Written),
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => Ok(WriteOutcome::EndOfMedium),
                Err(e) => Err(MediumError::io(&self.path, "write filemark", e)),
            };
        }
        let header = RecordHeader {
            kind: RecordKind::Filemark,
            record_size: self.record_size,
            stream_id: 0,
            sequence: 0,
            medium: 0,
            designator: Default::default(),
            block_size: 0,
            source_offset: 0,
            started: Default::default(),
        };
        let mut rec = vec![0; self.record_size as usize];
        record::encode(&header, &[], &mut rec).map_err(|source| MediumError::Record {
            path: self.path.clone(),
            source,
        })?;
        self.write_record(&rec)
    }

    /// Rewinds a tape (MTREW); other media cannot.
    pub fn rewind(&mut self) -> Result<(), MediumError> {
        if self.kind != MediumKind::Tape {
            return Err(MediumError::Unsupported {
                path: self.path.clone(),
                op: "rewind",
                kind: self.kind,
            });
        }
        tape::op(&self.file, tape::MTREW, 1).map_err(|e| MediumError::io(&self.path, "rewind", e))
    }

    /// Reads the next record. A record that does not decode is returned as it is, for the
    /// caller to name in its error; only a header too damaged to give the record's size (on a
    /// File or Fifo, or a tape in fixed-block mode) is an error here.
    pub fn read_record(&mut self) -> Result<ReadOutcome<'_>, MediumError> {
        let tape = self.kind == MediumKind::Tape;
        if tape && self.tape_block == 0 {
            return self.read_variable_block();
        }
        // The header first (on a tape, the blocks that hold it: in fixed-block mode a read
        // takes whole blocks), then the rest of the record, as its header sizes it.
        let first = match tape {
            true => HEADER_LEN.div_ceil(self.tape_block) * self.tape_block,
            false => HEADER_LEN,
        };
        self.buf.resize(first, 0);
        let got = self.read_full(0)?;
        if got == 0 {
            return Ok(if tape {
                ReadOutcome::Filemark
            } else {
                ReadOutcome::EndOfData
            });
        }
        if got < first {
            return Err(self.truncated(got, first));
        }
        let (header, _) =
            record::decode_header(&self.buf).map_err(|source| MediumError::Record {
                path: self.path.clone(),
                source,
            })?;
        let want = header.record_size as usize;
        if want > first {
            self.buf.resize(want, 0);
            let got = first + self.read_full(first)?;
            if got < want {
                return Err(self.truncated(got, want));
            }
        }
        if header.kind == RecordKind::Filemark && record::decode(&self.buf).is_ok() {
            return Ok(ReadOutcome::Filemark);
        }
        Ok(ReadOutcome::Record(&self.buf))
    }

    /// A tape in variable-block mode: one read(2) returns one block, one record; 0 bytes is a
    /// filemark.
    fn read_variable_block(&mut self) -> Result<ReadOutcome<'_>, MediumError> {
        self.buf.resize(MAX_RECORD_SIZE as usize, 0);
        let n = loop {
            match self.file.read(&mut self.buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(MediumError::io(&self.path, "read", e)),
            }
        };
        Ok(match n {
            0 => ReadOutcome::Filemark,
            n => ReadOutcome::Record(&self.buf[..n]),
        })
    }

    /// Fills `buf[from..]` unless the medium ends first; the bytes read.
    fn read_full(&mut self, from: usize) -> Result<usize, MediumError> {
        let mut at = from;
        while at < self.buf.len() {
            match self.file.read(&mut self.buf[at..]) {
                Ok(0) => break,
                Ok(n) => at += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(MediumError::io(&self.path, "read", e)),
            }
        }
        Ok(at - from)
    }

    fn truncated(&self, got: usize, want: usize) -> MediumError {
        MediumError::Truncated {
            path: self.path.clone(),
            got,
            want,
        }
    }

    /// Closes the medium; a File written is made durable first.
    pub fn close(self) -> Result<(), MediumError> {
        if self.writing && self.kind == MediumKind::File {
            self.file
                .sync_all()
                .map_err(|e| MediumError::io(&self.path, "fsync", e))?;
        }
        Ok(())
    }
}

fn is_full(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG)
    )
}

#[cfg(test)]
#[path = "medium_tests.rs"]
mod tests;
