//! Three daemons on hosts of their own (network namespaces with machine ids of their own) back
//! up round after round into one S3 repository while one of them prunes and collects garbage:
//! gc and backups refuse each other (409) instead of racing, chunks shared between the hosts
//! are stored once, and afterwards every backup still listed restores exactly.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use cowd_tests::cli::{backup_into, cowctl, ok, path_str, start, stderr};
use cowd_tests::files::assert_same_file;
use cowd_tests::netns::Net;
use cowd_tests::rgw::Rgw;
use cowd_tests::{Daemon, MIB, nbd_writes, pattern, run_stdout};

const HOSTS: usize = 3;
/// Rounds of changes and backups after the first (full) backups.
const ROUNDS: u8 = 8;
/// Backups each export keeps through prune.
const KEEP: usize = 2;
/// The repository's chunk size (`repo init`'s default) and the exports' size in chunks.
const CHUNK: u64 = 4 * MIB;
const SIZE: u64 = 4 * CHUNK;
const BUCKET: &str = "fleet";
const PREFIX: &str = "hosts";

/// Gives each host of a [`Net`] a machine id of its own: `ip netns exec` bind-mounts the files
/// of `/etc/netns/NS/` over `/etc`, so to the repository the daemons are hosts of their own
/// (another host's pin is judged by its heartbeat, not by its pid). Removed on drop.
struct MachineIds(Vec<PathBuf>);

impl MachineIds {
    fn new(net: &Net) -> MachineIds {
        let mut ids = MachineIds(Vec::new());
        for i in 0..HOSTS {
            let dir = Path::new("/etc/netns").join(net.namespace(i));
            fs::create_dir_all(&dir).unwrap();
            ids.0.push(dir.clone());
            let id = format!("c0ffee{:026x}", fastrand::u128(..) >> 24);
            fs::write(dir.join("machine-id"), format!("{id}\n")).unwrap();
            let seen = run_stdout(Command::new("ip").args([
                "netns",
                "exec",
                net.namespace(i),
                "cat",
                "/etc/machine-id",
            ]));
            assert_eq!(seen.trim(), id, "host {i} does not see its machine id");
        }
        ids
    }
}

impl Drop for MachineIds {
    fn drop(&mut self) {
        for dir in self.0.drain(..) {
            let _ = fs::remove_dir_all(dir);
        }
        // Only when no other test's namespaces use it.
        let _ = fs::remove_dir("/etc/netns");
    }
}

/// What the hosts and the pruner tell each other.
#[derive(Debug, Default)]
struct Progress {
    /// Backups completed so far, all hosts together.
    backups: usize,
    /// Hosts done with their rounds (or gone with a panic).
    hosts_done: usize,
    /// prune + gc runs ended so far (whether gc ran or was refused).
    gc_runs: usize,
    /// Backups refused because a gc ran.
    backups_refused: usize,
    /// The pruner has stopped (or is gone with a panic).
    pruner_done: bool,
}

/// [`Progress`] and the condition variable signalled at each change of it.
#[derive(Debug, Default)]
struct Board {
    progress: Mutex<Progress>,
    changed: Condvar,
}

impl Board {
    fn update(&self, f: impl FnOnce(&mut Progress)) {
        f(&mut self.progress.lock().unwrap());
        self.changed.notify_all();
    }

    /// Waits (up to two minutes) until `until` holds.
    fn wait(&self, what: &str, until: impl Fn(&Progress) -> bool) -> MutexGuard<'_, Progress> {
        let (p, waited) = self
            .changed
            .wait_timeout_while(
                self.progress.lock().unwrap(),
                Duration::from_secs(120),
                |p| !until(p),
            )
            .unwrap();
        assert!(!waited.timed_out(), "still waiting for {what}: {p:?}");
        p
    }
}

/// Applies `f` to the board when dropped, also when the thread panics: nobody waits forever
/// for a thread that is gone.
struct OnExit<'a, F: Fn(&mut Progress)>(&'a Board, F);

impl<F: Fn(&mut Progress)> Drop for OnExit<'_, F> {
    fn drop(&mut self) {
        self.0.update(&self.1);
    }
}

/// The outcomes of the prune + gc runs.
#[derive(Debug, Default)]
struct Tally {
    ran: usize,
    refused: usize,
    chunks_removed: u64,
    /// Backups they refused.
    backups_refused: usize,
}

/// A backup and a copy of the image it was taken from.
#[derive(Debug)]
struct Backup {
    id: String,
    image: PathBuf,
}

/// A host: its daemon, its export, its backups so far.
struct Host {
    daemon: Daemon,
    export: String,
    backups: Vec<Backup>,
}

impl Host {
    /// A daemon in host `i`'s namespace with export `hostI` holding distinct data, except for
    /// its second chunk, the same on every host:
    ///
    /// ```text
    ///   chunk 0: own data   chunk 1: shared   chunk 2: own data   chunk 3: zeroes
    /// ```
    fn start(net: &Net, rgw: &Rgw, i: usize) -> Host {
        let export = format!("host{i}");
        let b = Daemon::builder()
            .export(&export, SIZE)
            .namespace(net.namespace(i));
        let daemon = start(rgw.client(b, &rgw.endpoint));
        let f = fs::File::options()
            .write(true)
            .open(daemon.image(&export))
            .unwrap();
        let (own, shared) = (CHUNK as usize, CHUNK as usize);
        f.write_all_at(&pattern(10 + i as u64, own), 0).unwrap();
        f.write_all_at(&pattern(99, shared), CHUNK).unwrap();
        f.write_all_at(&pattern(20 + i as u64, own), 2 * CHUNK)
            .unwrap();
        Host {
            daemon,
            export,
            backups: Vec::new(),
        }
    }

    /// Round `r`'s writes through NBD: chunk 0 cycles through three contents (so a later round
    /// brings back a chunk only a pruned backup used), chunk 1 through two, the same on every
    /// host, chunk 2 is new each round. Each write is a quarter of its chunk, so the chunk is
    /// stored whole (not as a patch) and the bucket holds exactly the images' chunks.
    fn change(&self, i: usize, r: u8) {
        let block = CHUNK / 4;
        nbd_writes(
            &self.daemon.uri(&self.export),
            &[
                (0x10 * (i as u8 + 1) + r % 3, 0, block),
                (0xa0 + r % 2, CHUNK, block),
                (0x40 + r, 2 * CHUNK, block),
            ],
        );
    }

    /// Backup `id` with a copy of the image as it saw it (nothing writes to it meanwhile).
    fn record(&self, id: String) -> Backup {
        let image = self.daemon.dir().join(format!("{id}.img"));
        fs::copy(self.daemon.image(&self.export), &image).unwrap();
        Backup { id, image }
    }

    /// The backups a prune keeps.
    fn kept(&self) -> &[Backup] {
        &self.backups[self.backups.len() - KEEP..]
    }

    /// A backup into `repo`; one refused because a gc runs is started again once a prune +
    /// gc run has ended.
    fn backup(&self, repo: &str, board: &Board) -> String {
        loop {
            let before = board.progress.lock().unwrap().gc_runs;
            let args = [
                "start-backup",
                &self.export,
                "--repo",
                repo,
                "--no-quiesce",
                "--wait",
            ];
            let out = cowctl(&self.daemon, &args);
            if out.status.success() {
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                return text
                    .lines()
                    .next()
                    .and_then(|l| l.strip_prefix("backup "))
                    .and_then(|r| r.split(' ').next())
                    .unwrap_or_else(|| panic!("{text}"))
                    .to_owned();
            }
            let err = stderr(&out);
            assert!(
                out.status.code() == Some(1) && err.contains("a gc is running"),
                "backup of {}: {err}\n{}",
                self.export,
                self.daemon.log()
            );
            // The gc it saw began before this attempt: its run ends after it.
            board.update(|p| p.backups_refused += 1);
            drop(board.wait("the gc that refused a backup", |p| {
                p.gc_runs > before || p.pruner_done
            }));
        }
    }

    /// Round after round: change the data, back up, tell the board. The backups made.
    fn run_rounds(&self, i: usize, repo: &str, board: &Board) -> Vec<Backup> {
        let _done = OnExit(board, |p: &mut Progress| p.hosts_done += 1);
        let mut made = Vec::new();
        for r in 1..=ROUNDS {
            self.change(i, r);
            let id = self.backup(repo, board);
            made.push(self.record(id));
            board.update(|p| p.backups += 1);
        }
        made
    }
}

/// `prune EXPORT --keep-last KEEP` (then gc) through `d`: how many chunks gc removed, or None
/// when gc was refused because a backup runs.
fn prune(d: &Daemon, export: &str, repo: &str) -> Option<u64> {
    let keep = KEEP.to_string();
    let args = [
        "--json",
        "prune",
        export,
        "--keep-last",
        &keep,
        "--repo",
        repo,
    ];
    let out = cowctl(d, &args);
    if !out.status.success() {
        let err = stderr(&out);
        assert!(
            out.status.code() == Some(1)
                && err.contains("gc refused")
                && err.contains("is running"),
            "prune {export}: {err}\n{}",
            d.log()
        );
        return None;
    }
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    Some(result["gc"]["chunks_removed"].as_u64().unwrap())
}

/// Prunes the exports in turn, one each time a backup has completed, until every host is
/// done.
fn prune_while_hosts_back_up(d: &Daemon, exports: &[String], repo: &str, board: &Board) -> Tally {
    let _done = OnExit(board, |p: &mut Progress| p.pruner_done = true);
    let mut tally = Tally::default();
    let mut seen = 0;
    for export in exports.iter().cycle() {
        {
            let p = board.wait("a backup to complete", |p| {
                p.backups > seen || p.hosts_done == HOSTS
            });
            if p.hosts_done == HOSTS {
                tally.backups_refused = p.backups_refused;
                break;
            }
            seen = p.backups;
        }
        match prune(d, export, repo) {
            Some(n) => {
                tally.ran += 1;
                tally.chunks_removed += n;
            }
            None => tally.refused += 1,
        }
        board.update(|p| p.gc_runs += 1);
    }
    tally
}

/// The distinct non-zero chunks of `images` (as a repository stores them, once each) and
/// how many non-zero chunks they hold in all.
fn chunks_of<'a>(images: impl Iterator<Item = &'a Path>) -> (HashSet<[u8; 32]>, usize) {
    let (mut distinct, mut all) = (HashSet::new(), 0);
    for image in images {
        let bytes = fs::read(image).unwrap();
        for chunk in bytes.chunks(CHUNK as usize) {
            if chunk.iter().any(|&b| b != 0) {
                distinct.insert(*blake3::hash(chunk).as_bytes());
                all += 1;
            }
        }
    }
    (distinct, all)
}

fn images(backups: &[Backup]) -> impl Iterator<Item = &Path> {
    backups.iter().map(|b| b.image.as_path())
}

fn bucket_chunks(rgw: &Rgw) -> usize {
    rgw.keys(BUCKET, &format!("{PREFIX}/chunks/")).len()
}

/// The hosts' first backups, all at once (full ones).
fn first_backups(hosts: &mut [Host], repo: &str) {
    let ids: Vec<String> = thread::scope(|s| {
        let running: Vec<_> = hosts
            .iter()
            .map(|h| s.spawn(|| backup_into(&h.daemon, &h.export, repo)))
            .collect();
        running.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for (h, id) in hosts.iter_mut().zip(ids) {
        h.backups.push(h.record(id));
    }
}

/// [`ROUNDS`] rounds of changes and backups on every host while host 0 prunes.
fn rounds_while_host_0_prunes(hosts: &mut [Host], repo: &str) -> Tally {
    let board = Board::default();
    let exports: Vec<String> = hosts.iter().map(|h| h.export.clone()).collect();
    let (tally, made) = thread::scope(|s| {
        let gc = s.spawn(|| prune_while_hosts_back_up(&hosts[0].daemon, &exports, repo, &board));
        let rounds: Vec<_> = (hosts.iter().enumerate())
            .map(|(i, h)| {
                let board = &board;
                s.spawn(move || h.run_rounds(i, repo, board))
            })
            .collect();
        let made: Vec<Vec<Backup>> = rounds.into_iter().map(|t| t.join().unwrap()).collect();
        (gc.join().unwrap(), made)
    });
    for (h, made) in hosts.iter_mut().zip(made) {
        h.backups.extend(made);
    }
    tally
}

/// Asserts that the repository lists each host's last [`KEEP`] backups, incremental ones, and
/// that each restores exactly the image it was taken from.
fn assert_kept_backups_restore(hosts: &[Host], repo: &str) {
    let out = ok(&cowctl(
        &hosts[0].daemon,
        &["--json", "backups", "--repo", repo],
    ));
    let listed: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    for h in hosts {
        let ids: Vec<&str> = listed
            .iter()
            .filter(|m| m["export"] == h.export.as_str())
            .map(|m| m["id"].as_str().unwrap())
            .collect();
        let want: Vec<&str> = h.kept().iter().map(|b| b.id.as_str()).collect();
        assert_eq!(ids, want, "{out}");
    }
    assert!(listed.iter().all(|m| m["mode"] == "incremental"), "{out}");
    for h in hosts {
        for b in h.kept() {
            let to = h.daemon.dir().join("restored.img");
            ok(&cowctl(
                &h.daemon,
                &["restore", &b.id, "--repo", repo, "--to", path_str(&to)],
            ));
            assert_same_file(&to, &b.image);
            fs::remove_file(&to).unwrap();
        }
    }
}

#[test]
fn three_hosts_back_up_into_one_s3_repository_while_one_prunes_and_all_restore_exactly() {
    // Dropped in reverse: the daemons before their machine ids and namespaces.
    let net = Net::new(HOSTS);
    let rgw = Rgw::start_on(&net.server());
    rgw.create_bucket(BUCKET);
    let _ids = MachineIds::new(&net);
    let mut hosts: Vec<Host> = (0..HOSTS).map(|i| Host::start(&net, &rgw, i)).collect();
    let repo = &format!("s3://{BUCKET}/{PREFIX}");
    ok(&cowctl(&hosts[0].daemon, &["repo", "init", repo]));

    // The first backups run at once; the chunk the hosts share is stored once.
    first_backups(&mut hosts, repo);
    let (distinct, all) = chunks_of(hosts.iter().flat_map(|h| images(&h.backups)));
    assert!(distinct.len() < all, "no data shared between the hosts");
    assert_eq!(bucket_chunks(&rgw), distinct.len(), "{all} chunks in all");

    // Then rounds of changes and incremental backups, gc refused while a backup runs and
    // backups while gc runs.
    let mut tally = rounds_while_host_0_prunes(&mut hosts, repo);
    eprintln!("while the hosts backed up: {tally:?}");

    // A last prune of each export with no backup running: gc runs. Left in the bucket: each
    // distinct chunk of the kept backups once, nothing else; every other chunk some gc removed
    // (some more than once: stored again by a later round after their removal).
    for h in &hosts {
        let removed = prune(&hosts[0].daemon, &h.export, repo).expect("gc refused at the end");
        tally.ran += 1;
        tally.chunks_removed += removed;
    }
    let (ever, _) = chunks_of(hosts.iter().flat_map(|h| images(&h.backups)));
    let (needed, _) = chunks_of(hosts.iter().flat_map(|h| images(h.kept())));
    assert_eq!(bucket_chunks(&rgw), needed.len());
    assert!(
        tally.chunks_removed >= (ever.len() - needed.len()) as u64 && tally.chunks_removed > 0,
        "{} chunks stored in all, {} needed: {tally:?}",
        ever.len(),
        needed.len()
    );
    for dir in ["pins/", "locks/"] {
        let left = rgw.keys(BUCKET, &format!("{PREFIX}/{dir}"));
        assert!(left.is_empty(), "{left:?}");
    }
    let out = ok(&cowctl(&hosts[0].daemon, &["verify", "--repo", repo]));
    let verified = format!("{} backups verified", HOSTS * KEEP);
    assert!(out.contains(&verified), "{out}");
    assert_kept_backups_restore(&hosts, repo);
}
