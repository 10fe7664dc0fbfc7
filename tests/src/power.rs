//! The power-loss rig: cowd whose export image, state directory, containers, repository and
//! targets all live on one lazyfs mount, so a test can cut the power at a chosen operation,
//! kill cowd, remount what survived and start cowd again.
//!
//! ```text
//!  DIR/backing/            what is durable (disk.img, state/, repo/, targets)
//!  DIR/mnt/  (lazyfs)      what cowd sees; DIR/lazyfs.sock controls the power
//!  DIR/nbd.sock, DIR/control.sock, DIR/cowd-N.log, DIR/check/   (not under test)
//!
//!  arm(N) ── action (cowctl, NBD writes, SIGTERM) ── power off at operation N+1
//!         ── kill -9 cowd (reaped) ── fusermount3 -u ── lazyfs remounted ── cowd started
//! ```
//!
//! A sweep runs an action once to count its operations ([`PowerRig::count`]), then once per
//! cut point on a fresh rig ([`cut_points`]); the scenarios (`tests/tests/power_loss/`) check
//! what must have survived. Dropping the rig kills cowd and unmounts lazyfs.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::cli::{api_answers, path_str};
use crate::files::{PYTHON, project_root};
use crate::lazyfs::control::Control;
use crate::lazyfs::mount::LazyMount;
use crate::{bin, require};

/// One cowd on one lazyfs mount, with an export `disk` (`disk.img` on the mount).
#[derive(Debug)]
pub struct PowerRig {
    // Field order is drop order: cowd dies before lazyfs is unmounted, then the directory goes.
    cowd: Option<Child>,
    lazy: Option<LazyMount>,
    dir: tempfile::TempDir,
    boots: u32,
    /// Operations at the last [`PowerRig::arm`] (to count an action's operations).
    armed_at: u64,
}

/// What an action run under [`PowerRig::cut_during`] printed before the power went off.
#[derive(Debug)]
pub struct CutOutcome {
    pub output: Output,
    /// The power went off before the action ended (else it was cut right after).
    pub cut_during: bool,
}

impl CutOutcome {
    /// The action said it succeeded (exit code 0) before the power went off.
    pub fn acknowledged(&self) -> bool {
        self.output.status.success()
    }
}

impl PowerRig {
    /// A rig with a zero image of `size` bytes (durable from the start) and cowd running.
    pub fn new(size: u64) -> PowerRig {
        require("fusermount3");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("backing")).unwrap();
        std::fs::create_dir_all(dir.path().join("check")).unwrap();
        File::create(dir.path().join("backing/disk.img"))
            .unwrap()
            .set_len(size)
            .unwrap();
        let mut rig = PowerRig {
            cowd: None,
            lazy: None,
            dir,
            boots: 0,
            armed_at: 0,
        };
        rig.mount();
        rig.boot();
        rig
    }

    /// A path on the lazyfs mount (what cowd sees).
    pub fn on(&self, rel: &str) -> PathBuf {
        self.dir.path().join("mnt").join(rel)
    }

    /// A scratch path outside the mount, for checks (restores compared, data files).
    pub fn check(&self, name: &str) -> PathBuf {
        self.dir.path().join("check").join(name)
    }

    /// `disk.img` on the mount.
    pub fn image(&self) -> PathBuf {
        self.on("disk.img")
    }

    pub fn uri(&self) -> String {
        format!(
            "nbd+unix:///disk?socket={}",
            self.dir.path().join("nbd.sock").display()
        )
    }

    fn control_sock(&self) -> PathBuf {
        self.dir.path().join("control.sock")
    }

    /// The power switch of the current mount.
    pub fn power(&self) -> &Control {
        self.lazy.as_ref().expect("mounted").control()
    }

    fn mount(&mut self) {
        let d = self.dir.path();
        let log = d.join(format!("lazyfs-{}.log", self.boots));
        self.lazy = Some(LazyMount::mount(
            &d.join("backing"),
            &d.join("mnt"),
            &d.join("lazyfs.sock"),
            &log,
        ));
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("cowd-{}.log", self.boots))
    }

    /// The current cowd's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts cowd on the mount and waits (up to 20 s) until its control API answers.
    pub fn boot(&mut self) {
        assert!(self.cowd.is_none(), "cowd already runs");
        self.boots += 1;
        let d = self.dir.path();
        let _ = std::fs::remove_file(d.join("nbd.sock"));
        let _ = std::fs::remove_file(self.control_sock());
        let child = Command::new(bin("cowd"))
            .arg("serve")
            .arg("--nbd")
            .arg(format!("unix:{}", d.join("nbd.sock").display()))
            .arg("--control")
            .arg(self.control_sock())
            .arg("--state-dir")
            .arg(self.on("state"))
            .arg("--export")
            .arg(format!("disk={}", self.image().display()))
            .arg("--container-size")
            .arg("64M")
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(self.log_path()).unwrap())
            .spawn()
            .expect("start cowd");
        self.cowd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !api_answers(&self.control_sock()) {
            if let Some(Ok(Some(st))) = self.cowd.as_mut().map(Child::try_wait) {
                self.cowd = None;
                panic!("cowd exited ({st}) at start:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "cowd's control API does not answer:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// kill -9 of cowd, reaped with waitpid.
    pub fn kill_cowd(&mut self) {
        if let Some(mut c) = self.cowd.take() {
            let _ = c.kill();
            c.wait().expect("reap cowd");
        }
    }

    /// SIGTERM (a clean stop) and waits up to 30 s; returns whether cowd exited 0.
    pub fn stop_cowd(&mut self) -> bool {
        let mut c = self.cowd.take().expect("cowd runs");
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st.success();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("cowd did not stop within 30 s of SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Power off (if still on), kill -9 cowd, remount what survived, start cowd again.
    pub fn power_cycle(&mut self) {
        let lazy = self.lazy.take().expect("mounted");
        if !lazy.control().is_off() {
            lazy.control().cut();
        }
        self.kill_cowd();
        lazy.unmount();
        self.mount();
        self.boot();
    }

    /// Marks the start of an action; [`PowerRig::ops_since_arm`] counts from here.
    pub fn arm(&mut self, cut_after: Option<u64>) {
        self.armed_at = self.power().ops();
        if let Some(n) = cut_after {
            self.power().cut_after(n);
        }
    }

    pub fn ops_since_arm(&self) -> u64 {
        self.power().ops() - self.armed_at
    }

    /// Counts the durability-relevant operations of `action` (run with the power on).
    pub fn count(&mut self, action: impl FnOnce(&mut PowerRig)) -> u64 {
        self.arm(None);
        action(self);
        self.ops_since_arm()
    }

    /// `cowctl --socket CONTROL ARGS...`, run to its end.
    pub fn cowctl(&self, args: &[&str]) -> Output {
        Command::new(bin("cowctl"))
            .env_remove("COWD_SOCKET")
            .arg("--socket")
            .arg(self.control_sock())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run cowctl")
    }

    /// Runs `cowctl ARGS...` with the power cut after `n` more operations; when the power
    /// goes off (or cowctl ends first, then the power is cut at once) cowd is killed and
    /// restarted on what survived. Returns what cowctl said before that.
    pub fn cut_during(&mut self, n: u64, args: &[&str]) -> CutOutcome {
        self.arm(Some(n));
        let (out, err) = (self.check("cowctl.out"), self.check("cowctl.err"));
        let mut child = Command::new(bin("cowctl"))
            .env_remove("COWD_SOCKET")
            .arg("--socket")
            .arg(self.control_sock())
            .args(args)
            .stdin(Stdio::null())
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap())
            .spawn()
            .expect("run cowctl");
        let cut_during = self.until_off_or_exit(&mut child);
        self.power_cycle();
        let status = reap(child, Duration::from_secs(30));
        CutOutcome {
            output: Output {
                status,
                stdout: std::fs::read(out).unwrap(),
                stderr: std::fs::read(err).unwrap(),
            },
            cut_during,
        }
    }

    /// Waits (up to 120 s) until `child` exits or the power goes off; true if the power did.
    fn until_off_or_exit(&mut self, child: &mut Child) -> bool {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if self.power().is_off() {
                return true;
            }
            if child.try_wait().unwrap().is_some() {
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "neither the action ended nor the power went off in 120 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends NBD requests in order with `scripts/nbd_io.py` (see there) and returns how many
    /// were acknowledged before it ended (all of them unless a request failed).
    pub fn nbd(&self, ops: &[NbdOp]) -> usize {
        let mut args = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            args.push(match op {
                NbdOp::Flush => "flush".to_owned(),
                NbdOp::Write { offset, data, fua } => {
                    let f = self.check(&format!("nbd-{i}.bin"));
                    std::fs::write(&f, data).unwrap();
                    let kind = if *fua { "fua" } else { "write" };
                    format!("{kind}:{offset}:{}", f.display())
                }
            });
        }
        let out = Command::new(PYTHON)
            .arg(project_root().join("tests/scripts/nbd_io.py"))
            .arg(self.uri())
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run nbd_io.py");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let acked = text.lines().filter(|l| l.starts_with("ack ")).count();
        assert!(
            out.status.success() || acked < ops.len(),
            "nbd_io.py failed:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        acked
    }

    /// Writes `data` at `offset` through NBD and flushes (power on: must be acknowledged).
    pub fn write_flushed(&self, offset: u64, data: &[u8]) {
        let ops = [NbdOp::write(offset, data), NbdOp::Flush];
        assert_eq!(
            self.nbd(&ops),
            2,
            "writes not acknowledged:\n{}",
            self.log()
        );
    }
}

impl Drop for PowerRig {
    fn drop(&mut self) {
        self.kill_cowd();
        if let Some(l) = self.lazy.take() {
            l.unmount();
        }
    }
}

/// Waits for `child` (a cowctl whose daemon was killed) up to `limit`; kills it after that.
fn reap(mut child: Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    child.wait().unwrap()
}

/// One NBD request of [`PowerRig::nbd`].
#[derive(Debug, Clone)]
pub enum NbdOp {
    Write {
        offset: u64,
        data: Vec<u8>,
        fua: bool,
    },
    Flush,
}

impl NbdOp {
    pub fn write(offset: u64, data: &[u8]) -> NbdOp {
        NbdOp::Write {
            offset,
            data: data.to_vec(),
            fua: false,
        }
    }

    pub fn fua(offset: u64, data: &[u8]) -> NbdOp {
        NbdOp::Write {
            offset,
            data: data.to_vec(),
            fua: true,
        }
    }
}

/// About `n` cut points spread over an action of `total` operations: 0 (the first operation
/// fails), evenly spaced points, the last few operations one by one (where commits happen),
/// and `total` (the power goes right after the action).
pub fn cut_points(total: u64, n: usize) -> Vec<u64> {
    let tail = (n / 3).max(1) as u64;
    let spread = n.saturating_sub(tail as usize + 1).max(1) as u64;
    let mut v: Vec<u64> = (0..spread).map(|i| i * total / spread).collect();
    v.extend((1..=tail).map(|k| total.saturating_sub(k)));
    v.push(total);
    v.sort_unstable();
    v.dedup();
    v
}

/// `path` as a `&str` (temp paths are UTF-8).
pub fn s(path: &Path) -> &str {
    path_str(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_points_cover_start_spread_tail_and_end() {
        let p = cut_points(300, 9);
        assert_eq!(p.first(), Some(&0));
        assert_eq!(p.last(), Some(&300));
        assert!(p.contains(&299) && p.contains(&298) && p.contains(&297));
        assert!(p.len() <= 9 && p.len() >= 7, "{p:?}");
        assert_eq!(cut_points(2, 9), vec![0, 1, 2]);
        assert_eq!(cut_points(0, 5), vec![0]);
    }
}
