//! NBD URIs as libnbd and QEMU write them (pure; the client's address book).
//!
//! ```text
//!  nbd://HOST[:PORT][/EXPORT]            TCP; PORT defaults to 10809; HOST may be [IPv6]
//!  nbd+unix:///[EXPORT]?socket=PATH      Unix socket; the authority stays empty
//!  └scheme┘ └authority┘└─path──┘ └query┘
//! ```
//!
//! The export name is the path without its leading `/`, percent-decoded (`nbd://h/` and
//! `nbd://h` both name the default export `""`); `socket=` is percent-decoded to bytes, so any
//! path can be written. Whatever cowd cannot honour is refused with a reason rather than
//! ignored: TLS (`nbds://`, `tls-*=`), other transports (`nbd+vsock://`), user names,
//! fragments, unknown query parameters. [`Display`](fmt::Display) writes the URI back so that
//! parsing it gives the same [`NbdUri`] (a property test checks this).

use std::ffi::OsString;
use std::fmt;
use std::net::Ipv6Addr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::str::FromStr;

use super::proto::MAX_STRING_LEN;

/// The IANA port of NBD.
pub const DEFAULT_PORT: u16 = 10809;

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// A host name, IPv4 address or IPv6 address (without brackets), and a port.
    Tcp { host: String, port: u16 },
    /// The path of a Unix socket.
    Unix(PathBuf),
}

/// A parsed `nbd://` or `nbd+unix://` URI.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NbdUri {
    pub address: Address,
    /// The export to ask for; `""` is the server's default export.
    pub export: String,
}

/// Why a string is not an NBD URI cowd can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{uri}: {reason}")]
pub struct UriError {
    pub uri: String,
    pub reason: String,
}

impl NbdUri {
    /// `nbd://HOST:PORT/EXPORT`.
    pub fn tcp(host: &str, port: u16, export: &str) -> NbdUri {
        NbdUri {
            address: Address::Tcp {
                host: host.to_owned(),
                port,
            },
            export: export.to_owned(),
        }
    }

    /// `nbd+unix:///EXPORT?socket=SOCKET`.
    pub fn unix(socket: impl Into<PathBuf>, export: &str) -> NbdUri {
        NbdUri {
            address: Address::Unix(socket.into()),
            export: export.to_owned(),
        }
    }
}

impl FromStr for NbdUri {
    type Err = UriError;

    fn from_str(s: &str) -> Result<NbdUri, UriError> {
        parse(s).map_err(|reason| UriError {
            uri: s.to_owned(),
            reason,
        })
    }
}

fn parse(s: &str) -> Result<NbdUri, String> {
    let (scheme, rest) = s
        .split_once("://")
        .ok_or("expected nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH")?;
    let unix = match scheme.to_ascii_lowercase().as_str() {
        "nbd" => false,
        "nbd+unix" => true,
        "nbds" | "nbds+unix" | "nbds+vsock" => {
            return Err(format!(
                "{scheme}:// asks for TLS, which cowd's NBD client does not support; use nbd:// or nbd+unix://"
            ));
        }
        other => {
            return Err(format!(
                "unknown scheme {other}://; cowd's NBD client knows nbd:// and nbd+unix://"
            ));
        }
    };
    if rest.contains('#') {
        return Err("NBD URIs have no fragment (#...)".into());
    }
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.find('/') {
        Some(i) => before_query.split_at(i),
        None => (before_query, ""),
    };
    let export = decode(path.strip_prefix('/').unwrap_or(path), "export name")?;
    let export = String::from_utf8(export).map_err(|_| "the export name is not UTF-8")?;
    if export.len() > MAX_STRING_LEN {
        return Err(format!(
            "the export name is {} bytes; NBD allows {MAX_STRING_LEN}",
            export.len()
        ));
    }
    let mut socket = None;
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        if pair.is_empty() {
            continue;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "socket" if unix => {
                if socket.is_some() {
                    return Err("socket= is given twice".into());
                }
                socket = Some(decode(value, "socket path")?);
            }
            k if k.starts_with("tls") => {
                return Err(format!(
                    "query parameter {k}= asks for TLS, which cowd's NBD client does not support"
                ));
            }
            k => {
                let known = if unix {
                    "socket="
                } else {
                    "none (use nbd+unix:// for socket=)"
                };
                return Err(format!(
                    "unknown query parameter {k:?}; known parameters: {known}"
                ));
            }
        }
    }
    let address = if unix {
        if !authority.is_empty() {
            return Err(format!(
                "nbd+unix:// takes no host ({authority:?}); write nbd+unix:///EXPORT?socket=PATH"
            ));
        }
        match socket {
            Some(p) if !p.is_empty() => Address::Unix(PathBuf::from(OsString::from_vec(p))),
            _ => return Err("nbd+unix:// needs ?socket=PATH".into()),
        }
    } else {
        let (host, port) = host_port(authority)?;
        Address::Tcp { host, port }
    };
    Ok(NbdUri { address, export })
}

/// Splits `HOST[:PORT]` or `[IPV6][:PORT]`; an empty host is `localhost`, as in QEMU.
fn host_port(authority: &str) -> Result<(String, u16), String> {
    if authority.contains('@') {
        return Err("NBD URIs take no user name (user@host)".into());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or("an IPv6 address misses its ']'")?;
        addr.parse::<Ipv6Addr>()
            .map_err(|_| format!("[{addr}] is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("expected :PORT after ']'")?),
        };
        (addr, port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if !host.contains(':')
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
    {
        return Err(format!(
            "host {host:?} is not a host name, IPv4 address or [IPv6] address"
        ));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(format!("port {p:?} is not a number from 1 to 65535")),
        },
    };
    let host = if host.is_empty() { "localhost" } else { host };
    Ok((host.to_owned(), port))
}

/// Percent-decodes `s`; `what` names the part for the error.
fn decode(s: &str, what: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
            let byte = byte.ok_or_else(|| format!("bad percent escape in the {what}"))?;
            out.push(byte);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Percent-encodes every byte but the unreserved ones and those listed in `keep`.
fn encode(f: &mut fmt::Formatter<'_>, bytes: &[u8], keep: &[u8]) -> fmt::Result {
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) {
            write!(f, "{}", b as char)?;
        } else {
            write!(f, "%{b:02X}")?;
        }
    }
    Ok(())
}

impl fmt::Display for NbdUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.address {
            Address::Tcp { host, port } => {
                if host.contains(':') {
                    write!(f, "nbd://[{host}]")?;
                } else {
                    write!(f, "nbd://{host}")?;
                }
                if *port != DEFAULT_PORT {
                    write!(f, ":{port}")?;
                }
            }
            Address::Unix(_) => f.write_str("nbd+unix://")?,
        }
        if !self.export.is_empty() || matches!(self.address, Address::Unix(_)) {
            f.write_str("/")?;
            encode(f, self.export.as_bytes(), b"/:@!$'()*+,;=")?;
        }
        if let Address::Unix(p) = &self.address {
            f.write_str("?socket=")?;
            encode(f, p.as_os_str().as_bytes(), b"/:@!$'()*,;")?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "uri_tests.rs"]
mod tests;
