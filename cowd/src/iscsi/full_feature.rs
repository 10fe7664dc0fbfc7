//! The full feature phase of one connection: commands, their data-out and answers, NOP,
//! Text (SendTargets), task management and logout.
//!
//! ```text
//!  reader thread: PDU ─┬─ SCSI Command ── CmdSN window ── data-out? ─ R2Ts ... Data-Out ─┐
//!                      ├─ NOP-Out, Text, Task Management, Logout: answered here          │
//!                      └─ anything else: Reject                                          v
//!                            ≤ 256 KiB READ/WRITE the page cache serves at once: answered here
//!  workers:                  otherwise: Disk::execute ─> Data-In ... + status (one StatSN) ─> socket
//! ```
//!
//! A large Data-Out that its command takes whole is read from the socket straight into the
//! command's buffer (`PduReader::read_placing` with the buffer `Collect::place` lends).
//!
//! Everything sent goes through `Shared::send_gathered`: under one lock it takes the StatSN
//! (for PDUs that carry a status), reads the window and writes the PDUs whole, so StatSN values
//! go out in order. Answers the reader gives while more PDUs are already buffered may wait in
//! the send buffer for the next send (`Shared::answer`); the reader sends them before it waits
//! for the socket. A non-immediate command opens the window by one when it is answered (or
//! aborted). A command on a worker carries a `scsi::Abort`: ABORT TASK, task-set functions,
//! resets and the connection's end set it (a long EXTENDED COPY stops early), and an aborted
//! command is not answered. A protocol error ends the connection (error recovery level 0);
//! commands already running are aborted and not answered (an answer already on its way
//! still goes out).

use std::collections::HashMap;
use std::io::{IoSlice, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tracing::debug;

use super::connection::ConnectionError;
use super::datain;
use super::dataout::{self, Collect};
use super::digest::Digests;
use super::frame::Frame;
use super::login::Sequence;
use super::negotiate::{Negotiation, SessionParams};
use super::pdu::*;
use super::text::{Accumulator, Outgoing, encode};
use super::window::{Admit, Window};
use super::wire::{Incoming, PduReader, Received};
use super::workers::Workers;
use crate::device::CachedRange;
use crate::scsi::{self, Abort, Disk, LunList, Response, SenseFormat, buffers, luns};

/// A logged-in connection, ready for the full feature phase.
pub struct Session {
    pub params: SessionParams,
    pub negotiation: Negotiation,
    /// The logical unit (LUN 0) of a normal session; `None` in a discovery session.
    pub disk: Option<Arc<Disk>>,
    /// StatSN of the next status.
    pub stat_sn: u32,
    pub window: Window,
    pub io_threads: usize,
    /// What keeps the target's unit in use (the export, the I_T nexus of held copy results):
    /// let go before the initiator can see the session end, so that its next login never
    /// finds this one still open.
    pub hold: Option<Box<dyn Send>>,
    /// Who the session is and where it arrived, for the copy manager.
    pub nexus: Arc<scsi::Nexus>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("params", &self.params)
            .field("disk", &self.disk)
            .field("stat_sn", &self.stat_sn)
            .field("window", &self.window)
            .field("held", &self.hold.is_some())
            .finish_non_exhaustive()
    }
}

/// The sending side.
struct Out {
    stream: TcpStream,
    stat_sn: u32,
    broken: bool,
    /// The PDUs being sent, encoded; kept for the next (no allocation per answer).
    enc: datain::Gathered,
    /// The first `held` bytes of `enc.buf` are answers held back (see `Shared::hold`), and
    /// `held_answers` of them.
    held: usize,
    held_answers: usize,
}

/// Where the data-in of an answer is.
#[derive(Clone, Copy)]
enum Source<'a> {
    Bytes(&'a [u8]),
    Cached(&'a CachedRange),
}

/// Sends an answer whose data-in is in a file's page cache: the encoded parts written, the
/// data-in parts sent with sendfile(2), all corked into full segments (TCP_CORK) so that a
/// header does not leave alone.
fn send_from_cache(
    stream: &TcpStream,
    enc: &datain::Gathered,
    data: &CachedRange,
) -> std::io::Result<()> {
    set_cork(stream, true)?;
    let mut sent = Ok(());
    let mut w = stream;
    for p in &enc.parts {
        sent = match p {
            datain::Part::Encoded(r) => w.write_all(&enc.buf[r.clone()]),
            datain::Part::DataIn(r) => data.send(stream, r.clone()),
        };
        if sent.is_err() {
            break;
        }
    }
    // Uncorking sends what is held.
    sent.and(set_cork(stream, false))
}

fn set_cork(stream: &TcpStream, on: bool) -> std::io::Result<()> {
    let v = libc::c_int::from(on);
    // SAFETY: a live socket and an int option of the size given.
    let r = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(stream),
            libc::IPPROTO_TCP,
            libc::TCP_CORK,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// READs and WRITEs up to this size are tried on the reader thread (page-cache hits, as the
/// NBD server does); larger ones go to a worker, so receiving the next command overlaps them.
/// Larger WRITEs on the reader cost 10-15 % less CPU, but a write the kernel throttles (dirty
/// pages) then stops the reading of the socket: the initiator's data backs up in its receive
/// queue, which the kernel compacts at the sender's cost (the client's CPU per 1 MiB write
/// doubled, and the throughput fell to 0.56-0.72× tgtd's in half of the runs).
const INLINE_MAX: usize = 256 << 10;
/// READs from this size on whose data is all in the page cache are answered on the reader
/// thread with the data sent from there (`Disk::cached_read`, sendfile(2)); smaller ones cost
/// less to copy than to look up.
const CACHED_READ_MIN: u32 = 64 << 10;

/// The sending buffer is kept up to this size between sends.
const KEEP_SEND_BUFFER: usize = 4 << 20;

/// At most this many answers, or bytes of them, are held back to go out in one send (see
/// `Shared::hold`): enough to save most sends when many small commands arrive at once, few
/// enough that the first of them is not kept waiting for the last.
const HOLD_ANSWERS: usize = 8;
const HOLD_BYTES: usize = 16 << 10;

/// What the reader and the workers share.
struct Shared {
    out: Mutex<Out>,
    window: Mutex<Window>,
    /// Commands handed to the workers and not yet answered, by ITT.
    running: Mutex<HashMap<u32, Running>>,
    ran: Condvar,
    digests: Digests,
    data_in: datain::Limits,
}

/// A command on a worker.
struct Running {
    /// Set by task management; the command is then not answered.
    abort: Arc<Abort>,
    /// Its answer is being sent: too late to abort it.
    answering: bool,
}

/// What an abort of a running command found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aborted {
    /// The command will stop (soon) and never be answered.
    Yes,
    /// Its answer was already on the way.
    TooLate,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether the PDUs sent take a StatSN, and whether they answer a non-immediate command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// R2T, unsolicited NOP-In: the current StatSN, not taken.
    Plain,
    /// A status: takes a StatSN.
    Status,
    /// The status of a non-immediate command: takes a StatSN and opens the window by one.
    Answer,
}

impl Shared {
    /// Builds PDUs with the sequence numbers of the moment and sends them.
    fn send(&self, kind: Kind, build: impl FnOnce(Sequence) -> Vec<Frame>) {
        let digests = self.digests;
        self.send_encoded(kind, |seq, buf| {
            build(seq)
                .iter()
                .try_for_each(|f| f.encode_into(digests, buf))
        });
    }

    /// The answer to command `itt`: its Data-In PDUs and status, the data-in sent from where
    /// it is (from memory in one vectored write, or from a file's page cache: no data digests,
    /// see `Disk::cached_read`).
    fn send_answer(&self, kind: Kind, resp: &Response, data: Source<'_>, itt: u32) {
        self.answer(kind, resp, data, itt, false);
    }

    /// [`send_answer`](Self::send_answer); but when `hold` and the answer carries no data-in,
    /// it may be held back to go out with the next: the reader thread's answers while more
    /// commands are already buffered (several answers in one send and one segment, one
    /// wake-up of the initiator). What is held goes out with the next send, or at the latest
    /// with [`flush`](Self::flush), which the reader calls before it waits for the socket.
    fn answer(&self, kind: Kind, resp: &Response, data: Source<'_>, itt: u32, hold: bool) {
        let (digests, limits) = (self.digests, self.data_in);
        let payload = match data {
            Source::Bytes(b) => datain::Payload::Bytes(b),
            Source::Cached(c) => datain::Payload::Sized(c.len()),
        };
        let hold = hold && resp.data_in.is_empty() && matches!(data, Source::Bytes(_));
        self.send_gathered(kind, data, hold, |seq, out| {
            datain::encode_answer(resp, payload, itt, limits, seq, digests, out)
        });
    }

    /// Encodes PDUs with the sequence numbers of the moment into the send buffer and writes
    /// them with one call.
    fn send_encoded(
        &self,
        kind: Kind,
        encode: impl FnOnce(Sequence, &mut Vec<u8>) -> Result<(), PduError>,
    ) {
        self.send_gathered(kind, Source::Bytes(&[]), false, |seq, out| {
            encode(seq, &mut out.buf)
        });
    }

    /// Encodes PDUs with the sequence numbers of the moment and writes them, after what is
    /// held, with one call: the bytes in the send buffer, or, where `encode` lists parts,
    /// those parts of the send buffer and of `data`. With `hold` (bytes in the buffer only),
    /// they may be held instead, within [`HOLD_ANSWERS`] and [`HOLD_BYTES`].
    fn send_gathered(
        &self,
        kind: Kind,
        data: Source<'_>,
        hold: bool,
        encode: impl FnOnce(Sequence, &mut datain::Gathered) -> Result<(), PduError>,
    ) {
        let mut out = lock(&self.out);
        let seq = {
            let mut w = lock(&self.window);
            if kind == Kind::Answer {
                w.answered();
            }
            Sequence {
                stat_sn: out.stat_sn,
                exp_cmd_sn: w.exp_cmd_sn(),
                max_cmd_sn: w.max_cmd_sn(),
            }
        };
        if kind != Kind::Plain {
            out.stat_sn = out.stat_sn.wrapping_add(1);
        }
        if out.broken {
            return;
        }
        let out = &mut *out;
        out.enc.buf.truncate(out.held);
        out.enc.parts.clear();
        if out.held > 0 {
            // Joined by the encoded bytes that follow: what is held goes out first.
            out.enc.parts.push(datain::Part::Encoded(0..out.held));
        }
        let enc = &mut out.enc;
        let written = match encode(seq, enc) {
            Err(e) => Err(std::io::Error::other(e)),
            Ok(()) if hold && out.held_answers + 1 < HOLD_ANSWERS && enc.buf.len() < HOLD_BYTES => {
                out.held = enc.buf.len();
                out.held_answers += 1;
                return;
            }
            // No data-in (or none listed): the buffer is the whole answer.
            Ok(()) if enc.parts.len() <= 1 => out.stream.write_all(&enc.buf),
            Ok(()) => match data {
                Source::Bytes(data) => {
                    let mut slices: Vec<IoSlice<'_>> = (enc.parts.iter())
                        .map(|p| match p {
                            datain::Part::Encoded(r) => IoSlice::new(&enc.buf[r.clone()]),
                            datain::Part::DataIn(r) => IoSlice::new(&data[r.clone()]),
                        })
                        .collect();
                    crate::vectored::write_all(&mut out.stream, &mut slices)
                }
                Source::Cached(data) => send_from_cache(&out.stream, enc, data),
            },
        };
        (out.held, out.held_answers) = (0, 0);
        if out.enc.buf.capacity() > KEEP_SEND_BUFFER {
            out.enc.buf = Vec::new();
        }
        if let Err(e) = written {
            debug!(error = %e, "iSCSI connection: cannot send; closing");
            out.broken = true;
            let _ = out.stream.shutdown(Shutdown::Both);
        }
    }

    /// Sends the answers held back, if any.
    fn flush(&self) {
        if lock(&self.out).held > 0 {
            self.send_encoded(Kind::Plain, |_, _| Ok(()));
        }
    }

    /// Commands admitted but never to be answered (aborted): the window opens for them.
    fn forget(&self, n: usize) {
        let mut w = lock(&self.window);
        for _ in 0..n {
            w.answered();
        }
    }

    /// Command `itt` goes to a worker; what aborts it.
    fn start(&self, itt: u32) -> Arc<Abort> {
        let abort = Arc::new(Abort::new());
        let running = Running {
            abort: abort.clone(),
            answering: false,
        };
        lock(&self.running).insert(itt, running);
        abort
    }

    /// Whether a worker's command `itt` is answered: not if it was aborted (then the window
    /// opens for it all the same); once this says yes, an abort comes too late.
    fn may_answer(&self, itt: u32, kind: Kind) -> bool {
        let mut running = lock(&self.running);
        let r = running.get_mut(&itt).expect("a running command");
        if r.abort.is_set() {
            drop(running);
            self.forget(usize::from(kind == Kind::Answer));
            return false;
        }
        r.answering = true;
        true
    }

    fn finished(&self, itt: u32) {
        lock(&self.running).remove(&itt);
        self.ran.notify_all();
    }

    /// Aborts running command `itt`; `None` if it is not running.
    fn abort(&self, itt: u32) -> Option<Aborted> {
        let running = lock(&self.running);
        let r = running.get(&itt)?;
        if r.answering {
            return Some(Aborted::TooLate);
        }
        r.abort.set();
        Some(Aborted::Yes)
    }

    /// Aborts every running command whose answer is not on its way.
    fn abort_all(&self) {
        for r in lock(&self.running).values().filter(|r| !r.answering) {
            r.abort.set();
        }
    }

    /// Waits until none of `itts` (all, if `None`) is running.
    fn wait_for(&self, itt: Option<u32>) {
        let mut running = lock(&self.running);
        while match itt {
            Some(t) => running.contains_key(&t),
            None => !running.is_empty(),
        } {
            running = self.ran.wait(running).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// A write command whose data-out is still arriving.
struct Pending {
    cmd: ScsiCommand,
    cdb: Vec<u8>,
    collect: Collect,
}

/// Whether the connection goes on after a PDU.
enum Flow {
    Continue,
    Close,
}

/// The reader side of the full feature phase.
struct Phase {
    shared: Arc<Shared>,
    params: SessionParams,
    negotiation: Negotiation,
    disk: Option<Arc<Disk>>,
    workers: Workers,
    pending: HashMap<u32, Pending>,
    next_ttt: u32,
    text_in: Accumulator,
    /// A Text answer being sent in pieces, and the TTT that asks for the next.
    text_out: Option<(u32, Outgoing)>,
    hold: Option<Box<dyn Send>>,
    nexus: Arc<scsi::Nexus>,
    /// Another whole PDU was buffered when the one being handled was read: its answer may
    /// wait to go out with the next (`Shared::answer`).
    more_buffered: bool,
}

/// Runs the full feature phase until logout, close or error.
pub fn run(
    s: Session,
    mut reader: PduReader<TcpStream>,
    stream: TcpStream,
) -> Result<(), ConnectionError> {
    let digests = s.params.digests;
    let max_recv = s.params.max_recv_data_segment_length;
    let shared = Arc::new(Shared {
        out: Mutex::new(Out {
            stream: stream.try_clone()?,
            stat_sn: s.stat_sn,
            broken: false,
            enc: datain::Gathered::default(),
            held: 0,
            held_answers: 0,
        }),
        window: Mutex::new(s.window),
        running: Mutex::new(HashMap::new()),
        ran: Condvar::new(),
        digests,
        data_in: datain::Limits {
            max_xmit_data_segment_length: s.params.max_xmit_data_segment_length,
            max_burst_length: s.params.max_burst_length,
        },
    });
    let mut phase = Phase {
        shared,
        params: s.params,
        negotiation: s.negotiation,
        disk: s.disk,
        workers: Workers::new(s.io_threads, "cowd-iscsi-io"),
        pending: HashMap::new(),
        next_ttt: 1,
        text_in: Accumulator::default(),
        text_out: None,
        hold: s.hold,
        nexus: s.nexus,
        more_buffered: false,
    };
    let result = loop {
        if !reader.holds_whole_pdu(digests) {
            // About to wait for the initiator: it gets every answer there is first.
            phase.shared.flush();
        }
        let received = reader.read_placing(digests, max_recv, &mut |h| phase.lend(h));
        phase.more_buffered = reader.holds_whole_pdu(digests);
        match received {
            Ok(Received::Placed { header, buf, len }) => phase.placed(&header, buf, len),
            Ok(Received::Incoming(Incoming::Pdu(f))) => match phase.handle(f) {
                Ok(Flow::Continue) => {}
                Ok(Flow::Close) => break Ok(()),
                Err(e) => break Err(e),
            },
            Ok(Received::Incoming(Incoming::Bad(e, bhs))) => {
                debug!(error = %e, "iSCSI: rejecting a PDU");
                let reason = e.reject_reason().unwrap_or(RejectReason::ProtocolError);
                phase.reject(reason, bhs.to_vec());
            }
            Ok(Received::Incoming(Incoming::Closed)) => break Ok(()),
            Err(e) => break Err(ConnectionError::Protocol(e.to_string())),
        }
    };
    // Running commands finish (their answers go out if the socket takes them); a long one
    // still running after the session's end is aborted: nobody waits for its answer any more
    // (the loss of its I_T nexus). After a logout nothing runs.
    phase.shared.abort_all();
    phase.workers.finish();
    phase.shared.flush();
    drop(phase.hold.take());
    let _ = stream.shutdown(Shutdown::Both);
    result
}

impl Phase {
    fn handle(&mut self, f: Frame) -> Result<Flow, ConnectionError> {
        match f.header.pdu {
            Pdu::ScsiCommand(cmd) => self.command(cmd, &f),
            Pdu::DataOut(h) => self.data_out(&h, &f.data),
            Pdu::NopOut(n) => Ok(self.nop(&n, f.data)),
            Pdu::TextRequest(t) => self.text(&t, &f.data),
            Pdu::TaskRequest(t) => Ok(self.task_management(&t)),
            Pdu::LogoutRequest(l) => Ok(self.logout(&l)),
            _ => {
                debug!(opcode = ?f.header.opcode(), "iSCSI: unexpected PDU in full feature phase");
                self.reject(RejectReason::ProtocolError, f.header.encode().to_vec());
                Ok(Flow::Continue)
            }
        }
    }

    /// Admits a CmdSN; `None` if the PDU is to be ignored.
    fn admit(&self, cmd_sn: u32, immediate: bool) -> Option<Kind> {
        match lock(&self.shared.window).admit(cmd_sn, immediate) {
            Admit::Next => Some(Kind::Answer),
            Admit::Immediate => Some(Kind::Status),
            Admit::Ignore => {
                debug!(cmd_sn, "iSCSI: CmdSN outside the window; ignored");
                None
            }
        }
    }

    fn ttt(&mut self) -> u32 {
        next_tag(&mut self.next_ttt)
    }

    fn limits(&self) -> dataout::Limits {
        let p = &self.params;
        dataout::Limits {
            first_burst_length: p.first_burst_length,
            max_burst_length: p.max_burst_length,
            max_outstanding_r2t: p.max_outstanding_r2t,
            initial_r2t: p.initial_r2t,
            immediate_data: p.immediate_data,
        }
    }

    fn command(&mut self, cmd: ScsiCommand, f: &Frame) -> Result<Flow, ConnectionError> {
        let Some(disk) = self.disk.clone() else {
            self.reject(RejectReason::ProtocolError, f.header.encode().to_vec());
            return Ok(Flow::Continue);
        };
        let Some(kind) = self.admit(cmd.cmd_sn, cmd.immediate) else {
            return Ok(Flow::Continue);
        };
        if self.pending.contains_key(&cmd.itt) || lock(&self.shared.running).contains_key(&cmd.itt)
        {
            return Err(ConnectionError::Protocol(format!(
                "initiator task tag {:#x} is already in use",
                cmd.itt
            )));
        }
        let cdb = f.cdb().unwrap_or_default();
        if cmd.lun.to_single_level() != Some(0) {
            let resp = luns::absent(&cdb, cmd.expected_len, &LunList::default());
            self.shared
                .send_answer(kind, &resp, Source::Bytes(&resp.data_in), cmd.itt);
            return Ok(Flow::Continue);
        }
        if !cmd.write && f.data.is_empty() {
            self.dispatch(disk, cmd, cdb, Vec::new(), kind);
            return Ok(Flow::Continue);
        }
        // A refused command solicits nothing; execute reports why.
        let wanted = disk.data_out_len(&cdb).unwrap_or(0);
        let mut collect = match Collect::new(self.limits(), &cmd, wanted, &f.data) {
            Ok(c) => c,
            Err(e) => {
                self.fail_transfer(&cmd, kind, &e);
                return Ok(Flow::Continue);
            }
        };
        if collect.is_complete() {
            self.dispatch(disk, cmd, cdb, collect.into_data(), kind);
            return Ok(Flow::Continue);
        }
        let r2ts = collect.r2ts(|| self.ttt());
        self.send_r2ts(&cmd, &r2ts);
        self.pending.insert(cmd.itt, Pending { cmd, cdb, collect });
        Ok(Flow::Continue)
    }

    fn data_out(&mut self, h: &DataOut, data: &[u8]) -> Result<Flow, ConnectionError> {
        let Some(p) = self.pending.get_mut(&h.itt) else {
            // Of an ignored or aborted command.
            debug!(
                itt = h.itt,
                "iSCSI: Data-Out for no pending command; dropped"
            );
            return Ok(Flow::Continue);
        };
        let kind = if p.cmd.immediate {
            Kind::Status
        } else {
            Kind::Answer
        };
        if let Err(e) = p.collect.data_out(h, data) {
            let cmd = p.cmd;
            self.pending.remove(&h.itt);
            self.fail_transfer(&cmd, kind, &e);
            return Ok(Flow::Continue);
        }
        self.collected(h.itt, kind);
        Ok(Flow::Continue)
    }

    /// The buffer a large Data-Out's data is read into, when its command takes all of it and
    /// it keeps every rule (`Collect::place`); `None`: it is read and taken as a frame.
    fn lend(&mut self, h: &Header) -> Option<(Vec<u8>, usize)> {
        let Pdu::DataOut(d) = &h.pdu else {
            return None;
        };
        let p = self.pending.get_mut(&d.itt)?;
        p.collect.place(d, h.data_len as usize)
    }

    /// A Data-Out whose data was read into the buffer [`lend`](Self::lend) gave.
    fn placed(&mut self, h: &Header, buf: Vec<u8>, len: usize) {
        let Pdu::DataOut(d) = &h.pdu else {
            unreachable!("only Data-Out is lent a buffer");
        };
        let p = self
            .pending
            .get_mut(&d.itt)
            .expect("lent for a pending command");
        p.collect.placed(buf, len);
        let kind = if p.cmd.immediate {
            Kind::Status
        } else {
            Kind::Answer
        };
        self.collected(d.itt, kind);
    }

    /// After a Data-Out of pending command `itt`: runs it once all its data is here, else
    /// sends the R2Ts now due.
    fn collected(&mut self, itt: u32, kind: Kind) {
        let p = self.pending.get_mut(&itt).expect("pending");
        if p.collect.is_complete() {
            let p = self.pending.remove(&itt).expect("just found");
            let disk = self.disk.clone().expect("commands only in normal sessions");
            self.dispatch(disk, p.cmd, p.cdb, p.collect.into_data(), kind);
            return;
        }
        let counter = &mut self.next_ttt;
        let r2ts = p.collect.r2ts(|| next_tag(counter));
        let cmd = p.cmd;
        self.send_r2ts(&cmd, &r2ts);
    }

    /// Fails a command whose data-out broke the rules; the connection goes on.
    fn fail_transfer(&self, cmd: &ScsiCommand, kind: Kind, e: &dataout::DataOutError) {
        debug!(itt = cmd.itt, error = %e, "iSCSI: data-out refused; the command fails");
        let resp = Response::check_condition(&e.sense(), SenseFormat::Fixed, scsi::Residual::None);
        self.shared
            .send_answer(kind, &resp, Source::Bytes(&resp.data_in), cmd.itt);
    }

    fn send_r2ts(&self, cmd: &ScsiCommand, r2ts: &[dataout::R2tRequest]) {
        if r2ts.is_empty() {
            return;
        }
        self.shared.send(Kind::Plain, |seq| {
            r2ts.iter()
                .map(|r| {
                    let pdu = Pdu::R2t(R2t {
                        lun: cmd.lun,
                        itt: cmd.itt,
                        ttt: r.ttt,
                        stat_sn: seq.stat_sn,
                        exp_cmd_sn: seq.exp_cmd_sn,
                        max_cmd_sn: seq.max_cmd_sn,
                        r2t_sn: r.r2t_sn,
                        buffer_offset: r.offset,
                        desired_len: r.len,
                    });
                    Frame::new(header(pdu), Vec::new())
                })
                .collect()
        });
    }

    /// Runs a command: here when it can be answered at once (a READ or WRITE the page cache
    /// serves), else on a worker, which sends its answer.
    fn dispatch(
        &mut self,
        disk: Arc<Disk>,
        cmd: ScsiCommand,
        cdb: Vec<u8>,
        data: Vec<u8>,
        kind: Kind,
    ) {
        if cmd.read
            && !self.shared.digests.data
            && cmd.expected_len >= CACHED_READ_MIN
            && let Some((resp, range)) = disk.cached_read(&cdb, cmd.expected_len)
        {
            buffers::recycle(data);
            self.shared
                .send_answer(kind, &resp, Source::Cached(&range), cmd.itt);
            return;
        }
        let at_once = disk.try_execute_from(&self.nexus, &cdb, cmd.expected_len, &data, INLINE_MAX);
        if let Some(resp) = at_once {
            buffers::recycle(data);
            let hold = self.more_buffered;
            (self.shared).answer(kind, &resp, Source::Bytes(&resp.data_in), cmd.itt, hold);
            buffers::recycle(resp.data_in);
            return;
        }
        let abort = self.shared.start(cmd.itt);
        let shared = self.shared.clone();
        let nexus = self.nexus.clone();
        self.workers.submit(move || {
            let resp = disk.execute_task(&nexus, &abort, &cdb, cmd.expected_len, &data);
            if let Some(sense) = &resp.sense {
                debug!(target: "cowd::data", itt = cmd.itt, opcode = cdb.first().copied().unwrap_or(0), sense = ?&sense[..sense.len().min(18)], "SCSI command failed");
            }
            buffers::recycle(data);
            if shared.may_answer(cmd.itt, kind) {
                shared.send_answer(kind, &resp, Source::Bytes(&resp.data_in), cmd.itt);
            } else {
                debug!(itt = cmd.itt, "iSCSI: command aborted; not answered");
            }
            shared.finished(cmd.itt);
            buffers::recycle(resp.data_in);
        });
    }

    fn nop(&mut self, n: &NopOut, mut data: Vec<u8>) -> Flow {
        if n.itt == RESERVED_TAG {
            // An answer to a NOP-In of ours, or a ping that wants no answer.
            return Flow::Continue;
        }
        let Some(kind) = self.admit(n.cmd_sn, n.immediate) else {
            return Flow::Continue;
        };
        data.truncate(self.params.max_xmit_data_segment_length as usize);
        self.shared.send(kind, |seq| {
            let pdu = Pdu::NopIn(NopIn {
                lun: n.lun,
                itt: n.itt,
                ttt: RESERVED_TAG,
                stat_sn: seq.stat_sn,
                exp_cmd_sn: seq.exp_cmd_sn,
                max_cmd_sn: seq.max_cmd_sn,
            });
            vec![Frame::new(header(pdu), data)]
        });
        Flow::Continue
    }

    fn text(&mut self, t: &TextRequest, data: &[u8]) -> Result<Flow, ConnectionError> {
        let Some(kind) = self.admit(t.cmd_sn, t.immediate) else {
            return Ok(Flow::Continue);
        };
        let max = self.params.max_xmit_data_segment_length as usize;
        let (chunk, more) = match self.text_out.take() {
            Some((ttt, mut out)) if t.ttt == ttt && data.is_empty() => {
                let (chunk, more) = out.next_chunk(max);
                if more {
                    self.text_out = Some((ttt, out));
                }
                (chunk, more)
            }
            _ => {
                let keys = self
                    .text_in
                    .push(data, t.cont)
                    .map_err(|e| ConnectionError::Protocol(format!("Text request: {e}")))?;
                match keys {
                    // More of the request is coming: an empty answer asks for it.
                    None => (Vec::new(), true),
                    Some(keys) => {
                        let answers = self
                            .negotiation
                            .offer(&keys)
                            .map_err(|e| ConnectionError::Protocol(format!("Text request: {e}")))?;
                        let mut out = Outgoing::new(encode(&answers));
                        let (chunk, more) = out.next_chunk(max);
                        if more {
                            let ttt = self.ttt();
                            self.text_out = Some((ttt, out));
                        }
                        (chunk, more)
                    }
                }
            }
        };
        let ttt = match &self.text_out {
            Some((ttt, _)) => *ttt,
            None if more => self.ttt(),
            None => RESERVED_TAG,
        };
        let (itt, lun) = (t.itt, t.lun);
        self.shared.send(kind, |seq| {
            let pdu = Pdu::TextResponse(TextResponse {
                final_: !more,
                cont: more && !chunk.is_empty(),
                lun,
                itt,
                ttt,
                stat_sn: seq.stat_sn,
                exp_cmd_sn: seq.exp_cmd_sn,
                max_cmd_sn: seq.max_cmd_sn,
            });
            vec![Frame::new(header(pdu), chunk)]
        });
        Ok(Flow::Continue)
    }

    /// Drops every command still collecting data-out.
    fn drop_pending(&mut self) {
        let aborted = self
            .pending
            .drain()
            .filter(|(_, p)| !p.cmd.immediate)
            .count();
        self.shared.forget(aborted);
    }

    fn task_management(&mut self, t: &TaskRequest) -> Flow {
        let Some(kind) = self.admit(t.cmd_sn, t.immediate) else {
            return Flow::Continue;
        };
        let lun_ok = t.lun.to_single_level() == Some(0);
        let mut flow = Flow::Continue;
        let response = match t.function {
            TaskFunction::AbortTask => {
                if let Some(p) = self.pending.remove(&t.referenced_tag) {
                    self.shared.forget(usize::from(!p.cmd.immediate));
                    TMF_COMPLETE
                } else if let Some(aborted) = self.shared.abort(t.referenced_tag) {
                    // The command stops soon (a copy within a piece or a poll of its job;
                    // anything else when it ends) and is not answered; an answer already
                    // on the way goes first, and then the abort finds no task. The answer
                    // to the abort follows the command's end either way.
                    self.shared.wait_for(Some(t.referenced_tag));
                    match aborted {
                        Aborted::Yes => TMF_COMPLETE,
                        Aborted::TooLate => TMF_NO_TASK,
                    }
                } else {
                    TMF_NO_TASK
                }
            }
            TaskFunction::AbortTaskSet
            | TaskFunction::ClearTaskSet
            | TaskFunction::LogicalUnitReset
                if !lun_ok =>
            {
                TMF_NO_LUN
            }
            TaskFunction::AbortTaskSet
            | TaskFunction::ClearTaskSet
            | TaskFunction::LogicalUnitReset
            | TaskFunction::TargetWarmReset
            | TaskFunction::TargetColdReset => {
                self.drop_pending();
                self.shared.abort_all();
                self.shared.wait_for(None);
                if t.function == TaskFunction::TargetColdReset {
                    flow = Flow::Close;
                }
                TMF_COMPLETE
            }
            TaskFunction::ClearAca => TMF_NOT_SUPPORTED,
            TaskFunction::TaskReassign => TMF_REASSIGN_UNSUPPORTED,
        };
        let itt = t.itt;
        self.shared.send(kind, |seq| {
            let pdu = Pdu::TaskResponse(TaskResponse {
                response,
                itt,
                stat_sn: seq.stat_sn,
                exp_cmd_sn: seq.exp_cmd_sn,
                max_cmd_sn: seq.max_cmd_sn,
            });
            vec![Frame::new(header(pdu), Vec::new())]
        });
        flow
    }

    fn logout(&mut self, l: &LogoutRequest) -> Flow {
        let Some(kind) = self.admit(l.cmd_sn, l.immediate) else {
            return Flow::Continue;
        };
        let (response, flow) = match l.reason {
            LogoutReason::CloseSession | LogoutReason::CloseConnection => {
                self.drop_pending();
                self.shared.wait_for(None);
                // The session is over for the initiator once it has the answer.
                drop(self.hold.take());
                (LOGOUT_CLOSED, Flow::Close)
            }
            LogoutReason::RemoveConnectionForRecovery => {
                (LOGOUT_RECOVERY_UNSUPPORTED, Flow::Continue)
            }
        };
        let itt = l.itt;
        self.shared.send(kind, |seq| {
            let pdu = Pdu::LogoutResponse(LogoutResponse {
                response,
                itt,
                stat_sn: seq.stat_sn,
                exp_cmd_sn: seq.exp_cmd_sn,
                max_cmd_sn: seq.max_cmd_sn,
                time2wait: 0,
                time2retain: 0,
            });
            vec![Frame::new(header(pdu), Vec::new())]
        });
        flow
    }

    /// Rejects a PDU whose BHS is `bhs`.
    fn reject(&self, reason: RejectReason, bhs: Vec<u8>) {
        self.shared.send(Kind::Status, |seq| {
            let pdu = Pdu::Reject(Reject {
                reason,
                stat_sn: seq.stat_sn,
                exp_cmd_sn: seq.exp_cmd_sn,
                max_cmd_sn: seq.max_cmd_sn,
                data_sn: 0,
            });
            vec![Frame::new(header(pdu), bhs)]
        });
    }
}

/// A target transfer tag from `counter`: never 0 or the reserved tag.
fn next_tag(counter: &mut u32) -> u32 {
    let t = *counter;
    *counter = match t.wrapping_add(1) {
        RESERVED_TAG => 1,
        n => n,
    };
    t
}

fn header(pdu: Pdu) -> Header {
    Header {
        ahs_words: 0,
        data_len: 0,
        pdu,
    }
}
