//! ext2, ext3 and ext4: the used map from the block groups' allocation bitmaps.
//!
//! ```text
//!  byte 0   1024                block 1 (2 with 1 KiB blocks)
//!  | boot | superblock (0xEF53) | descriptors | reserved GDT | bitmaps, inode tables | data ...
//!  |<------------------------- group 0 ------------------------------------------->| group 1 ...
//!  group g starts at block first_data_block + g * blocks_per_group; groups 0, 1 and powers of
//!  3, 5, 7 (sparse_super) repeat the superblock, descriptors and reserved GDT at their start.
//!  With flex_bg the bitmaps and inode tables of a flex group all lie in its first group.
//! ```
//!
//! Each block group has a block bitmap (one bit per block, per cluster with bigalloc; bit `i`
//! of byte `j` is unit `8j + i` of the group), found through the group's descriptor. A group
//! flagged `BLOCK_UNINIT` (only meaningful with `uninit_bg`/`metadata_csum`) has no bitmap on
//! disk: its used blocks are then only its own metadata, as the kernel computes it when it
//! initializes such a bitmap: the superblock and descriptor backups (and reserved GDT blocks)
//! at the group's start if the group has a backup, and its own bitmaps and inode table where
//! they lie inside the group.
//!
//! What this reader trusts and what makes it give up ([`Probe::Unsupported`]):
//!
//! | situation                                          | answer                              |
//! |----------------------------------------------------|-------------------------------------|
//! | 64bit, flex_bg, meta_bg, sparse_super(2), bigalloc | read                                |
//! | `needs_recovery` (mounted and not frozen, crashed) | unsupported: bitmaps may be stale    |
//! | state not "clean" or "errors" recorded             | unsupported                         |
//! | unknown incompat / ro_compat feature, journal dev  | unsupported                         |
//! | superblock, descriptor or bitmap checksum mismatch | unsupported                         |
//! | descriptor free count disagrees with its bitmap    | unsupported                         |
//! | filesystem larger than the device, bad geometry    | unsupported                         |
//!
//! Only the superblock, the descriptor table and the bitmaps are read, in batches of groups
//! whose bitmap blocks are read in runs (contiguous with flex_bg), so a 1 TiB filesystem costs
//! about 32 MiB of reads and a few MiB of memory besides the resulting ranges.
//!
//! Besides what the bitmaps say, every group's static metadata (superblock and descriptor
//! backups, bitmaps, inode table) is counted as used wherever it lies, and so is everything
//! before the first group (the boot block) and after the filesystem's last block up to the
//! end of the device (a filesystem smaller than its device: the rest holds something we do not
//! know, so it is kept).

#[path = "ext4_tree.rs"]
pub mod tree;

use super::{FsError, Probe, RangeSet, UsedMap, bit_runs, le16, le32, read_bytes};
use crate::device::BlockDevice;

const FS: &str = "ext4";
const SUPERBLOCK_OFFSET: u64 = 1024;
const SUPERBLOCK_SIZE: usize = 1024;
const MAGIC: u16 = 0xEF53;

// s_state
const STATE_VALID: u16 = 0x1;
const STATE_ERROR: u16 = 0x2;

// s_feature_compat
const COMPAT_HAS_JOURNAL: u32 = 0x4;
const COMPAT_SPARSE_SUPER2: u32 = 0x200;

// s_feature_incompat
const INCOMPAT_COMPRESSION: u32 = 0x1;
const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_EXTENTS: u32 = 0x40;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_MMP: u32 = 0x100;
const INCOMPAT_FLEX_BG: u32 = 0x200;
const INCOMPAT_EA_INODE: u32 = 0x400;
const INCOMPAT_DIRDATA: u32 = 0x1000;
const INCOMPAT_CSUM_SEED: u32 = 0x2000;
const INCOMPAT_LARGEDIR: u32 = 0x4000;
const INCOMPAT_INLINE_DATA: u32 = 0x8000;
const INCOMPAT_ENCRYPT: u32 = 0x10000;
const INCOMPAT_CASEFOLD: u32 = 0x20000;
/// Incompatible features that do not change where blocks are or how they are allocated.
const INCOMPAT_UNDERSTOOD: u32 = INCOMPAT_FILETYPE
    | INCOMPAT_META_BG
    | INCOMPAT_EXTENTS
    | INCOMPAT_64BIT
    | INCOMPAT_MMP
    | INCOMPAT_FLEX_BG
    | INCOMPAT_EA_INODE
    | INCOMPAT_DIRDATA
    | INCOMPAT_CSUM_SEED
    | INCOMPAT_LARGEDIR
    | INCOMPAT_INLINE_DATA
    | INCOMPAT_ENCRYPT
    | INCOMPAT_CASEFOLD;

// s_feature_ro_compat
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_LARGE_FILE: u32 = 0x2;
const RO_COMPAT_BTREE_DIR: u32 = 0x4;
const RO_COMPAT_HUGE_FILE: u32 = 0x8;
const RO_COMPAT_GDT_CSUM: u32 = 0x10;
const RO_COMPAT_DIR_NLINK: u32 = 0x20;
const RO_COMPAT_EXTRA_ISIZE: u32 = 0x40;
const RO_COMPAT_QUOTA: u32 = 0x100;
const RO_COMPAT_BIGALLOC: u32 = 0x200;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
const RO_COMPAT_READONLY: u32 = 0x1000;
const RO_COMPAT_PROJECT: u32 = 0x2000;
const RO_COMPAT_SHARED_BLOCKS: u32 = 0x4000;
const RO_COMPAT_VERITY: u32 = 0x8000;
const RO_COMPAT_ORPHAN_PRESENT: u32 = 0x10000;
/// Read-only-compatible features whose block accounting this reader knows. Not among them:
/// `has_snapshot` (0x80) and `replica` (0x800), and anything newer.
const RO_COMPAT_UNDERSTOOD: u32 = RO_COMPAT_SPARSE_SUPER
    | RO_COMPAT_LARGE_FILE
    | RO_COMPAT_BTREE_DIR
    | RO_COMPAT_HUGE_FILE
    | RO_COMPAT_GDT_CSUM
    | RO_COMPAT_DIR_NLINK
    | RO_COMPAT_EXTRA_ISIZE
    | RO_COMPAT_QUOTA
    | RO_COMPAT_BIGALLOC
    | RO_COMPAT_METADATA_CSUM
    | RO_COMPAT_READONLY
    | RO_COMPAT_PROJECT
    | RO_COMPAT_SHARED_BLOCKS
    | RO_COMPAT_VERITY
    | RO_COMPAT_ORPHAN_PRESENT;

// bg_flags
const BG_BLOCK_UNINIT: u16 = 0x2;

/// Descriptor offset of `bg_checksum`, and the end of `bg_block_bitmap_csum_hi`.
const DESC_CHECKSUM: usize = 0x1E;
const DESC_BITMAP_CSUM_HI_END: usize = 0x3A;

/// Bitmaps read per batch (bytes); bounds the memory of a scan.
const BATCH_BYTES: u64 = 4 << 20;
/// Longest single read of contiguous metadata blocks.
const MAX_RUN_BYTES: u64 = 1 << 20;

/// Why the reader gives up on a recognized filesystem.
struct Refuse(String);

macro_rules! refuse {
    ($($arg:tt)*) => { return Err(Step::Refuse(Refuse(format!($($arg)*)))) };
}

/// The outcome of one step: an I/O error, or a reason to give up.
enum Step {
    Io(FsError),
    Refuse(Refuse),
}

impl From<FsError> for Step {
    fn from(e: FsError) -> Self {
        Step::Io(e)
    }
}

/// Reads the ext2/3/4 filesystem on `dev`, if there is one.
pub fn probe(dev: &dyn BlockDevice) -> Result<Probe, FsError> {
    if dev.size() < SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE as u64 {
        return Ok(Probe::Unknown);
    }
    let raw = read_bytes(dev, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, FS, || {
        "superblock".to_owned()
    })?;
    if le16(&raw, 0x38) != MAGIC {
        return Ok(Probe::Unknown);
    }
    let sb = match Super::parse(&raw, dev.size()) {
        Ok(sb) => sb,
        Err(Refuse(reason)) => {
            return Ok(Probe::Unsupported {
                filesystem: FS,
                reason,
            });
        }
    };
    match sb.scan(dev) {
        Ok(map) => Ok(Probe::Used(map)),
        Err(Step::Io(e)) => Err(e),
        Err(Step::Refuse(Refuse(reason))) => Ok(Probe::Unsupported {
            filesystem: sb.name,
            reason,
        }),
    }
}

/// The superblock fields that locate the groups and their metadata.
#[derive(Debug)]
struct Super {
    name: &'static str,
    block_size: u64,
    /// Blocks per allocation unit (cluster); 1 without bigalloc.
    ratio: u64,
    blocks_count: u64,
    first_data_block: u64,
    blocks_per_group: u64,
    clusters_per_group: u64,
    groups: u64,
    desc_size: usize,
    descs_per_block: u64,
    desc_blocks: u64,
    reserved_gdt: u64,
    first_meta_bg: u64,
    itable_blocks: u64,
    inodes_per_group: u64,
    inode_size: u64,
    incompat: u32,
    ro_compat: u32,
    sparse_super2: bool,
    backup_bgs: [u64; 2],
    uuid: [u8; 16],
    /// crc32c seed of metadata_csum.
    csum_seed: u32,
}

/// One group descriptor, the fields this reader needs.
#[derive(Debug, Clone, Copy)]
struct Desc {
    block_bitmap: u64,
    inode_bitmap: u64,
    inode_table: u64,
    free: u64,
    flags: u16,
    bitmap_csum: u32,
}

impl Super {
    /// Parses a superblock for the used map, which must be trustworthy (clean, recovered).
    fn parse(b: &[u8], device_size: u64) -> Result<Super, Refuse> {
        Super::parse_for(b, device_size, true)
    }

    /// Parses a superblock; `strict`: refuse a journal that needs recovery and a state not
    /// clean (the used map's needs; reading files can do without).
    fn parse_for(b: &[u8], device_size: u64, strict: bool) -> Result<Super, Refuse> {
        let bad = |what: String| Err(Refuse(what));
        let rev = le32(b, 0x4C);
        if rev > 1 {
            return bad(format!("unknown revision level {rev}"));
        }
        // Revision 0 has no feature fields: they read as zero.
        let dynamic = rev >= 1;
        let field = |at: usize| if dynamic { le32(b, at) } else { 0 };
        let compat = field(0x5C);
        let incompat = field(0x60);
        let ro_compat = field(0x64);

        let state = le16(b, 0x3A);
        if incompat & INCOMPAT_JOURNAL_DEV != 0 {
            return bad("an external journal device, not a filesystem".into());
        }
        if strict && incompat & INCOMPAT_RECOVER != 0 {
            return bad(
                "the journal needs recovery, so the bitmaps may be stale: the \
                        filesystem is mounted (freeze it first) or was not cleanly unmounted"
                    .into(),
            );
        }
        if strict && state & STATE_ERROR != 0 {
            return bad("the filesystem has errors recorded (run e2fsck)".into());
        }
        if strict && state & STATE_VALID == 0 {
            return bad(
                "the filesystem is not marked clean: it is mounted without a journal \
                         or was not cleanly unmounted"
                    .into(),
            );
        }
        if incompat & INCOMPAT_COMPRESSION != 0 {
            return bad("compression feature (unsupported)".into());
        }
        let unknown = incompat & !INCOMPAT_UNDERSTOOD;
        if unknown != 0 {
            return bad(format!("unknown incompatible features {unknown:#x}"));
        }
        let unknown = ro_compat & !RO_COMPAT_UNDERSTOOD;
        if unknown != 0 {
            return bad(format!(
                "unknown read-only-compatible features {unknown:#x}"
            ));
        }
        if ro_compat & RO_COMPAT_METADATA_CSUM != 0 {
            if b[0x175] != 1 {
                return bad(format!("unknown checksum type {}", b[0x175]));
            }
            let want = le32(b, 0x3FC);
            let got = crc32c(!0, &b[..0x3FC]);
            if want != got {
                return bad(format!(
                    "superblock checksum mismatch (stored {want:#010x}, computed {got:#010x})"
                ));
            }
        }

        let log_block = le32(b, 0x18);
        if log_block > 6 {
            return bad(format!("block size 2^(10+{log_block}) out of range"));
        }
        let block_size = 1024u64 << log_block;
        let log_cluster = le32(b, 0x1C);
        let bigalloc = ro_compat & RO_COMPAT_BIGALLOC != 0;
        let ratio = if bigalloc {
            if log_cluster < log_block || log_cluster - log_block > 16 {
                return bad(format!(
                    "cluster size 2^(10+{log_cluster}) with block size {block_size}"
                ));
            }
            1u64 << (log_cluster - log_block)
        } else {
            if log_cluster != log_block {
                return bad(format!(
                    "cluster size 2^(10+{log_cluster}) differs from block size {block_size} \
                     without bigalloc"
                ));
            }
            1
        };
        let is64 = incompat & INCOMPAT_64BIT != 0;
        let blocks_count = u64::from(le32(b, 0x04))
            | if is64 {
                u64::from(le32(b, 0x150)) << 32
            } else {
                0
            };
        let first_data_block = u64::from(le32(b, 0x14));
        let blocks_per_group = u64::from(le32(b, 0x20));
        let clusters_per_group = if bigalloc {
            u64::from(le32(b, 0x24))
        } else {
            blocks_per_group
        };
        if clusters_per_group == 0
            || clusters_per_group > 8 * block_size
            || blocks_per_group != clusters_per_group * ratio
        {
            return bad(format!(
                "{blocks_per_group} blocks and {clusters_per_group} clusters per group with \
                 block size {block_size}"
            ));
        }
        if first_data_block > 1 || (bigalloc && first_data_block != 0) {
            return bad(format!("first data block {first_data_block}"));
        }
        if blocks_count <= first_data_block {
            return bad(format!("block count {blocks_count}"));
        }
        let Some(fs_bytes) = blocks_count.checked_mul(block_size) else {
            return bad(format!("block count {blocks_count} overflows"));
        };
        if fs_bytes > device_size {
            return bad(format!(
                "the filesystem ({fs_bytes} bytes) is larger than the device ({device_size} \
                 bytes): truncated?"
            ));
        }
        let groups = (blocks_count - first_data_block).div_ceil(blocks_per_group);
        if groups > u64::from(u32::MAX) {
            return bad(format!("{groups} groups"));
        }
        let inodes_per_group = u64::from(le32(b, 0x28));
        let inodes_count = u64::from(le32(b, 0x00));
        if inodes_per_group == 0
            || inodes_per_group > 8 * block_size
            || inodes_count != groups * inodes_per_group
        {
            return bad(format!(
                "{inodes_count} inodes, {inodes_per_group} per group, in {groups} groups"
            ));
        }
        let inode_size = if dynamic {
            u64::from(le16(b, 0x58))
        } else {
            128
        };
        if inode_size < 128 || !inode_size.is_power_of_two() || inode_size > block_size {
            return bad(format!("inode size {inode_size}"));
        }
        let desc_size = if is64 {
            let d = usize::from(le16(b, 0xFE));
            if !(64..=1024).contains(&d) || !d.is_power_of_two() {
                return bad(format!("descriptor size {d}"));
            }
            d
        } else {
            32
        };
        let descs_per_block = block_size / desc_size as u64;
        let desc_blocks = groups.div_ceil(descs_per_block);
        let meta_bg = incompat & INCOMPAT_META_BG != 0;
        let first_meta_bg = if meta_bg {
            u64::from(le32(b, 0x104))
        } else {
            0
        };
        if first_meta_bg > desc_blocks {
            return bad(format!(
                "first meta group {first_meta_bg} beyond {desc_blocks} descriptor blocks"
            ));
        }
        let reserved_gdt = if dynamic { u64::from(le16(b, 0xCE)) } else { 0 };
        let sparse_super2 = compat & COMPAT_SPARSE_SUPER2 != 0;
        let backup_bgs = [u64::from(le32(b, 0x24C)), u64::from(le32(b, 0x250))];
        let uuid: [u8; 16] = b[0x68..0x78].try_into().unwrap();
        let csum_seed = if incompat & INCOMPAT_CSUM_SEED != 0 {
            le32(b, 0x270)
        } else {
            crc32c(!0, &uuid)
        };
        let name = if incompat
            & !(INCOMPAT_FILETYPE | INCOMPAT_META_BG | INCOMPAT_RECOVER | INCOMPAT_JOURNAL_DEV)
            != 0
            || ro_compat & !(RO_COMPAT_SPARSE_SUPER | RO_COMPAT_LARGE_FILE | RO_COMPAT_BTREE_DIR)
                != 0
        {
            "ext4"
        } else if compat & COMPAT_HAS_JOURNAL != 0 {
            "ext3"
        } else {
            "ext2"
        };
        let sb = Super {
            name,
            block_size,
            ratio,
            blocks_count,
            first_data_block,
            blocks_per_group,
            clusters_per_group,
            groups,
            desc_size,
            descs_per_block,
            desc_blocks,
            reserved_gdt,
            first_meta_bg,
            itable_blocks: (inodes_per_group * inode_size).div_ceil(block_size),
            inodes_per_group,
            inode_size,
            incompat,
            ro_compat,
            sparse_super2,
            backup_bgs,
            uuid,
            csum_seed,
        };
        // The static metadata of a group must fit in it, or the geometry is nonsense.
        let base = sb.base_meta_blocks(0) + u64::from(sb.sb_block_adjust(0));
        if base >= blocks_per_group.min(blocks_count - first_data_block) {
            return bad(format!(
                "{base} superblock and descriptor blocks do not fit in group 0"
            ));
        }
        Ok(sb)
    }

    fn has_flag(&self, incompat: u32) -> bool {
        self.incompat & incompat != 0
    }

    fn group_desc_csum(&self) -> bool {
        self.ro_compat & (RO_COMPAT_GDT_CSUM | RO_COMPAT_METADATA_CSUM) != 0
    }

    fn metadata_csum(&self) -> bool {
        self.ro_compat & RO_COMPAT_METADATA_CSUM != 0
    }

    fn group_start(&self, g: u64) -> u64 {
        self.first_data_block + g * self.blocks_per_group
    }

    /// Blocks in group `g` (the last one may be shorter).
    fn group_blocks(&self, g: u64) -> u64 {
        (self.blocks_count - self.group_start(g)).min(self.blocks_per_group)
    }

    /// Whether group `g` holds a copy of the superblock (and descriptors).
    fn has_super(&self, g: u64) -> bool {
        if g == 0 {
            return true;
        }
        if self.sparse_super2 {
            return g == self.backup_bgs[0] || g == self.backup_bgs[1];
        }
        if g <= 1 || self.ro_compat & RO_COMPAT_SPARSE_SUPER == 0 {
            return true;
        }
        if g % 2 == 0 {
            return false;
        }
        let power_of = |mut n: u64, base: u64| {
            while n > 1 && n % base == 0 {
                n /= base;
            }
            n == 1
        };
        power_of(g, 3) || power_of(g, 5) || power_of(g, 7)
    }

    /// Whether group `g`'s descriptors are in the meta_bg layout.
    fn in_meta_bg(&self, g: u64) -> bool {
        self.has_flag(INCOMPAT_META_BG) && g >= self.first_meta_bg * self.descs_per_block
    }

    /// Blocks at the start of group `g` taken by the superblock backup, descriptor blocks and
    /// reserved GDT blocks (the kernel's "base metadata" of a group).
    fn base_meta_blocks(&self, g: u64) -> u64 {
        let sup = u64::from(self.has_super(g));
        if !self.in_meta_bg(g) {
            if sup == 0 {
                return 0;
            }
            let gdt = if self.has_flag(INCOMPAT_META_BG) {
                self.first_meta_bg
            } else {
                self.desc_blocks
            };
            sup + gdt + self.reserved_gdt
        } else {
            let first = g / self.descs_per_block * self.descs_per_block;
            let last = first + self.descs_per_block - 1;
            sup + u64::from(g == first || g == first + 1 || g == last)
        }
    }

    /// 1 where the superblock is not in the group's first block: group 0 with 1 KiB blocks
    /// and `first_data_block` 0 (bigalloc), whose block 0 is the boot block.
    fn sb_block_adjust(&self, g: u64) -> u8 {
        u8::from(g == 0 && self.block_size == 1024 && self.first_data_block == 0)
    }

    /// Where descriptor block `i` is.
    fn desc_block_loc(&self, i: u64) -> u64 {
        let sb_block = if self.block_size == 1024 { 1 } else { 0 };
        if !self.has_flag(INCOMPAT_META_BG) || i < self.first_meta_bg {
            return sb_block + i + 1;
        }
        let g = i * self.descs_per_block;
        self.group_start(g) + u64::from(self.has_super(g)) + u64::from(self.sb_block_adjust(g))
    }

    fn parse_desc(&self, d: &[u8]) -> Desc {
        let wide = self.desc_size >= 64;
        let hi32 = |at: usize| {
            if wide {
                u64::from(le32(d, at)) << 32
            } else {
                0
            }
        };
        let hi16 = |at: usize| {
            if wide {
                u64::from(le16(d, at)) << 16
            } else {
                0
            }
        };
        let csum_hi = if self.desc_size >= DESC_BITMAP_CSUM_HI_END {
            u32::from(le16(d, 0x38)) << 16
        } else {
            0
        };
        Desc {
            block_bitmap: u64::from(le32(d, 0x00)) | hi32(0x20),
            inode_bitmap: u64::from(le32(d, 0x04)) | hi32(0x24),
            inode_table: u64::from(le32(d, 0x08)) | hi32(0x28),
            free: u64::from(le16(d, 0x0C)) | hi16(0x2C),
            flags: le16(d, 0x12),
            bitmap_csum: u32::from(le16(d, 0x18)) | csum_hi,
        }
    }

    /// Checks the descriptor checksum (uninit_bg: crc16; metadata_csum: crc32c).
    fn desc_csum_ok(&self, g: u64, d: &[u8]) -> bool {
        let stored = le16(d, DESC_CHECKSUM);
        let group = (g as u32).to_le_bytes();
        let rest = &d[DESC_CHECKSUM + 2..self.desc_size];
        if self.metadata_csum() {
            let mut c = crc32c(self.csum_seed, &group);
            c = crc32c(c, &d[..DESC_CHECKSUM]);
            c = crc32c(c, &[0, 0]);
            c = crc32c(c, rest);
            stored == c as u16
        } else if self.ro_compat & RO_COMPAT_GDT_CSUM != 0 {
            let mut c = crc16(!0, &self.uuid);
            c = crc16(c, &group);
            c = crc16(c, &d[..DESC_CHECKSUM]);
            if self.has_flag(INCOMPAT_64BIT) {
                c = crc16(c, rest);
            }
            stored == c
        } else {
            true
        }
    }

    /// Whether `[start, start + len)` is a plausible metadata location.
    fn in_fs(&self, start: u64, len: u64) -> bool {
        start >= self.first_data_block
            && start
                .checked_add(len)
                .is_some_and(|end| end <= self.blocks_count)
    }

    /// Reads every group's bitmap and builds the map.
    fn scan(&self, dev: &dyn BlockDevice) -> Result<UsedMap, Step> {
        let bs = self.block_size;
        let mut set = RangeSet::default();
        // Everything before the first group: the boot block with 1 KiB blocks.
        set.add(0, self.first_data_block * bs);
        let batch = (BATCH_BYTES / bs).max(1);
        let mut bitmaps = vec![0u8; (batch * bs) as usize];
        let mut g0 = 0;
        while g0 < self.groups {
            let g1 = (g0 + batch).min(self.groups);
            let descs = self.read_descs(dev, g0, g1)?;
            // The bitmaps to read: (block, slot) for each initialized group.
            let mut wanted = Vec::with_capacity(descs.len());
            let mut uninit = vec![false; descs.len()];
            for (k, d) in descs.iter().enumerate() {
                let g = g0 + k as u64;
                if !self.in_fs(d.block_bitmap, 1)
                    || !self.in_fs(d.inode_bitmap, 1)
                    || !self.in_fs(d.inode_table, self.itable_blocks)
                {
                    refuse!(
                        "group {g}: metadata outside the filesystem (block bitmap {}, inode \
                         bitmap {}, inode table {})",
                        d.block_bitmap,
                        d.inode_bitmap,
                        d.inode_table
                    );
                }
                if self.group_desc_csum() && d.flags & BG_BLOCK_UNINIT != 0 {
                    if g == 0 {
                        refuse!("group 0 has an uninitialized block bitmap");
                    }
                    uninit[k] = true;
                } else {
                    wanted.push((d.block_bitmap, k));
                }
            }
            self.read_blocks(dev, &mut wanted, &mut bitmaps, "block bitmap")?;
            for (k, d) in descs.iter().enumerate() {
                let g = g0 + k as u64;
                let bitmap = if uninit[k] {
                    None
                } else {
                    Some(&bitmaps[k * bs as usize..(k + 1) * bs as usize])
                };
                self.add_group(g, d, bitmap, &mut set)?;
            }
            g0 = g1;
        }
        // Past the filesystem's end: not the filesystem's, content unknown, so kept.
        let fs_bytes = self.blocks_count * bs;
        set.add(fs_bytes, dev.size());
        let used = set.finish();
        let used_bytes = used.iter().map(|(s, e)| e - s).sum();
        Ok(UsedMap {
            filesystem: self.name,
            fs_block_size: bs as u32,
            fs_bytes,
            used,
            used_bytes,
            total_bytes: dev.size(),
        })
    }

    /// Reads and checks the descriptors of groups `g0..g1`.
    fn read_descs(&self, dev: &dyn BlockDevice, g0: u64, g1: u64) -> Result<Vec<Desc>, Step> {
        let dpb = self.descs_per_block;
        let (first, last) = (g0 / dpb, (g1 - 1) / dpb);
        let mut wanted = Vec::with_capacity((last - first + 1) as usize);
        for i in first..=last {
            let loc = self.desc_block_loc(i);
            if !self.in_fs(loc, 1) {
                refuse!("descriptor block {i} at {loc}, outside the filesystem");
            }
            wanted.push((loc, (i - first) as usize));
        }
        let mut buf = vec![0u8; wanted.len() * self.block_size as usize];
        self.read_blocks(dev, &mut wanted, &mut buf, "group descriptors")?;
        let mut out = Vec::with_capacity((g1 - g0) as usize);
        for g in g0..g1 {
            let at = ((g - first * dpb) as usize) * self.desc_size;
            let raw = &buf[at..at + self.desc_size];
            if !self.desc_csum_ok(g, raw) {
                refuse!("group {g}: descriptor checksum mismatch");
            }
            out.push(self.parse_desc(raw));
        }
        Ok(out)
    }

    /// Reads the blocks in `wanted` (block number, slot) into `out` (one block per slot),
    /// reading runs of adjacent blocks at once.
    fn read_blocks(
        &self,
        dev: &dyn BlockDevice,
        wanted: &mut [(u64, usize)],
        out: &mut [u8],
        what: &'static str,
    ) -> Result<(), Step> {
        let bs = self.block_size;
        let max_run = (MAX_RUN_BYTES / bs).max(1);
        wanted.sort_unstable();
        let mut i = 0;
        while i < wanted.len() {
            let start = wanted[i].0;
            let mut j = i + 1;
            while j < wanted.len() && wanted[j].0 <= wanted[j - 1].0 + 1 {
                if wanted[j].0 == wanted[j - 1].0 {
                    refuse!("two groups share the {what} block {}", wanted[j].0);
                }
                if wanted[j].0 - start >= max_run {
                    break;
                }
                j += 1;
            }
            let n = wanted[j - 1].0 - start + 1;
            let run = read_bytes(dev, start * bs, (n * bs) as usize, FS, || {
                format!("{what} blocks {start}..{}", start + n)
            })?;
            for &(block, slot) in &wanted[i..j] {
                let from = ((block - start) * bs) as usize;
                let to = slot * bs as usize;
                out[to..to + bs as usize].copy_from_slice(&run[from..from + bs as usize]);
            }
            i = j;
        }
        Ok(())
    }

    /// Adds the used blocks of group `g` to `set`: from its bitmap, or for an uninitialized
    /// bitmap from its layout; plus its static metadata wherever it lies.
    fn add_group(
        &self,
        g: u64,
        d: &Desc,
        bitmap: Option<&[u8]>,
        set: &mut RangeSet,
    ) -> Result<(), Step> {
        let bs = self.block_size;
        let start = self.group_start(g);
        let blocks = self.group_blocks(g);
        let end = start + blocks;
        let units = blocks.div_ceil(self.ratio);
        let to_bytes = |u0: u64, u1: u64| {
            let s = start + u0 * self.ratio;
            let e = (start + u1 * self.ratio).min(end);
            (s * bs, e * bs)
        };
        let base = self.base_meta_blocks(g) + u64::from(self.sb_block_adjust(g));
        if base > blocks {
            refuse!("group {g}: {base} superblock and descriptor blocks do not fit in it");
        }
        let mut used_units = 0u64;
        match bitmap {
            Some(bitmap) => {
                if self.metadata_csum() {
                    let mut c = crc32c(
                        self.csum_seed,
                        &bitmap[..(self.clusters_per_group / 8) as usize],
                    );
                    if self.desc_size < DESC_BITMAP_CSUM_HI_END {
                        c &= 0xFFFF;
                    }
                    if c != d.bitmap_csum {
                        refuse!("group {g}: block bitmap checksum mismatch");
                    }
                }
                bit_runs(bitmap, units, |u0, u1| {
                    used_units += u1 - u0;
                    let (s, e) = to_bytes(u0, u1);
                    set.add(s, e);
                });
            }
            None => {
                // The kernel's initialization of an uninitialized bitmap: the base metadata
                // at the group's start, and its own bitmaps and inode table inside the group.
                let mut marks = vec![(start, start + base)];
                for (s, n) in [
                    (d.block_bitmap, 1),
                    (d.inode_bitmap, 1),
                    (d.inode_table, self.itable_blocks),
                ] {
                    let (s, e) = (s.max(start), (s + n).min(end));
                    if s < e {
                        marks.push((s, e));
                    }
                }
                marks.sort_unstable();
                let mut last_unit_end = 0;
                for (s, e) in marks {
                    let u0 = ((s - start) / self.ratio).max(last_unit_end);
                    let u1 = (e - start).div_ceil(self.ratio);
                    if u0 < u1 {
                        used_units += u1 - u0;
                        let (bs0, bs1) = to_bytes(u0, u1);
                        set.add(bs0, bs1);
                        last_unit_end = u1;
                    }
                }
            }
        }
        let free = units - used_units;
        if free != d.free {
            refuse!(
                "group {g}: the descriptor counts {} free clusters, the bitmap {free}",
                d.free
            );
        }
        // Static metadata, wherever it lies: already in a consistent bitmap, kept regardless.
        set.add(start * bs, (start + base) * bs);
        set.add(d.block_bitmap * bs, (d.block_bitmap + 1) * bs);
        set.add(d.inode_bitmap * bs, (d.inode_bitmap + 1) * bs);
        set.add(
            d.inode_table * bs,
            (d.inode_table + self.itable_blocks) * bs,
        );
        Ok(())
    }
}

const CRC32C_TABLE: [u32; 256] = crc_table(0x82F6_3B78);

const fn crc_table(poly: u32) -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ poly } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

/// CRC32C (Castagnoli) register update without pre- or post-inversion, as ext4 uses it.
fn crc32c(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = CRC32C_TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

/// CRC16 (polynomial 0x8005, reflected) register update, as `uninit_bg` descriptor checksums
/// use it.
fn crc16(mut crc: u16, data: &[u8]) -> u16 {
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

#[cfg(test)]
#[path = "ext4_tests.rs"]
mod tests;
