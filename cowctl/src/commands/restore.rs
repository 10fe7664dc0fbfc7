//! `cowctl restore` (`POST /v1/restores`, then following `GET /v1/restores/{id}?timeout_s=N`
//! to the end) and `cowctl restores` (`GET /v1/restores`).

use std::io::Write;
use std::path::PathBuf;

use cowd_api::restores::{RestoreRequest, RestoreState, RestoreStatus};

use super::repo::READ_TIMEOUT;
use super::sessions::print;
use super::{Outcome, absolute, repo_arg};
use crate::client::{self, Client, Reply};
use crate::output::{pretty_json, printable};
use crate::progress::{self, Display};
use crate::repo_report;

#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// The backup to restore (see `cowctl backups`).
    #[arg(value_name = "ID")]
    pub id: String,
    /// Where to write it: a new raw image file (sparse), or an existing file or block device
    /// at least as large as the backup (overwritten). With --live into an existing export:
    /// omitted (the export's own device).
    #[arg(long, value_name = "PATH", required_unless_present = "live")]
    pub to: Option<PathBuf>,
    /// The repository [default: the daemon's].
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
    /// Return once the restore has started (follow it with `cowctl restores`).
    #[arg(long)]
    pub no_wait: bool,
    /// Serve the destination at once, read-write, as --export NAME while it is restored:
    /// blocks not yet restored are fetched when read; the rest is restored behind. Returns as
    /// soon as the export is served. An existing export (with no client connected) is rolled
    /// back to the backup.
    #[arg(long, requires = "export")]
    pub live: bool,
    /// The export a live restore serves.
    #[arg(long, value_name = "NAME", requires = "live")]
    pub export: Option<String>,
    /// Limit of a live restore's background filler, in MiB/s.
    #[arg(long, value_name = "MIB_S", requires = "live")]
    pub max_rate: Option<f64>,
    /// Restore only these files or directories of the backup's filesystem (repeatable), into
    /// the directory --to (new or empty), with their metadata, holes and links.
    #[arg(
        long = "path",
        value_name = "PATH",
        conflicts_with = "live",
        requires = "to"
    )]
    pub paths: Vec<String>,
    /// With --path: the partition holding the filesystem [default: the first cowd reads].
    #[arg(long, value_name = "N", requires = "paths")]
    pub partition: Option<u32>,
}

pub async fn restore(
    client: &Client,
    a: &RestoreArgs,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    if !a.paths.is_empty() {
        let source = super::files::Source {
            repo: a.repo.clone(),
            partition: a.partition,
        };
        let to = a.to.clone().unwrap_or_default();
        return super::files::extract(client, &a.id, &a.paths, &to, &source, json, out).await;
    }
    let to = match &a.to {
        Some(p) => absolute("--to", p)?,
        None => String::new(),
    };
    let body = RestoreRequest {
        repo: repo_arg(a.repo.as_deref())?,
        backup: a.id.clone(),
        to,
        live: a.live,
        export: a.export.clone(),
        max_rate_mib_s: a.max_rate,
    };
    let started: Reply<RestoreStatus> = client
        .clone()
        .with_timeout(READ_TIMEOUT)
        .post("/v1/restores", &body)
        .await?;
    if json {
        out.write_all(pretty_json(&started.body).as_bytes())?;
    } else {
        out.write_all(repo_report::restore_started(&started.value).as_bytes())?;
    }
    out.flush()?;
    if a.no_wait || a.live {
        return Ok(Outcome::Success);
    }
    let id = started.value.id.clone();
    let path = format!("/v1/restores/{}", client::encode(&id));
    let display = Display::for_stdout(json);
    let f = progress::follow_path::<RestoreStatus>(
        client,
        &path,
        |step| format!("{path}?timeout_s={step:.3}"),
        None,
        display,
        out,
    )
    .await?;
    let s = &f.status;
    let text = if json {
        pretty_json(&f.body)
    } else {
        repo_report::restore_summary(s)
    };
    // The exit code tells how the restore ended even when the reader of stdout went away.
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    Ok(match s.state {
        RestoreState::Done => Outcome::Success,
        state => Outcome::Failed(format!(
            "restore {} {}: {}",
            printable(&id),
            repo_report::restore_state(state),
            printable(s.reason.as_deref().unwrap_or("no reason given"))
        )),
    })
}

/// The running live restore serving `export`, if any.
pub async fn live_on(client: &Client, export: &str) -> anyhow::Result<Option<RestoreStatus>> {
    let reply: Reply<Vec<RestoreStatus>> = client.get("/v1/restores").await?;
    Ok(reply.value.into_iter().find(|s| {
        s.live && s.state == RestoreState::Running && s.export.as_deref() == Some(export)
    }))
}

pub async fn restores(client: &Client, json: bool, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let reply: Reply<Vec<RestoreStatus>> = client.get("/v1/restores").await?;
    print(out, json, &reply, |v| repo_report::restores_table(v))
}
