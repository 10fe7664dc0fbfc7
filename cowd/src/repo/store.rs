//! Where a repository's files live: a directory, or a prefix of an S3 bucket.
//!
//! A repository is named by a path. One that starts with `s3://BUCKET/PREFIX` is kept in object
//! storage (AWS S3, Ceph's RADOS Gateway, MinIO …): each file of the layout in `mod.rs` is the
//! object at `PREFIX/<relative path>`, so the two kinds hold the same names. The functions here
//! take such a path and do the POSIX operation, or its object equivalent, and answer with
//! `io::Error`s (a missing object is `NotFound`) so that callers keep one error path:
//!
//! | here             | directory                        | S3                                  |
//! |------------------|----------------------------------|-------------------------------------|
//! | [`read`]         | read the file                    | GET                                 |
//! | [`write`]        | tmp file, fsync, rename, fsync   | PUT (an object appears whole)       |
//! | [`stat`]         | metadata: size, mtime            | HEAD: size, Last-Modified           |
//! | [`list`]         | read the directory               | LIST with delimiter `/`             |
//! | [`remove`]       | unlink                           | DELETE                              |
//!
//! The S3 client is `object_store`'s (signing, retries with exponential backoff on timeouts, 5xx
//! and throttling, connection reuse). It is configured from the standard AWS environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`), else the shared credentials file
//! (`AWS_SHARED_CREDENTIALS_FILE` or `~/.aws/credentials`, profile `AWS_PROFILE` or `default`),
//! then from [`configure`] (the daemon's `--s3-endpoint`, `--s3-region`, `--s3-path-style`).
//! Credentials are never taken from a command line. Requests run on a small runtime of their
//! own, so the repository's threads call them as they call the file system.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as Key;
use object_store::{ClientConfigKey, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

/// The scheme of a repository in object storage.
pub const S3_SCHEME: &str = "s3://";

/// How to reach the S3 service, beside what the environment says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Options {
    /// `http(s)://host:port` of an S3-compatible service (AWS when `None`).
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), as most self-hosted services want; the
    /// default when an endpoint is given.
    pub path_style: Option<bool>,
    /// Local directory for the temporary files of repositories in object storage (a backup's
    /// sparse staging file): the daemon's `STATE_DIR/staging`; the system's temporary
    /// directory when not set.
    pub staging_dir: Option<PathBuf>,
    /// How long a request is retried (timeouts, 5xx, throttling, a refused connection) before
    /// the operation fails: [`DEFAULT_RETRY_TIMEOUT`] when not set.
    pub retry_timeout: Option<Duration>,
    /// How long one request may take, from sending it to the end of its answer, before it
    /// counts as timed out (and is retried): [`DEFAULT_REQUEST_TIMEOUT`] when not set.
    pub request_timeout: Option<Duration>,
}

/// How long a failing S3 request is retried by default: the store may restart meanwhile.
pub const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(180);

/// How long one S3 request may take by default (object_store's default): a chunk is a few MiB,
/// so this is generous on any link that can carry a backup.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The local directory for temporary files of repositories in object storage.
pub fn staging_dir() -> PathBuf {
    let o = super::held(OPTIONS.lock());
    o.as_ref()
        .and_then(|o| o.staging_dir.clone())
        .unwrap_or_else(|| std::env::temp_dir().join("cowd-staging"))
}

static OPTIONS: Mutex<Option<S3Options>> = Mutex::new(None);

/// Sets the options for buckets first used after the call (the daemon calls it at start).
pub fn configure(options: S3Options) {
    *super::held(OPTIONS.lock()) = Some(options);
}

/// True for a repository in object storage.
pub fn is_remote(path: &Path) -> bool {
    path.as_os_str()
        .to_str()
        .is_some_and(|s| s.starts_with(S3_SCHEME))
}

/// One file or subdirectory of a [`list`]ed directory.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub is_dir: bool,
    pub len: u64,
    pub modified: Option<SystemTime>,
}

/// The modification time of a file or object.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub modified: SystemTime,
}

/// The bytes of the file at `path`.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    match remote(path)? {
        None => std::fs::read(path),
        Some((b, key)) => b.run(move |s| async move {
            let got = s.get(&key).await?;
            Ok(Vec::from(got.bytes().await?))
        }),
    }
}

/// Writes `bytes` as the file at `path`, atomically and durably: it is there whole, or as
/// before. (Directory: through a temporary file `tmp` in the same file system.)
pub fn write(path: &Path, tmp: &Path, bytes: &[u8]) -> io::Result<()> {
    match remote(path)? {
        None => {
            let res = super::write_synced(tmp, bytes).and_then(|()| std::fs::rename(tmp, path));
            if res.is_err() {
                let _ = std::fs::remove_file(tmp);
            }
            res?;
            super::fsync_dir(path.parent().unwrap_or(Path::new(".")))
        }
        Some((b, key)) => {
            let payload = PutPayload::from(bytes.to_vec());
            b.run(move |s| async move { s.put(&key, payload).await.map(|_| ()) })
        }
    }
}

/// [`write`] of bytes the caller gives up: no copy for an object. (A file goes through
/// `PATH.tmp`; the repository uses this for objects only.)
pub fn put(path: &Path, bytes: Vec<u8>) -> io::Result<()> {
    match remote(path)? {
        None => write(path, &path.with_extension("tmp"), &bytes),
        Some((b, key)) => {
            let payload = PutPayload::from(bytes);
            b.run(move |s| async move { s.put(&key, payload).await.map(|_| ()) })
        }
    }
}

/// The modification time of the file at `path`; `None` when there is none.
pub fn stat(path: &Path) -> io::Result<Option<Meta>> {
    match remote(path)? {
        None => match std::fs::symlink_metadata(path) {
            Ok(m) => Ok(Some(Meta {
                modified: m.modified()?,
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        },
        Some((b, key)) => {
            let head = b.run(move |s| async move { s.head(&key).await });
            match head {
                Ok(m) => Ok(Some(Meta {
                    modified: m.last_modified.into(),
                })),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        }
    }
}

/// The entries of directory `dir` (none when it does not exist), in no particular order.
/// Objects: the keys one level under `dir/`, and the common prefixes as directories.
pub fn list(dir: &Path) -> io::Result<Vec<Entry>> {
    match remote(dir)? {
        None => {
            let rd = match std::fs::read_dir(dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(e),
            };
            let mut out = Vec::new();
            for e in rd {
                let e = e?;
                let Ok(m) = e.metadata() else { continue };
                out.push(Entry {
                    name: e.file_name().to_string_lossy().into_owned(),
                    is_dir: m.is_dir(),
                    len: m.len(),
                    modified: m.modified().ok(),
                });
            }
            Ok(out)
        }
        Some((b, key)) => {
            let listed = b.run(move |s| async move { s.list_with_delimiter(Some(&key)).await })?;
            let name = |k: &Key| k.filename().unwrap_or_default().to_owned();
            let mut out: Vec<Entry> = listed
                .common_prefixes
                .iter()
                .map(|p| Entry {
                    name: name(p),
                    is_dir: true,
                    len: 0,
                    modified: None,
                })
                .collect();
            out.extend(listed.objects.iter().map(|o| Entry {
                name: name(&o.location),
                is_dir: false,
                len: o.size,
                modified: Some(o.last_modified.into()),
            }));
            Ok(out)
        }
    }
}

/// Removes the file at `path`. A missing file is `NotFound`, as `unlink` says; a missing
/// object is removed successfully, as S3's DELETE says (every caller takes both as done, so
/// no HEAD is spent asking first).
pub fn remove(path: &Path) -> io::Result<()> {
    match remote(path)? {
        None => std::fs::remove_file(path),
        Some((b, key)) => b.run(move |s| async move { s.delete(&key).await }),
    }
}

/// A bucket's client and the runtime its requests run on.
struct Bucket {
    store: Arc<AmazonS3>,
}

impl Bucket {
    /// Runs one request to completion from a thread of the repository (any thread, also one
    /// of another runtime: the request runs on ours and this thread only waits).
    fn run<T, F, Fut>(&self, op: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<AmazonS3>) -> Fut,
        Fut: Future<Output = object_store::Result<T>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let store = self.store.clone();
        let fut = op(store);
        runtime().spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| io::Error::other("S3 request abandoned"))?
            .map_err(io::Error::from)
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3-io")
            .enable_all()
            .build()
            .expect("S3 runtime")
    })
}

/// The bucket and key of `path` when it names an object (`None`: a file).
fn remote(path: &Path) -> io::Result<Option<(Arc<Bucket>, Key)>> {
    let Some(rest) = path.to_str().and_then(|s| s.strip_prefix(S3_SCHEME)) else {
        return Ok(None);
    };
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: no bucket: give s3://BUCKET/PREFIX", path.display()),
        ));
    }
    let key = Key::parse(key.trim_matches('/')).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: {e}", path.display()),
        )
    })?;
    Ok(Some((bucket_named(bucket)?, key)))
}

fn bucket_named(name: &str) -> io::Result<Arc<Bucket>> {
    static BUCKETS: Mutex<Option<HashMap<String, Arc<Bucket>>>> = Mutex::new(None);
    let mut all = super::held(BUCKETS.lock());
    let all = all.get_or_insert_with(HashMap::new);
    if let Some(b) = all.get(name) {
        return Ok(b.clone());
    }
    let options = super::held(OPTIONS.lock()).clone().unwrap_or_default();
    let store = build(name, &options)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("s3://{name}: {e}")))?;
    let b = Arc::new(Bucket {
        store: Arc::new(store),
    });
    all.insert(name.to_owned(), b.clone());
    Ok(b)
}

fn build(bucket: &str, o: &S3Options) -> object_store::Result<AmazonS3> {
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if env("AWS_ACCESS_KEY_ID").is_none()
        && let Some((id, secret, token)) = credentials_file()
    {
        builder = builder
            .with_access_key_id(id)
            .with_secret_access_key(secret);
        if let Some(t) = token {
            builder = builder.with_token(t);
        }
    }
    if let Some(r) = o.region.clone().or_else(|| env("AWS_REGION")) {
        builder = builder.with_region(r);
    }
    let endpoint = o.endpoint.clone().or_else(|| env("AWS_ENDPOINT_URL"));
    if let Some(e) = &endpoint {
        builder = builder
            .with_endpoint(e)
            .with_allow_http(e.starts_with("http://"));
    }
    let path_style = o.path_style.unwrap_or(endpoint.is_some());
    builder
        .with_virtual_hosted_style_request(!path_style)
        // The signature covers the request but not a SHA-256 of the body: every object checks
        // itself when read (a chunk's name is its hash, an index ends with its checksum, the
        // manifest names that, sealed objects carry a tag), and hashing each body once more
        // cost both cowd and the store a CPU-second per 600 MB on the benchmark.
        .with_unsigned_payload(true)
        // As a key, not `with_client_options`, which would replace the client options the
        // environment and `with_allow_http` set.
        .with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::Timeout),
            format!(
                "{}ms",
                o.request_timeout
                    .unwrap_or(DEFAULT_REQUEST_TIMEOUT)
                    .as_millis()
            ),
        )
        .with_retry(RetryConfig {
            // The time bounds retrying, not the count: a refused connection fails at once, and
            // 20 retries of it were over in 4 s of a 3-minute retry time. 1000 backoffs take
            // hours.
            max_retries: 1000,
            retry_timeout: o.retry_timeout.unwrap_or(DEFAULT_RETRY_TIMEOUT),
            ..RetryConfig::default()
        })
        .build()
}

/// Access key, secret and session token of the shared credentials file's profile.
fn credentials_file() -> Option<(String, String, Option<String>)> {
    let path = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")))?;
    let text = std::fs::read_to_string(path).ok()?;
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    parse_credentials(&text, &profile)
}

/// The INI format of `~/.aws/credentials`: `[profile]` sections of `key = value` lines.
fn parse_credentials(text: &str, profile: &str) -> Option<(String, String, Option<String>)> {
    let mut section = String::new();
    let mut values = HashMap::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_owned();
        } else if section == profile
            && let Some((k, v)) = line.split_once('=')
        {
            values.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    Some((
        values.remove("aws_access_key_id")?,
        values.remove("aws_secret_access_key")?,
        values.remove("aws_session_token"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_paths() {
        assert!(is_remote(Path::new("s3://b/p")));
        assert!(!is_remote(Path::new("/var/s3://b")));
        assert!(!is_remote(Path::new("s3:/b")));
        assert!(remote(Path::new("s3:///p")).is_err());
    }

    #[test]
    fn credentials_file_profiles() {
        let text = "# comment\n[default]\naws_access_key_id = A\naws_secret_access_key=S\n\n\
                    [other]\naws_access_key_id=B\naws_secret_access_key = T\naws_session_token = X\n";
        assert_eq!(
            parse_credentials(text, "default"),
            Some(("A".into(), "S".into(), None))
        );
        assert_eq!(
            parse_credentials(text, "other"),
            Some(("B".into(), "T".into(), Some("X".into())))
        );
        assert_eq!(parse_credentials(text, "none"), None);
        assert_eq!(
            parse_credentials("[default]\naws_access_key_id=A\n", "default"),
            None
        );
    }
}
