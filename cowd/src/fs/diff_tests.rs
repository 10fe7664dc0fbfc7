//! Tests of [`diff`] against a full comparison of two ext4 trees: an image made by
//! `mke2fs -d`, and a copy changed with `debugfs -w` (files added, removed, rewritten in place,
//! chmod, retargeted links, a file turned into a directory, a tree removed). The full
//! comparison reads every file of both; `diff` must find the same changes reading a small
//! part of the images.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use super::*;
use crate::device::{FileDevice, FileOptions};
use crate::fs::Counting;
use crate::fs::ext4::tree::Ext4Tree;
use crate::fs::tree::Time;

const PIECE: u64 = 64 << 10;

fn run(c: &mut Command) -> String {
    c.env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin");
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

/// A tree with `files` small files spread over directories, a large file, links.
fn source(dir: &Path, files: usize) -> PathBuf {
    let src = dir.join("src");
    for i in 0..files {
        let d = src.join(format!("dir{}", i % 20));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("f{i}")), pattern(i as u64, 100 + i % 5000)).unwrap();
    }
    std::fs::create_dir_all(src.join("keep/deep/er")).unwrap();
    std::fs::write(src.join("keep/deep/er/x"), b"x").unwrap();
    std::fs::write(src.join("keep/tiny"), b"tiny").unwrap();
    std::fs::write(src.join("large"), pattern(7, 3 << 20)).unwrap();
    std::fs::write(src.join("same"), pattern(8, 50_000)).unwrap();
    std::os::unix::fs::symlink("large", src.join("link")).unwrap();
    std::fs::hard_link(src.join("keep/tiny"), src.join("hard")).unwrap();
    src
}

fn image(dir: &Path, src: &Path, size: u64) -> PathBuf {
    let img = dir.join("old.img");
    std::fs::File::create(&img).unwrap().set_len(size).unwrap();
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-d"])
        .arg(src)
        .arg(&img));
    img
}

fn debugfs(img: &Path, cmds: &str) {
    let script = img.with_extension("cmds");
    std::fs::write(&script, cmds).unwrap();
    run(Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&script)
        .arg(img));
}

fn open(img: &Path) -> Arc<Counting> {
    let dev = FileDevice::open(
        img,
        FileOptions {
            read_only: true,
            direct: false,
        },
    )
    .unwrap();
    Arc::new(Counting::new(dev))
}

/// Ranges of `PIECE` bytes where the two images differ.
fn changed(a: &Path, b: &Path) -> Ranges {
    let (fa, fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let len = fa.metadata().unwrap().len();
    let (mut ba, mut bb) = (vec![0u8; PIECE as usize], vec![0u8; PIECE as usize]);
    let mut out = Vec::new();
    let mut at = 0;
    while at < len {
        let n = PIECE.min(len - at) as usize;
        fa.read_exact_at(&mut ba[..n], at).unwrap();
        fb.read_exact_at(&mut bb[..n], at).unwrap();
        if ba[..n] != bb[..n] {
            out.push((at, at + n as u64));
        }
        at += n as u64;
    }
    Ranges::new(out)
}

/// What the full comparison looks at, for one path.
#[derive(Debug, PartialEq, Eq)]
struct Full {
    kind: Kind,
    owner: (u32, u32, u32),
    mtime: Time,
    rdev: u64,
    /// Contents of a file, target of a link.
    data: Vec<u8>,
}

fn everything(t: &dyn FileTree) -> BTreeMap<Vec<u8>, Full> {
    let mut out = BTreeMap::new();
    let mut todo = vec![(Vec::new(), t.root())];
    while let Some((p, ino)) = todo.pop() {
        for e in t.read_dir(ino).unwrap() {
            let q = join(&p, &e.name);
            let st = t.stat(e.ino).unwrap();
            let data = match st.kind {
                Kind::File => {
                    let mut b = vec![0u8; st.size as usize];
                    assert_eq!(read_full(t, e.ino, 0, &mut b).unwrap(), b.len());
                    b
                }
                Kind::Symlink => t.read_link(e.ino).unwrap(),
                Kind::Dir => {
                    todo.push((q.clone(), e.ino));
                    Vec::new()
                }
                _ => Vec::new(),
            };
            let full = Full {
                kind: st.kind,
                owner: (st.mode, st.uid, st.gid),
                mtime: st.mtime,
                rdev: st.rdev,
                data,
            };
            out.insert(q, full);
        }
    }
    out
}

/// The changes a comparison of every file finds.
fn by_full_comparison(old: &dyn FileTree, new: &dyn FileTree) -> Vec<Changed> {
    let (mut a, b) = (everything(old), everything(new));
    let mut out = Vec::new();
    for (p, y) in b {
        let change = match a.remove(&p) {
            None => Some(Change::Added),
            Some(x) if x.kind != y.kind => Some(Change::Type),
            Some(x) if x.kind == Kind::Dir => (x.owner != y.owner).then_some(Change::Metadata),
            Some(x) if x.data != y.data => Some(Change::Modified),
            Some(x) if x.owner != y.owner || x.mtime != y.mtime || x.rdev != y.rdev => {
                Some(Change::Metadata)
            }
            Some(_) => None,
        };
        if let Some(change) = change {
            out.push(Changed {
                path: p,
                change,
                kind: y.kind,
            });
        }
    }
    for (p, x) in a {
        out.push(Changed {
            path: p,
            change: Change::Removed,
            kind: x.kind,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

fn shown(c: &[Changed]) -> Vec<String> {
    c.iter()
        .map(|c| format!("{:?} {}", c.change, String::from_utf8_lossy(&c.path)))
        .collect()
}

/// Two generations: `old.img` and a copy changed by `cmds`; returns the images.
fn generations(dir: &Path, files: usize, size: u64, cmds: &str) -> (PathBuf, PathBuf) {
    let src = source(dir, files);
    let old = image(dir, &src, size);
    let new = dir.join("new.img");
    std::fs::copy(&old, &new).unwrap();
    debugfs(&new, cmds);
    (old, new)
}

#[test]
fn diff_agrees_with_a_full_comparison() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host");
    std::fs::write(&host, pattern(99, 20_000)).unwrap();
    let h = host.display();
    let cmds = format!(
        "write {h} added\n\
         mkdir newdir\n\
         cd newdir\n\
         write {h} inside\n\
         cd /\n\
         rm dir3/f3\n\
         sif same mode 0100600\n\
         sif dir1/f1 mtime 20200101120000\n\
         rm link\n\
         symlink link same\n\
         rm keep/tiny\n\
         mkdir keep/tiny\n\
         rm keep/deep/er/x\n\
         rmdir keep/deep/er\n\
         rmdir keep/deep\n\
         sif dir5 mode 040700\n"
    );
    let (old, new) = generations(dir.path(), 200, 64 << 20, &cmds);
    // `large` rewritten in place, as an application writing into its file would: same
    // blocks, new data, the inode's times updated.
    let t = Ext4Tree::open(open(&new)).unwrap();
    let large = crate::fs::tree::lookup(&t, b"/large").unwrap();
    let at = t.extents(large).unwrap()[0].physical.unwrap() + (1 << 20);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&new)
        .unwrap()
        .write_all_at(&pattern(11, 8192), at)
        .unwrap();
    debugfs(&new, "sif large mtime 20300101000000\n");

    let (a, b) = (
        Ext4Tree::open(open(&old)).unwrap(),
        Ext4Tree::open(open(&new)).unwrap(),
    );
    let expected = by_full_comparison(&a, &b);
    let got = diff(&a, &b, &changed(&old, &new)).unwrap();
    assert_eq!(shown(&got), shown(&expected));
    for must in [
        "Added /added",
        "Added /newdir",
        "Added /newdir/inside",
        "Removed /dir3/f3",
        "Metadata /same",
        "Metadata /dir1/f1",
        "Modified /link",
        "Type /keep/tiny",
        "Removed /keep/deep",
        "Metadata /dir5",
        "Modified /large",
    ] {
        assert!(shown(&got).iter().any(|g| g == must), "{must} in {got:#?}");
    }
    // Everything changed: the same answer, reading everything.
    let all = Ranges::new(vec![(0, 64 << 20)]);
    assert_eq!(shown(&diff(&a, &b, &all).unwrap()), shown(&expected));
}

#[test]
fn unchanged_generations_differ_in_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (old, _) = generations(dir.path(), 50, 32 << 20, "");
    let (a, b) = (
        Ext4Tree::open(open(&old)).unwrap(),
        Ext4Tree::open(open(&old)).unwrap(),
    );
    assert!(diff(&a, &b, &Ranges::default()).unwrap().is_empty());
    let all = Ranges::new(vec![(0, 32 << 20)]);
    assert!(diff(&a, &b, &all).unwrap().is_empty());
}

#[test]
fn a_small_change_reads_a_small_part_of_a_large_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host");
    std::fs::write(&host, pattern(5, 4096)).unwrap();
    let cmds = format!(
        "cd dir7\nwrite {} new\ncd /\nsif dir9/f9 mode 0100640\n",
        host.display()
    );
    let (old, new) = generations(dir.path(), 2_000, 512 << 20, &cmds);
    let (da, db) = (open(&old), open(&new));
    let (a, b) = (
        Ext4Tree::open(da.clone()).unwrap(),
        Ext4Tree::open(db.clone()).unwrap(),
    );
    let got = diff(&a, &b, &changed(&old, &new)).unwrap();
    assert_eq!(shown(&got), ["Added /dir7/new", "Metadata /dir9/f9"]);
    let read = da.bytes_read() + db.bytes_read();
    let data: u64 = everything(&a).values().map(|f| f.data.len() as u64).sum();
    // The directories and a few inode table blocks, not the files' data.
    assert!(
        read * 4 < data,
        "read {read} bytes of two images holding {data} bytes of files"
    );
}

#[test]
fn ranges_merge_and_overlap() {
    let r = Ranges::new(vec![(10, 20), (0, 5), (18, 30), (40, 40), (5, 6)]);
    assert_eq!(r, Ranges(vec![(0, 6), (10, 30)]));
    assert_eq!(r.bytes(), 26);
    assert!(r.overlaps(0, 1));
    assert!(r.overlaps(5, 1));
    assert!(!r.overlaps(6, 4));
    assert!(r.overlaps(6, 5));
    assert!(r.overlaps(29, 100));
    assert!(!r.overlaps(30, 100));
    assert!(!r.overlaps(u64::MAX - 1, 10));
    assert!(!Ranges::default().overlaps(0, u64::MAX));
}
