//! A generation served as an export mounts and shows that generation's files; it cannot be
//! unserved while in use.

use std::time::{Duration, Instant};

use cowd::control::api::ExportInfo;
use cowd_tests::cli::{failed, ok, path_str, start, text};
use cowd_tests::files::require_root_and;
use cowd_tests::mounts::Attached;
use cowd_tests::repo::Ctl;
use cowd_tests::{Daemon, MIB};

use super::{StaticFiles, assert_same_files, change_files, files_under, rng};

#[test]
fn serve_a_generation_and_mount_it() {
    require_root_and(&[
        "nbdfuse",
        "fusermount3",
        "losetup",
        "mkfs.ext4",
        "mount",
        "umount",
    ]);
    let mut rng = rng("serve_a_generation");
    let d = start(Daemon::builder().export("disk", 256 * MIB));
    let dir = d.dir().to_owned();
    let ctl = Ctl::new(&d.control, &dir.join("repo"));
    ctl.init(None);
    let mut att = Attached::default();
    let mnt = dir.join("mnt");
    att.ext4_on_export(&d.uri("disk"), &dir.join("fuse"), &mnt);
    let mut files = StaticFiles::new(&mnt.join("files"));
    for i in 0..12 {
        files.add(&format!("f{i}.bin"), rng.usize(1..(3 << 20)));
    }
    let gen1 = ctl.backup("disk", &["--freeze", path_str(&mnt)]).id;
    let want1 = files.manifest();
    change_files(&mut files, 1, &mut rng);
    let gen2 = ctl.backup("disk", &["--freeze", path_str(&mnt)]).id;
    assert_ne!(files.manifest(), want1);

    let out = ok(&ctl.in_repo(&["serve", &gen1, "--export", "gen1"]));
    println!("{}", out.trim());
    let exports: Vec<ExportInfo> =
        serde_json::from_str(&ok(&ctl.run(&["--json", "exports"]))).unwrap();
    let e = exports.iter().find(|e| e.name == "gen1").expect("gen1");
    assert!(e.read_only && e.size == 256 * MIB, "{e:?}");
    let fuse1 = dir.join("fuse-gen1");
    let nbd1 = att.nbdfuse(&fuse1, &d.uri("gen1"));
    let dev1 = att.losetup_read_only(&nbd1);
    let at = dir.join("gen1");
    att.mount(&["-o", "ro,noload", &dev1], &at);
    assert_same_files(
        &files_under(&at.join("files")),
        &want1,
        "generation 1 served",
    );
    // Not while it is in use.
    let line = failed(&ctl.run(&["unserve", "gen1"]), 1);
    assert!(line.contains("connected"), "{line}");
    att.umount(&at);
    att.detach(&dev1);
    att.unfuse(&fuse1);
    // nbdfuse has exited; its connection may take a moment to be gone in cowd.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let o = ctl.run(&["unserve", "gen1"]);
        if o.status.success() {
            println!("{}", text(&o.stdout).trim());
            break;
        }
        let line = failed(&o, 1);
        assert!(
            line.contains("connected") && Instant::now() < deadline,
            "{line}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let exports = ok(&ctl.run(&["exports"]));
    assert!(!exports.contains("gen1"), "{exports}");
    println!("served {gen1} (gen2 {gen2}) and mounted it");
}
