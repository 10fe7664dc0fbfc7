//! Where the container may live: on a loop-device partition, beside the export, never the
//! export itself.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cowd::control::api::{BackupState, BackupStatus};
use cowd_tests::cli::{cowctl, cowctl_at, ok, partial, path_str, start, text};
use cowd_tests::files::{assert_same_image, read_at};
use cowd_tests::live::{
    Writers, copy, fill_random, ops, print_figures, start_backup, status_of, wait_end,
};
use cowd_tests::{Daemon, MIB, require};

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
    // The writers connect first and write the moment T is taken: their start-up (seconds on
    // a loaded machine) must not outlast the backup, or no block is copied before a write.
    let model = dir.join("model.img");
    let writers = Writers::overwrite_on_go(&d, &reference, &model, 4, 9);
    let started = start_backup(&d, &to, &["--container", &part, "--max-rate", "20"]);
    writers.go();
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
    assert_same_image(&to, &reference, "the backup (point in time)");
    assert_same_image(&image, &model, "the device (writes through NBD)");
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
    assert_same_image(&to, &image, "the backup");
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
    assert_same_image(&to, &image, "the export after the refusal");
    let list: Vec<BackupStatus> =
        serde_json::from_str(&ok(&cowctl_at(&d.control, &["status", "disk", "--json"]))).unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
}
