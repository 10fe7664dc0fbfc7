//! Attacks on a live cowd over raw Unix sockets.
//!
//! Every test starts its own daemon and talks to it through [`Client`], a small NBD client that
//! writes each byte by hand, so it can send what well-behaved clients never do: the inputs of
//! past NBD-server CVEs (names of 0, 4096, 4097 and 2^32-1 bytes, option lengths that lie,
//! options out of order, bad magics, requests wrapping 2^64, oversized payloads, unknown
//! commands and flags, reused cookies, idle sockets, disconnects at every byte). After each
//! attack the daemon must still run and serve a well-behaved client ([`healthy`]); at the end
//! of each test a real NBD client (qemu-io) must still read from it ([`qemu_reads`]).
//!
//! Test sockets have read and write timeouts: a server that stops answering fails the test
//! instead of hanging it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cowd::nbd::proto::*;
use cowd_tests::{Daemon, pattern, require, run};

/// Size of the test exports.
const SIZE: u64 = 16 << 20;
/// No read or write on a test socket blocks longer than this.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest READ/WRITE payload cowd advertises.
const MAX_PAYLOAD: u32 = 32 << 20;
/// Option reply types with this bit set are errors.
const REP_ERR: u32 = 1 << 31;

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(b[at..at + 2].try_into().unwrap())
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

// ---------------------------------------------------------------------------------------------
// Wire encoding (client side)
// ---------------------------------------------------------------------------------------------

/// An option request header announcing `len` bytes of option data.
fn option_header(opt: u32, len: u32) -> Vec<u8> {
    let mut v = IHAVEOPT.to_be_bytes().to_vec();
    v.extend_from_slice(&opt.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v
}

/// A whole option request.
fn option_bytes(opt: u32, data: &[u8]) -> Vec<u8> {
    let mut v = option_header(opt, data.len() as u32);
    v.extend_from_slice(data);
    v
}

/// The data of NBD_OPT_INFO and NBD_OPT_GO.
fn info_data(name: &[u8], infos: &[u16]) -> Vec<u8> {
    let mut v = (name.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(name);
    v.extend_from_slice(&(infos.len() as u16).to_be_bytes());
    for i in infos {
        v.extend_from_slice(&i.to_be_bytes());
    }
    v
}

/// The data of NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT.
fn meta_data(export: &str, queries: &[&str]) -> Vec<u8> {
    let mut v = (export.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(export.as_bytes());
    v.extend_from_slice(&(queries.len() as u32).to_be_bytes());
    for q in queries {
        v.extend_from_slice(&(q.len() as u32).to_be_bytes());
        v.extend_from_slice(q.as_bytes());
    }
    v
}

/// A 28-byte transmission request header.
fn request_bytes(cmd: u16, flags: u16, cookie: u64, offset: u64, len: u32) -> Vec<u8> {
    let mut v = REQUEST_MAGIC.to_be_bytes().to_vec();
    v.extend_from_slice(&flags.to_be_bytes());
    v.extend_from_slice(&cmd.to_be_bytes());
    v.extend_from_slice(&cookie.to_be_bytes());
    v.extend_from_slice(&offset.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v
}

// ---------------------------------------------------------------------------------------------
// The raw client
// ---------------------------------------------------------------------------------------------

/// One option reply.
#[derive(Debug)]
struct OptReply {
    kind: u32,
    data: Vec<u8>,
}

/// What a successful NBD_OPT_GO said about the export.
#[derive(Debug)]
struct ExportInfo {
    size: u64,
    flags: u16,
    /// Payload (after the type) of each NBD_REP_INFO, by information type.
    infos: HashMap<u16, Vec<u8>>,
}

/// The complete reply to one transmission request.
#[derive(Debug, Default)]
struct Reply {
    cookie: u64,
    /// 0 on success, else the NBD errno.
    error: u32,
    /// READ data, assembled from data and hole chunks.
    data: Vec<u8>,
    /// (flags, type) of every structured chunk; empty for a simple reply.
    chunks: Vec<(u16, u16)>,
    /// Context id and (length, flags) descriptors of a BLOCK_STATUS chunk.
    context: u32,
    extents: Vec<(u32, u32)>,
}

/// A raw NBD client on one Unix socket.
#[derive(Debug)]
struct Client {
    s: UnixStream,
    structured: bool,
    /// (offset, length, command) of the requests in flight, by cookie, oldest first.
    inflight: HashMap<u64, VecDeque<(u64, u32, u16)>>,
    /// Structured replies still waiting for their DONE chunk.
    partial: HashMap<u64, Reply>,
    last_cookie: u64,
}

impl Client {
    /// Connects without reading anything.
    fn connect(d: &Daemon) -> Client {
        let s = UnixStream::connect(&d.sock).expect("connect to cowd");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        Client {
            s,
            structured: false,
            inflight: HashMap::new(),
            partial: HashMap::new(),
            last_cookie: 0,
        }
    }

    /// Connects and checks the 18-byte fixed newstyle greeting.
    fn greeted(d: &Daemon) -> Client {
        let mut c = Client::connect(d);
        c.greeting();
        c
    }

    fn greeting(&mut self) {
        let mut g = [0u8; 18];
        if let Err(e) = self.s.read_exact(&mut g) {
            panic!("no greeting: cowd refused or dropped the connection ({e})");
        }
        assert_eq!(be64(&g, 0), NBDMAGIC, "greeting magic");
        assert_eq!(be64(&g, 8), IHAVEOPT, "greeting option magic");
        assert_eq!(be16(&g, 16), FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
    }

    /// Greeting read and client flags sent: ready for options.
    fn haggling(d: &Daemon) -> Client {
        let mut c = Client::greeted(d);
        c.send(&(CFLAG_FIXED_NEWSTYLE | CFLAG_NO_ZEROES).to_be_bytes());
        c
    }

    fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).expect("send to cowd");
    }

    fn recv(&mut self, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        self.s
            .read_exact(&mut b)
            .unwrap_or_else(|e| panic!("reading {n} bytes from cowd: {e}"));
        b
    }

    /// Asserts the server closes the connection without sending anything more.
    fn expect_closed(&mut self, what: &str) {
        let mut b = [0u8; 256];
        loop {
            match self.s.read(&mut b) {
                Ok(0) => return,
                Ok(n) => panic!("{what}: expected a close, got {n} bytes {:02x?}", &b[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("{what}: connection still open ({e})"),
            }
        }
    }

    /// Reads one option reply, which must answer `opt`.
    fn option_reply(&mut self, opt: u32) -> OptReply {
        let h = self.recv(20);
        assert_eq!(be64(&h, 0), REPLY_MAGIC, "option reply magic");
        assert_eq!(be32(&h, 8), opt, "option reply names another option");
        let kind = be32(&h, 12);
        let data = self.recv(be32(&h, 16) as usize);
        OptReply { kind, data }
    }

    /// Reads the replies to `opt` up to the final one (ACK or an error).
    fn replies(&mut self, opt: u32) -> Vec<OptReply> {
        let mut v = Vec::new();
        loop {
            let r = self.option_reply(opt);
            let last = r.kind == REP_ACK || r.kind & REP_ERR != 0;
            v.push(r);
            if last {
                return v;
            }
        }
    }

    /// Sends option `opt` and returns all its replies.
    fn ask(&mut self, opt: u32, data: &[u8]) -> Vec<OptReply> {
        self.send(&option_bytes(opt, data));
        self.replies(opt)
    }

    /// Sends option `opt`; it must get exactly one reply, whose type is returned.
    fn ask_one(&mut self, opt: u32, data: &[u8]) -> u32 {
        let v = self.ask(opt, data);
        assert_eq!(v.len(), 1, "option {opt}: expected one reply, got {v:?}");
        v[0].kind
    }

    fn structured_reply(&mut self) {
        assert_eq!(self.ask_one(OPT_STRUCTURED_REPLY, &[]), REP_ACK);
        self.structured = true;
    }

    /// NBD_OPT_GO, which must succeed.
    fn go(&mut self, name: &str, infos: &[u16]) -> ExportInfo {
        let v = self.ask(OPT_GO, &info_data(name.as_bytes(), infos));
        let (last, rest) = v.split_last().unwrap();
        let msg = String::from_utf8_lossy(&last.data);
        assert_eq!(last.kind, REP_ACK, "GO {name:?} refused: {msg}");
        let mut found = HashMap::new();
        for r in rest {
            assert_eq!(r.kind, REP_INFO, "GO {name:?}: unexpected reply {r:?}");
            assert!(r.data.len() >= 2, "short NBD_REP_INFO");
            found.insert(be16(&r.data, 0), r.data[2..].to_vec());
        }
        let x = found.get(&INFO_EXPORT).expect("GO without NBD_INFO_EXPORT");
        assert_eq!(x.len(), 10, "NBD_INFO_EXPORT length");
        let e = ExportInfo {
            size: be64(x, 0),
            flags: be16(x, 8),
            infos: found,
        };
        assert_ne!(e.flags & TFLAG_HAS_FLAGS, 0, "HAS_FLAGS not set");
        if !self.structured {
            assert_eq!(
                e.flags & TFLAG_SEND_DF,
                0,
                "SEND_DF without structured replies"
            );
        }
        if let Some(b) = e.infos.get(&INFO_BLOCK_SIZE) {
            assert_eq!(b.len(), 12, "NBD_INFO_BLOCK_SIZE length");
            let (min, pref, max) = (be32(b, 0), be32(b, 4), be32(b, 8));
            assert!(min.is_power_of_two() && min <= pref && pref <= max, "{b:?}");
        }
        e
    }

    fn cookie(&mut self) -> u64 {
        self.last_cookie += 1;
        self.last_cookie
    }

    /// Encodes a request (header and payload) and remembers it until its reply.
    fn encode(
        &mut self,
        cmd: u16,
        flags: u16,
        cookie: u64,
        offset: u64,
        len: u32,
        payload: &[u8],
    ) -> Vec<u8> {
        if cmd != CMD_DISC {
            let q = self.inflight.entry(cookie).or_default();
            q.push_back((offset, len, cmd));
        }
        let mut b = request_bytes(cmd, flags, cookie, offset, len);
        b.extend_from_slice(payload);
        b
    }

    fn request(&mut self, cmd: u16, flags: u16, cookie: u64, offset: u64, len: u32, data: &[u8]) {
        let b = self.encode(cmd, flags, cookie, offset, len, data);
        self.send(&b);
    }

    /// Forgets the oldest request in flight with `cookie`.
    fn retire(&mut self, cookie: u64) -> (u64, u32, u16) {
        let q = self.inflight.get_mut(&cookie);
        let r = q.and_then(|q| q.pop_front());
        r.unwrap_or_else(|| panic!("reply to cookie {cookie}, which is not in flight"))
    }

    /// The next complete reply; panics if the server closes the connection instead.
    fn reply(&mut self) -> Reply {
        self.reply_or_eof()
            .expect("cowd closed the connection instead of replying")
    }

    /// The next complete reply, or None when the server closed the connection.
    fn reply_or_eof(&mut self) -> Option<Reply> {
        loop {
            let mut first = [0u8; 1];
            match self.s.read(&mut first) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("waiting for a reply: {e}"),
            }
            let rest = self.recv(3);
            match u32::from_be_bytes([first[0], rest[0], rest[1], rest[2]]) {
                SIMPLE_REPLY_MAGIC => {
                    let h = self.recv(12);
                    let (error, cookie) = (be32(&h, 0), be64(&h, 4));
                    let (_, len, cmd) = self.retire(cookie);
                    assert!(
                        !(self.structured && cmd == CMD_READ),
                        "simple reply to a READ after structured replies were negotiated"
                    );
                    let data = if error == 0 && cmd == CMD_READ {
                        self.recv(len as usize)
                    } else {
                        Vec::new()
                    };
                    return Some(Reply {
                        cookie,
                        error,
                        data,
                        ..Reply::default()
                    });
                }
                STRUCTURED_REPLY_MAGIC => {
                    assert!(self.structured, "structured chunk without negotiation");
                    let h = self.recv(16);
                    let (flags, kind, cookie) = (be16(&h, 0), be16(&h, 2), be64(&h, 4));
                    let p = self.recv(be32(&h, 12) as usize);
                    if self.chunk(cookie, flags, kind, &p) {
                        self.retire(cookie);
                        return self.partial.remove(&cookie);
                    }
                }
                m => panic!("bad reply magic {m:#010x}"),
            }
        }
    }

    /// Adds one structured chunk to the reply of `cookie`; true when it was the last one.
    fn chunk(&mut self, cookie: u64, flags: u16, kind: u16, p: &[u8]) -> bool {
        let q = self.inflight.get(&cookie).and_then(|q| q.front());
        let &(offset, len, _) =
            q.unwrap_or_else(|| panic!("chunk for cookie {cookie}, which is not in flight"));
        let r = self.partial.entry(cookie).or_insert_with(|| Reply {
            cookie,
            ..Reply::default()
        });
        r.chunks.push((flags, kind));
        match kind {
            REPLY_TYPE_NONE => assert!(p.is_empty(), "NONE chunk with payload"),
            REPLY_TYPE_OFFSET_DATA | REPLY_TYPE_OFFSET_HOLE => {
                assert!(p.len() >= 8, "short data/hole chunk");
                let at = be64(p, 0)
                    .checked_sub(offset)
                    .expect("chunk before the request");
                let n = if kind == REPLY_TYPE_OFFSET_DATA {
                    p.len() as u64 - 8
                } else {
                    assert_eq!(p.len(), 12, "hole chunk length");
                    u64::from(be32(p, 8))
                };
                assert!(at + n <= u64::from(len), "chunk beyond the request");
                let (at, end) = (at as usize, (at + n) as usize);
                if r.data.len() < end {
                    r.data.resize(end, 0);
                }
                if kind == REPLY_TYPE_OFFSET_DATA {
                    r.data[at..end].copy_from_slice(&p[8..]);
                } else {
                    r.data[at..end].fill(0);
                }
            }
            REPLY_TYPE_BLOCK_STATUS => {
                assert!(
                    p.len() >= 12 && (p.len() - 4) % 8 == 0,
                    "block status chunk"
                );
                r.context = be32(p, 0);
                r.extents = p[4..].chunks(8).map(|e| (be32(e, 0), be32(e, 4))).collect();
            }
            k if k & 0x8000 != 0 => {
                assert!(p.len() >= 6, "short error chunk");
                r.error = be32(p, 0);
                assert_ne!(r.error, 0, "error chunk with error 0");
                let extra = if k == REPLY_TYPE_ERROR { 0 } else { 8 };
                assert_eq!(
                    p.len(),
                    6 + be16(p, 4) as usize + extra,
                    "error chunk length"
                );
            }
            k => panic!("unknown chunk type {k}"),
        }
        flags & REPLY_FLAG_DONE != 0
    }

    /// Sends NBD_CMD_DISC; the server must close without replying.
    fn disconnect(mut self) {
        let cookie = self.cookie();
        self.request(CMD_DISC, 0, cookie, 0, 0, &[]);
        self.expect_closed("after NBD_CMD_DISC");
    }
}

// ---------------------------------------------------------------------------------------------
// Well-behaved usage
// ---------------------------------------------------------------------------------------------

/// A client in the transmission phase on export `disk`.
fn ready(d: &Daemon, structured: bool) -> Client {
    let mut c = Client::haggling(d);
    if structured {
        c.structured_reply();
    }
    c.go("disk", &[INFO_BLOCK_SIZE]);
    c
}

/// Writes 4 KiB of pattern `seed` at `offset` and reads it back.
fn round_trip(c: &mut Client, offset: u64, seed: u64) {
    let data = pattern(seed, 4096);
    let w = c.cookie();
    c.request(CMD_WRITE, 0, w, offset, 4096, &data);
    let r = c.reply();
    assert_eq!((r.cookie, r.error), (w, 0), "round trip write");
    let rd = c.cookie();
    c.request(CMD_READ, 0, rd, offset, 4096, &[]);
    let r = c.reply();
    assert_eq!((r.cookie, r.error), (rd, 0), "round trip read");
    assert!(r.data == data, "round trip read returned other data");
}

static SEED: AtomicU64 = AtomicU64::new(1);

/// The daemon runs, nothing panicked, and a fresh well-behaved client promptly negotiates and
/// does a write + read round trip (alternately with simple and structured replies).
fn healthy(d: &mut Daemon) {
    assert!(d.running(), "cowd died:\n{}", d.log());
    let t = Instant::now();
    let seed = SEED.fetch_add(1, Ordering::Relaxed);
    let mut c = ready(d, seed % 2 == 0);
    round_trip(&mut c, SIZE - (1 << 20) + (seed % 256) * 4096, seed);
    c.disconnect();
    let took = t.elapsed();
    assert!(took < Duration::from_secs(5), "good client took {took:?}");
    assert!(d.running(), "cowd died:\n{}", d.log());
    assert!(!d.log().contains("panicked"), "cowd panicked:\n{}", d.log());
}

/// qemu-io can still read through the daemon.
fn qemu_reads(d: &Daemon) {
    require("qemu-io");
    let out = run(Command::new("qemu-io")
        .args(["-f", "raw", "-c", "read 0 4k"])
        .arg(d.uri("disk")));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("read 4096/4096 bytes"),
        "qemu-io said: {text}"
    );
}

/// A request that must fail: (what, command, flags, offset, length, payload, errno).
type Bad<'a> = (&'a str, u16, u16, u64, u32, &'a [u8], u32);

/// Sends a request that must fail with its errno (and nothing else: no data, one final error
/// chunk when structured), then checks the connection still works.
fn expect_error(c: &mut Client, bad: Bad<'_>) {
    let (what, cmd, flags, offset, len, payload, errno) = bad;
    let cookie = c.cookie();
    c.request(cmd, flags, cookie, offset, len, payload);
    let r = c.reply();
    assert_eq!(r.cookie, cookie, "{what}");
    assert_eq!(r.error, errno, "{what}: errno");
    assert!(r.data.is_empty(), "{what}: data with an error");
    if c.structured {
        let want = vec![(REPLY_FLAG_DONE, REPLY_TYPE_ERROR)];
        assert_eq!(r.chunks, want, "{what}: expected one final error chunk");
    }
    round_trip(c, 64 << 10, cookie);
}

/// Reads `len` bytes of the image file at `offset`.
fn image_bytes(path: &std::path::Path, offset: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut b = vec![0u8; len];
    let f = std::fs::File::open(path).unwrap();
    f.read_exact_at(&mut b, offset).unwrap();
    b
}

// ---------------------------------------------------------------------------------------------
// Handshake attacks
// ---------------------------------------------------------------------------------------------

#[test]
fn export_names_of_every_length() {
    let mut d = Daemon::builder()
        .export("disk", SIZE)
        .export("other", 1 << 20)
        .start();

    // Length 0 selects the default (first) export.
    let mut c = Client::haggling(&d);
    let e = c.go("", &[INFO_NAME, INFO_BLOCK_SIZE]);
    assert_eq!(e.size, SIZE);
    assert_eq!(
        e.infos.get(&INFO_NAME).map(Vec::as_slice),
        Some(&b"disk"[..])
    );
    let bs = &e.infos[&INFO_BLOCK_SIZE];
    assert_eq!((be32(bs, 4), be32(bs, 8)), (4096, MAX_PAYLOAD));
    round_trip(&mut c, 0, 11);
    c.disconnect();
    healthy(&mut d);

    // On one connection: every bad name is refused and the next option still works.
    let mut c = Client::haggling(&d);
    let n4096 = vec![b'x'; 4096];
    let n4097 = vec![b'x'; 4097];
    let mut huge = u32::MAX.to_be_bytes().to_vec();
    huge.extend_from_slice(&0u16.to_be_bytes());
    let mut beyond = info_data(b"disk", &[]);
    beyond[..4].copy_from_slice(&100u32.to_be_bytes());
    let name = |n: &[u8]| info_data(n, &[]);
    #[rustfmt::skip]
    let cases: [(&str, u32, Vec<u8>, u32); 7] = [
        ("INFO 4096-byte name", OPT_INFO, name(&n4096), REP_ERR_UNKNOWN),
        ("GO 4096-byte name", OPT_GO, name(&n4096), REP_ERR_UNKNOWN),
        ("INFO 4097-byte name", OPT_INFO, name(&n4097), REP_ERR_INVALID),
        ("GO 4097-byte name", OPT_GO, name(&n4097), REP_ERR_INVALID),
        ("GO name length 2^32-1", OPT_GO, huge, REP_ERR_INVALID),
        ("GO name beyond option", OPT_GO, beyond, REP_ERR_INVALID),
        ("GO unknown name", OPT_GO, name(b"nope"), REP_ERR_UNKNOWN),
    ];
    for (what, opt, data, want) in cases {
        assert_eq!(c.ask_one(opt, &data), want, "{what}");
        healthy(&mut d);
    }
    let e = c.go("other", &[]);
    assert_eq!(e.size, 1 << 20);
    round_trip(&mut c, 0, 12);
    c.disconnect();

    // NBD_OPT_EXPORT_NAME: the empty name works; a bad one can only be refused by closing.
    let mut c = Client::haggling(&d);
    c.send(&option_bytes(OPT_EXPORT_NAME, b""));
    let r = c.recv(10);
    assert_eq!(be64(&r, 0), SIZE);
    assert_ne!(be16(&r, 8) & TFLAG_HAS_FLAGS, 0);
    round_trip(&mut c, 4096, 13);
    c.disconnect();
    for name in [b"nope".to_vec(), n4096, n4097, b"di\0sk".to_vec()] {
        let mut c = Client::haggling(&d);
        c.send(&option_bytes(OPT_EXPORT_NAME, &name));
        c.expect_closed(&format!("EXPORT_NAME of {} bytes", name.len()));
        healthy(&mut d);
    }
    let mut c = Client::haggling(&d);
    c.send(&option_header(OPT_EXPORT_NAME, u32::MAX));
    c.expect_closed("EXPORT_NAME of 2^32-1 bytes");
    healthy(&mut d);
    qemu_reads(&d);
}

#[test]
fn oversized_options_are_drained_and_refused() {
    let mut d = Daemon::with_disk(SIZE);
    let mut c = Client::haggling(&d);
    let mib = vec![0x55u8; 1 << 20];
    for opt in [OPT_INFO, OPT_GO, OPT_LIST, OPT_SET_META_CONTEXT, 0xbeef] {
        assert_eq!(c.ask_one(opt, &mib), REP_ERR_TOO_BIG, "1 MiB option {opt}");
        healthy(&mut d);
    }
    let over = vec![0u8; (64 << 10) + 1];
    assert_eq!(c.ask_one(OPT_GO, &over), REP_ERR_TOO_BIG, "64 KiB + 1");
    // The drained payloads left the stream in sync.
    c.structured_reply();
    c.go("disk", &[]);
    round_trip(&mut c, 0, 21);
    c.disconnect();
    healthy(&mut d);
    qemu_reads(&d);
}

#[test]
fn endless_option_is_cut_by_the_handshake_timeout() {
    let mut d = Daemon::builder()
        .export("disk", SIZE)
        .args(&["--handshake-timeout", "2"])
        .start();
    let t = Instant::now();
    let mut c = Client::haggling(&d);
    // Announce 4 GiB, send the first MiB, then go silent. (Closing at once would be fine too.)
    c.send(&option_header(OPT_INFO, u32::MAX));
    let _ = c.s.write_all(&vec![0u8; 1 << 20]);
    healthy(&mut d);
    c.expect_closed("silent client with a 4 GiB option");
    let took = t.elapsed();
    assert!(took < Duration::from_secs(6), "closed only after {took:?}");
    healthy(&mut d);
    qemu_reads(&d);
}

#[test]
fn option_lengths_inconsistent_with_their_fields() {
    let mut d = Daemon::with_disk(SIZE);
    let mut c = Client::haggling(&d);
    let go = info_data(b"disk", &[INFO_NAME, INFO_BLOCK_SIZE]);
    let edit = |mut v: Vec<u8>, f: &dyn Fn(&mut Vec<u8>)| {
        f(&mut v);
        v
    };
    #[rustfmt::skip]
    let before_structured: [(&str, u32, Vec<u8>); 8] = [
        ("INFO shorter than a name length", OPT_INFO, vec![0, 0, 0]),
        ("INFO without its info count", OPT_INFO, go[..8].to_vec()),
        ("GO with half an info count", OPT_GO, go[..9].to_vec()),
        ("GO missing an info", OPT_GO, go[..go.len() - 2].to_vec()),
        ("GO with half an info", OPT_GO, go[..go.len() - 1].to_vec()),
        ("GO with a trailing byte", OPT_GO, edit(go.clone(), &|v| v.push(0))),
        ("LIST with data", OPT_LIST, vec![0; 4]),
        ("STRUCTURED_REPLY with data", OPT_STRUCTURED_REPLY, vec![1]),
    ];
    for (what, opt, data) in before_structured {
        assert_eq!(c.ask_one(opt, &data), REP_ERR_INVALID, "{what}");
        healthy(&mut d);
    }
    c.structured_reply();
    let set = meta_data("disk", &["base:allocation"]);
    let qlen = 4 + 4 + 4; // offset of the first query's length
    let all_ones = u32::MAX.to_be_bytes();
    #[rustfmt::skip]
    let meta_cases: [(&str, u32, Vec<u8>); 6] = [
        ("SET export name beyond option", OPT_SET_META_CONTEXT,
            edit(set.clone(), &|v| v[..4].copy_from_slice(&all_ones))),
        ("SET count without queries", OPT_SET_META_CONTEXT,
            edit(meta_data("disk", &[]), &|v| v[11] = 1)),
        ("SET count 2^32-1", OPT_SET_META_CONTEXT,
            edit(set.clone(), &|v| v[8..12].copy_from_slice(&all_ones))),
        ("LIST query beyond option", OPT_LIST_META_CONTEXT,
            edit(set.clone(), &|v| v[qlen + 3] = 100)),
        ("SET with a trailing byte", OPT_SET_META_CONTEXT,
            edit(set.clone(), &|v| v.push(b'x'))),
        ("LIST without a query count", OPT_LIST_META_CONTEXT, set[..8].to_vec()),
    ];
    for (what, opt, data) in meta_cases {
        assert_eq!(c.ask_one(opt, &data), REP_ERR_INVALID, "{what}");
        healthy(&mut d);
    }
    // Still in sync: LIST, then GO.
    let v = c.ask(OPT_LIST, &[]);
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!((v[0].kind, v[1].kind), (REP_SERVER, REP_ACK));
    assert_eq!(be32(&v[0].data, 0), 4);
    assert_eq!(&v[0].data[4..8], b"disk");
    c.go("disk", &[]);
    round_trip(&mut c, 0, 31);
    c.disconnect();
    healthy(&mut d);
    qemu_reads(&d);
}

#[test]
fn unknown_and_unsupported_options() {
    let mut d = Daemon::with_disk(SIZE);
    let mut c = Client::haggling(&d);
    for opt in [0, 4, 12, 0x1234, u32::MAX] {
        assert_eq!(c.ask_one(opt, &[1, 2, 3]), REP_ERR_UNSUP, "option {opt}");
    }
    assert_eq!(c.ask_one(OPT_STARTTLS, &[]), REP_ERR_UNSUP, "STARTTLS");
    assert_eq!(
        c.ask_one(OPT_STARTTLS, &[]),
        REP_ERR_UNSUP,
        "STARTTLS again"
    );
    c.structured_reply();
    let after = c.ask_one(OPT_STARTTLS, &[]);
    assert_eq!(after, REP_ERR_UNSUP, "STARTTLS after STRUCTURED_REPLY");
    let ext = c.ask_one(OPT_EXTENDED_HEADERS, &[]);
    assert_eq!(ext, REP_ERR_UNSUP, "EXTENDED_HEADERS");
    healthy(&mut d);
    // The refused STARTTLS did not wipe the structured replies negotiated before it.
    let e = c.go("disk", &[]);
    assert_ne!(e.flags & TFLAG_SEND_DF, 0);
    let cookie = c.cookie();
    c.request(CMD_READ, 0, cookie, 0, 4096, &[]);
    let r = c.reply();
    assert!(!r.chunks.is_empty(), "READ got a simple reply");
    round_trip(&mut c, 0, 41);
    c.disconnect();

    // ABORT is acknowledged, then the server closes.
    let mut c = Client::haggling(&d);
    assert_eq!(c.ask_one(OPT_ABORT, &[]), REP_ACK);
    c.expect_closed("after ABORT");
    healthy(&mut d);
    qemu_reads(&d);
}

#[test]
fn metadata_contexts_and_block_status() {
    let mut d = Daemon::with_disk(SIZE);
    let mut c = Client::haggling(&d);
    let set = meta_data("disk", &["base:allocation"]);
    let before = c.ask_one(OPT_SET_META_CONTEXT, &set);
    assert_eq!(
        before, REP_ERR_INVALID,
        "SET_META_CONTEXT before STRUCTURED_REPLY"
    );
    healthy(&mut d);
    c.structured_reply();
    for queries in [
        &[][..],
        &["base:"][..],
        &["base:allocation", "qemu:nope"][..],
    ] {
        let v = c.ask(OPT_LIST_META_CONTEXT, &meta_data("disk", queries));
        let (last, contexts) = v.split_last().unwrap();
        assert_eq!(last.kind, REP_ACK, "LIST_META_CONTEXT {queries:?}");
        let names: Vec<_> = contexts
            .iter()
            .map(|r| {
                assert_eq!(r.kind, REP_META_CONTEXT);
                String::from_utf8(r.data[4..].to_vec()).unwrap()
            })
            .collect();
        assert!(
            names.iter().any(|n| n == "base:allocation"),
            "{queries:?}: {names:?}"
        );
    }
    let unknown = c.ask(OPT_LIST_META_CONTEXT, &meta_data("nope", &[]));
    assert_ne!(
        unknown.last().unwrap().kind & REP_ERR,
        0,
        "LIST for an unknown export"
    );
    let v = c.ask(OPT_SET_META_CONTEXT, &set);
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!((v[0].kind, v[1].kind), (REP_META_CONTEXT, REP_ACK));
    assert_eq!(&v[0].data[4..], b"base:allocation");
    let id = be32(&v[0].data, 0);
    c.go("disk", &[]);

    let data = pattern(51, 64 << 10);
    let w = c.cookie();
    c.request(CMD_WRITE, 0, w, 1 << 20, 64 << 10, &data);
    assert_eq!(c.reply().error, 0);
    let bs = c.cookie();
    c.request(CMD_BLOCK_STATUS, 0, bs, 0, 4 << 20, &[]);
    let r = c.reply();
    assert_eq!(r.error, 0, "BLOCK_STATUS");
    assert_eq!(r.chunks, vec![(REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS)]);
    assert_eq!(r.context, id, "BLOCK_STATUS for another context id");
    let total: u64 = r.extents.iter().map(|e| u64::from(e.0)).sum();
    assert!(!r.extents.is_empty() && total <= 4 << 20, "{:?}", r.extents);
    // REQ_ONE on the written range: one descriptor, and it is data, not a hole.
    let one = c.cookie();
    c.request(
        CMD_BLOCK_STATUS,
        CMD_FLAG_REQ_ONE,
        one,
        1 << 20,
        64 << 10,
        &[],
    );
    let r = c.reply();
    assert_eq!((r.error, r.extents.len()), (0, 1), "{r:?}");
    assert!(r.extents[0].0 > 0 && r.extents[0].0 <= 64 << 10, "{r:?}");
    assert_eq!(
        r.extents[0].1 & STATE_HOLE,
        0,
        "written data reported as a hole"
    );
    let past_end = (
        "BLOCK_STATUS past the end",
        CMD_BLOCK_STATUS,
        0,
        SIZE,
        4096,
        &[][..],
        EINVAL,
    );
    expect_error(&mut c, past_end);
    round_trip(&mut c, 0, 52);
    c.disconnect();
    healthy(&mut d);
    qemu_reads(&d);
}

#[test]
fn block_status_without_a_selected_context() {
    let mut d = Daemon::builder()
        .export("disk", SIZE)
        .export("other", 1 << 20)
        .start();
    type Setup = fn(&mut Client);
    let setups: [(&str, Setup); 4] = [
        ("no SET_META_CONTEXT", |_| {}),
        ("unknown namespace only", |c| {
            let v = c.ask_one(OPT_SET_META_CONTEXT, &meta_data("disk", &["qemu:nope"]));
            assert_eq!(v, REP_ACK);
        }),
        ("selection replaced by an empty one", |c| {
            let v = c.ask(
                OPT_SET_META_CONTEXT,
                &meta_data("disk", &["base:allocation"]),
            );
            assert_eq!(v.len(), 2);
            assert_eq!(
                c.ask_one(OPT_SET_META_CONTEXT, &meta_data("disk", &[])),
                REP_ACK
            );
        }),
        ("context selected on another export", |c| {
            let v = c.ask(
                OPT_SET_META_CONTEXT,
                &meta_data("other", &["base:allocation"]),
            );
            assert_eq!(v.len(), 2);
        }),
    ];
    for (what, setup) in setups {
        let mut c = Client::haggling(&d);
        c.structured_reply();
        setup(&mut c);
        c.go("disk", &[]);
        expect_error(&mut c, (what, CMD_BLOCK_STATUS, 0, 0, 4096, &[], EINVAL));
        c.disconnect();
        healthy(&mut d);
    }
    qemu_reads(&d);
}

/// "Issuing this command replaces all previously-set metadata contexts (including when this
/// command fails)" (NBD_OPT_SET_META_CONTEXT in the protocol).
#[test]
fn failed_set_meta_context_clears_the_selection() {
    let mut d = Daemon::with_disk(SIZE);
    let set = meta_data("disk", &["base:allocation"]);
    let mut truncated = set.clone();
    truncated.pop();
    let unknown = meta_data("nope", &["base:allocation"]);
    let failing: [(&str, Vec<u8>, u32); 2] = [
        ("malformed SET", truncated, REP_ERR_INVALID),
        ("SET for an unknown export", unknown, REP_ERR_UNKNOWN),
    ];
    for (what, data, err) in failing {
        let mut c = Client::haggling(&d);
        c.structured_reply();
        assert_eq!(c.ask(OPT_SET_META_CONTEXT, &set).len(), 2);
        assert_eq!(c.ask_one(OPT_SET_META_CONTEXT, &data), err, "{what}");
        c.go("disk", &[]);
        let what = format!("BLOCK_STATUS after a {what}");
        expect_error(&mut c, (&what, CMD_BLOCK_STATUS, 0, 0, 4096, &[], EINVAL));
        c.disconnect();
        healthy(&mut d);
    }
    qemu_reads(&d);
}

#[test]
fn bad_client_flags_and_option_magic_close_the_connection() {
    let mut d = Daemon::with_disk(SIZE);
    for flags in [
        1 << 2,
        1 << 31,
        u32::MAX,
        CFLAG_FIXED_NEWSTYLE | CFLAG_NO_ZEROES | 1 << 5,
    ] {
        let mut c = Client::greeted(&d);
        c.send(&flags.to_be_bytes());
        c.expect_closed(&format!("client flags {flags:#x}"));
        healthy(&mut d);
    }
    let mut bad = option_bytes(OPT_GO, &info_data(b"disk", &[]));
    bad[7] ^= 0x20;
    let mut c = Client::haggling(&d);
    c.send(&bad);
    c.expect_closed("bad IHAVEOPT magic");
    healthy(&mut d);
    // Also after a successful option.
    let mut c = Client::haggling(&d);
    c.structured_reply();
    c.send(&[0u8; 16]);
    c.expect_closed("zero option magic");
    healthy(&mut d);
    qemu_reads(&d);
}

#[test]
fn disconnect_at_every_byte_of_the_handshake() {
    let mut d = Daemon::with_disk(SIZE);
    // A whole valid session; checked once in full so the prefixes below are of something real.
    let mut full = Client::greeted(&d);
    let mut stream = (CFLAG_FIXED_NEWSTYLE | CFLAG_NO_ZEROES)
        .to_be_bytes()
        .to_vec();
    stream.extend(option_bytes(OPT_STRUCTURED_REPLY, &[]));
    stream.extend(option_bytes(
        OPT_SET_META_CONTEXT,
        &meta_data("disk", &["base:allocation"]),
    ));
    let infos = [INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE];
    stream.extend(option_bytes(OPT_GO, &info_data(b"disk", &infos)));
    let payload = pattern(61, 16);
    stream.extend(full.encode(CMD_WRITE, 0, 1, 0, 16, &payload));
    stream.extend(full.encode(CMD_BLOCK_STATUS, 0, 2, 0, 4096, &[]));
    full.send(&stream);
    assert_eq!(full.replies(OPT_STRUCTURED_REPLY).len(), 1);
    full.structured = true;
    assert_eq!(full.replies(OPT_SET_META_CONTEXT).len(), 2);
    let go = full.replies(OPT_GO);
    assert_eq!(go.last().unwrap().kind, REP_ACK);
    let mut replies = [full.reply(), full.reply()];
    replies.sort_by_key(|r| r.cookie);
    assert_eq!((replies[0].cookie, replies[0].error), (1, 0), "WRITE");
    assert_eq!(
        (replies[1].cookie, replies[1].error),
        (2, 0),
        "BLOCK_STATUS"
    );
    assert!(!replies[1].extents.is_empty());
    full.disconnect();

    for k in 0..=stream.len() {
        for read_greeting in [false, true] {
            let mut c = Client::connect(&d);
            if read_greeting {
                c.greeting();
            }
            let _ = c.s.write_all(&stream[..k]);
        }
    }
    healthy(&mut d);
    std::thread::sleep(Duration::from_millis(200));
    healthy(&mut d);
    qemu_reads(&d);
}

// ---------------------------------------------------------------------------------------------
// Transmission attacks
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_request_magic_closes_only_that_connection() {
    let mut d = Daemon::with_disk(SIZE);
    for structured in [false, true] {
        let mut a = ready(&d, structured);
        let mut b = ready(&d, !structured);
        round_trip(&mut a, 0, 71);
        let mut bad = request_bytes(CMD_READ, 0, 9, 0, 4096);
        bad[3] ^= 1;
        a.send(&bad);
        a.expect_closed("bad request magic");
        round_trip(&mut b, 4096, 72);
        // A reply magic is no request magic either.
        let mut bad = request_bytes(CMD_READ, 0, 9, 0, 4096);
        bad[..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
        b.send(&bad);
        b.expect_closed("reply magic in a request");
        healthy(&mut d);
    }
    qemu_reads(&d);
}

#[test]
fn writes_over_the_maximum_payload() {
    // Room for a refused 33 MiB WRITE at 64 MiB, away from what the healthy checks write.
    let mut d = Daemon::with_disk(128 << 20);
    let big = vec![0xa5u8; 33 << 20];
    for structured in [false, true] {
        let mut c = ready(&d, structured);
        let what = format!("33 MiB WRITE (structured: {structured})");
        expect_error(
            &mut c,
            (&what, CMD_WRITE, 0, 64 << 20, 33 << 20, &big, EOVERFLOW),
        );
        c.disconnect();
        healthy(&mut d);
    }
    assert!(
        image_bytes(d.image("disk"), 64 << 20, 33 << 20)
            .iter()
            .all(|&b| b == 0),
        "a refused WRITE changed the image"
    );
    // Exactly the maximum is fine.
    let mut c = ready(&d, true);
    let max = pattern(81, MAX_PAYLOAD as usize);
    let w = c.cookie();
    c.request(CMD_WRITE, 0, w, 32 << 20, MAX_PAYLOAD, &max);
    assert_eq!(c.reply().error, 0, "32 MiB WRITE");
    let r = c.cookie();
    c.request(CMD_READ, 0, r, 32 << 20, MAX_PAYLOAD, &[]);
    let got = c.reply();
    assert!(got.error == 0 && got.data == max, "32 MiB READ");
    // A payload of 2^32-1 bytes cannot be drained: the connection is closed.
    let cookie = c.cookie();
    let mut b = c.encode(CMD_WRITE, 0, cookie, 0, u32::MAX, &[]);
    b.extend_from_slice(&[0u8; 64 << 10]);
    let _ = c.s.write_all(&b);
    c.expect_closed("WRITE of 2^32-1 bytes");
    healthy(&mut d);
    qemu_reads(&d);
}

/// Invalid requests, each answered with its errno on a connection that stays usable.
fn invalid_requests(c: &mut Client) {
    let page = &pattern(91, 4096)[..];
    let none = &[][..];
    let wrap = u64::MAX - 4095;
    #[rustfmt::skip]
    let cases: [Bad<'_>; 14] = [
        ("command 42", 42, 0, 0, 4096, none, EINVAL),
        ("command 0xffff", 0xffff, 0, 0, 4096, none, EINVAL),
        ("READ flag bit 9", CMD_READ, 1 << 9, 0, 4096, none, EINVAL),
        ("READ flag bit 15", CMD_READ, 1 << 15, 0, 4096, none, EINVAL),
        ("READ with REQ_ONE", CMD_READ, CMD_FLAG_REQ_ONE, 0, 4096, none, EINVAL),
        ("WRITE flag bit 9", CMD_WRITE, 1 << 9, 0, 4096, page, EINVAL),
        ("WRITE with DF", CMD_WRITE, CMD_FLAG_DF, 0, 4096, page, EINVAL),
        ("READ wrapping 2^64", CMD_READ, 0, wrap, 8192, none, EINVAL),
        ("READ past the end", CMD_READ, 0, SIZE - 2048, 4096, none, EINVAL),
        ("READ at 2^63", CMD_READ, 0, 1 << 63, 4096, none, EINVAL),
        ("zero-length READ", CMD_READ, 0, 0, 0, none, EINVAL),
        ("READ of 2^32-1", CMD_READ, 0, 0, u32::MAX, none, EINVAL),
        ("READ over the maximum", CMD_READ, 0, 0, MAX_PAYLOAD + 1, none, EINVAL),
        ("WRITE wrapping 2^64", CMD_WRITE, 0, wrap, 4096, page, ENOSPC),
    ];
    for bad in cases {
        expect_error(c, bad);
    }
}

#[test]
fn invalid_requests_get_einval() {
    let mut d = Daemon::with_disk(SIZE);
    let mut c = ready(&d, false);
    invalid_requests(&mut c);
    let df = (
        "DF, no structured replies",
        CMD_READ,
        CMD_FLAG_DF,
        0,
        4096,
        &[][..],
        EINVAL,
    );
    expect_error(&mut c, df);
    c.disconnect();
    healthy(&mut d);

    let mut c = ready(&d, true);
    invalid_requests(&mut c);
    // With structured replies DF is allowed: the data comes in one chunk.
    round_trip(&mut c, 8192, 92);
    let cookie = c.cookie();
    c.request(CMD_READ, CMD_FLAG_DF, cookie, 8192, 4096, &[]);
    let r = c.reply();
    assert_eq!((r.error, r.chunks.len()), (0, 1), "READ with DF: {r:?}");
    assert!(r.data == pattern(92, 4096));
    c.disconnect();
    healthy(&mut d);
    qemu_reads(&d);
}

#[test]
fn reused_cookies_and_64_pipelined_requests() {
    let mut d = Daemon::with_disk(SIZE);
    for structured in [false, true] {
        let mut c = ready(&d, structured);
        let base = if structured { 8 << 20 } else { 0 };
        let len = 64u32 << 10;
        let block = |i: u64| pattern(1000 * u64::from(structured) + i, len as usize);
        // 64 WRITEs sent before reading any reply.
        let mut batch = Vec::new();
        for i in 0..64 {
            let off = base + i * u64::from(len);
            batch.extend(c.encode(CMD_WRITE, 0, 100 + i, off, len, &block(i)));
        }
        c.send(&batch);
        let mut seen = HashSet::new();
        for _ in 0..64 {
            let r = c.reply();
            assert_eq!(r.error, 0, "pipelined WRITE {}", r.cookie);
            assert!(seen.insert(r.cookie), "cookie {} answered twice", r.cookie);
        }
        // 64 READs sent before reading any reply, matched by cookie.
        let mut batch = Vec::new();
        for i in 0..64 {
            let off = base + i * u64::from(len);
            batch.extend(c.encode(CMD_READ, 0, 200 + i, off, len, &[]));
        }
        c.send(&batch);
        let mut seen = HashSet::new();
        for _ in 0..64 {
            let r = c.reply();
            let i = r.cookie - 200;
            assert!(r.error == 0 && r.data == block(i), "pipelined READ {i}");
            assert!(seen.insert(i), "cookie {} answered twice", r.cookie);
        }
        // Two READs in flight with the same cookie: both answered.
        let mut batch = c.encode(CMD_READ, 0, 7, base, len, &[]);
        batch.extend(c.encode(CMD_READ, 0, 7, base, len, &[]));
        c.send(&batch);
        for _ in 0..2 {
            let r = c.reply();
            assert!(
                r.cookie == 7 && r.error == 0 && r.data == block(0),
                "reused cookie"
            );
        }
        c.disconnect();
        healthy(&mut d);
    }
    qemu_reads(&d);
}

#[test]
fn disc_with_writes_in_flight() {
    let mut d = Daemon::with_disk(SIZE);
    let len = 64usize << 10;
    for structured in [false, true] {
        let base = if structured { 4u64 << 20 } else { 0 };
        let block = |i: u64| pattern(2000 + 100 * u64::from(structured) + i, len);
        let mut c = ready(&d, structured);
        let mut batch = Vec::new();
        for i in 0..32 {
            let off = base + i * len as u64;
            batch.extend(c.encode(CMD_WRITE, 0, 1 + i, off, len as u32, &block(i)));
        }
        batch.extend(c.encode(CMD_DISC, 0, 99, 0, 0, &[]));
        c.send(&batch);
        let mut seen = HashSet::new();
        for _ in 0..32 {
            let r = c.reply();
            assert_eq!(r.error, 0, "WRITE {} before DISC", r.cookie);
            assert!(seen.insert(r.cookie));
        }
        c.expect_closed("after DISC (no reply to DISC)");
        let img = image_bytes(d.image("disk"), base, 32 * len);
        for (i, got) in img.chunks(len).enumerate() {
            assert!(got == block(i as u64), "write {i} before DISC did not land");
        }
        healthy(&mut d);
    }
    qemu_reads(&d);
}

/// A connection admitted (greeted) by the daemon within `limit`, retrying refused ones.
fn admitted_within(d: &Daemon, limit: Duration) -> Client {
    let deadline = Instant::now() + limit;
    loop {
        let mut c = Client::connect(d);
        let mut g = [0u8; 18];
        if c.s.read_exact(&mut g).is_ok() {
            assert_eq!(be64(&g, 0), NBDMAGIC);
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "no connection admitted within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A client gone halfway through a WRITE payload must not keep its connection (thread,
/// connection slot) alive: with two slots, two clients must fit again soon after.
#[test]
fn disconnect_mid_write_payload_frees_the_connection() {
    let mut d = Daemon::builder()
        .export("disk", SIZE)
        .args(&["--max-connections", "2"])
        .start();
    for structured in [false, true] {
        let mut c = ready(&d, structured);
        let cookie = c.cookie();
        let mut b = c.encode(CMD_WRITE, 0, cookie, 0, 64 << 10, &[]);
        b.extend_from_slice(&[7u8; 1000]);
        c.send(&b);
        drop(c);
        let both = [0, 1].map(|_| admitted_within(&d, Duration::from_secs(3)));
        for (i, mut c) in both.into_iter().enumerate() {
            c.send(&(CFLAG_FIXED_NEWSTYLE | CFLAG_NO_ZEROES).to_be_bytes());
            c.go("disk", &[]);
            round_trip(&mut c, i as u64 * 4096, 101);
            c.disconnect();
        }
        healthy(&mut d);
    }
    qemu_reads(&d);
}

// ---------------------------------------------------------------------------------------------
// Resource attacks
// ---------------------------------------------------------------------------------------------

/// Connections that stop at every point of the start of a handshake (flags, option header,
/// GO data).
fn stalled_clients(d: &Daemon, n: usize) -> Vec<Client> {
    let mut stream = (CFLAG_FIXED_NEWSTYLE | CFLAG_NO_ZEROES)
        .to_be_bytes()
        .to_vec();
    stream.extend(option_bytes(OPT_GO, &info_data(b"disk", &[])));
    (0..n)
        .map(|i| {
            let mut c = Client::greeted(d);
            c.send(&stream[..i % stream.len()]);
            c
        })
        .collect()
}

#[test]
fn idle_sockets_do_not_starve_clients() {
    let mut d = Daemon::with_disk(SIZE);
    let idle: Vec<Client> = (0..500).map(|_| Client::connect(&d)).collect();
    let stalled = stalled_clients(&d, 50);
    let t = Instant::now();
    healthy(&mut d);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(3), "good client took {took:?}");
    qemu_reads(&d);
    drop((idle, stalled));
    healthy(&mut d);
}

#[test]
fn idle_sockets_are_closed_by_the_handshake_timeout() {
    let mut d = Daemon::builder()
        .export("disk", SIZE)
        .args(&["--handshake-timeout", "1"])
        .start();
    let t = Instant::now();
    let mut idle: Vec<Client> = (0..500).map(|_| Client::connect(&d)).collect();
    let mut stalled = stalled_clients(&d, 30);
    healthy(&mut d);
    for c in &mut idle {
        c.greeting();
        c.expect_closed("idle socket");
    }
    for c in &mut stalled {
        c.expect_closed("stalled handshake");
    }
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "idle sockets closed after {took:?}"
    );
    healthy(&mut d);
    qemu_reads(&d);
}

#[test]
fn connection_limit() {
    let mut d = Daemon::builder()
        .export("disk", SIZE)
        .args(&["--max-connections", "8", "--handshake-timeout", "1"])
        .start();
    let t = Instant::now();
    // Greeted means admitted.
    let mut idle: Vec<Client> = (0..8).map(|_| Client::greeted(&d)).collect();
    let mut ninth = Client::connect(&d);
    ninth.expect_closed("9th connection");
    assert!(d.running());
    for c in &mut idle {
        c.expect_closed("idle connection after the handshake timeout");
    }
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "idle connections closed after {took:?}"
    );
    healthy(&mut d);
    qemu_reads(&d);
}

#[test]
fn sigterm_mid_transmission() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::File::create(&img).unwrap().set_len(SIZE).unwrap();
    // Connections still open after the stop timeout would make cowd exit late, not hang.
    let mut d = Daemon::builder()
        .export_path("disk", &img)
        .args(&["--stop-timeout", "10"])
        .start();
    healthy(&mut d);
    qemu_reads(&d);

    let len = 64usize << 10;
    let block = |i: u64| pattern(3000 + i, len);
    let mut c = ready(&d, true);
    let mut batch = Vec::new();
    for i in 0..16 {
        batch.extend(c.encode(CMD_WRITE, 0, i, i * len as u64, len as u32, &block(i)));
    }
    c.send(&batch);
    let mut acked = Vec::new();
    for _ in 0..16 {
        let r = c.reply();
        assert_eq!(r.error, 0);
        acked.push(r.cookie);
    }
    // One more WRITE in flight, and a second client halfway through a WRITE payload.
    let w = c.encode(CMD_WRITE, 0, 16, 16 * len as u64, len as u32, &block(16));
    c.send(&w);
    let mut half = ready(&d, false);
    let mut h = half.encode(CMD_WRITE, 0, 1, SIZE - len as u64, len as u32, &[]);
    h.extend_from_slice(&block(99)[..len / 2]);
    half.send(&h);

    let t = Instant::now();
    // An open handle keeps the log readable after stop() removes the daemon's directory.
    let mut log_file = std::fs::File::open(d.dir().join("cowd.log")).unwrap();
    let status = d.stop();
    let took = t.elapsed();
    let mut log = String::new();
    log_file.read_to_string(&mut log).unwrap();
    assert!(status.success(), "cowd exited with {status}");
    assert!(took < Duration::from_secs(5), "stop took {took:?}:\n{log}");
    while let Some(r) = c.reply_or_eof() {
        assert_eq!(r.error, 0, "in-flight WRITE during shutdown");
        acked.push(r.cookie);
    }
    half.expect_closed("half-sent WRITE at shutdown");
    for i in acked {
        let got = image_bytes(&img, i * len as u64, len);
        assert!(
            got == block(i),
            "acknowledged write {i} is not in the image"
        );
    }
}
