//! The control API of cowd (version 1): every type a request or an answer carries, and the
//! units an operator types on both sides (sizes, durations, times).
//!
//! cowd serves the API (HTTP/1.1 + JSON on a Unix socket, [`DEFAULT_SOCKET`]); `cowctl` and
//! anything else that talks to it link this crate, which depends on serde helpers only, and
//! never the daemon. The JSON of these types is the API's and, for [`repo::Manifest`] and
//! [`backups::BackupStatus`], also the format of files cowd keeps (`manifest.json`, session
//! records): a field or spelling changed here changes both.
//!
//! | method | path                            | request                       | answer                        |
//! |--------|---------------------------------|-------------------------------|-------------------------------|
//! | GET    | /v1/exports                     |                               | [`exports::ExportInfo`] list |
//! | POST   | /v1/exports/{name}/backups      | [`backups::StartBackup`]      | [`backups::BackupStarted`]    |
//! | POST   | /v1/exports/{name}/cancel       |                               | [`backups::BackupStatus`]     |
//! | POST   | /v1/exports/{name}/prioritize   | [`backups::Prioritize`]       | [`backups::BackupStatus`]     |
//! | GET    | /v1/backups?export=             |                               | [`backups::BackupStatus`] list |
//! | GET    | /v1/backups/{id}                |                               | [`backups::BackupStatus`]     |
//! | GET    | /v1/backups/{id}/wait?timeout_s= |                              | [`backups::BackupStatus`]     |
//! | GET    | /v1/resolve?device=             |                               | [`exports::Resolved`]         |
//! | POST   | /v1/exports/{name}/attach       | [`exports::Device`]           | [`exports::Resolved`]         |
//! | POST   | /v1/detach                      | [`exports::Device`]           | [`exports::Resolved`]         |
//! | POST   | /v1/repo/init                   | [`repo::RepoInit`]            | [`repo::RepoInfo`]            |
//! | GET    | /v1/repo/info?repo=             |                               | [`repo::RepoInfo`]            |
//! | POST   | /v1/repo/unlock                 | [`repo::UnlockRequest`]       | [`repo::LockState`]           |
//! | POST   | /v1/repo/lock                   | [`repo::LockRequest`]         | [`repo::LockState`]           |
//! | GET    | /v1/repo/keys?repo=             |                               | [`repo::KeySlot`] list        |
//! | POST   | /v1/repo/keys                   | [`repo::KeyAdd`]              | [`repo::KeySlot`]             |
//! | DELETE | /v1/repo/keys/{id}?repo=        |                               | [`repo::KeySlot`] list        |
//! | POST   | /v1/repo/keys/passwd            | [`repo::KeyChange`]           | [`repo::KeyChanged`]          |
//! | GET    | /v1/repo/backups?repo=&export=  |                               | [`repo::Listed`] list        |
//! | GET    | /v1/repo/backups/{id}/files?path= |                             | [`files::Listing`]            |
//! | GET    | /v1/repo/backups/{id}/file?path=&offset=&length= |              | the file's bytes              |
//! | POST   | /v1/repo/backups/{id}/extract   | [`files::ExtractRequest`]     | [`files::ExtractReport`]      |
//! | GET    | /v1/repo/backups/{id}/map?path= or ?offset=&length= |           | [`files::FileMap`]            |
//! | GET    | /v1/repo/backups/{id}/diff?to=  |                               | [`files::Diff`]               |
//! | POST   | /v1/repo/verify                 | [`repo::VerifyRequest`]       | [`repo::VerifyReport`]        |
//! | POST   | /v1/repo/prune                  | [`repo::PruneRequest`]        | [`repo::PruneResult`]         |
//! | POST   | /v1/repo/sync                   | [`repo::SyncRequest`]         | [`repo::SyncReport`]          |
//! | POST   | /v1/repo/repair                 | [`repo::RepairRequest`]       | [`repo::RepairReport`]        |
//! | POST   | /v1/repo/serve                  | [`repo::ServeRequest`]        | [`exports::ExportInfo`]       |
//! | POST   | /v1/exports/{name}/unserve      |                               | [`exports::ExportInfo`]       |
//! | POST   | /v1/restores                    | [`restores::RestoreRequest`]  | [`restores::RestoreStatus`]   |
//! | GET    | /v1/restores                    |                               | [`restores::RestoreStatus`] list |
//! | GET    | /v1/restores/{id}?timeout_s=    |                               | [`restores::RestoreStatus`]   |
//! | POST   | /v1/restores/{id}/prioritize    | [`backups::Prioritize`]       | [`restores::RestoreStatus`]   |
//! | GET    | /v1/copies                      |                               | [`copies::CopyJob`] list      |
//! | GET    | /v1/ports                       |                               | [`copies::PortInfo`] list     |
//! | PUT    | /v1/ports/{name}                | [`copies::PortChange`]        | [`copies::PortInfo`]          |
//! | any    | (any error)                     |                               | [`ErrorBody`]                 |
//!
//! `docs/openapi.yaml` describes each route in full; a test of cowd's router checks that the
//! daemon serves exactly the (method, path) pairs listed there.

pub mod backups;
pub mod copies;
pub mod digest;
pub mod exports;
pub mod files;
pub mod repo;
pub mod restores;
pub mod units;

use serde::{Deserialize, Serialize};

/// The default control socket path.
pub const DEFAULT_SOCKET: &str = "/run/cowd/control.sock";

/// The body of every error answer, including malformed requests and unknown paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// Known JSON texts, read and written back unchanged: what cowd wrote before stays readable,
/// and what it writes stays the same.
#[cfg(test)]
mod fixtures {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    /// Parses `text` as a `T` and writes it back as cowd writes files (pretty JSON).
    pub fn same_text<T: Serialize + DeserializeOwned>(text: &str) -> T {
        let v: T = serde_json::from_str(text).unwrap();
        assert_eq!(serde_json::to_string_pretty(&v).unwrap(), text.trim_end());
        v
    }
}
