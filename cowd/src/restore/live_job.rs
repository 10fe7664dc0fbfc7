//! [`LiveRestore`]: one restore "on the fly": its record, its device and export, its filler.
//!
//! ```text
//!   STATE/restores/ID.json   the record: what is restored where, served as which export, state
//!   STATE/restores/ID.map    the restored map (see `restored`), while blocks are missing
//! ```
//!
//! Start: lease the generation → create (sparse, 0600) or open the destination → a map with
//! what needs no restore, persisted → the record, "running" → the export, new or in the place
//! of the idle export it rolls back → the filler's thread. Answered then: the device is usable
//! while the filler runs.
//!
//! A daemon start resumes every record not done from its persisted map (`resume`). When every
//! chunk is restored the map is final, the generation's lease is let go and the record says
//! "done"; the export stays served from the destination (and is served again at the next start
//! from its record, until `cowctl unserve`). A rollback's record is removed then: its export is
//! in the configuration.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime};

use cowd_api::restores::{RestoreState, RestoreStatus};
use cowd_api::units::thousandths;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::ending::{Ending, RestoreEnd};
use super::filler::{Filled, Filler};
use super::live::LiveDevice;
use super::restored::RestoredMap;
use super::source::{ChunkSource, Generation};
use crate::device::{BlockDevice, FileDevice, FileOptions};
use crate::export::{Export, Exports, Origin};
use crate::repo::Repo;

/// Bytes per bit of the restored map: a client's aligned 4 KiB write never needs the
/// repository.
pub const MAP_BLOCK: u32 = 4096;

/// A live restore's record (`STATE/restores/ID.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveRecord {
    pub id: String,
    pub backup: String,
    pub repo: PathBuf,
    pub to: PathBuf,
    pub export: String,
    /// Into an export of the configuration (a rollback), not a new one.
    pub rollback: bool,
    /// The destination was created for the restore (reads as zeroes where nothing was written).
    pub fresh: bool,
    /// The generation's chunk size and bytes (so a restore can be served without it).
    pub chunk_size: u32,
    pub size: u64,
    pub max_rate: Option<u64>,
    pub state: RestoreState,
    pub reason: Option<String>,
    pub started_time: String,
}

/// What a live restore is asked to do.
#[derive(Debug)]
pub struct LiveStart {
    pub repo: Repo,
    pub backup: String,
    /// The destination; `None` for a rollback of `export` (its own device).
    pub to: Option<PathBuf>,
    pub export: String,
    pub max_rate: Option<u64>,
}

/// Why a live restore did not start: the request (400), the state of things (409), or the
/// machine (500).
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Failed(String),
}

/// One live restore (see the module documentation).
#[derive(Debug)]
pub struct LiveRestore {
    record: Mutex<LiveRecord>,
    dir: PathBuf,
    device: Arc<LiveDevice>,
    filler: Arc<Filler>,
    started: Instant,
    end: Ending,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn record_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

fn map_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.map"))
}

/// Writes `r` as its record file.
fn save(dir: &Path, r: &LiveRecord) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?;
    crate::files::write_atomic(&record_path(dir, &r.id), &text)
}

/// Opens (or creates, sparse and private) the destination of `size` bytes or more.
fn open_destination(to: &Path, size: u64) -> Result<(FileDevice, bool), LiveError> {
    let opts = FileOptions::default();
    let fail = |e: String| LiveError::Invalid(format!("{}: {e}", to.display()));
    if std::fs::symlink_metadata(to).is_ok() {
        crate::files::check_in_place(to).map_err(|e| fail(e.to_string()))?;
        let dev = FileDevice::open(to, opts).map_err(|e| LiveError::Conflict(e.to_string()))?;
        if dev.size() < size {
            return Err(fail(format!(
                "holds {} bytes, the backup {size}: restore to a larger file or device",
                dev.size()
            )));
        }
        return Ok((dev, false));
    }
    let create = || -> std::io::Result<()> {
        let f = crate::files::create_private(to)?;
        f.set_len(size)?;
        f.sync_all()?;
        let dir = to.parent().filter(|d| !d.as_os_str().is_empty());
        crate::files::sync_dir(dir.unwrap_or(Path::new(".")))
    };
    create().map_err(|e| fail(e.to_string()))?;
    match FileDevice::open(to, opts) {
        Ok(dev) => Ok((dev, true)),
        Err(e) => {
            let _ = std::fs::remove_file(to);
            Err(LiveError::Failed(e.to_string()))
        }
    }
}

impl LiveRestore {
    /// Starts live restore `id` (records in `dir`), adding its export to `exports`.
    pub fn start(
        dir: &Path,
        id: String,
        req: LiveStart,
        exports: &Exports,
        workers: usize,
    ) -> Result<Arc<LiveRestore>, LiveError> {
        let existing = exports.named(&req.export);
        let rollback = existing.is_some();
        if let Some(e) = &existing {
            if *e.origin() != Origin::Configured {
                return Err(LiveError::Conflict(format!(
                    "export {} exists and is not a device of the configuration; choose another name",
                    req.export
                )));
            }
            if let Some(to) = &req.to {
                if !crate::files::same_device(to, e.path()) {
                    return Err(LiveError::Conflict(format!(
                        "export {} serves {}, not {}: a live restore into an existing export restores its own device (omit --to)",
                        req.export,
                        e.path().display(),
                        to.display()
                    )));
                }
            }
            if e.connections() > 0 {
                return Err(LiveError::Conflict(format!(
                    "export {} has {} client(s) connected; a live restore into it replaces its contents, so disconnect them first",
                    req.export,
                    e.connections()
                )));
            }
        } else {
            let to = req.to.as_ref().ok_or_else(|| {
                LiveError::Invalid(format!(
                    "no export {}: give --to PATH for a new one",
                    req.export
                ))
            })?;
            if let Some(e) = exports
                .all()
                .into_iter()
                .find(|e| crate::files::same_device(e.path(), to))
            {
                return Err(LiveError::Conflict(format!(
                    "{} is served by this cowd as export {}; restore to another device, or into that export",
                    to.display(),
                    e.name()
                )));
            }
        }
        let user = format!("live restore {id} (export {})", req.export);
        let source = Generation::open(req.repo.clone(), &req.backup, &user)
            .map_err(|e| LiveError::Invalid(e.to_string()))?;
        let size = source.device_size();
        let (base, path, fresh): (Arc<dyn BlockDevice>, PathBuf, bool) = match &existing {
            Some(e) => {
                if e.size() < size {
                    return Err(LiveError::Invalid(format!(
                        "export {} holds {} bytes, backup {} {size}",
                        req.export,
                        e.size(),
                        req.backup
                    )));
                }
                (e.engine().device().clone(), e.path().to_owned(), false)
            }
            None => {
                let to = req.to.clone().unwrap_or_default();
                let (dev, fresh) = open_destination(&to, size)?;
                (Arc::new(dev), to, fresh)
            }
        };
        let blocks = map_blocks(base.size()).map_err(LiveError::Invalid)?;
        let map = RestoredMap::new(MAP_BLOCK, blocks, Some(map_path(dir, &id)));
        LiveDevice::premark(&map, &source, fresh);
        let record = LiveRecord {
            id: id.clone(),
            backup: req.backup.clone(),
            repo: req.repo.root().to_owned(),
            to: path.clone(),
            export: req.export.clone(),
            rollback,
            fresh,
            chunk_size: source.chunk_size(),
            size,
            max_rate: req.max_rate,
            state: RestoreState::Running,
            reason: None,
            started_time: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        };
        let chunk_size = source.chunk_size();
        let device = Arc::new(LiveDevice::new(
            base.clone(),
            Some(Arc::new(source)),
            chunk_size,
            size,
            map,
            fresh,
        ));
        // The map and the record on disk before anyone can write: a crash from here resumes.
        let durable = device
            .flush()
            .map_err(|e| e.to_string())
            .and_then(|()| save(dir, &record).map_err(|e| e.to_string()));
        if let Err(e) = durable {
            remove_files(dir, &id);
            return Err(LiveError::Failed(format!("cannot record the restore: {e}")));
        }
        let job = LiveRestore::new(dir, record, device);
        if let Err(e) = job.serve(exports, existing.is_some()) {
            remove_files(dir, &id);
            return Err(LiveError::Conflict(e));
        }
        job.launch(workers);
        info!(restore = %id, export = %req.export, "live restore serving");
        Ok(job)
    }

    /// Resumes the restore of `record` after a daemon start; a restore that is done only gets
    /// its export back.
    pub fn resume(
        dir: &Path,
        record: LiveRecord,
        exports: &Exports,
        workers: usize,
    ) -> Result<Option<Arc<LiveRestore>>, String> {
        if record.state == RestoreState::Done {
            if !record.rollback {
                let dev = FileDevice::open(&record.to, FileOptions::default())
                    .map_err(|e| e.to_string())?;
                let export =
                    Export::of_restore(&record.export, &record.to, &record.id, Arc::new(dev));
                exports.add(export).map_err(|e| e.to_string())?;
            }
            return Ok(None);
        }
        let base: Arc<dyn BlockDevice> = if record.rollback {
            let e = exports
                .named(&record.export)
                .filter(|e| *e.origin() == Origin::Configured && e.path() == record.to)
                .ok_or_else(|| {
                    format!(
                        "export {} of {} is no longer in the configuration",
                        record.export,
                        record.to.display()
                    )
                })?;
            e.engine().device().clone()
        } else {
            Arc::new(
                FileDevice::open(&record.to, FileOptions::default()).map_err(|e| e.to_string())?,
            )
        };
        let blocks = map_blocks(base.size())?;
        let map = RestoredMap::load(&map_path(dir, &record.id), MAP_BLOCK, blocks)
            .map_err(|e| e.to_string())?;
        let user = format!("live restore {} (export {})", record.id, record.export);
        let source = Repo::open(&record.repo)
            .map_err(|e| e.to_string())
            .and_then(|r| Generation::open(r, &record.backup, &user).map_err(|e| e.to_string()));
        let (source, unavailable) = match source {
            Ok(s) => (Some(Arc::new(s) as Arc<dyn ChunkSource>), None),
            Err(e) => (None, Some(e)),
        };
        let (chunk_size, size) = (record.chunk_size, record.size);
        let device = Arc::new(LiveDevice::new(
            base,
            source,
            chunk_size,
            size,
            map,
            record.fresh,
        ));
        let job = LiveRestore::new(dir, record, device);
        job.serve(exports, job.record().rollback)?;
        match unavailable {
            None => job.launch(workers),
            Some(why) => job.end_with(
                RestoreState::Failed,
                Some(format!(
                    "cannot resume: {why}; blocks not restored answer EIO (the rest is served)"
                )),
            ),
        }
        Ok(Some(job))
    }

    fn new(dir: &Path, record: LiveRecord, device: Arc<LiveDevice>) -> Arc<LiveRestore> {
        let filler = Arc::new(Filler::new(device.clone(), record.max_rate));
        Arc::new(LiveRestore {
            record: Mutex::new(record),
            dir: dir.to_owned(),
            device,
            filler,
            started: Instant::now(),
            end: Ending::default(),
            thread: Mutex::new(None),
        })
    }

    /// Adds the export (or puts it in the place of the rolled-back one).
    fn serve(&self, exports: &Exports, replace: bool) -> Result<(), String> {
        let r = self.record();
        if replace {
            let export = Export::new(&r.export, &r.to, self.device.clone(), false);
            let (_, new) = exports.replace(export)?;
            new.engine().cbt().invalidate(&format!(
                "the export was rolled back to backup {} (live restore {})",
                r.backup, r.id
            ));
        } else {
            let export = Export::of_restore(&r.export, &r.to, &r.id, self.device.clone());
            exports.add(export).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Runs the filler on its own thread to the end.
    fn launch(self: &Arc<Self>, workers: usize) {
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("cowd-live-restore".into())
            .spawn(move || {
                let filled = me.filler.run(workers);
                me.filled(filled);
            });
        match spawned {
            Ok(h) => *self.thread.lock().unwrap() = Some(h),
            Err(e) => self.end_with(RestoreState::Failed, Some(format!("cannot start: {e}"))),
        }
    }

    /// Handles the filler's end.
    fn filled(&self, filled: Filled) {
        let id = self.id();
        match filled {
            Filled::Complete => match self.device.finish() {
                Ok(()) => {
                    let r = self.record();
                    let saved = if r.rollback {
                        std::fs::remove_file(record_path(&self.dir, &id))
                    } else {
                        self.update(RestoreState::Done, None)
                    };
                    if let Err(e) = saved {
                        warn!(restore = %id, error = %e, "cannot update the record");
                    }
                    let _ = std::fs::remove_file(map_path(&self.dir, &id));
                    info!(restore = %id, "live restore complete");
                    self.end_with(RestoreState::Done, None);
                }
                Err(e) => self.fail(format!("cannot finish: {e}")),
            },
            Filled::Stopped => {
                if let Err(e) = self.device.flush() {
                    warn!(restore = %id, error = %e, "cannot persist the restored map");
                }
            }
            Filled::Incomplete(n) => {
                let first = self.device.failures().into_values().next();
                let _ = self.device.flush();
                let why = match first {
                    Some(f) => format!(
                        "{n} chunk(s) could not be restored, first {f}; their blocks answer EIO, the rest is served (a restart of cowd retries them)"
                    ),
                    None => "blocks are still missing".to_owned(),
                };
                self.fail(why);
            }
        }
    }

    fn fail(&self, why: String) {
        warn!(restore = %self.id(), error = %why, "live restore failed");
        if let Err(e) = self.update(RestoreState::Failed, Some(why.clone())) {
            warn!(restore = %self.id(), error = %e, "cannot update the record");
        }
        self.end_with(RestoreState::Failed, Some(why));
    }

    fn update(&self, state: RestoreState, reason: Option<String>) -> std::io::Result<()> {
        let mut r = self.record.lock().unwrap();
        r.state = state;
        r.reason = reason;
        save(&self.dir, &r)
    }

    fn end_with(&self, state: RestoreState, reason: Option<String>) {
        self.end.set(RestoreEnd {
            state,
            reason,
            elapsed: self.started.elapsed(),
        });
    }

    /// A copy of the record.
    pub fn record(&self) -> LiveRecord {
        self.record.lock().unwrap().clone()
    }

    pub fn id(&self) -> String {
        self.record.lock().unwrap().id.clone()
    }

    /// The export this restore serves.
    pub fn export(&self) -> String {
        self.record.lock().unwrap().export.clone()
    }

    /// Still restoring (the filler runs).
    pub fn running(&self) -> bool {
        self.end.get().is_none()
    }

    /// Restores `len` bytes at `offset` before the rest.
    pub fn prioritize(&self, offset: u64, len: u64) {
        self.filler.prioritize(offset, len);
    }

    /// Stops the filler (daemon stop), persisting the map; the record stays as it is, so the
    /// next start resumes.
    pub fn stop(&self) {
        self.filler.stop();
        if let Some(h) = self.thread.lock().unwrap().take() {
            let _ = h.join();
        }
        if let Err(e) = self.device.flush() {
            warn!(restore = %self.id(), error = %e, "cannot persist the restored map");
        }
    }

    /// Ends the restore for good because its export was removed: the destination stays as far
    /// as it got, the record and the map go.
    pub fn removed(&self) {
        self.stop();
        let id = self.id();
        remove_files(&self.dir, &id);
        self.device.drop_source("its export was removed");
        let to = self.record().to;
        self.end_with(
            RestoreState::Failed,
            Some(format!(
                "stopped: its export was removed; {} is restored only as far as it got",
                to.display()
            )),
        );
    }

    /// Waits until the restore ends or `timeout` passes.
    pub fn wait(&self, timeout: std::time::Duration) -> RestoreStatus {
        self.end.wait(timeout);
        self.status()
    }

    pub fn status(&self) -> RestoreStatus {
        let r = self.record();
        let end = self.end.get();
        let elapsed = end
            .as_ref()
            .map_or_else(|| self.started.elapsed(), |e| e.elapsed);
        let c = &self.device.counters;
        let bytes = c.bytes.load(Ordering::Relaxed);
        let chunks = self.device.chunks();
        let done = (0..chunks)
            .filter(|&i| self.device.chunk_restored(i))
            .count();
        let state = end.as_ref().map_or(RestoreState::Running, |e| e.state);
        let note = (state == RestoreState::Done).then(|| {
            format!(
                "export {} is served from {} alone; the repository is no longer needed",
                r.export,
                r.to.display()
            )
        });
        RestoreStatus {
            id: r.id,
            backup: r.backup,
            to: r.to.display().to_string(),
            state,
            reason: end.and_then(|e| e.reason),
            chunks_total: chunks as u64,
            chunks_done: done as u64,
            bytes_written: bytes,
            elapsed_s: thousandths(elapsed.as_secs_f64()),
            mib_s: thousandths(bytes as f64 / elapsed.as_secs_f64().max(1e-3) / f64::from(1 << 20)),
            started_time: r.started_time,
            live: true,
            export: Some(r.export),
            chunks_on_demand: c.on_demand.load(Ordering::Relaxed),
            chunks_failed: self.device.failures().len() as u64,
            note,
        }
    }
}

fn remove_files(dir: &Path, id: &str) {
    let _ = std::fs::remove_file(record_path(dir, id));
    let _ = std::fs::remove_file(map_path(dir, id));
}

/// Blocks of the restored map for a destination of `size` bytes.
fn map_blocks(size: u64) -> Result<u32, String> {
    u32::try_from(size.div_ceil(u64::from(MAP_BLOCK))).map_err(|_| {
        format!("a live restore serves at most 16 TiB; the destination holds {size} bytes")
    })
}

/// Reads the records in `dir`, oldest id first; unreadable ones are reported, not fatal.
pub fn records(dir: &Path) -> (Vec<LiveRecord>, Vec<String>) {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (out, bad);
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        match std::fs::read(&p)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<LiveRecord>(&b).map_err(|e| e.to_string()))
        {
            Ok(r) => out.push(r),
            Err(e) => bad.push(format!("{}: {e}", p.display())),
        }
    }
    out.sort_by(|a, b| a.started_time.cmp(&b.started_time).then(a.id.cmp(&b.id)));
    (out, bad)
}
