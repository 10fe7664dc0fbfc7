//! A used-only backup of a half-empty ext4: it reads exactly the used blocks that hold data, and
//! free blocks restore as zeroes.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use cowd::repo::{Blocks, Mode};
use cowd_tests::cli::{path_str, start, text};
use cowd_tests::files::require_root_and;
use cowd_tests::mounts::{Attached, mkfs_ext4};
use cowd_tests::repo::{Ctl, figures};
use cowd_tests::{Daemon, MIB, pattern, run};

use super::{BLOCK, StaticFiles, assert_same_files, files_under, rng};

/// `dumpe2fs IMAGE`: (block size, block count, free block ranges `[first, last]` from the
/// group listing).
fn free_ranges(image: &Path) -> (u64, u64, Vec<(u64, u64)>) {
    let out = text(&run(Command::new("dumpe2fs").arg(image).stderr(Stdio::null())).stdout);
    let field = |name: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in dumpe2fs output"))
    };
    let (bs, count) = (field("Block size:"), field("Block count:"));
    let mut ranges = Vec::new();
    for l in out.lines() {
        let Some(list) = l.trim_start().strip_prefix("Free blocks: ") else {
            continue;
        };
        if !l.starts_with(' ') {
            continue; // the superblock's count, not a group's list
        }
        for r in list.split(", ").filter(|r| !r.trim().is_empty()) {
            let (a, b) = r.trim().split_once('-').unwrap_or((r.trim(), r.trim()));
            ranges.push((a.parse().unwrap(), b.parse().unwrap()));
        }
    }
    (bs, count, ranges)
}

/// Which 4 KiB pieces of a file hold data (are not in a hole), from SEEK_DATA / SEEK_HOLE.
fn data_pieces(path: &Path) -> Vec<bool> {
    use std::os::fd::AsRawFd;
    let f = File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    let mut out = vec![false; len.div_ceil(4096) as usize];
    let mut at = 0i64;
    while (at as u64) < len {
        // SAFETY: lseek(2) on a descriptor we own; it touches no memory.
        let data = unsafe { libc::lseek(f.as_raw_fd(), at, libc::SEEK_DATA) };
        if data < 0 {
            break; // ENXIO: no data after `at`
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(f.as_raw_fd(), data, libc::SEEK_HOLE) };
        assert!(hole > data, "SEEK_HOLE after {data}: {hole}");
        for p in data as u64 / 4096..(hole as u64).div_ceil(4096) {
            out[p as usize] = true;
        }
        at = hole;
    }
    out
}

/// The bytes a used-only backup in blocks of `bs` must read: every block with a used byte,
/// unless it lies wholly in a hole of the image (holes at T are recorded as zeroes unread).
fn expected_read(used: &[bool], data: &[bool], bs: u64) -> u64 {
    let per = (bs / 4096) as usize;
    let blocks = used
        .chunks(per)
        .zip(data.chunks(per))
        .filter(|(u, d)| u.iter().any(|&x| x) && d.iter().any(|&x| x))
        .count();
    blocks as u64 * bs
}

/// The number of 4 KiB pieces of `[start, end)` that are not all zero.
fn nonzero_pieces(f: &File, start: u64, end: u64) -> u64 {
    let mut buf = vec![0u8; MIB as usize];
    let mut n = 0;
    let mut at = start;
    while at < end {
        let len = (end - at).min(MIB) as usize;
        f.read_exact_at(&mut buf[..len], at).unwrap();
        n += buf[..len]
            .chunks(4096)
            .filter(|p| p.iter().any(|&b| b != 0))
            .count() as u64;
        at += len as u64;
    }
    n
}

#[test]
fn used_only_backup_of_a_half_empty_ext4() {
    require_root_and(&["mkfs.ext4", "e2fsck", "dumpe2fs", "mount", "umount"]);
    let began = Instant::now();
    let mut rng = rng("used_only_backup");
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let size = 1 << 30;
    let image = dir.join("fs.img");
    File::create(&image).unwrap().set_len(size).unwrap();
    mkfs_ext4(&image);
    let mut att = Attached::default();

    // ~400 MiB of files, then 200 MiB written and deleted: free blocks with data in them.
    let mnt = dir.join("mnt");
    att.mount(&["-o", "loop", path_str(&image)], &mnt);
    let mut files = StaticFiles::new(&mnt.join("data"));
    let mut total = 0;
    let mut i = 0;
    while total < 400 * MIB as usize {
        let len = rng.usize(1..(12 * MIB as usize));
        files.add(&format!("d{}/f{i:03}.bin", i % 7), len);
        total += len;
        i += 1;
    }
    let garbage = mnt.join("garbage");
    {
        let mut f = File::create(&garbage).unwrap();
        for k in 0..50 {
            f.write_all(&pattern(900 + k, 4 * MIB as usize)).unwrap();
        }
        f.sync_all().unwrap();
    }
    fs::remove_file(&garbage).unwrap();
    let want = files.manifest();
    drop(files);
    att.umount(&mnt);
    // mkfs.ext4 allocates the journal as an unwritten extent; SEEK_DATA calls such an extent
    // a hole or data depending on whether its pages are cached, so what is a hole at T would
    // depend on who read the image before. A sparse copy has real holes and data only.
    let made = dir.join("made.img");
    fs::rename(&image, &made).unwrap();
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(&made)
        .arg(&image));
    fs::remove_file(&made).unwrap();
    run(Command::new("e2fsck").arg("-fn").arg(&image));
    let (fs_bs, fs_blocks, free) = free_ranges(&image);
    let free_blocks: u64 = free.iter().map(|(a, b)| b - a + 1).sum();
    let used = (fs_blocks - free_blocks) * fs_bs;
    println!(
        "ext4: {} files, {:.1} MiB of file data; {:.1} MiB used of {:.0} MiB ({} free ranges)",
        want.len(),
        total as f64 / MIB as f64,
        used as f64 / MIB as f64,
        size as f64 / MIB as f64,
        free.len()
    );
    let original = File::open(&image).unwrap();
    let garbage_in_free: u64 = free
        .iter()
        .map(|&(a, b)| nonzero_pieces(&original, a * fs_bs, (b + 1) * fs_bs))
        .sum::<u64>()
        * 4096;
    assert!(
        garbage_in_free >= 150 * MIB,
        "only {garbage_in_free} bytes of free blocks hold data"
    );

    // cowd on the unmounted image: a used-only backup (the default), then a full one in 4 KiB
    // blocks (the filesystem's block size).
    let d = start(Daemon::builder().export_path("disk", &image));
    let ctl = Ctl::new(&d.control, &dir.join("repo"));
    ctl.init(None);
    assert_eq!(fs_bs, 4096);
    let mut used_pieces = vec![true; (size / 4096) as usize];
    for &(a, b) in &free {
        used_pieces[a as usize..=b as usize].fill(false);
    }
    let data = data_pieces(&image);
    let b64 = ctl.backup("disk", &["--no-quiesce"]).id;
    let b4 = ctl
        .backup(
            "disk",
            &["--mode", "full", "--block-size", "4K", "--no-quiesce"],
        )
        .id;
    let (m64, m4) = (ctl.manifest(&b64), ctl.manifest(&b4));
    println!("{}\n{}", figures(&m64), figures(&m4));
    for m in [&m64, &m4] {
        assert_eq!(
            (m.mode, m.blocks, m.filesystem.as_deref()),
            (Mode::Full, Blocks::Used, Some("ext4"))
        );
    }
    let read = m64.counts.bytes_read;
    let used_data = expected_read(&used_pieces, &data, 4096);
    println!(
        "used-only: read {:.1} MiB in 64 KiB blocks, {:.1} MiB in 4 KiB blocks, for {:.1} MiB \
         used ({:+.1} %), of which {:.1} MiB are not holes of the image",
        read as f64 / MIB as f64,
        m4.counts.bytes_read as f64 / MIB as f64,
        used as f64 / MIB as f64,
        (read as f64 / used as f64 - 1.0) * 100.0,
        used_data as f64 / MIB as f64
    );
    assert!(
        read as f64 >= used as f64 * 0.85 && read as f64 <= used as f64 * 1.15,
        "read {read} bytes for {used} bytes used"
    );
    assert!(read < size * 6 / 10, "{}", figures(&m64));
    // Exactly: the blocks holding a used byte, except those wholly in holes of the image.
    assert_eq!(read, expected_read(&used_pieces, &data, BLOCK));
    assert_eq!(m4.counts.bytes_read, used_data);

    // The restores: clean, the same files, zeroes in the free blocks.
    for (id, bs) in [(&b64, BLOCK), (&b4, 4096)] {
        let img = dir.join(format!("restored-{bs}.img"));
        ctl.restore(id, &img);
        run(Command::new("e2fsck").arg("-fn").arg(&img));
        let at = dir.join(format!("restored-{bs}"));
        att.mount(&["-o", "ro,noload,loop", path_str(&img)], &at);
        assert_same_files(&files_under(&at.join("data")), &want, "restored files");
        att.umount(&at);
        assert_eq!(free_ranges(&img).2, free, "the free blocks of the restore");
        // Every free block (in backup blocks: those holding no used byte) is zero; the free
        // filesystem blocks inside a partly used backup block keep what the device held.
        let restored = File::open(&img).unwrap();
        let per = bs / fs_bs;
        let mut whole_free = BTreeSet::new();
        for &(a, b) in &free {
            for blk in a.div_ceil(per)..(b + 1) / per {
                whole_free.insert(blk);
            }
        }
        let mut left = 0;
        for &(a, b) in &free {
            let n = nonzero_pieces(&restored, a * fs_bs, (b + 1) * fs_bs);
            left += n;
        }
        let in_whole_free: u64 = whole_free
            .iter()
            .map(|&blk| nonzero_pieces(&restored, blk * bs, (blk + 1) * bs))
            .sum();
        println!(
            "restore of {id} ({bs}-byte blocks): {:.1} MiB of free filesystem blocks hold data \
             (in partly used backup blocks)",
            (left * 4096) as f64 / MIB as f64
        );
        assert_eq!(
            in_whole_free, 0,
            "free blocks of the filesystem hold data in the restore of {id}"
        );
        if bs == 4096 {
            assert_eq!(left, 0);
        }
    }
    // The filesystem reader agrees with dumpe2fs.
    let dev = cowd::device::FileDevice::open(
        &dir.join("restored-4096.img"),
        cowd::device::FileOptions {
            read_only: true,
            direct: false,
        },
    )
    .unwrap();
    let map = cowd::fs::used_map(&dev).unwrap().expect("an ext4 used map");
    assert_eq!(map.used_bytes, used);
    println!("used-only backup: took {:.1?}", began.elapsed());
}
