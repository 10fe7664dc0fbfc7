//! The copy-before-write core: pending set, block locks, write gate, container, throttling,
//! the snapshot point and quiescing, change tracking, and the session that ties them
//! together. Starting and tracking backups is `backup`'s; this module knows no target but
//! through the `BackupTarget` trait, and nothing of NBD or the control API.
pub mod cbt;
pub mod container;
pub mod engine;
pub mod gate;
pub mod locks;
pub mod pending;
pub mod point;
pub mod quiesce;
pub mod session;
pub mod view;
