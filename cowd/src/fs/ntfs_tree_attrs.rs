//! The NTFS on-disk structures [`NtfsTree`](super::NtfsTree) reads, parsed from byte slices:
//! the boot sector, MFT records (update sequence fixups, attribute headers), run lists, file
//! names, directory index entries, reparse points and Interix special files.
//!
//! ```text
//!  record  "FILE" | fixups @4 #6 | seq @10 | links @12 | attrs @14 | flags @16 | used @18 | base @20
//!  attribute  type | len | non-resident | name len, off | flags
//!     resident      value len @10, value off @14
//!     non-resident  first VCN @10, last VCN @18, runs @20, allocated @28, size @30, valid @38
//!  run list  (offset bytes << 4 | length bytes), length, signed LCN delta (none: sparse); 0 ends
//!  index     entries @header+off .. @header+len: file ref | len @8 | key len @a | flags @c | $FILE_NAME
//! ```
//!
//! Pure functions: every offset and count is checked against the slice before use (a bad one
//! is an `Err` with the reason, never a panic), arithmetic on numbers from the device is
//! checked, and loops advance by at least one byte of their slice.

use crate::fs::tree::Time;

pub(super) const ATTR_STANDARD_INFORMATION: u32 = 0x10;
pub(super) const ATTR_LIST: u32 = 0x20;
pub(super) const ATTR_FILE_NAME: u32 = 0x30;
pub(super) const ATTR_DATA: u32 = 0x80;
pub(super) const ATTR_INDEX_ROOT: u32 = 0x90;
pub(super) const ATTR_INDEX_ALLOCATION: u32 = 0xA0;
pub(super) const ATTR_BITMAP: u32 = 0xB0;
pub(super) const ATTR_REPARSE_POINT: u32 = 0xC0;
const ATTR_END: u32 = 0xFFFF_FFFF;
/// Attribute header flags.
pub(super) const ATTR_COMPRESSED: u16 = 0x00FF;
pub(super) const ATTR_ENCRYPTED: u16 = 0x4000;
/// MFT record flags.
pub(super) const RECORD_IN_USE: u16 = 0x1;
pub(super) const RECORD_DIRECTORY: u16 = 0x2;
/// `$FILE_NAME` namespaces.
pub(super) const NAMESPACE_DOS: u8 = 2;
/// Reparse tags that are links.
pub(super) const TAG_SYMLINK: u32 = 0xA000_000C;
pub(super) const TAG_MOUNT_POINT: u32 = 0xA000_0003;
/// Update sequence stride: every 512 bytes of a record or index block, whatever the sector.
const FIXUP_STRIDE: usize = 512;
/// 100 ns intervals from 1601-01-01 to 1970-01-01.
const EPOCH_DIFF_SECS: i64 = 11_644_473_600;

fn bytes<const N: usize>(b: &[u8], at: usize) -> Result<[u8; N], String> {
    at.checked_add(N)
        .and_then(|end| b.get(at..end))
        .map(|s| s.try_into().unwrap())
        .ok_or_else(|| {
            format!(
                "a field at byte {at} beyond the structure ({} bytes)",
                b.len()
            )
        })
}

pub(super) fn u16_at(b: &[u8], at: usize) -> Result<u16, String> {
    bytes(b, at).map(u16::from_le_bytes)
}

pub(super) fn u32_at(b: &[u8], at: usize) -> Result<u32, String> {
    bytes(b, at).map(u32::from_le_bytes)
}

pub(super) fn u64_at(b: &[u8], at: usize) -> Result<u64, String> {
    bytes(b, at).map(u64::from_le_bytes)
}

/// `b[at..at + len]`, or why not.
fn slice<'b>(b: &'b [u8], at: usize, len: usize, what: &str) -> Result<&'b [u8], String> {
    at.checked_add(len)
        .and_then(|end| b.get(at..end))
        .ok_or_else(|| format!("{what} ({len} bytes at {at}) beyond its structure"))
}

/// The record number of a file reference (the low 48 bits; the high 16 are a sequence number).
pub(super) fn record_of(reference: u64) -> u64 {
    reference & 0xFFFF_FFFF_FFFF
}

/// What the boot sector says.
#[derive(Debug, Clone)]
pub(super) struct Boot {
    pub sector: u64,
    pub cluster: u64,
    /// Bytes of the volume (the backup boot sector lies just after).
    pub size: u64,
    pub clusters: u64,
    pub mft_lcn: u64,
    pub record_size: u64,
}

/// Parses the boot sector (`b`: its 512 bytes; the OEM id has been checked).
pub(super) fn boot(b: &[u8]) -> Result<Boot, String> {
    let sector = u64::from(u16_at(b, 0x0B)?);
    if !(256..=4096).contains(&sector) || !sector.is_power_of_two() {
        return Err(format!("sector size {sector}"));
    }
    let spc = *b.get(0x0D).ok_or("short boot sector")?;
    let sectors_per_cluster = match spc {
        0 => return Err("0 sectors per cluster".into()),
        1..=0x80 if spc.is_power_of_two() => u64::from(spc),
        // Large clusters: a negative power of two.
        0xF4..=0xFF => 1u64 << (256 - u32::from(spc)),
        _ => return Err(format!("sectors per cluster byte {spc:#x}")),
    };
    let cluster = sector * sectors_per_cluster;
    if cluster > 2 << 20 {
        return Err(format!("clusters of {cluster} bytes"));
    }
    let total_sectors = u64_at(b, 0x28)?;
    let size = total_sectors
        .checked_mul(sector)
        .filter(|s| *s <= i64::MAX as u64)
        .ok_or_else(|| format!("{total_sectors} sectors"))?;
    let clusters = size / cluster;
    let mft_lcn = u64_at(b, 0x30)?;
    let record_size = match *b.get(0x40).ok_or("short boot sector")? as i8 {
        n @ 1.. => u64::from(n as u8) * cluster,
        n @ -16..=-9 => 1u64 << (-i32::from(n)),
        n => return Err(format!("MFT record size byte {n}")),
    };
    if !(1024..=65536).contains(&record_size) || !record_size.is_power_of_two() {
        return Err(format!("MFT records of {record_size} bytes"));
    }
    if clusters < 16 || mft_lcn >= clusters {
        return Err(format!("{clusters} clusters, the MFT at cluster {mft_lcn}"));
    }
    Ok(Boot {
        sector,
        cluster,
        size,
        clusters,
        mft_lcn,
        record_size,
    })
}

/// Checks the magic and undoes the update sequence fixups of a record or index block.
pub(super) fn fixup(buf: &mut [u8], magic: &[u8; 4]) -> Result<(), String> {
    if buf.get(..4) != Some(magic) {
        return Err(format!(
            "magic {:?} where {:?} belongs",
            String::from_utf8_lossy(&buf[..buf.len().min(4)]),
            String::from_utf8_lossy(magic)
        ));
    }
    let usa = usize::from(u16_at(buf, 4)?);
    let count = usize::from(u16_at(buf, 6)?);
    if count < 2 || (count - 1) * FIXUP_STRIDE != buf.len() || usa < 8 {
        return Err(format!(
            "update sequence of {count} for {} bytes",
            buf.len()
        ));
    }
    let array = slice(buf, usa, 2 * count, "update sequence array")?.to_vec();
    for i in 1..count {
        let end = i * FIXUP_STRIDE;
        if buf[end - 2..end] != array[..2] {
            return Err(format!(
                "update sequence mismatch in sector {i} (torn write)"
            ));
        }
        buf[end - 2..end].copy_from_slice(&array[2 * i..2 * i + 2]);
    }
    Ok(())
}

/// A run of clusters of a non-resident attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Run {
    pub vcn: u64,
    /// `None`: sparse (reads as zeroes).
    pub lcn: Option<u64>,
    pub len: u64,
}

/// One non-resident attribute record: a piece of a stream, from `first_vcn` to `next_vcn`.
#[derive(Debug, Clone)]
pub(super) struct Piece {
    pub first_vcn: u64,
    pub next_vcn: u64,
    /// Sizes (meaningful in the piece starting at VCN 0).
    pub size: u64,
    pub valid: u64,
    pub runs: Vec<Run>,
}

#[derive(Debug, Clone)]
pub(super) enum Value {
    Resident(Vec<u8>),
    NonResident(Piece),
}

/// One attribute of a record.
#[derive(Debug, Clone)]
pub(super) struct Attr {
    pub ty: u32,
    pub name: Vec<u16>,
    pub flags: u16,
    pub value: Value,
}

/// The header of an MFT record.
#[derive(Debug, Clone, Copy)]
pub(super) struct Head {
    pub flags: u16,
    /// The base record of an extension record (0 for a base record).
    pub base: u64,
}

/// Limits on the numbers a run list may hold, from the volume.
#[derive(Debug, Clone, Copy)]
pub(super) struct Volume {
    pub clusters: u64,
    /// The largest VCN a stream may reach (its byte offsets must fit an i64).
    pub max_vcn: u64,
}

/// Parses an MFT record (fixups already undone); adds at most `max_runs` runs to `runs_left`.
pub(super) fn record(
    buf: &[u8],
    vol: Volume,
    runs_left: &mut usize,
) -> Result<(Head, Vec<Attr>), String> {
    let flags = u16_at(buf, 0x16)?;
    let base = record_of(u64_at(buf, 0x20)?);
    let first = usize::from(u16_at(buf, 0x14)?);
    let used = (u32_at(buf, 0x18)? as usize).min(buf.len());
    let mut attrs = Vec::new();
    let mut at = first;
    while at + 8 <= used {
        let ty = u32_at(buf, at)?;
        if ty == ATTR_END {
            break;
        }
        let len = u32_at(buf, at + 4)? as usize;
        if len < 24 || len % 8 != 0 || at + len > used {
            return Err(format!("attribute of type {ty:#x} at {at}: length {len}"));
        }
        attrs.push(
            attribute(&buf[at..at + len], vol, runs_left)
                .map_err(|e| format!("attribute of type {ty:#x} at {at}: {e}"))?,
        );
        at += len;
    }
    Ok((Head { flags, base }, attrs))
}

fn attribute(a: &[u8], vol: Volume, runs_left: &mut usize) -> Result<Attr, String> {
    let ty = u32_at(a, 0)?;
    let non_resident = a[8] != 0;
    let name_len = usize::from(a[9]);
    let name_off = usize::from(u16_at(a, 0x0A)?);
    let flags = u16_at(a, 0x0C)?;
    let name = units(slice(a, name_off, name_len * 2, "name")?);
    let value = if !non_resident {
        let len = u32_at(a, 0x10)? as usize;
        let off = usize::from(u16_at(a, 0x14)?);
        Value::Resident(slice(a, off, len, "value")?.to_vec())
    } else {
        if a.len() < 0x40 {
            return Err("non-resident header cut short".into());
        }
        let first_vcn = u64_at(a, 0x10)?;
        let last_vcn = u64_at(a, 0x18)?;
        let runs_off = usize::from(u16_at(a, 0x20)?);
        let size = u64_at(a, 0x30)?;
        let valid = u64_at(a, 0x38)?;
        if valid > size || size > i64::MAX as u64 || first_vcn > vol.max_vcn {
            return Err(format!("first VCN {first_vcn}, size {size}, valid {valid}"));
        }
        let list = a.get(runs_off..).ok_or("run list beyond the attribute")?;
        let mut runs = Vec::new();
        let next_vcn = run_list(list, first_vcn, vol, &mut runs, runs_left)?;
        // An empty piece says last VCN -1.
        if next_vcn != last_vcn.wrapping_add(1) && !(runs.is_empty() && last_vcn == u64::MAX) {
            return Err(format!(
                "runs end at VCN {next_vcn}, the header says {}",
                last_vcn.wrapping_add(1)
            ));
        }
        Value::NonResident(Piece {
            first_vcn,
            next_vcn,
            size,
            valid,
            runs,
        })
    };
    Ok(Attr {
        ty,
        name,
        flags,
        value,
    })
}

/// Decodes a run list from `vcn`; returns the VCN after the last run.
pub(super) fn run_list(
    b: &[u8],
    mut vcn: u64,
    vol: Volume,
    out: &mut Vec<Run>,
    runs_left: &mut usize,
) -> Result<u64, String> {
    let mut lcn: i64 = 0;
    let mut at = 0;
    while let Some(&h) = b.get(at) {
        if h == 0 {
            break;
        }
        let (len_bytes, off_bytes) = (usize::from(h & 0xF), usize::from(h >> 4));
        if len_bytes == 0 || len_bytes > 8 || off_bytes > 8 {
            return Err(format!("run header {h:#x}"));
        }
        let field = slice(b, at + 1, len_bytes + off_bytes, "run")?;
        let len = signed(&field[..len_bytes]);
        let next = u64::try_from(len)
            .ok()
            .filter(|&l| l > 0)
            .and_then(|l| vcn.checked_add(l))
            .filter(|&n| n <= vol.max_vcn)
            .ok_or_else(|| format!("a run of {len} clusters at VCN {vcn}"))?;
        let len = next - vcn;
        let run_lcn = if off_bytes == 0 {
            None
        } else {
            lcn = lcn
                .checked_add(signed(&field[len_bytes..]))
                .filter(|&l| l >= 0)
                .ok_or("a run before the volume start")?;
            let l = lcn as u64;
            if l.checked_add(len).is_none_or(|e| e > vol.clusters) {
                return Err(format!(
                    "clusters {l}+{len} beyond the volume ({} clusters)",
                    vol.clusters
                ));
            }
            Some(l)
        };
        if *runs_left == 0 {
            return Err("too many runs".into());
        }
        *runs_left -= 1;
        out.push(Run {
            vcn,
            lcn: run_lcn,
            len,
        });
        vcn = next;
        at += 1 + len_bytes + off_bytes;
    }
    Ok(vcn)
}

/// A little-endian two's complement number of 1 to 8 bytes.
fn signed(b: &[u8]) -> i64 {
    let mut v = [if b.last().is_some_and(|&x| x & 0x80 != 0) {
        0xFF
    } else {
        0
    }; 8];
    v[..b.len()].copy_from_slice(b);
    i64::from_le_bytes(v)
}

/// UTF-16LE code units of `b` (an odd last byte is dropped).
pub(super) fn units(b: &[u8]) -> Vec<u16> {
    b.chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// UTF-8 bytes of a UTF-16 name; an unpaired surrogate becomes U+FFFD.
pub(super) fn utf8(u: &[u16]) -> Vec<u8> {
    char::decode_utf16(u.iter().copied())
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect::<String>()
        .into_bytes()
}

/// A `$FILE_NAME` value (an attribute, or the key of a directory index entry).
#[derive(Debug, Clone)]
pub(super) struct FileName {
    /// File attributes as of the last change of this name (`0x1000_0000`: a directory).
    pub flags: u32,
    pub namespace: u8,
    pub name: Vec<u16>,
}

pub(super) fn file_name(v: &[u8]) -> Result<FileName, String> {
    if v.len() < 0x42 {
        return Err("file name cut short".into());
    }
    let n = usize::from(v[0x40]);
    Ok(FileName {
        flags: u32_at(v, 0x38)?,
        namespace: v[0x41],
        name: units(slice(v, 0x42, 2 * n, "file name")?),
    })
}

/// The entries area of an index node whose header (entries offset, index length) is at `at`.
pub(super) fn index_area(b: &[u8], at: usize) -> Result<&[u8], String> {
    let start = u32_at(b, at)? as usize;
    let end = u32_at(b, at + 4)? as usize;
    if start > end {
        return Err(format!("index entries from {start} to {end}"));
    }
    slice(b, at + start, end - start, "index entries")
}

/// Adds the entries of an index node's entry area to `out` as (record number, name).
pub(super) fn index_entries(area: &[u8], out: &mut Vec<(u64, FileName)>) -> Result<(), String> {
    let mut at = 0;
    while at + 16 <= area.len() {
        let reference = u64_at(area, at)?;
        let len = usize::from(u16_at(area, at + 8)?);
        let key_len = usize::from(u16_at(area, at + 10)?);
        let flags = u16_at(area, at + 12)?;
        if len < 16 || len % 8 != 0 || at + len > area.len() {
            return Err(format!("index entry at {at}: length {len}"));
        }
        if flags & 2 != 0 {
            break;
        }
        if 16 + key_len > len {
            return Err(format!("index entry at {at}: key of {key_len} bytes"));
        }
        let key = &area[at + 16..at + 16 + key_len];
        out.push((record_of(reference), file_name(key)?));
        at += len;
    }
    Ok(())
}

/// An NTFS time (100 ns since 1601-01-01 UTC) as Unix time.
pub(super) fn time(t: u64) -> Time {
    Time {
        secs: (t / 10_000_000) as i64 - EPOCH_DIFF_SECS,
        nanos: (t % 10_000_000) as u32 * 100,
    }
}

/// The target of a symbolic link or junction reparse point (`None` for other tags).
pub(super) fn reparse_target(v: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let tag = u32_at(v, 0)?;
    let len = usize::from(u16_at(v, 4)?);
    let body = slice(v, 8, len, "reparse data")?;
    let (paths_at, relative) = match tag {
        TAG_SYMLINK => (12, u32_at(body, 8)? & 1 != 0),
        TAG_MOUNT_POINT => (8, false),
        _ => return Ok(None),
    };
    let paths = body.get(paths_at..).ok_or("reparse data cut short")?;
    let name = |i: usize| -> Result<Vec<u16>, String> {
        let off = usize::from(u16_at(body, i)?);
        let len = usize::from(u16_at(body, i + 2)?);
        Ok(units(slice(paths, off, len, "reparse path")?))
    };
    let (substitute, print) = (name(0)?, name(4)?);
    // Relative: the substitute name is the path. Absolute: it is an NT path (\??\C:\dir);
    // the print name is the one meant for people (C:\dir).
    let mut target = if relative || print.is_empty() {
        substitute
    } else {
        print
    };
    let nt_prefix: Vec<u16> = r"\??\".encode_utf16().collect();
    if target.starts_with(&nt_prefix) {
        target.drain(..nt_prefix.len());
    }
    let mut out = utf8(&target);
    for b in &mut out {
        if *b == b'\\' {
            *b = b'/';
        }
    }
    Ok(Some(out))
}

/// What an Interix special file (a system file ntfs-3g writes for a POSIX special file) is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Interix {
    Symlink,
    Char(u64, u64),
    Block(u64, u64),
}

pub(super) const INTERIX_SYMLINK: &[u8; 8] = b"IntxLNK\x01";

/// Recognizes the first bytes of a system file's data (its first 24 at most).
pub(super) fn interix(head: &[u8]) -> Option<Interix> {
    let dev =
        |make: fn(u64, u64) -> Interix| Some(make(u64_at(head, 8).ok()?, u64_at(head, 16).ok()?));
    match head.get(..8)? {
        m if m == INTERIX_SYMLINK => Some(Interix::Symlink),
        b"IntxCHR\0" => dev(Interix::Char),
        b"IntxBLK\0" => dev(Interix::Block),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_lists_are_checked() {
        let vol = Volume {
            clusters: 1000,
            max_vcn: 1 << 40,
        };
        let decode = |b: &[u8]| {
            let mut out = Vec::new();
            run_list(b, 0, vol, &mut out, &mut 100).map(|next| (next, out))
        };
        // 16 clusters at 100, a hole of 8, 4 clusters 50 before (a negative delta).
        let (next, runs) = decode(&[0x11, 16, 100, 0x01, 8, 0x11, 4, 0xCE, 0]).unwrap();
        assert_eq!(next, 28);
        let lcns: Vec<_> = runs.iter().map(|r| (r.vcn, r.lcn, r.len)).collect();
        assert_eq!(lcns, [(0, Some(100), 16), (16, None, 8), (24, Some(50), 4)]);
        assert!(
            decode(&[0x12, 16, 0xE8, 0x03]).is_err(),
            "beyond the volume"
        );
        assert!(
            decode(&[0x11, 16, 0x80]).is_err(),
            "before the volume start"
        );
        assert!(decode(&[0x11, 0, 5]).is_err(), "an empty run");
        assert!(decode(&[0x19, 1, 1]).is_err(), "a 9-byte field");
        assert!(decode(&[0x21, 4, 1]).is_err(), "cut short");
        let mut out = Vec::new();
        assert!(
            run_list(&[0x01, 1, 0x01, 1], 0, vol, &mut out, &mut 1).is_err(),
            "too many"
        );
    }

    #[test]
    fn ntfs_times_convert_to_unix() {
        assert_eq!(time(116_444_736_000_000_000), Time { secs: 0, nanos: 0 });
        assert_eq!(
            time(116_444_736_000_000_001),
            Time {
                secs: 0,
                nanos: 100
            }
        );
        // Before 1970: negative seconds, nanoseconds counted forward.
        assert_eq!(
            time(116_444_735_995_000_000),
            Time {
                secs: -1,
                nanos: 500_000_000
            }
        );
        assert_eq!(time(0).secs, -11_644_473_600);
    }
}
