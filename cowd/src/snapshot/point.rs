//! Taking the snapshot point T (DESIGN.md "Snapshot point").
//!
//! ```text
//!  close the write gate ── wait for writes in flight ── pending set = every block
//!    minus holes (recorded as zeroes) ── install the session ── reopen the gate
//! ```
//!
//! Writes are held only for the drain and the install; the hole scan (SEEK_DATA/SEEK_HOLE on
//! files) happens in the same window so that "hole at T" is exact.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use roaring::RoaringBitmap;

use super::container::Container;
use super::engine::Engine;
use super::session::{Policy, Session, Setup};
use crate::device::{BlockDevice, DeviceError};
use crate::targets::BackupTarget;

/// Everything a session needs besides the snapshot point itself.
#[derive(Debug)]
pub struct Plan {
    pub id: String,
    pub export: String,
    pub block_size: u32,
    pub container: Container,
    pub target: Arc<dyn BackupTarget>,
    pub policy: Policy,
    /// Record holes at T as zeroes instead of reading them.
    pub skip_holes: bool,
    pub quiesce: String,
}

/// Why the snapshot point could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum PointError {
    #[error("writes in flight did not finish within {0:?}; the snapshot point was not taken")]
    Drain(Duration),
    #[error(
        "the device has {blocks} blocks of {block_size} bytes, more than 2^32; use a larger block size"
    )]
    TooManyBlocks { blocks: u64, block_size: u32 },
    #[error("reading the allocation map at the snapshot point: {0}")]
    Extents(#[from] DeviceError),
}

/// Blocks lying entirely inside ranges that read as zeroes.
fn zero_blocks(dev: &dyn BlockDevice, block_size: u32) -> Result<RoaringBitmap, DeviceError> {
    let mut out = RoaringBitmap::new();
    if !dev.capabilities().extents {
        return Ok(out);
    }
    let (size, bs) = (dev.size(), u64::from(block_size));
    let mut at = 0u64;
    while at < size {
        let len = (size - at).min(1 << 40);
        for e in dev.extents(at, len)? {
            if e.zero {
                let first = at.div_ceil(bs);
                let end = if at + e.length == size {
                    size.div_ceil(bs)
                } else {
                    (at + e.length) / bs
                };
                if end > first {
                    out.insert_range(first as u32..end as u32);
                }
            }
            at += e.length;
        }
    }
    Ok(out)
}

/// Takes T on `engine` and installs the session. On failure the plan's container is disposed
/// (the caller still owns the target).
pub fn take(
    engine: &Engine,
    plan: Plan,
    drain_limit: Duration,
) -> Result<Arc<Session>, PointError> {
    let fail = |plan: Plan, e: PointError| {
        plan.container.dispose();
        Err(e)
    };
    let dev = engine.device().clone();
    let size = dev.size();
    let blocks = size.div_ceil(u64::from(plan.block_size));
    if blocks > u64::from(u32::MAX) {
        let block_size = plan.block_size;
        return fail(plan, PointError::TooManyBlocks { blocks, block_size });
    }
    let start = Instant::now();
    let Some(closed) = engine.gate().close(drain_limit) else {
        return fail(plan, PointError::Drain(drain_limit));
    };
    let snapshot_time = SystemTime::now();
    let mut pending = RoaringBitmap::new();
    pending.insert_range(0..blocks as u32);
    let zeroes = if plan.skip_holes {
        match zero_blocks(dev.as_ref(), plan.block_size) {
            Ok(z) => z,
            Err(e) => {
                drop(closed);
                return fail(plan, e.into());
            }
        }
    } else {
        RoaringBitmap::new()
    };
    pending -= &zeroes;
    let session = Arc::new(Session::new(Setup {
        id: plan.id,
        export: plan.export,
        size,
        block_size: plan.block_size,
        pending,
        zeroes,
        container: plan.container,
        target: plan.target,
        policy: plan.policy,
        snapshot_time,
        setup: Duration::ZERO,
        quiesce: plan.quiesce,
    }));
    session.count_at_t();
    engine.install(&closed, session.clone());
    *session.cbt_at_t.lock().unwrap() = Some(engine.cbt().checkpoint(&session.id));
    drop(closed);
    session.set_setup(start.elapsed());
    Ok(session)
}
