//! The snapshot point under heavy load (fio) is taken fast.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cowd::control::api::BackupState;
use cowd_tests::cli::{Background, start};
use cowd_tests::live::{fill_random, print_figures, start_backup, wait_end};
use cowd_tests::{Daemon, MIB, require};

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
