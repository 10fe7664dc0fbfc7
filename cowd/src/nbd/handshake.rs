//! The fixed newstyle handshake: option haggling up to the transmission phase.
//!
//! ```text
//!  S: NBDMAGIC IHAVEOPT flags      C: client flags
//!  loop:  C: IHAVEOPT option length data   S: option replies
//!         EXPORT_NAME / GO (success) -> transmission      ABORT -> close
//! ```
//!
//! Every option payload is consumed (oversized ones are drained and answered TOO_BIG), every
//! malformed one is answered INVALID, unknown ones UNSUP; only a broken stream or the options
//! that cannot carry an error (EXPORT_NAME) close the connection. The caller bounds the whole
//! handshake with a timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::debug;

use super::options::{ClientOption, InfoRequest, MetaRequest, parse_option};
use super::proto::*;
use super::request::Negotiated;
use crate::device::MAX_PAYLOAD;
use crate::export::{Export, Exports};

/// The result of a handshake that reached the transmission phase.
#[derive(Debug)]
pub struct Agreed {
    pub export: Arc<Export>,
    pub negotiated: Negotiated,
}

/// How a handshake ended without error.
#[derive(Debug)]
pub enum Outcome {
    Transmission(Agreed),
    Closed(&'static str),
}

/// The transmission flags of `export` for a client that did (or not) negotiate structured
/// replies.
pub fn transmission_flags(export: &Export, structured: bool) -> u16 {
    let caps = export.device().capabilities();
    let mut f = TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH | TFLAG_SEND_FUA | TFLAG_SEND_CACHE;
    if caps.read_only {
        f |= TFLAG_READ_ONLY;
    } else {
        f |= TFLAG_SEND_WRITE_ZEROES;
        if caps.trim {
            f |= TFLAG_SEND_TRIM;
        }
        if caps.fast_zero {
            f |= TFLAG_SEND_FAST_ZERO;
        }
    }
    if caps.multi_conn {
        f |= TFLAG_CAN_MULTI_CONN;
    }
    if caps.rotational {
        f |= TFLAG_ROTATIONAL;
    }
    if structured {
        f |= TFLAG_SEND_DF;
    }
    f
}

struct Haggle<'a, S> {
    io: &'a mut S,
    exports: &'a Exports,
    stopping: &'a AtomicBool,
    structured: bool,
    /// Export the meta context selection was made for, and whether base:allocation is in it.
    meta: Option<(Arc<Export>, bool)>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Haggle<'_, S> {
    async fn reply(&mut self, option: u32, kind: u32, data: &[u8]) -> std::io::Result<()> {
        self.io
            .write_all(&super::reply::option_reply(option, kind, data))
            .await
    }

    async fn error(&mut self, option: u32, kind: u32, msg: &str) -> std::io::Result<()> {
        debug!(option, kind, msg, "option refused");
        self.reply(option, kind, msg.as_bytes()).await
    }

    async fn discard(&mut self, mut n: u64) -> std::io::Result<()> {
        let mut sink = [0u8; 8192];
        while n > 0 {
            let k = n.min(sink.len() as u64) as usize;
            self.io.read_exact(&mut sink[..k]).await?;
            n -= k as u64;
        }
        Ok(())
    }

    async fn list(&mut self) -> std::io::Result<()> {
        for e in self.exports.all() {
            let mut d = (e.name().len() as u32).to_be_bytes().to_vec();
            d.extend_from_slice(e.name().as_bytes());
            d.extend_from_slice(e.description().as_bytes());
            self.reply(OPT_LIST, REP_SERVER, &d).await?;
        }
        self.reply(OPT_LIST, REP_ACK, &[]).await
    }

    /// Answers INFO or GO; returns the export when it was a successful GO.
    async fn info(&mut self, option: u32, r: InfoRequest) -> std::io::Result<Option<Arc<Export>>> {
        let Some(export) = self.exports.get(&r.name) else {
            let msg = format!("no export named {:?}", r.name);
            self.error(option, REP_ERR_UNKNOWN, &msg).await?;
            return Ok(None);
        };
        if option == OPT_GO && self.stopping.load(Ordering::Acquire) {
            self.error(option, REP_ERR_SHUTDOWN, "server is shutting down")
                .await?;
            return Ok(None);
        }
        let mut d = INFO_EXPORT.to_be_bytes().to_vec();
        d.extend_from_slice(&export.size().to_be_bytes());
        d.extend_from_slice(&transmission_flags(&export, self.structured).to_be_bytes());
        self.reply(option, REP_INFO, &d).await?;
        let mut sent = Vec::new();
        for info in r.infos.iter().copied().chain([INFO_BLOCK_SIZE]) {
            if sent.contains(&info) {
                continue;
            }
            sent.push(info);
            let mut d = info.to_be_bytes().to_vec();
            match info {
                INFO_NAME => d.extend_from_slice(export.name().as_bytes()),
                INFO_DESCRIPTION => d.extend_from_slice(export.description().as_bytes()),
                INFO_BLOCK_SIZE => {
                    let bs = export.device().block_sizes();
                    for v in [bs.minimum, bs.preferred, bs.maximum] {
                        d.extend_from_slice(&v.to_be_bytes());
                    }
                }
                _ => continue,
            }
            self.reply(option, REP_INFO, &d).await?;
        }
        self.reply(option, REP_ACK, &[]).await?;
        Ok((option == OPT_GO).then_some(export))
    }

    /// Answers LIST_META_CONTEXT or SET_META_CONTEXT.
    async fn meta(&mut self, option: u32, m: MetaRequest) -> std::io::Result<()> {
        if !self.structured {
            let msg = "metadata contexts need structured replies first";
            return self.error(option, REP_ERR_INVALID, msg).await;
        }
        let set = option == OPT_SET_META_CONTEXT;
        if set {
            // SET replaces the selection even when it fails.
            self.meta = None;
        }
        let Some(export) = self.exports.get(&m.export) else {
            let msg = format!("no export named {:?}", m.export);
            return self.error(option, REP_ERR_UNKNOWN, &msg).await;
        };
        let matches = |q: &str| q == CONTEXT_BASE_ALLOCATION || (!set && q == "base:");
        let selected = if m.queries.is_empty() {
            !set
        } else {
            m.queries.iter().any(|q| matches(q))
        };
        if selected {
            let id = if set { CONTEXT_ID_BASE_ALLOCATION } else { 0 };
            let mut d = id.to_be_bytes().to_vec();
            d.extend_from_slice(CONTEXT_BASE_ALLOCATION.as_bytes());
            self.reply(option, REP_META_CONTEXT, &d).await?;
        }
        if set {
            self.meta = Some((export, selected));
        }
        self.reply(option, REP_ACK, &[]).await
    }

    fn agreed(&self, export: Arc<Export>) -> Agreed {
        let base_allocation = matches!(&self.meta, Some((e, true)) if Arc::ptr_eq(e, &export));
        let negotiated = Negotiated {
            tflags: transmission_flags(&export, self.structured),
            structured: self.structured,
            base_allocation,
            max_payload: export.device().block_sizes().maximum.min(MAX_PAYLOAD),
        };
        Agreed { export, negotiated }
    }
}

/// Runs the server side of the handshake on `io`.
pub async fn negotiate<S>(
    io: &mut S,
    exports: &Exports,
    stopping: &AtomicBool,
) -> std::io::Result<Outcome>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut hello = NBDMAGIC.to_be_bytes().to_vec();
    hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
    hello.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    io.write_all(&hello).await?;
    let client_flags = io.read_u32().await?;
    if client_flags & !(CFLAG_FIXED_NEWSTYLE | CFLAG_NO_ZEROES) != 0 {
        return Ok(Outcome::Closed("unknown client flags"));
    }
    let no_zeroes = client_flags & CFLAG_NO_ZEROES != 0;
    let mut h = Haggle {
        io,
        exports,
        stopping,
        structured: false,
        meta: None,
    };
    loop {
        let mut hdr = [0u8; 16];
        h.io.read_exact(&mut hdr).await?;
        if u64::from_be_bytes(hdr[..8].try_into().unwrap()) != IHAVEOPT {
            return Ok(Outcome::Closed("bad option magic"));
        }
        let option = u32::from_be_bytes(hdr[8..12].try_into().unwrap());
        let len = u32::from_be_bytes(hdr[12..16].try_into().unwrap());
        if len > MAX_OPTION_LEN {
            if option == OPT_EXPORT_NAME {
                return Ok(Outcome::Closed("oversized export name"));
            }
            if option == OPT_SET_META_CONTEXT {
                // A failed SET_META_CONTEXT leaves no context chosen, whatever it failed on.
                h.meta = None;
            }
            h.discard(u64::from(len)).await?;
            h.error(option, REP_ERR_TOO_BIG, "option data too large")
                .await?;
            continue;
        }
        let mut data = vec![0u8; len as usize];
        h.io.read_exact(&mut data).await?;
        let parsed = match parse_option(option, &data) {
            Ok(o) => o,
            Err(_) if option == OPT_EXPORT_NAME => return Ok(Outcome::Closed("bad export name")),
            Err(e) => {
                if option == OPT_SET_META_CONTEXT {
                    h.meta = None;
                }
                h.error(option, REP_ERR_INVALID, &e.to_string()).await?;
                continue;
            }
        };
        match parsed {
            ClientOption::ExportName(name) => {
                let Some(export) = h.exports.get(&name) else {
                    return Ok(Outcome::Closed("unknown export name"));
                };
                if h.stopping.load(Ordering::Acquire) {
                    return Ok(Outcome::Closed("shutting down"));
                }
                let agreed = h.agreed(export);
                let mut d = agreed.export.size().to_be_bytes().to_vec();
                d.extend_from_slice(&agreed.negotiated.tflags.to_be_bytes());
                if !no_zeroes {
                    d.extend_from_slice(&[0u8; 124]);
                }
                h.io.write_all(&d).await?;
                return Ok(Outcome::Transmission(agreed));
            }
            ClientOption::Abort => {
                // The client may already be gone; the reply is a courtesy.
                let _ = h.reply(option, REP_ACK, &[]).await;
                return Ok(Outcome::Closed("client aborted"));
            }
            ClientOption::List => h.list().await?,
            ClientOption::StartTls => {
                h.error(option, REP_ERR_UNSUP, "TLS is not supported")
                    .await?
            }
            ClientOption::ExtendedHeaders => {
                h.error(option, REP_ERR_UNSUP, "extended headers are not supported")
                    .await?
            }
            ClientOption::StructuredReply => {
                h.structured = true;
                h.reply(option, REP_ACK, &[]).await?;
            }
            ClientOption::Info(r) => {
                h.info(option, r).await?;
            }
            ClientOption::Go(r) => {
                if let Some(export) = h.info(option, r).await? {
                    return Ok(Outcome::Transmission(h.agreed(export)));
                }
            }
            ClientOption::ListMetaContext(m) | ClientOption::SetMetaContext(m) => {
                h.meta(option, m).await?
            }
            ClientOption::Unknown(_) => h.error(option, REP_ERR_UNSUP, "unknown option").await?,
        }
    }
}
