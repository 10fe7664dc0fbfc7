//! An incremental backup after a 1 % change reads exactly the changed blocks.

use std::collections::BTreeSet;
use std::fs::{self};
use std::time::Instant;

use cowd::repo::{Blocks, Mode};
use cowd_tests::cli::start;
use cowd_tests::files::{assert_same_file, fill};
use cowd_tests::repo::{Ctl, figures};
use cowd_tests::{Daemon, MIB, nbd_writes};

use super::{BLOCK, CHUNK, rng};

#[test]
fn incremental_after_1_percent_change() {
    let began = Instant::now();
    let mut rng = rng("incremental_after_1_percent_change");
    let size = 512 * MIB;
    let d = start(Daemon::builder().export("disk", size));
    let dir = d.dir().to_owned();
    let image = d.image("disk").to_owned();
    fill(&image, 0, size, 2);
    let ctl = Ctl::new(&d.control, &dir.join("repo"));
    ctl.init(None);
    let b1 = ctl.backup("disk", &["--blocks", "all", "--no-quiesce"]);
    let m1 = ctl.manifest(&b1.id);
    println!("{}", figures(&m1));
    assert_eq!((m1.mode, m1.blocks), (Mode::Full, Blocks::All));
    assert_eq!(m1.counts.bytes_read, size);
    let chunks = size / CHUNK;
    assert_eq!(m1.counts.chunks_total, chunks);

    // 1 % of the device in 64 KiB pieces at distinct aligned offsets.
    let pieces = (size / 100).div_ceil(BLOCK);
    let mut blocks = BTreeSet::new();
    while (blocks.len() as u64) < pieces {
        blocks.insert(rng.u64(..size / BLOCK));
    }
    let writes: Vec<(u8, u64, u64)> = blocks
        .iter()
        .enumerate()
        .map(|(i, b)| ((i % 250) as u8 + 1, b * BLOCK, BLOCK))
        .collect();
    nbd_writes(&d.uri("disk"), &writes);
    let touched: BTreeSet<u64> = blocks.iter().map(|b| b * BLOCK / CHUNK).collect();
    let b2 = ctl.backup("disk", &["--mode", "auto", "--no-quiesce"]);
    let m2 = ctl.manifest(&b2.id);
    println!(
        "{}\n  {} writes of 64 KiB ({:.3} % of the device) in {} chunks",
        figures(&m2),
        pieces,
        (pieces * BLOCK) as f64 * 100.0 / size as f64,
        touched.len()
    );
    assert_eq!(
        (m2.mode, m2.parent.as_deref(), m2.full_reason.as_deref()),
        (Mode::Incremental, Some(b1.id.as_str()), None)
    );
    assert_eq!(m2.counts.bytes_read, pieces * BLOCK, "{}", figures(&m2));
    assert!(m2.counts.bytes_read * 50 < size, "{}", figures(&m2));
    // Each touched chunk changed in far less than a quarter: stored as a patch, not whole.
    assert_eq!(
        (m2.counts.chunks_new, m2.counts.chunks_patched),
        (0, touched.len() as u64),
        "{}",
        figures(&m2)
    );
    assert_eq!(
        m2.counts.chunks_inherited,
        chunks - touched.len() as u64,
        "{}",
        figures(&m2)
    );
    let r2 = dir.join("r2.img");
    ctl.restore(&b2.id, &r2);
    assert_same_file(&r2, &image);
    fs::remove_file(&r2).unwrap();

    // The same amount unaligned (4 KiB-aligned offsets, so most writes straddle two blocks):
    // every block a write touched is read, no more.
    let mut writes = Vec::new();
    let mut blocks = BTreeSet::new();
    for i in 0..pieces {
        let off = rng.u64(..(size - BLOCK) / 4096) * 4096;
        writes.push(((i % 250) as u8 + 1, off, BLOCK));
        blocks.extend(off / BLOCK..(off + BLOCK).div_ceil(BLOCK));
    }
    nbd_writes(&d.uri("disk"), &writes);
    let touched: BTreeSet<u64> = blocks.iter().map(|b| b * BLOCK / CHUNK).collect();
    let b3 = ctl.backup("disk", &["--no-quiesce"]);
    let m3 = ctl.manifest(&b3.id);
    println!(
        "{}\n  {} unaligned writes of 64 KiB touching {} blocks in {} chunks",
        figures(&m3),
        pieces,
        blocks.len(),
        touched.len()
    );
    assert_eq!(
        (m3.mode, m3.parent.as_deref()),
        (Mode::Incremental, Some(b2.id.as_str()))
    );
    assert_eq!(m3.counts.bytes_read, blocks.len() as u64 * BLOCK);
    assert!(m3.counts.bytes_read * 50 < size, "{}", figures(&m3));
    // Patches of b2's chunks merged with the new changes: still patches.
    assert_eq!(
        (m3.counts.chunks_new, m3.counts.chunks_patched),
        (0, touched.len() as u64),
        "{}",
        figures(&m3)
    );
    let r3 = dir.join("r3.img");
    ctl.restore(&b3.id, &r3);
    assert_same_file(&r3, &image);
    println!("1 % change: took {:.1?}", began.elapsed());
}
