//! cowd: a copy-on-write online snapshot block driver.
//!
//! cowd serves block devices and image files over NBD and takes live, point-in-time backups
//! of them while applications keep writing. This crate holds the
//! daemon's library; `main.rs` only turns flags and config into a running [`daemon`].
//!
//! ```text
//!   NBD clients ──> nbd (wire, handshake, transmission) ──> export ──> device stack
//!   cowctl ──────> control (HTTP/JSON over a Unix socket) ─┘
//! ```

pub mod backup;
pub mod config;
pub mod control;
pub mod daemon;
pub mod device;
pub mod dial;
pub mod export;
pub mod files;
pub mod fs;
pub mod iscsi;
pub mod jobs;
pub mod mover;
pub mod nbd;
pub mod notify;
pub mod repo;
pub mod restore;
pub mod san;
pub mod scsi;
pub mod snapshot;
pub mod stream;
pub mod targets;
pub mod vectored;
pub mod xcopy;
