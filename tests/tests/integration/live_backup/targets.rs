//! Slow and failing targets (faults injected through the API): a slow one still gives an exact
//! backup; a failing one ends the backup with a reason, writes go on, and a next backup works.

use std::path::Path;
use std::time::Duration;

use cowd::control::api::{BackupStarted, BackupState, StartBackup, TargetFaults};
use cowd_tests::cli::{cowctl, ok, partial, path_str, start};
use cowd_tests::files::assert_same_image;
use cowd_tests::live::{Writers, copy, fill_random, ops, post_backup, print_figures, wait_end};
use cowd_tests::{Daemon, MIB};

/// A request like `cowctl start-backup disk --to TO --no-quiesce --max-rate MIB`, plus faults.
fn faulty_request(to: &Path, max_rate: f64, faults: TargetFaults) -> StartBackup {
    StartBackup {
        to: path_str(to).to_owned(),
        no_quiesce: true,
        max_rate_mib_s: Some(max_rate),
        target_faults: Some(faults),
        ..StartBackup::default()
    }
}

#[test]
fn a_slow_target() {
    let d = start(
        Daemon::builder()
            .export("disk", 64 * MIB)
            .args(&["--allow-fault-injection"]),
    );
    let dir = d.dir().to_owned();
    let image = d.image("disk").to_owned();
    fill_random(&image, 3);
    let reference = dir.join("reference.img");
    copy(&image, &reference);
    let to = dir.join("b.img");
    let faults = TargetFaults {
        delay_ms: Some(15),
        ..TargetFaults::default()
    };
    let model = dir.join("model.img");
    let writers = Writers::overwrite_on_go(&d, &reference, &model, 4, 3);
    let (code, body) = post_backup(&d, &faulty_request(&to, 25.0, faults));
    assert_eq!(code, 201, "{body}");
    let started: BackupStarted = serde_json::from_str(&body).unwrap();
    writers.go();
    let end = wait_end(&d.control, &started.id);
    // Finishing the writers asserts that none of their requests failed.
    let stats = writers.finish();
    print_figures("slow target", &end);
    assert_eq!(end.state, BackupState::Done, "{end:?}");
    assert!(end.copies_before_write > 0, "{end:?}");
    assert!(ops(&stats, "write") > 0);
    assert_same_image(&to, &reference, "the backup (point in time)");
    assert_same_image(&image, &model, "the device (writes through NBD)");
}

#[test]
fn a_failing_target() {
    let d = start(
        Daemon::builder()
            .export("disk", 64 * MIB)
            .args(&["--allow-fault-injection"]),
    );
    let dir = d.dir().to_owned();
    let image = d.image("disk").to_owned();
    fill_random(&image, 4);
    let reference = dir.join("reference.img");
    copy(&image, &reference);
    let to = dir.join("b.img");
    let faults = TargetFaults {
        fail_after_writes: Some(12),
        ..TargetFaults::default()
    };
    let model = dir.join("model.img");
    let writers = Writers::overwrite_on_go(&d, &reference, &model, 4, 4);
    let (code, body) = post_backup(&d, &faulty_request(&to, 20.0, faults));
    assert_eq!(code, 201, "{body}");
    let started: BackupStarted = serde_json::from_str(&body).unwrap();
    writers.go();
    let end = wait_end(&d.control, &started.id);
    // Writes go on after the failure too.
    std::thread::sleep(Duration::from_millis(500));
    let stats = writers.finish();
    print_figures("failing target", &end);
    assert_eq!(end.state, BackupState::Failed, "{end:?}");
    let reason = end.reason.clone().unwrap_or_default();
    assert!(
        reason.contains(path_str(&to)) && reason.contains("target"),
        "the reason does not name the target {}: {reason:?}",
        to.display()
    );
    assert!(end.blocks_done < end.blocks_total, "{end:?}");
    assert!(ops(&stats, "write") > 0);
    assert_same_image(&image, &model, "the device (writes through NBD)");
    assert!(
        !partial(&to).exists(),
        "the failed backup left its .partial"
    );
    assert!(!to.exists(), "the failed backup left a target");
    if let Some(c) = &end.container_path {
        assert!(!Path::new(c).exists(), "the container {c} is left behind");
    }

    // A new backup (no faults, nobody writing) succeeds and is the device.
    let to2 = dir.join("b2.img");
    let o = cowctl(
        &d,
        &[
            "start-backup",
            "disk",
            "--to",
            path_str(&to2),
            "--no-quiesce",
            "--wait",
        ],
    );
    ok(&o);
    assert_same_image(&to2, &image, "the backup after the failed one");
}
