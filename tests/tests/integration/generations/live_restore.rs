//! Live restore of an ext4 generation: `restore --live` returns at once, the export mounts
//! while the filler runs, files are the generation's, files written meanwhile are kept,
//! e2fsck is clean, and the export stays served from the destination once done. Backups of
//! the export are refused while it restores; a rollback into an export in use is refused.

use std::process::Command;
use std::time::{Duration, Instant};

use cowd::control::api::RestoreState;
use cowd_tests::cli::{failed, ok, path_str, start};
use cowd_tests::files::require_root_and;
use cowd_tests::mounts::Attached;
use cowd_tests::repo::Ctl;
use cowd_tests::{Daemon, MIB};

use super::{StaticFiles, assert_same_files, files_under, rng};

#[test]
fn live_restore_of_ext4_mounts_at_once_and_keeps_new_writes() {
    require_root_and(&[
        "nbdfuse",
        "fusermount3",
        "losetup",
        "mkfs.ext4",
        "e2fsck",
        "mount",
        "umount",
    ]);
    let mut rng = rng("live_restore_of_ext4");
    let d = start(Daemon::builder().export("disk", 256 * MIB));
    let dir = d.dir().to_owned();
    let ctl = Ctl::new(&d.control, &dir.join("repo"));
    ctl.init(Some("1M"));
    let mut att = Attached::default();
    let mnt = dir.join("mnt");
    att.ext4_on_export(&d.uri("disk"), &dir.join("fuse"), &mnt);
    let mut files = StaticFiles::new(&mnt.join("files"));
    for i in 0..16 {
        files.add(&format!("f{i}.bin"), rng.usize(1..(3 << 20)));
    }
    let gen1 = ctl.backup("disk", &["--freeze", path_str(&mnt)]).id;
    let want = files.manifest();

    // Slow filler: the mount below happens while it runs, reads fetch on demand.
    let to = dir.join("live.img");
    let t = Instant::now();
    let out = ok(&ctl.in_repo(&[
        "restore",
        &gen1,
        "--live",
        "--export",
        "live",
        "--to",
        path_str(&to),
        "--max-rate",
        "16",
    ]));
    let returned = t.elapsed();
    println!("{}(returned in {returned:?})", out);
    assert!(out.contains("export live serves"), "{out}");
    let id = ctl
        .restores()
        .into_iter()
        .find(|r| r.live && r.export.as_deref() == Some("live"))
        .expect("the live restore is listed")
        .id;

    let status = ok(&ctl.run(&["status"]));
    assert!(
        status.contains(&format!("live restore {id} (export live)")),
        "{status}"
    );
    let refused = failed(&ctl.in_repo(&["start-backup", "live"]), 1);
    assert!(refused.contains("being restored live"), "{refused}");
    // A rollback of an export with a client (nbdfuse under the mount) is refused.
    let busy = failed(
        &ctl.in_repo(&["restore", &gen1, "--live", "--export", "disk"]),
        1,
    );
    assert!(busy.contains("client(s) connected"), "{busy}");

    let fuse2 = dir.join("fuse-live");
    let nbd2 = att.nbdfuse(&fuse2, &d.uri("live"));
    let dev2 = att.losetup(&nbd2);
    let at = dir.join("live");
    att.mount(&[&dev2], &at);
    let mounted = t.elapsed();
    let during = ctl.restore_status(&id);
    println!(
        "mounted {mounted:?} after the restore began; then {}/{} chunks, {} on demand",
        during.chunks_done, during.chunks_total, during.chunks_on_demand
    );
    assert_same_files(
        &files_under(&at.join("files")),
        &want,
        "generation served live",
    );
    ok(&ctl.run(&["prioritize", "live", "0", "16M"]));
    let mut newer = StaticFiles::new(&at.join("new"));
    for i in 0..6 {
        newer.add(&format!("n{i}.bin"), rng.usize(1..(2 << 20)));
    }
    let new_want = newer.manifest();
    assert!(Command::new("sync").status().unwrap().success());

    let end = ctl.wait_restore(&id, Duration::from_secs(180));
    assert_eq!(end.state, RestoreState::Done, "{end:?}");
    assert!(
        end.note
            .as_deref()
            .unwrap_or("")
            .contains("no longer needed"),
        "{end:?}"
    );
    println!(
        "done in {} s: {} chunks, {} fetched on demand",
        end.elapsed_s, end.chunks_total, end.chunks_on_demand
    );
    assert_same_files(&files_under(&at.join("files")), &want, "after the restore");
    assert_same_files(
        &files_under(&at.join("new")),
        &new_want,
        "written during it",
    );
    att.umount(&at);
    att.detach(&dev2);
    att.unfuse(&fuse2);
    let fsck = Command::new("e2fsck")
        .args(["-fn", path_str(&to)])
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "e2fsck of the destination: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    // The export stays, served from the destination alone; a backup of it now works.
    let exports = ok(&ctl.run(&["exports"]));
    assert!(exports.contains("live"), "{exports}");
    ctl.backup("live", &[]);
}
