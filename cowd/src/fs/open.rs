//! [`open_tree`]: the files of whatever is on a device: a partition table first (MBR or GPT,
//! see `partitions`), then the reader that recognises the filesystem (ext2/3/4, NTFS).

use std::sync::Arc;

use super::ext4::tree::Ext4Tree;
use super::ntfs::tree::NtfsTree;
use super::partitions::{self, Partition};
use super::tree::{FileTree, TreeError};
use crate::device::{BlockDevice, Slice};

/// A filesystem found on a device.
#[derive(Debug)]
pub struct Opened {
    pub tree: Box<dyn FileTree>,
    /// Where the filesystem starts on the device.
    pub offset: u64,
    /// Its partition's number, if it is in one.
    pub partition: Option<u32>,
}

fn bad_table(why: String) -> TreeError {
    TreeError::Corrupt {
        filesystem: "partition table",
        why,
    }
}

/// The partitions of `dev`, or `None` without a partition table.
pub fn partitions(dev: &dyn BlockDevice) -> Result<Option<Vec<Partition>>, TreeError> {
    if dev.size() < 1024 {
        return Ok(None);
    }
    let mut head = vec![0u8; 1024];
    dev.read_at(&mut head, 0)?;
    if let Some((at, count, size)) = partitions::gpt_entries(&head).map_err(bad_table)? {
        let len = u64::from(count) * u64::from(size);
        if at.checked_add(len).is_none_or(|e| e > dev.size()) {
            return Err(bad_table("GPT entries beyond the device".into()));
        }
        let mut raw = vec![0u8; len.next_multiple_of(512) as usize];
        dev.read_at(&mut raw, at)?;
        raw.truncate(len as usize);
        return partitions::gpt(&raw, size, dev.size())
            .map(Some)
            .map_err(bad_table);
    }
    partitions::mbr(&head, dev.size()).map_err(bad_table)
}

/// Tries each reader on `dev`.
fn open_fs(dev: Arc<dyn BlockDevice>) -> Result<Box<dyn FileTree>, TreeError> {
    match Ext4Tree::open(dev.clone()) {
        Err(TreeError::Unknown) => {}
        other => return other.map(|t| Box::new(t) as Box<dyn FileTree>),
    }
    NtfsTree::open(dev).map(|t| Box::new(t) as Box<dyn FileTree>)
}

/// The filesystem on `dev`: in partition `partition` when given (numbered from 1), else the
/// first partition holding a known filesystem, else the whole device.
pub fn open_tree(dev: Arc<dyn BlockDevice>, partition: Option<u32>) -> Result<Opened, TreeError> {
    let parts = partitions(dev.as_ref())?;
    let Some(parts) = parts else {
        if let Some(n) = partition {
            return Err(TreeError::NotFound(format!(
                "partition {n}: the device has no partition table"
            )));
        }
        // A filesystem's own boot sector may end in 55 AA too: the whole device it is.
        return open_fs(dev).map(|tree| Opened {
            tree,
            offset: 0,
            partition: None,
        });
    };
    let slice = |p: &Partition| -> Arc<dyn BlockDevice> {
        Arc::new(Slice::new(dev.clone(), p.start, p.len))
    };
    if let Some(n) = partition {
        let p = parts.iter().find(|p| p.number == n).ok_or_else(|| {
            let have: Vec<String> = parts.iter().map(|p| p.number.to_string()).collect();
            TreeError::NotFound(format!(
                "partition {n} (the device has {})",
                have.join(", ")
            ))
        })?;
        return open_fs(slice(p)).map(|tree| Opened {
            tree,
            offset: p.start,
            partition: Some(n),
        });
    }
    for p in &parts {
        match open_fs(slice(p)) {
            Ok(tree) => {
                return Ok(Opened {
                    tree,
                    offset: p.start,
                    partition: Some(p.number),
                });
            }
            Err(TreeError::Unknown) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(TreeError::Unknown)
}
