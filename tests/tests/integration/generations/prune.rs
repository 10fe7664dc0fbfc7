//! `prune --keep-last 2` keeps the policy, and GC removes exactly the unreferenced chunks.

use std::collections::BTreeSet;
use std::fs::{self};

use cowd::control::api::PruneResult;
use cowd_tests::cli::{ok, start};
use cowd_tests::files::{assert_same_file, fill};
use cowd_tests::repo::{Ctl, chunk_files, index_objects};
use cowd_tests::{Daemon, MIB, nbd_writes};

use super::{BLOCK, CHUNK};

#[test]
fn prune_keeps_the_policy_and_gc_removes_only_unreferenced_chunks() {
    let size = 64 * MIB;
    let d = start(Daemon::builder().export("disk", size));
    let dir = d.dir().to_owned();
    let image = d.image("disk").to_owned();
    fill(&image, 0, 48 * MIB, 8);
    let repo = dir.join("repo");
    let ctl = Ctl::new(&d.control, &repo);
    ctl.init(None);
    let mut ids = Vec::new();
    let mut refs = Vec::new();
    for i in 0..5u64 {
        if i > 0 {
            // Chunk 0 changes every time; chunk 2 + 2i is new data; chunk 15 changes twice.
            let mut w = vec![
                (i as u8, 0, BLOCK),
                (0x40 + i as u8, (2 + 2 * i) * CHUNK, MIB),
            ];
            if i == 2 || i == 4 {
                w.push((0x80 + i as u8, 15 * CHUNK, CHUNK));
            }
            nbd_writes(&d.uri("disk"), &w);
        }
        ids.push(ctl.backup("disk", &["--no-quiesce"]).id);
        let r = dir.join(format!("ref{i}.img"));
        fs::copy(&image, &r).unwrap();
        refs.push(r);
    }
    let idx: Vec<BTreeSet<String>> = ids.iter().map(|id| index_objects(&repo, id)).collect();
    let before = chunk_files(&repo);
    let all: BTreeSet<String> = idx.iter().flatten().cloned().collect();
    assert_eq!(
        before, all,
        "chunk files = the chunks the backups reference"
    );

    let dry: PruneResult = serde_json::from_str(&ok(&ctl.in_repo(&[
        "--json",
        "prune",
        "disk",
        "--keep-last",
        "2",
        "--dry-run",
    ])))
    .unwrap();
    assert!(dry.removed.is_empty());
    assert_eq!(chunk_files(&repo), before);
    // Every backup was made within a day of the newest: --keep-within keeps all five, and
    // --keep-yearly the newest of the year.
    let within: PruneResult = serde_json::from_str(&ok(&ctl.in_repo(&[
        "--json",
        "prune",
        "disk",
        "--keep-within",
        "1d",
        "--keep-yearly",
        "1",
        "--dry-run",
    ])))
    .unwrap();
    assert!(within.remove.is_empty(), "{within:?}");
    assert_eq!(within.keep.len(), 5, "{within:?}");
    assert_eq!(within.keep[0].reasons, ["within", "yearly"], "{within:?}");
    assert!(
        within.keep[1..].iter().all(|k| k.reasons == ["within"]),
        "{within:?}"
    );
    let res: PruneResult = serde_json::from_str(&ok(&ctl.in_repo(&[
        "--json",
        "prune",
        "disk",
        "--keep-last",
        "2",
    ])))
    .unwrap();
    println!("prune: {res:?}");
    let kept: BTreeSet<&str> = res.keep.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(kept, BTreeSet::from([ids[3].as_str(), ids[4].as_str()]));
    let removed: BTreeSet<&str> = res.removed.iter().map(String::as_str).collect();
    assert_eq!(
        removed,
        BTreeSet::from([ids[0].as_str(), ids[1].as_str(), ids[2].as_str()])
    );
    assert_eq!(dry.remove, res.remove);
    let left: Vec<String> = ctl.manifests().into_iter().map(|m| m.id).collect();
    assert_eq!(left, ids[3..]);

    let after = chunk_files(&repo);
    let gone: BTreeSet<String> = before.difference(&after).cloned().collect();
    let needed: BTreeSet<String> = idx[3].union(&idx[4]).cloned().collect();
    let only_removed: BTreeSet<String> = idx[..3]
        .iter()
        .flatten()
        .filter(|c| !needed.contains(*c))
        .cloned()
        .collect();
    println!(
        "gc: {} chunks before, {} removed ({} only in removed backups), {} left, {} needed",
        before.len(),
        gone.len(),
        only_removed.len(),
        after.len(),
        needed.len()
    );
    let missing: Vec<&String> = needed.difference(&after).collect();
    assert!(
        missing.is_empty(),
        "chunks of kept backups removed: {missing:?}"
    );
    assert_eq!(
        gone, only_removed,
        "gc removed other chunks than the unreferenced ones"
    );
    assert_eq!(after, needed);
    assert_eq!(res.gc.chunks_removed, gone.len() as u64);
    assert!(!gone.is_empty());

    let (report, code) = ctl.verify_all();
    assert!(report.is_ok() && code == Some(0), "{report:?}");
    assert_eq!(report.backups_checked, 2);
    for i in 3..5 {
        let r = dir.join(format!("restored{i}.img"));
        ctl.restore(&ids[i], &r);
        assert_same_file(&r, &refs[i]);
    }
}
