//! cowd against real NBD clients: nbdinfo (capabilities, export list, allocation map), qemu-io
//! (every request kind QEMU sends, with pattern verification), qemu-img (convert + compare) and
//! nbdcopy (multi-conn copies in both directions, over a Unix socket and over TCP).
//!
//! Every test starts its own daemon on temp sparse files and, besides the client's own verdict,
//! checks the bytes of the backing file.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use cowd_tests::cli::path_str;
use cowd_tests::{Daemon, pattern, require, run, run_stdout};
use serde_json::Value;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------------------------------------
// helpers

fn nbdinfo_json(args: &[&str]) -> Value {
    require("nbdinfo");
    let out = run_stdout(Command::new("nbdinfo").args(args));
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("nbdinfo {args:?}: bad JSON ({e}):\n{out}"))
}

/// The one export of an `nbdinfo --json` answer.
fn single_export(v: &Value) -> &Value {
    let exports = v["exports"].as_array().expect("exports array");
    assert_eq!(exports.len(), 1, "{v:#}");
    &exports[0]
}

/// Runs qemu-io on `uri` with the given commands; fails on any failed command or pattern
/// mismatch (qemu-io reports some of those without a non-zero exit code).
fn qemu_io(uri: &str, cmds: &[String]) -> String {
    require("qemu-io");
    let mut c = Command::new("qemu-io");
    c.args(["-f", "raw", uri]);
    for cmd in cmds {
        c.arg("-c").arg(cmd);
    }
    let out = run(&mut c);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for bad in ["failed", "Pattern verification", "error", "Error"] {
        assert!(
            !text.contains(bad),
            "qemu-io output contains {bad:?}:\n{text}"
        );
    }
    text
}

fn sha256(path: &Path) -> String {
    require("sha256sum");
    let out = run_stdout(Command::new("sha256sum").arg(path));
    out.split_whitespace()
        .next()
        .expect("sha256sum output")
        .to_owned()
}

fn read_file(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// Index of the first differing byte, for readable assertion messages.
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    if a.len() != b.len() {
        return Some(a.len().min(b.len()));
    }
    a.iter().zip(b).position(|(x, y)| x != y)
}

fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    if let Some(i) = first_difference(got, want) {
        panic!(
            "{what}: differs at byte {i} (len {} vs {}; got {:?}, want {:?})",
            got.len(),
            want.len(),
            got.get(i),
            want.get(i)
        );
    }
}

/// Writes a `size`-byte source file of pseudo-random data in 1 MiB pieces, leaving some pieces
/// as holes and filling some with explicit zeroes, so copies exercise zero detection.
fn random_source(path: &Path, size: u64, seed: u64) {
    let mut f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    for i in 0..size / MIB {
        let piece = match (i + seed) % 9 {
            2 => continue, // a hole
            5 => vec![0u8; MIB as usize],
            7 => {
                // Half data, half zeroes, not on a 4 KiB boundary.
                let mut p = pattern(seed * 1_000_003 + i, MIB as usize);
                p[300_001..].fill(0);
                p
            }
            _ => pattern(seed * 1_000_003 + i, MIB as usize),
        };
        f.write_all_at(&piece, i * MIB).unwrap();
    }
    f.flush().unwrap();
}

/// Connections that reached the transmission phase so far, when the log shows them (the
/// harness logs at debug level unless COWD_TEST_LOG says otherwise).
fn transmissions(d: &Daemon) -> Option<usize> {
    let log = d.log();
    if !log.contains("cowd ready") {
        return None;
    }
    Some(
        log.lines()
            .filter(|l| l.contains("cowd::nbd::server") && l.contains("transmission"))
            .count(),
    )
}

// ---------------------------------------------------------------------------------------------
// nbdinfo

#[test]
fn nbdinfo_json_reports_size_capabilities_and_block_sizes() {
    let d = Daemon::builder()
        .export("disk", 64 * MIB + 512)
        .export("ro", 16 * MIB)
        .args(&["--read-only", "ro"])
        .start();
    let v = nbdinfo_json(&["--json", &d.uri("disk")]);
    assert_eq!(v["protocol"], "newstyle-fixed", "{v:#}");
    assert_eq!(v["structured"], true, "{v:#}");
    let e = single_export(&v);
    assert_eq!(e["export-name"], "disk");
    assert_eq!(e["export-size"], 64 * MIB + 512, "{e:#}");
    assert_eq!(e["is_read_only"], false, "{e:#}");
    for cap in [
        "can_flush",
        "can_fua",
        "can_trim",
        "can_zero",
        "can_fast_zero",
        "can_cache",
        "can_multi_conn",
        "can_df",
    ] {
        assert_eq!(e[cap], true, "{cap}: {e:#}");
    }
    assert_eq!(e["is_rotational"], false, "{e:#}");
    assert_eq!(e["block_size_minimum"], 1, "{e:#}");
    assert_eq!(e["block_size_preferred"], 4096, "{e:#}");
    assert_eq!(e["block_size_maximum"], 33_554_432, "{e:#}");
    let contexts: Vec<&str> = e["contexts"]
        .as_array()
        .expect("contexts")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(contexts.contains(&"base:allocation"), "{e:#}");

    let v = nbdinfo_json(&["--json", &d.uri("ro")]);
    let e = single_export(&v);
    assert_eq!(e["export-name"], "ro");
    assert_eq!(e["export-size"], 16 * MIB, "{e:#}");
    assert_eq!(e["is_read_only"], true, "{e:#}");
    for cap in ["can_trim", "can_zero", "can_fast_zero"] {
        assert_eq!(e[cap], false, "{cap} on a read-only export: {e:#}");
    }
    for cap in ["can_flush", "can_cache", "can_multi_conn"] {
        assert_eq!(e[cap], true, "{cap}: {e:#}");
    }
    assert_eq!(e["block_size_maximum"], 33_554_432, "{e:#}");

    // An unknown export name is an error, not a default export.
    let missing = Command::new("nbdinfo")
        .args(["--json", &d.uri("nosuch")])
        .output()
        .unwrap();
    assert!(
        !missing.status.success(),
        "nbdinfo of a missing export succeeded"
    );
}

#[test]
fn nbdinfo_list_shows_every_export() {
    let d = Daemon::builder()
        .export("alpha", 4 * MIB)
        .export("beta", 12 * MIB)
        .start();
    let v = nbdinfo_json(&["--list", "--json", &d.uri("")]);
    let exports = v["exports"].as_array().expect("exports");
    let mut names: Vec<(&str, u64)> = exports
        .iter()
        .map(|e| {
            (
                e["export-name"].as_str().expect("name"),
                e["export-size"].as_u64().expect("size"),
            )
        })
        .collect();
    names.sort();
    assert_eq!(names, [("alpha", 4 * MIB), ("beta", 12 * MIB)], "{v:#}");
    for e in exports {
        let desc = e["description"].as_str().unwrap_or("");
        let name = e["export-name"].as_str().unwrap();
        assert!(
            desc.contains(&format!("{name}.img")),
            "description of {name} does not name its file: {desc:?}"
        );
    }
    // The plain-text listing names both as well.
    let text = run_stdout(Command::new("nbdinfo").args(["--list", &d.uri("")]));
    assert!(
        text.contains("export=\"alpha\"") && text.contains("export=\"beta\""),
        "{text}"
    );
}

#[test]
fn nbdinfo_can_and_is_answer_by_exit_code() {
    require("nbdinfo");
    let d = Daemon::builder()
        .export("disk", 4 * MIB)
        .export("ro", 4 * MIB)
        .args(&["--read-only", "ro"])
        .start();
    // nbdinfo --can/--is: exit 0 = true, 2 = false.
    let code = |args: &[&str], uri: &str| {
        Command::new("nbdinfo")
            .args(args)
            .arg(uri)
            .status()
            .unwrap()
            .code()
    };
    let (disk, ro) = (d.uri("disk"), d.uri("ro"));
    assert_eq!(code(&["--can", "multi-conn"], &disk), Some(0));
    assert_eq!(code(&["--can", "multi-conn"], &ro), Some(0));
    assert_eq!(code(&["--can", "trim"], &disk), Some(0));
    assert_eq!(code(&["--can", "zero"], &disk), Some(0));
    assert_eq!(code(&["--can", "fua"], &disk), Some(0));
    assert_eq!(code(&["--can", "trim"], &ro), Some(2));
    assert_eq!(code(&["--is", "read-only"], &ro), Some(0));
    assert_eq!(code(&["--is", "read-only"], &disk), Some(2));
}

#[test]
fn nbdinfo_map_reports_holes_and_data_exactly() {
    require("nbdinfo");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sparse.img");
    let size = 32 * MIB;
    {
        let f = File::create(&path).unwrap();
        f.set_len(size).unwrap();
        f.write_all_at(&pattern(1, 64 * KIB as usize), MIB).unwrap();
        f.write_all_at(&pattern(2, 192 * KIB as usize), 4 * MIB)
            .unwrap();
        f.write_all_at(&pattern(3, 64 * KIB as usize), size - 64 * KIB)
            .unwrap();
    }
    let d = Daemon::builder().export_path("disk", &path).start();
    let map = |d: &Daemon| -> Vec<(u64, u64, u64, String)> {
        let v = nbdinfo_json(&["--map", "--json", &d.uri("disk")]);
        v.as_array()
            .expect("map array")
            .iter()
            .map(|e| {
                (
                    e["offset"].as_u64().unwrap(),
                    e["length"].as_u64().unwrap(),
                    e["type"].as_u64().unwrap(),
                    e["description"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let hole = |o: u64, l: u64| (o, l, 3, "hole,zero".to_owned());
    let data = |o: u64, l: u64| (o, l, 0, "data".to_owned());
    assert_eq!(
        map(&d),
        vec![
            hole(0, MIB),
            data(MIB, 64 * KIB),
            hole(MIB + 64 * KIB, 3 * MIB - 64 * KIB),
            data(4 * MIB, 192 * KIB),
            hole(4 * MIB + 192 * KIB, size - 64 * KIB - 4 * MIB - 192 * KIB),
            data(size - 64 * KIB, 64 * KIB),
        ]
    );
    // Through the server: discard and unmapping zero punch holes, a write makes data.
    qemu_io(
        &d.uri("disk"),
        &[
            format!("discard {} {}", 4 * MIB, 192 * KIB),
            format!("write -z -u {} {}", MIB, 64 * KIB),
            format!("write -P 0x77 {} {}", 8 * MIB, 128 * KIB),
            format!("read -P 0 {} {}", 4 * MIB, 192 * KIB),
            format!("read -P 0 {} {}", MIB, 64 * KIB),
        ],
    );
    assert_eq!(
        map(&d),
        vec![
            hole(0, 8 * MIB),
            data(8 * MIB, 128 * KIB),
            hole(8 * MIB + 128 * KIB, size - 64 * KIB - 8 * MIB - 128 * KIB),
            data(size - 64 * KIB, 64 * KIB),
        ]
    );
    // `--map --totals`: the data fraction matches what was written.
    let totals = run_stdout(Command::new("nbdinfo").args(["--map", "--totals", &d.uri("disk")]));
    let data_bytes: u64 = totals
        .lines()
        .find(|l| l.trim_end().ends_with("data"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no data line in --totals:\n{totals}"));
    assert_eq!(data_bytes, 192 * KIB, "{totals}");
    drop(d);
    let img = read_file(&path);
    assert!(
        img[4 * MIB as usize..(4 * MIB + 192 * KIB) as usize]
            .iter()
            .all(|&b| b == 0)
    );
    assert_same_bytes(
        &img[(size - 64 * KIB) as usize..],
        &pattern(3, 64 * KIB as usize),
        "data at the end",
    );
}

// ---------------------------------------------------------------------------------------------
// qemu-io

/// A model of the export: what the backing file must contain after a qemu-io session.
struct Model(Vec<u8>);

impl Model {
    fn fill(&mut self, off: u64, len: u64, byte: u8) {
        self.0[off as usize..(off + len) as usize].fill(byte);
    }
}

#[test]
fn qemu_io_writes_zeroes_discards_and_verifies() {
    let size = 64 * MIB;
    let d = Daemon::with_disk(size);
    let uri = d.uri("disk");
    let mut m = Model(vec![0u8; size as usize]);
    let mut cmds = Vec::new();

    // Aligned pattern writes, plain and FUA, verified by qemu-io.
    cmds.push(format!("write -P 0xab 0 {}", MIB));
    m.fill(0, MIB, 0xab);
    cmds.push(format!("write -f -P 0xcd {} {}", 2 * MIB, 256 * KIB));
    m.fill(2 * MIB, 256 * KIB, 0xcd);
    cmds.push(format!("read -P 0xab 0 {}", MIB));
    cmds.push(format!("read -P 0xcd {} {}", 2 * MIB, 256 * KIB));
    // Unaligned offsets and lengths, inside data and inside a hole.
    cmds.push("write -P 0x5a 12345 1000".into());
    m.fill(12345, 1000, 0x5a);
    cmds.push("read -P 0x5a 12345 1000".into());
    cmds.push("read -P 0xab 0 12345".into());
    cmds.push(format!("read -P 0xab 13345 {}", MIB - 13345));
    cmds.push(format!("write -f -P 0x33 {} 777", 5 * MIB + 4095));
    m.fill(5 * MIB + 4095, 777, 0x33);
    cmds.push(format!("read -P 0x33 {} 777", 5 * MIB + 4095));
    // Reads spanning data and holes: verify each part of one read.
    cmds.push(format!("read -P 0 -s 0 -l 4095 {} 8192", 5 * MIB));
    cmds.push(format!("read -P 0x33 -s 4095 -l 777 {} 8192", 5 * MIB));
    cmds.push(format!("read -P 0 -s 4872 -l 3320 {} 8192", 5 * MIB));
    cmds.push(format!(
        "read -P 0xab -s 0 -l {} {} {}",
        64 * KIB,
        MIB - 64 * KIB,
        128 * KIB
    ));
    cmds.push(format!(
        "read -P 0 -s {} -l {} {} {}",
        64 * KIB,
        64 * KIB,
        MIB - 64 * KIB,
        128 * KIB
    ));
    cmds.push(format!("read -P 0 {} {}", 3 * MIB, 2 * MIB));
    // Write zeroes: without unmap (NO_HOLE), with unmap, with FUA, fast (-n), unaligned.
    cmds.push(format!("write -z {} {}", 64 * KIB, 64 * KIB));
    m.fill(64 * KIB, 64 * KIB, 0);
    cmds.push(format!("write -z -u {} {}", 256 * KIB, 128 * KIB));
    m.fill(256 * KIB, 128 * KIB, 0);
    cmds.push(format!("write -z -f {} 4096", 2 * MIB));
    m.fill(2 * MIB, 4096, 0);
    cmds.push(format!(
        "write -z -u -n {} {}",
        2 * MIB + 64 * KIB,
        64 * KIB
    ));
    m.fill(2 * MIB + 64 * KIB, 64 * KIB, 0);
    cmds.push(format!("write -z {} 3001", 512 * KIB + 17));
    m.fill(512 * KIB + 17, 3001, 0);
    cmds.push(format!("read -P 0 {} {}", 64 * KIB, 64 * KIB));
    cmds.push(format!("read -P 0xab {} {}", 128 * KIB, 128 * KIB));
    cmds.push(format!("read -P 0 {} {}", 256 * KIB, 128 * KIB));
    cmds.push(format!("read -P 0 {} 3001", 512 * KIB + 17));
    cmds.push(format!("read -P 0xab {} 17", 512 * KIB));
    cmds.push(format!("read -P 0xab {} 100", 512 * KIB + 3018));
    cmds.push(format!("read -P 0 {} 4096", 2 * MIB));
    cmds.push(format!("read -P 0xcd {} {}", 2 * MIB + 4096, 60 * KIB));
    cmds.push(format!("read -P 0 {} {}", 2 * MIB + 64 * KIB, 64 * KIB));
    cmds.push(format!(
        "read -P 0xcd {} {}",
        2 * MIB + 128 * KIB,
        128 * KIB
    ));
    // Discard of aligned ranges (cowd punches holes in a regular file: reads as zeroes).
    cmds.push(format!("write -P 0x99 {} {}", 8 * MIB, MIB));
    m.fill(8 * MIB, MIB, 0x99);
    cmds.push(format!("discard {} {}", 8 * MIB + 256 * KIB, 256 * KIB));
    m.fill(8 * MIB + 256 * KIB, 256 * KIB, 0);
    cmds.push(format!("read -P 0x99 {} {}", 8 * MIB, 256 * KIB));
    cmds.push(format!("read -P 0 {} {}", 8 * MIB + 256 * KIB, 256 * KIB));
    cmds.push(format!(
        "read -P 0x99 {} {}",
        8 * MIB + 512 * KIB,
        512 * KIB
    ));
    // Overwrites, then flush.
    cmds.push(format!("write -P 0x01 {} {}", 8 * MIB + 100, 300 * KIB));
    m.fill(8 * MIB + 100, 300 * KIB, 0x01);
    cmds.push("flush".into());
    cmds.push(format!("read -P 0x01 {} {}", 8 * MIB + 100, 300 * KIB));
    // A write larger than the maximum payload (QEMU splits it), then a full-size read.
    cmds.push(format!("write -P 0x44 {} {}", 20 * MIB, 40 * MIB));
    m.fill(20 * MIB, 40 * MIB, 0x44);
    cmds.push(format!("read -P 0x44 {} {}", 20 * MIB, 40 * MIB));
    cmds.push(format!("read -P 0x44 {} {}", 24 * MIB, 32 * MIB));
    // The last bytes of the export.
    cmds.push(format!("write -P 0xee {} 3", size - 3));
    m.fill(size - 3, 3, 0xee);
    cmds.push(format!("read -P 0xee {} 3", size - 3));
    cmds.push("flush".into());

    let out = qemu_io(&uri, &cmds);
    let verified = out.matches("read ").count();
    assert!(verified >= 20, "expected the reads to be reported:\n{out}");
    assert_same_bytes(
        &read_file(d.image("disk")),
        &m.0,
        "backing file after qemu-io",
    );

    // Beyond the end is refused by QEMU itself; a second session sees the same data.
    let out2 = qemu_io(
        &uri,
        &[
            format!("read -P 0x01 {} {}", 8 * MIB + 100, 300 * KIB),
            format!("read -P 0xee {} 3", size - 3),
            format!("read -P 0 {} {}", 12 * MIB, 8 * MIB),
            format!("read -P 0x44 {} {}", 20 * MIB, 40 * MIB),
        ],
    );
    assert!(out2.contains("read 3/3 bytes"), "{out2}");
    assert!(d.stop().success(), "cowd did not exit cleanly");
}

#[test]
fn qemu_io_on_a_read_only_export_and_export_isolation() {
    let d = Daemon::builder()
        .export("disk", 8 * MIB)
        .export("ro", 8 * MIB)
        .args(&["--read-only", "ro"])
        .start();
    {
        let f = File::options().write(true).open(d.image("ro")).unwrap();
        f.write_all_at(&[0x42; 4096], 4096).unwrap();
    }
    qemu_io(&d.uri("disk"), &[format!("write -P 0x17 0 {}", 8 * MIB)]);
    // Read-only opening reads; the writes above went to "disk" only.
    let out = Command::new("qemu-io")
        .args(["-r", "-f", "raw", &d.uri("ro")])
        .args(["-c", "read -P 0 0 4096", "-c", "read -P 0x42 4096 4096"])
        .args(["-c", &format!("read -P 0 8192 {}", 8 * MIB - 8192)])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !text.contains("failed"), "{text}");
    assert!(!text.contains("Pattern verification"), "{text}");
    // QEMU refuses to open a read-only export for writing.
    let rw = Command::new("qemu-io")
        .args(["-f", "raw", &d.uri("ro"), "-c", "write 0 512"])
        .output()
        .unwrap();
    assert!(
        !rw.status.success(),
        "qemu-io opened a read-only export read-write"
    );
    let img = read_file(d.image("ro"));
    assert!(img[..4096].iter().all(|&b| b == 0) && img[8192..].iter().all(|&b| b == 0));
    assert!(img[4096..8192].iter().all(|&b| b == 0x42));
    assert!(read_file(d.image("disk")).iter().all(|&b| b == 0x17));
}

/// True when files in the temp directory can be opened with O_DIRECT (not on old tmpfs).
fn o_direct_works(dir: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let p = dir.join("o_direct_probe");
    File::create(&p).unwrap();
    let ok = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&p)
        .is_ok();
    std::fs::remove_file(&p).unwrap();
    ok
}

#[test]
fn qemu_io_and_nbdcopy_on_an_o_direct_export() {
    if !o_direct_works(tempfile::tempdir().unwrap().path()) {
        eprintln!("skipped: the temp file system does not support O_DIRECT");
        return;
    }
    let size = 32 * MIB;
    let d = Daemon::builder()
        .export("disk", size)
        .args(&["--direct"])
        .start();
    let uri = d.uri("disk");
    // O_DIRECT needs sector-aligned requests: cowd advertises the file's 4 KiB as minimum.
    let e = single_export(&nbdinfo_json(&["--json", &uri])).clone();
    assert_eq!(e["block_size_minimum"], 4096, "{e:#}");
    assert_eq!(e["block_size_preferred"], 4096, "{e:#}");
    // QEMU honours the minimum with read-modify-write for unaligned writes and zeroes.
    let mut m = Model(vec![0u8; size as usize]);
    let mut cmds = vec![format!("write -P 0x21 0 {}", 2 * MIB)];
    m.fill(0, 2 * MIB, 0x21);
    cmds.push("write -P 0x5a 12345 1000".into());
    m.fill(12345, 1000, 0x5a);
    cmds.push("write -z 5000 3000".into());
    m.fill(5000, 3000, 0);
    cmds.push(format!("write -f -P 0x7e {} 4096", MIB));
    m.fill(MIB, 4096, 0x7e);
    cmds.push(format!("discard {} {}", 512 * KIB, 64 * KIB));
    m.fill(512 * KIB, 64 * KIB, 0);
    cmds.push(format!("write -z -u {} {}", 256 * KIB, 8 * KIB));
    m.fill(256 * KIB, 8 * KIB, 0);
    cmds.push("flush".into());
    cmds.push("read -P 0x5a 12345 1000".into());
    cmds.push("read -P 0 5000 3000".into());
    cmds.push("read -P 0x21 8000 4345".into());
    cmds.push(format!("read -P 0 {} {}", 512 * KIB, 64 * KIB));
    qemu_io(&uri, &cmds);
    assert_same_bytes(&read_file(d.image("disk")), &m.0, "backing file (O_DIRECT)");

    let src = d.dir().join("src.img");
    random_source(&src, size, 5);
    nbdcopy(&["--connections=2", "--threads=2"], path_str(&src), &uri);
    assert_eq!(
        sha256(d.image("disk")),
        sha256(&src),
        "nbdcopy into O_DIRECT"
    );
    let out = d.dir().join("out.img");
    nbdcopy(&[], &uri, path_str(&out));
    assert_eq!(sha256(&out), sha256(&src), "nbdcopy out of O_DIRECT");
    assert!(d.stop().success(), "cowd did not exit cleanly");
}

// ---------------------------------------------------------------------------------------------
// qemu-img

#[test]
fn qemu_img_convert_and_compare() {
    require("qemu-img");
    let size = 64 * MIB;
    let d = Daemon::with_disk(size);
    let src = d.dir().join("source.img");
    random_source(&src, size, 1);
    let uri = d.uri("disk");
    run(Command::new("qemu-img")
        .args(["convert", "-n", "-f", "raw", "-O", "raw"])
        .arg(&src)
        .arg(&uri));
    let out = run_stdout(
        Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "raw"])
            .arg(&src)
            .arg(&uri),
    );
    assert!(out.contains("Images are identical"), "{out}");
    assert_same_bytes(
        &read_file(d.image("disk")),
        &read_file(&src),
        "backing file",
    );

    // Change the source and convert again over the old content: zero regions must be zeroed.
    random_source(&src, size, 4);
    let differ = Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "raw"])
        .arg(&src)
        .arg(&uri)
        .output()
        .unwrap();
    assert_eq!(differ.status.code(), Some(1), "compare of different images");
    run(Command::new("qemu-img")
        .args(["convert", "-n", "-f", "raw", "-O", "raw"])
        .arg(&src)
        .arg(&uri));
    let out = run_stdout(
        Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "raw"])
            .arg(&src)
            .arg(&uri),
    );
    assert!(out.contains("Images are identical"), "{out}");
    assert_eq!(sha256(d.image("disk")), sha256(&src));
}

// ---------------------------------------------------------------------------------------------
// nbdcopy

fn nbdcopy(args: &[&str], from: &str, to: &str) {
    require("nbdcopy");
    run(Command::new("nbdcopy").args(args).arg(from).arg(to));
}

/// Copies two different sources into the export (default connections, then 4) and the export
/// out to new files, checking checksums each time. `extra` goes to every nbdcopy.
fn nbdcopy_round_trip(d: &Daemon, uri: &str, size: u64, extra: &[&str]) {
    let img = d.image("disk").to_owned();
    let a: PathBuf = d.dir().join("a.img");
    let b: PathBuf = d.dir().join("b.img");
    random_source(&a, size, 2);
    random_source(&b, size, 3);
    let (sha_a, sha_b) = (sha256(&a), sha256(&b));
    assert_ne!(sha_a, sha_b);
    let with = |args: &[&'static str]| -> Vec<&str> { [args, extra].concat() };

    // By default nbdcopy opens up to 4 connections, but no more than it has threads (one per
    // core), so on a machine with 2+ cores at least 2.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let before = transmissions(d);
    nbdcopy(&with(&[]), path_str(&a), uri);
    assert_eq!(sha256(&img), sha_a, "export after nbdcopy of a");
    if let (Some(x), Some(y), true) = (before, transmissions(d), cores >= 2) {
        assert!(
            y - x >= 2,
            "nbdcopy used {} connection(s); multi-conn ignored",
            y - x
        );
    }

    // b over a: the zero regions of b must be zeroed over a's data.
    let before = transmissions(d);
    nbdcopy(
        &with(&["--connections=4", "--threads=4", "--flush"]),
        path_str(&b),
        uri,
    );
    assert_eq!(
        sha256(&img),
        sha_b,
        "export after nbdcopy --connections=4 of b"
    );
    if let (Some(x), Some(y)) = (before, transmissions(d)) {
        assert!(
            y - x >= 4,
            "nbdcopy --connections=4 used {} connection(s)",
            y - x
        );
    }

    let out = d.dir().join("out.img");
    nbdcopy(
        &with(&["--connections=4", "--threads=4"]),
        uri,
        path_str(&out),
    );
    assert_eq!(std::fs::metadata(&out).unwrap().len(), size);
    assert_eq!(sha256(&out), sha_b, "nbdcopy out of the export");
    std::fs::remove_file(&out).unwrap();
    nbdcopy(&with(&[]), uri, path_str(&out));
    assert_eq!(
        sha256(&out),
        sha_b,
        "nbdcopy out of the export (default connections)"
    );
}

#[test]
fn nbdcopy_in_and_out_over_unix_socket() {
    let size = 256 * MIB;
    let d = Daemon::with_disk(size);
    let uri = d.uri("disk");
    nbdcopy_round_trip(&d, &uri, size, &[]);
    assert!(d.stop().success(), "cowd did not exit cleanly");
}

#[test]
fn nbdcopy_in_and_out_over_tcp() {
    let size = 128 * MIB;
    let d = Daemon::builder().export("disk", size).tcp().start();
    let uri = d.tcp_uri("disk");
    // Requests of the full advertised maximum payload (32 MiB) in both directions.
    nbdcopy_round_trip(&d, &uri, size, &["--request-size=33554432"]);
    // nbdinfo over TCP sees the same export.
    let v = nbdinfo_json(&["--json", &uri]);
    assert_eq!(single_export(&v)["export-size"], size);
    assert!(d.stop().success(), "cowd did not exit cleanly");
}
