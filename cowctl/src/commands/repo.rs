//! The repository commands: `repo init`, `repo sync`, `repo repair` (`repo unlock`, `lock` and
//! `key` are `keys.rs`'s), `backups`, `verify`,
//! `prune`, `serve` and `unserve`, one request each (`/v1/repo/...`, `/v1/exports/{name}/unserve`).
//!
//! Paths go to the daemon absolute; a command without `--repo` uses the daemon's default
//! repository (`cowd serve --repo DIR`).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use cowd_api::exports::ExportInfo;
use cowd_api::repo::{
    KeepPolicy, KeepWithin, Listed, PruneRequest, PruneResult, RepairReport, RepairRequest,
    RepoInfo, RepoInit, ServeRequest, SyncReport, SyncRequest, VerifyReport, VerifyRequest,
};

use super::sessions::print;
use super::{Outcome, export_path, keys, repo_arg, repository};
use crate::client::{self, Client, Reply};
use crate::output::pretty_json;
use crate::repo_report;

/// Verify and prune read every chunk or index of the repository before they answer.
pub const LONG_TIMEOUT: Duration = Duration::from_secs(3600);

/// Listing manifests and opening a backup's index take a moment on a large repository.
pub const READ_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, clap::Subcommand)]
pub enum RepoCommand {
    /// Create a repository in an empty or new directory.
    Init(InitArgs),
    /// Copy the backups DST lacks from SRC, moving only the chunks DST does not hold.
    ///
    /// Oldest first, each backup whole or not at all; an interrupted sync leaves the chunks
    /// it copied in DST, and the next one does not move them again.
    Sync(SyncArgs),
    /// Verify a repository, then take each damaged or missing chunk and each damaged index
    /// again from the repositories given with --from (copies made by `repo sync`).
    ///
    /// A chunk is only replaced by data with its name, an index only by one with the checksum
    /// its manifest holds. The backups that stay damaged are named (exit status 1), and
    /// removed with --remove-broken.
    #[command(after_help = REPAIR_STATUS)]
    Repair(RepairArgs),
    /// Show a repository's format, chunk naming, encryption and whether it is unlocked.
    Info(keys::RepoOnly),
    /// Give the daemon the key of an encrypted repository (a passphrase or a key file); it
    /// holds it in memory until it stops or `repo lock`.
    Unlock(keys::UnlockArgs),
    /// Make the daemon forget an encrypted repository's key.
    Lock(keys::RepoOnly),
    /// The key slots of an encrypted repository.
    #[command(subcommand)]
    Key(keys::KeyCommand),
}

const REPAIR_STATUS: &str = "\
Exit status:
  0  nothing is damaged any more (repaired, or removed with --remove-broken)
  1  backups stay damaged, or the daemon refused
  2  cannot reach the daemon, or bad usage";

#[derive(Debug, Clone, clap::Args)]
pub struct RepairArgs {
    /// The repository to repair [default: the daemon's].
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
    /// A repository holding copies of the same backups (several: tried in order).
    #[arg(long, value_name = "DIR")]
    pub from: Vec<PathBuf>,
    /// Remove the backups that stay damaged (their intact chunks go at the next gc).
    #[arg(long)]
    pub remove_broken: bool,
    /// Only say what would be repaired.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct InitArgs {
    /// The directory (created if missing; must be empty).
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Chunk size: a power of two from 64K to 4M [daemon default: 4M].
    #[arg(long, value_name = "SIZE", value_parser = super::size32)]
    pub chunk_size: Option<u32>,
    /// zstd level of the stored chunks, -7 (fastest) to 19 [daemon default: 1].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub compression_level: Option<i32>,
    /// Encrypt chunks, indexes and manifests (AES-256-GCM; chunk names keyed): the first key
    /// slot opens with a passphrase (--passphrase-file, $COWD_PASSPHRASE, or asked twice) or
    /// with --key-file.
    #[arg(long)]
    pub encrypt: bool,
    /// Read the passphrase from the first line of FILE.
    #[arg(
        long,
        value_name = "FILE",
        requires = "encrypt",
        conflicts_with = "key_file"
    )]
    pub passphrase_file: Option<PathBuf>,
    /// A key file instead of a passphrase (on the daemon's host): created (32 random bytes,
    /// mode 0600) when missing. Keep a copy away from the repository.
    #[arg(long, value_name = "FILE", requires = "encrypt")]
    pub key_file: Option<PathBuf>,
    /// Label of the first key slot [default: initial].
    #[arg(long, value_name = "TEXT", requires = "encrypt")]
    pub key_label: Option<String>,
    /// Format 2 (BLAKE3 chunk names, the default) or 1 (SHA-256: for an older cowd to read).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=2))]
    pub format: Option<u32>,
    /// Use the master key of this encrypted repository (unlocked in the daemon): the two name
    /// chunks alike, so `repo sync` between them reads only the chunks DST lacks.
    #[arg(long, value_name = "DIR", requires = "encrypt")]
    pub key_from: Option<PathBuf>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct BackupsArgs {
    /// Only the backups of this export.
    #[arg(value_name = "EXPORT")]
    pub export: Option<String>,
    /// The repository [default: the daemon's].
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// The backups to verify [default: all].
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,
    /// Verify every backup of the repository (the default without ID).
    #[arg(long, conflicts_with = "ids")]
    pub all: bool,
    /// The repository [default: the daemon's].
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
    /// Verify a raw image backup (`start-backup --to PATH`) against the checksum cowd wrote
    /// beside it (PATH.sha256), here, without the daemon.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["ids", "all", "repo"])]
    pub image: Option<PathBuf>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PruneArgs {
    /// The export whose backups to prune.
    #[arg(value_name = "EXPORT")]
    pub export: String,
    #[command(flatten)]
    pub keep: KeepArgs,
    /// Only say what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    /// The repository [default: the daemon's].
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
}

/// A retention policy's rules, as `prune` and `repo sync` take them.
#[derive(Debug, Clone, clap::Args)]
pub struct KeepArgs {
    /// Keep the N newest backups.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest backup of each of the N most recent hours with backups.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest backup of each of the N most recent days with backups (UTC).
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest backup of each of the N most recent ISO weeks with backups.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest backup of each of the N most recent months with backups.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest backup of each of the N most recent years with backups.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep every backup made within SPAN before the newest one (`1y6m`, `30d`, `12h`: y
    /// years, m months, d days, h hours, as restic counts).
    #[arg(long, value_name = "SPAN")]
    pub keep_within: Option<KeepWithin>,
}

/// Why `prune` without a rule is refused before anything is sent.
pub const NO_KEEP_RULE: &str = "give at least one of --keep-last, --keep-hourly, --keep-daily, \
     --keep-weekly, --keep-monthly, --keep-yearly, --keep-within: a prune without a keep rule \
     would keep every backup";

impl KeepArgs {
    /// The retention policy, or `None` when no rule is given.
    pub fn policy(&self) -> Option<KeepPolicy> {
        let p = KeepPolicy {
            last: self.keep_last,
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            yearly: self.keep_yearly,
            within: self.keep_within,
        };
        (p != KeepPolicy::default()).then_some(p)
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct SyncArgs {
    /// The repository to copy from.
    #[arg(value_name = "SRC")]
    pub src: PathBuf,
    /// The repository to copy to (see `repo init`; the same chunk size as SRC).
    #[arg(value_name = "DST")]
    pub dst: PathBuf,
    /// Only the backups of this export.
    #[arg(long, value_name = "EXPORT")]
    pub export: Option<String>,
    /// Only the backups these rules keep (as `prune` would; needs --export).
    #[command(flatten)]
    pub keep: KeepArgs,
    /// Only say what would be copied.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// The backup to serve (see `cowctl backups`).
    #[arg(value_name = "ID")]
    pub id: String,
    /// The name of the new read-only export.
    #[arg(long, value_name = "NAME")]
    pub export: String,
    /// The repository [default: the daemon's].
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct UnserveArgs {
    /// The export that serves a backup (made by `cowctl serve`).
    #[arg(value_name = "NAME")]
    pub export: String,
}

pub async fn repo(
    client: &Client,
    cmd: &RepoCommand,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    match cmd {
        RepoCommand::Init(a) => init(client, a, json, out).await,
        RepoCommand::Sync(a) => sync(client, a, json, out).await,
        RepoCommand::Repair(a) => repair(client, a, json, out).await,
        RepoCommand::Info(a) => info(client, a, json, out).await,
        RepoCommand::Unlock(a) => keys::unlock(client, a, json, out).await,
        RepoCommand::Lock(a) => keys::lock(client, a, json, out).await,
        RepoCommand::Key(c) => keys::key(client, c, json, out).await,
    }
}

pub async fn repair(
    client: &Client,
    a: &RepairArgs,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let body = RepairRequest {
        repo: repo_arg(a.repo.as_deref())?,
        from: (a.from.iter())
            .map(|p| repository("repository", p))
            .collect::<Result<_, _>>()?,
        remove_broken: a.remove_broken,
        dry_run: a.dry_run,
    };
    let reply: Reply<RepairReport> = client
        .clone()
        .with_timeout(LONG_TIMEOUT)
        .post("/v1/repo/repair", &body)
        .await?;
    let text = if json {
        pretty_json(&reply.body)
    } else {
        repo_report::repair_text(&reply.value, a.dry_run)
    };
    out.write_all(text.as_bytes())?;
    let r = &reply.value;
    let left = (r.broken.iter())
        .filter(|(id, _)| !r.removed.contains(id))
        .count();
    Ok(if left == 0 || a.dry_run {
        Outcome::Success
    } else {
        Outcome::Failed(format!("{left} damaged backup(s) remain"))
    })
}

pub async fn sync(
    client: &Client,
    a: &SyncArgs,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let keep = a.keep.policy();
    if keep.is_some() && a.export.is_none() {
        let why =
            "the --keep-* rules of a sync need --export: a policy counts one export's backups";
        return Ok(Outcome::Usage(why.to_owned()));
    }
    let body = SyncRequest {
        src: Some(repository("source repository", &a.src)?),
        dst: repository("destination repository", &a.dst)?,
        export: a.export.clone(),
        keep,
        dry_run: a.dry_run,
    };
    let reply: Reply<SyncReport> = client
        .clone()
        .with_timeout(LONG_TIMEOUT)
        .post("/v1/repo/sync", &body)
        .await?;
    print(out, json, &reply, |r| repo_report::sync_text(r, a.dry_run))
}

pub async fn init(
    client: &Client,
    a: &InitArgs,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let encrypt = if a.encrypt {
        let prompt = format!("New passphrase of {}", a.dir.display());
        Some(keys::secret(
            a.key_file.as_deref(),
            a.passphrase_file.as_deref(),
            keys::PASSPHRASE_ENV,
            &prompt,
            true,
        )?)
    } else {
        None
    };
    let body = RepoInit {
        path: repository("repository", &a.dir)?,
        chunk_size: a.chunk_size,
        compression_level: a.compression_level,
        encrypt,
        key_label: a.key_label.clone(),
        format: a.format,
        key_from: a
            .key_from
            .as_deref()
            .map(|p| repository("--key-from", p))
            .transpose()?,
    };
    let reply: Reply<RepoInfo> = client
        .clone()
        .with_timeout(READ_TIMEOUT)
        .post("/v1/repo/init", &body)
        .await?;
    print(out, json, &reply, repo_report::repo_created)
}

pub async fn info(
    client: &Client,
    a: &keys::RepoOnly,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let path = match repo_arg(a.repo.as_deref())? {
        Some(r) => format!("/v1/repo/info?repo={}", client::encode(&r)),
        None => "/v1/repo/info".to_owned(),
    };
    let reply: Reply<RepoInfo> = client.get(&path).await?;
    print(out, json, &reply, repo_report::repo_info)
}

/// `/v1/repo/backups` with the query of `repo` and `export`.
pub fn backups_path(repo: Option<&str>, export: Option<&str>) -> String {
    let query: Vec<String> = [("repo", repo), ("export", export)]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", client::encode(v))))
        .collect();
    if query.is_empty() {
        "/v1/repo/backups".to_owned()
    } else {
        format!("/v1/repo/backups?{}", query.join("&"))
    }
}

pub async fn backups(
    client: &Client,
    a: &BackupsArgs,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let repo = repo_arg(a.repo.as_deref())?;
    let path = backups_path(repo.as_deref(), a.export.as_deref());
    let reply: Reply<Vec<Listed>> = client.clone().with_timeout(READ_TIMEOUT).get(&path).await?;
    print(out, json, &reply, |v| {
        repo_report::listing(v, a.export.as_deref())
    })
}

pub async fn verify(
    client: &Client,
    a: &VerifyArgs,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    if let Some(image) = &a.image {
        let (text, outcome) = super::image::verify(image);
        out.write_all(text.as_bytes())?;
        return Ok(outcome);
    }
    let body = VerifyRequest {
        repo: repo_arg(a.repo.as_deref())?,
        ids: (!a.ids.is_empty()).then(|| a.ids.clone()),
    };
    let reply: Reply<VerifyReport> = client
        .clone()
        .with_timeout(LONG_TIMEOUT)
        .post("/v1/repo/verify", &body)
        .await?;
    let text = if json {
        pretty_json(&reply.body)
    } else {
        repo_report::verify_text(&reply.value)
    };
    out.write_all(text.as_bytes())?;
    Ok(match repo_report::verify_failure(&reply.value) {
        Some(why) => Outcome::Failed(why),
        None => Outcome::Success,
    })
}

pub async fn prune(
    client: &Client,
    a: &PruneArgs,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let Some(keep) = a.keep.policy() else {
        return Ok(Outcome::Usage(NO_KEEP_RULE.to_owned()));
    };
    let body = PruneRequest {
        repo: repo_arg(a.repo.as_deref())?,
        export: a.export.clone(),
        keep,
        dry_run: a.dry_run,
    };
    let reply: Reply<PruneResult> = client
        .clone()
        .with_timeout(LONG_TIMEOUT)
        .post("/v1/repo/prune", &body)
        .await?;
    print(out, json, &reply, |r| repo_report::prune_text(r, a.dry_run))
}

pub async fn serve(
    client: &Client,
    a: &ServeArgs,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let body = ServeRequest {
        repo: repo_arg(a.repo.as_deref())?,
        backup: a.id.clone(),
        export: a.export.clone(),
    };
    let reply: Reply<ExportInfo> = client
        .clone()
        .with_timeout(READ_TIMEOUT)
        .post("/v1/repo/serve", &body)
        .await?;
    print(out, json, &reply, repo_report::served)
}

pub async fn unserve(
    client: &Client,
    a: &UnserveArgs,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let reply: Reply<ExportInfo> = client
        .post(&export_path(&a.export, "/unserve"), &serde_json::json!({}))
        .await?;
    print(out, json, &reply, repo_report::unserved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backups_queries_are_encoded() {
        assert_eq!(backups_path(None, None), "/v1/repo/backups");
        assert_eq!(
            backups_path(Some("/r 1"), None),
            "/v1/repo/backups?repo=%2Fr%201"
        );
        assert_eq!(
            backups_path(Some("/r"), Some("a&b")),
            "/v1/repo/backups?repo=%2Fr&export=a%26b"
        );
        assert_eq!(
            backups_path(None, Some("disk")),
            "/v1/repo/backups?export=disk"
        );
    }
}
