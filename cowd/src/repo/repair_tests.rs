//! Repair from a synced copy: damaged and missing chunks and a damaged index taken again;
//! what no copy holds named, and removed when asked; a dry run changes nothing.

use super::super::testutil::{backup, data};
use super::*;
use crate::repo::MIN_CHUNK_SIZE;
use std::fs;

fn never() -> bool {
    false
}

/// `src` with backups "a" and "b", and `copy` synced from it.
fn repo_and_copy(dir: &std::path::Path) -> (Repo, Repo, Vec<u8>, Vec<u8>) {
    let src = Repo::init(&dir.join("src"), MIN_CHUNK_SIZE).unwrap();
    let copy = Repo::init(&dir.join("copy"), MIN_CHUNK_SIZE).unwrap();
    let a = data(4, 1);
    let mut b = a.clone();
    b[..MIN_CHUNK_SIZE as usize].copy_from_slice(&data(1, 2));
    backup(&src, "a", None, 1, &a);
    backup(&src, "b", Some("a"), 2, &b);
    let ids = ["a".to_string(), "b".to_string()];
    src.sync_to(&copy, &ids, false, &never, &|_| {}).unwrap();
    (src, copy, a, b)
}

fn flip_last_byte(path: &std::path::Path) {
    let mut bytes = fs::read(path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    fs::write(path, bytes).unwrap();
}

#[test]
fn damaged_and_missing_chunks_and_an_index_are_taken_from_a_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (src, copy, _, _) = repo_and_copy(dir.path());
    let ia = src.index("a").unwrap();
    let ib = src.index("b").unwrap();
    flip_last_byte(&src.chunk_path(&ia.digests[1]));
    fs::remove_file(src.chunk_path(&ib.digests[0])).unwrap();
    flip_last_byte(&src.backup_dir("b").join("index.bin"));
    let before = src.verify(None, &|_, _| {}).unwrap();
    assert!(!before.is_ok());

    // A dry run: says what it would take, changes nothing.
    let plan = src
        .repair(std::slice::from_ref(&copy), false, true)
        .unwrap();
    assert_eq!(plan.found, before);
    assert_eq!(plan.chunks_repaired.len(), 1, "{plan:?}");
    assert_eq!(plan.indexes_repaired.len(), 1, "{plan:?}");
    assert_eq!(src.verify(None, &|_, _| {}).unwrap(), before);

    let report = src
        .repair(std::slice::from_ref(&copy), false, false)
        .unwrap();
    let copied_from = copy.root().display().to_string();
    assert_eq!(
        report.indexes_repaired,
        [("b".to_string(), copied_from.clone())]
    );
    // b's chunk 0 was found missing only once its index was readable again.
    let mut mended: Vec<Digest> = report.chunks_repaired.iter().map(|(d, _)| *d).collect();
    mended.sort();
    let mut want = vec![ia.digests[1], ib.digests[0]];
    want.sort();
    assert_eq!(mended, want);
    assert!(
        report
            .chunks_repaired
            .iter()
            .all(|(_, from)| *from == copied_from)
    );
    assert!(
        report.broken.is_empty() && report.chunks_unrepaired.is_empty(),
        "{report:?}"
    );
    assert!(src.verify(None, &|_, _| {}).unwrap().is_ok());
}

#[test]
fn what_no_copy_holds_is_named_and_removed_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let (src, copy, _, _) = repo_and_copy(dir.path());
    let ia = src.index("a").unwrap();
    // Chunk 2 is shared by a and b, and damaged in both repositories.
    flip_last_byte(&src.chunk_path(&ia.digests[2]));
    flip_last_byte(&copy.chunk_path(&ia.digests[2]));

    let report = src
        .repair(std::slice::from_ref(&copy), false, false)
        .unwrap();
    assert_eq!(report.chunks_unrepaired, [ia.digests[2]]);
    let broken: Vec<&str> = report.broken.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(broken, ["a", "b"]);
    assert!(report.broken[0].1.contains(&ia.digests[2].to_string()));
    assert!(report.removed.is_empty());
    assert!(src.manifest("a").is_ok(), "kept unless asked");

    // Without any copy, asked to remove: both go; a second repair finds nothing.
    let report = src.repair(&[], true, false).unwrap();
    assert_eq!(report.removed, ["a", "b"]);
    assert!(src.backups().unwrap().is_empty());
    let again = src.repair(&[], true, false).unwrap();
    assert!(again.found.is_ok() && again.broken.is_empty(), "{again:?}");
}
