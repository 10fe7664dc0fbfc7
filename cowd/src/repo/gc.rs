//! Garbage collection: removing chunk files that no complete backup references.
//!
//! Order matters, against backups running meanwhile:
//! 1. read the pins first: a backup that commits after this point left its pin in the list;
//! 2. read every complete index: the set of referenced chunks;
//! 3. sweep `chunks/`: an unreferenced chunk is removed only if its mtime is older than
//!    `cutoff` = min(gc start, oldest pin's `started` - 60 s). A running backup's new chunks are
//!    younger than its pin; a chunk it found already stored was touched (mtime refreshed) by
//!    `store_chunk`; a backup that began after step 1 only touches or adds chunks after gc
//!    started. Each removal re-checks the mtime under the store/gc lock, so a store racing with
//!    the sweep either sees the file gone (and writes it again) or refreshes it first (and gc
//!    keeps it).
//!
//! An index that cannot be read stops gc: what it references is unknown.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::time::{Duration, SystemTime};

use super::{Digest, Repo, RepoError, digest::to_hex, fsync_dir, held};

/// How much older than the oldest pin a chunk must be for gc to remove it.
pub const PIN_MARGIN: Duration = Duration::from_secs(60);

pub use cowd_api::repo::GcReport;

/// What became of a chunk gc wanted to remove.
enum Removal {
    Removed,
    /// Removed by someone else meanwhile.
    Gone,
    /// Refreshed by a store (of another host) meanwhile: put back.
    Refreshed,
}

impl Repo {
    /// Removes the old chunk file at `path` (last seen with `mtime`) in two steps, safe against
    /// a store of another host sharing the repository (whose refresh this process's lock does
    /// not exclude): renamed out of its name first, then its mtime checked once more. A store
    /// that refreshed it before the rename shows in that mtime, and the chunk is linked back;
    /// a store after the rename no longer finds it under its name and stores it anew
    /// (`chunk.rs`, `touch`).
    fn remove_chunk(
        &self,
        path: &std::path::Path,
        mtime: SystemTime,
    ) -> Result<Removal, RepoError> {
        let trash = self.tmp_path();
        match fs::rename(path, &trash) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Removal::Gone),
            Err(e) => return Err(RepoError::io(path, "remove chunk")(e)),
        }
        let now = fs::symlink_metadata(&trash).and_then(|m| m.modified());
        let outcome = if now.is_ok_and(|t| t == mtime) {
            Removal::Removed
        } else {
            match fs::hard_link(&trash, path) {
                // Stored anew meanwhile: that copy serves.
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(RepoError::io(path, "put back a refreshed chunk")(e)),
            }
            Removal::Refreshed
        };
        fs::remove_file(&trash).map_err(RepoError::io(&trash, "remove chunk"))?;
        Ok(outcome)
    }

    /// Removes the chunks that no complete backup references and that are not protected by a
    /// running backup. `dry_run` only counts.
    pub fn gc(&self, dry_run: bool) -> Result<GcReport, RepoError> {
        self.gc_without(&[], dry_run)
    }

    /// Like [`gc`](Repo::gc), counting the backups in `without` as already removed. Only
    /// meaningful with `dry_run` (a prune plan's preview); their chunks are never deleted.
    pub fn gc_without(&self, without: &[String], dry_run: bool) -> Result<GcReport, RepoError> {
        if !without.is_empty() && !dry_run {
            return Err(RepoError::Invalid(
                "gc_without only previews (dry run)".into(),
            ));
        }
        // Object storage: the lock before the indexes are read (`remote_gc.rs`).
        let _lock = if self.is_remote() && !dry_run {
            Some(self.take_gc_lock()?)
        } else {
            None
        };
        let start = SystemTime::now();
        let pins = self.in_progress()?;
        let cutoff = pins
            .iter()
            .map(|p| {
                p.started
                    .checked_sub(PIN_MARGIN)
                    .unwrap_or(SystemTime::UNIX_EPOCH)
            })
            .fold(start, SystemTime::min);
        let mut referenced: HashSet<Digest> = HashSet::new();
        for id in self.backup_ids()? {
            if without.contains(&id) {
                continue;
            }
            match self.index(&id) {
                Ok(ix) => referenced.extend(ix.objects().map(|(d, _)| d)),
                // Removed since the listing.
                Err(_) if !self.backup_exists(&id)? => {}
                Err(e) => {
                    return Err(RepoError::Invalid(format!(
                        "gc refused: backup {id} cannot be read, so its chunks are unknown ({e}); \
                         repair or remove it first"
                    )));
                }
            }
        }
        let mut report = GcReport {
            chunks_referenced: referenced.len() as u64,
            ..GcReport::default()
        };
        if self.is_remote() {
            self.sweep_remote(&referenced, dry_run, &mut report)?;
            return Ok(report);
        }
        let chunks = self.root().join("chunks");
        for b in 0..=255u8 {
            let prefix = to_hex(&[b]);
            let dir = chunks.join(&prefix);
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(RepoError::io(&dir, "read directory")(e)),
            };
            let mut candidates = Vec::new();
            for e in entries {
                let e = e.map_err(RepoError::io(&dir, "read directory"))?;
                let name = e.file_name();
                let Some(d) = name.to_str().and_then(|n| n.parse::<Digest>().ok()) else {
                    continue; // not a chunk: left alone
                };
                if d.0[0] != b || referenced.contains(&d) {
                    continue;
                }
                let Ok(meta) = e.metadata() else { continue };
                let mtime = meta.modified().map_err(RepoError::io(&e.path(), "stat"))?;
                if mtime >= cutoff {
                    report.chunks_kept_young += 1;
                } else {
                    candidates.push((e.path(), mtime, meta.len()));
                }
            }
            if candidates.is_empty() {
                continue;
            }
            let mut removed = false;
            {
                let _g = held(self.inner.gc_lock.write());
                for (path, mtime, len) in candidates {
                    let now = match fs::symlink_metadata(&path).and_then(|m| m.modified()) {
                        Ok(t) => t,
                        Err(_) => continue, // gone meanwhile
                    };
                    if now != mtime || now >= cutoff {
                        report.chunks_kept_young += 1; // stored again since the listing
                        continue;
                    }
                    if !dry_run {
                        match self.remove_chunk(&path, mtime)? {
                            Removal::Removed => removed = true,
                            Removal::Gone => continue,
                            Removal::Refreshed => {
                                report.chunks_kept_young += 1;
                                continue;
                            }
                        }
                    }
                    report.chunks_removed += 1;
                    report.bytes_freed += len;
                }
            }
            if removed {
                fsync_dir(&dir).map_err(RepoError::io(&dir, "fsync"))?;
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{backup, data, repo};
    use super::*;

    fn age(r: &Repo, d: &Digest, secs: u64) {
        let f = fs::File::open(r.chunk_path(d)).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(secs))
            .unwrap();
    }

    #[test]
    fn a_chunk_refreshed_after_gc_looked_at_it_is_put_back() {
        let (_d, r) = repo();
        let chunk = data(1, 7);
        let s = r.store_chunk(&chunk).unwrap();
        let p = r.chunk_path(&s.digest);
        let mtime = |p: &std::path::Path| fs::metadata(p).unwrap().modified().unwrap();
        // gc saw it older; a store (another host's) refreshed it since.
        let seen = mtime(&p) - Duration::from_secs(5);
        assert!(matches!(
            r.remove_chunk(&p, seen).unwrap(),
            Removal::Refreshed
        ));
        let mut out = Vec::new();
        r.load_chunk(&s.digest, chunk.len(), &mut out).unwrap();
        assert_eq!(out, chunk);
        // Unchanged since gc looked: removed; then gone.
        assert!(matches!(
            r.remove_chunk(&p, mtime(&p)).unwrap(),
            Removal::Removed
        ));
        assert!(!p.exists());
        assert!(matches!(r.remove_chunk(&p, seen).unwrap(), Removal::Gone));
        assert_eq!(fs::read_dir(r.root().join("tmp")).unwrap().count(), 0);
        // A store now finds it absent and stores it anew.
        assert!(r.store_chunk(&chunk).unwrap().new);
    }

    #[test]
    fn removes_only_unreferenced_chunks() {
        let (_d, r) = repo();
        let a = data(3, 1);
        let mut b = data(3, 2);
        b[..65536].copy_from_slice(&a[..65536]); // one chunk shared
        let ia = backup(&r, "a", None, 1, &a);
        let ib = backup(&r, "b", None, 2, &b);
        let orphan = r.store_chunk(&data(1, 3)).unwrap();

        let dry = r.gc(true).unwrap();
        assert_eq!(dry.chunks_referenced, 5);
        assert_eq!(dry.chunks_removed, 1);
        assert_eq!(dry.bytes_freed, orphan.stored_bytes);
        assert!(r.has_chunk(&orphan.digest));

        r.remove_backup("a").unwrap();
        let g = r.gc(false).unwrap();
        assert_eq!(g.chunks_referenced, 3);
        assert_eq!(g.chunks_removed, 3); // a's two own chunks + the orphan
        assert_eq!(g.chunks_kept_young, 0);
        assert!(!r.has_chunk(&orphan.digest));
        assert!(!r.has_chunk(&ia.digests[1]) && !r.has_chunk(&ia.digests[2]));
        assert!(ib.digests.iter().all(|d| r.has_chunk(d)));
        assert_eq!(r.gc(false).unwrap().chunks_removed, 0);
    }

    #[test]
    fn a_pin_keeps_young_chunks_and_reused_chunks_are_refreshed() {
        let (_d, r) = repo();
        let old = r.store_chunk(&data(1, 10)).unwrap();
        let reused = r.store_chunk(&data(1, 11)).unwrap();
        age(&r, &old.digest, 3600);
        age(&r, &reused.digest, 3600);
        let running = r.begin("run", None).unwrap();
        let new = r.store_chunk(&data(1, 12)).unwrap();
        assert!(!r.store_chunk(&data(1, 11)).unwrap().new); // refreshes its mtime
        let g = r.gc(false).unwrap();
        assert_eq!((g.chunks_removed, g.chunks_kept_young), (1, 2));
        assert!(!r.has_chunk(&old.digest));
        assert!(r.has_chunk(&new.digest) && r.has_chunk(&reused.digest));
        running.abort();
        let g = r.gc(false).unwrap();
        assert_eq!((g.chunks_removed, g.chunks_kept_young), (2, 0));
    }

    #[test]
    fn an_unreadable_index_stops_gc() {
        let (_d, r) = repo();
        backup(&r, "a", None, 1, &data(2, 1));
        r.store_chunk(&data(1, 9)).unwrap();
        let p = r.backup_dir("a").join("index.bin");
        let mut b = fs::read(&p).unwrap();
        b[40] ^= 1;
        fs::write(&p, b).unwrap();
        let e = r.gc(false).unwrap_err().to_string();
        assert!(e.contains("gc refused") && e.contains("backup a"), "{e}");
    }
}
