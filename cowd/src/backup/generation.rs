//! Planning a repository generation: full or incremental, all blocks or used ones.
//!
//! ```text
//!  before T:  latest backup of the export in the repository = parent?
//!             change map valid and counting from that parent?  ──> incremental, else full (why)
//!  after T:   fresh chunks = chunks with a block changed since the parent (all for a full)
//!             used blocks  = the filesystem's bitmaps read from the image at T
//!             session keeps only blocks of fresh chunks; free ones become zeroes
//! ```

use std::path::Path;
use std::sync::Arc;

use cowd_api::backups::{BackupMode, BlockChoice};
use roaring::RoaringBitmap;
use tracing::info;

use crate::repo::{Blocks, Index, Mode, Repo, chunk_count};
use crate::snapshot::cbt::Checkpoint;
use crate::snapshot::engine::{CBT_BLOCK, Engine};
use crate::snapshot::session::Session;
use crate::snapshot::view::SnapshotView;
use crate::targets::{Generation, RepoTarget};

/// What was decided before T.
#[derive(Debug)]
pub struct Planned {
    pub target: Arc<RepoTarget>,
    /// The parent when the backup is to be incremental.
    pub parent: Option<(String, Index)>,
    pub full_reason: Option<String>,
    pub blocks: BlockChoice,
}

/// Why a generation cannot be planned (the repository, the parent, the change map).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

fn invalid(e: impl std::fmt::Display) -> PlanError {
    PlanError(e.to_string())
}

/// Opens the repository and decides the mode, before the snapshot point.
#[allow(clippy::too_many_arguments)]
pub fn prepare(
    repo_path: &Path,
    export: &str,
    device_size: u64,
    engine: &Engine,
    id: &str,
    block_size: u32,
    mode: BackupMode,
    blocks: BlockChoice,
) -> Result<Planned, PlanError> {
    let repo = Repo::open(repo_path).map_err(invalid)?;
    let parent = repo.backups().map_err(invalid)?.into_iter().rfind(|m| {
        m.export == export && m.device_size == device_size && m.chunk_size == repo.chunk_size()
    });
    let map = engine.cbt().snapshot();
    let chain: Result<(String, Index), String> = match (&parent, &map.invalid, &map.base) {
        (None, _, _) => Err("no earlier backup of this export in the repository".into()),
        (Some(_), Some(why), _) => Err(format!("the change map cannot be trusted: {why}")),
        (Some(p), None, base) if base.as_deref() != Some(p.id.as_str()) => Err(format!(
            "the change map counts from backup {}, not from the repository's latest backup {}",
            base.as_deref().unwrap_or("(none)"),
            p.id
        )),
        (Some(p), None, _) => Ok((p.id.clone(), repo.index(&p.id).map_err(invalid)?)),
    };
    let (parent, full_reason) = match (mode, chain) {
        (BackupMode::Full, _) => (None, None),
        (BackupMode::Incremental, Err(why)) => {
            return Err(invalid(format!(
                "an incremental backup is not possible: {why}"
            )));
        }
        (_, Ok(p)) => (Some(p), None),
        (BackupMode::Auto, Err(why)) => (None, Some(why)),
    };
    let now = std::time::SystemTime::now();
    let g = Generation {
        id: id.to_owned(),
        export: export.to_owned(),
        device_size,
        block_size,
        mode: if parent.is_some() {
            Mode::Incremental
        } else {
            Mode::Full
        },
        parent: parent.clone(),
        full_reason: full_reason.clone(),
        blocks: Blocks::All,
        filesystem: None,
        snapshot_time: now,
        started: now,
    };
    // Each worker holds up to two chunks (the data, then the object its PUT sends): as many
    // workers into object storage as into a directory, not the four times restores and verify
    // have. On loopback 4 PUTs in flight fill the gateway as fast as 8 did (2.8 s for 512 MiB
    // either way) and a 1 TiB sparse backup peaks at 109-115 MiB instead of 126-147.
    let workers = crate::repo::chunk_threads();
    let target = Arc::new(RepoTarget::create(repo.clone(), g, workers).map_err(invalid)?);
    Ok(Planned {
        target,
        parent,
        full_reason,
        blocks,
    })
}

/// Backup blocks (of `bs` bytes) overlapping a block the change map saw written.
fn changed_blocks(cp: &Checkpoint, bs: u64, device_size: u64) -> RoaringBitmap {
    let cbt = u64::from(CBT_BLOCK);
    let last = device_size.div_ceil(bs).saturating_sub(1);
    let mut out = RoaringBitmap::new();
    for b in &cp.changed {
        let start = u64::from(b) * cbt;
        let (first, end) = (start / bs, ((start + cbt - 1) / bs).min(last));
        out.insert_range(first as u32..=end as u32);
    }
    out
}

/// The blocks of `bs` bytes covering `chunks` of `cs` bytes.
fn blocks_of(chunks: &RoaringBitmap, cs: u64, bs: u64, size: u64) -> RoaringBitmap {
    let mut out = RoaringBitmap::new();
    for c in chunks {
        let (start, end) = (u64::from(c) * cs, ((u64::from(c) + 1) * cs).min(size));
        out.insert_range((start / bs) as u32..end.div_ceil(bs) as u32);
    }
    out
}

/// After T, before the mover: fixes fresh chunks and used blocks, and narrows the session.
///
/// A full backup writes every block. An incremental one reads only the blocks written since
/// its parent; the chunks holding them are *fresh* and the rest of a fresh chunk comes from
/// the parent's copy of it, so the device is read for changed data only.
pub fn narrow(session: &Arc<Session>, engine: &Engine, planned: &Planned) -> Result<(), PlanError> {
    let target = &planned.target;
    let (size, bs, cs) = (
        session.size,
        u64::from(session.block_size),
        u64::from(target.chunk_size()),
    );
    let chunks = chunk_count(size, target.chunk_size());
    let cp = session.cbt_at_t.lock().unwrap().clone();
    // The map at T must still be the one the plan relied on.
    let parent = planned.parent.as_ref().filter(|(id, _)| {
        cp.as_ref()
            .is_some_and(|c| c.invalid.is_none() && c.base.as_deref() == Some(id.as_str()))
    });
    let (fresh, mut wanted) = match (parent, &cp) {
        (Some(_), Some(cp)) => {
            let changed = changed_blocks(cp, bs, size);
            let fresh: RoaringBitmap = changed
                .iter()
                .map(|b| (u64::from(b) * bs / cs) as u32)
                .collect();
            (fresh, changed)
        }
        _ => {
            let mut all = RoaringBitmap::new();
            all.insert_range(0..chunks as u32);
            let blocks = blocks_of(&all, cs, bs, size);
            (all, blocks)
        }
    };
    let fresh_blocks = blocks_of(&fresh, cs, bs, size);
    let mut free = RoaringBitmap::new();
    let mut filesystem = None;
    if planned.blocks == BlockChoice::Used {
        let view = SnapshotView::new(session.clone(), engine.device().clone());
        match crate::fs::used_map(&view) {
            Ok(Some(map)) => {
                let used = crate::fs::used_blocks(&map, session.block_size, size);
                free.insert_range(0..session.blocks_total as u32);
                free -= used;
                filesystem = Some(map.filesystem.to_owned());
                info!(session = %session.id, fs = map.filesystem, used = map.used_bytes, "backing up the used blocks only");
            }
            Ok(None) => info!(session = %session.id, "no known filesystem: backing up every block"),
            Err(e) => {
                info!(session = %session.id, error = %e, "filesystem unreadable: backing up every block")
            }
        }
    }
    // Free blocks of fresh chunks are written as zeroes, whatever the parent held.
    wanted |= &fresh_blocks & &free;
    let inherited = &fresh_blocks - &wanted;
    session.restrict(&wanted, &free);
    let snapshot_time = session.snapshot_time;
    let full_reason = match (parent, &planned.parent) {
        (None, Some(_)) => Some("the change map changed before the snapshot point".to_owned()),
        _ => planned.full_reason.clone(),
    };
    target.set_fresh(fresh, inherited, session.block_size);
    target.update(|g| {
        g.snapshot_time = snapshot_time;
        g.parent = parent.cloned();
        g.mode = if parent.is_some() {
            Mode::Incremental
        } else {
            Mode::Full
        };
        g.full_reason = full_reason;
        g.blocks = if filesystem.is_some() {
            Blocks::Used
        } else {
            Blocks::All
        };
        g.filesystem = filesystem;
    });
    Ok(())
}
