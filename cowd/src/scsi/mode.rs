//! Mode parameters (SPC-4 7.5, SBC-3 6.4): MODE SENSE (6)/(10) and MODE SELECT (6)/(10).
//!
//! | page | name                             | current values                  | changeable |
//! |------|----------------------------------|---------------------------------|------------|
//! | 08h  | Caching                          | WCE when the device has a cache to flush | —  |
//! | 0Ah  | Control                          | D_SENSE, SWP; QAM = 1 (unrestricted reordering) | D_SENSE, SWP |
//! | 1Ch  | Informational Exceptions Control | DEXCPT = 1 (none are reported)  | —          |
//!
//! The header's device-specific parameter has DPOFUA set (FUA is honoured, by the device or by a
//! flush after the write) and WP set when the device is read-only or SWP is set. There are no
//! subpages; saved values are not supported (SAVING PARAMETERS NOT SUPPORTED).
//!
//! MODE SELECT is implemented for the Control page because its two changeable bits are
//! per-logical-unit settings worth having: D_SENSE chooses the sense data format, and SWP is a
//! software write protect (libiscsi's ModeSense6.Control-SWP test sets it, writes, and clears
//! it). Any other difference from the current values is INVALID FIELD IN PARAMETER LIST.
//! The values live as long as the logical unit (they are not saved).

use std::sync::atomic::{AtomicBool, Ordering};

use super::cdb::{ModeSense, PageControl};
use super::profile::Profile;
use super::sense::{Sense, SenseFormat};

const CACHING: u8 = 0x08;
const CONTROL: u8 = 0x0A;
const INFORMATIONAL_EXCEPTIONS: u8 = 0x1C;
const ALL_PAGES: u8 = 0x3F;
const ALL_SUBPAGES: u8 = 0xFF;

/// Pages in the order MODE SENSE returns them for "all pages".
const PAGES: [u8; 3] = [CACHING, CONTROL, INFORMATIONAL_EXCEPTIONS];

/// Control page byte 2: D_SENSE.
const D_SENSE: u8 = 0x04;
/// Control page byte 4: SWP.
const SWP: u8 = 0x08;
/// Device-specific parameter: WP.
const WP: u8 = 0x80;
/// Device-specific parameter: DPOFUA.
const DPOFUA: u8 = 0x10;

/// The changeable mode parameters of one logical unit.
///
/// Two independent flags read on every error (D_SENSE) and every write (SWP): atomics rather
/// than a lock, since no invariant ties them together.
#[derive(Debug, Default)]
pub struct ModeState {
    d_sense: AtomicBool,
    swp: AtomicBool,
}

impl ModeState {
    /// The sense data format the logical unit returns.
    pub fn sense_format(&self) -> SenseFormat {
        if self.d_sense.load(Ordering::Relaxed) {
            SenseFormat::Descriptor
        } else {
            SenseFormat::Fixed
        }
    }

    /// Software write protect is on.
    pub fn software_write_protect(&self) -> bool {
        self.swp.load(Ordering::Relaxed)
    }
}

/// What a mode page is built from.
#[derive(Debug, Clone, Copy)]
pub struct ModePages<'a> {
    pub profile: &'a Profile,
    pub state: &'a ModeState,
}

impl ModePages<'_> {
    /// The device is write protected (read-only device or SWP).
    pub fn write_protected(&self) -> bool {
        self.profile.caps.read_only || self.state.software_write_protect()
    }

    /// One page with its 2-byte header, for page control `pc` (not `Saved`).
    fn page(&self, code: u8, pc: PageControl) -> Option<Vec<u8>> {
        let changeable = pc == PageControl::Changeable;
        let current = pc == PageControl::Current;
        let mut p = match code {
            CACHING => vec![0u8; 20],
            CONTROL => vec![0u8; 12],
            INFORMATIONAL_EXCEPTIONS => vec![0u8; 12],
            _ => return None,
        };
        p[0] = code;
        p[1] = (p.len() - 2) as u8;
        match code {
            CACHING if !changeable && self.profile.caps.flush => p[2] = 0x04,
            CONTROL if changeable => {
                p[2] = D_SENSE;
                p[4] = SWP;
            }
            CONTROL => {
                p[3] = 0x10;
                if current && self.state.d_sense.load(Ordering::Relaxed) {
                    p[2] |= D_SENSE;
                }
                if current && self.state.software_write_protect() {
                    p[4] |= SWP;
                }
            }
            INFORMATIONAL_EXCEPTIONS if !changeable => p[2] = 0x08,
            _ => {}
        }
        Some(p)
    }

    /// The full (untruncated) MODE SENSE parameter data.
    pub fn sense(&self, req: &ModeSense) -> Result<Vec<u8>, Sense> {
        if req.pc == PageControl::Saved {
            return Err(Sense::saving_parameters_not_supported());
        }
        if req.subpage != 0 && req.subpage != ALL_SUBPAGES {
            return Err(Sense::invalid_field_in_cdb(3, None));
        }
        let codes: &[u8] = if req.page == ALL_PAGES {
            &PAGES
        } else if PAGES.contains(&req.page) {
            std::slice::from_ref(&req.page)
        } else {
            return Err(Sense::invalid_field_in_cdb(2, Some(5)));
        };
        let mut pages = Vec::new();
        for &code in codes {
            pages.extend(self.page(code, req.pc).unwrap_or_default());
        }
        let descriptor = self.block_descriptor(req);
        let mut device_specific = DPOFUA;
        if self.write_protected() {
            device_specific |= WP;
        }
        let mut d = if req.ten {
            let mut h = vec![0u8; 8];
            h[3] = device_specific;
            if descriptor.len() == 16 {
                h[4] = 0x01;
            }
            h[6..8].copy_from_slice(&(descriptor.len() as u16).to_be_bytes());
            h
        } else {
            vec![0, 0, device_specific, descriptor.len() as u8]
        };
        d.extend_from_slice(&descriptor);
        d.extend_from_slice(&pages);
        if req.ten {
            let len = (d.len() - 2) as u16;
            d[0..2].copy_from_slice(&len.to_be_bytes());
        } else {
            d[0] = (d.len() - 1) as u8;
        }
        Ok(d)
    }

    /// The block descriptor MODE SENSE returns (none with DBD; zeroes for changeable values).
    fn block_descriptor(&self, req: &ModeSense) -> Vec<u8> {
        if req.dbd {
            return Vec::new();
        }
        let p = self.profile;
        let long = req.llbaa;
        let mut b = vec![0u8; if long { 16 } else { 8 }];
        if req.pc == PageControl::Changeable {
            return b;
        }
        let bs = p.block_size.to_be_bytes();
        if long {
            b[0..8].copy_from_slice(&p.blocks.to_be_bytes());
            b[12..16].copy_from_slice(&bs);
        } else {
            let blocks = u32::try_from(p.blocks).unwrap_or(u32::MAX);
            b[0..4].copy_from_slice(&blocks.to_be_bytes());
            b[5..8].copy_from_slice(&bs[1..4]);
        }
        b
    }

    /// Applies a MODE SELECT parameter list, all or nothing.
    pub fn select(&self, ten: bool, params: &[u8]) -> Result<(), Sense> {
        let header = if ten { 8 } else { 4 };
        if params.len() < header {
            return Err(Sense::parameter_list_length_error());
        }
        let medium_type = if ten { 2 } else { 1 };
        if params[medium_type] != 0 {
            return Err(Sense::invalid_field_in_parameter_list(
                medium_type as u16,
                None,
            ));
        }
        let (bd_len, long, bd_field) = if ten {
            let len = u16::from_be_bytes([params[6], params[7]]);
            (usize::from(len), params[4] & 0x01 != 0, 6)
        } else {
            (usize::from(params[3]), false, 3)
        };
        let pages_at = header + bd_len;
        if params.len() < pages_at {
            return Err(Sense::parameter_list_length_error());
        }
        self.check_block_descriptor(&params[header..pages_at], long, header, bd_field)?;
        let mut control = None;
        let mut pos = pages_at;
        while pos < params.len() {
            let (code, new) = self.check_page(params, pos)?;
            if code == CONTROL {
                control = Some((new[2] & D_SENSE != 0, new[4] & SWP != 0));
            }
            pos += new.len();
        }
        if let Some((d_sense, swp)) = control {
            self.state.d_sense.store(d_sense, Ordering::Relaxed);
            self.state.swp.store(swp, Ordering::Relaxed);
        }
        Ok(())
    }

    /// A block descriptor in MODE SELECT may only restate the current geometry.
    fn check_block_descriptor(
        &self,
        bd: &[u8],
        long: bool,
        at: usize,
        len_field: u16,
    ) -> Result<(), Sense> {
        let p = self.profile;
        let (count, length, count_at, length_at) = match (bd.len(), long) {
            (0, _) => return Ok(()),
            (8, false) => {
                let count = u64::from(u32::from_be_bytes([bd[0], bd[1], bd[2], bd[3]]));
                let length = u32::from_be_bytes([0, bd[5], bd[6], bd[7]]);
                (count, length, 0, 5)
            }
            (16, true) => {
                let count = u64::from_be_bytes(bd[0..8].try_into().unwrap_or_default());
                let length = u32::from_be_bytes([bd[12], bd[13], bd[14], bd[15]]);
                (count, length, 0, 12)
            }
            _ => return Err(Sense::invalid_field_in_parameter_list(len_field, None)),
        };
        let current = if long {
            p.blocks
        } else {
            p.blocks.min(u64::from(u32::MAX))
        };
        if count != 0 && count != current {
            return Err(Sense::invalid_field_in_parameter_list(
                (at + count_at) as u16,
                None,
            ));
        }
        if length != p.block_size {
            return Err(Sense::invalid_field_in_parameter_list(
                (at + length_at) as u16,
                None,
            ));
        }
        Ok(())
    }

    /// Checks the page at `pos` against the current and changeable values; returns its code
    /// and bytes.
    fn check_page<'p>(&self, params: &'p [u8], pos: usize) -> Result<(u8, &'p [u8]), Sense> {
        let at = |i: usize| (pos + i) as u16;
        let b0 = params[pos];
        if b0 & 0xC0 != 0 {
            // PS is reserved in MODE SELECT; SPF would name a subpage, and there are none.
            let bit = if b0 & 0x80 != 0 { 7 } else { 6 };
            return Err(Sense::invalid_field_in_parameter_list(at(0), Some(bit)));
        }
        let code = b0 & 0x3F;
        let (Some(current), Some(mask)) = (
            self.page(code, PageControl::Current),
            self.page(code, PageControl::Changeable),
        ) else {
            return Err(Sense::invalid_field_in_parameter_list(at(0), Some(5)));
        };
        let Some(&len) = params.get(pos + 1) else {
            return Err(Sense::parameter_list_length_error());
        };
        if usize::from(len) != current.len() - 2 {
            return Err(Sense::invalid_field_in_parameter_list(at(1), None));
        }
        let Some(new) = params.get(pos..pos + current.len()) else {
            return Err(Sense::parameter_list_length_error());
        };
        for i in 2..current.len() {
            let wrong = (new[i] ^ current[i]) & !mask[i];
            if wrong != 0 {
                let bit = 7 - wrong.leading_zeros() as u8;
                return Err(Sense::invalid_field_in_parameter_list(at(i), Some(bit)));
            }
        }
        Ok((code, new))
    }
}

#[cfg(test)]
#[path = "mode_tests.rs"]
mod tests;
