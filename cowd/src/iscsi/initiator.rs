//! A minimal iSCSI initiator (RFC 7143): one session of one connection to one logical unit,
//! one command at a time. Data movers reach copy targets through it ([`IscsiDevice`]), and
//! tests send it arbitrary SCSI commands ([`Session::command`]).
//!
//! ```text
//!  Session::login(url) ─ dial::tcp(from, timeout) ─ login (login.rs: security, [CHAP],
//!     │                                               operational keys) ─> full feature phase
//!     v
//!  Session::command(cdb, data_out, data_in_len)
//!     SCSI Command [+ immediate data] [+ unsolicited Data-Out up to FirstBurstLength]
//!       <── R2T ──> Data-Out ... (as many as the target asks for)
//!       <── Data-In ... [S: status]  or  <── SCSI Response [sense]
//!       <── NOP-In ping ──> NOP-Out (answered at any point)
//!     Reply { status, sense, data, residual }
//!  drop ─> Logout (best effort)
//!
//!  IscsiDevice (device.rs): BlockDevice over a Mutex<Session>: READ(16), WRITE(16) [FUA],
//!  SYNCHRONIZE CACHE(16), UNMAP; commands.rs: the CDBs and the data they return (pure)
//! ```
//!
//! Invariants:
//! - Between commands the connection is at a PDU boundary with nothing outstanding. Anything
//!   that could leave it otherwise (an I/O error or timeout, a PDU that breaks the protocol)
//!   breaks the session: the socket is shut down and every later command fails at once with
//!   [`CommandError::Broken`]. A session is never re-established here; the caller logs in
//!   again (a mover: tries its next path).
//! - Every socket operation has the timeout given at login ([`Session::set_timeout`] changes
//!   it), so a dead or frozen target gives an error, never a hang.
//! - CmdSN advances by one per SCSI Command; NOP-Out pings and the Logout are immediate and do
//!   not advance it. ExpStatSN is one past the last StatSN of a status-bearing PDU. A command
//!   is sent only inside the target's window (CmdSN ≤ MaxCmdSN).
//!
//! Digests are not negotiated (None), error recovery level is 0, and there is no task
//! management: a command that does not complete within the timeout breaks the session.

pub mod commands;
mod device;
mod login;

use std::io::{self, IoSlice, Write};
use std::net::{IpAddr, Shutdown, TcpStream};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

pub use commands::SenseCodes;
pub use device::{ConnectError, IscsiDevice};
pub use login::{LoginProblem, Negotiated};

use super::digest::Digests;
use super::frame::{Ahs, Frame, padded_len};
use super::login::{LoginStatus, MAX_LOGIN_DATA_LEN, VERSION};
use super::pdu::{
    DataIn, DataOut, Header, LoginRequest, LoginResponse, LoginStage, LogoutReason, LogoutRequest,
    Lun, NopOut, Opcode, Pdu, RESERVED_TAG, RejectReason, Residual, ScsiCommand, TaskAttr,
};
use super::text::{Accumulator, KeyValues};
use super::url::IscsiUrl;
use super::window::{sn_le, sn_lt};
use super::wire::{Incoming, PduReader, WireError};
use login::{Identity, Negotiator, Request, Step};

/// Bytes of a CDB carried in the BHS; the rest goes in an extended CDB AHS.
const BHS_CDB_LEN: usize = 16;
/// The longest CDB sent (an extended CDB AHS holds at most 1019 bytes; SPC's longest CDBs are
/// 260 bytes).
const MAX_CDB_LEN: usize = 260;
/// How long the Logout of a dropped session may take.
const LOGOUT_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between NOP-Out pings while the target's command window is closed.
const WINDOW_POLL: Duration = Duration::from_millis(50);

/// Why [`Session::login`] failed. Every message names the URL (its password hidden).
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Nothing answered: no address, connection refused or timed out, no route.
    #[error("{url}: cannot reach the iSCSI portal {portal}: {source}")]
    Unreachable {
        url: String,
        portal: String,
        source: io::Error,
    },
    /// The target answered, then went silent or closed the connection during the login.
    #[error("{url}: lost the connection during the login: {source}")]
    Lost { url: String, source: io::Error },
    /// The target failed the login (a Login Response with status class 1, 2 or 3).
    #[error("{url}: the target refused the login: {} (status {class:02X}{detail:02X}h)", describe(*.class, *.detail))]
    Refused { url: String, class: u8, detail: u8 },
    /// The target's answers cannot be accepted (authentication, digests, limits).
    #[error("{url}: login failed: {problem}")]
    Negotiation { url: String, problem: LoginProblem },
    /// The target broke the protocol.
    #[error("{url}: the target broke the iSCSI protocol during the login: {reason}")]
    Protocol { url: String, reason: String },
}

impl LoginError {
    /// The path is down (nothing answers, or it stopped answering); another path may work.
    /// False when the target answered and refused: the same login elsewhere is no better.
    pub fn unreachable(&self) -> bool {
        matches!(
            self,
            LoginError::Unreachable { .. } | LoginError::Lost { .. }
        )
    }

    /// The login status, when the target refused the login.
    pub fn status(&self) -> Option<(u8, u8)> {
        match self {
            LoginError::Refused { class, detail, .. } => Some((*class, *detail)),
            _ => None,
        }
    }
}

/// What a login status means, in words.
fn describe(class: u8, detail: u8) -> &'static str {
    let Some(status) = LoginStatus::from_wire(class, detail) else {
        return match class {
            1 => "redirected",
            2 => "initiator error",
            _ => "target error",
        };
    };
    match status {
        LoginStatus::Success => "success",
        LoginStatus::TargetMovedTemporarily | LoginStatus::TargetMovedPermanently => {
            "the target moved (redirection is not followed)"
        }
        LoginStatus::InitiatorError => "initiator error",
        LoginStatus::AuthenticationFailure => "authentication failed",
        LoginStatus::AuthorizationFailure => "this initiator is not allowed to log in",
        LoginStatus::NotFound => "no such target",
        LoginStatus::TargetRemoved => "the target was removed",
        LoginStatus::UnsupportedVersion => "unsupported iSCSI version",
        LoginStatus::TooManyConnections => "too many connections",
        LoginStatus::MissingParameter => "a parameter is missing",
        LoginStatus::CantIncludeInSession => "cannot include the connection in the session",
        LoginStatus::SessionTypeNotSupported => "session type not supported",
        LoginStatus::SessionDoesNotExist => "no such session",
        LoginStatus::InvalidDuringLogin => "request invalid during login",
        LoginStatus::TargetError => "target error",
        LoginStatus::ServiceUnavailable => "service unavailable",
        LoginStatus::OutOfResources => "the target is out of resources",
    }
}

/// Why a command did not complete with a status.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// An earlier error broke the session; nothing was sent.
    #[error("the iSCSI session is broken since an earlier error ({0}); log in again")]
    Broken(String),
    /// The connection failed or timed out; the session is now broken.
    #[error("iSCSI connection lost: {0}")]
    Io(io::Error),
    /// The target broke the protocol; the session is now broken.
    #[error("the target broke the iSCSI protocol: {0}")]
    Protocol(String),
    /// The target rejected the command PDU (it did not run); the session goes on.
    #[error("the target rejected the command: {0:?}")]
    Rejected(RejectReason),
    /// The SCSI Response says the target failed the command (iSCSI response code, not a
    /// SCSI status); the session goes on.
    #[error("the target could not complete the command (iSCSI response {0:#04x})")]
    TargetFailure(u8),
    /// The target kept its command window closed for the whole timeout; nothing was sent.
    #[error("the target accepted no command for {0:?} (command window closed)")]
    WindowClosed(Duration),
    /// The command cannot be sent as asked; nothing was sent.
    #[error("{0}")]
    Invalid(&'static str),
}

impl CommandError {
    /// Whether this error broke the session.
    pub fn breaks_session(&self) -> bool {
        match self {
            CommandError::Broken(_) | CommandError::Io(_) | CommandError::Protocol(_) => true,
            CommandError::Rejected(_)
            | CommandError::TargetFailure(_)
            | CommandError::WindowClosed(_)
            | CommandError::Invalid(_) => false,
        }
    }
}

/// The outcome of a command that completed with a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// SAM status (`commands::GOOD`, `commands::CHECK_CONDITION`, ...).
    pub status: u8,
    /// Sense data (with CHECK CONDITION), without the iSCSI length prefix.
    pub sense: Vec<u8>,
    /// Data-in, as much as the target sent.
    pub data: Vec<u8>,
    pub residual: Residual,
}

impl Reply {
    pub fn is_good(&self) -> bool {
        self.status == commands::GOOD
    }

    /// Sense key, ASC and ASCQ of the sense data, if there is any.
    pub fn sense_codes(&self) -> Option<SenseCodes> {
        commands::sense_codes(&self.sense)
    }
}

/// The outcome of [`Session::command_into`]: a [`Reply`] whose data is in the caller's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub status: u8,
    pub sense: Vec<u8>,
    pub residual: Residual,
    /// Bytes of the buffer the target filled, from its start (the end of the furthest
    /// Data-In).
    pub received: usize,
}

/// The sequence numbers of a session (RFC 7143 §4.2.2), in serial number arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sequence {
    /// CmdSN of the next non-immediate command.
    pub cmd_sn: u32,
    pub exp_cmd_sn: u32,
    pub max_cmd_sn: u32,
    /// One past the last StatSN received.
    pub exp_stat_sn: u32,
}

impl Sequence {
    /// A command may be sent: CmdSN is within the target's window.
    pub fn window_open(&self) -> bool {
        sn_le(self.cmd_sn, self.max_cmd_sn)
    }

    /// Takes ExpCmdSN and MaxCmdSN of a target PDU: each only moves forward, and a pair with
    /// MaxCmdSN < ExpCmdSN - 1 is ignored (RFC 7143 §4.2.2.1).
    pub fn update(&mut self, exp_cmd_sn: u32, max_cmd_sn: u32) {
        if sn_lt(max_cmd_sn, exp_cmd_sn.wrapping_sub(1)) {
            return;
        }
        if sn_lt(self.exp_cmd_sn, exp_cmd_sn) {
            self.exp_cmd_sn = exp_cmd_sn;
        }
        if sn_lt(self.max_cmd_sn, max_cmd_sn) {
            self.max_cmd_sn = max_cmd_sn;
        }
    }

    /// Takes the StatSN of a status-bearing PDU.
    pub fn status(&mut self, stat_sn: u32) {
        if sn_le(self.exp_stat_sn, stat_sn) {
            self.exp_stat_sn = stat_sn.wrapping_add(1);
        }
    }
}

/// How much of a write goes without an R2T: `(immediate, unsolicited_end)`: bytes in the
/// SCSI Command PDU, and the end of the Data-Out PDUs that follow it unasked (RFC 7143
/// §4.2.5.2: both within FirstBurstLength; Data-Out only with InitialR2T=No).
pub fn unsolicited(len: usize, n: &Negotiated) -> (usize, usize) {
    let first_burst = n.first_burst_length as usize;
    let immediate = if n.immediate_data {
        len.min(first_burst)
            .min(n.max_xmit_data_segment_length as usize)
    } else {
        0
    };
    let end = if n.initial_r2t {
        immediate
    } else {
        len.min(first_burst)
    };
    (immediate, end.max(immediate))
}

/// Distinguishes the sessions of this process in their ISIDs.
static SESSIONS: AtomicU16 = AtomicU16::new(0);

/// A fresh ISID of the random format (RFC 7143 §11.12.5, T = 10b): B and C random, D counts
/// this process's sessions, so two sessions of one initiator name never reinstate each other.
fn new_isid() -> [u8; 6] {
    let [d0, d1] = SESSIONS.fetch_add(1, Ordering::Relaxed).to_be_bytes();
    let [b0, b1, c] = [fastrand::u8(..), fastrand::u8(..), fastrand::u8(..)];
    [0x80, b0, b1, c, d0, d1]
}

/// A logged-in session to one logical unit.
pub struct Session {
    url: IscsiUrl,
    lun: Lun,
    stream: TcpStream,
    reader: PduReader<TcpStream>,
    negotiated: Negotiated,
    seq: Sequence,
    next_itt: u32,
    timeout: Duration,
    /// Why the connection is out of step (then shut down); set once, never cleared.
    broken: Option<String>,
    /// The target asked for a logout (Asynchronous Message event 1).
    logout_requested: bool,
    logged_out: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("url", &self.url)
            .field("negotiated", &self.negotiated)
            .field("seq", &self.seq)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

/// A timeout as an error that says so.
fn explain(e: io::Error, timeout: Duration) -> io::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {timeout:?}"),
        ),
        _ => e,
    }
}

fn header(pdu: Pdu) -> Header {
    Header {
        ahs_words: 0,
        data_len: 0,
        pdu,
    }
}

impl Session {
    /// Logs in to the logical unit of `url` as `initiator_name`; `timeout` bounds the
    /// connect and every socket operation then and for the session's whole life.
    pub fn login(
        url: &IscsiUrl,
        initiator_name: &str,
        timeout: Duration,
    ) -> Result<Session, LoginError> {
        Session::login_from(url, initiator_name, None, timeout)
    }

    /// [`Session::login`] from the local address `from` (an initiator port; `None`: any).
    pub fn login_from(
        url: &IscsiUrl,
        initiator_name: &str,
        from: Option<IpAddr>,
        timeout: Duration,
    ) -> Result<Session, LoginError> {
        let timeout = timeout.max(Duration::from_millis(1));
        let shown = url.redacted();
        let stream = crate::dial::tcp(&url.host, url.port, from, timeout)
            .and_then(|s| {
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
                Ok(s)
            })
            .map_err(|e| LoginError::Unreachable {
                url: shown.clone(),
                portal: url.portal(),
                source: explain(e, timeout),
            })?;
        let reader = stream
            .try_clone()
            .map(PduReader::new)
            .map_err(|source| LoginError::Lost {
                url: shown.clone(),
                source,
            })?;
        let mut session = Session {
            url: url.clone(),
            lun: url.lun_field(),
            stream,
            reader,
            negotiated: Negotiated::default(),
            seq: Sequence {
                cmd_sn: 1,
                exp_cmd_sn: 1,
                max_cmd_sn: 1,
                exp_stat_sn: 0,
            },
            next_itt: 1,
            timeout,
            broken: None,
            logout_requested: false,
            logged_out: false,
        };
        let identity = Identity {
            initiator_name: initiator_name.to_owned(),
            target_name: url.target.clone(),
            credentials: url.credentials.clone(),
        };
        match session.login_exchange(identity) {
            Ok(n) => {
                session.negotiated = n;
                Ok(session)
            }
            Err(e) => {
                // A failed login has no session to log out of.
                session.logged_out = true;
                let _ = session.stream.shutdown(Shutdown::Both);
                Err(e)
            }
        }
    }

    /// The login's requests and responses, until the full feature phase.
    fn login_exchange(&mut self, identity: Identity) -> Result<Negotiated, LoginError> {
        let isid = new_isid();
        let mut negotiator = Negotiator::new(identity);
        let mut request = negotiator.first();
        loop {
            let (response, keys) = self.login_round(isid, &request)?;
            match negotiator.on_response(response.stage, &keys) {
                Ok(Step::Send(next)) => request = next,
                Ok(Step::Done(n)) => {
                    // Login requests are immediate: the first command takes the same CmdSN.
                    self.seq.cmd_sn = response.exp_cmd_sn;
                    return Ok(n);
                }
                Err(problem) => {
                    let url = self.url.redacted();
                    return Err(LoginError::Negotiation { url, problem });
                }
            }
        }
    }

    /// Sends one request and returns the target's whole answer: while the target sets the C
    /// bit, empty requests (same stage, no transit) ask for the rest of its text.
    fn login_round(
        &mut self,
        isid: [u8; 6],
        request: &Request,
    ) -> Result<(LoginResponse, KeyValues), LoginError> {
        let mut text = Accumulator::default();
        let mut data = super::text::encode(&request.keys);
        let mut stage = request.stage;
        loop {
            let (response, segment) = self.login_pdu(isid, stage, &data)?;
            match text.push(&segment, response.stage.cont) {
                Ok(Some(keys)) => return Ok((response, keys)),
                Ok(None) => {
                    data.clear();
                    stage = LoginStage {
                        current: request.stage.current,
                        next: None,
                        cont: false,
                    };
                }
                Err(e) => return Err(self.login_protocol(e.to_string())),
            }
        }
    }

    /// One Login Request and its Login Response (status Success), whose sequence numbers the
    /// session takes.
    fn login_pdu(
        &mut self,
        isid: [u8; 6],
        stage: LoginStage,
        data: &[u8],
    ) -> Result<(LoginResponse, Vec<u8>), LoginError> {
        if data.len() > MAX_LOGIN_DATA_LEN as usize {
            return Err(self.login_protocol("login text longer than 8192 bytes".into()));
        }
        let itt = self.take_itt();
        let pdu = Pdu::LoginRequest(LoginRequest {
            stage,
            version_max: VERSION,
            version_min: VERSION,
            isid,
            tsih: 0,
            itt,
            cid: 0,
            cmd_sn: self.seq.cmd_sn,
            exp_stat_sn: self.seq.exp_stat_sn,
        });
        self.send(header(pdu), data)
            .map_err(|e| self.login_lost(e))?;
        let f = match self.reader.read(Digests::NONE, MAX_LOGIN_DATA_LEN) {
            Ok(Incoming::Pdu(f)) => f,
            Ok(Incoming::Bad(e, _)) | Err(WireError::Pdu(e)) => {
                return Err(self.login_protocol(e.to_string()));
            }
            Ok(Incoming::Closed) | Err(WireError::Truncated) => {
                let e = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the target closed the connection",
                );
                return Err(self.login_lost(e));
            }
            Err(WireError::Io(e)) => return Err(self.login_lost(e)),
        };
        let Pdu::LoginResponse(r) = f.header.pdu else {
            let op = f.header.opcode();
            return Err(self.login_protocol(format!("{op:?} instead of a Login Response")));
        };
        if r.status_class != 0 {
            return Err(LoginError::Refused {
                url: self.url.redacted(),
                class: r.status_class,
                detail: r.status_detail,
            });
        }
        if r.itt != itt {
            return Err(self.login_protocol(format!("Login Response for task {:#x}", r.itt)));
        }
        if r.version_active != VERSION {
            return Err(self.login_protocol(format!("version {}", r.version_active)));
        }
        // Login responses come in order, and the target's first StatSN is whatever it chose:
        // each is taken as it is.
        self.seq.exp_stat_sn = r.stat_sn.wrapping_add(1);
        self.seq.exp_cmd_sn = r.exp_cmd_sn;
        self.seq.max_cmd_sn = r.max_cmd_sn;
        Ok((r, f.data))
    }

    fn login_lost(&self, e: io::Error) -> LoginError {
        LoginError::Lost {
            url: self.url.redacted(),
            source: explain(e, self.timeout),
        }
    }

    fn login_protocol(&self, reason: String) -> LoginError {
        LoginError::Protocol {
            url: self.url.redacted(),
            reason,
        }
    }

    /// The values the login agreed on.
    pub fn negotiated(&self) -> &Negotiated {
        &self.negotiated
    }

    pub fn url(&self) -> &IscsiUrl {
        &self.url
    }

    /// The sequence numbers now.
    pub fn sequence(&self) -> Sequence {
        self.seq
    }

    /// Why the session is broken, if it is.
    pub fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// The target asked for a logout (the session still works until it drops it).
    pub fn logout_requested(&self) -> bool {
        self.logout_requested
    }

    /// Changes the timeout of every later socket operation (a long EXTENDED COPY may need
    /// more than the login did).
    pub fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        let timeout = timeout.max(Duration::from_millis(1));
        self.stream.set_read_timeout(Some(timeout))?;
        self.stream.set_write_timeout(Some(timeout))?;
        self.timeout = timeout;
        Ok(())
    }

    /// Sends a SCSI command and waits for its status. `data_out` is sent to the target
    /// (write commands); up to `data_in_len` bytes are received (read commands). A command
    /// has one or the other, not both.
    pub fn command(
        &mut self,
        cdb: &[u8],
        data_out: &[u8],
        data_in_len: u32,
    ) -> Result<Reply, CommandError> {
        let mut data = vec![0u8; data_in_len as usize];
        let c = self.command_into(cdb, data_out, &mut data)?;
        data.truncate(c.received);
        Ok(Reply {
            status: c.status,
            sense: c.sense,
            data,
            residual: c.residual,
        })
    }

    /// [`command`](Self::command), receiving into `data_in` (its length is the expected
    /// data transfer length).
    pub fn command_into(
        &mut self,
        cdb: &[u8],
        data_out: &[u8],
        data_in: &mut [u8],
    ) -> Result<Completion, CommandError> {
        if let Some(why) = &self.broken {
            return Err(CommandError::Broken(why.clone()));
        }
        if cdb.is_empty() || cdb.len() > MAX_CDB_LEN {
            return Err(CommandError::Invalid("a CDB has 1 to 260 bytes"));
        }
        if !data_out.is_empty() && !data_in.is_empty() {
            return Err(CommandError::Invalid(
                "bidirectional commands are not supported",
            ));
        }
        if u32::try_from(data_out.len().max(data_in.len())).is_err() {
            return Err(CommandError::Invalid("more than 4 GiB in one command"));
        }
        self.open_window()?;
        let result = self.run(cdb, data_out, data_in);
        self.check(result)
    }

    /// Sends a NOP-Out ping and waits for its answer (which refreshes the command window).
    pub fn ping(&mut self) -> Result<(), CommandError> {
        if let Some(why) = &self.broken {
            return Err(CommandError::Broken(why.clone()));
        }
        let result = self.ping_exchange();
        self.check(result)
    }

    /// Logs out and closes the connection.
    pub fn logout(mut self) -> Result<(), CommandError> {
        if let Some(why) = &self.broken {
            return Err(CommandError::Broken(why.clone()));
        }
        let result = self.logout_exchange();
        self.logged_out = true;
        let _ = self.stream.shutdown(Shutdown::Both);
        result
    }

    /// Breaks the session when `result` is an error that leaves the connection out of step.
    fn check<T>(&mut self, result: Result<T, CommandError>) -> Result<T, CommandError> {
        if let Err(e) = &result {
            if e.breaks_session() {
                self.break_with(e.to_string());
            }
        }
        result
    }

    /// Marks the session broken and shuts its connection down.
    fn break_with(&mut self, why: String) {
        if self.broken.is_none() {
            self.broken = Some(why);
            let _ = self.stream.shutdown(Shutdown::Both);
        }
    }

    fn take_itt(&mut self) -> u32 {
        let itt = self.next_itt;
        self.next_itt = match itt.wrapping_add(1) {
            RESERVED_TAG => 1,
            n => n,
        };
        itt
    }

    /// Sends one PDU without AHS; the header's lengths are set from `data`.
    fn send(&mut self, mut h: Header, data: &[u8]) -> io::Result<()> {
        h.ahs_words = 0;
        h.data_len = data.len() as u32;
        let bhs = h.encode();
        let pad = [0u8; 3];
        let pad_len = padded_len(data.len()) - data.len();
        let mut bufs = [
            IoSlice::new(&bhs),
            IoSlice::new(data),
            IoSlice::new(&pad[..pad_len]),
        ];
        crate::vectored::write_all(&mut self.stream, &mut bufs)
    }

    /// The next PDU from the target.
    fn receive(&mut self) -> Result<Frame, CommandError> {
        let max = self.negotiated.max_recv_data_segment_length;
        match self.reader.read(Digests::NONE, max) {
            Ok(Incoming::Pdu(f)) => Ok(f),
            Ok(Incoming::Bad(e, _)) | Err(WireError::Pdu(e)) => {
                Err(CommandError::Protocol(e.to_string()))
            }
            Ok(Incoming::Closed) => Err(CommandError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the target closed the connection",
            ))),
            Err(WireError::Io(e)) => Err(CommandError::Io(explain(e, self.timeout))),
            Err(WireError::Truncated) => Err(CommandError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection closed inside a PDU",
            ))),
        }
    }

    fn io(&self, e: io::Error) -> CommandError {
        CommandError::Io(explain(e, self.timeout))
    }

    /// Handles the PDUs a target may send at any time: NOP-In pings (answered) and
    /// Asynchronous Messages. Returns false for any other PDU.
    fn background(&mut self, f: &Frame) -> Result<bool, CommandError> {
        match f.header.pdu {
            Pdu::NopIn(n) if n.itt == RESERVED_TAG => {
                // StatSN is not advanced by a NOP-In without a task.
                self.seq.update(n.exp_cmd_sn, n.max_cmd_sn);
                if n.ttt != RESERVED_TAG {
                    let answer = Pdu::NopOut(NopOut {
                        immediate: true,
                        lun: n.lun,
                        itt: RESERVED_TAG,
                        ttt: n.ttt,
                        cmd_sn: self.seq.cmd_sn,
                        exp_stat_sn: self.seq.exp_stat_sn,
                    });
                    self.send(header(answer), &f.data).map_err(|e| self.io(e))?;
                }
                Ok(true)
            }
            Pdu::AsyncMessage(a) => {
                self.seq.status(a.stat_sn);
                self.seq.update(a.exp_cmd_sn, a.max_cmd_sn);
                // Event 1: the target requests a logout. Events 2 and 3 (it will drop the
                // connection) end in an I/O error of their own.
                if a.event == 1 {
                    self.logout_requested = true;
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn unexpected(f: &Frame) -> CommandError {
        CommandError::Protocol(format!("unexpected {:?} PDU", f.header.opcode()))
    }

    /// Waits until the target's window admits CmdSN. The target announces a larger MaxCmdSN
    /// only in a PDU it sends; with no command outstanding, a ping is the way to ask for one.
    fn open_window(&mut self) -> Result<(), CommandError> {
        let deadline = Instant::now() + self.timeout;
        while !self.seq.window_open() {
            let result = self.ping_exchange();
            self.check(result)?;
            if self.seq.window_open() {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(CommandError::WindowClosed(self.timeout));
            }
            std::thread::sleep(WINDOW_POLL.min(deadline - now));
        }
        Ok(())
    }

    fn ping_exchange(&mut self) -> Result<(), CommandError> {
        let itt = self.take_itt();
        let ping = Pdu::NopOut(NopOut {
            immediate: true,
            lun: Lun::ZERO,
            itt,
            ttt: RESERVED_TAG,
            cmd_sn: self.seq.cmd_sn,
            exp_stat_sn: self.seq.exp_stat_sn,
        });
        self.send(header(ping), &[]).map_err(|e| self.io(e))?;
        loop {
            let f = self.receive()?;
            match f.header.pdu {
                Pdu::NopIn(n) if n.itt == itt => {
                    self.seq.status(n.stat_sn);
                    self.seq.update(n.exp_cmd_sn, n.max_cmd_sn);
                    return Ok(());
                }
                _ if self.background(&f)? => {}
                _ => return Err(Self::unexpected(&f)),
            }
        }
    }

    fn logout_exchange(&mut self) -> Result<(), CommandError> {
        let itt = self.take_itt();
        let logout = Pdu::LogoutRequest(LogoutRequest {
            immediate: true,
            reason: LogoutReason::CloseSession,
            itt,
            cid: 0,
            cmd_sn: self.seq.cmd_sn,
            exp_stat_sn: self.seq.exp_stat_sn,
        });
        self.send(header(logout), &[]).map_err(|e| self.io(e))?;
        loop {
            let f = self.receive()?;
            match f.header.pdu {
                Pdu::LogoutResponse(r) if r.itt == itt => {
                    self.seq.status(r.stat_sn);
                    return match r.response {
                        0 => Ok(()),
                        code => Err(CommandError::TargetFailure(code)),
                    };
                }
                _ if self.background(&f)? => {}
                _ => return Err(Self::unexpected(&f)),
            }
        }
    }

    /// One command: the SCSI Command PDU, unsolicited data, then whatever the target sends
    /// until the status.
    fn run(
        &mut self,
        cdb: &[u8],
        data_out: &[u8],
        data_in: &mut [u8],
    ) -> Result<Completion, CommandError> {
        let itt = self.take_itt();
        self.send_command(itt, cdb, data_out, data_in.len())?;
        let mut incoming = DataInProgress::default();
        loop {
            let f = self.receive()?;
            match f.header.pdu {
                Pdu::DataIn(d) if d.itt == itt => {
                    self.seq.update(d.exp_cmd_sn, d.max_cmd_sn);
                    incoming.take(&d, &f.data, data_in)?;
                    if let Some(s) = d.status {
                        self.seq.status(s.stat_sn);
                        return Ok(Completion {
                            status: s.status,
                            sense: Vec::new(),
                            residual: s.residual,
                            received: incoming.received,
                        });
                    }
                }
                Pdu::R2t(r) if r.itt == itt => {
                    self.seq.update(r.exp_cmd_sn, r.max_cmd_sn);
                    let start = r.buffer_offset as usize;
                    let end = start.saturating_add(r.desired_len as usize);
                    if r.desired_len == 0 || end > data_out.len() {
                        return Err(CommandError::Protocol(format!(
                            "R2T for {} bytes at offset {start} of {} to send",
                            r.desired_len,
                            data_out.len()
                        )));
                    }
                    self.data_out(itt, r.ttt, data_out, start..end)?;
                }
                Pdu::ScsiResponse(r) if r.itt == itt => {
                    self.seq.status(r.stat_sn);
                    self.seq.update(r.exp_cmd_sn, r.max_cmd_sn);
                    if r.response != super::pdu::RESPONSE_COMPLETED {
                        return Err(CommandError::TargetFailure(r.response));
                    }
                    return Ok(Completion {
                        status: r.status,
                        sense: sense_of(&f.data),
                        residual: r.residual,
                        received: incoming.received,
                    });
                }
                Pdu::Reject(r) => {
                    // ExpStatSN does not take a Reject's StatSN (as in Linux): acknowledging a
                    // status too early is worse than once too late.
                    self.seq.update(r.exp_cmd_sn, r.max_cmd_sn);
                    return Err(rejected(itt, r.reason, &f.data));
                }
                _ if self.background(&f)? => {}
                _ => return Err(Self::unexpected(&f)),
            }
        }
    }

    /// The SCSI Command PDU (an extended CDB AHS for a CDB over 16 bytes, immediate data),
    /// then the unsolicited Data-Out PDUs; takes a CmdSN.
    fn send_command(
        &mut self,
        itt: u32,
        cdb: &[u8],
        data_out: &[u8],
        data_in_len: usize,
    ) -> Result<(), CommandError> {
        let cmd_sn = self.seq.cmd_sn;
        self.seq.cmd_sn = cmd_sn.wrapping_add(1);
        let (immediate, unsolicited_end) = unsolicited(data_out.len(), &self.negotiated);
        let mut bhs_cdb = [0u8; BHS_CDB_LEN];
        let head = cdb.len().min(BHS_CDB_LEN);
        bhs_cdb[..head].copy_from_slice(&cdb[..head]);
        let command = header(Pdu::ScsiCommand(ScsiCommand {
            immediate: false,
            final_: unsolicited_end == immediate,
            read: data_in_len > 0,
            write: !data_out.is_empty(),
            attr: TaskAttr::Simple,
            lun: self.lun,
            itt,
            expected_len: data_out.len().max(data_in_len) as u32,
            cmd_sn,
            exp_stat_sn: self.seq.exp_stat_sn,
            cdb: bhs_cdb,
        }));
        if cdb.len() > BHS_CDB_LEN {
            let mut f = Frame::new(command, data_out[..immediate].to_vec());
            f.ahs.push(Ahs::ExtendedCdb(cdb[BHS_CDB_LEN..].to_vec()));
            f.fix_lengths();
            let bytes = f
                .encode(Digests::NONE)
                .map_err(|e| CommandError::Protocol(e.to_string()))?;
            self.stream.write_all(&bytes).map_err(|e| self.io(e))?;
        } else {
            self.send(command, &data_out[..immediate])
                .map_err(|e| self.io(e))?;
        }
        self.data_out(itt, RESERVED_TAG, data_out, immediate..unsolicited_end)
    }

    /// Sends `range` of `data` in Data-Out PDUs of at most the target's
    /// MaxRecvDataSegmentLength: one sequence (DataSN from 0, F on the last) answering the
    /// R2T with `ttt`, or the unsolicited one ([`RESERVED_TAG`]).
    fn data_out(
        &mut self,
        itt: u32,
        ttt: u32,
        data: &[u8],
        range: std::ops::Range<usize>,
    ) -> Result<(), CommandError> {
        let max = self.negotiated.max_xmit_data_segment_length.max(1) as usize;
        let mut offset = range.start;
        let mut data_sn = 0u32;
        while offset < range.end {
            let len = (range.end - offset).min(max);
            let pdu = Pdu::DataOut(DataOut {
                final_: offset + len == range.end,
                lun: self.lun,
                itt,
                ttt,
                exp_stat_sn: self.seq.exp_stat_sn,
                data_sn,
                buffer_offset: offset as u32,
            });
            self.send(header(pdu), &data[offset..offset + len])
                .map_err(|e| self.io(e))?;
            offset += len;
            data_sn += 1;
        }
        Ok(())
    }
}

/// The Data-In PDUs of one command so far.
#[derive(Debug, Default)]
struct DataInProgress {
    /// DataSN of the next Data-In.
    data_sn: u32,
    /// The end of the furthest Data-In.
    received: usize,
}

impl DataInProgress {
    /// Places one Data-In's data at its offset in `buf`: in DataSN order (error recovery
    /// level 0 has no SNACK to fill a gap) and within the expected length.
    fn take(&mut self, d: &DataIn, data: &[u8], buf: &mut [u8]) -> Result<(), CommandError> {
        if d.data_sn != self.data_sn {
            return Err(CommandError::Protocol(format!(
                "Data-In DataSN {} where {} was due",
                d.data_sn, self.data_sn
            )));
        }
        self.data_sn = self.data_sn.wrapping_add(1);
        let start = d.buffer_offset as usize;
        let Some(dst) = buf.get_mut(start..start + data.len()) else {
            return Err(CommandError::Protocol(format!(
                "Data-In of {} bytes at offset {start} beyond the {} expected",
                data.len(),
                buf.len()
            )));
        };
        dst.copy_from_slice(data);
        self.received = self.received.max(start + data.len());
        Ok(())
    }
}

/// What a Reject during command `itt` means: its data segment is the rejected PDU's BHS, and
/// only a rejected SCSI Command of this task ends cleanly (it never ran).
fn rejected(itt: u32, reason: RejectReason, bhs: &[u8]) -> CommandError {
    let command = bhs.first().map(|b| b & 0x3f) == Some(Opcode::ScsiCommand.code())
        && bhs.get(16..20) == Some(&itt.to_be_bytes()[..]);
    if command {
        CommandError::Rejected(reason)
    } else {
        CommandError::Protocol(format!(
            "the target rejected a PDU of the command: {reason:?}"
        ))
    }
}

/// The sense data in a SCSI Response's data segment: SenseLength (2 bytes), then the sense.
fn sense_of(data: &[u8]) -> Vec<u8> {
    let Some(len) = data
        .first_chunk::<2>()
        .map(|b| usize::from(u16::from_be_bytes(*b)))
    else {
        return Vec::new();
    };
    data[2..].get(..len).unwrap_or(&data[2..]).to_vec()
}

impl Drop for Session {
    /// Logs out, best effort and briefly, unless the session is broken or already out.
    fn drop(&mut self) {
        if self.broken.is_some() || self.logged_out {
            return;
        }
        if self.set_timeout(self.timeout.min(LOGOUT_TIMEOUT)).is_ok() {
            let _ = self.logout_exchange();
        }
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

#[cfg(test)]
#[path = "initiator_tests.rs"]
mod tests;
