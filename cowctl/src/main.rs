//! `cowctl`: the command-line client of cowd's control API.
//!
//! A thin client: each subcommand is one request (or a few) whose types come from
//! `cowd::control::api`; the answer is printed for humans (or as the daemon's JSON with
//! `--json`), and errors become one line on stderr and a documented exit code. The backup
//! commands live in `cowctl::commands`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cowctl::client::{self, Client, Reply};
use cowctl::commands::Outcome;
use cowctl::commands::devices::{self, AttachArgs, DetachArgs};
use cowctl::commands::sessions::{self, CancelArgs, PrioritizeArgs, StatusArgs};
use cowctl::commands::start::{self, StartArgs};
use cowctl::commands::wait::{self, WaitArgs};
use cowctl::output;
use cowd::control::api::{DEFAULT_SOCKET, ExportInfo};

const EXIT_STATUS: &str = "\
Exit status:
  0  success
  1  the daemon refused the request, or the operation failed
  2  cannot reach the daemon, or bad usage";

const START_STATUS: &str = "\
Exit status:
  0  the backup started (with --wait: and ended done)
  1  the daemon refused, or (with --wait) the backup failed or was cancelled
  2  cannot reach the daemon, or bad usage";

const WAIT_STATUS: &str = "\
Exit status:
  0  the backup ended done
  1  the backup failed or was cancelled, --timeout passed, or the daemon refused
  2  cannot reach the daemon, or bad usage";

#[derive(Debug, Parser)]
#[command(
    name = "cowctl",
    version,
    about = "Control a running cowd daemon through its control socket",
    after_help = EXIT_STATUS
)]
struct Cli {
    /// The daemon's control socket.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "COWD_SOCKET",
        default_value = DEFAULT_SOCKET
    )]
    socket: PathBuf,
    /// Print the daemon's JSON answer (pretty-printed) instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the exports: name, size, mode (rw/ro), open NBD connections, device path.
    #[command(after_help = EXIT_STATUS)]
    Exports,
    /// Start a backup of an export.
    ///
    /// Returns once the snapshot point is taken (by default after a quiet period without
    /// writes); the copy then goes on in the daemon. With --wait, follows it like `cowctl wait`.
    /// With --json, prints the daemon's answer (and with --wait, then the final status).
    #[command(after_help = START_STATUS)]
    StartBackup(StartArgs),
    /// Show the backups: progress, container use, copies before write, throttling, ETA.
    ///
    /// Running backups first, then ended ones, newest first; failed and cancelled ones have
    /// their reason on the next line.
    #[command(after_help = EXIT_STATUS)]
    Status(StatusArgs),
    /// Follow a backup until it ends, then print a summary.
    ///
    /// Shows a progress bar on a terminal, and a progress line every 5 s otherwise.
    #[command(after_help = WAIT_STATUS)]
    Wait(WaitArgs),
    /// Cancel the running backup of an export.
    ///
    /// A target file that cowd created is removed; the export is not affected.
    #[command(after_help = EXIT_STATUS)]
    Cancel(CancelArgs),
    /// Copy a byte range of the running backup next.
    ///
    /// For instance a region an application is about to overwrite, so that its writes need no
    /// copy before write.
    #[command(after_help = EXIT_STATUS)]
    Prioritize(PrioritizeArgs),
    /// Serve an export on a kernel NBD device (/dev/nbdN; needs the nbd kernel module).
    #[command(after_help = EXIT_STATUS)]
    Attach(AttachArgs),
    /// Disconnect a kernel NBD device attached with `cowctl attach`.
    #[command(after_help = EXIT_STATUS)]
    Detach(DetachArgs),
}

async fn run(cli: &Cli, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let client = Client::new(&cli.socket);
    let json = cli.json;
    match &cli.command {
        Command::Exports => {
            let reply: Reply<Vec<ExportInfo>> = client.get("/v1/exports").await?;
            let text = if json {
                output::pretty_json(&reply.body)
            } else {
                output::exports_table(&reply.value)
            };
            out.write_all(text.as_bytes())?;
            Ok(Outcome::Success)
        }
        Command::StartBackup(a) => start::run(&client, a, json, out).await,
        Command::Status(a) => sessions::status(&client, a, json, out).await,
        Command::Wait(a) => wait::run(&client, a, json, out).await,
        Command::Cancel(a) => sessions::cancel(&client, a, json, out).await,
        Command::Prioritize(a) => sessions::prioritize(&client, a, json, out).await,
        Command::Attach(a) => devices::attach(&client, a, json, out).await,
        Command::Detach(a) => devices::detach(&client, a, json, out).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut stdout = std::io::stdout();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(&cli, &mut stdout)))
        .and_then(|outcome| {
            stdout.flush()?;
            Ok(outcome)
        });
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Failed(message)) => fail(1, &message),
        Err(e) => match e.downcast_ref::<std::io::Error>() {
            // `cowctl exports | head -1`: the reader has all it wanted.
            Some(io) if io.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
            Some(io) => fail(1, &format!("cannot write the output: {io}")),
            None => {
                let code = e
                    .downcast_ref::<client::Error>()
                    .map_or(1, |c| c.exit_code());
                fail(code, &format!("{e:#}"))
            }
        },
    }
}

/// Prints `cowctl: message` as one line on stderr and returns `code`.
fn fail(code: u8, message: &str) -> ExitCode {
    let one_line = message.replace(['\r', '\n'], " ");
    eprintln!("cowctl: {one_line}");
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_after_the_subcommand() {
        let cli = Cli::try_parse_from(["cowctl", "exports", "--json", "--socket", "/s"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.socket, PathBuf::from("/s"));
    }

    #[test]
    fn backup_commands_parse() {
        let cli = Cli::try_parse_from(["cowctl", "wait", "disk-1", "--timeout", "1.5", "--json"])
            .unwrap();
        assert!(cli.json);
        match cli.command {
            Command::Wait(w) => assert_eq!((w.id.as_str(), w.timeout), ("disk-1", Some(1.5))),
            c => panic!("{c:?}"),
        }
        let cli = Cli::try_parse_from(["cowctl", "prioritize", "/dev/nbd1", "1G", "64K"]).unwrap();
        match cli.command {
            Command::Prioritize(p) => {
                assert_eq!(
                    (p.export.as_str(), p.offset, p.length),
                    ("/dev/nbd1", 1 << 30, 64 << 10)
                )
            }
            c => panic!("{c:?}"),
        }
        let cli = Cli::try_parse_from(["cowctl", "status"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Status(StatusArgs { export: None })
        ));
    }
}
