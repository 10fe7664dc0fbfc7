//! A backup to a copy target (`start-backup EXPORT --to copy-target:NAME`): the data movers copy
//! the image at T, through the copy target's paths with failover, like an EXTENDED COPY.
//!
//! ```text
//!  after T:  SnapshotView(session) ── served read-only as export ID (movers in cowd read it
//!            in process, `cowd mover`s on other hosts over NBD)
//!            JobSpec { origin: Backup, export:ID [0, size) -> copy-target:NAME [0, size) }
//!  thread:   submit ── wait (progress into the session's counters) ── outcome
//!            Done: the session completes │ Failed: it fails with the job's reason
//!            the session cancelled or failed first: the job is cancelled
//!  end:      the snapshot export removed, the container disposed, `on_end`
//! ```
//!
//! The session has no mover of its own: a block stays pending or in the container until the
//! job's checkpoint passes it (the movers flushed the copy target up to there, and a mover
//! taking the job over resumes there): then it is released (`Session::release`), writes to
//! it copy nothing more and its container slot is free. Between checkpoints (64 MiB) the
//! container holds the blocks first written during the copy; writers slow down and wait as it
//! fills, as with any backup whose mover is slower than they are.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::export::{Export, Exports};
use crate::jobs::{CopyService, EndpointRef, JobId, JobSpec, Origin, Outcome, TransferSpec};
use crate::snapshot::session::Session;
use crate::snapshot::view::SnapshotView;
use crate::targets::{BackupTarget, TargetError};

/// The `--to` prefix that names a copy target.
pub const PREFIX: &str = "copy-target:";
/// How often the job's progress is read into the session's counters.
const POLL: Duration = Duration::from_millis(250);
/// How long the end waits for the snapshot export's last client (a remote mover's NBD
/// connection closing) before leaving the export to be removed later.
const UNSERVE_WAIT: Duration = Duration::from_secs(10);

/// What a backup to a copy target needs of the daemon.
#[derive(Debug, Clone)]
pub struct CopyLink {
    /// Where the snapshot is served for the movers.
    pub exports: Arc<Exports>,
    pub copies: Arc<CopyService>,
}

/// The session's target: written by the data movers, so the session's own writes are refused.
#[derive(Debug)]
pub(super) struct CopyTargetRef(pub String);

impl BackupTarget for CopyTargetRef {
    fn describe(&self) -> String {
        format!("{PREFIX}{}", self.0)
    }
    fn write(&self, _: u64, _: &[u8]) -> Result<(), TargetError> {
        Err(self.refused())
    }
    fn write_zeroes(&self, _: u64, _: u64) -> Result<(), TargetError> {
        Err(self.refused())
    }
    /// The job's mover flushed the copy target before the job was done.
    fn finish(&self) -> Result<(), TargetError> {
        Ok(())
    }
    /// A copy target is a device: nothing of it is removed.
    fn abort(&self) {}
}

impl CopyTargetRef {
    fn refused(&self) -> TargetError {
        TargetError::Refused {
            path: self.describe(),
            why: "a copy target is written by the data movers".into(),
        }
    }
}

/// The job that copies the whole image at T of `session` (served as export `snapshot`) to
/// copy target `target`.
pub(super) fn job(session: &Session, snapshot: &str, target: &str) -> JobSpec {
    JobSpec {
        origin: Origin::Backup {
            export: session.export.clone(),
            backup: session.id.clone(),
        },
        group: None,
        transfers: vec![TransferSpec {
            segment: 0,
            src: EndpointRef::Export(snapshot.to_owned()),
            src_offset: 0,
            dst: EndpointRef::CopyTarget(target.to_owned()),
            dst_offset: 0,
            bytes: session.size,
        }],
        carried: Vec::new(),
    }
}

/// Serves the image at T of `session` (of `export`) and starts the thread that has the movers
/// copy it to `target`; `on_end` runs last, as after a backup's own mover.
pub(super) fn spawn(
    session: Arc<Session>,
    export: &Arc<Export>,
    link: &CopyLink,
    target: &str,
    on_end: Box<dyn FnOnce(Arc<Session>) + Send>,
) -> std::io::Result<()> {
    let view = SnapshotView::new(session.clone(), export.engine().device().clone());
    let served = link
        .exports
        .add(Export::of_snapshot(export, &session.id, Arc::new(view)))
        .map_err(std::io::Error::other)?;
    let spec = job(&session, served.name(), target);
    let id = match link.copies.table().submit(spec) {
        Ok(id) => id,
        Err(e) => {
            let _ = link.exports.remove(served.name());
            return Err(std::io::Error::other(e.to_string()));
        }
    };
    info!(session = %session.id, job = id, snapshot = %served.name(), target, "backup handed to the data movers");
    let name = served.name().to_owned();
    drop(served);
    let (copies, exports, unserved) = (link.copies.clone(), link.exports.clone(), name.clone());
    let spawned = std::thread::Builder::new()
        .name("cowd-backup-job".into())
        .spawn(move || {
            follow(&session, &copies, id);
            unserve(&exports, &name);
            session.container.dispose();
            on_end(session);
        });
    if let Err(e) = spawned {
        let _ = link
            .copies
            .table()
            .cancel(id, "the backup could not follow its job");
        let _ = link.exports.remove(&unserved);
        return Err(e);
    }
    Ok(())
}

/// Waits for job `id`, keeping the session's counters at the job's progress; ends the session
/// with the job's outcome, or cancels the job when the session ended first.
fn follow(s: &Session, copies: &CopyService, id: JobId) {
    let table = copies.table();
    let bs = u64::from(s.block_size);
    let progress = |bytes: u64| {
        s.stats.bytes_moved.store(bytes, Ordering::Relaxed);
        s.stats.blocks_done.store(bytes / bs, Ordering::Relaxed);
    };
    // Blocks before this one are released (durable at the copy target).
    let mut released = 0u32;
    loop {
        if !s.running() {
            let why = format!("backup {} ended: {:?}", s.id, s.state());
            if let Err(e) = table.cancel(id, &why) {
                warn!(session = %s.id, job = id, error = %e, "cannot cancel the copy job");
            }
            return;
        }
        let outcome = table.settle(id).and_then(|o| match o {
            Some(o) => Ok(Some(o)),
            None => table.wait(id, POLL),
        });
        match outcome {
            Ok(Some(Outcome::Done { bytes })) => {
                progress(bytes);
                s.stats
                    .blocks_done
                    .store(s.expected_blocks(), Ordering::Relaxed);
                s.complete();
                return;
            }
            Ok(Some(Outcome::Failed { error, reason, .. })) => {
                s.fail(format!("copy job {id}: {error}: {reason}"));
                return;
            }
            Ok(None) => {
                if let Ok(jobs) = table.list()
                    && let Some(j) = jobs.iter().find(|j| j.id == id)
                {
                    progress(j.bytes);
                    let durable = u32::try_from(j.durable / bs).unwrap_or(u32::MAX);
                    if durable > released {
                        s.release(released..durable);
                        released = durable;
                    }
                }
            }
            Err(e) => {
                warn!(session = %s.id, job = id, error = %e, "cannot read the job table; retrying");
                std::thread::sleep(POLL);
            }
        }
    }
}

/// Removes the snapshot export once its last client (a mover) has gone.
fn unserve(exports: &Exports, name: &str) {
    let deadline = Instant::now() + UNSERVE_WAIT;
    while exports.named(name).is_some() {
        match exports.remove(name) {
            Ok(_) => return,
            Err(e) if Instant::now() >= deadline => {
                warn!(snapshot = name, error = %e, "the snapshot export stays served");
                return;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{BlockDevice, MemoryDevice};
    use crate::snapshot::container::Container;
    use crate::snapshot::session::{Policy, Setup};
    use roaring::RoaringBitmap;
    use std::time::SystemTime;

    const BS: u32 = 4096;

    /// Blocks before a checkpoint leave the pending set and the container; those after stay.
    #[test]
    fn a_checkpoint_releases_the_blocks_before_it() {
        let dev = MemoryDevice::new(64 * u64::from(BS));
        let container_dev = Arc::new(MemoryDevice::new(64 * u64::from(BS)));
        let container =
            Container::with_device(container_dev, 64 * u64::from(BS), BS, "s", None, false)
                .unwrap();
        let mut pending = RoaringBitmap::new();
        pending.insert_range(0..64);
        let s = Session::new(Setup {
            id: "s".into(),
            export: "e".into(),
            size: dev.size(),
            block_size: BS,
            pending,
            zeroes: RoaringBitmap::new(),
            container,
            target: Arc::new(CopyTargetRef("vault".into())),
            policy: Policy::default(),
            snapshot_time: SystemTime::now(),
            setup: Duration::ZERO,
            quiesce: String::new(),
        });
        // Writers saved blocks 2, 3 and 40 before overwriting them.
        s.copy_before_write(&dev, 2 * u64::from(BS), 2 * u64::from(BS));
        s.copy_before_write(&dev, 40 * u64::from(BS), u64::from(BS));
        assert_eq!(s.container.fill().used, 3);
        s.release(0..32);
        assert_eq!(s.container.fill().used, 1, "block 40 stays saved");
        assert!(
            !s.needs_copy(0, 32 * u64::from(BS)),
            "released blocks copy nothing"
        );
        assert!(
            s.needs_copy(32 * u64::from(BS), u64::from(BS)),
            "block 32 still pending"
        );
        let mut buf = vec![0u8; BS as usize];
        assert!(s.container.read_block(40, &mut buf).is_some());
        assert!(s.container.read_block(3, &mut buf).is_none());
        s.release(32..64);
        assert_eq!(s.container.fill().used, 0);
        assert!(!s.needs_copy(0, 64 * u64::from(BS)));
    }
}
