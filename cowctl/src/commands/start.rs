//! `cowctl start-backup`: `POST /v1/exports/{name}/backups`, then optionally follows the backup
//! to its end like `cowctl wait`. The backup goes to a raw image (`--to PATH`), to a copy target
//! through the data movers (`--to copy-target:NAME`), to a repository (`--repo`), or, with
//! neither, to the daemon's default repository.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use cowd_api::backups::{BackupMode, BackupStarted, BlockChoice, OnOverflow, StartBackup};

use super::{Outcome, absolute, export_name, export_path};
use crate::client::Client;
use crate::output::pretty_json;
use crate::report;

/// How `--to` names a copy target instead of a path.
const COPY_TARGET: &str = "copy-target:";

/// The daemon's default quiet timeout, for the client timeout of a start that gives none.
const DEFAULT_QUIET_TIMEOUT_S: f64 = 80.0;

/// How much longer than the quiet timeout the client waits for the snapshot point: opening
/// the target, creating the container, draining writes in flight, thawing.
const START_MARGIN_S: f64 = 30.0;

#[derive(Debug, Clone, clap::Args)]
pub struct StartArgs {
    /// The export, or the kernel NBD device (/dev/nbdN) attached to it.
    #[arg(value_name = "EXPORT|/dev/nbdN")]
    pub export: String,
    /// Write the backup to a raw image: a new file (sparse), or an existing file or block
    /// device at least as large as the export; or `copy-target:NAME`: the daemon's data movers
    /// copy it to that copy target of cowd.toml, through its paths with failover. Without --to
    /// or --repo the backup goes to the daemon's default repository (cowd serve --repo).
    #[arg(long, value_name = "PATH|copy-target:NAME")]
    pub to: Option<PathBuf>,
    /// Write the backup into this repository (see `cowctl repo init`).
    #[arg(long, value_name = "DIR", conflicts_with = "to")]
    pub repo: Option<PathBuf>,
    /// Repository backups: full, incremental (refused when the change map does not allow
    /// it), or auto (incremental when possible) [daemon default: auto].
    #[arg(long, value_name = "MODE", value_parser = super::backup_mode(), conflicts_with = "to")]
    pub mode: Option<BackupMode>,
    /// Repository backups: read only the blocks the filesystem uses (when it recognizes one),
    /// or all blocks [daemon default: used].
    #[arg(long, value_name = "BLOCKS", value_parser = super::block_choice(), conflicts_with = "to")]
    pub blocks: Option<BlockChoice>,
    /// Follow the backup to its end (like `cowctl wait`); exit 1 unless it ends done.
    #[arg(long)]
    pub wait: bool,
    /// Copy-before-write block size: a power of two from 4K to 4M [daemon default: 64K].
    #[arg(long, value_name = "SIZE", value_parser = super::size32)]
    pub block_size: Option<u32>,
    /// Container for old blocks: a file (created), a partition or a device
    /// [daemon default: a file in its container directory].
    #[arg(long, value_name = "PATH")]
    pub container: Option<PathBuf>,
    /// Container capacity, e.g. 4G [daemon default: 1G].
    #[arg(long, value_name = "SIZE", value_parser = super::size)]
    pub container_size: Option<u64>,
    /// Time without writes to wait for before the snapshot point: seconds or units (3, 3s,
    /// 500ms) [daemon default: 3s].
    #[arg(long, value_name = "DURATION", value_parser = super::secs)]
    pub quiet_period: Option<f64>,
    /// Time to wait for the quiet period before giving up [daemon default: 80s].
    #[arg(long, value_name = "DURATION", value_parser = super::secs)]
    pub quiet_timeout: Option<f64>,
    /// Freeze this mounted filesystem (FIFREEZE) around the snapshot point instead of waiting
    /// for a quiet period.
    #[arg(long, value_name = "MOUNTPOINT", conflicts_with_all = ["no_quiesce", "quiet_period", "quiet_timeout"])]
    pub freeze: Option<PathBuf>,
    /// Take the snapshot point at once: neither wait for a quiet period nor freeze.
    #[arg(long, conflicts_with_all = ["quiet_period", "quiet_timeout"])]
    pub no_quiesce: bool,
    /// Container fill, in percent, above which writes that need a copy are slowed down
    /// (e.g. 75 or 75%) [daemon default: 75].
    #[arg(long, value_name = "PCT", value_parser = super::percent)]
    pub high_watermark: Option<f64>,
    /// Container fill, in percent, above which the mover empties the container first
    /// [daemon default: 10].
    #[arg(long, value_name = "PCT", value_parser = super::percent)]
    pub low_watermark: Option<f64>,
    /// Time a write may wait for container space before --on-overflow decides
    /// [daemon default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = super::secs)]
    pub cbw_timeout: Option<f64>,
    /// When the container stays full: fail-backup (writes go on) or block-writes (the backup
    /// goes on) [daemon default: fail-backup].
    #[arg(long, value_name = "POLICY", value_parser = super::on_overflow)]
    pub on_overflow: Option<OnOverflow>,
    /// Pending neighbours of a block copied before a write that the mover takes next
    /// [daemon default: 0].
    #[arg(long, value_name = "N")]
    pub neighbours: Option<u32>,
    /// Limit the backup's I/O to this many MiB/s [daemon default: no limit].
    #[arg(long, value_name = "MIB_S")]
    pub max_rate: Option<f64>,
}

impl StartArgs {
    /// The request body.
    pub fn request(&self) -> anyhow::Result<StartBackup> {
        Ok(StartBackup {
            to: match &self.to {
                Some(p) if p.to_str().is_some_and(|s| s.starts_with(COPY_TARGET)) => {
                    p.display().to_string()
                }
                Some(p) => absolute("--to", p)?,
                None => String::new(),
            },
            repo: super::repo_arg(self.repo.as_deref())?,
            mode: self.mode,
            blocks: self.blocks,
            block_size: self.block_size,
            container: self
                .container
                .as_deref()
                .map(|p| absolute("--container", p))
                .transpose()?,
            container_size: self.container_size,
            quiet_period_s: self.quiet_period,
            quiet_timeout_s: self.quiet_timeout,
            freeze: self
                .freeze
                .as_deref()
                .map(|p| absolute("--freeze", p))
                .transpose()?,
            no_quiesce: self.no_quiesce,
            high_watermark: self.high_watermark,
            low_watermark: self.low_watermark,
            cbw_timeout_s: self.cbw_timeout,
            on_overflow: self.on_overflow,
            neighbours: self.neighbours,
            max_rate_mib_s: self.max_rate,
            ..StartBackup::default()
        })
    }

    /// How long the start request may take: it returns only once the snapshot point is taken,
    /// which may wait for the whole quiet timeout.
    pub fn client_timeout(&self) -> Duration {
        let quiet = self.quiet_timeout.unwrap_or(DEFAULT_QUIET_TIMEOUT_S);
        super::duration(quiet + START_MARGIN_S)
    }
}

pub async fn run(
    client: &Client,
    args: &StartArgs,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let body = args.request()?;
    let export = export_name(client, &args.export).await?;
    let started = client
        .clone()
        .with_timeout(args.client_timeout())
        .post::<_, BackupStarted>(&export_path(&export, "/backups"), &body)
        .await?;
    if json {
        out.write_all(pretty_json(&started.body).as_bytes())?;
    } else {
        out.write_all(report::started_line(&started.value).as_bytes())?;
    }
    out.flush()?;
    if !args.wait {
        return Ok(Outcome::Success);
    }
    super::wait::follow_to_end(client, &started.value.id, None, json, out).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        a: StartArgs,
    }

    fn parse(args: &[&str]) -> Result<StartArgs, clap::Error> {
        T::try_parse_from(std::iter::once("t").chain(args.iter().copied())).map(|t| t.a)
    }

    #[test]
    fn every_flag_reaches_the_request() {
        let a = parse(&[
            "disk",
            "--to",
            "/b/x.img",
            "--block-size",
            "4K",
            "--container",
            "/c/x.cow",
            "--container-size",
            "1G",
            "--quiet-period",
            "1.5",
            "--quiet-timeout",
            "20",
            "--high-watermark",
            "80%",
            "--low-watermark",
            "5",
            "--cbw-timeout",
            "7",
            "--on-overflow",
            "block-writes",
            "--neighbours",
            "3",
        ])
        .unwrap();
        assert_eq!(a.export, "disk");
        assert!(!a.wait);
        let r = a.request().unwrap();
        assert_eq!(
            r,
            StartBackup {
                to: "/b/x.img".into(),
                block_size: Some(4096),
                container: Some("/c/x.cow".into()),
                container_size: Some(1 << 30),
                quiet_period_s: Some(1.5),
                quiet_timeout_s: Some(20.0),
                freeze: None,
                no_quiesce: false,
                high_watermark: Some(0.8),
                low_watermark: Some(0.05),
                cbw_timeout_s: Some(7.0),
                on_overflow: Some(OnOverflow::BlockWrites),
                neighbours: Some(3),
                ..StartBackup::default()
            }
        );
        assert_eq!(a.client_timeout(), Duration::from_secs(50));
    }

    #[test]
    fn defaults_are_left_to_the_daemon() {
        let a = parse(&["disk", "--to", "rel/b.img", "--no-quiesce", "--wait"]).unwrap();
        assert!(a.wait);
        let r = a.request().unwrap();
        assert_eq!((r.repo.as_deref(), r.mode, r.blocks), (None, None, None));
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(r.to, cwd.join("rel/b.img").to_str().unwrap());
        assert!(r.no_quiesce);
        let json = serde_json::to_value(&r).unwrap();
        for unset in ["block_size", "container", "quiet_timeout_s", "on_overflow"] {
            assert!(json[unset].is_null(), "{unset}: {json}");
        }
        assert_eq!(a.client_timeout(), Duration::from_secs(110));
    }

    #[test]
    fn conflicts_and_bad_values_are_usage_errors() {
        for args in [
            &["disk", "--to", "/x", "--freeze", "/mnt", "--no-quiesce"][..],
            &["disk", "--to", "/x", "--no-quiesce", "--quiet-period", "1"],
            &[
                "disk",
                "--to",
                "/x",
                "--freeze",
                "/mnt",
                "--quiet-timeout",
                "1",
            ],
            &["disk", "--to", "/x", "--repo", "/r"],
            &["disk", "--to", "/x", "--mode", "full"],
            &["disk", "--to", "/x", "--blocks", "all"],
            &["disk", "--repo", "/r", "--mode", "differential"],
            &["disk", "--blocks", "some"],
            &[],
            &["disk", "--to", "/x", "--block-size", "64Q"],
            &["disk", "--to", "/x", "--high-watermark", "lots"],
            &["disk", "--to", "/x", "--on-overflow", "panic"],
            &["disk", "--to", "/x", "--quiet-timeout", "-3"],
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn repository_backups() {
        let a = parse(&[
            "disk",
            "--repo",
            "rel/repo",
            "--mode",
            "incremental",
            "--blocks",
            "all",
        ])
        .unwrap();
        let r = a.request().unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(r.to, "");
        assert_eq!(r.repo.unwrap(), cwd.join("rel/repo").to_str().unwrap());
        assert_eq!(
            (r.mode, r.blocks),
            (Some(BackupMode::Incremental), Some(BlockChoice::All))
        );
        // Neither --to nor --repo: the daemon's default repository, to and repo left empty.
        let r = parse(&["disk", "--mode", "full"])
            .unwrap()
            .request()
            .unwrap();
        assert_eq!((r.to.as_str(), r.repo.as_deref()), ("", None));
        assert_eq!(r.mode, Some(BackupMode::Full));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["mode"], "full");
        assert!(json["blocks"].is_null());
        let r = parse(&["disk", "--mode", "auto", "--blocks", "used"])
            .unwrap()
            .request()
            .unwrap();
        assert_eq!(
            (r.mode, r.blocks),
            (Some(BackupMode::Auto), Some(BlockChoice::Used))
        );
    }
}
