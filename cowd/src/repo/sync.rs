//! Sync: backups copied from one repository to another, moving only the chunks the
//! destination lacks (a fast local repository and an off-site one).
//!
//! ```text
//!   for each backup asked for, oldest first, that the destination does not hold:
//!     source:       lease it (a prune there keeps it until the copy ends)
//!     destination:  begin it (its pin keeps the chunks copied so far from gc; the chunks it
//!                   holds already are refreshed as a backup refreshes them, so that a gc
//!                   there keeps them too)
//!     each distinct chunk of its index the destination lacks, on chunk_threads() threads:
//!       load_chunk (source: header and name checked) ─> store_chunk (destination: its
//!       own compression level, the file linked into place complete)
//!     commit: the source's index and manifest (the destination checks every chunk is there)
//! ```
//!
//! A backup copied keeps its id, times, mode and counts; its parent stays its parent when
//! the destination holds that backup (or receives it first in the same sync), otherwise the
//! copy stands alone: an incremental backup's index names every chunk of its device, so a
//! restore never needs the parent. Both repositories must use the same chunk size (an index
//! counts chunks of that size).
//!
//! Repositories that name chunks differently (an unencrypted one and an encrypted one, or two
//! encrypted with different master keys: [`Repo::chunk_naming`]) cannot compare names: every
//! distinct chunk of a backup is then read, stored in the destination under the name it has
//! there (which finds the chunks the destination holds), and the index is rewritten with
//! those names (every chunk is read and sealed again; so it is within one key too). A dry run
//! between such repositories counts every chunk as one to copy.
//!
//! Interrupted (stopped, a failed read or write, the process killed), a sync leaves no
//! backup half-visible in the destination; the chunks it stored stay there, unreferenced
//! until a gc, and the next sync does not move them again. A chunk that is damaged in the
//! source fails the sync, naming it; nothing is copied from it.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

pub use cowd_api::repo::SyncReport;

use super::{Digest, Repo, RepoError, held};

impl Repo {
    /// Copies backups `ids` (complete backups of this repository) that `dst` does not hold to
    /// `dst`, oldest first. `stop` is asked before each chunk (true: stop, with
    /// [`RepoError::Invalid`] saying so); `progress` sees the report after each chunk.
    /// With `dry_run` nothing is written: the report says what would be copied.
    pub fn sync_to(
        &self,
        dst: &Repo,
        ids: &[String],
        dry_run: bool,
        stop: &(dyn Fn() -> bool + Sync),
        progress: &(dyn Fn(&SyncReport) + Sync),
    ) -> Result<SyncReport, RepoError> {
        if self.chunk_size() != dst.chunk_size() {
            return Err(RepoError::Invalid(format!(
                "cannot sync {} (chunks of {} bytes) to {} (chunks of {} bytes): both must use \
                 the same chunk size",
                self.root().display(),
                self.chunk_size(),
                dst.root().display(),
                dst.chunk_size()
            )));
        }
        if self.id() == dst.id() {
            return Err(RepoError::Invalid(format!(
                "{} and {} are the same repository",
                self.root().display(),
                dst.root().display()
            )));
        }
        // Names of this repository's chunks in the destination, when the two differ.
        let translate = self.chunk_naming() != dst.chunk_naming();
        let mut manifests = ids
            .iter()
            .map(|id| self.manifest(id))
            .collect::<Result<Vec<_>, _>>()?;
        manifests.sort_by(|a, b| (a.snapshot_time, &a.id).cmp(&(b.snapshot_time, &b.id)));
        let mut report = SyncReport::default();
        // Backups the destination holds, or will once this sync has copied them.
        let mut held_there: HashSet<String> = dst.backup_ids()?.into_iter().collect();
        // In a dry run, the chunks an earlier backup of this sync would have copied.
        let mut planned: HashSet<Digest> = HashSet::new();
        for m in manifests {
            if held_there.contains(&m.id) {
                // The same backup, or another one that took the same id (another host's):
                // told apart by the checksum of the index.
                // (Across namings the indexes differ anyway: the device and time must agree.)
                let same = |there: &super::Manifest| {
                    if translate {
                        (&there.export, there.snapshot_time, there.device_size)
                            == (&m.export, m.snapshot_time, m.device_size)
                    } else {
                        there.index_sha256 == m.index_sha256
                    }
                };
                if let Ok(there) = dst.manifest(&m.id)
                    && !same(&there)
                {
                    return Err(RepoError::Invalid(format!(
                        "{} holds another backup with the id {:?} (its index differs): it is \
                         not copied over it",
                        dst.root().display(),
                        m.id
                    )));
                }
                report.present.push(m.id.clone());
                continue;
            }
            let _lease = self.lease(&m.id, &format!("sync to {}", dst.root().display()))?;
            let mut index = self.index(&m.id)?;
            let parent = m.parent.as_deref().filter(|p| held_there.contains(*p));
            // Begun first, as a backup: its pin protects what it copies and refreshes.
            // Dropped on an error, it is aborted.
            let copy = if dry_run {
                None
            } else {
                Some(dst.begin(&m.id, parent)?)
            };
            let mut seen = HashSet::new();
            let mut missing = Vec::new();
            for (d, len) in index.objects() {
                if !seen.insert(d) {
                    continue;
                }
                let d = &d;
                // Present: refreshed, so that a gc in the destination keeps it until commit.
                let present = if translate {
                    false
                } else if dry_run {
                    dst.has_chunk(d) || planned.contains(d)
                } else {
                    dst.refresh_chunk(d)?
                };
                if present {
                    report.chunks_present += 1;
                } else {
                    missing.push((*d, len));
                }
            }
            let Some(copy) = copy else {
                planned.extend(missing.iter().map(|&(d, _)| d));
                report.chunks_copied += missing.len() as u64;
                report.bytes_copied += missing.iter().map(|&(_, len)| len as u64).sum::<u64>();
                report.synced.push(m.id.clone());
                held_there.insert(m.id.clone());
                continue;
            };
            let names = translate.then(|| Mutex::new(HashMap::new()));
            self.copy_chunks(dst, &missing, names.as_ref(), stop, &mut report, progress)?;
            if let Some(names) = names {
                let names = names.into_inner().unwrap_or_else(|p| p.into_inner());
                index.rename_objects(|d| names[d]);
            }
            let mut manifest = m.clone();
            manifest.parent = parent.map(str::to_owned);
            copy.commit(&manifest, &index)?;
            report.synced.push(m.id.clone());
            held_there.insert(m.id.clone());
            progress(&report);
        }
        Ok(report)
    }

    /// Copies `chunks` (digest, plain length) to `dst` on several threads; the first error
    /// stops them all. With `names`, each chunk's name in `dst` is recorded there, and a chunk
    /// `dst` held already counts as present.
    fn copy_chunks(
        &self,
        dst: &Repo,
        chunks: &[(Digest, usize)],
        names: Option<&Mutex<HashMap<Digest, Digest>>>,
        stop: &(dyn Fn() -> bool + Sync),
        report: &mut SyncReport,
        progress: &(dyn Fn(&SyncReport) + Sync),
    ) -> Result<(), RepoError> {
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let first_error: Mutex<Option<RepoError>> = Mutex::new(None);
        let shared = Mutex::new(std::mem::take(report));
        let threads = self.threads().max(dst.threads()).min(chunks.len());
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    let mut plain = Vec::new();
                    while !failed.load(Ordering::Relaxed) {
                        let Some(&(digest, len)) = chunks.get(next.fetch_add(1, Ordering::Relaxed))
                        else {
                            return;
                        };
                        let copied = if stop() {
                            Err(RepoError::Invalid("sync stopped".into()))
                        } else {
                            self.load_chunk(&digest, len, &mut plain)
                                .and_then(|()| dst.store_chunk(&plain))
                        };
                        match copied {
                            Ok(stored) => {
                                if let Some(names) = names {
                                    held(names.lock()).insert(digest, stored.digest);
                                }
                                let mut r = held(shared.lock());
                                if names.is_some() && !stored.new {
                                    r.chunks_present += 1;
                                } else {
                                    r.chunks_copied += 1;
                                    r.bytes_copied += len as u64;
                                    r.stored_bytes += stored.stored_bytes;
                                }
                                progress(&r);
                            }
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                held(first_error.lock()).get_or_insert(e);
                                return;
                            }
                        }
                    }
                });
            }
        });
        *report = shared.into_inner().unwrap_or_else(|p| p.into_inner());
        match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
#[path = "sync_tests.rs"]
mod tests;
