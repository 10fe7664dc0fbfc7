//! Live backups end to end: a real cowd, real NBD clients overwriting the device while it is
//! backed up, and the acceptance list of the live-backup issue.
//!
//! - Point in time (invariant 1): the backup equals a copy of the image taken at T, however hard
//!   writers (`tests/scripts/overwrite.py`: libnbd handles in threads; fio) overwrite it during the
//!   backup: random, overlapping, unaligned, across block edges, FUA, WRITE_ZEROES, TRIM.
//! - No write lost (invariant 2): each writer owns a disjoint region and keeps an exact model of
//!   it; the image must equal the model afterwards.
//! - Self-checking sectors (`tests/scripts/sectors.py`, as in blksnap's tests): every 4 KiB sector
//!   of the backup is valid, at its own offset, with the sequence it had at T.
//! - Throttling and waiting with a tiny container, slow and failing targets, kill -9 and cancel
//!   (invariant 5: a clean state, a clear reason, the device untouched), prioritized ranges, a
//!   container on a loop-device partition, and a short snapshot point under heavy load.
//!
//! `--max-rate` stretches each backup over a few seconds so that the writers really overwrite
//! blocks that are still pending. The system interpreter `/usr/bin/python3` is used explicitly:
//! it is the one with the `nbd` module (python3-libnbd). Also needed: nbdcopy, fio, curl, and,
//! as root, losetup, partx and sfdisk (Debian package fdisk) for the loop-device partition.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cowd::control::api::{BackupStarted, BackupState, BackupStatus, StartBackup, TargetFaults};
use cowd_tests::cli::{
    Background, cowctl, cowctl_at, kill_9, ok, partial, path_str, post_json, restart, start, text,
};
use cowd_tests::files::{PYTHON, read_at};
use cowd_tests::{Daemon, bin, pattern, require};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------------------------------------
// The daemon and cowctl

/// `cowctl --json start-backup disk --to TO --no-quiesce EXTRA...`: the snapshot point is taken.
fn start_backup(d: &Daemon, to: &Path, extra: &[&str]) -> BackupStarted {
    let mut args = vec!["--json", "start-backup", "disk", "--to", path_str(to)];
    args.push("--no-quiesce");
    args.extend_from_slice(extra);
    serde_json::from_str(&ok(&cowctl_at(&d.control, &args))).unwrap()
}

/// `cowctl --json wait ID`: the final status (whatever the exit code says).
fn wait_end(control: &Path, id: &str) -> BackupStatus {
    let o = cowctl_at(control, &["--json", "wait", id, "--timeout", "60"]);
    let s: BackupStatus = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "cowctl wait: {e}\nstdout:\n{}\nstderr:\n{}",
            text(&o.stdout),
            text(&o.stderr)
        )
    });
    assert_ne!(s.state, BackupState::Running, "still running: {s:?}");
    // The exit code says how it ended: 0 only for done.
    assert_eq!(o.status.success(), s.state == BackupState::Done, "{s:?}");
    s
}

/// The status of backup `id` as `cowctl status disk --json` lists it.
fn status_of(control: &Path, id: &str) -> BackupStatus {
    let list: Vec<BackupStatus> =
        serde_json::from_str(&ok(&cowctl_at(control, &["status", "disk", "--json"]))).unwrap();
    list.into_iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("no backup {id} in the status list"))
}

/// `POST /v1/exports/disk/backups` with curl (for fields cowctl has no flag for):
/// `(HTTP status, body)`.
fn post_backup(d: &Daemon, req: &StartBackup) -> (u16, String) {
    let body = serde_json::to_value(req).unwrap();
    post_json(&d.control, "/v1/exports/disk/backups", &body)
}

fn print_figures(what: &str, s: &BackupStatus) {
    eprintln!(
        "{what}: {:?} in {:.1} s; cbw {}, throttled {} ({:.0} ms), waited {} ({:.0} ms), \
         container peak {}/{}, setup {:.2} ms, moved {:.1} MiB",
        s.state,
        s.elapsed_s,
        s.copies_before_write,
        s.throttled_writes,
        s.throttle_delay_ms,
        s.waited_writes,
        s.wait_ms,
        s.container_peak,
        s.container_slots,
        s.setup_ms,
        s.moved_bytes as f64 / MIB as f64
    );
}

// ---------------------------------------------------------------------------------------------
// Images

/// Fills an image with pattern data (random-looking, never a zero block), writing the file
/// directly (nothing has the export open yet).
fn fill_random(image: &Path, seed: u64) {
    let f = File::options().write(true).open(image).unwrap();
    let len = f.metadata().unwrap().len();
    let chunk = 8 * MIB;
    for (i, off) in (0..len).step_by(chunk as usize).enumerate() {
        f.write_all_at(
            &pattern(seed * 1000 + i as u64, chunk.min(len - off) as usize),
            off,
        )
        .unwrap();
    }
    f.sync_all().unwrap();
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
}

/// Asserts two files are equal byte for byte; names the first differing 64 KiB block and how
/// many blocks differ.
fn assert_same_file(got: &Path, want: &Path, what: &str) {
    let (mut fa, mut fb) = (File::open(got).unwrap(), File::open(want).unwrap());
    let (la, lb) = (fa.metadata().unwrap().len(), fb.metadata().unwrap().len());
    assert_eq!(la, lb, "{what}: sizes differ");
    let bs = 64 * KIB as usize;
    let (mut ba, mut bb) = (vec![0u8; bs], vec![0u8; bs]);
    let mut differ = Vec::new();
    let mut first = None;
    let mut at = 0u64;
    while at < la {
        let n = (la - at).min(bs as u64) as usize;
        fa.read_exact(&mut ba[..n]).unwrap();
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            if first.is_none() {
                let i = ba.iter().zip(&bb).position(|(x, y)| x != y).unwrap();
                first = Some((at + i as u64, ba[i], bb[i], ba[..n].iter().all(|&b| b == 0)));
            }
            differ.push(at / bs as u64);
        }
        at += n as u64;
    }
    if let Some((off, g, w, zero)) = first {
        panic!(
            "{what}: {} and {} differ in {} blocks of 64 KiB (first at byte {off}, block {}: \
             got {g:#04x}, want {w:#04x}{}); blocks {:?}",
            got.display(),
            want.display(),
            differ.len(),
            off / bs as u64,
            if zero {
                ", that block reads as zeroes"
            } else {
                ""
            },
            &differ[..differ.len().min(20)]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Writers

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

fn require_python_nbd() {
    assert!(
        Path::new(PYTHON).exists(),
        "{PYTHON} is missing: run scripts/test, which installs the test tools"
    );
    let ok = Command::new(PYTHON)
        .args(["-c", "import nbd"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{PYTHON} has no `nbd` module (python3-libnbd): run scripts/test"
    );
}

/// A Python writer process (overwrite.py or sectors.py write-random): started, it has printed
/// "ready"; it stops when its stop file appears; killed on drop.
#[derive(Debug)]
struct Writers {
    child: Option<Child>,
    stdout: Option<BufReader<ChildStdout>>,
    stop: PathBuf,
    what: String,
}

impl Writers {
    fn spawn(what: &str, cmd: &mut Command, stop: &Path) -> Writers {
        require_python_nbd();
        let _ = std::fs::remove_file(stop);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run python3");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut w = Writers {
            child: Some(child),
            stdout: None,
            stop: stop.to_owned(),
            what: what.to_owned(),
        };
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        if line.trim() != "ready" {
            let out = w.child.take().unwrap().wait_with_output().unwrap();
            panic!(
                "{what} did not start: {line}{}\n{}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        w.stdout = Some(stdout);
        w
    }

    /// overwrite.py: `threads` writers over the whole export, starting from `initial` (the
    /// device's content now); the model goes to `model`.
    fn overwrite(d: &Daemon, initial: &Path, model: &Path, threads: u32, seed: u64) -> Writers {
        let mut stop = model.as_os_str().to_owned();
        stop.push(".stop");
        let stop = PathBuf::from(stop);
        Writers::spawn(
            "overwrite.py",
            Command::new(PYTHON)
                .arg(script("overwrite.py"))
                .arg(d.uri("disk"))
                .arg(initial)
                .arg(model)
                .arg(&stop)
                .args(["--threads", &threads.to_string()])
                .args(["--seed", &seed.to_string()]),
            &stop,
        )
    }

    /// Stops the writers; they flush and print their counts. Panics unless every request
    /// succeeded and every read matched the model. Returns the counts.
    fn finish(mut self) -> serde_json::Value {
        File::create(&self.stop).unwrap();
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop within 30 s (a write hangs?)",
                self.what
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut out = String::new();
        self.stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(
            status.success(),
            "{} failed ({status}): a write failed or the device read back wrong:\n{out}\n{err}",
            self.what
        );
        let last = out.lines().last().unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(last)
            .unwrap_or_else(|e| panic!("{}: {e}: {out}\n{err}", self.what));
        eprintln!("{}: {last}", self.what);
        v
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Writes ops per kind of an overwrite.py run.
fn ops(stats: &serde_json::Value, kind: &str) -> u64 {
    stats["ops"][kind].as_u64().unwrap()
}

// ---------------------------------------------------------------------------------------------
// 1. Point in time and no write lost under heavy overwriting

#[test]
fn writers_overwrite_everything_during_a_backup() {
    require("nbdcopy");
    let d = start(Daemon::builder().export("disk", 128 * MIB));
    let dir = d.dir().to_owned();
    // Fill through NBD with nbdcopy: random data with an 8 MiB run of zeroes and a few zero
    // blocks (so the backup also has holes at T that writers then fill).
    let src = dir.join("src.img");
    {
        let f = File::create(&src).unwrap();
        for i in 0..16u64 {
            let mut data = pattern(7000 + i, (8 * MIB) as usize);
            if i == 5 {
                data.fill(0);
            }
            if i == 9 {
                data[..(64 * KIB) as usize].fill(0);
                data[(200 * KIB) as usize..(328 * KIB) as usize].fill(0);
            }
            f.write_all_at(&data, i * 8 * MIB).unwrap();
        }
    }
    cowd_tests::run(Command::new("nbdcopy").arg(&src).arg(d.uri("disk")));
    let image = d.image("disk").to_owned();
    let reference = dir.join("reference.img");
    copy(&image, &reference);
    assert_same_file(&reference, &src, "the image after nbdcopy");

    let to = dir.join("b.img");
    let started = start_backup(&d, &to, &["--max-rate", "40"]);
    let model = dir.join("model.img");
    let writers = Writers::overwrite(&d, &reference, &model, 4, 1);
    let end = wait_end(&d.control, &started.id);
    let stats = writers.finish();
    print_figures("overwrite", &end);
    assert_eq!(end.state, BackupState::Done, "{end:?}");
    assert!(ops(&stats, "write") > 100 && ops(&stats, "trim") > 0 && ops(&stats, "zero") > 0);
    assert_same_file(&to, &reference, "the backup (point in time)");
    assert!(!partial(&to).exists());
    assert_same_file(&image, &model, "the device (writes through NBD)");
    let s = status_of(&d.control, &started.id);
    assert!(
        s.copies_before_write > 0,
        "no copy before write: the writers did not overwrite pending blocks: {s:?}"
    );
    assert!(s.container_peak <= s.container_slots, "{s:?}");
    assert_eq!(
        (s.blocks_done, s.container_used),
        (s.blocks_total, 0),
        "{s:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. A tiny container: writers are throttled and wait, the backup stays exact

#[test]
fn a_tiny_container_throttles_and_waits() {
    let d = start(Daemon::builder().export("disk", 64 * MIB));
    let dir = d.dir().to_owned();
    let image = d.image("disk").to_owned();
    fill_random(&image, 2);
    let reference = dir.join("reference.img");
    copy(&image, &reference);
    let to = dir.join("b.img");
    let started = start_backup(
        &d,
        &to,
        &[
            "--container-size",
            "1M",
            "--block-size",
            "64K",
            "--on-overflow",
            "block-writes",
            "--max-rate",
            "20",
        ],
    );
    let model = dir.join("model.img");
    let writers = Writers::overwrite(&d, &reference, &model, 4, 2);
    let end = wait_end(&d.control, &started.id);
    let stats = writers.finish();
    print_figures("tiny container", &end);
    eprintln!(
        "tiny container: throttled_writes {}, waited_writes {}, container_peak {} of {} slots",
        end.throttled_writes, end.waited_writes, end.container_peak, end.container_slots
    );
    assert_eq!(end.state, BackupState::Done, "{end:?}");
    assert!(
        end.container_slots > 0 && end.container_slots <= 16,
        "a 1 MiB container holds at most 16 blocks of 64 KiB: {end:?}"
    );
    assert!(end.container_peak <= end.container_slots, "{end:?}");
    assert!(end.copies_before_write > 0, "{end:?}");
    assert!(
        end.throttled_writes + end.waited_writes > 0,
        "writers overwrote {} pending blocks through a container of {} slots without ever being \
         throttled or waiting: {end:?}",
        end.copies_before_write,
        end.container_slots
    );
    assert!(ops(&stats, "write") > 0);
    assert_same_file(&to, &reference, "the backup (point in time)");
    assert_same_file(&image, &model, "the device (writes through NBD)");
}

// ---------------------------------------------------------------------------------------------
// 3 and 4. Slow and failing targets

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
    let (code, body) = post_backup(&d, &faulty_request(&to, 25.0, faults));
    assert_eq!(code, 201, "{body}");
    let started: BackupStarted = serde_json::from_str(&body).unwrap();
    let model = dir.join("model.img");
    let writers = Writers::overwrite(&d, &reference, &model, 4, 3);
    let end = wait_end(&d.control, &started.id);
    // Finishing the writers asserts that none of their requests failed.
    let stats = writers.finish();
    print_figures("slow target", &end);
    assert_eq!(end.state, BackupState::Done, "{end:?}");
    assert!(end.copies_before_write > 0, "{end:?}");
    assert!(ops(&stats, "write") > 0);
    assert_same_file(&to, &reference, "the backup (point in time)");
    assert_same_file(&image, &model, "the device (writes through NBD)");
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
    let (code, body) = post_backup(&d, &faulty_request(&to, 20.0, faults));
    assert_eq!(code, 201, "{body}");
    let started: BackupStarted = serde_json::from_str(&body).unwrap();
    let model = dir.join("model.img");
    let writers = Writers::overwrite(&d, &reference, &model, 4, 4);
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
    assert_same_file(&image, &model, "the device (writes through NBD)");
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
    assert_same_file(&to2, &image, "the backup after the failed one");
}

// ---------------------------------------------------------------------------------------------
// 5. Self-checking sectors

fn sectors(args: &[&str]) -> Output {
    require_python_nbd();
    Command::new(PYTHON)
        .arg(script("sectors.py"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run sectors.py")
}

/// `sectors.py verify FILE CHECK...`: panics with its report unless every sector is right.
fn verify_sectors(file: &Path, check: &[&str], what: &str) {
    let mut args = vec!["verify", path_str(file)];
    args.extend_from_slice(check);
    let o = sectors(&args);
    assert!(
        o.status.success(),
        "{what}: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    eprintln!("verify {what}: {}", text(&o.stdout).trim());
}

#[test]
fn every_sector_of_the_backup_is_the_one_it_had_at_t() {
    let d = start(Daemon::builder().export("disk", 128 * MIB));
    let dir = d.dir().to_owned();
    let image = d.image("disk").to_owned();
    let uri = d.uri("disk");
    let o = sectors(&["fill", &uri, "--seq", "1"]);
    assert!(o.status.success(), "fill: {}", text(&o.stderr));
    verify_sectors(&image, &["--expect-seq", "1"], "the filled image");
    // The checker can fail: a sector written elsewhere, a stale sequence, a torn sector.
    let bad = dir.join("bad.img");
    copy(&image, &bad);
    let f = File::options().write(true).open(&bad).unwrap();
    let mut s = read_at(&image, 40 * 4096, 4096);
    f.write_all_at(&s, 41 * 4096).unwrap();
    s[100] ^= 1;
    f.write_all_at(&s, 40 * 4096).unwrap();
    drop(f);
    let o = sectors(&["verify", path_str(&bad), "--expect-seq", "1"]);
    let out = text(&o.stdout);
    assert!(
        !o.status.success()
            && out.contains("sector 40 (offset 163840): bad checksum")
            && out.contains("sector 41 (offset 167936): carries offset 163840"),
        "{out}"
    );

    let to = dir.join("b.img");
    let started = start_backup(&d, &to, &["--max-rate", "40"]);
    let stop = dir.join("sectors.stop");
    let map = dir.join("sectors.map");
    let writers = Writers::spawn(
        "sectors.py write-random",
        Command::new(PYTHON)
            .arg(script("sectors.py"))
            .args(["write-random", &uri])
            .arg(&stop)
            .arg(&map)
            .args(["--fill-seq", "1", "--threads", "4"]),
        &stop,
    );
    let end = wait_end(&d.control, &started.id);
    let stats = writers.finish();
    print_figures("sectors", &end);
    assert_eq!(end.state, BackupState::Done, "{end:?}");
    let counts = &stats["counts"];
    for k in ["runs", "split_runs", "zeroes", "trims"] {
        assert!(counts[k].as_u64().unwrap() > 0, "no {k}: {stats}");
    }
    assert!(end.copies_before_write > 0, "{end:?}");
    verify_sectors(&to, &["--expect-seq", "1"], "the backup");
    verify_sectors(&image, &["--expect-map", path_str(&map)], "the device");
}

// ---------------------------------------------------------------------------------------------
// 6. kill -9 in the middle of a backup, then a restart on the same state directory

#[test]
fn kill_9_mid_backup_then_restart() {
    let mut d = start(Daemon::builder().export("disk", 128 * MIB));
    let dir = d.dir().to_owned();
    let image = d.image("disk").to_owned();
    fill_random(&image, 6);
    let reference = dir.join("reference.img");
    copy(&image, &reference);
    let to = dir.join("b.img");
    let started = start_backup(&d, &to, &["--max-rate", "5"]);
    let model = dir.join("model.img");
    let writers = Writers::overwrite(&d, &reference, &model, 4, 6);
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
    assert_same_file(&image, &model, "the device after kill -9");

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
    assert_same_file(&image, &model, "the device after the restart");

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
    assert_same_file(&to2, &model, "a backup after the restart");
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
    assert_same_file(&image, &model, "the device after kill -9");

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

// ---------------------------------------------------------------------------------------------
// 7. Cancel

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
    let started = start_backup(&d, &to, &["--max-rate", "10"]);
    let model = dir.join("model.img");
    let writers = Writers::overwrite(&d, &reference, &model, 4, 7);
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
    assert_same_file(&image, &model, "the device (writes through NBD)");
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
    let model = dir.join("model.img");
    let writers = Writers::overwrite(&d, &reference, &model, 4, 13);
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
    assert_same_file(&image, &model, "the device (writes through NBD)");
    assert!(ops(&stats, "write") > 0);
    assert!(
        unclean.is_empty(),
        "right after `cowctl cancel` returned: {unclean:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 8. Prioritized ranges

#[test]
fn prioritized_ranges_are_copied_first() {
    let d = start(Daemon::builder().export("disk", 128 * MIB));
    let dir = d.dir().to_owned();
    let image = d.image("disk").to_owned();
    fill_random(&image, 8);
    let to = dir.join("b.img");
    let started = start_backup(&d, &to, &["--max-rate", "10"]);
    ok(&cowctl_at(
        &d.control,
        &["prioritize", "disk", "120M", "4M"],
    ));
    let prioritized = read_at(&image, 120 * MIB, (4 * MIB) as usize);
    let deadline = Instant::now() + Duration::from_secs(6);
    let target = partial(&to);
    loop {
        if read_at(&target, 120 * MIB, (4 * MIB) as usize) == prioritized {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the prioritized range 120M+4M is not in the target after 6 s: {:?}",
            status_of(&d.control, &started.id)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = status_of(&d.control, &started.id);
    eprintln!(
        "prioritized range copied at {}/{} blocks",
        s.blocks_done, s.blocks_total
    );
    assert_eq!(s.state, BackupState::Running, "{s:?}");
    assert!(
        s.blocks_done * 2 < s.blocks_total,
        "progress is already {}/{}",
        s.blocks_done,
        s.blocks_total
    );
    // The range just before it was not copied yet: it really came first.
    assert!(
        read_at(&target, 112 * MIB, (4 * MIB) as usize)
            .iter()
            .all(|&b| b == 0),
        "112M+4M is in the target already"
    );
    ok(&cowctl_at(&d.control, &["cancel", "disk"]));
}

// ---------------------------------------------------------------------------------------------
// 9. Where the container may live

/// A loop device over a temp file with an MBR partition table of one partition; the partitions
/// are dropped and the device detached on drop.
#[derive(Debug)]
struct PartitionedLoop {
    dev: PathBuf,
    part: PathBuf,
    _dir: tempfile::TempDir,
}

impl PartitionedLoop {
    fn new(size: u64) -> PartitionedLoop {
        require("losetup");
        require("sfdisk");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("disk.img");
        File::create(&file).unwrap().set_len(size).unwrap();
        let mut sfdisk = Command::new("sfdisk")
            .args(["-q", "--no-reread"])
            .arg(&file)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("run sfdisk");
        sfdisk
            .stdin
            .take()
            .unwrap()
            .write_all(b"label: dos\nstart=2048, type=83\n")
            .unwrap();
        assert!(sfdisk.wait().unwrap().success(), "sfdisk failed");
        // Tests attach loop devices in parallel; retry if another one took the free device.
        let mut tries = 0;
        let out = loop {
            let out = Command::new("losetup")
                .args(["-fP", "--show"])
                .arg(&file)
                .output()
                .expect("run losetup");
            tries += 1;
            if out.status.success() || tries == 5 {
                break out;
            }
            std::thread::sleep(Duration::from_millis(100 * tries));
        };
        assert!(
            out.status.success(),
            "losetup -fP --show failed (this test needs root and loop devices): {}",
            text(&out.stderr)
        );
        let dev = PathBuf::from(text(&out.stdout).trim());
        let part = PathBuf::from(format!("{}p1", dev.display()));
        // The guard exists before any check that could fail.
        let lo = PartitionedLoop {
            dev,
            part,
            _dir: dir,
        };
        assert!(
            lo.dev.to_string_lossy().starts_with("/dev/loop"),
            "losetup printed {:?}",
            lo.dev
        );
        // Without udev the partition node may be late or missing: ask for it with partx.
        let start = Instant::now();
        let mut asked = false;
        while !is_block_device(&lo.part) {
            let waited = start.elapsed();
            if waited > Duration::from_millis(500) && !asked {
                asked = true;
                let _ = Command::new("partx")
                    .arg("-a")
                    .arg(&lo.dev)
                    .stderr(Stdio::null())
                    .status();
            }
            assert!(
                waited < Duration::from_secs(5),
                "{} did not appear",
                lo.part.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        lo
    }
}

fn is_block_device(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_block_device())
}

impl Drop for PartitionedLoop {
    fn drop(&mut self) {
        let _ = Command::new("partx")
            .arg("-d")
            .arg(&self.dev)
            .stderr(Stdio::null())
            .status();
        let ok = Command::new("losetup")
            .arg("-d")
            .arg(&self.dev)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("warning: losetup -d {} failed", self.dev.display());
        }
    }
}

#[test]
fn container_on_a_loop_device_partition() {
    let lo = PartitionedLoop::new(80 * MIB);
    let d = start(Daemon::builder().export("disk", 64 * MIB));
    let dir = d.dir().to_owned();
    let image = d.image("disk").to_owned();
    fill_random(&image, 9);
    let reference = dir.join("reference.img");
    copy(&image, &reference);
    let to = dir.join("b.img");
    let part = path_str(&lo.part).to_owned();
    let started = start_backup(&d, &to, &["--container", &part, "--max-rate", "20"]);
    let model = dir.join("model.img");
    let writers = Writers::overwrite(&d, &reference, &model, 4, 9);
    std::thread::sleep(Duration::from_millis(300));
    let s = status_of(&d.control, &started.id);
    assert_eq!(s.container_path.as_deref(), Some(part.as_str()), "{s:?}");
    assert!(
        s.container_slots > 1000,
        "a 79 MiB partition holds more than 1000 blocks: {s:?}"
    );
    assert_eq!(&read_at(&lo.part, 0, 8), b"COWDCTR1", "no container header");
    let end = wait_end(&d.control, &started.id);
    let stats = writers.finish();
    print_figures("loop partition container", &end);
    assert_eq!(end.state, BackupState::Done, "{end:?}");
    assert!(end.copies_before_write > 0, "{end:?}");
    assert!(ops(&stats, "write") > 0);
    assert_same_file(&to, &reference, "the backup (point in time)");
    assert_same_file(&image, &model, "the device (writes through NBD)");
    assert_ne!(
        &read_at(&lo.part, 0, 8),
        b"COWDCTR1",
        "the container header on {part} was not wiped"
    );
    assert!(is_block_device(&lo.part), "the partition node is gone");
}

#[test]
fn a_container_beside_the_export_is_fine_but_not_the_export_itself() {
    let d = start(Daemon::builder().export("disk", 64 * MIB));
    let dir = d.dir().to_owned();
    let image = d.image("disk").to_owned();
    fill_random(&image, 10);
    // On the exported image's filesystem, next to it: fine (the export is a file).
    let beside = dir.join("beside.cow");
    let to = dir.join("b.img");
    let o = cowctl(
        &d,
        &[
            "--json",
            "start-backup",
            "disk",
            "--to",
            path_str(&to),
            "--no-quiesce",
            "--container",
            path_str(&beside),
            "--container-size",
            "8M",
            "--wait",
        ],
    );
    let docs: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&ok(&o).into_bytes())
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    let end: BackupStatus = serde_json::from_value(docs[1].clone()).unwrap();
    assert_eq!(end.state, BackupState::Done, "{end:?}");
    assert_eq!(end.container_path.as_deref(), Some(path_str(&beside)));
    assert_same_file(&to, &image, "the backup");
    assert!(!beside.exists(), "the container file is left behind");

    // The exported file itself: refused, with a clear message, and nothing changed.
    let to2 = dir.join("b2.img");
    let o = cowctl(
        &d,
        &[
            "start-backup",
            "disk",
            "--to",
            path_str(&to2),
            "--no-quiesce",
            "--container",
            path_str(&image),
        ],
    );
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(path_str(&image)) && err.contains("is the exported device itself"),
        "{err}"
    );
    assert!(!to2.exists() && !partial(&to2).exists());
    assert_same_file(&to, &image, "the export after the refusal");
    let list: Vec<BackupStatus> =
        serde_json::from_str(&ok(&cowctl_at(&d.control, &["status", "disk", "--json"]))).unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
}

// ---------------------------------------------------------------------------------------------
// 10. The snapshot point under heavy load

#[test]
fn snapshot_setup_under_heavy_load_is_fast() {
    require("fio");
    let d = start(Daemon::builder().export("disk", 128 * MIB));
    let dir = d.dir().to_owned();
    fill_random(d.image("disk"), 11);
    let fio_out = dir.join("fio.json");
    let mut fio = Background(
        Command::new("fio")
            .args([
                "--name=load",
                "--ioengine=nbd",
                &format!("--uri={}", d.uri("disk")),
                "--rw=randwrite",
                "--bs=4k",
                "--iodepth=32",
                "--numjobs=2",
                "--size=128M",
                "--time_based",
                "--runtime=4",
                "--group_reporting",
                "--output-format=json",
            ])
            .arg(format!("--output={}", fio_out.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run fio"),
    );
    std::thread::sleep(Duration::from_millis(1200));
    assert!(fio.0.try_wait().unwrap().is_none(), "fio ended early");
    let to = dir.join("b.img");
    let t0 = Instant::now();
    let started = start_backup(&d, &to, &["--max-rate", "40"]);
    let took = t0.elapsed();
    eprintln!(
        "setup under load: setup_ms {:.2} (start-backup returned after {took:?})",
        started.setup_ms
    );
    assert!(
        started.setup_ms < 1000.0,
        "writes were held {:.1} ms to take the snapshot point under load",
        started.setup_ms
    );
    let fio = &mut fio.0;
    let status = fio.wait().unwrap();
    let mut err = String::new();
    fio.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "fio failed: {err}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&fio_out).unwrap()).unwrap();
    let job = &report["jobs"][0];
    assert_eq!(job["error"].as_u64(), Some(0), "fio: {job}");
    let iops = job["write"]["iops"].as_f64().unwrap();
    eprintln!("fio: {iops:.0} write IOPS over the run");
    assert!(iops > 100.0, "fio hardly wrote: {iops} IOPS");
    let end = wait_end(&d.control, &started.id);
    print_figures("under load", &end);
    assert_eq!(end.state, BackupState::Done, "{end:?}");
    assert!(
        end.copies_before_write > 0,
        "fio did not overwrite pending blocks: {end:?}"
    );
    assert_eq!(end.setup_ms, started.setup_ms);
    // The image had no holes at T: every block was to be copied, and every one was moved as
    // data (none recorded as a hole).
    assert_eq!(
        end.moved_bytes,
        128 * MIB,
        "blocks of a hole-free image were recorded as holes at T: {end:?}"
    );
    assert_eq!(
        started.blocks_to_copy, end.blocks_total,
        "start-backup under load reports {} of {} blocks to copy for an image without holes \
         (the blocks writers or the mover took right after T are missing from the count)",
        started.blocks_to_copy, end.blocks_total
    );
}
