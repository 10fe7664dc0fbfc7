//! Self-checking sectors (`tests/scripts/sectors.py`, as in blksnap's tests): every 4 KiB sector of
//! the backup is valid, at its own offset, with the sequence it had at T.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use cowd::control::api::BackupState;
use cowd_tests::cli::{path_str, start, text};
use cowd_tests::files::{PYTHON, read_at, require_python_nbd, script};
use cowd_tests::live::{Writers, copy, print_figures, start_backup, wait_end};
use cowd_tests::{Daemon, MIB};

fn sectors(args: &[&str]) -> Output {
    require_python_nbd();
    Command::new(PYTHON)
        .arg(script("sectors.py"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run sectors.py")
}

/// `sectors.py verify FILE CHECK...`: panics with its report unless every sector is right.
fn verify_sectors(file: &Path, check: &[&str], what: &str) {
    let mut args = vec!["verify", path_str(file)];
    args.extend_from_slice(check);
    let o = sectors(&args);
    assert!(
        o.status.success(),
        "{what}: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    eprintln!("verify {what}: {}", text(&o.stdout).trim());
}

#[test]
fn every_sector_of_the_backup_is_the_one_it_had_at_t() {
    let d = start(Daemon::builder().export("disk", 128 * MIB));
    let dir = d.dir().to_owned();
    let image = d.image("disk").to_owned();
    let uri = d.uri("disk");
    let o = sectors(&["fill", &uri, "--seq", "1"]);
    assert!(o.status.success(), "fill: {}", text(&o.stderr));
    verify_sectors(&image, &["--expect-seq", "1"], "the filled image");
    // The checker can fail: a sector written elsewhere, a stale sequence, a torn sector.
    let bad = dir.join("bad.img");
    copy(&image, &bad);
    let f = File::options().write(true).open(&bad).unwrap();
    let mut s = read_at(&image, 40 * 4096, 4096);
    f.write_all_at(&s, 41 * 4096).unwrap();
    s[100] ^= 1;
    f.write_all_at(&s, 40 * 4096).unwrap();
    drop(f);
    let o = sectors(&["verify", path_str(&bad), "--expect-seq", "1"]);
    let out = text(&o.stdout);
    assert!(
        !o.status.success()
            && out.contains("sector 40 (offset 163840): bad checksum")
            && out.contains("sector 41 (offset 167936): carries offset 163840"),
        "{out}"
    );

    let to = dir.join("b.img");
    let started = start_backup(&d, &to, &["--max-rate", "40"]);
    let stop = dir.join("sectors.stop");
    let map = dir.join("sectors.map");
    let writers = Writers::spawn(
        "sectors.py write-random",
        Command::new(PYTHON)
            .arg(script("sectors.py"))
            .args(["write-random", &uri])
            .arg(&stop)
            .arg(&map)
            .args(["--fill-seq", "1", "--threads", "4"]),
        &stop,
    );
    let end = wait_end(&d.control, &started.id);
    let stats = writers.finish();
    print_figures("sectors", &end);
    assert_eq!(end.state, BackupState::Done, "{end:?}");
    let counts = &stats["counts"];
    for k in ["runs", "split_runs", "zeroes", "trims"] {
        assert!(counts[k].as_u64().unwrap() > 0, "no {k}: {stats}");
    }
    assert!(end.copies_before_write > 0, "{end:?}");
    verify_sectors(&to, &["--expect-seq", "1"], "the backup");
    verify_sectors(&image, &["--expect-map", path_str(&map)], "the device");
}
