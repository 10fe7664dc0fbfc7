//! Checkpoints: a mover that dies mid-copy leaves the job at its last checkpoint, and the mover
//! that takes the job over resumes there (it never reads what lies before) and finishes an
//! exact copy.

use std::sync::Condvar;

use super::*;
use crate::device::{BlockSizes, Capabilities, MemoryDevice};
use crate::jobs::table::LocalTable;
use crate::jobs::testing::spec;
use crate::san::copy_targets::TargetPath;
use crate::san::paths::PathSpec;
use crate::san::ports::Role;

const SIZE: u64 = 8 << 20;
/// Reads from here on wait at the gate.
const GATE_AT: u64 = 4 << 20;

/// A source that records who read where, and holds reads from [`GATE_AT`] on until opened.
#[derive(Debug)]
struct Source {
    inner: MemoryDevice,
    reads: Mutex<Vec<(String, u64)>>,
    gate: (Mutex<bool>, Condvar),
}

impl BlockDevice for Source {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn block_sizes(&self) -> BlockSizes {
        self.inner.block_sizes()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> crate::device::Result<()> {
        let who = std::thread::current().name().unwrap_or("?").to_owned();
        self.reads.lock().unwrap().push((who, offset));
        if offset >= GATE_AT {
            let mut open = self.gate.0.lock().unwrap();
            while !*open {
                open = self.gate.1.wait(open).unwrap();
            }
        }
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> crate::device::Result<()> {
        self.inner.write_at(buf, offset, fua)
    }
}

impl Source {
    fn open(&self) {
        *self.gate.0.lock().unwrap() = true;
        self.gate.1.notify_all();
    }
}

#[derive(Debug)]
struct TestReach {
    source: Arc<Source>,
    vault: Arc<MemoryDevice>,
}

impl Reach for TestReach {
    fn export(&self, name: &str) -> Result<Arc<dyn BlockDevice>, String> {
        assert_eq!(name, "src");
        Ok(self.source.clone())
    }
    fn copy_target(&self, name: &str) -> Option<CopyTarget> {
        (name == "vault").then(|| CopyTarget {
            name: "vault".into(),
            naa: None,
            fc_name: None,
            kind: TargetKind::Block,
            record_size: 64 << 10,
            paths: vec![TargetPath {
                spec: PathSpec::File("/dev/null".into()),
                port: None,
            }],
            media: Vec::new(),
        })
    }
    fn ports(&self, _: &[String], _: Option<&str>) -> Vec<Port> {
        vec![Port {
            name: "local".into(),
            role: Role::Initiator,
            address: None,
            group: None,
        }]
    }
    fn open(&self, _: &CopyTarget, _: usize, _: &Port) -> Result<Opened, PathError> {
        Ok(Opened::Block(self.vault.clone()))
    }
}

fn config(name: &str) -> MoverConfig {
    MoverConfig {
        lease: Duration::from_millis(600),
        poll: Duration::from_millis(10),
        checkpoint: 1 << 20,
        ..MoverConfig::new(name)
    }
}

#[test]
fn a_takeover_resumes_at_the_last_checkpoint() {
    let data: Vec<u8> = (0..SIZE)
        .map(|i| (i % 251) as u8 ^ (i >> 20) as u8)
        .collect();
    let source = Arc::new(Source {
        inner: MemoryDevice::new(SIZE),
        reads: Mutex::default(),
        gate: Default::default(),
    });
    source.inner.write_at(&data, 0, false).unwrap();
    let vault = Arc::new(MemoryDevice::new(SIZE));
    let reach: Arc<dyn Reach> = Arc::new(TestReach {
        source: source.clone(),
        vault: vault.clone(),
    });
    let table = Arc::new(LocalTable::new());
    let first = spawn(config("a"), table.clone(), reach.clone());
    let id = table.submit(spec(SIZE)).unwrap();
    // a copies up to the gate: a checkpoint before every MiB, the last at 4 MiB.
    let deadline = Instant::now() + Duration::from_secs(10);
    while table.resume_at(id).unwrap() < GATE_AT {
        assert!(Instant::now() < deadline, "no checkpoint at 4 MiB");
        std::thread::sleep(Duration::from_millis(5));
    }
    // a dies while it waits at the gate: it ends the piece under way (and may checkpoint it),
    // then stops.
    first.stop.store(true, Ordering::Release);
    source.open();
    first.crash();
    let resume = table.resume_at(id).unwrap();
    assert!(
        resume == GATE_AT || resume == GATE_AT + (1 << 20),
        "{resume}"
    );
    let second = spawn(config("b"), table.clone(), reach);
    let outcome = table.wait(id, Duration::from_secs(10)).unwrap();
    assert_eq!(outcome, Some(Outcome::Done { bytes: SIZE }));
    let mut back = vec![0u8; SIZE as usize];
    vault.read_at(&mut back, 0).unwrap();
    assert!(back == data, "the copy is not exact");
    let reads = source.reads.lock().unwrap().clone();
    let by_b: Vec<u64> = (reads.iter())
        .filter(|(who, _)| who == "mover-b")
        .map(|&(_, at)| at)
        .collect();
    assert_eq!(
        by_b.first(),
        Some(&resume),
        "b resumed at the checkpoint: {by_b:?}"
    );
    assert!(by_b.iter().all(|&at| at >= resume), "{by_b:?}");
    let v = table.list().unwrap().remove(0);
    assert_eq!((v.claims, v.durable >= resume), (2, true), "{v:?}");
    drop(second);
}
