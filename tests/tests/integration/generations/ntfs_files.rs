//! Files of a generation of an NTFS volume (mkntfs, written through ntfs-3g), read from the
//! repository by `cowctl ls`, `cat`, `restore --path`, `map` and `diff`: resident and
//! non-resident data, a directory, an ntfs-3g symbolic link and a hard link.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use cowd::control::api::{Change, Diff, FileMap, Listing};
use cowd_tests::cli::{ok, path_str, start};
use cowd_tests::files::require_root_and;
use cowd_tests::repo::Ctl;
use cowd_tests::{Daemon, MIB, pattern};

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Mounts `img` with ntfs-3g at `mnt`, runs `f`, unmounts (also when `f` panics).
fn through_ntfs3g(img: &Path, mnt: &Path, f: impl FnOnce(&Path)) {
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    fs::create_dir_all(mnt).unwrap();
    run("ntfs-3g", &[path_str(img), path_str(mnt)]);
    let _guard = Unmount(mnt);
    f(mnt);
}

#[test]
fn ntfs_files_of_a_generation() {
    require_root_and(&["mkntfs", "ntfs-3g", "umount"]);
    let d = start(Daemon::builder().export("disk", 64 * MIB));
    let dir = d.dir().to_owned();
    let img = d.image("disk").to_owned();
    // The volume is written beside cowd (ntfs-3g on the image file), never through NBD.
    run("mkntfs", &["-q", "-F", "-Q", path_str(&img)]);
    let big = pattern(21, 3 * MIB as usize + 77);
    let mnt = dir.join("ntfs");
    through_ntfs3g(&img, &mnt, |m| {
        fs::create_dir(m.join("docs")).unwrap();
        fs::write(m.join("docs/small.txt"), b"resident\n").unwrap();
        fs::write(m.join("docs/big.bin"), &big).unwrap();
        std::os::unix::fs::symlink("docs/small.txt", m.join("link")).unwrap();
        fs::hard_link(m.join("docs/big.bin"), m.join("big-again.bin")).unwrap();
    });
    let ctl = Ctl::new(&d.control, &dir.join("repo"));
    ctl.init(None);
    let id = ctl.backup("disk", &["--no-quiesce"]).id;

    let l: Listing = serde_json::from_str(&ok(&ctl.in_repo(&["--json", "ls", &id, "/"]))).unwrap();
    assert_eq!(l.filesystem, "ntfs");
    let names: Vec<&str> = l.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        ["big-again.bin", "docs", "link"],
        "system files are hidden"
    );
    let link = ok(&ctl.in_repo(&["ls", "-l", &id, "/link"]));
    assert!(link.contains("link -> docs/small.txt"), "{link}");
    let cat = ctl.in_repo(&["cat", &id, "/docs/big.bin"]);
    assert!(
        cat.status.success() && cat.stdout == big,
        "cat of a non-resident file"
    );
    assert_eq!(
        ctl.in_repo(&["cat", &id, "/docs/small.txt"]).stdout,
        b"resident\n"
    );
    // map: the resident file has no device extent, the large one its runs
    let m: FileMap = serde_json::from_str(&ok(&ctl.in_repo(&[
        "--json",
        "map",
        &id,
        "--path",
        "/docs/small.txt",
    ])))
    .unwrap();
    assert!(m.extents.iter().all(|e| e.device_offset.is_none()), "{m:?}");
    let m: FileMap = serde_json::from_str(&ok(&ctl.in_repo(&[
        "--json",
        "map",
        &id,
        "--path",
        "/docs/big.bin",
    ])))
    .unwrap();
    let mapped: u64 = m.extents.iter().map(|e| e.length).sum();
    assert_eq!(mapped, big.len() as u64, "{m:?}");

    // restore --path: contents, the link, the hard link
    let out = dir.join("extracted");
    ok(&ctl.in_repo(&["restore", &id, "--path", "/", "--to", path_str(&out)]));
    assert_eq!(fs::read(out.join("docs/big.bin")).unwrap(), big);
    assert_eq!(fs::read(out.join("docs/small.txt")).unwrap(), b"resident\n");
    assert_eq!(
        fs::read_link(out.join("link")).unwrap(),
        Path::new("docs/small.txt")
    );
    assert_eq!(
        fs::metadata(out.join("big-again.bin")).unwrap().ino(),
        fs::metadata(out.join("docs/big.bin")).unwrap().ino()
    );

    // diff after changes through ntfs-3g
    through_ntfs3g(&img, &mnt, |m| {
        fs::write(m.join("docs/new.txt"), b"new").unwrap();
        fs::remove_file(m.join("link")).unwrap();
        let f = fs::OpenOptions::new()
            .write(true)
            .open(m.join("docs/big.bin"))
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"changed", MIB).unwrap();
    });
    // Written beside cowd, not through it: only a full backup sees it.
    let id2 = ctl.backup("disk", &["--no-quiesce", "--mode", "full"]).id;
    let diff: Diff =
        serde_json::from_str(&ok(&ctl.in_repo(&["--json", "diff", &id, &id2]))).unwrap();
    let got: Vec<(&str, Change)> = diff
        .entries
        .iter()
        .map(|e| (e.path.as_str(), e.change))
        .collect();
    assert_eq!(
        got,
        [
            ("/big-again.bin", Change::Modified),
            ("/docs/big.bin", Change::Modified),
            ("/docs/new.txt", Change::Added),
            ("/link", Change::Removed),
        ]
    );
}
