//! Client tests against cowd's own NBD server, run in-process on a Unix socket (and loopback
//! TCP) in a temp directory: the `BlockDevice` conformance suite, data at random offsets,
//! splitting at the server's maximum payload, refusals and errno replies, paths that are down,
//! and a server that stops or freezes mid-use (bounded by the client's timeout).
//! Tests against other servers (nbdkit, qemu-nbd, a cowd daemon) are in the integration tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::handshake::agreed_sizes;
use super::*;
use crate::device::MAX_PAYLOAD;
use crate::device::conformance::{self, Subject};
use crate::device::{Extent, FaultControl, FaultDevice, MemoryDevice, OpMask};
use crate::export::{Export, Exports};
use crate::nbd::server::Listener;
use crate::nbd::{Endpoint, Server, ServerConfig};

const TIMEOUT: Duration = Duration::from_secs(10);
const MIB: u64 = 1 << 20;

/// A cowd NBD server in this process, listening on `nbd.sock` in a temp dir and on a
/// loopback TCP port.
struct Served {
    sock: PathBuf,
    port: u16,
    server: Arc<Server>,
    stop: tokio::sync::watch::Sender<bool>,
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl Served {
    fn new(exports: Vec<Export>) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("nbd.sock");
        let table = Exports::default();
        for e in exports {
            table.add(e).unwrap();
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let server = Server::new(Arc::new(table), ServerConfig::default());
        let (stop, rx) = tokio::sync::watch::channel(false);
        let unix = rt.block_on(Listener::bind(&Endpoint::Unix(sock.clone())));
        let tcp = rt.block_on(Listener::bind(&Endpoint::Tcp("127.0.0.1:0".into())));
        let tcp = tcp.unwrap();
        let Endpoint::Tcp(addr) = tcp.local_endpoint() else {
            unreachable!()
        };
        let port = addr.rsplit(':').next().unwrap().parse().unwrap();
        rt.spawn(server.clone().run(unix.unwrap(), rx.clone()));
        rt.spawn(server.clone().run(tcp, rx));
        Served {
            sock,
            port,
            server,
            stop,
            rt,
            _dir: dir,
        }
    }

    /// One writable export `disk` of `size` bytes in memory.
    fn memory(size: u64) -> Served {
        Served::new(vec![export(
            "disk",
            Arc::new(MemoryDevice::new(size)),
            false,
        )])
    }

    fn uri(&self, export: &str) -> NbdUri {
        NbdUri::unix(&self.sock, export)
    }

    fn connect(&self, export: &str) -> NbdDevice {
        NbdDevice::connect(&self.uri(export), TIMEOUT).unwrap()
    }

    /// Stops the way cowd stops: no new clients, every live connection finishes and closes.
    fn stop(&self) {
        self.stop.send_replace(true);
        self.server.shutdown();
        assert!(self.rt.block_on(self.server.wait_closed(TIMEOUT)));
    }
}

fn export(name: &str, dev: Arc<dyn BlockDevice>, read_only: bool) -> Export {
    Export::new(name, Path::new("/mem"), dev, read_only)
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

fn read(d: &dyn BlockDevice, offset: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    d.read_at(&mut b, offset).unwrap();
    b
}

/// A memory device with small block sizes that records the largest request it served.
#[derive(Debug)]
struct Small {
    inner: MemoryDevice,
    reads: AtomicU64,
    writes: AtomicU64,
    zeroes: AtomicU64,
    largest: AtomicU64,
}

impl Small {
    fn new(size: u64) -> Arc<Small> {
        Arc::new(Small {
            inner: MemoryDevice::new(size),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            zeroes: AtomicU64::new(0),
            largest: AtomicU64::new(0),
        })
    }

    fn count(&self, n: &AtomicU64, len: usize) {
        n.fetch_add(1, Ordering::Relaxed);
        self.largest.fetch_max(len as u64, Ordering::Relaxed);
    }
}

impl BlockDevice for Small {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn block_sizes(&self) -> BlockSizes {
        BlockSizes {
            minimum: 512,
            preferred: 4096,
            maximum: 64 << 10,
        }
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.count(&self.reads, buf.len());
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.count(&self.writes, buf.len());
        self.inner.write_at(buf, offset, fua)
    }
    fn write_zeroes(&self, offset: u64, len: u64, flags: ZeroFlags) -> Result<()> {
        self.zeroes.fetch_add(1, Ordering::Relaxed);
        self.inner.write_zeroes(offset, len, flags)
    }
    fn trim(&self, offset: u64, len: u64, fua: bool) -> Result<()> {
        self.inner.trim(offset, len, fua)
    }
    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }
    fn extents(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        self.inner.extents(offset, len)
    }
}

#[test]
fn conformance_against_cowds_server() {
    conformance::run_all(&|size| {
        let served = Served::memory(size);
        Subject::new(served.connect("disk")).keep(served)
    });
}

#[test]
fn random_data_at_random_offsets_round_trips() {
    let served = Served::memory(8 * MIB);
    let dev = served.connect("disk");
    assert_eq!(dev.size(), 8 * MIB);
    let mut model = vec![0u8; 8 << 20];
    let mut rng = fastrand::Rng::with_seed(7);
    for i in 0..200 {
        let len = rng.usize(1..256 << 10);
        let off = rng.usize(..model.len() - len);
        let data = pattern(i, len);
        dev.write_at(&data, off as u64, rng.bool()).unwrap();
        model[off..off + len].copy_from_slice(&data);
        let (roff, rlen) = (rng.usize(..model.len() - 4096), rng.usize(1..4096));
        assert_eq!(
            read(&dev, roff as u64, rlen),
            &model[roff..roff + rlen],
            "at {roff}"
        );
    }
    dev.flush().unwrap();
    assert!(read(&dev, 0, model.len()) == model, "the whole device");
}

#[test]
fn requests_larger_than_the_maximum_payload_are_split() {
    let small = Small::new(4 * MIB);
    let served = Served::new(vec![export("small", small.clone(), false)]);
    let dev = served.connect("small");
    let want = BlockSizes {
        minimum: 512,
        preferred: 4096,
        maximum: 64 << 10,
    };
    assert_eq!(dev.block_sizes(), want);
    let data = pattern(1, (MIB + 512) as usize);
    dev.write_at(&data, 512, false).unwrap();
    assert_eq!(read(&dev, 512, data.len()), data);
    assert_eq!(
        small.writes.load(Ordering::Relaxed),
        17,
        "1 MiB + 512 in 64 KiB pieces"
    );
    assert!(small.reads.load(Ordering::Relaxed) >= 17);
    assert_eq!(small.largest.load(Ordering::Relaxed), 64 << 10);

    // cowd's own limit (32 MiB) splits a 40 MiB read too.
    let served = Served::memory(64 * MIB);
    let dev = served.connect("disk");
    assert_eq!(dev.block_sizes().maximum, MAX_PAYLOAD);
    let data = pattern(2, 40 << 20);
    dev.write_at(&data, 4096, false).unwrap();
    assert!(read(&dev, 4096, data.len()) == data);
}

#[test]
fn zeroes_and_trims_reach_the_server() {
    let small = Small::new(160 * MIB);
    let served = Served::new(vec![export("small", small.clone(), false)]);
    let dev = served.connect("small");
    let caps = dev.capabilities();
    assert!(caps.flush && caps.fua && caps.trim && caps.zero && caps.fast_zero && caps.multi_conn);
    assert!(!caps.read_only && !caps.cache && !caps.extents);
    let data = pattern(3, MIB as usize);
    for may_trim in [false, true] {
        dev.write_at(&data, MIB, false).unwrap();
        let flags = ZeroFlags {
            may_trim,
            fast: false,
            fua: may_trim,
        };
        dev.write_zeroes(MIB + 4096, 8192, flags).unwrap();
        let got = read(&dev, MIB, data.len());
        assert_eq!(got[..4096], data[..4096]);
        assert!(
            got[4096..12288].iter().all(|&b| b == 0),
            "may_trim {may_trim}"
        );
        assert_eq!(got[12288..], data[12288..]);
    }
    let fast = ZeroFlags {
        may_trim: true,
        fast: true,
        fua: false,
    };
    dev.write_zeroes(MIB, MIB, fast).unwrap();
    assert!(read(&dev, MIB, MIB as usize).iter().all(|&b| b == 0));
    dev.write_at(&data, MIB, false).unwrap();
    dev.trim(MIB, 65536, true).unwrap();
    assert_eq!(read(&dev, MIB + 65536, 4096), data[65536..65536 + 4096]);
    // 100 MiB of zeroes go out as two requests (64 MiB pieces); the end is zeroed too.
    dev.write_at(&data, 100 * MIB, false).unwrap();
    let before = small.zeroes.load(Ordering::Relaxed);
    dev.write_zeroes(4 * MIB, 100 * MIB, ZeroFlags::default())
        .unwrap();
    assert_eq!(small.zeroes.load(Ordering::Relaxed) - before, 2);
    assert!(read(&dev, 100 * MIB, data.len()).iter().all(|&b| b == 0));
}

#[test]
fn a_read_only_export_refuses_writes() {
    let served = Served::new(vec![export("ro", Arc::new(MemoryDevice::new(MIB)), true)]);
    let dev = served.connect("ro");
    assert!(dev.capabilities().read_only);
    let kind = |r: Result<()>| r.unwrap_err().kind;
    assert_eq!(kind(dev.write_at(&[1; 512], 0, false)), ErrorKind::ReadOnly);
    assert_eq!(
        kind(dev.write_zeroes(0, 512, ZeroFlags::default())),
        ErrorKind::ReadOnly
    );
    assert_eq!(kind(dev.trim(0, 512, false)), ErrorKind::ReadOnly);
    assert_eq!(read(&dev, 0, 512), [0; 512]);
    assert!(!dev.is_broken());
}

#[test]
fn errno_replies_fail_their_request_only() {
    let (faulty, ctl) = FaultDevice::new(Arc::new(MemoryDevice::new(MIB)));
    let served = Served::new(vec![export("f", Arc::new(faulty), false)]);
    let dev = served.connect("f");
    let fail_write = |ctl: &FaultControl, errno| {
        ctl.errno(errno);
        ctl.fail_next(OpMask::WRITE, 1);
        dev.write_at(&[7; 4096], 0, false).unwrap_err()
    };
    for (errno, kind) in [
        (libc::EPERM, ErrorKind::ReadOnly),
        (libc::ENOSPC, ErrorKind::NoSpace),
        (libc::EINVAL, ErrorKind::OutOfRange),
        (libc::EIO, ErrorKind::Io),
    ] {
        let e = fail_write(&ctl, errno);
        assert_eq!(
            (e.kind, e.op, e.offset, e.len),
            (kind, Op::Write, 0, 4096),
            "{e}"
        );
        assert_eq!(e.nbd_errno(), errno as u32, "the errno passes through: {e}");
    }
    // Out of range: the server's checks answer, the connection stays in step.
    let e = dev.read_at(&mut [0; 4096], MIB - 512).unwrap_err();
    assert_eq!(e.kind, ErrorKind::OutOfRange);
    let e = dev.write_at(&[0; 4096], MIB - 512, false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NoSpace);
    assert!(!dev.is_broken());
    dev.write_at(&[9; 4096], 0, false).unwrap();
    assert_eq!(read(&dev, 0, 4096), [9; 4096]);
}

#[test]
fn server_errnos_map_to_error_kinds() {
    for (errno, fast, kind) in [
        (EPERM, false, ErrorKind::ReadOnly),
        (ENOSPC, false, ErrorKind::NoSpace),
        (EINVAL, false, ErrorKind::OutOfRange),
        (ENOTSUP, true, ErrorKind::NotFast),
        (ENOTSUP, false, ErrorKind::Unsupported),
        (EIO, false, ErrorKind::Io),
        (EOVERFLOW, false, ErrorKind::Io),
        (ESHUTDOWN, true, ErrorKind::Io),
        (12, false, ErrorKind::Io),
    ] {
        assert_eq!(error_kind(errno, fast), kind, "errno {errno} fast {fast}");
    }
}

#[test]
fn block_sizes_are_the_servers_capped_at_cowds() {
    let bs = |minimum, preferred, maximum| BlockSizes {
        minimum,
        preferred,
        maximum,
    };
    assert_eq!(agreed_sizes(None), Ok(BlockSizes::default()));
    for (server, agreed) in [
        (bs(1, 4096, 32 << 20), bs(1, 4096, 32 << 20)),
        (bs(512, 4096, u32::MAX), bs(512, 4096, MAX_PAYLOAD)),
        (bs(4096, 512, 65536), bs(4096, 4096, 65536)),
        (bs(4096, 1 << 26, 1 << 20), bs(4096, 1 << 20, 1 << 20)),
        (bs(512, 4096, 65536 + 100), bs(512, 4096, 65536)),
    ] {
        assert_eq!(agreed_sizes(Some(server)), Ok(agreed), "{server:?}");
    }
    for bad in [
        bs(0, 4096, 65536),
        bs(3, 4096, 65536),
        bs(1 << 17, 1 << 17, 1 << 20),
    ] {
        assert!(agreed_sizes(Some(bad)).is_err(), "{bad:?}");
    }
    assert!(agreed_sizes(Some(bs(4096, 4096, 512))).is_err());
}

#[test]
fn an_unknown_export_is_refused_by_name() {
    let served = Served::memory(MIB);
    let e = NbdDevice::connect(&served.uri("nosuch"), TIMEOUT).unwrap_err();
    assert!(matches!(e, ConnectError::Refused { .. }), "{e:?}");
    assert!(!e.unreachable());
    let msg = e.to_string();
    assert!(msg.starts_with(&served.uri("nosuch").to_string()), "{msg}");
    assert!(
        msg.contains("\"nosuch\"") && msg.contains("unknown export"),
        "{msg}"
    );
}

#[test]
fn paths_that_are_down_are_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let missing = NbdUri::unix(dir.path().join("missing.sock"), "disk");
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let closed = NbdUri::tcp("127.0.0.1", free_port(), "disk");
    for uri in [missing, NbdUri::unix(&stale, "disk"), closed] {
        let e = NbdDevice::connect(&uri, TIMEOUT).unwrap_err();
        assert!(e.unreachable(), "{e}");
        assert!(e.to_string().starts_with(&uri.to_string()), "{e}");
    }
}

#[test]
fn a_silent_server_fails_the_handshake_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("silent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let t = Instant::now();
    let e = NbdDevice::connect(&NbdUri::unix(&sock, "x"), Duration::from_millis(300)).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(
        matches!(e, ConnectError::Lost { .. }) && e.unreachable(),
        "{e:?}"
    );
    assert!(e.to_string().contains("no answer within"), "{e}");
}

#[test]
fn tcp_from_a_source_address() {
    let served = Served::memory(MIB);
    let uri = NbdUri::tcp("127.0.0.1", served.port, "disk");
    let dev = NbdDevice::connect_from(&uri, Some([127, 0, 0, 1].into()), TIMEOUT).unwrap();
    dev.write_at(&[5; 4096], 8192, true).unwrap();
    assert_eq!(read(&dev, 8192, 4096), [5; 4096]);
    let v6 = std::net::Ipv6Addr::LOCALHOST.into();
    let e = NbdDevice::connect_from(&uri, Some(v6), TIMEOUT).unwrap_err();
    assert!(
        e.unreachable() && e.to_string().contains("IP family"),
        "{e}"
    );
}

#[test]
fn a_stopped_server_breaks_the_connection_for_good() {
    let served = Served::memory(MIB);
    let dev = served.connect("disk");
    dev.write_at(&[1; 4096], 0, false).unwrap();
    served.stop();
    let e = dev.read_at(&mut [0; 4096], 0).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Io, "{e}");
    assert!(dev.is_broken());
    let t = Instant::now();
    let e = dev.write_at(&[2; 4096], 0, false).unwrap_err();
    assert!(t.elapsed() < Duration::from_millis(100), "fails fast");
    assert_eq!(e.kind, ErrorKind::Io);
    let msg = format!("{e} {:?}", e.source);
    assert!(
        msg.contains("broken earlier") && msg.contains("nbd.sock"),
        "{msg}"
    );
}

#[test]
fn a_frozen_server_times_out_and_is_not_retried() {
    let (faulty, ctl) = FaultDevice::new(Arc::new(MemoryDevice::new(MIB)));
    let served = Served::new(vec![export("f", Arc::new(faulty), false)]);
    let dev = NbdDevice::connect(&served.uri("f"), Duration::from_millis(300)).unwrap();
    ctl.delay(OpMask::READ, Duration::from_secs(3));
    let t = Instant::now();
    let e = dev.read_at(&mut [0; 4096], 0).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(e.kind, ErrorKind::Io);
    assert!(
        format!("{:?}", e.source).contains("no answer within"),
        "{e}"
    );
    ctl.clear();
    // The late reply must never be taken for the next request's: the connection stays broken.
    let e = dev.read_at(&mut [0; 4096], 0).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Io);
    assert!(dev.is_broken());
}

#[test]
fn dropping_the_device_closes_its_connection() {
    let served = Served::memory(MIB);
    let dev = served.connect("disk");
    assert_eq!(served.server.open_connections(), 1);
    assert!(format!("{dev:?}").contains("nbd+unix:///disk?socket="));
    drop(dev);
    assert!(served.rt.block_on(served.server.wait_closed(TIMEOUT)));
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
