//! Garbage collection in object storage, where there are no mtimes to refresh, no links and no
//! renames: gc and backups exclude each other by lock objects instead.
//!
//! ```text
//!   backup:  PUT pins/<id>.json      then LIST locks/: a live gc lock?  -> remove the pin, refuse
//!   gc:      PUT locks/gc-<…>.json   then LIST pins/:  a live pin?      -> remove the lock, refuse
//! ```
//!
//! Each side writes its object before it lists the other's. S3 (since 2020), Ceph's RADOS
//! Gateway and MinIO list a key once its PUT returned (read-after-write consistency of LIST), so
//! of a backup and a gc that start together at least one sees the other and steps back: a gc
//! never sweeps while a backup runs, and a backup's chunks (new or found already stored) are
//! named by a complete index, which gc reads, before the backup's pin goes. Both objects carry
//! their process ([`Owner`]) and are rewritten every [`PIN_HEARTBEAT`]: one of a process that is
//! gone, or of another host silent for [`PIN_LEASE`], no longer holds.
//!
//! [`PIN_HEARTBEAT`]: super::PIN_HEARTBEAT
//! [`PIN_LEASE`]: super::PIN_LEASE

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::backup::{Heartbeat, held_by_live};
use super::owner::Owner;
use super::{Digest, GcReport, Repo, RepoError, digest::to_hex, rfc3339, store};

/// `locks/gc-*.json`: a gc under way.
#[derive(Debug, Serialize, Deserialize)]
struct GcLock {
    #[serde(with = "rfc3339")]
    started: SystemTime,
    owner: Option<Owner>,
}

/// Holds a gc lock until dropped (then removes it).
pub(super) struct GcGuard {
    path: PathBuf,
    heartbeat: Option<Heartbeat>,
}

impl Drop for GcGuard {
    fn drop(&mut self) {
        // The heartbeat first, or it could put the lock back.
        drop(self.heartbeat.take());
        if let Err(e) = store::remove(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(
                "repository: cannot remove gc lock {}: {e}",
                self.path.display()
            );
        }
    }
}

fn describe(owner: Option<&Owner>) -> String {
    owner.map_or("a process of an earlier cowd".into(), |o| {
        format!(
            "process {} on host {}",
            o.pid,
            &o.host[..o.host.len().min(8)]
        )
    })
}

impl Repo {
    fn locks_dir(&self) -> PathBuf {
        self.root().join("locks")
    }

    /// Puts a new pin object; `AlreadyExists` when one is there.
    pub(super) fn put_remote_pin(&self, path: &Path, json: &[u8]) -> io::Result<()> {
        if store::stat(path)?.is_some() {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        store::write(path, path, json)
    }

    /// Who holds a live gc lock other than `ours`, if anyone. Locks of processes that are gone
    /// are removed on the way.
    pub(super) fn live_gc_lock_except(
        &self,
        ours: Option<&Path>,
    ) -> Result<Option<String>, RepoError> {
        let dir = self.locks_dir();
        for e in store::list(&dir).map_err(RepoError::io(&dir, "list"))? {
            let path = dir.join(&e.name);
            if e.is_dir || !e.name.starts_with("gc-") || Some(path.as_path()) == ours {
                continue;
            }
            let lock: GcLock = match store::read(&path) {
                Ok(text) => serde_json::from_slice(&text).map_err(|err| RepoError::Corrupt {
                    path: path.clone(),
                    problem: format!("gc lock: {err}"),
                })?,
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => return Err(RepoError::io(&path, "read")(err)),
            };
            if held_by_live(lock.owner.as_ref(), e.modified) {
                return Ok(Some(describe(lock.owner.as_ref())));
            }
            tracing::info!(
                "repository: removing the gc lock of a process that is gone: {}",
                e.name
            );
            let _ = store::remove(&path);
        }
        Ok(None)
    }

    /// [`live_gc_lock_except`](Repo::live_gc_lock_except) nobody.
    pub(super) fn live_gc_lock(&self) -> Result<Option<String>, RepoError> {
        self.live_gc_lock_except(None)
    }

    /// Takes the gc lock: refused while a backup runs or another gc holds it.
    pub(super) fn take_gc_lock(&self) -> Result<GcGuard, RepoError> {
        let lock = GcLock {
            started: SystemTime::now(),
            owner: Owner::current(),
        };
        let name = format!(
            "gc-{}-{}-{:016x}.json",
            &super::host_tag(),
            std::process::id(),
            fastrand::u64(..)
        );
        let path = self.locks_dir().join(name);
        let json = serde_json::to_vec_pretty(&lock).expect("gc lock to json");
        store::write(&path, &path, &json).map_err(RepoError::io(&path, "write"))?;
        let held = GcGuard {
            path: path.clone(),
            heartbeat: Some(Heartbeat::start(path.clone(), json)),
        };
        if let Some(p) = self.in_progress()?.first() {
            return Err(RepoError::Busy(format!(
                "gc refused: backup {} is running ({}); run gc when no backup is in progress",
                p.id,
                describe(p.owner.as_ref())
            )));
        }
        if let Some(other) = self.live_gc_lock_except(Some(&path))? {
            return Err(RepoError::Busy(format!(
                "gc refused: another gc is running ({other})"
            )));
        }
        Ok(held)
    }

    /// The sweep of [`Repo::gc_without`] in object storage, under the gc lock taken before the
    /// indexes were read: every chunk no complete backup references is deleted (and the index
    /// of a commit that never wrote its manifest).
    pub(super) fn sweep_remote(
        &self,
        referenced: &HashSet<Digest>,
        dry_run: bool,
        report: &mut GcReport,
    ) -> Result<(), RepoError> {
        let chunks = self.root().join("chunks");
        for b in 0..=255u8 {
            let dir = chunks.join(to_hex(&[b]));
            for e in store::list(&dir).map_err(RepoError::io(&dir, "list"))? {
                let Ok(d) = e.name.parse::<Digest>() else {
                    continue; // not a chunk: left alone
                };
                if d.0[0] != b || referenced.contains(&d) {
                    continue;
                }
                if !dry_run {
                    let p = dir.join(&e.name);
                    match store::remove(&p) {
                        Ok(()) => {}
                        Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                        Err(err) => return Err(RepoError::io(&p, "remove chunk")(err)),
                    }
                }
                report.chunks_removed += 1;
                report.bytes_freed += e.len;
            }
        }
        if !dry_run {
            for id in self.backup_ids()? {
                if !self.backup_exists(&id)? {
                    let p = self.backup_dir(&id).join("index.bin");
                    let _ = store::remove(&p);
                }
            }
        }
        Ok(())
    }
}
