//! Files of a generation without restoring the device: `cowctl ls`, `cat`, `map`,
//! `restore --path`, `mount` and `diff` on an ext4 made by mkfs.ext4 and written through the kernel
//! (nbdfuse + loop), compared with the source files, with `filefrag` on the mounted
//! filesystem, and (diff) with a full comparison of two extracted generations.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cowd::control::api::RestoreState;
use cowd::control::api::{Change, Diff, FileMap, Listing};
use cowd_tests::cli::{failed, ok, path_str, start};
use cowd_tests::files::require_root_and;
use cowd_tests::mounts::Attached;
use cowd_tests::repo::Ctl;
use cowd_tests::{Daemon, MIB, bin, pattern};

/// (file offset, physical byte offset, length) of `file`'s extents, from `filefrag -v` in
/// units of the filesystem's block size `bs` (mkfs.ext4 picks 1 KiB blocks for small devices;
/// other units would round the offsets).
fn filefrag(file: &Path, bs: u64) -> Vec<(u64, u64, u64)> {
    let out = Command::new("filefrag")
        .arg("-v")
        .arg(format!("-b{bs}"))
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "filefrag: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut extents = Vec::new();
    for line in text.lines() {
        // "   0:        0..     767:      34816..     35583:    768:             last,eof"
        let parts: Vec<&str> = line.split(':').map(str::trim).collect();
        if parts.len() < 4 || parts[0].parse::<u64>().is_err() {
            continue;
        }
        let range = |s: &str| -> (u64, u64) {
            let (a, b) = s.split_once("..").unwrap();
            (a.trim().parse().unwrap(), b.trim().parse().unwrap())
        };
        let ((l0, _), (p0, p1)) = (range(parts[1]), range(parts[2]));
        extents.push((l0 * bs, p0 * bs, (p1 - p0 + 1) * bs));
    }
    extents
}

/// What a full comparison looks at of one path: kind (`d`, `l`, `f`), mode, uid, gid, and for
/// files and links the modification time (seconds, nanoseconds) and contents or target.
type Seen = (char, u32, u32, u32, i64, i64, Vec<u8>);

/// Every path under `root`.
fn tree_of(root: &Path) -> BTreeMap<String, Seen> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let name = p.strip_prefix(root).unwrap().display().to_string();
            let (kind, data, times) = if m.is_dir() {
                todo.push(p.clone());
                ('d', Vec::new(), (0, 0))
            } else if m.file_type().is_symlink() {
                let t = fs::read_link(&p).unwrap();
                (
                    'l',
                    t.display().to_string().into_bytes(),
                    (m.mtime(), m.mtime_nsec()),
                )
            } else {
                ('f', fs::read(&p).unwrap(), (m.mtime(), m.mtime_nsec()))
            };
            let entry = (
                kind,
                m.mode() & 0o7777,
                m.uid(),
                m.gid(),
                times.0,
                times.1,
                data,
            );
            out.insert(format!("/{name}"), entry);
        }
    }
    out
}

/// The changes between two extracted trees, as `cowctl diff --json` names them.
fn full_comparison(old: &Path, new: &Path) -> Vec<(String, Change)> {
    let (mut a, b) = (tree_of(old), tree_of(new));
    let mut out = Vec::new();
    for (p, y) in b {
        let change = match a.remove(&p) {
            None => Some(Change::Added),
            Some(x) if x.0 != y.0 => Some(Change::Type),
            Some(x) if x.0 == 'd' => {
                ((x.1, x.2, x.3) != (y.1, y.2, y.3)).then_some(Change::Metadata)
            }
            Some(x) if x.6 != y.6 => Some(Change::Modified),
            Some(x) if x != y => Some(Change::Metadata),
            Some(_) => None,
        };
        out.extend(change.map(|c| (p, c)));
    }
    out.extend(a.into_keys().map(|p| (p, Change::Removed)));
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn is_mounted(mnt: &Path) -> bool {
    fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(path_str(mnt)))
}

/// `cowctl mount ID VIEW --repo REPO` in the background, once VIEW shows it.
fn mount_view(control: &Path, repo: &Path, id: &str, view: &Path) -> Child {
    let mut child = Command::new(bin("cowctl"))
        .env_remove("COWD_SOCKET")
        .arg("--socket")
        .arg(control)
        .args(["mount", id, path_str(view), "--repo", path_str(repo)])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !is_mounted(view) {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "cowctl mount ended ({status}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            Instant::now() < deadline,
            "cowctl mount: not mounted after 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// Waits for a `cowctl mount` to end (bounded), and checks it ended well and unmounted.
fn ended(mut child: Child, view: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "cowctl mount still running after 60 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "cowctl mount: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mounted(view), "{} still mounted", view.display());
}

/// The block size of the filesystem mounted at `mnt` (`stat -f`).
fn fs_block_size(mnt: &Path) -> u64 {
    let out = Command::new("stat")
        .args(["-f", "-c", "%S"])
        .arg(mnt)
        .output()
        .unwrap();
    assert!(out.status.success(), "stat -f {}", mnt.display());
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn files_of_a_generation_listed_read_mapped_and_extracted() {
    require_root_and(&[
        "nbdfuse",
        "fusermount3",
        "losetup",
        "mkfs.ext4",
        "mount",
        "umount",
        "filefrag",
    ]);
    let d = start(Daemon::builder().export("disk", 256 * MIB));
    let dir = d.dir().to_owned();
    let ctl = Ctl::new(&d.control, &dir.join("repo"));
    ctl.init(None);
    let mut att = Attached::default();
    let mnt = dir.join("mnt");
    att.ext4_on_export(&d.uri("disk"), &dir.join("fuse"), &mnt);
    let src = mnt.join("data");
    fs::create_dir_all(src.join("sub/deeper")).unwrap();
    let big = pattern(11, (5 * MIB) as usize + 1234);
    fs::write(src.join("big.bin"), &big).unwrap();
    fs::write(src.join("sub/small.txt"), b"a small file\n").unwrap();
    fs::write(src.join("sub/deeper/odd.bin"), pattern(12, 70_001)).unwrap();
    let sparse = fs::File::create(src.join("sparse.img")).unwrap();
    sparse.set_len(64 * MIB).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, &pattern(13, 8192), 20 * MIB).unwrap();
    drop(sparse);
    std::os::unix::fs::symlink("sub/small.txt", src.join("link")).unwrap();
    fs::hard_link(src.join("big.bin"), src.join("big-again.bin")).unwrap();
    fs::set_permissions(src.join("sub/small.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(src.join("sub/small.txt"), Some(1001), Some(2002)).unwrap();
    fs::create_dir(src.join("many")).unwrap();
    for i in 0..1000 {
        fs::write(src.join(format!("many/f{i:04}")), i.to_string()).unwrap();
    }
    let id = ctl.backup("disk", &["--freeze", path_str(&mnt)]).id;
    assert!(Command::new("sync").status().unwrap().success());

    // ls, ls -l, --json
    let ls = ok(&ctl.in_repo(&["ls", &id, "/data"]));
    for name in [
        "big.bin",
        "big-again.bin",
        "sub/",
        "sparse.img",
        "link",
        "many/",
    ] {
        assert!(ls.lines().any(|l| l == name), "{name} not in:\n{ls}");
    }
    let long = ok(&ctl.in_repo(&["ls", &id, "/data/sub", "-l"]));
    assert!(
        long.contains("-rw-r-----") && long.contains("1001") && long.contains("2002"),
        "{long}"
    );
    let many: Listing =
        serde_json::from_str(&ok(&ctl.in_repo(&["--json", "ls", &id, "/data/many"]))).unwrap();
    assert_eq!(
        (many.filesystem.as_str(), many.entries.len()),
        ("ext4", 1000)
    );
    let link = ok(&ctl.in_repo(&["ls", "-l", &id, "/data/link"]));
    assert!(link.contains("link -> sub/small.txt"), "{link}");
    let missing = failed(&ctl.in_repo(&["ls", &id, "/data/nothing"]), 1);
    assert!(missing.contains("no such file"), "{missing}");

    // cat: the whole file, through pieces of 16 MiB at most
    let cat = ctl.in_repo(&["cat", &id, "/data/big.bin"]);
    assert!(
        cat.status.success() && cat.stdout == big,
        "cat of big.bin differs"
    );

    // map --path agrees with filefrag on the mounted filesystem (the device is the filesystem)
    let m: FileMap = serde_json::from_str(&ok(&ctl.in_repo(&[
        "--json",
        "map",
        &id,
        "--path",
        "/data/big.bin",
    ])))
    .unwrap();
    let ours: Vec<(u64, u64, u64)> = m
        .extents
        .iter()
        .map(|e| (e.file_offset, e.device_offset.unwrap(), e.length))
        .collect();
    let bs = fs_block_size(&mnt);
    assert_eq!(
        ours,
        filefrag(&src.join("big.bin"), bs),
        "extents of big.bin"
    );
    // map --offset: the first block of big.bin belongs to it (both names: hard links)
    let (_, first, _) = ours[0];
    let owners = ok(&ctl.in_repo(&[
        "map",
        &id,
        "--offset",
        &first.to_string(),
        "--length",
        "4096",
    ]));
    assert!(
        owners.contains("/data/big.bin") && owners.contains("/data/big-again.bin"),
        "{owners}"
    );
    let meta = ok(&ctl.in_repo(&["map", &id, "--offset", "0", "--length", "64K"]));
    assert!(meta.contains("superblock"), "{meta}");

    // restore --path: contents, holes, metadata, links
    let out = dir.join("extracted");
    let said = ok(&ctl.in_repo(&["restore", &id, "--path", "/data", "--to", path_str(&out)]));
    println!("{}", said.trim());
    let x = out.join("data");
    assert_eq!(fs::read(x.join("big.bin")).unwrap(), big);
    assert_eq!(
        fs::read(x.join("sub/deeper/odd.bin")).unwrap(),
        pattern(12, 70_001)
    );
    let s = fs::metadata(x.join("sub/small.txt")).unwrap();
    assert_eq!((s.mode() & 0o7777, s.uid(), s.gid()), (0o640, 1001, 2002));
    assert_eq!(
        s.mtime(),
        fs::metadata(src.join("sub/small.txt")).unwrap().mtime()
    );
    assert_eq!(
        fs::read_link(x.join("link")).unwrap(),
        Path::new("sub/small.txt")
    );
    assert_eq!(
        fs::metadata(x.join("big.bin")).unwrap().ino(),
        fs::metadata(x.join("big-again.bin")).unwrap().ino()
    );
    let sp = fs::metadata(x.join("sparse.img")).unwrap();
    assert_eq!(sp.len(), 64 * MIB);
    assert!(
        sp.blocks() * 512 <= MIB,
        "the hole was written: {} bytes allocated",
        sp.blocks() * 512
    );
    assert_eq!(fs::read_dir(x.join("many")).unwrap().count(), 1000);
    // Not into a directory that is not empty.
    let again = failed(
        &ctl.in_repo(&[
            "restore",
            &id,
            "--path",
            "/data/sub",
            "--to",
            path_str(&out),
        ]),
        1,
    );
    assert!(again.contains("not empty"), "{again}");
    assert!(
        ctl.restores()
            .iter()
            .all(|r| r.state != RestoreState::Failed)
    );
    // mount: the same tree as extracted, browsed with std::fs; ended by umount, then by ^C
    let view = dir.join("view");
    fs::create_dir(&view).unwrap();
    let repo = dir.join("repo");
    let child = mount_view(&d.control, &repo, &id, &view);
    assert_eq!(tree_of(&view.join("data")), tree_of(&x));
    assert_eq!(
        fs::metadata(view.join("data/big.bin")).unwrap().ino(),
        fs::metadata(view.join("data/big-again.bin")).unwrap().ino()
    );
    assert_eq!(fs::read_dir(view.join("data/many")).unwrap().count(), 1000);
    let w = fs::OpenOptions::new()
        .write(true)
        .open(view.join("data/sub/small.txt"));
    assert!(w.is_err(), "opened a file of a backup for writing");
    ok(&cowd_tests::cli::cowctl(&d, &["umount", path_str(&view)]));
    ended(child, &view);
    let child = mount_view(&d.control, &repo, &id, &view);
    assert_eq!(fs::read(view.join("data/big.bin")).unwrap(), big);
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    ended(child, &view);

    // diff: change the filesystem, back it up again, and compare `cowctl diff` with a full
    // comparison of the two generations' extracted trees.
    let f = fs::OpenOptions::new()
        .write(true)
        .open(src.join("big.bin"))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &pattern(14, 10_000), 2 * MIB).unwrap();
    drop(f);
    fs::write(src.join("sub/new.txt"), b"new\n").unwrap();
    fs::remove_file(src.join("sub/deeper/odd.bin")).unwrap();
    fs::remove_dir(src.join("sub/deeper")).unwrap();
    fs::set_permissions(src.join("many/f0007"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(src.join("link")).unwrap();
    std::os::unix::fs::symlink("big.bin", src.join("link")).unwrap();
    fs::remove_file(src.join("many/f0100")).unwrap();
    fs::create_dir(src.join("many/f0100")).unwrap();
    let id2 = ctl.backup("disk", &["--freeze", path_str(&mnt)]).id;
    let d2: Diff = serde_json::from_str(&ok(&ctl.in_repo(&["--json", "diff", &id, &id2]))).unwrap();
    println!(
        "diff: {} entries, {} of {} chunks differ, {} read",
        d2.entries.len(),
        d2.chunks_changed,
        d2.chunks,
        d2.chunks_read
    );
    let out2 = dir.join("extracted2");
    ok(&ctl.in_repo(&["restore", &id2, "--path", "/data", "--to", path_str(&out2)]));
    let ours: Vec<(String, Change)> = d2
        .entries
        .iter()
        .map(|e| (e.path.clone(), e.change))
        .collect();
    let expected: Vec<(String, Change)> = full_comparison(&out, &out2);
    assert_eq!(ours, expected);
    for (p, c) in [
        ("/data/big.bin", Change::Modified),
        ("/data/big-again.bin", Change::Modified),
        ("/data/sub/new.txt", Change::Added),
        ("/data/sub/deeper", Change::Removed),
        ("/data/many/f0007", Change::Metadata),
        ("/data/link", Change::Modified),
        ("/data/many/f0100", Change::Type),
    ] {
        assert!(ours.contains(&(p.to_owned(), c)), "{p} {c:?} in {ours:?}");
    }
    let text = ok(&ctl.in_repo(&["diff", &id, &id2]));
    assert!(text.contains("+    /data/sub/new.txt\n"), "{text}");
    assert!(text.contains("T    /data/many/f0100/\n"), "{text}");
    let other = failed(&ctl.in_repo(&["diff", &id, "no-such-backup"]), 1);
    assert!(other.contains("no-such-backup"), "{other}");
}
