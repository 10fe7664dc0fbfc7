//! Verification: re-reading every chunk that selected backups reference, once each.
//!
//! Each backup's index is checked (trailing SHA-256, the manifest's `index_sha256`, sizes);
//! then every distinct chunk named by a good index is read and checked (header, length the
//! index expects, SHA-256 of the plain data) by a few threads, while the calling thread
//! collects results and reports progress. A bad chunk is reported with exactly the selected
//! backups whose index names it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use super::chunk::{ChunkFault, read_chunk_file};
use super::{Digest, Repo, RepoError};

pub use cowd_api::repo::{CorruptChunk, VerifyReport};

impl Repo {
    /// Verifies the backups `ids` (all complete backups when `None`). `progress(done, total)`
    /// is called on the calling thread, in distinct chunks, after each chunk.
    pub fn verify(
        &self,
        ids: Option<&[String]>,
        progress: &dyn Fn(u64, u64),
    ) -> Result<VerifyReport, RepoError> {
        let ids: Vec<String> = match ids {
            None => self.backup_ids()?,
            Some(list) => {
                for id in list {
                    super::check_id(id)?;
                    if !self.backup_exists(id)? {
                        return Err(RepoError::NoSuchBackup(id.clone()));
                    }
                }
                list.to_vec()
            }
        };
        let mut report = VerifyReport::default();
        // digest -> (plain length the index expects, indices into `ids` of the referrers)
        let mut refs: HashMap<Digest, (usize, Vec<u32>)> = HashMap::new();
        for (n, id) in ids.iter().enumerate() {
            report.backups_checked += 1;
            let index = match self.index(id) {
                Ok(ix) => ix,
                Err(e) => {
                    report.bad_indexes.push((id.clone(), e.to_string()));
                    continue;
                }
            };
            for (d, len) in index.objects() {
                let (_, by) = refs.entry(d).or_insert_with(|| (len, Vec::new()));
                if by.last() != Some(&(n as u32)) {
                    by.push(n as u32);
                }
            }
        }
        let mut work: Vec<(Digest, usize)> = refs.iter().map(|(d, (l, _))| (*d, *l)).collect();
        work.sort_unstable();
        let total = work.len() as u64;
        progress(0, total);
        let next = AtomicUsize::new(0);
        let (tx, rx) = mpsc::channel::<(usize, Result<u64, ChunkFault>)>();
        std::thread::scope(|s| {
            for _ in 0..self.threads().min(work.len()) {
                let tx = tx.clone();
                let (next, work) = (&next, &work);
                s.spawn(move || {
                    let (mut out, mut scratch) = (Vec::new(), Vec::new());
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&(d, len)) = work.get(i) else { break };
                        let path = self.chunk_path(&d);
                        let r = read_chunk_file(
                            &path,
                            &d,
                            self.naming(),
                            Some(len),
                            &mut out,
                            &mut scratch,
                        )
                        .map(|_| len as u64);
                        if tx.send((i, r)).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(tx);
            let mut done = 0;
            for (i, r) in rx {
                done += 1;
                let d = work[i].0;
                let bad = |problem: String| CorruptChunk {
                    digest: d,
                    path: self.chunk_path(&d),
                    problem,
                    backups: refs[&d]
                        .1
                        .iter()
                        .map(|&n| ids[n as usize].clone())
                        .collect(),
                };
                match r {
                    Ok(bytes) => {
                        report.chunks_checked += 1;
                        report.bytes_checked += bytes;
                    }
                    Err(ChunkFault::Missing) => report.missing.push(bad("missing".into())),
                    Err(ChunkFault::Io(e)) => {
                        report.chunks_checked += 1;
                        report.corrupt.push(bad(format!("read error: {e}")));
                    }
                    Err(ChunkFault::Corrupt(p)) => {
                        report.chunks_checked += 1;
                        report.corrupt.push(bad(p));
                    }
                }
                progress(done, total);
            }
        });
        report.corrupt.sort_by_key(|c| c.digest);
        report.missing.sort_by_key(|c| c.digest);
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{backup, data, patched_backup, repo};
    use super::*;
    use std::cell::Cell;
    use std::fs;

    #[test]
    fn a_damaged_patch_is_named_with_the_backups_that_read_it() {
        let (_d, r) = repo();
        let a = data(3, 1);
        backup(&r, "a", None, 1, &a);
        let mut b = a.clone();
        b[70000..70100].fill(9);
        let ib = patched_backup(&r, "b", "a", 2, &b);
        backup(&r, "c", Some("b"), 3, &b);
        let patch = ib.patch(1).unwrap().digest;
        let p = r.chunk_path(&patch);
        let mut bytes = fs::read(&p).unwrap();
        let at = bytes.len() - 1;
        bytes[at] ^= 1;
        fs::write(&p, bytes).unwrap();
        let rep = r.verify(None, &|_, _| {}).unwrap();
        assert_eq!(rep.corrupt.len(), 1, "{rep:?}");
        assert_eq!(
            (rep.corrupt[0].digest, &rep.corrupt[0].backups[..]),
            (patch, &["b".to_string()][..])
        );
        let mut out = Vec::new();
        let e = r.load_entry(&ib, 1, &mut out).unwrap_err();
        assert!(e.to_string().contains(&patch.to_string()), "{e}");
        fs::remove_file(&p).unwrap();
        let rep = r.verify(None, &|_, _| {}).unwrap();
        assert_eq!(rep.missing[0].digest, patch);
    }

    #[test]
    fn names_exactly_the_backups_that_reference_a_bad_chunk() {
        let (_d, r) = repo();
        let a = data(3, 1);
        let mut b = data(3, 2);
        b[65536..131072].copy_from_slice(&a[65536..131072]);
        let c = data(2, 3);
        let ia = backup(&r, "a", None, 1, &a);
        backup(&r, "b", Some("a"), 2, &b);
        let ic = backup(&r, "c", None, 3, &c);

        let calls = Cell::new((0, 0));
        let ok = r.verify(None, &|d, t| calls.set((d, t))).unwrap();
        assert!(ok.is_ok(), "{ok:?}");
        assert_eq!((ok.backups_checked, ok.chunks_checked), (3, 7));
        assert_eq!(ok.bytes_checked, 7 * 65536);
        assert_eq!(calls.get(), (7, 7));

        let shared = ia.digests[1];
        let p = r.chunk_path(&shared);
        let mut bytes = fs::read(&p).unwrap();
        bytes[1000] ^= 0x10;
        fs::write(&p, bytes).unwrap();
        fs::remove_file(r.chunk_path(&ic.digests[0])).unwrap();

        let rep = r.verify(None, &|_, _| {}).unwrap();
        assert_eq!(rep.corrupt.len(), 1);
        assert_eq!(rep.corrupt[0].digest, shared);
        assert_eq!(rep.corrupt[0].backups, ["a", "b"]);
        assert!(
            rep.corrupt[0].problem.contains("BLAKE3 of the data"),
            "{}",
            rep.corrupt[0].problem
        );
        assert_eq!(rep.missing.len(), 1);
        assert_eq!(rep.missing[0].backups, ["c"]);
        assert_eq!(rep.chunks_checked, 6);

        let only_b = r.verify(Some(&["b".to_string()]), &|_, _| {}).unwrap();
        assert_eq!(only_b.backups_checked, 1);
        assert_eq!(only_b.corrupt[0].backups, ["b"]);
        assert!(only_b.missing.is_empty());
        assert!(matches!(
            r.verify(Some(&["zz".to_string()]), &|_, _| {}),
            Err(RepoError::NoSuchBackup(_))
        ));
    }

    #[test]
    fn bad_index_and_manifest_are_reported() {
        let (_d, r) = repo();
        backup(&r, "a", None, 1, &data(2, 1));
        backup(&r, "b", None, 2, &data(2, 2));
        let p = r.backup_dir("a").join("index.bin");
        let mut bytes = fs::read(&p).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&p, bytes).unwrap();
        let p = r.backup_dir("b").join("manifest.json");
        let m = fs::read_to_string(&p).unwrap();
        let sum = r.manifest("b").unwrap().index_sha256;
        fs::write(&p, m.replace(&sum, &"ab".repeat(32))).unwrap();

        let rep = r.verify(None, &|_, _| {}).unwrap();
        assert_eq!(rep.bad_indexes.len(), 2);
        assert_eq!(rep.bad_indexes[0].0, "a");
        assert!(
            rep.bad_indexes[0].1.contains("checksum"),
            "{}",
            rep.bad_indexes[0].1
        );
        assert_eq!(rep.bad_indexes[1].0, "b");
        assert!(
            rep.bad_indexes[1].1.contains("differs from the manifest"),
            "{}",
            rep.bad_indexes[1].1
        );
        assert_eq!(rep.chunks_checked, 0);
    }
}
