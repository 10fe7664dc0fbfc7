//! [`CopyManager`]: the copy manager of one logical unit. It serves EXTENDED COPY (LID1) and
//! RECEIVE COPY RESULTS through the [`CopyCommands`] hook, for copies between logical units
//! cowd itself serves.
//!
//! ```text
//!   EXTENDED COPY ─> params::parse ─> lists::begin ─> resolve ─────> engine::run ─> finish
//!                    (list refused)   (identifier     (descriptors    (pieces through  (result
//!                                      running?)       -> endpoints,   the devices'     held?)
//!                                                      checked Job)    stacks)
//!   RECEIVE COPY RESULTS  00h COPY STATUS, 04h FAILED SEGMENT DETAILS ─> lists
//!                         03h OPERATING PARAMETERS ─> results::operating_parameters(limits)
//!   INQUIRY VPD 8Fh ─> vpd::descriptors(limits)
//! ```
//!
//! Three concerns stay apart so that a job table, movers and paths to remote copy targets can
//! later sit between the command and the copying: resolving ([`resolve`]: descriptors to
//! endpoints, a checked [`Job`](super::engine::Job) that owns what it needs), executing
//! ([`engine`]: a job's transfers) and the command's bookkeeping ([`lists`]: identifiers and
//! held results; this module: sense data). Today a job runs in place, on the thread that
//! received the command; a mover would take the job and the ticket's progress instead, and
//! the command would wait for the outcome.
//!
//! One manager serves one logical unit: RECEIVE COPY RESULTS does not say which unit it came
//! to, so a manager's list table is its unit's. Managers share the [`LocalUnits`] that finds
//! units by designator.
//!
//! Every failure becomes sense data here, and only here:
//!
//! | failure                                  | sense                                          | held |
//! |------------------------------------------|------------------------------------------------|------|
//! | parameter list ([`ParamError`])          | what `ParamError::sense` names, pointer into the list | no |
//! | LIST ID USAGE 01b (reserved)             | ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST (byte 1, bit 4) | no |
//! | LIST ID USAGE 11b, LIST IDENTIFIER not 0 | ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST (byte 0) | no |
//! | the identifier's list is running         | ILLEGAL REQUEST, OPERATION IN PROGRESS (00h/16h) | no |
//! | `lists::MAX_RUNNING` lists running       | ILLEGAL REQUEST, INSUFFICIENT RESOURCES (55h/03h) | no |
//! | descriptor names no unit cowd serves     | COPY ABORTED, UNREACHABLE COPY TARGET (08h/04h)  | yes |
//! | unit of another type or block length     | COPY ABORTED, INCORRECT COPY TARGET DEVICE TYPE (0Dh/03h) | yes |
//! | not whole blocks on both sides           | COPY ABORTED, UNEXPECTED INEXACT SEGMENT (26h/0Ah) | yes |
//! | range beyond a unit's capacity           | COPY ABORTED, COPY TARGET DEVICE NOT REACHABLE (0Dh/02h) | yes |
//! | destination write protected              | COPY ABORTED, WRITE PROTECTED (27h/00h)          | yes |
//! | a device error while copying             | COPY ABORTED, THIRD PARTY DEVICE FAILURE (0Dh/01h) | yes |
//! | aborted by task management (not answered) | ABORTED COMMAND, 00h/00h                       | yes |
//!
//! COPY ABORTED sense points (SKSV, SD = 0) at the byte of the parameter list at fault: the
//! target descriptor, the field of the segment descriptor. A range beyond the end is what
//! LIO answers when its own read or write of the copy target fails, and one of the three
//! additional sense codes libiscsi's `ExtendedCopy.ValidSegDescr` accepts. The segment number
//! goes in COMMAND-SPECIFIC INFORMATION of the sense data held for FAILED SEGMENT DETAILS; the
//! command's own sense data lacks it because [`Sense`] has no such field yet.

use std::sync::Arc;

use tracing::{debug, info};

use super::engine::{self, Progress, Side, Stopped, TransferError};
use super::lists::{self, ListIdUsage, Lists, Nexus, Refused};
use super::params::{CopyList, Limits, ParamError, parse};
use super::resolve::{self, Layout, LocalUnits, ResolveError, SEG_DST_ID, SEG_SRC_ID};
use super::results::{
    FailedSegmentDetails, OperatingParameters, SA_COPY_STATUS, SA_FAILED_SEGMENT_DETAILS,
    SA_OPERATING_PARAMETERS, operating_parameters,
};
use super::{remote, vpd};
use crate::jobs::{CopyService, JobError, JobSpec, Outcome};
use crate::scsi::{self, Abort, CopyCommands, Disk, FieldPointer, Sense, SenseFormat, SenseKey};

/// SCSI status CHECK CONDITION, as held for FAILED SEGMENT DETAILS.
const CHECK_CONDITION: u8 = 0x02;
/// Where the COMMAND-SPECIFIC INFORMATION field lies in fixed-format sense data.
const COMMAND_SPECIFIC: std::ops::Range<usize> = 8..12;

/// The copy manager of one logical unit.
#[derive(Debug)]
pub struct CopyManager {
    limits: Limits,
    units: Arc<dyn LocalUnits>,
    lists: Arc<Lists>,
    /// The daemon's copy service: lists naming a copy target go to its movers.
    service: Option<Arc<CopyService>>,
}

impl CopyManager {
    /// A copy manager that parses with the default [`Limits`] and finds units in `units`.
    pub fn new(units: Arc<dyn LocalUnits>) -> CopyManager {
        CopyManager::with_limits(units, Limits::default())
    }

    /// A copy manager that parses with `limits` (and reports them).
    pub fn with_limits(units: Arc<dyn LocalUnits>, limits: Limits) -> CopyManager {
        CopyManager {
            limits,
            units,
            lists: Arc::new(Lists::default()),
            service: None,
        }
    }

    /// An I_T nexus to this manager's unit, open until dropped: results held for the unit
    /// are discarded when its last nexus ends (see [`lists`]).
    pub fn nexus(&self) -> Nexus {
        self.lists.nexus()
    }

    /// A copy manager that hands lists naming a copy target to `service`'s movers.
    pub fn with_service(mut self, service: Arc<CopyService>) -> CopyManager {
        self.limits.fc_n_port_names = service.targets().iter().any(|t| t.fc_name.is_some());
        self.service = Some(service);
        self
    }

    /// Runs a list: in place between cowd's own units, by the movers when it names a copy
    /// target.
    fn run(
        &self,
        disk: &Disk,
        nexus: &scsi::Nexus,
        list: &CopyList,
        progress: &Progress,
        abort: &Abort,
    ) -> Result<(), Failure> {
        if let Some(service) = &self.service {
            let group = service.group_of(nexus.target_port);
            let spec = remote::spec(list, disk, self.units.as_ref(), service.targets(), group)
                .map_err(|e| Failure::resolve(&e))?;
            if let Some(spec) = spec {
                return self.run_by_movers(service, spec, list, progress, abort);
            }
        }
        let job =
            resolve::resolve(list, disk, self.units.as_ref()).map_err(|e| Failure::resolve(&e))?;
        engine::run(&job, progress, abort).map_err(|e| match e {
            Stopped::Failed(e) => Failure::transfer(&e, &Layout::of(list)),
            Stopped::Aborted { segment } => Failure::aborted(segment),
        })
    }

    fn run_by_movers(
        &self,
        service: &CopyService,
        spec: JobSpec,
        list: &CopyList,
        progress: &Progress,
        abort: &Abort,
    ) -> Result<(), Failure> {
        let segments = spec.transfers.len() as u32;
        let aborted = || abort.is_set();
        let (id, outcome) = service.run(spec, &aborted).map_err(|e| Failure {
            sense: Sense::new(SenseKey::CopyAborted, 0x0D, 0x01),
            segment: 0,
            why: e.to_string(),
        })?;
        match outcome {
            Outcome::Done { bytes } => {
                progress.set(segments, bytes);
                debug!(job = id, bytes, "EXTENDED COPY done by a mover");
                Ok(())
            }
            Outcome::Failed {
                error: JobError::Cancelled,
                segment,
                ..
            } if abort.is_set() => Err(Failure::aborted(segment)),
            Outcome::Failed {
                error,
                segment,
                source,
                reason,
            } => Err(Failure::job(
                error,
                segment,
                source,
                reason,
                &Layout::of(list),
            )),
        }
    }

    fn operating_parameters(&self) -> OperatingParameters {
        OperatingParameters {
            total_concurrent_copies: lists::MAX_RUNNING as u16,
            max_concurrent_copies: lists::MAX_RUNNING as u8,
            ..OperatingParameters::from_limits(&self.limits)
        }
    }
}

impl CopyCommands for CopyManager {
    fn extended_copy(
        &self,
        disk: &Disk,
        nexus: &scsi::Nexus,
        param_list: &[u8],
        abort: &Abort,
    ) -> Result<(), Sense> {
        let list = parse(param_list, &self.limits).map_err(|e| {
            debug!(error = %e, "EXTENDED COPY refused");
            param_sense(&e)
        })?;
        let usage = list_id_usage(&list)?;
        let ticket = self
            .lists
            .begin(list.list_id, usage)
            .map_err(refused_sense)?;
        match self.run(disk, nexus, &list, ticket.progress(), abort) {
            Ok(()) => {
                let p = ticket.progress();
                debug!(
                    list = list.list_id,
                    segments = p.segments(),
                    bytes = p.bytes(),
                    "EXTENDED COPY done"
                );
                ticket.finish(None);
                Ok(())
            }
            Err(f) => {
                info!(list = list.list_id, error = %f.why, "EXTENDED COPY aborted");
                ticket.finish(Some(f.details()));
                Err(f.sense)
            }
        }
    }

    fn receive_copy_results(&self, cdb: &[u8], alloc: u32) -> Result<Vec<u8>, Sense> {
        let action = cdb.get(1).map_or(0, |b| b & 0x1F);
        let id = cdb.get(2).copied().unwrap_or(0);
        let unknown = || Sense::invalid_field_in_cdb(2, None);
        match action {
            SA_COPY_STATUS => self.lists.copy_status(id, alloc).ok_or_else(unknown),
            SA_OPERATING_PARAMETERS => {
                Ok(operating_parameters(&self.operating_parameters(), alloc))
            }
            SA_FAILED_SEGMENT_DETAILS => self
                .lists
                .failed_segment_details(id, alloc)
                .ok_or_else(unknown),
            // `Disk` refuses the other service actions before asking.
            _ => Err(Sense::invalid_field_in_cdb(1, Some(4))),
        }
    }

    fn third_party_copy_vpd(&self) -> Vec<u8> {
        vpd::descriptors(&self.limits, lists::MAX_RUNNING as u32)
    }
}

/// The LIST ID USAGE of a parsed list, or why it is refused.
fn list_id_usage(list: &CopyList) -> Result<ListIdUsage, Sense> {
    let usage = ListIdUsage::from_bits(list.list_id_usage)
        .ok_or_else(|| Sense::invalid_field_in_parameter_list(1, Some(4)))?;
    if usage == ListIdUsage::Unnamed && list.list_id != 0 {
        return Err(Sense::invalid_field_in_parameter_list(0, None));
    }
    Ok(usage)
}

/// The sense data of a refused parameter list.
fn param_sense(e: &ParamError) -> Sense {
    let key = match e {
        ParamError::UnreachableTarget { .. } | ParamError::InlineDataBeyond { .. } => {
            SenseKey::CopyAborted
        }
        ParamError::ParameterListLength(_)
        | ParamError::InvalidField { .. }
        | ParamError::TooManyTargets { .. }
        | ParamError::UnsupportedTargetType { .. }
        | ParamError::TooManySegments { .. }
        | ParamError::UnsupportedSegmentType { .. }
        | ParamError::InlineDataLengthExceeded { .. } => SenseKey::IllegalRequest,
    };
    let (key_byte, asc, ascq) = e.sense();
    debug_assert_eq!(key as u8, key_byte, "{e}");
    Sense {
        field_pointer: e.field_pointer().map(in_list),
        ..Sense::new(key, asc, ascq)
    }
}

fn refused_sense(r: Refused) -> Sense {
    match r {
        Refused::InProgress => Sense::new(SenseKey::IllegalRequest, 0x00, 0x16),
        Refused::TooMany => Sense::new(SenseKey::IllegalRequest, 0x55, 0x03),
    }
}

/// A field of the parameter list (C/D, or SD for COPY ABORTED, zero).
fn in_list(byte: u16) -> FieldPointer {
    FieldPointer {
        in_cdb: false,
        byte,
        bit: None,
    }
}

/// A list that began and failed.
#[derive(Debug)]
struct Failure {
    sense: Sense,
    segment: u16,
    /// For the log.
    why: String,
}

impl Failure {
    fn copy_aborted(asc: u8, ascq: u8, at: usize, segment: u16, why: String) -> Failure {
        let sense = Sense {
            field_pointer: u16::try_from(at).ok().map(in_list),
            ..Sense::new(SenseKey::CopyAborted, asc, ascq)
        };
        Failure {
            sense,
            segment,
            why,
        }
    }

    /// Stopped by task management (ABORT TASK, a reset, the session's end): the command is
    /// not answered, but its list's results say it ended, and how.
    fn aborted(segment: u16) -> Failure {
        Failure {
            sense: Sense::new(SenseKey::AbortedCommand, 0x00, 0x00),
            segment,
            why: "aborted by task management".to_owned(),
        }
    }

    fn resolve(e: &ResolveError) -> Failure {
        let (asc, ascq) = match e {
            ResolveError::Unreachable { .. } => (0x08, 0x04),
            ResolveError::DeviceType { .. } | ResolveError::BlockLength { .. } => (0x0D, 0x03),
            ResolveError::Inexact { .. } => (0x26, 0x0A),
            ResolveError::OutOfRange { .. } => (0x0D, 0x02),
            ResolveError::WriteProtected { .. } => (0x27, 0x00),
        };
        Failure::copy_aborted(asc, ascq, e.at(), e.segment(), e.to_string())
    }

    /// A job the movers ended in failure.
    fn job(error: JobError, segment: u16, source: bool, why: String, layout: &Layout) -> Failure {
        let (asc, ascq) = match error {
            JobError::NotReachable => (0x0D, 0x02),
            JobError::DeviceType => (0x0D, 0x03),
            JobError::DeviceFailure | JobError::Cancelled => (0x0D, 0x01),
        };
        let field = if source { SEG_SRC_ID } else { SEG_DST_ID };
        let at = layout.segment(segment) + field;
        Failure::copy_aborted(asc, ascq, at, segment, why)
    }

    fn transfer(e: &TransferError, layout: &Layout) -> Failure {
        let field = match e.side {
            Side::Source => SEG_SRC_ID,
            Side::Destination => SEG_DST_ID,
        };
        let at = layout.segment(e.segment) + field;
        Failure::copy_aborted(0x0D, 0x01, at, e.segment, e.to_string())
    }

    /// What FAILED SEGMENT DETAILS reports: CHECK CONDITION and the sense data in fixed
    /// format, with the segment number in COMMAND-SPECIFIC INFORMATION.
    fn details(&self) -> FailedSegmentDetails {
        let mut sense = self.sense.encode(SenseFormat::Fixed);
        sense[COMMAND_SPECIFIC].copy_from_slice(&u32::from(self.segment).to_be_bytes());
        FailedSegmentDetails {
            scsi_status: CHECK_CONDITION,
            sense,
        }
    }
}

#[cfg(test)]
#[path = "manager_tests.rs"]
mod tests;
