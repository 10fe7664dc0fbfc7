//! The `cowd` binary: flags (over an optional TOML file) to a daemon configuration; logging;
//! exit codes (0 clean stop, 1 error, 2 bad usage).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cowd::config::{
    BackupSettings, ExportSetting, Secs, Settings, Size, parse_duration, parse_size,
};
use cowd::daemon::{self, ExportSpec};
use cowd::nbd::Endpoint;
use cowd_api::backups::OnOverflow;

#[derive(Debug, Parser)]
#[command(
    name = "cowd",
    version,
    about = "Copy-on-write online snapshot block driver (NBD and iSCSI server with live backups)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve devices over NBD and iSCSI and take backups when asked (flags override --config).
    Serve(Box<ServeArgs>),
    /// Run a data mover for a cowd whose job table is in etcd (`etcd = ...` in its cowd.toml),
    /// on this or another host; stops on SIGTERM or SIGINT.
    Mover(MoverArgs),
}

#[derive(Debug, clap::Args)]
struct MoverArgs {
    /// This mover's name, unique among the movers of the job table.
    #[arg(long)]
    name: String,
    /// etcd's client URL, http://HOST:2379 [default: `etcd` of --config].
    #[arg(long, value_name = "URL")]
    etcd: Option<String>,
    /// The job table's key prefix in etcd [default: `etcd_prefix` of --config, or /cowd/].
    #[arg(long, value_name = "PREFIX")]
    prefix: Option<String>,
    /// The cowd whose exports the jobs copy, as an NBD server: nbd://HOST:PORT (or
    /// nbd+unix:///?socket=PATH); each export is reached by its name.
    #[arg(long, value_name = "URI")]
    source: String,
    /// A cowd.toml whose [[copy_target]] and [[port]] tables say what this mover reaches
    /// from this host (its other settings are not used).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// An initiator port of --config to reach copy targets through; repeat, in the order to
    /// try them [default: every initiator port].
    #[arg(long = "port", value_name = "NAME")]
    ports: Vec<String>,
    /// The mover's lease: silent this long, it loses its jobs to the other movers; seconds
    /// or units [default: 12s].
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    lease: Option<Secs>,
}

impl MoverArgs {
    fn run(self) -> Result<(), String> {
        let lease = match self.lease {
            Some(Secs(s)) => std::time::Duration::try_from_secs_f64(s)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| format!("--lease {s}: not a duration"))?,
            None => cowd::jobs::mover::MoverConfig::new(&self.name).lease,
        };
        cowd::jobs::remote::run(cowd::jobs::remote::RemoteMover {
            name: self.name,
            etcd: self.etcd,
            prefix: self.prefix,
            source: self.source,
            config: self.config,
            ports: self.ports,
            lease,
        })
    }
}

fn size(s: &str) -> Result<Size, String> {
    parse_size(s).map(Size)
}

fn duration(s: &str) -> Result<Secs, String> {
    parse_duration(s).map(Secs)
}

fn overflow(s: &str) -> Result<OnOverflow, String> {
    OnOverflow::parse(s).ok_or_else(|| format!("{s}: expected fail-backup or block-writes"))
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML settings file (an example with every setting: scripts/systemd/cowd.toml in the
    /// source); flags given here win over it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// An export: NAME=PATH (a block device or regular file). Repeat for more; the first is the
    /// default export.
    #[arg(long = "export", value_name = "NAME=PATH")]
    exports: Vec<ExportSpec>,
    /// Serve export NAME read-only. Repeatable.
    #[arg(long = "read-only", value_name = "NAME")]
    read_only: Vec<String>,
    /// Listen for NBD clients: unix:PATH or tcp:HOST:PORT. Repeatable.
    #[arg(long = "nbd", value_name = "ENDPOINT")]
    nbd: Vec<Endpoint>,
    /// Serve every export over iSCSI on [tcp:]HOST[:PORT] (port 3260 when left out), as target
    /// BASE:EXPORT with one logical unit, LUN 0. Repeatable.
    #[arg(long = "iscsi", value_name = "[tcp:]HOST[:PORT]")]
    iscsi: Vec<String>,
    /// The iSCSI name targets are named under [default: iqn.2026-12.local.cowd.HOSTNAME].
    #[arg(long, value_name = "IQN")]
    iscsi_base_name: Option<String>,
    /// Control API socket [default: /run/cowd/control.sock].
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    /// State directory: backup records, default container location [default: /var/lib/cowd].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Bypass the page cache (O_DIRECT); clients must then respect the advertised block size.
    #[arg(long)]
    direct: bool,
    /// Time a client has to finish the handshake: seconds or units, e.g. 10, 10s, 1m
    /// [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    handshake_timeout: Option<Secs>,
    /// Open connections beyond which new clients are refused [default: 1024].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Worker threads per connection for requests that may block [default: 32].
    #[arg(long, value_name = "N")]
    io_threads: Option<usize>,
    /// Time connections may take to finish when the daemon stops: seconds or units
    /// [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    stop_timeout: Option<Secs>,
    /// Default repository for backups that name no target (created with `cowctl repo init`).
    #[arg(long, value_name = "DIR")]
    repo: Option<PathBuf>,
    /// Key file that unlocks the --repo repository at start when it is encrypted (written by
    /// `cowctl repo init --encrypt --key-file` or `cowctl repo key add --key-file`).
    #[arg(long, value_name = "FILE")]
    repo_key_file: Option<PathBuf>,
    /// S3-compatible service of s3://BUCKET/PREFIX repositories, e.g. http://127.0.0.1:7480
    /// [default: $AWS_ENDPOINT_URL, else AWS]. Credentials come from the AWS environment
    /// variables or ~/.aws/credentials, never from the command line.
    #[arg(long, value_name = "URL")]
    s3_endpoint: Option<String>,
    /// Region of the S3 service [default: $AWS_REGION, else us-east-1].
    #[arg(long, value_name = "REGION")]
    s3_region: Option<String>,
    /// Path-style S3 requests (ENDPOINT/BUCKET/KEY) [default: true with an endpoint].
    #[arg(long, value_name = "BOOL")]
    s3_path_style: Option<bool>,
    /// How long failing S3 requests (timeouts, 5xx, a store that is down) are retried, with
    /// exponential backoff, before the operation fails [default: 3m].
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    s3_retry_timeout: Option<Secs>,
    /// How long one S3 request may take before it counts as timed out and is retried (a store
    /// or a link that stops answering) [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    s3_timeout: Option<Secs>,
    /// Local cache of chunks read from object storage, in STATE_DIR/cache: served
    /// generations and files read from a backup fetch each chunk once; 0 turns it off
    /// [default: 1G].
    #[arg(long, value_name = "SIZE", value_parser = size)]
    cache_size: Option<Size>,
    /// Default directory of backup containers [default: STATE_DIR/containers].
    #[arg(long, value_name = "DIR")]
    container_dir: Option<PathBuf>,
    /// Default container capacity, e.g. 4G [default: 1G].
    #[arg(long, value_name = "SIZE", value_parser = size)]
    container_size: Option<Size>,
    /// Default copy-before-write block size, e.g. 64K [default: 64K].
    #[arg(long, value_name = "SIZE", value_parser = size)]
    block_size: Option<Size>,
    /// Accept fault-injection requests (`target_faults`); for testing only.
    #[arg(long, hide = true)]
    allow_fault_injection: bool,
    /// Default behaviour when the container stays full: fail-backup or block-writes.
    #[arg(long, value_name = "POLICY", value_parser = overflow)]
    on_overflow: Option<OnOverflow>,
}

impl ServeArgs {
    fn settings(self) -> Result<Settings, String> {
        let file = match &self.config {
            Some(p) => Settings::load(p)?,
            None => Settings::default(),
        };
        let mut export: Vec<ExportSetting> = self
            .exports
            .into_iter()
            .map(|e| ExportSetting {
                name: e.name,
                path: e.path,
                read_only: false,
            })
            .collect();
        let flags = Settings {
            export: Vec::new(),
            nbd: self.nbd.iter().map(|e| e.to_string()).collect(),
            iscsi: self.iscsi,
            iscsi_base_name: self.iscsi_base_name,
            iscsi_auth: None,
            control: self.control,
            state_dir: self.state_dir,
            direct: self.direct.then_some(true),
            handshake_timeout_s: self.handshake_timeout,
            stop_timeout_s: self.stop_timeout,
            max_connections: self.max_connections,
            io_threads: self.io_threads,
            allow_fault_injection: self.allow_fault_injection.then_some(true),
            backup: BackupSettings {
                repo: self.repo,
                repo_key_file: self.repo_key_file,
                s3_endpoint: self.s3_endpoint,
                s3_region: self.s3_region,
                s3_path_style: self.s3_path_style,
                s3_retry_timeout_s: self.s3_retry_timeout,
                s3_timeout_s: self.s3_timeout,
                cache_size: self.cache_size,
                container_dir: self.container_dir,
                container_size: self.container_size,
                block_size: self.block_size,
                on_overflow: self.on_overflow,
                ..BackupSettings::default()
            },
            // Copy targets, ports and movers come from the file only.
            ..Settings::default()
        };
        let mut merged = flags.over(file);
        merged.export.append(&mut export);
        for name in &self.read_only {
            match merged.export.iter_mut().find(|e| &e.name == name) {
                Some(e) => e.read_only = true,
                None => return Err(format!("--read-only {name}: no such export")),
            }
        }
        Ok(merged)
    }
}

/// Caps glibc's malloc arenas at the number of CPUs (at least 2) unless `MALLOC_ARENA_MAX` or
/// `GLIBC_TUNABLES` says otherwise. By default glibc gives threads up to 8 arenas per CPU, and
/// each keeps the memory its threads freed: a backup of 1 TiB into S3, whose dozen chunk and
/// request threads each pass 4 MiB buffers through, peaked at 176 MiB against 143 MiB with two
/// arenas (and ran no slower).
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let told = |k: &str| std::env::var_os(k).is_some();
        if told("MALLOC_ARENA_MAX") || told("GLIBC_TUNABLES") {
            return;
        }
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, cpus as libc::c_int);
        }
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: not in the journal or a log file.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(a) => a
            .settings()
            .and_then(Settings::into_config)
            .map_err(anyhow::Error::msg)
            .and_then(|c| Ok(daemon::run(c)?)),
        Command::Mover(a) => a.run().map_err(anyhow::Error::msg),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Every error names its cause in its own message (`{e:#}` would repeat it).
            eprintln!("cowd: {e}");
            ExitCode::FAILURE
        }
    }
}
