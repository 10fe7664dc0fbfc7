//! `cowctl wait`: follows a backup until it ends, then prints its summary; exit 0 only for a
//! backup that ended done.

use std::io::Write;
use std::time::Instant;

use cowd_api::backups::BackupState;

use super::Outcome;
use crate::client::Client;
use crate::output::{pretty_json, printable};
use crate::progress::{self, Display};
use crate::report;

#[derive(Debug, Clone, clap::Args)]
pub struct WaitArgs {
    /// The backup's id (see `cowctl status`).
    pub id: String,
    /// Give up after this long, e.g. 90 or 5m (exit 1; the backup goes on).
    #[arg(long, value_name = "DURATION", value_parser = super::secs)]
    pub timeout: Option<f64>,
}

pub async fn run(
    client: &Client,
    args: &WaitArgs,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    follow_to_end(client, &args.id, args.timeout, json, out).await
}

/// Follows backup `id` (for at most `timeout_s`), prints how it ended, and says whether it
/// ended done.
pub async fn follow_to_end(
    client: &Client,
    id: &str,
    timeout_s: Option<f64>,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let deadline = timeout_s.map(|t| Instant::now() + super::duration(t));
    let display = Display::for_stdout(json);
    let f = progress::follow(client, id, deadline, display, out).await?;
    let s = &f.status;
    let text = if json {
        pretty_json(&f.body)
    } else if f.ended {
        report::summary(s)
    } else if display == Display::Bar {
        // The bar is gone; leave the last figures on screen.
        report::progress_line(s)
    } else {
        String::new()
    };
    // The exit code tells how the backup ended even when the reader of stdout went away.
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    let id = printable(id);
    Ok(match (f.ended, s.state) {
        (true, BackupState::Done) => Outcome::Success,
        (false, _) => Outcome::Failed(format!(
            "backup {id} is still running after {} (--timeout); it goes on",
            report::duration(timeout_s.unwrap_or_default())
        )),
        (true, state) => Outcome::Failed(format!(
            "backup {id} {}: {}",
            report::state_name(state),
            printable(s.reason.as_deref().unwrap_or("no reason given"))
        )),
    })
}
