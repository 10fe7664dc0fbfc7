//! Control API routes of the repository: init, list, verify, prune, sync, repair, restore,
//! serve.
//!
//! Requests name a repository or use the daemon's default (`--repo`). Long operations
//! (verify, prune, sync, repair) run on tokio's blocking pool; restores run as jobs with progress.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::api::{
    ExportInfo, Kept, Listed, PruneRequest, PruneResult, RepairReport, RepairRequest, RepoInfo,
    RepoInit, RestoreRequest, RestoreStatus, ServeRequest, SyncReport, SyncRequest, VerifyReport,
    VerifyRequest,
};
use super::request::{Body, ControlState, Failure, Params, Reply, blocking, error, export_info};
use crate::export::{Export, ExportError};
use crate::files::same_device;
use cowd_api::backups::Prioritize;

use crate::repo::{Repo, RepoError};
use crate::restore::{Job, LiveError, LiveStart, RepoImage};

pub(super) fn repo_error(e: RepoError) -> Failure {
    let status = match e {
        RepoError::Missing(_) | RepoError::NoSuchBackup(_) => StatusCode::NOT_FOUND,
        RepoError::InUse { .. }
        | RepoError::Leased { .. }
        | RepoError::AlreadyInProgress(_)
        | RepoError::Busy(_)
        | RepoError::AlreadyRepo(_) => StatusCode::CONFLICT,
        RepoError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        RepoError::Locked(_) => StatusCode::LOCKED,
        RepoError::WrongKey(_) => StatusCode::FORBIDDEN,
        _ => StatusCode::BAD_REQUEST,
    };
    error(status, e.to_string())
}

pub(super) fn repo_path(s: &ControlState, given: Option<&str>) -> Result<PathBuf, Failure> {
    given
        .map(PathBuf::from)
        .or_else(|| s.backups.defaults().repo.clone())
        .ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                "no repository given and none configured (--repo DIR)",
            )
        })
}

/// Opens the repository a request names (else the configured one), on the blocking pool:
/// in object storage that is a GET or two.
pub(super) async fn open(s: &ControlState, given: Option<&str>) -> Result<Repo, Failure> {
    open_at(repo_path(s, given)?).await
}

/// Opens repository `root` on the blocking pool.
pub(super) async fn open_at(root: PathBuf) -> Result<Repo, Failure> {
    blocking(move || Repo::open(&root))
        .await?
        .map_err(repo_error)
}

/// The repository of backup `id`: the one given, else the one this daemon made the backup in
/// (its record says), else the default.
pub(super) fn repo_of_backup(
    s: &ControlState,
    given: Option<&str>,
    id: &str,
) -> Result<PathBuf, Failure> {
    let known = || s.backups.repo_of(id);
    match given {
        Some(g) => Ok(PathBuf::from(g)),
        None => match known() {
            Some(r) => Ok(PathBuf::from(r)),
            None => repo_path(s, None),
        },
    }
}

pub async fn init(Body(r): Body<RepoInit>) -> Reply<RepoInfo> {
    if !Path::new(&r.path).is_absolute() && !crate::repo::is_remote(Path::new(&r.path)) {
        let msg = format!("{}: give an absolute path or s3://BUCKET/PREFIX", r.path);
        return Err(error(StatusCode::BAD_REQUEST, msg));
    }
    let size = r.chunk_size.unwrap_or(crate::repo::MAX_CHUNK_SIZE);
    let level = r
        .compression_level
        .unwrap_or(crate::repo::DEFAULT_COMPRESSION_LEVEL);
    let path = r.path.clone();
    let repo = blocking(move || super::keys::create(&r, size, level)).await??;
    Ok(Json(RepoInfo {
        path,
        id: repo.id().to_owned(),
        chunk_size: repo.chunk_size(),
        compression_level: repo.compression_level(),
        format: repo.format(),
        chunk_names: repo.chunk_naming(),
        key_fingerprint: repo.key_fingerprint(),
        unlocked: repo.is_encrypted().then_some(true),
    }))
}

#[derive(Debug, Deserialize)]
pub struct InfoQuery {
    repo: Option<String>,
}

/// `GET /v1/repo/info`: the repository's configuration, also when it is locked.
pub async fn info(State(s): State<ControlState>, Params(q): Params<InfoQuery>) -> Reply<RepoInfo> {
    let root = repo_path(&s, q.repo.as_deref())?;
    let a = Repo::about(&root).map_err(repo_error)?;
    Ok(Json(RepoInfo {
        path: root.display().to_string(),
        id: a.id,
        chunk_size: a.chunk_size,
        compression_level: a.compression_level,
        format: a.format,
        chunk_names: a.chunk_names,
        key_fingerprint: a.key_fingerprint,
        unlocked: a.unlocked,
    }))
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    repo: Option<String>,
    export: Option<String>,
}

pub async fn list(
    State(s): State<ControlState>,
    Params(q): Params<ListQuery>,
) -> Reply<Vec<Listed>> {
    let repo = open(&s, q.repo.as_deref()).await?;
    let mut all = blocking(move || repo.listing())
        .await?
        .map_err(repo_error)?;
    // A damaged backup's export is unknown: it is listed whatever the filter.
    all.backups
        .retain(|m| q.export.as_deref().is_none_or(|e| m.export == e));
    Ok(Json(all.entries()))
}

pub async fn verify(
    State(s): State<ControlState>,
    Body(r): Body<VerifyRequest>,
) -> Reply<VerifyReport> {
    let first = r.ids.as_ref().and_then(|ids| ids.first());
    let root = match first {
        Some(id) => repo_of_backup(&s, r.repo.as_deref(), id)?,
        None => repo_path(&s, r.repo.as_deref())?,
    };
    let repo = open_at(root).await?;
    let report = blocking(move || repo.verify(r.ids.as_deref(), &|_, _| {})).await?;
    report.map(Json).map_err(repo_error)
}

pub async fn prune(
    State(s): State<ControlState>,
    Body(r): Body<PruneRequest>,
) -> Reply<PruneResult> {
    if r.export.is_empty() {
        let msg = "prune needs the export whose backups to prune";
        return Err(error(StatusCode::BAD_REQUEST, msg));
    }
    let repo = open(&s, r.repo.as_deref()).await?;
    let result = blocking(move || -> Result<PruneResult, RepoError> {
        let plan = repo.prune_plan(&r.export, &r.keep, SystemTime::now())?;
        let mut removed = Vec::new();
        if !r.dry_run {
            for id in &plan.remove {
                match repo.remove_backup(id) {
                    Ok(()) => removed.push(id.clone()),
                    // A parent of a running backup, or a backup being restored or served,
                    // stays until the next prune (the plan names them; this is the race).
                    Err(RepoError::InUse { .. } | RepoError::Leased { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let gc = if r.dry_run {
            repo.gc_without(&plan.remove, true)?
        } else {
            repo.gc(false)?
        };
        let keep = plan.keep.into_iter().map(|(id, why)| Kept {
            id,
            reasons: why.iter().map(|w| w.to_string()).collect(),
        });
        Ok(PruneResult {
            keep: keep.collect(),
            remove: plan.remove,
            removed,
            gc,
        })
    })
    .await?;
    result.map(Json).map_err(repo_error)
}

pub async fn sync(State(s): State<ControlState>, Body(r): Body<SyncRequest>) -> Reply<SyncReport> {
    if r.keep.is_some() && r.export.is_none() {
        let msg = "a sync with a retention policy needs the export whose backups it counts";
        return Err(error(StatusCode::BAD_REQUEST, msg));
    }
    if r.dst.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "sync needs a destination repository",
        ));
    }
    let src = open(&s, r.src.as_deref()).await?;
    let dst = open_at(PathBuf::from(&r.dst)).await?;
    let result = blocking(move || -> Result<SyncReport, RepoError> {
        let ids: Vec<String> = match (&r.keep, &r.export) {
            (Some(keep), Some(export)) => {
                let plan = src.prune_plan(export, keep, SystemTime::now())?;
                plan.keep.into_iter().map(|(id, _)| id).collect()
            }
            (_, export) => (src.backups()?.into_iter())
                .filter(|m| export.as_ref().is_none_or(|e| m.export == *e))
                .map(|m| m.id)
                .collect(),
        };
        src.sync_to(&dst, &ids, r.dry_run, &|| false, &|_| {})
    })
    .await?;
    result.map(Json).map_err(repo_error)
}

pub async fn repair(
    State(s): State<ControlState>,
    Body(r): Body<RepairRequest>,
) -> Reply<RepairReport> {
    let repo = open(&s, r.repo.as_deref()).await?;
    let mut from = Vec::with_capacity(r.from.len());
    for p in &r.from {
        from.push(open_at(PathBuf::from(p)).await?);
    }
    if let Some(same) = from.iter().find(|f| f.id() == repo.id()) {
        let msg = format!(
            "{} is the repository being repaired: give another one (a copy made by repo sync)",
            same.root().display()
        );
        return Err(error(StatusCode::BAD_REQUEST, msg));
    }
    let report = blocking(move || repo.repair(&from, r.remove_broken, r.dry_run)).await?;
    report.map(Json).map_err(repo_error)
}

pub async fn restore(
    State(s): State<ControlState>,
    Body(r): Body<RestoreRequest>,
) -> Reply<RestoreStatus> {
    let root = repo_of_backup(&s, r.repo.as_deref(), &r.backup)?;
    let repo = open_at(root).await?;
    if r.live {
        return restore_live(s, repo, r).await;
    }
    if r.export.is_some() || r.max_rate_mib_s.is_some() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "--export and --max-rate go with --live",
        ));
    }
    if r.to.is_empty() {
        return Err(error(StatusCode::BAD_REQUEST, "no target: give --to PATH"));
    }
    let to = PathBuf::from(&r.to);
    if s.exports
        .all()
        .iter()
        .any(|e| e.backup().is_none() && same_device(e.path(), &to))
    {
        let msg = format!(
            "{}: it is served by this cowd; restore to another device, or stop serving it first",
            r.to
        );
        return Err(error(StatusCode::CONFLICT, msg));
    }
    repo.manifest(&r.backup).map_err(repo_error)?;
    let restores = s.restores.clone();
    let threads = repo.threads();
    let job = blocking(move || restores.start(repo, &r.backup, &to, threads))
        .await?
        .map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    Ok(Json(job.status()))
}

/// `restore --live`: the destination served as an export at once, restored behind.
async fn restore_live(s: ControlState, repo: Repo, r: RestoreRequest) -> Reply<RestoreStatus> {
    let export = r
        .export
        .clone()
        .filter(|e| !e.is_empty())
        .ok_or_else(|| error(StatusCode::BAD_REQUEST, "--live needs --export NAME"))?;
    if s.backups.running(&export) {
        return Err(error(
            StatusCode::CONFLICT,
            format!("export {export} is being backed up; wait for the backup or cancel it first"),
        ));
    }
    let max_rate = match r.max_rate_mib_s {
        Some(m) if !(m.is_finite() && m > 0.0) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                format!("--max-rate {m}: give a positive number of MiB/s"),
            ));
        }
        m => m.map(|m| (m * f64::from(1 << 20)) as u64),
    };
    repo.manifest(&r.backup).map_err(repo_error)?;
    let req = LiveStart {
        repo,
        backup: r.backup.clone(),
        to: (!r.to.is_empty()).then(|| PathBuf::from(&r.to)),
        export,
        max_rate,
    };
    let (restores, exports) = (s.restores.clone(), s.exports.clone());
    let job = blocking(move || restores.start_live(req, &exports, crate::repo::chunk_threads()))
        .await?
        .map_err(|e| {
            let status = match e {
                LiveError::Invalid(_) => StatusCode::BAD_REQUEST,
                LiveError::Conflict(_) => StatusCode::CONFLICT,
                LiveError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            error(status, e.to_string())
        })?;
    Ok(Json(job.status()))
}

pub async fn restores(State(s): State<ControlState>) -> Json<Vec<RestoreStatus>> {
    Json(s.restores.all())
}

#[derive(Debug, Deserialize)]
pub struct WaitQuery {
    timeout_s: Option<f64>,
}

pub async fn restore_wait(
    State(s): State<ControlState>,
    UrlPath(id): UrlPath<String>,
    Params(q): Params<WaitQuery>,
) -> Reply<RestoreStatus> {
    let job = s
        .restores
        .get(&id)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no restore {id:?}")))?;
    let t = Duration::try_from_secs_f64(q.timeout_s.unwrap_or(0.0).clamp(0.0, 300.0))
        .unwrap_or_default();
    Ok(Json(blocking(move || job.wait(t)).await?))
}

pub async fn restore_prioritize(
    State(s): State<ControlState>,
    UrlPath(id): UrlPath<String>,
    Body(p): Body<Prioritize>,
) -> Reply<RestoreStatus> {
    match s.restores.get(&id) {
        Some(Job::Live(l)) if l.running() => {
            l.prioritize(p.offset, p.length);
            Ok(Json(l.status()))
        }
        Some(_) => Err(error(
            StatusCode::CONFLICT,
            format!("restore {id} is not a running live restore"),
        )),
        None => Err(error(StatusCode::NOT_FOUND, format!("no restore {id:?}"))),
    }
}

pub async fn serve(
    State(s): State<ControlState>,
    Body(r): Body<ServeRequest>,
) -> Reply<ExportInfo> {
    let root = repo_of_backup(&s, r.repo.as_deref(), &r.backup)?;
    let repo = open_at(root.clone()).await?;
    let (repo2, id, user) = (
        repo.clone(),
        r.backup.clone(),
        format!("export {}", r.export),
    );
    let (index, lease) = blocking(move || -> Result<_, RepoError> {
        let lease = repo2.lease(&id, &user)?;
        Ok((repo2.index(&id)?, lease))
    })
    .await?
    .map_err(repo_error)?;
    let image = Arc::new(RepoImage::new(repo, index, Some(lease)));
    let export = Export::of_backup(&r.export, &root, &r.backup, image);
    let e = s.exports.add(export).map_err(|e| {
        let status = match e {
            ExportError::Duplicate(_) => StatusCode::CONFLICT,
            ExportError::BadName(_) => StatusCode::BAD_REQUEST,
        };
        error(status, e.to_string())
    })?;
    Ok(Json(export_info(&e)))
}

pub async fn unserve(
    State(s): State<ControlState>,
    UrlPath(name): UrlPath<String>,
) -> Reply<ExportInfo> {
    if name.is_empty() || s.exports.get(&name).is_none() {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("no export named {name:?}"),
        ));
    }
    let e = s
        .exports
        .remove(&name)
        .map_err(|e| error(StatusCode::CONFLICT, e))?;
    let restores = s.restores.clone();
    let removed = e.clone();
    blocking(move || restores.export_removed(&removed)).await?;
    Ok(Json(export_info(&e)))
}
