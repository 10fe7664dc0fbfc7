//! What every request handler shares: the daemon's state it may see, the request extractors
//! whose rejections are `ErrorBody`s, error replies, running blocking work, and how an export
//! looks in the API. `server` builds the router over the handlers; the handlers depend on this
//! module only, so nothing points back up at `server`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use cowd_api::ErrorBody;
use cowd_api::exports::ExportInfo;
use serde::de::DeserializeOwned;

use crate::backup::manager::Backups;
use crate::export::{Export, Exports};
use crate::nbd::kernel::Attachments;
use crate::nbd::transmission::Limits;

/// What request handlers can see.
#[derive(Debug, Clone)]
pub struct ControlState {
    pub exports: Arc<Exports>,
    pub backups: Arc<Backups>,
    pub attachments: Arc<Attachments>,
    pub restores: Arc<crate::restore::Restores>,
    /// Copy jobs, copy targets and ports.
    pub copies: Arc<crate::jobs::CopyService>,
    /// Limits of connections served for attached kernel devices.
    pub limits: Limits,
}

/// An error answer.
pub type Failure = (StatusCode, Json<ErrorBody>);
/// A JSON answer or an error answer.
pub type Reply<T> = Result<Json<T>, Failure>;

/// An error response with an [`ErrorBody`].
pub fn error(status: StatusCode, msg: impl Into<String>) -> Failure {
    (status, Json(ErrorBody { error: msg.into() }))
}

/// A JSON request body whose rejection (bad JSON, wrong content type) is an `ErrorBody`.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Failure;
    async fn from_request(req: Request, state: &S) -> Result<Self, Failure> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rej) => Err(error(rej.status(), rej.body_text())),
        }
    }
}

/// Query parameters whose rejection is an `ErrorBody`.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = Failure;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Failure> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(Params(v)),
            Err(rej) => Err(error(rej.status(), rej.body_text())),
        }
    }
}

/// Runs `f` on tokio's blocking pool (disk I/O, waits): never on the runtime's threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// How the control API shows an export.
pub fn export_info(e: &Export) -> ExportInfo {
    ExportInfo {
        name: e.name().to_owned(),
        path: e.path().display().to_string(),
        description: e.description().to_owned(),
        size: e.size(),
        read_only: e.read_only(),
        connections: e.connections(),
    }
}
