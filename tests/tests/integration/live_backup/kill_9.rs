//! kill -9 in the middle of a backup, and while waiting for a quiet period, then a restart on the
//! same state directory: a clean state, a clear reason, the device untouched (invariant 5).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cowd::control::api::{BackupState, BackupStatus};
use cowd_tests::cli::{cowctl, cowctl_at, kill_9, ok, partial, path_str, restart, start, text};
use cowd_tests::files::assert_same_image;
use cowd_tests::live::{Writers, copy, fill_random, ops, print_figures, start_backup, status_of};
use cowd_tests::{Daemon, MIB, bin};

#[test]
fn kill_9_mid_backup_then_restart() {
    let mut d = start(Daemon::builder().export("disk", 128 * MIB));
    let dir = d.dir().to_owned();
    let image = d.image("disk").to_owned();
    fill_random(&image, 6);
    let reference = dir.join("reference.img");
    copy(&image, &reference);
    let to = dir.join("b.img");
    let model = dir.join("model.img");
    let writers = Writers::overwrite_on_go(&d, &reference, &model, 4, 6);
    let started = start_backup(&d, &to, &["--max-rate", "5"]);
    writers.go();
    std::thread::sleep(Duration::from_millis(1500));
    // Every write is acknowledged and flushed before the kill: the device must hold them all.
    let stats = writers.finish();
    let s = status_of(&d.control, &started.id);
    print_figures("before kill -9", &s);
    assert_eq!(s.state, BackupState::Running, "{s:?}");
    assert!(s.copies_before_write > 0, "{s:?}");
    let container = PathBuf::from(s.container_path.clone().expect("a container path"));
    assert_eq!(
        container,
        dir.join("state/containers").join(format!("{}.cow", s.id)),
        "the default container lives under STATE/containers"
    );
    assert!(container.exists() && partial(&to).exists());
    assert!(ops(&stats, "write") > 0);

    kill_9(&mut d);
    assert_same_image(&image, &model, "the device after kill -9");

    let _cowd = restart(&d, &image, "cowd2.log");
    let s = status_of(&d.control, &started.id);
    print_figures("after restart", &s);
    assert_eq!(s.state, BackupState::Failed, "{s:?}");
    let reason = s.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("cowd stopped during the backup"),
        "reason: {reason:?}"
    );
    assert!(s.ended_time.is_some() && s.eta_s.is_none(), "{s:?}");
    assert!(!container.exists(), "the container is left behind");
    assert!(!partial(&to).exists(), "the .partial target is left behind");
    assert!(!to.exists());
    let o = cowctl_at(&d.control, &["wait", &started.id]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stdout));
    assert_same_image(&image, &model, "the device after the restart");

    // The restarted daemon backs up again.
    let to2 = dir.join("b2.img");
    ok(&cowctl(
        &d,
        &[
            "start-backup",
            "disk",
            "--to",
            path_str(&to2),
            "--no-quiesce",
            "--wait",
        ],
    ));
    assert_same_image(&to2, &model, "a backup after the restart");
}

#[test]
fn kill_9_while_waiting_for_a_quiet_period_leaves_nothing_behind() {
    let mut d = start(Daemon::builder().export("disk", 64 * MIB));
    let dir = d.dir().to_owned();
    let image = d.image("disk").to_owned();
    fill_random(&image, 12);
    let reference = dir.join("reference.img");
    copy(&image, &reference);
    let model = dir.join("model.img");
    let writers = Writers::overwrite(&d, &reference, &model, 1, 12);
    // The start waits for 5 s without writes; the writer keeps the export busy meanwhile.
    let to = dir.join("b.img");
    let mut start = Command::new(bin("cowctl"))
        .env_remove("COWD_SOCKET")
        .arg("--socket")
        .arg(&d.control)
        .args(["start-backup", "disk", "--to", path_str(&to)])
        .args(["--quiet-period", "5", "--quiet-timeout", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run cowctl");
    // The target and the container are set up before the quiet-period wait.
    let containers = dir.join("state/containers");
    let count = |p: &Path| std::fs::read_dir(p).map_or(0, |r| r.count());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(partial(&to).exists() && count(&containers) > 0) {
        assert!(
            Instant::now() < deadline,
            "no .partial target or container while the start waits"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let stats = writers.finish();
    assert!(ops(&stats, "write") > 0);
    kill_9(&mut d);
    let _ = start.wait();
    assert_same_image(&image, &model, "the device after kill -9");

    let _cowd = restart(&d, &image, "cowd2.log");
    assert!(
        !partial(&to).exists(),
        "the .partial target of a start that cowd did not finish is left behind after a restart"
    );
    let left: Vec<_> = std::fs::read_dir(&containers)
        .map(|r| r.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "containers of a start that cowd did not finish are left behind after a restart: {left:?}"
    );
    let list: Vec<BackupStatus> =
        serde_json::from_str(&ok(&cowctl_at(&d.control, &["status", "disk", "--json"]))).unwrap();
    assert!(
        list.iter().all(|s| s.state != BackupState::Running),
        "{list:?}"
    );
}
