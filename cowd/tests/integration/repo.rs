//! The backup repository through its public API: whole backups, crash shapes, concurrency,
//! prune + gc + verify.

use std::fs;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cowd::repo::{
    Blocks, Counts, Digest, DigestOf, Index, KeepPolicy, Manifest, Mode, Repo, RepoError, Status,
};
use proptest::test_runner::{Config, TestRunner};

const CHUNK: u32 = 64 << 10;

fn new_repo() -> (tempfile::TempDir, Repo) {
    let d = tempfile::tempdir().unwrap();
    let r = Repo::init(&d.path().join("repo"), CHUNK).unwrap();
    (d, r)
}

fn random(n: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; n];
    fastrand::Rng::with_seed(seed).fill(&mut v);
    v
}

fn time(s: &str) -> SystemTime {
    humantime::parse_rfc3339(s).unwrap()
}

/// Backs up `image` as `id` of `export` with snapshot time `t`, like a backup target would.
fn backup(r: &Repo, id: &str, export: &str, parent: Option<&str>, t: SystemTime, image: &[u8]) {
    let b = r.begin(id, parent).unwrap();
    let mut index = Index::new(r.chunk_size(), image.len() as u64);
    let mut counts = Counts::default();
    for (i, c) in image.chunks(r.chunk_size() as usize).enumerate() {
        let s = r.store_chunk(c).unwrap();
        index.digests[i] = s.digest;
        counts.chunks_total += 1;
        counts.bytes_read += c.len() as u64;
        counts.bytes_new_stored += s.stored_bytes;
        if s.digest.is_zero() {
            counts.chunks_zero += 1;
        } else if s.new {
            counts.chunks_new += 1;
        } else {
            counts.chunks_reused += 1;
        }
    }
    let m = Manifest {
        id: id.into(),
        export: export.into(),
        device_size: image.len() as u64,
        block_size: 65536,
        chunk_size: r.chunk_size(),
        snapshot_time: t,
        started_time: t,
        ended_time: t + Duration::from_secs(1),
        duration_s: 1.0,
        mode: if parent.is_some() {
            Mode::Incremental
        } else {
            Mode::Full
        },
        parent: parent.map(str::to_owned),
        full_reason: None,
        blocks: Blocks::All,
        filesystem: None,
        counts,
        index_sha256: String::new(),
        status: Status::Complete,
    };
    let written = b.commit(&m, &index).unwrap();
    assert_eq!(written.index_sha256.len(), 64);
}

/// Reads backup `id` back as an image.
fn restore(r: &Repo, id: &str) -> Vec<u8> {
    let index = r.index(id).unwrap();
    let mut image = Vec::with_capacity(index.device_size as usize);
    let mut buf = Vec::new();
    for (i, d) in index.digests.iter().enumerate() {
        r.load_chunk(d, index.chunk_len(i), &mut buf).unwrap();
        image.extend_from_slice(&buf);
    }
    image
}

fn chunk_files(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for dir in fs::read_dir(root.join("chunks")).unwrap() {
        for f in fs::read_dir(dir.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out
}

#[test]
fn init_and_open_errors_say_what_is_wrong() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("missing");
    let e = Repo::open(&missing).unwrap_err().to_string();
    assert!(e.contains("does not exist"), "{e}");

    let empty = d.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let e = Repo::open(&empty).unwrap_err().to_string();
    assert!(
        e.contains("not a cowd repository") && e.contains("config.json"),
        "{e}"
    );

    let junk = d.path().join("junk");
    fs::create_dir(&junk).unwrap();
    fs::write(junk.join("file"), b"x").unwrap();
    let e = Repo::init(&junk, CHUNK).unwrap_err().to_string();
    assert!(e.contains("not empty and is not a repository"), "{e}");
    fs::write(junk.join("config.json"), b"{\"format\": \"other\"}").unwrap();
    let e = Repo::open(&junk).unwrap_err().to_string();
    assert!(e.contains("not a cowd repository"), "{e}");
    fs::write(junk.join("config.json"), b"not json").unwrap();
    let e = Repo::open(&junk).unwrap_err().to_string();
    assert!(e.contains("not JSON"), "{e}");

    let root = d.path().join("repo");
    let r = Repo::init(&root, 1 << 20).unwrap();
    let e = Repo::init(&root, 1 << 20).unwrap_err().to_string();
    assert!(e.contains("already a repository"), "{e}");
    let e = Repo::init(&d.path().join("x"), 3 << 20)
        .unwrap_err()
        .to_string();
    assert!(e.contains("power of two"), "{e}");

    let cfg = root.join("config.json");
    let text = fs::read_to_string(&cfg).unwrap();
    fs::write(&cfg, text.replace("\"version\": 2", "\"version\": 3")).unwrap();
    let e = Repo::open(&root).unwrap_err();
    assert!(
        matches!(e, RepoError::UnsupportedVersion { version: 3, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("version 3 is not supported"), "{e}");
    fs::write(&cfg, text).unwrap();
    let o = Repo::open(&root).unwrap();
    assert_eq!((o.id(), o.chunk_size()), (r.id(), 1 << 20));
    assert_eq!(o.root(), root);
}

#[test]
fn round_trip_with_short_last_chunk_zero_and_compressible_chunks() {
    let (_d, r) = new_repo();
    let c = CHUNK as usize;
    let mut image = random(4 * c + 12345, 1);
    image[c..2 * c].fill(0); // zero chunk
    for (i, b) in image[2 * c..3 * c].iter_mut().enumerate() {
        *b = (i / 100) as u8; // compressible
    }
    backup(&r, "b1", "disk", None, time("2024-01-01T00:00:00Z"), &image);
    let m = r.manifest("b1").unwrap();
    assert_eq!(m.counts.chunks_total, 5);
    assert_eq!(m.counts.chunks_zero, 1);
    assert_eq!(m.counts.chunks_new, 4);
    assert!(m.counts.bytes_new_stored < 4 * c as u64);
    let index = r.index("b1").unwrap();
    assert_eq!(index.digests[1], Digest::ZERO);
    assert_eq!(index.chunk_len(4), 12345);
    assert_eq!(index.digests[4], r.name_of(&image[4 * c..]));
    assert_eq!(restore(&r, "b1"), image);
    assert!(r.verify(None, &|_, _| {}).unwrap().is_ok());
    // The same image again: everything deduplicated.
    backup(
        &r,
        "b2",
        "disk",
        Some("b1"),
        time("2024-01-02T00:00:00Z"),
        &image,
    );
    let m2 = r.manifest("b2").unwrap();
    assert_eq!((m2.counts.chunks_new, m2.counts.chunks_reused), (0, 4));
    assert_eq!(m2.counts.bytes_new_stored, 0);
    assert_eq!(chunk_files(r.root()).len(), 4);
}

#[test]
fn backups_are_listed_oldest_first_only_once_committed() {
    let (_d, r) = new_repo();
    let img = random(CHUNK as usize, 2);
    backup(&r, "z", "disk", None, time("2024-01-01T00:00:00Z"), &img);
    backup(&r, "a", "disk", None, time("2024-03-01T00:00:00Z"), &img);
    backup(&r, "m", "disk", None, time("2024-02-01T00:00:00Z"), &img);
    let pending = r.begin("later", Some("a")).unwrap();
    r.store_chunk(&random(100, 3)).unwrap();
    let ids: Vec<String> = r.backups().unwrap().into_iter().map(|m| m.id).collect();
    assert_eq!(ids, ["z", "m", "a"]);
    pending.abort();
    assert_eq!(r.backups().unwrap().len(), 3);
    assert!(!r.root().join("backups/.tmp-later").exists());
    assert!(!r.root().join("pins/later.json").exists());
}

#[test]
fn concurrent_stores_of_the_same_chunk_leave_one_valid_file() {
    let (_d, r) = new_repo();
    let r = Arc::new(r);
    for round in 0..20u64 {
        let data = Arc::new(random(CHUNK as usize, 100 + round));
        let threads = 6;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (r, data, barrier) = (r.clone(), data.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    r.store_chunk(&data).unwrap()
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(results.iter().filter(|s| s.new).count(), 1, "round {round}");
        assert!(results.iter().all(|s| s.digest == r.name_of(&data)));
        let mut out = Vec::new();
        r.load_chunk(&results[0].digest, data.len(), &mut out)
            .unwrap();
        assert_eq!(out, *data);
    }
    assert_eq!(chunk_files(r.root()).len(), 20);
    assert_eq!(fs::read_dir(r.root().join("tmp")).unwrap().count(), 0);
}

#[test]
fn chunk_files_are_complete_whenever_they_are_visible() {
    let (_d, r) = new_repo();
    let r = Arc::new(r);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (r, stop) = (r.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = 0;
            let mut buf = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for p in chunk_files(r.root()) {
                    let d: Digest = p.file_name().unwrap().to_str().unwrap().parse().unwrap();
                    let len = fs::read(&p).unwrap()[12..16].try_into().unwrap();
                    r.load_chunk(&d, u32::from_le_bytes(len) as usize, &mut buf)
                        .unwrap_or_else(|e| panic!("visible chunk not complete: {e}"));
                    seen += 1;
                }
            }
            seen
        })
    };
    let writers: Vec<_> = (0..3u64)
        .map(|t| {
            let r = r.clone();
            std::thread::spawn(move || {
                for i in 0..40 {
                    let mut data = random(CHUNK as usize, t * 1000 + i);
                    if i % 2 == 0 {
                        data[..50_000].fill(7); // some compressible
                    }
                    r.store_chunk(&data).unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(watcher.join().unwrap() > 0);
    assert_eq!(chunk_files(r.root()).len(), 120);
    r.sync_dirs().unwrap();
}

#[test]
fn open_cleans_what_a_crash_left() {
    let (d, r) = new_repo();
    let root = d.path().join("repo");
    backup(
        &r,
        "done",
        "disk",
        None,
        time("2024-01-01T00:00:00Z"),
        &random(1000, 1),
    );
    // A crash mid-write: partial temporary files of a dead process, an in-progress backup
    // directory whose pin is gone, a half-removed backup.
    fs::write(
        root.join("tmp/4000000000-7-0123456789abcdef.tmp"),
        b"partial chunk",
    )
    .unwrap();
    fs::write(root.join("tmp/leftover"), b"?").unwrap();
    fs::create_dir(root.join("backups/.tmp-crashed")).unwrap();
    fs::create_dir(root.join("backups/.del-old-1234")).unwrap();
    fs::write(root.join("backups/.del-old-1234/index.bin"), b"x").unwrap();
    // A pin whose backup committed (the crash came before the pin's removal was durable).
    fs::write(
        root.join("pins/done.json"),
        br#"{"id":"done","parent":null,"started":"2024-01-01T00:00:00Z"}"#,
    )
    .unwrap();
    assert_eq!(r.in_progress().unwrap().len(), 1);
    // A backup still running in another handle keeps its directory (it has a pin).
    let running = r.begin("running", Some("done")).unwrap();
    drop(r);

    let r = Repo::open(&root).unwrap();
    assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    assert!(!root.join("backups/.tmp-crashed").exists());
    assert!(!root.join("backups/.del-old-1234").exists());
    assert!(root.join("backups/.tmp-running").exists());
    let pins: Vec<String> = r.in_progress().unwrap().into_iter().map(|p| p.id).collect();
    assert_eq!(pins, ["running"]);
    assert_eq!(r.backups().unwrap().len(), 1);
    // No chunk file is ever anything but complete: everything under chunks/ verifies.
    let mut buf = Vec::new();
    for p in chunk_files(&root) {
        let d: Digest = p.file_name().unwrap().to_str().unwrap().parse().unwrap();
        r.load_chunk(&d, 1000, &mut buf).unwrap();
    }
    running.abort();
    assert!(r.in_progress().unwrap().is_empty());
}

#[test]
fn index_corruption_is_detected() {
    let (_d, r) = new_repo();
    backup(
        &r,
        "b",
        "disk",
        None,
        time("2024-01-01T00:00:00Z"),
        &random(3 * CHUNK as usize, 5),
    );
    let p = r.root().join("backups/b/index.bin");
    let good = fs::read(&p).unwrap();
    for pos in [0, 20, 40, good.len() - 1] {
        let mut bad = good.clone();
        bad[pos] ^= 0x01;
        fs::write(&p, &bad).unwrap();
        let e = r.index("b").unwrap_err();
        assert!(matches!(e, RepoError::Corrupt { .. }), "{pos}: {e}");
        let rep = r.verify(None, &|_, _| {}).unwrap();
        assert_eq!(rep.bad_indexes.len(), 1, "{pos}");
        assert_eq!(rep.bad_indexes[0].0, "b");
    }
    // A valid index that is not the one the manifest vouches for.
    let mut other = Index::decode(&good).unwrap();
    other.digests.swap(0, 1);
    fs::write(&p, other.encode()).unwrap();
    let e = r.index("b").unwrap_err().to_string();
    assert!(e.contains("differs from the manifest"), "{e}");
    fs::write(&p, &good).unwrap();
    assert!(r.verify(None, &|_, _| {}).unwrap().is_ok());
}

#[test]
fn verify_finds_a_flipped_byte_and_a_missing_chunk() {
    let (_d, r) = new_repo();
    let c = CHUNK as usize;
    let base = random(4 * c, 10);
    let mut second = base.clone();
    second[3 * c..].copy_from_slice(&random(c, 11));
    let other = random(2 * c, 12);
    let t = time("2024-05-01T00:00:00Z");
    backup(&r, "b1", "disk", None, t, &base);
    backup(
        &r,
        "b2",
        "disk",
        Some("b1"),
        t + Duration::from_secs(60),
        &second,
    );
    backup(&r, "o1", "other", None, t, &other);
    let i1 = r.index("b1").unwrap();
    let io = r.index("o1").unwrap();

    // Flip one byte in the data of a chunk that b1 and b2 share.
    let shared = i1.digests[0];
    let p = r.chunk_path(&shared);
    let mut bytes = fs::read(&p).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x80;
    fs::write(&p, bytes).unwrap();
    // Remove a chunk only o1 uses; flip a byte in b1's own last chunk's header digest.
    fs::remove_file(r.chunk_path(&io.digests[1])).unwrap();
    let own = i1.digests[3];
    let p = r.chunk_path(&own);
    let mut bytes = fs::read(&p).unwrap();
    bytes[30] ^= 0x01;
    fs::write(&p, bytes).unwrap();

    let progress = std::cell::RefCell::new(Vec::new());
    let rep = r
        .verify(None, &|d, t| progress.borrow_mut().push((d, t)))
        .unwrap();
    let mut corrupt: Vec<(Digest, Vec<String>)> = rep
        .corrupt
        .iter()
        .map(|c| (c.digest, c.backups.clone()))
        .collect();
    corrupt.sort();
    let mut want = vec![
        (shared, vec!["b1".to_string(), "b2".to_string()]),
        (own, vec!["b1".to_string()]),
    ];
    want.sort();
    assert_eq!(corrupt, want);
    assert_eq!(rep.missing.len(), 1);
    assert_eq!(rep.missing[0].digest, io.digests[1]);
    assert_eq!(rep.missing[0].backups, ["o1"]);
    assert_eq!(rep.backups_checked, 3);
    assert_eq!(rep.chunks_checked, 4 + 1 + 2 - 1); // distinct chunks, minus the missing one
    let progress = progress.into_inner();
    assert_eq!(progress.first(), Some(&(0, 7)));
    assert_eq!(progress.last(), Some(&(7, 7)));
    assert!(!rep.is_ok());
}

#[test]
fn prune_plan_gc_and_verify_keep_every_remaining_backup_whole() {
    let (_d, r) = new_repo();
    let c = CHUNK as usize;
    let mut image = random(6 * c + 777, 20);
    let mut images = Vec::new();
    let mut parent: Option<String> = None;
    // Two backups a day for 10 days; each changes one chunk.
    for day in 1..=10u64 {
        for half in 0..2u64 {
            let n = (day * 2 + half) as usize;
            let start = (n % 6) * c;
            image[start..start + c].copy_from_slice(&random(c, 1000 + n as u64));
            let id = format!("d{day:02}-{half}");
            let t = time(&format!("2024-02-{day:02}T{:02}:00:00Z", 6 + half * 12));
            backup(&r, &id, "disk", parent.as_deref(), t, &image);
            images.push((id.clone(), image.clone()));
            parent = Some(id);
        }
    }
    backup(
        &r,
        "x1",
        "other",
        None,
        time("2024-01-01T00:00:00Z"),
        &random(c, 99),
    );

    let keep = KeepPolicy {
        last: Some(2),
        daily: Some(4),
        weekly: Some(2),
        ..KeepPolicy::default()
    };
    let now = time("2024-03-01T00:00:00Z");
    let plan = r.prune_plan("disk", &keep, now).unwrap();
    let kept: Vec<&str> = plan.keep.iter().map(|(id, _)| id.as_str()).collect();
    // last 2: d10-1 d10-0; daily 4: d10-1 d09-1 d08-1 d07-1; weekly 2 (ISO weeks: Feb 5-11 and
    // Jan 29-Feb 4): d10-1, d04-1.
    assert_eq!(kept, ["d10-1", "d10-0", "d09-1", "d08-1", "d07-1", "d04-1"]);
    assert_eq!(plan.keep[0].1, ["last", "daily", "weekly"]);
    assert_eq!(plan.remove.len(), 20 - 6);
    assert!(!plan.remove.iter().any(|id| id == "x1"));

    // A running backup keeps its parent out of the removal list.
    let running = r.begin("d11-0", Some("d05-0")).unwrap();
    let plan2 = r.prune_plan("disk", &keep, now).unwrap();
    assert!(
        plan2
            .keep
            .iter()
            .any(|(id, why)| id == "d05-0" && why == &["parent of a running backup"])
    );
    assert!(!plan2.remove.contains(&"d05-0".to_string()));
    let e = r.remove_backup("d05-0").unwrap_err().to_string();
    assert!(e.contains("in use as the parent of running backup"), "{e}");
    running.abort();

    let before = chunk_files(r.root()).len();
    for id in &plan.remove {
        r.remove_backup(id).unwrap();
    }
    let g = r.gc(false).unwrap();
    assert!(g.chunks_removed > 0);
    assert_eq!(
        chunk_files(r.root()).len(),
        before - g.chunks_removed as usize
    );
    assert_eq!(g.chunks_referenced as usize, chunk_files(r.root()).len());
    let rep = r.verify(None, &|_, _| {}).unwrap();
    assert!(rep.is_ok(), "{rep:?}");
    assert_eq!(rep.backups_checked, 7);
    for (id, img) in &images {
        if kept.contains(&id.as_str()) {
            assert_eq!(&restore(&r, id), img, "{id}");
        }
    }
}

#[test]
fn whole_backups_round_trip_for_arbitrary_device_sizes() {
    let (_d, r) = new_repo();
    let c = CHUNK as usize;
    let mut runner = TestRunner::new(Config::with_cases(24));
    let n = std::cell::Cell::new(0u64);
    runner
        .run(
            &(0usize..5 * c, proptest::prelude::any::<u64>()),
            |(size, seed)| {
                n.set(n.get() + 1);
                let n = n.get();
                let mut img = random(size, seed);
                let mut rng = fastrand::Rng::with_seed(seed);
                for chunk in img.chunks_mut(c) {
                    match rng.u8(..3) {
                        0 => chunk.fill(0),
                        1 => chunk.iter_mut().for_each(|b| *b &= 1),
                        _ => {}
                    }
                }
                let id = format!("p{n}");
                backup(
                    &r,
                    &id,
                    "disk",
                    None,
                    UNIX_EPOCH + Duration::from_secs(n),
                    &img,
                );
                proptest::prop_assert_eq!(restore(&r, &id), img);
                Ok(())
            },
        )
        .unwrap();
    assert!(r.verify(None, &|_, _| {}).unwrap().is_ok());
}

/// Throughput of the chunk path in MiB/s; run with
/// `cargo test --release -p cowd --test integration -- --ignored --nocapture repo::throughput`.
#[test]
#[ignore = "a measurement, not a check"]
fn throughput() {
    use std::time::Instant;
    const MIB: f64 = 1024.0 * 1024.0;
    let d = tempfile::tempdir().unwrap();
    let r = Repo::init(&d.path().join("repo"), 4 << 20).unwrap();
    let n: u64 = 64; // chunks of 4 MiB per kind
    let random_chunk = random(4 << 20, 1);
    // Half of every 4 KiB block zero (like sparse application data): ratio about 2.
    let mut half_zero = random(4 << 20, 2);
    for b in half_zero.chunks_mut(4096) {
        b[2048..].fill(0);
    }
    // Skewed letters and spaces (text-like): ratio about 3.
    let mut rng = fastrand::Rng::with_seed(3);
    let text: Vec<u8> = (0..4 << 20)
        .map(|_| b"  eeettaaoinshrdlu\n"[rng.usize(..19)])
        .collect();
    let rate = |bytes: f64, t: Instant| bytes / MIB / t.elapsed().as_secs_f64();

    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(Digest::of(&random_chunk));
    }
    println!(
        "sha256                 {:7.0} MiB/s",
        rate(n as f64 * 4.0 * MIB, t)
    );
    for (name, base) in [
        ("random", &random_chunk),
        ("half-zero", &half_zero),
        ("text", &text),
    ] {
        let t = Instant::now();
        let mut size = 0;
        for _ in 0..n / 4 {
            size = zstd::bulk::compress(base, 3).unwrap().len();
        }
        println!(
            "zstd-3 {name:10}      {:7.0} MiB/s (ratio {:.2})",
            rate(n as f64 / 4.0 * 4.0 * MIB, t),
            base.len() as f64 / size as f64
        );
    }
    for threads in [1u64, 2] {
        for (k, (name, base)) in [
            ("random", &random_chunk),
            ("half-zero", &half_zero),
            ("text", &text),
        ]
        .into_iter()
        .enumerate()
        {
            let t = Instant::now();
            let stored: u64 = std::thread::scope(|s| {
                let hs: Vec<_> = (0..threads)
                    .map(|th| {
                        let r = &r;
                        s.spawn(move || {
                            let mut data = base.clone();
                            let mut stored = 0;
                            for i in 0..n / threads {
                                // A distinct chunk each time (no dedup).
                                data[..8].copy_from_slice(
                                    &(threads << 48 | th << 40 | (k as u64) << 32 | i)
                                        .to_le_bytes(),
                                );
                                let s = r.store_chunk(&data).unwrap();
                                assert!(s.new);
                                stored += s.stored_bytes;
                            }
                            stored
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).sum()
            });
            println!(
                "store_chunk {name:10} {threads} thread(s) {:7.0} MiB/s (stored {:.0}%)",
                rate(n as f64 * 4.0 * MIB, t),
                stored as f64 * 100.0 / (n as f64 * 4.0 * MIB)
            );
        }
    }
    let digests: Vec<Digest> = (0..n)
        .map(|i| {
            let mut data = text.clone();
            data[..8].copy_from_slice(&(u64::MAX - i).to_le_bytes());
            r.store_chunk(&data).unwrap().digest
        })
        .collect();
    let mut out = Vec::new();
    let t = Instant::now();
    for d in &digests {
        r.load_chunk(d, 4 << 20, &mut out).unwrap();
    }
    println!(
        "load_chunk text        {:7.0} MiB/s",
        rate(n as f64 * 4.0 * MIB, t)
    );
}
