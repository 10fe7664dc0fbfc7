//! Copy targets, ports and copy jobs as an operator meets them: cowd.toml's `[[copy_target]]`
//! and `[[port]]` tables (checked at start), `cowctl ports` (and `ports set` while cowd runs:
//! a target port made an initiator port takes no iSCSI logins), `cowctl copies`.

use std::process::Command;

use cowd_tests::cli::cowctl;
use cowd_tests::tgtd::Tgtd;
use cowd_tests::xcopy::{extended_copy, host, list_to};
use cowd_tests::{Daemon, MIB, require};

fn stdout(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn inquiry_ok(url: &str) -> bool {
    let o = Command::new("iscsi-inq").arg(url).output().unwrap();
    o.status.success()
}

#[test]
fn ports_are_listed_and_changed_while_cowd_runs() {
    require("iscsi-inq");
    let tmp = tempfile::tempdir().unwrap();
    let vault = tmp.path().join("vault.img");
    cowd_tests::files::sparse(&vault, 16 * MIB);
    let conf = tmp.path().join("cowd.toml");
    std::fs::write(
        &conf,
        format!(
            "[[port]]\nname = \"be0\"\nrole = \"initiator\"\naddress = \"127.0.0.1\"\ngroup = \"g1\"\n\n\
             [[copy_target]]\nname = \"vault\"\nnaa = \"3000000000000a17\"\n\
             paths = [{{ via = \"{}\", port = \"be0\" }}]\n",
            vault.display()
        ),
    )
    .unwrap();
    let d = Daemon::builder()
        .export("disk", 16 * MIB)
        .iscsi()
        .args(&["--config", conf.to_str().unwrap()])
        .start();
    let portal = d.iscsi_portal().trim_start_matches("iscsi://").to_owned();
    let ports = stdout(&cowctl(&d, &["ports"]));
    assert!(
        ports.contains("be0") && ports.contains("initiator") && ports.contains("g1"),
        "{ports}"
    );
    assert!(
        ports.contains(&portal) && ports.contains("target"),
        "{ports}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&cowctl(&d, &["--json", "ports"]))).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2, "{json}");
    // The portal becomes an initiator port: logins are refused; back to target: accepted.
    assert!(inquiry_ok(&d.iscsi_url("disk")));
    let set = stdout(&cowctl(
        &d,
        &["ports", "set", &portal, "--role", "initiator"],
    ));
    assert!(set.contains("initiator"), "{set}");
    assert!(
        !inquiry_ok(&d.iscsi_url("disk")),
        "a login on an initiator port"
    );
    stdout(&cowctl(
        &d,
        &["ports", "set", &portal, "--role", "target", "--group", "g1"],
    ));
    assert!(inquiry_ok(&d.iscsi_url("disk")));
    let ports = stdout(&cowctl(&d, &["ports"]));
    assert_eq!(ports.matches("g1").count(), 2, "{ports}");
    // Refusals: unknown port, nothing to change, an initiator port cannot be a target port.
    let o = cowctl(&d, &["ports", "set", "nope", "--group", "x"]);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("no port named nope")
    );
    let o = cowctl(&d, &["ports", "set", "be0"]);
    assert!(!o.status.success());
    let o = cowctl(&d, &["ports", "set", "be0", "--role", "target"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("portal"));
    // No copy job yet.
    assert_eq!(stdout(&cowctl(&d, &["copies"])), "no copy jobs\n");
}

#[test]
fn bad_copy_settings_stop_the_daemon_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("disk.img");
    cowd_tests::files::sparse(&image, MIB);
    for (conf, want) in [
        (
            "[[copy_target]]\nname = \"v\"\npaths = [\"/x\"]\n",
            "give naa or fc_name",
        ),
        (
            "[[copy_target]]\nname = \"v\"\nnaa = \"3000000000000001\"\npaths = [\"ftp://x\"]\n",
            "expected nbd://",
        ),
        (
            "[[copy_target]]\nname = \"v\"\nnaa = \"3000000000000001\"\n\
             paths = [\"nbds://host/x\"]\n",
            "TLS",
        ),
        (
            "[[copy_target]]\nname = \"v\"\nnaa = \"3000000000000001\"\n\
             paths = [{ via = \"/x\", port = \"be9\" }]\n",
            "not an initiator port",
        ),
        (
            "[[port]]\nname = \"fe\"\nrole = \"target\"\n",
            "needs address",
        ),
        (
            "[[mover]]\nname = \"m\"\nports = [\"be9\"]\n",
            "not an initiator port",
        ),
    ] {
        let path = tmp.path().join("cowd.toml");
        std::fs::write(&path, conf).unwrap();
        let o = Command::new(cowd_tests::bin("cowd"))
            .args(["serve", "--export"])
            .arg(format!("disk={}", image.display()))
            .args(["--nbd", "tcp:127.0.0.1:1", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{conf}: {err}");
        assert!(err.contains(want), "{conf}: {err}");
    }
}

/// `qemu-nbd` serving `image` as export `vault` on loopback `port`; killed when dropped.
struct QemuNbd(std::process::Child);

impl QemuNbd {
    fn start(image: &std::path::Path, port: u16) -> QemuNbd {
        let child = Command::new("qemu-nbd")
            .args([
                "-f",
                "raw",
                "-x",
                "vault",
                "-b",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .args(["--persistent", "--shared", "4"])
            .arg(image)
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "qemu-nbd did not listen"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        QemuNbd(child)
    }
}

impl Drop for QemuNbd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn extended_copy_fails_over_to_the_second_nbd_path_and_reports_when_none_reaches() {
    require("qemu-nbd");
    let tmp = tempfile::tempdir().unwrap();
    let vault = tmp.path().join("vault.img");
    cowd_tests::files::sparse(&vault, 64 * MIB);
    let (down, up) = (cowd_tests::free_port(), cowd_tests::free_port());
    let nbd = QemuNbd::start(&vault, up);
    let conf = tmp.path().join("cowd.toml");
    std::fs::write(
        &conf,
        format!(
            "[[copy_target]]\nname = \"vault\"\nnaa = \"3000000000000a17\"\n\
             paths = [\"nbd://127.0.0.1:{down}/vault\", \"nbd://127.0.0.1:{up}/vault\"]\n"
        ),
    )
    .unwrap();
    let d = Daemon::builder()
        .export("src", 32 * MIB)
        .iscsi()
        .args(&["--config", conf.to_str().unwrap()])
        .start();
    let data = cowd_tests::pattern(7, (32 * MIB) as usize);
    std::fs::write(d.image("src"), &data).unwrap();
    let mut host = host(&d.iscsi_url("src")).unwrap();
    let naa = [0x30, 0, 0, 0, 0, 0, 0x0a, 0x17];
    // 32 MiB from the source's LBA 0 to the vault's LBA 2048 (1 MiB in).
    let answer = extended_copy(&mut host, &list_to(&naa, 65536, 0, 2048)).unwrap();
    assert_eq!(answer.status, 0, "{answer:?}\n{}", d.log());
    let copied = std::fs::read(&vault).unwrap();
    assert!(
        copied[(MIB as usize)..(33 * MIB) as usize] == data[..],
        "the copy is exact"
    );
    assert!(
        copied[..MIB as usize].iter().all(|&b| b == 0),
        "nothing before the range"
    );
    let copies = stdout(&cowctl(&d, &["copies"]));
    assert!(
        copies.contains("done") && copies.contains(&format!(":{up}/vault")),
        "{copies}"
    );
    assert!(
        copies.contains("export:src -> copy-target:vault"),
        "{copies}"
    );
    // Both paths down: COPY ABORTED, COPY TARGET DEVICE NOT REACHABLE; the reason in copies.
    drop(nbd);
    let answer = extended_copy(&mut host, &list_to(&naa, 8, 0, 0)).unwrap();
    assert_eq!(answer.status, 0x02, "{answer:?}");
    assert_eq!(
        answer.sense_codes().map(|c| (c.key, c.asc, c.ascq)),
        Some((0x0A, 0x0D, 0x02)),
        "{answer:?}"
    );
    let copies = stdout(&cowctl(&d, &["copies"]));
    assert!(
        copies.contains("failed") && copies.contains("copy target not reachable"),
        "{copies}"
    );
    assert!(
        copies.contains(&format!(":{down}/vault")) && copies.contains(&format!(":{up}/vault")),
        "{copies}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&cowctl(&d, &["--json", "copies"]))).unwrap();
    assert_eq!(json[0]["state"], "failed", "{json}");
    assert_eq!(json[1]["state"], "done", "{json}");
    assert_eq!(json[1]["bytes"], 32 * MIB, "{json}");
}

/// Sends `sig` (STOP, CONT) to process `pid`.
fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn extended_copy_reaches_a_copy_target_over_iscsi_past_a_dead_and_a_frozen_portal() {
    let tmp = tempfile::tempdir().unwrap();
    let (frozen_img, vault) = (tmp.path().join("frozen.img"), tmp.path().join("vault.img"));
    for f in [&frozen_img, &vault] {
        cowd_tests::files::sparse(f, 64 * MIB);
    }
    let frozen = Tgtd::start(&frozen_img);
    let live = Tgtd::start(&vault);
    let dead = cowd_tests::free_port();
    let conf = tmp.path().join("cowd.toml");
    std::fs::write(
        &conf,
        format!(
            "[[copy_target]]\nname = \"vault\"\nnaa = \"3000000000000a17\"\n\
             paths = [\"iscsi://127.0.0.1:{dead}/{iqn}/1\", \"{frozen}\", \"{live}\"]\n",
            iqn = cowd_tests::tgtd::IQN,
            frozen = frozen.url(),
            live = live.url(),
        ),
    )
    .unwrap();
    let d = Daemon::builder()
        .export("src", 32 * MIB)
        .iscsi()
        .args(&["--config", conf.to_str().unwrap()])
        .start();
    let data = cowd_tests::pattern(11, (32 * MIB) as usize);
    std::fs::write(d.image("src"), &data).unwrap();
    // The second portal accepts connections (the kernel does) but its tgtd answers nothing.
    signal(frozen.pid(), "STOP");
    let mut session = host(&d.iscsi_url("src")).unwrap();
    let naa = [0x30, 0, 0, 0, 0, 0, 0x0a, 0x17];
    let answer = extended_copy(&mut session, &list_to(&naa, 65536, 0, 2048));
    signal(frozen.pid(), "CONT");
    let answer = answer.unwrap();
    assert_eq!(answer.status, 0, "{answer:?}\n{}", d.log());
    let copied = std::fs::read(&vault).unwrap();
    assert!(
        copied[(MIB as usize)..(33 * MIB) as usize] == data[..],
        "the copy through tgtd is exact"
    );
    assert!(
        std::fs::read(&frozen_img).unwrap().iter().all(|&b| b == 0),
        "nothing went to the frozen target"
    );
    let copies = stdout(&cowctl(&d, &["copies"]));
    assert!(
        copies.contains("done") && copies.contains(&live.url()),
        "{copies}"
    );
    let log = d.log();
    assert!(
        log.contains(&format!("127.0.0.1:{dead}")) && log.contains(&frozen.portal()[8..]),
        "both failed paths are logged:\n{log}"
    );
}

/// A host's list to tape: a label embedded in a segment (05h), blocks of the unit (00h), a
/// catalog record in the list's inline data (04h); the stream on the file holds them in that
/// order, and a stream→block list (01h) reads them back as the stream's bytes.
#[test]
fn extended_copy_writes_embedded_and_inline_data_to_a_stream_target_between_the_blocks() {
    use cowd::stream::{Chunk, StreamReader};
    use cowd::xcopy::{CopyList, DeviceParams, LOCAL_LU, Segment, TargetDescriptor, encode};

    let tmp = tempfile::tempdir().unwrap();
    let tape = tmp.path().join("tape.stream");
    std::fs::File::create(&tape).unwrap();
    let conf = tmp.path().join("cowd.toml");
    std::fs::write(
        &conf,
        format!(
            "[[copy_target]]\nname = \"tape\"\nnaa = \"3000000000000b0b\"\nkind = \"stream\"\n\
             paths = [\"stream:{}\"]\n",
            tape.display()
        ),
    )
    .unwrap();
    let d = Daemon::builder()
        .export("src", 8 * MIB)
        .iscsi()
        .args(&["--config", conf.to_str().unwrap()])
        .start();
    let data = cowd_tests::pattern(3, (2 * MIB) as usize);
    let mut image = vec![0u8; (8 * MIB) as usize];
    image[..data.len()].copy_from_slice(&data);
    std::fs::write(d.image("src"), &image).unwrap();

    let tape_descriptor = TargetDescriptor::Identification {
        relative_initiator_port: 0,
        code_set: 1,
        association: 0,
        designator_type: 3,
        designator: vec![0x30, 0, 0, 0, 0, 0, 0x0b, 0x0b],
        device: DeviceParams::Stream {
            fixed: false,
            pad: false,
            block_len: 0,
        },
    };
    let label = b"cowd test volume 0001, written by a host".to_vec();
    // Label and catalog fill one block together, so the stream is whole blocks.
    let catalog = cowd_tests::pattern(9, 512 - label.len());
    let blocks = (data.len() / 512) as u16;
    let to_tape = CopyList {
        list_id: 1,
        list_id_usage: 0b10,
        targets: vec![tape_descriptor.clone()],
        segments: vec![
            Segment::EmbeddedToStream {
                dst: 0,
                transfer_len: 512,
                bytes: label.len() as u16,
                field: label.clone(),
                cat: false,
            },
            Segment::BlockToStream {
                src: LOCAL_LU,
                dst: 0,
                transfer_len: 1 << 20,
                blocks,
                lba: 0,
                cat: false,
            },
            Segment::InlineToStream {
                dst: 0,
                transfer_len: 4096,
                offset: 0,
                bytes: catalog.len() as u32,
                cat: false,
            },
        ],
        inline: catalog.clone(),
        ..CopyList::default()
    };
    let mut host = host(&d.iscsi_url("src")).unwrap();
    let answer = extended_copy(&mut host, &encode(&to_tape)).unwrap();
    assert_eq!(answer.status, 0, "{answer:?}\n{}", d.log());

    let mut reader = StreamReader::open([tape.clone()]).unwrap();
    let (mut kinds, mut bytes) = (Vec::new(), Vec::new());
    while let Some(chunk) = reader.next_chunk().unwrap() {
        if let Chunk::Data { offset, .. } = chunk {
            assert_eq!(offset, bytes.len() as u64 - label.len() as u64, "in order");
        }
        kinds.push(matches!(chunk, Chunk::Inline(_)));
        bytes.extend_from_slice(chunk.bytes());
    }
    let in_order = [&label[..], &data, &catalog].concat();
    assert!(bytes == in_order, "the stream holds label, blocks, catalog");
    assert!(kinds[0] && *kinds.last().unwrap() && !kinds[1..kinds.len() - 1].contains(&true));
    let copies = stdout(&cowctl(&d, &["copies"]));
    assert!(
        copies.contains("inline data -> copy-target:tape"),
        "{copies}"
    );

    // Back: the whole stream, label and catalog included, to LBA 8192 (4 MiB in).
    let from_tape = CopyList {
        list_id: 2,
        list_id_usage: 0b10,
        targets: vec![tape_descriptor],
        segments: vec![Segment::StreamToBlock {
            src: 0,
            dst: LOCAL_LU,
            transfer_len: 1 << 20,
            blocks: (in_order.len() / 512) as u16,
            lba: 8192,
            cat: false,
        }],
        ..CopyList::default()
    };
    let answer = extended_copy(&mut host, &encode(&from_tape)).unwrap();
    assert_eq!(answer.status, 0, "{answer:?}\n{}", d.log());
    let image = std::fs::read(d.image("src")).unwrap();
    let back = &image[(4 * MIB) as usize..(4 * MIB) as usize + in_order.len()];
    assert!(
        back == in_order,
        "the stream's bytes, in order, from LBA 8192"
    );
}
