//! Resolving a parsed [`CopyList`] into a [`Job`]: the CSCD IDs its segments name become
//! endpoints, its segments become checked transfers. Nothing is copied here.
//!
//! ```text
//!   CSCD ID FFFFh ─────────────────────────────> the logical unit that received the command
//!   E4h, NAA (type 3), association 0 (the LU) ──> LocalUnits::find(designator) ─> that unit
//!   anything else (FC N_Port_Name, other designators, streams) ──> unreachable (for now)
//! ```
//!
//! Only the descriptors that segments name are resolved, each once per list (one hold per
//! device), in segment order. Then every segment is checked before any data moves, so a list
//! is refused whole rather than half copied:
//!
//! | check (in this order)                                        | error                 |
//! |--------------------------------------------------------------|-----------------------|
//! | the descriptor's designator names no unit cowd serves        | [`ResolveError::Unreachable`] |
//! | it names a unit, but the descriptor says stream (00h/01h segments) | [`ResolveError::DeviceType`] |
//! | its DISK BLOCK LENGTH is neither 0 nor the unit's block size | [`ResolveError::BlockLength`] |
//! | NUMBER OF BLOCKS × (DC ? destination : source) block length is not whole blocks on both sides | [`ResolveError::Inexact`] |
//! | the source or destination range passes the end of its unit  | [`ResolveError::OutOfRange`] |
//! | the destination is write protected                           | [`ResolveError::WriteProtected`] |
//!
//! Each error carries the segment number and the byte of the parameter list it is about
//! ([`Layout`]), for the sense data the copy manager builds from it.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use super::engine::{BlockEndpoint, Hold, Job, Transfer};
use super::params::{CopyList, DeviceParams, Format, LOCAL_LU, Segment, TargetDescriptor};
use crate::scsi::Disk;

/// Length of the SPC (LID1) parameter list header.
const SPC_HEADER: usize = 16;
/// Length of Legato's header (no INLINE DATA LENGTH).
const LEGATO_HEADER: usize = 12;
/// Every target descriptor cowd parses is 32 bytes.
const TARGET_LEN: usize = 32;

/// Designator type NAA (SPC-4 7.8.6.1).
const DESIGNATOR_NAA: u8 = 0x3;
/// Association: the designator names the logical unit.
const ASSOCIATION_LU: u8 = 0x0;

/// Byte offsets within a target descriptor.
const TARGET_DEVICE_TYPE: usize = 1;
const TARGET_BLOCK_LENGTH: usize = 29;
/// Byte offsets within a block→block segment descriptor.
pub const SEG_SRC_ID: usize = 4;
pub const SEG_DST_ID: usize = 6;
const B2B_BLOCKS: usize = 10;
const B2B_SRC_LBA: usize = 12;
const B2B_DST_LBA: usize = 20;

/// The logical units a copy manager can reach by designator: the exports cowd serves.
pub trait LocalUnits: Send + Sync + Debug {
    /// The unit whose NAA designator (VPD 83h, association 0) is `naa`, if cowd serves one.
    fn find(&self, naa: &[u8]) -> Option<LocalUnit>;
}

/// A unit found by [`LocalUnits::find`], held in service while a job uses it.
#[derive(Debug)]
pub struct LocalUnit {
    pub disk: Arc<Disk>,
    pub hold: Option<Hold>,
}

/// Why a list cannot be run. `at` is a byte offset into the parameter list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("segment {segment}: target descriptor at byte {at} names no logical unit cowd serves")]
    Unreachable { segment: u16, at: usize },
    #[error("segment {segment}: target descriptor at byte {at} names a unit of another type")]
    DeviceType { segment: u16, at: usize },
    #[error(
        "segment {segment}: target descriptor states {stated}-byte blocks, the unit has {actual}"
    )]
    BlockLength {
        segment: u16,
        at: usize,
        stated: u32,
        actual: u32,
    },
    #[error("segment {segment}: {bytes} bytes are not whole blocks on both sides")]
    Inexact { segment: u16, at: usize, bytes: u64 },
    #[error("segment {segment}: {blocks} blocks from LBA {lba} pass the end ({capacity} blocks)")]
    OutOfRange {
        segment: u16,
        at: usize,
        lba: u64,
        blocks: u64,
        capacity: u64,
    },
    #[error("segment {segment}: the destination is write protected")]
    WriteProtected { segment: u16, at: usize },
}

impl ResolveError {
    pub fn segment(&self) -> u16 {
        match *self {
            ResolveError::Unreachable { segment, .. }
            | ResolveError::DeviceType { segment, .. }
            | ResolveError::BlockLength { segment, .. }
            | ResolveError::Inexact { segment, .. }
            | ResolveError::OutOfRange { segment, .. }
            | ResolveError::WriteProtected { segment, .. } => segment,
        }
    }

    /// The byte of the parameter list the error is about.
    pub fn at(&self) -> usize {
        match *self {
            ResolveError::Unreachable { at, .. }
            | ResolveError::DeviceType { at, .. }
            | ResolveError::BlockLength { at, .. }
            | ResolveError::Inexact { at, .. }
            | ResolveError::OutOfRange { at, .. }
            | ResolveError::WriteProtected { at, .. } => at,
        }
    }
}

/// Where the descriptors of a parsed list start in its parameter list (the list was checked
/// by `params::parse`, so each descriptor's length is [`Segment::encoded_len`]).
#[derive(Debug, Clone)]
pub struct Layout {
    targets_at: usize,
    segments_at: Vec<usize>,
}

impl Layout {
    pub fn of(list: &CopyList) -> Layout {
        let targets_at = match list.format {
            Format::Spc => SPC_HEADER,
            Format::Legato => LEGATO_HEADER,
        };
        let mut at = targets_at + TARGET_LEN * list.targets.len();
        let mut segments_at = Vec::with_capacity(list.segments.len());
        for s in &list.segments {
            segments_at.push(at);
            at += s.encoded_len();
        }
        Layout {
            targets_at,
            segments_at,
        }
    }

    /// The first byte of target descriptor `index`.
    pub fn target(&self, index: u16) -> usize {
        self.targets_at + TARGET_LEN * usize::from(index)
    }

    /// The first byte of segment descriptor `number`.
    pub fn segment(&self, number: u16) -> usize {
        self.segments_at
            .get(usize::from(number))
            .copied()
            .unwrap_or_default()
    }
}

/// Resolves and checks `list`, received by `receiver`, into a job.
pub fn resolve(
    list: &CopyList,
    receiver: &Disk,
    units: &dyn LocalUnits,
) -> Result<Job, ResolveError> {
    let mut r = Resolver {
        list,
        layout: Layout::of(list),
        receiver,
        units,
        endpoints: HashMap::new(),
    };
    let transfers = (0u16..)
        .zip(&list.segments)
        .map(|(n, s)| r.segment(n, s))
        .collect::<Result<_, _>>()?;
    Ok(Job { transfers })
}

struct Resolver<'a> {
    list: &'a CopyList,
    layout: Layout,
    receiver: &'a Disk,
    units: &'a dyn LocalUnits,
    /// Endpoints resolved so far, by CSCD ID.
    endpoints: HashMap<u16, Arc<BlockEndpoint>>,
}

impl Resolver<'_> {
    fn segment(&mut self, n: u16, s: &Segment) -> Result<Transfer, ResolveError> {
        let seg_at = self.layout.segment(n);
        match *s {
            Segment::BlockToBlock {
                src,
                dst,
                blocks,
                src_lba,
                dst_lba,
                dc,
                ..
            } => {
                let src = self.block(n, src)?;
                let dst = self.block(n, dst)?;
                let unit = if dc { dst.block_size } else { src.block_size };
                let bytes = u64::from(blocks) * u64::from(unit);
                let (sbs, dbs) = (u64::from(src.block_size), u64::from(dst.block_size));
                if bytes % sbs != 0 || bytes % dbs != 0 {
                    return Err(ResolveError::Inexact {
                        segment: n,
                        at: seg_at + B2B_BLOCKS,
                        bytes,
                    });
                }
                in_range(n, &src, src_lba, bytes / sbs, seg_at + B2B_SRC_LBA)?;
                in_range(n, &dst, dst_lba, bytes / dbs, seg_at + B2B_DST_LBA)?;
                if !dst.writable {
                    return Err(ResolveError::WriteProtected {
                        segment: n,
                        at: seg_at + SEG_DST_ID,
                    });
                }
                Ok(Transfer {
                    segment: n,
                    src_offset: src_lba * sbs,
                    dst_offset: dst_lba * dbs,
                    src,
                    dst,
                    bytes,
                })
            }
            Segment::BlockToStream { src, dst, .. } => {
                self.block(n, src)?;
                Err(self.stream(n, dst))
            }
            Segment::StreamToBlock { src, .. } => Err(self.stream(n, src)),
            Segment::InlineToStream { dst, .. } | Segment::EmbeddedToStream { dst, .. } => {
                Err(self.stream(n, dst))
            }
        }
    }

    /// The block device CSCD ID `id` names, for segment `n`.
    fn block(&mut self, n: u16, id: u16) -> Result<Arc<BlockEndpoint>, ResolveError> {
        if let Some(ep) = self.endpoints.get(&id) {
            return Ok(ep.clone());
        }
        let ep = if id == LOCAL_LU {
            endpoint(self.receiver, None)
        } else {
            let at = self.layout.target(id);
            let target = &self.list.targets[usize::from(id)];
            let unit = self
                .find(target)
                .ok_or(ResolveError::Unreachable { segment: n, at })?;
            let stated = match *target.device() {
                DeviceParams::Block { block_len, .. } => block_len,
                // `parse` lets only block device descriptors into block positions.
                DeviceParams::Stream { .. } | DeviceParams::Other { .. } => 0,
            };
            let actual = unit.disk.block_size();
            if stated != 0 && stated != actual {
                return Err(ResolveError::BlockLength {
                    segment: n,
                    at: at + TARGET_BLOCK_LENGTH,
                    stated,
                    actual,
                });
            }
            endpoint(&unit.disk, unit.hold)
        };
        let ep = Arc::new(ep);
        self.endpoints.insert(id, ep.clone());
        Ok(ep)
    }

    /// Why CSCD ID `id`, a stream device for segment `n`, cannot be reached: every unit cowd
    /// serves is a block device, and streams (tapes, remote files) come with paths.
    fn stream(&self, n: u16, id: u16) -> ResolveError {
        let at = self.layout.target(id);
        match self.list.targets.get(usize::from(id)).map(|t| self.find(t)) {
            Some(Some(_)) => ResolveError::DeviceType {
                segment: n,
                at: at + TARGET_DEVICE_TYPE,
            },
            Some(None) | None => ResolveError::Unreachable { segment: n, at },
        }
    }

    /// The local unit a target descriptor designates.
    fn find(&self, target: &TargetDescriptor) -> Option<LocalUnit> {
        match target {
            TargetDescriptor::Identification {
                association,
                designator_type,
                designator,
                ..
            } if *association == ASSOCIATION_LU && *designator_type == DESIGNATOR_NAA => {
                self.units.find(designator)
            }
            TargetDescriptor::Identification { .. } | TargetDescriptor::FcNPortName { .. } => None,
        }
    }
}

fn endpoint(disk: &Disk, hold: Option<Hold>) -> BlockEndpoint {
    let profile = disk.profile();
    BlockEndpoint {
        device: disk.device().clone(),
        block_size: profile.block_size,
        blocks: profile.blocks,
        chunk: profile.device_chunk,
        writable: !disk.write_protected(),
        hold,
    }
}

fn in_range(
    segment: u16,
    ep: &BlockEndpoint,
    lba: u64,
    blocks: u64,
    at: usize,
) -> Result<(), ResolveError> {
    if lba.checked_add(blocks).is_some_and(|end| end <= ep.blocks) {
        return Ok(());
    }
    Err(ResolveError::OutOfRange {
        segment,
        at,
        lba,
        blocks,
        capacity: ep.blocks,
    })
}
