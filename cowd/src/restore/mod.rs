//! Getting data back out of the repository: a generation as a read-only device
//! ([`RepoImage`], for serving it over NBD) and full restores to a file or device
//! ([`RestoreJob`]).
mod image;
mod job;

pub use image::RepoImage;
pub use job::{RestoreJob, RestoreState, RestoreStatus, Restores};
