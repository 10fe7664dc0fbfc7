//! The LUN inventory of a target: [`LunList`], REPORT LUNS (SPC-4 6.33), and the answers for
//! a LUN that has no logical unit ([`absent`]).
//!
//! The transport owns one `LunList` per target and gives a clone to each of its [`Disk`]s
//! ([`Disk::with_luns`]); changing the list (a LUN added or removed) is seen by every
//! logical unit's next REPORT LUNS.
//!
//! LUN numbers are encoded in the single level formats of SAM-5 4.7: peripheral device
//! addressing below 256, flat space addressing below 16384. A larger `u64` is taken to be an
//! already encoded 8-byte LUN.
//!
//! [`Disk`]: super::disk::Disk
//! [`Disk::with_luns`]: super::disk::Disk::with_luns

use std::sync::{Arc, RwLock};

use super::cdb::{self, Command};
use super::inquiry;
use super::response::{Residual, Response, cut};
use super::sense::{Sense, SenseFormat};

/// The LUNs of a target, shared by its logical units.
#[derive(Debug, Clone)]
pub struct LunList {
    /// The numbers, ascending. A `RwLock` because REPORT LUNS reads it from many threads and
    /// it changes rarely.
    luns: Arc<RwLock<Vec<u64>>>,
}

impl Default for LunList {
    /// A target with LUN 0 only.
    fn default() -> Self {
        LunList::new([0])
    }
}

impl LunList {
    /// A list of `luns` (order and duplicates do not matter).
    pub fn new(luns: impl IntoIterator<Item = u64>) -> LunList {
        let list = LunList {
            luns: Arc::default(),
        };
        list.set(luns);
        list
    }

    /// Replaces the list.
    pub fn set(&self, luns: impl IntoIterator<Item = u64>) {
        let mut v: Vec<u64> = luns.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        *self.luns.write().unwrap_or_else(|e| e.into_inner()) = v;
    }

    /// The LUNs, ascending.
    pub fn get(&self) -> Vec<u64> {
        self.luns.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The 8-byte LUN field for LUN `lun`.
pub fn encode_lun(lun: u64) -> [u8; 8] {
    let mut f = [0u8; 8];
    match lun {
        0..=0xFF => f[1] = lun as u8,
        0x100..=0x3FFF => {
            f[0] = 0x40 | (lun >> 8) as u8;
            f[1] = lun as u8;
        }
        _ => f = lun.to_be_bytes(),
    }
    f
}

/// The full (untruncated) REPORT LUNS parameter data for SELECT REPORT `select`.
pub fn report(select: u8, luns: &[u64]) -> Result<Vec<u8>, Sense> {
    let listed: &[u64] = match select {
        // 00h: all logical units; 02h: all, including well-known ones (cowd has none).
        0x00 | 0x02 => luns,
        // 01h: well-known logical units only.
        0x01 => &[],
        _ => return Err(Sense::invalid_field_in_cdb(2, None)),
    };
    let mut d = vec![0u8; 8];
    d[0..4].copy_from_slice(&((listed.len() * 8) as u32).to_be_bytes());
    for &lun in listed {
        d.extend_from_slice(&encode_lun(lun));
    }
    Ok(d)
}

/// The response to a command addressed to a LUN without a logical unit: INQUIRY (standard
/// data, peripheral qualifier 011b), REPORT LUNS and REQUEST SENSE work; everything else is
/// LOGICAL UNIT NOT SUPPORTED (SPC-4 6.6.2, 6.33, 6.39).
pub fn absent(cdb: &[u8], expected_len: u32, luns: &LunList) -> Response {
    let fail = |s: &Sense| Response::check_condition(s, SenseFormat::Fixed, Residual::None);
    if !matches!(cdb.first(), Some(0x12 | 0xA0 | 0x03)) {
        return fail(&Sense::lun_not_supported());
    }
    let data = match cdb::decode(cdb) {
        Ok(Command::Inquiry {
            evpd: false, alloc, ..
        }) => cut(inquiry::absent_standard(), alloc),
        Ok(Command::ReportLuns { select, alloc }) => match report(select, &luns.get()) {
            Ok(d) => cut(d, alloc),
            Err(s) => return fail(&s),
        },
        Ok(Command::RequestSense { descriptor, alloc }) => {
            let format = if descriptor {
                SenseFormat::Descriptor
            } else {
                SenseFormat::Fixed
            };
            cut(Sense::lun_not_supported().encode(format), alloc)
        }
        Ok(_) => return fail(&Sense::lun_not_supported()),
        Err(s) => return fail(&s),
    };
    Response::data_in(data, expected_len)
}

#[cfg(test)]
#[path = "luns_tests.rs"]
mod tests;
