//! SCSI block commands (SPC-4 / SBC-3) executed on a [`BlockDevice`](crate::device::BlockDevice),
//! independent of the transport.
//!
//! A transport (the iSCSI target port) hands each command's CDB, expected data transfer length
//! and data-out to [`Disk::execute`] and sends back the [`Response`]: status, data-in, sense
//! data and residual. Commands addressed to a LUN without a logical unit go to
//! [`luns::absent`].
//!
//! ```text
//!   cdb ──> cdb::decode ──> Command ──> Disk ──┬─ inquiry (standard data, VPD pages)
//!            (opcodes table:                   ├─ mode (MODE SENSE / MODE SELECT)
//!             usage bits)                      ├─ block (READ, WRITE, WRITE SAME, UNMAP, ...)
//!                                              ├─ luns, opcodes (REPORT LUNS, RSOC)
//!                                              └─ copy hook (EXTENDED COPY, RECEIVE COPY RESULTS)
//!                                                 (stops early when its task's Abort is set)
//!   Response <── response (status, residual) <── sense (fixed or descriptor format)
//! ```

pub mod block;
pub mod buffers;
pub mod cdb;
pub mod copy;
pub mod disk;
pub mod inquiry;
pub mod luns;
pub mod mode;
mod opcode_table;
pub mod opcodes;
pub mod profile;
pub mod response;
pub mod sense;
pub mod task;

#[cfg(test)]
mod testing;

pub use copy::{CopyCommands, Nexus};
pub use disk::Disk;
pub use inquiry::LunIdentity;
pub use luns::LunList;
pub use response::{Residual, Response, Status};
pub use sense::{FieldPointer, Sense, SenseFormat, SenseKey};
pub use task::Abort;
