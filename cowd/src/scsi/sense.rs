//! Sense data (SPC-4 4.5): what went wrong with a command, as a sense key, an additional sense
//! code (ASC/ASCQ), and optionally the INFORMATION field and a pointer to the bad field.
//!
//! One [`Sense`] value, two encodings: fixed format (response code 70h, 18 bytes) and
//! descriptor format (72h: an information descriptor and a sense key specific descriptor).
//! Which one a logical unit uses follows the D_SENSE bit of its Control mode page.
//!
//! This module is also the one place that maps a [`DeviceError`] to sense data
//! ([`Sense::from_device`]).

use crate::device::{DeviceError, ErrorKind, Op};

/// The SENSE KEY field (SPC-4 table 45).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SenseKey {
    NoSense = 0x0,
    RecoveredError = 0x1,
    NotReady = 0x2,
    MediumError = 0x3,
    HardwareError = 0x4,
    IllegalRequest = 0x5,
    UnitAttention = 0x6,
    DataProtect = 0x7,
    BlankCheck = 0x8,
    VendorSpecific = 0x9,
    CopyAborted = 0xA,
    AbortedCommand = 0xB,
    VolumeOverflow = 0xD,
    Miscompare = 0xE,
    Completed = 0xF,
}

/// Where the field that caused an ILLEGAL REQUEST is (SPC-4 4.5.2.4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FieldPointer {
    /// The field is in the CDB (C/D = 1); otherwise in the parameter list.
    pub in_cdb: bool,
    /// Byte offset of the field.
    pub byte: u16,
    /// The most significant bit of the field within that byte, when it is not the whole byte.
    pub bit: Option<u8>,
}

/// Sense data of one failed command.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sense {
    pub key: SenseKey,
    pub asc: u8,
    pub ascq: u8,
    /// The INFORMATION field (an LBA, a byte offset of a miscompare, ...).
    pub information: Option<u64>,
    pub field_pointer: Option<FieldPointer>,
}

/// Which encoding a logical unit returns (the D_SENSE bit of the Control mode page).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SenseFormat {
    /// Response code 70h, 18 bytes.
    #[default]
    Fixed,
    /// Response code 72h.
    Descriptor,
}

/// Length of fixed-format sense data as cowd encodes it.
pub const FIXED_LEN: usize = 18;

impl Sense {
    /// Sense data with a key and an additional sense code, nothing else.
    pub const fn new(key: SenseKey, asc: u8, ascq: u8) -> Sense {
        Sense {
            key,
            asc,
            ascq,
            information: None,
            field_pointer: None,
        }
    }

    /// The same sense data with an INFORMATION field.
    pub fn with_information(mut self, information: u64) -> Sense {
        self.information = Some(information);
        self
    }

    /// NO SENSE / NO ADDITIONAL SENSE INFORMATION (what REQUEST SENSE reports when all is well).
    pub const fn no_sense() -> Sense {
        Sense::new(SenseKey::NoSense, 0x00, 0x00)
    }

    /// ILLEGAL REQUEST / INVALID COMMAND OPERATION CODE (20h/00h).
    pub const fn invalid_opcode() -> Sense {
        Sense::new(SenseKey::IllegalRequest, 0x20, 0x00)
    }

    /// ILLEGAL REQUEST / INVALID FIELD IN CDB (24h/00h), pointing at `byte` (and `bit`).
    pub fn invalid_field_in_cdb(byte: u16, bit: Option<u8>) -> Sense {
        Sense {
            field_pointer: Some(FieldPointer {
                in_cdb: true,
                byte,
                bit,
            }),
            ..Sense::new(SenseKey::IllegalRequest, 0x24, 0x00)
        }
    }

    /// ILLEGAL REQUEST / INVALID FIELD IN PARAMETER LIST (26h/00h), pointing at `byte`.
    pub fn invalid_field_in_parameter_list(byte: u16, bit: Option<u8>) -> Sense {
        Sense {
            field_pointer: Some(FieldPointer {
                in_cdb: false,
                byte,
                bit,
            }),
            ..Sense::new(SenseKey::IllegalRequest, 0x26, 0x00)
        }
    }

    /// ILLEGAL REQUEST / PARAMETER LIST LENGTH ERROR (1Ah/00h).
    pub const fn parameter_list_length_error() -> Sense {
        Sense::new(SenseKey::IllegalRequest, 0x1A, 0x00)
    }

    /// ILLEGAL REQUEST / LOGICAL BLOCK ADDRESS OUT OF RANGE (21h/00h).
    pub const fn lba_out_of_range() -> Sense {
        Sense::new(SenseKey::IllegalRequest, 0x21, 0x00)
    }

    /// ILLEGAL REQUEST / INVALID FIELD IN COMMAND INFORMATION UNIT (0Eh/03h): the command
    /// as delivered (CDB length, amount of data-out) does not fit the CDB.
    pub const fn invalid_field_in_command_iu() -> Sense {
        Sense::new(SenseKey::IllegalRequest, 0x0E, 0x03)
    }

    /// ILLEGAL REQUEST / LOGICAL UNIT NOT SUPPORTED (25h/00h).
    pub const fn lun_not_supported() -> Sense {
        Sense::new(SenseKey::IllegalRequest, 0x25, 0x00)
    }

    /// ILLEGAL REQUEST / SAVING PARAMETERS NOT SUPPORTED (39h/00h).
    pub const fn saving_parameters_not_supported() -> Sense {
        Sense::new(SenseKey::IllegalRequest, 0x39, 0x00)
    }

    /// DATA PROTECT / WRITE PROTECTED (27h/00h).
    pub const fn write_protected() -> Sense {
        Sense::new(SenseKey::DataProtect, 0x27, 0x00)
    }

    /// DATA PROTECT / SPACE ALLOCATION FAILED WRITE PROTECT (27h/07h): the backing store is full.
    pub const fn space_allocation_failed() -> Sense {
        Sense::new(SenseKey::DataProtect, 0x27, 0x07)
    }

    /// MEDIUM ERROR / UNRECOVERED READ ERROR (11h/00h) at `lba`.
    pub fn unrecovered_read_error(lba: u64) -> Sense {
        Sense::new(SenseKey::MediumError, 0x11, 0x00).with_information(lba)
    }

    /// MEDIUM ERROR / WRITE ERROR (0Ch/00h) at `lba`.
    pub fn write_error(lba: u64) -> Sense {
        Sense::new(SenseKey::MediumError, 0x0C, 0x00).with_information(lba)
    }

    /// HARDWARE ERROR / INTERNAL TARGET FAILURE (44h/00h): cowd broke its own rules.
    pub const fn internal_target_failure() -> Sense {
        Sense::new(SenseKey::HardwareError, 0x44, 0x00)
    }

    /// MISCOMPARE / MISCOMPARE DURING VERIFY OPERATION (1Dh/00h); `offset` is the byte offset
    /// of the first differing byte in the data-out buffer.
    pub fn miscompare(offset: u64) -> Sense {
        Sense::new(SenseKey::Miscompare, 0x1D, 0x00).with_information(offset)
    }

    /// The sense data for a failed block operation; `block_size` turns its offset into an LBA.
    ///
    /// Every [`ErrorKind`] is mapped here and nowhere else.
    pub fn from_device(err: &DeviceError, block_size: u32) -> Sense {
        let lba = err.offset / u64::from(block_size.max(1));
        match err.kind {
            ErrorKind::ReadOnly => Sense::write_protected(),
            ErrorKind::NoSpace => Sense::space_allocation_failed(),
            ErrorKind::OutOfRange => Sense::lba_out_of_range(),
            // The layer above the device checks alignment and capabilities before asking, so
            // these mean cowd itself is inconsistent.
            ErrorKind::Misaligned | ErrorKind::Unsupported | ErrorKind::NotFast => {
                Sense::internal_target_failure()
            }
            ErrorKind::Io => match err.op {
                Op::Read | Op::Cache | Op::Extents => Sense::unrecovered_read_error(lba),
                Op::Write | Op::WriteZeroes | Op::Trim | Op::Flush => Sense::write_error(lba),
            },
        }
    }

    /// Encodes the sense data in `format`.
    pub fn encode(&self, format: SenseFormat) -> Vec<u8> {
        match format {
            SenseFormat::Fixed => self.encode_fixed(),
            SenseFormat::Descriptor => self.encode_descriptor(),
        }
    }

    /// The three sense key specific bytes (SKSV set), if there is a field pointer.
    fn sense_key_specific(&self) -> Option<[u8; 3]> {
        let fp = self.field_pointer?;
        let mut b0 = 0x80;
        if fp.in_cdb {
            b0 |= 0x40;
        }
        if let Some(bit) = fp.bit {
            b0 |= 0x08 | (bit & 0x07);
        }
        let [hi, lo] = fp.byte.to_be_bytes();
        Some([b0, hi, lo])
    }

    fn encode_fixed(&self) -> Vec<u8> {
        let mut s = vec![0u8; FIXED_LEN];
        s[0] = 0x70;
        // The fixed format holds four bytes of INFORMATION; a larger value is left out.
        if let Some(info) = self.information.and_then(|i| u32::try_from(i).ok()) {
            s[0] |= 0x80;
            s[3..7].copy_from_slice(&info.to_be_bytes());
        }
        s[2] = self.key as u8;
        s[7] = (FIXED_LEN - 8) as u8;
        s[12] = self.asc;
        s[13] = self.ascq;
        if let Some(sks) = self.sense_key_specific() {
            s[15..18].copy_from_slice(&sks);
        }
        s
    }

    fn encode_descriptor(&self) -> Vec<u8> {
        let mut s = vec![0x72, self.key as u8, self.asc, self.ascq, 0, 0, 0, 0];
        if let Some(info) = self.information {
            s.extend_from_slice(&[0x00, 0x0A, 0x80, 0x00]);
            s.extend_from_slice(&info.to_be_bytes());
        }
        if let Some(sks) = self.sense_key_specific() {
            s.extend_from_slice(&[0x02, 0x06, 0x00, 0x00]);
            s.extend_from_slice(&sks);
            s.push(0x00);
        }
        s[7] = (s.len() - 8) as u8;
        s
    }
}

#[cfg(test)]
#[path = "sense_tests.rs"]
mod tests;
