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
use cowd::target::RawImage;

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
    let mover = mover::spawn(
        session.clone(),
        engine.device().clone(),
        MoverConfig::default(),
        Box::new(|_| {}),
    )
    .unwrap();
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
