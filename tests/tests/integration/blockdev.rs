//! cowd on a real block device: a loop device over a sparse file.
//!
//! - the `BlockDevice` conformance suite runs in-process against `FileDevice` on fresh loop
//!   devices (buffered and `O_DIRECT`);
//! - qemu-io writes, zeroes and discards through a cowd serving the loop device;
//! - a device or file that cowd serves cannot be served a second time ("in use").
//!
//! Needs root (losetup). Every loop device is detached by a drop guard, also when a test fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cowd::device::conformance::{self, Subject};
use cowd::device::{BlockDevice, FileDevice, FileOptions};
use cowd_tests::files::read_at;
use cowd_tests::{Daemon, bin, require, run, run_stdout};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// A loop device over a sparse temp file; detached (and the file removed) on drop.
#[derive(Debug)]
struct Loop {
    dev: PathBuf,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Loop {
    fn new(size: u64) -> Loop {
        require("losetup");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("backing.img");
        cowd_tests::files::sparse(&file, size);
        // Tests attach loop devices in parallel; retry if another one took the free device.
        let mut tries = 0;
        let out = loop {
            let out = Command::new("losetup")
                .args(["-f", "--show"])
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
            "losetup -f --show failed (these tests need root and loop devices): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dev = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        // The guard exists before any check that could fail.
        let lo = Loop {
            dev,
            file,
            _dir: dir,
        };
        assert!(
            lo.dev.to_string_lossy().starts_with("/dev/loop"),
            "losetup printed {:?}",
            lo.dev
        );
        lo
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let ok = Command::new("losetup")
            .arg("-d")
            .arg(&self.dev)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("warning: losetup -d {} failed", self.dev.display());
        }
    }
}

fn assert_bytes(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!(
            "{what}: differs at +{i} (got {:#04x}, want {:#04x})",
            got[i], want[i]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// (a) conformance

fn loop_subject(size: u64, direct: bool) -> Subject {
    // A little more than asked for: the suite only needs `size` bytes.
    let lo = Loop::new(size.max(conformance::SIZE) + MIB);
    let dev = FileDevice::open(
        &lo.dev,
        FileOptions {
            read_only: false,
            direct,
        },
    )
    .unwrap_or_else(|e| panic!("open {}: {e}", lo.dev.display()));
    assert!(dev.is_block_device());
    Subject::new(dev).keep(lo)
}

#[test]
fn conformance_on_a_loop_device() {
    conformance::run_all(&|size| loop_subject(size, false));
}

#[test]
fn conformance_on_a_loop_device_with_o_direct() {
    conformance::run_all(&|size| loop_subject(size, true));
}

#[test]
fn file_device_on_a_loop_device_reports_what_it_is() {
    let lo = Loop::new(64 * MIB);
    let dev = FileDevice::open(&lo.dev, FileOptions::default()).unwrap();
    assert!(dev.is_block_device());
    assert_eq!(dev.size(), 64 * MIB);
    let caps = dev.capabilities();
    assert!(caps.flush && caps.fua && caps.trim && caps.zero && caps.multi_conn);
    assert!(!caps.read_only);
    // A second exclusive open of the same device is refused while the first is open.
    let second = FileDevice::open(&lo.dev, FileOptions::default()).unwrap_err();
    assert!(second.to_string().contains("in use"), "{second}");
    drop(dev);
    FileDevice::open(&lo.dev, FileOptions::default()).unwrap();
}

// ---------------------------------------------------------------------------------------------
// (b) serving a loop device

#[test]
fn qemu_io_through_cowd_on_a_loop_device() {
    require("qemu-io");
    let lo = Loop::new(64 * MIB);
    let d = Daemon::builder().export_path("disk", &lo.dev).start();
    let uri = d.uri("disk");

    require("nbdinfo");
    let info: serde_json::Value =
        serde_json::from_str(&run_stdout(Command::new("nbdinfo").args(["--json", &uri]))).unwrap();
    let e = &info["exports"][0];
    assert_eq!(e["export-size"], 64 * MIB, "{e:#}");
    assert_eq!(e["can_trim"], true, "{e:#}");
    assert_eq!(e["can_zero"], true, "{e:#}");
    assert_eq!(e["can_multi_conn"], true, "{e:#}");

    let cmds = [
        format!("write -P 0x61 0 {}", 4 * MIB),
        format!("write -f -P 0x62 {} {}", 8 * MIB, MIB),
        "write -P 0x63 12345 1000".to_owned(),
        format!("write -z {} {}", MIB, 256 * KIB),
        format!("write -z -u {} {}", 2 * MIB, 512 * KIB),
        format!("write -z {} 999", 3 * MIB + 7),
        format!("discard {} {}", 8 * MIB + 256 * KIB, 256 * KIB),
        format!("write -P 0x64 {} 4096", 64 * MIB - 4096),
        "flush".to_owned(),
        "read -P 0x61 0 12345".to_owned(),
        "read -P 0x63 12345 1000".to_owned(),
        format!("read -P 0x61 13345 {}", MIB - 13345),
        format!("read -P 0 {} {}", MIB, 256 * KIB),
        format!("read -P 0x61 {} {}", MIB + 256 * KIB, 768 * KIB),
        format!("read -P 0 {} {}", 2 * MIB, 512 * KIB),
        format!("read -P 0x61 {} 7", 3 * MIB),
        format!("read -P 0 {} 999", 3 * MIB + 7),
        format!("read -P 0x61 {} 100", 3 * MIB + 1006),
        format!("read -P 0x62 {} {}", 8 * MIB, 256 * KIB),
        format!("read -P 0x62 {} {}", 8 * MIB + 512 * KIB, 512 * KIB),
        format!("read -P 0 {} {}", 4 * MIB, 4 * MIB),
        format!("read -P 0x64 {} 4096", 64 * MIB - 4096),
    ];
    let mut c = Command::new("qemu-io");
    c.args(["-f", "raw", &uri]);
    for cmd in &cmds {
        c.arg("-c").arg(cmd);
    }
    let out = run(&mut c);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("failed") && !text.contains("Pattern verification"),
        "{text}"
    );

    // The device itself (and, after the flush, the loop's backing file) hold the same bytes.
    let mut want = vec![0x61u8; 4 * MIB as usize];
    want[12345..13345].fill(0x63);
    want[MIB as usize..(MIB + 256 * KIB) as usize].fill(0);
    want[2 * MIB as usize..(2 * MIB + 512 * KIB) as usize].fill(0);
    want[(3 * MIB + 7) as usize..(3 * MIB + 7 + 999) as usize].fill(0);
    assert_bytes(&read_at(&lo.dev, 0, want.len()), &want, "device 0..4M");
    let dev_tail = read_at(&lo.dev, 8 * MIB, MIB as usize);
    assert_bytes(&dev_tail[..256 * 1024], &[0x62; 256 * 1024], "device at 8M");
    // The discarded range: a loop device over a file punches it, so it reads as zeroes.
    assert_bytes(
        &dev_tail[256 * 1024..512 * 1024],
        &[0; 256 * 1024],
        "device: discarded range",
    );
    assert_bytes(
        &dev_tail[512 * 1024..],
        &[0x62; 512 * 1024],
        "device at 8.5M",
    );
    assert_bytes(
        &read_at(&lo.dev, 64 * MIB - 4096, 4096),
        &[0x64; 4096],
        "device end",
    );
    assert!(d.stop().success(), "cowd did not exit cleanly");
    assert_bytes(
        &read_at(&lo.file, 0, want.len()),
        &want,
        "backing file 0..4M",
    );
    assert_bytes(
        &read_at(&lo.file, 64 * MIB - 4096, 4096),
        &[0x64; 4096],
        "backing file end",
    );
}

// ---------------------------------------------------------------------------------------------
// (c) exclusivity

/// Runs a second `cowd serve` of `path`; it must exit with an error within 20 s. Returns its
/// stderr.
fn second_serve_fails(dir: &Path, path: &Path, extra: &[&str]) -> String {
    let mut child = Command::new(bin("cowd"))
        .arg("serve")
        .arg("--nbd")
        .arg(format!("unix:{}", dir.join("second.sock").display()))
        .arg("--control")
        .arg(dir.join("second-control.sock"))
        .arg("--export")
        .arg(format!("disk={}", path.display()))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cowd");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a second cowd serving {} did not fail", path.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        !status.success(),
        "second cowd on {} exited successfully",
        path.display()
    );
    assert!(
        err.contains("in use"),
        "second cowd on {}: no \"in use\" in:\n{err}",
        path.display()
    );
    err
}

#[test]
fn a_served_loop_device_cannot_be_served_twice() {
    let lo = Loop::new(16 * MIB);
    let d = Daemon::builder().export_path("disk", &lo.dev).start();
    let other = tempfile::tempdir().unwrap();
    let err = second_serve_fails(other.path(), &lo.dev, &[]);
    assert!(err.contains(&lo.dev.display().to_string()), "{err}");
    second_serve_fails(other.path(), &lo.dev, &["--read-only", "disk"]);
    // The first daemon is unharmed and still serves.
    let out = run_stdout(Command::new("nbdinfo").args(["--size", &d.uri("disk")]));
    assert_eq!(out.trim(), (16 * MIB).to_string());
    assert!(d.stop().success());
    // Once it is gone the device is free again.
    let d2 = Daemon::builder().export_path("disk", &lo.dev).start();
    let out = run_stdout(Command::new("nbdinfo").args(["--size", &d2.uri("disk")]));
    assert_eq!(out.trim(), (16 * MIB).to_string());
    assert!(d2.stop().success());
}

#[test]
fn a_served_file_cannot_be_served_twice() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    cowd_tests::files::sparse(&img, 8 * MIB);
    let other = tempfile::tempdir().unwrap();

    let d = Daemon::builder().export_path("disk", &img).start();
    let err = second_serve_fails(other.path(), &img, &[]);
    assert!(err.contains(&img.display().to_string()), "{err}");
    // Read-only serving takes a shared lock, which the writer's exclusive lock also refuses.
    second_serve_fails(other.path(), &img, &["--read-only", "disk"]);
    assert!(d.stop().success());

    // Two read-only daemons may share a file, but a writer cannot join them.
    let ro = || {
        Daemon::builder()
            .export_path("disk", &img)
            .args(&["--read-only", "disk"])
            .start()
    };
    let (ro1, ro2) = (ro(), ro());
    second_serve_fails(other.path(), &img, &[]);
    drop((ro1, ro2));

    // With every daemon gone the file is free for a writer again.
    require("qemu-io");
    let d = Daemon::builder().export_path("disk", &img).start();
    run(Command::new("qemu-io").args(["-f", "raw", &d.uri("disk"), "-c", "write -P 0x5c 0 16"]));
    assert!(d.stop().success());
    assert_eq!(read_at(&img, 0, 16), vec![0x5c; 16]);
}
