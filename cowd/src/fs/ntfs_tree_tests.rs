//! Tests of the NTFS file reader against volumes made by mkntfs and written through ntfs-3g
//! (package `ntfs-3g`; the tests need root for the FUSE mounts). The tree must read as a
//! read-only ntfs-3g mount of the same image shows it (names, kinds, record numbers, sizes,
//! contents, link targets, link counts, mtimes), its extents must be the runs `ntfsinfo`
//! lists, and damaged images must give errors, never a panic.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use super::*;
use crate::device::{Capabilities, DeviceError};
use crate::fs::open::open_tree;
use crate::fs::open_image;
use crate::fs::tree::{Time, lookup};

const MIB: u64 = 1 << 20;
/// Files in the large directory (an index with $INDEX_ALLOCATION blocks).
const MANY: usize = 2000;

fn tools() {
    for t in ["mkntfs", "ntfsinfo", "ntfs-3g"] {
        let found = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(t).is_file());
        assert!(
            found,
            "{t} is missing: these tests need ntfs-3g (apt-get install ntfs-3g)"
        );
    }
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "these tests need root (FUSE mounts)");
}

fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

fn mkntfs(dir: &Path, size: u64) -> PathBuf {
    mkntfs_with(dir, size, &[])
}

fn mkntfs_with(dir: &Path, size: u64, args: &[&str]) -> PathBuf {
    let img = dir.join("ntfs.img");
    std::fs::File::create(&img).unwrap().set_len(size).unwrap();
    let mut a = vec!["-q", "-F", "-Q"];
    a.extend_from_slice(args);
    a.push(s(&img));
    run("mkntfs", &a);
    img
}

/// Unmounts on drop, also when the test fails.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
    }
}

fn mount(img: &Path, mnt: &Path, ro: bool) -> Mounted {
    std::fs::create_dir_all(mnt).unwrap();
    let mut args = vec![s(img), s(mnt)];
    if ro {
        args.extend(["-o", "ro"]);
    }
    run("ntfs-3g", &args);
    Mounted(mnt.to_owned())
}

fn c_path(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let name = CString::new(name).unwrap();
    // SAFETY: both strings are NUL-terminated and `value` is valid for its length.
    let rc = unsafe {
        libc::setxattr(
            c_path(p).as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(rc, 0, "setxattr {name:?} on {}", p.display());
}

/// An `IO_REPARSE_TAG_SYMLINK` reparse point for a relative `target`.
fn symlink_reparse(target: &str) -> Vec<u8> {
    let path: Vec<u8> = target
        .replace('/', "\\")
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let n = path.len() as u16;
    let mut body = Vec::new();
    for v in [0, n, n, n] {
        body.extend(v.to_le_bytes());
    }
    body.extend(1u32.to_le_bytes()); // relative
    body.extend(&path);
    body.extend(&path);
    let mut v = TAG_SYMLINK.to_le_bytes().to_vec();
    v.extend((body.len() as u16).to_le_bytes());
    v.extend([0, 0]);
    v.extend(body);
    v
}

/// Interleaved files, half of them removed, then the first grown: it ends in pieces.
fn fragmented(dir: &Path) {
    std::fs::create_dir(dir).unwrap();
    for i in 0..6 {
        std::fs::write(dir.join(format!("a{i}")), pattern(100 + i, 65536)).unwrap();
        std::fs::write(dir.join(format!("b{i}")), pattern(200 + i, 65536)).unwrap();
    }
    for i in 0..6 {
        std::fs::remove_file(dir.join(format!("b{i}"))).unwrap();
    }
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("a0"))
        .unwrap();
    f.write_all_at(&pattern(300, 300_000), 65536).unwrap();
}

/// Writes the files the tests read, through ntfs-3g (`many` files in `many/`).
fn populate(img: &Path, mnt: &Path, many: usize) {
    let guard = mount(img, mnt, false);
    let w = |name: &str, data: &[u8]| std::fs::write(mnt.join(name), data).unwrap();
    for d in ["d/sub/deeper", "ディレクトリ", "many"] {
        std::fs::create_dir_all(mnt.join(d)).unwrap();
    }
    w("empty", b"");
    w("tiny", b"hello");
    w("d/hundred", &pattern(5, 100));
    w("d/small", &pattern(1, 3000));
    w("d/sub/large", &pattern(2, 5 << 20));
    w("d/sub/deeper/odd", &pattern(3, 70_001));
    w("ünïcödé 名前.txt", b"unicode");
    w("ディレクトリ/ファイル", &pattern(6, 1234));
    fragmented(&mnt.join("frag"));
    // Sparse: 4 KiB of data at 3 MiB in 8 MiB.
    let f = std::fs::File::create(mnt.join("sparse")).unwrap();
    f.set_len(8 * MIB).unwrap();
    f.write_all_at(&pattern(4, 4096), 3 * MIB).unwrap();
    drop(f);
    for i in 0..many {
        w(&format!("many/file-{i:04}"), i.to_string().as_bytes());
    }
    std::fs::hard_link(mnt.join("d/small"), mnt.join("hard")).unwrap();
    std::os::unix::fs::symlink("d/sub/large", mnt.join("link")).unwrap();
    let long = format!("{}/target", "x".repeat(300));
    std::os::unix::fs::symlink(&long, mnt.join("longlink")).unwrap();
    w("rplink", b"");
    set_xattr(
        &mnt.join("rplink"),
        "system.ntfs_reparse_data",
        &symlink_reparse("d/small"),
    );
    w("readonly", b"read only");
    set_xattr(
        &mnt.join("readonly"),
        "system.ntfs_attrib",
        &0x21u32.to_le_bytes(),
    );
    // SAFETY: NUL-terminated paths.
    unsafe {
        assert_eq!(libc::mkfifo(c_path(&mnt.join("fifo")).as_ptr(), 0o644), 0);
        let dev = libc::makedev(4, 5);
        assert_eq!(
            libc::mknod(
                c_path(&mnt.join("tty")).as_ptr(),
                libc::S_IFCHR | 0o644,
                dev
            ),
            0
        );
    }
    drop(guard);
}

/// What a walk sees of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    ino: u64,
    kind: Kind,
    /// `None` for directories (ntfs-3g gives them their index size).
    size: Option<u64>,
    nlink: u32,
    data: Option<Vec<u8>>,
    target: Option<Vec<u8>>,
    mtime: Time,
}

/// The whole content of file `ino`, read in odd-sized pieces.
fn read_all(t: &dyn FileTree, ino: Ino, size: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; (MIB + 3) as usize];
    loop {
        let n = t.read_at(ino, out.len() as u64, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(out.len() as u64, size, "file record {ino}");
    out
}

fn walk_tree(t: &dyn FileTree) -> BTreeMap<Vec<u8>, Seen> {
    let mut out = BTreeMap::new();
    let mut todo = vec![(Vec::new(), t.root())];
    while let Some((path, dir)) = todo.pop() {
        for e in t.read_dir(dir).unwrap() {
            let mut p = path.clone();
            p.push(b'/');
            p.extend_from_slice(&e.name);
            let st = t.stat(e.ino).unwrap();
            assert_eq!(st.kind, e.kind, "{}", String::from_utf8_lossy(&p));
            assert_eq!((st.uid, st.gid), (0, 0));
            let data = (st.kind == Kind::File).then(|| read_all(t, e.ino, st.size));
            let target = (st.kind == Kind::Symlink).then(|| t.read_link(e.ino).unwrap());
            if st.kind == Kind::Dir {
                todo.push((p.clone(), e.ino));
            }
            let size = (st.kind != Kind::Dir).then_some(st.size);
            let seen = Seen {
                ino: e.ino,
                kind: st.kind,
                size,
                nlink: st.nlink,
                data,
                target,
                mtime: st.mtime,
            };
            assert!(out.insert(p, seen).is_none(), "a name listed twice");
        }
    }
    out
}

fn walk_mount(root: &Path, skip: &[&str]) -> BTreeMap<Vec<u8>, Seen> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_owned()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap();
            if skip.iter().any(|s| rel == Path::new(s)) {
                continue;
            }
            let md = std::fs::symlink_metadata(&p).unwrap();
            let ft = md.file_type();
            use std::os::unix::fs::FileTypeExt;
            let kind = match () {
                _ if ft.is_dir() => Kind::Dir,
                _ if ft.is_symlink() => Kind::Symlink,
                _ if ft.is_fifo() => Kind::Fifo,
                _ if ft.is_char_device() => Kind::CharDevice,
                _ => Kind::File,
            };
            if kind == Kind::Dir {
                todo.push(p.clone());
            }
            let seen = Seen {
                ino: md.ino(),
                kind,
                size: (kind != Kind::Dir).then_some(md.len()),
                nlink: md.nlink() as u32,
                data: (kind == Kind::File).then(|| std::fs::read(&p).unwrap()),
                target: (kind == Kind::Symlink).then(|| {
                    std::fs::read_link(&p)
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec()
                }),
                mtime: Time {
                    secs: md.mtime(),
                    nanos: md.mtime_nsec() as u32,
                },
            };
            let mut key = b"/".to_vec();
            key.extend_from_slice(rel.as_os_str().as_bytes());
            out.insert(key, seen);
        }
    }
    out
}

fn open(img: &Path) -> NtfsTree {
    NtfsTree::open(Arc::new(open_image(img, true))).unwrap()
}

/// Walks the tree of `img` and checks it against a read-only ntfs-3g mount of it.
fn same_as_ntfs3g(dir: &Path, img: &Path) -> (NtfsTree, BTreeMap<Vec<u8>, Seen>) {
    let t = open(img);
    let got = walk_tree(&t);
    // ntfs-3g reads a reparse-point link back only when it resolves it at once; checked below.
    let guard = mount(img, &dir.join("ro"), true);
    let want = walk_mount(&guard.0, &["rplink"]);
    drop(guard);
    let mut got_but_rp = got.clone();
    let rp = got_but_rp.remove(&b"/rplink"[..]).expect("rplink listed");
    assert_eq!(
        got_but_rp.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (path, w) in &want {
        assert_eq!(&got[path], w, "{}", String::from_utf8_lossy(path));
    }
    assert_eq!(
        (rp.kind, rp.target.as_deref()),
        (Kind::Symlink, Some(&b"d/small"[..]))
    );
    (t, got)
}

#[test]
fn ntfs_tree_reads_as_ntfs3g_shows_it() {
    tools();
    let dir = tempfile::tempdir().unwrap();
    let img = mkntfs(dir.path(), 64 * MIB);
    populate(&img, &dir.path().join("mnt"), MANY);
    let (t, got) = same_as_ntfs3g(dir.path(), &img);
    // What the scenario wrote, beyond agreeing with ntfs-3g.
    let at = |p: &str| &got[p.as_bytes()];
    assert_eq!(at("/hard").ino, at("/d/small").ino);
    assert_eq!(at("/hard").nlink, 2);
    assert_eq!(at("/link").target.as_deref(), Some(&b"d/sub/large"[..]));
    assert_eq!(at("/longlink").size, Some(307));
    assert_eq!(at("/ディレクトリ/ファイル").data, Some(pattern(6, 1234)));
    assert_eq!(at("/d/sub/large").data, Some(pattern(2, 5 << 20)));
    assert_eq!(at("/fifo").kind, Kind::Fifo);
    let tty = t.stat(at("/tty").ino).unwrap();
    assert_eq!(
        (tty.kind, tty.rdev),
        (Kind::CharDevice, libc::makedev(4, 5))
    );
    assert_eq!(t.stat(at("/readonly").ino).unwrap().mode, 0o444);
    assert_eq!(t.stat(at("/tiny").ino).unwrap().mode, 0o644);
    assert_eq!(t.stat(at("/d").ino).unwrap().mode, 0o755);
    assert_eq!(
        got.keys().filter(|k| k.starts_with(b"/many/")).count(),
        MANY
    );
    assert!(
        !got.keys().any(|k| k.starts_with(b"/$")),
        "system files are hidden"
    );
    // A path walk finds the same files.
    let path = "/ディレクトリ/ファイル".as_bytes();
    assert_eq!(lookup(&t, path).unwrap(), got[path].ino);
    assert!(matches!(
        lookup(&t, b"/d/nothing"),
        Err(TreeError::NotFound(_))
    ));
}

#[test]
fn ntfs_tree_small_and_large_clusters() {
    tools();
    // 512-byte clusters put a 1 KiB record across two runs of the MFT when it is fragmented.
    for (size, cluster) in [(32 * MIB, "512"), (128 * MIB, "65536")] {
        let dir = tempfile::tempdir().unwrap();
        let img = mkntfs_with(dir.path(), size, &["-c", cluster]);
        populate(&img, &dir.path().join("mnt"), 300);
        let (t, _) = same_as_ntfs3g(dir.path(), &img);
        assert_eq!(t.cluster().to_string(), cluster);
    }
}

/// The runs ntfsinfo lists for the unnamed $DATA of `what` (`-F path` or `-i record`):
/// (VCN, LCN or a hole, clusters).
fn ntfsinfo_runs(img: &Path, what: &[&str]) -> Vec<(u64, Option<u64>, u64)> {
    let mut args = what.to_vec();
    args.extend(["-v", s(img)]);
    let text = run("ntfsinfo", &args);
    let hex = |f: &str| u64::from_str_radix(f.trim_start_matches("0x"), 16).unwrap();
    let data = text
        .split("Dumping attribute")
        .find(|a| a.starts_with(" $DATA") && a.contains("Name length:\t\t 0 "))
        .unwrap_or_else(|| panic!("no $DATA in ntfsinfo {what:?}"));
    data.lines()
        .skip_while(|l| !l.contains("Runlist:"))
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .take_while(|f| f.len() == 3 && f[0].starts_with("0x"))
        .map(|f| (hex(f[0]), (f[1] != "<HOLE>").then(|| hex(f[1])), hex(f[2])))
        .collect()
}

/// The extents of `ino` are ordered, inside the file, and hold its bytes on the device;
/// what they do not cover reads as zeroes.
fn check_extents(t: &NtfsTree, image: &[u8], ino: Ino) -> Vec<FileExtent> {
    let st = t.stat(ino).unwrap();
    let content = read_all(t, ino, st.size);
    let ext = t.extents(ino).unwrap();
    let mut covered = vec![false; content.len()];
    let mut at = 0;
    for e in &ext {
        assert!(
            e.logical >= at && e.len > 0 && e.logical + e.len <= st.size,
            "{ext:?}"
        );
        at = e.logical + e.len;
        let range = e.logical as usize..(e.logical + e.len) as usize;
        covered[range.clone()].fill(true);
        match e.physical {
            Some(p) if !e.unwritten => {
                assert!(image[p as usize..(p + e.len) as usize] == content[range]);
            }
            _ if e.unwritten => assert!(content[range].iter().all(|&b| b == 0)),
            _ => assert_eq!((e.logical, e.len, ext.len()), (0, st.size, 1), "resident"),
        }
    }
    assert!(
        content.iter().zip(&covered).all(|(&b, &c)| c || b == 0),
        "a hole with data"
    );
    ext
}

#[test]
fn ntfs_tree_extents_are_the_runs() {
    tools();
    let dir = tempfile::tempdir().unwrap();
    let img = mkntfs(dir.path(), 64 * MIB);
    populate(&img, &dir.path().join("mnt"), 0);
    let t = open(&img);
    let image = std::fs::read(&img).unwrap();
    let cl = t.cluster();
    let meta = t.metadata().unwrap();
    for path in [
        "/d/sub/large",
        "/frag/a0",
        "/sparse",
        "/d/small",
        "/tiny",
        "/empty",
    ] {
        let ino = lookup(&t, path.as_bytes()).unwrap();
        let ext = check_extents(&t, &image, ino);
        let size = t.stat(ino).unwrap().size;
        if ext.first().is_some_and(|e| e.physical.is_none()) || size == 0 {
            // Resident: the bytes are in the file's record, inside $MFT.
            let (at, len) = t.record(ino).unwrap().unwrap();
            let in_mft =
                |r: &MetaRegion| r.what == "$MFT" && r.start <= at && at + len <= r.start + r.len;
            assert!(meta.iter().any(in_mft), "{path}: record at {at}");
            continue;
        }
        let want: Vec<(u64, u64, u64)> = ntfsinfo_runs(&img, &["-F", path])
            .into_iter()
            .filter_map(|(vcn, lcn, n)| Some((vcn * cl, lcn? * cl, (n * cl).min(size - vcn * cl))))
            .collect();
        let got: Vec<(u64, u64, u64)> = ext
            .iter()
            .map(|e| (e.logical, e.physical.unwrap(), e.len))
            .collect();
        assert_eq!(got, want, "{path}");
        if path == "/frag/a0" {
            assert!(got.len() > 1, "the fragmented file has one run");
        }
        if path == "/sparse" {
            assert_eq!(got, [(3 * MIB, got[0].1, 4096)]);
        }
    }
    // Metadata: the system files, inside the device, clear of every file's data.
    for name in [
        "$MFT",
        "$MFTMirr",
        "$LogFile",
        "$Bitmap",
        "$UpCase",
        "$AttrDef",
        "$Boot",
        "$Secure:$SDS",
    ] {
        assert!(meta.iter().any(|r| r.what == name), "no {name} in {meta:?}");
    }
    assert_eq!(meta.iter().find(|r| r.what == "$Boot").unwrap().start, 0);
    let mft: Vec<(u64, u64, u64)> = meta
        .iter()
        .filter(|r| r.what == "$MFT")
        .map(|r| (r.start, r.len, 0))
        .collect();
    let want: Vec<(u64, u64, u64)> = ntfsinfo_runs(&img, &["-i", "0"])
        .into_iter()
        .map(|(_, lcn, n)| (lcn.unwrap() * cl, n * cl, 0))
        .collect();
    assert_eq!(mft, want);
    for path in [
        "/d/sub/large",
        "/frag/a0",
        "/frag/a3",
        "/sparse",
        "/d/small",
    ] {
        let ino = lookup(&t, path.as_bytes()).unwrap();
        for e in t.extents(ino).unwrap() {
            let p = e.physical.unwrap();
            let overlap = |r: &&MetaRegion| r.start < p + e.len && p < r.start + r.len;
            assert!(meta.iter().find(overlap).is_none(), "{path} {e:?}");
        }
    }
    assert!(
        meta.iter()
            .all(|r| r.len > 0 && r.start + r.len <= image.len() as u64)
    );
}

#[test]
fn ntfs_tree_in_an_mbr_partition() {
    tools();
    let dir = tempfile::tempdir().unwrap();
    let fs = mkntfs(dir.path(), 16 * MIB);
    let guard = mount(&fs, &dir.path().join("mnt"), false);
    std::fs::write(guard.0.join("hello"), b"hello, partition").unwrap();
    drop(guard);
    // A disk with one partition at 1 MiB holding the volume.
    let disk = dir.path().join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(20 * MIB)
        .unwrap();
    let mut sfdisk = Command::new("sfdisk")
        .args(["-q", s(&disk)])
        .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let table = format!("label: dos\nstart=2048, size={}, type=7\n", 16 * MIB / 512);
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(table.as_bytes())
        .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    f.write_all_at(&std::fs::read(&fs).unwrap(), MIB).unwrap();
    drop(f);
    let opened = open_tree(Arc::new(open_image(&disk, true)), None).unwrap();
    assert_eq!((opened.partition, opened.offset), (Some(1), MIB));
    let t = opened.tree.as_ref();
    assert_eq!(t.filesystem(), "ntfs");
    let ino = lookup(t, b"/hello").unwrap();
    assert_eq!(read_all(t, ino, 16), b"hello, partition");
    // The bare volume is found too, and a zeroed device is nobody's.
    assert_eq!(
        open_tree(Arc::new(open_image(&fs, true)), None)
            .unwrap()
            .offset,
        0
    );
    let zero = Image(Vec::from([0u8; 4096]));
    assert!(matches!(
        NtfsTree::open(Arc::new(zero)),
        Err(TreeError::Unknown)
    ));
}

/// A device over bytes in memory (a damaged copy of an image).
#[derive(Debug)]
struct Image(Vec<u8>);

impl BlockDevice for Image {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            read_only: true,
            ..Capabilities::default()
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DeviceError> {
        let at = offset as usize;
        buf.copy_from_slice(&self.0[at..at + buf.len()]);
        Ok(())
    }
}

/// Every operation on every file of `t` (bounded); errors are fine, panics are not.
fn walk_everything(t: &dyn FileTree) {
    let _ = t.metadata();
    let mut todo = vec![t.root()];
    let mut visited = 0;
    let mut buf = vec![0u8; 64 << 10];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = t.read_dir(dir) else {
            continue;
        };
        for e in entries {
            visited += 1;
            if visited > 500 {
                return;
            }
            let _ = t.record(e.ino);
            let _ = t.extents(e.ino);
            let _ = t.read_link(e.ino);
            if let Ok(st) = t.stat(e.ino) {
                let _ = t.read_at(e.ino, 0, &mut buf);
                let _ = t.read_at(e.ino, st.size.saturating_sub(5000), &mut buf);
            }
            if e.kind == Kind::Dir {
                todo.push(e.ino);
            }
        }
    }
}

#[test]
fn ntfs_tree_damaged_images_never_panic() {
    tools();
    let dir = tempfile::tempdir().unwrap();
    let img = mkntfs(dir.path(), 16 * MIB);
    let guard = mount(&img, &dir.path().join("mnt"), false);
    let mnt = guard.0.clone();
    std::fs::create_dir(mnt.join("d")).unwrap();
    for i in 0..120 {
        std::fs::write(
            mnt.join(format!("d/f{i}")),
            pattern(i, (i * 997) as usize % 9000),
        )
        .unwrap();
    }
    fragmented(&mnt.join("frag"));
    std::os::unix::fs::symlink("d/f1", mnt.join("link")).unwrap();
    drop(guard);
    let data = std::fs::read(&img).unwrap();
    let t = NtfsTree::open(Arc::new(Image(data.clone()))).unwrap();
    walk_everything(&t);
    // Where the metadata is: the boot sector, the first MFT records, the index blocks of d.
    let mft = t.record(0).unwrap().unwrap().0 as usize;
    let d = lookup(&t, b"/d").unwrap();
    let index = t.node(d).unwrap();
    let blocks: Vec<usize> = index
        .attrs
        .iter()
        .filter_map(|a| match &a.value {
            Value::NonResident(p) if a.ty == ATTR_INDEX_ALLOCATION => Some(p.runs.clone()),
            _ => None,
        })
        .flatten()
        .filter_map(|r| r.lcn.map(|l| (l * t.cluster()) as usize))
        .collect();
    assert!(!blocks.is_empty(), "d has index blocks");
    let mut rng = fastrand::Rng::with_seed(7);
    let (mut opened, mut failed) = (0, 0);
    for round in 0..300 {
        let mut bytes = data.clone();
        let (base, span) = match round % 4 {
            0 => (0, 512),
            1 => (mft, 16 * 1024),
            2 => (mft + 16 * 1024, 64 * 1024),
            _ => (blocks[rng.usize(..blocks.len())], 4096),
        };
        for _ in 0..rng.usize(1..12) {
            bytes[base + rng.usize(..span)] = rng.u8(..);
        }
        if round % 10 == 9 {
            bytes.truncate(rng.usize(512..data.len()));
        }
        match NtfsTree::open(Arc::new(Image(bytes))) {
            Ok(t) => {
                opened += 1;
                walk_everything(&t);
            }
            Err(TreeError::Corrupt { .. }) | Err(TreeError::Unknown) => failed += 1,
            Err(e) => panic!("round {round}: {e}"),
        }
    }
    assert!(
        opened > 100 && failed > 10,
        "opened {opened}, refused {failed}"
    );
}

#[test]
fn ntfs_tree_compressed_files_are_unsupported() {
    tools();
    let dir = tempfile::tempdir().unwrap();
    let img = mkntfs(dir.path(), 16 * MIB);
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    run("ntfs-3g", &[s(&img), s(&mnt), "-o", "compression"]);
    let guard = Mounted(mnt.clone());
    // Files made in a directory marked compressed are compressed.
    std::fs::create_dir(mnt.join("packed")).unwrap();
    set_xattr(
        &mnt.join("packed"),
        "system.ntfs_attrib",
        &0x810u32.to_le_bytes(),
    );
    std::fs::write(mnt.join("packed/f"), b"abc".repeat(100_000)).unwrap();
    drop(guard);
    let t = open(&img);
    let ino = lookup(&t, b"/packed/f").unwrap();
    assert_eq!(t.stat(ino).unwrap().size, 300_000);
    let refused = |r: Result<(), TreeError>| matches!(r, Err(TreeError::Unsupported { feature, .. }) if feature == "compressed files");
    assert!(refused(t.read_at(ino, 0, &mut [0u8; 10]).map(drop)));
    assert!(refused(t.extents(ino).map(drop)));
}

#[test]
fn reparse_and_interix_links_parse() {
    assert_eq!(
        attrs::reparse_target(&symlink_reparse("a/b c")).unwrap(),
        Some(b"a/b c".to_vec())
    );
    let mut other = symlink_reparse("x");
    other[..4].copy_from_slice(&0x8000_0017u32.to_le_bytes());
    assert_eq!(attrs::reparse_target(&other).unwrap(), None);
    let mut short = symlink_reparse("abc");
    short.truncate(20);
    assert!(attrs::reparse_target(&short).is_err());
    let mut chr = b"IntxCHR\0".to_vec();
    chr.extend(4u64.to_le_bytes());
    chr.extend(5u64.to_le_bytes());
    assert_eq!(attrs::interix(&chr), Some(Interix::Char(4, 5)));
    assert_eq!(attrs::interix(b"IntxLNK\x01a\0"), Some(Interix::Symlink));
    assert_eq!(attrs::interix(b"IntxBLK\0"), None, "cut short");
}
