//! A raw NBD client that writes every byte by hand, so it can send what well-behaved clients
//! never do (the attacks of `tests/integration/attacks/`), and checks every byte the server
//! sends back: the greeting, option replies, simple and structured transmission replies
//! (data and hole chunks assembled, block status, error chunks).
//!
//! ```text
//! connect ─> greeted (18-byte greeting checked) ─> haggling (client flags sent)
//!         ─> ask / ask_one / go (options) ─> request + reply (transmission) ─> disconnect
//! ```
//!
//! Its sockets have read and write timeouts: a server that stops answering fails the test
//! instead of hanging it.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use cowd::nbd::proto::*;

use crate::Daemon;

/// No read or write on a test socket blocks longer than this.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest READ/WRITE payload cowd advertises.
pub const MAX_PAYLOAD: u32 = 32 << 20;
/// Option reply types with this bit set are errors.
pub const REP_ERR: u32 = 1 << 31;

/// The big-endian integer at byte `at` (also `be32`, `be64`).
pub fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(b[at..at + 2].try_into().unwrap())
}

pub fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

pub fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

// ---------------------------------------------------------------------------------------------
// Wire encoding (client side)
// ---------------------------------------------------------------------------------------------

/// An option request header announcing `len` bytes of option data.
pub fn option_header(opt: u32, len: u32) -> Vec<u8> {
    let mut v = IHAVEOPT.to_be_bytes().to_vec();
    v.extend_from_slice(&opt.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v
}

/// A whole option request.
pub fn option_bytes(opt: u32, data: &[u8]) -> Vec<u8> {
    let mut v = option_header(opt, data.len() as u32);
    v.extend_from_slice(data);
    v
}

/// The data of NBD_OPT_INFO and NBD_OPT_GO.
pub fn info_data(name: &[u8], infos: &[u16]) -> Vec<u8> {
    let mut v = (name.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(name);
    v.extend_from_slice(&(infos.len() as u16).to_be_bytes());
    for i in infos {
        v.extend_from_slice(&i.to_be_bytes());
    }
    v
}

/// The data of NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT.
pub fn meta_data(export: &str, queries: &[&str]) -> Vec<u8> {
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
pub fn request_bytes(cmd: u16, flags: u16, cookie: u64, offset: u64, len: u32) -> Vec<u8> {
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
pub struct OptReply {
    pub kind: u32,
    pub data: Vec<u8>,
}

/// What a successful NBD_OPT_GO said about the export.
#[derive(Debug)]
pub struct ExportInfo {
    pub size: u64,
    pub flags: u16,
    /// Payload (after the type) of each NBD_REP_INFO, by information type.
    pub infos: HashMap<u16, Vec<u8>>,
}

/// The complete reply to one transmission request.
#[derive(Debug, Default)]
pub struct Reply {
    pub cookie: u64,
    /// 0 on success, else the NBD errno.
    pub error: u32,
    /// READ data, assembled from data and hole chunks.
    pub data: Vec<u8>,
    /// (flags, type) of every structured chunk; empty for a simple reply.
    pub chunks: Vec<(u16, u16)>,
    /// Context id and (length, flags) descriptors of a BLOCK_STATUS chunk.
    pub context: u32,
    pub extents: Vec<(u32, u32)>,
}

/// A raw NBD client on one Unix socket.
#[derive(Debug)]
pub struct Client {
    /// The socket, for what the methods do not cover (raw writes, timeouts, shutdown).
    pub s: UnixStream,
    /// Whether structured replies were negotiated.
    pub structured: bool,
    /// (offset, length, command) of the requests in flight, by cookie, oldest first.
    inflight: HashMap<u64, VecDeque<(u64, u32, u16)>>,
    /// Structured replies still waiting for their DONE chunk.
    partial: HashMap<u64, Reply>,
    last_cookie: u64,
}

impl Client {
    /// Connects without reading anything.
    pub fn connect(d: &Daemon) -> Client {
        Client::on(UnixStream::connect(&d.sock).expect("connect to cowd"))
    }

    /// A client on a connected socket, nothing read yet.
    pub fn on(s: UnixStream) -> Client {
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
    pub fn greeted(d: &Daemon) -> Client {
        let mut c = Client::connect(d);
        c.greeting();
        c
    }

    pub fn greeting(&mut self) {
        let mut g = [0u8; 18];
        if let Err(e) = self.s.read_exact(&mut g) {
            panic!("no greeting: cowd refused or dropped the connection ({e})");
        }
        assert_eq!(be64(&g, 0), NBDMAGIC, "greeting magic");
        assert_eq!(be64(&g, 8), IHAVEOPT, "greeting option magic");
        assert_eq!(be16(&g, 16), FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
    }

    /// Greeting read and client flags sent: ready for options.
    pub fn haggling(d: &Daemon) -> Client {
        let mut c = Client::greeted(d);
        c.send(&(CFLAG_FIXED_NEWSTYLE | CFLAG_NO_ZEROES).to_be_bytes());
        c
    }

    pub fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).expect("send to cowd");
    }

    pub fn recv(&mut self, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        self.s
            .read_exact(&mut b)
            .unwrap_or_else(|e| panic!("reading {n} bytes from cowd: {e}"));
        b
    }

    /// Asserts the server closes the connection without sending anything more.
    pub fn expect_closed(&mut self, what: &str) {
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
    pub fn option_reply(&mut self, opt: u32) -> OptReply {
        let h = self.recv(20);
        assert_eq!(be64(&h, 0), REPLY_MAGIC, "option reply magic");
        assert_eq!(be32(&h, 8), opt, "option reply names another option");
        let kind = be32(&h, 12);
        let data = self.recv(be32(&h, 16) as usize);
        OptReply { kind, data }
    }

    /// Reads the replies to `opt` up to the final one (ACK or an error).
    pub fn replies(&mut self, opt: u32) -> Vec<OptReply> {
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
    pub fn ask(&mut self, opt: u32, data: &[u8]) -> Vec<OptReply> {
        self.send(&option_bytes(opt, data));
        self.replies(opt)
    }

    /// Sends option `opt`; it must get exactly one reply, whose type is returned.
    pub fn ask_one(&mut self, opt: u32, data: &[u8]) -> u32 {
        let v = self.ask(opt, data);
        assert_eq!(v.len(), 1, "option {opt}: expected one reply, got {v:?}");
        v[0].kind
    }

    pub fn structured_reply(&mut self) {
        assert_eq!(self.ask_one(OPT_STRUCTURED_REPLY, &[]), REP_ACK);
        self.structured = true;
    }

    /// NBD_OPT_GO, which must succeed.
    pub fn go(&mut self, name: &str, infos: &[u16]) -> ExportInfo {
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

    pub fn cookie(&mut self) -> u64 {
        self.last_cookie += 1;
        self.last_cookie
    }

    /// Encodes a request (header and payload) and remembers it until its reply.
    pub fn encode(
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

    pub fn request(
        &mut self,
        cmd: u16,
        flags: u16,
        cookie: u64,
        offset: u64,
        len: u32,
        data: &[u8],
    ) {
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
    pub fn reply(&mut self) -> Reply {
        self.reply_or_eof()
            .expect("cowd closed the connection instead of replying")
    }

    /// The next complete reply, or None when the server closed the connection.
    pub fn reply_or_eof(&mut self) -> Option<Reply> {
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
    pub fn disconnect(mut self) {
        let cookie = self.cookie();
        self.request(CMD_DISC, 0, cookie, 0, 0, &[]);
        self.expect_closed("after NBD_CMD_DISC");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client on one end of a socket pair, the "server" end for the test to write.
    fn pair(structured: bool) -> (Client, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        let mut c = Client::on(a);
        c.structured = structured;
        (c, b)
    }

    fn chunk(flags: u16, kind: u16, cookie: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = STRUCTURED_REPLY_MAGIC.to_be_bytes().to_vec();
        v.extend_from_slice(&flags.to_be_bytes());
        v.extend_from_slice(&kind.to_be_bytes());
        v.extend_from_slice(&cookie.to_be_bytes());
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn wire_encoding_follows_the_protocol() {
        let o = option_bytes(OPT_GO, &info_data(b"disk", &[INFO_BLOCK_SIZE]));
        assert_eq!(be64(&o, 0), IHAVEOPT);
        assert_eq!(be32(&o, 8), OPT_GO);
        assert_eq!(be32(&o, 12) as usize, o.len() - 16);
        assert_eq!(be32(&o, 16), 4);
        assert_eq!(&o[20..24], b"disk");
        assert_eq!((be16(&o, 24), be16(&o, 26)), (1, INFO_BLOCK_SIZE));

        let m = meta_data("disk", &["base:allocation"]);
        assert_eq!(m.len(), 4 + 4 + 4 + 4 + "base:allocation".len());
        assert_eq!((be32(&m, 0), be32(&m, 8), be32(&m, 12)), (4, 1, 15));

        let r = request_bytes(CMD_WRITE, CMD_FLAG_FUA, 7, 1 << 40, 4096);
        assert_eq!(r.len(), 28);
        assert_eq!(be32(&r, 0), REQUEST_MAGIC);
        assert_eq!((be16(&r, 4), be16(&r, 6)), (CMD_FLAG_FUA, CMD_WRITE));
        assert_eq!(
            (be64(&r, 8), be64(&r, 16), be32(&r, 24)),
            (7, 1 << 40, 4096)
        );
    }

    #[test]
    fn a_simple_reply_to_a_read_carries_its_data() {
        let (mut c, mut server) = pair(false);
        let cookie = c.cookie();
        c.request(CMD_READ, 0, cookie, 4096, 4, &[]);
        let mut v = SIMPLE_REPLY_MAGIC.to_be_bytes().to_vec();
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(&cookie.to_be_bytes());
        v.extend_from_slice(b"abcd");
        server.write_all(&v).unwrap();
        let r = c.reply();
        assert_eq!(
            (r.cookie, r.error, r.data.as_slice()),
            (cookie, 0, &b"abcd"[..])
        );
        assert!(r.chunks.is_empty());
    }

    #[test]
    fn structured_chunks_are_assembled_into_one_reply() {
        let (mut c, mut server) = pair(true);
        let cookie = c.cookie();
        c.request(CMD_READ, 0, cookie, 1000, 8, &[]);
        let mut data = 1004u64.to_be_bytes().to_vec();
        data.extend_from_slice(b"wxyz");
        let mut hole = 1000u64.to_be_bytes().to_vec();
        hole.extend_from_slice(&4u32.to_be_bytes());
        let mut wire = chunk(0, REPLY_TYPE_OFFSET_DATA, cookie, &data);
        wire.extend(chunk(
            REPLY_FLAG_DONE,
            REPLY_TYPE_OFFSET_HOLE,
            cookie,
            &hole,
        ));
        server.write_all(&wire).unwrap();
        let r = c.reply();
        assert_eq!(r.data, b"\0\0\0\0wxyz");
        let want = vec![
            (0, REPLY_TYPE_OFFSET_DATA),
            (REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_HOLE),
        ];
        assert_eq!(r.chunks, want);

        let cookie = c.cookie();
        c.request(CMD_WRITE, 0, cookie, 0, 1, b"x");
        let mut err = 22u32.to_be_bytes().to_vec();
        err.extend_from_slice(&0u16.to_be_bytes());
        let wire = chunk(REPLY_FLAG_DONE, REPLY_TYPE_ERROR, cookie, &err);
        server.write_all(&wire).unwrap();
        let r = c.reply();
        assert_eq!((r.cookie, r.error), (cookie, 22));
        assert!(r.data.is_empty());
    }

    #[test]
    fn a_closed_connection_is_no_reply() {
        let (mut c, server) = pair(false);
        drop(server);
        assert!(c.reply_or_eof().is_none());
    }
}
