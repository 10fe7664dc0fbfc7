//! Paths to a copy target, and opening one.
//!
//! | written                                   | [`PathSpec`]   | reached through                     |
//! |-------------------------------------------|----------------|-------------------------------------|
//! | `nbd://HOST[:PORT]/EXPORT`, `nbd+unix:///EXPORT?socket=SOCK` | `Nbd`  | [`crate::nbd::client`]    |
//! | `iscsi://HOST[:PORT]/IQN/LUN`             | `Iscsi`        | [`crate::iscsi::initiator`]         |
//! | `/dev/sdX`, `/srv/image`, `file:/srv/image` | `File`       | [`FileDevice`] (block device or file) |
//! | `tape:/dev/nst0`                          | `Tape`         | [`crate::stream`] (st ioctls)       |
//! | `stream:/run/fifo`, `stream:/srv/append`  | `Stream`       | [`crate::stream`] (FIFO or file, never seeks) |
//!
//! Opening a path says whether it is *down* ([`PathError::unreachable`]: nothing answers, the
//! next path may) or *wrong* (something answered and refused, or the device is not what the
//! target says). A mover tries the next path either way, and reports both.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::device::{BlockDevice, FileDevice, FileOptions, OpenError};
use crate::iscsi::initiator::IscsiDevice;
use crate::iscsi::url::IscsiUrl;
use crate::nbd::uri::NbdUri;

/// Where a path leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSpec {
    Nbd(NbdUri),
    Iscsi(IscsiUrl),
    File(PathBuf),
    Tape(PathBuf),
    Stream(PathBuf),
}

impl PathSpec {
    /// A stream (sequential) path.
    pub fn is_stream(&self) -> bool {
        matches!(self, PathSpec::Tape(_) | PathSpec::Stream(_))
    }
}

impl FromStr for PathSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<PathSpec, String> {
        let absolute = |p: &str| {
            if p.starts_with('/') {
                Ok(PathBuf::from(p))
            } else {
                Err(format!("{s}: an absolute path is needed"))
            }
        };
        if s.starts_with("nbd") {
            s.parse().map(PathSpec::Nbd).map_err(|e| format!("{e}"))
        } else if s.starts_with("iscsi:") {
            s.parse().map(PathSpec::Iscsi).map_err(|e| format!("{e}"))
        } else if let Some(p) = s.strip_prefix("tape:") {
            absolute(p).map(PathSpec::Tape)
        } else if let Some(p) = s.strip_prefix("stream:") {
            absolute(p).map(PathSpec::Stream)
        } else if let Some(p) = s.strip_prefix("file:") {
            absolute(p).map(PathSpec::File)
        } else if s.starts_with('/') {
            Ok(PathSpec::File(PathBuf::from(s)))
        } else {
            Err(format!(
                "{s}: expected nbd://, nbd+unix://, iscsi://, an absolute path, file:, tape: or stream:"
            ))
        }
    }
}

impl fmt::Display for PathSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathSpec::Nbd(u) => write!(f, "{u}"),
            PathSpec::Iscsi(u) => write!(f, "{}", u.redacted()),
            PathSpec::File(p) => write!(f, "{}", p.display()),
            PathSpec::Tape(p) => write!(f, "tape:{}", p.display()),
            PathSpec::Stream(p) => write!(f, "stream:{}", p.display()),
        }
    }
}

/// A path that opened.
#[derive(Debug)]
pub enum Opened {
    Block(Arc<dyn BlockDevice>),
    /// A stream medium, opened by the stream writer or reader itself (a FIFO's open waits for
    /// its peer; a tape is positioned by its own code).
    Stream {
        path: PathBuf,
        tape: bool,
    },
}

/// Why a path did not open.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PathError {
    pub path: String,
    pub message: String,
    /// Nothing answered: the path is down.
    pub down: bool,
}

impl PathError {
    pub fn unreachable(&self) -> bool {
        self.down
    }
}

/// The initiator name cowd logs in with when it reaches a copy target over iSCSI.
pub const INITIATOR_NAME: &str = "iqn.2026-12.local.cowd:mover";

/// Opens `spec` from an initiator port whose address is `from` (`None`: any), giving up
/// after `timeout` when nothing answers.
pub fn open(spec: &PathSpec, from: Option<IpAddr>, timeout: Duration) -> Result<Opened, PathError> {
    let fail = |message: String, down: bool| PathError {
        path: spec.to_string(),
        message,
        down,
    };
    match spec {
        PathSpec::Nbd(uri) => {
            let dev = crate::nbd::client::NbdDevice::connect_from(uri, from, timeout)
                .map_err(|e| fail(e.to_string(), e.unreachable()))?;
            Ok(Opened::Block(Arc::new(dev)))
        }
        PathSpec::Iscsi(url) => {
            let dev = IscsiDevice::connect_from(url, INITIATOR_NAME, from, timeout)
                .map_err(|e| fail(e.to_string(), e.unreachable()))?;
            Ok(Opened::Block(Arc::new(dev)))
        }
        PathSpec::File(path) => {
            let dev = FileDevice::open(path, FileOptions::default()).map_err(|e| {
                let down = matches!(&e, OpenError::Io { source, .. }
                    if source.kind() == std::io::ErrorKind::NotFound);
                fail(e.to_string(), down)
            })?;
            Ok(Opened::Block(Arc::new(dev)))
        }
        PathSpec::Tape(path) | PathSpec::Stream(path) => {
            // A stream path is there when its file is; the writer opens it.
            match std::fs::metadata(path) {
                Ok(_) => Ok(Opened::Stream {
                    path: path.clone(),
                    tape: matches!(spec, PathSpec::Tape(_)),
                }),
                Err(e) => Err(fail(e.to_string(), true)),
            }
        }
    }
}

#[cfg(test)]
#[path = "paths_tests.rs"]
mod tests;
