//! A backup's life in the repository: begin (pin + `.tmp-<id>/`), commit or abort; removing a
//! complete backup.
//!
//! ```text
//!   begin ──> pins/<id>.json + backups/.tmp-<id>/ ──commit──> backups/<id>/ (pin removed)
//!                                     └──abort / drop──> nothing (new chunks wait for gc)
//! ```
//!
//! The pin names the parent (so it cannot be removed while the backup runs) and the start time
//! (so gc keeps the chunks stored since). A backup is complete exactly when `backups/<id>/`
//! exists: the directory appears by one rename, after its index and manifest were synced and
//! after every chunk directory it may use was synced.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::crypt::Object;
use super::owner::{Liveness, Owner};
use super::{
    Index, Manifest, Repo, RepoError, Status, check_id, fsync_dir, held, rfc3339, store,
    write_synced,
};

fn not_found_ok(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

/// A running backup, as recorded in `pins/<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pin {
    pub id: String,
    pub parent: Option<String>,
    #[serde(with = "rfc3339")]
    pub started: SystemTime,
    /// The process running the backup (absent in pins of earlier versions: taken as gone).
    #[serde(default)]
    pub owner: Option<Owner>,
    /// When its owner last refreshed it (the pin file's mtime; not in the file).
    #[serde(skip)]
    pub heartbeat: Option<SystemTime>,
}

/// How often a running backup refreshes its pin's mtime (its heartbeat; each second in the
/// unit tests, which watch it happen).
pub const PIN_HEARTBEAT: Duration = Duration::from_secs(if cfg!(test) { 1 } else { 60 });
/// How long a pin of another host stays live after its last heartbeat: ten heartbeats, so a
/// busy or briefly cut-off owner is not taken for gone.
pub const PIN_LEASE: Duration = Duration::from_secs(600);

impl Pin {
    /// False once the process that wrote the pin is known to be gone: on this host, when the
    /// process is; of another host, when its heartbeat is older than [`PIN_LEASE`]. A pin of
    /// an earlier version names no owner: it counts as live until the repository is next
    /// opened (see `clean_at_open`), since nothing tells whether its process still runs.
    pub fn live(&self) -> bool {
        held_by_live(self.owner.as_ref(), self.heartbeat)
    }
}

/// Whether a pin (or gc lock) written by `owner` and last refreshed at `heartbeat` still
/// holds: see [`Pin::live`].
pub(super) fn held_by_live(owner: Option<&Owner>, heartbeat: Option<SystemTime>) -> bool {
    match owner.map(Owner::liveness) {
        None | Some(Liveness::Alive) => true,
        Some(Liveness::Gone) => false,
        // A heartbeat in the future (clocks apart) counts as fresh.
        Some(Liveness::Elsewhere) => {
            heartbeat.is_none_or(|t| t.elapsed().map_or(true, |age| age < PIN_LEASE))
        }
    }
}

/// Refreshes a pin's mtime every [`PIN_HEARTBEAT`] until dropped.
#[derive(Debug)]
pub(super) struct Heartbeat {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    /// `json`: the pin's text, rewritten in object storage (where a PUT is the only way to
    /// refresh an object's time).
    pub(super) fn start(pin: PathBuf, json: Vec<u8>) -> Heartbeat {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("pin-heartbeat".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(PIN_HEARTBEAT)
                {
                    let r = if store::is_remote(&pin) {
                        store::write(&pin, &pin, &json)
                    } else {
                        fs::File::open(&pin).and_then(|f| f.set_modified(SystemTime::now()))
                    };
                    if let Err(e) = r {
                        tracing::warn!("repository: cannot refresh pin {}: {e}", pin.display());
                    }
                }
            })
            .ok();
        Heartbeat {
            stop: Some(stop),
            thread,
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A backup between [`Repo::begin`] and [`InProgress::commit`] / [`InProgress::abort`].
/// Dropped without either, it aborts.
#[derive(Debug)]
#[must_use = "a backup in progress must be committed or aborted"]
pub struct InProgress {
    repo: Repo,
    id: String,
    parent: Option<String>,
    started: SystemTime,
    done: bool,
    /// Keeps the pin fresh for the gc of other hosts sharing the repository.
    heartbeat: Option<Heartbeat>,
}

impl Repo {
    fn pin_path(&self, id: &str) -> PathBuf {
        self.pins_dir().join(format!("{id}.json"))
    }

    fn tmp_backup_dir(&self, id: &str) -> PathBuf {
        self.backups_dir().join(format!(".tmp-{id}"))
    }

    /// Starts backup `id` (incremental from complete backup `parent` when given).
    pub fn begin(&self, id: &str, parent: Option<&str>) -> Result<InProgress, RepoError> {
        check_id(id)?;
        let _m = held(self.inner.meta_lock.lock());
        if self.backup_exists(id)? {
            return Err(RepoError::BackupExists(id.to_owned()));
        }
        if let Some(p) = parent {
            self.manifest(p)?;
        }
        let pin = Pin {
            id: id.to_owned(),
            parent: parent.map(str::to_owned),
            started: SystemTime::now(),
            owner: Owner::current(),
            heartbeat: None,
        };
        // The pin is created exclusively (link fails if it exists), then the directory.
        let pin_path = self.pin_path(id);
        let json = serde_json::to_vec_pretty(&pin).expect("pin to json");
        let linked = if self.is_remote() {
            self.put_remote_pin(&pin_path, &json)
        } else {
            let tmp = self.tmp_path();
            let linked = write_synced(&tmp, &json).and_then(|()| fs::hard_link(&tmp, &pin_path));
            let _ = fs::remove_file(&tmp);
            linked
        };
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(RepoError::AlreadyInProgress(id.to_owned()));
            }
            Err(e) => return Err(RepoError::io(&pin_path, "create pin")(e)),
        }
        held(self.inner.running.lock()).insert(id.to_owned());
        let started = InProgress {
            repo: self.clone(),
            id: id.to_owned(),
            parent: pin.parent.clone(),
            started: pin.started,
            done: false,
            heartbeat: Some(Heartbeat::start(pin_path.clone(), json)),
        };
        // From here on, dropping `started` on error removes the pin again.
        if self.is_remote() {
            // A gc that began before the pin was written may not have seen it.
            if let Some(gc) = self.live_gc_lock()? {
                return Err(RepoError::Busy(format!(
                    "backup {id} not started: a gc is running ({gc}); start it when the gc ends"
                )));
            }
            return Ok(started);
        }
        let pins = self.pins_dir();
        fsync_dir(&pins).map_err(RepoError::io(&pins, "fsync"))?;
        let dir = self.tmp_backup_dir(id);
        if dir.exists() {
            // Left by a crash with its pin already gone.
            fs::remove_dir_all(&dir).map_err(RepoError::io(&dir, "remove stale directory"))?;
        }
        super::mkdir(&dir).map_err(RepoError::io(&dir, "create directory"))?;
        Ok(started)
    }

    /// The backups in progress (their pins), oldest first. Pins whose process is gone are
    /// removed on the way, with the backup directories they kept.
    pub fn in_progress(&self) -> Result<Vec<Pin>, RepoError> {
        let pins = self.pins()?;
        let running = held(self.inner.running.lock()).clone();
        let (live, stale): (Vec<Pin>, Vec<Pin>) = pins.into_iter().partition(|p| {
            let ours = p.owner.as_ref().is_some_and(Owner::is_current);
            p.live() && (!ours || running.contains(&p.id))
        });
        for p in stale {
            self.remove_stale(&p);
        }
        Ok(live)
    }

    /// At open: removes the pins that name no owner (written by an earlier version of cowd,
    /// whose process is gone when a new one opens the repository), with their directories.
    pub(crate) fn remove_ownerless_pins(&self) -> Result<(), RepoError> {
        for p in self.pins()?.iter().filter(|p| p.owner.is_none()) {
            self.remove_stale(p);
        }
        Ok(())
    }

    /// Removes the pin and `.tmp-<id>/` of a backup whose process is gone. Needs no lock:
    /// nobody else writes them (callers may hold `meta_lock`).
    fn remove_stale(&self, p: &Pin) {
        let dir = self.tmp_backup_dir(&p.id);
        let owner = p
            .owner
            .as_ref()
            .map_or("an earlier version".to_owned(), |o| {
                format!("process {}", o.pid)
            });
        tracing::info!(backup = %p.id, %owner, "repository: removing a backup left by a process that is gone");
        let dir_removed = if self.is_remote() {
            Ok(())
        } else {
            fs::remove_dir_all(&dir)
        };
        for r in [dir_removed, store::remove(&self.pin_path(&p.id))] {
            if let Err(e) = r.or_else(not_found_ok) {
                tracing::warn!(backup = %p.id, "repository: cannot remove a stale backup: {e}");
            }
        }
        if !self.is_remote() {
            let _ = fsync_dir(&self.pins_dir());
        }
    }

    /// Every pin, live or not, oldest first.
    fn pins(&self) -> Result<Vec<Pin>, RepoError> {
        let dir = self.pins_dir();
        let mut pins = Vec::new();
        for e in store::list(&dir).map_err(RepoError::io(&dir, "read directory"))? {
            let path = dir.join(&e.name);
            if e.is_dir || path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let text = match store::read(&path) {
                Ok(t) => t,
                // Removed by a commit or abort since the listing.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(RepoError::io(&path, "read")(e)),
            };
            let mut pin: Pin = serde_json::from_slice(&text).map_err(|e| RepoError::Corrupt {
                path: path.clone(),
                problem: format!("pin: {e}"),
            })?;
            // The listing's time: the file's mtime, the object's Last-Modified.
            pin.heartbeat = store::stat(&path).ok().flatten().map(|m| m.modified);
            pins.push(pin);
        }
        pins.sort_by(|a, b| (a.started, &a.id).cmp(&(b.started, &b.id)));
        Ok(pins)
    }

    /// Forgets backup `id` in progress after a crash of the process that ran it: removes its
    /// directory and its pin (its new chunks stay until gc). Never call it for a backup that is
    /// still running.
    pub fn discard_in_progress(&self, id: &str) -> Result<(), RepoError> {
        check_id(id)?;
        let _m = held(self.inner.meta_lock.lock());
        self.remove_in_progress(id)
    }

    fn remove_in_progress(&self, id: &str) -> Result<(), RepoError> {
        let dir = self.tmp_backup_dir(id);
        match if self.is_remote() {
            Ok(())
        } else {
            fs::remove_dir_all(&dir)
        } {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(RepoError::io(&dir, "remove")(e));
            }
            _ => {}
        }
        let pin = self.pin_path(id);
        match store::remove(&pin) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(RepoError::io(&pin, "remove")(e)),
            _ => Ok(()),
        }
    }

    /// Removes complete backup `id` (its chunks stay until [`Repo::gc`]). Refused while a
    /// running backup uses it as its parent.
    pub fn remove_backup(&self, id: &str) -> Result<(), RepoError> {
        check_id(id)?;
        let _m = held(self.inner.meta_lock.lock());
        let dir = self.backup_dir(id);
        if !self.backup_exists(id)? {
            return Err(RepoError::NoSuchBackup(id.to_owned()));
        }
        if let Some(pin) = self
            .in_progress()?
            .into_iter()
            .find(|p| p.parent.as_deref() == Some(id))
        {
            return Err(RepoError::InUse {
                id: id.to_owned(),
                by: pin.id,
            });
        }
        if let Some(by) = self.leased_by(id) {
            return Err(RepoError::Leased {
                id: id.to_owned(),
                by,
            });
        }
        if self.is_remote() {
            // The manifest first: without it the backup no longer lists.
            for name in ["manifest.json", "index.bin"] {
                let p = dir.join(name);
                store::remove(&p)
                    .or_else(not_found_ok)
                    .map_err(RepoError::io(&p, "remove"))?;
            }
            return Ok(());
        }
        // Renamed away first, so a crash half-way never leaves something that looks complete.
        let del = self
            .backups_dir()
            .join(format!(".del-{id}-{:08x}", fastrand::u32(..)));
        fs::rename(&dir, &del).map_err(RepoError::io(&dir, "rename"))?;
        let backups = self.backups_dir();
        fsync_dir(&backups).map_err(RepoError::io(&backups, "fsync"))?;
        fs::remove_dir_all(&del).map_err(RepoError::io(&del, "remove"))
    }
}

impl InProgress {
    /// The backup's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The parent named at begin.
    pub fn parent(&self) -> Option<&str> {
        self.parent.as_deref()
    }

    /// When the backup began (the pin's `started`).
    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// Makes the backup complete: checks that `manifest` and `index` agree with this backup
    /// and the repository and that every chunk the index names is present, syncs the chunk
    /// directories, writes and syncs `index.bin` and `manifest.json` (with `index_sha256` and
    /// `status` filled in), renames the directory into place, syncs `backups/`, removes the
    /// pin. Returns the manifest as written. On error nothing becomes visible and the backup
    /// is aborted.
    pub fn commit(mut self, manifest: &Manifest, index: &Index) -> Result<Manifest, RepoError> {
        let repo = self.repo.clone();
        self.check(manifest, index)?;
        repo.sync_dirs()?;
        let bytes = index.encode();
        let mut m = manifest.clone();
        m.index_sha256 = Index::checksum_of(&bytes)
            .expect("encoded index has a checksum")
            .to_string();
        m.status = Status::Complete;
        let json = serde_json::to_vec_pretty(&m).expect("manifest to json");
        if repo.is_remote() {
            return self.commit_remote(bytes, json).map(|()| m);
        }
        let tmp = repo.tmp_backup_dir(&self.id);
        let p = tmp.join("index.bin");
        let bytes = repo.seal_object(Object::Index, &self.id, bytes);
        write_synced(&p, &bytes).map_err(RepoError::io(&p, "write"))?;
        let p = tmp.join("manifest.json");
        let json = repo.seal_object(Object::Manifest, &self.id, json);
        write_synced(&p, &json).map_err(RepoError::io(&p, "write"))?;
        fsync_dir(&tmp).map_err(RepoError::io(&tmp, "fsync"))?;
        let dst = repo.backup_dir(&self.id);
        if dst.exists() {
            return Err(RepoError::BackupExists(self.id.clone()));
        }
        fs::rename(&tmp, &dst).map_err(RepoError::io(&dst, "rename into place"))?;
        self.done = true;
        self.heartbeat = None;
        held(repo.inner.running.lock()).remove(&self.id);
        let backups = repo.backups_dir();
        let synced = fsync_dir(&backups).map_err(RepoError::io(&backups, "fsync"));
        let pin = repo.pin_path(&self.id);
        if let Err(e) = fs::remove_file(&pin).or_else(not_found_ok) {
            // The backup is complete; a stale pin only delays gc and remove of the parent.
            tracing::warn!(
                "backup {} committed, but its pin stays: {}: {e}",
                self.id,
                pin.display()
            );
        }
        synced.map(|()| m)
    }

    /// Commit in object storage: the index, then the manifest that makes the backup complete
    /// (an object appears whole; a crash between the two leaves an index that lists as
    /// nothing, removed by the next gc).
    fn commit_remote(&mut self, index: Vec<u8>, manifest: Vec<u8>) -> Result<(), RepoError> {
        let repo = self.repo.clone();
        if repo.backup_exists(&self.id)? {
            return Err(RepoError::BackupExists(self.id.clone()));
        }
        let dir = repo.backup_dir(&self.id);
        let index = repo.seal_object(Object::Index, &self.id, index);
        let manifest = repo.seal_object(Object::Manifest, &self.id, manifest);
        for (name, bytes) in [("index.bin", index), ("manifest.json", manifest)] {
            let p = dir.join(name);
            store::write(&p, &p, &bytes).map_err(RepoError::io(&p, "write"))?;
        }
        self.done = true;
        self.heartbeat = None;
        held(repo.inner.running.lock()).remove(&self.id);
        let pin = repo.pin_path(&self.id);
        if let Err(e) = store::remove(&pin).or_else(not_found_ok) {
            tracing::warn!(
                "backup {} committed, but its pin stays: {}: {e}",
                self.id,
                pin.display()
            );
        }
        Ok(())
    }

    fn check(&self, m: &Manifest, index: &Index) -> Result<(), RepoError> {
        let invalid = |s: String| Err(RepoError::Invalid(format!("commit of {}: {s}", self.id)));
        let cs = self.repo.chunk_size();
        if m.id != self.id {
            return invalid(format!("the manifest is for backup {:?}", m.id));
        }
        if m.parent != self.parent {
            return invalid(format!(
                "the manifest names parent {:?}, begin named {:?}",
                m.parent, self.parent
            ));
        }
        if m.chunk_size != cs || index.chunk_size != cs {
            return invalid(format!(
                "chunk size {} (manifest) / {} (index); the repository uses {cs}",
                m.chunk_size, index.chunk_size
            ));
        }
        if m.device_size != index.device_size || !index.is_consistent() {
            return invalid(format!(
                "the index has {} chunks for {} bytes; the manifest says {} bytes",
                index.digests.len(),
                index.device_size,
                m.device_size
            ));
        }
        let mut seen = HashSet::new();
        let mut missing = index
            .objects()
            .filter(|(d, _)| seen.insert(*d))
            .map(|(d, _)| d)
            .filter(|d| !self.repo.has_chunk(d));
        if let Some(first) = missing.next() {
            let n = 1 + missing.count();
            return invalid(format!(
                "{n} chunk(s) named by the index are not in the repository (first: {first})"
            ));
        }
        Ok(())
    }

    /// Gives up: removes the directory and the pin. Chunks stored meanwhile stay until gc.
    pub fn abort(mut self) {
        self.cleanup();
    }

    fn cleanup(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        // The heartbeat first: in object storage it would put the pin back.
        self.heartbeat = None;
        held(self.repo.inner.running.lock()).remove(&self.id);
        if let Err(e) = self.repo.remove_in_progress(&self.id) {
            tracing::warn!("aborting backup {}: {e}", self.id);
        }
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.cleanup();
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{backup, data, repo};
    use super::super::{Digest, DigestOf};
    use super::*;

    #[test]
    fn visible_only_after_commit_and_pin_lifecycle() {
        let (_d, r) = repo();
        let img = data(3, 1);
        let b = r.begin("b1", None).unwrap();
        assert!(r.pins_dir().join("b1.json").exists());
        assert!(r.backups_dir().join(".tmp-b1").is_dir());
        assert_eq!(r.in_progress().unwrap()[0].id, "b1");
        assert!(r.backups().unwrap().is_empty());
        assert!(matches!(r.manifest("b1"), Err(RepoError::NoSuchBackup(_))));
        assert!(matches!(
            r.begin("b1", None),
            Err(RepoError::AlreadyInProgress(_))
        ));
        drop(b); // aborts
        assert!(r.in_progress().unwrap().is_empty());
        assert!(!r.backups_dir().join(".tmp-b1").exists());

        let ix = backup(&r, "b1", None, 100, &img);
        let list = r.backups().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].status, Status::Complete);
        assert_eq!(
            list[0].index_sha256,
            Index::checksum_of(&ix.encode()).unwrap().to_string()
        );
        assert_eq!(r.index("b1").unwrap(), ix);
        assert!(r.in_progress().unwrap().is_empty());
        assert!(matches!(
            r.begin("b1", None),
            Err(RepoError::BackupExists(_))
        ));
        assert!(matches!(r.begin("../x", None), Err(RepoError::BadId(_))));
        assert!(matches!(
            r.begin("b2", Some("nope")),
            Err(RepoError::NoSuchBackup(_))
        ));
    }

    #[test]
    fn abort_leaves_nothing_but_chunks() {
        let (_d, r) = repo();
        let b = r.begin("x", None).unwrap();
        let s = r.store_chunk(&data(1, 2)).unwrap();
        b.abort();
        assert!(r.backups().unwrap().is_empty());
        assert!(r.backup_ids().unwrap().is_empty());
        assert!(r.in_progress().unwrap().is_empty());
        assert!(r.has_chunk(&s.digest));
    }

    #[test]
    fn commit_refuses_bad_input_and_shows_nothing() {
        let (_d, r) = repo();
        let img = data(2, 3);
        let good = backup(&r, "p", None, 1, &img);
        let m = r.manifest("p").unwrap();

        let b = r.begin("c", Some("p")).unwrap();
        let mut ix = good.clone();
        ix.digests[1] = Digest::of(b"not stored");
        let mut mc = m.clone();
        mc.id = "c".into();
        mc.parent = Some("p".into());
        let e = b.commit(&mc, &ix).unwrap_err().to_string();
        assert!(
            e.contains("1 chunk(s)") && e.contains("not in the repository"),
            "{e}"
        );
        assert_eq!(r.backup_ids().unwrap(), ["p"]);
        assert!(r.in_progress().unwrap().is_empty());

        let b = r.begin("c", Some("p")).unwrap();
        let e = b.commit(&m, &good).unwrap_err().to_string(); // manifest of "p"
        assert!(e.contains("for backup \"p\""), "{e}");
        let b = r.begin("c", None).unwrap();
        let mut short = good.clone();
        short.digests.pop();
        let mut mc2 = mc.clone();
        mc2.parent = None;
        assert!(b.commit(&mc2, &short).is_err());
        assert_eq!(r.backup_ids().unwrap(), ["p"]);
    }

    #[test]
    fn remove_refuses_a_running_backups_parent() {
        let (_d, r) = repo();
        backup(&r, "p", None, 1, &data(1, 4));
        let running = r.begin("c", Some("p")).unwrap();
        let e = r.remove_backup("p").unwrap_err();
        assert!(
            e.to_string()
                .contains("in use as the parent of running backup \"c\""),
            "{e}"
        );
        assert!(r.manifest("p").is_ok());
        running.abort();
        r.remove_backup("p").unwrap();
        assert!(r.backups().unwrap().is_empty());
        assert!(matches!(
            r.remove_backup("p"),
            Err(RepoError::NoSuchBackup(_))
        ));
    }

    #[test]
    fn discard_after_a_crash() {
        let (_d, r) = repo();
        let b = r.begin("lost", None).unwrap();
        std::mem::forget(b); // the process "crashed"
        assert_eq!(r.in_progress().unwrap().len(), 1);
        r.discard_in_progress("lost").unwrap();
        assert!(r.in_progress().unwrap().is_empty());
        assert!(!r.backups_dir().join(".tmp-lost").exists());
    }

    #[test]
    fn a_pin_whose_process_is_gone_is_removed_with_its_directory() {
        let (_d, r) = repo();
        backup(&r, "p", None, 1, &data(1, 4));
        let mine = r.begin("mine", None).unwrap();
        // Two backups of processes that are gone: one killed (its pid since reaped), one
        // from a version that wrote no owner. Both pinned the parent "p".
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone_pid = child.id();
        child.wait().unwrap();
        let me = Owner::current().unwrap();
        for (id, owner) in [
            (
                "killed",
                Some(Owner {
                    pid: gone_pid,
                    ..me.clone()
                }),
            ),
            ("old", None),
        ] {
            let pin = Pin {
                id: id.into(),
                parent: Some("p".into()),
                started: SystemTime::now(),
                owner,
                heartbeat: None,
            };
            fs::write(r.pin_path(id), serde_json::to_vec(&pin).unwrap()).unwrap();
            fs::create_dir(r.tmp_backup_dir(id)).unwrap();
        }
        let ids = |r: &Repo| -> Vec<String> {
            let mut v: Vec<String> = r.in_progress().unwrap().into_iter().map(|p| p.id).collect();
            v.sort();
            v
        };
        // The killed one goes at once; the one with no owner stays until the next open.
        assert_eq!(ids(&r), ["mine", "old"]);
        assert!(!r.pin_path("killed").exists() && !r.tmp_backup_dir("killed").exists());
        let r = Repo::open(r.root()).unwrap();
        assert_eq!(ids(&r), ["mine"]);
        assert!(!r.pin_path("old").exists() && !r.tmp_backup_dir("old").exists());
        // The parent is free again once the live backup ends.
        mine.abort();
        r.remove_backup("p").unwrap();
    }

    #[test]
    fn a_pin_of_another_host_lives_while_its_heartbeat_is_fresh() {
        let (_d, r) = repo();
        backup(&r, "p", None, 1, &data(1, 5));
        // A backup of another host sharing the repository: its process is not visible here.
        let owner = Owner {
            host: "another-host".into(),
            pid: u32::MAX,
            ..Owner::current().unwrap()
        };
        let pin = Pin {
            id: "remote".into(),
            parent: Some("p".into()),
            started: SystemTime::now(),
            owner: Some(owner),
            heartbeat: None,
        };
        fs::write(r.pin_path("remote"), serde_json::to_vec(&pin).unwrap()).unwrap();
        fs::create_dir(r.tmp_backup_dir("remote")).unwrap();
        let live = r.in_progress().unwrap();
        assert_eq!(live.len(), 1);
        assert!(live[0].heartbeat.is_some());
        // Its parent is protected, and a reopen leaves it.
        let e = r.remove_backup("p").unwrap_err();
        assert!(matches!(e, RepoError::InUse { .. }), "{e}");
        let r = Repo::open(r.root()).unwrap();
        assert!(r.pin_path("remote").exists() && r.tmp_backup_dir("remote").exists());
        // Silent for longer than the lease: gone, with its directory.
        let f = fs::File::open(r.pin_path("remote")).unwrap();
        f.set_modified(SystemTime::now() - PIN_LEASE - Duration::from_secs(1))
            .unwrap();
        assert!(r.in_progress().unwrap().is_empty());
        assert!(!r.pin_path("remote").exists() && !r.tmp_backup_dir("remote").exists());
        r.remove_backup("p").unwrap();
    }

    #[test]
    fn a_running_backup_refreshes_its_pin() {
        let (_d, r) = repo();
        let b = r.begin("hb", None).unwrap();
        let pin = r.pin_path("hb");
        let old = SystemTime::now() - Duration::from_secs(3600);
        fs::File::open(&pin).unwrap().set_modified(old).unwrap();
        // The heartbeat thread runs every PIN_HEARTBEAT; wait for one round at most.
        let deadline = std::time::Instant::now() + PIN_HEARTBEAT + Duration::from_secs(10);
        while fs::metadata(&pin).unwrap().modified().unwrap() == old {
            assert!(std::time::Instant::now() < deadline, "no heartbeat");
            std::thread::sleep(Duration::from_millis(200));
        }
        b.abort();
    }
}
