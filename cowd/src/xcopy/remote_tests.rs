//! Lists naming copy targets, run by real mover threads over a `LocalTable`: paths tried in
//! order, failover to the next path mid-copy, port groups, and the sense data when no mover
//! reaches the copy target.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::device::{BlockDevice, FaultDevice, OpMask};
use crate::jobs::mover::{self, MoverConfig, MoverHandle, Reach};
use crate::jobs::{CopyService, EndpointRef, JobTable, LocalTable};
use crate::san::copy_targets::{CopyTarget, TargetKind, TargetPath};
use crate::san::paths::{self, Opened, PathError, PathSpec};
use crate::san::ports::{Port, Ports, Role};
use crate::scsi::{Disk, Nexus, Status};
use crate::stream::Chunk;
use crate::xcopy::testing::*;

const COPY_STATUS: u8 = 0x00;
const FAILED_SEGMENT_DETAILS: u8 = 0x04;
const VAULT_NAA: [u8; 8] = [0x30, 0, 0, 0, 0, 0, 0x0A, 0x17];
const VAULT_WWN: [u8; 8] = [0x50, 0x01, 0x43, 0x80, 0x12, 0x34, 0x56, 0x78];
const VAULT_SIZE: u64 = 8 << 20;

/// Exports are the rig's units; paths open as in the daemon, except a path listed in
/// `fail_after` whose writes fail after that many.
#[derive(Debug)]
struct TestReach {
    disks: Vec<Arc<Disk>>,
    target: CopyTarget,
    ports: Arc<Ports>,
    fail_after: Mutex<Vec<(usize, u64)>>,
}

impl Reach for TestReach {
    fn export(&self, name: &str) -> Result<Arc<dyn BlockDevice>, String> {
        self.disks
            .iter()
            .find(|d| d.identity().name == name)
            .map(|d| d.device().clone())
            .ok_or_else(|| format!("no export {name}"))
    }

    fn copy_target(&self, name: &str) -> Option<CopyTarget> {
        (self.target.name == name).then(|| self.target.clone())
    }

    fn ports(&self, names: &[String], group: Option<&str>) -> Vec<Port> {
        self.ports.initiators(names, group)
    }

    fn open(&self, target: &CopyTarget, path: usize, port: &Port) -> Result<Opened, PathError> {
        let opened = paths::open(
            &target.paths[path].spec,
            port.source(),
            Duration::from_secs(1),
        )?;
        let fail = self
            .fail_after
            .lock()
            .unwrap()
            .iter()
            .find(|f| f.0 == path)
            .map(|f| f.1);
        match (opened, fail) {
            (Opened::Block(dev), Some(ok)) => {
                let (dev, control) = FaultDevice::new(dev);
                control.fail_after(OpMask::WRITE, ok);
                Ok(Opened::Block(Arc::new(dev)))
            }
            (opened, _) => Ok(opened),
        }
    }
}

struct Setup {
    rig: Rig,
    table: Arc<LocalTable>,
    service: Arc<CopyService>,
    _movers: Vec<MoverHandle>,
}

fn image(dir: &Path, name: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p)
        .unwrap()
        .set_len(VAULT_SIZE)
        .unwrap();
    p
}

fn vault(paths: Vec<TargetPath>) -> CopyTarget {
    CopyTarget {
        name: "vault".into(),
        naa: Some(VAULT_NAA.to_vec()),
        fc_name: Some(VAULT_WWN),
        kind: TargetKind::Block,
        record_size: 64 << 10,
        paths,
        media: Vec::new(),
    }
}

fn any(p: &Path) -> TargetPath {
    TargetPath {
        spec: PathSpec::File(p.to_owned()),
        port: None,
    }
}

/// One unit, the vault, `movers` movers (name, ports), the given ports.
fn setup(
    target: CopyTarget,
    ports: Vec<Port>,
    movers: &[(&str, &[&str])],
    fail_after: Vec<(usize, u64)>,
) -> Setup {
    let table = Arc::new(LocalTable::new().with_grace(Duration::from_millis(300)));
    let ports = Arc::new(Ports::new(ports).unwrap());
    let service = CopyService::new(table.clone(), ports.clone(), vec![target.clone()]);
    let rig = Rig::with_service(1, service.clone());
    let reach: Arc<dyn Reach> = Arc::new(TestReach {
        disks: rig.disks.clone(),
        target,
        ports,
        fail_after: Mutex::new(fail_after),
    });
    let movers = movers
        .iter()
        .map(|(name, ports)| {
            let config = MoverConfig {
                ports: ports.iter().map(|p| p.to_string()).collect(),
                lease: Duration::from_secs(2),
                poll: Duration::from_millis(10),
                ..MoverConfig::new(name)
            };
            mover::spawn(config, table.clone(), reach.clone())
        })
        .collect();
    Setup {
        rig,
        table,
        service,
        _movers: movers,
    }
}

/// A list copying `blocks` blocks from LBA 0 of the receiving unit to LBA `dst_lba` of the vault.
fn to_vault(blocks: u16, dst_lba: u64) -> Vec<u8> {
    spc_list(
        1,
        0b00,
        &[naa_target(VAULT_NAA, 0, 512)],
        &[b2b(0xFFFF, 0, blocks, 0, dst_lba, false)],
    )
}

fn read_file(p: &Path, offset: u64, len: usize) -> Vec<u8> {
    let all = std::fs::read(p).unwrap();
    all[offset as usize..offset as usize + len].to_vec()
}

#[test]
fn a_list_naming_a_copy_target_is_copied_by_a_mover_through_the_first_path_that_opens() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "vault.img");
    let target = vault(vec![any(&dir.path().join("missing.img")), any(&img)]);
    let s = setup(target, vec![], &[("m1", &[])], vec![]);
    let d = &s.rig.disks[0];
    let data = pattern(3 << 20, 9);
    put(d, 0, &data);
    let blocks = (data.len() / 512) as u16;
    assert_eq!(xcopy(d, &to_vault(blocks, 16)).status, Status::Good);
    assert_eq!(read_file(&img, 16 * 512, data.len()), data);
    assert_eq!(
        read_file(&img, 0, 16 * 512),
        vec![0u8; 16 * 512],
        "before the range untouched"
    );
    // COPY STATUS reports it done, with the bytes.
    let status = good(rcr(d, COPY_STATUS, 1, 64));
    assert_eq!(status[4] & 0x7F, 0x01, "operation completed without errors");
    let jobs = s.service.list().unwrap();
    assert_eq!(jobs.len(), 1);
    let j = &jobs[0];
    assert_eq!(j.state(), "done");
    assert_eq!(j.bytes, data.len() as u64);
    assert!(
        j.path.as_deref().unwrap().ends_with("vault.img"),
        "{:?}",
        j.path
    );
    assert!(j.unavailable.is_empty());
}

#[test]
fn no_path_that_opens_aborts_with_copy_target_device_not_reachable() {
    let dir = tempfile::tempdir().unwrap();
    let target = vault(vec![
        any(&dir.path().join("a.img")),
        any(&dir.path().join("b.img")),
    ]);
    let s = setup(target, vec![], &[("m1", &[]), ("m2", &[])], vec![]);
    let d = &s.rig.disks[0];
    let r = xcopy(d, &to_vault(8, 0));
    assert_eq!(sense_of(&r).0, (COPY_ABORTED, 0x0D, 0x02));
    let details = good(rcr(d, FAILED_SEGMENT_DETAILS, 1, 256));
    assert!(details.len() > 60, "sense held for FAILED SEGMENT DETAILS");
    let j = &s.service.list().unwrap()[0];
    assert_eq!(j.state(), "failed");
    // Each mover tried both paths and said why.
    assert_eq!(j.unavailable.len(), 2, "{:?}", j.unavailable);
    for why in j.unavailable.values() {
        assert!(why.contains("a.img") && why.contains("b.img"), "{why}");
    }
}

#[test]
fn a_path_failing_mid_copy_fails_over_to_the_next_and_the_copy_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let first = image(dir.path(), "first.img");
    let second = image(dir.path(), "second.img");
    // The first path's writes fail after 2 (of 4 pieces).
    let target = vault(vec![any(&first), any(&second)]);
    let s = setup(target, vec![], &[("m1", &[])], vec![(0, 2)]);
    let d = &s.rig.disks[0];
    let data = pattern(4 << 20, 3);
    put(d, 0, &data);
    let r = xcopy(d, &to_vault((data.len() / 512) as u16, 0));
    assert_eq!(r.status, Status::Good, "{:?}", sense_of(&r));
    // The piece that failed was written again through the second path, and the rest after it.
    assert_eq!(read_file(&second, 2 << 20, 2 << 20), data[2 << 20..]);
    let j = &s.service.list().unwrap()[0];
    assert!(
        j.path.as_deref().unwrap().ends_with("second.img"),
        "{:?}",
        j.path
    );
    // Both paths failing mid-copy: a device failure (0Dh/01h), not "not reachable".
    drop(s);
    let target = vault(vec![any(&first), any(&second)]);
    let s = setup(target, vec![], &[("m1", &[])], vec![(0, 1), (1, 1)]);
    put(&s.rig.disks[0], 0, &data);
    let r = xcopy(&s.rig.disks[0], &to_vault((data.len() / 512) as u16, 0));
    assert_eq!(
        sense_of(&r).0,
        (COPY_ABORTED, 0x0D, 0x01),
        "{:?}",
        s.service.list()
    );
    let j = &s.service.list().unwrap()[0];
    assert!(j.outcome.is_some() && j.state() == "failed");
}

fn port(name: &str, role: Role, address: Option<&str>, group: Option<&str>) -> Port {
    Port {
        name: name.into(),
        role,
        address: address.map(Into::into),
        group: group.map(Into::into),
    }
}

#[test]
fn a_job_goes_only_through_initiator_ports_of_its_target_ports_group() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "vault.img");
    // Path 0 only from be-a (group a), path 1 from any port.
    let target = vault(vec![
        TargetPath {
            spec: PathSpec::File(img.clone()),
            port: Some("be-a".into()),
        },
        any(&dir.path().join("missing.img")),
    ]);
    let ports = vec![
        port("fe-a", Role::Target, Some("127.0.0.1:3260"), Some("a")),
        port("fe-b", Role::Target, Some("127.0.0.1:3261"), Some("b")),
        port("fe-c", Role::Target, Some("127.0.0.1:3262"), Some("c")),
        port("be-a", Role::Initiator, None, Some("a")),
        port("be-b", Role::Initiator, None, Some("b")),
    ];
    // m1 owns be-b only, m2 owns be-a: a command on fe-a is served by m2 through be-a.
    let s = setup(
        target,
        ports,
        &[("m1", &["be-b"]), ("m2", &["be-a"])],
        vec![],
    );
    let d = &s.rig.disks[0];
    put(d, 0, &pattern(64 << 10, 5));
    let on = |port: u16| Nexus {
        initiator: "iqn.test".into(),
        target_port: Some(format!("127.0.0.1:{port}").parse().unwrap()),
    };
    assert_eq!(
        xcopy_from(d, &on(3260), &to_vault(128, 0)).status,
        Status::Good
    );
    let j = &s.service.list().unwrap()[0];
    assert_eq!(j.spec.group.as_deref(), Some("a"));
    // m1, if it looked first, marked itself: it has no port in group a.
    assert!(
        j.unavailable
            .get("m1")
            .is_none_or(|w| w.contains("group a")),
        "{j:?}"
    );
    assert!(!j.unavailable.contains_key("m2"));
    assert!(j.path.as_deref().unwrap().starts_with("be-a -> "));
    // On fe-b: m1's be-b may use only path 1, which is missing; m2 has no port in b.
    let r = xcopy_from(d, &on(3261), &to_vault(128, 0));
    assert_eq!(sense_of(&r).0, (COPY_ABORTED, 0x0D, 0x02));
    // On fe-c: no mover has a port in group c.
    let r = xcopy_from(d, &on(3262), &to_vault(128, 0));
    assert_eq!(sense_of(&r).0, (COPY_ABORTED, 0x0D, 0x02));
    let j = &s.service.list().unwrap()[2];
    assert!(
        j.unavailable
            .values()
            .all(|w| w.contains("no initiator port in group c"))
    );
    // The operator moves be-b into group c: the next job goes through it (path 1 still
    // missing, so the reason changes to the path).
    s.service
        .ports()
        .set("be-b", None, Some(Some("c".into())))
        .unwrap();
    let r = xcopy_from(d, &on(3262), &to_vault(128, 0));
    assert_eq!(sense_of(&r).0, (COPY_ABORTED, 0x0D, 0x02));
    let j = &s.service.list().unwrap()[3];
    assert!(
        j.unavailable["m1"].contains("missing.img"),
        "{:?}",
        j.unavailable
    );
    let _ = &s.table;
}

#[test]
fn a_legato_list_names_the_copy_target_by_its_fibre_channel_name() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "vault.img");
    let s = setup(vault(vec![any(&img)]), vec![], &[("m1", &[])], vec![]);
    let d = &s.rig.disks[0];
    let data = pattern(8 * 512, 7);
    put(d, 0, &data);
    #[rustfmt::skip]
    let mut list = vec![
        0x01, 0x00, 0x00, 0x20, // LIST IDENTIFIER 1, hold; TARGET DESCRIPTOR LIST LENGTH 32
        0x00, 0x00, 0x00, 0x00, // reserved
        0x00, 0x00, 0x00, 0x1C, // SEGMENT DESCRIPTOR LIST LENGTH 28 (no inline data length)
        0xE0, 0x00, 0x00, 0x00, // Fibre Channel N_Port_Name; LU ID TYPE 00b (LUN); block device
    ];
    list.extend_from_slice(&VAULT_WWN); // N_PORT_NAME
    #[rustfmt::skip]
    list.extend_from_slice(&[
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // LU IDENTIFIER: LUN 0
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // reserved
        0x00, 0x00, 0x02, 0x00, // DISK BLOCK LENGTH 512
        0x02, 0x00, 0x00, 0x18, // block→block
        0xFF, 0xFF, 0x00, 0x00, // from the receiving unit to the FC-named target
        0x00, 0x00, 0x00, 0x08, // 8 blocks
        0, 0, 0, 0, 0, 0, 0, 0, // from LBA 0
        0, 0, 0, 0, 0, 0, 0, 4, // to LBA 4
    ]);
    let r = xcopy(d, &list);
    assert_eq!(
        r.status,
        Status::Good,
        "{:?} {:?}",
        sense_of(&r),
        s.service.list()
    );
    assert_eq!(read_file(&img, 4 * 512, data.len()), data);
}

#[test]
fn without_a_running_mover_the_list_fails_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "vault.img");
    let s = setup(vault(vec![any(&img)]), vec![], &[], vec![]);
    let r = xcopy(&s.rig.disks[0], &to_vault(8, 0));
    assert_eq!(sense_of(&r).0, (COPY_ABORTED, 0x0D, 0x02));
    let j = &s.service.list().unwrap()[0];
    match &j.outcome {
        Some(crate::jobs::Outcome::Failed { reason, .. }) => {
            assert!(reason.contains("no data mover"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.table.list().unwrap().len(), 1);
}

#[test]
fn an_aborted_list_cancels_its_job() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "vault.img");
    // No mover: the job would wait out the grace period; the abort ends it first.
    let s = setup(vault(vec![any(&img)]), vec![], &[], vec![]);
    let abort = crate::scsi::Abort::new();
    abort.set();
    let r = xcopy_task(&s.rig.disks[0], &Nexus::default(), &abort, &to_vault(8, 0));
    assert_eq!(sense_of(&r), ((ABORTED_COMMAND, 0x00, 0x00), None));
    let j = &s.service.list().unwrap()[0];
    match &j.outcome {
        Some(crate::jobs::Outcome::Failed { error, reason, .. }) => {
            assert_eq!(*error, crate::jobs::JobError::Cancelled);
            assert!(reason.contains("aborted by the initiator"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(good(rcr(&s.rig.disks[0], COPY_STATUS, 1, 12))[4], 0x02);
}

const TAPE_NAA: [u8; 8] = [0x30, 0, 0, 0, 0, 0, 0x0B, 0x0B];

/// A stream copy target "tape" (TAPE_NAA) on file `tape-1` in `dir`, `tape-2` its next medium.
fn tape(dir: &Path) -> (CopyTarget, std::path::PathBuf, std::path::PathBuf) {
    let first = dir.join("tape-1");
    let second = dir.join("tape-2");
    std::fs::File::create(&first).unwrap();
    std::fs::File::create(&second).unwrap();
    let tape = CopyTarget {
        name: "tape".into(),
        naa: Some(TAPE_NAA.to_vec()),
        fc_name: None,
        kind: TargetKind::Stream,
        record_size: 64 << 10,
        paths: vec![TargetPath {
            spec: PathSpec::Stream(first.clone()),
            port: None,
        }],
        media: vec![PathSpec::Stream(second.clone())],
    };
    (tape, first, second)
}

/// A sequential-access target descriptor in fixed-block mode.
fn stream_target(naa: [u8; 8]) -> [u8; 32] {
    let mut t = naa_target(naa, 0x01, 0);
    t[28] = 0x01; // FIXED
    t
}

#[test]
fn block_to_stream_and_back_through_a_stream_copy_target() {
    let dir = tempfile::tempdir().unwrap();
    let (tape, first, second) = tape(dir.path());
    let s = setup(tape, vec![], &[("m1", &[])], vec![]);
    let d = &s.rig.disks[0];
    let data = pattern(1 << 20, 11);
    put(d, 64, &data);
    let blocks = (data.len() / 512) as u16;
    // 00h: the unit's blocks 64.. to the tape.
    let list = spc_list(
        1,
        0b10,
        &[stream_target(TAPE_NAA)],
        &[block_stream(0x00, 0xFFFF, 0, blocks, 64)],
    );
    let r = xcopy(d, &list);
    assert_eq!(
        r.status,
        Status::Good,
        "{:?} {:?}",
        sense_of(&r),
        s.service.list()
    );
    let written = std::fs::metadata(&first).unwrap().len();
    assert!(
        written > data.len() as u64,
        "records with headers: {written}"
    );
    // 01h: the stream back, to blocks 6000.. of the same unit.
    let list = spc_list(
        2,
        0b10,
        &[stream_target(TAPE_NAA)],
        &[block_stream(0x01, 0, 0xFFFF, blocks, 6000)],
    );
    assert_eq!(
        std::fs::metadata(&second).unwrap().len(),
        0,
        "the next medium was not needed"
    );
    let r = xcopy(d, &list);
    assert_eq!(
        r.status,
        Status::Good,
        "{:?} {:?}",
        sense_of(&r),
        s.service.list()
    );
    assert_eq!(get(d, 6000, data.len()), data);
    // A stream copy target cannot take a block→block segment.
    let list = spc_list(
        3,
        0b10,
        &[naa_target(TAPE_NAA, 0, 512)],
        &[b2b(0xFFFF, 0, 8, 0, 0, false)],
    );
    let r = xcopy(d, &list);
    assert!(
        matches!(
            sense_of(&r).0,
            (COPY_ABORTED, 0x0D, 0x03) | (ILLEGAL_REQUEST, _, _)
        ),
        "{:?}",
        sense_of(&r)
    );
}

#[test]
fn inline_and_embedded_data_go_to_the_stream_between_the_blocks_in_list_order() {
    let dir = tempfile::tempdir().unwrap();
    let (tape, first, _) = tape(dir.path());
    let s = setup(tape, vec![], &[("m1", &[])], vec![]);
    let d = &s.rig.disks[0];
    let data = pattern(256 << 10, 5);
    put(d, 64, &data);
    let blocks = (data.len() / 512) as u16;
    let label = pattern(512, 7);
    let catalog = pattern(1024, 9);
    // 05h: a 512-byte label; 00h: the blocks; 04h: the second half of the inline data.
    let inline = [pattern(1024, 3), catalog.clone()].concat();
    let list = spc_list(
        1,
        0b10,
        &[stream_target(TAPE_NAA)],
        &[
            embedded_stream(0, &label),
            block_stream(0x00, 0xFFFF, 0, blocks, 64),
            inline_stream(0, 1024, 1024),
        ],
    );
    let r = xcopy(d, &with_inline(list, &inline));
    assert_eq!(r.status, Status::Good, "{:?}", sense_of(&r));
    // The job carries the inline data once, then the label.
    let job = &s.service.list().unwrap()[0].spec;
    assert_eq!(job.carried, [&inline[..], &label].concat());
    let from: Vec<(EndpointRef, u64, u64)> = (job.transfers.iter())
        .map(|t| (t.src.clone(), t.src_offset, t.bytes))
        .collect();
    assert_eq!(from[0], (EndpointRef::Inline, 2048, 512));
    assert_eq!(from[2], (EndpointRef::Inline, 1024, 1024));

    // The stream: label and catalog in Inline records, the blocks in Data records at their
    // offsets, in list order.
    let mut reader = crate::stream::StreamReader::open([first.clone()]).unwrap();
    let mut read = Vec::new();
    while let Some(chunk) = reader.next_chunk().unwrap() {
        read.push(match chunk {
            Chunk::Inline(b) => (None, b.to_vec()),
            Chunk::Data { offset, bytes } => (Some(offset), bytes.to_vec()),
        });
    }
    let capacity = crate::stream::record::payload_capacity(64 << 10);
    let mut want = vec![(None, label.clone())];
    for (i, piece) in data.chunks(capacity).enumerate() {
        want.push((Some(64 * 512 + (i * capacity) as u64), piece.to_vec()));
    }
    want.push((None, catalog.clone()));
    assert_eq!(read, want);

    // 01h reads the stream's bytes in order, inline ones included.
    let all = (label.len() + data.len() + catalog.len()) / 512;
    let list = spc_list(
        2,
        0b10,
        &[stream_target(TAPE_NAA)],
        &[block_stream(0x01, 0, 0xFFFF, all as u16, 6000)],
    );
    let r = xcopy(d, &list);
    assert_eq!(r.status, Status::Good, "{:?}", sense_of(&r));
    assert_eq!(get(d, 6000, all * 512), [label, data, catalog].concat());

    // Inline data the list does not hold: refused before any job, COPY ABORTED.
    let list = spc_list(
        3,
        0b00,
        &[stream_target(TAPE_NAA)],
        &[inline_stream(0, 0, 12)],
    );
    let r = xcopy(d, &with_inline(list, &[0; 8]));
    assert_eq!(sense_of(&r).0, (COPY_ABORTED, 0x26, 0x0B));
    assert_eq!(
        s.service.list().unwrap().len(),
        2,
        "no job for a refused list"
    );
}
