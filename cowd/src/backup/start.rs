//! Starting a backup, in order; any failure undoes what was set up and changes nothing:
//!
//! ```text
//!  validate (pure: the request against the defaults and the export's size)
//!   ── acquire: claim the export, plan the generation, open the target, create the
//!      container, record "starting"            (each undone by the `Acquired` guard)
//!   ── quiesce (quiet period | freeze | none) ── take T ── thaw
//!   ── launch: narrow, record, track, start the mover   (the guard is disarmed)
//! ```
//!
//! A backup to a copy target (`--to copy-target:NAME`) has no mover of its own: at launch the
//! image at T is handed to the data movers as one job (`copy_job`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::{info, warn};

use super::copy_job::{self, CopyLink, CopyTargetRef};
use super::generation::{self, Planned};
use super::manager::{Backups, Defaults, StartError};
use crate::device::OpMask;
use crate::export::Export;
use crate::mover::{self, MoverConfig};
use crate::snapshot::container::{Container, Protected};
use crate::snapshot::point::{self, Plan};
use crate::snapshot::quiesce::{self, Frozen};
use crate::snapshot::session::{Policy, Report, Session, StartingReport, State};
use crate::targets::{BackupTarget, RawImage};
use cowd_api::backups::{BackupStarted, StartBackup, TargetFaults};

/// A start request, checked and completed with the daemon's defaults.
#[derive(Debug, Clone)]
pub(super) struct Checked {
    pub block_size: u32,
    /// The repository of a generation; `None` for a raw image at `to` or a copy target.
    pub repo: Option<PathBuf>,
    /// The copy target the data movers write (`--to copy-target:NAME`).
    pub copy_target: Option<String>,
    pub to: PathBuf,
    pub policy: Policy,
    pub quiet_period: Duration,
    pub quiet_timeout: Duration,
    pub mover: MoverConfig,
}

fn invalid(why: impl Into<String>) -> StartError {
    StartError::Invalid(why.into())
}

fn secs(name: &str, v: Option<f64>, default: Duration) -> Result<Duration, StartError> {
    match v {
        None => Ok(default),
        Some(s) => Duration::try_from_secs_f64(s)
            .map_err(|_| invalid(format!("{name} {s}: not a duration in seconds"))),
    }
}

/// Checks `r` for an export of `size` bytes; touches nothing.
pub(super) fn validate(d: &Defaults, size: u64, r: &StartBackup) -> Result<Checked, StartError> {
    let block_size = r.block_size.unwrap_or(d.block_size);
    if !block_size.is_power_of_two() || !(4096..=4 << 20).contains(&block_size) {
        return Err(invalid(format!(
            "block size {block_size}: must be a power of two from 4 KiB to 4 MiB"
        )));
    }
    let blocks = size.div_ceil(u64::from(block_size));
    if blocks > u64::from(u32::MAX) {
        return Err(invalid(format!(
            "the export has {blocks} blocks of {block_size} bytes, more than 2^32; use a larger block size"
        )));
    }
    let repo = match (&r.repo, r.to.is_empty(), &d.repo) {
        (Some(_), false, _) => {
            return Err(invalid("give either --to PATH or --repo DIR, not both"));
        }
        (Some(p), true, _) => Some(PathBuf::from(p)),
        (None, true, Some(dflt)) => Some(dflt.clone()),
        (None, true, None) => {
            return Err(invalid(
                "no target: give --to PATH or --repo DIR (or configure a default repository)",
            ));
        }
        (None, false, _) => None,
    };
    let copy_target = r.to.strip_prefix(copy_job::PREFIX).map(str::to_owned);
    if let Some(name) = &copy_target {
        let not_for = |what: &str| {
            invalid(format!(
                "{what} is not for a copy target: the data movers write {}{name}",
                copy_job::PREFIX
            ))
        };
        if name.is_empty() {
            return Err(invalid(
                "copy-target: needs the name of a copy target of cowd.toml (copy-target:NAME)",
            ));
        }
        if r.mode.is_some() || r.blocks.is_some() {
            return Err(not_for("a repository backup's mode or block choice"));
        }
        if r.max_rate_mib_s.is_some() {
            return Err(not_for("--max-rate (it paces cowd's own mover)"));
        }
        if r.target_faults.is_some() {
            return Err(not_for("target_faults (a raw image's testing aid)"));
        }
    }
    let p = d.policy;
    let policy = Policy {
        high_watermark: r.high_watermark.unwrap_or(p.high_watermark),
        low_watermark: r.low_watermark.unwrap_or(p.low_watermark),
        cbw_timeout: secs("cbw-timeout", r.cbw_timeout_s, p.cbw_timeout)?,
        on_overflow: r.on_overflow.unwrap_or(p.on_overflow),
        neighbours: r.neighbours.unwrap_or(p.neighbours),
        max_delay: p.max_delay,
    };
    policy.check().map_err(StartError::Invalid)?;
    if r.target_faults.is_some() && !d.allow_fault_injection {
        return Err(invalid(
            "target_faults needs a daemon started with --allow-fault-injection (a testing aid)",
        ));
    }
    let mut mover = d.mover;
    if let Some(mib) = r.max_rate_mib_s {
        if !(mib > 0.0 && mib.is_finite()) {
            return Err(invalid(format!("max rate {mib} MiB/s: must be positive")));
        }
        mover.max_rate = Some((mib * f64::from(1 << 20)) as u64);
    }
    Ok(Checked {
        block_size,
        repo,
        copy_target,
        to: PathBuf::from(&r.to),
        policy,
        quiet_period: secs("quiet-period", r.quiet_period_s, d.quiet_period)?,
        quiet_timeout: secs("quiet-timeout", r.quiet_timeout_s, d.quiet_timeout)?,
        mover,
    })
}

fn session_id(export: &str) -> String {
    let t = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let stamp: String = t.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let name: String = crate::snapshot::cbt::file_safe(export)
        .chars()
        .take(40)
        .collect();
    format!("{name}-{stamp}-{:04x}", fastrand::u16(..))
}

/// What a start has set up before T. Dropped while armed (a later step failed), it disposes of
/// the container, aborts the target and removes the record; it always releases the claim on
/// the export.
struct Acquired<'a> {
    backups: &'a Backups,
    export: String,
    id: String,
    planned: Option<Planned>,
    target: Arc<dyn BackupTarget>,
    /// Moved into the snapshot point's plan (which disposes of it if T fails).
    container: Option<Container>,
    armed: bool,
}

impl Drop for Acquired<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Some(c) = &self.container {
                c.dispose();
            }
            self.target.abort();
            self.backups.records.remove(&self.id);
        }
        self.backups.release_claim(&self.export);
    }
}

fn raw_target(
    to: &Path,
    size: u64,
    faults: Option<&TargetFaults>,
) -> Result<Arc<dyn BackupTarget>, StartError> {
    let raw = RawImage::create(to, size)?.with_checksum();
    let Some(f) = faults else {
        return Ok(Arc::new(raw));
    };
    let (raw, control) = raw.with_faults();
    if let Some(ms) = f.delay_ms {
        control.delay(OpMask::ALL, Duration::from_millis(ms));
    }
    if let Some(n) = f.fail_after_writes {
        control.fail_after(OpMask::WRITE | OpMask::ZERO, n);
    }
    Ok(Arc::new(raw))
}

impl Backups {
    /// Starts a backup of `export`; returns once the snapshot point is taken.
    pub fn start(
        &self,
        export: &Arc<Export>,
        r: &StartBackup,
        link: &CopyLink,
    ) -> Result<BackupStarted, StartError> {
        let mut c = validate(&self.defaults, export.size(), r)?;
        if let Some(name) = &c.copy_target {
            let targets = link.copies.targets();
            if !targets.iter().any(|t| &t.name == name) {
                let known: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
                return Err(invalid(if known.is_empty() {
                    format!("no copy target named {name}: cowd.toml has no [[copy_target]]")
                } else {
                    format!(
                        "no copy target named {name} (cowd.toml has {})",
                        known.join(", ")
                    )
                }));
            }
        }
        let mut acquired = self.acquire(export, r, &mut c)?;
        let frozen = match (&r.freeze, r.no_quiesce) {
            (_, true) => None,
            (Some(m), false) => Some((
                Frozen::freeze(Path::new(m), self.defaults.freeze_limit)?,
                format!("freeze {m}"),
            )),
            (None, false) => None,
        };
        let quiesce = match &frozen {
            Some((_, how)) => how.clone(),
            None if r.no_quiesce => "none".to_owned(),
            None => {
                let waited = quiesce::wait_quiet(export.engine(), c.quiet_period, c.quiet_timeout)?;
                format!(
                    "quiet period {:?} (waited {:.1} s)",
                    c.quiet_period,
                    waited.as_secs_f64()
                )
            }
        };
        let plan = Plan {
            id: acquired.id.clone(),
            export: acquired.export.clone(),
            block_size: c.block_size,
            container: acquired.container.take().expect("acquired a container"),
            target: acquired.target.clone(),
            policy: c.policy,
            // The movers copy every byte of the device (a copy target is not known to read
            // zeroes), so holes at T stay pending too.
            skip_holes: c.copy_target.is_none(),
            quiesce,
        };
        let taken = point::take(export.engine(), plan, self.defaults.drain_limit);
        let window = frozen.map(|(f, _)| f.thaw());
        let session = taken?;
        if let Some((from, to)) = window {
            session.set_freeze_window(from, to);
            let held = to.duration_since(from).unwrap_or_default();
            info!(session = %session.id, ?held, "filesystem was frozen for the snapshot point");
        }
        self.launch(export, &mut acquired, session, &c, link)
    }

    /// Claims the export and sets up the generation plan, the target, the container and the
    /// "starting" record, under a guard that undoes them.
    fn acquire<'a>(
        &'a self,
        export: &Arc<Export>,
        r: &StartBackup,
        c: &mut Checked,
    ) -> Result<Acquired<'a>, StartError> {
        let name = export.name().to_owned();
        self.claim(&name)?;
        let id = session_id(&name);
        let mut acquired = Acquired {
            backups: self,
            export: name.clone(),
            id: id.clone(),
            planned: None,
            target: Arc::new(NoTarget),
            container: None,
            armed: false,
        };
        let protected = Protected::of(export.path())
            .map_err(|e| invalid(format!("{}: {e}", export.path().display())))?;
        if c.repo.is_none()
            && c.copy_target.is_none()
            && Protected::of(&c.to).is_ok_and(|t| t.dev == protected.dev && t.ino == protected.ino)
        {
            return Err(invalid(format!(
                "{}: the target is the exported device itself",
                r.to
            )));
        }
        if let Some(name) = &c.copy_target {
            acquired.target = Arc::new(CopyTargetRef(name.clone()));
        } else if let Some(repo) = &c.repo {
            let p = generation::prepare(
                repo,
                &name,
                export.size(),
                export.engine(),
                &id,
                c.block_size,
                r.mode.unwrap_or_default(),
                r.blocks.unwrap_or_default(),
            )?;
            c.mover.align = u64::from(p.target.chunk_size());
            // The target queues whole chunks for its workers itself: a deeper queue in the
            // mover only held more 4 MiB runs (no faster: 1.96 s for the bench's full backup).
            c.mover.queue = c.mover.queue.min(1);
            acquired.target = p.target.clone();
            acquired.planned = Some(p);
        } else {
            acquired.target = raw_target(&c.to, export.size(), r.target_faults.as_ref())?;
        }
        acquired.armed = true;
        let container_path = r
            .container
            .as_ref()
            .map(PathBuf::from)
            .unwrap_or_else(|| self.defaults.container_dir.join(format!("{id}.cow")));
        let size = r.container_size.unwrap_or(self.defaults.container_size);
        let container = Container::create(&container_path, size, c.block_size, &id, &protected)?;
        // Until T is taken a crash must still leave a trace, so the next start can clean the
        // target and container up: a record saying "running" (see `record::recover`).
        let target = acquired.target.describe();
        let starting = Report::starting(&id, &name, &target, container.path(), c.block_size);
        acquired.container = Some(container);
        if let Err(e) = self.records.save(&starting) {
            warn!(error = %e, "cannot write the backup record");
        }
        Ok(acquired)
    }

    /// After T: narrows a generation, records and tracks the session, starts its mover.
    fn launch(
        &self,
        export: &Arc<Export>,
        acquired: &mut Acquired<'_>,
        session: Arc<Session>,
        c: &Checked,
        link: &CopyLink,
    ) -> Result<BackupStarted, StartError> {
        if let Some(p) = &acquired.planned {
            if let Err(e) = generation::narrow(&session, export.engine(), p) {
                session.fail(e.to_string());
            }
        }
        let report = session.report();
        if let Err(e) = self.records.save(&report) {
            warn!(error = %e, "cannot write the backup record");
        }
        self.track(session.clone());
        // From here on the session's end (its mover's last step) cleans up.
        acquired.armed = false;
        let (records, book, engine) = (
            self.records.clone(),
            self.book.clone(),
            export.engine().clone(),
        );
        let on_end = Box::new(move |s: Arc<Session>| {
            engine.remove(&s.id);
            match s.state() {
                State::Done => engine.cbt().complete(&s.id),
                _ => engine.cbt().abort(&s.id),
            }
            let mut r = s.report();
            if let Err(e) = records.save(&r) {
                warn!(error = %e, "cannot write the backup record");
                // Never report done what a restart would report failed: the record on disk
                // still says running, which recovery turns into failed.
                if r.state == State::Done {
                    r.state = State::Failed;
                    r.reason = Some(format!("the end of the backup could not be recorded: {e}"));
                }
            }
            book.end(s, r);
        });
        let dev = export.engine().device().clone();
        let spawned = match &c.copy_target {
            Some(name) => copy_job::spawn(session.clone(), export, link, name, on_end),
            None => mover::spawn(session.clone(), dev, c.mover, on_end).map(drop),
        };
        if let Err(e) = spawned {
            session.fail(format!("cannot start the mover: {e}"));
            export.engine().remove(&session.id);
            export.engine().cbt().abort(&session.id);
            session.container.dispose();
            session.target.abort();
            let r = session.report();
            let _ = self.records.save(&r);
            self.book.end(session, r);
            return Err(StartError::Mover(e));
        }
        info!(session = %session.id, export = %session.export, target = %acquired.target.describe(),
              blocks = report.blocks_total, setup_ms = report.setup_ms, "backup started");
        Ok(BackupStarted {
            id: session.id.clone(),
            export: session.export.clone(),
            snapshot_time: report.snapshot_time,
            block_size: session.block_size,
            blocks_total: report.blocks_total,
            blocks_to_copy: session.blocks_to_copy(),
            setup_ms: report.setup_ms,
            quiesce: report.quiesce,
        })
    }
}

/// The target of an `Acquired` before one is opened: nothing to abort.
#[derive(Debug)]
struct NoTarget;

impl BackupTarget for NoTarget {
    fn describe(&self) -> String {
        "(none yet)".into()
    }
    fn write(&self, _: u64, _: &[u8]) -> Result<(), crate::targets::TargetError> {
        unreachable!("no target was opened")
    }
    fn write_zeroes(&self, _: u64, _: u64) -> Result<(), crate::targets::TargetError> {
        unreachable!("no target was opened")
    }
    fn finish(&self) -> Result<(), crate::targets::TargetError> {
        unreachable!("no target was opened")
    }
    fn abort(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> StartBackup {
        StartBackup {
            to: "/b/x.img".into(),
            ..StartBackup::default()
        }
    }

    #[test]
    fn validate_completes_a_request_with_the_defaults() {
        let d = Defaults::new(Path::new("/state"));
        let c = validate(&d, 1 << 30, &request()).unwrap();
        assert_eq!(c.block_size, 64 << 10);
        assert_eq!((c.repo, c.to), (None, PathBuf::from("/b/x.img")));
        assert_eq!(c.quiet_period, Duration::from_secs(3));
        assert_eq!(c.mover.max_rate, None);
    }

    #[test]
    fn validate_refuses_with_the_reason() {
        let d = Defaults::new(Path::new("/state"));
        let refused = |r: StartBackup| validate(&d, 1 << 30, &r).unwrap_err().to_string();
        let e = refused(StartBackup {
            block_size: Some(3000),
            ..request()
        });
        assert!(e.contains("power of two"), "{e}");
        let e = refused(StartBackup {
            repo: Some("/r".into()),
            ..request()
        });
        assert!(e.contains("not both"), "{e}");
        let e = refused(StartBackup::default());
        assert!(e.starts_with("no target"), "{e}");
        let e = refused(StartBackup {
            high_watermark: Some(2.0),
            ..request()
        });
        assert_eq!(e, "high watermark 200%: must be above 0% and at most 100%");
        let e = refused(StartBackup {
            max_rate_mib_s: Some(0.0),
            ..request()
        });
        assert!(e.contains("must be positive"), "{e}");
        let e = refused(StartBackup {
            target_faults: Some(TargetFaults::default()),
            ..request()
        });
        assert!(e.contains("--allow-fault-injection"), "{e}");
        let tiny = validate(
            &d,
            u64::from(u32::MAX) * 4096 + 1,
            &StartBackup {
                block_size: Some(4096),
                ..request()
            },
        );
        assert!(tiny.unwrap_err().to_string().contains("more than 2^32"));
    }

    #[test]
    fn validate_takes_a_copy_target_and_refuses_what_does_not_apply_to_one() {
        let d = Defaults::new(Path::new("/state"));
        let to = |name: &str| StartBackup {
            to: format!("copy-target:{name}"),
            ..StartBackup::default()
        };
        let c = validate(&d, 1 << 30, &to("vault")).unwrap();
        assert_eq!((c.copy_target.as_deref(), c.repo), (Some("vault"), None));
        assert_eq!(validate(&d, 1 << 30, &request()).unwrap().copy_target, None);
        let refused = |r: StartBackup| validate(&d, 1 << 30, &r).unwrap_err().to_string();
        assert!(refused(to("")).contains("copy-target:NAME"));
        let e = refused(StartBackup {
            max_rate_mib_s: Some(10.0),
            ..to("vault")
        });
        assert!(
            e.starts_with("--max-rate") && e.contains("copy-target:vault"),
            "{e}"
        );
        let e = refused(StartBackup {
            mode: Some(cowd_api::backups::BackupMode::Full),
            ..to("vault")
        });
        assert!(e.contains("not for a copy target"), "{e}");
        let e = refused(StartBackup {
            repo: Some("/r".into()),
            ..to("vault")
        });
        assert!(e.contains("not both"), "{e}");
    }
}
