//! A real filesystem on a cowd export: nbdfuse + loop + mkfs.ext4 + mount, files written and
//! checksummed, unmounted, remounted and verified, `e2fsck -fn` clean — the kernel's block
//! layer as the NBD client. Needs root (loop devices, mount) and FUSE.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use cowd_tests::mounts::Attached;
use cowd_tests::{Daemon, pattern, require, run};

fn checksums(root: &Path) -> BTreeMap<String, String> {
    let out = run(Command::new("sh")
        .arg("-c")
        .arg("find . -type f -print0 | sort -z | xargs -0 sha256sum")
        .current_dir(root));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            l.split_once("  ")
                .map(|(h, f)| (f.to_owned(), h.to_owned()))
        })
        .collect()
}

#[test]
fn ext4_through_nbdfuse_and_loop_survives_a_remount_and_fsck() {
    for tool in ["nbdfuse", "losetup", "mkfs.ext4", "e2fsck", "mount"] {
        require(tool);
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "needs root: loop devices and mount");
    let d = Daemon::with_disk(512 << 20);
    let mut a = Attached::default();
    let mnt = d.dir().join("mnt");
    let dev = a.ext4_on_export(&d.uri("disk"), &d.dir().join("fuse"), &mnt);
    std::fs::create_dir_all(mnt.join("dir/sub")).unwrap();
    for i in 0..40u64 {
        let len = ((i * 7919) % 3_000_000 + 1) as usize;
        std::fs::write(mnt.join(format!("dir/sub/f{i}")), pattern(i, len)).unwrap();
    }
    std::fs::write(mnt.join("big"), pattern(99, 64 << 20)).unwrap();
    std::fs::remove_file(mnt.join("dir/sub/f3")).unwrap();
    let before = checksums(&mnt);
    assert_eq!(before.len(), 40);
    a.umount(&mnt);
    run(Command::new("e2fsck").args(["-fn", &dev]));
    a.mount(&["-o", "ro", &dev], &mnt);
    assert_eq!(checksums(&mnt), before, "files changed across the remount");
    a.umount(&mnt);
    drop(a);
    // The image file itself is the filesystem cowd served.
    run(Command::new("e2fsck").arg("-fn").arg(d.image("disk")));
    assert!(d.stop().success(), "cowd did not stop cleanly");
}
