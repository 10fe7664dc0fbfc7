//! The `handshake` target: the real [`negotiate`] on an in-memory pipe, fed any client bytes,
//! against a table of one or two [`MemoryDevice`] exports.
//!
//! Input: a [`Setup`] byte, then the client's bytes. The server must finish within
//! [`HANDSHAKE_LIMIT`] without panicking, and its bytes and outcome are checked against a model
//! of the fixed newstyle handshake (`check_transcript`).

use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use cowd::device::{MAX_PAYLOAD, MemoryDevice};
use cowd::export::{Export, Exports};
use cowd::nbd::handshake::{Outcome, negotiate, transmission_flags};
use cowd::nbd::options::{ClientOption, parse_option};
use cowd::nbd::proto::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

use super::wire::{be16, be32, be64};

/// The server a `handshake` input runs against, chosen by the input's first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup {
    /// Export "backup" (4 MiB + 512 bytes) besides "disk" (1 MiB, the default export).
    pub two_exports: bool,
    /// "backup" is read-only.
    pub read_only_backup: bool,
    /// Index into [`PIPE_SIZES`]: small pipes split every read and write of the server.
    pub pipe: u8,
    /// The daemon is shutting down: no GO or EXPORT_NAME may succeed.
    pub stopping: bool,
}

/// Buffer sizes of the in-memory pipe between client and server.
pub const PIPE_SIZES: [usize; 4] = [64 << 10, 1, 7, 512];

/// How long one handshake may take before the check fails.
pub const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

impl Setup {
    /// Bit 0 two exports, bit 1 read-only backup, bits 2-3 pipe, bits 5-7 all set: stopping.
    pub fn from_byte(b: u8) -> Setup {
        Setup {
            two_exports: b & 1 != 0,
            read_only_backup: b & 2 != 0,
            pipe: (b >> 2) & 3,
            stopping: b & 0xe0 == 0xe0,
        }
    }

    pub fn to_byte(self) -> u8 {
        let stopping = if self.stopping { 0xe0 } else { 0 };
        u8::from(self.two_exports)
            | u8::from(self.read_only_backup) << 1
            | (self.pipe & 3) << 2
            | stopping
    }
}

/// The export table of `setup`.
pub fn exports(setup: Setup) -> Exports {
    let t = Exports::default();
    let disk = Arc::new(MemoryDevice::new(1 << 20));
    t.add(Export::new("disk", Path::new("/fuzz/disk"), disk, false))
        .unwrap();
    if setup.two_exports {
        let backup = Arc::new(MemoryDevice::new((4 << 20) + 512));
        let path = Path::new("/fuzz/backup");
        t.add(Export::new("backup", path, backup, setup.read_only_backup))
            .unwrap();
    }
    t
}

/// A runtime like the one the handshake runs on in tests: current thread, with timers.
pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("building a tokio runtime")
}

/// `handshake` fuzz input: a [`Setup`] byte, then the client's bytes.
pub fn fuzz_handshake(rt: &Runtime, data: &[u8]) {
    if let Some((&setup, client)) = data.split_first() {
        check_handshake(rt, Setup::from_byte(setup), client);
    }
}

/// Runs [`negotiate`] against a client that sends `client` and then closes its sending side,
/// while reading everything the server sends until the server drops its end. The server must
/// finish within [`HANDSHAKE_LIMIT`] without panicking, and its bytes and outcome must fit the
/// client's (see `check_transcript`).
pub fn check_handshake(rt: &Runtime, setup: Setup, client: &[u8]) {
    let exports = exports(setup);
    let stopping = AtomicBool::new(setup.stopping);
    let (server_end, client_end) = tokio::io::duplex(PIPE_SIZES[usize::from(setup.pipe & 3)]);
    let session = async {
        let (mut from_server, mut to_server) = tokio::io::split(client_end);
        let server = async {
            let mut io = server_end;
            let outcome = negotiate(&mut io, &exports, &stopping).await;
            drop(io); // the client's reads end here
            outcome
        };
        let client_sends = async {
            // An error only means the server has hung up already.
            let _ = to_server.write_all(client).await;
            let _ = to_server.shutdown().await;
        };
        let client_reads = async {
            let mut out = Vec::new();
            from_server.read_to_end(&mut out).await.map(|_| out)
        };
        tokio::join!(server, client_sends, client_reads)
    };
    // The timer must be made inside the runtime.
    let bounded = async { tokio::time::timeout(HANDSHAKE_LIMIT, session).await };
    let Ok((outcome, (), out)) = rt.block_on(bounded) else {
        panic!(
            "the handshake was still running after {HANDSHAKE_LIMIT:?} \
             ({setup:?}, client bytes {client:02x?})"
        );
    };
    let out = out.expect("reading the server's bytes");
    check_transcript(setup, &exports, client, &outcome, &out);
}

/// One complete option request in the client's bytes.
#[derive(Debug, Clone, Copy)]
struct Frame<'a> {
    code: u32,
    /// None: longer than `MAX_OPTION_LEN` (drained by the server, or fatal for EXPORT_NAME).
    data: Option<&'a [u8]>,
}

/// Why the client's option requests stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamEnd {
    /// Input ends (possibly inside a request).
    Eof,
    /// A request header without IHAVEOPT.
    BadMagic,
}

/// Splits the client's bytes after the client flags into complete option requests.
fn client_frames(mut b: &[u8]) -> (Vec<Frame<'_>>, StreamEnd) {
    let mut frames = Vec::new();
    loop {
        if b.len() < 16 {
            return (frames, StreamEnd::Eof);
        }
        if be64(b) != IHAVEOPT {
            return (frames, StreamEnd::BadMagic);
        }
        let code = be32(&b[8..]);
        let len = be32(&b[12..]);
        b = &b[16..];
        if len > MAX_OPTION_LEN && code == OPT_EXPORT_NAME {
            // The server closes without reading the name.
            frames.push(Frame { code, data: None });
            return (frames, StreamEnd::Eof);
        }
        let Some((data, rest)) = b.split_at_checked(len as usize) else {
            return (frames, StreamEnd::Eof);
        };
        let data = (len <= MAX_OPTION_LEN).then_some(data);
        frames.push(Frame { code, data });
        b = rest;
    }
}

/// One option reply from the server.
#[derive(Debug, Clone, Copy)]
struct Reply<'a> {
    option: u32,
    kind: u32,
    data: &'a [u8],
}

/// Splits the server's bytes after the hello into option replies and what follows them.
fn server_replies(mut b: &[u8]) -> (Vec<Reply<'_>>, &[u8]) {
    let mut replies = Vec::new();
    while b.len() >= 8 && be64(b) == REPLY_MAGIC {
        assert!(b.len() >= 20, "truncated option reply header {b:02x?}");
        let len = be32(&b[16..]) as usize;
        assert!(
            b.len() - 20 >= len,
            "truncated option reply (data of {len} bytes): {b:02x?}"
        );
        replies.push(Reply {
            option: be32(&b[8..]),
            kind: be32(&b[12..]),
            data: &b[20..20 + len],
        });
        b = &b[20 + len..];
    }
    (replies, b)
}

/// The name of the export an option refers to, if it parses and has one.
fn export_name_of(f: &Frame<'_>) -> Option<String> {
    match parse_option(f.code, f.data?).ok()? {
        ClientOption::ExportName(n) => Some(n),
        ClientOption::Info(r) | ClientOption::Go(r) => Some(r.name),
        ClientOption::ListMetaContext(m) | ClientOption::SetMetaContext(m) => Some(m.export),
        _ => None,
    }
}

/// What one answered option got, as far as later checks need it.
#[derive(Debug, Clone, Copy, Default)]
struct Answer {
    /// ACK or an error.
    last: u32,
    /// Number of META_CONTEXT replies.
    contexts: usize,
    /// Transmission flags of the INFO_EXPORT reply.
    tflags: Option<u16>,
    /// Maximum payload of the BLOCK_SIZE reply.
    max_payload: Option<u32>,
}

fn check_transcript(
    setup: Setup,
    exports: &Exports,
    client: &[u8],
    outcome: &std::io::Result<Outcome>,
    out: &[u8],
) {
    let mut hello = NBDMAGIC.to_be_bytes().to_vec();
    hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
    hello.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    assert!(
        out.starts_with(&hello),
        "the server must open with NBDMAGIC IHAVEOPT flags; it sent {out:02x?}"
    );
    let out = &out[hello.len()..];
    let Some(cflags) = client.first_chunk::<4>().map(|b| u32::from_be_bytes(*b)) else {
        assert!(out.is_empty(), "replies before the client flags");
        assert!(
            matches!(outcome, Err(e) if e.kind() == ErrorKind::UnexpectedEof),
            "no client flags, yet {outcome:?}"
        );
        return;
    };
    if cflags & !(CFLAG_FIXED_NEWSTYLE | CFLAG_NO_ZEROES) != 0 {
        assert!(out.is_empty(), "replies after unknown client flags");
        assert!(
            matches!(outcome, Ok(Outcome::Closed(_))),
            "unknown client flags {cflags:#x} must close, got {outcome:?}"
        );
        return;
    }
    let (frames, end) = client_frames(&client[4..]);
    let (replies, trailer) = server_replies(out);

    // Each option the server answers gets replies with its code, ending with one ACK or error.
    let mut answers: Vec<Answer> = Vec::new();
    let mut group: Vec<Reply<'_>> = Vec::new();
    for rep in replies {
        let Some(f) = frames.get(answers.len()) else {
            panic!("reply {rep:?} to an option the client did not (completely) send");
        };
        assert_eq!(rep.option, f.code, "reply {rep:?} to option {}", f.code);
        group.push(rep);
        if rep.kind == REP_ACK || rep.kind & (1 << 31) != 0 {
            answers.push(check_answer(setup, exports, f, &group));
            group.clear();
        }
    }
    assert!(
        group.is_empty(),
        "replies without a final ACK or error: {group:?}"
    );
    let answered = answers.len();
    // An ACKed ABORT or GO ends the handshake: nothing may follow it.
    let ends = |i: usize| {
        answers[i].last == REP_ACK && (frames[i].code == OPT_ABORT || frames[i].code == OPT_GO)
    };
    if let Some(i) = (0..answered).find(|&i| ends(i)) {
        assert_eq!(
            i + 1,
            answered,
            "the server went on after option {} ended the handshake",
            frames[i].code
        );
    }
    let ended = answered > 0 && ends(answered - 1);
    // The request the server was reading when it stopped, unless an answered one ended it.
    let next = frames.get(answered);

    match outcome {
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::UnexpectedEof, "I/O error {e}");
            assert_eq!(end, StreamEnd::Eof, "EOF error after a bad option magic");
            assert_eq!(
                answered,
                frames.len(),
                "EOF before every complete option was answered"
            );
            assert!(!ended, "EOF error after the handshake ended");
            assert!(trailer.is_empty(), "EXPORT_NAME reply, then an EOF error");
        }
        Ok(Outcome::Closed(why)) => {
            assert!(
                trailer.is_empty(),
                "closed ({why}) after an EXPORT_NAME reply"
            );
            let aborted = ended && frames[answered - 1].code == OPT_ABORT;
            let bad_magic = answered == frames.len() && end == StreamEnd::BadMagic;
            let export_name = next.filter(|f| f.code == OPT_EXPORT_NAME);
            assert!(
                aborted || bad_magic || export_name.is_some(),
                "closed ({why}) with no ABORT, EXPORT_NAME or bad magic to explain it"
            );
            if let Some(f) = export_name.filter(|_| !aborted) {
                let known = export_name_of(f).and_then(|n| exports.get(&n)).is_some();
                assert!(
                    !known || setup.stopping,
                    "EXPORT_NAME of an existing export closed ({why})"
                );
            }
        }
        Ok(Outcome::Transmission(agreed)) => {
            assert!(!setup.stopping, "transmission while the server is stopping");
            let export = &agreed.export;
            let n = &agreed.negotiated;
            assert!(
                exports.all().iter().any(|e| Arc::ptr_eq(e, export)),
                "transmission on an export not in the table"
            );
            let (frames, answers) = (&frames, &answers);
            let acked = |code: u32| {
                (0..answered).filter(move |&i| frames[i].code == code && answers[i].last == REP_ACK)
            };
            let structured = acked(OPT_STRUCTURED_REPLY).next().is_some();
            assert_eq!(n.structured, structured, "structured replies");
            assert_eq!(n.tflags, transmission_flags(export, structured));
            assert_eq!(n.tflags & TFLAG_READ_ONLY != 0, export.read_only());
            assert!((1..=MAX_PAYLOAD).contains(&n.max_payload), "{n:?}");
            // base:allocation is on when the last SET_META_CONTEXT (the spec: "the final
            // time it was sent") succeeded, chose it, and named this export; a failed last
            // one leaves it off even if an earlier one had chosen it.
            let base_allocation = (0..answered)
                .rfind(|&i| frames[i].code == OPT_SET_META_CONTEXT)
                .is_some_and(|i| {
                    let e = export_name_of(&frames[i]).and_then(|name| exports.get(&name));
                    answers[i].last == REP_ACK
                        && answers[i].contexts > 0
                        && e.is_some_and(|e| Arc::ptr_eq(&e, export))
                });
            assert_eq!(n.base_allocation, base_allocation, "base:allocation");
            let chosen = if trailer.is_empty() {
                assert!(
                    ended && frames[answered - 1].code == OPT_GO,
                    "transmission without a GO ACK or EXPORT_NAME reply"
                );
                let go = answers[answered - 1];
                assert_eq!(go.tflags, Some(n.tflags), "GO advertised other flags");
                if let Some(max) = go.max_payload {
                    assert_eq!(max, n.max_payload, "GO advertised another max payload");
                }
                &frames[answered - 1]
            } else {
                let f = next.expect("an EXPORT_NAME reply without EXPORT_NAME");
                assert_eq!(f.code, OPT_EXPORT_NAME, "bytes after the option replies");
                let want = if cflags & CFLAG_NO_ZEROES != 0 {
                    10
                } else {
                    134
                };
                assert_eq!(trailer.len(), want, "EXPORT_NAME reply {trailer:02x?}");
                assert_eq!(trailer[..8], export.size().to_be_bytes());
                assert_eq!(trailer[8..10], n.tflags.to_be_bytes());
                assert!(trailer[10..].iter().all(|&b| b == 0), "{trailer:02x?}");
                f
            };
            let named = export_name_of(chosen).and_then(|name| exports.get(&name));
            assert!(
                named.is_some_and(|e| Arc::ptr_eq(&e, export)),
                "transmission on another export than the client named"
            );
        }
    }
}

/// Checks the replies to one option request; `group` ends with the ACK or error.
fn check_answer(setup: Setup, exports: &Exports, f: &Frame<'_>, group: &[Reply<'_>]) -> Answer {
    let (last, infos) = group.split_last().unwrap();
    let mut answer = Answer {
        last: last.kind,
        ..Answer::default()
    };
    if last.kind != REP_ACK {
        assert!(
            std::str::from_utf8(last.data).is_ok(),
            "error message is not UTF-8: {last:?}"
        );
    }
    let Some(data) = f.data else {
        assert_eq!(last.kind, REP_ERR_TOO_BIG, "oversized option {}", f.code);
        assert!(infos.is_empty());
        return answer;
    };
    let opt = match parse_option(f.code, data) {
        Ok(opt) => opt,
        Err(e) => {
            assert_eq!(
                last.kind, REP_ERR_INVALID,
                "malformed option {} ({e})",
                f.code
            );
            assert!(infos.is_empty());
            return answer;
        }
    };
    let only = |kind: u32| {
        for r in infos {
            assert_eq!(r.kind, kind, "reply {r:?} to {opt:?}");
        }
    };
    match &opt {
        ClientOption::ExportName(_) => panic!("EXPORT_NAME answered with option replies"),
        ClientOption::Abort | ClientOption::StructuredReply => {
            assert!(infos.is_empty(), "{opt:?} got {infos:?}");
            assert_eq!(last.kind, REP_ACK, "{opt:?}");
        }
        ClientOption::StartTls | ClientOption::ExtendedHeaders | ClientOption::Unknown(_) => {
            assert!(infos.is_empty(), "{opt:?} got {infos:?}");
            if matches!(opt, ClientOption::Unknown(_)) {
                assert_eq!(last.kind, REP_ERR_UNSUP, "unknown option {}", f.code);
            }
            assert_ne!(last.kind, REP_ACK, "{opt:?} is not supported, yet ACKed");
        }
        ClientOption::List => {
            only(REP_SERVER);
            assert_eq!(last.kind, REP_ACK, "LIST");
            let all = exports.all();
            assert_eq!(infos.len(), all.len(), "one SERVER reply per export");
            for (r, e) in infos.iter().zip(&all) {
                let n = r.data.get(..4).map_or(usize::MAX, |b| be32(b) as usize);
                let name = r.data.get(4..).and_then(|d| d.get(..n));
                assert_eq!(name, Some(e.name().as_bytes()), "SERVER reply {r:?}");
            }
        }
        ClientOption::Info(r) | ClientOption::Go(r) => {
            only(REP_INFO);
            let Some(export) = exports.get(&r.name) else {
                assert_eq!(last.kind, REP_ERR_UNKNOWN, "{opt:?} of an unknown export");
                return answer;
            };
            if f.code == OPT_GO && setup.stopping {
                assert_ne!(last.kind, REP_ACK, "GO succeeded while stopping");
            }
            if last.kind == REP_ACK {
                check_infos(&export, infos, &mut answer);
            }
        }
        ClientOption::ListMetaContext(m) | ClientOption::SetMetaContext(m) => {
            only(REP_META_CONTEXT);
            if exports.get(&m.export).is_none() {
                assert_ne!(last.kind, REP_ACK, "{opt:?} of an unknown export");
            }
            for r in infos {
                assert!(r.data.len() > 4, "META_CONTEXT reply {r:?}");
                let name = std::str::from_utf8(&r.data[4..]);
                assert!(name.is_ok(), "META_CONTEXT reply {r:?}");
                if f.code == OPT_SET_META_CONTEXT {
                    assert_ne!(be32(r.data), 0, "SET_META_CONTEXT context id 0");
                }
            }
            answer.contexts = infos.len();
        }
    }
    answer
}

/// Checks the INFO replies of a successful INFO or GO on `export`.
fn check_infos(export: &Export, infos: &[Reply<'_>], answer: &mut Answer) {
    for r in infos {
        assert!(r.data.len() >= 2, "INFO reply {r:?}");
        match be16(r.data) {
            INFO_EXPORT => {
                assert_eq!(r.data.len(), 12, "INFO_EXPORT {r:?}");
                assert_eq!(be64(&r.data[2..]), export.size(), "INFO_EXPORT size");
                let tflags = be16(&r.data[10..]);
                assert_ne!(tflags & TFLAG_HAS_FLAGS, 0, "INFO_EXPORT {r:?}");
                assert_eq!(tflags & TFLAG_READ_ONLY != 0, export.read_only(), "{r:?}");
                answer.tflags = Some(tflags);
            }
            INFO_NAME => assert_eq!(&r.data[2..], export.name().as_bytes(), "INFO_NAME"),
            INFO_DESCRIPTION => {
                assert!(std::str::from_utf8(&r.data[2..]).is_ok(), "{r:?}");
            }
            INFO_BLOCK_SIZE => {
                assert_eq!(r.data.len(), 14, "INFO_BLOCK_SIZE {r:?}");
                let (min, pref, max) =
                    (be32(&r.data[2..]), be32(&r.data[6..]), be32(&r.data[10..]));
                assert!(min.is_power_of_two() && pref.is_power_of_two(), "{r:?}");
                assert!(min <= pref && pref <= max, "block sizes {r:?}");
                answer.max_payload = Some(max);
            }
            t => panic!("INFO reply of unknown type {t}: {r:?}"),
        }
    }
    assert!(answer.tflags.is_some(), "INFO/GO ACKed without INFO_EXPORT");
}
