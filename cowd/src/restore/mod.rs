//! Getting data back out of the repository: a generation as a read-only device
//! ([`RepoImage`], for serving it over NBD), full restores to a file or device ([`RestoreJob`]),
//! and restores "on the fly" ([`LiveRestore`]): the destination served read-write at once,
//! blocks fetched when a client needs them first, the rest filled in behind.
//!
//! ```text
//!   table (Restores) ── job (offline) ────────────────────────────> targets::RawImage
//!                    └─ live_job ── filler ──> live (LiveDevice) ──> destination device
//!                                               ├─ restored (the map, persisted)
//!                                               └─ source (ChunkSource: the generation)
//! ```
mod ending;
pub mod extract;
pub mod files;
mod filler;
mod image;
mod job;
pub mod live;
mod live_job;
pub mod restored;
pub mod source;
mod table;

pub use filler::{Filled, Filler};
pub use image::RepoImage;
pub use job::{RestoreJob, RestoreState, RestoreStatus};
pub use live_job::{LiveError, LiveRecord, LiveRestore, LiveStart, MAP_BLOCK};
pub use table::{Job, Restores};
