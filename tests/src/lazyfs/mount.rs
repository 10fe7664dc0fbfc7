//! A lazyfs mount of one test: the `lazyfs` process over a backing directory, its control
//! socket, and an unmount that always happens (also when the test panics).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::control::Control;
use crate::mounts::mounted;
use crate::{bin, require};

/// A mounted lazyfs; dropping it unmounts it and reaps the process.
#[derive(Debug)]
pub struct LazyMount {
    mountpoint: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    control: Control,
}

impl LazyMount {
    /// Mounts `backing` at `mountpoint` (created if missing); the control socket and the log
    /// go to `control` and `log`. Waits (up to 20 s) until both the mount and the socket answer.
    pub fn mount(backing: &Path, mountpoint: &Path, control: &Path, log: &Path) -> LazyMount {
        require("fusermount3");
        std::fs::create_dir_all(mountpoint).unwrap();
        let _ = std::fs::remove_file(control);
        let out = File::create(log).unwrap();
        let child = Command::new(bin("lazyfs"))
            .arg(backing)
            .arg(mountpoint)
            .arg("--control")
            .arg(control)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("run lazyfs");
        let mut m = LazyMount {
            mountpoint: mountpoint.to_owned(),
            log: log.to_owned(),
            child: Some(child),
            control: Control::new(control),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(mounted(mountpoint) && m.control.try_request("state").is_ok()) {
            if let Some(Ok(Some(st))) = m.child.as_mut().map(Child::try_wait) {
                panic!("lazyfs exited ({st}):\n{}", m.log());
            }
            assert!(
                Instant::now() < deadline,
                "lazyfs did not mount:\n{}",
                m.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        m
    }

    pub fn control(&self) -> &Control {
        &self.control
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Unmounts (lazily if the mount is still busy) and waits (up to 10 s) for the process.
    pub fn unmount(mut self) {
        self.release();
    }

    fn release(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let quiet = |args: &[&str]| {
            Command::new("fusermount3")
                .args(args)
                .arg(&self.mountpoint)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if mounted(&self.mountpoint) && !quiet(&["-u"]) {
            quiet(&["-uz"]);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for LazyMount {
    fn drop(&mut self) {
        self.release();
    }
}
