//! Orchestration of backups: starting them (checks, target, container, quiescing, the
//! snapshot point, the mover), tracking and ending them, planning repository generations, and
//! the records that outlive the daemon. The copy-before-write core it drives is `snapshot`'s.
//!
//! ```text
//!   control ──> backup::manager ──> snapshot (engine, session, point, quiesce)
//!                    │       └────> mover ──> targets (raw image | repository generation)
//!                    │       └────> copy_job ──> jobs (data movers) ──> a copy target
//!                    └─> backup::generation (parent, change map, used blocks)
//!                    └─> backup::record (STATE/backups/ID.json)
//! ```

pub mod copy_job;
pub mod generation;
pub mod manager;
pub mod record;
mod start;
