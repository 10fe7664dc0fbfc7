//! cowd's iSCSI target with real initiators: libiscsi's tools (`iscsi-ls`, `iscsi-inq`) and
//! QEMU's iscsi block driver (`qemu-img`, `qemu-io`), data written and read back byte for byte
//! (with and without header digests), and a live backup taken while an iSCSI initiator
//! overwrites the export: exact as of T, every write on the device.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cowd::control::api::BackupState;
use cowd_tests::cli::start;
use cowd_tests::files::assert_same_file;
use cowd_tests::live::{copy, fill_random, print_figures, start_backup, wait_end};
use cowd_tests::{Daemon, ISCSI_BASE, MIB, require, run, run_stdout};

/// QEMU's iscsi driver, through a json: filename to set options a URL cannot.
fn qemu_json(d: &Daemon, export: &str, header_digest: bool) -> String {
    let portal = d.iscsi_portal();
    let portal = portal.trim_start_matches("iscsi://");
    let digest = if header_digest { "crc32c" } else { "none" };
    format!(
        r#"json:{{"driver":"raw","file":{{"driver":"iscsi","transport":"tcp","portal":"{portal}","target":"{ISCSI_BASE}:{export}","lun":0,"header-digest":"{digest}"}}}}"#
    )
}

#[test]
fn libiscsi_tools_and_qemu_read_and_write() {
    for tool in ["iscsi-ls", "iscsi-inq", "qemu-img"] {
        require(tool);
    }
    let d = start(Daemon::builder().export("disk", 64 * MIB).iscsi());
    let url = d.iscsi_url("disk");
    // Discovery lists the target and its logical unit.
    let ls = run_stdout(Command::new("iscsi-ls").arg("-s").arg(d.iscsi_portal()));
    assert!(ls.contains(&format!("Target:{ISCSI_BASE}:disk")), "{ls}");
    assert!(ls.contains("Lun:0") && ls.contains("DIRECT_ACCESS"), "{ls}");
    let inq = run_stdout(Command::new("iscsi-inq").arg(&url));
    assert!(
        inq.contains("Vendor:COWD") && inq.contains("Product:cowd"),
        "{inq}"
    );

    // Data in through QEMU: the export's file holds it.
    let dir = d.dir().to_owned();
    let src = dir.join("src.img");
    cowd_tests::files::sparse(&src, 64 * MIB);
    fill_random(&src, 7);
    run(Command::new("qemu-img")
        .args(["convert", "-n", "-f", "raw", "-O", "raw"])
        .arg(&src)
        .arg(&url));
    assert_same_file(d.image("disk"), &src);
    // And out again, with and without header digests.
    for digest in [false, true] {
        let back = dir.join(format!("back-{digest}.img"));
        run(Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "raw"])
            .arg(qemu_json(&d, "disk", digest))
            .arg(&back));
        assert_same_file(&back, &src);
    }
    let log = d.log();
    assert!(
        log.contains("header_digest=true"),
        "no session with digests:\n{log}"
    );
}

/// One write of the iSCSI writers: (offset, length, pattern byte).
type Write = (u64, u64, u8);

/// Writes batches with `qemu-io` into `[base, base + span)` until `stop`; returns every write
/// in the order it reached the device.
fn iscsi_writer(url: String, base: u64, span: u64, seed: u64, stop: Arc<AtomicBool>) -> Vec<Write> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut done = Vec::new();
    while !stop.load(Ordering::Acquire) {
        let batch: Vec<Write> = (0..64)
            .map(|_| {
                let len = 4096 * rng.u64(1..=32);
                let off = base + 4096 * rng.u64(0..(span - len) / 4096);
                (off, len, rng.u8(1..=255))
            })
            .collect();
        let mut cmd = Command::new("qemu-io");
        cmd.args(["-f", "raw"]);
        for (off, len, p) in &batch {
            cmd.arg("-c").arg(format!("write -P {p} {off} {len}"));
        }
        cmd.arg(&url);
        run(&mut cmd);
        done.extend(batch);
    }
    done
}

fn apply(model: &Path, writes: &[Write]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::options().write(true).open(model).unwrap();
    for &(off, len, p) in writes {
        f.write_all_at(&vec![p; len as usize], off).unwrap();
    }
}

#[test]
fn a_live_backup_while_an_iscsi_initiator_writes_is_exact() {
    require("qemu-io");
    let d = start(Daemon::builder().export("disk", 128 * MIB).iscsi());
    let dir = d.dir().to_owned();
    let image = d.image("disk").to_owned();
    fill_random(&image, 11);
    let at_t = dir.join("at-t.img");
    copy(&image, &at_t);

    let to = dir.join("b.img");
    let started = start_backup(&d, &to, &["--max-rate", "40"]);
    let stop = Arc::new(AtomicBool::new(false));
    let half = 64 * MIB;
    let writers: Vec<_> = (0..2u64)
        .map(|i| {
            let (url, stop) = (d.iscsi_url("disk"), stop.clone());
            std::thread::spawn(move || iscsi_writer(url, i * half, half, 100 + i, stop))
        })
        .collect();
    let end = wait_end(&d.control, &started.id);
    stop.store(true, Ordering::Release);
    let writes: Vec<Vec<Write>> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    print_figures("iscsi writers", &end);
    assert_eq!(end.state, BackupState::Done, "{end:?}");
    assert!(
        end.copies_before_write > 0,
        "the iSCSI writes never hit a pending block: {end:?}"
    );
    eprintln!(
        "iSCSI writes during the backup: {}",
        writes.iter().map(Vec::len).sum::<usize>()
    );
    // Exact as of T, whatever the initiator wrote meanwhile.
    assert_same_file(&to, &at_t);
    // Every write on the device (the writers own disjoint halves).
    let model = dir.join("model.img");
    copy(&at_t, &model);
    for w in &writes {
        apply(&model, w);
    }
    assert_same_file(&image, &model);
}

/// `iscsi-inq URL`: (succeeded, what it printed).
fn inquiry(url: &str) -> (bool, String) {
    let o = Command::new("iscsi-inq").arg(url).output().unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success() && out.contains("Vendor:COWD"), out)
}

#[test]
fn chap_from_the_settings_file_with_mutual_authentication() {
    require("iscsi-inq");
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("cowd.toml");
    std::fs::write(
        &conf,
        "[iscsi_auth]\nuser = \"alice\"\nsecret = \"alice-secret-123\"\n\
         target_user = \"cowd\"\ntarget_secret = \"cowd-secret-456\"\n",
    )
    .unwrap();
    let d = start(
        Daemon::builder()
            .export("disk", 16 * MIB)
            .iscsi()
            .args(&["--config", conf.to_str().unwrap()]),
    );
    let url = d.iscsi_url("disk");
    let with = |user: &str, query: &str| {
        let (scheme, rest) = url.split_once("://").unwrap();
        format!("{scheme}://{user}@{rest}{query}")
    };
    let (ok, out) = inquiry(&url);
    assert!(!ok && out.contains("Authentication failure"), "{out}");
    let (ok, out) = inquiry(&with("alice%wrong-secret-99", ""));
    assert!(!ok && out.contains("Authentication failure"), "{out}");
    let (ok, out) = inquiry(&with("alice%alice-secret-123", ""));
    assert!(ok, "{out}");
    // Mutual: the target proves it knows its secret; a wrong one is refused by the initiator.
    let mutual = "?target_user=cowd&target_password=cowd-secret-456";
    let (ok, out) = inquiry(&with("alice%alice-secret-123", mutual));
    assert!(ok, "{out}");
    let wrong = "?target_user=cowd&target_password=not-the-secret";
    let (ok, out) = inquiry(&with("alice%alice-secret-123", wrong));
    assert!(!ok && out.contains("CHAP_R"), "{out}");
    // Discovery authenticates too.
    let o = Command::new("iscsi-ls")
        .arg("-s")
        .arg(d.iscsi_portal())
        .output()
        .unwrap();
    assert!(!o.status.success(), "discovery without CHAP succeeded");
}

#[test]
fn bad_chap_settings_stop_the_daemon_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    for (conf, want) in [
        (
            "user = \"a\"\nsecret = \"short\"\n",
            "shorter than 12 bytes",
        ),
        (
            "user = \"a\"\nsecret = \"long-enough-123\"\ntarget_user = \"t\"\n",
            "target_user and target_secret go together",
        ),
        (
            "user = \"a\"\nsecret = \"long-enough-123\"\ntarget_user = \"t\"\n\
             target_secret = \"long-enough-123\"\n",
            "are the same",
        ),
    ] {
        let path = tmp.path().join("cowd.toml");
        std::fs::write(&path, format!("[iscsi_auth]\n{conf}")).unwrap();
        let o = Command::new(cowd_tests::bin("cowd"))
            .args(["serve", "--export"])
            .arg(format!("disk={}", path.display()))
            .args(["--iscsi", "127.0.0.1:1", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains(want), "{conf}: {err}");
    }
}
