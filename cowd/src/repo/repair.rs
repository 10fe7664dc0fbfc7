//! Repair: what verify finds damaged taken again, intact, from other repositories (a copy made
//! by sync), and what cannot be repaired named, or removed.
//!
//! ```text
//!   verify ─> corrupt or missing chunks ─> the first repository given that holds it intact
//!                                          (load_chunk there checks its name)
//!                                            ─> the damaged file removed, the chunk stored
//!          ─> bad indexes (manifest readable) ─> the same backup there whose index has the
//!                                                checksum our manifest names ─> index.bin
//!   verify again (a repaired index names chunks not checked before), at most twice more
//!   ─> the backups still damaged: named, or removed with `remove_broken`
//! ```
//!
//! A chunk is only ever replaced by data with its own name (content addressing), and an
//! index only by one with the checksum its manifest holds, so a repair cannot change what a
//! backup restores, only make it restorable again. A backup that stays damaged is kept unless
//! asked (its intact chunks may still be worth reading); one in use (a running backup's parent,
//! a restore) is not removed and says so.

use std::io;

pub use cowd_api::repo::RepairReport;

use super::crypt::Object;
use super::{CorruptChunk, Digest, Index, Repo, RepoError, VerifyReport, store};

/// Verify rounds after the first repair: a repaired index can reveal chunks of its own.
const ROUNDS: usize = 3;

impl Repo {
    /// Repairs this repository from `from` (see the module documentation).
    pub fn repair(
        &self,
        from: &[Repo],
        remove_broken: bool,
        dry_run: bool,
    ) -> Result<RepairReport, RepoError> {
        let mut report = RepairReport::default();
        let mut found = self.verify(None, &|_, _| {})?;
        report.found = found.clone();
        for _ in 0..ROUNDS {
            if found.is_ok() {
                break;
            }
            let repaired = self.repair_round(&found, from, dry_run, &mut report)?;
            if dry_run || !repaired {
                break;
            }
            found = self.verify(None, &|_, _| {})?;
        }
        // What stays damaged: what the last verify found; in a dry run, less what a
        // repository given could mend.
        report.chunks_unrepaired.sort_unstable();
        report.chunks_unrepaired.dedup();
        let mended = |d: &Digest| dry_run && report.chunks_repaired.iter().any(|(m, _)| m == d);
        let reindexed = |id: &str| dry_run && report.indexes_repaired.iter().any(|(i, _)| i == id);
        let mut broken = Vec::new();
        for c in found.corrupt.iter().chain(&found.missing) {
            if !mended(&c.digest) {
                broken.extend(c.backups.iter().map(|b| (b.clone(), problem(c))));
            }
        }
        for (id, why) in &found.bad_indexes {
            if !reindexed(id) {
                broken.push((id.clone(), format!("index: {why}")));
            }
        }
        broken.sort();
        broken.dedup_by(|a, b| a.0 == b.0);
        if remove_broken && !dry_run {
            for (id, _) in &broken {
                match self.remove_backup(id) {
                    Ok(()) => report.removed.push(id.clone()),
                    Err(RepoError::InUse { .. } | RepoError::Leased { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        report.broken = broken;
        Ok(report)
    }

    /// One round over what `found` names; true when anything was repaired.
    fn repair_round(
        &self,
        found: &VerifyReport,
        from: &[Repo],
        dry_run: bool,
        report: &mut RepairReport,
    ) -> Result<bool, RepoError> {
        let mut repaired = false;
        let mut plain = Vec::new();
        for c in found.corrupt.iter().chain(&found.missing) {
            let Some(len) = self.chunk_len_in(&c.backups, &c.digest) else {
                report.chunks_unrepaired.push(c.digest);
                continue;
            };
            let source = from
                .iter()
                .find(|r| r.load_chunk(&c.digest, len, &mut plain).is_ok());
            let Some(source) = source else {
                report.chunks_unrepaired.push(c.digest);
                continue;
            };
            if !dry_run {
                self.replace_chunk(&c.digest, &plain)?;
            }
            let whence = source.root().display().to_string();
            report.chunks_repaired.push((c.digest, whence));
            repaired = true;
        }
        for (id, _) in &found.bad_indexes {
            // Without our manifest there is no checksum to hold another index to.
            let Ok(ours) = self.manifest(id) else {
                continue;
            };
            let intact = from.iter().find_map(|r| {
                // The opened bytes: sealed again under this repository's key below.
                let bytes = r.index_bytes(id).ok()?;
                let sum = Index::checksum_of(&bytes)?;
                (sum.to_string() == ours.index_sha256 && Index::decode(&bytes).is_ok())
                    .then_some((r, bytes))
            });
            let Some((source, bytes)) = intact else {
                continue;
            };
            if !dry_run {
                let bytes = self.seal_object(Object::Index, id, bytes);
                self.write_atomic(&self.backup_dir(id).join("index.bin"), &bytes)?;
            }
            let whence = source.root().display().to_string();
            report.indexes_repaired.push((id.clone(), whence));
            repaired = true;
        }
        Ok(repaired)
    }

    /// The plain length of chunk `d` in the first of `backups` whose index names it.
    fn chunk_len_in(&self, backups: &[String], d: &Digest) -> Option<usize> {
        backups.iter().find_map(|id| {
            let index = self.index(id).ok()?;
            index.objects().find(|(x, _)| x == d).map(|(_, len)| len)
        })
    }

    /// Puts `plain`, checked to be chunk `d`, in place of a damaged or missing chunk file.
    fn replace_chunk(&self, d: &Digest, plain: &[u8]) -> Result<(), RepoError> {
        if self.name_of(plain) != *d {
            return Err(RepoError::Invalid(format!(
                "repair of chunk {d}: other data"
            )));
        }
        let path = self.chunk_path(d);
        // Removed first: a store that finds the name present keeps the file.
        match store::remove(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(RepoError::io(&path, "remove damaged chunk")(e)),
        }
        self.store_chunk(plain)?;
        self.sync_dirs()
    }
}

/// Why a damaged chunk breaks the backups that name it.
fn problem(c: &CorruptChunk) -> String {
    format!("chunk {}: {}", c.digest, c.problem)
}

#[cfg(test)]
#[path = "repair_tests.rs"]
mod tests;
