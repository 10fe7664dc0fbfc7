//! Command-line behaviour of the `cowd` binary: bad input gives one clear line and exit 1.

use std::process::Command;

fn cowd(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cowd"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn missing_device_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let sock = format!("unix:{}/s", dir.path().display());
    let ctl = format!("{}/c", dir.path().display());
    let (code, err) = cowd(&[
        "serve",
        "--export",
        "d=/nonexistent/x.img",
        "--nbd",
        &sock,
        "--control",
        &ctl,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("export d") && err.contains("/nonexistent/x.img"),
        "{err}"
    );
}

#[test]
fn bad_flags_are_refused() {
    let (code, err) = cowd(&["serve", "--export", "noequals", "--nbd", "unix:/tmp/x"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("expected NAME=PATH"), "{err}");
    let (code, err) = cowd(&["serve", "--export", "a=/x", "--nbd", "udp:1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unix:PATH or tcp:HOST:PORT"), "{err}");
}

#[test]
fn read_only_of_an_unknown_export_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("a.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let sock = format!("unix:{}/s", dir.path().display());
    let ctl = format!("{}/c", dir.path().display());
    let e = format!("a={}", img.display());
    let (code, err) = cowd(&[
        "serve",
        "--export",
        &e,
        "--read-only",
        "b",
        "--nbd",
        &sock,
        "--control",
        &ctl,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("--read-only b: no such export"), "{err}");
}
