//! `cowctl`: the command-line client of cowd's control API.
//!
//! A thin client: each subcommand is one request (or a few) whose types come from the
//! `cowd-api` crate (cowctl links it, never the daemon); the answer is printed for humans (or
//! as the daemon's JSON with `--json`), and errors become one line on stderr and a documented
//! exit code. The backup commands (and those of the backup repository) live in
//! `cowctl::commands`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cowctl::client::{self, Client, Reply};
use cowctl::commands::Outcome;
use cowctl::commands::copies::{self, PortsArgs};
use cowctl::commands::devices::{self, AttachArgs, DetachArgs};
use cowctl::commands::diff::{self, DiffArgs};
use cowctl::commands::files::{self, CatArgs, LsArgs, MapArgs};
use cowctl::commands::mount::{self, MountArgs, UmountArgs};
use cowctl::commands::repo::{
    self, BackupsArgs, PruneArgs, RepoCommand, ServeArgs, UnserveArgs, VerifyArgs,
};
use cowctl::commands::restore::{self, RestoreArgs};
use cowctl::commands::sessions::{self, CancelArgs, PrioritizeArgs, StatusArgs};
use cowctl::commands::start::{self, StartArgs};
use cowctl::commands::wait::{self, WaitArgs};
use cowctl::output;
use cowd_api::DEFAULT_SOCKET;
use cowd_api::exports::ExportInfo;

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

const VERIFY_STATUS: &str = "\
Exit status:
  0  every checked backup is intact
  1  a chunk is corrupt or missing, an index is bad, or the daemon refused
  2  cannot reach the daemon, or bad usage";

const PRUNE_STATUS: &str = "\
Exit status:
  0  the backups outside the policy were removed (with --dry-run: listed)
  1  the daemon refused (e.g. every rule is 0)
  2  cannot reach the daemon, or bad usage (e.g. no --keep-* rule)";

const RESTORE_STATUS: &str = "\
Exit status:
  0  the restore started (without --no-wait: and ended done)
  1  the daemon refused, or the restore failed
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
    /// Start a backup of an export into a raw image (--to) or a repository (--repo).
    ///
    /// Without --to or --repo the backup goes into the daemon's default repository. Returns
    /// once the snapshot point is taken (by default after a quiet period without writes); the
    /// copy then goes on in the daemon. With --wait, follows it like `cowctl wait`. With
    /// --json, prints the daemon's answer (and with --wait, then the final status).
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
    /// Manage backup repositories.
    #[command(subcommand, after_help = EXIT_STATUS)]
    Repo(RepoCommand),
    /// List the backups of a repository, oldest first.
    ///
    /// TIME is the snapshot point (UTC); MODE is full or incr(emental), the blocks read (used
    /// or all) and the filesystem they came from; READ is what was read from the device, NEW
    /// what the backup added to the repository. An incremental backup has its parent on the
    /// next line.
    #[command(after_help = EXIT_STATUS)]
    Backups(BackupsArgs),
    /// Re-read and check every chunk of backups of a repository (all without ID).
    ///
    /// Prints each corrupt or missing chunk with the backups it breaks, and each bad index.
    /// With --image PATH: checks a raw image backup against the checksum beside it.
    #[command(after_help = VERIFY_STATUS)]
    Verify(VerifyArgs),
    /// Remove the backups of an export outside a retention policy, then the chunks no backup
    /// uses.
    ///
    /// A backup kept by any rule is kept; at least one --keep-* rule is required.
    #[command(after_help = PRUNE_STATUS)]
    Prune(PruneArgs),
    /// Restore a backup of a repository to a file or device.
    ///
    /// Follows the restore to its end (a progress bar on a terminal), then prints a summary.
    /// With --live the destination is served at once as an export while it is restored.
    #[command(after_help = RESTORE_STATUS)]
    Restore(RestoreArgs),
    /// List a directory of a backup's filesystem (ext2/3/4, NTFS), read from the repository.
    #[command(after_help = EXIT_STATUS)]
    Ls(LsArgs),
    /// Write a file of a backup's filesystem to stdout.
    #[command(after_help = EXIT_STATUS)]
    Cat(CatArgs),
    /// Where a file of a backup lies on the device (--path), or which files and metadata own
    /// a range of the device (--offset, --length).
    #[command(after_help = EXIT_STATUS)]
    Map(MapArgs),
    /// The files added, removed and changed from one backup to a later one of the same export.
    ///
    /// Found from the chunks that differ, without reading the files that did not change.
    /// Marks: + added, - removed, M data or link target, U mode, owner or time, T type.
    #[command(after_help = EXIT_STATUS)]
    Diff(DiffArgs),
    /// Show a backup's files read-only at MOUNTPOINT (FUSE) until `cowctl umount` or ^C.
    ///
    /// Stays in the foreground; reads go to the daemon, which reads only the chunks needed.
    #[command(after_help = EXIT_STATUS)]
    Mount(MountArgs),
    /// End a `cowctl mount`.
    #[command(after_help = EXIT_STATUS)]
    Umount(UmountArgs),
    /// List the restores of this run of the daemon, newest first.
    #[command(after_help = EXIT_STATUS)]
    Restores,
    /// List copy jobs run by data movers: state, mover, path, bytes; why a mover could not
    /// reach a copy target, why a job failed.
    #[command(after_help = EXIT_STATUS)]
    Copies,
    /// List target and initiator ports with their groups; `ports set PORT --role R --group G`
    /// changes one while cowd runs.
    #[command(after_help = EXIT_STATUS)]
    Ports(PortsArgs),
    /// Serve a backup of a repository as a new read-only export.
    #[command(after_help = EXIT_STATUS)]
    Serve(ServeArgs),
    /// Remove an export made by `cowctl serve` (refused while clients are connected).
    #[command(after_help = EXIT_STATUS)]
    Unserve(UnserveArgs),
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
        Command::Repo(c) => repo::repo(&client, c, json, out).await,
        Command::Backups(a) => repo::backups(&client, a, json, out).await,
        Command::Verify(a) => repo::verify(&client, a, json, out).await,
        Command::Prune(a) => repo::prune(&client, a, json, out).await,
        Command::Restore(a) => restore::restore(&client, a, json, out).await,
        Command::Restores => restore::restores(&client, json, out).await,
        Command::Copies => copies::copies(&client, json, out).await,
        Command::Ports(a) => copies::ports(&client, a, json, out).await,
        Command::Ls(a) => files::ls(&client, a, json, out).await,
        Command::Cat(a) => files::cat(&client, a, out).await,
        Command::Map(a) => files::map(&client, a, json, out).await,
        Command::Diff(a) => diff::diff(&client, a, json, out).await,
        Command::Mount(a) => mount::mount(&client, a, out).await,
        Command::Umount(a) => mount::umount(a, out).await,
        Command::Serve(a) => repo::serve(&client, a, json, out).await,
        Command::Unserve(a) => repo::unserve(&client, a, json, out).await,
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
        Ok(Outcome::Usage(message)) => fail(2, &message),
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

    #[test]
    fn repository_commands_parse() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("cowctl").chain(args.iter().copied()))
        };
        match parse(&["repo", "init", "/r", "--chunk-size", "1M"])
            .unwrap()
            .command
        {
            Command::Repo(RepoCommand::Init(i)) => {
                assert_eq!((i.dir, i.chunk_size), (PathBuf::from("/r"), Some(1 << 20)))
            }
            c => panic!("{c:?}"),
        }
        let sync = [
            "repo",
            "sync",
            "/a",
            "/b",
            "--export",
            "disk",
            "--keep-last",
            "2",
        ];
        match parse(&sync).unwrap().command {
            Command::Repo(RepoCommand::Sync(a)) => {
                assert_eq!((a.src, a.dst), ("/a".into(), "/b".into()));
                assert_eq!(a.export.as_deref(), Some("disk"));
                assert_eq!(a.keep.policy().unwrap().last, Some(2));
                assert!(!a.dry_run);
            }
            c => panic!("{c:?}"),
        }
        match parse(&["backups", "disk", "--repo", "/r"]).unwrap().command {
            Command::Backups(b) => {
                assert_eq!(b.export.as_deref(), Some("disk"));
                assert_eq!(b.repo, Some(PathBuf::from("/r")));
            }
            c => panic!("{c:?}"),
        }
        match parse(&["verify", "a", "b"]).unwrap().command {
            Command::Verify(v) => assert_eq!((v.ids, v.all), (vec!["a".into(), "b".into()], false)),
            c => panic!("{c:?}"),
        }
        match parse(&[
            "prune",
            "disk",
            "--keep-last",
            "2",
            "--keep-monthly",
            "6",
            "--dry-run",
        ])
        .unwrap()
        .command
        {
            Command::Prune(p) => {
                let keep = p.keep.policy().unwrap();
                assert_eq!(
                    (keep.last, keep.daily, keep.monthly),
                    (Some(2), None, Some(6))
                );
                assert!(p.dry_run);
            }
            c => panic!("{c:?}"),
        }
        match parse(&["prune", "disk"]).unwrap().command {
            Command::Prune(p) => assert!(p.keep.policy().is_none()),
            c => panic!("{c:?}"),
        }
        let rules = [
            "prune",
            "disk",
            "--keep-hourly",
            "24",
            "--keep-yearly",
            "5",
            "--keep-within",
            "1y6m",
        ];
        match parse(&rules).unwrap().command {
            Command::Prune(p) => {
                let keep = p.keep.policy().unwrap();
                assert_eq!((keep.hourly, keep.yearly), (Some(24), Some(5)));
                assert_eq!(keep.within.unwrap().to_string(), "1y6m");
            }
            c => panic!("{c:?}"),
        }
        let e = parse(&["prune", "disk", "--keep-within", "6w"]).unwrap_err();
        assert!(e.to_string().contains("unknown unit 'w'"), "{e}");
        match parse(&["restore", "disk-1", "--to", "/x.img", "--no-wait"])
            .unwrap()
            .command
        {
            Command::Restore(r) => {
                assert_eq!((r.id.as_str(), r.no_wait), ("disk-1", true));
                assert_eq!(r.to, Some(PathBuf::from("/x.img")));
                assert!(!r.live);
            }
            c => panic!("{c:?}"),
        }
        // A live restore into an existing export needs no --to.
        match parse(&[
            "restore",
            "disk-1",
            "--live",
            "--export",
            "vm",
            "--max-rate",
            "50",
        ])
        .unwrap()
        .command
        {
            Command::Restore(r) => {
                assert!(r.live && r.to.is_none());
                assert_eq!((r.export.as_deref(), r.max_rate), (Some("vm"), Some(50.0)));
            }
            c => panic!("{c:?}"),
        }
        match parse(&["serve", "disk-1", "--export", "old"])
            .unwrap()
            .command
        {
            Command::Serve(s) => assert_eq!((s.id.as_str(), s.export.as_str()), ("disk-1", "old")),
            c => panic!("{c:?}"),
        }
        assert!(matches!(
            parse(&["unserve", "old"]).unwrap().command,
            Command::Unserve(_)
        ));
        for bad in [
            &["verify", "a", "--all"][..],
            &["repo", "init"],
            &["repo", "init", "/r", "--chunk-size", "x"],
            &["restore", "disk-1"],
            &["restore", "disk-1", "--live", "--to", "/x.img"],
            &["restore", "disk-1", "--to", "/x.img", "--export", "vm"],
            &["restore", "disk-1", "--path", "/etc"],
            &[
                "restore", "disk-1", "--path", "/etc", "--to", "/x", "--live", "--export", "e",
            ],
            &["map", "disk-1"],
            &["map", "disk-1", "--offset", "0"],
            &[
                "map", "disk-1", "--path", "/a", "--offset", "0", "--length", "1",
            ],
            &["serve", "disk-1"],
            &["prune"],
            &["prune", "disk", "--keep-last", "-1"],
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
    }
}
