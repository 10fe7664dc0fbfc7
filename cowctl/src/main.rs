//! `cowctl`: the command-line client of cowd's control API.
//!
//! A thin client: each subcommand is one request whose types come from `cowd::control::api`;
//! the answer is printed as a table (or as the daemon's JSON with `--json`), and errors become
//! one line on stderr and a documented exit code.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cowctl::client::{self, Client, Reply};
use cowctl::output;
use cowd::control::api::{DEFAULT_SOCKET, ExportInfo};

const EXIT_STATUS: &str = "\
Exit status:
  0  success
  1  the daemon refused the request, or the operation failed
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
}

/// What a command prints on success.
fn render<T>(json: bool, reply: &Reply<T>, human: impl FnOnce(&T) -> String) -> String {
    if json {
        output::pretty_json(&reply.body)
    } else {
        human(&reply.value)
    }
}

async fn run(cli: &Cli) -> anyhow::Result<String> {
    let client = Client::new(&cli.socket);
    match &cli.command {
        Command::Exports => {
            let reply: Reply<Vec<ExportInfo>> = client.get("/v1/exports").await?;
            Ok(render(cli.json, &reply, |v| output::exports_table(v)))
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(&cli)));
    match result {
        Ok(text) => {
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => ExitCode::SUCCESS,
                // `cowctl exports | head -1`: the reader has all it wanted.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => fail(1, &format!("cannot write the output: {e}")),
            }
        }
        Err(e) => {
            let code = e
                .downcast_ref::<client::Error>()
                .map_or(1, |c| c.exit_code());
            fail(code, &format!("{e:#}"))
        }
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
}
