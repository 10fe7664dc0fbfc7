//! SCSI EXTENDED COPY (LID1): parameter lists in the SPC-2/SPC-4 and Legato formats, the
//! RECEIVE COPY RESULTS answers, and the copy manager that runs lists between the logical units
//! cowd serves.
//!
//! ```text
//!   manager (CopyCommands: one per logical unit; sense data)
//!      ├─ params   parse a list (pure)          ├─ lists    identifiers, held results, nexuses
//!      ├─ resolve  descriptors -> endpoints, a checked Job
//!      ├─ engine   run a Job's transfers        ├─ results  RECEIVE COPY RESULTS data (pure)
//!      └─ vpd      Third-party Copy VPD descriptors (pure)
//! ```
//!
//! - [`params`]: parsing an EXTENDED COPY parameter list into a [`CopyList`] (or the sense that
//!   refuses it), encoding one back, and the [`Limits`] the copy manager enforces;
//! - [`results`]: the parameter data of RECEIVE COPY RESULTS (COPY STATUS, OPERATING
//!   PARAMETERS, FAILED SEGMENT DETAILS);
//! - [`manager`]: [`CopyManager`], the [`CopyCommands`](crate::scsi::CopyCommands) of one
//!   logical unit, and the one mapping of copy failures to sense data;
//! - [`resolve`]: target descriptors to endpoints through [`LocalUnits`], segments to checked
//!   transfers;
//! - [`engine`]: running a [`Job`]'s transfers in bounded pieces, in place today, by a mover
//!   later;
//! - [`lists`]: list identifiers, running lists and held results, scoped to a unit's nexuses;
//! - [`vpd`]: the descriptors of the Third-party Copy VPD page.
//!
//! `params`, `results` and `vpd` are pure: bytes in, plain data out, and the reverse.

pub mod engine;
pub mod lists;
pub mod manager;
pub mod params;
pub mod remote;
pub mod resolve;
pub mod results;
pub mod vpd;

#[cfg(test)]
mod testing;

#[cfg(test)]
#[path = "remote_tests.rs"]
mod remote_tests;

pub use engine::Job;
pub use manager::CopyManager;

pub use params::{
    CopyList, DeviceParams, Format, LOCAL_LU, Limits, ParamError, Segment, TargetDescriptor,
    encode, parse,
};
pub use resolve::{LocalUnit, LocalUnits};
pub use results::{
    CopyManagerStatus, CopyStatus, FailedSegmentDetails, OperatingParameters, TransferUnits,
    copy_status, failed_segment_details, operating_parameters,
};
