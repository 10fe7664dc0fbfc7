//! The `cowd` binary: command-line flags to a [`cowd::daemon::Config`], logging, exit codes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use cowd::daemon::{self, Config, ExportSpec};
use cowd::nbd::Endpoint;
use cowd::nbd::server::ServerConfig;
use cowd::nbd::transmission::Limits;

#[derive(Debug, Parser)]
#[command(
    name = "cowd",
    version,
    about = "Copy-on-write online snapshot block driver (NBD server)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve devices over NBD.
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// An export: NAME=PATH (a block device or regular file). Repeat for more; the first is the
    /// default export.
    #[arg(long = "export", value_name = "NAME=PATH", required = true)]
    exports: Vec<ExportSpec>,
    /// Serve export NAME read-only. Repeatable.
    #[arg(long = "read-only", value_name = "NAME")]
    read_only: Vec<String>,
    /// Listen for NBD clients: unix:PATH or tcp:HOST:PORT. Repeatable.
    #[arg(long = "nbd", value_name = "ENDPOINT", required = true)]
    nbd: Vec<Endpoint>,
    /// Control API socket.
    #[arg(long, value_name = "PATH", default_value = cowd::control::api::DEFAULT_SOCKET)]
    control: PathBuf,
    /// Bypass the page cache (O_DIRECT); clients must then respect the advertised block size.
    #[arg(long)]
    direct: bool,
    /// Seconds a client has to finish the handshake.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    handshake_timeout: f64,
    /// Open connections beyond which new clients are refused.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    max_connections: usize,
    /// Worker threads per connection for requests that may block.
    #[arg(long, value_name = "N", default_value_t = 32)]
    io_threads: usize,
    /// Seconds connections may take to finish when the daemon stops.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    stop_timeout: f64,
}

fn seconds(name: &str, s: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|_| format!("--{name} {s}: not a number of seconds"))
}

fn config(a: ServeArgs) -> Result<Config, String> {
    let limits = Limits {
        io_threads: a.io_threads.max(1),
        ..Limits::default()
    };
    Ok(Config {
        exports: a.exports,
        read_only: a.read_only,
        nbd: a.nbd,
        control: Some(a.control),
        direct: a.direct,
        server: ServerConfig {
            handshake_timeout: seconds("handshake-timeout", a.handshake_timeout)?,
            max_connections: a.max_connections.max(1),
            limits,
        },
        stop_timeout: seconds("stop-timeout", a.stop_timeout)?,
    })
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(a) => config(a)
            .map_err(anyhow::Error::msg)
            .and_then(|c| Ok(daemon::run(c)?)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cowd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
