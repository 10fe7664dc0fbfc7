//! Harness for integration tests: starts a real `cowd` on temp images and runs real NBD peers
//! (qemu-io, qemu-img, nbdinfo, nbdcopy, nbdsh, nbdfuse) against it.
//!
//! Every test owns a [`Daemon`] in its own temp directory; dropping it kills the daemon, so no
//! server outlives its test. Missing tools fail the test with a hint to run `scripts/test`,
//! which installs them.
//!
//! The scenarios are in `tests/integration/` (one test binary); what more than one of them
//! needs lives here, once: the daemon and `cowctl` ([`cli`]), files ([`files`]), mounts and
//! ext4 on an export ([`mounts`]), a raw NBD client ([`nbd`]), the live-backup runner
//! ([`live`]), a repository driven and inspected ([`repo`]), a changing filesystem and its
//! check ([`fswriter`]), etcd ([`etcd`]), hosts as network namespaces ([`netns`]), tgtd as a
//! second iSCSI target ([`tgtd`]), EXTENDED COPY lists from a host ([`xcopy`]).

pub mod cli;
pub mod etcd;
pub mod faultproxy;
pub mod files;
pub mod fswriter;
pub mod iscsi;
pub mod lazyfs;
pub mod live;
pub mod mounts;
pub mod nbd;
pub mod netns;
pub mod power;
pub mod repo;
pub mod rgw;
pub mod tgtd;
pub mod xcopy;

use std::fs::File;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;

/// Path of a binary of this workspace (`cowd`, `cowctl`), next to the test executable.
pub fn bin(name: &str) -> PathBuf {
    let var = format!("{}_BIN", name.to_uppercase());
    if let Some(p) = std::env::var_os(&var) {
        return p.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not built; run `cargo build --workspace` first (or set {var})",
        p.display()
    );
    p
}

/// Panics with an installation hint when `tool` is not on PATH.
pub fn require(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{tool} is not installed: run scripts/test, which installs the test tools"
    );
}

/// Runs a command, panicking with its output unless it succeeds.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a command and returns its stdout as text (must succeed).
pub fn run_stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).expect("UTF-8 output")
}

/// Writes through NBD with one qemu-io: `write -P BYTE OFFSET LENGTH` for each write.
pub fn nbd_writes(uri: &str, writes: &[(u8, u64, u64)]) {
    require("qemu-io");
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", "raw", uri]);
    for (byte, off, len) in writes {
        cmd.arg("-c").arg(format!("write -P {byte} {off} {len}"));
    }
    run(&mut cmd);
}

/// Deterministic pseudo-random bytes.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Configures a daemon before starting it.
#[derive(Debug)]
pub struct DaemonBuilder {
    dir: tempfile::TempDir,
    exports: Vec<(String, PathBuf)>,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    tcp: bool,
    iscsi: bool,
    /// A network namespace to run in (`ip netns exec`), as a host of a test network.
    namespace: Option<String>,
}

/// The base name of the iSCSI targets of test daemons ([`DaemonBuilder::iscsi`]).
pub const ISCSI_BASE: &str = "iqn.2026-12.test.cowd";

impl DaemonBuilder {
    /// Adds an export backed by a new sparse file of `size` bytes.
    pub fn export(mut self, name: &str, size: u64) -> Self {
        let p = self.dir.path().join(format!("{name}.img"));
        File::create(&p).unwrap().set_len(size).unwrap();
        self.exports.push((name.into(), p));
        self
    }

    /// Adds an export backed by an existing file or device.
    pub fn export_path(mut self, name: &str, path: &Path) -> Self {
        self.exports.push((name.into(), path.into()));
        self
    }

    /// Passes extra flags to `cowd serve`.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|s| s.to_string()));
        self
    }

    /// Sets an environment variable of `cowd serve`.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Also listens on a loopback TCP port.
    pub fn tcp(mut self) -> Self {
        self.tcp = true;
        self
    }

    /// Also serves the exports over iSCSI on a loopback port, as targets `ISCSI_BASE:EXPORT`.
    pub fn iscsi(mut self) -> Self {
        self.iscsi = true;
        self
    }

    /// Runs the daemon in network namespace `ns` (a host of a [`netns::Net`]): what it dials
    /// goes through that host's link. Its Unix sockets stay reachable from here (`ip netns
    /// exec` execs cowd, so the daemon's pid is cowd's).
    pub fn namespace(mut self, ns: &str) -> Self {
        self.namespace = Some(ns.into());
        self
    }

    /// Starts `cowd serve` and waits until it accepts NBD clients.
    pub fn start(self) -> Daemon {
        let sock = self.dir.path().join("nbd.sock");
        let control = self.dir.path().join("control.sock");
        let log = self.dir.path().join("cowd.log");
        let mut cmd = match &self.namespace {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin("cowd"));
                c
            }
            None => Command::new(bin("cowd")),
        };
        cmd.arg("serve")
            .arg("--nbd")
            .arg(format!("unix:{}", sock.display()));
        cmd.arg("--control").arg(&control);
        cmd.arg("--state-dir").arg(self.dir.path().join("state"));
        let tcp_port = self.tcp.then(free_port);
        if let Some(port) = tcp_port {
            cmd.arg("--nbd").arg(format!("tcp:127.0.0.1:{port}"));
        }
        let iscsi_port = self.iscsi.then(free_port);
        if let Some(port) = iscsi_port {
            cmd.arg("--iscsi").arg(format!("tcp:127.0.0.1:{port}"));
            cmd.arg("--iscsi-base-name").arg(ISCSI_BASE);
        }
        for (n, p) in &self.exports {
            cmd.arg("--export").arg(format!("{n}={}", p.display()));
        }
        cmd.args(&self.args);
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));
        cmd.env(
            "RUST_LOG",
            std::env::var("COWD_TEST_LOG").unwrap_or_else(|_| "debug".into()),
        );
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap());
        let child = cmd.spawn().expect("spawn cowd");
        let mut d = Daemon {
            child: Some(child),
            dir: self.dir,
            sock,
            control,
            log,
            exports: self.exports,
            tcp_port,
            iscsi_port,
        };
        d.wait_ready();
        d
    }
}

/// A loopback TCP port nobody listens on now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A running `cowd serve`, killed on drop.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub sock: PathBuf,
    pub control: PathBuf,
    log: PathBuf,
    exports: Vec<(String, PathBuf)>,
    tcp_port: Option<u16>,
    iscsi_port: Option<u16>,
}

impl Daemon {
    /// A daemon in a fresh temp directory.
    pub fn builder() -> DaemonBuilder {
        DaemonBuilder {
            dir: tempfile::tempdir().unwrap(),
            exports: Vec::new(),
            args: Vec::new(),
            envs: Vec::new(),
            tcp: false,
            iscsi: false,
            namespace: None,
        }
    }

    /// One export named `disk` of `size` bytes.
    pub fn with_disk(size: u64) -> Daemon {
        Daemon::builder().export("disk", size).start()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            // cowd listens on every NBD endpoint before it binds its control socket, so a
            // control socket that accepts is ready. No NBD probe: it would hold one of the
            // daemon's connection slots until cowd saw it close.
            if UnixStream::connect(&self.control).is_ok() && self.sock.exists() {
                return;
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("cowd exited ({st}) before becoming ready:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("cowd did not become ready:\n{}", self.log());
    }

    /// The temp directory holding sockets, images and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `nbd+unix:///EXPORT?socket=...`
    pub fn uri(&self, export: &str) -> String {
        format!("nbd+unix:///{export}?socket={}", self.sock.display())
    }

    /// `nbd://127.0.0.1:PORT/EXPORT` (needs [`DaemonBuilder::tcp`]).
    pub fn tcp_uri(&self, export: &str) -> String {
        format!(
            "nbd://127.0.0.1:{}/{export}",
            self.tcp_port.expect("daemon started with .tcp()")
        )
    }

    /// `iscsi://127.0.0.1:PORT/ISCSI_BASE:EXPORT/0` (needs [`DaemonBuilder::iscsi`]).
    pub fn iscsi_url(&self, export: &str) -> String {
        format!("{}/{ISCSI_BASE}:{export}/0", self.iscsi_portal())
    }

    /// `iscsi://127.0.0.1:PORT` (needs [`DaemonBuilder::iscsi`]).
    pub fn iscsi_portal(&self) -> String {
        let port = self.iscsi_port.expect("daemon started with .iscsi()");
        format!("iscsi://127.0.0.1:{port}")
    }

    /// The backing file of an export.
    pub fn image(&self, export: &str) -> &Path {
        &self
            .exports
            .iter()
            .find(|(n, _)| n == export)
            .expect("no such export")
            .1
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends SIGKILL and waits for the exit (`waitpid`: every thread gone, every file closed).
    /// The pid stays known; the daemon no longer runs.
    pub fn kill_9(&mut self) {
        let child = self.child.as_mut().expect("running");
        child.kill().expect("kill -9 cowd");
        let st = child.wait().expect("wait for cowd");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&st),
            Some(libc::SIGKILL),
            "cowd exited before kill -9: {st}\n{}",
            self.log()
        );
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// True while the daemon process runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Sends SIGTERM and waits (up to 30 s) for the daemon to exit.
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("cowd did not stop within 30 s of SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
