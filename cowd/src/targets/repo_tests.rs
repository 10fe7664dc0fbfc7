//! Generations written through [`RepoTarget`] as the backup engine writes them: a full one,
//! then incrementals that receive only the changed blocks. Scattered changes are stored as
//! patches, merged from one generation to the next and stored whole again once large; every
//! generation restores exactly, also after older ones are removed and collected.

use std::time::SystemTime;

use roaring::RoaringBitmap;

use super::*;
use crate::targets::BackupTarget;

const CHUNK: usize = 1 << 20;
const BLOCK: usize = 4096;

fn generation(id: &str, size: usize, parent: Option<(String, Index)>) -> Generation {
    Generation {
        id: id.into(),
        export: "disk".into(),
        device_size: size as u64,
        block_size: BLOCK as u32,
        mode: if parent.is_some() {
            Mode::Incremental
        } else {
            Mode::Full
        },
        parent,
        full_reason: None,
        blocks: Blocks::All,
        filesystem: None,
        snapshot_time: SystemTime::now(),
        started: SystemTime::now(),
    }
}

/// Writes `changed` blocks of `image` as an incremental on `parent` (or everything, full).
fn back_up(repo: &Repo, id: &str, image: &[u8], parent: Option<&str>, changed: &[usize]) -> Counts {
    let parent = parent.map(|p| (p.to_owned(), repo.index(p).unwrap()));
    let incremental = parent.is_some();
    let t = RepoTarget::create(repo.clone(), generation(id, image.len(), parent), 2).unwrap();
    if incremental {
        let changed: RoaringBitmap = changed.iter().map(|&b| b as u32).collect();
        let per_chunk = (CHUNK / BLOCK) as u32;
        let fresh: RoaringBitmap = changed.iter().map(|b| b / per_chunk).collect();
        let mut inherited = RoaringBitmap::new();
        for c in &fresh {
            inherited.insert_range(c * per_chunk..(c + 1) * per_chunk);
        }
        inherited -= &changed;
        t.set_fresh(fresh, inherited, BLOCK as u32);
        // Backwards, as a mover may deliver them; zero blocks as write_zeroes.
        for b in changed.iter().rev() {
            let data = &image[b as usize * BLOCK..][..BLOCK];
            if data.iter().all(|&x| x == 0) {
                t.write_zeroes((b as usize * BLOCK) as u64, BLOCK as u64)
                    .unwrap();
            } else {
                t.write((b as usize * BLOCK) as u64, data).unwrap();
            }
        }
    } else {
        for (k, piece) in image.chunks(256 << 10).enumerate() {
            t.write((k * (256 << 10)) as u64, piece).unwrap();
        }
    }
    t.finish().unwrap();
    repo.manifest(id).unwrap().counts
}

fn restored(repo: &Repo, id: &str) -> Vec<u8> {
    crate::repo::testutil::read_back(repo, id).unwrap()
}

/// Overwrites `blocks` of `image` with random data (every fourth with zeroes).
fn change(image: &mut [u8], blocks: &[usize], rng: &mut fastrand::Rng) {
    for (k, &b) in blocks.iter().enumerate() {
        let data = &mut image[b * BLOCK..][..BLOCK];
        if k % 4 == 3 {
            data.fill(0);
        } else {
            rng.fill(data);
        }
    }
}

#[test]
fn scattered_changes_are_patches_that_restore_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::init(&dir.path().join("repo"), CHUNK as u32).unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    // 6 chunks and a short one; chunk 4 all zero.
    let size = 6 * CHUNK + 5 * BLOCK;
    let mut image = vec![0u8; size];
    rng.fill(&mut image);
    image[4 * CHUNK..5 * CHUNK].fill(0);
    let blocks = size / BLOCK;
    let per_chunk = CHUNK / BLOCK;
    back_up(&repo, "g0", &image, None, &[]);
    let mut ids = vec!["g0".to_owned()];
    for g in 1..=12 {
        // Ten scattered blocks anywhere (the zero chunk and the short one included), and 12
        // more in chunk 1 each time: its patch grows past a quarter and it is stored whole.
        let mut changed: Vec<usize> = (0..10).map(|_| rng.usize(..blocks)).collect();
        changed.extend((0..12).map(|_| per_chunk + rng.usize(..per_chunk)));
        changed.push(4 * per_chunk + 3);
        changed.sort_unstable();
        changed.dedup();
        change(&mut image, &changed, &mut rng);
        let id = format!("g{g}");
        let c = back_up(&repo, &id, &image, ids.last().map(String::as_str), &changed);
        assert!(c.chunks_patched > 0, "{id}: {c:?}");
        assert_eq!(
            restored(&repo, &id),
            image,
            "{id} restores the image at its time"
        );
        ids.push(id);
    }
    // Chunk 1 was rewritten ~ 12 * 12 blocks of 256: its patch was stored whole on the way.
    let last = repo.index("g12").unwrap();
    let first_patched = repo.index("g1").unwrap();
    assert!(first_patched.patch(1).is_some());
    assert_ne!(
        last.digests[1], first_patched.digests[1],
        "chunk 1 stored whole again"
    );
    assert!(!last.patches.is_empty());
    for p in last.patches.values() {
        assert!((p.len as usize) < CHUNK / 4 + 4096, "{p:?}");
    }

    // Older generations removed and collected: what the newer ones name stays.
    let before: Vec<Vec<u8>> = ids[8..].iter().map(|id| restored(&repo, id)).collect();
    for id in &ids[..8] {
        repo.remove_backup(id).unwrap();
    }
    let gc = repo.gc(false).unwrap();
    assert!(gc.chunks_removed > 0, "{gc:?}");
    let report = repo.verify(None, &|_, _| {}).unwrap();
    assert!(report.is_ok(), "{report:?}");
    for (id, want) in ids[8..].iter().zip(before) {
        assert_eq!(restored(&repo, id), want, "{id} after gc");
    }
}

#[test]
fn a_change_of_a_quarter_or_more_stores_the_chunk_whole() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repo::init(&dir.path().join("repo"), CHUNK as u32).unwrap();
    let mut rng = fastrand::Rng::with_seed(9);
    let mut image = vec![0u8; 2 * CHUNK];
    rng.fill(&mut image);
    back_up(&repo, "a", &image, None, &[]);
    let per_chunk = CHUNK / BLOCK;
    // Chunk 0: a quarter changed; chunk 1: one block less than a quarter.
    let mut changed: Vec<usize> = (0..per_chunk / 4).collect();
    changed.extend(per_chunk..per_chunk + per_chunk / 4 - 1);
    change(&mut image, &changed, &mut rng);
    let c = back_up(&repo, "b", &image, Some("a"), &changed);
    assert_eq!((c.chunks_new, c.chunks_patched), (1, 1), "{c:?}");
    let b = repo.index("b").unwrap();
    assert!(b.patch(0).is_none() && b.patch(1).is_some());
    assert_eq!(restored(&repo, "b"), image);
}

/// Chunk files under `repo`'s `chunks/` and files left in its `tmp/`.
fn files(repo: &Repo) -> (usize, usize) {
    let count = |p: std::path::PathBuf| std::fs::read_dir(p).map_or(0, |d| d.count());
    let chunks = std::fs::read_dir(repo.root().join("chunks"))
        .unwrap()
        .map(|d| count(d.unwrap().path()))
        .sum();
    (chunks, count(repo.root().join("tmp")))
}

/// Whole chunks the mover hands over (`write_owned`) are queued as they are, and buffers the
/// workers are done with come back for its next reads; a piece that is not a whole chunk is
/// written as `write` does. More chunks than a settle batch: settled along the way and at
/// finish, each counted once, no file left in `tmp/`, the generation restores exactly.
#[test]
fn owned_chunks_and_batched_settles_restore_exactly() {
    let (_d, repo) = crate::repo::testutil::repo();
    let cs = repo.chunk_size() as usize;
    let n = SETTLE_BATCH + 9;
    let mut image = vec![0u8; n * cs + 5000]; // and a short last chunk
    fastrand::Rng::with_seed(11).fill(&mut image);
    image[3 * cs..4 * cs].fill(0); // a zero chunk
    let first = image[..cs].to_vec();
    image[5 * cs..6 * cs].copy_from_slice(&first); // a duplicate
    let t = RepoTarget::create(repo.clone(), generation("g1", image.len(), None), 2).unwrap();
    let owned = |data: &[u8]| {
        let mut b = IoBuf::new(data.len());
        b.copy_from_slice(data);
        b
    };
    let (mut kept, mut given_back) = (0, 0);
    for (k, chunk) in image.chunks(cs).enumerate() {
        let off = (k * cs) as u64;
        if k % 10 == 7 {
            let (a, b) = chunk.split_at(1000);
            let back = t.write_owned(off, owned(a)).unwrap().expect("not kept");
            assert_eq!(
                &back[..],
                a,
                "a piece of a chunk is copied, its buffer given back"
            );
            t.write_owned(off + 1000, owned(b)).unwrap();
        } else {
            match t.write_owned(off, owned(chunk)).unwrap() {
                Some(_) => given_back += 1,
                None => kept += 1,
            }
        }
    }
    t.finish().unwrap();
    assert!(
        kept > 0,
        "whole chunks are kept (the first with nothing to give back)"
    );
    assert!(given_back > 0, "buffers done with come back");
    let c = repo.manifest("g1").unwrap().counts;
    assert_eq!(
        (c.chunks_new, c.chunks_reused, c.chunks_zero),
        (n as u64 - 1, 1, 1)
    );
    assert_eq!(
        files(&repo),
        (n - 1, 0),
        "distinct chunks stored, tmp/ empty"
    );
    assert_eq!(restored(&repo, "g1"), image);
}

/// An aborted backup leaves neither chunks nor files in `tmp/`: the chunk files written ahead
/// of their sync are removed, not named.
#[test]
fn an_aborted_backup_leaves_no_chunk_files() {
    let (_d, repo) = crate::repo::testutil::repo();
    let cs = repo.chunk_size() as usize;
    let mut image = vec![0u8; 8 * cs];
    fastrand::Rng::with_seed(12).fill(&mut image);
    let t = RepoTarget::create(repo.clone(), generation("g1", image.len(), None), 2).unwrap();
    for (k, chunk) in image.chunks(cs).take(6).enumerate() {
        t.write((k * cs) as u64, chunk).unwrap();
    }
    t.abort();
    assert_eq!(files(&repo), (0, 0));
    assert!(repo.manifest("g1").is_err());
}
