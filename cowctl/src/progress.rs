//! Following a backup or a restore until it ends, showing its progress on the way.
//!
//! The daemon is asked `GET /v1/backups/{id}/wait?timeout_s=STEP` (for a restore,
//! `GET /v1/restores/{id}?timeout_s=STEP`) again and again: each answer comes when the backup
//! or restore ends or after STEP seconds, so the end is seen at once while progress is
//! refreshed every STEP.
//!
//! | display | when                       | STEP                    | shows                           |
//! |---------|----------------------------|-------------------------|---------------------------------|
//! | `Bar`   | stdout is a terminal       | 0.5 s (restores: 1 s)   | an indicatif bar, redrawn       |
//! | `Plain` | stdout is a pipe or a file | 5 s                     | one progress line per answer    |
//! | `Quiet` | `--json`                   | 60 s                    | nothing (the caller prints the end) |

use std::io::Write;
use std::time::{Duration, Instant};

use cowd_api::backups::{BackupState, BackupStatus};
use cowd_api::restores::{RestoreState, RestoreStatus};
use hyper::body::Bytes;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::de::DeserializeOwned;

use crate::client::{self, Client, Reply};
use crate::{repo_report, report};

/// How progress is shown while following.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    Bar,
    Plain,
    Quiet,
}

impl Display {
    /// The display for stdout: a bar on a terminal, plain lines otherwise, none for `--json`.
    pub fn for_stdout(json: bool) -> Display {
        use std::io::IsTerminal;
        if json {
            Display::Quiet
        } else if std::io::stdout().is_terminal() {
            Display::Bar
        } else {
            Display::Plain
        }
    }

    fn step(self) -> Duration {
        match self {
            Display::Bar => Duration::from_millis(500),
            Display::Plain => Duration::from_secs(5),
            Display::Quiet => Duration::from_secs(60),
        }
    }
}

/// Something the daemon can be asked about again and again until it ends: a backup or a
/// restore.
pub trait Followable: DeserializeOwned {
    /// What the bar counts, e.g. `blocks`.
    const UNIT: &'static str;
    /// How often the bar is refreshed.
    const BAR_STEP: Duration;
    fn running(&self) -> bool;
    /// (done, total) in [`Self::UNIT`]s.
    fn position(&self) -> (u64, u64);
    /// What the bar shows after the count.
    fn message(&self) -> String;
    /// One plain progress line, ending in a newline.
    fn line(&self) -> String;
}

impl Followable for BackupStatus {
    const UNIT: &'static str = "blocks";
    const BAR_STEP: Duration = Duration::from_millis(500);
    fn running(&self) -> bool {
        self.state == BackupState::Running
    }
    fn position(&self) -> (u64, u64) {
        (self.blocks_done, self.blocks_total)
    }
    fn message(&self) -> String {
        report::progress_message(self)
    }
    fn line(&self) -> String {
        report::progress_line(self)
    }
}

impl Followable for RestoreStatus {
    const UNIT: &'static str = "chunks";
    const BAR_STEP: Duration = Duration::from_secs(1);
    fn running(&self) -> bool {
        self.state == RestoreState::Running
    }
    fn position(&self) -> (u64, u64) {
        (self.chunks_done, self.chunks_total)
    }
    fn message(&self) -> String {
        repo_report::restore_message(self)
    }
    fn line(&self) -> String {
        repo_report::restore_line(self)
    }
}

/// The last answer about the followed backup or restore.
#[derive(Debug)]
pub struct Followed<T = BackupStatus> {
    pub status: T,
    /// The JSON of `status` as the daemon sent it.
    pub body: Bytes,
    /// False when the deadline came first.
    pub ended: bool,
}

fn new_bar(total: u64, unit: &str) -> ProgressBar {
    let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stdout());
    let template = format!("[{{bar:20}}] {{pos}}/{{len}} {unit} ({{percent}}%), {{wide_msg}}");
    let style = ProgressStyle::with_template(&template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    b.set_style(style);
    b
}

/// Follows backup `id` until it ends or `deadline` passes, showing progress on `out`.
pub async fn follow(
    client: &Client,
    id: &str,
    deadline: Option<Instant>,
    display: Display,
    out: &mut dyn Write,
) -> Result<Followed, client::Error> {
    let path = format!("/v1/backups/{}", client::encode(id));
    follow_path(
        client,
        &path,
        |step| format!("{path}/wait?timeout_s={step:.3}"),
        deadline,
        display,
        out,
    )
    .await
}

/// Follows what `GET path` shows until it ends or `deadline` passes; `wait(step)` is the path
/// that answers at the end or after `step` seconds.
pub async fn follow_path<T: Followable>(
    client: &Client,
    path: &str,
    wait: impl Fn(f64) -> String,
    deadline: Option<Instant>,
    display: Display,
    out: &mut dyn Write,
) -> Result<Followed<T>, client::Error> {
    let Reply { value, body } = client.get::<T>(path).await?;
    let mut last = Followed {
        status: value,
        body,
        ended: false,
    };
    let mut bar: Option<ProgressBar> = None;
    loop {
        if !last.status.running() {
            last.ended = true;
            break;
        }
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            break;
        }
        match display {
            Display::Bar => {
                let s = &last.status;
                let (done, total) = s.position();
                let b = bar.get_or_insert_with(|| new_bar(total, T::UNIT));
                b.set_message(s.message());
                b.set_length(total);
                b.set_position(done);
            }
            Display::Plain => {
                // A reader that went away does not stop the following; the end decides.
                let _ = out
                    .write_all(last.status.line().as_bytes())
                    .and_then(|()| out.flush());
            }
            Display::Quiet => {}
        }
        let every = match display {
            Display::Bar => T::BAR_STEP,
            d => d.step(),
        };
        let step = left.map_or(every, |l| l.min(every));
        let reply = client
            .clone()
            .with_timeout(step + client::DEFAULT_TIMEOUT)
            .get::<T>(&wait(step.as_secs_f64()))
            .await;
        match reply {
            Ok(Reply { value, body }) => {
                last.status = value;
                last.body = body;
            }
            Err(e) => {
                if let Some(b) = &bar {
                    b.abandon();
                }
                return Err(e);
            }
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    Ok(last)
}
