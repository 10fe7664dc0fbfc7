//! The block commands (SBC-3) against a device: READ, WRITE, VERIFY, WRITE SAME, UNMAP,
//! SYNCHRONIZE CACHE, PRE-FETCH and GET LBA STATUS.
//!
//! Each command is checked in the same order: CDB limits (INVALID FIELD IN CDB), the range
//! against the capacity (LOGICAL BLOCK ADDRESS OUT OF RANGE, also for zero blocks beyond the
//! end; WRITE SAME, where zero blocks mean "to the end", checks its LBA before its length
//! limit), write protection (DATA PROTECT), then the data-out (a command given less data than
//! its CDB asks for runs on the whole blocks it was given, as the transport's residual then
//! reports; a partial block is refused with INVALID FIELD IN COMMAND INFORMATION UNIT).
//!
//! Requests to the device are cut to its maximum request size, never cross the capacity,
//! never have length zero and only use the operations its capabilities advertise: writes of
//! zeroes fall back to writing zero buffers, FUA falls back to a flush after the write.

use crate::device::{BlockDevice, CachedRange, DeviceError, ZeroFlags, is_zero};

use super::buffers;
use super::cdb::{Blocks, ByteCheck, ReadWrite, length_field};
use super::profile::{MAX_UNMAP_BLOCKS, MAX_UNMAP_DESCRIPTORS, Profile, Unmapping};
use super::sense::Sense;

/// Largest buffer a WRITE SAME or zero fallback fills (1 MiB).
const FILL_BUFFER: usize = 1 << 20;

/// Bytes of the device one GET LBA STATUS looks at (a caller asks again from where the
/// answer ends).
pub const LBA_STATUS_SPAN: u64 = 1 << 30;

/// The block commands of one logical unit.
#[derive(Debug, Clone, Copy)]
pub struct Block<'a> {
    pub device: &'a dyn BlockDevice,
    pub profile: &'a Profile,
    /// Writes are refused (read-only device or software write protect).
    pub write_protected: bool,
}

impl Block<'_> {
    /// READ: the blocks' data.
    pub fn read(&self, opcode: u8, rw: &ReadWrite) -> Result<Vec<u8>, Sense> {
        self.check_read(opcode, rw)?;
        self.read_blocks(rw.blocks.lba, rw.blocks.count)
    }

    /// WRITE of `data` (the data-out received, at most what the CDB asks for).
    pub fn write(&self, opcode: u8, rw: &ReadWrite, data: &[u8]) -> Result<(), Sense> {
        let data = self.check_write(opcode, rw, data)?;
        self.write_blocks(rw.blocks.lba, data, rw.fua)
    }

    /// [`read`](Self::read) if the device serves it at once (a page-cache hit) in one request
    /// of at most `max` bytes; `None`: run `read` where it may block. A refusal is at once.
    pub fn try_read(
        &self,
        opcode: u8,
        rw: &ReadWrite,
        max: usize,
    ) -> Option<Result<Vec<u8>, Sense>> {
        if let Err(sense) = self.check_read(opcode, rw) {
            return Some(Err(sense));
        }
        let len = rw.blocks.count as usize * self.profile.block_size as usize;
        if len > max.min(self.profile.device_chunk) {
            return None;
        }
        let mut buf = buffers::scratch(len);
        if len == 0 {
            return Some(Ok(buf));
        }
        match self
            .device
            .try_read_at(&mut buf, self.profile.offset(rw.blocks.lba))
        {
            Ok(true) => Some(Ok(buf)),
            // Not at once, or failed: the blocking path runs it (and reports its error).
            Ok(false) | Err(_) => {
                buffers::recycle(buf);
                None
            }
        }
    }

    /// Where the data of a READ that passes every check lies whole in an open file's page
    /// cache now (see [`BlockDevice::cached_range`]); `None`: read it with [`read`](Self::read)
    /// (which also reports any refusal).
    pub fn cached_read(&self, opcode: u8, rw: &ReadWrite) -> Option<CachedRange> {
        self.check_read(opcode, rw).ok()?;
        let len = rw.blocks.count as usize * self.profile.block_size as usize;
        self.device
            .cached_range(self.profile.offset(rw.blocks.lba), len)
    }

    /// [`write`](Self::write) if the device takes it at once in one request of at most `max`
    /// bytes; `None`: run `write` where it may block. A refusal is at once.
    pub fn try_write(
        &self,
        opcode: u8,
        rw: &ReadWrite,
        data: &[u8],
        max: usize,
    ) -> Option<Result<(), Sense>> {
        let data = match self.check_write(opcode, rw, data) {
            Ok(d) => d,
            Err(sense) => return Some(Err(sense)),
        };
        if data.is_empty() {
            return Some(Ok(()));
        }
        let fua = rw.fua;
        if data.len() > max.min(self.profile.device_chunk) || (fua && !self.profile.caps.fua) {
            return None;
        }
        match self
            .device
            .try_write_at(data, self.profile.offset(rw.blocks.lba), fua)
        {
            Ok(true) => Some(Ok(())),
            Ok(false) | Err(_) => None,
        }
    }

    /// A READ's CDB against the limits and the capacity.
    fn check_read(&self, opcode: u8, rw: &ReadWrite) -> Result<(), Sense> {
        self.check_transfer(opcode, rw.blocks.count)?;
        self.check_range(rw.blocks.lba, u64::from(rw.blocks.count))
    }

    /// A WRITE's CDB against the limits, the capacity and write protection; the part of
    /// `data` it writes.
    fn check_write<'d>(
        &self,
        opcode: u8,
        rw: &ReadWrite,
        data: &'d [u8],
    ) -> Result<&'d [u8], Sense> {
        let b = rw.blocks;
        self.check_transfer(opcode, b.count)?;
        self.check_range(b.lba, u64::from(b.count))?;
        self.check_writable()?;
        self.whole_blocks(data, b.count)
    }

    /// VERIFY: reads the blocks, and compares them with `data` when BYTCHK asks for it.
    pub fn verify(
        &self,
        opcode: u8,
        b: Blocks,
        check: ByteCheck,
        data: &[u8],
    ) -> Result<(), Sense> {
        if check == ByteCheck::Compare {
            self.check_transfer(opcode, b.count)?;
        }
        self.check_range(b.lba, u64::from(b.count))?;
        let (count, expected) = match check {
            ByteCheck::Medium => (b.count, None),
            ByteCheck::Compare => {
                let data = self.whole_blocks(data, b.count)?;
                (self.blocks_in(data.len()), Some(data))
            }
            ByteCheck::CompareSame if b.count == 0 => (0, None),
            ByteCheck::CompareSame => {
                let block = self.whole_blocks(data, 1)?;
                if block.is_empty() {
                    return Ok(());
                }
                (b.count, Some(block))
            }
        };
        let bs = self.profile.block_size as usize;
        let per_chunk = (self.profile.device_chunk / bs).max(1) as u32;
        let mut done = 0u32;
        while done < count {
            let n = per_chunk.min(count - done);
            let got = self.read_blocks(b.lba + u64::from(done), n)?;
            if let Some(expected) = expected {
                let base = done as usize * bs;
                let mismatch = if check == ByteCheck::Compare {
                    first_difference(&got, &expected[base..base + got.len()])
                } else {
                    got.chunks(bs)
                        .enumerate()
                        .find_map(|(i, blk)| first_difference(blk, expected).map(|o| i * bs + o))
                };
                if let Some(at) = mismatch {
                    return Err(Sense::miscompare((base + at) as u64));
                }
            }
            done += n;
        }
        Ok(())
    }

    /// WRITE SAME: one block (or zeroes with NDOB) written to every block of the range.
    ///
    /// With UNMAP the range is unmapped whatever the block holds, as LIO does and as libiscsi's
    /// WriteSame10.UnmapUntilEnd expects (it unmaps with a block of FFh and reads zeroes back
    /// when LBPRZ is set).
    pub fn write_same(
        &self,
        opcode: u8,
        b: Blocks,
        unmap: bool,
        ndob: bool,
        expected_len: u32,
        data: &[u8],
    ) -> Result<(), Sense> {
        if unmap && !self.profile.thin() {
            return Err(Sense::invalid_field_in_cdb(1, Some(3)));
        }
        if b.lba > self.profile.blocks {
            return Err(Sense::lba_out_of_range());
        }
        // NUMBER OF LOGICAL BLOCKS zero: up to the last block (WSNZ is zero).
        let count = match b.count {
            0 => self.profile.blocks - b.lba,
            n => u64::from(n),
        };
        if count > self.profile.max_write_same {
            return Err(Sense::invalid_field_in_cdb(length_field(opcode), None));
        }
        self.check_range(b.lba, count)?;
        self.check_writable()?;
        let bs = self.profile.block_size as usize;
        // The data-out buffer is exactly one block (none with NDOB).
        if !ndob && (expected_len as usize != bs || data.len() != bs) {
            return Err(Sense::invalid_field_in_command_iu());
        }
        if count == 0 {
            return Ok(());
        }
        if unmap {
            self.unmap_range(b.lba, count)
        } else if ndob || is_zero(data) {
            self.zero_range(b.lba, count, false)
        } else {
            self.fill(b.lba, count, data)
        }
    }

    /// UNMAP with parameter list `params` (`list_len` is the CDB's PARAMETER LIST LENGTH).
    pub fn unmap(&self, list_len: u32, params: &[u8]) -> Result<(), Sense> {
        self.check_writable()?;
        if list_len == 0 {
            return Ok(());
        }
        if params.len() < 8 {
            return Err(Sense::parameter_list_length_error());
        }
        let descriptors_len = usize::from(u16::from_be_bytes([params[2], params[3]]));
        let Some(descriptors) = params.get(8..8 + descriptors_len) else {
            return Err(Sense::parameter_list_length_error());
        };
        // An incomplete last descriptor is ignored (SBC-3 5.28.2).
        if descriptors.len() / 16 > MAX_UNMAP_DESCRIPTORS as usize {
            return Err(Sense::invalid_field_in_parameter_list(2, None));
        }
        let mut ranges = Vec::with_capacity(descriptors.len() / 16);
        let mut total = 0u64;
        for (i, d) in descriptors.chunks_exact(16).enumerate() {
            let lba = u64::from_be_bytes(d[0..8].try_into().unwrap_or_default());
            let count = u32::from_be_bytes(d[8..12].try_into().unwrap_or_default());
            self.check_range(lba, u64::from(count))?;
            total += u64::from(count);
            if total > u64::from(MAX_UNMAP_BLOCKS) {
                return Err(Sense::invalid_field_in_parameter_list(
                    (8 + 16 * i + 8) as u16,
                    None,
                ));
            }
            if count > 0 {
                ranges.push((lba, u64::from(count)));
            }
        }
        for (lba, count) in ranges {
            self.unmap_range(lba, count)?;
        }
        Ok(())
    }

    /// SYNCHRONIZE CACHE: the range is checked; the whole device is flushed.
    pub fn synchronize_cache(&self, b: Blocks) -> Result<(), Sense> {
        self.check_range_to_end(b)?;
        self.device.flush().map_err(|e| self.device_error(&e))
    }

    /// PRE-FETCH: a hint to the device; its failure is not the command's.
    pub fn pre_fetch(&self, b: Blocks) -> Result<(), Sense> {
        let count = self.check_range_to_end(b)?;
        if count > 0 {
            let bs = u64::from(self.profile.block_size);
            // Advisory: a prefetch that fails leaves nothing to report.
            let _ = self.device.cache(b.lba * bs, count * bs);
        }
        Ok(())
    }

    /// GET LBA STATUS: the provisioning status of the blocks from `lba`, as many descriptors
    /// as `alloc` bytes hold (at least one), over at most [`LBA_STATUS_SPAN`] bytes of the
    /// device: mapped (00h) or deallocated (01h, reads zeroes: LBPRZ).
    pub fn get_lba_status(&self, lba: u64, alloc: u32) -> Result<Vec<u8>, Sense> {
        if lba >= self.profile.blocks {
            return Err(Sense::lba_out_of_range());
        }
        let bs = u64::from(self.profile.block_size);
        let len = ((self.profile.blocks - lba) * bs).min(LBA_STATUS_SPAN);
        let extents = self
            .device
            .extents(self.profile.offset(lba), len)
            .map_err(|e| self.device_error(&e))?;
        let max = (alloc.saturating_sub(8) / 16).max(1) as usize;
        // (first block, end block, deallocated), runs of one state merged. A block is
        // deallocated only when it lies wholly in a hole.
        let mut runs: Vec<(u64, u64, bool)> = Vec::new();
        let mut at = 0u64;
        for e in extents {
            let (a, b) = (at, at + e.length);
            at = b;
            let (mut first, end) = if e.hole {
                (lba + a.div_ceil(bs), lba + b / bs)
            } else {
                (lba + a / bs, lba + b.div_ceil(bs))
            };
            if let Some(last) = runs.last() {
                first = first.max(last.1);
            }
            if first >= end {
                continue;
            }
            match runs.last_mut() {
                Some(last) if last.2 == e.hole && last.1 == first => last.1 = end,
                _ => runs.push((first, end, e.hole)),
            }
            if runs.len() > max {
                break;
            }
        }
        let runs: Vec<(u64, u64, bool)> = runs
            .into_iter()
            .map(|(first, end, hole)| (first, end - first, hole))
            .collect();
        let runs = &runs[..runs.len().min(max)];
        let mut out = Vec::with_capacity(8 + 16 * runs.len());
        out.extend_from_slice(&(4 + 16 * runs.len() as u32).to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        for &(first, count, hole) in runs {
            out.extend_from_slice(&first.to_be_bytes());
            out.extend_from_slice(&(count.min(u64::from(u32::MAX)) as u32).to_be_bytes());
            out.extend_from_slice(&[u8::from(hole), 0, 0, 0]);
        }
        Ok(out)
    }

    /// Range of a command where zero blocks mean "to the last block"; returns the count.
    fn check_range_to_end(&self, b: Blocks) -> Result<u64, Sense> {
        if b.lba > self.profile.blocks {
            return Err(Sense::lba_out_of_range());
        }
        let count = match b.count {
            0 => self.profile.blocks - b.lba,
            n => u64::from(n),
        };
        self.check_range(b.lba, count)?;
        Ok(count)
    }

    fn check_transfer(&self, opcode: u8, count: u32) -> Result<(), Sense> {
        if count > self.profile.max_transfer {
            return Err(Sense::invalid_field_in_cdb(length_field(opcode), None));
        }
        Ok(())
    }

    fn check_range(&self, lba: u64, count: u64) -> Result<(), Sense> {
        if !self.profile.in_range(lba, count) {
            return Err(Sense::lba_out_of_range());
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<(), Sense> {
        if self.write_protected {
            return Err(Sense::write_protected());
        }
        Ok(())
    }

    /// The part of `data` that the command runs on: all `count` blocks when the data-out
    /// holds them, else the whole blocks it holds; a partial block is refused.
    fn whole_blocks<'d>(&self, data: &'d [u8], count: u32) -> Result<&'d [u8], Sense> {
        let bs = self.profile.block_size as usize;
        let wanted = count as usize * bs;
        if data.len() >= wanted {
            return Ok(&data[..wanted]);
        }
        if data.len() % bs != 0 {
            return Err(Sense::invalid_field_in_command_iu());
        }
        Ok(data)
    }

    fn blocks_in(&self, bytes: usize) -> u32 {
        (bytes / self.profile.block_size as usize) as u32
    }

    fn device_error(&self, e: &DeviceError) -> Sense {
        tracing::debug!(target: "cowd::data", error = %e, "scsi block command failed");
        Sense::from_device(e, self.profile.block_size)
    }

    fn read_blocks(&self, lba: u64, count: u32) -> Result<Vec<u8>, Sense> {
        let mut buf = buffers::scratch(count as usize * self.profile.block_size as usize);
        let mut offset = self.profile.offset(lba);
        for chunk in buf.chunks_mut(self.profile.device_chunk) {
            self.device
                .read_at(chunk, offset)
                .map_err(|e| self.device_error(&e))?;
            offset += chunk.len() as u64;
        }
        Ok(buf)
    }

    fn write_blocks(&self, lba: u64, data: &[u8], fua: bool) -> Result<(), Sense> {
        if data.is_empty() {
            return Ok(());
        }
        let caps = self.profile.caps;
        let mut offset = self.profile.offset(lba);
        for chunk in data.chunks(self.profile.device_chunk) {
            self.device
                .write_at(chunk, offset, fua && caps.fua)
                .map_err(|e| self.device_error(&e))?;
            offset += chunk.len() as u64;
        }
        if fua && !caps.fua {
            self.device.flush().map_err(|e| self.device_error(&e))?;
        }
        Ok(())
    }

    /// Writes `block` to each of `count` blocks from `lba`.
    fn fill(&self, lba: u64, count: u64, block: &[u8]) -> Result<(), Sense> {
        let bs = block.len();
        let per_buffer = (FILL_BUFFER.min(self.profile.device_chunk) / bs).max(1) as u64;
        let buffer: Vec<u8> = block.repeat(per_buffer.min(count) as usize);
        let mut done = 0u64;
        while done < count {
            let n = per_buffer.min(count - done);
            self.write_blocks(lba + done, &buffer[..n as usize * bs], false)?;
            done += n;
        }
        Ok(())
    }

    /// Makes `count` blocks from `lba` read as zeroes.
    fn zero_range(&self, lba: u64, count: u64, may_trim: bool) -> Result<(), Sense> {
        if !self.profile.caps.zero {
            let zero = vec![0u8; self.profile.block_size as usize];
            return self.fill(lba, count, &zero);
        }
        let flags = ZeroFlags {
            may_trim,
            ..ZeroFlags::default()
        };
        let bs = u64::from(self.profile.block_size);
        self.device
            .write_zeroes(lba * bs, count * bs, flags)
            .map_err(|e| self.device_error(&e))
    }

    /// Deallocates `count` blocks from `lba` the way the profile says.
    fn unmap_range(&self, lba: u64, count: u64) -> Result<(), Sense> {
        let bs = u64::from(self.profile.block_size);
        match self.profile.unmapping {
            Unmapping::Zeroes => self.zero_range(lba, count, true),
            Unmapping::Trim => self
                .device
                .trim(lba * bs, count * bs, false)
                .map_err(|e| self.device_error(&e)),
            Unmapping::None => Err(Sense::internal_target_failure()),
        }
    }
}

/// Offset of the first byte where `a` and `b` differ.
fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

#[cfg(test)]
#[path = "block_tests.rs"]
mod tests;
