//! The copy-before-write engine end to end over memory devices: concurrent writers, the mover,
//! a small container; the backup must equal the device at T (invariant 1) and the device must
//! hold exactly what was written (invariant 2).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cowd::device::{BlockDevice, MemoryDevice, ZeroFlags};
use cowd::mover::{self, MoverConfig};
use cowd::snapshot::container::Container;
use cowd::snapshot::engine::Engine;
use cowd::snapshot::point::{self, Plan};
use cowd::snapshot::session::{OnOverflow, Policy, State};
use cowd::targets::RawImage;

const SIZE: u64 = 8 << 20;
const BS: u32 = 65536;

fn fill(dev: &dyn BlockDevice, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut buf = vec![0u8; 1 << 20];
    for i in 0..SIZE >> 20 {
        rng.fill(&mut buf);
        dev.write_at(&buf, i << 20, false).unwrap();
    }
}

fn snapshot(dev: &dyn BlockDevice) -> Vec<u8> {
    let mut v = vec![0u8; dev.size() as usize];
    dev.read_at(&mut v, 0).unwrap();
    v
}

fn run(
    container_blocks: u64,
    policy: Policy,
    writers: usize,
) -> (State, Vec<u8>, Vec<u8>, cowd::snapshot::session::Report) {
    let dev = Arc::new(MemoryDevice::new(SIZE));
    fill(dev.as_ref(), 1);
    dev.trim(3 << 20, 1 << 20, false).unwrap(); // a hole at T
    let engine = Arc::new(Engine::new(dev.clone()));
    let reference = snapshot(dev.as_ref());
    let target_dev = Arc::new(MemoryDevice::new(SIZE));
    let target = Arc::new(RawImage::on_device(target_dev.clone(), "mem".as_ref()));
    let csize = u64::from(BS) * (container_blocks + 1);
    let container = Container::with_device(
        Arc::new(MemoryDevice::new(csize)),
        csize,
        BS,
        "t",
        None,
        false,
    )
    .unwrap();
    let plan = Plan {
        id: "t".into(),
        export: "disk".into(),
        block_size: BS,
        container,
        target,
        policy,
        skip_holes: true,
        quiesce: "none".into(),
    };
    let session = point::take(&engine, plan, Duration::from_secs(5)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let (e, stop) = (engine.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(100 + w as u64);
                let mut model: Vec<(u64, Vec<u8>)> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let len = rng.u64(1..200_000).min(SIZE);
                    let off = rng.u64(0..SIZE - len);
                    match rng.u8(0..10) {
                        0 => e.write_zeroes(off, len, ZeroFlags::default()).unwrap(),
                        1 => e.trim(off, len, false).unwrap(),
                        _ => {
                            let mut b = vec![0u8; len as usize];
                            rng.fill(&mut b);
                            e.write_at(&b, off, false).unwrap();
                            model.push((off, b));
                        }
                    }
                }
                model.len()
            })
        })
        .collect();
    // A slow, shallow mover so that writers meet many pending blocks.
    let config = MoverConfig {
        run_bytes: 256 << 10,
        queue: 1,
        max_rate: Some(16 << 20),
        ..MoverConfig::default()
    };
    let dev = engine.device().clone();
    let mover = mover::spawn(session.clone(), dev, config, Box::new(|_| {})).unwrap();
    mover.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    (
        session.state(),
        reference,
        snapshot(target_dev.as_ref()),
        session.report(),
    )
}

#[test]
fn backup_equals_the_device_at_t_under_concurrent_writers() {
    let (state, reference, backup, report) = run(64, Policy::default(), 4);
    assert_eq!(state, State::Done, "{report:?}");
    assert!(
        report.copies_before_write > 0,
        "writers never hit a pending block: {report:?}"
    );
    assert_eq!(report.blocks_done, report.blocks_total);
    assert!(backup == reference, "backup differs from the device at T");
}

#[test]
fn a_tiny_container_throttles_and_waits_but_the_backup_stays_exact() {
    let policy = Policy {
        on_overflow: OnOverflow::BlockWrites,
        max_delay: Duration::from_millis(2),
        ..Policy::default()
    };
    let (state, reference, backup, report) = run(2, policy, 4);
    assert_eq!(state, State::Done, "{report:?}");
    assert!(backup == reference);
    assert!(report.container_peak <= 2);
}

/// A device that records the ranges written to it (for "never outside its slots").
#[derive(Debug)]
struct Recording {
    inner: MemoryDevice,
    writes: std::sync::Mutex<Vec<(u64, u64)>>,
}

impl BlockDevice for Recording {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn capabilities(&self) -> cowd::device::Capabilities {
        self.inner.capabilities()
    }
    fn read_at(&self, b: &mut [u8], o: u64) -> cowd::device::Result<()> {
        self.inner.read_at(b, o)
    }
    fn write_at(&self, b: &[u8], o: u64, f: bool) -> cowd::device::Result<()> {
        self.writes.lock().unwrap().push((o, b.len() as u64));
        self.inner.write_at(b, o, f)
    }
    fn write_zeroes(&self, o: u64, l: u64, f: ZeroFlags) -> cowd::device::Result<()> {
        self.writes.lock().unwrap().push((o, l));
        self.inner.write_zeroes(o, l, f)
    }
    fn trim(&self, o: u64, l: u64, f: bool) -> cowd::device::Result<()> {
        self.writes.lock().unwrap().push((o, l));
        self.inner.trim(o, l, f)
    }
    fn flush(&self) -> cowd::device::Result<()> {
        Ok(())
    }
}

struct Rig {
    engine: Arc<Engine>,
    session: Arc<cowd::snapshot::session::Session>,
    target: Arc<MemoryDevice>,
    target_faults: Arc<cowd::device::FaultControl>,
    reference: Vec<u8>,
}

/// A filled device, a session on it with `slots` container blocks, its target behind a
/// fault layer; the mover is not started.
fn rig(slots: u64, policy: Policy, container_dev: Option<Arc<dyn BlockDevice>>) -> Rig {
    let dev = Arc::new(MemoryDevice::new(SIZE));
    fill(dev.as_ref(), 7);
    let engine = Arc::new(Engine::new(dev.clone()));
    let reference = snapshot(dev.as_ref());
    let target = Arc::new(MemoryDevice::new(SIZE));
    let (faulty, target_faults) = cowd::device::FaultDevice::new(target.clone());
    let raw = Arc::new(RawImage::on_device(Arc::new(faulty), "mem".as_ref()));
    let csize = u64::from(BS) * (slots + 1);
    let cdev = container_dev.unwrap_or_else(|| Arc::new(MemoryDevice::new(csize)));
    let container = Container::with_device(cdev, csize, BS, "t", None, false).unwrap();
    let plan = Plan {
        id: "t".into(),
        export: "disk".into(),
        block_size: BS,
        container,
        target: raw,
        policy,
        skip_holes: true,
        quiesce: "none".into(),
    };
    let session = point::take(&engine, plan, Duration::from_secs(5)).unwrap();
    Rig {
        engine,
        session,
        target,
        target_faults,
        reference,
    }
}

impl Rig {
    fn start_mover(&self) -> std::thread::JoinHandle<()> {
        let dev = self.engine.device().clone();
        mover::spawn(
            self.session.clone(),
            dev,
            MoverConfig::default(),
            Box::new(|_| {}),
        )
        .unwrap()
    }

    /// Starts the mover after `delay`, from another thread (writers meanwhile fill the
    /// container deterministically).
    fn start_mover_after(&self, delay: Duration) -> std::thread::JoinHandle<()> {
        let (dev, s) = (self.engine.device().clone(), self.session.clone());
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            let cfg = MoverConfig::default();
            mover::spawn(s, dev, cfg, Box::new(|_| {}))
                .unwrap()
                .join()
                .unwrap();
        })
    }
}

#[test]
fn writes_are_suspended_until_the_old_block_is_saved() {
    let (slow, control) =
        cowd::device::FaultDevice::new(Arc::new(MemoryDevice::new(u64::from(BS) * 9)));
    let slow: Arc<dyn BlockDevice> = Arc::new(slow);
    let r = rig(8, Policy::default(), Some(slow));
    control.delay(cowd::device::OpMask::WRITE, Duration::from_millis(200));
    let t = std::time::Instant::now();
    r.engine
        .write_at(&[9u8; 100], 5 * u64::from(BS) + 10, false)
        .unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "the write did not wait for the copy"
    );
    assert_eq!(r.session.report().copies_before_write, 1);
    assert_eq!(
        r.session.container.fill().used,
        1,
        "the old block is in the container"
    );
    // The same block again, and a block written before: no copy, no wait.
    let t = std::time::Instant::now();
    r.engine
        .write_at(&[8u8; 100], 5 * u64::from(BS) + 500, false)
        .unwrap();
    assert!(t.elapsed() < Duration::from_millis(100));
    // Reads are never blocked, even while a copy is in progress elsewhere.
    let e = r.engine.clone();
    let writer =
        std::thread::spawn(move || e.write_at(&[1u8; 10], 9 * u64::from(BS), false).unwrap());
    std::thread::sleep(Duration::from_millis(50));
    let t = std::time::Instant::now();
    let mut b = vec![0u8; 65536];
    r.engine.read_at(&mut b, 9 * u64::from(BS)).unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "a read waited behind a copy"
    );
    writer.join().unwrap();
    control.clear();
    r.start_mover().join().unwrap();
    assert_eq!(r.session.state(), State::Done);
    assert!(snapshot(r.target.as_ref()) == r.reference);
}

#[test]
fn the_container_never_receives_a_byte_outside_its_slots() {
    let rec = Arc::new(Recording {
        inner: MemoryDevice::new(u64::from(BS) * 5),
        writes: Default::default(),
    });
    let r = rig(
        4,
        Policy {
            on_overflow: OnOverflow::BlockWrites,
            ..Policy::default()
        },
        Some(rec.clone()),
    );
    let m = r.start_mover_after(Duration::from_millis(200));
    let mut rng = fastrand::Rng::with_seed(3);
    for _ in 0..40 {
        let len = rng.u64(1..300_000);
        let off = rng.u64(0..SIZE - len);
        r.engine
            .write_at(&vec![1u8; len as usize], off, false)
            .unwrap();
    }
    m.join().unwrap();
    assert_eq!(r.session.state(), State::Done);
    let bs = u64::from(BS);
    let writes = rec.writes.lock().unwrap();
    assert!(writes.len() > 2, "the container was used");
    for &(o, l) in writes.iter() {
        let header = o == 0 && l <= 4096;
        let in_slot = o >= bs && (o - bs) % bs == 0 && l <= bs && (o - bs) / bs < 4;
        assert!(
            header || in_slot,
            "container write at {o}+{l} is outside its header and slots"
        );
    }
    assert!(snapshot(r.target.as_ref()) == r.reference);
}

#[test]
fn writers_are_slowed_near_the_watermark_and_wait_at_capacity() {
    let policy = Policy {
        on_overflow: OnOverflow::BlockWrites,
        max_delay: Duration::from_millis(5),
        ..Policy::default()
    };
    let r = rig(4, policy, None);
    // No mover yet: four writes fill the container, the fifth is slowed and then waits until
    // the mover (started 300 ms later) drains it.
    let m = r.start_mover_after(Duration::from_millis(300));
    let t = std::time::Instant::now();
    for b in 0..5u64 {
        let off = b * 4 * u64::from(BS);
        r.engine.write_at(&[2u8; 4096], off, false).unwrap();
    }
    assert!(t.elapsed() >= Duration::from_millis(250), "no write waited");
    m.join().unwrap();
    let rep = r.session.report();
    assert_eq!(rep.state, State::Done, "{rep:?}");
    assert!(
        rep.throttled_writes > 0,
        "no write was slowed above the watermark: {rep:?}"
    );
    assert!(
        rep.waited_writes > 0,
        "no write waited at capacity: {rep:?}"
    );
    assert!(rep.container_peak <= 4);
    assert!(snapshot(r.target.as_ref()) == r.reference);
}

#[test]
fn overflow_with_fail_backup_fails_the_backup_but_no_write() {
    let policy = Policy {
        cbw_timeout: Duration::from_millis(100),
        ..Policy::default()
    };
    let r = rig(1, policy, None);
    // No mover: the second copy finds the one-slot container full past the cbw-timeout.
    let mut model = r.reference.clone();
    for b in 0..6u64 {
        let off = b * 7 * u64::from(BS) + 3;
        r.engine.write_at(&[3u8; 5000], off, false).unwrap();
        model[off as usize..off as usize + 5000].fill(3);
    }
    r.start_mover().join().unwrap();
    let rep = r.session.report();
    assert_eq!(rep.state, State::Failed);
    assert!(
        rep.reason.as_deref().unwrap().contains("container full"),
        "{rep:?}"
    );
    assert!(
        snapshot(r.engine.device().as_ref()) == model,
        "the device holds exactly the writes"
    );
}

#[test]
fn a_failing_target_fails_the_backup_cleanly() {
    let r = rig(8, Policy::default(), None);
    r.target_faults.fail_after(cowd::device::OpMask::WRITE, 1);
    let m = r.start_mover();
    r.engine.write_at(&[4u8; 1000], 0, false).unwrap();
    m.join().unwrap();
    let rep = r.session.report();
    assert_eq!(rep.state, State::Failed);
    assert!(
        rep.reason
            .as_deref()
            .unwrap()
            .contains("writing to the target"),
        "{rep:?}"
    );
    let mut after = vec![0u8; 1000];
    r.engine.read_at(&mut after, 0).unwrap();
    assert!(after.iter().all(|&b| b == 4));
    r.engine.write_at(&[5u8; 10], 0, false).unwrap();
}

#[test]
fn prioritized_ranges_are_copied_first() {
    let r = rig(8, Policy::default(), None);
    let last = (SIZE / u64::from(BS)) as u32;
    r.session.prioritize(last - 8..last);
    let rec_order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let done = r.session.clone();
    let order = rec_order.clone();
    let watcher = std::thread::spawn(move || {
        while done.running() {
            order.lock().unwrap().push((
                done.report().blocks_done,
                done.pending.any_in(last - 8, last - 1),
            ));
            std::thread::sleep(Duration::from_micros(200));
        }
    });
    r.target_faults
        .delay(cowd::device::OpMask::ALL, Duration::from_millis(5));
    r.start_mover().join().unwrap();
    watcher.join().unwrap();
    let order = rec_order.lock().unwrap();
    let first_done = order
        .iter()
        .find(|(_, pending)| !pending)
        .map(|(d, _)| *d)
        .unwrap();
    assert!(
        first_done <= 64,
        "the prioritized range left the pending set only after {first_done} blocks"
    );
    assert!(snapshot(r.target.as_ref()) == r.reference);
}

#[test]
fn trim_keeps_pending_blocks_and_zeroes_are_copied_first() {
    let r = rig(32, Policy::default(), None);
    let bs = u64::from(BS);
    r.engine.trim(2 * bs, 4 * bs, false).unwrap();
    assert_eq!(
        r.session.report().copies_before_write,
        0,
        "a trim copies nothing"
    );
    let mut b = vec![0u8; (4 * bs) as usize];
    r.engine.read_at(&mut b, 2 * bs).unwrap();
    assert_eq!(
        b,
        r.reference[(2 * bs) as usize..(6 * bs) as usize],
        "pending blocks are not discarded"
    );
    r.engine
        .write_zeroes(
            10 * bs + 7,
            3 * bs,
            ZeroFlags {
                may_trim: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(r.session.report().copies_before_write, 4);
    r.start_mover().join().unwrap();
    assert!(snapshot(r.target.as_ref()) == r.reference);
    // After the backup a trim discards again.
    r.engine.trim(2 * bs, bs, false).unwrap();
    r.engine.read_at(&mut b[..bs as usize], 2 * bs).unwrap();
    assert!(b[..bs as usize].iter().all(|&x| x == 0));
}
