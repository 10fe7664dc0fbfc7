//! Request and response bodies of the control API (version 1). `cowctl` uses these types too.
//!
//! | method | path          | response            |
//! |--------|---------------|---------------------|
//! | GET    | /v1/exports   | `[ExportInfo]`      |
//! | any    | (error)       | `ErrorBody`         |

use serde::{Deserialize, Serialize};

/// The default control socket path.
pub const DEFAULT_SOCKET: &str = "/run/cowd/control.sock";

/// One export as the control API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportInfo {
    pub name: String,
    pub path: String,
    pub description: String,
    /// Size in bytes.
    pub size: u64,
    pub read_only: bool,
    /// NBD connections in the transmission phase.
    pub connections: usize,
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}
