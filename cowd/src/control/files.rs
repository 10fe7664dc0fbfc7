//! Control API routes of a generation's files: list, read, extract, map, diff
//! (`/v1/repo/backups/{id}/files|file|extract|map|diff`), read straight from the repository.

use std::path::PathBuf;

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use cowd_api::files::{Diff, ExtractReport, ExtractRequest, FileMap, Listing};
use serde::Deserialize;

use super::repo::{repo_error, repo_of_backup};
use super::request::{Body, ControlState, Failure, Params, Reply, blocking, error};
use crate::fs::tree::TreeError;
use crate::repo::Repo;
use crate::restore::extract::extract;
use crate::restore::files::{FilesError, GenerationFiles, diff_generations};

/// The largest piece of a file one `file` request returns.
const MAX_READ: u64 = 16 << 20;

/// Query parameters of the GET routes.
#[derive(Debug, Deserialize)]
pub struct FileQuery {
    repo: Option<String>,
    partition: Option<u32>,
    path: Option<String>,
    offset: Option<u64>,
    length: Option<u64>,
    /// The newer backup of a diff.
    to: Option<String>,
}

/// One place maps a files error to its status.
fn files_error(e: FilesError) -> Failure {
    match e {
        FilesError::Repo(r) => repo_error(r),
        FilesError::Tree(t) => {
            let status = match &t {
                TreeError::NotFound(_) | TreeError::NotADirectory(_) => StatusCode::NOT_FOUND,
                TreeError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
                TreeError::Corrupt { .. } | TreeError::Unsupported { .. } | TreeError::Unknown => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
            };
            error(status, t.to_string())
        }
        FilesError::Invalid(m) => error(StatusCode::BAD_REQUEST, m),
        e @ FilesError::Io { .. } => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Opens backup `id`'s filesystem and runs `f` on it on the blocking pool.
async fn with_files<T: Send + 'static>(
    s: &ControlState,
    repo: Option<&str>,
    id: String,
    partition: Option<u32>,
    f: impl FnOnce(&GenerationFiles) -> Result<T, FilesError> + Send + 'static,
) -> Result<T, Failure> {
    let root = repo_of_backup(s, repo, &id)?;
    blocking(move || {
        let repo = Repo::open(&root)?;
        let files = GenerationFiles::open(repo, &id, partition)?;
        f(&files)
    })
    .await?
    .map_err(files_error)
}

pub async fn list(
    State(s): State<ControlState>,
    UrlPath(id): UrlPath<String>,
    Params(q): Params<FileQuery>,
) -> Reply<Listing> {
    let path = q.path.unwrap_or_else(|| "/".into());
    with_files(&s, q.repo.as_deref(), id, q.partition, move |f| {
        f.list(&path)
    })
    .await
    .map(Json)
}

pub async fn read(
    State(s): State<ControlState>,
    UrlPath(id): UrlPath<String>,
    Params(q): Params<FileQuery>,
) -> Result<Response, Failure> {
    let path = q
        .path
        .ok_or_else(|| error(StatusCode::BAD_REQUEST, "give path=PATH of a file"))?;
    let (offset, len) = (
        q.offset.unwrap_or(0),
        q.length.unwrap_or(MAX_READ).min(MAX_READ),
    );
    let data = with_files(&s, q.repo.as_deref(), id, q.partition, move |f| {
        f.read(&path, offset, len as usize)
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response())
}

pub async fn extract_files(
    State(s): State<ControlState>,
    UrlPath(id): UrlPath<String>,
    Body(r): Body<ExtractRequest>,
) -> Reply<ExtractReport> {
    if r.to.is_empty() || !r.to.starts_with('/') {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "give --to DIR (an absolute path)",
        ));
    }
    let to = PathBuf::from(&r.to);
    with_files(&s, r.repo.as_deref(), id, r.partition, move |f| {
        extract(f.tree(), &r.paths, &to)
    })
    .await
    .map(Json)
}

pub async fn map(
    State(s): State<ControlState>,
    UrlPath(id): UrlPath<String>,
    Params(q): Params<FileQuery>,
) -> Reply<FileMap> {
    let by_path = q.path.clone();
    let range = q.offset.zip(q.length);
    if by_path.is_some() == range.is_some() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "give either path=PATH, or offset=OFFSET and length=LENGTH",
        ));
    }
    with_files(&s, q.repo.as_deref(), id, q.partition, move |f| {
        match (by_path, range) {
            (Some(p), _) => f.map_path(&p),
            (None, Some((o, l))) => f.map_range(o, l),
            (None, None) => unreachable!("checked above"),
        }
    })
    .await
    .map(Json)
}

pub async fn diff(
    State(s): State<ControlState>,
    UrlPath(id): UrlPath<String>,
    Params(q): Params<FileQuery>,
) -> Reply<Diff> {
    let to =
        q.to.ok_or_else(|| error(StatusCode::BAD_REQUEST, "give to=ID of the newer backup"))?;
    let root = repo_of_backup(&s, q.repo.as_deref(), &id)?;
    let partition = q.partition;
    blocking(move || {
        let repo = Repo::open(&root)?;
        diff_generations(repo, &id, &to, partition)
    })
    .await?
    .map_err(files_error)
    .map(Json)
}
