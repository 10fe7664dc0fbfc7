//! Tests of the ntfs reader against images made by the real tools.
//! Checked against ntfs-3g (package `ntfs-3g`: mkntfs, ntfsinfo, the FUSE driver): the used
//! cluster count must be the one ntfsinfo reports, and filling or zeroing everything outside
//! the map must leave a volume that mounts and holds every file intact.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::*;
use crate::device::{FileDevice, MemoryDevice, ZeroFlags};
use crate::fs::{Counting, open_image, probe as probe_any};

const MIB: u64 = 1 << 20;

fn require(tool: &str) {
    let found = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(tool).is_file());
    assert!(
        found,
        "{tool} is missing: the NTFS tests need the ntfs-3g package (apt-get install ntfs-3g)"
    );
}

fn tools() {
    for t in ["mkntfs", "ntfsinfo", "ntfs-3g"] {
        require(t);
    }
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "the NTFS tests need root (FUSE mounts)");
}

fn output(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = output(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// An image of `file_size` bytes with an NTFS volume of `sectors` 512-byte sectors (or the
/// whole file).
fn mkntfs(dir: &Path, file_size: u64, sectors: Option<u64>, args: &[&str]) -> PathBuf {
    let img = dir.join("ntfs.img");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(file_size).unwrap();
    drop(f);
    let mut a = vec!["-q", "-F", "-Q"];
    a.extend_from_slice(args);
    a.push(s(&img));
    let n = sectors.map(|n| n.to_string());
    if let Some(n) = &n {
        a.push(n);
    }
    run("mkntfs", &a);
    img
}

/// Unmounts on drop, also when the test fails.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = output("umount", &[s(&self.0)]);
    }
}

fn mount(img: &Path, mnt: &Path, ro: bool) -> Mounted {
    std::fs::create_dir_all(mnt).unwrap();
    let mut a = vec![s(img), s(mnt)];
    if ro {
        a.extend(["-o", "ro"]);
    }
    run("ntfs-3g", &a);
    Mounted(mnt.to_owned())
}

/// Writes files through ntfs-3g, removes some, writes more; returns what remains.
fn populate(dir: &Path, img: &Path, budget: u64, seed: u64) -> BTreeMap<String, Vec<u8>> {
    let mnt = dir.join("mnt");
    let guard = mount(img, &mnt, false);
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut files = BTreeMap::new();
    std::fs::create_dir(mnt.join("d")).unwrap();
    let write = |files: &mut BTreeMap<String, Vec<u8>>,
                 rng: &mut fastrand::Rng,
                 name: String,
                 size: u64| {
        let mut data = vec![0u8; size as usize];
        rng.fill(&mut data);
        std::fs::write(mnt.join(&name), &data).unwrap();
        files.insert(name, data);
    };
    // Small files stay resident in their MFT records; the large ones get clusters.
    for (i, size) in [0, 100, 700, 5000, 65536, budget / 8, budget / 5]
        .into_iter()
        .enumerate()
    {
        write(&mut files, &mut rng, format!("d/f{i}"), size);
    }
    for i in 7..30 {
        let size = rng.u64(0..budget / 40);
        write(&mut files, &mut rng, format!("d/f{i}"), size);
    }
    let names: Vec<String> = files.keys().cloned().collect();
    for name in names.iter().step_by(3) {
        std::fs::remove_file(mnt.join(name)).unwrap();
        files.remove(name);
    }
    for i in 30..40 {
        let size = rng.u64(0..budget / 30);
        write(&mut files, &mut rng, format!("d/f{i}"), size);
    }
    drop(guard);
    files
}

/// ntfsinfo's cluster size, volume clusters and free clusters.
fn ntfsinfo(img: &Path) -> (u64, u64, u64) {
    let text = run("ntfsinfo", &["-m", "-f", s(img)]);
    let field = |key: &str| -> u64 {
        let line = text
            .lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("ntfsinfo: no {key}"));
        line.split_whitespace().next().unwrap().parse().unwrap()
    };
    (
        field("Cluster Size:"),
        field("Volume Size in Clusters:"),
        field("Free Clusters:"),
    )
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

fn check_against_ntfsinfo(img: &Path) -> UsedMap {
    let dev = open(img);
    let map = map_of(&dev);
    let (cluster, clusters, free) = ntfsinfo(img);
    assert_eq!(map.filesystem, "ntfs");
    assert_eq!(u64::from(map.fs_block_size), cluster);
    assert_eq!(map.fs_bytes, clusters * cluster);
    assert_eq!(map.total_bytes, dev.size());
    let beyond = map.total_bytes - map.fs_bytes;
    assert!(
        beyond > 0,
        "the backup boot sector lies past the last cluster"
    );
    assert_eq!(
        map.used_bytes - beyond,
        (clusters - free) * cluster,
        "used bytes of {map}"
    );
    for w in map.used.windows(2) {
        assert!(w[0].1 < w[1].0, "ranges not merged: {w:?}");
    }
    assert_eq!(map.used.last().unwrap().1, map.total_bytes);
    map
}

fn free_ranges(used: &[(u64, u64)], end: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = 0;
    for &(s, e) in used {
        if s > at {
            out.push((at, s));
        }
        at = e;
    }
    if at < end {
        out.push((at, end));
    }
    out
}

fn files_intact(dir: &Path, img: &Path, files: &BTreeMap<String, Vec<u8>>) {
    let mnt = dir.join("check");
    let guard = mount(img, &mnt, true);
    let mut listed: Vec<String> = std::fs::read_dir(mnt.join("d"))
        .unwrap()
        .map(|e| format!("d/{}", e.unwrap().file_name().to_str().unwrap()))
        .collect();
    listed.sort();
    let want: Vec<String> = files.keys().cloned().collect();
    assert_eq!(listed, want, "{}", img.display());
    for (name, data) in files {
        let got = std::fs::read(mnt.join(name)).unwrap();
        assert!(got == *data, "{}: {name} differs", img.display());
    }
    drop(guard);
}

/// Garbage, then zeroes, over everything outside the map: the volume is the same.
fn free_space_is_free(dir: &Path, img: &Path, map: &UsedMap, files: &BTreeMap<String, Vec<u8>>) {
    files_intact(dir, img, files);
    let free = free_ranges(&map.used, map.total_bytes);
    for garbage in [true, false] {
        let copy = dir.join(if garbage { "garbage.img" } else { "zeroed.img" });
        run("cp", &["--sparse=always", s(img), s(&copy)]);
        let dev = open_image(&copy, false);
        for &(start, end) in &free {
            if garbage {
                let data: Vec<u8> = (start..end).map(|i| 0x5A ^ (i as u8)).collect();
                dev.write_at(&data, start, false).unwrap();
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
        assert_eq!(map_of(&open(&copy)), *map);
        assert_eq!(ntfsinfo(&copy), ntfsinfo(img));
        files_intact(dir, &copy, files);
        std::fs::remove_file(&copy).unwrap();
    }
}

fn layout(file_size: u64, sectors: Option<u64>, args: &[&str]) -> UsedMap {
    tools();
    let dir = tempfile::tempdir().unwrap();
    let img = mkntfs(dir.path(), file_size, sectors, args);
    check_against_ntfsinfo(&img);
    let fs_bytes = map_of(&open(&img)).fs_bytes;
    let files = populate(dir.path(), &img, fs_bytes / 3, file_size);
    let map = check_against_ntfsinfo(&img);
    free_space_is_free(dir.path(), &img, &map, &files);
    map
}

#[test]
fn ntfs_default() {
    let m = layout(64 * MIB, None, &[]);
    assert_eq!(m.fs_block_size, 4096);
}

#[test]
fn ntfs_small_clusters() {
    let m = layout(32 * MIB, None, &["-c", "512"]);
    assert_eq!(m.fs_block_size, 512);
}

#[test]
fn ntfs_large_clusters() {
    let m = layout(128 * MIB, None, &["-c", "65536"]);
    assert_eq!(m.fs_block_size, 65536);
}

#[test]
fn ntfs_smaller_than_device() {
    // 40 MiB of the 64 MiB file.
    let m = layout(64 * MIB, Some(40 * 2048), &[]);
    assert!(m.fs_bytes < 40 * MIB);
    assert_eq!(m.total_bytes, 64 * MIB);
    assert!(m.used.last().unwrap().0 <= 40 * MIB);
}

#[test]
fn ntfs_one_tib_reads_only_metadata() {
    tools();
    let dir = tempfile::tempdir().unwrap();
    let img = mkntfs(dir.path(), 1 << 40, None, &[]);
    let dev = Counting::new(open(&img));
    let start = std::time::Instant::now();
    let map = map_of(&dev);
    let took = start.elapsed();
    let read = dev.bytes_read();
    let (cluster, clusters, free) = ntfsinfo(&img);
    let beyond = map.total_bytes - map.fs_bytes;
    assert_eq!(map.used_bytes - beyond, (clusters - free) * cluster);
    // The bitmap is 32 MiB; the rest is the boot sector and a few MFT records.
    assert!(read <= 40 * MIB, "read {read} bytes");
    eprintln!("{map}; read {read} bytes in {took:?}");
}

#[test]
fn ntfs_dirty_is_refused() {
    tools();
    let dir = tempfile::tempdir().unwrap();
    let img = mkntfs(dir.path(), 32 * MIB, None, &[]);
    map_of(&open(&img));
    // Set VOLUME_IS_DIRTY in $Volume's $VOLUME_INFORMATION, found through the parser.
    let dev = MemoryDevice::new(32 * MIB);
    dev.write_at(&std::fs::read(&img).unwrap(), 0, false)
        .unwrap();
    let mut r = DevReader::new(&dev);
    let ntfs = Ntfs::new(&mut r).unwrap();
    let file = ntfs
        .file(&mut r, KnownNtfsFileRecordNumber::Volume as u64)
        .unwrap();
    let record = file.position().value().unwrap().get();
    drop(r);
    let mut rec = vec![0u8; ntfs.file_record_size() as usize];
    dev.read_at(&mut rec, record).unwrap();
    // $VOLUME_INFORMATION (type 0x70), resident: flags at value offset + 10.
    let mut at = usize::from(le16(&rec, 0x14));
    let mut patched = false;
    while at + 8 < rec.len() && le32(&rec, at) != 0xFFFF_FFFF {
        let len = le32(&rec, at + 4) as usize;
        if le32(&rec, at) == 0x70 {
            let value = at + usize::from(le16(&rec, at + 0x14));
            dev.write_at(&[0x01], record + value as u64 + 10, false)
                .unwrap();
            patched = true;
            break;
        }
        at += len;
    }
    assert!(patched);
    match probe_any(&dev).unwrap() {
        Probe::Unsupported { reason, .. } => assert!(reason.contains("dirty"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ntfs_logfile_needing_replay_is_refused() {
    tools();
    let dir = tempfile::tempdir().unwrap();
    let img = mkntfs(dir.path(), 32 * MIB, None, &[]);
    let dev = MemoryDevice::new(32 * MIB);
    dev.write_at(&std::fs::read(&img).unwrap(), 0, false)
        .unwrap();
    // Where $LogFile's data starts.
    let mut r = DevReader::new(&dev);
    let ntfs = Ntfs::new(&mut r).unwrap();
    let file = ntfs
        .file(&mut r, KnownNtfsFileRecordNumber::LogFile as u64)
        .unwrap();
    let item = file.data(&mut r, "").unwrap().unwrap();
    let attr = item.to_attribute().unwrap();
    let value = attr.value(&mut r).unwrap();
    let at = value.data_position().value().unwrap().get();
    drop(r);
    // A restart page with a client in use and no "clean" flag.
    let mut page = vec![0u8; 4096];
    page[..4].copy_from_slice(b"RSTR");
    page[0x10..0x14].copy_from_slice(&4096u32.to_le_bytes());
    page[0x18..0x1A].copy_from_slice(&0x30u16.to_le_bytes());
    page[0x30 + 0x0C..0x30 + 0x0E].copy_from_slice(&0u16.to_le_bytes());
    dev.write_at(&page, at, false).unwrap();
    match probe_any(&dev).unwrap() {
        Probe::Unsupported { reason, .. } => assert!(reason.contains("replay"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // The same page marked clean is fine.
    page[0x30 + 0x0E] = RESTART_VOLUME_IS_CLEAN as u8;
    dev.write_at(&page, at, false).unwrap();
    map_of(&dev);
}

#[test]
fn ntfs_truncated_or_garbage_never_panics() {
    tools();
    let dir = tempfile::tempdir().unwrap();
    let img = mkntfs(dir.path(), 16 * MIB, None, &[]);
    let data = std::fs::read(&img).unwrap();
    // Shorter than the volume.
    let dev = MemoryDevice::new(8 * MIB);
    dev.write_at(&data[..8 * MIB as usize], 0, false).unwrap();
    assert!(matches!(
        probe_any(&dev).unwrap(),
        Probe::Unsupported { .. }
    ));
    // Random bytes over the first 64 KiB (boot sector, MFT start), keeping the OEM id.
    let mut rng = fastrand::Rng::with_seed(3);
    for round in 0..200 {
        let dev = MemoryDevice::new(16 * MIB);
        dev.write_at(&data, 0, false).unwrap();
        for _ in 0..rng.usize(1..16) {
            let at = if round % 2 == 0 {
                rng.u64(11..512)
            } else {
                rng.u64(512..64 * 1024)
            };
            dev.write_at(&[rng.u8(..)], at, false).unwrap();
        }
        if let Probe::Used(m) = probe_any(&dev).unwrap() {
            assert!(m.used.iter().all(|(s, e)| s < e && *e <= m.total_bytes));
        }
    }
}
