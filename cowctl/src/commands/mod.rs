//! The subcommands of `cowctl` about backups, one module each group, and what they share:
//! the outcome of a command, `/dev/nbdN` resolution, and the parsers of command-line values.
//!
//! Every command is one or a few requests; what a backup does is decided by the daemon.

pub mod copies;
pub mod devices;
pub mod diff;
pub mod files;
pub mod image;
pub mod keys;
pub mod mount;
pub mod repo;
pub mod restore;
pub mod sessions;
pub mod start;
pub mod wait;

use std::path::Path;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use cowd_api::backups::{BackupMode, BlockChoice, OnOverflow};
use cowd_api::exports::Resolved;

use crate::client::{self, Client};

/// How a command that reached the daemon ended (errors of the requests themselves are
/// `client::Error`s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0.
    Success,
    /// Exit 1 with this message on stderr (e.g. the followed backup failed).
    Failed(String),
    /// Exit 2 with this message on stderr: a usage error found before anything was sent.
    Usage(String),
}

/// The export named by `arg`: `arg` itself, or for `/dev/...` the export the daemon finds
/// attached to that kernel NBD device (`GET /v1/resolve`).
pub async fn export_name(client: &Client, arg: &str) -> Result<String, client::Error> {
    if !arg.starts_with("/dev/") {
        return Ok(arg.to_owned());
    }
    let path = format!("/v1/resolve?device={}", client::encode(arg));
    Ok(client.get::<Resolved>(&path).await?.value.export)
}

/// `path` as an absolute path in UTF-8: the daemon runs in another directory.
pub fn absolute(what: &str, path: &Path) -> anyhow::Result<String> {
    // Not an io::Error: main reports those as output errors.
    let abs = std::path::absolute(path)
        .map_err(|e| anyhow::anyhow!("{what} {}: cannot make it absolute: {e}", path.display()))?;
    abs.into_os_string()
        .into_string()
        .map_err(|p| anyhow::anyhow!("{what} {}: not valid UTF-8", p.to_string_lossy()))
}

/// A repository as the daemon opens it: `s3://BUCKET/PREFIX` as given, a directory made
/// [`absolute`].
pub fn repository(what: &str, path: &Path) -> anyhow::Result<String> {
    match path.to_str() {
        Some(s) if s.starts_with("s3://") => Ok(s.to_owned()),
        _ => absolute(what, path),
    }
}

/// `--repo DIR` as the request's `repo`: absolute, or `None` for the daemon's default.
pub fn repo_arg(repo: Option<&Path>) -> anyhow::Result<Option<String>> {
    repo.map(|p| repository("--repo", p)).transpose()
}

/// `/v1/exports/{name}` + `tail`, the name percent-encoded.
pub fn export_path(name: &str, tail: &str) -> String {
    format!("/v1/exports/{}{tail}", client::encode(name))
}

/// A size in bytes: `65536`, `64K`, `1.5G`, `4MiB`.
pub fn size(s: &str) -> Result<u64, String> {
    cowd_api::units::parse_size(s)
}

/// A size that fits 32 bits (block sizes).
pub fn size32(s: &str) -> Result<u32, String> {
    let n = size(s)?;
    u32::try_from(n).map_err(|_| format!("{s}: too large (at most 4G)"))
}

/// A percentage, `75` or `75%`, as a fraction (0.75).
pub fn percent(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let n: f64 = t
        .strip_suffix('%')
        .unwrap_or(t)
        .trim_end()
        .parse()
        .map_err(|_| format!("{s}: not a percentage (e.g. 75 or 75%)"))?;
    if !n.is_finite() {
        return Err(format!("{s}: not a percentage (e.g. 75 or 75%)"));
    }
    // The range is the daemon's to check (it names the value as a percentage, as typed).
    Ok(n / 100.0)
}

/// A duration in seconds: a bare number (fractions allowed) or units (`500ms`, `3s`, `1m 30s`).
pub fn secs(s: &str) -> Result<f64, String> {
    cowd_api::units::parse_duration(s)
}

/// `fail-backup` or `block-writes`.
pub fn on_overflow(s: &str) -> Result<OnOverflow, String> {
    OnOverflow::parse(s).ok_or_else(|| format!("{s}: expected fail-backup or block-writes"))
}

/// `full`, `incremental` or `auto` (the values are listed in `--help`).
pub fn backup_mode() -> impl TypedValueParser<Value = BackupMode> {
    PossibleValuesParser::new(["full", "incremental", "auto"]).map(|s| match s.as_str() {
        "full" => BackupMode::Full,
        "incremental" => BackupMode::Incremental,
        _ => BackupMode::Auto,
    })
}

/// `used` or `all`.
pub fn block_choice() -> impl TypedValueParser<Value = BlockChoice> {
    PossibleValuesParser::new(["used", "all"]).map(|s| match s.as_str() {
        "all" => BlockChoice::All,
        _ => BlockChoice::Used,
    })
}

/// Seconds as a `Duration`, saturating at about 31 years for absurd values.
pub fn duration(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs).unwrap_or(Duration::from_secs(1 << 30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages() {
        assert_eq!(percent("75"), Ok(0.75));
        assert_eq!(percent("75%"), Ok(0.75));
        assert_eq!(percent(" 12.5 % "), Ok(0.125));
        assert_eq!(percent("100"), Ok(1.0));
        assert!(percent("0.75x").is_err());
        assert!(percent("%").is_err());
        assert!(percent("inf").is_err());
        assert_eq!(percent("200"), Ok(2.0));
    }

    #[test]
    fn sizes_and_seconds() {
        assert_eq!(size("64K"), Ok(64 << 10));
        assert_eq!(size("1G"), Ok(1 << 30));
        assert_eq!(size32("4M"), Ok(4 << 20));
        assert!(size32("4G").is_err());
        assert!(size("1X").is_err());
        assert_eq!(secs("2.5"), Ok(2.5));
        assert_eq!(secs("3s"), Ok(3.0));
        assert_eq!(secs("500ms"), Ok(0.5));
        assert_eq!(secs("1m 30s"), Ok(90.0));
        assert!(secs("3 parsecs").is_err());
        assert!(secs("-1").is_err());
        assert!(secs("NaN").is_err());
        assert_eq!(duration(1.5), Duration::from_millis(1500));
        assert_eq!(duration(1e300), Duration::from_secs(1 << 30));
        assert_eq!(on_overflow("block-writes"), Ok(OnOverflow::BlockWrites));
        assert!(on_overflow("x").is_err());
    }

    #[test]
    fn export_paths_are_encoded() {
        assert_eq!(export_path("disk", "/cancel"), "/v1/exports/disk/cancel");
        assert_eq!(
            export_path("a/b c", "/backups"),
            "/v1/exports/a%2Fb%20c/backups"
        );
    }
}
