//! The control API and `cowctl` against a real daemon: the exports table and its JSON, `curl`
//! on the socket, the socket's mode and life, and cowctl's exit codes when the daemon cannot be
//! reached.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use cowd::control::api::ExportInfo;
use cowd::nbd::proto;
use cowd_tests::cli::start;
use cowd_tests::{Daemon, bin, require, run_stdout};

/// `cowctl --socket SOCKET ARGS...`, unaffected by a COWD_SOCKET in the environment.
fn cowctl(socket: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin("cowctl"));
    c.env_remove("COWD_SOCKET")
        .arg("--socket")
        .arg(socket)
        .args(args);
    c
}

fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Asserts that `out` failed with `code`, printed nothing on stdout and exactly one line on
/// stderr; returns that line.
fn failed(out: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr:?}");
    assert!(stderr.ends_with('\n'), "{stderr:?}");
    stderr.trim_end().to_owned()
}

/// One row of `cowctl exports`.
#[derive(Debug, PartialEq, Eq)]
struct Row {
    name: String,
    size: String,
    mode: String,
    connections: usize,
    path: String,
}

/// Runs `cowctl exports` and parses its table (names and paths without spaces). Also checks
/// that every column starts where its header does (left-aligned) or ends where it does
/// (right-aligned).
fn exports_table(socket: &Path) -> Vec<Row> {
    let text = run_stdout(&mut cowctl(socket, &["exports"]));
    let mut lines = text.lines();
    let header = lines.next().expect("a header line");
    let words: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(
        words,
        ["NAME", "SIZE", "MODE", "CONNECTIONS", "PATH"],
        "{text}"
    );
    let col = |h: &str| header.find(h).unwrap();
    let rows: Vec<Row> = lines
        .map(|line| {
            assert_eq!(line, line.trim_end(), "trailing spaces in {line:?}");
            let t: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(t.len(), 6, "{line:?} in\n{text}");
            let row = Row {
                name: t[0].into(),
                size: format!("{} {}", t[1], t[2]),
                mode: t[3].into(),
                connections: t[4].parse().unwrap(),
                path: t[5].into(),
            };
            assert!(line.starts_with(&row.name));
            let size_end = col("SIZE") + "SIZE".len();
            assert_eq!(
                &line[size_end - row.size.len()..size_end],
                row.size,
                "{text}"
            );
            assert_eq!(&line[col("MODE")..col("MODE") + 2], row.mode, "{text}");
            let conn_end = col("CONNECTIONS") + "CONNECTIONS".len();
            assert!(line[..conn_end].ends_with(t[4]), "{text}");
            assert_eq!(&line[col("PATH")..], row.path, "{text}");
            row
        })
        .collect();
    rows
}

fn row<'a>(rows: &'a [Row], name: &str) -> &'a Row {
    rows.iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no row {name} in {rows:?}"))
}

fn json_exports(socket: &Path) -> Vec<ExportInfo> {
    let text = run_stdout(&mut cowctl(socket, &["--json", "exports"]));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Polls `f` every 20 ms until it holds, for at most 5 s.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An NBD client in the transmission phase: fixed newstyle handshake, then NBD_OPT_GO.
fn nbd_connect(sock: &Path, export: &str) -> UnixStream {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut hello = [0u8; 18];
    s.read_exact(&mut hello).unwrap();
    assert_eq!(hello[..8], proto::NBDMAGIC.to_be_bytes());
    assert_eq!(hello[8..16], proto::IHAVEOPT.to_be_bytes());
    let flags = proto::CFLAG_FIXED_NEWSTYLE | proto::CFLAG_NO_ZEROES;
    s.write_all(&flags.to_be_bytes()).unwrap();
    let mut data = (export.len() as u32).to_be_bytes().to_vec();
    data.extend_from_slice(export.as_bytes());
    data.extend_from_slice(&0u16.to_be_bytes()); // no information requests
    let mut opt = proto::IHAVEOPT.to_be_bytes().to_vec();
    opt.extend_from_slice(&proto::OPT_GO.to_be_bytes());
    opt.extend_from_slice(&(data.len() as u32).to_be_bytes());
    opt.extend_from_slice(&data);
    s.write_all(&opt).unwrap();
    loop {
        let mut head = [0u8; 20];
        s.read_exact(&mut head).unwrap();
        assert_eq!(head[..8], proto::REPLY_MAGIC.to_be_bytes());
        let kind = u32::from_be_bytes(head[12..16].try_into().unwrap());
        let len = u32::from_be_bytes(head[16..20].try_into().unwrap());
        let mut payload = vec![0; len as usize];
        s.read_exact(&mut payload).unwrap();
        match kind {
            proto::REP_ACK => return s,
            proto::REP_INFO => continue,
            other => panic!("NBD_OPT_GO answered {other:#x}"),
        }
    }
}

/// `curl --unix-socket SOCKET http://localhost PATH`: (HTTP status, body).
fn curl(socket: &Path, path: &str) -> (u16, String) {
    require("curl");
    let out = run_stdout(
        Command::new("curl")
            .arg("-sS")
            .arg("--unix-socket")
            .arg(socket)
            .args(["-w", "\n%{http_code}"])
            .arg(format!("http://localhost{path}")),
    );
    let (body, code) = out.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_owned())
}

#[test]
fn exports_table_shows_name_size_mode_connections_and_path() {
    let d = start(
        Daemon::builder()
            .export("disk", 1 << 30)
            .export("ro", 3 << 20)
            .export("tiny", 1000)
            .args(&["--read-only", "ro"]),
    );
    let rows = exports_table(&d.control);
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["disk", "ro", "tiny"]);
    let expect = |name: &str, size: &str, mode: &str| Row {
        name: name.into(),
        size: size.into(),
        mode: mode.into(),
        connections: 0,
        path: d.image(name).display().to_string(),
    };
    assert_eq!(*row(&rows, "disk"), expect("disk", "1.0 GiB", "rw"));
    assert_eq!(*row(&rows, "ro"), expect("ro", "3.0 MiB", "ro"));
    assert_eq!(*row(&rows, "tiny"), expect("tiny", "1000 B", "rw"));
}

#[test]
fn connections_count_clients_in_transmission() {
    let d = start(
        Daemon::builder()
            .export("disk", 1 << 20)
            .export("other", 1 << 20),
    );
    assert_eq!(row(&exports_table(&d.control), "disk").connections, 0);
    let client = nbd_connect(&d.sock, "disk");
    wait_until("CONNECTIONS shows 1", || {
        row(&exports_table(&d.control), "disk").connections == 1
    });
    assert_eq!(row(&exports_table(&d.control), "other").connections, 0);
    let json = json_exports(&d.control);
    assert_eq!(
        json.iter().map(|e| e.connections).collect::<Vec<_>>(),
        [1, 0]
    );
    drop(client);
    wait_until("CONNECTIONS is back to 0", || {
        row(&exports_table(&d.control), "disk").connections == 0
    });
}

#[test]
fn json_output_is_the_api_answer() {
    let d = start(
        Daemon::builder()
            .export("disk", 64 << 20)
            .export("ro", 4096)
            .args(&["--read-only", "ro"]),
    );
    let text = run_stdout(&mut cowctl(&d.control, &["exports", "--json"]));
    assert!(
        text.starts_with("[\n  {\n    \"name\": \"disk\",\n"),
        "not pretty: {text}"
    );
    assert!(text.ends_with("]\n"), "{text:?}");
    let list: Vec<ExportInfo> = serde_json::from_str(&text).unwrap();
    assert_eq!(list.len(), 2);
    for (e, (name, size, read_only)) in list
        .iter()
        .zip([("disk", 64 << 20, false), ("ro", 4096, true)])
    {
        assert_eq!(e.name, name);
        assert_eq!(e.path, d.image(name).display().to_string());
        assert_eq!((e.size, e.read_only, e.connections), (size, read_only, 0));
        assert!(!e.description.is_empty());
    }
    // Exactly what the API answers, only re-indented.
    let (code, body) = curl(&d.control, "/v1/exports");
    assert_eq!(code, 200);
    let api: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ours: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(ours, api);
    let squeeze = |s: &str| s.split_whitespace().collect::<String>();
    assert_eq!(squeeze(&text), squeeze(&body));
}

#[test]
fn curl_on_the_socket() {
    let d = start(Daemon::builder().export("disk", 1 << 20));
    let (code, body) = curl(&d.control, "/v1/exports");
    assert_eq!(code, 200, "{body}");
    let list: Vec<ExportInfo> = serde_json::from_str(&body).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].name.as_str(), list[0].size), ("disk", 1 << 20));
    let (code, body) = curl(&d.control, "/v1/no-such-thing");
    assert_eq!(code, 404, "{body}");
    let (code, _) = curl(&d.control, "/v2/exports");
    assert_eq!(code, 404);
}

#[test]
fn control_socket_is_a_socket_of_mode_0600() {
    let d = start(Daemon::builder().export("disk", 1 << 20));
    let meta = std::fs::metadata(&d.control).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
}

#[test]
fn missing_socket_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    let line = failed(&output(&mut cowctl(&sock, &["exports"])), 2);
    assert_eq!(
        line,
        format!(
            "cowctl: cannot reach cowd at {}: No such file or directory \
             (is the daemon running? --socket / COWD_SOCKET choose another socket)",
            sock.display()
        )
    );
    // The same through COWD_SOCKET, with --json.
    let out = output(
        Command::new(bin("cowctl"))
            .env("COWD_SOCKET", &sock)
            .args(["--json", "exports"]),
    );
    let line = failed(&out, 2);
    assert!(line.contains(&sock.display().to_string()), "{line}");
}

#[test]
fn stale_socket_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("stale.sock");
    drop(UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let line = failed(&output(&mut cowctl(&sock, &["exports"])), 2);
    assert!(
        line.starts_with(&format!(
            "cowctl: cannot reach cowd at {}: Connection refused (",
            sock.display()
        )),
        "{line}"
    );
}

/// Serves one connection on a new socket: reads the request head, then writes `answer`.
fn fake_server(dir: &Path, answer: impl Into<Vec<u8>>) -> std::path::PathBuf {
    let answer = answer.into();
    let sock = dir.join("fake.sock");
    let l = UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
            line.clear();
        }
        let _ = r.get_mut().write_all(&answer);
    });
    sock
}

#[test]
fn non_http_answer_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let sock = fake_server(dir.path(), "SSH-2.0-OpenSSH_9.2\r\n");
    let line = failed(&output(&mut cowctl(&sock, &["exports"])), 2);
    assert!(line.contains("the answer is not HTTP"), "{line}");
}

#[test]
fn api_error_exits_1_with_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let body = br#"{"error":"export disk is busy"}"#;
    let answer = format!(
        "HTTP/1.1 409 Conflict\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
        body.len(),
        std::str::from_utf8(body).unwrap()
    );
    let sock = fake_server(dir.path(), answer);
    let line = failed(&output(&mut cowctl(&sock, &["exports"])), 1);
    assert_eq!(line, "cowctl: export disk is busy");
}

#[test]
fn usage_errors_exit_2_and_help_documents_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    for args in [
        &["no-such-command"][..],
        &[],
        &["exports", "--no-such-flag"],
    ] {
        let out = output(&mut cowctl(&sock, args));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
    let help = run_stdout(Command::new(bin("cowctl")).arg("--help"));
    for needle in [
        "exports",
        "--socket",
        "COWD_SOCKET",
        "--json",
        "Exit status:",
        "0  success",
        "1  the daemon refused",
        "2  cannot reach the daemon, or bad usage",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
}

#[test]
fn control_socket_is_removed_on_sigterm() {
    let mut d = start(Daemon::builder().export("disk", 1 << 20));
    assert!(d.control.exists());
    // Like `Daemon::stop`, but keeping the temp directory (which `stop` deletes) to look in it.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(d.pid() as i32, libc::SIGTERM) };
    wait_until("cowd exits after SIGTERM", || !d.running());
    assert!(d.dir().is_dir());
    assert!(
        !d.control.exists(),
        "control socket left behind:\n{}",
        d.log()
    );
    let line = failed(&output(&mut cowctl(&d.control, &["exports"])), 2);
    assert!(line.contains("No such file or directory"), "{line}");
}
