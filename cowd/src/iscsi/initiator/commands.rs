//! The SCSI commands an initiator sends to a block device and the data they return (pure):
//! CDB builders, parsers of READ CAPACITY(16), INQUIRY and its VPD pages, and sense data
//! decoding. Layouts per SPC-4 and SBC-3; the target side of each is in [`crate::scsi`].
//!
//! Every parser takes the bytes a target returned, however short, and gives `None` (or
//! leaves a field at its "not reported" value) rather than panicking.

/// Operation codes.
pub const TEST_UNIT_READY: u8 = 0x00;
pub const INQUIRY: u8 = 0x12;
pub const MODE_SENSE_6: u8 = 0x1A;
pub const UNMAP: u8 = 0x42;
pub const EXTENDED_COPY: u8 = 0x83;
pub const RECEIVE_COPY_RESULTS: u8 = 0x84;
pub const READ_16: u8 = 0x88;
pub const WRITE_16: u8 = 0x8A;
pub const SYNCHRONIZE_CACHE_16: u8 = 0x91;
pub const SERVICE_ACTION_IN_16: u8 = 0x9E;
/// SERVICE ACTION IN(16) service action: READ CAPACITY(16).
pub const SA_READ_CAPACITY_16: u8 = 0x10;

/// SAM status codes an initiator acts on.
pub const GOOD: u8 = 0x00;
pub const CHECK_CONDITION: u8 = 0x02;

/// Sense keys an initiator acts on.
pub const UNIT_ATTENTION: u8 = 0x6;
pub const DATA_PROTECT: u8 = 0x7;
pub const ILLEGAL_REQUEST: u8 = 0x5;

/// VPD pages.
pub const VPD_SUPPORTED_PAGES: u8 = 0x00;
pub const VPD_DEVICE_IDENTIFICATION: u8 = 0x83;
pub const VPD_BLOCK_LIMITS: u8 = 0xB0;
pub const VPD_PROVISIONING: u8 = 0xB2;

/// Designator type of an NAA designator (VPD 83h).
pub const DESIGNATOR_NAA: u8 = 0x3;
/// Association of a designator with the logical unit (VPD 83h).
pub const ASSOCIATION_LU: u8 = 0x0;

/// Bytes of one UNMAP block descriptor.
const UNMAP_DESCRIPTOR_LEN: usize = 16;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// TEST UNIT READY.
pub fn test_unit_ready() -> [u8; 6] {
    [TEST_UNIT_READY, 0, 0, 0, 0, 0]
}

/// INQUIRY of the standard data (`page` `None`) or of a VPD page.
pub fn inquiry(page: Option<u8>, alloc: u16) -> [u8; 6] {
    let [hi, lo] = alloc.to_be_bytes();
    let (evpd, code) = match page {
        Some(p) => (1, p),
        None => (0, 0),
    };
    [INQUIRY, evpd, code, hi, lo, 0]
}

/// MODE SENSE(6) of all pages, without block descriptors (for the header's WP bit).
pub fn mode_sense_6(alloc: u8) -> [u8; 6] {
    [MODE_SENSE_6, 0x08, 0x3F, 0, alloc, 0]
}

/// READ CAPACITY(16).
pub fn read_capacity_16(alloc: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = SERVICE_ACTION_IN_16;
    c[1] = SA_READ_CAPACITY_16;
    c[10..14].copy_from_slice(&alloc.to_be_bytes());
    c
}

fn rw16(opcode: u8, lba: u64, blocks: u32, fua: bool) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = opcode;
    if fua {
        c[1] = 0x08;
    }
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// READ(16) of `blocks` blocks at `lba`.
pub fn read_16(lba: u64, blocks: u32) -> [u8; 16] {
    rw16(READ_16, lba, blocks, false)
}

/// WRITE(16) of `blocks` blocks at `lba`; with `fua`, durable before the status.
pub fn write_16(lba: u64, blocks: u32, fua: bool) -> [u8; 16] {
    rw16(WRITE_16, lba, blocks, fua)
}

/// SYNCHRONIZE CACHE(16) of the whole medium (LBA 0, 0 blocks: to the end).
pub fn synchronize_cache_16() -> [u8; 16] {
    rw16(SYNCHRONIZE_CACHE_16, 0, 0, false)
}

/// UNMAP with a parameter list of `param_len` bytes.
pub fn unmap(param_len: u16) -> [u8; 10] {
    let [hi, lo] = param_len.to_be_bytes();
    [UNMAP, 0, 0, 0, 0, 0, 0, hi, lo, 0]
}

/// The UNMAP parameter list of `ranges` (LBA, blocks).
pub fn unmap_parameters(ranges: &[(u64, u32)]) -> Vec<u8> {
    let descriptors = ranges.len() * UNMAP_DESCRIPTOR_LEN;
    let mut p = Vec::with_capacity(8 + descriptors);
    p.extend_from_slice(&((6 + descriptors) as u16).to_be_bytes());
    p.extend_from_slice(&(descriptors as u16).to_be_bytes());
    p.extend_from_slice(&[0; 4]);
    for &(lba, blocks) in ranges {
        p.extend_from_slice(&lba.to_be_bytes());
        p.extend_from_slice(&blocks.to_be_bytes());
        p.extend_from_slice(&[0; 4]);
    }
    p
}

/// EXTENDED COPY (LID1, service action 00h) with a parameter list of `param_len` bytes.
pub fn extended_copy(param_len: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = EXTENDED_COPY;
    c[10..14].copy_from_slice(&param_len.to_be_bytes());
    c
}

/// RECEIVE COPY RESULTS with `service_action` for list `list_id`.
pub fn receive_copy_results(service_action: u8, list_id: u8, alloc: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = RECEIVE_COPY_RESULTS;
    c[1] = service_action & 0x1F;
    c[2] = list_id;
    c[10..14].copy_from_slice(&alloc.to_be_bytes());
    c
}

/// What READ CAPACITY(16) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Number of logical blocks (RETURNED LOGICAL BLOCK ADDRESS + 1).
    pub blocks: u64,
    pub block_size: u32,
    /// LBPME: logical block provisioning management (UNMAP may deallocate).
    pub lbpme: bool,
    /// LBPRZ: unmapped blocks read as zeroes.
    pub lbprz: bool,
}

impl Capacity {
    /// READ CAPACITY(16) parameter data (at least 16 bytes); `None` when short or senseless.
    pub fn parse(d: &[u8]) -> Option<Capacity> {
        let last = be64(d, 0)?;
        let block_size = be32(d, 8)?;
        if block_size == 0 || last == u64::MAX {
            return None;
        }
        let flags = d.get(14).copied().unwrap_or(0);
        Some(Capacity {
            blocks: last + 1,
            block_size,
            lbpme: flags & 0x80 != 0,
            lbprz: flags & 0x40 != 0,
        })
    }

    /// Size in bytes.
    pub fn bytes(&self) -> u64 {
        self.blocks.saturating_mul(u64::from(self.block_size))
    }
}

/// The standard INQUIRY data an initiator checks before using a logical unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standard {
    /// PERIPHERAL QUALIFIER: 0 connected, 1 not connected now, 3 no logical unit here.
    pub qualifier: u8,
    /// PERIPHERAL DEVICE TYPE: 00h direct access block device.
    pub device_type: u8,
    /// 3PC: the logical unit is a copy manager (EXTENDED COPY).
    pub third_party_copy: bool,
}

impl Standard {
    pub fn parse(d: &[u8]) -> Option<Standard> {
        let b0 = *d.first()?;
        Some(Standard {
            qualifier: b0 >> 5,
            device_type: b0 & 0x1F,
            third_party_copy: d.get(5).is_some_and(|b| b & 0x08 != 0),
        })
    }
}

/// The body of a VPD page (after its 4-byte header), if `d` is page `page`.
pub fn vpd_body(d: &[u8], page: u8) -> Option<&[u8]> {
    if *d.get(1)? != page {
        return None;
    }
    let len = usize::from(be16(d, 2)?);
    d.get(4..(4 + len).min(d.len()))
}

/// The page codes of the Supported VPD Pages page.
pub fn supported_pages(d: &[u8]) -> Vec<u8> {
    vpd_body(d, VPD_SUPPORTED_PAGES)
        .map(<[u8]>::to_vec)
        .unwrap_or_default()
}

/// The limits of the Block Limits VPD page (B0h) an initiator obeys; 0 means "not reported".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlockLimits {
    /// MAXIMUM TRANSFER LENGTH, in blocks.
    pub max_transfer: u32,
    /// OPTIMAL TRANSFER LENGTH, in blocks.
    pub optimal_transfer: u32,
    /// MAXIMUM UNMAP LBA COUNT.
    pub max_unmap_blocks: u32,
    /// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT.
    pub max_unmap_descriptors: u32,
}

impl BlockLimits {
    /// The whole VPD page B0h, header included.
    pub fn parse(d: &[u8]) -> BlockLimits {
        let Some(body) = vpd_body(d, VPD_BLOCK_LIMITS) else {
            return BlockLimits::default();
        };
        // Offsets of the page, whose body starts at byte 4.
        let at = |page_offset: usize| be32(body, page_offset - 4).unwrap_or(0);
        BlockLimits {
            max_transfer: at(8),
            optimal_transfer: at(12),
            max_unmap_blocks: at(20),
            max_unmap_descriptors: at(24),
        }
    }
}

/// LBPU of the Logical Block Provisioning VPD page (B2h): UNMAP is supported.
pub fn unmap_supported(d: &[u8]) -> bool {
    vpd_body(d, VPD_PROVISIONING)
        .and_then(|b| b.get(1))
        .is_some_and(|b| b & 0x80 != 0)
}

/// The WP bit of a MODE SENSE(6) header: the medium is write-protected.
pub fn write_protected(mode_sense_6: &[u8]) -> bool {
    mode_sense_6.get(2).is_some_and(|b| b & 0x80 != 0)
}

/// One designation descriptor of the Device Identification VPD page (83h).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Designator {
    pub code_set: u8,
    pub association: u8,
    pub designator_type: u8,
    pub value: Vec<u8>,
}

/// The designation descriptors of a Device Identification VPD page (83h), header included.
pub fn designators(d: &[u8]) -> Vec<Designator> {
    let Some(mut body) = vpd_body(d, VPD_DEVICE_IDENTIFICATION) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    while body.len() >= 4 {
        let len = usize::from(body[3]);
        let Some(value) = body.get(4..4 + len) else {
            break;
        };
        out.push(Designator {
            code_set: body[0] & 0x0F,
            association: (body[1] >> 4) & 0b11,
            designator_type: body[1] & 0x0F,
            value: value.to_vec(),
        });
        body = &body[4 + len..];
    }
    out
}

/// The first NAA designator of the logical unit in a VPD 83h page.
pub fn naa(d: &[u8]) -> Option<Designator> {
    designators(d)
        .into_iter()
        .find(|x| x.designator_type == DESIGNATOR_NAA && x.association == ASSOCIATION_LU)
}

/// Sense key, additional sense code and qualifier of sense data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SenseCodes {
    pub key: u8,
    pub asc: u8,
    pub ascq: u8,
}

impl std::fmt::Display for SenseCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sense key {:02X}h, ASC/ASCQ {:02X}h/{:02X}h",
            self.key, self.asc, self.ascq
        )
    }
}

/// The codes of fixed (70h/71h) or descriptor (72h/73h) format sense data.
pub fn sense_codes(s: &[u8]) -> Option<SenseCodes> {
    match s.first()? & 0x7F {
        0x70 | 0x71 => Some(SenseCodes {
            key: s.get(2)? & 0x0F,
            asc: s.get(12).copied().unwrap_or(0),
            ascq: s.get(13).copied().unwrap_or(0),
        }),
        0x72 | 0x73 => Some(SenseCodes {
            key: s.get(1)? & 0x0F,
            asc: s.get(2).copied().unwrap_or(0),
            ascq: s.get(3).copied().unwrap_or(0),
        }),
        _ => None,
    }
}
