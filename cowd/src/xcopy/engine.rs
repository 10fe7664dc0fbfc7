//! Executing a copy [`Job`]: its transfers in order, each in bounded pieces through the
//! endpoints' device stacks.
//!
//! ```text
//!   Job ── Transfer (segment 0) ── piece ── piece ── ...    read_at(src) ─> buffer ─> write_at(dst)
//!       ── Transfer (segment 1) ── ...                      (each cut to the device's largest request)
//!   Progress <── bytes after each piece, segments after each transfer (read by COPY STATUS)
//! ```
//!
//! A job owns what it needs: endpoints are `Arc`s and each carries the [`Hold`] that keeps its
//! device in service (an export attachment today; a lease or a path's session later). So the
//! copy manager runs a job on the thread that received the EXTENDED COPY, and a mover can run
//! the same job on a thread of its own.
//!
//! Invariants the engine relies on and keeps:
//! - every transfer was checked when the job was made ([`super::resolve`]): its ranges lie
//!   within both devices, its byte count is a multiple of both block sizes, its destination is
//!   writable. The engine meets device errors only, and reports the first with its segment;
//! - a piece is at most [`PIECE`] bytes and a multiple of both block sizes; one buffer serves
//!   the whole job;
//! - a transfer within one device whose destination starts inside its source runs its pieces
//!   from the end backwards, so overlapping ranges copy as if through a temporary buffer
//!   (as `memmove` does);
//! - an abort (task management) is looked at before every piece: the job stops within one
//!   piece of it, with what was copied so far in place.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::device::{BlockDevice, DeviceError};
use crate::scsi::Abort;

/// The largest piece copied at once (1 MiB: a multiple of every logical block size cowd
/// serves, and the bound of the job's buffer).
pub const PIECE: u64 = 1 << 20;

/// What keeps an endpoint's device in service while a job uses it.
pub type Hold = Box<dyn fmt::Debug + Send + Sync>;

/// A block device the engine reads or writes: the whole stack of a logical unit, so writes go
/// through copy-before-write like any other write to it.
#[derive(Debug)]
pub struct BlockEndpoint {
    pub device: Arc<dyn BlockDevice>,
    /// Logical block size in bytes.
    pub block_size: u32,
    /// Capacity in logical blocks.
    pub blocks: u64,
    /// The largest request the device takes, in bytes (a multiple of `block_size`).
    pub chunk: usize,
    /// Writes are allowed (checked when the job is made).
    pub writable: bool,
    /// Released with the endpoint.
    pub hold: Option<Hold>,
}

/// One segment descriptor, resolved: `bytes` from `src` at `src_offset` to `dst` at
/// `dst_offset`.
#[derive(Debug)]
pub struct Transfer {
    /// The number of the segment descriptor in its list.
    pub segment: u16,
    pub src: Arc<BlockEndpoint>,
    pub src_offset: u64,
    pub dst: Arc<BlockEndpoint>,
    pub dst_offset: u64,
    pub bytes: u64,
}

/// A resolved EXTENDED COPY parameter list: its transfers, in segment order.
#[derive(Debug, Default)]
pub struct Job {
    pub transfers: Vec<Transfer>,
}

/// How far a job has come; shared between the thread running it and RECEIVE COPY RESULTS.
#[derive(Debug, Default)]
pub struct Progress {
    segments: AtomicU32,
    bytes: AtomicU64,
}

impl Progress {
    /// Segments completed.
    pub fn segments(&self) -> u32 {
        self.segments.load(Ordering::Acquire)
    }

    /// Bytes written to destinations.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    /// Sets both at once (a job a mover ran).
    pub fn set(&self, segments: u32, bytes: u64) {
        self.bytes.store(bytes, Ordering::Release);
        self.segments.store(segments, Ordering::Release);
    }
}

/// Which side of a transfer failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Destination,
}

/// A device error while running segment `segment`.
#[derive(Debug, thiserror::Error)]
#[error("segment {segment}: {side:?}: {error}")]
pub struct TransferError {
    pub segment: u16,
    pub side: Side,
    #[source]
    pub error: DeviceError,
}

/// Why a job stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum Stopped {
    #[error(transparent)]
    Failed(#[from] TransferError),
    #[error("aborted by task management in segment {segment}")]
    Aborted { segment: u16 },
}

/// Runs `job`'s transfers in order, recording progress; stops at the first error, or before
/// the next piece once `abort` is set.
pub fn run(job: &Job, progress: &Progress, abort: &Abort) -> Result<(), Stopped> {
    let mut buffer = Vec::new();
    for t in &job.transfers {
        copy(t, &mut buffer, progress, abort)?;
        progress.segments.fetch_add(1, Ordering::AcqRel);
    }
    Ok(())
}

fn copy(
    t: &Transfer,
    buffer: &mut Vec<u8>,
    progress: &Progress,
    abort: &Abort,
) -> Result<(), Stopped> {
    if t.bytes == 0 {
        return Ok(());
    }
    let unit = lcm(u64::from(t.src.block_size), u64::from(t.dst.block_size));
    let piece = (PIECE / unit).max(1) * unit;
    let len = piece.min(t.bytes);
    // Bounded by PIECE (or by one block when a block is larger).
    buffer.resize(len as usize, 0);
    let count = t.bytes.div_ceil(piece);
    let starts = (0..count).map(|i| i * piece);
    let backwards = same_device(&t.src, &t.dst)
        && t.dst_offset > t.src_offset
        && t.dst_offset < t.src_offset + t.bytes;
    let fail = |side, error| TransferError {
        segment: t.segment,
        side,
        error,
    };
    let mut one = |start: u64| {
        if abort.is_set() {
            return Err(Stopped::Aborted { segment: t.segment });
        }
        let len = piece.min(t.bytes - start) as usize;
        let buf = &mut buffer[..len];
        read(&t.src, buf, t.src_offset + start).map_err(|e| fail(Side::Source, e))?;
        write(&t.dst, buf, t.dst_offset + start).map_err(|e| fail(Side::Destination, e))?;
        progress.bytes.fetch_add(len as u64, Ordering::AcqRel);
        Ok(())
    };
    if backwards {
        starts.rev().try_for_each(&mut one)
    } else {
        starts.into_iter().try_for_each(&mut one)
    }
}

fn read(ep: &BlockEndpoint, buf: &mut [u8], mut offset: u64) -> Result<(), DeviceError> {
    for chunk in buf.chunks_mut(ep.chunk) {
        ep.device.read_at(chunk, offset)?;
        offset += chunk.len() as u64;
    }
    Ok(())
}

fn write(ep: &BlockEndpoint, buf: &[u8], mut offset: u64) -> Result<(), DeviceError> {
    for chunk in buf.chunks(ep.chunk) {
        ep.device.write_at(chunk, offset, false)?;
        offset += chunk.len() as u64;
    }
    Ok(())
}

/// Both endpoints are the same device stack (compared by address, not by vtable).
fn same_device(a: &BlockEndpoint, b: &BlockEndpoint) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(&a.device), Arc::as_ptr(&b.device))
}

fn lcm(a: u64, b: u64) -> u64 {
    let (mut x, mut y) = (a.max(1), b.max(1));
    while y != 0 {
        (x, y) = (y, x % y);
    }
    a.max(1) / x * b.max(1)
}
