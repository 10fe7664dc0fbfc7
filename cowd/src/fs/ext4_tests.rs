//! Tests of the ext4 reader against images made by the real tools.
//! Checked against e2fsprogs: for each layout, the map must equal the free-block lists
//! that `dumpe2fs` prints, and filling or zeroing everything outside the map must leave a
//! filesystem that `e2fsck -fn` finds clean and whose files are all intact.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::*;
use crate::device::{FileDevice, FileOptions, MemoryDevice, ZeroFlags};
use crate::fs::{Counting, open_image, probe as probe_any, try_open_image, used_blocks};

const MIB: u64 = 1 << 20;

fn require(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
        || Path::new("/usr/sbin").join(tool).is_file()
        || Path::new("/sbin").join(tool).is_file();
    assert!(found, "{tool} is missing: run scripts/test (e2fsprogs)");
}

fn e2fsprogs() {
    for t in ["mke2fs", "dumpe2fs", "debugfs", "e2fsck"] {
        require(t);
    }
}

fn output(cmd: &str, args: &[&str]) -> Output {
    let mut c = Command::new(cmd);
    c.args(args).env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin");
    c.output().unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = output(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Makes an image file of `file_size` bytes with a filesystem of `fs_size` (mke2fs syntax,
/// or the whole file).
fn mkfs(dir: &Path, file_size: u64, fs_size: Option<&str>, args: &[&str]) -> PathBuf {
    let img = dir.join("fs.img");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(file_size).unwrap();
    drop(f);
    let mut a = vec!["-q", "-F"];
    a.extend_from_slice(args);
    a.push(s(&img));
    if let Some(size) = fs_size {
        a.push(size);
    }
    run("mke2fs", &a);
    img
}

/// Writes files with debugfs, removes some, writes more into the holes; returns the files
/// that remain (path in the filesystem -> content).
fn populate(dir: &Path, img: &Path, budget: u64, seed: u64) -> BTreeMap<String, Vec<u8>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut script = String::from("mkdir d\nmkdir d/sub\n");
    let mut files = BTreeMap::new();
    let mut sizes: Vec<u64> = vec![0, 1, 1000, 4096, 5000, 65536, 200_000];
    sizes.extend([budget / 10, budget / 7, budget / 5]);
    for _ in 0..30 {
        sizes.push(rng.u64(0..budget / 40));
    }
    let later: Vec<u64> = (0..10).map(|i| rng.u64(0..budget / 30) + i).collect();
    let mut n = 0;
    let mut write = |script: &mut String, files: &mut BTreeMap<String, Vec<u8>>, size| {
        let name = format!("d/{}f{n}", if n % 4 == 0 { "sub/" } else { "" });
        let host = src.join(format!("f{n}"));
        let mut data = vec![0u8; size as usize];
        fastrand::Rng::with_seed(seed ^ n).fill(&mut data);
        std::fs::write(&host, &data).unwrap();
        script.push_str(&format!("write {} {name}\n", s(&host)));
        files.insert(name, data);
        n += 1;
    };
    for &size in &sizes {
        write(&mut script, &mut files, size);
    }
    // Remove every third file, then write more: they reuse the freed blocks.
    let names: Vec<String> = files.keys().cloned().collect();
    for name in names.iter().step_by(3) {
        script.push_str(&format!("rm {name}\n"));
        files.remove(name);
    }
    for size in later {
        write(&mut script, &mut files, size);
    }
    let path = dir.join("debugfs.cmd");
    std::fs::write(&path, script).unwrap();
    let out = output("debugfs", &["-w", "-f", s(&path), s(img)]);
    assert!(out.status.success(), "debugfs: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("Could not") && !err.contains("No free space"),
        "debugfs: {err}"
    );
    files
}

/// What dumpe2fs says: block count, free blocks, block size, free block ranges.
#[derive(Debug)]
struct Dump {
    /// Groups whose block bitmap is uninitialized.
    uninit: usize,
    block_count: u64,
    free_blocks: u64,
    block_size: u64,
    free: Vec<(u64, u64)>,
}

fn dumpe2fs(img: &Path, groups: bool) -> Dump {
    let text = run(
        "dumpe2fs",
        &[if groups { "" } else { "-h" }, s(img)]
            .into_iter()
            .filter(|a| !a.is_empty())
            .collect::<Vec<_>>(),
    );
    let header = |key: &str| -> u64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("dumpe2fs: no {key}"));
        line[key.len()..].trim().parse().unwrap()
    };
    // With bigalloc, dumpe2fs prints a range of free clusters as the first blocks of its
    // first and last clusters.
    let cluster = text
        .lines()
        .find_map(|l| l.strip_prefix("Cluster size:"))
        .map(|v| v.trim().parse::<u64>().unwrap());
    let block_size = header("Block size:");
    let ratio = cluster.map_or(1, |c| c / block_size);
    let mut free = Vec::new();
    for line in text.lines() {
        let Some(list) = line.strip_prefix("  Free blocks: ") else {
            continue;
        };
        for r in list.split(", ").filter(|r| !r.trim().is_empty()) {
            let (a, b) = match r.trim().split_once('-') {
                Some((a, b)) => (a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap()),
                None => {
                    let a = r.trim().parse::<u64>().unwrap();
                    (a, a)
                }
            };
            let end = b + ratio;
            match free.last_mut() {
                Some((_, e)) if *e == a => *e = end,
                _ => free.push((a, end)),
            }
        }
    }
    let block_count = header("Block count:");
    if let Some((_, e)) = free.last_mut() {
        *e = (*e).min(block_count);
    }
    Dump {
        uninit: text.matches("BLOCK_UNINIT").count(),
        block_count,
        free_blocks: header("Free blocks:"),
        block_size,
        free,
    }
}

fn open(img: &Path) -> FileDevice {
    open_image(img, true)
}

fn map_of(dev: &dyn BlockDevice) -> UsedMap {
    match probe_any(dev).unwrap() {
        Probe::Used(m) => m,
        other => panic!("expected a used map, got {other:?}"),
    }
}

/// The complement of `used` within `0..end`.
fn free_ranges(used: &[(u64, u64)], end: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = 0;
    for &(s, e) in used {
        if s > at {
            out.push((at, s.min(end)));
        }
        at = e;
    }
    if at < end {
        out.push((at, end));
    }
    out.retain(|(s, e)| s < e);
    out
}

/// Checks the map of `img` against dumpe2fs: counts always, the exact free ranges when
/// `groups`.
fn check_against_dumpe2fs(img: &Path, groups: bool) -> (UsedMap, Dump) {
    let dev = open(img);
    let map = map_of(&dev);
    let d = dumpe2fs(img, groups);
    assert_eq!(u64::from(map.fs_block_size), d.block_size);
    assert_eq!(map.fs_bytes, d.block_count * d.block_size);
    assert_eq!(map.total_bytes, dev.size());
    let beyond = map.total_bytes - map.fs_bytes;
    assert_eq!(
        map.used_bytes - beyond,
        (d.block_count - d.free_blocks) * d.block_size,
        "used bytes of {map}"
    );
    // Sorted, merged, within the device, and the count is their sum.
    for w in map.used.windows(2) {
        assert!(w[0].1 < w[1].0, "ranges not merged: {w:?}");
    }
    assert!(map.used.iter().all(|(s, e)| s < e && *e <= map.total_bytes));
    assert_eq!(
        map.used_bytes,
        map.used.iter().map(|(s, e)| e - s).sum::<u64>()
    );
    if beyond > 0 {
        assert_eq!(map.used.last().unwrap().1, map.total_bytes);
    }
    if groups {
        let bs = d.block_size;
        let ours: Vec<(u64, u64)> = free_ranges(&map.used, map.fs_bytes)
            .into_iter()
            .map(|(s, e)| {
                assert!(s % bs == 0 && e % bs == 0, "unaligned free range {s}..{e}");
                (s / bs, e / bs)
            })
            .collect();
        assert_eq!(ours, d.free, "free block ranges differ from dumpe2fs");
    }
    (map, d)
}

fn fsck_clean(img: &Path) {
    let out = output("e2fsck", &["-fn", s(img)]);
    assert!(
        out.status.success(),
        "e2fsck -fn {}: {}\n{}{}",
        img.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads every file back with debugfs and compares it with what was written.
fn files_intact(dir: &Path, img: &Path, files: &BTreeMap<String, Vec<u8>>) {
    let out = dir.join(format!(
        "rdump-{}",
        img.file_name().unwrap().to_str().unwrap()
    ));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out).unwrap();
    let o = output("debugfs", &["-R", &format!("rdump d {}", s(&out)), s(img)]);
    assert!(o.status.success(), "debugfs rdump: {o:?}");
    let mut found = 0;
    for (name, data) in files {
        let got = std::fs::read(out.join(name))
            .unwrap_or_else(|e| panic!("{}: {name}: {e}", img.display()));
        assert!(got == *data, "{}: {name} differs", img.display());
        found += 1;
    }
    assert_eq!(found, files.len());
}

/// The property backups rely on: whatever the free space holds (garbage, or zeroes), the
/// filesystem is the same. Checked on two copies of the image.
fn free_space_is_free(
    dir: &Path,
    img: &Path,
    map: &UsedMap,
    files: &BTreeMap<String, Vec<u8>>,
    with_garbage: bool,
) {
    fsck_clean(img);
    files_intact(dir, img, files);
    let free = free_ranges(&map.used, map.total_bytes);
    for garbage in [true, false] {
        if garbage && !with_garbage {
            continue;
        }
        let copy = dir.join(if garbage { "garbage.img" } else { "zeroed.img" });
        run("cp", &["--sparse=always", s(img), s(&copy)]);
        let dev = open_image(&copy, false);
        for &(start, end) in &free {
            if garbage {
                let mut buf = vec![0u8; (end - start).min(MIB) as usize];
                let mut at = start;
                while at < end {
                    let n = (end - at).min(MIB) as usize;
                    buf[..n].iter_mut().enumerate().for_each(|(i, b)| {
                        *b = 0xA5 ^ ((at as usize + i) as u8);
                    });
                    dev.write_at(&buf[..n], at, false).unwrap();
                    at += n as u64;
                }
            } else {
                let flags = ZeroFlags {
                    may_trim: true,
                    ..ZeroFlags::default()
                };
                dev.write_zeroes(start, end - start, flags).unwrap();
            }
        }
        dev.flush().unwrap();
        drop(dev);
        fsck_clean(&copy);
        files_intact(dir, &copy, files);
        // And the map of the copy is the same map.
        assert_eq!(map_of(&open(&copy)), *map);
        std::fs::remove_file(&copy).unwrap();
    }
}

/// One layout: mkfs, fill, compare with dumpe2fs exactly, then the free-space property
/// (filling free space with garbage only for images up to 256 MiB). Returns the map and
/// what dumpe2fs said.
fn layout(file_size: u64, fs_size: Option<&str>, args: &[&str]) -> (UsedMap, Dump) {
    e2fsprogs();
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(dir.path(), file_size, fs_size, args);
    // Fresh, as mkfs left it.
    check_against_dumpe2fs(&img, true);
    let fs_bytes = map_of(&open(&img)).fs_bytes;
    let budget = (fs_bytes / 3).min(64 * MIB);
    let files = populate(dir.path(), &img, budget, file_size ^ args.len() as u64);
    let (map, dump) = check_against_dumpe2fs(&img, true);
    free_space_is_free(dir.path(), &img, &map, &files, file_size <= 256 * MIB);
    (map, dump)
}

#[test]
fn default_ext4_small() {
    // 8 MiB: 1 KiB blocks, one group, 64bit, flex_bg, metadata_csum.
    let (m, _) = layout(8 * MIB, None, &["-t", "ext4"]);
    assert_eq!((m.filesystem, m.fs_block_size), ("ext4", 1024));
}

#[test]
fn default_ext4_many_groups() {
    // 64 MiB: 1 KiB blocks, 8 groups, some still BLOCK_UNINIT after the writes.
    let (_, d) = layout(64 * MIB, None, &["-t", "ext4"]);
    assert!(d.uninit > 0, "no uninitialized group to test");
}

#[test]
fn ext4_4k_blocks() {
    let (m, d) = layout(160 * MIB, None, &["-t", "ext4", "-b", "4096", "-g", "4096"]);
    assert_eq!(m.fs_block_size, 4096);
    assert!(d.uninit > 0);
}

#[test]
fn ext4_2k_blocks() {
    let (m, _) = layout(48 * MIB, None, &["-t", "ext4", "-b", "2048"]);
    assert_eq!(m.fs_block_size, 2048);
}

#[test]
fn ext4_1k_blocks_small_groups() {
    let (_, d) = layout(24 * MIB, None, &["-t", "ext4", "-b", "1024", "-g", "1024"]);
    assert!(d.uninit > 0);
}

#[test]
fn ext4_without_64bit() {
    layout(64 * MIB, None, &["-t", "ext4", "-O", "^64bit"]);
}

#[test]
fn ext4_without_flex_bg() {
    // Each group's bitmaps and inode table inside the group, also when BLOCK_UNINIT.
    let (_, d) = layout(64 * MIB, None, &["-t", "ext4", "-O", "^flex_bg"]);
    assert!(d.uninit > 0);
}

#[test]
fn ext4_without_group_checksums() {
    // No uninit_bg, no metadata_csum: every bitmap is initialized and bg_flags is ignored.
    let (_, d) = layout(
        64 * MIB,
        None,
        &["-t", "ext4", "-O", "^uninit_bg,^metadata_csum"],
    );
    assert_eq!(d.uninit, 0);
}

#[test]
fn ext4_uninit_bg_crc16() {
    // uninit_bg without metadata_csum: crc16 descriptor checksums.
    let (_, d) = layout(
        64 * MIB,
        None,
        &["-t", "ext4", "-O", "^metadata_csum,uninit_bg"],
    );
    assert!(d.uninit > 0);
}

#[test]
fn ext4_meta_bg() {
    // 64 groups, 16 descriptors per block: descriptors in groups 0, 1, 15, 16, 17, 31, ...
    let (_, d) = layout(
        64 * MIB,
        None,
        &["-t", "ext4", "-g", "1024", "-O", "meta_bg,^resize_inode"],
    );
    assert!(d.uninit > 0);
}

#[test]
fn ext4_sparse_super2() {
    layout(
        64 * MIB,
        None,
        &["-t", "ext4", "-O", "sparse_super2", "-E", "num_backup_sb=2"],
    );
}

#[test]
fn ext4_no_sparse_super() {
    layout(
        32 * MIB,
        None,
        &[
            "-t",
            "ext4",
            "-g",
            "2048",
            "-O",
            "^sparse_super,^resize_inode",
        ],
    );
}

#[test]
fn ext4_bigalloc() {
    layout(
        128 * MIB,
        None,
        &["-t", "ext4", "-b", "4096", "-O", "bigalloc", "-C", "16384"],
    );
}

#[test]
fn ext4_bigalloc_uninit_groups() {
    let (_, d) = layout(
        1024 * MIB,
        None,
        &["-t", "ext4", "-O", "bigalloc", "-C", "8192"],
    );
    assert!(d.uninit > 0);
}

#[test]
fn ext4_bigalloc_1k_blocks() {
    // First data block 0 with 1 KiB blocks: the superblock is in block 1.
    let (_, d) = layout(
        256 * MIB,
        None,
        &["-t", "ext4", "-b", "1024", "-O", "bigalloc", "-C", "4096"],
    );
    assert!(d.uninit > 0);
}

#[test]
fn ext4_lazy_itable_init() {
    layout(
        128 * MIB,
        None,
        &["-t", "ext4", "-E", "lazy_itable_init=1,lazy_journal_init=1"],
    );
}

#[test]
fn ext4_smaller_than_device() {
    let (m, _) = layout(64 * MIB, Some("40M"), &["-t", "ext4"]);
    assert_eq!(m.fs_bytes, 40 * MIB);
    assert_eq!(m.total_bytes, 64 * MIB);
    let last = *m.used.last().unwrap();
    assert!(last.0 <= 40 * MIB && last.1 == 64 * MIB, "{last:?}");
}

#[test]
fn ext3() {
    let (m, _) = layout(32 * MIB, None, &["-t", "ext3"]);
    assert_eq!(m.filesystem, "ext3");
}

#[test]
fn ext2() {
    let (m, _) = layout(32 * MIB, None, &["-t", "ext2"]);
    assert_eq!(m.filesystem, "ext2");
}

#[test]
fn ext2_revision_0() {
    let (m, _) = layout(16 * MIB, None, &["-t", "ext2", "-r", "0"]);
    assert_eq!(m.filesystem, "ext2");
}

#[test]
fn ext4_1gib_sparse() {
    // 4 KiB blocks, 8 groups in one flex group, lazy inode tables.
    let (m, d) = layout(
        1024 * MIB,
        None,
        &["-t", "ext4", "-E", "lazy_itable_init=1"],
    );
    assert_eq!(m.fs_block_size, 4096);
    assert!(d.uninit > 0);
}

#[test]
fn used_blocks_of_a_real_map() {
    e2fsprogs();
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(dir.path(), 64 * MIB, Some("48M"), &["-t", "ext4"]);
    populate(dir.path(), &img, 16 * MIB, 3);
    let map = map_of(&open(&img));
    for bs in [4096u32, 65536, 1 << 20] {
        let blocks = used_blocks(&map, bs, map.total_bytes);
        let b = u64::from(bs);
        for i in 0..map.total_bytes.div_ceil(b) {
            let any = map.used.iter().any(|&(s, e)| s < (i + 1) * b && e > i * b);
            assert_eq!(blocks.contains(i as u32), any, "block {i} of {bs}");
        }
    }
}

#[test]
fn direct_io_reads_the_same_map() {
    // O_DIRECT needs aligned offsets, lengths and buffers; the superblock at 1024 is not.
    e2fsprogs();
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(dir.path(), 64 * MIB, None, &["-t", "ext4", "-b", "1024"]);
    populate(dir.path(), &img, 16 * MIB, 9);
    let opts = FileOptions {
        read_only: true,
        direct: true,
    };
    let Ok(dev) = try_open_image(&img, opts) else {
        eprintln!("skipped: the temp file system does not support O_DIRECT");
        return;
    };
    let map = crate::fs::used_map(&dev).unwrap().expect("a map");
    assert_eq!(map, map_of(&open(&img)));
}

#[test]
fn one_tib_reads_only_descriptors_and_bitmaps() {
    e2fsprogs();
    let dir = tempfile::tempdir().unwrap();
    // Initialized bitmaps everywhere (no uninit_bg): 8192 bitmaps of 4 KiB = 32 MiB.
    for (args, limit) in [
        (
            &["-t", "ext4", "-O", "^uninit_bg,^metadata_csum"][..],
            34 * MIB,
        ),
        (
            &["-t", "ext4", "-E", "lazy_itable_init=1,lazy_journal_init=1"][..],
            8 * MIB,
        ),
    ] {
        let mut a = args.to_vec();
        a.extend(["-E", "lazy_itable_init=1,lazy_journal_init=1"]);
        let img = mkfs(dir.path(), 1 << 40, None, &a);
        let dev = Counting::new(open(&img));
        let start = std::time::Instant::now();
        let map = map_of(&dev);
        let took = start.elapsed();
        let read = dev.bytes_read();
        let d = dumpe2fs(&img, false);
        assert_eq!(
            map.used_bytes,
            (d.block_count - d.free_blocks) * d.block_size,
            "{args:?}"
        );
        assert!(read <= limit, "{args:?}: read {read} bytes");
        assert!(map.used.len() < 20_000, "{} ranges", map.used.len());
        eprintln!("{args:?}: {map}; read {read} bytes in {took:?}");
        std::fs::remove_file(&img).unwrap();
    }
}

fn unsupported(dev: &dyn BlockDevice) -> String {
    match probe_any(dev).unwrap() {
        Probe::Unsupported { reason, .. } => reason,
        other => panic!("expected unsupported, got {other:?}"),
    }
}

#[test]
fn not_ext4_is_unknown() {
    // Zeroes, small devices, random data.
    for size in [0u64, 512, 2047, 2048, 4096, 8 * MIB] {
        let dev = MemoryDevice::new(size);
        assert_eq!(probe_any(&dev).unwrap(), Probe::Unknown, "{size}");
        assert_eq!(crate::fs::used_map(&dev).unwrap(), None);
    }
    let dev = MemoryDevice::new(4 * MIB);
    let mut junk = vec![0u8; 4 * MIB as usize];
    fastrand::Rng::with_seed(1).fill(&mut junk);
    junk[0x438] = 0;
    dev.write_at(&junk, 0, false).unwrap();
    assert_eq!(probe_any(&dev).unwrap(), Probe::Unknown);
    // Random data with the magic: recognized, refused.
    dev.write_at(&MAGIC.to_le_bytes(), 0x438, false).unwrap();
    unsupported(&dev);
    // Another filesystem, where its mkfs is installed.
    for (mkfs, args) in [
        ("mkfs.vfat", &["-C"][..]),
        ("mkfs.xfs", &["-f", "-d", "file,size=320m,name"][..]),
    ] {
        let Some(_) = ["/usr/sbin", "/sbin", "/usr/bin"]
            .iter()
            .find(|d| Path::new(d).join(mkfs).is_file())
        else {
            eprintln!("{mkfs} not installed: skipped");
            continue;
        };
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("other.img");
        let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if mkfs == "mkfs.vfat" {
            a.push(s(&img).to_owned());
            a.push("65536".into());
        } else {
            let last = a.pop().unwrap();
            a.push(format!("{last}={}", s(&img)));
        }
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        run(mkfs, &a);
        assert_eq!(probe_any(&open(&img)).unwrap(), Probe::Unknown, "{mkfs}");
    }
}

/// Loads an image into memory.
fn in_memory(img: &Path) -> MemoryDevice {
    let data = std::fs::read(img).unwrap();
    let dev = MemoryDevice::new(data.len() as u64);
    dev.write_at(&data, 0, false).unwrap();
    dev
}

#[test]
fn refuses_what_it_cannot_trust() {
    e2fsprogs();
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(dir.path(), 64 * MIB, None, &["-t", "ext4"]);
    populate(dir.path(), &img, 8 * MIB, 5);
    let good = in_memory(&img);
    map_of(&good);
    let patch = |at: u64, bytes: &[u8]| {
        let dev = in_memory(&img);
        dev.write_at(bytes, at, false).unwrap();
        dev
    };
    let sb = SUPERBLOCK_OFFSET;
    let read_sb = |dev: &MemoryDevice| {
        let mut b = vec![0u8; 1024];
        dev.read_at(&mut b, sb).unwrap();
        b
    };
    // With a valid superblock checksum, so the field itself is what is refused.
    let with_csum = |dev: MemoryDevice| {
        let mut b = read_sb(&dev);
        let c = crc32c(!0, &b[..0x3FC]);
        b[0x3FC..].copy_from_slice(&c.to_le_bytes());
        dev.write_at(&b, sb, false).unwrap();
        dev
    };
    let set_u32 = |off: usize, f: &dyn Fn(u32) -> u32| {
        let dev = in_memory(&img);
        let mut b = read_sb(&dev);
        let v = f(le32(&b, off));
        b[off..off + 4].copy_from_slice(&v.to_le_bytes());
        dev.write_at(&b, sb, false).unwrap();
        with_csum(dev)
    };
    let cases: Vec<(&str, MemoryDevice)> = vec![
        ("superblock checksum", patch(sb + 0x100, &[1])),
        ("needs recovery", set_u32(0x60, &|v| v | INCOMPAT_RECOVER)),
        ("unknown incompatible", set_u32(0x60, &|v| v | 0x0100_0000)),
        ("unknown read-only", set_u32(0x64, &|v| v | 0x80)),
        (
            "journal device",
            set_u32(0x60, &|v| v | INCOMPAT_JOURNAL_DEV),
        ),
        ("not clean", {
            let dev = in_memory(&img);
            let mut b = read_sb(&dev);
            b[0x3A] = 0;
            dev.write_at(&b, sb, false).unwrap();
            with_csum(dev)
        }),
        ("larger than the device", set_u32(0x04, &|v| v + 1)),
        ("block size", set_u32(0x18, &|_| 9)),
        ("blocks per group", set_u32(0x20, &|_| 100_000)),
        ("inodes", set_u32(0x00, &|v| v + 1)),
        // Group 0's descriptor (block 2 with 1 KiB blocks): checksum.
        ("descriptor checksum", patch(2048 + 0x0C, &[0x55])),
        // The block bitmap of group 0 (its checksum is in the descriptor).
        ("bitmap checksum", {
            let dev = in_memory(&img);
            let mut d = vec![0u8; 64];
            dev.read_at(&mut d, 2048).unwrap();
            let bitmap = u64::from(le32(&d, 0));
            dev.write_at(&[0x0F], bitmap * 1024 + 900, false).unwrap();
            dev
        }),
    ];
    for (what, dev) in cases {
        let reason = unsupported(&dev);
        eprintln!("{what}: {reason}");
    }
    // A device shorter than the filesystem.
    let short = MemoryDevice::new(32 * MIB);
    let mut b = vec![0u8; 32 * MIB as usize];
    good.read_at(&mut b, 0).unwrap();
    short.write_at(&b, 0, false).unwrap();
    assert!(unsupported(&short).contains("larger than the device"));
}

#[test]
fn refuses_when_bitmaps_disagree_with_descriptors() {
    // Without checksums, a bitmap bit flipped behind the descriptor's back is caught by
    // the free counts.
    e2fsprogs();
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(dir.path(), 16 * MIB, None, &["-t", "ext2"]);
    let dev = in_memory(&img);
    map_of(&dev);
    let mut d = vec![0u8; 32];
    dev.read_at(&mut d, 2048).unwrap();
    let bitmap = u64::from(le32(&d, 0));
    let mut byte = [0u8];
    dev.read_at(&mut byte, bitmap * 1024 + 1000).unwrap();
    dev.write_at(&[byte[0] ^ 0x10], bitmap * 1024 + 1000, false)
        .unwrap();
    assert!(unsupported(&dev).contains("free"));
}

mod fuzz {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Random bytes over the superblock and descriptors of a filesystem without
        /// checksums: never a panic, and any map given is well formed.
        #[test]
        fn corrupted_metadata_never_panics(
            patches in vec((1024u64..4096, any::<u8>()), 1..24),
            which in 0usize..2,
        ) {
            let dev = fuzz_image(which);
            for (at, v) in patches {
                dev.write_at(&[v], at, false).unwrap();
            }
            if let Probe::Used(m) = probe_any(&dev).unwrap() {
                prop_assert!(m.used.windows(2).all(|w| w[0].1 < w[1].0));
                prop_assert!(m.used.iter().all(|(s, e)| s < e && *e <= m.total_bytes));
                let sum: u64 = m.used.iter().map(|(s, e)| e - s).sum();
                prop_assert_eq!(m.used_bytes, sum);
            }
        }

        /// A random superblock with the magic: never a panic.
        #[test]
        fn random_superblock_never_panics(
            mut sb in vec(any::<u8>(), 1024),
            plausible in any::<bool>(),
        ) {
            sb[0x38..0x3A].copy_from_slice(&MAGIC.to_le_bytes());
            if plausible {
                // 1 KiB blocks, revision 1, clean, 4096 blocks: the checks go further.
                sb[0x18..0x20].fill(0);
                sb[0x4C..0x50].copy_from_slice(&1u32.to_le_bytes());
                sb[0x3A] = 1;
                sb[0x04..0x08].copy_from_slice(&4096u32.to_le_bytes());
            }
            let dev = MemoryDevice::new(4 * MIB);
            dev.write_at(&sb, 1024, false).unwrap();
            let _ = probe_any(&dev).unwrap();
        }
    }
}

/// Small images for the fuzz tests, made once: ext2 with 1 KiB blocks and small groups,
/// and ext4 without checksums.
fn fuzz_image(which: usize) -> MemoryDevice {
    static IMAGES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    let images = IMAGES.get_or_init(|| {
        e2fsprogs();
        let dir = tempfile::tempdir().unwrap();
        [
            &["-t", "ext2", "-g", "256", "-N", "64"][..],
            &["-t", "ext4", "-O", "^metadata_csum,^uninit_bg", "-g", "512"][..],
        ]
        .iter()
        .map(|args| {
            let img = mkfs(dir.path(), 2 * MIB, None, args);
            std::fs::read(img).unwrap()
        })
        .collect()
    });
    let dev = MemoryDevice::new(images[which].len() as u64);
    dev.write_at(&images[which], 0, false).unwrap();
    dev
}

/// Undoes a freeze and a loop mount, also when the test fails.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = output("fsfreeze", &["-u", s(&self.0)]);
        let _ = output("umount", &[s(&self.0)]);
    }
}

fn require_root() {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "this test needs root (loop mount, FIFREEZE)");
    require("fsfreeze");
    require("mount");
}

#[test]
fn mounted_filesystem_frozen_backup_of_used_blocks() {
    // The use case: a mounted ext4 is refused while its journal is live, and read once
    // frozen; copying only the used blocks gives a clean filesystem with every file.
    e2fsprogs();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(dir.path(), 128 * MIB, None, &["-t", "ext4"]);
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    run("mount", &["-o", "loop", s(&img), s(&mnt)]);
    let guard = Mounted(mnt.clone());
    let mut files = BTreeMap::new();
    let mut rng = fastrand::Rng::with_seed(11);
    std::fs::create_dir(mnt.join("d")).unwrap();
    for i in 0..40 {
        let mut data = vec![0u8; rng.usize(0..3 << 20)];
        rng.fill(&mut data);
        let name = format!("d/f{i}");
        std::fs::write(mnt.join(&name), &data).unwrap();
        files.insert(name, data);
    }
    run("sync", &[]);
    for i in (0..40).step_by(3) {
        let name = format!("d/f{i}");
        std::fs::remove_file(mnt.join(&name)).unwrap();
        files.remove(&name);
    }
    for i in 40..50 {
        let mut data = vec![0u8; rng.usize(0..2 << 20)];
        rng.fill(&mut data);
        let name = format!("d/f{i}");
        std::fs::write(mnt.join(&name), &data).unwrap();
        files.insert(name, data);
    }
    run("sync", &[]);
    let dev = open(&img);
    let reason = unsupported(&dev);
    assert!(reason.contains("journal needs recovery"), "{reason}");

    run("fsfreeze", &["-f", s(&mnt)]);
    let (map, _) = check_against_dumpe2fs(&img, true);
    // The backup: only the used ranges, into a sparse file.
    let backup = dir.path().join("backup.img");
    let out = std::fs::File::create(&backup).unwrap();
    out.set_len(map.total_bytes).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    for &(start, end) in &map.used {
        let mut at = start;
        while at < end {
            let n = (end - at).min(MIB) as usize;
            dev.read_at(&mut buf[..n], at).unwrap();
            std::os::unix::fs::FileExt::write_all_at(&out, &buf[..n], at).unwrap();
            at += n as u64;
        }
    }
    drop(out);
    run("fsfreeze", &["-u", s(&mnt)]);
    // Changes after the copy do not matter to it.
    std::fs::write(mnt.join("d/late"), vec![7u8; 1 << 20]).unwrap();
    drop(guard);
    drop(dev);
    fsck_clean(&backup);
    files_intact(dir.path(), &backup, &files);
}

#[test]
fn mounted_without_journal_is_refused() {
    e2fsprogs();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let img = mkfs(
        dir.path(),
        32 * MIB,
        None,
        &["-t", "ext4", "-O", "^has_journal"],
    );
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    run("mount", &["-o", "loop", s(&img), s(&mnt)]);
    let guard = Mounted(mnt.clone());
    std::fs::write(mnt.join("f"), vec![1u8; 1 << 20]).unwrap();
    run("fsfreeze", &["-f", s(&mnt)]);
    let reason = unsupported(&open(&img));
    assert!(reason.contains("not marked clean"), "{reason}");
    drop(guard);
    check_against_dumpe2fs(&img, true);
}
