//! The live-backup scenario runner: a backup started with `cowctl` and watched to its end
//! ([`start_backup`], [`wait_end`], [`status_of`], [`print_figures`]), images filled and copied
//! before it, and Python writers overwriting the export while it runs, each keeping a model
//! file of what the device must hold afterwards ([`Writers`]).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use cowd::control::api::{BackupStarted, BackupState, BackupStatus, StartBackup};

use crate::cli::{cowctl_at, ok, path_str, post_json, text};
use crate::files::{PYTHON, require_python_nbd, script};
use crate::{Daemon, MIB, pattern};
// ---------------------------------------------------------------------------------------------
// The daemon and cowctl

/// `cowctl --json start-backup disk --to TO --no-quiesce EXTRA...`: the snapshot point is taken.
pub fn start_backup(d: &Daemon, to: &Path, extra: &[&str]) -> BackupStarted {
    let mut args = vec!["--json", "start-backup", "disk", "--to", path_str(to)];
    args.push("--no-quiesce");
    args.extend_from_slice(extra);
    serde_json::from_str(&ok(&cowctl_at(&d.control, &args))).unwrap()
}

/// `cowctl --json wait ID`: the final status (whatever the exit code says).
pub fn wait_end(control: &Path, id: &str) -> BackupStatus {
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
pub fn status_of(control: &Path, id: &str) -> BackupStatus {
    let list: Vec<BackupStatus> =
        serde_json::from_str(&ok(&cowctl_at(control, &["status", "disk", "--json"]))).unwrap();
    list.into_iter()
        .find(|s| s.id == id)
        .unwrap_or_else(|| panic!("no backup {id} in the status list"))
}

/// `POST /v1/exports/disk/backups` with curl (for fields cowctl has no flag for):
/// `(HTTP status, body)`.
pub fn post_backup(d: &Daemon, req: &StartBackup) -> (u16, String) {
    let body = serde_json::to_value(req).unwrap();
    post_json(&d.control, "/v1/exports/disk/backups", &body)
}

/// Prints the figures of a backup (duration, copies before write, throttling, waits, container
/// peak, setup time, bytes moved) for the test output.
pub fn print_figures(what: &str, s: &BackupStatus) {
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
pub fn fill_random(image: &Path, seed: u64) {
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

/// Copies a file (a reference image taken before the backup).
pub fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
}

// ---------------------------------------------------------------------------------------------
// Writers

/// A Python writer process (overwrite.py or sectors.py write-random): started, it has printed
/// "ready"; it stops when its stop file appears; killed on drop.
#[derive(Debug)]
pub struct Writers {
    child: Option<Child>,
    stdout: Option<BufReader<ChildStdout>>,
    stop: PathBuf,
    what: String,
    /// The file that lets writers waiting for it begin (`overwrite_on_go`).
    go: Option<PathBuf>,
}

impl Writers {
    pub fn spawn(what: &str, cmd: &mut Command, stop: &Path) -> Writers {
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
            go: None,
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
    pub fn overwrite(d: &Daemon, initial: &Path, model: &Path, threads: u32, seed: u64) -> Writers {
        Writers::overwrite_with(d, initial, model, threads, seed, false)
    }

    /// Like [`overwrite`](Self::overwrite), but the writers, once connected, wait for
    /// [`go`](Self::go) before their first request: start them before a backup, then let them
    /// write the moment it has started (their start-up then cannot outlast the backup).
    pub fn overwrite_on_go(
        d: &Daemon,
        initial: &Path,
        model: &Path,
        threads: u32,
        seed: u64,
    ) -> Writers {
        Writers::overwrite_with(d, initial, model, threads, seed, true)
    }

    /// `MODEL.stop` ends the writers; with `on_go` they wait for `MODEL.go` to begin.
    fn overwrite_with(
        d: &Daemon,
        initial: &Path,
        model: &Path,
        threads: u32,
        seed: u64,
        on_go: bool,
    ) -> Writers {
        let beside = |ext: &str| {
            let mut p = model.as_os_str().to_owned();
            p.push(ext);
            PathBuf::from(p)
        };
        let (stop, go) = (beside(".stop"), beside(".go"));
        let mut cmd = Command::new(PYTHON);
        cmd.arg(script("overwrite.py"))
            .arg(d.uri("disk"))
            .arg(initial)
            .arg(model)
            .arg(&stop)
            .args(["--threads", &threads.to_string()])
            .args(["--seed", &seed.to_string()]);
        if on_go {
            let _ = std::fs::remove_file(&go);
            cmd.arg("--go-file").arg(&go);
        }
        let mut w = Writers::spawn("overwrite.py", &mut cmd, &stop);
        w.go = on_go.then_some(go);
        w
    }

    /// Lets writers started by [`overwrite_on_go`](Self::overwrite_on_go) begin.
    pub fn go(&self) {
        let go = self
            .go
            .as_ref()
            .expect("writers started by overwrite_on_go");
        File::create(go).unwrap();
    }

    /// Stops the writers; they flush and print their counts. Panics unless every request
    /// succeeded and every read matched the model. Returns the counts.
    pub fn finish(mut self) -> serde_json::Value {
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
pub fn ops(stats: &serde_json::Value, kind: &str) -> u64 {
    stats["ops"][kind].as_u64().unwrap()
}
