//! The chunk store: one file per distinct chunk, `chunks/ab/abcdef…`, named by the hash of its
//! plain data ([`Repo::name_of`]: BLAKE3; SHA-256 in format 1; keyed BLAKE3 when encrypted).
//!
//! ```text
//! offset size  field                       (integers little-endian)
//!      0    8  magic b"COWDCHK1"
//!      8    1  version: 1 plain, 2 sealed (encrypted repositories)
//!      9    1  compression: 0 none, 1 zstd
//!     10    2  0
//!     12    4  plain_len
//!     16    4  stored_len  (= file size - 52)
//!     20   32  the chunk's name (= the file name)
//!     52       stored_len bytes: the data, zstd-compressed or not; version 2: that sealed
//!              (nonce ‖ AES-256-GCM ‖ tag, the 52 header bytes as associated data)
//! ```
//!
//! A sealed chunk opens only under its own header: a chunk file renamed, or a header byte
//! changed, fails authentication like a changed data byte. Data is stored zstd-compressed only
//! when that makes it smaller. All-zero chunks are never
//! stored (their digest is [`Digest::ZERO`]). A chunk is written to `tmp/`, fsynced, and then
//! hard-linked to its name, which fails if the name exists: so a chunk file is complete when it
//! appears, two writers of the same chunk cannot both "win", and an existing chunk is never
//! rewritten. The chunk directories are fsynced by [`Repo::sync_dirs`] before a backup commits.
//! A store that finds its chunk already present refreshes the file's mtime, so that `gc`
//! (which keeps chunks younger than the oldest running backup) does not remove it under a
//! running backup.

use std::cell::RefCell;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::crypt::{MasterKey, SEAL_OVERHEAD};
use super::digest::Naming;
use super::{Digest, Later, Repo, RepoError, digest::to_hex, fsync_dir, held, store};

/// Size of a chunk file's header.
pub const CHUNK_HEADER_LEN: usize = 52;
const MAGIC: &[u8; 8] = b"COWDCHK1";
const VERSION: u8 = 1;
const VERSION_SEALED: u8 = 2;
const NONE: u8 = 0;
const ZSTD: u8 = 1;

/// What [`Repo::store_chunk`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// The chunk's name ([`Digest::ZERO`] for an all-zero chunk).
    pub digest: Digest,
    /// True when this call added the chunk to the repository.
    pub new: bool,
    /// Bytes this call added on disk (header included); 0 unless `new`.
    pub stored_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    sealed: bool,
    compression: u8,
    plain_len: u32,
    stored_len: u32,
    digest: Digest,
}

impl Header {
    fn encode(&self) -> [u8; CHUNK_HEADER_LEN] {
        let mut b = [0u8; CHUNK_HEADER_LEN];
        b[..8].copy_from_slice(MAGIC);
        b[8] = if self.sealed { VERSION_SEALED } else { VERSION };
        b[9] = self.compression;
        b[12..16].copy_from_slice(&self.plain_len.to_le_bytes());
        b[16..20].copy_from_slice(&self.stored_len.to_le_bytes());
        b[20..52].copy_from_slice(&self.digest.0);
        b
    }

    fn decode(b: &[u8; CHUNK_HEADER_LEN]) -> Result<Header, String> {
        if &b[..8] != MAGIC {
            return Err("bad magic (not a cowd chunk)".into());
        }
        if b[8] != VERSION && b[8] != VERSION_SEALED {
            return Err(format!("chunk version {} is not supported", b[8]));
        }
        if b[10..12] != [0, 0] {
            return Err("reserved header bytes are not zero".into());
        }
        let h = Header {
            sealed: b[8] == VERSION_SEALED,
            compression: b[9],
            plain_len: u32::from_le_bytes(b[12..16].try_into().unwrap()),
            stored_len: u32::from_le_bytes(b[16..20].try_into().unwrap()),
            digest: Digest(b[20..52].try_into().unwrap()),
        };
        if h.plain_len == 0 || h.plain_len > super::MAX_CHUNK_SIZE {
            return Err(format!("plain length {} out of range", h.plain_len));
        }
        // The body's length without the seal: what the plain length is held against.
        let overhead = if h.sealed { SEAL_OVERHEAD as u32 } else { 0 };
        let Some(body) = h.stored_len.checked_sub(overhead) else {
            return Err(format!("sealed chunk stores only {} bytes", h.stored_len));
        };
        match h.compression {
            NONE if body != h.plain_len => Err(format!(
                "uncompressed chunk stores {} bytes for {}",
                h.stored_len, h.plain_len
            )),
            ZSTD if body >= h.plain_len => Err(format!(
                "compressed chunk stores {} bytes for {}",
                h.stored_len, h.plain_len
            )),
            NONE | ZSTD => Ok(h),
            c => Err(format!("unknown compression {c}")),
        }
    }
}

/// Why a chunk file could not be read back.
#[derive(Debug)]
pub(crate) enum ChunkFault {
    Missing,
    Io(io::Error),
    Corrupt(String),
}

impl ChunkFault {
    /// A failed read: a missing file or object is [`ChunkFault::Missing`].
    fn from_io(e: io::Error) -> ChunkFault {
        match e.kind() {
            io::ErrorKind::NotFound => ChunkFault::Missing,
            _ => ChunkFault::Io(e),
        }
    }

    pub(crate) fn into_error(self, path: PathBuf, digest: &Digest) -> RepoError {
        match self {
            ChunkFault::Missing => RepoError::MissingChunk {
                digest: *digest,
                path,
            },
            ChunkFault::Io(source) => RepoError::Io {
                path,
                op: "read chunk",
                source,
            },
            ChunkFault::Corrupt(problem) => RepoError::Corrupt { path, problem },
        }
    }
}

/// True when every byte is zero (word-wise, fast on large buffers).
pub(crate) fn is_all_zero(b: &[u8]) -> bool {
    let mut blocks = b.chunks_exact(64);
    blocks
        .by_ref()
        .all(|c| c.iter().fold(0u8, |a, &x| a | x) == 0)
        && blocks.remainder().iter().all(|&x| x == 0)
}

thread_local! {
    /// Per-thread zstd context (with its level), and a buffer for compressed data.
    static ZSTD_CTX: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    static OUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// A second buffer: a sealed chunk's body, written or opened.
    static SEALED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Per-thread zstd decompression context (restores, verify and served generations read
    /// chunk after chunk: one context each, not one per chunk).
    static ZSTD_DCTX: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// Decompresses `frame` into `out` (whose capacity is the plain length).
fn decompress(frame: &[u8], out: &mut Vec<u8>) -> io::Result<usize> {
    ZSTD_DCTX.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        d.as_mut()
            .expect("set above")
            .decompress_to_buffer(frame, out)
    })
}

/// Compresses `plain` into `out` and returns the frame's length when it is smaller than
/// `plain`.
fn compress(level: i32, plain: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    let limit = plain.len().checked_sub(1)?;
    if out.len() < limit {
        out.resize(limit, 0);
    }
    compress_into(level, plain, out)
}

/// [`compress`] into `out`, which holds at least one byte less than `plain`.
fn compress_into(level: i32, plain: &[u8], out: &mut [u8]) -> Option<usize> {
    let limit = plain.len().checked_sub(1)?;
    ZSTD_CTX.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != level) {
            *c = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let (_, ctx) = c.as_mut()?;
        // Fails (dst too small) exactly when compression would not save a byte.
        ctx.compress_to_buffer(plain, &mut out[..limit]).ok()
    })
}

/// An unsealed chunk's object, compressed straight into it (no buffer of the thread's stays
/// allocated between chunks: a worker waiting on object storage holds only what it sends).
fn plain_object(level: i32, plain: &[u8], digest: Digest) -> Vec<u8> {
    // Room for the chunk stored as it is, when compression saves nothing.
    let mut object = vec![0u8; CHUNK_HEADER_LEN + plain.len()];
    let compressed = compress_into(level, plain, &mut object[CHUNK_HEADER_LEN..]);
    let (compression, stored_len) = match compressed {
        Some(n) => (ZSTD, n),
        None => {
            object[CHUNK_HEADER_LEN..].copy_from_slice(plain);
            (NONE, plain.len())
        }
    };
    object.truncate(CHUNK_HEADER_LEN + stored_len);
    let header = Header {
        sealed: false,
        compression,
        plain_len: plain.len() as u32,
        stored_len: stored_len as u32,
        digest,
    }
    .encode();
    object[..CHUNK_HEADER_LEN].copy_from_slice(&header);
    object
}

/// Opens `path` and sets its mtime to now; false when it does not exist, or no longer under
/// that name once refreshed: a gc of another host renames a chunk away before it checks the
/// mtime one last time (`gc.rs`), so a chunk still at its name after the refresh stays.
fn touch(path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    match File::open(path) {
        Ok(f) => {
            // Best effort: without ownership the mtime cannot be set, and gc then relies on
            // the commit check (every referenced chunk exists) to catch a lost race.
            let _ = f.set_modified(SystemTime::now());
            let opened = f.metadata()?;
            match fs::symlink_metadata(path) {
                Ok(m) => Ok(m.ino() == opened.ino() && m.dev() == opened.dev()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Reads chunk file `path`, checks it is `digest` (and `expect_len` bytes long when given),
/// leaves the plain data in `out`; returns the file's size. `naming` is the repository's: with
/// a key the chunk must be sealed and is opened, without one it must not be.
pub(crate) fn read_chunk_file(
    path: &Path,
    digest: &Digest,
    naming: Naming<'_>,
    expect_len: Option<usize>,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Result<u64, ChunkFault> {
    let fault = ChunkFault::from_io;
    if store::is_remote(path) {
        let bytes = store::read(path).map_err(fault)?;
        let size = bytes.len() as u64;
        return read_chunk(&bytes[..], size, digest, naming, expect_len, out, scratch);
    }
    let f = File::open(path).map_err(fault)?;
    let size = f.metadata().map_err(ChunkFault::Io)?.len();
    read_chunk(f, size, digest, naming, expect_len, out, scratch)
}

/// [`read_chunk_file`] of a chunk of `size` bytes read from `f`.
fn read_chunk(
    mut f: impl Read,
    size: u64,
    digest: &Digest,
    naming: Naming<'_>,
    expect_len: Option<usize>,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> Result<u64, ChunkFault> {
    let mut hb = [0u8; CHUNK_HEADER_LEN];
    match f.read_exact(&mut hb) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(ChunkFault::Corrupt(format!(
                "{size} bytes: shorter than a chunk header"
            )));
        }
        Err(e) => return Err(ChunkFault::Io(e)),
    }
    let h = Header::decode(&hb).map_err(ChunkFault::Corrupt)?;
    let key = naming.key();
    if h.sealed != key.is_some() {
        return Err(ChunkFault::Corrupt(
            if h.sealed {
                "a sealed chunk in an unencrypted repository"
            } else {
                "not sealed (an encrypted repository seals every chunk)"
            }
            .into(),
        ));
    }
    if h.digest != *digest {
        return Err(ChunkFault::Corrupt(format!(
            "header names chunk {}",
            h.digest
        )));
    }
    if size != (CHUNK_HEADER_LEN as u64) + u64::from(h.stored_len) {
        return Err(ChunkFault::Corrupt(format!(
            "file has {size} bytes; the header says {} + {}",
            CHUNK_HEADER_LEN, h.stored_len
        )));
    }
    let plain_len = h.plain_len as usize;
    if let Some(want) = expect_len.filter(|&l| l != plain_len) {
        return Err(ChunkFault::Corrupt(format!(
            "holds {plain_len} bytes; {want} expected"
        )));
    }
    let stored = u64::from(h.stored_len);
    out.clear();
    if h.compression == NONE && key.is_none() {
        out.reserve_exact(plain_len);
        (&mut f)
            .take(stored)
            .read_to_end(out)
            .map_err(ChunkFault::Io)?;
    } else {
        scratch.clear();
        scratch.reserve_exact(h.stored_len as usize);
        (&mut f)
            .take(stored)
            .read_to_end(scratch)
            .map_err(ChunkFault::Io)?;
        if scratch.len() as u64 != stored {
            return Err(ChunkFault::Corrupt("truncated while reading".into()));
        }
        let zstd = |frame: &[u8], out: &mut Vec<u8>| {
            out.reserve_exact(plain_len);
            decompress(frame, out)
                .map(|_| ())
                .map_err(|e| ChunkFault::Corrupt(format!("zstd: {e}")))
        };
        let open = |sealed: &[u8], out: &mut Vec<u8>| {
            let k = key.expect("sealed only with a key");
            k.sealer()
                .open(&hb, sealed, out)
                .map_err(|e| ChunkFault::Corrupt(e.to_string()))
        };
        match (h.compression, key.is_some()) {
            (NONE, _) => open(scratch, out)?,
            (_, false) => zstd(scratch, out)?,
            (_, true) => SEALED.with(|b| {
                let mut b = b.borrow_mut();
                open(scratch, &mut b)?;
                zstd(&b, out)
            })?,
        }
    }
    if out.len() != plain_len {
        return Err(ChunkFault::Corrupt(format!(
            "data has {} bytes; the header says {plain_len}",
            out.len()
        )));
    }
    let actual = naming.of(out);
    if actual != *digest {
        return Err(ChunkFault::Corrupt(format!(
            "{} of the data is {actual}",
            naming.hash()
        )));
    }
    Ok(size)
}

impl Repo {
    /// Path of chunk `d`'s file (whether or not it exists).
    pub fn chunk_path(&self, d: &Digest) -> PathBuf {
        let hex = d.to_string();
        self.root().join("chunks").join(&hex[..2]).join(hex)
    }

    fn mark_dirty(&self, d: &Digest) {
        let b = d.0[0];
        let mut dirty = held(self.inner.dirty_dirs.lock());
        dirty[usize::from(b >> 6)] |= 1 << (b & 63);
    }

    /// Stores one chunk (at most `chunk_size` bytes) unless the repository has it already.
    /// Safe from many threads at once, for the same chunk too.
    pub fn store_chunk(&self, plain: &[u8]) -> Result<Stored, RepoError> {
        if plain.len() > self.chunk_size() as usize {
            return Err(RepoError::Invalid(format!(
                "chunk of {} bytes is larger than the repository's chunk size {}",
                plain.len(),
                self.chunk_size()
            )));
        }
        if is_all_zero(plain) {
            return Ok(Stored {
                digest: Digest::ZERO,
                new: false,
                stored_bytes: 0,
            });
        }
        let digest = self.name_of(plain);
        if self.refresh_chunk(&digest)? {
            return Ok(Stored {
                digest,
                new: false,
                stored_bytes: 0,
            });
        }
        if self.is_remote() {
            let object = self.object_of(plain, digest);
            return self.put_object(object, digest);
        }
        let tmp = self.tmp_path();
        let size = self.write_tmp(plain, digest, &tmp, true)?;
        self.link_tmp(&tmp, digest, size)
    }

    /// Writes chunk `plain` named `digest` as a chunk file at `tmp` (synced when `sync`);
    /// returns its size. The file is removed on an error.
    pub(super) fn write_tmp(
        &self,
        plain: &[u8],
        digest: Digest,
        tmp: &Path,
        sync: bool,
    ) -> Result<u64, RepoError> {
        let written = OUT.with(|buf| {
            let mut buf = buf.borrow_mut();
            let (compression, body) = match compress(self.level, plain, &mut buf) {
                Some(n) => (ZSTD, &buf[..n]),
                None => (NONE, plain),
            };
            let Some(key) = self.key() else {
                let header = Header {
                    sealed: false,
                    compression,
                    plain_len: plain.len() as u32,
                    stored_len: body.len() as u32,
                    digest,
                };
                return write_chunk_file(tmp, &header.encode(), body, sync)
                    .map(|()| (CHUNK_HEADER_LEN + body.len()) as u64);
            };
            let header = Header {
                sealed: true,
                compression,
                plain_len: plain.len() as u32,
                stored_len: (body.len() + SEAL_OVERHEAD) as u32,
                digest,
            }
            .encode();
            SEALED.with(|sealed| {
                let mut sealed = sealed.borrow_mut();
                sealed.clear();
                key.sealer().seal(&header, body, &mut sealed);
                write_chunk_file(tmp, &header, &sealed, sync)
                    .map(|()| (CHUNK_HEADER_LEN + sealed.len()) as u64)
            })
        });
        written.map_err(|e| {
            let _ = fs::remove_file(tmp);
            RepoError::io(tmp, "write chunk")(e)
        })
    }

    /// Links the synced chunk file `tmp` (`size` bytes) into place as chunk `digest`, or
    /// refreshes the chunk already there; removes `tmp`.
    pub(super) fn link_tmp(
        &self,
        tmp: &Path,
        digest: Digest,
        size: u64,
    ) -> Result<Stored, RepoError> {
        let path = self.chunk_path(&digest);
        let linked = {
            let _g = held(self.inner.gc_lock.read());
            let link = || match fs::hard_link(tmp, &path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // A chunk directory removed by hand: recreate it.
                    let dir = path.parent().expect("chunk path has a parent");
                    fs::create_dir_all(dir).and_then(|()| fs::hard_link(tmp, &path))
                }
                r => r,
            };
            // Present, but renamed away by another host's gc before our refresh took: link
            // ours (a few rounds; each needs that gc to win a race again).
            let mut rounds = 0;
            loop {
                rounds += 1;
                match link() {
                    Ok(()) => break Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match touch(&path) {
                        Ok(true) => break Ok(false),
                        Ok(false) if rounds < 8 => continue,
                        Ok(false) => break Err(io::Error::other("removed by gc on every attempt")),
                        Err(e) => break Err(e),
                    },
                    Err(e) => break Err(e),
                }
            }
        };
        let _ = fs::remove_file(tmp);
        let new = linked.map_err(RepoError::io(&path, "link chunk"))?;
        self.mark_dirty(&digest);
        Ok(Stored {
            digest,
            new,
            stored_bytes: if new { size } else { 0 },
        })
    }

    /// [`Repo::store_chunk_later`] of a buffer the caller gives up: `release` gets it back as
    /// soon as the repository is done with it. Into object storage that is once the object to
    /// PUT is built, so that it is not held while the PUT waits on the store (what a backup's
    /// memory peaks on); into a directory once the chunk file is written.
    pub fn store_chunk_releasing<B: std::ops::Deref<Target = [u8]>>(
        &self,
        plain: B,
        release: impl FnOnce(B),
    ) -> Result<Later, RepoError> {
        let fits = plain.len() <= self.chunk_size() as usize;
        if !self.is_remote() || !fits || is_all_zero(&plain) {
            let later = self.store_chunk_later(&plain);
            release(plain);
            return later;
        }
        let digest = self.name_of(&plain);
        if self.refresh_chunk(&digest)? {
            release(plain);
            return Ok(Later::Stored(Stored {
                digest,
                new: false,
                stored_bytes: 0,
            }));
        }
        let object = self.object_of(&plain, digest);
        release(plain);
        self.put_object(object, digest).map(Later::Stored)
    }

    /// Object storage: the chunk's object, compressed and sealed as a chunk file is.
    fn object_of(&self, plain: &[u8], digest: Digest) -> Vec<u8> {
        match self.key() {
            None => plain_object(self.level, plain, digest),
            Some(key) => self.sealed_object(key, plain, digest),
        }
    }

    /// Object storage: PUTs chunk `digest`'s object (it appears whole; gc is excluded by the
    /// backup's pin, `remote_gc.rs`).
    fn put_object(&self, object: Vec<u8>, digest: Digest) -> Result<Stored, RepoError> {
        let path = self.chunk_path(&digest);
        let stored_bytes = object.len() as u64;
        store::put(&path, object).map_err(RepoError::io(&path, "put chunk"))?;
        Ok(Stored {
            digest,
            new: true,
            stored_bytes,
        })
    }

    /// A sealed chunk's object: compressed into the thread's buffer, sealed into the object.
    fn sealed_object(&self, key: &MasterKey, plain: &[u8], digest: Digest) -> Vec<u8> {
        OUT.with(|buf| {
            let mut buf = buf.borrow_mut();
            let (compression, body) = match compress(self.level, plain, &mut buf) {
                Some(n) => (ZSTD, &buf[..n]),
                None => (NONE, plain),
            };
            let stored_len = body.len() + SEAL_OVERHEAD;
            let header = Header {
                sealed: true,
                compression,
                plain_len: plain.len() as u32,
                stored_len: stored_len as u32,
                digest,
            }
            .encode();
            let mut object = Vec::with_capacity(CHUNK_HEADER_LEN + stored_len);
            object.extend_from_slice(&header);
            // Sealed in place after the header (`seal` appends).
            key.sealer().seal(&header, body, &mut object);
            object
        })
    }

    /// True when chunk `d` is present; its mtime is refreshed then, so that a gc keeps it for
    /// the running backup about to name it (see the module documentation). In object storage
    /// only looked up: gc does not run while a backup does.
    pub(crate) fn refresh_chunk(&self, d: &Digest) -> Result<bool, RepoError> {
        if d.is_zero() {
            return Ok(true);
        }
        let path = self.chunk_path(d);
        if self.is_remote() {
            return Ok(store::stat(&path)
                .map_err(RepoError::io(&path, "look up chunk"))?
                .is_some());
        }
        let present = {
            let _g = held(self.inner.gc_lock.read());
            touch(&path).map_err(RepoError::io(&path, "open chunk"))?
        };
        if present {
            // It may have just been linked by another thread whose directory fsync is still
            // pending: make sure our commit's sync_dirs covers it.
            self.mark_dirty(d);
        }
        Ok(present)
    }

    /// Reads chunk `d` of `len` bytes into `out`, checking header, seal and name.
    /// [`Digest::ZERO`] gives `len` zero bytes. A repository in object storage is read
    /// through the local chunk cache ([`configure_cache`](super::configure_cache)) when it
    /// has the chunk; what is fetched is not kept (see [`Repo::load_chunk_kept`]).
    pub fn load_chunk(&self, d: &Digest, len: usize, out: &mut Vec<u8>) -> Result<(), RepoError> {
        self.load(d, len, out, false)
    }

    /// [`Repo::load_chunk`], and a chunk fetched from object storage is kept in the local
    /// chunk cache for the next read. For readers that come back to chunks (served
    /// generations, files read from a backup); a whole-image pass (restore, sync, verify)
    /// would only push them out.
    pub fn load_chunk_kept(
        &self,
        d: &Digest,
        len: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), RepoError> {
        self.load(d, len, out, true)
    }

    pub(super) fn load(
        &self,
        d: &Digest,
        len: usize,
        out: &mut Vec<u8>,
        keep: bool,
    ) -> Result<(), RepoError> {
        if d.is_zero() {
            out.clear();
            out.resize(len, 0);
            return Ok(());
        }
        let path = self.chunk_path(d);
        let cache = if self.inner.remote {
            super::cache::global()
        } else {
            None
        };
        let Some(cache) = cache else {
            return OUT
                .with(|scratch| {
                    read_chunk_file(
                        &path,
                        d,
                        self.naming(),
                        Some(len),
                        out,
                        &mut scratch.borrow_mut(),
                    )
                })
                .map(|_| ())
                .map_err(|f| f.into_error(path, d));
        };
        let id = &self.inner.id;
        OUT.with(|scratch| {
            let scratch = &mut scratch.borrow_mut();
            if let Some(bytes) = cache.get(id, d) {
                let size = bytes.len() as u64;
                match read_chunk(&bytes[..], size, d, self.naming(), Some(len), out, scratch) {
                    Ok(_) => return Ok(()),
                    Err(f) => {
                        tracing::warn!(chunk = %d, fault = ?f, "cached chunk damaged, fetched again");
                        cache.remove(id, d);
                    }
                }
            }
            let bytes = store::read(&path).map_err(ChunkFault::from_io)?;
            let size = bytes.len() as u64;
            read_chunk(&bytes[..], size, d, self.naming(), Some(len), out, scratch)?;
            if keep {
                cache.put_later(id, d, bytes);
            }
            Ok(())
        })
        .map_err(|f: ChunkFault| f.into_error(path, d))
    }

    /// True when chunk `d` is in the repository (always for [`Digest::ZERO`]).
    pub fn has_chunk(&self, d: &Digest) -> bool {
        d.is_zero() || store::stat(&self.chunk_path(d)).is_ok_and(|m| m.is_some())
    }

    /// Makes durable the directory entries of every chunk stored so far. When it returns, all
    /// chunks whose `store_chunk` returned before the call are durable, whichever thread or
    /// backup stored them.
    pub fn sync_dirs(&self) -> Result<(), RepoError> {
        if self.is_remote() {
            return Ok(()); // a PUT that returned is durable
        }
        let _s = held(self.inner.sync_lock.lock());
        let dirty = std::mem::take(&mut *held(self.inner.dirty_dirs.lock()));
        for b in 0..=255u8 {
            if dirty[usize::from(b >> 6)] & (1 << (b & 63)) == 0 {
                continue;
            }
            let dir = self.root().join("chunks").join(to_hex(&[b]));
            if let Err(e) = fsync_dir(&dir) {
                // Keep them all dirty for the next attempt.
                let mut d = held(self.inner.dirty_dirs.lock());
                for (w, x) in d.iter_mut().zip(dirty) {
                    *w |= x;
                }
                return Err(RepoError::io(&dir, "fsync")(e));
            }
        }
        Ok(())
    }
}

fn write_chunk_file(path: &Path, header: &[u8], body: &[u8], sync: bool) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(header)?;
    f.write_all(body)?;
    if sync {
        f.sync_data()
    } else {
        crate::files::start_writeback(&f, 0, 0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::DigestOf;
    use super::*;
    use proptest::prelude::*;

    fn repo(chunk: u32) -> (tempfile::TempDir, Repo) {
        let d = tempfile::tempdir().unwrap();
        let r = Repo::init(&d.path().join("r"), chunk).unwrap();
        (d, r)
    }

    fn random(n: usize, seed: u64) -> Vec<u8> {
        let mut v = vec![0u8; n];
        fastrand::Rng::with_seed(seed).fill(&mut v);
        v
    }

    fn compressible(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i / 1000 % 7) as u8 + b'a').collect()
    }

    fn header_of(r: &Repo, d: &Digest) -> Header {
        let b = fs::read(r.chunk_path(d)).unwrap();
        Header::decode(b[..CHUNK_HEADER_LEN].try_into().unwrap()).unwrap()
    }

    #[test]
    fn zero_detection() {
        assert!(is_all_zero(&[]));
        assert!(is_all_zero(&vec![0u8; 4 << 20]));
        for pos in [0, 1, 7, 8, 511, 4095, 4096 * 3 + 5] {
            let mut v = vec![0u8; 4096 * 4];
            v[pos] = 1;
            assert!(!is_all_zero(&v), "{pos}");
            assert!(pos == 0 || !is_all_zero(&v[1..]), "{pos} unaligned");
        }
    }

    #[test]
    fn header_round_trip_and_rejects() {
        let h = Header {
            sealed: false,
            compression: ZSTD,
            plain_len: 100,
            stored_len: 50,
            digest: Digest::of(b"x"),
        };
        let b = h.encode();
        assert_eq!(&b[..8], b"COWDCHK1");
        assert_eq!(Header::decode(&b).unwrap(), h);
        let mut bad = b;
        bad[9] = 7;
        assert!(Header::decode(&bad).unwrap_err().contains("compression"));
        let mut bad = b;
        bad[16] = 200; // stored > plain with zstd
        assert!(Header::decode(&bad).is_err());
        let mut bad = b;
        bad[11] = 1;
        assert!(Header::decode(&bad).is_err());
        let mut bad = b;
        bad[0] = b'X';
        assert!(Header::decode(&bad).unwrap_err().contains("magic"));
    }

    #[test]
    fn round_trips_compressible_incompressible_zero_short() {
        let (_d, r) = repo(1 << 20);
        let mut out = Vec::new();

        let c = compressible(1 << 20);
        let s = r.store_chunk(&c).unwrap();
        assert!(s.new && s.digest == r.name_of(&c));
        assert!(s.stored_bytes < (1 << 19), "{}", s.stored_bytes);
        assert_eq!(header_of(&r, &s.digest).compression, ZSTD);
        assert_eq!(
            fs::metadata(r.chunk_path(&s.digest)).unwrap().len(),
            s.stored_bytes
        );
        r.load_chunk(&s.digest, c.len(), &mut out).unwrap();
        assert_eq!(out, c);

        let x = random(1 << 20, 1);
        let s = r.store_chunk(&x).unwrap();
        assert!(s.new);
        assert_eq!(s.stored_bytes, (1 << 20) + CHUNK_HEADER_LEN as u64);
        assert_eq!(header_of(&r, &s.digest).compression, NONE);
        r.load_chunk(&s.digest, x.len(), &mut out).unwrap();
        assert_eq!(out, x);

        let z = vec![0u8; 1 << 20];
        let s = r.store_chunk(&z).unwrap();
        assert_eq!((s.digest, s.new, s.stored_bytes), (Digest::ZERO, false, 0));
        assert!(r.has_chunk(&Digest::ZERO));
        r.load_chunk(&Digest::ZERO, 12345, &mut out).unwrap();
        assert_eq!(out, vec![0u8; 12345]);

        let short = random(1000, 2);
        let s = r.store_chunk(&short).unwrap();
        r.load_chunk(&s.digest, 1000, &mut out).unwrap();
        assert_eq!(out, short);
        let e = r.load_chunk(&s.digest, 1001, &mut out).unwrap_err();
        assert!(e.to_string().contains("1001 expected"), "{e}");

        let e = r.store_chunk(&vec![1u8; (1 << 20) + 1]).unwrap_err();
        assert!(matches!(e, RepoError::Invalid(_)), "{e}");
        let gone = Digest::of(b"never stored");
        assert!(!r.has_chunk(&gone));
        assert!(matches!(
            r.load_chunk(&gone, 12, &mut out),
            Err(RepoError::MissingChunk { .. })
        ));
        // Nothing left behind in tmp/.
        assert_eq!(fs::read_dir(r.root().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn dedup_same_data_twice() {
        let (_d, r) = repo(1 << 16);
        let x = random(65536, 3);
        let a = r.store_chunk(&x).unwrap();
        let b = r.store_chunk(&x).unwrap();
        assert!(a.new && !b.new);
        assert_eq!(a.digest, b.digest);
        assert_eq!(b.stored_bytes, 0);
        let files: usize = fs::read_dir(r.root().join("chunks"))
            .unwrap()
            .map(|d| fs::read_dir(d.unwrap().path()).unwrap().count())
            .sum();
        assert_eq!(files, 1);
    }

    #[test]
    fn compression_level_is_used() {
        // Text-like data, where zstd's levels differ in what they store.
        let mut rng = fastrand::Rng::with_seed(7);
        let words = [
            "block", "chunk", "device", "snapshot", "backup", "write", "the", "of",
        ];
        let mut c = Vec::new();
        while c.len() < 1 << 20 {
            c.extend_from_slice(words[rng.usize(..words.len())].as_bytes());
            c.push(if rng.u8(..) < 20 { b'\n' } else { b' ' });
        }
        c.truncate(1 << 20);
        let stored = |level| {
            let (_d, mut r) = repo(1 << 20);
            r.set_compression_level(level);
            assert_eq!(r.compression_level(), level);
            let s = r.store_chunk(&c).unwrap();
            let mut out = Vec::new();
            r.load_chunk(&s.digest, c.len(), &mut out).unwrap();
            assert_eq!(out, c);
            s.stored_bytes
        };
        let (fast, best) = (stored(-7), stored(19));
        assert!(best < fast, "level 19 stored {best} bytes, level -7 {fast}");
    }

    #[test]
    fn corruption_is_detected_by_load() {
        let (_d, r) = repo(1 << 16);
        let x = compressible(65536);
        let s = r.store_chunk(&x).unwrap();
        let p = r.chunk_path(&s.digest);
        let good = fs::read(&p).unwrap();
        let mut out = Vec::new();
        for pos in [0, 9, 13, 21, CHUNK_HEADER_LEN, good.len() - 1] {
            let mut b = good.clone();
            b[pos] ^= 1;
            fs::write(&p, &b).unwrap();
            let e = r.load_chunk(&s.digest, x.len(), &mut out).unwrap_err();
            assert!(matches!(e, RepoError::Corrupt { .. }), "{pos}: {e}");
        }
        fs::write(&p, &good[..good.len() - 1]).unwrap();
        assert!(r.load_chunk(&s.digest, x.len(), &mut out).is_err());
        fs::write(&p, &good[..10]).unwrap();
        assert!(r.load_chunk(&s.digest, x.len(), &mut out).is_err());
    }

    /// One repository for all cases (creating one per case dominates the run time).
    #[test]
    fn store_load_round_trips() {
        use proptest::test_runner::{Config, TestRunner};
        let (_d, r) = repo(1 << 17);
        let strategy = (0usize..=(1 << 17), any::<u64>(), 0u8..4);
        let mut runner = TestRunner::new(Config::with_cases(128));
        runner
            .run(&strategy, |(len, seed, kind)| {
                let mut rng = fastrand::Rng::with_seed(seed);
                let data: Vec<u8> = match kind {
                    0 => random(len, seed),                                  // incompressible
                    1 => (0..len).map(|_| rng.u8(..4)).collect(),            // compressible
                    2 => (0..len).map(|i| u8::from(i % 997 == 0)).collect(), // sparse
                    _ => vec![0; len],                                       // zero
                };
                let s = r.store_chunk(&data).unwrap();
                prop_assert_eq!(s.digest.is_zero(), data.iter().all(|&b| b == 0));
                let mut out = Vec::new();
                r.load_chunk(&s.digest, data.len(), &mut out).unwrap();
                prop_assert_eq!(out, data);
                Ok(())
            })
            .unwrap();
    }
}
