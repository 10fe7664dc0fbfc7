//! Partition tables in front of a filesystem: MBR (primary entries) and GPT, parsed from the
//! first sectors (pure; the caller reads them).
//!
//! ```text
//!  sector 0: MBR  boot code | 4 entries at 446 (type at +4, first LBA at +8, sectors at +12) | 55 AA
//!            a protective entry of type 0xEE means GPT:
//!  sector 1: GPT header "EFI PART": entries' LBA at 72, count at 80, entry size at 84
//!  entries:  type GUID (zero = unused) | unique GUID | first LBA at 32 | last LBA at 40
//! ```
//!
//! Sectors are 512 bytes (the size of the images cowd serves; 4 KiB-sector GPT is refused
//! with a clear error rather than misread).

/// One partition: its number (1-based, as `fdisk` and `/dev/sdaN` count) and byte range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    pub number: u32,
    pub start: u64,
    pub len: u64,
}

const SECTOR: u64 = 512;

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Where the GPT entries are, if sector 0 and 1 (`head`, at least 1024 bytes) say GPT:
/// (byte offset, count, entry size).
pub fn gpt_entries(head: &[u8]) -> Result<Option<(u64, u32, u32)>, String> {
    if head.len() < 1024 || head[510..512] != [0x55, 0xAA] {
        return Ok(None);
    }
    if !(0..4).any(|i| head[446 + i * 16 + 4] == 0xEE) {
        return Ok(None);
    }
    let h = &head[512..1024];
    if &h[..8] != b"EFI PART" {
        return Err("a protective MBR without a GPT header at sector 1 (4 KiB sectors?)".into());
    }
    let (count, size) = (le32(h, 80), le32(h, 84));
    if !(128..=4096).contains(&size) || count > 1024 {
        return Err(format!("GPT header: {count} entries of {size} bytes"));
    }
    Ok(Some((le64(h, 72).saturating_mul(SECTOR), count, size)))
}

/// The partitions of an MBR (`head`: sector 0 at least), or `None` when there is no MBR table.
pub fn mbr(head: &[u8], device_size: u64) -> Result<Option<Vec<Partition>>, String> {
    if head.len() < 512 || head[510..512] != [0x55, 0xAA] {
        return Ok(None);
    }
    let mut out = Vec::new();
    for i in 0..4 {
        let e = &head[446 + i * 16..446 + (i + 1) * 16];
        let (kind, first, sectors) = (e[4], u64::from(le32(e, 8)), u64::from(le32(e, 12)));
        if e[0] & 0x7F != 0 {
            // Boot flag 0x00 or 0x80 only: anything else is not a partition table (a
            // filesystem's own boot sector with 55 AA, for instance).
            return Ok(None);
        }
        if kind == 0 || sectors == 0 {
            continue;
        }
        let (start, len) = (first * SECTOR, sectors * SECTOR);
        if start == 0 || start + len > device_size {
            return Err(format!(
                "MBR partition {}: bytes {start}+{len} outside the device",
                i + 1
            ));
        }
        out.push(Partition {
            number: i as u32 + 1,
            start,
            len,
        });
    }
    Ok((!out.is_empty()).then_some(out))
}

/// The partitions in GPT entries `raw` (`size` bytes each).
pub fn gpt(raw: &[u8], size: u32, device_size: u64) -> Result<Vec<Partition>, String> {
    let mut out = Vec::new();
    for (i, e) in raw.chunks_exact(size as usize).enumerate() {
        if e[..16].iter().all(|&b| b == 0) {
            continue;
        }
        let (first, last) = (le64(e, 32), le64(e, 40));
        let end = last.checked_add(1).map(|n| n.saturating_mul(SECTOR));
        if last < first || end.is_none_or(|end| end > device_size) {
            return Err(format!(
                "GPT partition {}: LBA {first}..={last} outside the device",
                i + 1
            ));
        }
        out.push(Partition {
            number: i as u32 + 1,
            start: first * SECTOR,
            len: (last - first + 1) * SECTOR,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mbr_lists_its_primary_partitions() {
        let mut s = vec![0u8; 1024];
        s[510] = 0x55;
        s[511] = 0xAA;
        let e = &mut s[446..462];
        e[4] = 0x83;
        e[8..12].copy_from_slice(&2048u32.to_le_bytes());
        e[12..16].copy_from_slice(&4096u32.to_le_bytes());
        let p = mbr(&s, 8 << 20).unwrap().unwrap();
        assert_eq!(
            p,
            vec![Partition {
                number: 1,
                start: 1 << 20,
                len: 2 << 20
            }]
        );
        assert!(mbr(&s, 2 << 20).is_err(), "beyond the device");
        assert_eq!(gpt_entries(&s).unwrap(), None);
        s[446] = 0x12; // not a boot flag: a boot sector, not a table
        assert_eq!(mbr(&s, 8 << 20).unwrap(), None);
    }

    #[test]
    fn a_gpt_entry_ending_at_the_last_possible_lba_is_outside_the_device() {
        // Found by the fs_tree fuzz target: last LBA u64::MAX overflowed `last + 1`.
        let mut e = vec![0u8; 128];
        e[0] = 1;
        e[32..40].copy_from_slice(&34u64.to_le_bytes());
        e[40..48].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(
            gpt(&e, 128, 1 << 30)
                .unwrap_err()
                .contains("outside the device")
        );
    }

    #[test]
    fn hostile_bytes_never_panic() {
        for seed in 0..2000u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut s: Vec<u8> = (0..1024).map(|_| rng.u8(..)).collect();
            s[510] = 0x55;
            s[511] = 0xAA;
            if rng.bool() {
                s[446 + 4] = 0xEE;
                s[512..520].copy_from_slice(b"EFI PART");
            }
            let _ = mbr(&s, rng.u64(..1 << 40));
            if let Ok(Some((_, count, size))) = gpt_entries(&s) {
                let raw: Vec<u8> = (0..(count as usize * size as usize).min(1 << 16))
                    .map(|_| rng.u8(..))
                    .collect();
                let _ = gpt(&raw, size, rng.u64(..1 << 40));
            }
        }
    }
}
