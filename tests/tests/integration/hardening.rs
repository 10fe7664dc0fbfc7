//! Defects found by adversarial testing of the release build, each as the scenario that found
//! it: staging files planted as links, pins and staging left by kill -9, ended backups that
//! kept their files open, damaged backups missing from the listing, prune under a reader, and
//! input checks.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use cowd::control::api::{BackupState, BackupStatus};
use cowd_tests::Daemon;
use cowd_tests::cli::{
    cowctl, failed, kill_9, ok, partial, path_str, post_json, restart, start, stderr, stdout,
};

const MIB: u64 = 1 << 20;
const NOBODY: u32 = 65534;

/// A directory anyone may write to (mode 1777, like /tmp), inside the test's directory.
fn world_writable(d: &Daemon) -> PathBuf {
    let dir = d.dir().join("public");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777)).unwrap();
    dir
}

/// A root-owned 0644 file and a link to it planted by another user at `at`.
fn plant_link(at: &Path, victim: &Path) {
    fs::write(victim, b"root's secret").unwrap();
    fs::set_permissions(victim, fs::Permissions::from_mode(0o644)).unwrap();
    symlink(victim, at).unwrap();
    std::os::unix::fs::lchown(at, Some(NOBODY), Some(NOBODY)).unwrap();
}

/// Every path process `pid` has open (the targets of /proc/PID/fd/*).
fn open_files(pid: u32) -> Vec<String> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .map(|p| p.display().to_string())
        .collect()
}

/// Asserts the daemon has nothing open under `dir` (its images and sockets aside).
fn assert_nothing_open_in(d: &Daemon, dir: &Path, what: &str) {
    let dir = dir.display().to_string();
    let open: Vec<String> = open_files(d.pid())
        .into_iter()
        .filter(|p| p.starts_with(&dir) && !p.ends_with("disk.img") && !p.ends_with(".log"))
        .collect();
    assert!(open.is_empty(), "{what}: still open: {open:?}");
}

fn json_status(out: &str) -> BackupStatus {
    let last = serde_json::Deserializer::from_str(out)
        .into_iter::<serde_json::Value>()
        .last()
        .expect("a status")
        .unwrap();
    serde_json::from_value(last).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Security: staging names are never followed through links

#[test]
fn a_planted_partial_link_is_refused_and_its_target_untouched() {
    let d = start(Daemon::builder().export("disk", 8 * MIB));
    let public = world_writable(&d);
    let victim = d.dir().join("victim");
    let to = public.join("b.img");
    plant_link(&partial(&to), &victim);

    let o = cowctl(
        &d,
        &[
            "start-backup",
            "disk",
            "--to",
            path_str(&to),
            "--no-quiesce",
        ],
    );
    let err = failed(&o, 1);
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(fs::read(&victim).unwrap(), b"root's secret");
    assert!(!to.exists(), "the link was renamed into place");
    assert!(fs::symlink_metadata(partial(&to)).unwrap().is_symlink());

    // A link at the final path, owned by another user, is refused too (written in place).
    let link = public.join("c.img");
    plant_link(&link, &d.dir().join("victim2"));
    let o = cowctl(
        &d,
        &[
            "start-backup",
            "disk",
            "--to",
            path_str(&link),
            "--no-quiesce",
        ],
    );
    let err = failed(&o, 1);
    assert!(err.contains("symbolic link owned by uid 65534"), "{err}");
    assert_eq!(fs::read(d.dir().join("victim2")).unwrap(), b"root's secret");
}

#[test]
fn a_restore_never_writes_through_a_planted_link_and_records_are_private() {
    let d = start(Daemon::builder().export("disk", 8 * MIB));
    let repo = d.dir().join("repo");
    ok(&cowctl(&d, &["repo", "init", path_str(&repo)]));
    let out = ok(&cowctl(
        &d,
        &[
            "--json",
            "start-backup",
            "disk",
            "--repo",
            path_str(&repo),
            "--no-quiesce",
            "--wait",
        ],
    ));
    let s = json_status(&out);
    assert_eq!(s.state, BackupState::Done);

    let public = world_writable(&d);
    let victim = d.dir().join("victim");
    let to = public.join("r.img");
    plant_link(&partial(&to), &victim);
    let o = cowctl(
        &d,
        &[
            "restore",
            &s.id,
            "--repo",
            path_str(&repo),
            "--to",
            path_str(&to),
        ],
    );
    assert_ne!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stderr(&o).contains("symbolic link"), "{}", stderr(&o));
    assert_eq!(fs::read(&victim).unwrap(), b"root's secret");
    assert!(!to.exists());

    for e in fs::read_dir(d.dir().join("state/backups"))
        .unwrap()
        .flatten()
    {
        let mode = e.metadata().unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is readable by others", e.path().display());
    }
}

// ---------------------------------------------------------------------------------------------
// Leaks: pins and staging of killed backups; files of ended backups

#[test]
fn kill_9_during_a_repository_backup_leaves_no_pin_or_staging_after_a_restart() {
    let mut d = start(Daemon::builder().export("disk", 64 * MIB));
    let image = d.image("disk").to_owned();
    fs::write(&image, cowd_tests::pattern(7, (64 * MIB) as usize)).unwrap();
    let repo = d.dir().join("repo");
    ok(&cowctl(&d, &["repo", "init", path_str(&repo)]));
    let args = [
        "start-backup",
        "disk",
        "--repo",
        path_str(&repo),
        "--no-quiesce",
    ];
    let first = [&args[..], &["--wait"]].concat();
    ok(&cowctl(&d, &first));
    // A slow incremental (everything changed), killed while it runs: its pin names the parent.
    // Through NBD, so the change map knows: written behind cowd's back, the incremental
    // would find nothing to read and end before the pin is looked at.
    cowd_tests::nbd_writes(&d.uri("disk"), &[(0x5a, 0, 64 * MIB)]);
    ok(&cowctl(&d, &[&args[..], &["--max-rate", "4"]].concat()));
    assert_eq!(fs::read_dir(repo.join("pins")).unwrap().count(), 1);
    kill_9(&mut d);

    let _cowd = restart(&d, &image, "cowd2.log");
    // The repository is opened again by the next command that uses it.
    let pruned = ok(&cowctl(
        &d,
        &[
            "prune",
            "disk",
            "--repo",
            path_str(&repo),
            "--keep-last",
            "1",
            "--dry-run",
        ],
    ));
    assert!(!pruned.contains("running backup"), "{pruned}");
    assert_eq!(fs::read_dir(repo.join("pins")).unwrap().count(), 0);
    let staging: Vec<_> = fs::read_dir(repo.join("backups"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(staging.is_empty(), "left in backups/: {staging:?}");
}

#[test]
fn ended_backups_close_their_target_and_container_at_once() {
    let d = start(
        Daemon::builder()
            .export("disk", 16 * MIB)
            .args(&["--allow-fault-injection"]),
    );
    fs::write(d.image("disk"), cowd_tests::pattern(3, (16 * MIB) as usize)).unwrap();
    let out_dir = d.dir().join("out");
    fs::create_dir(&out_dir).unwrap();
    let container = out_dir.join("c.cow");
    let common = [
        "--container",
        path_str(&container),
        "--container-size",
        "4M",
        "--no-quiesce",
        "--wait",
    ];

    // Done: the image is complete and nothing of the backup stays open.
    let to = out_dir.join("done.img");
    let mut args = vec!["--json", "start-backup", "disk", "--to", path_str(&to)];
    args.extend_from_slice(&common);
    assert_eq!(
        json_status(&ok(&cowctl(&d, &args))).state,
        BackupState::Done
    );
    assert_nothing_open_in(&d, &out_dir, "after a backup that ended done");
    assert!(!container.exists());

    // Failed (the target's writes fail): the .partial is gone and not held open either.
    let body = serde_json::json!({
        "to": path_str(&out_dir.join("failed.img")),
        "container": path_str(&container),
        "container_size": 4 * MIB,
        "no_quiesce": true,
        "target_faults": {"fail_after_writes": 1},
    });
    let (code, started) = post_json(&d.control, "/v1/exports/disk/backups", &body);
    assert_eq!(code, 201, "{started}");
    let started: serde_json::Value = serde_json::from_str(&started).unwrap();
    let id = started["id"].as_str().expect("an id").to_owned();
    let o = cowctl(&d, &["wait", &id]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert_nothing_open_in(&d, &out_dir, "after a backup that failed");
    assert!(!partial(&out_dir.join("failed.img")).exists());
}

// ---------------------------------------------------------------------------------------------
// Listing and prune

#[test]
fn a_backup_with_an_unreadable_manifest_is_listed_as_damaged() {
    let d = start(Daemon::builder().export("disk", 8 * MIB));
    let repo = d.dir().join("repo");
    let r = path_str(&repo);
    ok(&cowctl(&d, &["repo", "init", r]));
    let backup = [
        "start-backup",
        "disk",
        "--repo",
        r,
        "--no-quiesce",
        "--wait",
    ];
    let first = json_status(&ok(&cowctl(&d, &[&["--json"][..], &backup].concat())));
    ok(&cowctl(&d, &backup));
    let manifest = repo.join("backups").join(&first.id).join("manifest.json");
    fs::write(&manifest, b"{ truncated").unwrap();

    let table = ok(&cowctl(&d, &["backups", "--repo", r]));
    assert!(
        table.contains(&format!("DAMAGED {}\n  problem: ", first.id)),
        "{table}"
    );
    assert!(
        table.contains(&format!("  parent: {} (damaged)\n", first.id)),
        "{table}"
    );
}

#[test]
fn prune_keeps_a_backup_that_is_served_until_it_is_released() {
    let d = start(Daemon::builder().export("disk", 8 * MIB));
    let repo = d.dir().join("repo");
    let r = path_str(&repo);
    ok(&cowctl(&d, &["repo", "init", r]));
    let backup = [
        "--json",
        "start-backup",
        "disk",
        "--repo",
        r,
        "--no-quiesce",
        "--wait",
    ];
    let old = json_status(&ok(&cowctl(&d, &backup)));
    json_status(&ok(&cowctl(&d, &backup)));
    ok(&cowctl(
        &d,
        &["serve", &old.id, "--repo", r, "--export", "old"],
    ));

    let out = ok(&cowctl(
        &d,
        &["prune", "disk", "--repo", r, "--keep-last", "1"],
    ));
    assert!(
        out.contains("in use by a restore or a served export"),
        "{out}"
    );
    assert!(repo.join("backups").join(&old.id).is_dir());
    // Reads still work.
    let info = cowd_tests::run_stdout(std::process::Command::new("nbdinfo").arg(d.uri("old")));
    assert!(info.contains("export-size"), "{info}");

    ok(&cowctl(&d, &["unserve", "old"]));
    let out = ok(&cowctl(
        &d,
        &["prune", "disk", "--repo", r, "--keep-last", "1"],
    ));
    assert!(!repo.join("backups").join(&old.id).exists(), "{out}");
}

// ---------------------------------------------------------------------------------------------
// Input checks

#[test]
fn watermarks_are_checked_in_the_unit_typed_and_a_refused_container_leaves_nothing() {
    let d = start(Daemon::builder().export("disk", 8 * MIB));
    let to = d.dir().join("b.img");
    let start = |extra: &[&str]| {
        let mut a = vec![
            "start-backup",
            "disk",
            "--to",
            path_str(&to),
            "--no-quiesce",
        ];
        a.extend_from_slice(extra);
        cowctl(&d, &a)
    };
    let err = failed(&start(&["--high-watermark", "200"]), 1);
    assert!(
        err.contains("high watermark 200%: must be above 0% and at most 100%"),
        "{err}"
    );
    let err = failed(
        &start(&["--low-watermark", "90", "--high-watermark", "10"]),
        1,
    );
    assert!(
        err.contains("low watermark 90% must be below the high watermark 10%"),
        "{err}"
    );
    let err = failed(&start(&["--container-size", "8K"]), 1);
    assert!(err.contains("too small"), "{err}");
    let containers = d.dir().join("state/containers");
    let left = fs::read_dir(&containers).map_or(0, |r| r.count());
    assert_eq!(
        left, 0,
        "a refused container's file is left in {containers:?}"
    );
    assert!(!to.exists() && !partial(&to).exists());
}

// ---------------------------------------------------------------------------------------------
// Timing: a stop as soon as the daemon answers

#[test]
fn sigterm_as_soon_as_the_sockets_exist_is_a_clean_stop() {
    // The handler was once installed after the control API answered: a SIGTERM in between
    // (systemd's stop right after the start) killed the daemon with the default action and
    // left its sockets behind. Poll without sleeping, to land in that window if it exists.
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    cowd_tests::files::sparse(&image, 1 << 20);
    for round in 0..20 {
        let control = dir.path().join(format!("control-{round}.sock"));
        let mut child = std::process::Command::new(cowd_tests::bin("cowd"))
            .arg("serve")
            .arg("--export")
            .arg(format!("disk={}", image.display()))
            .arg("--nbd")
            .arg(format!(
                "unix:{}",
                dir.path().join(format!("nbd-{round}.sock")).display()
            ))
            .arg("--control")
            .arg(&control)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !control.exists() {
            assert!(std::time::Instant::now() < deadline, "no control socket");
            std::thread::yield_now();
        }
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let st = child.wait().unwrap();
        assert!(st.success(), "round {round}: cowd after SIGTERM: {st}");
        assert!(
            !control.exists(),
            "round {round}: control socket left behind"
        );
    }
}

/// A second daemon on a file already served, or on an address already taken, stops with one
/// line that says so once (the cause was printed twice, once per link of the error chain).
#[test]
fn a_file_already_served_or_a_port_taken_is_said_once() {
    let d = Daemon::builder().export("disk", 4 * MIB).start();
    let image = d.image("disk").to_path_buf();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let other = tempfile::tempdir().unwrap();
    let serve = |export: &Path, iscsi: &str| {
        let o = std::process::Command::new(cowd_tests::bin("cowd"))
            .arg("serve")
            .arg("--export")
            .arg(format!("disk={}", export.display()))
            .args(["--iscsi", iscsi, "--control"])
            .arg(other.path().join("control.sock"))
            .arg("--state-dir")
            .arg(other.path().join("state"))
            .env("RUST_LOG", "error")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let err = serve(&image, "127.0.0.1:0");
    assert_eq!(
        err.trim_end(),
        format!(
            "cowd: export disk: {}: in use by another program (it is mounted or already served)",
            image.display()
        )
    );
    let free = other.path().join("free.img");
    fs::write(&free, vec![0u8; MIB as usize]).unwrap();
    let err = serve(&free, &format!("127.0.0.1:{port}"));
    let line = err.trim_end();
    assert!(
        line.starts_with(&format!("cowd: cannot listen on iscsi 127.0.0.1:{port}: ")),
        "{line}"
    );
    assert_eq!(line.matches(&port.to_string()).count(), 1, "{line}");
    assert_eq!(line.lines().count(), 1, "{line}");
    drop(taken);
}
