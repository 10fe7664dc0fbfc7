//! Sync between two directory repositories: only missing chunks move, an interrupted sync
//! leaves nothing half-visible and the next one moves nothing twice, parents and refusals.

use std::sync::atomic::{AtomicU64, Ordering};

use super::super::testutil::{backup, data, patched_backup, read_back};
use super::*;
use crate::repo::MIN_CHUNK_SIZE;

fn two_repos() -> (tempfile::TempDir, Repo, Repo) {
    let d = tempfile::tempdir().unwrap();
    let src = Repo::init(&d.path().join("src"), MIN_CHUNK_SIZE).unwrap();
    let dst = Repo::init(&d.path().join("dst"), MIN_CHUNK_SIZE).unwrap();
    (d, src, dst)
}

fn never() -> bool {
    false
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Backup `id` in `r` read back as an image.
fn image(r: &Repo, id: &str) -> Vec<u8> {
    read_back(r, id).unwrap()
}

#[test]
fn backups_the_destination_lacks_are_copied_with_only_the_chunks_it_lacks() {
    let (_d, src, dst) = two_repos();
    let first = data(8, 1);
    let mut second = first.clone();
    second[..2 * MIN_CHUNK_SIZE as usize].copy_from_slice(&data(2, 2));
    backup(&src, "b1", None, 100, &first);
    backup(&src, "b2", Some("b1"), 200, &second);
    // The destination already holds two of b1's chunks (from a backup of its own).
    backup(
        &dst,
        "other",
        None,
        50,
        &first[..2 * MIN_CHUNK_SIZE as usize],
    );

    let plan = src
        .sync_to(&dst, &ids(&["b2", "b1"]), true, &never, &|_| {})
        .unwrap();
    assert_eq!(plan.synced, ["b1", "b2"], "oldest first");
    assert_eq!((plan.chunks_copied, plan.chunks_present), (6 + 2, 2 + 6));
    assert!(dst.manifest("b1").is_err(), "a dry run writes nothing");

    let report = src
        .sync_to(&dst, &ids(&["b1", "b2"]), false, &never, &|_| {})
        .unwrap();
    assert_eq!(report.synced, ["b1", "b2"]);
    assert_eq!(report.chunks_copied, 8, "6 of b1's, then b2's 2 new ones");
    assert_eq!(report.chunks_present, 2 + 6);
    assert_eq!(report.bytes_copied, 8 * u64::from(MIN_CHUNK_SIZE));
    assert!(
        report.stored_bytes > report.bytes_copied,
        "random data does not compress"
    );
    assert_eq!(image(&dst, "b1"), first);
    assert_eq!(image(&dst, "b2"), second);
    let m = dst.manifest("b2").unwrap();
    assert_eq!(m.parent.as_deref(), Some("b1"));
    assert_eq!(m.index_sha256, src.manifest("b2").unwrap().index_sha256);
    assert!(dst.verify(None, &|_, _| {}).unwrap().corrupt.is_empty());

    // Again: nothing to do.
    let again = src
        .sync_to(&dst, &ids(&["b1", "b2"]), false, &never, &|_| {})
        .unwrap();
    assert!(again.synced.is_empty());
    assert_eq!(again.present, ["b1", "b2"]);
    assert_eq!(again.chunks_copied, 0);
}

#[test]
fn patched_backups_arrive_with_their_patches_and_restore_exactly() {
    let (_d, src, dst) = two_repos();
    let img1 = data(6, 4);
    backup(&src, "b1", None, 100, &img1);
    let mut img2 = img1.clone();
    img2[5000..9000].fill(1);
    img2[3 * 65536 + 100..3 * 65536 + 200].fill(2);
    let mut img3 = img2.clone();
    img3[6000..7000].fill(3); // chunk 0 again: its patch is merged, not stacked
    patched_backup(&src, "b2", "b1", 200, &img2);
    let i3 = patched_backup(&src, "b3", "b2", 300, &img3);
    assert_eq!(i3.patches.len(), 2);
    // Only b3: its patches and bases move (b2's patch of chunk 0 is not among them).
    let r = src
        .sync_to(&dst, &ids(&["b3"]), false, &never, &|_| {})
        .unwrap();
    assert_eq!(r.chunks_copied, 6 + 2);
    assert_eq!(dst.index("b3").unwrap(), i3);
    assert_eq!(image(&dst, "b3"), img3);
    assert!(dst.verify(None, &|_, _| {}).unwrap().is_ok());
}

#[test]
fn an_interrupted_sync_shows_nothing_and_the_next_moves_no_chunk_twice() {
    let (_d, src, dst) = two_repos();
    let img = data(40, 3);
    backup(&src, "b1", None, 100, &img);
    let done = AtomicU64::new(0);
    let stop = || done.load(Ordering::Relaxed) >= 10;
    let e = src
        .sync_to(&dst, &ids(&["b1"]), false, &stop, &|r| {
            done.store(r.chunks_copied, Ordering::Relaxed)
        })
        .unwrap_err();
    assert!(e.to_string().contains("sync stopped"), "{e}");
    assert!(dst.manifest("b1").is_err(), "no half-copied backup");
    assert!(dst.in_progress().unwrap().is_empty(), "its pin is gone");
    let stored = done.load(Ordering::Relaxed);
    assert!((10..40).contains(&stored), "{stored}");

    let rest = src
        .sync_to(&dst, &ids(&["b1"]), false, &never, &|_| {})
        .unwrap();
    assert_eq!(rest.chunks_present, stored, "the chunks stored before stay");
    assert_eq!(rest.chunks_copied, 40 - stored);
    assert_eq!(image(&dst, "b1"), img);
}

#[test]
fn a_parent_the_destination_lacks_is_dropped_and_a_damaged_chunk_fails_the_sync() {
    let (_d, src, dst) = two_repos();
    let img = data(4, 4);
    let index = backup(&src, "b1", None, 100, &img);
    backup(&src, "b2", Some("b1"), 200, &img);
    let report = src
        .sync_to(&dst, &ids(&["b2"]), false, &never, &|_| {})
        .unwrap();
    assert_eq!(report.synced, ["b2"]);
    assert_eq!(dst.manifest("b2").unwrap().parent, None);
    assert_eq!(image(&dst, "b2"), img);

    // A damaged chunk in the source: the sync fails naming it, nothing becomes visible.
    let (_d2, src2, dst2) = two_repos();
    let index2 = backup(&src2, "b1", None, 100, &img);
    assert_eq!(index2.digests, index.digests);
    let path = src2.chunk_path(&index2.digests[2]);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let e = src2
        .sync_to(&dst2, &ids(&["b1"]), false, &never, &|_| {})
        .unwrap_err();
    assert!(
        e.to_string().contains(&index2.digests[2].to_string()),
        "{e}"
    );
    assert!(dst2.manifest("b1").is_err());
}

#[test]
fn different_chunk_sizes_the_same_repository_and_unknown_backups_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let src = Repo::init(&d.path().join("src"), MIN_CHUNK_SIZE).unwrap();
    let big = Repo::init(&d.path().join("big"), 2 * MIN_CHUNK_SIZE).unwrap();
    backup(&src, "b1", None, 100, &data(2, 5));
    let e = src
        .sync_to(&big, &ids(&["b1"]), false, &never, &|_| {})
        .unwrap_err();
    assert!(e.to_string().contains("same chunk size"), "{e}");
    let same = Repo::open(src.root()).unwrap();
    let e = src
        .sync_to(&same, &ids(&["b1"]), false, &never, &|_| {})
        .unwrap_err();
    assert!(e.to_string().contains("the same repository"), "{e}");
    let other = Repo::init(&d.path().join("other"), MIN_CHUNK_SIZE).unwrap();
    // Another backup under the same id is neither counted present nor overwritten.
    backup(&other, "b1", None, 100, &data(2, 6));
    let e = src
        .sync_to(&other, &ids(&["b1"]), false, &never, &|_| {})
        .unwrap_err();
    assert!(e.to_string().contains("another backup with the id"), "{e}");
    let e = src
        .sync_to(&other, &ids(&["nope"]), false, &never, &|_| {})
        .unwrap_err();
    assert!(matches!(e, RepoError::NoSuchBackup(_)), "{e}");
}
