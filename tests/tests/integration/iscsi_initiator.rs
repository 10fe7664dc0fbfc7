//! cowd's iSCSI initiator (`cowd::iscsi::initiator`) against two targets, a cowd daemon and
//! tgtd: random data through `IscsiDevice` and back, in reads and writes larger than the
//! negotiated bursts; a CHECK CONDITION's sense; a portal nobody listens on is unreachable, an
//! unknown target refused. Then the `xcopy` tool: 64 MiB copied by EXTENDED COPY between two
//! exports of one daemon, byte for byte, and a list naming an unknown unit aborted with COPY
//! ABORTED / UNREACHABLE COPY TARGET.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cowd::device::BlockDevice;
use cowd::iscsi::initiator::{IscsiDevice, Session, commands};
use cowd::iscsi::url::IscsiUrl;
use cowd_tests::cli::start;
use cowd_tests::files::{assert_same_file, read_at};
use cowd_tests::live::fill_random;
use cowd_tests::tgtd::Tgtd;
use cowd_tests::{Daemon, ISCSI_BASE, MIB, bin, free_port, pattern};

const INITIATOR: &str = "iqn.2026-12.test.cowd:initiator";
const TIMEOUT: Duration = Duration::from_secs(30);

fn url(s: &str) -> IscsiUrl {
    s.parse().unwrap()
}

/// Writes random data through `dev` in one request of `len` bytes, reads it back in one, and
/// finds it in `image` (the file behind the target).
fn round_trip(dev: &IscsiDevice, image: &Path, offset: u64, len: usize, seed: u64) {
    let data = pattern(seed, len);
    dev.write_at(&data, offset, false).unwrap();
    dev.flush().unwrap();
    let mut back = vec![0u8; len];
    dev.read_at(&mut back, offset).unwrap();
    assert!(back == data, "{len} bytes at {offset} read back differ");
    assert!(
        read_at(image, offset, len) == data,
        "{len} bytes at {offset} differ in the file"
    );
}

#[test]
fn random_data_round_trips_through_cowd_and_tgtd() {
    let d = start(Daemon::builder().export("disk", 64 * MIB).iscsi());
    let dev = IscsiDevice::connect(&url(&d.iscsi_url("disk")), INITIATOR, TIMEOUT).unwrap();
    assert_eq!((dev.size(), dev.block_size()), (64 * MIB, 512));
    let burst = dev.negotiated().max_burst_length as usize;
    for (i, len) in [512, 65536 + 512, 4 * burst + 4096, 24 << 20]
        .into_iter()
        .enumerate()
    {
        round_trip(
            &dev,
            d.image("disk"),
            3 * MIB + 4096 * i as u64,
            len,
            i as u64,
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tgtd.img");
    cowd_tests::files::sparse(&file, 64 * MIB);
    let tgtd = Tgtd::start(&file);
    let dev = IscsiDevice::connect(&url(&tgtd.url()), INITIATOR, TIMEOUT).unwrap();
    assert_eq!(dev.size(), 64 * MIB);
    let n = dev.negotiated();
    let burst = n.max_burst_length as usize;
    for (i, len) in [512, 2 * burst + 512, 4 * burst + 4096, 16 << 20]
        .into_iter()
        .enumerate()
    {
        round_trip(&dev, &file, MIB + 4096 * i as u64, len, 10 + i as u64);
    }
    assert!(!dev.is_broken());
}

#[test]
fn a_check_condition_surfaces_its_sense_on_both_targets() {
    let d = start(Daemon::builder().export("disk", 8 * MIB).iscsi());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tgtd.img");
    cowd_tests::files::sparse(&file, 8 * MIB);
    let tgtd = Tgtd::start(&file);
    for target in [d.iscsi_url("disk"), tgtd.url()] {
        let mut s = Session::login(&url(&target), INITIATOR, TIMEOUT).unwrap();
        // A first command may meet a unit attention (tgtd reports the power on).
        let _ = s.command(&commands::test_unit_ready(), &[], 0).unwrap();
        let r = s
            .command(&commands::read_16(8 * MIB / 512, 1), &[], 512)
            .unwrap();
        assert_eq!(r.status, commands::CHECK_CONDITION, "{target}");
        let c = r.sense_codes().unwrap();
        assert_eq!((c.key, c.asc, c.ascq), (0x5, 0x21, 0x00), "{target}: {c}");
        let r = s.command(&commands::read_16(0, 1), &[], 512).unwrap();
        assert!(
            r.is_good() && r.data.len() == 512,
            "{target}: the session goes on"
        );
        s.logout().unwrap();
    }
}

#[test]
fn a_silent_portal_is_unreachable_and_an_unknown_target_refused() {
    let nobody = format!("iscsi://127.0.0.1:{}/{ISCSI_BASE}:disk/0", free_port());
    let e = Session::login(&url(&nobody), INITIATOR, TIMEOUT).unwrap_err();
    assert!(e.unreachable(), "{e}");

    let d = start(Daemon::builder().export("disk", 8 * MIB).iscsi());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tgtd.img");
    cowd_tests::files::sparse(&file, 8 * MIB);
    let tgtd = Tgtd::start(&file);
    for portal in [d.iscsi_portal(), tgtd.portal()] {
        let unknown = format!("{portal}/iqn.2026-12.test.nobody:none/0");
        let e = Session::login(&url(&unknown), INITIATOR, TIMEOUT).unwrap_err();
        assert!(!e.unreachable(), "{e}");
        assert!(matches!(e.status(), Some((2, _))), "{portal}: {e}");
        let e = IscsiDevice::connect(&url(&unknown), INITIATOR, TIMEOUT).unwrap_err();
        assert!(!e.unreachable(), "{e}");
    }
}

fn xcopy(args: &[&str]) -> std::process::Output {
    Command::new(bin("xcopy"))
        .args(args)
        .output()
        .expect("run xcopy")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn xcopy_copies_64_mib_between_two_exports_and_names_the_sense_of_a_refusal() {
    let d = start(
        Daemon::builder()
            .export("a", 64 * MIB)
            .export("b", 64 * MIB)
            .iscsi(),
    );
    fill_random(d.image("a"), 41);
    let (a, b) = (d.iscsi_url("a"), d.iscsi_url("b"));
    let naa_of = |u: &str| {
        let o = xcopy(&["--url", u, "--inquiry-naa"]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        text(&o.stdout).trim().to_owned()
    };
    let (naa_a, naa_b) = (naa_of(&a), naa_of(&b));
    assert_eq!(naa_a.len(), 16, "{naa_a}");
    assert_ne!(naa_a, naa_b);

    let blocks = (64 * MIB / 512).to_string();
    let o = xcopy(&[
        "--url",
        &a,
        "--src-naa",
        &naa_a,
        "--dst-naa",
        &naa_b,
        "--blocks",
        &blocks,
        "--results",
    ]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}{}", text(&o.stderr));
    assert!(out.contains("EXTENDED COPY: GOOD"), "{out}");
    assert!(out.contains("COPY STATUS: completed"), "{out}");
    assert_same_file(d.image("b"), d.image("a"));

    let o = xcopy(&[
        "--url",
        &a,
        "--dst-naa",
        "3fffffffffff0000",
        "--blocks",
        "8",
    ]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("sense key 0Ah, ASC/ASCQ 08h/04h"), "{err}");
}
