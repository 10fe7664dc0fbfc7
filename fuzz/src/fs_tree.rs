//! The filesystem readers on any device image: `fs::open::open_tree` (partition tables, then
//! the ext2/3/4 and NTFS readers) and a bounded walk of whatever it opens, calling every
//! `FileTree` operation. Properties: no panic, no unbounded memory or time; errors are fine.
//!
//! A fuzz input is a sparse image, so that seeds made from real filesystems stay small and a
//! mutation lands in a sector that matters:
//!
//! ```text
//!   u32 LE  device size in 4 KiB units (clamped to 16 ..= 4096: 64 KiB to 16 MiB)
//!   then, repeated:  u32 LE sector number (modulo the device's sectors), 512 bytes
//! ```
//! Sectors not given read as zeroes; a later record for a sector replaces an earlier one.

use std::sync::Arc;

use cowd::device::{BlockDevice, MemoryDevice};
use cowd::fs::open::{open_tree, partitions};
use cowd::fs::tree::{FileTree, Ino, Kind, lookup};

const SECTOR: usize = 512;
/// Entries a walk visits at most, and bytes read from each file: enough to reach every
/// structure of a seed, few enough for many executions a second (a damaged directory can
/// make each listing long).
const ENTRIES: usize = 256;
const READ: usize = 16 << 10;

/// The device an input describes.
pub fn device(data: &[u8]) -> Arc<MemoryDevice> {
    let units = data
        .get(..4)
        .map_or(16, |b| u32::from_le_bytes(b.try_into().unwrap()))
        .clamp(16, 4096);
    let size = u64::from(units) * 4096;
    let dev = MemoryDevice::new(size);
    let sectors = size / SECTOR as u64;
    for rec in data.get(4..).unwrap_or_default().chunks(4 + SECTOR) {
        if rec.len() < 4 + SECTOR {
            break;
        }
        let n = u64::from(u32::from_le_bytes(rec[..4].try_into().unwrap())) % sectors;
        dev.write_at(&rec[4..], n * SECTOR as u64, false)
            .expect("a write inside a memory device");
    }
    Arc::new(dev)
}

/// The input describing `image` (its non-zero sectors); the inverse of [`device`] for images
/// of 64 KiB to 16 MiB in whole 4 KiB units.
pub fn encode(image: &[u8]) -> Vec<u8> {
    let units = (image.len() / 4096) as u32;
    let mut out = units.to_le_bytes().to_vec();
    for (i, s) in image.chunks(SECTOR).enumerate() {
        if s.iter().any(|&b| b != 0) && s.len() == SECTOR {
            out.extend_from_slice(&(i as u32).to_le_bytes());
            out.extend_from_slice(s);
        }
    }
    out
}

/// Opens whatever is on `dev` and walks it; panics only if a reader does.
pub fn check_fs_tree(dev: Arc<dyn BlockDevice>) {
    let _ = partitions(dev.as_ref());
    let Ok(opened) = open_tree(dev, None) else {
        return;
    };
    let t = opened.tree.as_ref();
    let _ = t.metadata();
    let mut todo: Vec<(Vec<u8>, Ino)> = vec![(Vec::new(), t.root())];
    let mut visited = 0;
    let mut buf = vec![0u8; READ];
    while let Some((path, dir)) = todo.pop() {
        let Ok(entries) = t.read_dir(dir) else {
            continue;
        };
        for e in entries {
            visited += 1;
            if visited > ENTRIES {
                return;
            }
            let mut p = path.clone();
            p.push(b'/');
            p.extend_from_slice(&e.name);
            visit(t, &e.name, e.ino, &mut buf);
            // A path walk must find the same file (or fail cleanly on a damaged tree).
            let _ = lookup(t, &p);
            if e.kind == Kind::Dir && todo.len() < ENTRIES {
                todo.push((p, e.ino));
            }
        }
    }
}

fn visit(t: &dyn FileTree, _name: &[u8], ino: Ino, buf: &mut [u8]) {
    let _ = t.record(ino);
    let Ok(st) = t.stat(ino) else {
        return;
    };
    match st.kind {
        Kind::File => {
            let _ = t.extents(ino);
            let _ = t.read_at(ino, 0, buf);
            // And a piece near the end, across whatever boundary lies there.
            let tail = 4096.min(buf.len());
            let _ = t.read_at(ino, st.size.saturating_sub(4097), &mut buf[..tail]);
        }
        Kind::Symlink => {
            let _ = t.read_link(ino);
        }
        _ => {}
    }
}

/// The fuzz target: an input as described in the module header.
pub fn fuzz_fs_tree(data: &[u8]) {
    check_fs_tree(device(data));
}
