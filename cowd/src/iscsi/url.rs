//! iSCSI URLs in libiscsi's format, the one QEMU and the libiscsi tools take (pure):
//!
//! ```text
//!   iscsi://[USER[%PASSWORD]@]HOST[:PORT]/TARGET-IQN/LUN
//!   iscsi://alice%s3cret@[fd00::1]:3261/iqn.2026-12.local.cowd:disk/0
//! ```
//!
//! HOST is a name, an IPv4 address or an IPv6 address in brackets; PORT defaults to 3260.
//! As in libiscsi, the credentials end at the first `@` and the user at the first `%` (or `:`),
//! and the target name at the first `/`, so USER holds none of `%:@/`, PASSWORD none of `@/`,
//! TARGET-IQN no `/`; nothing is percent-decoded. LUN is decimal, below 16384 (the LUNs of
//! single-level addressing, [`Lun::single_level`]).
//!
//! `Display` writes a URL that parses back to the same value (the port only when it is not
//! 3260). It includes the password: log [`IscsiUrl::redacted`] instead.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

use super::config::MAX_NAME_LEN;
use super::pdu::Lun;

/// The well-known iSCSI port.
pub const DEFAULT_PORT: u16 = 3260;
/// Highest LUN of single-level addressing.
pub const MAX_LUN: u16 = 0x3fff;

const SCHEME: &str = "iscsi://";
const FORMAT: &str = "iscsi://[USER[%PASSWORD]@]HOST[:PORT]/TARGET-IQN/LUN";

/// A logical unit behind an iSCSI portal, and how to log in to it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IscsiUrl {
    /// CHAP name and secret, when the target wants CHAP.
    pub credentials: Option<Credentials>,
    /// A host name or an IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// The target's iSCSI name.
    pub target: String,
    pub lun: u16,
}

/// The CHAP user of a URL. An empty password means "no password given".
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

/// Why a string is not an iSCSI URL; every message shows the expected format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{url:?}: {problem} (expected {FORMAT})")]
pub struct UrlError {
    /// The URL as given, its password hidden.
    pub url: String,
    pub problem: UrlProblem,
}

/// What is wrong with a URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlProblem {
    #[error("it does not start with iscsi://")]
    Scheme,
    #[error("the user name is empty or holds one of % : / @")]
    BadUser,
    #[error("the password holds a /")]
    BadPassword,
    #[error("no host")]
    NoHost,
    #[error("bad host {0:?}")]
    BadHost(String),
    #[error("bad port {0:?}: a number from 1 to 65535")]
    BadPort(String),
    #[error("no target name after the host")]
    NoTarget,
    #[error("bad target name {0:?}: printable, without spaces, at most 223 bytes")]
    BadTarget(String),
    #[error("no LUN after the target name")]
    NoLun,
    #[error("bad LUN {0:?}: a decimal number up to 16383")]
    BadLun(String),
}

impl IscsiUrl {
    /// A URL without credentials.
    pub fn new(host: &str, port: u16, target: &str, lun: u16) -> IscsiUrl {
        IscsiUrl {
            credentials: None,
            host: host.to_owned(),
            port,
            target: target.to_owned(),
            lun,
        }
    }

    /// The LUN in the 8-byte format of iSCSI PDUs.
    pub fn lun_field(&self) -> Lun {
        Lun::single_level(self.lun).expect("parse keeps LUNs below 16384")
    }

    /// `HOST:PORT` (IPv6 in brackets), for messages and `ToSocketAddrs`.
    pub fn portal(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The URL with the password replaced by `***`, for messages and logs.
    pub fn redacted(&self) -> String {
        match &self.credentials {
            Some(c) if !c.password.is_empty() => {
                let hidden = IscsiUrl {
                    credentials: Some(Credentials {
                        user: c.user.clone(),
                        password: "***".into(),
                    }),
                    ..self.clone()
                };
                hidden.to_string()
            }
            _ => self.to_string(),
        }
    }
}

impl fmt::Debug for IscsiUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IscsiUrl({})", self.redacted())
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

impl fmt::Display for IscsiUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SCHEME)?;
        if let Some(c) = &self.credentials {
            f.write_str(&c.user)?;
            if !c.password.is_empty() {
                write!(f, "%{}", c.password)?;
            }
            f.write_str("@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if self.port != DEFAULT_PORT {
            write!(f, ":{}", self.port)?;
        }
        write!(f, "/{}/{}", self.target, self.lun)
    }
}

fn valid_user(user: &str) -> bool {
    !user.is_empty() && !user.contains(['%', ':', '/', '@'])
}

fn valid_password(password: &str) -> bool {
    !password.contains(['/', '@'])
}

fn valid_target(target: &str) -> bool {
    !target.is_empty()
        && target.len() <= MAX_NAME_LEN
        && target.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
}

/// A host name: letters, digits, `-`, `.` and `_` (what resolvers and IPv4 literals use).
fn valid_host_name(host: &str) -> bool {
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

/// Parses `credentials@` off the front of the authority.
fn credentials(authority: &str) -> Result<(Option<Credentials>, &str), UrlProblem> {
    let Some((userinfo, rest)) = authority.split_once('@') else {
        return Ok((None, authority));
    };
    let (user, password) = match userinfo.split_once(['%', ':']) {
        Some((u, p)) => (u, p),
        None => (userinfo, ""),
    };
    if !valid_user(user) {
        return Err(UrlProblem::BadUser);
    }
    if !valid_password(password) {
        return Err(UrlProblem::BadPassword);
    }
    let c = Credentials {
        user: user.to_owned(),
        password: password.to_owned(),
    };
    Ok((Some(c), rest))
}

/// Parses `HOST[:PORT]`.
fn host_port(hostport: &str) -> Result<(String, u16), UrlProblem> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or_else(|| UrlProblem::BadHost(hostport.to_owned()))?;
        if v6.parse::<Ipv6Addr>().is_err() {
            return Err(UrlProblem::BadHost(v6.to_owned()));
        }
        match after {
            "" => (v6, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (v6, Some(p)),
                None => return Err(UrlProblem::BadHost(hostport.to_owned())),
            },
        }
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(UrlProblem::NoHost);
    }
    if !host.contains(':') && !valid_host_name(host) {
        return Err(UrlProblem::BadHost(host.to_owned()));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(UrlProblem::BadPort(p.to_owned())),
        },
    };
    Ok((host.to_owned(), port))
}

fn lun(s: &str) -> Result<u16, UrlProblem> {
    if s.is_empty() {
        return Err(UrlProblem::NoLun);
    }
    match s.parse::<u16>() {
        Ok(n) if n <= MAX_LUN && s.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(UrlProblem::BadLun(s.to_owned())),
    }
}

fn parse(s: &str) -> Result<IscsiUrl, UrlProblem> {
    let rest = s.strip_prefix(SCHEME).ok_or(UrlProblem::Scheme)?;
    let (authority, path) = match rest.split_once('/') {
        Some((a, p)) => (a, p),
        None => (rest, ""),
    };
    let (credentials, hostport) = credentials(authority)?;
    let (host, port) = host_port(hostport)?;
    let (target, lun_str) = match path.split_once('/') {
        Some((t, l)) => (t, l),
        None => (path, ""),
    };
    if target.is_empty() {
        return Err(UrlProblem::NoTarget);
    }
    if !valid_target(target) {
        return Err(UrlProblem::BadTarget(target.to_owned()));
    }
    Ok(IscsiUrl {
        credentials,
        host,
        port,
        target: target.to_owned(),
        lun: lun(lun_str)?,
    })
}

/// `s` with whatever stands between `%` (or `:`) and `@` of the user part replaced, for error
/// messages about a URL that did not parse.
fn hide_password(s: &str) -> String {
    let Some(rest) = s.strip_prefix(SCHEME) else {
        return s.to_owned();
    };
    let authority = rest.split('/').next().unwrap_or("");
    let Some((userinfo, _)) = authority.split_once('@') else {
        return s.to_owned();
    };
    match userinfo.split_once(['%', ':']) {
        Some((user, _)) => format!("{SCHEME}{user}%***@{}", &rest[userinfo.len() + 1..]),
        None => s.to_owned(),
    }
}

impl FromStr for IscsiUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<IscsiUrl, UrlError> {
        parse(s).map_err(|problem| UrlError {
            url: hide_password(s),
            problem,
        })
    }
}

#[cfg(test)]
#[path = "url_tests.rs"]
mod tests;
