//! Live backups of a real filesystem, and the freeze and quiet-period seed behaviour that makes
//! them consistent (DESIGN.md "Snapshot point").
//!
//! - an ext4 filesystem on a cowd export (nbdfuse + loop), files changing while
//!   `start-backup --freeze` runs: the backup passes e2fsck and holds every file as it was at the
//!   snapshot point (`scripts/lib/fswriter.py` and `fscheck.py`, checked against the freeze
//!   window cowd reports);
//! - `quiesce::Frozen` used directly: writes block while frozen, the thaw comes on drop and from
//!   the watchdog, bad mountpoints fail cleanly, nothing keeps the mountpoint busy afterwards;
//! - a start that fails after the freeze thaws at once;
//! - the quiet period: the snapshot point waits for it, and without it the start fails saying so.
//!
//! These tests need root (loop devices, mount, FIFREEZE) and FUSE. Whatever a test mounts or
//! attaches is undone by an [`Attached`] guard, also when an assertion fails.

use cowd_tests::cli::{Background, cowctl, failed, ok, partial, path_str, start};
use cowd_tests::files::{PYTHON, require_root_and};
use cowd_tests::fswriter;
use cowd_tests::mounts::{Attached, mkfs_ext4};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cowd::control::api::{BackupStarted, BackupState, BackupStatus};
use cowd::snapshot::quiesce::Frozen;
use cowd_tests::{Daemon, pattern, run};

const MIB: u64 = 1 << 20;

/// The backups of an export, from `cowctl --json status EXPORT`.
fn statuses(d: &Daemon, export: &str) -> Vec<BackupStatus> {
    serde_json::from_str(&ok(&cowctl(d, &["--json", "status", export]))).unwrap()
}

/// Container files left in the daemon's default container directory.
fn containers_left(d: &Daemon) -> Vec<PathBuf> {
    match std::fs::read_dir(d.dir().join("state/containers")) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Seconds since the epoch of a UTC RFC 3339 time as cowd prints it
/// (`2026-01-02T03:04:05.123456Z`).
fn epoch_secs(t: &str) -> f64 {
    let bad = format!("not a UTC RFC 3339 time: {t:?}");
    let (date, time) = t
        .strip_suffix('Z')
        .and_then(|s| s.split_once('T'))
        .expect(&bad);
    let ymd: Vec<i64> = date.split('-').map(|x| x.parse().expect(&bad)).collect();
    let hms: Vec<f64> = time.split(':').map(|x| x.parse().expect(&bad)).collect();
    let (&[y, m, d], &[h, mi, s]) = (&ymd[..], &hms[..]) else {
        panic!("{bad}")
    };
    // Days from 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    days as f64 * 86_400.0 + h * 3600.0 + mi * 60.0 + s
}

/// A small ext4 image file (sparse) at `path`.
fn ext4_image(path: &Path, size: u64) {
    cowd_tests::files::sparse(path, size);
    mkfs_ext4(path);
}

/// Creates `path`, writes 4 KiB and fsyncs it on another thread; sends when that has completed
/// (it blocks while the filesystem is frozen).
fn write_in_background(path: PathBuf) -> mpsc::Receiver<Instant> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut f = File::create(&path).unwrap();
        f.write_all(&[7u8; 4096]).unwrap();
        f.sync_all().unwrap();
        let at = Instant::now();
        // Closed before it says done: an open file would keep the filesystem busy, and the
        // test unmounts it right after (it failed with EBUSY under load).
        drop(f);
        let _ = tx.send(at);
    });
    rx
}

#[test]
fn ext4_with_files_changing_and_freeze() {
    require_root_and(&[
        "nbdfuse",
        "fusermount3",
        "losetup",
        "mkfs.ext4",
        "e2fsck",
        "mount",
        "umount",
        "sha256sum",
    ]);
    let d = start(Daemon::builder().export("disk", 512 * MIB));
    // Declared after the daemon: dropped (unmounted, detached) while cowd still serves.
    let mut att = Attached::default();
    let dir = d.dir().to_owned();
    let (mnt, restore) = (dir.join("mnt"), dir.join("restore"));
    let dev = att.ext4_on_export(&d.uri("disk"), &dir.join("fuse"), &mnt);

    // Static files: they must be in the backup byte for byte.
    std::fs::create_dir(mnt.join("static")).unwrap();
    let mut names = Vec::new();
    for i in 0..24u64 {
        let name = format!("static/file{i:02}.bin");
        let len = (i * i * 64 * 1024 + 1000 * i + 1) as usize;
        std::fs::write(mnt.join(&name), pattern(1000 + i, len)).unwrap();
        names.push(name);
    }
    let manifest = run(Command::new("sha256sum").args(&names).current_dir(&mnt)).stdout;
    let manifest_path = dir.join("manifest");
    std::fs::write(&manifest_path, &manifest).unwrap();

    // A writer keeps creating and replacing files (renamed into place) during the backup.
    let (log, stop) = (dir.join("writer.log"), dir.join("stop-writer"));
    let mut writer = fswriter::start(&mnt.join("live"), &log, &stop, &dir.join("writer.out"));
    std::thread::sleep(Duration::from_secs(1));
    let before = fswriter::renames(&log);
    assert!(before > 0, "the writer renamed no file in a second");

    let to = dir.join("backup.img");
    let started = Instant::now();
    let out = ok(&cowctl(
        &d,
        &[
            "start-backup",
            "disk",
            "--to",
            path_str(&to),
            "--freeze",
            path_str(&mnt),
            "--wait",
            "--max-rate",
            "100",
            "--container-size",
            "64M",
        ],
    ));
    let backup_took = started.elapsed();
    std::fs::write(&stop, b"").unwrap();
    writer.finish(Duration::from_secs(10));
    let renames = fswriter::renames(&log);
    assert!(
        renames > before,
        "the writer did not go on during the backup"
    );

    let list = statuses(&d, "disk");
    assert_eq!(list.len(), 1, "{list:?}");
    let s = &list[0];
    assert_eq!(s.state, BackupState::Done, "{s:?}\n{out}");
    assert_eq!(s.quiesce, format!("freeze {}", mnt.display()));
    let frozen_at = s.frozen_at.clone().expect("frozen_at");
    let thawed_at = s.thawed_at.clone().expect("thawed_at");
    let (frozen, thawed, t) = (
        epoch_secs(&frozen_at),
        epoch_secs(&thawed_at),
        epoch_secs(&s.snapshot_time),
    );
    assert!(
        frozen <= t && t <= thawed,
        "T {} is not in the freeze window {frozen_at} .. {thawed_at}",
        s.snapshot_time
    );
    let window_ms = (thawed - frozen) * 1e3;
    assert!(window_ms < 2000.0, "frozen for {window_ms} ms");

    // The backup image: a clean ext4 filesystem ...
    run(Command::new("e2fsck").arg("-fn").arg(&to));
    // ... with every live file at its version at T, and every static file intact.
    att.mount(&["-o", "ro,noload,loop", path_str(&to)], &restore);
    let summary = fswriter::fscheck(&restore.join("live"), &log, &frozen_at, &thawed_at);
    run(Command::new("sha256sum")
        .arg("--quiet")
        .arg("-c")
        .arg(&manifest_path)
        .current_dir(&restore));
    att.umount(&restore);

    // After the thaw cowd does not hold the mountpoint: a plain umount succeeds at once; the
    // live filesystem, written through cowd during the backup, is clean too.
    att.umount(&mnt);
    run(Command::new("e2fsck").arg("-fn").arg(&dev));

    println!(
        "fs backup: {renames} renames by the writer ({before} before the backup); backup took \
         {backup_took:.2?}; frozen {window_ms:.3} ms ({frozen_at} .. {thawed_at}); setup_ms \
         {:.3}; copies_before_write {}; container peak {}; blocks {}/{}\n  fscheck: {}",
        s.setup_ms,
        s.copies_before_write,
        s.container_peak,
        s.blocks_done,
        s.blocks_total,
        summary.trim()
    );
}

#[test]
fn freeze_is_always_thawed() {
    require_root_and(&["mkfs.ext4", "mount", "umount"]);
    let dir = tempfile::tempdir().unwrap();
    let mut att = Attached::default();
    let (img, mnt) = (dir.path().join("fs.img"), dir.path().join("mnt"));
    ext4_image(&img, 32 * MIB);
    att.mount(&["-o", "loop", path_str(&img)], &mnt);

    // (a) While frozen, a write from another thread blocks; after drop it completes.
    let frozen = Frozen::freeze(&mnt, Duration::from_secs(20)).unwrap();
    let done = write_in_background(mnt.join("a"));
    assert!(
        done.recv_timeout(Duration::from_millis(400)).is_err(),
        "a write completed on a frozen filesystem"
    );
    let thawed = Instant::now();
    drop(frozen);
    let at = done
        .recv_timeout(Duration::from_secs(1))
        .expect("the write did not complete within 1 s of the thaw");
    println!("(a) write completed {:?} after the drop", at - thawed);

    // The same with thaw(), which reports the window.
    let frozen = Frozen::freeze(&mnt, Duration::from_secs(20)).unwrap();
    let done = write_in_background(mnt.join("a2"));
    assert!(done.recv_timeout(Duration::from_millis(200)).is_err());
    let (from, to) = frozen.thaw();
    done.recv_timeout(Duration::from_secs(1))
        .expect("the write did not complete within 1 s of thaw()");
    let held = to.duration_since(from).unwrap();
    assert!(
        held >= Duration::from_millis(200) && held < Duration::from_secs(2),
        "{held:?}"
    );

    // (b) The watchdog thaws by itself at the limit, the guard still alive.
    let called = Instant::now();
    let guard = Frozen::freeze(&mnt, Duration::from_secs(1)).unwrap();
    let done = write_in_background(mnt.join("b"));
    assert!(
        done.recv_timeout(Duration::from_millis(500)).is_err(),
        "a write completed on a frozen filesystem"
    );
    let at = done
        .recv_timeout(Duration::from_millis(1500))
        .expect("the watchdog did not thaw within 1.5 s (limit 1 s)");
    let after = at - called;
    assert!(
        after >= Duration::from_millis(900) && after <= Duration::from_millis(1500),
        "the write completed {after:?} after the freeze (limit 1 s)"
    );
    println!("(b) watchdog: the write completed {after:?} after the freeze call");
    drop(guard);
    std::fs::write(mnt.join("b2"), b"still writable").unwrap();

    // (c) Things that are not the mountpoint of a freezable filesystem fail cleanly.
    let file = mnt.join("b2");
    let e = Frozen::freeze(&file, Duration::from_secs(1)).unwrap_err();
    assert!(e.to_string().contains("not a directory"), "{e}");
    let e = Frozen::freeze(&mnt.join("missing"), Duration::from_secs(1)).unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
    let tmpfs = dir.path().join("tmpfs");
    att.mount(&["-t", "tmpfs", "-o", "size=1M", "tmpfs"], &tmpfs);
    let e = Frozen::freeze(&tmpfs, Duration::from_secs(1)).unwrap_err();
    assert!(e.to_string().contains("FIFREEZE failed"), "{e}");
    println!("(c) tmpfs: {e}");
    std::fs::write(tmpfs.join("x"), b"writable").unwrap();
    att.umount_at_once(&tmpfs);
    std::fs::write(mnt.join("c"), b"writable").unwrap();

    // (d) Once thawed and dropped, the mountpoint is not held: umount succeeds at once, after
    // the watchdog's thaw ...
    att.umount_at_once(&mnt);
    // ... and right after a thaw by the owner.
    att.mount(&["-o", "loop", path_str(&img)], &mnt);
    let frozen = Frozen::freeze(&mnt, Duration::from_secs(20)).unwrap();
    frozen.thaw();
    att.umount_at_once(&mnt);
    run(Command::new("e2fsck").arg("-fn").arg(&img));
}

/// `Frozen::freeze` of a directory inside a filesystem (not its mountpoint): `FIFREEZE` would
/// freeze the filesystem that holds it (for a typo, or a filesystem that failed to mount: the
/// root filesystem), and the backup would report a freeze of a filesystem that was not frozen.
#[test]
fn freeze_refuses_a_directory_that_is_not_a_mountpoint() {
    require_root_and(&["mkfs.ext4", "mount", "umount"]);
    let dir = tempfile::tempdir().unwrap();
    let mut att = Attached::default();
    let (img, mnt) = (dir.path().join("fs.img"), dir.path().join("mnt"));
    ext4_image(&img, 32 * MIB);
    att.mount(&["-o", "loop", path_str(&img)], &mnt);
    let sub = mnt.join("data");
    std::fs::create_dir(&sub).unwrap();
    let r = Frozen::freeze(&sub, Duration::from_secs(2));
    let froze = match &r {
        Ok(_) => {
            let done = write_in_background(mnt.join("w"));
            let blocked = done.recv_timeout(Duration::from_millis(200)).is_err();
            drop(r);
            done.recv_timeout(Duration::from_secs(2)).unwrap();
            blocked
        }
        Err(e) => {
            println!("refused: {e}");
            false
        }
    };
    assert!(
        !froze,
        "freezing {} (not a mountpoint) froze the filesystem mounted at {}",
        sub.display(),
        mnt.display()
    );
    assert!(
        Frozen::freeze(&sub, Duration::from_secs(2)).is_err(),
        "a directory that is not a mountpoint was accepted"
    );
}

#[test]
fn freeze_thaws_when_the_snapshot_fails() {
    require_root_and(&["mkfs.ext4", "mount", "umount"]);
    // A 17 TiB export (a sparse file on tmpfs: ext4 files stop just short of 16 TiB) in 4 KiB
    // blocks has more than 2^32 blocks: `point::take` refuses it, after the freeze.
    let dir = tempfile::tempdir().unwrap();
    let mut att = Attached::default();
    let tmpfs = dir.path().join("tmpfs");
    att.mount(&["-t", "tmpfs", "-o", "size=16M", "tmpfs"], &tmpfs);
    let big = tmpfs.join("big.img");
    cowd_tests::files::sparse(&big, 17 << 40);
    let (img, mnt) = (dir.path().join("fs.img"), dir.path().join("mnt"));
    ext4_image(&img, 32 * MIB);
    att.mount(&["-o", "loop", path_str(&img)], &mnt);
    std::fs::write(mnt.join("before"), b"data").unwrap();
    // Declared after the mounts: killed before they are undone.
    let d = start(Daemon::builder().export_path("big", &big));

    let to = tmpfs.join("b.img");
    let o = cowctl(
        &d,
        &[
            "start-backup",
            "big",
            "--to",
            path_str(&to),
            "--freeze",
            path_str(&mnt),
            "--block-size",
            "4K",
            "--container-size",
            "16M",
        ],
    );
    let failed_at = Instant::now();
    let line = failed(&o, 1);
    assert!(
        line.contains("more than 2^32") && line.contains("use a larger block size"),
        "{line}"
    );
    // Writable at once (well within 10 s; the freeze watchdog, at 10 s, would hide a missed
    // thaw, hence the tighter bound).
    let done = write_in_background(mnt.join("after"));
    let at = done
        .recv_timeout(Duration::from_secs(10))
        .expect("the filesystem is still frozen 10 s after the failed start");
    let after = at - failed_at;
    assert!(
        after < Duration::from_secs(2),
        "a write took {after:?} after the failure"
    );
    let log = d.log();
    let froze = log.contains("filesystem frozen");
    if froze {
        assert!(log.contains("filesystem thawed"), "{log}");
        assert!(!log.contains("freeze watchdog"), "{log}");
    }
    println!(
        "failure {} the freeze; a write completed {after:?} after it",
        if froze { "after" } else { "before" }
    );
    assert_eq!(ok(&cowctl(&d, &["status"])), "no backups\n");
    assert!(!to.exists() && !partial(&to).exists());

    // A start that fails before the freeze (the target cannot be created) leaves it writable.
    let bad = dir.path().join("missing/b.img");
    let line = failed(
        &cowctl(
            &d,
            &[
                "start-backup",
                "big",
                "--to",
                path_str(&bad),
                "--freeze",
                path_str(&mnt),
            ],
        ),
        1,
    );
    assert!(line.contains("b.img"), "{line}");
    let done = write_in_background(mnt.join("after2"));
    done.recv_timeout(Duration::from_secs(2))
        .expect("the filesystem is frozen after a start that failed before the freeze");
    assert_eq!(
        d.log().matches("filesystem frozen").count(),
        usize::from(froze)
    );
    assert_eq!(ok(&cowctl(&d, &["status"])), "no backups\n");

    // "Any failure undoes what was set up": the container created for the start is gone.
    let left = containers_left(&d);
    assert!(left.is_empty(), "containers left behind: {left:?}");
}

/// A libnbd client (Python) that writes one block per line it reads.
#[derive(Debug)]
struct NbdWriter {
    _child: Background,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl NbdWriter {
    fn start(uri: &str) -> NbdWriter {
        let script = "import nbd, sys\n\
                      h = nbd.NBD()\n\
                      h.connect_uri(sys.argv[1])\n\
                      print('ready', flush=True)\n\
                      for i, _ in enumerate(sys.stdin):\n\
                      \x20   h.pwrite(b'w' * 4096, (i % 16) * 4096)\n\
                      \x20   print('ok', flush=True)\n";
        let mut child = Command::new(PYTHON)
            .args(["-c", script, uri])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run python3");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut w = NbdWriter {
            _child: Background(child),
            stdin,
            stdout,
        };
        assert_eq!(
            w.line(),
            "ready",
            "the NBD writer did not start (python3-libnbd missing? run scripts/test)"
        );
        w
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.stdout.read_line(&mut l).unwrap();
        l.trim().to_owned()
    }

    /// Writes one block; returns the instants just before it was sent and after its reply.
    fn write(&mut self) -> (Instant, Instant) {
        let before = Instant::now();
        self.stdin.write_all(b"w\n").unwrap();
        self.stdin.flush().unwrap();
        assert_eq!(self.line(), "ok");
        (before, Instant::now())
    }
}

#[test]
fn quiet_period_seed_behaviour() {
    let d = start(Daemon::builder().export("disk", 64 * MIB));
    let mut writer = NbdWriter::start(&d.uri("disk"));
    writer.write();

    // Writes every 200 ms: no quiet period of 3 s (the default) within --quiet-timeout 4.
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let busy = std::thread::spawn(move || {
        let mut last = writer.write();
        while !s2.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
            last = writer.write();
        }
        (writer, last)
    });
    let to = d.dir().join("q.img");
    let started = Instant::now();
    let o = cowctl(
        &d,
        &[
            "start-backup",
            "disk",
            "--to",
            path_str(&to),
            "--quiet-timeout",
            "4",
        ],
    );
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (writer, (t0, t0_reply)) = busy.join().unwrap();
    let line = failed(&o, 1);
    assert!(
        line.starts_with(
            "cowctl: no quiet period of 3s without writes came within the quiet timeout of 4s; \
             the backup did not start"
        ),
        "{line}"
    );
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_millis(5500),
        "refused after {took:?} (quiet timeout 4 s)"
    );
    assert!(statuses(&d, "disk").is_empty());
    assert!(!to.exists() && !partial(&to).exists());
    assert!(containers_left(&d).is_empty(), "{:?}", containers_left(&d));

    // The writes stopped at t0: a start right now returns 3 s (the default) after it.
    let to = d.dir().join("b.img");
    let o = cowctl(
        &d,
        &["--json", "start-backup", "disk", "--to", path_str(&to)],
    );
    let returned = Instant::now();
    drop(writer);
    let started: BackupStarted = serde_json::from_str(&ok(&o)).unwrap();
    let (early, late) = (returned - t0, returned - t0_reply);
    assert!(
        early >= Duration::from_secs(3),
        "returned {early:?} after the last write began (quiet period 3 s)"
    );
    assert!(
        late <= Duration::from_secs(4),
        "returned {late:?} after the last write ended (quiet period 3 s)"
    );
    assert!(
        started.quiesce.starts_with("quiet period 3s (waited "),
        "{}",
        started.quiesce
    );
    println!(
        "quiet period: start-backup returned {early:?} after the last write; {}",
        started.quiesce
    );
    let done: BackupStatus =
        serde_json::from_str(&ok(&cowctl(&d, &["--json", "wait", &started.id]))).unwrap();
    assert_eq!(done.state, BackupState::Done, "{done:?}");
    assert!(to.exists());
}
