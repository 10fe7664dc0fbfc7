//! Initiator tests: the pure parts (sequence numbers, unsolicited data, the login's steps,
//! the commands' data), then whole sessions against cowd's own target in this process (every
//! burst and segment limit, InitialR2T both ways, CHAP, refusals) and against a scripted
//! target for what cowd's target never does (NOP-In pings mid-command, Reject, a closed
//! command window, a login answer split with the C bit, silence).

use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use super::commands::{self, BlockLimits, Capacity};
use super::device::{transfer_sizes, unmap_ranges};
use super::login::{Identity, LoginProblem, Negotiator, Request, Step};
use super::*;
use crate::device::{BlockDevice, Checked, ErrorKind, MemoryDevice};
use crate::iscsi::chap::{ChapCredentials, ChapIdentity};
use crate::iscsi::config::{AuthPolicy, TargetConfig, TargetEntry};
use crate::iscsi::connection::{self, ConnectionConfig, TargetTable};
use crate::iscsi::pdu::{
    DataIn, DataInStatus, LoginResponse, NopIn, R2t, Reject, ScsiResponse, Stage, TMF_COMPLETE,
    TaskFunction, TaskRequest,
};
use crate::iscsi::text::{self, KeyValues};
use crate::iscsi::url::Credentials;
use crate::scsi::{Disk, LunIdentity};

const T: Duration = Duration::from_secs(10);
const NAME: &str = "iqn.2026-12.test.cowd:unit";
const INITIATOR: &str = "iqn.2026-12.test.cowd:initiator";

fn kv(pairs: &[(&str, &str)]) -> KeyValues {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

// ---------------------------------------------------------------------------------------
// Pure parts.

#[test]
fn the_window_moves_forward_only_and_ignores_impossible_pairs() {
    let mut s = Sequence {
        cmd_sn: 5,
        exp_cmd_sn: 5,
        max_cmd_sn: 4,
        exp_stat_sn: 9,
    };
    assert!(!s.window_open(), "MaxCmdSN = ExpCmdSN - 1: closed");
    s.update(5, 5);
    assert!(s.window_open());
    s.update(4, 4);
    assert_eq!(
        (s.exp_cmd_sn, s.max_cmd_sn),
        (5, 5),
        "older values are ignored"
    );
    s.update(10, 7);
    assert_eq!(
        (s.exp_cmd_sn, s.max_cmd_sn),
        (5, 5),
        "MaxCmdSN < ExpCmdSN - 1"
    );
    s.update(6, 40);
    assert_eq!((s.exp_cmd_sn, s.max_cmd_sn), (6, 40));
    s.status(9);
    s.status(3);
    assert_eq!(
        s.exp_stat_sn, 10,
        "an old StatSN does not move ExpStatSN back"
    );

    let mut wrap = Sequence {
        cmd_sn: u32::MAX,
        exp_cmd_sn: u32::MAX,
        max_cmd_sn: u32::MAX,
        exp_stat_sn: u32::MAX,
    };
    wrap.update(0, 2);
    assert_eq!((wrap.exp_cmd_sn, wrap.max_cmd_sn), (0, 2));
    wrap.status(u32::MAX);
    assert_eq!(wrap.exp_stat_sn, 0);
}

fn negotiated(immediate_data: bool, initial_r2t: bool) -> Negotiated {
    Negotiated {
        max_xmit_data_segment_length: 8192,
        first_burst_length: 65536,
        immediate_data,
        initial_r2t,
        ..Negotiated::default()
    }
}

#[test]
fn unsolicited_data_stays_within_the_first_burst() {
    let kib = |n: usize| n << 10;
    assert_eq!(
        unsolicited(kib(1), &negotiated(true, true)),
        (kib(1), kib(1))
    );
    assert_eq!(
        unsolicited(kib(100), &negotiated(true, true)),
        (kib(8), kib(8))
    );
    assert_eq!(
        unsolicited(kib(100), &negotiated(true, false)),
        (kib(8), kib(64))
    );
    assert_eq!(
        unsolicited(kib(100), &negotiated(false, false)),
        (0, kib(64))
    );
    assert_eq!(unsolicited(kib(100), &negotiated(false, true)), (0, 0));
    assert_eq!(unsolicited(kib(4), &negotiated(false, false)), (0, kib(4)));
    assert_eq!(unsolicited(0, &negotiated(true, false)), (0, 0));
}

#[test]
fn sense_has_a_length_prefix() {
    assert_eq!(sense_of(&[0, 3, 0x70, 0, 5, 9, 9]), vec![0x70, 0, 5]);
    assert_eq!(
        sense_of(&[0, 9, 0x70]),
        vec![0x70],
        "a short segment gives what it has"
    );
    assert!(sense_of(&[0]).is_empty());
}

fn identity(credentials: Option<Credentials>) -> Identity {
    Identity {
        initiator_name: INITIATOR.into(),
        target_name: NAME.into(),
        credentials,
    }
}

fn stage(current: Stage, next: Option<Stage>) -> LoginStage {
    LoginStage {
        current,
        next,
        cont: false,
    }
}

fn keys_of(step: Step) -> Request {
    match step {
        Step::Send(r) => r,
        Step::Done(n) => panic!("done early: {n:?}"),
    }
}

#[test]
fn a_login_without_authentication_takes_two_round_trips() {
    let mut n = Negotiator::new(identity(None));
    let first = n.first();
    assert_eq!(
        first.stage,
        stage(Stage::Security, Some(Stage::Operational))
    );
    assert!(first.keys.contains(&("AuthMethod".into(), "None".into())));
    assert!(first.keys.contains(&("TargetName".into(), NAME.into())));

    let answer = kv(&[("AuthMethod", "None"), ("TargetPortalGroupTag", "1")]);
    let op = keys_of(
        n.on_response(stage(Stage::Security, Some(Stage::Operational)), &answer)
            .unwrap(),
    );
    assert_eq!(
        op.stage,
        stage(Stage::Operational, Some(Stage::FullFeature))
    );
    let offered: Vec<&str> = op.keys.iter().map(|(k, _)| k.as_str()).collect();
    for key in [
        "HeaderDigest",
        "ImmediateData",
        "InitialR2T",
        "MaxBurstLength",
    ] {
        assert!(offered.contains(&key), "{key}");
    }

    let answer = kv(&[
        ("HeaderDigest", "None"),
        ("DataDigest", "None"),
        ("ImmediateData", "Yes"),
        ("InitialR2T", "Yes"),
        ("MaxBurstLength", "1048576"),
        ("FirstBurstLength", "2097152"),
        ("MaxRecvDataSegmentLength", "65536"),
        ("X-vendor.thing", "7"),
    ]);
    let reply = n
        .on_response(stage(Stage::Operational, None), &answer)
        .unwrap();
    assert_eq!(
        keys_of(reply).keys,
        kv(&[("X-vendor.thing", "NotUnderstood")]),
        "a key the target offered on its own is answered, and the transit asked again"
    );
    let done = n.on_response(stage(Stage::Operational, Some(Stage::FullFeature)), &vec![]);
    let Ok(Step::Done(agreed)) = done else {
        panic!("not done: {done:?}")
    };
    assert_eq!(agreed.max_burst_length, 1 << 20);
    assert_eq!(agreed.max_xmit_data_segment_length, 65536);
    assert!(agreed.initial_r2t && agreed.immediate_data);
    assert_eq!(agreed.target_portal_group_tag, Some(1));
    assert_eq!(
        agreed.first_burst_length, 262_144,
        "at most what was offered"
    );
}

#[test]
fn chap_answers_the_targets_challenge() {
    let credentials = Credentials {
        user: "alice".into(),
        password: "twelve-bytes-pw".into(),
    };
    let mut n = Negotiator::new(identity(Some(credentials)));
    assert!(
        n.first()
            .keys
            .contains(&("AuthMethod".into(), "CHAP,None".into()))
    );
    let security = stage(Stage::Security, None);
    let r = keys_of(
        n.on_response(security, &kv(&[("AuthMethod", "CHAP")]))
            .unwrap(),
    );
    assert_eq!(r.keys, kv(&[("CHAP_A", "5")]));
    assert_eq!(r.stage.next, None, "no transit while CHAP runs");
    let challenge = kv(&[("CHAP_A", "5"), ("CHAP_I", "7"), ("CHAP_C", "0x0102030405")]);
    let r = keys_of(n.on_response(security, &challenge).unwrap());
    let expected = crate::iscsi::values::hex(&crate::iscsi::chap::response(
        7,
        b"twelve-bytes-pw",
        &[1, 2, 3, 4, 5],
    ));
    assert_eq!(r.keys, kv(&[("CHAP_N", "alice"), ("CHAP_R", &expected)]));
    assert_eq!(r.stage.next, Some(Stage::Operational));
    let op = n
        .on_response(stage(Stage::Security, Some(Stage::Operational)), &vec![])
        .unwrap();
    assert_eq!(keys_of(op).stage.current, Stage::Operational);
}

#[test]
fn login_answers_that_end_the_login() {
    let mut n = Negotiator::new(identity(None));
    let e = n.on_response(stage(Stage::Security, None), &kv(&[("AuthMethod", "CHAP")]));
    assert_eq!(e, Err(LoginProblem::ChapRequired));

    let to_operational = |n: &mut Negotiator| {
        let s = stage(Stage::Security, Some(Stage::Operational));
        n.on_response(s, &kv(&[("AuthMethod", "None")])).unwrap();
    };
    let full = stage(Stage::Operational, Some(Stage::FullFeature));
    for (k, v) in [
        ("HeaderDigest", "CRC32C"),
        ("DataDigest", "Reject"),
        ("ErrorRecoveryLevel", "1"),
        ("MaxBurstLength", "100"),
        ("ImmediateData", "maybe"),
    ] {
        let mut n = Negotiator::new(identity(None));
        to_operational(&mut n);
        let e = n.on_response(full, &kv(&[(k, v)])).unwrap_err();
        assert!(
            matches!(e, LoginProblem::BadAnswer { .. }),
            "{k}={v}: {e:?}"
        );
    }

    let mut n = Negotiator::new(identity(None));
    let e = n.on_response(stage(Stage::Operational, None), &vec![]);
    assert!(matches!(e, Err(LoginProblem::Stage { .. })));
    let mut n = Negotiator::new(identity(None));
    let e = n.on_response(stage(Stage::Security, Some(Stage::FullFeature)), &vec![]);
    assert_eq!(e, Err(LoginProblem::Transit(Stage::FullFeature)));
    let mut n = Negotiator::new(identity(None));
    let mut last = Ok(Step::Done(Negotiated::default()));
    for _ in 0..20 {
        last = n.on_response(stage(Stage::Security, None), &vec![]);
    }
    assert_eq!(
        last,
        Err(LoginProblem::TooManySteps),
        "a target that never transits"
    );
}

#[test]
fn command_data_parsers() {
    let mut cap = vec![0u8; 32];
    cap[..8].copy_from_slice(&1023u64.to_be_bytes());
    cap[8..12].copy_from_slice(&4096u32.to_be_bytes());
    cap[14] = 0xC0;
    let c = Capacity::parse(&cap).unwrap();
    assert_eq!((c.blocks, c.block_size, c.bytes()), (1024, 4096, 4 << 20));
    assert!(c.lbpme && c.lbprz);
    assert_eq!(Capacity::parse(&cap[..10]), None);

    let mut b0 = vec![0u8, 0xB0, 0, 0x3C];
    b0.resize(64, 0);
    b0[8..12].copy_from_slice(&2048u32.to_be_bytes());
    b0[20..24].copy_from_slice(&(1u32 << 20).to_be_bytes());
    b0[24..28].copy_from_slice(&16u32.to_be_bytes());
    let l = BlockLimits::parse(&b0);
    assert_eq!(
        (l.max_transfer, l.max_unmap_blocks, l.max_unmap_descriptors),
        (2048, 1 << 20, 16)
    );
    assert_eq!(
        BlockLimits::parse(&b0[..10]).max_unmap_blocks,
        0,
        "cut short"
    );
    assert_eq!(BlockLimits::parse(&[0, 0x80, 0, 0]), BlockLimits::default());

    // VPD 83h as cowd's target writes it: NAA, then T10 vendor ID.
    let page = crate::scsi::inquiry::Inquiry {
        identity: &lun_identity(),
        profile: &crate::scsi::profile::Profile::of(&MemoryDevice::new(DISK)).unwrap(),
        copy: None,
    }
    .vpd(0x83)
    .unwrap();
    let naa = commands::naa(&page).unwrap();
    assert_eq!(
        naa.value,
        crate::scsi::inquiry::naa(lun_identity().id).to_vec()
    );
    assert_eq!(commands::designators(&page).len(), 2);
    let truncated = &page[..page.len() - 3];
    assert_eq!(
        commands::designators(truncated).len(),
        1,
        "a cut descriptor is dropped"
    );
    assert_eq!(
        commands::naa(&[0, 0x83, 0, 6, 0x01, 0x13, 0, 2, 1, 2]),
        None,
        "an NAA of the target port is not the unit's"
    );

    assert_eq!(
        commands::sense_codes(&[0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x21, 0x00]),
        Some(SenseCodes {
            key: 5,
            asc: 0x21,
            ascq: 0
        })
    );
    assert_eq!(
        commands::sense_codes(&[0x72, 0x0A, 0x08, 0x04]),
        Some(SenseCodes {
            key: 0xA,
            asc: 8,
            ascq: 4
        })
    );
    assert_eq!(commands::sense_codes(&[0x7F]), None);
    assert_eq!(commands::sense_codes(&[]), None);

    assert_eq!(
        commands::unmap_parameters(&[(1, 2)]),
        [
            0, 22, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0
        ]
    );
    assert_eq!(unmap_ranges(10, 5, 2), [(10, 2), (12, 2), (14, 1)]);
    let limits = |max_transfer, optimal_transfer| BlockLimits {
        max_transfer,
        optimal_transfer,
        ..BlockLimits::default()
    };
    assert_eq!(transfer_sizes(512, &limits(0, 0)), (32 << 20, 4096));
    assert_eq!(transfer_sizes(4096, &limits(100, 8)), (409_600, 32_768));
    assert_eq!(
        transfer_sizes(512, &limits(1 << 30, 1 << 30)),
        (32 << 20, 32 << 20)
    );
    assert_eq!(
        transfer_sizes(520, &limits(0, 0)).0 % 520,
        0,
        "whole blocks"
    );
    assert_eq!(unmap_ranges(0, 0, 2), []);
}

fn lun_identity() -> LunIdentity {
    LunIdentity {
        id: 0x0123_4567_89AB_CDEF,
        serial: "SN-1".into(),
        product: "initiator test".into(),
        name: "unit".into(),
    }
}

// ---------------------------------------------------------------------------------------
// Against cowd's target, in this process.

struct Targets {
    config: TargetConfig,
    disk: Arc<Disk>,
}

impl TargetTable for Targets {
    fn config(&self) -> TargetConfig {
        self.config.clone()
    }

    fn open(&self, target: &str) -> Option<(Arc<Disk>, Box<dyn Send>)> {
        (target == NAME).then(|| (self.disk.clone(), Box::new(()) as Box<dyn Send>))
    }
}

/// cowd's target serving one logical unit on a loopback port, until dropped.
struct CowdTarget {
    port: u16,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl CowdTarget {
    fn start(config: TargetConfig, device: Arc<dyn BlockDevice>) -> CowdTarget {
        CowdTarget::serve(config, Disk::new(device, lun_identity()).unwrap())
    }

    /// Serves `disk` as LUN 0 of the target.
    fn serve(config: TargetConfig, disk: Disk) -> CowdTarget {
        let mut config = config;
        config.targets = vec![TargetEntry {
            name: NAME.into(),
            alias: None,
            addresses: Vec::new(),
        }];
        let table = Arc::new(Targets {
            config,
            disk: Arc::new(disk),
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let accept = std::thread::spawn(move || {
            let mut tsih = 0u16;
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                tsih += 1;
                let table = table.clone();
                std::thread::spawn(move || {
                    let _ = connection::serve(stream, &*table, ConnectionConfig::default(), tsih);
                });
            }
        });
        CowdTarget {
            port,
            stop,
            accept: Some(accept),
        }
    }

    fn url(&self) -> IscsiUrl {
        IscsiUrl::new("127.0.0.1", self.port, NAME, 0)
    }
}

impl Drop for CowdTarget {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

const DISK: u64 = 8 << 20;

fn memory() -> Arc<dyn BlockDevice> {
    Arc::new(MemoryDevice::new(DISK))
}

/// A copy hook whose EXTENDED COPY runs until it is aborted (or 20 s pass: then it succeeds,
/// which the test sees as an answer it should not get).
#[derive(Debug, Default)]
struct UntilAborted {
    started: (std::sync::Mutex<bool>, std::sync::Condvar),
    saw_abort: AtomicBool,
}

impl crate::scsi::CopyCommands for UntilAborted {
    fn extended_copy(
        &self,
        _: &Disk,
        _: &crate::scsi::Nexus,
        _: &[u8],
        abort: &crate::scsi::Abort,
    ) -> Result<(), crate::scsi::Sense> {
        *self.started.0.lock().unwrap() = true;
        self.started.1.notify_all();
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if abort.is_set() {
                self.saw_abort.store(true, Ordering::SeqCst);
                return Err(crate::scsi::Sense::new(
                    crate::scsi::SenseKey::AbortedCommand,
                    0,
                    0,
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    fn receive_copy_results(&self, _: &[u8], _: u32) -> Result<Vec<u8>, crate::scsi::Sense> {
        Ok(Vec::new())
    }

    fn third_party_copy_vpd(&self) -> Vec<u8> {
        Vec::new()
    }
}

impl UntilAborted {
    /// cowd's target serving a memory disk whose copy hook this is.
    fn serve() -> (Arc<UntilAborted>, CowdTarget) {
        let hook = Arc::new(UntilAborted::default());
        let disk = Disk::new(memory(), lun_identity())
            .unwrap()
            .with_copy(hook.clone());
        (hook, CowdTarget::serve(TargetConfig::default(), disk))
    }

    fn wait_started(&self) {
        let mut started = self.started.0.lock().unwrap();
        while !*started {
            started = self.started.1.wait(started).unwrap();
        }
    }
}

#[test]
fn a_running_extended_copy_is_aborted_and_never_answered() {
    for function in [TaskFunction::AbortTask, TaskFunction::LogicalUnitReset] {
        let (hook, target) = UntilAborted::serve();
        let mut s = Session::login(&target.url(), INITIATOR, T).unwrap();
        // A write answered first: the session works, and StatSN moves on.
        assert!(
            s.command(&commands::write_16(0, 8, false), &[7; 4096], 0)
                .unwrap()
                .is_good()
        );
        let copy = s.take_itt();
        let list = [0u8; 16];
        s.send_command(copy, &commands::extended_copy(16), &list, 0)
            .unwrap();
        hook.wait_started();
        let tmf = s.take_itt();
        let request = Pdu::TaskRequest(TaskRequest {
            immediate: true,
            function,
            lun: s.lun,
            itt: tmf,
            referenced_tag: if function == TaskFunction::AbortTask {
                copy
            } else {
                RESERVED_TAG
            },
            cmd_sn: s.seq.cmd_sn,
            exp_stat_sn: s.seq.exp_stat_sn,
            ref_cmd_sn: s.seq.cmd_sn.wrapping_sub(1),
            exp_data_sn: 0,
        });
        s.send(header(request), &[]).unwrap();
        // The answer to the abort comes next; nothing for the copy before or after it.
        let f = s.receive().unwrap();
        let Pdu::TaskResponse(r) = f.header.pdu else {
            panic!("{function:?}: {f:?}")
        };
        assert_eq!((r.itt, r.response), (tmf, TMF_COMPLETE), "{function:?}");
        assert_eq!(
            r.stat_sn, s.seq.exp_stat_sn,
            "{function:?}: the next StatSN"
        );
        assert_eq!(
            r.max_cmd_sn.wrapping_sub(r.exp_cmd_sn),
            127,
            "{function:?}: the aborted copy's slot of the window opened again"
        );
        s.seq.status(r.stat_sn);
        s.seq.update(r.exp_cmd_sn, r.max_cmd_sn);
        assert!(hook.saw_abort.load(Ordering::SeqCst), "{function:?}");
        // The next command is answered, and it is the next PDU: no answer of the copy.
        let r = s.command(&commands::test_unit_ready(), &[], 0).unwrap();
        assert!(r.is_good(), "{function:?}");
        assert!(s.broken().is_none(), "{function:?}");
    }
}

#[test]
fn an_extended_copy_running_when_its_connection_drops_is_aborted() {
    let (hook, target) = UntilAborted::serve();
    let mut s = Session::login(&target.url(), INITIATOR, T).unwrap();
    let copy = s.take_itt();
    s.send_command(copy, &commands::extended_copy(16), &[0; 16], 0)
        .unwrap();
    hook.wait_started();
    s.stream.shutdown(std::net::Shutdown::Both).unwrap();
    let until = Instant::now() + T;
    while !hook.saw_abort.load(Ordering::SeqCst) {
        assert!(Instant::now() < until, "the copy ran on after its session");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn round_trips_under_every_burst_and_r2t_setting() {
    let tight = TargetConfig {
        max_recv_data_segment_length: 8192,
        max_burst_length: 262_144,
        first_burst_length: 65_536,
        ..TargetConfig::default()
    };
    let unsolicited = TargetConfig {
        initial_r2t: false,
        ..tight.clone()
    };
    let no_immediate = TargetConfig {
        initial_r2t: false,
        immediate_data: false,
        ..TargetConfig::default()
    };
    for (name, config) in [
        ("default", TargetConfig::default()),
        ("tight", tight),
        ("unsolicited", unsolicited),
        ("no immediate data", no_immediate),
    ] {
        let target = CowdTarget::start(config.clone(), memory());
        let dev = IscsiDevice::connect(&target.url(), INITIATOR, T).unwrap();
        assert_eq!(dev.size(), DISK, "{name}");
        assert_eq!(dev.block_size(), 512);
        {
            let s = dev.lock();
            let n = s.negotiated();
            assert_eq!(n.initial_r2t, config.initial_r2t, "{name}");
            assert_eq!(n.immediate_data, config.immediate_data, "{name}");
            assert_eq!(n.max_burst_length, config.max_burst_length, "{name}");
        }
        // Sizes around every limit: one block, a segment, a first burst, a burst, several.
        for (i, len) in [
            512usize,
            8192,
            8704,
            65536,
            66048,
            262_144,
            1 << 20,
            3 << 20,
        ]
        .into_iter()
        .enumerate()
        {
            let data = random_bytes(i as u64, len);
            let offset = 4096 * i as u64;
            dev.write_at(&data, offset, i % 2 == 0).unwrap();
            let mut back = vec![0u8; len];
            dev.read_at(&mut back, offset).unwrap();
            assert!(back == data, "{name}: {len} bytes at {offset}");
        }
        dev.flush().unwrap();
        assert!(
            dev.capabilities().trim,
            "{name}: a thin memory disk offers UNMAP"
        );
        dev.trim(4096, 1 << 20, false).unwrap();
        let mut back = vec![1u8; 1 << 20];
        dev.read_at(&mut back, 4096).unwrap();
        assert!(
            back.iter().all(|&b| b == 0),
            "{name}: unmapped blocks read as zeroes"
        );
        assert!(!dev.is_broken());
    }
}

#[test]
fn a_check_condition_surfaces_its_sense_and_maps_to_device_errors() {
    let target = CowdTarget::start(TargetConfig::default(), memory());
    let mut s = Session::login(&target.url(), INITIATOR, T).unwrap();
    let blocks = DISK / 512;
    let r = s.command(&commands::read_16(blocks, 1), &[], 512).unwrap();
    assert_eq!(r.status, commands::CHECK_CONDITION);
    assert_eq!(
        r.sense_codes(),
        Some(SenseCodes {
            key: 5,
            asc: 0x21,
            ascq: 0
        }),
        "LOGICAL BLOCK ADDRESS OUT OF RANGE"
    );
    let r = s.command(&[0xFF, 0, 0, 0, 0, 0], &[], 0).unwrap();
    assert_eq!(r.sense_codes().map(|c| (c.key, c.asc)), Some((5, 0x20)));
    let r = s.command(&commands::inquiry(None, 36), &[], 36).unwrap();
    assert!(r.is_good() && r.data.len() == 36 && r.residual == Residual::None);
    let r = s
        .command(&commands::inquiry(None, 4096), &[], 4096)
        .unwrap();
    assert!(matches!(r.residual, Residual::Underflow(n) if n as usize == 4096 - r.data.len()));
    s.ping().unwrap();
    s.logout().unwrap();

    let read_only = Arc::new(Checked::new(memory(), true));
    let target = CowdTarget::start(TargetConfig::default(), read_only);
    let dev = IscsiDevice::connect(&target.url(), INITIATOR, T).unwrap();
    assert!(dev.capabilities().read_only, "MODE SENSE says WP");
    let e = dev.write_at(&[1; 512], 0, false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::ReadOnly, "{e}");
    assert!(e.to_string().contains("07h"), "{e}");
    let e = dev.read_at(&mut [0; 512], DISK).unwrap_err();
    assert_eq!(e.kind, ErrorKind::OutOfRange);
}

#[test]
fn long_cdbs_go_in_an_extended_cdb_ahs() {
    let target = CowdTarget::start(TargetConfig::default(), memory());
    let mut s = Session::login(&target.url(), INITIATOR, T).unwrap();
    // A 32-byte CDB of an opcode cowd does not implement (7Fh, variable length): the target
    // reads it whole and answers INVALID COMMAND OPERATION CODE rather than a protocol error.
    let mut cdb = [0u8; 32];
    cdb[0] = 0x7F;
    cdb[7] = 24;
    let r = s.command(&cdb, &[], 0).unwrap();
    assert_eq!(r.status, commands::CHECK_CONDITION);
    assert!(s.broken().is_none());
    assert!(matches!(
        s.command(&[], &[], 0),
        Err(CommandError::Invalid(_))
    ));
    assert!(matches!(
        s.command(&commands::read_16(0, 1), &[1], 512),
        Err(CommandError::Invalid(_))
    ));
}

#[test]
fn chap_logins_and_refusals() {
    let chap = TargetConfig {
        auth: AuthPolicy::Chap(ChapCredentials {
            initiator: ChapIdentity {
                name: "alice".into(),
                secret: b"twelve-bytes-secret".to_vec(),
            },
            target: None,
        }),
        ..TargetConfig::default()
    };
    let target = CowdTarget::start(chap, memory());
    let with = |password: &str| IscsiUrl {
        credentials: Some(Credentials {
            user: "alice".into(),
            password: password.into(),
        }),
        ..target.url()
    };
    let mut s = Session::login(&with("twelve-bytes-secret"), INITIATOR, T).unwrap();
    assert!(s.command(&commands::test_unit_ready(), &[], 0).is_ok());

    let e = Session::login(&with("wrong-secret-here"), INITIATOR, T).unwrap_err();
    assert_eq!(e.status(), Some((2, 1)), "{e}");
    assert!(!e.unreachable());
    assert!(e.to_string().contains("authentication failed"), "{e}");
    assert!(!e.to_string().contains("wrong-secret"), "{e}");

    // Without credentials only AuthMethod=None is offered, which this target refuses.
    let e = Session::login(&target.url(), INITIATOR, T).unwrap_err();
    assert_eq!(e.status(), Some((2, 1)), "{e}");
}

#[test]
fn an_unknown_target_is_refused_and_a_closed_port_unreachable() {
    let target = CowdTarget::start(TargetConfig::default(), memory());
    let url = IscsiUrl {
        target: "iqn.2026-12.test.cowd:nothing".into(),
        ..target.url()
    };
    let e = Session::login(&url, INITIATOR, T).unwrap_err();
    assert_eq!(e.status(), Some((2, 3)), "{e}");
    assert!(!e.unreachable());
    assert!(e.to_string().contains("no such target"), "{e}");

    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = Session::login(&IscsiUrl::new("127.0.0.1", port, NAME, 0), INITIATOR, T).unwrap_err();
    assert!(e.unreachable(), "{e}");
    let e =
        IscsiDevice::connect(&IscsiUrl::new("127.0.0.1", port, NAME, 0), INITIATOR, T).unwrap_err();
    assert!(e.unreachable(), "{e}");
}

// ---------------------------------------------------------------------------------------
// Against a scripted target.

/// The target side of one connection, PDU by PDU.
struct Script {
    reader: PduReader<TcpStream>,
    out: TcpStream,
    stat_sn: u32,
}

impl Script {
    fn read(&mut self) -> Frame {
        match self.reader.read(Digests::NONE, 1 << 20).unwrap() {
            Incoming::Pdu(f) => f,
            other => panic!("{other:?}"),
        }
    }

    fn send(&mut self, pdu: Pdu, data: &[u8]) {
        let bytes = Frame::new(header(pdu), data.to_vec())
            .encode(Digests::NONE)
            .unwrap();
        self.out.write_all(&bytes).unwrap();
    }

    fn next_stat_sn(&mut self) -> u32 {
        self.stat_sn = self.stat_sn.wrapping_add(1);
        self.stat_sn
    }

    /// Answers a login: security with AuthMethod=None, operational with `answers` in
    /// pieces of `piece` bytes (C bit), then full feature with a window up to `max_cmd_sn`.
    fn login(&mut self, answers: &[(&str, &str)], piece: usize, max_cmd_sn: u32) -> u32 {
        let mut cmd_sn = 0;
        let mut texts = vec![text::encode(&kv(&[("AuthMethod", "None")]))];
        let op = text::encode(&kv(answers));
        let chunks: Vec<Vec<u8>> = op.chunks(piece).map(<[u8]>::to_vec).collect();
        texts.extend(chunks.iter().cloned());
        let last = texts.len() - 1;
        for (i, data) in texts.into_iter().enumerate() {
            let f = self.read();
            let Pdu::LoginRequest(req) = f.header.pdu else {
                panic!("{f:?}")
            };
            cmd_sn = req.cmd_sn;
            let final_piece = i == 0 || i == last;
            let next = final_piece.then_some(if i == 0 {
                Stage::Operational
            } else {
                Stage::FullFeature
            });
            let stat_sn = self.next_stat_sn();
            self.send(
                Pdu::LoginResponse(LoginResponse {
                    stage: LoginStage {
                        current: if i == 0 {
                            Stage::Security
                        } else {
                            Stage::Operational
                        },
                        next,
                        cont: !final_piece,
                    },
                    version_max: 0,
                    version_active: 0,
                    isid: req.isid,
                    tsih: if i == last { 7 } else { 0 },
                    itt: req.itt,
                    stat_sn,
                    exp_cmd_sn: req.cmd_sn,
                    max_cmd_sn,
                    status_class: 0,
                    status_detail: 0,
                }),
                &data,
            );
        }
        cmd_sn
    }

    fn scsi_response(&mut self, itt: u32, exp_cmd_sn: u32, status: u8, sense: &[u8]) {
        let mut data = Vec::new();
        if !sense.is_empty() {
            data.extend_from_slice(&(sense.len() as u16).to_be_bytes());
            data.extend_from_slice(sense);
        }
        let stat_sn = self.next_stat_sn();
        self.send(
            Pdu::ScsiResponse(ScsiResponse {
                bidi_residual: Residual::None,
                residual: Residual::None,
                response: 0,
                status,
                itt,
                snack_tag: 0,
                stat_sn,
                exp_cmd_sn,
                max_cmd_sn: exp_cmd_sn + 8,
                exp_data_sn: 0,
            }),
            &data,
        );
    }
}

const ANSWERS: &[(&str, &str)] = &[
    ("HeaderDigest", "None"),
    ("DataDigest", "None"),
    ("ImmediateData", "Yes"),
    ("InitialR2T", "Yes"),
    ("MaxBurstLength", "262144"),
    ("FirstBurstLength", "65536"),
    ("MaxRecvDataSegmentLength", "8192"),
];

/// A scripted target on a loopback port: `script` runs on the accepted connection.
fn scripted(script: impl FnOnce(&mut Script) + Send + 'static) -> (IscsiUrl, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut s = Script {
            reader: PduReader::new(stream.try_clone().unwrap()),
            out: stream,
            stat_sn: 0x8000_0100,
        };
        script(&mut s);
    });
    (IscsiUrl::new("127.0.0.1", port, NAME, 3), t)
}

fn command_of(f: &Frame) -> ScsiCommand {
    match f.header.pdu {
        Pdu::ScsiCommand(c) => c,
        _ => panic!("not a command: {f:?}"),
    }
}

#[test]
fn pings_r2ts_data_in_status_and_sequence_numbers() {
    let (url, target) = scripted(|s| {
        let first = s.login(ANSWERS, 40, 1000);
        // READ: a NOP-In ping first, then Data-In in two PDUs, the last with the status.
        let f = s.read();
        let c = command_of(&f);
        assert_eq!(c.cmd_sn, first, "the first command takes the login's CmdSN");
        assert_eq!(c.exp_stat_sn, s.stat_sn.wrapping_add(1));
        assert_eq!(c.lun, Lun::single_level(3).unwrap());
        assert!(c.read && !c.write && c.final_);
        s.send(
            Pdu::NopIn(NopIn {
                lun: c.lun,
                itt: RESERVED_TAG,
                ttt: 0x55,
                stat_sn: s.stat_sn.wrapping_add(1),
                exp_cmd_sn: c.cmd_sn,
                max_cmd_sn: c.cmd_sn + 8,
            }),
            b"ping",
        );
        let f = s.read();
        let Pdu::NopOut(n) = f.header.pdu else {
            panic!("{f:?}")
        };
        assert_eq!(
            (n.itt, n.ttt, f.data.as_slice()),
            (RESERVED_TAG, 0x55, &b"ping"[..])
        );
        assert!(n.immediate);
        for (sn, offset) in [(0u32, 0u32), (1, 1000)] {
            let status = (sn == 1).then(|| DataInStatus {
                status: 0,
                stat_sn: s.next_stat_sn(),
                residual: Residual::Underflow(48),
            });
            s.send(
                Pdu::DataIn(DataIn {
                    final_: sn == 1,
                    ack: false,
                    status,
                    lun: c.lun,
                    itt: c.itt,
                    ttt: RESERVED_TAG,
                    exp_cmd_sn: c.cmd_sn + 1,
                    max_cmd_sn: c.cmd_sn + 9,
                    data_sn: sn,
                    buffer_offset: offset,
                }),
                &[sn as u8 + 1; 1000],
            );
        }
        // WRITE of 20000 bytes: 8192 immediate, then two R2Ts.
        let f = s.read();
        let c = command_of(&f);
        assert_eq!(c.exp_stat_sn, s.stat_sn.wrapping_add(1));
        assert_eq!((c.expected_len, f.data.len()), (20000, 8192));
        assert!(c.final_, "InitialR2T=Yes: no unsolicited Data-Out");
        let mut got = f.data.clone();
        for (r2t_sn, (offset, len)) in [(8192u32, 10000u32), (18192, 1808)].into_iter().enumerate()
        {
            s.send(
                Pdu::R2t(R2t {
                    lun: c.lun,
                    itt: c.itt,
                    ttt: 0x100 + r2t_sn as u32,
                    stat_sn: s.stat_sn.wrapping_add(1),
                    exp_cmd_sn: c.cmd_sn + 1,
                    max_cmd_sn: c.cmd_sn + 9,
                    r2t_sn: r2t_sn as u32,
                    buffer_offset: offset,
                    desired_len: len,
                }),
                &[],
            );
            let mut sent = 0;
            let mut data_sn = 0;
            while sent < len {
                let f = s.read();
                let Pdu::DataOut(d) = f.header.pdu else {
                    panic!("{f:?}")
                };
                assert_eq!(
                    (d.ttt, d.data_sn, d.buffer_offset),
                    (0x100 + r2t_sn as u32, data_sn, offset + sent)
                );
                assert!(f.data.len() <= 8192);
                sent += f.data.len() as u32;
                assert_eq!(d.final_, sent == len);
                got.extend_from_slice(&f.data);
                data_sn += 1;
            }
        }
        assert_eq!(got, random_bytes(9, 20000));
        s.scsi_response(c.itt, c.cmd_sn + 1, 0, &[]);
        // The logout of the drop.
        let f = s.read();
        let Pdu::LogoutRequest(l) = f.header.pdu else {
            panic!("{f:?}")
        };
        assert_eq!(l.exp_stat_sn, s.stat_sn.wrapping_add(1));
        let stat_sn = s.next_stat_sn();
        s.send(
            Pdu::LogoutResponse(crate::iscsi::pdu::LogoutResponse {
                response: 0,
                itt: l.itt,
                stat_sn,
                exp_cmd_sn: l.cmd_sn,
                max_cmd_sn: l.cmd_sn + 8,
                time2wait: 0,
                time2retain: 0,
            }),
            &[],
        );
    });
    let mut s = Session::login(&url, INITIATOR, T).unwrap();
    assert_eq!(
        s.negotiated().max_xmit_data_segment_length,
        8192,
        "from the C-bit pieces"
    );
    let r = s.command(&commands::read_16(0, 4), &[], 2048).unwrap();
    assert!(r.is_good());
    assert_eq!(r.residual, Residual::Underflow(48));
    assert_eq!(r.data.len(), 2000);
    assert!(r.data[..1000].iter().all(|&b| b == 1) && r.data[1000..].iter().all(|&b| b == 2));
    let r = s
        .command(
            &commands::write_16(0, 40, false),
            &random_bytes(9, 20000),
            0,
        )
        .unwrap();
    assert!(r.is_good());
    drop(s);
    target.join().unwrap();
}

#[test]
fn a_rejected_command_fails_alone_and_a_closed_window_is_pinged_open() {
    let (url, target) = scripted(|s| {
        let first = s.login(ANSWERS, 1 << 20, 0);
        // The window is closed (MaxCmdSN 0 < CmdSN): the initiator pings until it opens.
        for max in [first - 1, first] {
            let f = s.read();
            let Pdu::NopOut(n) = f.header.pdu else {
                panic!("{f:?}")
            };
            assert!(n.immediate && n.ttt == RESERVED_TAG);
            let stat_sn = s.next_stat_sn();
            s.send(
                Pdu::NopIn(NopIn {
                    lun: Lun::ZERO,
                    itt: n.itt,
                    ttt: RESERVED_TAG,
                    stat_sn,
                    exp_cmd_sn: first,
                    max_cmd_sn: max,
                }),
                &[],
            );
        }
        let f = s.read();
        let c = command_of(&f);
        let mut bhs = f.header.encode().to_vec();
        bhs.truncate(48);
        let stat_sn = s.next_stat_sn();
        s.send(
            Pdu::Reject(Reject {
                reason: RejectReason::CommandNotSupported,
                stat_sn,
                exp_cmd_sn: c.cmd_sn + 1,
                max_cmd_sn: c.cmd_sn + 1,
                data_sn: 0,
            }),
            &bhs,
        );
        let f = s.read();
        let c2 = command_of(&f);
        assert_eq!(c2.cmd_sn, c.cmd_sn + 1);
        s.scsi_response(
            c2.itt,
            c2.cmd_sn + 1,
            2,
            &[0x70, 0, 0x0A, 0, 0, 0, 0, 10, 0, 0, 0, 0, 8, 4],
        );
        // Then silence: the next command times out, and the initiator shuts the
        // connection down.
        let _ = s.read();
        let after = s.reader.read(Digests::NONE, 1 << 20);
        assert!(matches!(after, Ok(Incoming::Closed) | Err(_)), "{after:?}");
    });
    let mut s = Session::login(&url, INITIATOR, T).unwrap();
    let e = s.command(&commands::test_unit_ready(), &[], 0).unwrap_err();
    assert!(
        matches!(e, CommandError::Rejected(RejectReason::CommandNotSupported)),
        "{e}"
    );
    assert!(s.broken().is_none());
    let r = s.command(&commands::test_unit_ready(), &[], 0).unwrap();
    assert_eq!(
        r.sense_codes(),
        Some(SenseCodes {
            key: 0xA,
            asc: 8,
            ascq: 4
        })
    );
    s.set_timeout(Duration::from_millis(300)).unwrap();
    let e = s.command(&commands::test_unit_ready(), &[], 0).unwrap_err();
    assert!(
        e.breaks_session() && e.to_string().contains("no answer within"),
        "{e}"
    );
    let e = s.command(&commands::test_unit_ready(), &[], 0).unwrap_err();
    assert!(matches!(e, CommandError::Broken(_)), "{e}");
    drop(s);
    target.join().unwrap();
}
