//! SCSI EXTENDED COPY (LID1): parameter lists in the SPC-2/SPC-4 and Legato formats, and the
//! RECEIVE COPY RESULTS answers; the copy manager (job table, movers, paths) comes next.
//!
//! - [`params`]: parsing an EXTENDED COPY parameter list into a [`CopyList`] (or the sense that
//!   refuses it), encoding one back, and the [`Limits`] the copy manager enforces;
//! - [`results`]: the parameter data of RECEIVE COPY RESULTS (COPY STATUS, OPERATING
//!   PARAMETERS, FAILED SEGMENT DETAILS).
//!
//! Both are pure: bytes in, plain data out, and the reverse.

pub mod params;
pub mod results;

pub use params::{
    CopyList, DeviceParams, Format, LOCAL_LU, Limits, ParamError, Segment, TargetDescriptor,
    encode, parse,
};
pub use results::{
    CopyManagerStatus, CopyStatus, FailedSegmentDetails, OperatingParameters, TransferUnits,
    copy_status, failed_segment_details, operating_parameters,
};
