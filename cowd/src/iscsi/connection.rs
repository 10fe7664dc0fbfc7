//! One iSCSI connection, on a thread of its own: the login over the socket, then the full
//! feature phase (`full_feature`).
//!
//! ```text
//!  accept ─> login: Login Request ─> Login::step ─> Login Response ... (bounded by a timeout)
//!              │ failure: a Login Response with the status, then close
//!              v
//!            full feature phase: discovery (Text, Logout) or normal (a target's logical unit)
//! ```
//!
//! Sessions have one connection each (MaxConnections=1) and error recovery level 0: any
//! protocol error ends the connection, and with it the session.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info};

use super::chap::Challenge;
use super::config::{AuthPolicy, TargetConfig};
use super::digest::Digests;
use super::frame::Frame;
use super::full_feature::{self, Session};
use super::login::{self, Login, MAX_LOGIN_DATA_LEN, Sequence};
use super::negotiate::{Negotiation, SessionParams, SessionType};
use super::pdu::Pdu;
use super::window::Window;
use super::wire::{Incoming, PduReader, encode_all};
use crate::scsi::Disk;

/// Looks up the logical unit of a target by its iSCSI name.
pub trait TargetTable: Send + Sync {
    /// The targets to offer on a new connection (names, aliases, addresses).
    fn config(&self) -> TargetConfig;
    /// The logical unit of `target` and whatever keeps it in use while the session lasts.
    fn open(&self, target: &str) -> Option<(Arc<Disk>, Box<dyn Send>)>;
}

/// Settings of every connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionConfig {
    /// The whole login must be over within this time.
    pub login_timeout: Duration,
    /// Commands of one session running at once (the CmdSN window).
    pub queue_depth: u32,
    /// Threads per connection that run commands.
    pub io_threads: usize,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            login_timeout: Duration::from_secs(10),
            queue_depth: 128,
            io_threads: 32,
        }
    }
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("login failed: {0}")]
    Login(String),
    #[error("{0}")]
    Protocol(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Serves one connection until it ends: login, then the full feature phase.
pub fn serve(
    stream: TcpStream,
    targets: &dyn TargetTable,
    cfg: ConnectionConfig,
    tsih: u16,
) -> Result<(), ConnectionError> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(cfg.login_timeout))?;
    let mut reader = PduReader::new(stream.try_clone()?);
    let mut out = stream.try_clone()?;
    let Some(done) = login(&mut reader, &mut out, targets, cfg, tsih)? else {
        return Ok(());
    };
    stream.set_read_timeout(None)?;
    let (disk, guard) = match done.params.session_type {
        SessionType::Discovery => (None, None),
        SessionType::Normal => {
            let name = done.params.target_name.clone().unwrap_or_default();
            // Checked by the negotiation; gone only if the export went away meanwhile.
            let Some((disk, guard)) = targets.open(&name) else {
                return Err(ConnectionError::Protocol(format!(
                    "target {name} went away during the login"
                )));
            };
            (Some(disk), Some(guard))
        }
    };
    info!(
        initiator = done.params.initiator_name.as_deref().unwrap_or("?"),
        target = done.params.target_name.as_deref().unwrap_or("(discovery)"),
        tsih,
        header_digest = done.params.digests.header,
        data_digest = done.params.digests.data,
        "iSCSI session in full feature phase"
    );
    let nexus = Arc::new(crate::scsi::Nexus {
        initiator: done.params.initiator_name.clone().unwrap_or_default(),
        target_port: stream.local_addr().ok(),
    });
    let session = Session {
        nexus,
        params: done.params,
        negotiation: done.negotiation,
        disk,
        stat_sn: done.stat_sn,
        window: done.window,
        io_threads: cfg.io_threads,
        hold: guard,
    };
    full_feature::run(session, reader, stream)
}

/// What a successful login leaves for the full feature phase.
struct LoggedIn {
    params: SessionParams,
    negotiation: Negotiation,
    /// The StatSN of the next status.
    stat_sn: u32,
    window: Window,
}

/// Runs the login; `None` when it failed or the initiator went away (already answered).
fn login(
    reader: &mut PduReader<TcpStream>,
    out: &mut TcpStream,
    targets: &dyn TargetTable,
    cfg: ConnectionConfig,
    tsih: u16,
) -> Result<Option<LoggedIn>, ConnectionError> {
    let mut negotiation = Negotiation::new(targets.config());
    let config = negotiation.config();
    if [&config.auth, &config.discovery_auth]
        .iter()
        .any(|a| matches!(a, AuthPolicy::Chap(_)))
    {
        negotiation = negotiation.with_chap_challenge(challenge()?);
    }
    let mut login = Login::new(negotiation, tsih);
    let mut window: Option<Window> = None;
    let mut stat_sn = 0u32;
    loop {
        let frame = match reader.read(Digests::NONE, MAX_LOGIN_DATA_LEN) {
            Ok(Incoming::Pdu(f)) => f,
            Ok(Incoming::Closed) => return Ok(None),
            Ok(Incoming::Bad(e, _)) => {
                return Err(ConnectionError::Login(format!("bad PDU: {e}")));
            }
            Err(e) => return Err(ConnectionError::Login(e.to_string())),
        };
        let Pdu::LoginRequest(req) = frame.header.pdu else {
            return Err(ConnectionError::Login(format!(
                "{:?} before the login was complete",
                frame.header.opcode()
            )));
        };
        // The first request fixes the initial CmdSN and StatSN.
        let w = *window.get_or_insert_with(|| {
            stat_sn = req.exp_stat_sn;
            Window::new(req.cmd_sn, cfg.queue_depth)
        });
        let seq = Sequence {
            stat_sn,
            exp_cmd_sn: w.exp_cmd_sn(),
            max_cmd_sn: w.max_cmd_sn(),
        };
        stat_sn = stat_sn.wrapping_add(1);
        match login.step(&req, &frame.data) {
            Ok(reply) => {
                let header = login::response(&req, &reply, seq);
                send(out, Frame::new(header, reply.data))?;
                if login.is_complete() {
                    let params = login.params();
                    return Ok(Some(LoggedIn {
                        params,
                        negotiation: login.into_negotiation(),
                        stat_sn,
                        window: w,
                    }));
                }
            }
            Err(e) => {
                debug!(error = %e, "iSCSI login refused");
                let header = login::failure(&req, e.status(), seq);
                // The initiator may be gone already; the answer is a courtesy.
                let _ = send(out, Frame::new(header, Vec::new()));
                return Err(ConnectionError::Login(e.to_string()));
            }
        }
    }
}

/// A CHAP challenge from the kernel's random source: an identifier and 16 bytes (RFC 7143
/// §12.1.3: challenges must be unpredictable).
fn challenge() -> Result<Challenge, ConnectionError> {
    let mut b = [0u8; 17];
    let mut got = 0;
    while got < b.len() {
        // SAFETY: getrandom(2) writes at most the given length into the buffer.
        let n = unsafe { libc::getrandom(b[got..].as_mut_ptr().cast(), b.len() - got, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e.into());
            }
            continue;
        }
        got += n as usize;
    }
    Ok(Challenge {
        id: b[0],
        bytes: b[1..].to_vec(),
    })
}

fn send(out: &mut TcpStream, frame: Frame) -> Result<(), ConnectionError> {
    let bytes = encode_all(&[frame], Digests::NONE)
        .map_err(|e| ConnectionError::Protocol(e.to_string()))?;
    out.write_all(&bytes)?;
    Ok(())
}
