//! tgtd, the Linux SCSI target framework's user-space daemon (Debian package tgt), serving one
//! file as LUN 1 of one target on a loopback port: an iSCSI target that is not cowd's, for the
//! initiator's tests. Stopped (and its control socket removed) on drop.
//!
//! ```text
//!   tgtd -f -C CONTROL --iscsi portal=127.0.0.1:PORT
//!   tgtadm -C CONTROL: target 1 = IQN, LUN 1 = the file (rdwr), bound to every initiator
//! ```
//!
//! tgtd names its control socket `/var/run/tgtd/socket.CONTROL` after a port number below
//! 32768; each fixture takes one in 22000..23000 that no socket uses (this process counts
//! through the range, so parallel tests never pick the same).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use crate::{free_port, require};

/// The target name every fixture serves.
pub const IQN: &str = "iqn.2026-12.test.tgtd:disk";
/// tgtd's LUN 0 is its controller; the file is LUN 1.
pub const LUN: u16 = 1;

const SOCKET_DIR: &str = "/var/run/tgtd";
const CONTROL_PORTS: std::ops::Range<u16> = 22000..23000;
static NEXT_CONTROL: AtomicU16 = AtomicU16::new(0);

/// A running tgtd with one target.
#[derive(Debug)]
pub struct Tgtd {
    child: Option<Child>,
    control: u16,
    port: u16,
}

fn socket(control: u16) -> String {
    format!("{SOCKET_DIR}/socket.{control}")
}

/// A control port no tgtd socket uses, this process's pid spreading processes apart.
fn control_port() -> u16 {
    let span = CONTROL_PORTS.end - CONTROL_PORTS.start;
    let base = (std::process::id() % u32::from(span)) as u16;
    for _ in 0..span {
        let n = NEXT_CONTROL.fetch_add(1, Ordering::Relaxed);
        let port = CONTROL_PORTS.start + (base + n) % span;
        if !Path::new(&socket(port)).exists() {
            return port;
        }
    }
    panic!("no free tgtd control port in {CONTROL_PORTS:?}");
}

impl Tgtd {
    /// Starts tgtd serving `image` (read-write) as LUN 1 of [`IQN`].
    pub fn start(image: &Path) -> Tgtd {
        require("tgtd");
        require("tgtadm");
        let control = control_port();
        let port = free_port();
        let child = Command::new("tgtd")
            .args(["-f", "-C", &control.to_string(), "--iscsi"])
            .arg(format!("portal=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tgtd");
        let t = Tgtd {
            child: Some(child),
            control,
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !t.adm(&["--mode", "system", "--op", "show"]) {
            assert!(Instant::now() < deadline, "tgtd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let tid = ["--tid", "1"];
        assert!(
            t.adm(
                &[
                    &["--mode", "target", "--op", "new"][..],
                    &tid,
                    &["--targetname", IQN]
                ]
                .concat()
            )
        );
        let store = image.to_str().expect("UTF-8 path");
        assert!(
            t.adm(
                &[
                    &["--mode", "logicalunit", "--op", "new"][..],
                    &tid,
                    &["--lun", "1", "--backing-store", store, "--bstype", "rdwr"],
                ]
                .concat()
            )
        );
        assert!(
            t.adm(
                &[
                    &["--mode", "target", "--op", "bind"][..],
                    &tid,
                    &["--initiator-address", "ALL"]
                ]
                .concat()
            )
        );
        t
    }

    /// `tgtadm -C CONTROL --lld iscsi ARGS`; true when it succeeds.
    fn adm(&self, args: &[&str]) -> bool {
        Command::new("tgtadm")
            .args(["-C", &self.control.to_string(), "--lld", "iscsi"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The tgtd process (to freeze it with SIGSTOP; send SIGCONT before the drop).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// `iscsi://127.0.0.1:PORT`.
    pub fn portal(&self) -> String {
        format!("iscsi://127.0.0.1:{}", self.port)
    }

    /// `iscsi://127.0.0.1:PORT/IQN/1`.
    pub fn url(&self) -> String {
        format!("{}/{IQN}/{LUN}", self.portal())
    }
}

impl Drop for Tgtd {
    /// tgtd ignores SIGTERM: it exits when asked over its control socket once its targets
    /// are gone (SIGKILL after 5 s), and leaves its socket and lock file behind.
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        self.adm(&[
            "--mode", "target", "--op", "delete", "--force", "--tid", "1",
        ]);
        self.adm(&["--mode", "system", "--op", "delete"]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        let s = socket(self.control);
        let _ = std::fs::remove_file(&s);
        let _ = std::fs::remove_file(format!("{s}.lock"));
    }
}
