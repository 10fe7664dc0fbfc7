//! The request and answer types of the control API, at the path they always had: they live in
//! the `cowd-api` crate (serde only), which `cowctl` and other clients link instead of cowd.
//! The routes and which type goes with each are listed in that crate's documentation and in
//! `docs/openapi.yaml`; the router is [`super::server::router`].

pub use cowd_api::backups::{
    BackupMode, BackupStarted, BackupState, BackupStatus, BlockChoice, OnOverflow, Prioritize,
    StartBackup, TargetFaults,
};
pub use cowd_api::exports::{Device, ExportInfo, Resolved};
pub use cowd_api::files::{
    Change, Diff, DiffEntry, ExtractReport, ExtractRequest, FileInfo, FileKind, FileMap, Listing,
    MappedExtent, Owner,
};
pub use cowd_api::repo::{
    Damaged, GcReport, KeepPolicy, Kept, KeyAdd, KeyChange, KeyChanged, KeySecret, KeySlot, Listed,
    LockRequest, LockState, Manifest, PruneRequest, PruneResult, RepairReport, RepairRequest,
    RepoInfo, RepoInit, ServeRequest, Status, SyncReport, SyncRequest, UnlockRequest, VerifyReport,
    VerifyRequest,
};
pub use cowd_api::restores::{RestoreRequest, RestoreState, RestoreStatus};
pub use cowd_api::{DEFAULT_SOCKET, ErrorBody};
