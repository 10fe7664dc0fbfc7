//! Request handlers of the control API: each turns one HTTP request into a call on the
//! exports or the backup manager and maps errors to status codes with an `ErrorBody`.
//!
//! | error                                   | status |
//! |-----------------------------------------|--------|
//! | unknown export / backup                 | 404    |
//! | invalid request, refused target/container | 400  |
//! | a backup already runs / none runs; no quiet period | 409 |
//! | anything else                           | 500    |

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::api::{
    BackupStarted, BackupStatus, Device, ExportInfo, Prioritize, Resolved, StartBackup,
};
use super::request::{Body, ControlState, Failure, Params, Reply, blocking, error, export_info};
use crate::backup::manager::{SessionError, StartError};
use crate::export::Export;
use crate::nbd::kernel::{self, AttachError, ResolveError};

fn export(s: &ControlState, name: &str) -> Result<Arc<Export>, Failure> {
    s.exports
        .get(name)
        .filter(|_| !name.is_empty())
        .ok_or_else(|| error(StatusCode::NOT_FOUND, format!("no export named {name:?}")))
}

pub async fn list_exports(State(s): State<ControlState>) -> Json<Vec<ExportInfo>> {
    Json(s.exports.all().iter().map(|e| export_info(e)).collect())
}

pub async fn start_backup(
    State(s): State<ControlState>,
    UrlPath(name): UrlPath<String>,
    Body(req): Body<StartBackup>,
) -> Result<(StatusCode, Json<BackupStarted>), Failure> {
    let e = export(&s, &name)?;
    if let Some(l) = s.restores.live_on(e.name()) {
        let st = l.status();
        return Err(error(
            StatusCode::CONFLICT,
            format!(
                "export {} is being restored live by {} ({} of {} chunks); back it up once the restore is done",
                e.name(),
                st.id,
                st.chunks_done,
                st.chunks_total
            ),
        ));
    }
    let backups = s.backups.clone();
    let link = crate::backup::copy_job::CopyLink {
        exports: s.exports.clone(),
        copies: s.copies.clone(),
    };
    match blocking(move || backups.start(&e, &req, &link)).await? {
        Ok(started) => Ok((StatusCode::CREATED, Json(started))),
        Err(err) => {
            let status = match &err {
                StartError::Busy { .. } | StartError::Quiesce(_) => StatusCode::CONFLICT,
                StartError::Invalid(_)
                | StartError::Plan(_)
                | StartError::Target(_)
                | StartError::Container(_) => StatusCode::BAD_REQUEST,
                StartError::Point(_) | StartError::Mover(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            Err(error(status, err.to_string()))
        }
    }
}

fn session_error(e: SessionError) -> Failure {
    match e {
        SessionError::NoBackup(_) => error(StatusCode::CONFLICT, e.to_string()),
        SessionError::Invalid(_) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

pub async fn cancel(
    State(s): State<ControlState>,
    UrlPath(name): UrlPath<String>,
) -> Reply<BackupStatus> {
    export(&s, &name)?;
    let backups = s.backups.clone();
    blocking(move || backups.cancel(&name))
        .await?
        .map(Json)
        .map_err(session_error)
}

pub async fn prioritize(
    State(s): State<ControlState>,
    UrlPath(name): UrlPath<String>,
    Body(p): Body<Prioritize>,
) -> Reply<BackupStatus> {
    export(&s, &name)?;
    s.backups
        .prioritize(&name, p.offset, p.length)
        .map(Json)
        .map_err(session_error)
}

#[derive(Debug, Deserialize)]
pub struct ExportFilter {
    export: Option<String>,
}

pub async fn list_backups(
    State(s): State<ControlState>,
    Params(f): Params<ExportFilter>,
) -> Reply<Vec<BackupStatus>> {
    if let Some(name) = &f.export {
        export(&s, name)?;
    }
    let backups = s.backups.clone();
    Ok(Json(
        blocking(move || backups.reports(f.export.as_deref())).await?,
    ))
}

fn no_backup(id: &str) -> Failure {
    error(StatusCode::NOT_FOUND, format!("no backup with id {id:?}"))
}

pub async fn backup(
    State(s): State<ControlState>,
    UrlPath(id): UrlPath<String>,
) -> Reply<BackupStatus> {
    let (backups, id2) = (s.backups.clone(), id.clone());
    blocking(move || backups.report(&id2))
        .await?
        .map(Json)
        .ok_or_else(|| no_backup(&id))
}

#[derive(Debug, Deserialize)]
pub struct WaitQuery {
    timeout_s: Option<f64>,
}

pub async fn wait(
    State(s): State<ControlState>,
    UrlPath(id): UrlPath<String>,
    Params(q): Params<WaitQuery>,
) -> Reply<BackupStatus> {
    let timeout = Duration::try_from_secs_f64(q.timeout_s.unwrap_or(30.0).clamp(0.0, 300.0))
        .unwrap_or_default();
    let backups = s.backups.clone();
    let id2 = id.clone();
    blocking(move || backups.wait(&id2, timeout))
        .await?
        .map(Json)
        .ok_or_else(|| no_backup(&id))
}

#[derive(Debug, Deserialize)]
pub struct ResolveQuery {
    device: String,
}

pub async fn resolve(
    State(s): State<ControlState>,
    Params(q): Params<ResolveQuery>,
) -> Reply<Resolved> {
    let device = Path::new(&q.device);
    let found = match s.attachments.export_of(device) {
        Some(export) => Ok(export),
        None => kernel::resolve(device, &s.exports, Path::new("/sys"), Path::new("/proc")),
    };
    match found {
        Ok(export) => Ok(Json(Resolved {
            device: q.device,
            export,
        })),
        Err(e) => Err(error(StatusCode::NOT_FOUND, e.to_string())),
    }
}

fn attach_error(e: AttachError) -> Failure {
    let status = match &e {
        AttachError::Resolve(ResolveError::NotNbd(_)) => StatusCode::BAD_REQUEST,
        AttachError::Resolve(_) | AttachError::NotAttached(_) => StatusCode::NOT_FOUND,
        AttachError::Failed { .. } => StatusCode::CONFLICT,
    };
    error(status, e.to_string())
}

pub async fn attach(
    State(s): State<ControlState>,
    UrlPath(name): UrlPath<String>,
    Body(d): Body<Device>,
) -> Reply<Resolved> {
    let e = export(&s, &name)?;
    s.attachments
        .attach(&e, Path::new(&d.device), s.limits)
        .map_err(attach_error)?;
    Ok(Json(Resolved {
        device: d.device,
        export: name,
    }))
}

pub async fn detach(State(s): State<ControlState>, Body(d): Body<Device>) -> Reply<Resolved> {
    // Waits for the kernel to let the device go: off the runtime's threads.
    let (attachments, device) = (s.attachments.clone(), d.device.clone());
    let export = blocking(move || attachments.detach(Path::new(&device)))
        .await?
        .map_err(attach_error)?;
    Ok(Json(Resolved {
        device: d.device,
        export,
    }))
}
