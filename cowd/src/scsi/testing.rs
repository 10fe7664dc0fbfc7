//! Shared fixtures of the SCSI tests: disks over memory devices, CDB builders and response
//! checks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::device::{BlockDevice, BlockSizes, Capabilities, Checked, MemoryDevice, ZeroFlags};

use super::disk::Disk;
use super::inquiry::LunIdentity;
use super::response::{Response, Status};

/// Size of the test disks: 4 MiB, 8192 blocks of 512 bytes.
pub const SIZE: u64 = 4 << 20;
/// Blocks of the test disks.
pub const BLOCKS: u64 = SIZE / 512;

pub fn identity() -> LunIdentity {
    LunIdentity {
        id: 0x0123_4567_89AB_CDEF,
        serial: "SN-0001".into(),
        product: "test disk".into(),
        name: "vol0".into(),
    }
}

/// A writable disk over a memory device.
pub fn memory_disk() -> Disk {
    disk_over(Arc::new(MemoryDevice::new(SIZE)))
}

/// A read-only disk over a memory device.
pub fn read_only_disk() -> Disk {
    disk_over(Arc::new(Checked::new(
        Arc::new(MemoryDevice::new(SIZE)),
        true,
    )))
}

pub fn disk_over(device: Arc<dyn BlockDevice>) -> Disk {
    Disk::new(device, identity()).unwrap()
}

/// Runs a command without data-out, expecting `alloc` bytes.
pub fn run(disk: &Disk, cdb: &[u8], expected: u32) -> Response {
    disk.execute(cdb, expected, &[])
}

/// The data-in of a command that must succeed.
pub fn good(disk: &Disk, cdb: &[u8], expected: u32) -> Vec<u8> {
    let r = run(disk, cdb, expected);
    assert_eq!(r.status, Status::Good, "{cdb:02x?}: {r:?}");
    r.data_in
}

/// (sense key, ASC, ASCQ) of a fixed-format CHECK CONDITION.
pub fn sense_of(r: &Response) -> (u8, u8, u8) {
    assert_eq!(r.status, Status::CheckCondition, "{r:?}");
    let s = r.sense.as_ref().expect("sense data");
    match s[0] & 0x7F {
        0x70 => (s[2] & 0x0F, s[12], s[13]),
        0x72 => (s[1] & 0x0F, s[2], s[3]),
        other => panic!("response code {other:#x}"),
    }
}

pub const ILLEGAL_REQUEST: u8 = 0x05;
pub const INVALID_FIELD_IN_CDB: (u8, u8, u8) = (ILLEGAL_REQUEST, 0x24, 0x00);
pub const LBA_OUT_OF_RANGE: (u8, u8, u8) = (ILLEGAL_REQUEST, 0x21, 0x00);
pub const INVALID_OPCODE: (u8, u8, u8) = (ILLEGAL_REQUEST, 0x20, 0x00);
pub const WRITE_PROTECTED: (u8, u8, u8) = (0x07, 0x27, 0x00);

/// READ (10).
pub fn read10(lba: u32, blocks: u16) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = 0x28;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// WRITE (10).
pub fn write10(lba: u32, blocks: u16) -> [u8; 10] {
    let mut c = read10(lba, blocks);
    c[0] = 0x2A;
    c
}

/// READ (16).
pub fn read16(lba: u64, blocks: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x88;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// WRITE (16).
pub fn write16(lba: u64, blocks: u32) -> [u8; 16] {
    let mut c = read16(lba, blocks);
    c[0] = 0x8A;
    c
}

/// INQUIRY.
pub fn inquiry(evpd: bool, page: u8, alloc: u16) -> [u8; 6] {
    let [hi, lo] = alloc.to_be_bytes();
    [0x12, u8::from(evpd), page, hi, lo, 0]
}

/// WRITE SAME (10).
pub fn write_same10(lba: u32, blocks: u16, unmap: bool) -> [u8; 10] {
    let mut c = read10(lba, blocks);
    c[0] = 0x41;
    if unmap {
        c[1] |= 0x08;
    }
    c
}

/// WRITE SAME (16).
pub fn write_same16(lba: u64, blocks: u32, unmap: bool, ndob: bool) -> [u8; 16] {
    let mut c = read16(lba, blocks);
    c[0] = 0x93;
    if unmap {
        c[1] |= 0x08;
    }
    if ndob {
        c[1] |= 0x01;
    }
    c
}

/// UNMAP with its parameter list for `ranges` of (lba, blocks).
pub fn unmap(ranges: &[(u64, u32)]) -> ([u8; 10], Vec<u8>) {
    let mut p = vec![0u8; 8];
    for &(lba, n) in ranges {
        p.extend_from_slice(&lba.to_be_bytes());
        p.extend_from_slice(&n.to_be_bytes());
        p.extend_from_slice(&[0; 4]);
    }
    let len = p.len() as u16;
    p[0..2].copy_from_slice(&(len - 2).to_be_bytes());
    p[2..4].copy_from_slice(&(len - 8).to_be_bytes());
    let mut c = [0u8; 10];
    c[0] = 0x42;
    c[7..9].copy_from_slice(&len.to_be_bytes());
    (c, p)
}

/// MODE SENSE (6).
pub fn mode_sense6(dbd: bool, pc: u8, page: u8, subpage: u8, alloc: u8) -> [u8; 6] {
    [
        0x1A,
        if dbd { 0x08 } else { 0 },
        (pc << 6) | page,
        subpage,
        alloc,
        0,
    ]
}

/// A memory device with chosen capabilities and request sizes that counts its flushes and
/// refuses what it does not advertise (as [`Checked`] would).
#[derive(Debug)]
pub struct CapsDevice {
    inner: MemoryDevice,
    pub caps: Capabilities,
    pub sizes: BlockSizes,
    pub flushes: AtomicU64,
}

impl CapsDevice {
    pub fn new(size: u64, caps: Capabilities, sizes: BlockSizes) -> CapsDevice {
        CapsDevice {
            inner: MemoryDevice::new(size),
            caps,
            sizes,
            flushes: AtomicU64::new(0),
        }
    }

    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    fn check(&self, len: usize) -> crate::device::Result<()> {
        assert!(len > 0, "zero-length request");
        assert!(
            len <= self.sizes.maximum as usize,
            "request above the maximum"
        );
        Ok(())
    }
}

impl BlockDevice for CapsDevice {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn block_sizes(&self) -> BlockSizes {
        self.sizes
    }

    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> crate::device::Result<()> {
        self.check(buf.len())?;
        self.inner.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64, fua: bool) -> crate::device::Result<()> {
        self.check(buf.len())?;
        assert!(!fua || self.caps.fua, "FUA on a device without FUA");
        self.inner.write_at(buf, offset, fua)
    }

    fn write_zeroes(&self, offset: u64, len: u64, flags: ZeroFlags) -> crate::device::Result<()> {
        assert!(self.caps.zero, "write_zeroes on a device without zero");
        self.inner.write_zeroes(offset, len, flags)
    }

    fn trim(&self, offset: u64, len: u64, fua: bool) -> crate::device::Result<()> {
        assert!(self.caps.trim, "trim on a device without trim");
        // Trimmed contents are unspecified: make that visible.
        self.inner.write_at(&vec![0xEE; len as usize], offset, fua)
    }

    fn flush(&self) -> crate::device::Result<()> {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
