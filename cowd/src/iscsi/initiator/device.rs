//! A logical unit reached over iSCSI as a [`BlockDevice`] (a mover's copy target, a test's
//! view of a target).
//!
//! ```text
//!  connect: login ─ TEST UNIT READY (unit attentions cleared) ─ INQUIRY (a block device?)
//!           ─ READ CAPACITY(16) ─ VPD 00h [B0h limits] [B2h LBPU] ─ MODE SENSE(6) WP
//!
//!  read_at / write_at ─ pieces of at most the maximum transfer length ─ READ(16) / WRITE(16)
//!  flush ─ SYNCHRONIZE CACHE(16)      trim ─ UNMAP (when READ CAPACITY and B2h/B0h allow)
//! ```
//!
//! One session behind a mutex, held for one command from its first PDU to its status: one
//! command in flight is what lets a std mutex be the whole scheduler, as in the NBD client.
//! A piece is bounded by the Block Limits page's MAXIMUM TRANSFER LENGTH and by
//! [`MAX_PAYLOAD`], not by MaxBurstLength: a burst bounds one Data-In or R2T sequence, and the
//! session runs as many as a command needs.
//!
//! A CHECK CONDITION becomes a [`DeviceError`] in one place, [`status_error`]; a UNIT
//! ATTENTION is retried a few times first (a target reports one after a reset or a capacity
//! change, and the command itself did not run). A transport error breaks the session and
//! fails every later request with [`ErrorKind::Io`]: the caller fails over, this device never
//! logs in again on its own.

use std::io;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::commands::{self, BlockLimits, Capacity, SenseCodes, Standard};
use super::{CommandError, Completion, LoginError, Session};
use crate::device::{
    BlockDevice, BlockSizes, Capabilities, DeviceError, ErrorKind, MAX_PAYLOAD, Op, Result,
    ZeroFlags,
};
use crate::iscsi::url::IscsiUrl;

/// Times a command is sent again after a UNIT ATTENTION.
const UNIT_ATTENTION_RETRIES: u32 = 4;
/// The zero buffer of `write_zeroes`.
const ZERO_CHUNK: usize = 1 << 20;
/// Allocation lengths of the set-up commands.
const INQUIRY_LEN: u16 = 255;
const VPD_LEN: u16 = 1024;
const CAPACITY_LEN: u32 = 32;

/// Why [`IscsiDevice::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Login(#[from] LoginError),
    /// Logged in, but the logical unit cannot be used: `what` failed for `reason`.
    #[error("{url}: {what}: {reason}")]
    Setup {
        url: String,
        what: &'static str,
        reason: String,
        /// The connection failed (rather than the target answering no).
        down: bool,
    },
}

impl ConnectError {
    /// The path is down; another path may work.
    pub fn unreachable(&self) -> bool {
        match self {
            ConnectError::Login(e) => e.unreachable(),
            ConnectError::Setup { down, .. } => *down,
        }
    }
}

/// How UNMAP requests are cut.
#[derive(Debug, Clone, Copy)]
struct UnmapLimits {
    max_blocks: u32,
    max_descriptors: u32,
}

/// A logical unit behind an iSCSI target.
pub struct IscsiDevice {
    url: IscsiUrl,
    capacity: Capacity,
    /// Largest READ/WRITE piece, in bytes (a multiple of the block size).
    max_transfer: u32,
    preferred: u32,
    unmap: Option<UnmapLimits>,
    caps: Capabilities,
    /// The session; held from a command's first PDU to its status.
    session: Mutex<Session>,
}

impl std::fmt::Debug for IscsiDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IscsiDevice")
            .field("url", &self.url)
            .field("capacity", &self.capacity)
            .field("max_transfer", &self.max_transfer)
            .finish()
    }
}

/// What went wrong with one command, before it becomes a [`DeviceError`].
#[derive(Debug)]
enum Failure {
    Transport(CommandError),
    Status {
        status: u8,
        sense: Option<SenseCodes>,
    },
    Short {
        wanted: usize,
        got: usize,
    },
    /// Parameter data that cannot be read.
    Malformed,
    /// INQUIRY: no logical unit at this LUN.
    NotHere,
    /// INQUIRY: a logical unit of this peripheral device type, not a block device.
    NotBlock(u8),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Transport(e) => write!(f, "{e}"),
            Failure::Status {
                status,
                sense: Some(s),
            } => write!(f, "SCSI status {status:02X}h, {s}"),
            Failure::Status {
                status,
                sense: None,
            } => write!(f, "SCSI status {status:02X}h"),
            Failure::Short { wanted, got } => {
                write!(f, "the target sent {got} of {wanted} bytes")
            }
            Failure::Malformed => f.write_str("malformed parameter data"),
            Failure::NotHere => f.write_str("no logical unit at this LUN"),
            Failure::NotBlock(t) => {
                write!(f, "peripheral device type {t:02X}h, not a block device")
            }
        }
    }
}

/// The one mapping of a failed command to a device error: DATA PROTECT is a read-only
/// medium (or, 27h/07h, a full one), LOGICAL BLOCK ADDRESS OUT OF RANGE is out of range,
/// everything else an I/O error whose message says what the target said.
fn status_error(url: &IscsiUrl, f: Failure, op: Op, offset: u64, len: u64) -> DeviceError {
    let kind = match &f {
        Failure::Status {
            sense: Some(s),
            status: commands::CHECK_CONDITION,
        } => match (s.key, s.asc, s.ascq) {
            (commands::DATA_PROTECT, 0x27, 0x07) => ErrorKind::NoSpace,
            (commands::DATA_PROTECT, _, _) => ErrorKind::ReadOnly,
            (commands::ILLEGAL_REQUEST, 0x21, 0x00) => ErrorKind::OutOfRange,
            _ => ErrorKind::Io,
        },
        Failure::Status { .. }
        | Failure::Transport(_)
        | Failure::Short { .. }
        | Failure::Malformed
        | Failure::NotHere
        | Failure::NotBlock(_) => ErrorKind::Io,
    };
    let message = format!("{}: {f}", url.redacted());
    DeviceError {
        kind,
        op,
        offset,
        len,
        source: Some(io::Error::other(message)),
    }
}

fn is_unit_attention(c: &Completion) -> bool {
    c.status == commands::CHECK_CONDITION
        && commands::sense_codes(&c.sense).is_some_and(|s| s.key == commands::UNIT_ATTENTION)
}

/// One command on a locked session: retried after unit attentions, GOOD with every byte
/// asked for, or the failure.
fn run(
    s: &mut Session,
    cdb: &[u8],
    data_out: &[u8],
    data_in: &mut [u8],
) -> std::result::Result<Completion, Failure> {
    let mut attempt = 0;
    loop {
        let c = s
            .command_into(cdb, data_out, data_in)
            .map_err(Failure::Transport)?;
        if is_unit_attention(&c) && attempt < UNIT_ATTENTION_RETRIES {
            attempt += 1;
            continue;
        }
        if c.status != commands::GOOD {
            return Err(Failure::Status {
                status: c.status,
                sense: commands::sense_codes(&c.sense),
            });
        }
        return Ok(c);
    }
}

/// A set-up command's data-in (GOOD, any length).
fn query(s: &mut Session, cdb: &[u8], alloc: usize) -> std::result::Result<Vec<u8>, Failure> {
    let mut buf = vec![0u8; alloc];
    let c = run(s, cdb, &[], &mut buf)?;
    buf.truncate(c.received);
    Ok(buf)
}

/// What the set-up commands learn of a logical unit.
#[derive(Debug, Clone)]
struct Unit {
    capacity: Capacity,
    limits: BlockLimits,
    /// LBPU of VPD B2h.
    unmap_supported: bool,
    /// WP of MODE SENSE.
    write_protected: bool,
}

/// The set-up commands: the unit must be a block device with a capacity; the VPD pages and
/// MODE SENSE are optional (a target without them has no limits to report and a writable
/// medium). A failure names the command.
fn probe(s: &mut Session) -> std::result::Result<Unit, (&'static str, Failure)> {
    query(s, &commands::test_unit_ready(), 0).map_err(|f| ("TEST UNIT READY", f))?;
    let inquiry = query(
        s,
        &commands::inquiry(None, INQUIRY_LEN),
        usize::from(INQUIRY_LEN),
    )
    .map_err(|f| ("INQUIRY", f))?;
    match Standard::parse(&inquiry) {
        Some(u) if u.qualifier == 0 && u.device_type == 0 => {}
        Some(u) if u.qualifier != 0 => return Err(("INQUIRY", Failure::NotHere)),
        Some(u) => return Err(("INQUIRY", Failure::NotBlock(u.device_type))),
        None => return Err(("INQUIRY", Failure::Malformed)),
    }
    let capacity = query(
        s,
        &commands::read_capacity_16(CAPACITY_LEN),
        CAPACITY_LEN as usize,
    )
    .and_then(|d| Capacity::parse(&d).ok_or(Failure::Malformed))
    .map_err(|f| ("READ CAPACITY(16)", f))?;
    let vpd = |s: &mut Session, page| {
        query(
            s,
            &commands::inquiry(Some(page), VPD_LEN),
            usize::from(VPD_LEN),
        )
    };
    let pages = vpd(s, commands::VPD_SUPPORTED_PAGES)
        .map(|d| commands::supported_pages(&d))
        .unwrap_or_default();
    let limits = if pages.contains(&commands::VPD_BLOCK_LIMITS) {
        vpd(s, commands::VPD_BLOCK_LIMITS)
            .map(|d| BlockLimits::parse(&d))
            .unwrap_or_default()
    } else {
        BlockLimits::default()
    };
    let unmap_supported = pages.contains(&commands::VPD_PROVISIONING)
        && vpd(s, commands::VPD_PROVISIONING).is_ok_and(|d| commands::unmap_supported(&d));
    let write_protected =
        query(s, &commands::mode_sense_6(255), 255).is_ok_and(|d| commands::write_protected(&d));
    // An optional command whose failure broke the session fails the set-up all the same.
    if let Some(why) = s.broken() {
        let e = CommandError::Broken(why.to_owned());
        return Err(("set-up", Failure::Transport(e)));
    }
    Ok(Unit {
        capacity,
        limits,
        unmap_supported,
        write_protected,
    })
}

/// The largest READ/WRITE piece (the Block Limits maximum, at most [`MAX_PAYLOAD`], a whole
/// number of blocks) and the preferred request size (the optimal transfer length, else 4 KiB
/// or a block), in bytes.
pub(super) fn transfer_sizes(block_size: u32, limits: &BlockLimits) -> (u32, u32) {
    let bs = u64::from(block_size.max(1));
    let cap = match u64::from(limits.max_transfer) * bs {
        0 => u64::from(MAX_PAYLOAD),
        n => n.min(u64::from(MAX_PAYLOAD)),
    };
    let max = (cap / bs).max(1) * bs;
    let preferred = match u64::from(limits.optimal_transfer) * bs {
        0 => 4096u64.max(bs),
        n => n.min(max),
    };
    (max as u32, preferred as u32)
}

/// UNMAP is offered when READ CAPACITY says LBPME, VPD B2h LBPU, and B0h gives the counts.
fn unmap_limits(u: &Unit) -> Option<UnmapLimits> {
    let l = &u.limits;
    let usable = u.capacity.lbpme
        && u.unmap_supported
        && l.max_unmap_blocks > 0
        && l.max_unmap_descriptors > 0;
    usable.then_some(UnmapLimits {
        max_blocks: l.max_unmap_blocks,
        max_descriptors: l.max_unmap_descriptors,
    })
}

impl IscsiDevice {
    /// Logs in to the logical unit of `url` and learns its size and limits; `timeout` bounds
    /// every socket operation, then and for the device's whole life.
    pub fn connect(
        url: &IscsiUrl,
        initiator_name: &str,
        timeout: Duration,
    ) -> std::result::Result<IscsiDevice, ConnectError> {
        IscsiDevice::connect_from(url, initiator_name, None, timeout)
    }

    /// [`IscsiDevice::connect`] from the local address `from` (an initiator port; `None`:
    /// any).
    pub fn connect_from(
        url: &IscsiUrl,
        initiator_name: &str,
        from: Option<IpAddr>,
        timeout: Duration,
    ) -> std::result::Result<IscsiDevice, ConnectError> {
        let mut s = Session::login_from(url, initiator_name, from, timeout)?;
        let unit = probe(&mut s).map_err(|(what, f)| ConnectError::Setup {
            url: url.redacted(),
            what,
            down: matches!(&f, Failure::Transport(e) if e.breaks_session()),
            reason: f.to_string(),
        })?;
        let (max_transfer, preferred) = transfer_sizes(unit.capacity.block_size, &unit.limits);
        let unmap = unmap_limits(&unit);
        Ok(IscsiDevice {
            url: url.clone(),
            capacity: unit.capacity,
            max_transfer,
            preferred,
            unmap,
            caps: Capabilities {
                read_only: unit.write_protected,
                flush: true,
                fua: true,
                trim: unmap.is_some(),
                ..Capabilities::default()
            },
            session: Mutex::new(s),
        })
    }

    pub fn url(&self) -> &IscsiUrl {
        &self.url
    }

    /// Logical block size.
    pub fn block_size(&self) -> u32 {
        self.capacity.block_size
    }

    /// What the session's login agreed on.
    pub fn negotiated(&self) -> super::Negotiated {
        self.lock().negotiated().clone()
    }

    /// True once a transport error broke the session (every request now fails).
    pub fn is_broken(&self) -> bool {
        self.lock().broken().is_some()
    }

    /// Sends any command through the device's session (the NAA designator in VPD 83h, a
    /// test's command).
    pub fn command(
        &self,
        cdb: &[u8],
        data_out: &[u8],
        data_in_len: u32,
    ) -> std::result::Result<super::Reply, CommandError> {
        self.lock().command(cdb, data_out, data_in_len)
    }

    /// The session, also after a thread panicked holding it (which breaks it).
    pub(super) fn lock(&self) -> MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(|poisoned| {
            let mut s = poisoned.into_inner();
            s.break_with("a thread panicked in the middle of a command".into());
            s
        })
    }

    fn error(&self, f: Failure, op: Op, offset: u64, len: u64) -> DeviceError {
        status_error(&self.url, f, op, offset, len)
    }

    /// The LBA of `offset` and the block count of `len`, both multiples of the block size.
    fn blocks(&self, op: Op, offset: u64, len: u64) -> Result<(u64, u64)> {
        let bs = u64::from(self.capacity.block_size);
        if offset % bs != 0 || len % bs != 0 {
            return Err(DeviceError::new(ErrorKind::Misaligned, op, offset, len));
        }
        if offset.checked_add(len).is_none_or(|end| end > self.size()) {
            return Err(DeviceError::new(ErrorKind::OutOfRange, op, offset, len));
        }
        Ok((offset / bs, len / bs))
    }

    /// Runs one command whose data fills `data_in` or is `data_out`, whole.
    fn transfer(
        &self,
        op: Op,
        offset: u64,
        cdb: &[u8],
        data_out: &[u8],
        data_in: &mut [u8],
    ) -> Result<()> {
        let len = data_out.len().max(data_in.len());
        let mut s = self.lock();
        let c = run(&mut s, cdb, data_out, data_in)
            .map_err(|f| self.error(f, op, offset, len as u64))?;
        if !data_in.is_empty() && c.received < data_in.len() {
            let f = Failure::Short {
                wanted: data_in.len(),
                got: c.received,
            };
            return Err(self.error(f, op, offset, len as u64));
        }
        Ok(())
    }
}

impl BlockDevice for IscsiDevice {
    fn size(&self) -> u64 {
        self.capacity.bytes()
    }

    fn block_sizes(&self) -> BlockSizes {
        BlockSizes {
            minimum: self.capacity.block_size,
            preferred: self.preferred,
            maximum: self.max_transfer,
        }
    }

    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.blocks(Op::Read, offset, buf.len() as u64)?;
        let bs = u64::from(self.capacity.block_size);
        let mut at = 0usize;
        for piece in buf.chunks_mut(self.max_transfer as usize) {
            let off = offset + at as u64;
            let cdb = commands::read_16(off / bs, (piece.len() as u64 / bs) as u32);
            at += piece.len();
            self.transfer(Op::Read, off, &cdb, &[], piece)?;
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.blocks(Op::Write, offset, buf.len() as u64)?;
        let bs = u64::from(self.capacity.block_size);
        let mut at = 0usize;
        for piece in buf.chunks(self.max_transfer as usize) {
            let off = offset + at as u64;
            let cdb = commands::write_16(off / bs, (piece.len() as u64 / bs) as u32, fua);
            at += piece.len();
            self.transfer(Op::Write, off, &cdb, piece, &mut [])?;
        }
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64, flags: ZeroFlags) -> Result<()> {
        if flags.fast {
            return Err(DeviceError::new(
                ErrorKind::NotFast,
                Op::WriteZeroes,
                offset,
                len,
            ));
        }
        self.blocks(Op::WriteZeroes, offset, len)?;
        let zeroes = vec![0u8; ZERO_CHUNK.min(len as usize)];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(zeroes.len() as u64) as usize;
            self.write_at(&zeroes[..n], offset + done, flags.fua)
                .map_err(|mut e| {
                    e.op = Op::WriteZeroes;
                    e
                })?;
            done += n as u64;
        }
        Ok(())
    }

    fn trim(&self, offset: u64, len: u64, _fua: bool) -> Result<()> {
        let Some(limits) = self.unmap else {
            return Err(DeviceError::new(
                ErrorKind::Unsupported,
                Op::Trim,
                offset,
                len,
            ));
        };
        let (lba, blocks) = self.blocks(Op::Trim, offset, len)?;
        let ranges = unmap_ranges(lba, blocks, limits.max_blocks);
        // UNMAP's parameter list length is 16 bits: at most 4095 descriptors.
        let per_command = (limits.max_descriptors as usize).clamp(1, 4095);
        for group in ranges.chunks(per_command) {
            let params = commands::unmap_parameters(group);
            let cdb = commands::unmap(params.len() as u16);
            self.transfer(Op::Trim, offset, &cdb, &params, &mut [])?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.transfer(
            Op::Flush,
            0,
            &commands::synchronize_cache_16(),
            &[],
            &mut [],
        )
    }
}

/// `blocks` blocks from `lba` as UNMAP descriptors of at most `max_blocks` each.
pub(super) fn unmap_ranges(lba: u64, blocks: u64, max_blocks: u32) -> Vec<(u64, u32)> {
    let step = u64::from(max_blocks.max(1));
    let mut out = Vec::new();
    let mut at = 0;
    while at < blocks {
        let n = (blocks - at).min(step);
        out.push((lba + at, n as u32));
        at += n;
    }
    out
}
