//! cowd's NBD client (`cowd::nbd::client::NbdDevice`, the way movers reach copy targets)
//! against real servers:
//!
//! - the `BlockDevice` conformance suite through nbdkit's memory plugin and qemu-nbd on a file;
//! - nbdkit enforcing a 64 KiB maximum payload (requests must be split), without
//!   WRITE_ZEROES (zeroes are written as data) and refusing fast zeroes (ENOTSUP);
//! - read-only servers, unknown exports (refused by name, not "unreachable"), servers
//!   without the fixed newstyle handshake (a protocol error);
//! - data written through qemu-nbd or a cowd daemon is in the file behind it (Unix and TCP);
//! - a server frozen (SIGSTOP) or killed mid-use: requests fail within the timeout, and the
//!   connection stays broken (no silent reconnect).

use std::fs::File;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cowd::device::conformance::{self, Subject};
use cowd::device::{BlockDevice, ErrorKind, ZeroFlags};
use cowd::nbd::client::{ConnectError, NbdDevice};
use cowd::nbd::uri::NbdUri;
use cowd_tests::files::read_at;
use cowd_tests::{Daemon, MIB, pattern, require};

const TIMEOUT: Duration = Duration::from_secs(10);

/// An nbdkit or qemu-nbd serving on `nbd.sock` in its own temp dir; killed on drop.
#[derive(Debug)]
struct Peer {
    child: Child,
    sock: PathBuf,
    dir: tempfile::TempDir,
}

impl Peer {
    /// `nbdkit -f -U SOCK ARGS...`
    fn nbdkit(args: &[&str]) -> Peer {
        require("nbdkit");
        Peer::spawn(tempfile::tempdir().unwrap(), |sock| {
            let mut c = Command::new("nbdkit");
            c.arg("-f").arg("-U").arg(sock).args(args);
            c
        })
    }

    /// `qemu-nbd` serving a new sparse file of `size` bytes as export `disk`.
    fn qemu_nbd(size: u64, args: &[&str]) -> Peer {
        require("qemu-nbd");
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        cowd_tests::files::sparse(&image, size);
        Peer::spawn(dir, |sock| {
            let mut c = Command::new("qemu-nbd");
            c.args(["-f", "raw", "-t", "-e", "0", "-x", "disk", "-k"]);
            c.arg(sock).args(args).arg(&image);
            c
        })
    }

    fn spawn(dir: tempfile::TempDir, command: impl FnOnce(&Path) -> Command) -> Peer {
        let sock = dir.path().join("nbd.sock");
        let log = File::create(dir.path().join("server.log")).unwrap();
        let mut cmd = command(&sock);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        let mut peer = Peer { child, sock, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&peer.sock).is_err() {
            if let Ok(Some(st)) = peer.child.try_wait() {
                panic!("{cmd:?} exited ({st}):\n{}", peer.log());
            }
            assert!(Instant::now() < deadline, "{cmd:?} did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        peer
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn image(&self) -> PathBuf {
        self.dir.path().join("disk.img")
    }

    fn uri(&self, export: &str) -> NbdUri {
        NbdUri::unix(&self.sock, export)
    }

    fn connect(&self, export: &str) -> NbdDevice {
        NbdDevice::connect(&self.uri(export), TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log()))
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// SIGSTOP, then waits until every thread of the server has stopped (kill only queues
    /// the signal: a request sent at once could still be served).
    fn freeze(&self) {
        self.signal(libc::SIGSTOP);
        let tasks = PathBuf::from(format!("/proc/{}/task", self.child.id()));
        let stopped = || {
            std::fs::read_dir(&tasks).unwrap().all(|t| {
                let stat = std::fs::read_to_string(t.unwrap().path().join("stat"));
                // The state follows the parenthesised command name: "pid (comm) T ...".
                stat.is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('T')))
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !stopped() {
            assert!(Instant::now() < deadline, "the server did not stop");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(d: &dyn BlockDevice, offset: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    d.read_at(&mut b, offset).unwrap();
    b
}

#[test]
fn conformance_against_nbdkit_memory() {
    conformance::run_all(&|_| {
        let peer = Peer::nbdkit(&["memory", "64M"]);
        Subject::new(peer.connect("")).keep(peer)
    });
}

#[test]
fn conformance_against_qemu_nbd_on_a_file() {
    conformance::run_all(&|size| {
        let peer = Peer::qemu_nbd(size, &[]);
        Subject::new(peer.connect("disk")).keep(peer)
    });
}

#[test]
fn requests_are_split_at_the_maximum_nbdkit_enforces() {
    let peer = Peer::nbdkit(&[
        "--filter=blocksize-policy",
        "memory",
        "64M",
        "blocksize-minimum=512",
        "blocksize-preferred=4096",
        "blocksize-maximum=65536",
        "blocksize-error-policy=error",
    ]);
    let dev = peer.connect("");
    let bs = dev.block_sizes();
    assert_eq!((bs.minimum, bs.preferred, bs.maximum), (512, 4096, 65536));
    let data = pattern(1, 3 * MIB as usize + 512);
    dev.write_at(&data, 4096, true).unwrap();
    assert!(read(&dev, 4096, data.len()) == data);
}

#[test]
fn a_server_without_write_zeroes_gets_zeroes_written() {
    let peer = Peer::nbdkit(&["--filter=nozero", "memory", "64M", "zeromode=none"]);
    let dev = peer.connect("");
    assert!(!dev.capabilities().zero);
    dev.write_at(&pattern(2, MIB as usize), 0, false).unwrap();
    let fast = ZeroFlags {
        fast: true,
        ..Default::default()
    };
    let e = dev.write_zeroes(4096, 8192, fast).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFast);
    dev.write_zeroes(4096, 40 * MIB, ZeroFlags::default())
        .unwrap();
    let got = read(&dev, 0, MIB as usize);
    assert_eq!(got[..4096], pattern(2, 4096)[..]);
    assert!(got[4096..].iter().all(|&b| b == 0));
}

#[test]
fn a_slow_fast_zero_is_refused_as_not_fast() {
    let peer = Peer::nbdkit(&[
        "--filter=nozero",
        "memory",
        "64M",
        "zeromode=plugin",
        "fastzeromode=slow",
    ]);
    let dev = peer.connect("");
    assert!(dev.capabilities().fast_zero);
    let data = pattern(3, 65536);
    dev.write_at(&data, 0, false).unwrap();
    let fast = ZeroFlags {
        fast: true,
        may_trim: true,
        fua: false,
    };
    let e = dev.write_zeroes(0, 65536, fast).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFast, "{e}");
    assert_eq!(read(&dev, 0, 65536), data, "a refused fast zero wrote");
    dev.write_zeroes(0, 65536, ZeroFlags::default()).unwrap();
    assert!(read(&dev, 0, 65536).iter().all(|&b| b == 0));
    assert!(!dev.is_broken());
}

#[test]
fn read_only_servers_refuse_writes() {
    let nbdkit = Peer::nbdkit(&["-r", "memory", "1M"]);
    let qemu = Peer::qemu_nbd(MIB, &["-r"]);
    for dev in [nbdkit.connect(""), qemu.connect("disk")] {
        assert!(dev.capabilities().read_only, "{dev:?}");
        let e = dev.write_at(&[1; 4096], 0, false).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ReadOnly);
        let e = dev.write_zeroes(0, 4096, ZeroFlags::default()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ReadOnly);
        assert_eq!(read(&dev, 0, 4096), [0; 4096]);
    }
}

#[test]
fn an_unknown_export_is_refused_by_name() {
    let qemu = Peer::qemu_nbd(MIB, &[]);
    let nbdkit = Peer::nbdkit(&[
        "--filter=exportname",
        "memory",
        "1M",
        "exportname-strict=true",
        "exportname=disk",
    ]);
    for peer in [&qemu, &nbdkit] {
        peer.connect("disk");
        let e = NbdDevice::connect(&peer.uri("nosuch"), TIMEOUT).unwrap_err();
        assert!(matches!(e, ConnectError::Refused { .. }), "{e:?}");
        assert!(!e.unreachable(), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("\"nosuch\"") && msg.contains("nbd.sock"),
            "{msg}"
        );
    }
}

#[test]
fn servers_without_fixed_newstyle_are_refused() {
    for args in [
        &["-o", "memory", "1M"][..],
        &["--mask-handshake=0", "memory", "1M"],
    ] {
        let peer = Peer::nbdkit(args);
        let e = NbdDevice::connect(&peer.uri(""), TIMEOUT).unwrap_err();
        assert!(
            matches!(e, ConnectError::Protocol { .. }),
            "{args:?}: {e:?}"
        );
        assert!(
            !e.unreachable() && e.to_string().contains("fixed newstyle"),
            "{e}"
        );
    }
}

#[test]
fn qemu_nbd_writes_land_in_the_file() {
    let peer = Peer::qemu_nbd(16 * MIB, &["--cache=none"]);
    let dev = peer.connect("disk");
    let mut rng = fastrand::Rng::with_seed(11);
    let mut written = Vec::new();
    for i in 0..40 {
        let len = rng.usize(1..100_000);
        let off = rng.u64(..16 * MIB - len as u64);
        dev.write_at(&pattern(100 + i, len), off, false).unwrap();
        written.push((i, off, len));
    }
    dev.flush().unwrap();
    // Later writes win where they overlap.
    let image = read_at(&peer.image(), 0, 16 * MIB as usize);
    let mut model = vec![0u8; 16 * MIB as usize];
    for &(i, off, len) in &written {
        model[off as usize..off as usize + len].copy_from_slice(&pattern(100 + i, len));
    }
    assert!(image == model, "the file holds what was written");
    assert!(read(&dev, 0, model.len()) == model);
}

#[test]
fn a_frozen_server_times_out_and_stays_broken() {
    let peer = Peer::nbdkit(&["memory", "64M"]);
    let dev = NbdDevice::connect(&peer.uri(""), Duration::from_millis(500)).unwrap();
    dev.write_at(&[1; 4096], 0, false).unwrap();
    peer.freeze();
    let t = Instant::now();
    let e = dev.read_at(&mut [0; 4096], 0).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(e.kind, ErrorKind::Io, "{e}");
    peer.signal(libc::SIGCONT);
    let e = dev.read_at(&mut [0; 4096], 0).unwrap_err();
    assert!(e.to_string().contains("broken earlier"), "{e}");
    // The server itself is fine: a new connection works.
    assert_eq!(read(&peer.connect(""), 0, 4096), [1; 4096]);
}

#[test]
fn a_killed_server_fails_requests_and_later_connects() {
    let mut peer = Peer::nbdkit(&["memory", "64M"]);
    let dev = peer.connect("");
    dev.write_at(&[1; 4096], 0, false).unwrap();
    peer.child.kill().unwrap();
    peer.child.wait().unwrap();
    let t = Instant::now();
    let e = dev.write_at(&[2; 4096], 0, false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Io, "{e}");
    assert!(dev.is_broken());
    assert!(t.elapsed() < TIMEOUT);
    let e = NbdDevice::connect(&peer.uri(""), TIMEOUT).unwrap_err();
    assert!(e.unreachable(), "{e}");
}

#[test]
fn a_cowd_daemon_as_copy_target() {
    let mut d = Daemon::builder().export("disk", 16 * MIB).tcp().start();
    let unix: NbdUri = d.uri("disk").parse().unwrap();
    let tcp: NbdUri = d.tcp_uri("disk").parse().unwrap();
    let dev = NbdDevice::connect(&unix, TIMEOUT).unwrap();
    assert_eq!(dev.size(), 16 * MIB);
    let data = pattern(5, 3 * MIB as usize);
    dev.write_at(&data, 5 * MIB + 512, true).unwrap();
    dev.flush().unwrap();
    assert!(read_at(d.image("disk"), 5 * MIB + 512, data.len()) == data);
    let over_tcp = NbdDevice::connect(&tcp, TIMEOUT).unwrap();
    assert!(read(&over_tcp, 5 * MIB + 512, data.len()) == data);
    over_tcp.trim(8 * MIB, MIB, false).unwrap();

    let nosuch: NbdUri = d.uri("nosuch").parse().unwrap();
    let e = NbdDevice::connect(&nosuch, TIMEOUT).unwrap_err();
    assert!(
        !e.unreachable() && e.to_string().contains("\"nosuch\""),
        "{e}"
    );

    d.kill_9();
    let e = dev.read_at(&mut [0; 4096], 0).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Io, "{e}");
    for uri in [&unix, &tcp] {
        let e = NbdDevice::connect(uri, TIMEOUT).unwrap_err();
        assert!(e.unreachable(), "{e}");
    }
}
