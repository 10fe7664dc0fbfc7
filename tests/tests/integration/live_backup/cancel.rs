//! Cancel: nothing left behind, the device untouched, and writers waiting for a full container
//! released at once.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cowd::control::api::{BackupState, BackupStatus};
use cowd_tests::cli::{cowctl_at, ok, partial, start};
use cowd_tests::files::assert_same_image;
use cowd_tests::live::{Writers, copy, fill_random, ops, print_figures, start_backup, status_of};
use cowd_tests::{Daemon, MIB};

/// What is wrong right after `cowctl cancel` returned: the backup must be listed as cancelled
/// and what it created gone.
fn unclean_after_cancel(d: &Daemon, id: &str, container: &Path, to: &Path) -> Vec<String> {
    let list: Vec<BackupStatus> =
        serde_json::from_str(&ok(&cowctl_at(&d.control, &["status", "disk", "--json"]))).unwrap();
    let mut wrong = Vec::new();
    match list.iter().find(|s| s.id == id) {
        Some(s) if s.state == BackupState::Cancelled => {}
        s => wrong.push(format!(
            "`cowctl status` lists {id} as {:?} (the list: {:?})",
            s.map(|s| s.state),
            list.iter().map(|s| (&s.id, s.state)).collect::<Vec<_>>()
        )),
    }
    if container.exists() {
        wrong.push(format!(
            "the container {} is still there",
            container.display()
        ));
    }
    if partial(to).exists() {
        wrong.push("the .partial target is still there".into());
    }
    wrong
}

#[test]
fn cancel_leaves_a_clean_state() {
    let d = start(Daemon::builder().export("disk", 128 * MIB));
    let dir = d.dir().to_owned();
    let image = d.image("disk").to_owned();
    fill_random(&image, 7);
    let reference = dir.join("reference.img");
    copy(&image, &reference);
    let to = dir.join("b.img");
    let model = dir.join("model.img");
    let writers = Writers::overwrite_on_go(&d, &reference, &model, 4, 7);
    let started = start_backup(&d, &to, &["--max-rate", "10"]);
    writers.go();
    std::thread::sleep(Duration::from_millis(1200));
    let s = status_of(&d.control, &started.id);
    assert_eq!(s.state, BackupState::Running, "{s:?}");
    let container = PathBuf::from(s.container_path.clone().expect("a container path"));
    assert!(container.exists() && partial(&to).exists());
    let out = ok(&cowctl_at(&d.control, &["cancel", "disk"]));
    assert!(
        out.starts_with(&format!("backup {} of disk cancelled after ", started.id)),
        "{out}"
    );
    let unclean = unclean_after_cancel(&d, &started.id, &container, &to);
    // Writes after the cancel are unaffected too.
    std::thread::sleep(Duration::from_millis(500));
    let stats = writers.finish();
    let s = status_of(&d.control, &started.id);
    print_figures("cancelled", &s);
    assert_eq!(s.state, BackupState::Cancelled, "{s:?}");
    assert_eq!(s.reason.as_deref(), Some("cancelled by the operator"));
    assert!(s.copies_before_write > 0, "{s:?}");
    assert!(s.blocks_done < s.blocks_total, "{s:?}");
    assert!(!container.exists(), "the container is left behind");
    assert!(!partial(&to).exists(), "the .partial target is left behind");
    assert!(!to.exists());
    assert!(ops(&stats, "write") > 0);
    assert_same_image(&image, &model, "the device (writes through NBD)");
    assert!(
        unclean.is_empty(),
        "right after `cowctl cancel` returned: {unclean:?}"
    );
}

#[test]
fn cancel_releases_writers_waiting_for_a_full_container() {
    let d = start(Daemon::builder().export("disk", 64 * MIB));
    let dir = d.dir().to_owned();
    let image = d.image("disk").to_owned();
    fill_random(&image, 13);
    let reference = dir.join("reference.img");
    copy(&image, &reference);
    let to = dir.join("b.img");
    // 15 slots, a mover at 1 MiB/s and block-writes: the writers soon wait for space.
    let model = dir.join("model.img");
    let writers = Writers::overwrite_on_go(&d, &reference, &model, 4, 13);
    let started = start_backup(
        &d,
        &to,
        &[
            "--container-size",
            "1M",
            "--on-overflow",
            "block-writes",
            "--max-rate",
            "1",
        ],
    );
    writers.go();
    std::thread::sleep(Duration::from_millis(1500));
    let s = status_of(&d.control, &started.id);
    print_figures("before cancel", &s);
    assert_eq!(s.state, BackupState::Running, "{s:?}");
    assert_eq!(
        s.container_peak, s.container_slots,
        "the container never filled up: {s:?}"
    );
    let container = PathBuf::from(s.container_path.clone().expect("a container path"));
    ok(&cowctl_at(&d.control, &["cancel", "disk"]));
    let unclean = unclean_after_cancel(&d, &started.id, &container, &to);
    let t0 = Instant::now();
    let stats = writers.finish();
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the writers took {took:?} to stop after the cancel"
    );
    assert_same_image(&image, &model, "the device (writes through NBD)");
    assert!(ops(&stats, "write") > 0);
    assert!(
        unclean.is_empty(),
        "right after `cowctl cancel` returned: {unclean:?}"
    );
}
