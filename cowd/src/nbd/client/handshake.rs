//! The client's side of the fixed newstyle handshake, up to the transmission phase.
//!
//! ```text
//!  S: NBDMAGIC IHAVEOPT flags              C: FIXED_NEWSTYLE | NO_ZEROES (if offered)
//!  C: GO(export, [BLOCK_SIZE])             S: INFO(EXPORT) INFO(BLOCK_SIZE) … ACK
//!                                          S: ERR_UNKNOWN / ERR_POLICY / … -> refused
//! ```
//!
//! Structured replies, metadata contexts and extended headers are never asked for: the
//! transmission phase speaks simple replies only. A server without GO (every maintained one
//! has it) is refused rather than reached through `EXPORT_NAME`, which cannot say why it
//! fails. A failure is classified for the caller: the stream broke or went silent (the path
//! is down), the server refused the export, or the peer broke the protocol.

use std::io::{self, IoSlice, Read, Write};
use std::time::Duration;

use super::{ConnectError, be16, be32, be64, explain};
use crate::device::{BlockSizes, MAX_PAYLOAD};
use crate::nbd::proto::*;
use crate::nbd::stream::Stream;
use crate::nbd::uri::NbdUri;

const REP_ERR_PLATFORM: u32 = (1 << 31) + 4;
const REP_ERR_TLS_REQD: u32 = (1 << 31) + 5;
const REP_ERR_BLOCK_SIZE_REQD: u32 = (1 << 31) + 8;
/// The largest option reply accepted during the handshake.
const MAX_OPTION_REPLY: u32 = 64 << 10;

/// How a handshake failed, before the URI is attached.
enum Fail {
    Io(io::Error),
    Refused(String),
    Protocol(String),
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Fail {
        Fail::Io(e)
    }
}

/// What GO agreed on.
pub(super) struct Agreed {
    pub size: u64,
    /// Transmission flags; 0 when the server did not set `HAS_FLAGS`.
    pub flags: u16,
    pub sizes: BlockSizes,
}

/// Runs the handshake on `s` for `uri`'s export; errors name the URI.
pub(super) fn negotiate(
    s: &mut Stream,
    uri: &NbdUri,
    timeout: Duration,
) -> Result<Agreed, ConnectError> {
    handshake(s, &uri.export).map_err(|f| match f {
        Fail::Io(e) => ConnectError::Lost {
            uri: uri.to_string(),
            source: explain(e, timeout),
        },
        Fail::Refused(reason) => ConnectError::Refused {
            uri: uri.to_string(),
            export: uri.export.clone(),
            reason,
        },
        Fail::Protocol(reason) => ConnectError::Protocol {
            uri: uri.to_string(),
            reason,
        },
    })
}

/// Fixed newstyle handshake up to the transmission phase, asking for `export` with GO.
fn handshake(s: &mut Stream, export: &str) -> Result<Agreed, Fail> {
    let mut g = [0u8; 18];
    s.read_exact(&mut g)?;
    if be64(&g, 0) != NBDMAGIC {
        return Err(Fail::Protocol(
            "the peer is not an NBD server (no NBDMAGIC)".into(),
        ));
    }
    let flags = be16(&g, 16);
    if be64(&g, 8) != IHAVEOPT || flags & FLAG_FIXED_NEWSTYLE == 0 {
        return Err(Fail::Protocol(
            "the server does not speak fixed newstyle NBD (oldstyle servers are not supported)"
                .into(),
        ));
    }
    let no_zeroes = flags & FLAG_NO_ZEROES != 0;
    let client = CFLAG_FIXED_NEWSTYLE | if no_zeroes { CFLAG_NO_ZEROES } else { 0 };
    s.write_all(&client.to_be_bytes())?;
    let mut go = (export.len() as u32).to_be_bytes().to_vec();
    go.extend_from_slice(export.as_bytes());
    go.extend_from_slice(&1u16.to_be_bytes());
    go.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    send_option(s, OPT_GO, &go)?;
    let (mut size_flags, mut sizes) = (None, None);
    loop {
        let (reply, data) = read_option_reply(s, OPT_GO)?;
        match reply {
            REP_INFO if data.len() >= 2 => match (be16(&data, 0), data.len()) {
                (INFO_EXPORT, 12) => size_flags = Some((be64(&data, 2), be16(&data, 10))),
                (INFO_BLOCK_SIZE, 14) => {
                    let v = |at| be32(&data, at);
                    sizes = Some(BlockSizes {
                        minimum: v(2),
                        preferred: v(6),
                        maximum: v(10),
                    });
                }
                (INFO_EXPORT | INFO_BLOCK_SIZE, n) => {
                    return Err(Fail::Protocol(format!("NBD_REP_INFO of {n} bytes")));
                }
                _ => {} // names, descriptions: not needed
            },
            REP_ACK => break,
            r if r & (1 << 31) != 0 => return Err(refusal(r, &data)),
            r => {
                return Err(Fail::Protocol(format!(
                    "unexpected reply {r:#x} to NBD_OPT_GO"
                )));
            }
        }
    }
    let (size, flags) = size_flags
        .ok_or_else(|| Fail::Protocol("the server accepted GO without NBD_INFO_EXPORT".into()))?;
    let flags = if flags & TFLAG_HAS_FLAGS != 0 {
        flags
    } else {
        0
    };
    let sizes = agreed_sizes(sizes).map_err(Fail::Protocol)?;
    Ok(Agreed { size, flags, sizes })
}

/// Block sizes as this client will use them: the server's, with the maximum payload capped
/// at cowd's (and kept a multiple of the minimum); cowd's defaults when the server sent none.
pub(super) fn agreed_sizes(server: Option<BlockSizes>) -> Result<BlockSizes, String> {
    let Some(s) = server else {
        return Ok(BlockSizes::default());
    };
    if !s.minimum.is_power_of_two() || s.minimum > 64 << 10 || s.maximum < s.minimum {
        return Err(format!(
            "block sizes {}/{}/{} (minimum/preferred/maximum) break the protocol's rules",
            s.minimum, s.preferred, s.maximum
        ));
    }
    let maximum = s.maximum.min(MAX_PAYLOAD) / s.minimum * s.minimum;
    Ok(BlockSizes {
        minimum: s.minimum,
        preferred: s.preferred.clamp(s.minimum, maximum),
        maximum,
    })
}

fn refusal(reply: u32, message: &[u8]) -> Fail {
    let what = match reply {
        REP_ERR_UNKNOWN => "unknown export",
        REP_ERR_UNSUP => "the server does not know NBD_OPT_GO (too old for this client)",
        REP_ERR_POLICY => "forbidden by the server's policy",
        REP_ERR_TLS_REQD => "the server requires TLS, which cowd's NBD client does not support",
        REP_ERR_INVALID => "the server found the request invalid",
        REP_ERR_PLATFORM => "not supported on the server's platform",
        REP_ERR_TOO_BIG => "the request was too big for the server",
        REP_ERR_BLOCK_SIZE_REQD => "the server requires block size negotiation",
        REP_ERR_SHUTDOWN => {
            let msg = "the server is shutting down";
            return Fail::Io(io::Error::new(io::ErrorKind::ConnectionAborted, msg));
        }
        _ => "unknown error reply",
    };
    let said = String::from_utf8_lossy(message);
    Fail::Refused(match said.is_empty() {
        true => format!("{what} ({reply:#x})"),
        false => format!("{what} (server said: {said})"),
    })
}

fn send_option(s: &mut Stream, option: u32, data: &[u8]) -> io::Result<()> {
    let mut h = [0u8; 16];
    h[0..8].copy_from_slice(&IHAVEOPT.to_be_bytes());
    h[8..12].copy_from_slice(&option.to_be_bytes());
    h[12..16].copy_from_slice(&(data.len() as u32).to_be_bytes());
    s.write_all_vectored(&mut [IoSlice::new(&h), IoSlice::new(data)])
}

/// One option reply to `option`: its type and data.
fn read_option_reply(s: &mut Stream, option: u32) -> Result<(u32, Vec<u8>), Fail> {
    let mut h = [0u8; 20];
    s.read_exact(&mut h)?;
    let (magic, answered, len) = (be64(&h, 0), be32(&h, 8), be32(&h, 16));
    if magic != REPLY_MAGIC || answered != option || len > MAX_OPTION_REPLY {
        return Err(Fail::Protocol(format!(
            "bad option reply (magic {magic:#x}, option {answered}, {len} bytes) to option {option}"
        )));
    }
    let mut data = vec![0u8; len as usize];
    s.read_exact(&mut data)?;
    Ok((be32(&h, 12), data))
}
