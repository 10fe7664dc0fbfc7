//! The daemon as the operator tests drive it: its control API up, `cowctl` runs and their
//! exit codes, kill -9 and restart on the same state, and background processes that die with
//! the test.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{Daemon, DaemonBuilder, bin};

/// True when the control API at `socket` answers `GET /v1/exports` with 200.
pub fn api_answers(socket: &Path) -> bool {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /v1/exports HTTP/1.1\r\nHost: l\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("HTTP/1.1 200")
}

/// Waits (up to 20 s) until the control API at `control` answers.
pub fn wait_api(control: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !api_answers(control) {
        assert!(Instant::now() < deadline, "the control API does not answer");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts the daemon and waits until its control API answers (the builder waits only for the
/// socket file).
pub fn start(b: DaemonBuilder) -> Daemon {
    let d = b.start();
    wait_api(&d.control);
    d
}

/// `cowctl --socket CONTROL ARGS...`, run to its end.
pub fn cowctl_at(control: &Path, args: &[&str]) -> Output {
    Command::new(bin("cowctl"))
        .env_remove("COWD_SOCKET")
        .arg("--socket")
        .arg(control)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run cowctl")
}

/// `cowctl start-backup EXPORT --repo REPO --no-quiesce --wait` against `d`: the backup's id.
pub fn backup_into(d: &Daemon, export: &str, repo: &str) -> String {
    let out = ok(&cowctl(
        d,
        &[
            "start-backup",
            export,
            "--repo",
            repo,
            "--no-quiesce",
            "--wait",
        ],
    ));
    out.lines()
        .next()
        .and_then(|l| l.strip_prefix("backup "))
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("{out}"))
        .to_owned()
}

/// `cowctl` against `d`'s control socket.
pub fn cowctl(d: &Daemon, args: &[&str]) -> Output {
    cowctl_at(&d.control, args)
}

/// `POST PATH` with a JSON body to the control API at `control` (with curl): (HTTP status,
/// body).
pub fn post_json(control: &Path, path: &str, body: &serde_json::Value) -> (u16, String) {
    crate::require("curl");
    let out = Command::new("curl")
        .args(["-sS", "--unix-socket"])
        .arg(control)
        .args(["-X", "POST", "-H", "Content-Type: application/json", "-d"])
        .arg(body.to_string())
        .args(["-w", "\n%{http_code}"])
        .arg(format!("http://localhost{path}"))
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl: {}", text(&out.stderr));
    let all = text(&out.stdout);
    let (body, code) = all.rsplit_once('\n').expect("status line");
    (code.trim().parse().unwrap(), body.to_owned())
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn stdout(o: &Output) -> String {
    text(&o.stdout)
}

pub fn stderr(o: &Output) -> String {
    text(&o.stderr)
}

/// Asserts exit code 0; returns stdout.
pub fn ok(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// Asserts exit code `code` with one line on stderr; returns that line.
pub fn failed(o: &Output, code: i32) -> String {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{err}",
        stdout(o)
    );
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    err.trim_end().to_owned()
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// `path.partial`: where cowd writes a new raw image until it is complete.
pub fn partial(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".partial");
    s.into()
}

/// A background process (a writer, a restarted cowd, fio) killed on drop.
#[derive(Debug)]
pub struct Background(pub Child);

impl Background {
    /// Waits up to `limit` for the process to exit; panics if it does not or fails.
    pub fn finish(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.0.try_wait().unwrap() {
                assert!(st.success(), "{st}");
                return;
            }
            assert!(Instant::now() < deadline, "still running after {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits (up to 30 s) for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        // SAFETY: kill(2) on our own child, not yet reaped.
        let r = unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        assert_eq!(r, 0, "kill: {}", std::io::Error::last_os_error());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.0.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "no exit within 30 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends SIGKILL to the harness's daemon and reaps it.
///
/// Only `waitpid` says the process is gone: when a multi-threaded process is killed, /proc
/// shows its main thread as a zombie while other threads are still exiting and still hold the
/// file table, so the image's lock may still be held for a moment after /proc says "Z".
pub fn kill_9(d: &mut Daemon) {
    d.kill_9();
}

/// Starts `cowd serve` again with the harness's flags, on the same image, sockets and state
/// directory as `d` (whose process must be dead), logging to `log_name` in its directory, and
/// waits for its control API.
pub fn restart(d: &Daemon, image: &Path, log_name: &str) -> Background {
    let log = File::create(d.dir().join(log_name)).unwrap();
    let child = Command::new(bin("cowd"))
        .arg("serve")
        .arg("--nbd")
        .arg(format!("unix:{}", d.sock.display()))
        .arg("--control")
        .arg(&d.control)
        .arg("--state-dir")
        .arg(d.dir().join("state"))
        .arg("--export")
        .arg(format!("disk={}", image.display()))
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("restart cowd");
    let mut b = Background(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !api_answers(&d.control) {
        if let Ok(Some(st)) = b.0.try_wait() {
            let log = std::fs::read_to_string(d.dir().join(log_name)).unwrap_or_default();
            panic!("the restarted cowd exited ({st}):\n{log}");
        }
        assert!(
            Instant::now() < deadline,
            "the restarted cowd's control API does not answer; its log:\n{}",
            std::fs::read_to_string(d.dir().join(log_name)).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    b
}
