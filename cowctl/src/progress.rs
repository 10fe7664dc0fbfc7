//! Following a backup until it ends, showing its progress on the way.
//!
//! The daemon is asked `GET /v1/backups/{id}/wait?timeout_s=STEP` again and again: each answer
//! comes when the backup ends or after STEP seconds, so the end is seen at once while progress
//! is refreshed every STEP.
//!
//! | display | when                       | STEP  | shows                                  |
//! |---------|----------------------------|-------|----------------------------------------|
//! | `Bar`   | stdout is a terminal       | 0.5 s | an indicatif bar, redrawn in place      |
//! | `Plain` | stdout is a pipe or a file | 5 s   | one progress line per answer            |
//! | `Quiet` | `--json`                   | 60 s  | nothing (the caller prints the end)     |

use std::io::Write;
use std::time::{Duration, Instant};

use cowd::control::api::{BackupState, BackupStatus};
use hyper::body::Bytes;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::client::{self, Client, Reply};
use crate::report;

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

/// The last answer about the followed backup.
#[derive(Debug)]
pub struct Followed {
    pub status: BackupStatus,
    /// The JSON of `status` as the daemon sent it.
    pub body: Bytes,
    /// False when the deadline came first.
    pub ended: bool,
}

fn new_bar(total: u64) -> ProgressBar {
    let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stdout());
    let style =
        ProgressStyle::with_template("[{bar:20}] {pos}/{len} blocks ({percent}%), {wide_msg}")
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
    let Reply { value, body } = client.get::<BackupStatus>(&path).await?;
    let mut last = Followed {
        status: value,
        body,
        ended: false,
    };
    let mut bar: Option<ProgressBar> = None;
    loop {
        if last.status.state != BackupState::Running {
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
                let b = bar.get_or_insert_with(|| new_bar(s.blocks_total));
                b.set_message(report::progress_message(s));
                b.set_length(s.blocks_total);
                b.set_position(s.blocks_done);
            }
            Display::Plain => {
                // A reader that went away does not stop the following; the end decides.
                let _ = out
                    .write_all(report::progress_line(&last.status).as_bytes())
                    .and_then(|()| out.flush());
            }
            Display::Quiet => {}
        }
        let step = left.map_or(display.step(), |l| l.min(display.step()));
        let wait = format!("{path}/wait?timeout_s={:.3}", step.as_secs_f64());
        let reply = client
            .clone()
            .with_timeout(step + client::DEFAULT_TIMEOUT)
            .get::<BackupStatus>(&wait)
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
