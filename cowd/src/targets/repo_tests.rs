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
