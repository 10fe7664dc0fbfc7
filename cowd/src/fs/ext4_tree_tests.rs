//! Tests of the ext4 file reader against filesystems made by e2fsprogs from a source tree
//! (`mke2fs -d`), with several feature sets; `debugfs` checks the block maps; hostile images
//! (bytes flipped in the metadata) must give errors, never a panic.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use super::*;
use crate::device::{FileDevice, FileOptions, MemoryDevice};
use crate::fs::tree::lookup;

fn sbin(tool: &str) -> Command {
    let mut c = Command::new(tool);
    c.env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin");
    c
}

fn run(c: &mut Command) -> String {
    let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(
        out.status.success(),
        "{c:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

/// A source tree with every kind of file the reader must handle.
fn source(dir: &Path, big_dir: usize, sparse: bool) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("d/sub/deeper")).unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    std::fs::write(src.join("tiny"), b"hello").unwrap();
    std::fs::write(src.join("d/small"), pattern(1, 3000)).unwrap();
    std::fs::write(src.join("d/hundred"), pattern(5, 100)).unwrap();
    std::fs::write(src.join("d/sub/large"), pattern(2, 5 << 20)).unwrap();
    std::fs::write(src.join("d/sub/deeper/odd"), pattern(3, 70_001)).unwrap();
    if sparse {
        // Sparse: 4 KiB of data at 3 MiB, a 8 MiB file.
        let f = std::fs::File::create(src.join("sparse")).unwrap();
        f.set_len(8 << 20).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &pattern(4, 4096), 3 << 20).unwrap();
    }
    std::os::unix::fs::symlink("d/sub/large", src.join("link")).unwrap();
    let long_target = format!("{}/target", "x".repeat(100));
    std::os::unix::fs::symlink(&long_target, src.join("longlink")).unwrap();
    std::fs::hard_link(src.join("d/small"), src.join("hard")).unwrap();
    std::fs::set_permissions(src.join("tiny"), std::fs::Permissions::from_mode(0o4751)).unwrap();
    std::os::unix::fs::chown(src.join("d/small"), Some(1234), Some(5678)).unwrap();
    let many = src.join("many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..big_dir {
        std::fs::write(
            many.join(format!("entry-with-a-longish-name-{i:05}")),
            i.to_string(),
        )
        .unwrap();
    }
    src
}

/// `mke2fs -d SRC` into a sparse image of `size` bytes with `args`; then `e2fsck -fyD`
/// (which indexes large directories as htrees).
fn image(dir: &Path, src: &Path, size: u64, args: &[&str]) -> PathBuf {
    let img = dir.join("fs.img");
    let _ = std::fs::remove_file(&img);
    std::fs::File::create(&img).unwrap().set_len(size).unwrap();
    let mut c = sbin("mke2fs");
    c.args(["-q", "-F"]).args(args).arg("-d").arg(src).arg(&img);
    run(&mut c);
    let out = sbin("e2fsck").arg("-fyD").arg(&img).output().unwrap();
    assert!(
        out.status.code().unwrap_or(8) < 4,
        "e2fsck -fyD: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    img
}

fn open(img: &Path) -> Ext4Tree {
    let dev = FileDevice::open(
        img,
        FileOptions {
            read_only: true,
            direct: false,
        },
    )
    .unwrap();
    Ext4Tree::open(Arc::new(dev)).unwrap()
}

fn read_file(t: &Ext4Tree, ino: Ino) -> Vec<u8> {
    let size = t.stat(ino).unwrap().size as usize;
    let mut out = vec![0u8; size];
    // In odd pieces, so reads cross block and extent boundaries.
    let mut at = 0;
    while at < size {
        let n = t
            .read_at(ino, at as u64, &mut out[at..(at + 77_777).min(size)])
            .unwrap();
        assert!(n > 0);
        at += n;
    }
    out
}

/// Every file, directory and link of `src` is in the tree with its content and metadata.
fn compare(t: &Ext4Tree, src: &Path) {
    let mut todo = vec![(PathBuf::new(), t.root())];
    let mut seen = 0;
    let mut inos: BTreeMap<u64, Ino> = BTreeMap::new();
    while let Some((rel, dir)) = todo.pop() {
        let entries = t.read_dir(dir).unwrap();
        let on_disk = std::fs::read_dir(src.join(&rel)).unwrap().count();
        let ours: Vec<_> = entries.iter().filter(|e| e.name != b"lost+found").collect();
        assert_eq!(ours.len(), on_disk, "entries of {rel:?}");
        for e in ours {
            let name = std::str::from_utf8(&e.name).unwrap();
            let p = rel.join(name);
            let meta = std::fs::symlink_metadata(src.join(&p)).unwrap();
            let st = t.stat(e.ino).unwrap();
            assert_eq!(st.kind, e.kind, "{p:?}");
            assert_eq!(st.mode, meta.mode() & 0o7777, "{p:?} mode");
            assert_eq!((st.uid, st.gid), (meta.uid(), meta.gid()), "{p:?} owner");
            assert_eq!(st.mtime.secs, meta.mtime(), "{p:?} mtime");
            assert_eq!(st.nlink as u64, meta.nlink(), "{p:?} nlink");
            // Hard links: one inode for one source inode.
            assert_eq!(
                *inos.entry(meta.ino()).or_insert(e.ino),
                e.ino,
                "{p:?} hard link"
            );
            match e.kind {
                Kind::Dir => todo.push((p, e.ino)),
                Kind::File => {
                    let (got, want) = (read_file(t, e.ino), std::fs::read(src.join(&p)).unwrap());
                    let first = got.iter().zip(&want).position(|(a, b)| a != b);
                    assert!(
                        got == want,
                        "{p:?}: {} bytes read, {} expected, first difference at {first:?}",
                        got.len(),
                        want.len()
                    );
                }
                Kind::Symlink => assert_eq!(
                    t.read_link(e.ino).unwrap(),
                    std::fs::read_link(src.join(&p))
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                    "{p:?}"
                ),
                k => panic!("{p:?}: unexpected {k:?}"),
            }
            seen += 1;
        }
    }
    assert!(seen > 10, "only {seen} files compared");
}

/// (file block, device block) pairs of `path`'s data, from `debugfs stat` (its BLOCKS or
/// EXTENTS list; indirect and extent-tree blocks, `(IND)`, `(ETB0)`..., are left out).
fn debugfs_blocks(img: &Path, path: &str) -> Vec<(u64, u64)> {
    let out = run(sbin("debugfs")
        .arg("-R")
        .arg(format!("stat {path}"))
        .arg(img));
    let list = out
        .split_once("BLOCKS:\n")
        .or_else(|| out.split_once("EXTENTS:\n"))
        .map(|(_, l)| l)
        .unwrap_or("");
    let range = |r: &str| -> (u64, u64) {
        match r.split_once('-') {
            Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
            None => (r.parse().unwrap(), r.parse().unwrap()),
        }
    };
    let mut pairs = Vec::new();
    for item in list
        .split([',', '\n'])
        .map(str::trim)
        .filter(|i| !i.is_empty())
    {
        let Some((logical, physical)) = item.strip_prefix('(').and_then(|i| i.split_once("):"))
        else {
            continue;
        };
        if logical.chars().any(|c| c.is_ascii_alphabetic()) || item.starts_with("TOTAL") {
            continue;
        }
        let ((l0, l1), (p0, _)) = (
            range(logical),
            range(physical.split_whitespace().next().unwrap()),
        );
        pairs.extend((0..=l1 - l0).map(|i| (l0 + i, p0 + i)));
    }
    pairs
}

fn our_blocks(t: &Ext4Tree, path: &str) -> Vec<(u64, u64)> {
    let ino = lookup(t, path.as_bytes()).unwrap();
    let bs = t.bs();
    let mut out = Vec::new();
    for e in t.extents(ino).unwrap() {
        let p = e.physical.unwrap();
        out.extend((0..e.len / bs).map(|i| (e.logical / bs + i, p / bs + i)));
    }
    out
}

fn check_layout(args: &[&str], big_dir: usize) {
    // e2fsprogs 1.47's `mke2fs -d` copies a sparse file into an inline_data filesystem with
    // the wrong size; that layout gets no sparse file.
    let sparse = !args.iter().any(|a| a.contains("inline_data"));
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path(), big_dir, sparse);
    let img = image(dir.path(), &src, 64 << 20, args);
    let t = open(&img);
    compare(&t, &src);
    let paths: &[&str] = if sparse {
        &["/d/sub/large", "/d/small", "/sparse", "/d/sub/deeper/odd"]
    } else {
        &["/d/sub/large", "/d/small", "/d/sub/deeper/odd"]
    };
    for &p in paths {
        let (ours, theirs) = (our_blocks(&t, p), debugfs_blocks(&img, p));
        let only_ours: Vec<_> = ours
            .iter()
            .filter(|b| !theirs.contains(b))
            .take(10)
            .collect();
        let only_theirs: Vec<_> = theirs
            .iter()
            .filter(|b| !ours.contains(b))
            .take(10)
            .collect();
        assert!(
            ours == theirs,
            "{p} blocks ({args:?}): {} ours, {} debugfs'; only ours {only_ours:?}, only debugfs' {only_theirs:?}",
            ours.len(),
            theirs.len()
        );
    }
    if sparse {
        // The hole of the sparse file is no extent.
        let ino = lookup(&t, b"/sparse").unwrap();
        let covered: u64 = t.extents(ino).unwrap().iter().map(|e| e.len).sum();
        assert!(covered <= 64 << 10, "sparse file maps {covered} bytes");
    } else {
        // Inline data: the file lives in its inode.
        let ino = lookup(&t, b"/d/hundred").unwrap();
        assert_eq!(t.extents(ino).unwrap()[0].physical, None);
    }
    assert!(matches!(
        lookup(&t, b"/d/nothing"),
        Err(TreeError::NotFound(_))
    ));
    assert!(matches!(
        lookup(&t, b"/tiny/x"),
        Err(TreeError::NotADirectory(_))
    ));
    let meta = t.metadata().unwrap();
    assert!(meta.iter().any(|m| m.what.starts_with("inode table")));
}

#[test]
fn ext4_default_features() {
    check_layout(&["-t", "ext4"], 2000);
}

#[test]
fn ext4_htree_directory_of_10000_entries() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path(), 10_000, true);
    let img = image(dir.path(), &src, 128 << 20, &["-t", "ext4"]);
    let dump = run(sbin("debugfs").arg("-R").arg("htree /many").arg(&img));
    assert!(
        dump.contains("Root node dump"),
        "not an htree: {}",
        &dump[..dump.len().min(400)]
    );
    let t = open(&img);
    let many = lookup(&t, b"/many").unwrap();
    let mut names: Vec<_> = t
        .read_dir(many)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 10_000);
}

#[test]
fn ext4_inline_data_1k_blocks_no_64bit() {
    check_layout(
        &[
            "-t",
            "ext4",
            "-b",
            "1024",
            "-O",
            "inline_data,^64bit",
            "-I",
            "256",
        ],
        300,
    );
}

#[test]
fn ext4_without_extents_uses_block_maps() {
    check_layout(&["-t", "ext4", "-O", "^extent,^flex_bg,^64bit"], 300);
}

#[test]
fn ext3_and_ext2_block_maps() {
    check_layout(&["-t", "ext3"], 100);
    check_layout(&["-t", "ext2", "-b", "2048"], 100);
}

#[test]
fn ext4_bigalloc_and_meta_bg() {
    check_layout(&["-t", "ext4", "-O", "bigalloc", "-C", "16384"], 100);
    check_layout(&["-t", "ext4", "-O", "meta_bg,^resize_inode"], 100);
}

#[test]
fn corrupted_metadata_gives_errors_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path(), 200, true);
    let img = image(
        dir.path(),
        &src,
        16 << 20,
        &["-t", "ext4", "-O", "^metadata_csum"],
    );
    let bytes = std::fs::read(&img).unwrap();
    // The metadata lives in the first 2 MiB (superblock, descriptors, tables, directories).
    for seed in 0..300u64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut b = bytes.clone();
        for _ in 0..rng.usize(1..64) {
            let at = rng.usize(1024..(2 << 20));
            b[at] = rng.u8(..);
        }
        let dev = MemoryDevice::new(b.len() as u64);
        dev.write_at(&b, 0, false).unwrap();
        let Ok(t) = Ext4Tree::open(Arc::new(dev)) else {
            continue;
        };
        let mut todo = vec![t.root()];
        let mut visited = 0;
        while let Some(d) = todo.pop() {
            visited += 1;
            if visited > 5000 {
                break; // a cycle: the walk is bounded by the caller
            }
            let Ok(entries) = t.read_dir(d) else { continue };
            for e in entries.into_iter().take(3000) {
                match e.kind {
                    Kind::Dir => todo.push(e.ino),
                    _ => {
                        let mut buf = vec![0u8; 1 << 16];
                        let _ = t.read_at(e.ino, 0, &mut buf);
                        let _ = t.extents(e.ino);
                        let _ = t.read_link(e.ino);
                        let _ = t.stat(e.ino);
                    }
                }
            }
        }
        let _ = t.metadata();
    }
}

/// mkfs.ext4's defaults for a small device (1 KiB blocks, resize inode, journal): the metadata
/// and the files' extents lie on the device and no block belongs to two owners, except the
/// names of one inode (hard links).
#[test]
fn small_default_filesystem_maps_metadata_and_files_apart() {
    let dir = tempfile::tempdir().unwrap();
    let src = source(dir.path(), 300, true);
    let img = image(dir.path(), &src, 256 << 20, &["-t", "ext4"]);
    let t = open(&img);
    let size = 256u64 << 20;
    let mut owned: Vec<(u64, u64, String)> = Vec::new();
    for m in t.metadata().unwrap() {
        assert!(m.start + m.len <= size, "{} beyond the device", m.what);
        owned.push((m.start, m.len, m.what));
    }
    let mut todo = vec![(String::new(), t.root())];
    let mut files = std::collections::HashSet::new();
    while let Some((path, d)) = todo.pop() {
        for e in t.read_dir(d).unwrap() {
            let p = format!("{path}/{}", String::from_utf8_lossy(&e.name));
            if e.kind == Kind::Dir {
                todo.push((p.clone(), e.ino));
            }
            if !files.insert(e.ino) {
                continue; // a second name of an inode
            }
            for x in t.extents(e.ino).unwrap() {
                if let Some(at) = x.physical {
                    assert!(at + x.len <= size, "{p} beyond the device");
                    owned.push((at, x.len, p.clone()));
                }
            }
        }
    }
    owned.sort();
    for w in owned.windows(2) {
        assert!(
            w[0].0 + w[0].1 <= w[1].0,
            "{} and {} overlap",
            w[0].2,
            w[1].2
        );
    }
}
