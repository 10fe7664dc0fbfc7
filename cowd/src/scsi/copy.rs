//! [`CopyCommands`]: the hook through which a copy manager serves EXTENDED COPY (83h/00h) and
//! RECEIVE COPY RESULTS (84h) on a logical unit.
//!
//! The SCSI layer does not copy anything itself. A [`Disk`] without the hook answers both
//! operation codes with INVALID COMMAND OPERATION CODE and leaves them out of REPORT SUPPORTED
//! OPERATION CODES and of the VPD pages. With it:
//!
//! - both commands are listed, RECEIVE COPY RESULTS with the service actions COPY STATUS
//!   (00h), OPERATING PARAMETERS (03h) and FAILED SEGMENT DETAILS (04h); other service actions
//!   are refused before the hook is asked;
//! - the third-party copy VPD page 8Fh is offered and the 3PC bit of the standard INQUIRY data
//!   is set;
//! - the commands are handed to the hook.

use std::fmt::Debug;
use std::net::SocketAddr;

use super::disk::Disk;
use super::sense::Sense;
use super::task::Abort;

/// The I_T nexus a command came on, as far as a copy manager cares: who sent it and on which
/// target port it arrived (the port's group decides which movers may serve it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Nexus {
    /// The initiator's name (iSCSI InitiatorName), empty when unknown.
    pub initiator: String,
    /// The local address the command arrived on (the target port), when known.
    pub target_port: Option<SocketAddr>,
}

/// A copy manager serving the copy commands of one or more logical units.
pub trait CopyCommands: Send + Sync + Debug {
    /// Runs an EXTENDED COPY (LID1) whose parameter list is `param_list` (exactly PARAMETER
    /// LIST LENGTH bytes, or fewer if the initiator sent fewer), received by `disk` on
    /// `nexus`. Called on a thread that may block until the copy is done, or until `abort`
    /// is set (then it stops soon, within a piece of the copy or a poll of its job).
    fn extended_copy(
        &self,
        disk: &Disk,
        nexus: &Nexus,
        param_list: &[u8],
        abort: &Abort,
    ) -> Result<(), Sense>;

    /// The parameter data of RECEIVE COPY RESULTS for `cdb` (the service action, 00h, 03h or
    /// 04h, is in bits 4..0 of byte 1), at most `alloc` bytes (the caller cuts it anyway).
    fn receive_copy_results(&self, cdb: &[u8], alloc: u32) -> Result<Vec<u8>, Sense>;

    /// The third-party copy VPD page 8Fh without its 4-byte header: the third-party copy
    /// descriptors. The header (device type, page code, page length) is added by the caller.
    fn third_party_copy_vpd(&self) -> Vec<u8>;
}
