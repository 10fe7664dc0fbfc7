//! A list that names a copy target becomes a job for the data movers.
//!
//! ```text
//!   target descriptor ── E4h NAA = a copy target's naa ──────┐
//!                     ── E0h N_Port_Name = its fc_name ──────┼─> EndpointRef::CopyTarget(name)
//!                     ── E4h NAA of an export, or FFFFh ───────> EndpointRef::Export(name)
//!   segments 02h (block→block), 00h (block→stream), 01h (stream→block) ─> TransferSpec
//!   segments 04h (inline→stream), 05h (embedded→stream) ─> TransferSpec from
//!                       EndpointRef::Inline at its offset in JobSpec::carried (the list's
//!                       inline data, once, then each embedded segment's data)
//! ```
//!
//! Lists between cowd's own units only run in place ([`super::resolve`]); a list with any
//! segment that names a copy target goes to the job table whole, exports named by export, so
//! any mover (a thread of cowd, or a `cowd mover` on another host) can run it. The checks are
//! [`super::resolve`]'s, in the same order and with the same errors; a copy target's size is
//! not known until a mover opens it, so a range past its end is a device failure then.
//! A copy target's block length is its descriptor's DISK BLOCK LENGTH, or 512 when that is 0.

use super::params::{CopyList, DeviceParams, LOCAL_LU, Segment, TargetDescriptor};
use super::resolve::{Layout, LocalUnits, ResolveError, SEG_DST_ID};
use crate::jobs::spec::{EndpointRef, JobSpec, Origin, TransferSpec};
use crate::san::copy_targets::{CopyTarget, TargetKind};
use crate::scsi::Disk;

/// Byte offsets within segment descriptors.
const B2B_BLOCKS: usize = 10;
const B2B_SRC_LBA: usize = 12;
const B2B_DST_LBA: usize = 20;
const BS_BLOCKS: usize = 14;
const BS_LBA: usize = 16;
const TARGET_DEVICE_TYPE: usize = 1;

/// Default block length of a copy target whose descriptor says 0.
const DEFAULT_BLOCK: u32 = 512;

/// The job for `list` when a segment names a copy target; `None` when it names none.
pub fn spec(
    list: &CopyList,
    receiver: &Disk,
    units: &dyn LocalUnits,
    targets: &[CopyTarget],
    group: Option<String>,
) -> Result<Option<JobSpec>, ResolveError> {
    let named = |id: u16| {
        list.targets
            .get(usize::from(id))
            .and_then(|t| find_target(t, targets))
            .is_some()
    };
    let any = list.segments.iter().any(|s| {
        let (src, dst) = s.ends();
        src.is_some_and(|src| src != LOCAL_LU && named(src)) || (dst != LOCAL_LU && named(dst))
    });
    if !any {
        return Ok(None);
    }
    let layout = Layout::of(list);
    let side = |n: u16, id: u16, stream: bool| -> Result<Side, ResolveError> {
        let at = layout.target(id);
        if id == LOCAL_LU {
            return unit_side(receiver, n, at, stream, 0);
        }
        let t = &list.targets[usize::from(id)];
        let stated = match *t.device() {
            DeviceParams::Block { block_len, .. } => block_len,
            DeviceParams::Stream { .. } | DeviceParams::Other { .. } => 0,
        };
        if let Some(ct) = find_target(t, targets) {
            let is_stream = ct.kind == TargetKind::Stream;
            if is_stream != stream {
                return Err(ResolveError::DeviceType {
                    segment: n,
                    at: at + TARGET_DEVICE_TYPE,
                });
            }
            return Ok(Side {
                ep: EndpointRef::CopyTarget(ct.name.clone()),
                block: if stated == 0 { DEFAULT_BLOCK } else { stated },
                blocks: None,
                writable: true,
            });
        }
        let unit = match t {
            TargetDescriptor::Identification {
                association: 0,
                designator_type: 3,
                designator,
                ..
            } => units.find(designator),
            _ => None,
        }
        .ok_or(ResolveError::Unreachable { segment: n, at })?;
        unit_side(&unit.disk, n, at, stream, stated)
    };
    let mut transfers = Vec::with_capacity(list.segments.len());
    // The bytes the job carries: the list's inline data whole when a segment uses it (once,
    // however many segments do), then each embedded segment's data.
    let uses_inline = (list.segments.iter()).any(|s| matches!(s, Segment::InlineToStream { .. }));
    let mut carried = if uses_inline {
        list.inline.clone()
    } else {
        Vec::new()
    };
    for (n, s) in (0u16..).zip(&list.segments) {
        let seg_at = layout.segment(n);
        let t = match *s {
            Segment::BlockToBlock {
                src,
                dst,
                blocks,
                src_lba,
                dst_lba,
                dc,
                ..
            } => {
                let (src, dst) = (side(n, src, false)?, side(n, dst, false)?);
                let unit = if dc { dst.block } else { src.block };
                let bytes = u64::from(blocks) * u64::from(unit);
                whole(n, seg_at + B2B_BLOCKS, bytes, &[&src, &dst])?;
                src.in_range(n, src_lba, bytes, seg_at + B2B_SRC_LBA)?;
                dst.in_range(n, dst_lba, bytes, seg_at + B2B_DST_LBA)?;
                dst.writable_at(n, seg_at + SEG_DST_ID)?;
                TransferSpec {
                    segment: n,
                    src_offset: src_lba * u64::from(src.block),
                    dst_offset: dst_lba * u64::from(dst.block),
                    src: src.ep,
                    dst: dst.ep,
                    bytes,
                }
            }
            Segment::BlockToStream {
                src,
                dst,
                blocks,
                lba,
                ..
            } => {
                let (src, dst) = (side(n, src, false)?, side(n, dst, true)?);
                let bytes = u64::from(blocks) * u64::from(src.block);
                src.in_range(n, lba, bytes, seg_at + BS_LBA)?;
                TransferSpec {
                    segment: n,
                    src_offset: lba * u64::from(src.block),
                    dst_offset: 0,
                    src: src.ep,
                    dst: dst.ep,
                    bytes,
                }
            }
            Segment::StreamToBlock {
                src,
                dst,
                blocks,
                lba,
                ..
            } => {
                let (src, dst) = (side(n, src, true)?, side(n, dst, false)?);
                let bytes = u64::from(blocks) * u64::from(dst.block);
                whole(n, seg_at + BS_BLOCKS, bytes, &[&dst])?;
                dst.in_range(n, lba, bytes, seg_at + BS_LBA)?;
                dst.writable_at(n, seg_at + SEG_DST_ID)?;
                TransferSpec {
                    segment: n,
                    src_offset: 0,
                    dst_offset: lba * u64::from(dst.block),
                    src: src.ep,
                    dst: dst.ep,
                    bytes,
                }
            }
            Segment::InlineToStream {
                dst, offset, bytes, ..
            } => {
                let dst = side(n, dst, true)?;
                TransferSpec {
                    segment: n,
                    src: EndpointRef::Inline,
                    src_offset: u64::from(offset),
                    dst: dst.ep,
                    dst_offset: 0,
                    bytes: u64::from(bytes),
                }
            }
            Segment::EmbeddedToStream { dst, .. } => {
                let dst = side(n, dst, true)?;
                let data = s
                    .carried(list)
                    .expect("parse keeps the count within the field");
                let at = carried.len() as u64;
                carried.extend_from_slice(data);
                TransferSpec {
                    segment: n,
                    src: EndpointRef::Inline,
                    src_offset: at,
                    dst: dst.ep,
                    dst_offset: 0,
                    bytes: data.len() as u64,
                }
            }
        };
        transfers.push(t);
    }
    Ok(Some(JobSpec {
        origin: Origin::ExtendedCopy {
            export: receiver.identity().name.clone(),
            list_id: list.list_id,
        },
        group,
        transfers,
        carried,
    }))
}

/// The copy target a descriptor designates.
pub fn find_target<'a>(t: &TargetDescriptor, targets: &'a [CopyTarget]) -> Option<&'a CopyTarget> {
    match t {
        TargetDescriptor::Identification {
            association: 0,
            designator_type: 3,
            designator,
            ..
        } => targets
            .iter()
            .find(|c| c.naa.as_deref() == Some(designator.as_slice())),
        TargetDescriptor::Identification { .. } => None,
        TargetDescriptor::FcNPortName { name, .. } => {
            targets.iter().find(|c| c.fc_name.as_ref() == Some(name))
        }
    }
}

/// One end of a segment, resolved.
struct Side {
    ep: EndpointRef,
    block: u32,
    /// Capacity in blocks, when known (an export).
    blocks: Option<u64>,
    writable: bool,
}

fn unit_side(
    disk: &Disk,
    n: u16,
    at: usize,
    stream: bool,
    stated: u32,
) -> Result<Side, ResolveError> {
    if stream {
        return Err(ResolveError::DeviceType {
            segment: n,
            at: at + TARGET_DEVICE_TYPE,
        });
    }
    let actual = disk.block_size();
    if stated != 0 && stated != actual {
        return Err(ResolveError::BlockLength {
            segment: n,
            at: at + 29,
            stated,
            actual,
        });
    }
    Ok(Side {
        ep: EndpointRef::Export(disk.identity().name.clone()),
        block: actual,
        blocks: Some(disk.profile().blocks),
        writable: !disk.write_protected(),
    })
}

impl Side {
    fn in_range(&self, segment: u16, lba: u64, bytes: u64, at: usize) -> Result<(), ResolveError> {
        let Some(capacity) = self.blocks else {
            return Ok(());
        };
        let blocks = bytes / u64::from(self.block);
        if lba.checked_add(blocks).is_some_and(|end| end <= capacity) {
            return Ok(());
        }
        Err(ResolveError::OutOfRange {
            segment,
            at,
            lba,
            blocks,
            capacity,
        })
    }

    fn writable_at(&self, segment: u16, at: usize) -> Result<(), ResolveError> {
        if self.writable {
            Ok(())
        } else {
            Err(ResolveError::WriteProtected { segment, at })
        }
    }
}

fn whole(segment: u16, at: usize, bytes: u64, sides: &[&Side]) -> Result<(), ResolveError> {
    if sides.iter().all(|s| bytes % u64::from(s.block) == 0) {
        Ok(())
    } else {
        Err(ResolveError::Inexact { segment, at, bytes })
    }
}
