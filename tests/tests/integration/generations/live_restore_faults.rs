//! Live restore under trouble: kill -9 of cowd mid-way (the restore resumes at the restart, a
//! flushed write survives, the destination ends as the generation plus the writes), and a
//! chunk missing from the repository (EIO for exactly its blocks, the rest served, the reason
//! in the status).

use std::os::unix::fs::FileExt;
use std::process::Command;
use std::time::Duration;

use cowd::control::api::RestoreState;
use cowd_tests::cli::{kill_9, ok, path_str, restart, start};
use cowd_tests::repo::{Ctl, chunk_path, index_digests};
use cowd_tests::{Daemon, MIB, pattern, require, run};

/// A daemon serving `disk` (64 MiB of pattern data) with one backup of it in a repository of
/// 1 MiB chunks; returns the daemon, its repository and the backup's id.
fn backed_up(seed: u64) -> (Daemon, Ctl, String, Vec<u8>) {
    let d = start(Daemon::builder().export("disk", 64 * MIB));
    let image = pattern(seed, (64 * MIB) as usize);
    // Before any backup: the first one is full, so writing behind cowd's back is fine here.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(d.image("disk"))
        .unwrap();
    f.write_all_at(&image, 0).unwrap();
    f.sync_all().unwrap();
    let ctl = Ctl::new(&d.control, &d.dir().join("repo"));
    ctl.init(Some("1M"));
    let id = ctl.backup("disk", &[]).id;
    (d, ctl, id, image)
}

/// Reads `len` bytes at `offset` of `uri` with libnbd's Python module; `Err(stderr)` when the
/// read fails.
fn nbd_read(uri: &str, offset: u64, len: u64) -> Result<Vec<u8>, String> {
    let script = format!(
        "import nbd, sys\nh = nbd.NBD()\nh.connect_uri({uri:?})\nsys.stdout.buffer.write(h.pread({len}, {offset}))\n"
    );
    let out = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn kill_9_mid_live_restore_resumes_and_keeps_flushed_writes() {
    require("qemu-io");
    let (mut d, ctl, id, image) = backed_up(81);
    let to = d.dir().join("live.img");
    ok(&ctl.in_repo(&[
        "restore",
        &id,
        "--live",
        "--export",
        "live",
        "--to",
        path_str(&to),
        "--max-rate",
        "16",
    ]));
    // Written and flushed through the live export: one whole 64 KiB run, one partial sector.
    run(Command::new("qemu-io").args([
        "-f",
        "raw",
        &d.uri("live"),
        "-c",
        "write -P 171 8M 64k",
        "-c",
        "write -P 205 40961k 512",
        "-c",
        "flush",
    ]));
    kill_9(&mut d);
    let _again = restart(&d, d.image("disk"), "cowd-2.log");
    let resumed = ctl
        .restores()
        .into_iter()
        .find(|r| r.live && r.export.as_deref() == Some("live"))
        .expect("the live restore resumed");
    println!(
        "resumed {}: {}/{} chunks",
        resumed.id, resumed.chunks_done, resumed.chunks_total
    );
    let mut want = image.clone();
    want[(8 * MIB) as usize..(8 * MIB + 65536) as usize].fill(171);
    let at = 40961 * 1024;
    want[at..at + 512].fill(205);
    assert_eq!(
        nbd_read(&d.uri("live"), 8 * MIB - 4096, 65536 + 8192).unwrap(),
        want[(8 * MIB - 4096) as usize..(8 * MIB + 65536 + 4096) as usize],
        "the flushed write after the restart"
    );
    // Faster now: the rate limit is the record's; prioritizing everything is the user's way.
    ok(&ctl.run(&["prioritize", "live", "0", "64M"]));
    let end = ctl.wait_restore(&resumed.id, Duration::from_secs(120));
    assert_eq!(end.state, RestoreState::Done, "{end:?}");
    let got = std::fs::read(&to).unwrap();
    assert!(
        got == want,
        "the destination is not the generation plus the writes"
    );
}

#[test]
fn a_missing_chunk_fails_only_its_blocks() {
    let (d, ctl, id, image) = backed_up(82);
    let repo = d.dir().join("repo");
    let digests = index_digests(&repo, &id);
    let lost = 5;
    std::fs::remove_file(chunk_path(&repo, &digests[lost])).unwrap();
    let to = d.dir().join("live.img");
    ok(&ctl.in_repo(&[
        "restore",
        &id,
        "--live",
        "--export",
        "live",
        "--to",
        path_str(&to),
    ]));
    let e = nbd_read(&d.uri("live"), lost as u64 * MIB + 4096, 4096).unwrap_err();
    assert!(e.contains("Input/output error") || e.contains("EIO"), "{e}");
    let ok_at = 9 * MIB;
    assert_eq!(
        nbd_read(&d.uri("live"), ok_at, 65536).unwrap(),
        image[ok_at as usize..ok_at as usize + 65536]
    );
    let live = ctl
        .restores()
        .into_iter()
        .find(|r| r.live)
        .expect("the live restore");
    let end = ctl.wait_restore(&live.id, Duration::from_secs(120));
    assert_eq!(
        (end.state, end.chunks_failed),
        (RestoreState::Failed, 1),
        "{end:?}"
    );
    let why = end.reason.unwrap_or_default();
    assert!(why.contains("chunk 5") && why.contains("EIO"), "{why}");
    // Everything else is restored and served.
    let got = std::fs::read(&to).unwrap();
    for (i, (g, w)) in got
        .chunks(MIB as usize)
        .zip(image.chunks(MIB as usize))
        .enumerate()
    {
        if i != lost {
            assert!(g == w, "chunk {i} differs");
        }
    }
}
