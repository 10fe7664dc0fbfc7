//! Movers on other hosts: cowd's job table in etcd, two `cowd mover` processes each in a
//! network namespace of its own (a host of the storage network), the copy target an NBD
//! server (nbdkit, throttled) on the servers' address. A host sends the daemon an EXTENDED
//! COPY naming the copy target; the daemon puts the job in etcd. The mover copying is killed (SIGKILL)
//! mid-copy; the other takes the job over once the first one's lease runs out, copies it anew
//! and finishes it; the host's command ends GOOD, the copy is exact, and cowd lists the job.
//! Also: the etcd table keeps the rules of the job table (`jobs::table`) in a real etcd.

use std::fs::File;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cowd::jobs::table::{JobTable, JobView, wait_settled};
use cowd::jobs::{EndpointRef, JobError, JobId, JobSpec, Origin, Outcome, TransferSpec};
use cowd_tests::cli::{self, Background};
use cowd_tests::etcd::Etcd;
use cowd_tests::netns::Net;
use cowd_tests::xcopy::{extended_copy, host, list_to};
use cowd_tests::{Daemon, MIB, bin, free_port, pattern, require};

/// The export copied.
const SIZE: u64 = 64 * MIB;
/// The copy target's bandwidth in bits per second (nbdkit's rate filter): a copy of SIZE
/// takes about 4 s, time enough to kill its mover a few MiB in.
const RATE: &str = "128M";
/// The `cowd mover` processes' lease.
const LEASE: &str = "2s";

/// A job copying `bytes` of export `src` to copy target `vault`.
fn spec(bytes: u64) -> JobSpec {
    JobSpec {
        origin: Origin::Other {
            what: "movers_etcd".into(),
        },
        group: None,
        transfers: vec![TransferSpec {
            segment: 0,
            src: EndpointRef::Export("src".into()),
            src_offset: 0,
            dst: EndpointRef::CopyTarget("vault".into()),
            dst_offset: 0,
            bytes,
        }],
        carried: Vec::new(),
    }
}

fn view(t: &dyn JobTable, id: JobId) -> JobView {
    t.list()
        .unwrap()
        .into_iter()
        .find(|v| v.id == id)
        .unwrap_or_else(|| panic!("job {id} not listed"))
}

fn open_ids(t: &dyn JobTable, mover: &str) -> Vec<JobId> {
    t.open_jobs(mover)
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

/// A `cowd mover` in a namespace of the test network.
struct Mover {
    name: String,
    process: Background,
    log: PathBuf,
}

impl Mover {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Every mover's log, for a failure message.
fn logs(movers: &[Mover]) -> String {
    movers
        .iter()
        .map(|m| format!("--- {} ---\n{}", m.name, m.log()))
        .collect()
}

/// `[[copy_target]] vault`, reached at `uri`.
fn vault_setting(uri: &str) -> String {
    format!("[[copy_target]]\nname = \"vault\"\nnaa = \"5001405000000a01\"\npaths = [\"{uri}\"]\n")
}

/// Waits until something listens on `addr`.
fn wait_listening(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Byte-for-byte equality of two files, naming the first MiB that differs.
fn assert_same_bytes(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert_eq!(
        x.len(),
        y.len(),
        "{} and {} differ in size",
        a.display(),
        b.display()
    );
    if let Some(i) = (0..x.len()).step_by(MIB as usize).find(|&i| {
        let end = (i + MIB as usize).min(x.len());
        x[i..end] != y[i..end]
    }) {
        panic!(
            "{} and {} differ in the MiB at {i}",
            a.display(),
            b.display()
        );
    }
}

#[test]
fn a_job_whose_mover_is_killed_is_finished_by_a_mover_on_another_host() {
    require("nbdkit");
    // Dropped last: every process in its namespaces is gone by then.
    let net = Net::new(2);
    let server = net.server();
    let etcd = Etcd::start(Some(&server));
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.img");
    std::fs::write(&src, pattern(7, SIZE as usize)).unwrap();
    let vault = dir.path().join("vault.img");
    cowd_tests::files::sparse(&vault, SIZE);

    // The copy target: an NBD server on the servers' address, throttled.
    let vault_port = free_port();
    let _nbdkit = Background(
        Command::new("nbdkit")
            .args([
                "--exit-with-parent",
                "-f",
                "-i",
                &server,
                "-p",
                &vault_port.to_string(),
            ])
            .args(["--filter=rate", "file"])
            .arg(&vault)
            .arg(format!("rate={RATE}"))
            .stdin(Stdio::null())
            // It says so when the killed mover's connection breaks.
            .stderr(File::create(dir.path().join("nbdkit.log")).unwrap())
            .spawn()
            .expect("spawn nbdkit"),
    );
    wait_listening(&format!("{server}:{vault_port}"));
    let vault_uri = format!("nbd://{server}:{vault_port}/vault");

    // cowd: the job table in etcd, no movers of its own, its exports over NBD on the network.
    let cowd_toml = dir.path().join("cowd.toml");
    let settings = format!("etcd = \"{}\"\nlocal_movers = false\n", etcd.endpoint);
    std::fs::write(&cowd_toml, settings + &vault_setting(&vault_uri)).unwrap();
    let (nbd_port, iscsi_port) = (free_port(), free_port());
    let daemon = cli::start(Daemon::builder().export_path("src", &src).args(&[
        "--nbd",
        &format!("tcp:{server}:{nbd_port}"),
        "--iscsi",
        &format!("{server}:{iscsi_port}"),
        "--iscsi-base-name",
        cowd_tests::ISCSI_BASE,
        "--config",
        cli::path_str(&cowd_toml),
    ]));

    // Two movers, each on its host, reaching the copy target from its own initiator port.
    let movers_toml = dir.path().join("movers.toml");
    let ports: String = (0..2)
        .map(|i| {
            let addr = net.host(i);
            format!("[[port]]\nname = \"be{i}\"\nrole = \"initiator\"\naddress = \"{addr}\"\n")
        })
        .collect();
    std::fs::write(&movers_toml, ports + &vault_setting(&vault_uri)).unwrap();
    let mut movers: Vec<Mover> = (0..2)
        .map(|i| {
            let name = format!("mover-{i}");
            let log = dir.path().join(format!("{name}.log"));
            let child = net
                .command(i, &bin("cowd"))
                .args([
                    "mover",
                    "--name",
                    &name,
                    "--etcd",
                    &etcd.endpoint,
                    "--lease",
                    LEASE,
                ])
                .args(["--source", &format!("nbd://{server}:{nbd_port}")])
                .args([
                    "--config",
                    cli::path_str(&movers_toml),
                    "--port",
                    &format!("be{i}"),
                ])
                .env("RUST_LOG", "debug")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&log).unwrap())
                .spawn()
                .expect("spawn cowd mover");
            Mover {
                name,
                process: Background(child),
                log,
            }
        })
        .collect();
    let table = etcd.table("/cowd/");
    let deadline = Instant::now() + Duration::from_secs(15);
    while table.live_movers().unwrap().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "movers not registered:\n{}",
            logs(&movers)
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // A host asks the daemon for the copy (EXTENDED COPY, src -> vault); the daemon puts the
    // job in etcd and waits; the mover copying it is killed a few MiB in.
    let start = Instant::now();
    let url = format!(
        "iscsi://{server}:{iscsi_port}/{}:src/0",
        cowd_tests::ISCSI_BASE
    );
    let host = std::thread::spawn(move || {
        let mut session = host(&url).expect("iSCSI login");
        let naa = [0x50, 0x01, 0x40, 0x50, 0x00, 0x00, 0x0a, 0x01];
        extended_copy(&mut session, &list_to(&naa, SIZE / 512, 0, 0))
            .expect("EXTENDED COPY answered")
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        if let Some(j) = table.list().unwrap().first() {
            break j.id;
        }
        assert!(
            Instant::now() < deadline,
            "no job in etcd:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let (holder, at) = loop {
        let v = view(&table, id);
        if let (Some(m), true) = (&v.mover, v.bytes >= 4 * MIB) {
            break (m.clone(), v.bytes);
        }
        assert!(
            v.outcome.is_none(),
            "ended before the kill: {v:?}\n{}",
            logs(&movers)
        );
        assert!(
            Instant::now() < deadline,
            "nobody copies: {v:?}\n{}",
            logs(&movers)
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let victim = movers
        .iter_mut()
        .find(|m| m.name == holder)
        .expect("a mover of ours");
    victim.process.0.kill().unwrap();
    victim.process.0.wait().unwrap();
    let killed = Instant::now();

    // The other takes it over when the lease ends, and finishes.
    let deadline = Instant::now() + Duration::from_secs(60);
    let outcome = loop {
        if let Some(o) = table.settle(id).unwrap() {
            break o;
        }
        if let Some(o) = table.wait(id, Duration::from_millis(500)).unwrap() {
            break o;
        }
        assert!(Instant::now() < deadline, "no end:\n{}", logs(&movers));
    };
    eprintln!(
        "killed {holder} at {} MiB after {:?}; the job ended {:?} after the kill",
        at / MIB,
        killed - start,
        killed.elapsed()
    );
    assert_eq!(outcome, Outcome::Done { bytes: SIZE }, "{}", logs(&movers));
    assert_eq!(view(&table, id).claims, 2, "one claim each");
    let answer = host.join().unwrap();
    assert_eq!(answer.status, 0, "the host's EXTENDED COPY: {answer:?}");
    let survivor = movers.iter_mut().find(|m| m.name != holder).unwrap();
    assert!(survivor.log().contains("copy done"), "{}", survivor.log());
    assert_same_bytes(&src, &vault);

    // cowd lists the job: its copy service reads the same table.
    let out = cli::ok(&cli::cowctl(&daemon, &["--json", "copies"]));
    let jobs: serde_json::Value = serde_json::from_str(&out).unwrap();
    let job = jobs
        .as_array()
        .and_then(|a| a.iter().find(|j| j["id"] == id))
        .unwrap_or_else(|| panic!("job {id} not in `cowctl copies`: {out}"));
    assert_eq!(
        (job["state"].as_str(), job["claims"].as_u64()),
        (Some("done"), Some(2)),
        "{job}"
    );

    // cowd's own backup to the copy target goes the same way: the survivor reads the image
    // at T over NBD from the daemon (served under the backup's id) and writes the vault.
    std::fs::write(&vault, vec![0u8; SIZE as usize]).unwrap();
    let out = cli::cowctl(
        &daemon,
        &[
            "start-backup",
            "src",
            "--to",
            "copy-target:vault",
            "--no-quiesce",
            "--wait",
        ],
    );
    assert!(
        out.status.success(),
        "{}
{}",
        String::from_utf8_lossy(&out.stderr),
        survivor.log()
    );
    assert_same_bytes(&src, &vault);
    let copies = cli::ok(&cli::cowctl(&daemon, &["copies"]));
    assert!(
        copies.contains("backup src-")
            && copies.contains(&format!("be{} ->", 1 - holder_index(&holder))),
        "{copies}"
    );

    // The survivor stops cleanly and leaves the table.
    let name = survivor.name.clone();
    assert!(survivor.process.terminate().success(), "{}", survivor.log());
    assert!(!table.live_movers().unwrap().contains(&name), "{name} left");
}

/// The host number of mover `name` (`mover-N`).
fn holder_index(name: &str) -> usize {
    name.trim_start_matches("mover-").parse().unwrap()
}

#[test]
fn the_etcd_table_keeps_the_rules_of_the_job_table() {
    let etcd = Etcd::start(None);
    let t = etcd.table("/rules/").with_grace(Duration::from_secs(1));
    let lease = Duration::from_secs(2);
    t.heartbeat("a", lease).unwrap();
    t.heartbeat("b", lease).unwrap();
    let id = t.submit(spec(4096)).unwrap();

    // A claim is exclusive; its holder may take the job up again, anew.
    assert_eq!((open_ids(&t, "a"), open_ids(&t, "b")), (vec![id], vec![id]));
    assert!(t.claim(id, "a").unwrap());
    assert!(!t.claim(id, "b").unwrap(), "b claimed a job a holds");
    assert!(open_ids(&t, "b").is_empty());
    assert!(t.progress(id, "a", 2048, "be0 -> /v").unwrap());
    assert!(!t.progress(id, "b", 1, "x").unwrap());
    // Only the holder checkpoints; the checkpoint outlives claims (a takeover resumes there).
    assert_eq!(t.resume_at(id).unwrap(), 0);
    assert!(t.checkpoint(id, "a", 1024).unwrap());
    assert!(!t.checkpoint(id, "b", 4096).unwrap());
    assert_eq!(
        (t.resume_at(id).unwrap(), view(&t, id).durable),
        (1024, 1024)
    );
    assert!(t.resume_at(999).is_err(), "a job not in the table");
    assert!(!t.finish(id, "b", Outcome::Done { bytes: 1 }).unwrap());
    assert_eq!(
        (view(&t, id).bytes, view(&t, id).path.as_deref()),
        (2048, Some("be0 -> /v"))
    );
    assert!(t.claim(id, "a").unwrap());
    let v = view(&t, id);
    assert_eq!(
        (v.mover.as_deref(), v.claims, v.bytes, v.path),
        (Some("a"), 2, 0, None)
    );

    // a falls silent: its claim ends with its lease, and b gets the job.
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_ids(&t, "b").is_empty() {
        assert!(Instant::now() < deadline, "a's claim outlived its lease");
        t.heartbeat("b", lease).unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !t.progress(id, "a", 4096, "be0 -> /v").unwrap(),
        "a must stop"
    );
    assert!(!t.claim(id, "a").unwrap(), "a mover without a lease claims");
    assert!(t.claim(id, "b").unwrap());
    assert_eq!(view(&t, id).claims, 3);
    assert_eq!(
        t.resume_at(id).unwrap(),
        1024,
        "b resumes at a's checkpoint"
    );

    // A job ends once.
    assert!(t.finish(id, "b", Outcome::Done { bytes: 4096 }).unwrap());
    assert!(!t.finish(id, "b", Outcome::Done { bytes: 1 }).unwrap());
    t.cancel(id, "too late").unwrap();
    assert_eq!(
        t.wait(id, Duration::ZERO).unwrap(),
        Some(Outcome::Done { bytes: 4096 })
    );
    assert_eq!(view(&t, id).state(), "done");
    assert!(!t.checkpoint(id, "b", 4096).unwrap(), "an ended job");

    // A name is one live mover's: a second process of the same name is refused.
    let other = etcd.table("/rules/");
    let e = other.heartbeat("b", lease).unwrap_err();
    assert!(e.to_string().contains("registered in etcd already"), "{e}");

    // Every live mover marked the job: it fails NotReachable with every reason.
    t.heartbeat("a", lease).unwrap();
    let id = t.submit(spec(4096)).unwrap();
    t.unavailable(id, "a", "no path from a").unwrap();
    assert_eq!(t.settle(id).unwrap(), None, "b may still try");
    assert_eq!(open_ids(&t, "a"), Vec::<JobId>::new());
    t.unavailable(id, "b", "no path from b").unwrap();
    match t.wait(id, Duration::ZERO).unwrap() {
        Some(Outcome::Failed {
            error: JobError::NotReachable,
            reason,
            ..
        }) => {
            assert!(reason.contains("no path from a") && reason.contains("no path from b"));
        }
        other => panic!("{other:?}"),
    }

    // No mover alive: the job waits out its grace period, then fails.
    t.leave("a").unwrap();
    t.leave("b").unwrap();
    assert!(t.live_movers().unwrap().is_empty());
    let id = t.submit(spec(4096)).unwrap();
    assert_eq!(t.settle(id).unwrap(), None, "in its grace period");
    match wait_settled(&t, id).unwrap() {
        Outcome::Failed {
            error: JobError::NotReachable,
            reason,
            ..
        } => {
            assert_eq!(reason, "no data mover is running");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        t.wait(999, Duration::ZERO).is_err(),
        "a job not in the table"
    );
}
