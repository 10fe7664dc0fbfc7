//! A host's side of SCSI EXTENDED COPY (LID1): the parameter lists of a copy between two
//! logical units named by designators, cut into segments and commands the copy manager
//! accepts, and the copy manager's limits read back from it. The library of the `xcopy` tool
//! (`src/bin/xcopy.rs`); the lists are `cowd::xcopy::CopyList`s, encoded by `cowd::xcopy::encode`.
//! The integration tests send them as a host would: [`host`] logs in through cowd's iSCSI
//! initiator, [`extended_copy`] sends one list.
//!
//! ```text
//!   blocks N from src_lba to dst_lba
//!     └─ segments of ≤ segment_blocks (≤ 65535, ≤ MAXIMUM SEGMENT LENGTH / block size)
//!          └─ lists of ≤ MAXIMUM SEGMENT DESCRIPTOR COUNT segments (and within the
//!             MAXIMUM DESCRIPTOR LIST LENGTH), one EXTENDED COPY each, in order
//! ```
//!
//! Endpoints are SPC-4 identification descriptors (E4h) carrying an NAA designator, or, in
//! Legato's format, Fibre Channel N_Port_Name descriptors (E0h) naming a port and LUN 0.

use std::time::Duration;

use cowd::iscsi::initiator::{CommandError, LoginError, Reply, Session, commands};
use cowd::iscsi::url::IscsiUrl;
use cowd::xcopy::{CopyList, DeviceParams, Format, LOCAL_LU, Segment, TargetDescriptor, encode};

/// The most blocks one block→block segment descriptor holds (a 16-bit field).
pub const MAX_SEGMENT_BLOCKS: u32 = 0xFFFF;
/// Bytes of a target descriptor and of the segment descriptors used here.
const TARGET_LEN: u32 = 32;
const B2B_LEN: u32 = 28;
const BLOCK_STREAM_LEN: u32 = 24;
/// Stream writes of at most this many bytes when the copy manager states no limit.
const DEFAULT_STREAM_TRANSFER: u32 = 1 << 20;

/// One end of the copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The logical unit the EXTENDED COPY goes to (CSCD ID FFFFh), a block device.
    Local,
    /// A block device named by its NAA designator (VPD 83h).
    Naa(Vec<u8>),
    /// A stream device (tape) named by its NAA designator.
    StreamNaa(Vec<u8>),
    /// LUN 0 behind a Fibre Channel port, by the port's N_Port_Name (Legato format).
    Fc([u8; 8]),
}

/// What the copy manager accepts, as far as cutting a copy goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyLimits {
    pub max_target_descriptors: u16,
    pub max_segment_descriptors: u16,
    /// Bytes of target plus segment descriptors; 0: not stated.
    pub max_descriptor_list_length: u32,
    /// Bytes one segment may copy; 0: no limit.
    pub max_segment_length: u32,
    /// Bytes of one stream write; 0: no limit.
    pub max_stream_transfer: u32,
}

impl Default for CopyLimits {
    /// What to assume of a copy manager that states nothing: one segment of at most 65535
    /// blocks per command (LIO accepts one).
    fn default() -> CopyLimits {
        CopyLimits {
            max_target_descriptors: 2,
            max_segment_descriptors: 1,
            max_descriptor_list_length: 0,
            max_segment_length: 0,
            max_stream_transfer: 0,
        }
    }
}

fn be16(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(d.get(at..at + 2)?.try_into().ok()?))
}

fn be32(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

impl CopyLimits {
    /// From RECEIVE COPY RESULTS with OPERATING PARAMETERS (SPC-4; layout in
    /// `cowd::xcopy::results`).
    pub fn from_operating_parameters(d: &[u8]) -> Option<CopyLimits> {
        Some(CopyLimits {
            max_target_descriptors: be16(d, 8)?,
            max_segment_descriptors: be16(d, 10)?,
            max_descriptor_list_length: be32(d, 12)?,
            max_segment_length: be32(d, 16)?,
            max_stream_transfer: be32(d, 28)?,
        })
    }

    /// From the Third-party Copy VPD page (8Fh): its Parameter Data (0004h) and General Copy
    /// Operations (8001h) descriptors.
    pub fn from_third_party_copy_vpd(page: &[u8]) -> Option<CopyLimits> {
        if *page.get(1)? != 0x8F {
            return None;
        }
        let end = (4 + usize::from(be16(page, 2)?)).min(page.len());
        let mut at = 4;
        let (mut parameters, mut general) = (None, None);
        while at + 4 <= end {
            let kind = be16(page, at)?;
            let len = usize::from(be16(page, at + 2)?);
            let body = page.get(at + 4..(at + 4 + len).min(end))?;
            match kind {
                0x0004 => parameters = Some(body),
                0x8001 => general = Some(body),
                _ => {}
            }
            at += 4 + len;
        }
        let p = parameters?;
        Some(CopyLimits {
            max_target_descriptors: be16(p, 4)?,
            max_segment_descriptors: be16(p, 6)?,
            max_descriptor_list_length: be32(p, 8)?,
            max_segment_length: general.and_then(|g| be32(g, 8)).unwrap_or(0),
            max_stream_transfer: 0,
        })
    }
}

/// A copy to cut into lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyPlan {
    pub src: Endpoint,
    pub dst: Endpoint,
    pub blocks: u64,
    pub src_lba: u64,
    pub dst_lba: u64,
    pub block_size: u32,
    /// Blocks per segment wanted; 0: as many as the limits allow.
    pub segment_blocks: u32,
    pub list_id: u8,
}

/// Why a copy cannot be cut into lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanError {
    LegatoNeedsFc,
    FcNeedsLegato,
    TooFewTargets,
    SegmentBelowOneBlock,
    NoRoomForSegments,
    NoBlockSize,
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PlanError::LegatoNeedsFc => {
                "a Legato list names both ends by FC port (--src-fc and --dst-fc)"
            }
            PlanError::FcNeedsLegato => "FC ports are named only in Legato's format (--legato)",
            PlanError::TooFewTargets => {
                "the copy manager takes fewer target descriptors than needed"
            }
            PlanError::SegmentBelowOneBlock => {
                "the copy manager's MAXIMUM SEGMENT LENGTH is below one block"
            }
            PlanError::NoRoomForSegments => {
                "the copy manager's MAXIMUM DESCRIPTOR LIST LENGTH leaves no room for a segment"
            }
            PlanError::NoBlockSize => "--block-size must not be 0",
        })
    }
}

impl std::error::Error for PlanError {}

fn device(e: &Endpoint, block_size: u32) -> DeviceParams {
    match e {
        Endpoint::StreamNaa(_) => DeviceParams::Stream {
            fixed: false,
            pad: false,
            block_len: 0,
        },
        _ => DeviceParams::Block {
            block_len: block_size,
            pad: false,
        },
    }
}

/// The target descriptor of an endpoint, or `None` for the local unit.
fn target(e: &Endpoint, block_size: u32) -> Option<TargetDescriptor> {
    let device = device(e, block_size);
    match e {
        Endpoint::Local => None,
        Endpoint::Naa(v) | Endpoint::StreamNaa(v) => Some(TargetDescriptor::Identification {
            relative_initiator_port: 0,
            code_set: 1,
            association: 0,
            designator_type: 3,
            designator: v.clone(),
            device,
        }),
        Endpoint::Fc(name) => Some(TargetDescriptor::FcNPortName {
            relative_initiator_port: 0,
            name: *name,
            lu_id_type: 0,
            lu_id: [0; 8],
            device,
        }),
    }
}

/// The lists that copy `plan` in order, each within `limits`, in `format`.
pub fn lists(
    plan: &CopyPlan,
    limits: &CopyLimits,
    format: Format,
) -> Result<Vec<CopyList>, PlanError> {
    let legato = format == Format::Legato;
    let fc = |e: &Endpoint| matches!(e, Endpoint::Fc(_));
    if legato && !(fc(&plan.src) && fc(&plan.dst)) {
        return Err(PlanError::LegatoNeedsFc);
    }
    if !legato && (fc(&plan.src) || fc(&plan.dst)) {
        return Err(PlanError::FcNeedsLegato);
    }
    if plan.block_size == 0 {
        return Err(PlanError::NoBlockSize);
    }
    let mut targets = Vec::new();
    let mut id = |e: &Endpoint| match target(e, plan.block_size) {
        None => LOCAL_LU,
        Some(t) => {
            targets.push(t);
            targets.len() as u16 - 1
        }
    };
    let (src, dst) = (id(&plan.src), id(&plan.dst));
    if targets.len() > usize::from(limits.max_target_descriptors) {
        return Err(PlanError::TooFewTargets);
    }
    let to_stream = matches!(plan.dst, Endpoint::StreamNaa(_));

    let mut segment_blocks = MAX_SEGMENT_BLOCKS;
    if plan.segment_blocks != 0 {
        segment_blocks = segment_blocks.min(plan.segment_blocks);
    }
    if limits.max_segment_length != 0 {
        let by_length = limits.max_segment_length / plan.block_size;
        if by_length == 0 {
            return Err(PlanError::SegmentBelowOneBlock);
        }
        segment_blocks = segment_blocks.min(by_length);
    }
    let segment_len = if to_stream { BLOCK_STREAM_LEN } else { B2B_LEN };
    let mut per_list = u32::from(limits.max_segment_descriptors.max(1));
    if limits.max_descriptor_list_length != 0 {
        let room = limits
            .max_descriptor_list_length
            .saturating_sub(TARGET_LEN * targets.len() as u32);
        per_list = per_list.min(room / segment_len);
    }
    if per_list == 0 {
        return Err(PlanError::NoRoomForSegments);
    }
    let stream_transfer = match limits.max_stream_transfer {
        0 => DEFAULT_STREAM_TRANSFER,
        n => n.min(DEFAULT_STREAM_TRANSFER),
    };

    let mut segments = Vec::new();
    let mut done = 0u64;
    while done < plan.blocks {
        let n = (plan.blocks - done).min(u64::from(segment_blocks)) as u16;
        segments.push(if to_stream {
            Segment::BlockToStream {
                src,
                dst,
                transfer_len: stream_transfer.min(u32::from(n) * plan.block_size),
                blocks: n,
                lba: plan.src_lba + done,
                cat: false,
            }
        } else {
            Segment::BlockToBlock {
                src,
                dst,
                blocks: n,
                src_lba: plan.src_lba + done,
                dst_lba: plan.dst_lba + done,
                dc: false,
                cat: false,
            }
        });
        done += u64::from(n);
    }
    Ok(segments
        .chunks(per_list as usize)
        .map(|s| CopyList {
            format,
            list_id: plan.list_id,
            targets: targets.clone(),
            segments: s.to_vec(),
            ..CopyList::default()
        })
        .collect())
}

/// Parses a designator or WWN written in hex, with optional `:`, `-` or `0x`.
pub fn parse_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    let digits: String = s.chars().filter(|c| !matches!(c, ':' | '-')).collect();
    if digits.is_empty() || digits.len() % 2 != 0 {
        return None;
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(digits.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Lowercase hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// COPY STATUS of RECEIVE COPY RESULTS (service action 00h), in words.
pub fn describe_copy_status(d: &[u8]) -> Option<String> {
    let status = match d.get(4)? & 0x7F {
        0x00 => "in progress",
        0x01 => "completed",
        0x02 => "completed with error",
        _ => "unknown",
    };
    let segments = be16(d, 5)?;
    let units = match *d.get(7)? {
        0x00 => "bytes",
        0x01 => "KiB",
        0x02 => "MiB",
        0x03 => "GiB",
        0x04 => "TiB",
        0xF1 => "blocks",
        _ => "units",
    };
    let count = be32(d, 8)?;
    Some(format!(
        "COPY STATUS: {status}, {segments} segments processed, {count} {units} transferred"
    ))
}

/// The initiator name the tests' hosts log in with.
pub const HOST_INITIATOR: &str = "iqn.2026-12.local.cowd:test-host";
/// How long a test host waits for one answer (a copy of tens of MiB runs inside one).
const HOST_TIMEOUT: Duration = Duration::from_secs(120);

/// A test host logged in to the logical unit at `url` (`iscsi://HOST:PORT/IQN/LUN`).
pub fn host(url: &str) -> Result<Session, LoginError> {
    let url: IscsiUrl = url.parse().expect("a valid iscsi:// URL");
    Session::login(&url, HOST_INITIATOR, HOST_TIMEOUT)
}

/// EXTENDED COPY (LID1) with parameter list `list`, on session `s`.
pub fn extended_copy(s: &mut Session, list: &[u8]) -> Result<Reply, CommandError> {
    s.command(&commands::extended_copy(list.len() as u32), list, 0)
}

/// The NAA designator of export `name`'s logical unit (VPD 83h), as cowd computes it.
pub fn export_naa(name: &str) -> [u8; 8] {
    cowd::scsi::inquiry::naa(cowd::export::unit_id(name))
}

/// One SPC-4 parameter list copying `blocks` 512-byte blocks from LBA `src_lba` of the unit
/// that receives it to LBA `dst_lba` of the block device whose NAA designator is `dst_naa`,
/// in segments of 65535 blocks (for tests that know the copy manager takes them all).
pub fn list_to(dst_naa: &[u8], blocks: u64, src_lba: u64, dst_lba: u64) -> Vec<u8> {
    let plan = CopyPlan {
        src: Endpoint::Local,
        dst: Endpoint::Naa(dst_naa.to_vec()),
        blocks,
        src_lba,
        dst_lba,
        block_size: 512,
        segment_blocks: 0,
        list_id: 0,
    };
    let limits = CopyLimits {
        max_segment_descriptors: u16::MAX,
        ..CopyLimits::default()
    };
    let lists = lists(&plan, &limits, Format::Spc).expect("a plain block-to-block copy");
    assert_eq!(lists.len(), 1, "one list");
    encode(&lists[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use cowd::xcopy::{Limits, parse};

    fn plan(blocks: u64) -> CopyPlan {
        CopyPlan {
            src: Endpoint::Naa(vec![0x31; 8]),
            dst: Endpoint::Naa(vec![0x32; 8]),
            blocks,
            src_lba: 10,
            dst_lba: 20,
            block_size: 512,
            segment_blocks: 0,
            list_id: 7,
        }
    }

    fn blocks_of(lists: &[CopyList]) -> Vec<u16> {
        lists
            .iter()
            .flat_map(|l| &l.segments)
            .map(|s| match s {
                Segment::BlockToBlock { blocks, .. } | Segment::BlockToStream { blocks, .. } => {
                    *blocks
                }
                Segment::StreamToBlock { .. }
                | Segment::InlineToStream { .. }
                | Segment::EmbeddedToStream { .. } => unreachable!("the tool cuts block copies"),
            })
            .collect()
    }

    /// Invariant: the segments cover the copy in order, each within the limits, and every
    /// list parses back (with cowd's parser, at the limits it reports) to itself.
    #[test]
    fn a_copy_is_cut_within_the_limits_and_parses_back() {
        let limits = Limits::default();
        let reported = CopyLimits {
            max_target_descriptors: limits.max_target_descriptors,
            max_segment_descriptors: limits.max_segment_descriptors,
            max_descriptor_list_length: limits.max_descriptor_list_length,
            max_segment_length: 0,
            max_stream_transfer: 0,
        };
        let blocks = 64 * 0xFFFF * 2 + 5;
        let cut = lists(&plan(blocks), &reported, Format::Spc).unwrap();
        assert_eq!(cut.len(), 3);
        assert_eq!(cut[0].segments.len(), 64);
        assert_eq!(
            blocks_of(&cut).iter().map(|&b| u64::from(b)).sum::<u64>(),
            blocks
        );
        let Segment::BlockToBlock {
            src_lba, dst_lba, ..
        } = cut[2].segments[0]
        else {
            panic!()
        };
        assert_eq!((src_lba, dst_lba), (10 + 128 * 0xFFFF, 20 + 128 * 0xFFFF));
        for l in &cut {
            assert_eq!(&parse(&encode(l), &limits).unwrap(), l);
        }
    }

    #[test]
    fn segment_length_count_and_list_length_limits() {
        let tight = CopyLimits {
            max_target_descriptors: 2,
            max_segment_descriptors: 10,
            max_descriptor_list_length: 64 + 3 * 28,
            max_segment_length: 1 << 20,
            max_stream_transfer: 0,
        };
        let cut = lists(&plan(5000), &tight, Format::Spc).unwrap();
        assert!(cut.iter().all(|l| l.segments.len() <= 3));
        assert!(blocks_of(&cut).iter().all(|&b| b <= 2048));
        let p = CopyPlan {
            segment_blocks: 100,
            ..plan(250)
        };
        assert_eq!(blocks_of(&lists_default(&p)), [100, 100, 50]);
        let none = CopyLimits {
            max_segment_length: 100,
            ..tight
        };
        assert_eq!(
            lists(&plan(1), &none, Format::Spc),
            Err(PlanError::SegmentBelowOneBlock)
        );
        assert_eq!(
            lists(
                &plan(1),
                &CopyLimits {
                    max_target_descriptors: 1,
                    ..tight
                },
                Format::Spc
            ),
            Err(PlanError::TooFewTargets)
        );
    }

    fn lists_default(p: &CopyPlan) -> Vec<CopyList> {
        lists(p, &CopyLimits::default(), Format::Spc).unwrap()
    }

    #[test]
    fn local_stream_and_legato_endpoints() {
        let p = CopyPlan {
            src: Endpoint::Local,
            dst: Endpoint::StreamNaa(vec![0x33; 8]),
            ..plan(3)
        };
        let l = &lists_default(&p)[0];
        assert_eq!(l.targets.len(), 1);
        assert!(matches!(
            l.segments[0],
            Segment::BlockToStream {
                src: LOCAL_LU,
                dst: 0,
                transfer_len: 1536,
                blocks: 3,
                lba: 10,
                ..
            }
        ));
        assert!(matches!(l.targets[0].device(), DeviceParams::Stream { .. }));

        let fc = |b| Endpoint::Fc([b; 8]);
        let p = CopyPlan {
            src: fc(1),
            dst: fc(2),
            ..plan(3)
        };
        let limits = CopyLimits::default();
        let l = &lists(&p, &limits, Format::Legato).unwrap()[0];
        let parsed = parse(
            &encode(l),
            &Limits {
                fc_n_port_names: true,
                ..Limits::default()
            },
        )
        .unwrap();
        assert_eq!(parsed.format, Format::Legato);
        assert_eq!(&parsed, l);
        assert_eq!(
            lists(&p, &limits, Format::Spc),
            Err(PlanError::FcNeedsLegato)
        );
        assert_eq!(
            lists(&plan(1), &limits, Format::Legato),
            Err(PlanError::LegatoNeedsFc)
        );
    }

    #[test]
    fn limits_from_the_copy_manager() {
        let limits = Limits::default();
        let op = cowd::xcopy::operating_parameters(
            &cowd::xcopy::OperatingParameters::from_limits(&limits),
            1024,
        );
        let got = CopyLimits::from_operating_parameters(&op).unwrap();
        assert_eq!(got.max_segment_descriptors, limits.max_segment_descriptors);
        assert_eq!(
            got.max_descriptor_list_length,
            limits.max_descriptor_list_length
        );
        assert_eq!(got.max_stream_transfer, limits.max_stream_transfer_size);

        let body = cowd::xcopy::vpd::descriptors(
            &Limits {
                max_segment_length: 1 << 20,
                ..limits
            },
            4,
        );
        let mut page = vec![0, 0x8F];
        page.extend_from_slice(&(body.len() as u16).to_be_bytes());
        page.extend_from_slice(&body);
        let got = CopyLimits::from_third_party_copy_vpd(&page).unwrap();
        assert_eq!(got.max_target_descriptors, limits.max_target_descriptors);
        assert_eq!(got.max_segment_descriptors, limits.max_segment_descriptors);
        assert_eq!(got.max_segment_length, 1 << 20);
        assert_eq!(CopyLimits::from_third_party_copy_vpd(&page[..3]), None);
    }

    #[test]
    fn hex_designators() {
        assert_eq!(
            parse_hex("3123456789abcdef"),
            Some(vec![0x31, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef])
        );
        assert_eq!(parse_hex("0x20:00:00:25:b5:00:00:01").unwrap().len(), 8);
        assert_eq!(parse_hex("123"), None);
        assert_eq!(parse_hex("zz"), None);
        assert_eq!(hex(&[0x0a, 0xff]), "0aff");
        let status = [0, 0, 0, 8, 0x01, 0, 3, 0x02, 0, 0, 0, 64];
        assert_eq!(
            describe_copy_status(&status).unwrap(),
            "COPY STATUS: completed, 3 segments processed, 64 MiB transferred"
        );
    }
}
