//! INQUIRY data (SPC-4 6.6, 7.8): the standard data and the vital product data pages.
//!
//! | page | name                          | content                                            |
//! |------|-------------------------------|----------------------------------------------------|
//! | —    | standard                      | direct access, SPC-4, vendor `COWD`, SAM-5/SPC-4/SBC-3 descriptors |
//! | 00h  | supported VPD pages           | this list, ascending                               |
//! | 80h  | unit serial number            | [`LunIdentity::serial`]                            |
//! | 83h  | device identification         | NAA 3 from [`LunIdentity::id`], T10 vendor ID with the export name |
//! | 8Fh  | third-party copy              | from the copy hook, only when there is one         |
//! | B0h  | block limits                  | [`Profile`] limits                                 |
//! | B1h  | block device characteristics  | rotation rate from `capabilities().rotational`     |
//! | B2h  | logical block provisioning    | LBPU, LBPWS, LBPWS10, LBPRZ from [`Profile`]       |
//!
//! The NAA designator is NAA 3h, "locally assigned" (SPC-4 7.8.6.6.4): cowd owns no IEEE
//! company identifier, so NAA 5h/6h are not its to use. Its 60 bits are the low 60 bits of the
//! 64-bit [`LunIdentity::id`], so ids must differ in those bits to identify distinct units.

use super::copy::CopyCommands;
use super::profile::{MAX_UNMAP_BLOCKS, MAX_UNMAP_DESCRIPTORS, Profile};
use super::sense::Sense;

/// T10 vendor identification of every cowd logical unit.
pub const VENDOR: &[u8; 8] = b"COWD    ";

/// Version descriptors claimed in the standard data: SAM-5, SPC-4, SBC-3.
const VERSION_DESCRIPTORS: [u16; 3] = [0x00A0, 0x0460, 0x04C0];

/// Length of the standard INQUIRY data.
const STANDARD_LEN: usize = 96;

/// Who a logical unit is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunIdentity {
    /// Stable unique id; its low 60 bits become the NAA designator.
    pub id: u64,
    /// Unit serial number (VPD 80h); printable ASCII, at most 252 bytes are reported.
    pub serial: String,
    /// Product identification (16 bytes of the standard data).
    pub product: String,
    /// Export name, reported in the T10 vendor ID designator.
    pub name: String,
}

/// The NAA 3h (locally assigned) designator of `id`.
pub fn naa(id: u64) -> [u8; 8] {
    ((3u64 << 60) | (id & ((1 << 60) - 1))).to_be_bytes()
}

/// Printable ASCII of `s` (other characters become `_`), at most `max` bytes.
fn ascii(s: &str, max: usize) -> Vec<u8> {
    s.chars()
        .take(max)
        .map(|c| match c {
            ' '..='~' => c as u8,
            _ => b'_',
        })
        .collect()
}

/// `s` as a space-padded fixed-width ASCII field.
fn padded<const N: usize>(s: &str) -> [u8; N] {
    let mut f = [b' '; N];
    let a = ascii(s, N);
    f[..a.len()].copy_from_slice(&a);
    f
}

/// The product revision level: the crate's major.minor version.
fn revision() -> [u8; 4] {
    let v = env!("CARGO_PKG_VERSION");
    let short: String = v.split('.').take(2).collect::<Vec<_>>().join(".");
    padded::<4>(&short)
}

/// What the INQUIRY pages of one logical unit are made from.
#[derive(Debug, Clone, Copy)]
pub struct Inquiry<'a> {
    pub identity: &'a LunIdentity,
    pub profile: &'a Profile,
    pub copy: Option<&'a dyn CopyCommands>,
}

impl Inquiry<'_> {
    /// The standard INQUIRY data (96 bytes).
    pub fn standard(&self) -> Vec<u8> {
        let mut d = standard_frame(0x00, self.copy.is_some());
        let product = if self.identity.product.is_empty() {
            "cowd export"
        } else {
            &self.identity.product
        };
        d[16..32].copy_from_slice(&padded::<16>(product));
        d
    }

    /// The VPD page `page`, or INVALID FIELD IN CDB for a page cowd does not have.
    pub fn vpd(&self, page: u8) -> Result<Vec<u8>, Sense> {
        let body = match page {
            0x00 => self.supported_pages(),
            0x80 => self.serial(),
            0x83 => self.identification(),
            0x8F => match self.copy {
                Some(c) => c.third_party_copy_vpd(),
                None => return Err(Sense::invalid_field_in_cdb(2, None)),
            },
            0xB0 => self.block_limits(),
            0xB1 => self.characteristics(),
            0xB2 => self.provisioning(),
            _ => return Err(Sense::invalid_field_in_cdb(2, None)),
        };
        let body = &body[..body.len().min(usize::from(u16::MAX))];
        let mut d = vec![0x00, page];
        d.extend_from_slice(&(body.len() as u16).to_be_bytes());
        d.extend_from_slice(body);
        Ok(d)
    }

    fn supported_pages(&self) -> Vec<u8> {
        let mut pages = vec![0x00, 0x80, 0x83];
        if self.copy.is_some() {
            pages.push(0x8F);
        }
        pages.extend_from_slice(&[0xB0, 0xB1, 0xB2]);
        pages
    }

    fn serial(&self) -> Vec<u8> {
        if self.identity.serial.is_empty() {
            return format!("{:016x}", self.identity.id).into_bytes();
        }
        ascii(&self.identity.serial, 252)
    }

    fn identification(&self) -> Vec<u8> {
        // NAA: binary code set, associated with the logical unit, designator type 3.
        let mut d = vec![0x01, 0x03, 0x00, 0x08];
        d.extend_from_slice(&naa(self.identity.id));
        // T10 vendor ID: ASCII code set, logical unit, designator type 1.
        let mut t10 = VENDOR.to_vec();
        t10.extend_from_slice(&ascii(&self.identity.name, 255 - VENDOR.len()));
        d.extend_from_slice(&[0x02, 0x01, 0x00, t10.len() as u8]);
        d.extend_from_slice(&t10);
        d
    }

    fn block_limits(&self) -> Vec<u8> {
        let p = self.profile;
        let mut d = vec![0u8; 0x3C];
        // `at` is a byte offset of the page; its body (`d`) starts at byte 4.
        let mut put32 = |at: usize, v: u32| d[at - 4..at].copy_from_slice(&v.to_be_bytes());
        put32(8, p.max_transfer);
        if p.thin() {
            put32(20, MAX_UNMAP_BLOCKS);
            put32(24, MAX_UNMAP_DESCRIPTORS);
            put32(28, p.blocks_per_physical());
            // UGAVALID, alignment 0.
            put32(32, 0x8000_0000);
        }
        d[2..4].copy_from_slice(&(p.blocks_per_physical() as u16).to_be_bytes());
        d[32..40].copy_from_slice(&p.max_write_same.to_be_bytes());
        d
    }

    fn characteristics(&self) -> Vec<u8> {
        let mut d = vec![0u8; 0x3C];
        // MEDIUM ROTATION RATE: 1 = non-rotating; a spinning disk's rate is not known.
        let rate: u16 = if self.profile.caps.rotational { 0 } else { 1 };
        d[0..2].copy_from_slice(&rate.to_be_bytes());
        d
    }

    fn provisioning(&self) -> Vec<u8> {
        let p = self.profile;
        let mut flags = 0u8;
        if p.thin() {
            // LBPU, LBPWS, LBPWS10.
            flags |= 0x80 | 0x40 | 0x20;
        }
        if p.unmapped_read_zero() {
            flags |= 0x04;
        }
        // PROVISIONING TYPE: 010b thin provisioned, 000b fully provisioned.
        let kind = if p.thin() { 0x02 } else { 0x00 };
        vec![0x00, flags, kind, 0x00]
    }
}

/// Standard INQUIRY data without a product: `qualifier_and_type` in byte 0.
fn standard_frame(qualifier_and_type: u8, third_party_copy: bool) -> Vec<u8> {
    let mut d = vec![0u8; STANDARD_LEN];
    d[0] = qualifier_and_type;
    // VERSION: SPC-4.
    d[2] = 0x06;
    // RESPONSE DATA FORMAT 2.
    d[3] = 0x02;
    d[4] = (STANDARD_LEN - 5) as u8;
    if third_party_copy {
        d[5] |= 0x08;
    }
    // CMDQUE: full task management model.
    d[7] = 0x02;
    d[8..16].copy_from_slice(VENDOR);
    d[16..32].copy_from_slice(&[b' '; 16]);
    d[32..36].copy_from_slice(&revision());
    for (i, v) in VERSION_DESCRIPTORS.iter().enumerate() {
        d[58 + 2 * i..60 + 2 * i].copy_from_slice(&v.to_be_bytes());
    }
    d
}

/// Standard INQUIRY data for a LUN that has no logical unit: peripheral qualifier 011b,
/// device type 1Fh (SPC-4 6.6.2).
pub fn absent_standard() -> Vec<u8> {
    standard_frame(0x7F, false)
}

#[cfg(test)]
#[path = "inquiry_tests.rs"]
mod tests;
