//! `cowctl start-backup EXPORT --to copy-target:NAME`: the data movers copy the image at T to a
//! copy target of cowd.toml through its paths, while the export keeps being written; the
//! errors an operator meets (an unknown name, options that do not apply, no path).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cowd::control::api::BackupState;
use cowd::device::BlockDevice;
use cowd::nbd::client::NbdDevice;
use cowd_tests::cli::{cowctl, ok};
use cowd_tests::live::{status_of, wait_end};
use cowd_tests::{Daemon, MIB, free_port, pattern, require};

const SIZE: u64 = 32 * MIB;
const NAA: &str = "3000000000000a17";

/// nbdkit serving `image` as export `vault` on loopback `port`, at most `rate` bits/s;
/// killed when dropped.
struct Nbdkit(Child);

impl Nbdkit {
    fn start(image: &Path, port: u16, rate: &str) -> Nbdkit {
        let child = Command::new("nbdkit")
            .args(["--exit-with-parent", "-f", "-i", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .args(["--filter=exportname", "--filter=rate", "file"])
            .arg(image)
            .args(["exportname=vault", "exportname-strict=true"])
            .arg(format!("rate={rate}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nbdkit");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nbdkit did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nbdkit(child)
    }
}

impl Drop for Nbdkit {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A daemon with export `disk` (random data) and copy target `vault` behind `paths`.
fn daemon(dir: &Path, paths: &[String]) -> Daemon {
    let conf = dir.join("cowd.toml");
    let quoted: Vec<String> = paths.iter().map(|p| format!("\"{p}\"")).collect();
    std::fs::write(
        &conf,
        format!(
            "[[copy_target]]\nname = \"vault\"\nnaa = \"{NAA}\"\npaths = [{}]\n",
            quoted.join(", ")
        ),
    )
    .unwrap();
    let d = Daemon::builder()
        .export("disk", SIZE)
        .args(&["--config", conf.to_str().unwrap()])
        .start();
    std::fs::write(d.image("disk"), pattern(5, SIZE as usize)).unwrap();
    d
}

fn start(d: &Daemon, to: &str) -> std::process::Output {
    cowctl(
        d,
        &["--json", "start-backup", "disk", "--to", to, "--no-quiesce"],
    )
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn the_image_at_t_goes_to_the_copy_target_past_a_dead_path_while_the_export_is_written() {
    require("nbdkit");
    let dir = tempfile::tempdir().unwrap();
    let vault = dir.path().join("vault.img");
    cowd_tests::files::sparse(&vault, SIZE);
    let (dead, up) = (free_port(), free_port());
    // 64 Mbit/s: the copy takes about 4 s, the writes below land while it runs.
    let _nbdkit = Nbdkit::start(&vault, up, "64M");
    let d = daemon(
        dir.path(),
        &[
            format!("nbd://127.0.0.1:{dead}/vault"),
            format!("nbd://127.0.0.1:{up}/vault"),
        ],
    );
    let at_t = std::fs::read(d.image("disk")).unwrap();
    let started: serde_json::Value = serde_json::from_str(&ok(&start(&d, "copy-target:vault")))
        .unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    let id = started["id"].as_str().unwrap().to_owned();

    // The snapshot is served read-only under the backup's id while the movers copy it.
    let exports = ok(&cowctl(&d, &["exports"]));
    assert!(exports.contains(&id), "{exports}");
    let dev = NbdDevice::connect(&d.uri("disk").parse().unwrap(), Duration::from_secs(10)).unwrap();
    let new = pattern(9, MIB as usize);
    for i in 0..8u64 {
        dev.write_at(&new, i * 4 * MIB + 4096, false).unwrap();
    }
    dev.flush().unwrap();
    drop(dev);

    let status = wait_end(&d.control, &id);
    assert_eq!(status.state, BackupState::Done, "{status:?}\n{}", d.log());
    assert!(
        std::fs::read(&vault).unwrap() == at_t,
        "the copy target holds the image at T"
    );
    let now = std::fs::read(d.image("disk")).unwrap();
    assert_eq!(
        &now[4096..4096 + MIB as usize],
        &new[..],
        "the writes landed"
    );
    let status = status_of(&d.control, &id);
    assert_eq!(status.target, "copy-target:vault");
    assert!(
        status.copies_before_write > 0,
        "the writes came while the copy ran: {status:?}"
    );
    let copies = ok(&cowctl(&d, &["copies"]));
    assert!(
        copies.contains("done")
            && copies.contains(&format!("backup {id}"))
            && copies.contains(&format!(":{up}/vault")),
        "{copies}"
    );
    let exports = ok(&cowctl(&d, &["exports"]));
    assert!(
        !exports.contains(&id),
        "the snapshot is no longer served: {exports}"
    );
}

#[test]
fn a_copy_target_backup_fails_with_the_reason_when_no_path_works_and_refuses_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let dead = free_port();
    let d = daemon(dir.path(), &[format!("nbd://127.0.0.1:{dead}/vault")]);

    let o = start(&d, "copy-target:tape");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no copy target named tape (cowd.toml has vault)"),
        "{}",
        stderr(&o)
    );
    let o = cowctl(
        &d,
        &[
            "start-backup",
            "disk",
            "--to",
            "copy-target:vault",
            "--max-rate",
            "10",
        ],
    );
    assert!(
        !o.status.success() && stderr(&o).contains("--max-rate"),
        "{}",
        stderr(&o)
    );

    let started: serde_json::Value =
        serde_json::from_str(&ok(&start(&d, "copy-target:vault"))).unwrap();
    let id = started["id"].as_str().unwrap().to_owned();
    let status = wait_end(&d.control, &id);
    assert_eq!(status.state, BackupState::Failed, "{status:?}");
    let reason = status.reason.unwrap_or_default();
    assert!(
        reason.contains("copy target not reachable") && reason.contains(&format!(":{dead}/vault")),
        "{reason}"
    );
    // The export is free again: a backup to a file works.
    let file = dir.path().join("after.img");
    let started: serde_json::Value =
        serde_json::from_str(&ok(&start(&d, file.to_str().unwrap()))).unwrap();
    let status = wait_end(&d.control, started["id"].as_str().unwrap());
    assert_eq!(status.state, BackupState::Done, "{status:?}");
}
