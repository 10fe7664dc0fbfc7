//! cowd against libnbd driven from Python (the library behind nbdsh): every request type with
//! its flags, block status, structured and simple replies, the errno of each kind of bad request,
//! and multi-conn. The checks themselves are in `tests/scripts/requests.py`; each test here
//! starts its own daemon on fresh sparse files, runs one mode of the script and then looks at
//! the backing files directly.
//!
//! The system interpreter `/usr/bin/python3` is used explicitly: it is the one with the `nbd`
//! module (a `python3` earlier on PATH may not have it, and `nbdsh` itself runs `python3`).

use std::path::Path;
use std::process::Command;

use cowd_tests::files::{PYTHON, read_at, require_python_nbd, script};
use cowd_tests::{Daemon, pattern, run, run_stdout};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// Runs one mode of requests.py; panics with its output unless it succeeds.
fn requests(mode: &str, uris: &[String]) -> String {
    require_python_nbd();
    let out = run_stdout(
        Command::new(PYTHON)
            .arg(script("requests.py"))
            .arg(mode)
            .args(uris),
    );
    assert!(
        out.contains(&format!("requests.py {mode}: ok")),
        "requests.py {mode} did not report success:\n{out}"
    );
    out
}

fn assert_bytes(path: &Path, offset: u64, want: &[u8], what: &str) {
    let got = read_at(path, offset, want.len());
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!(
            "{what}: backing file differs at {} (got {:#04x}, want {:#04x})",
            offset + i as u64,
            got[i],
            want[i]
        );
    }
}

fn assert_zero(path: &Path, offset: u64, len: usize, what: &str) {
    assert_bytes(path, offset, &vec![0u8; len], what);
}

#[test]
fn libnbd_every_request_type_round_trips() {
    let d = Daemon::with_disk(64 * MIB);
    requests("good", &[d.uri("disk")]);
    let img = d.image("disk");
    // The FUA write (seed 1) with the unaligned FUA write (seed 2) inside it.
    let mut want = pattern(1, 64 * KIB as usize);
    want[12345..12345 + 1000].copy_from_slice(&pattern(2, 1000));
    assert_bytes(img, MIB, &want, "FUA writes");
    assert_bytes(
        img,
        2 * MIB,
        &pattern(3, 128 * KIB as usize),
        "write + flush",
    );
    // Zero variants at 8 MiB + i MiB: zeroes at +5096 for 300 KiB + 7, data around them.
    for i in 0..4u64 {
        let off = 8 * MIB + i * MIB;
        let p = pattern(10 + i, MIB as usize);
        let (zo, zl) = (5096usize, 300 * 1024 + 7);
        assert_bytes(img, off, &p[..zo], "before a zeroed range");
        assert_zero(img, off + zo as u64, zl, "zeroed range");
        assert_bytes(
            img,
            off + (zo + zl) as u64,
            &p[zo + zl..],
            "after a zeroed range",
        );
    }
    // Trimmed range of a regular file reads back as zeroes, neighbours intact.
    let p = pattern(50, MIB as usize);
    assert_bytes(img, 3 * MIB, &p[..128 * 1024], "before the trim");
    assert_zero(img, 3 * MIB + 128 * KIB, 256 * 1024, "trimmed range");
    assert_bytes(
        img,
        3 * MIB + 384 * KIB,
        &p[384 * 1024..900 * 1024],
        "after the trim",
    );
    // The big zero covered 16..64 MiB.
    assert_zero(img, 63 * MIB, 4096, "large zero");
    assert!(d.stop().success(), "cowd did not exit cleanly");
}

#[test]
fn libnbd_bad_requests_get_the_right_errno_and_keep_the_connection() {
    let d = Daemon::builder()
        .export("disk", 64 * MIB)
        .export("ro", 16 * MIB)
        .args(&["--read-only", "ro"])
        .start();
    requests("bad", &[d.uri("disk"), d.uri("ro")]);
    let img = d.image("disk");
    // Only the good writes landed: the pattern at 0, nothing at the end or at 8 KiB.
    assert_bytes(img, 0, &pattern(60, 4096), "good write");
    assert_zero(img, 4096, 60 * 1024, "after the good write");
    assert_zero(img, 64 * MIB - 64 * KIB, 64 * 1024, "end of the export");
    let ro = d.image("ro");
    assert_eq!(std::fs::metadata(ro).unwrap().len(), 16 * MIB);
    assert_zero(ro, 0, 1 << 20, "read-only export");
    let mut d = d;
    assert!(d.running(), "cowd died:\n{}", d.log());
    assert!(d.stop().success(), "cowd did not exit cleanly");
}

#[test]
fn libnbd_without_structured_replies() {
    let d = Daemon::with_disk(64 * MIB);
    requests("simple", &[d.uri("disk")]);
    let img = d.image("disk");
    let mut want = pattern(70, 256 * KIB as usize);
    want[3..780].copy_from_slice(&pattern(71, 777));
    want[64 * 1024..192 * 1024].fill(0);
    assert_bytes(img, 4 * MIB, &want[..200 * 1024], "simple-reply writes");
    assert_bytes(
        img,
        4 * MIB + 204 * KIB,
        &want[204 * 1024..],
        "simple-reply writes after the trim",
    );
    assert!(d.stop().success(), "cowd did not exit cleanly");
}

#[test]
fn libnbd_flush_on_one_handle_covers_writes_of_another() {
    let d = Daemon::with_disk(64 * MIB);
    requests("multiconn", &[d.uri("disk")]);
    let img = d.image("disk");
    let mut want = pattern(80, 512 * KIB as usize);
    want[100..100 + 64 * 1024].copy_from_slice(&pattern(81, 64 * 1024));
    assert_bytes(img, 6 * MIB, &want, "writes of both handles");
    for i in 0..32u64 {
        assert_bytes(
            img,
            8 * MIB + i * 4096,
            &pattern(100 + i, 4096),
            "aio writes",
        );
    }
    assert!(d.stop().success(), "cowd did not exit cleanly");
}

#[test]
fn libnbd_trim_and_zero_of_4_gib() {
    let size = 6 << 30;
    let d = Daemon::with_disk(size);
    requests("big", &[d.uri("disk")]);
    let img = d.image("disk");
    assert_zero(img, 0, 8192, "zeroed start");
    assert_zero(img, 1 << 30, 4096, "zeroed middle");
    assert_bytes(
        img,
        (1 << 32) + 4096,
        &pattern(13, 4096),
        "mark above 4 GiB",
    );
    assert_bytes(img, size - 4096, &pattern(15, 4096), "end of the export");
    // Zeroing and trimming 4 GiB of a regular file punched holes instead of writing zeroes.
    let allocated = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(img).unwrap()) * 512;
    assert!(
        allocated < 64 * MIB,
        "{allocated} bytes allocated after zeroing 4 GiB"
    );
    assert!(d.stop().success(), "cowd did not exit cleanly");
}

/// nbdsh is `python3 -m nbd`; run it with the system interpreter (see the module comment).
#[test]
fn nbdsh_commands() {
    require_python_nbd();
    let d = Daemon::with_disk(8 * MIB);
    let out = run_stdout(Command::new(PYTHON).args([
        "-m",
        "nbd",
        "-u",
        &d.uri("disk"),
        "-c",
        "assert h.get_size() == 8 * 1024 * 1024, h.get_size()",
        "-c",
        "h.pwrite(b'cowd' * 1024, 65536, nbd.CMD_FLAG_FUA)",
        "-c",
        "assert h.pread(4096, 65536) == b'cowd' * 1024",
        "-c",
        "h.zero(1024, 65536 + 1024)",
        "-c",
        "h.flush()",
        "-c",
        "print(h.pread(8, 65536 + 1020).hex())",
    ]));
    assert_eq!(out.trim(), "636f776400000000");
    let mut want = b"cowd".repeat(1024);
    want[1024..2048].fill(0);
    assert_bytes(d.image("disk"), 65536, &want, "nbdsh writes");
    // A script error is a failure (the harness sees nbdsh's exit code).
    let bad = Command::new(PYTHON)
        .args([
            "-m",
            "nbd",
            "-u",
            &d.uri("disk"),
            "-c",
            "h.pread(1, 8 << 20)",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success(), "read beyond the end succeeded");
    run(Command::new(PYTHON).args([
        "-m",
        "nbd",
        "-u",
        &d.uri("disk"),
        "-c",
        "assert h.pread(4, 65536) == b'cowd'",
    ]));
}
