//! [`Profile`]: what a logical unit looks like to an initiator, derived once from its device:
//! logical block size, capacity, physical block exponent, limits and provisioning, and the
//! READ CAPACITY data that reports them.
//!
//! Decisions, each with its reason:
//!
//! - **Logical block size** 512 bytes when the device allows it (its minimum request size
//!   divides 512 and its size is a multiple of 512), because that is what most initiators and
//!   boot loaders expect; otherwise 4096. A device that fits neither is refused.
//! - **Physical block**: the device's preferred size when it is a power-of-two multiple of the
//!   logical block of at most 4 KiB (READ CAPACITY (16) LBPPBE, so that file systems align to
//!   it); larger preferred sizes are not reported, since several file systems take the
//!   physical block size as their sector size.
//! - **MAXIMUM TRANSFER LENGTH**: [`MAX_PAYLOAD`] (32 MiB) of blocks: a command's buffer is
//!   bounded, as on the NBD side. Requests to the device are cut to its own maximum.
//! - **Provisioning**: a device that can punch zeroes (`zero`) unmaps with
//!   `write_zeroes(may_trim)`, so unmapped blocks read as zeroes (LBPRZ = 1); one that can only
//!   `trim` unmaps with `trim` and promises nothing about the contents (LBPRZ = 0); a device
//!   with neither is fully provisioned (no UNMAP, no WRITE SAME with UNMAP).
//! - **UNMAP limits**: 2^20 blocks and 256 descriptors per command: enough for any initiator's
//!   discard sizes while bounding one command's work.
//! - **MAXIMUM WRITE SAME LENGTH**: 128 MiB of blocks, four times the largest WRITE. It is
//!   bounded in bytes rather than blocks because initiators (libiscsi's WriteSame16.Unmap among
//!   them) take a device that accepts a WRITE SAME of N blocks to accept a WRITE of N blocks.

use crate::device::{BlockDevice, Capabilities, MAX_PAYLOAD};

/// Most blocks one UNMAP may deallocate (MAXIMUM UNMAP LBA COUNT).
pub const MAX_UNMAP_BLOCKS: u32 = 1 << 20;
/// Most block descriptors in one UNMAP (MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT).
pub const MAX_UNMAP_DESCRIPTORS: u32 = 256;
/// Most bytes one WRITE SAME may write (MAXIMUM WRITE SAME LENGTH, in blocks).
pub const MAX_WRITE_SAME_BYTES: u64 = 4 * MAX_PAYLOAD as u64;
/// Largest physical block reported.
const MAX_PHYSICAL_BLOCK: u32 = 4096;

/// How the logical unit deallocates blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmapping {
    /// Fully provisioned: UNMAP is not offered.
    None,
    /// `write_zeroes` with `may_trim`: unmapped blocks read as zeroes (LBPRZ = 1).
    Zeroes,
    /// `trim`: unmapped blocks read as anything (LBPRZ = 0).
    Trim,
}

/// Why a device cannot be a logical unit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("the device is empty")]
    Empty,
    #[error(
        "the device's size ({size} bytes) and minimum request size ({minimum} bytes) fit \
         neither 512- nor 4096-byte logical blocks"
    )]
    NoBlockSize { size: u64, minimum: u32 },
}

/// The shape and limits of a logical unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// Logical block size in bytes (512 or 4096).
    pub block_size: u32,
    /// Number of logical blocks.
    pub blocks: u64,
    /// Logical blocks per physical block exponent.
    pub lbppbe: u8,
    /// Most blocks one READ or WRITE may transfer.
    pub max_transfer: u32,
    /// Most blocks one WRITE SAME may write.
    pub max_write_same: u64,
    /// Largest request the device accepts, in bytes (a multiple of `block_size`).
    pub device_chunk: usize,
    pub unmapping: Unmapping,
    /// The device's capabilities as read at creation.
    pub caps: Capabilities,
}

impl Profile {
    /// The profile of `device`.
    pub fn of(device: &dyn BlockDevice) -> Result<Profile, ProfileError> {
        let size = device.size();
        let sizes = device.block_sizes();
        let minimum = sizes.minimum.max(1);
        let block_size = [512u32, 4096]
            .into_iter()
            .find(|&bs| bs % minimum == 0 && size % u64::from(bs) == 0)
            .ok_or(ProfileError::NoBlockSize { size, minimum })?;
        let blocks = size / u64::from(block_size);
        if blocks == 0 {
            return Err(ProfileError::Empty);
        }
        let physical = sizes.preferred;
        let lbppbe = if physical.is_power_of_two()
            && physical > block_size
            && physical <= MAX_PHYSICAL_BLOCK
        {
            (physical / block_size).trailing_zeros() as u8
        } else {
            0
        };
        let device_chunk = (sizes.maximum / block_size).max(1) * block_size;
        let caps = device.capabilities();
        let unmapping = if caps.zero {
            Unmapping::Zeroes
        } else if caps.trim {
            Unmapping::Trim
        } else {
            Unmapping::None
        };
        Ok(Profile {
            block_size,
            blocks,
            lbppbe,
            max_transfer: MAX_PAYLOAD / block_size,
            max_write_same: MAX_WRITE_SAME_BYTES / u64::from(block_size),
            device_chunk: device_chunk as usize,
            unmapping,
            caps,
        })
    }

    /// Logical blocks per physical block.
    pub fn blocks_per_physical(&self) -> u32 {
        1 << self.lbppbe
    }

    /// The logical unit can deallocate (LBPME, LBPU, LBPWS, LBPWS10).
    pub fn thin(&self) -> bool {
        self.unmapping != Unmapping::None
    }

    /// Unmapped blocks read as zeroes (LBPRZ).
    pub fn unmapped_read_zero(&self) -> bool {
        self.unmapping == Unmapping::Zeroes
    }

    /// Byte offset of `lba`.
    pub fn offset(&self, lba: u64) -> u64 {
        lba * u64::from(self.block_size)
    }

    /// Checks that `count` blocks from `lba` lie within the capacity.
    pub fn in_range(&self, lba: u64, count: u64) -> bool {
        lba.checked_add(count).is_some_and(|end| end <= self.blocks)
    }

    /// READ CAPACITY (10) parameter data: the last LBA (FFFFFFFFh when it does not fit, so that
    /// the initiator asks READ CAPACITY (16)) and the block length.
    pub fn read_capacity10(&self) -> Vec<u8> {
        let last = u32::try_from(self.blocks - 1).unwrap_or(u32::MAX);
        let mut d = last.to_be_bytes().to_vec();
        d.extend_from_slice(&self.block_size.to_be_bytes());
        d
    }

    /// READ CAPACITY (16) parameter data (32 bytes): last LBA, block length, no protection,
    /// LBPPBE, LBPME and LBPRZ, lowest aligned LBA 0.
    pub fn read_capacity16(&self) -> Vec<u8> {
        let mut d = vec![0u8; 32];
        d[0..8].copy_from_slice(&(self.blocks - 1).to_be_bytes());
        d[8..12].copy_from_slice(&self.block_size.to_be_bytes());
        d[13] = self.lbppbe & 0x0F;
        if self.thin() {
            d[14] |= 0x80;
        }
        if self.unmapped_read_zero() {
            d[14] |= 0x40;
        }
        d
    }
}

#[cfg(test)]
#[path = "profile_tests.rs"]
mod tests;
