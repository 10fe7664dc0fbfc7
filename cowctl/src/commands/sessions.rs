//! `cowctl status`, `cowctl cancel` and `cowctl prioritize`: one request each about the
//! backups of the daemon.

use std::io::Write;
use std::time::Duration;

use cowd_api::backups::{BackupStatus, Prioritize};
use cowd_api::restores::{RestoreState, RestoreStatus};

use super::{Outcome, export_name, export_path};
use crate::client::{self, Client, Reply};
use crate::output::pretty_json;
use crate::report;

/// The daemon waits up to 10 s for a cancelled backup to clean up before it answers.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// Only the backups of this export (or of the export attached to /dev/nbdN).
    #[arg(value_name = "EXPORT|/dev/nbdN")]
    pub export: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct CancelArgs {
    /// The export whose running backup to cancel, or its /dev/nbdN.
    #[arg(value_name = "EXPORT|/dev/nbdN")]
    pub export: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PrioritizeArgs {
    /// The export whose running backup to steer, or its /dev/nbdN.
    #[arg(value_name = "EXPORT|/dev/nbdN")]
    pub export: String,
    /// Start of the byte range to copy next (e.g. 0, 4096, 1G).
    #[arg(value_name = "OFFSET", value_parser = super::size)]
    pub offset: u64,
    /// Length of the range in bytes (e.g. 64K, 1G).
    #[arg(value_name = "LENGTH", value_parser = super::size)]
    pub length: u64,
}

pub(crate) fn print<T>(
    out: &mut dyn Write,
    json: bool,
    reply: &Reply<T>,
    human: impl FnOnce(&T) -> String,
) -> anyhow::Result<Outcome> {
    let text = if json {
        pretty_json(&reply.body)
    } else {
        human(&reply.value)
    };
    out.write_all(text.as_bytes())?;
    Ok(Outcome::Success)
}

pub async fn status(
    client: &Client,
    args: &StatusArgs,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let export = match &args.export {
        Some(e) => Some(export_name(client, e).await?),
        None => None,
    };
    let path = match &export {
        Some(e) => format!("/v1/backups?export={}", client::encode(e)),
        None => "/v1/backups".to_owned(),
    };
    let reply: Reply<Vec<BackupStatus>> = client.get(&path).await?;
    if json {
        return print(out, json, &reply, |_| String::new());
    }
    // Live restores in progress are part of the state of their exports.
    let restores: Reply<Vec<RestoreStatus>> = client.get("/v1/restores").await?;
    let live: Vec<_> = restores
        .value
        .iter()
        .filter(|r| r.live && r.state == RestoreState::Running)
        .filter(|r| export.is_none() || r.export == export)
        .collect();
    print(out, json, &reply, |v| {
        let mut text = report::status_table(v, export.as_deref());
        for r in live {
            text.push_str(&crate::repo_report::live_line(r));
        }
        text
    })
}

pub async fn cancel(
    client: &Client,
    args: &CancelArgs,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let export = export_name(client, &args.export).await?;
    let reply: Reply<BackupStatus> = client
        .clone()
        .with_timeout(CANCEL_TIMEOUT)
        .post(&export_path(&export, "/cancel"), &serde_json::json!({}))
        .await?;
    print(out, json, &reply, report::status_line)
}

pub async fn prioritize(
    client: &Client,
    args: &PrioritizeArgs,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let export = export_name(client, &args.export).await?;
    let body = Prioritize {
        offset: args.offset,
        length: args.length,
    };
    // A live restore serving the export is steered the same way.
    if let Some(live) = super::restore::live_on(client, &export).await? {
        let path = format!("/v1/restores/{}/prioritize", client::encode(&live.id));
        let reply: Reply<RestoreStatus> = client.post(&path, &body).await?;
        return print(out, json, &reply, |_| "prioritized\n".to_owned());
    }
    let reply: Reply<BackupStatus> = client
        .post(&export_path(&export, "/prioritize"), &body)
        .await?;
    print(out, json, &reply, |_| "prioritized\n".to_owned())
}
