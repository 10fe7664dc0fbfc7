//! The mover's runs against a target that records what it is given.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use roaring::RoaringBitmap;

use super::{MoverConfig, spawn};
use crate::device::MemoryDevice;
use crate::snapshot::container::{Container, Protected};
use crate::snapshot::session::{Policy, Session, Setup, State};
use crate::targets::{BackupTarget, TargetError};

const BS: u32 = 4096;
const BLOCKS: u32 = 64;
/// The chunk a repository would cut the image into: 16 blocks.
const ALIGN: u64 = 64 << 10;

/// Remembers every call, in order.
#[derive(Debug, Default)]
struct Recorder {
    writes: Mutex<Vec<(u64, u64)>>,
    zeroes: Mutex<Vec<(u64, u64)>>,
}

impl BackupTarget for Recorder {
    fn describe(&self) -> String {
        "recorder".into()
    }
    fn write(&self, offset: u64, data: &[u8]) -> Result<(), TargetError> {
        self.writes
            .lock()
            .unwrap()
            .push((offset, data.len() as u64));
        Ok(())
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), TargetError> {
        self.zeroes.lock().unwrap().push((offset, len));
        Ok(())
    }
    fn finish(&self) -> Result<(), TargetError> {
        Ok(())
    }
    fn abort(&self) {}
}

/// Moves a session whose first `data` blocks are to be read and the rest were holes at T.
fn run(data: u32, config: MoverConfig) -> Arc<Recorder> {
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("disk.img");
    std::fs::write(&export, vec![0u8; 4096]).unwrap();
    let protected = Protected::of(&export).unwrap();
    let container =
        Container::create(&dir.path().join("c.cow"), 1 << 20, BS, "s-1", &protected).unwrap();
    let target = Arc::new(Recorder::default());
    let (mut pending, mut zeroes) = (RoaringBitmap::new(), RoaringBitmap::new());
    pending.insert_range(0..data);
    zeroes.insert_range(data..BLOCKS);
    let size = u64::from(BS * BLOCKS);
    let session = Arc::new(Session::new(Setup {
        id: "s-1".into(),
        export: "disk".into(),
        size,
        block_size: BS,
        pending,
        zeroes,
        container,
        target: target.clone(),
        policy: Policy::default(),
        snapshot_time: SystemTime::now(),
        setup: Duration::ZERO,
        quiesce: "none".into(),
    }));
    let dev = Arc::new(MemoryDevice::new(size));
    spawn(session.clone(), dev, config, Box::new(drop))
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(session.wait(Duration::from_secs(10)), State::Done);
    target
}

/// The calls' ranges, sorted, and whether they cover `0..end` exactly once.
fn covers(calls: &[(u64, u64)], start: u64, end: u64) -> bool {
    let mut c = calls.to_vec();
    c.sort();
    let mut at = start;
    for (off, len) in c {
        if off != at {
            return false;
        }
        at += len;
    }
    at == end
}

#[test]
fn zero_runs_end_at_chunk_boundaries_so_whole_zero_chunks_reach_the_target() {
    // Data ends mid-chunk: the holes after it start inside chunk 0, then fill chunks 1..4.
    let config = MoverConfig {
        run_bytes: 256 << 10,
        align: ALIGN,
        ..MoverConfig::default()
    };
    let t = run(3, config);
    let zeroes = t.zeroes.lock().unwrap().clone();
    let size = u64::from(BS * BLOCKS);
    assert!(covers(&zeroes, 3 * u64::from(BS), size), "{zeroes:?}");
    for (off, len) in &zeroes {
        assert_eq!(
            off / ALIGN,
            (off + len - 1) / ALIGN,
            "a zero run crosses a chunk boundary: {zeroes:?}"
        );
    }
    let whole = zeroes.iter().filter(|(o, l)| o % ALIGN == 0 && *l == ALIGN);
    assert_eq!(whole.count(), 3, "{zeroes:?}");
    assert!(covers(&t.writes.lock().unwrap(), 0, 3 * u64::from(BS)));
}

#[test]
fn without_alignment_a_zero_run_is_as_long_as_a_run_may_be() {
    let config = MoverConfig {
        run_bytes: 256 << 10,
        ..MoverConfig::default()
    };
    let t = run(3, config);
    let zeroes = t.zeroes.lock().unwrap().clone();
    assert_eq!(
        zeroes,
        vec![(3 * u64::from(BS), u64::from(BS * (BLOCKS - 3)))]
    );
}
