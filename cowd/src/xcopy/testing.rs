//! Shared fixtures of the copy manager's tests: logical units over memory devices with a
//! resolver over them, devices with chosen request sizes or a gate, parameter lists written
//! byte by byte from the published layouts, CDBs, and sense data read back.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crate::device::{BlockDevice, BlockSizes, Capabilities, MemoryDevice, Result};
use crate::jobs::CopyService;
use crate::scsi::{Disk, LunIdentity, Response, Status};
use crate::xcopy::params::Limits;
use crate::xcopy::{CopyManager, LocalUnit, LocalUnits};

/// Size of the test units: 4 MiB (8192 blocks of 512 bytes).
pub const SIZE: u64 = 4 << 20;

/// The units a set of copy managers can reach, found by NAA designator. Each unit found is
/// held (counted in `holds`) until the job using it ends.
#[derive(Debug, Default)]
pub struct Units {
    disks: Mutex<Vec<Arc<Disk>>>,
    pub holds: Arc<AtomicUsize>,
}

/// One hold on a unit, counted while it lives.
#[derive(Debug)]
struct Held(Arc<AtomicUsize>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl LocalUnits for Units {
    fn find(&self, naa: &[u8]) -> Option<LocalUnit> {
        let disk = self
            .disks
            .lock()
            .unwrap()
            .iter()
            .find(|d| d.naa().as_slice() == naa)?
            .clone();
        self.holds.fetch_add(1, Ordering::SeqCst);
        Some(LocalUnit {
            disk,
            hold: Some(Box::new(Held(self.holds.clone()))),
        })
    }
}

/// Units with copy managers that find one another.
#[derive(Debug)]
pub struct Rig {
    pub units: Arc<Units>,
    pub disks: Vec<Arc<Disk>>,
    pub managers: Vec<Arc<CopyManager>>,
}

impl Rig {
    /// `n` units over 4 MiB memory devices.
    pub fn memory(n: usize) -> Rig {
        let devices = (0..n)
            .map(|_| Arc::new(MemoryDevice::new(SIZE)) as Arc<dyn BlockDevice>)
            .collect();
        Rig::over(devices, Limits::default())
    }

    /// A unit over each device, its copy manager parsing with `limits`.
    pub fn over(devices: Vec<Arc<dyn BlockDevice>>, limits: Limits) -> Rig {
        Rig::build(devices, limits, None)
    }

    /// `n` units over 4 MiB memory devices whose copy managers hand lists naming a copy
    /// target to `service`.
    pub fn with_service(n: usize, service: Arc<CopyService>) -> Rig {
        let devices = (0..n)
            .map(|_| Arc::new(MemoryDevice::new(SIZE)) as Arc<dyn BlockDevice>)
            .collect();
        Rig::build(devices, Limits::default(), Some(service))
    }

    fn build(
        devices: Vec<Arc<dyn BlockDevice>>,
        limits: Limits,
        service: Option<Arc<CopyService>>,
    ) -> Rig {
        let units = Arc::new(Units::default());
        let mut disks = Vec::new();
        let mut managers = Vec::new();
        for (i, device) in devices.into_iter().enumerate() {
            let mut manager = CopyManager::with_limits(units.clone(), limits);
            if let Some(s) = &service {
                manager = manager.with_service(s.clone());
            }
            let manager = Arc::new(manager);
            let identity = LunIdentity {
                id: 0x0C0D_0000 + i as u64,
                serial: format!("xcopy-{i}"),
                product: "xcopy test".into(),
                name: format!("vol{i}"),
            };
            let disk = Disk::new(device, identity)
                .unwrap()
                .with_copy(manager.clone());
            disks.push(Arc::new(disk));
            managers.push(manager);
        }
        *units.disks.lock().unwrap() = disks.clone();
        Rig {
            units,
            disks,
            managers,
        }
    }

    pub fn naa(&self, unit: usize) -> [u8; 8] {
        self.disks[unit].naa()
    }
}

/// A memory device with chosen request sizes (a `minimum` of 4096 makes a unit of
/// 4096-byte blocks), that remembers its largest request and can hold reads at a gate.
#[derive(Debug)]
pub struct Shaped {
    inner: MemoryDevice,
    sizes: BlockSizes,
    pub gate: Option<Arc<Gate>>,
    pub largest: AtomicUsize,
}

impl Shaped {
    pub fn new(size: u64, minimum: u32, maximum: u32) -> Shaped {
        Shaped {
            inner: MemoryDevice::new(size),
            sizes: BlockSizes {
                minimum,
                preferred: minimum.max(4096),
                maximum,
            },
            gate: None,
            largest: AtomicUsize::new(0),
        }
    }

    pub fn gated(mut self, gate: Arc<Gate>) -> Shaped {
        self.gate = Some(gate);
        self
    }

    fn saw(&self, len: usize) {
        assert!(
            len <= self.sizes.maximum as usize,
            "request above the maximum"
        );
        assert_eq!(len % self.sizes.minimum as usize, 0, "misaligned request");
        self.largest.fetch_max(len, Ordering::SeqCst);
    }
}

impl BlockDevice for Shaped {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn block_sizes(&self) -> BlockSizes {
        self.sizes
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.saw(buf.len());
        if let Some(g) = &self.gate {
            g.pass();
        }
        self.inner.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.saw(buf.len());
        self.inner.write_at(buf, offset, fua)
    }
}

/// Holds readers until opened; tells when one is waiting.
#[derive(Debug, Default)]
pub struct Gate {
    state: Mutex<(bool, usize)>,
    changed: Condvar,
}

impl Gate {
    /// Called by a reader: waits until the gate is open.
    fn pass(&self) {
        let mut s = self.state.lock().unwrap();
        s.1 += 1;
        self.changed.notify_all();
        while !s.0 {
            s = self.changed.wait(s).unwrap();
        }
        s.1 -= 1;
    }

    /// Waits until a reader waits at the gate.
    pub fn wait_for_reader(&self) {
        let mut s = self.state.lock().unwrap();
        while s.1 == 0 {
            s = self.changed.wait(s).unwrap();
        }
    }

    pub fn open(&self) {
        self.state.lock().unwrap().0 = true;
        self.changed.notify_all();
    }
}

/// The SPC-4 LID1 parameter list header (16 bytes): LIST IDENTIFIER, LIST ID USAGE (bits
/// 4..3 of byte 1), TARGET DESCRIPTOR LIST LENGTH (bytes 2..4), SEGMENT DESCRIPTOR LIST
/// LENGTH (bytes 8..12), INLINE DATA LENGTH 0 (bytes 12..16).
pub fn spc_header(list_id: u8, usage: u8, targets_len: usize, segments_len: usize) -> Vec<u8> {
    let mut h = vec![0u8; 16];
    h[0] = list_id;
    h[1] = (usage & 0b11) << 3;
    h[2..4].copy_from_slice(&(targets_len as u16).to_be_bytes());
    h[8..12].copy_from_slice(&(segments_len as u32).to_be_bytes());
    h
}

/// A whole SPC list.
pub fn spc_list(list_id: u8, usage: u8, targets: &[[u8; 32]], segments: &[Vec<u8>]) -> Vec<u8> {
    let segments_len = segments.iter().map(Vec::len).sum();
    let mut l = spc_header(list_id, usage, 32 * targets.len(), segments_len);
    targets.iter().for_each(|t| l.extend_from_slice(t));
    segments.iter().for_each(|s| l.extend_from_slice(s));
    l
}

/// An identification target descriptor (E4h) with an NAA designator associated with a
/// logical unit, PERIPHERAL DEVICE TYPE `pdt`, and `block_len` in bytes 29..32 (DISK BLOCK
/// LENGTH for a block device, STREAM BLOCK LENGTH for a stream device).
pub fn naa_target(naa: [u8; 8], pdt: u8, block_len: u32) -> [u8; 32] {
    let mut d = [0u8; 32];
    d[0] = 0xE4;
    d[1] = pdt & 0x1F;
    d[4] = 0x01; // CODE SET: binary
    d[5] = 0x03; // ASSOCIATION: logical unit; DESIGNATOR TYPE: NAA
    d[7] = 8; // DESIGNATOR LENGTH
    d[8..16].copy_from_slice(&naa);
    d[29..32].copy_from_slice(&block_len.to_be_bytes()[1..]);
    d
}

/// A block→block segment descriptor (02h, 28 bytes).
pub fn b2b(src: u16, dst: u16, blocks: u16, src_lba: u64, dst_lba: u64, dc: bool) -> Vec<u8> {
    let mut d = vec![0u8; 28];
    d[0] = 0x02;
    d[1] = u8::from(dc) << 1;
    d[2..4].copy_from_slice(&0x0018u16.to_be_bytes());
    d[4..6].copy_from_slice(&src.to_be_bytes());
    d[6..8].copy_from_slice(&dst.to_be_bytes());
    d[10..12].copy_from_slice(&blocks.to_be_bytes());
    d[12..20].copy_from_slice(&src_lba.to_be_bytes());
    d[20..28].copy_from_slice(&dst_lba.to_be_bytes());
    d
}

/// A block→stream (00h) or stream→block (01h) segment descriptor (24 bytes).
pub fn block_stream(code: u8, src: u16, dst: u16, blocks: u16, lba: u64) -> Vec<u8> {
    let mut d = vec![0u8; 24];
    d[0] = code;
    d[2..4].copy_from_slice(&0x0014u16.to_be_bytes());
    d[4..6].copy_from_slice(&src.to_be_bytes());
    d[6..8].copy_from_slice(&dst.to_be_bytes());
    // STREAM DEVICE TRANSFER LENGTH: 64 KiB.
    d[9..12].copy_from_slice(&(64u32 << 10).to_be_bytes()[1..]);
    d[14..16].copy_from_slice(&blocks.to_be_bytes());
    d[16..24].copy_from_slice(&lba.to_be_bytes());
    d
}

/// An inline data→stream segment descriptor (04h, 20 bytes): `bytes` bytes of the list's
/// inline data from `offset`.
pub fn inline_stream(dst: u16, offset: u32, bytes: u32) -> Vec<u8> {
    let mut d = vec![0u8; 20];
    d[0] = 0x04;
    d[2..4].copy_from_slice(&0x0010u16.to_be_bytes());
    d[6..8].copy_from_slice(&dst.to_be_bytes());
    d[9..12].copy_from_slice(&(64u32 << 10).to_be_bytes()[1..]);
    d[12..16].copy_from_slice(&offset.to_be_bytes());
    d[16..20].copy_from_slice(&bytes.to_be_bytes());
    d
}

/// An embedded data→stream segment descriptor (05h) carrying `data`, zero-padded.
pub fn embedded_stream(dst: u16, data: &[u8]) -> Vec<u8> {
    let field = data.len().next_multiple_of(4);
    let mut d = vec![0u8; 16 + field];
    d[0] = 0x05;
    d[2..4].copy_from_slice(&((12 + field) as u16).to_be_bytes());
    d[6..8].copy_from_slice(&dst.to_be_bytes());
    d[9..12].copy_from_slice(&(64u32 << 10).to_be_bytes()[1..]);
    d[12..14].copy_from_slice(&(data.len() as u16).to_be_bytes());
    d[16..16 + data.len()].copy_from_slice(data);
    d
}

/// `list` with `inline` as its inline data (INLINE DATA LENGTH set, the bytes appended).
pub fn with_inline(mut list: Vec<u8>, inline: &[u8]) -> Vec<u8> {
    list[12..16].copy_from_slice(&(inline.len() as u32).to_be_bytes());
    list.extend_from_slice(inline);
    list
}

/// EXTENDED COPY (LID1) of `list` on `disk`.
pub fn xcopy(disk: &Disk, list: &[u8]) -> Response {
    xcopy_from(disk, &crate::scsi::Nexus::default(), list)
}

/// EXTENDED COPY (LID1) of `list` on `disk`, arriving on `nexus`.
pub fn xcopy_from(disk: &Disk, nexus: &crate::scsi::Nexus, list: &[u8]) -> Response {
    xcopy_task(disk, nexus, crate::scsi::Abort::never(), list)
}

/// EXTENDED COPY (LID1) of `list` on `disk`, arriving on `nexus`, aborted by `abort`.
pub fn xcopy_task(
    disk: &Disk,
    nexus: &crate::scsi::Nexus,
    abort: &crate::scsi::Abort,
    list: &[u8],
) -> Response {
    let mut cdb = [0u8; 16];
    cdb[0] = 0x83;
    cdb[10..14].copy_from_slice(&(list.len() as u32).to_be_bytes());
    disk.execute_task(nexus, abort, &cdb, list.len() as u32, list)
}

/// RECEIVE COPY RESULTS with service action `sa` for list `id`.
pub fn rcr(disk: &Disk, sa: u8, id: u8, alloc: u32) -> Response {
    let mut cdb = [0u8; 16];
    cdb[0] = 0x84;
    cdb[1] = sa;
    cdb[2] = id;
    cdb[10..14].copy_from_slice(&alloc.to_be_bytes());
    disk.execute(&cdb, alloc, &[])
}

/// The data-in of a command that must succeed.
pub fn good(r: Response) -> Vec<u8> {
    assert_eq!(r.status, Status::Good, "{r:?}");
    r.data_in
}

/// (sense key, ASC, ASCQ) and the FIELD POINTER (when SKSV is set) of fixed-format sense.
pub fn sense_of(r: &Response) -> ((u8, u8, u8), Option<u16>) {
    assert_eq!(r.status, Status::CheckCondition, "{r:?}");
    fixed_sense(r.sense.as_deref().expect("sense data"))
}

/// The same, of fixed-format sense bytes.
pub fn fixed_sense(s: &[u8]) -> ((u8, u8, u8), Option<u16>) {
    assert_eq!(s[0] & 0x7F, 0x70, "fixed format: {s:02x?}");
    let pointer = (s[15] & 0x80 != 0).then(|| u16::from_be_bytes([s[16], s[17]]));
    ((s[2] & 0x0F, s[12], s[13]), pointer)
}

pub const COPY_ABORTED: u8 = 0x0A;
pub const ILLEGAL_REQUEST: u8 = 0x05;
pub const ABORTED_COMMAND: u8 = 0x0B;
pub const INVALID_FIELD_IN_CDB: (u8, u8, u8) = (ILLEGAL_REQUEST, 0x24, 0x00);

/// `len` pseudo-random bytes (xorshift64 from `seed`): no two pieces of a copy look alike,
/// so data copied from the wrong offset shows.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `data` at block `lba` of `disk`'s device, in requests the device takes.
pub fn put(disk: &Disk, lba: u64, data: &[u8]) {
    let mut offset = lba * u64::from(disk.block_size());
    for chunk in data.chunks(disk.profile().device_chunk) {
        disk.device().write_at(chunk, offset, false).unwrap();
        offset += chunk.len() as u64;
    }
}

/// Reads `len` bytes at block `lba` of `disk`'s device.
pub fn get(disk: &Disk, lba: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let mut offset = lba * u64::from(disk.block_size());
    for chunk in buf.chunks_mut(disk.profile().device_chunk) {
        disk.device().read_at(chunk, offset).unwrap();
        offset += chunk.len() as u64;
    }
    buf
}
