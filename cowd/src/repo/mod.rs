//! The backup repository: a directory of content-addressed chunks plus one index and manifest
//! per backup.
//!
//! ```text
//! ROOT/config.json              {"format":"cowd-repo","version":2,"id","chunk_size",
//!                               "compression_level","created","chunk_names"} (+ "encryption";
//!                               format 1: no "chunk_names")
//! ROOT/chunks/ab/abcdef…        one file per chunk, named by the BLAKE3 of its plain data
//!                               (format 1: SHA-256; encrypted: keyed BLAKE3)
//! ROOT/keys/<slot>.json         encrypted: the master key wrapped (`keys.rs`)
//! ROOT/backups/<id>/            manifest.json + index.bin: a complete backup
//! ROOT/backups/.tmp-<id>/       a backup in progress (becomes <id>/ by one rename at commit)
//! ROOT/pins/<id>.json           {"id","parent","started"}: protects a running backup's parent
//!                               and its young chunks from remove_backup and gc
//! ROOT/tmp/                     temporary files (cleaned at open)
//! ```
//!
//! [`Repo::sync_to`] copies backups to another repository, moving only the chunks it lacks
//! (`sync.rs`); [`Repo::repair`] takes what verify finds damaged from such a copy
//! (`repair.rs`).
//!
//! Life of a backup: [`Repo::begin`] → [`Repo::store_chunk`] for each chunk read (from any
//! number of threads) → [`InProgress::commit`] (chunk directories synced, index and manifest
//! written and synced, directory renamed into place) or [`InProgress::abort`]. Chunks are
//! shared by every backup and export of the repository and never rewritten; they are removed
//! only by [`Repo::gc`] when no complete backup references them. Every byte of a committed
//! backup can be checked by [`Repo::verify`]: the manifest holds the index's SHA-256, the index
//! holds every chunk's name (its hash), each chunk file holds its own (and, encrypted, every
//! object is sealed: `crypt.rs`).
//!
//! One process at a time should change a repository (the daemon); concurrency between threads
//! of that process is handled here, also between handles opened separately on the same
//! directory (they share one state). Readers (`verify`, `backups`, `load_chunk`) may run
//! anywhere.

mod backup;
mod cache;
mod chunk;
mod crypt;
mod deferred;
mod digest;
mod gc;
mod index;
mod keys;
mod lease;
mod manifest;
mod owner;
mod patch;
mod prune;
mod remote_gc;
mod repair;
mod store;
mod sync;
mod verify;

pub use backup::{InProgress, PIN_HEARTBEAT, PIN_LEASE, Pin};
pub use cache::{
    ChunkCache, DEFAULT_CACHE_SIZE, configure as configure_cache, global as chunk_cache,
};
pub use chunk::{CHUNK_HEADER_LEN, Stored};
pub use crypt::{MasterKey, random_bytes};
pub use deferred::{Deferred, Later};

pub use digest::{Digest, DigestOf, ParseDigestError};
pub use gc::{GcReport, PIN_MARGIN};
pub use index::{Index, IndexFormatError, Layout, chunk_count};
pub use keys::{KdfCost, MIN_KEY_FILE_LEN, Secret, Slot, SlotKind};
pub use lease::Lease;
pub use manifest::{Blocks, Counts, Damaged, Listed, Listing, Manifest, Mode, Status, rfc3339};
pub use owner::Owner;
pub use patch::{Patch, PatchFormatError, PatchRef};
pub use prune::{KEEP_REASONS, KeepPolicy, PrunePlan};
pub use repair::RepairReport;
pub use store::{
    DEFAULT_REQUEST_TIMEOUT as S3_REQUEST_TIMEOUT, DEFAULT_RETRY_TIMEOUT as S3_RETRY_TIMEOUT,
    S3Options, configure as configure_s3, is_remote,
};
pub use sync::SyncReport;
pub use verify::{CorruptChunk, VerifyReport};

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// The `format` field of `config.json`.
pub const FORMAT: &str = "cowd-repo";
/// Format 1: chunks named by SHA-256, never encrypted. Still read and written.
pub const VERSION_1: u32 = 1;
/// Format 2 (the default): chunks named by BLAKE3, keyed when the repository is encrypted
/// (`crypt.rs`, `keys.rs`). An older cowd refuses it rather than misread it.
pub const VERSION: u32 = 2;
/// The cipher of an encrypted repository's objects.
pub const CIPHER: &str = "aes-256-gcm";
/// `chunk_names` of an unencrypted format 2 repository.
pub const CHUNK_NAMES_BLAKE3: &str = "blake3";
/// `chunk_names` of an encrypted repository.
pub const CHUNK_NAMES_KEYED: &str = "blake3-keyed";
/// Smallest chunk size.
pub const MIN_CHUNK_SIZE: u32 = 64 << 10;
/// Largest chunk size (and the default).
pub const MAX_CHUNK_SIZE: u32 = 4 << 20;
/// Default zstd level: on this project's benchmark data level 1 compresses 1.44× faster than
/// level 3 for a 6 % larger store (see README), and a backup is bound by compression.
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 1;
/// The zstd levels a repository accepts (negative ones are zstd's fast levels).
pub const COMPRESSION_LEVELS: std::ops::RangeInclusive<i32> = -7..=19;

/// Why a repository operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("repository {path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    #[error("no repository at {0}: the directory does not exist")]
    Missing(PathBuf),
    #[error("{path} is not a cowd repository: {why}")]
    NotARepo { path: PathBuf, why: String },
    #[error(
        "{path}: repository format version {version} is not supported (this cowd reads versions {VERSION_1} and {VERSION})"
    )]
    UnsupportedVersion { path: PathBuf, version: u64 },
    #[error("{0} is already a repository")]
    AlreadyRepo(PathBuf),
    #[error("{0} is not empty and is not a repository; refusing to create one there")]
    NotEmpty(PathBuf),
    #[error(
        "chunk size {0} is invalid: it must be a power of two from {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE}"
    )]
    ChunkSize(u64),
    #[error("{path}: corrupt: {problem}")]
    Corrupt { path: PathBuf, problem: String },
    #[error("chunk {digest} is missing ({path})")]
    MissingChunk { digest: Digest, path: PathBuf },
    #[error("no backup {0:?} in the repository")]
    NoSuchBackup(String),
    #[error("backup {0:?} already exists")]
    BackupExists(String),
    #[error("backup {0:?} is already in progress")]
    AlreadyInProgress(String),
    #[error("backup {id:?} is in use as the parent of running backup {by:?}")]
    InUse { id: String, by: String },
    #[error("backup {id:?} is in use by {by}; it is kept until they end")]
    Leased { id: String, by: String },
    #[error(
        "invalid backup id {0:?}: use 1 to 128 letters, digits, '-', '_', '.', ':', not starting with '.'"
    )]
    BadId(String),
    #[error("{0}")]
    Invalid(String),
    #[error(
        "repository {0} is encrypted and locked: unlock it with `cowctl repo unlock` (a passphrase or --key-file)"
    )]
    Locked(PathBuf),
    #[error("{0}")]
    WrongKey(String),
    /// Excluded by a running backup or gc of a repository in object storage.
    #[error("{0}")]
    Busy(String),
}

impl RepoError {
    fn io<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> RepoError + 'a {
        move |source| RepoError::Io {
            path: path.to_owned(),
            op,
            source,
        }
    }
}

/// An open repository. Cheap to clone (the clones share state); `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Repo {
    inner: Arc<Inner>,
    level: i32,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    id: String,
    chunk_size: u32,
    tmp_seq: AtomicU64,
    /// Chunk directories (by first byte) with entries not yet fsynced.
    dirty_dirs: Mutex<[u64; 4]>,
    /// Serialises `sync_dirs`, so a commit never returns while another's fsync is under way.
    sync_lock: Mutex<()>,
    /// Shared by chunk stores around "exists?/link", exclusive for gc around "old?/unlink".
    gc_lock: RwLock<()>,
    /// Serialises pin checks and changes (begin, remove_backup) and lease checks.
    meta_lock: Mutex<()>,
    /// Backups in use by readers of this process; its own lock, taken after `meta_lock`.
    leases: lease::Leases,
    /// Ids of the backups this process runs (begun, not yet committed or aborted): a pin of
    /// this process naming another is left over (its removal failed) and protects nothing.
    running: Mutex<std::collections::HashSet<String>>,
    /// The master key of an encrypted repository.
    key: Option<MasterKey>,
    /// Format 1: chunks named by SHA-256 (else BLAKE3).
    sha256_names: bool,
    /// In object storage (`store.rs`): no directories, links, renames or fsyncs.
    remote: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Config {
    format: String,
    version: u32,
    id: String,
    chunk_size: u32,
    /// zstd level of the chunks this repository stores (absent in older configs: the default).
    #[serde(default = "default_level")]
    compression_level: i32,
    #[serde(with = "rfc3339")]
    created: SystemTime,
    /// Format 2: [`CHUNK_NAMES_BLAKE3`] or [`CHUNK_NAMES_KEYED`] (format 1: absent, SHA-256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chunk_names: Option<String>,
    /// Present exactly in encrypted repositories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    encryption: Option<Encryption>,
}

/// How an encrypted repository seals what it stores.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Encryption {
    cipher: String,
    /// [`MasterKey::fingerprint`]: which key the slots must unwrap.
    key_fingerprint: String,
}

/// A repository's configuration, as [`Repo::about`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct About {
    pub id: String,
    pub chunk_size: u32,
    pub compression_level: i32,
    pub format: u32,
    /// As [`Repo::chunk_naming`] says it.
    pub chunk_names: String,
    pub key_fingerprint: Option<String>,
    /// Encrypted: whether this process holds the key.
    pub unlocked: Option<bool>,
}

/// How to encrypt a repository being created.
#[derive(Debug)]
pub struct InitKey<'a> {
    pub secret: &'a Secret,
    /// The first slot's label.
    pub label: &'a str,
    pub cost: KdfCost,
    /// The master key to use (another repository's, so that both name chunks alike and sync
    /// reads only the chunks the destination lacks); a fresh one when `None`.
    pub key: Option<MasterKey>,
}

fn default_level() -> i32 {
    DEFAULT_COMPRESSION_LEVEL
}

fn valid_chunk_size(n: u64) -> bool {
    n.is_power_of_two() && (u64::from(MIN_CHUNK_SIZE)..=u64::from(MAX_CHUNK_SIZE)).contains(&n)
}

/// How long a temporary file of another host sharing the repository is left alone.
const FOREIGN_TMP_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// 8 hex digits of this host's identity, in temporary file names.
fn host_tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| digest::to_hex(&blake3::hash(owner::host_id().as_bytes()).as_bytes()[..4]))
}

/// Backup ids become directory names: a conservative character set, no leading dot.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Threads for work on chunks (store, verify, restore): the CPUs (counted as 2 to 8) and two
/// more, so that a thread waiting for its chunk's I/O leaves its CPU to another.
pub fn chunk_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8)
        + 2
}

fn check_level(level: i32) -> Result<(), RepoError> {
    if COMPRESSION_LEVELS.contains(&level) {
        Ok(())
    } else {
        Err(RepoError::Invalid(format!(
            "compression level {level} is out of range: give {} to {}",
            COMPRESSION_LEVELS.start(),
            COMPRESSION_LEVELS.end()
        )))
    }
}

fn check_id(id: &str) -> Result<(), RepoError> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(RepoError::BadId(id.to_owned()))
    }
}

/// The guard of a lock whose holder may have panicked: the repository's locks guard no data
/// that a panic could leave half-changed (directory entries, a bitmap of dirty directories).
pub(crate) fn held<G>(r: std::sync::LockResult<G>) -> G {
    r.unwrap_or_else(PoisonError::into_inner)
}

/// fsync of a directory, so the entries created or removed in it are durable.
pub(crate) fn fsync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

fn mkdir(path: &Path) -> io::Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        r => r,
    }
}

impl Repo {
    /// Creates a repository at `root` (an empty or missing directory).
    pub fn init(root: &Path, chunk_size: u32) -> Result<Repo, RepoError> {
        Repo::init_with(root, chunk_size, DEFAULT_COMPRESSION_LEVEL)
    }

    /// [`Repo::init`] with the zstd level its chunks are stored with.
    pub fn init_with(root: &Path, chunk_size: u32, level: i32) -> Result<Repo, RepoError> {
        Repo::create(root, chunk_size, level, VERSION, None)
    }

    /// Creates a repository of format `version` ([`VERSION`], or [`VERSION_1`] for an older
    /// cowd to read) at `root` (an empty or missing directory), encrypted when `key` says how:
    /// its master key is wrapped into a first key slot and unlocked in this process.
    pub fn create(
        root: &Path,
        chunk_size: u32,
        level: i32,
        version: u32,
        key: Option<InitKey<'_>>,
    ) -> Result<Repo, RepoError> {
        if !valid_chunk_size(u64::from(chunk_size)) {
            return Err(RepoError::ChunkSize(chunk_size.into()));
        }
        check_level(level)?;
        match version {
            VERSION => {}
            VERSION_1 if key.is_some() => {
                return Err(RepoError::Invalid(
                    "format 1 cannot be encrypted: encryption needs format 2".into(),
                ));
            }
            VERSION_1 => {}
            v => {
                return Err(RepoError::Invalid(format!(
                    "repository format {v} does not exist: give {VERSION_1} or {VERSION}"
                )));
            }
        }
        if is_remote(root) {
            let config = root.join("config.json");
            if store::stat(&config)
                .map_err(RepoError::io(&config, "look up"))?
                .is_some()
            {
                return Err(RepoError::AlreadyRepo(root.to_owned()));
            }
            if !store::list(root)
                .map_err(RepoError::io(root, "list"))?
                .is_empty()
            {
                return Err(RepoError::NotEmpty(root.to_owned()));
            }
        } else {
            Repo::create_dirs(root)?;
        }
        let id = digest::to_hex(&crypt::random_bytes::<16>());
        let master = key
            .as_ref()
            .map(|k| k.key.clone().unwrap_or_else(MasterKey::generate));
        if let (Some(k), Some(master)) = (&key, &master) {
            // The slot before the config: a repository is visible only when it opens.
            keys::add_slot(root, &id, master, k.secret, k.label, k.cost)?;
        }
        let chunk_names = match (version, &master) {
            (VERSION_1, _) => None,
            (_, None) => Some(CHUNK_NAMES_BLAKE3.to_owned()),
            (_, Some(_)) => Some(CHUNK_NAMES_KEYED.to_owned()),
        };
        let config = Config {
            format: FORMAT.to_owned(),
            version,
            id,
            chunk_size,
            compression_level: level,
            created: SystemTime::now(),
            chunk_names,
            encryption: master.as_ref().map(|m| Encryption {
                cipher: CIPHER.to_owned(),
                key_fingerprint: m.fingerprint(),
            }),
        };
        let json = serde_json::to_vec_pretty(&config).expect("config to json");
        let repo = Repo::from_config(root, config, master)?;
        repo.write_atomic(&root.join("config.json"), &json)?;
        if let Some(k) = &repo.inner.key {
            keys::remember(repo.id(), k.clone());
        }
        Ok(repo)
    }

    /// The directories of a new directory repository at `root` (an empty or missing one).
    fn create_dirs(root: &Path) -> Result<(), RepoError> {
        match fs::read_dir(root) {
            Ok(mut entries) => {
                if root.join("config.json").exists() {
                    return Err(RepoError::AlreadyRepo(root.to_owned()));
                }
                if entries.next().is_some() {
                    return Err(RepoError::NotEmpty(root.to_owned()));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(root)
                    .map_err(RepoError::io(root, "create directory"))?;
                if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
                    fsync_dir(parent).map_err(RepoError::io(parent, "fsync"))?;
                }
            }
            Err(e) => return Err(RepoError::io(root, "read directory")(e)),
        }
        for sub in ["chunks", "backups", "pins", "tmp"] {
            let p = root.join(sub);
            mkdir(&p).map_err(RepoError::io(&p, "create directory"))?;
        }
        let chunks = root.join("chunks");
        for b in 0..=255u8 {
            let p = chunks.join(digest::to_hex(&[b]));
            mkdir(&p).map_err(RepoError::io(&p, "create directory"))?;
        }
        fsync_dir(&chunks).map_err(RepoError::io(&chunks, "fsync"))
    }

    /// Reads and checks `root/config.json`.
    fn read_config(root: &Path) -> Result<Config, RepoError> {
        if !is_remote(root) && !root.is_dir() {
            return Err(RepoError::Missing(root.to_owned()));
        }
        let cfg_path = root.join("config.json");
        let not_repo = |why: String| RepoError::NotARepo {
            path: root.to_owned(),
            why,
        };
        let text = match store::read(&cfg_path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(not_repo("it has no config.json".into()));
            }
            Err(e) => return Err(RepoError::io(&cfg_path, "read")(e)),
        };
        let value: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| not_repo(format!("config.json is not JSON: {e}")))?;
        if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
            return Err(not_repo(format!(
                "config.json does not say \"format\": \"{FORMAT}\""
            )));
        }
        let version = match value.get("version").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(VERSION_1) || v == u64::from(VERSION) => v,
            Some(v) => {
                return Err(RepoError::UnsupportedVersion {
                    path: root.to_owned(),
                    version: v,
                });
            }
            None => return Err(not_repo("config.json has no version".into())),
        };
        let config: Config =
            serde_json::from_value(value).map_err(|e| not_repo(format!("config.json: {e}")))?;
        if !valid_chunk_size(config.chunk_size.into()) {
            return Err(not_repo(format!(
                "config.json: bad chunk size {}",
                config.chunk_size
            )));
        }
        check_level(config.compression_level).map_err(|e| not_repo(format!("config.json: {e}")))?;
        let names = config.chunk_names.as_deref();
        match (version == u64::from(VERSION), names, &config.encryption) {
            (false, None, None) | (true, Some(CHUNK_NAMES_BLAKE3), None) => {}
            (true, Some(CHUNK_NAMES_KEYED), Some(e)) if e.cipher == CIPHER => {}
            (true, Some(CHUNK_NAMES_KEYED), Some(e)) => {
                return Err(not_repo(format!(
                    "config.json: cipher {:?} is not supported",
                    e.cipher
                )));
            }
            (false, ..) => {
                return Err(not_repo(
                    "config.json: chunk names or encryption in a version 1 repository".into(),
                ));
            }
            (true, n, e) => {
                return Err(not_repo(format!(
                    "config.json: chunk names {n:?} {} encryption are not supported",
                    if e.is_some() { "with" } else { "without" }
                )));
            }
        }
        Ok(config)
    }

    /// Opens an existing repository and removes temporary files that crashed writers left.
    /// An encrypted repository opens once this process holds its key ([`Repo::unlock`]).
    pub fn open(root: &Path) -> Result<Repo, RepoError> {
        let config = Repo::read_config(root)?;
        let key = match &config.encryption {
            None => None,
            Some(_) => {
                Some(keys::unlocked(&config.id).ok_or_else(|| RepoError::Locked(root.to_owned()))?)
            }
        };
        let repo = Repo::from_config(root, config, key)?;
        if !repo.inner.remote {
            for sub in ["chunks", "backups", "pins", "tmp"] {
                let p = root.join(sub);
                mkdir(&p).map_err(RepoError::io(&p, "create directory"))?;
            }
        }
        repo.clean_at_open();
        Ok(repo)
    }

    /// Unwraps the master key of the encrypted repository at `root` with `secret`, keeps it
    /// for this process (later [`Repo::open`]s find it) and opens the repository. Returns the
    /// repository and the id of the slot that opened.
    pub fn unlock(root: &Path, secret: &Secret) -> Result<(Repo, String), RepoError> {
        let config = Repo::read_config(root)?;
        let Some(enc) = &config.encryption else {
            return Err(RepoError::Invalid(format!(
                "repository {} is not encrypted: there is nothing to unlock",
                root.display()
            )));
        };
        let (key, slot) = keys::unwrap_key(root, &config.id, secret)?;
        if key.fingerprint() != enc.key_fingerprint {
            return Err(RepoError::Corrupt {
                path: keys::keys_dir(root).join(format!("{slot}.json")),
                problem: format!(
                    "key slot holds key {}; the repository's is {}",
                    key.fingerprint(),
                    enc.key_fingerprint
                ),
            });
        }
        keys::remember(&config.id, key);
        Ok((Repo::open(root)?, slot))
    }

    /// What `root/config.json` says, without opening the repository (a locked one too).
    pub fn about(root: &Path) -> Result<About, RepoError> {
        let c = Repo::read_config(root)?;
        let keyed = c.encryption.as_ref().map(|e| e.key_fingerprint.clone());
        let chunk_names = match (&c.chunk_names, &keyed) {
            (None, _) => "sha256".to_owned(),
            (Some(n), Some(k)) => format!("{n}:{k}"),
            (Some(n), None) => n.clone(),
        };
        Ok(About {
            unlocked: keyed.is_some().then(|| keys::unlocked(&c.id).is_some()),
            id: c.id,
            chunk_size: c.chunk_size,
            compression_level: c.compression_level,
            format: c.version,
            chunk_names,
            key_fingerprint: keyed,
        })
    }

    /// Drops this process's key of the repository at `root` (handles open now keep theirs
    /// until dropped); true when it held one.
    pub fn lock(root: &Path) -> Result<bool, RepoError> {
        Ok(keys::forget(&Repo::read_config(root)?.id))
    }

    /// A handle on the repository at `root`, sharing its state (locks, directories to sync)
    /// with every other live handle of this process on the same directory: handles opened
    /// separately (say, by the backup target and by a gc request) still exclude each other.
    fn from_config(root: &Path, config: Config, key: Option<MasterKey>) -> Result<Repo, RepoError> {
        let sha256_names = config.version == VERSION_1;
        static OPEN: Mutex<Vec<Weak<Inner>>> = Mutex::new(Vec::new());
        let remote = is_remote(root);
        let root = if remote {
            PathBuf::from(root.to_string_lossy().trim_end_matches('/'))
        } else {
            fs::canonicalize(root).map_err(RepoError::io(root, "resolve path"))?
        };
        let mut open = held(OPEN.lock());
        open.retain(|w| w.strong_count() > 0);
        let live = open
            .iter()
            .filter_map(Weak::upgrade)
            .find(|i| i.root == root && i.id == config.id);
        let inner = match live {
            Some(inner) => inner,
            None => {
                let inner = Arc::new(Inner {
                    root,
                    id: config.id,
                    chunk_size: config.chunk_size,
                    tmp_seq: AtomicU64::new(0),
                    dirty_dirs: Mutex::new([0; 4]),
                    sync_lock: Mutex::new(()),
                    gc_lock: RwLock::new(()),
                    meta_lock: Mutex::new(()),
                    leases: lease::Leases::default(),
                    running: Mutex::default(),
                    key,
                    sha256_names,
                    remote,
                });
                open.push(Arc::downgrade(&inner));
                inner
            }
        };
        Ok(Repo {
            inner,
            level: config.compression_level,
        })
    }

    /// The repository directory (canonical path), or `s3://BUCKET/PREFIX`.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Size of every chunk but a device's last.
    pub fn chunk_size(&self) -> u32 {
        self.inner.chunk_size
    }

    /// The repository's random id (hex).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// zstd level for chunks stored through this handle (the repository's by default).
    pub fn set_compression_level(&mut self, level: i32) {
        self.level = level;
    }

    /// The zstd level in use.
    pub fn compression_level(&self) -> i32 {
        self.level
    }

    pub(crate) fn backups_dir(&self) -> PathBuf {
        self.inner.root.join("backups")
    }

    pub(crate) fn backup_dir(&self, id: &str) -> PathBuf {
        self.backups_dir().join(id)
    }

    pub(crate) fn pins_dir(&self) -> PathBuf {
        self.inner.root.join("pins")
    }

    /// A fresh path in `tmp/` (same filesystem as the chunks) for a temporary file. Its name,
    /// `<pid>-<seq>-<random>-<host>.tmp`, lets `open` leave it alone while this process lives
    /// (and, on another host sharing the repository, for a day). In object storage, a path in
    /// the local [`store::staging_dir`] (created when missing).
    pub fn tmp_path(&self) -> PathBuf {
        let seq = self.inner.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "{}-{seq}-{:016x}-{}.tmp",
            std::process::id(),
            fastrand::u64(..),
            host_tag()
        );
        if self.inner.remote {
            let dir = store::staging_dir();
            if let Err(e) = fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
            {
                tracing::warn!("cannot create staging directory {}: {e}", dir.display());
            }
            return dir.join(name);
        }
        self.inner.root.join("tmp").join(name)
    }

    /// Writes `bytes` to `path` atomically and durably: tmp file, fsync, rename, fsync dir.
    /// (An object is put whole.)
    pub(crate) fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), RepoError> {
        store::write(path, &self.tmp_path(), bytes).map_err(RepoError::io(path, "write"))
    }

    /// True when the repository is in object storage.
    pub fn is_remote(&self) -> bool {
        self.inner.remote
    }

    /// Threads for work on this repository's chunks: [`chunk_threads`], and four times as
    /// many in object storage, where a thread mostly waits for its request's answer (a HEAD
    /// and a PUT per new chunk) and only requests in flight together hide that latency.
    pub fn threads(&self) -> usize {
        chunk_threads() * if self.inner.remote { 4 } else { 1 }
    }

    /// True when complete backup `id` exists (its directory; in object storage, its manifest,
    /// written last).
    pub(crate) fn backup_exists(&self, id: &str) -> Result<bool, RepoError> {
        let dir = self.backup_dir(id);
        if !self.inner.remote {
            return Ok(dir.is_dir());
        }
        let m = dir.join("manifest.json");
        Ok(store::stat(&m)
            .map_err(RepoError::io(&m, "look up"))?
            .is_some())
    }

    /// Removes what crashed processes left: `tmp/` files of dead processes (or not ours),
    /// half-removed backups (`backups/.del-*`), in-progress directories without a pin, pins of
    /// backups that are complete, pins of processes that are gone (with their directories). Best effort: what cannot be removed is logged and left.
    fn clean_at_open(&self) {
        if self.inner.remote {
            // No temporary files or directories there: only pins of processes that are gone.
            if let Err(e) = self.in_progress() {
                tracing::warn!("repository: cannot check the backups in progress: {e}");
            }
            return;
        }
        let entries = |dir: &Path| {
            fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| (e.file_name().to_string_lossy().into_owned(), e))
        };
        let remove = |p: &Path, dir: bool| {
            let r = if dir {
                fs::remove_dir_all(p)
            } else {
                fs::remove_file(p)
            };
            match r {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    tracing::warn!("repository: cannot remove stale {}: {e}", p.display());
                }
                _ => {}
            }
        };
        for (name, e) in entries(&self.inner.root.join("tmp")) {
            let parts: Vec<&str> = name.trim_end_matches(".tmp").split('-').collect();
            let live = if parts.len() == 4 && parts[3] != host_tag() {
                // Another host's: its processes cannot be seen from here.
                e.metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < FOREIGN_TMP_AGE))
            } else {
                let pid = parts[0].parse::<u32>().ok();
                pid.is_some_and(|p| {
                    p == std::process::id() || Path::new(&format!("/proc/{p}")).exists()
                })
            };
            if !live {
                remove(&e.path(), e.file_type().is_ok_and(|t| t.is_dir()));
            }
        }
        for (name, e) in entries(&self.pins_dir()) {
            let done = name
                .strip_suffix(".json")
                .is_some_and(|id| valid_id(id) && self.backup_dir(id).is_dir());
            if done {
                remove(&e.path(), false);
            }
        }
        // Pins of processes that are gone go, with their `.tmp-<id>/` directories.
        if let Err(e) = self
            .remove_ownerless_pins()
            .and_then(|()| self.in_progress())
        {
            tracing::warn!("repository: cannot check the backups in progress: {e}");
        }
        for (name, e) in entries(&self.backups_dir()) {
            let stale = if name.starts_with(".del-") {
                true
            } else if let Some(id) = name.strip_prefix(".tmp-") {
                !self.pins_dir().join(format!("{id}.json")).exists()
            } else {
                false
            };
            if stale {
                remove(&e.path(), true);
            }
        }
    }

    /// Ids of the directories under `backups/` that look like complete backups (no leading
    /// dot), sorted by name; their manifests are not read.
    pub(crate) fn backup_ids(&self) -> Result<Vec<String>, RepoError> {
        let dir = self.backups_dir();
        let mut ids: Vec<String> = store::list(&dir)
            .map_err(RepoError::io(&dir, "read directory"))?
            .into_iter()
            .filter(|e| e.is_dir && !e.name.starts_with('.'))
            .map(|e| e.name)
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Every complete backup, oldest first (by snapshot time, then id). A backup whose
    /// manifest cannot be read is left out; [`listing`](Repo::listing) names it.
    pub fn backups(&self) -> Result<Vec<Manifest>, RepoError> {
        Ok(self.listing()?.backups)
    }

    /// Every backup: the complete ones oldest first, and the damaged ones with the reason.
    pub fn listing(&self) -> Result<Listing, RepoError> {
        let mut out = Listing::default();
        for id in self.backup_ids()? {
            match self.manifest(&id) {
                Ok(m) => out.backups.push(m),
                // Removed since the listing.
                Err(RepoError::NoSuchBackup(_)) if !self.backup_exists(&id)? => {}
                Err(e) => out.damaged.push(Damaged {
                    id,
                    status: Status::Damaged,
                    problem: e.to_string(),
                }),
            }
        }
        out.backups
            .sort_by(|a, b| (a.snapshot_time, &a.id).cmp(&(b.snapshot_time, &b.id)));
        Ok(out)
    }

    /// The manifest of complete backup `id`.
    pub fn manifest(&self, id: &str) -> Result<Manifest, RepoError> {
        check_id(id)?;
        let path = self.backup_dir(id).join("manifest.json");
        let text = match store::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(RepoError::NoSuchBackup(id.to_owned()));
            }
            Err(e) => return Err(RepoError::io(&path, "read")(e)),
        };
        let text = self.open_object(crypt::Object::Manifest, id, &path, text)?;
        let m: Manifest = serde_json::from_slice(&text).map_err(|e| RepoError::Corrupt {
            path: path.clone(),
            problem: format!("manifest: {e}"),
        })?;
        if m.id != id {
            return Err(RepoError::Corrupt {
                path,
                problem: format!("manifest names backup {:?}", m.id),
            });
        }
        Ok(m)
    }

    /// The index of complete backup `id`, checked against its trailing checksum and against
    /// the manifest (`index_sha256`, sizes).
    pub fn index(&self, id: &str) -> Result<Index, RepoError> {
        let m = self.manifest(id)?;
        let path = self.backup_dir(id).join("index.bin");
        let bytes = self.index_bytes(id)?;
        let corrupt = |problem: String| RepoError::Corrupt {
            path: path.clone(),
            problem,
        };
        let index = Index::decode(&bytes).map_err(|e| corrupt(e.0))?;
        let sum = Index::checksum_of(&bytes).expect("decoded index has a checksum");
        if sum.to_string() != m.index_sha256.to_ascii_lowercase() {
            return Err(corrupt(format!(
                "index checksum {sum} differs from the manifest's {}",
                m.index_sha256
            )));
        }
        if index.chunk_size != m.chunk_size || index.device_size != m.device_size {
            return Err(corrupt(format!(
                "index is for {} bytes in chunks of {}; the manifest says {} in {}",
                index.device_size, index.chunk_size, m.device_size, m.chunk_size
            )));
        }
        Ok(index)
    }
}

impl Repo {
    /// The plain bytes of backup `id`'s index file (opened, not yet decoded or checked).
    pub(crate) fn index_bytes(&self, id: &str) -> Result<Vec<u8>, RepoError> {
        let path = self.backup_dir(id).join("index.bin");
        let bytes = store::read(&path).map_err(RepoError::io(&path, "read"))?;
        self.open_object(crypt::Object::Index, id, &path, bytes)
    }
}

/// Creates `path` (0600), writes `bytes`, fsyncs.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Helpers for the module tests: a repository and whole backups of byte buffers.
#[cfg(test)]
pub(crate) mod testutil {
    use super::*;
    use std::time::Duration;

    pub(crate) fn repo() -> (tempfile::TempDir, Repo) {
        let d = tempfile::tempdir().unwrap();
        let r = Repo::init(&d.path().join("repo"), MIN_CHUNK_SIZE).unwrap();
        (d, r)
    }

    /// `n` chunks of distinct random data from `seed`.
    pub(crate) fn data(n: usize, seed: u64) -> Vec<u8> {
        let mut v = vec![0u8; n * MIN_CHUNK_SIZE as usize];
        fastrand::Rng::with_seed(seed).fill(&mut v);
        v
    }

    /// Stores `image` as complete backup `id` of export "disk" at `time` (seconds).
    pub(crate) fn backup(
        r: &Repo,
        id: &str,
        parent: Option<&str>,
        time: u64,
        image: &[u8],
    ) -> Index {
        let mut index = Index::new(r.chunk_size(), image.len() as u64);
        for (i, c) in image.chunks(r.chunk_size() as usize).enumerate() {
            index.digests[i] = r.store_chunk(c).unwrap().digest;
        }
        commit(r, id, parent, time, index)
    }

    /// Backup `id` read back as an image, chunk by chunk (`load_entry`: base + patch).
    pub(crate) fn read_back(r: &Repo, id: &str) -> Result<Vec<u8>, RepoError> {
        let index = r.index(id)?;
        let (mut out, mut chunk) = (Vec::new(), Vec::new());
        for i in 0..index.digests.len() {
            r.load_entry(&index, i, &mut chunk)?;
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Stores `image` as an incremental on `parent` as the backup target does: unchanged
    /// chunks inherited, chunks changed in under a quarter (4 KiB blocks) as patches over the
    /// parent's (merged with its patch), the rest whole.
    pub(crate) fn patched_backup(
        r: &Repo,
        id: &str,
        parent: &str,
        time: u64,
        image: &[u8],
    ) -> Index {
        let mut index = r.index(parent).unwrap();
        let mut old = Vec::new();
        for (i, c) in image.chunks(r.chunk_size() as usize).enumerate() {
            r.load_entry(&index, i, &mut old).unwrap();
            let changed: Vec<(usize, usize)> = (0..c.len())
                .step_by(4096)
                .map(|s| (s, (s + 4096).min(c.len())))
                .filter(|&(s, e)| old[s..e] != c[s..e])
                .collect();
            if changed.is_empty() {
                continue;
            }
            let new = Patch::build(c.len(), &changed, |s, b: &mut [u8]| {
                b.copy_from_slice(&c[s..s + b.len()]);
                Ok::<_, ()>(())
            })
            .unwrap();
            let patch = match r.load_patch(&index, i).unwrap() {
                Some(p) => Patch::merge(&p, &new),
                None => new,
            };
            if patch.worth_it() {
                let bytes = patch.encode();
                let digest = r.store_chunk(&bytes).unwrap().digest;
                let len = bytes.len() as u32;
                index.patches.insert(i, PatchRef { digest, len });
            } else {
                index.patches.remove(&i);
                index.digests[i] = r.store_chunk(c).unwrap().digest;
            }
        }
        commit(r, id, Some(parent), time, index)
    }

    fn commit(r: &Repo, id: &str, parent: Option<&str>, time: u64, index: Index) -> Index {
        let b = r.begin(id, parent).unwrap();
        let image_len = index.device_size;
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(time);
        let m = Manifest {
            id: id.into(),
            export: "disk".into(),
            device_size: image_len,
            block_size: 65536,
            chunk_size: r.chunk_size(),
            snapshot_time: t,
            started_time: t,
            ended_time: t,
            duration_s: 0.0,
            mode: if parent.is_some() {
                Mode::Incremental
            } else {
                Mode::Full
            },
            parent: parent.map(str::to_owned),
            full_reason: None,
            blocks: Blocks::All,
            filesystem: None,
            counts: Counts::default(),
            index_sha256: String::new(),
            status: Status::Complete,
        };
        b.commit(&m, &index).unwrap();
        index
    }
}

#[cfg(test)]
#[path = "crypt_tests.rs"]
mod crypt_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_open_and_errors() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("repo");
        let r = Repo::init(&root, 1 << 16).unwrap();
        assert_eq!(r.chunk_size(), 65536);
        assert_eq!(r.id().len(), 32);
        assert!(root.join("chunks/00").is_dir() && root.join("chunks/ff").is_dir());
        let cfg: serde_json::Value =
            serde_json::from_slice(&fs::read(root.join("config.json")).unwrap()).unwrap();
        assert_eq!(cfg["format"], "cowd-repo");
        assert_eq!(cfg["version"], 2);
        assert_eq!(cfg["chunk_names"], "blake3");
        assert_eq!(cfg["chunk_size"], 65536);
        assert!(rfc3339::parse(cfg["created"].as_str().unwrap()).is_ok());

        let o = Repo::open(&root).unwrap();
        assert_eq!(o.id(), r.id());
        assert_eq!(o.chunk_size(), 65536);

        let e = Repo::init(&root, 1 << 16).unwrap_err().to_string();
        assert!(e.contains("already a repository"), "{e}");

        for bad in [0u32, 1000, 1 << 15, 8 << 20, 65537] {
            let e = Repo::init(&d.path().join("x"), bad).unwrap_err();
            assert!(matches!(e, RepoError::ChunkSize(_)), "{bad}: {e}");
        }
    }

    #[test]
    fn format_1_is_still_written_and_read_with_sha256_names() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("v1");
        let r = Repo::create(&root, MIN_CHUNK_SIZE, 1, VERSION_1, None).unwrap();
        let img = testutil::data(3, 9);
        let ix = testutil::backup(&r, "b1", None, 100, &img);
        assert_eq!(ix.digests[0], Digest::of(&img[..MIN_CHUNK_SIZE as usize]));
        assert_eq!((r.format(), r.chunk_naming().as_str()), (1, "sha256"));
        let cfg: serde_json::Value =
            serde_json::from_slice(&fs::read(root.join("config.json")).unwrap()).unwrap();
        assert_eq!(cfg["version"], 1);
        assert!(cfg.get("chunk_names").is_none());
        drop(r);
        let o = Repo::open(&root).unwrap();
        let v = o.verify(None, &|_, _| {}).unwrap();
        assert!(v.corrupt.is_empty() && v.bad_indexes.is_empty() && v.missing.is_empty());
        assert_eq!(v.chunks_checked, 3);
        // Format 2 names the same data otherwise; sync renames (see crypt_tests).
        let v2 = Repo::init(&d.path().join("v2"), MIN_CHUNK_SIZE).unwrap();
        assert_eq!(v2.format(), 2);
        assert_ne!(v2.name_of(&img), o.name_of(&img));
        for bad in [0, 3] {
            let e = Repo::create(&d.path().join("x"), MIN_CHUNK_SIZE, 1, bad, None).unwrap_err();
            assert!(e.to_string().contains("give 1 or 2"), "{e}");
        }
    }

    #[test]
    fn compression_level_is_the_repositorys() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("repo");
        assert_eq!(
            Repo::init(&root, 1 << 16).unwrap().compression_level(),
            DEFAULT_COMPRESSION_LEVEL
        );
        let fast = d.path().join("fast");
        Repo::init_with(&fast, 1 << 16, -5).unwrap();
        assert_eq!(Repo::open(&fast).unwrap().compression_level(), -5);
        for bad in [-8, 20, i32::MIN] {
            let e = Repo::init_with(&d.path().join("bad"), 1 << 16, bad)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("compression level") && e.contains("-7 to 19"),
                "{e}"
            );
            assert!(!d.path().join("bad/config.json").exists());
        }
        // A config without the field (older repositories) opens at the default level; a
        // config with a level out of range does not open.
        let cfg_path = root.join("config.json");
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&fs::read(&cfg_path).unwrap()).unwrap();
        cfg.as_object_mut().unwrap().remove("compression_level");
        fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
        assert_eq!(
            Repo::open(&root).unwrap().compression_level(),
            DEFAULT_COMPRESSION_LEVEL
        );
        cfg["compression_level"] = 99.into();
        fs::write(&cfg_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
        let e = Repo::open(&root).unwrap_err().to_string();
        assert!(e.contains("compression level 99"), "{e}");
    }

    #[test]
    fn handles_on_one_directory_share_state_and_keep_live_temp_files() {
        let (d, r) = testutil::repo();
        let o = Repo::open(&d.path().join("repo")).unwrap();
        assert!(Arc::ptr_eq(&r.inner, &o.inner));
        let mine = r.tmp_path();
        fs::write(&mine, b"staging").unwrap();
        let dead = r.root().join("tmp/4000000000-1-00.tmp");
        fs::write(&dead, b"x").unwrap();
        // Another host's (sharing the repository): left alone for a day, whatever its pid.
        let remote = r.root().join("tmp/4000000000-1-00-0badf00d.tmp");
        let stale_remote = r.root().join("tmp/4000000000-2-00-0badf00d.tmp");
        fs::write(&remote, b"x").unwrap();
        fs::write(&stale_remote, b"x").unwrap();
        let day_old = SystemTime::now() - FOREIGN_TMP_AGE - std::time::Duration::from_secs(1);
        File::open(&stale_remote)
            .unwrap()
            .set_modified(day_old)
            .unwrap();
        drop((r, o));
        let again = Repo::open(&d.path().join("repo")).unwrap();
        assert!(mine.exists(), "a live process's temporary file was removed");
        assert!(!dead.exists());
        assert!(remote.exists() && !stale_remote.exists());
        // Another repository at the same path after the old one was deleted: fresh state.
        drop(again);
        let keep = Repo::open(&d.path().join("repo")).unwrap();
        fs::remove_dir_all(d.path().join("repo")).unwrap();
        let fresh = Repo::init(&d.path().join("repo"), MIN_CHUNK_SIZE).unwrap();
        assert!(!Arc::ptr_eq(&keep.inner, &fresh.inner));
    }

    #[test]
    fn ids() {
        for ok in [
            "a",
            "2024-05-01T12:00:00Z",
            "disk0.full_1",
            &"x".repeat(128),
        ] {
            assert!(valid_id(ok), "{ok}");
        }
        for bad in ["", ".tmp-a", "a/b", "..", "a b", &"x".repeat(129), "é"] {
            assert!(!valid_id(bad), "{bad}");
        }
    }
}
