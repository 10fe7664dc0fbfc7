//! Mounts, loop devices and FUSE mounts of a test, always undone: [`Attached`]; ext4 made on an
//! image or on an export ([`Attached::ext4_on_export`]).

use std::fs::File;
use std::path::Path;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::run;

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// True if `path` is a mountpoint (from /proc/self/mountinfo: never blocks on a hung FUSE).
pub fn mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| Path::new(m) == path)
}

/// `mkfs.ext4 -q -F TARGET`: a new ext4 on a device or an image file.
pub fn mkfs_ext4(target: &Path) {
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(target));
}

/// Mounts, loop devices and FUSE mounts of one test, undone in reverse order on drop (also
/// when the test panics): lazy umount, `losetup -d` (only of a loop device still backed by the
/// file we attached), `fusermount3 -u`.
#[derive(Debug, Default)]
pub struct Attached {
    fuses: Vec<(PathBuf, Child)>,
    loops: Vec<(String, PathBuf)>,
    mounts: Vec<PathBuf>,
}

impl Attached {
    /// `mount ARGS... DIR`; `dir` is unmounted on drop.
    pub fn mount(&mut self, args: &[&str], dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        run(Command::new("mount").args(args).arg(dir));
        self.mounts.push(dir.to_owned());
    }

    /// `umount DIR` now (not lazily): panics if it fails, e.g. because the mount is busy.
    pub fn umount(&mut self, dir: &Path) {
        run(Command::new("umount").arg(dir));
        self.mounts.retain(|m| m != dir);
    }

    /// umount(2) of `dir`, which this process must not hold: panics if one of its open files
    /// is under `dir`, or if the mount stays busy.
    ///
    /// Busy for a moment is not a hold: another test thread spawning a program forks a child
    /// that shares this process's open files (close-on-exec ones too) until it calls exec, so
    /// umount may see EBUSY for those microseconds. What this process itself holds is read
    /// from /proc/self/fd first, which no other thread's spawn can disturb.
    pub fn umount_at_once(&mut self, dir: &Path) {
        let held: Vec<PathBuf> = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| target.starts_with(dir))
            .collect();
        assert!(held.is_empty(), "{} is held open: {held:?}", dir.display());
        let c = std::ffi::CString::new(path_str(dir)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            // SAFETY: a NUL-terminated path that outlives the call.
            let r = unsafe { libc::umount2(c.as_ptr(), 0) };
            let e = std::io::Error::last_os_error();
            if r == 0 {
                break;
            }
            assert!(
                e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline,
                "umount {}: {e}",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        self.mounts.retain(|m| m != dir);
    }

    /// `nbdfuse DIR URI` in the background, its output in `DIR.log`; returns `DIR/nbd`.
    pub fn nbdfuse(&mut self, dir: &Path, uri: &str) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let log = File::create(dir.with_extension("log")).unwrap();
        // Never a pipe on its stdout or stderr: it stays in the background, and a reader of
        // its output would wait for it forever.
        let child = Command::new("nbdfuse")
            .arg(dir)
            .arg(uri)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("run nbdfuse");
        self.fuses.push((dir.to_owned(), child));
        let file = dir.join("nbd");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !file.exists() {
            let (_, c) = self.fuses.last_mut().expect("just pushed");
            if let Ok(Some(st)) = c.try_wait() {
                let log = std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default();
                panic!("nbdfuse exited ({st}):\n{log}");
            }
            assert!(Instant::now() < deadline, "nbdfuse did not show {file:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        file
    }

    /// `fusermount3 -u DIR` now, and waits for that nbdfuse to exit.
    pub fn unfuse(&mut self, dir: &Path) {
        let at = self
            .fuses
            .iter()
            .position(|(d, _)| d == dir)
            .expect("a FUSE mount of ours");
        let (dir, mut child) = self.fuses.remove(at);
        run(Command::new("fusermount3").arg("-u").arg(&dir));
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(child.try_wait(), Ok(None)) {
            assert!(Instant::now() < deadline, "nbdfuse did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// An ext4 filesystem made on an NBD export and mounted on `mnt`: the export as a file
    /// through nbdfuse (in `fuse`), a loop device over that file, `mkfs.ext4`, mount. Returns
    /// the loop device. All of it is undone on drop.
    pub fn ext4_on_export(&mut self, uri: &str, fuse: &Path, mnt: &Path) -> String {
        let nbd = self.nbdfuse(fuse, uri);
        let dev = self.losetup(&nbd);
        mkfs_ext4(Path::new(&dev));
        self.mount(&[&dev], mnt);
        dev
    }

    /// `losetup -f --show FILE`; returns the loop device.
    pub fn losetup(&mut self, file: &Path) -> String {
        self.attach_loop(file, false)
    }

    /// `losetup -f --show -r FILE`: a read-only loop device.
    pub fn losetup_read_only(&mut self, file: &Path) -> String {
        self.attach_loop(file, true)
    }

    fn attach_loop(&mut self, file: &Path, read_only: bool) -> String {
        let mut cmd = Command::new("losetup");
        if read_only {
            cmd.arg("-r");
        }
        let out = run(cmd.arg("-f").arg("--show").arg(file));
        let dev = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        assert!(dev.starts_with("/dev/loop"), "losetup printed {dev:?}");
        self.loops.push((dev.clone(), file.to_owned()));
        dev
    }

    /// `losetup -d DEV` now.
    pub fn detach(&mut self, dev: &str) {
        run(Command::new("losetup").arg("-d").arg(dev));
        self.loops.retain(|(d, _)| d != dev);
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let quiet = |c: &mut Command| {
            c.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        for m in self.mounts.drain(..).rev() {
            if mounted(&m) {
                quiet(Command::new("umount").arg("-l").arg(&m));
            }
        }
        for (dev, file) in self.loops.drain(..).rev() {
            // The device may have been detached and taken by someone else meanwhile.
            let back = Command::new("losetup")
                .args(["-n", "-O", "BACK-FILE", "--list", &dev])
                .stderr(Stdio::null())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default();
            if Path::new(&back) == file {
                quiet(Command::new("losetup").arg("-d").arg(&dev));
            }
        }
        for (dir, mut child) in self.fuses.drain(..).rev() {
            if !quiet(Command::new("fusermount3").arg("-u").arg(&dir)) {
                quiet(Command::new("fusermount3").arg("-uz").arg(&dir));
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
