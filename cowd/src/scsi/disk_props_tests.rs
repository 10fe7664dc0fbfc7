//! Property tests of `Disk::execute`.
//!
//! - Totality: any CDB, expected length and data-out give a response, never a panic; data-in
//!   never exceeds the expected length; CHECK CONDITION always carries well-formed sense data
//!   with a defined key, GOOD never does.
//! - At once: whenever `try_execute_from` answers (a READ or WRITE served without blocking),
//!   the answer and the device's contents are those of `execute_from` on a twin disk.
//! - Data: writes (WRITE 10/16, WRITE SAME with and without UNMAP, UNMAP) then reads at random
//!   LBAs return what a plain byte array written the same way holds.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::device::{BlockSizes, Capabilities, MemoryDevice};
use crate::scsi::opcodes::COMMANDS;
use crate::scsi::response::Status;
use crate::scsi::testing::*;

/// A byte of a CDB field: mostly small, so that random commands often reach the device.
fn field_byte() -> impl Strategy<Value = u8> {
    prop_oneof![3 => Just(0u8), 2 => 0..4u8, 2 => any::<u8>()]
}

/// A CDB: mostly one of a known command, of its length, often within its usage data (so
/// that it reaches the device); sometimes anything.
fn arbitrary_cdb() -> impl Strategy<Value = Vec<u8>> {
    let known = (
        prop::sample::select(COMMANDS),
        prop::collection::vec(field_byte(), 16),
        prop::bool::weighted(0.75),
    )
        .prop_map(|(row, bytes, within_usage)| {
            let mut cdb: Vec<u8> = bytes[..row.usage.len()].to_vec();
            if within_usage {
                cdb.iter_mut().zip(row.usage).for_each(|(b, u)| *b &= u);
            }
            cdb[0] = row.opcode;
            if let Some(sa) = row.service_action {
                cdb[1] = (cdb[1] & 0xE0) | sa;
            }
            cdb
        });
    let anything = prop::collection::vec(any::<u8>(), 0..20);
    prop_oneof![4 => known, 1 => anything]
}

fn some_disk(kind: u8) -> Disk {
    match kind {
        0 => memory_disk(),
        1 => read_only_disk(),
        _ => {
            let caps = Capabilities {
                trim: true,
                ..Capabilities::default()
            };
            let sizes = BlockSizes {
                minimum: 512,
                preferred: 512,
                maximum: 8192,
            };
            disk_over(Arc::new(CapsDevice::new(SIZE, caps, sizes)))
        }
    }
}

/// Checks that encoded sense data is well formed; returns the sense key.
fn sense_key(s: &[u8]) -> Result<u8, TestCaseError> {
    let key = match s.first().map(|b| b & 0x7F) {
        Some(0x70) => {
            prop_assert_eq!(s.len(), 18);
            prop_assert_eq!(s[7], 10);
            s[2] & 0x0F
        }
        Some(0x72) => {
            prop_assert!(s.len() >= 8);
            prop_assert_eq!(usize::from(s[7]), s.len() - 8);
            s[1] & 0x0F
        }
        other => return Err(TestCaseError::fail(format!("response code {other:?}"))),
    };
    prop_assert!(matches!(key, 0x1..=0xB | 0xD..=0xF), "sense key {key:#x}");
    Ok(key)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn execute_is_total(
        kind in 0..3u8,
        cdb in arbitrary_cdb(),
        expected in prop_oneof![Just(0u32), 0..1100u32, 0..70_000u32],
        data in prop::collection::vec(any::<u8>(), 0..1100),
    ) {
        let disk = some_disk(kind);
        let r = disk.execute(&cdb, expected, &data);
        prop_assert!(r.data_in.len() <= expected as usize);
        match r.status {
            Status::Good => prop_assert!(r.sense.is_none()),
            Status::CheckCondition => {
                prop_assert!(r.data_in.is_empty());
                sense_key(r.sense.as_deref().unwrap_or_default())?;
            }
            other => prop_assert!(false, "status {other:?}"),
        }
        if let Residual::Underflow(n) = r.residual {
            prop_assert!(n <= expected);
        }
        if r.status == Status::Good {
            if let Ok(wanted) = disk.data_out_len(&cdb) {
                if wanted == 0 && !r.data_in.is_empty() {
                    let produced = r.data_in.len() as u32;
                    match r.residual {
                        Residual::None => prop_assert_eq!(produced, expected),
                        Residual::Underflow(n) => prop_assert_eq!(produced + n, expected),
                        Residual::Overflow(_) => prop_assert_eq!(produced, expected),
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whenever a command is answered at once, the answer and the device's contents are the
    /// ones the blocking path gives on a twin disk.
    #[test]
    fn an_answer_at_once_is_the_blocking_answer(
        kind in 0..3u8,
        cdb in arbitrary_cdb(),
        expected in prop_oneof![Just(0u32), 0..1100u32, 0..70_000u32],
        data in prop::collection::vec(any::<u8>(), 0..1100),
        max in prop_oneof![Just(0usize), 512..4096usize, Just(256usize << 10)],
    ) {
        let (fast, slow) = (some_disk(kind), some_disk(kind));
        let nexus = Nexus::default();
        let Some(at_once) = fast.try_execute_from(&nexus, &cdb, expected, &data, max) else {
            return Ok(());
        };
        let blocking = slow.execute_from(&nexus, &cdb, expected, &data);
        prop_assert_eq!(&at_once, &blocking);
        let read = |d: &Disk| {
            let mut b = vec![0u8; 64 << 10];
            let ok = b
                .chunks_mut(4096)
                .enumerate()
                .all(|(i, c)| d.device().read_at(c, i as u64 * 4096).is_ok());
            ok.then_some(b)
        };
        prop_assert_eq!(read(&fast), read(&slow));
    }
}

/// A disk over a file of `SIZE` bytes of a pattern, all of it in the page cache.
fn cached_file_disk(dir: &std::path::Path) -> Disk {
    use std::io::{Read, Write};
    let path = dir.join("disk.img");
    let data: Vec<u8> = (0..SIZE as usize)
        .map(|i| (i / 512 + i % 253) as u8)
        .collect();
    std::fs::File::create(&path)
        .unwrap()
        .write_all(&data)
        .unwrap();
    let mut back = Vec::new();
    std::fs::File::open(&path)
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    let dev = crate::device::FileDevice::open(&path, crate::device::FileOptions::default());
    disk_over(Arc::new(crate::device::Checked::new(
        Arc::new(dev.unwrap()),
        false,
    )))
}

/// The response without its data-in (as `Disk::cached_read` gives it).
fn without_data(r: Response) -> Response {
    Response {
        data_in: Vec::new(),
        ..r
    }
}

/// The bytes a cached read's range sends.
fn sent(range: &crate::device::CachedRange) -> Vec<u8> {
    use std::io::Read;
    let (tx, mut rx) = std::os::unix::net::UnixStream::pair().unwrap();
    let len = range.len();
    let reader = std::thread::spawn(move || {
        let mut got = vec![0; len];
        rx.read_exact(&mut got).map(|()| got)
    });
    range.send(&tx, 0..len).unwrap();
    reader.join().unwrap().unwrap()
}

#[test]
fn a_read_of_cached_data_is_answered_with_its_range() {
    let dir = tempfile::tempdir().unwrap();
    let disk = cached_file_disk(dir.path());
    // READ(10) of 256 blocks at LBA 8, 128 KiB expected: all of it in the page cache.
    let cdb = [0x28, 0, 0, 0, 0, 8, 0, 1, 0, 0];
    let (resp, range) = disk.cached_read(&cdb, 128 << 10).expect("cached");
    assert_eq!(resp, without_data(disk.execute(&cdb, 128 << 10, &[])));
    assert_eq!(sent(&range), disk.execute(&cdb, 128 << 10, &[]).data_in);
    // Not a READ, or a refused one: no.
    assert!(disk.cached_read(&[0x00, 0, 0, 0, 0, 0], 0).is_none());
    let beyond = [0x28, 0, 0xff, 0xff, 0xff, 0, 0, 1, 0, 0];
    assert!(disk.cached_read(&beyond, 128 << 10).is_none());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whenever a READ is answered with a cached range, the answer is the blocking one and the
    /// range sends its data-in.
    #[test]
    fn a_cached_read_is_the_blocking_answer(
        cdb in arbitrary_cdb(),
        lba in 0..(SIZE / 512 + 2),
        blocks in prop_oneof![1..8u32, 1..3000u32],
        expected in prop_oneof![0..70_000u32, Just(4u32 << 20)],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let disk = cached_file_disk(dir.path());
        // Half of the cases a READ(16) at a random place, so that many are answered.
        let cdb = if lba % 2 == 0 {
            let mut c = vec![0x88, 0];
            c.extend_from_slice(&lba.to_be_bytes());
            c.extend_from_slice(&blocks.to_be_bytes());
            c.extend_from_slice(&[0, 0]);
            c
        } else {
            cdb
        };
        let Some((resp, range)) = disk.cached_read(&cdb, expected) else {
            return Ok(());
        };
        let blocking = disk.execute(&cdb, expected, &[]);
        prop_assert_eq!(&resp, &without_data(blocking.clone()));
        prop_assert_eq!(sent(&range), blocking.data_in);
    }
}

/// One step of the data model.
#[derive(Debug, Clone)]
enum Step {
    Write {
        lba: u64,
        blocks: u32,
        seed: u8,
        long: bool,
        fua: bool,
    },
    WriteSame {
        lba: u64,
        blocks: u32,
        byte: u8,
        unmap: bool,
    },
    Unmap {
        lba: u64,
        blocks: u32,
    },
    Read {
        lba: u64,
        blocks: u32,
        long: bool,
    },
}

const MODEL_BLOCKS: u64 = 2048;

fn step() -> impl Strategy<Value = Step> {
    let range =
        (0..MODEL_BLOCKS, 1..32u32).prop_map(|(lba, n)| (lba, n.min((MODEL_BLOCKS - lba) as u32)));
    prop_oneof![
        (range.clone(), any::<u8>(), any::<bool>(), any::<bool>()).prop_map(
            |((lba, blocks), seed, long, fua)| Step::Write {
                lba,
                blocks,
                seed,
                long,
                fua
            }
        ),
        (
            range.clone(),
            prop_oneof![Just(0u8), any::<u8>()],
            any::<bool>()
        )
            .prop_map(|((lba, blocks), byte, unmap)| Step::WriteSame {
                lba,
                blocks,
                byte,
                unmap
            }),
        range
            .clone()
            .prop_map(|(lba, blocks)| Step::Unmap { lba, blocks }),
        (range, any::<bool>()).prop_map(|((lba, blocks), long)| Step::Read { lba, blocks, long }),
    ]
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add((i / 7) as u8)).collect()
}

proptest! {
    #[test]
    fn writes_then_reads_match_a_model(steps in prop::collection::vec(step(), 1..40)) {
        let disk = disk_over(Arc::new(MemoryDevice::new(MODEL_BLOCKS * 512)));
        let mut model = vec![0u8; (MODEL_BLOCKS * 512) as usize];
        let span = |lba: u64, blocks: u32| (lba * 512) as usize..((lba + u64::from(blocks)) * 512) as usize;
        for s in steps {
            match s {
                Step::Write { lba, blocks, seed, long, fua } => {
                    let data = pattern(seed, blocks as usize * 512);
                    let mut cdb = if long { write16(lba, blocks).to_vec() } else { write10(lba as u32, blocks as u16).to_vec() };
                    if fua {
                        cdb[1] |= 0x08;
                    }
                    let r = disk.execute(&cdb, data.len() as u32, &data);
                    prop_assert_eq!(r.status, Status::Good);
                    model[span(lba, blocks)].copy_from_slice(&data);
                }
                Step::WriteSame { lba, blocks, byte, unmap } => {
                    let block = vec![byte; 512];
                    let r = disk.execute(&write_same16(lba, blocks, unmap, false), 512, &block);
                    prop_assert_eq!(r.status, Status::Good);
                    // LBPRZ: unmapped blocks read as zeroes.
                    let fill = if unmap { 0 } else { byte };
                    model[span(lba, blocks)].fill(fill);
                }
                Step::Unmap { lba, blocks } => {
                    let (cdb, params) = unmap(&[(lba, blocks)]);
                    let r = disk.execute(&cdb, params.len() as u32, &params);
                    prop_assert_eq!(r.status, Status::Good);
                    model[span(lba, blocks)].fill(0);
                }
                Step::Read { lba, blocks, long } => {
                    let cdb = if long { read16(lba, blocks).to_vec() } else { read10(lba as u32, blocks as u16).to_vec() };
                    let r = disk.execute(&cdb, blocks * 512, &[]);
                    prop_assert_eq!(r.status, Status::Good);
                    prop_assert_eq!(&r.data_in[..], &model[span(lba, blocks)]);
                }
            }
        }
        let all = disk.execute(&read16(0, MODEL_BLOCKS as u32), (MODEL_BLOCKS * 512) as u32, &[]);
        prop_assert!(all.data_in == model, "the whole disk equals the model");
    }
}
