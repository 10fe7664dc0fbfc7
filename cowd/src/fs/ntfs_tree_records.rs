//! File records of an [`NtfsTree`] and the device reads behind them: a record found through
//! the MFT's runs, its fixups undone, its attributes parsed and joined with those of the
//! extension records its $ATTRIBUTE_LIST names ([`Node`]); an attribute's value as one
//! stream of bytes whatever records its pieces lie in ([`Stream`]); reads through the
//! metadata cache (records, index blocks, lists) or straight from the device (file data).
//!
//! ```text
//!  record n ─ byte n * record size of $MFT ─ runs ─ 4 KiB cache blocks ─ device
//!  base record ─ $ATTRIBUTE_LIST ─ extension records (base reference checked, each once)
//!  stream = resident value | pieces by first VCN, joined without gaps, covering the size
//! ```

use std::collections::HashSet;
use std::sync::Arc;

use super::attrs::{
    self, ATTR_FILE_NAME, ATTR_LIST, ATTR_STANDARD_INFORMATION, Attr, FileName, RECORD_IN_USE, Run,
    Value,
};
use super::{
    CACHE_BLOCKS, CACHE_RECORDS, FS, MAX_EXTENSIONS, MAX_LIST_BYTES, MAX_RUNS, META, NtfsTree,
    READ_PIECE, corrupt, fs_error, is_name, lock,
};
use crate::fs::tree::{Ino, TreeError};
use crate::fs::{read_bytes, read_into};

/// A file record with the attributes of its extension records.
#[derive(Debug)]
pub(super) struct Node {
    pub ino: Ino,
    pub flags: u16,
    pub attrs: Vec<Attr>,
}

/// An attribute's value as one stream of bytes.
#[derive(Debug)]
pub(super) struct Stream {
    pub size: u64,
    /// Bytes from here to `size` read as zeroes (the valid data length).
    pub valid: u64,
    pub flags: u16,
    pub data: Data,
}

#[derive(Debug)]
pub(super) enum Data {
    Resident(Vec<u8>),
    Runs(Vec<Run>),
}

impl Node {
    pub(super) fn bad(&self, why: impl std::fmt::Display) -> TreeError {
        corrupt(format!("file record {}: {why}", self.ino))
    }

    pub(super) fn resident(&self, ty: u32, name: &str) -> Option<&[u8]> {
        self.attrs.iter().find_map(|a| match &a.value {
            Value::Resident(v) if a.ty == ty && is_name(&a.name, name) => Some(&v[..]),
            _ => None,
        })
    }

    pub(super) fn std_info(&self) -> Result<&[u8], TreeError> {
        self.resident(ATTR_STANDARD_INFORMATION, "")
            .filter(|v| v.len() >= 0x24)
            .ok_or_else(|| self.bad("no $STANDARD_INFORMATION"))
    }

    pub(super) fn file_attributes(&self) -> u32 {
        self.std_info()
            .map_or(0, |v| attrs::u32_at(v, 0x20).unwrap_or(0))
    }

    pub(super) fn names(&self) -> Result<Vec<FileName>, TreeError> {
        let mut out = Vec::new();
        for a in self.attrs.iter().filter(|a| a.ty == ATTR_FILE_NAME) {
            let Value::Resident(v) = &a.value else {
                return Err(self.bad("a non-resident $FILE_NAME"));
            };
            out.push(attrs::file_name(v).map_err(|e| self.bad(e))?);
        }
        Ok(out)
    }

    /// The value of attribute `ty` named `name`, its pieces joined; `cluster` bytes a cluster.
    pub(super) fn stream(
        &self,
        ty: u32,
        name: &str,
        cluster: u64,
    ) -> Result<Option<Stream>, TreeError> {
        let mut pieces = Vec::new();
        let mut resident = None;
        let mut flags = 0;
        for a in self
            .attrs
            .iter()
            .filter(|a| a.ty == ty && is_name(&a.name, name))
        {
            match &a.value {
                Value::Resident(v) if resident.is_none() && pieces.is_empty() => {
                    resident = Some(v);
                    flags = a.flags;
                }
                Value::NonResident(p) if resident.is_none() => {
                    if p.first_vcn == 0 {
                        flags = a.flags;
                    }
                    pieces.push(p);
                }
                _ => return Err(self.bad(format!("attribute {ty:#x} stored twice"))),
            }
        }
        if let Some(v) = resident {
            let size = v.len() as u64;
            return Ok(Some(Stream {
                size,
                valid: size,
                flags,
                data: Data::Resident(v.clone()),
            }));
        }
        pieces.sort_by_key(|p| p.first_vcn);
        let Some(first) = pieces.first() else {
            return Ok(None);
        };
        let mut next = 0;
        let mut runs = Vec::new();
        for p in &pieces {
            if p.first_vcn != next {
                return Err(self.bad(format!("attribute {ty:#x}: no runs for VCN {next}")));
            }
            next = p.next_vcn;
            runs.extend_from_slice(&p.runs);
        }
        if first.size > next.saturating_mul(cluster) {
            return Err(self.bad(format!(
                "attribute {ty:#x}: {} bytes in {next} clusters",
                first.size
            )));
        }
        Ok(Some(Stream {
            size: first.size,
            valid: first.valid,
            flags,
            data: Data::Runs(runs),
        }))
    }
}

impl NtfsTree {
    /// Reads metadata bytes at `at` through the cache.
    pub(super) fn read_meta(&self, at: u64, buf: &mut [u8]) -> Result<(), TreeError> {
        let mut done = 0;
        while done < buf.len() {
            let pos = at + done as u64;
            let block = self.meta_block(pos / META)?;
            let from = (pos % META) as usize;
            if from >= block.len() {
                return Err(corrupt(format!(
                    "metadata at byte {pos}, beyond the device"
                )));
            }
            let n = (block.len() - from).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&block[from..from + n]);
            done += n;
        }
        Ok(())
    }

    fn meta_block(&self, b: u64) -> Result<Arc<Vec<u8>>, TreeError> {
        if let Some(hit) = lock(&self.cache).get(&b) {
            return Ok(hit.clone());
        }
        let start = b * META;
        if start >= self.dev.size() {
            return Err(corrupt(format!(
                "metadata at byte {start}, beyond the device"
            )));
        }
        let len = self.dev.size().saturating_sub(start).min(META) as usize;
        let data = read_bytes(self.dev.as_ref(), start, len, FS, || "metadata".into())
            .map_err(fs_error)?;
        let data = Arc::new(data.to_vec());
        let mut cache = lock(&self.cache);
        if cache.len() >= CACHE_BLOCKS {
            cache.clear();
        }
        cache.insert(b, data.clone());
        Ok(data)
    }

    /// Reads file data at `at` (inside the volume), without caching it.
    fn read_direct(&self, at: u64, buf: &mut [u8]) -> Result<(), TreeError> {
        let mut done = 0;
        for piece in buf.chunks_mut(READ_PIECE) {
            let pos = at + done;
            read_into(self.dev.as_ref(), piece, pos, FS, || {
                format!("data at {pos}")
            })
            .map_err(fs_error)?;
            done += piece.len() as u64;
        }
        Ok(())
    }

    /// Reads bytes `offset..` of the clusters `runs` map (sparse runs read as zeroes).
    pub(super) fn read_runs(
        &self,
        runs: &[Run],
        offset: u64,
        buf: &mut [u8],
        cached: bool,
    ) -> Result<(), TreeError> {
        let cl = self.cluster();
        let end = offset + buf.len() as u64;
        buf.fill(0);
        let first = runs.partition_point(|r| (r.vcn + r.len) * cl <= offset);
        for r in &runs[first..] {
            let (rs, re) = (r.vcn * cl, (r.vcn + r.len) * cl);
            if rs >= end {
                break;
            }
            let Some(lcn) = r.lcn else { continue };
            let (s, e) = (rs.max(offset), re.min(end));
            let dst = &mut buf[(s - offset) as usize..(e - offset) as usize];
            let at = lcn * cl + (s - rs);
            if cached {
                self.read_meta(at, dst)?;
            } else {
                self.read_direct(at, dst)?;
            }
        }
        Ok(())
    }

    /// Reads from `offset` of a stream; returns the bytes read (0 at its end).
    pub(super) fn read_stream(
        &self,
        s: &Stream,
        offset: u64,
        buf: &mut [u8],
        cached: bool,
    ) -> Result<usize, TreeError> {
        if offset >= s.size {
            return Ok(0);
        }
        let len = (buf.len() as u64).min(s.size - offset) as usize;
        let buf = &mut buf[..len];
        buf.fill(0);
        match &s.data {
            Data::Resident(v) => {
                let from = offset as usize;
                buf.copy_from_slice(&v[from..from + len]);
            }
            Data::Runs(runs) => {
                let valid = s.valid.clamp(offset, offset + len as u64);
                let n = (valid - offset) as usize;
                self.read_runs(runs, offset, &mut buf[..n], cached)?;
            }
        }
        Ok(len)
    }

    /// A whole (small) stream.
    pub(super) fn whole(&self, s: &Stream, limit: u64, what: &str) -> Result<Vec<u8>, TreeError> {
        if s.size > limit {
            return Err(corrupt(format!("{what} of {} bytes", s.size)));
        }
        let mut v = vec![0u8; s.size as usize];
        self.read_stream(s, 0, &mut v, true)?;
        Ok(v)
    }

    /// File record `ino` as stored, fixups undone, parsed.
    pub(super) fn parse(
        &self,
        ino: Ino,
        runs_left: &mut usize,
    ) -> Result<(attrs::Head, Vec<Attr>), TreeError> {
        if ino >= self.records {
            return Err(TreeError::NotFound(format!(
                "file record {ino} (the MFT holds {})",
                self.records
            )));
        }
        let rs = self.boot.record_size;
        let mut buf = vec![0u8; rs as usize];
        self.read_runs(&self.mft, ino * rs, &mut buf, true)?;
        let bad = |e: String| corrupt(format!("file record {ino}: {e}"));
        attrs::fixup(&mut buf, b"FILE").map_err(bad)?;
        attrs::record(&buf, self.volume(), runs_left).map_err(bad)
    }

    pub(super) fn node(&self, ino: Ino) -> Result<Arc<Node>, TreeError> {
        if let Some(n) = lock(&self.nodes).get(&ino) {
            return Ok(n.clone());
        }
        let node = Arc::new(self.load(ino)?);
        let mut nodes = lock(&self.nodes);
        if nodes.len() >= CACHE_RECORDS {
            nodes.clear();
        }
        nodes.insert(ino, node.clone());
        Ok(node)
    }

    /// Reads base record `ino` and the extension records its attribute list names.
    fn load(&self, ino: Ino) -> Result<Node, TreeError> {
        let mut runs_left = MAX_RUNS;
        let (head, mut attrs) = self.parse(ino, &mut runs_left)?;
        if head.flags & RECORD_IN_USE == 0 {
            return Err(TreeError::NotFound(format!(
                "file record {ino} (not in use)"
            )));
        }
        if head.base != 0 {
            return Err(TreeError::NotFound(format!(
                "file record {ino} (an extension of record {})",
                head.base
            )));
        }
        let mut node = Node {
            ino,
            flags: head.flags,
            attrs: Vec::new(),
        };
        let list = attrs.iter().position(|a| a.ty == ATTR_LIST);
        let Some(list) = list.map(|i| attrs.remove(i)) else {
            node.attrs = attrs;
            return Ok(node);
        };
        let raw = match list.value {
            Value::Resident(v) => v,
            Value::NonResident(_) => {
                node.attrs = vec![list];
                match node.stream(ATTR_LIST, "", self.cluster())? {
                    Some(s) => self.whole(&s, MAX_LIST_BYTES, "attribute list")?,
                    None => Vec::new(),
                }
            }
        };
        // Entries: type, length @4, ..., file reference @0x10.
        let mut extensions = Vec::new();
        let mut seen = HashSet::new();
        let mut at = 0;
        while at + 0x18 <= raw.len() {
            let len = usize::from(attrs::u16_at(&raw, at + 4).unwrap_or(0));
            if len < 0x1A || at + len > raw.len() {
                return Err(node.bad(format!("attribute list entry at {at}: length {len}")));
            }
            let r = attrs::record_of(attrs::u64_at(&raw, at + 0x10).unwrap_or(0));
            if r != ino && seen.insert(r) {
                extensions.push(r);
                if extensions.len() > MAX_EXTENSIONS {
                    return Err(node.bad("too many extension records"));
                }
            }
            at += len;
        }
        for r in extensions {
            let (h, more) = self.parse(r, &mut runs_left).map_err(|e| match e {
                TreeError::NotFound(what) => node.bad(format!("extension {what}")),
                e => e,
            })?;
            if h.flags & RECORD_IN_USE == 0 || h.base != ino {
                return Err(node.bad(format!("record {r} is not one of its extensions")));
            }
            attrs.extend(more.into_iter().filter(|a| a.ty != ATTR_LIST));
        }
        node.attrs = attrs;
        Ok(node)
    }
}
