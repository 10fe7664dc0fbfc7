//! Control API routes of an encrypted repository's keys: create with encryption, unlock and
//! lock (the daemon holds an unlocked key in memory, as an agent does), list, add, remove and
//! change key slots.
//!
//! Secrets arrive in the request body over the control socket (root, the daemon's user or the
//! `cowd` group only); a key file is named by its path on the daemon's host and read there.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::api::{
    KeyAdd, KeyChange, KeyChanged, KeySecret, KeySlot, LockRequest, LockState, RepoInit,
    UnlockRequest,
};
use super::repo::{open, repo_error, repo_path};
use super::request::{Body, ControlState, Failure, Params, Reply, blocking, error};
use crate::repo::{InitKey, KdfCost, MIN_KEY_FILE_LEN, Repo, Secret, Slot, SlotKind};

fn bad(msg: impl Into<String>) -> Failure {
    error(StatusCode::BAD_REQUEST, msg)
}

/// Writes a fresh key file at `path`: 32 random bytes from the OS, hex, mode 0600; never
/// over an existing file.
fn create_key_file(path: &Path) -> Result<(), Failure> {
    let bytes: [u8; MIN_KEY_FILE_LEN] = crate::repo::random_bytes();
    let text = Zeroizing::new(format!("{}\n", cowd_api::digest::to_hex(&bytes)));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| bad(format!("cannot create key file {}: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| bad(format!("cannot write key file {}: {e}", path.display())))
}

/// The secret a request gives: exactly one of a passphrase or a key file (read here).
pub(super) fn secret(k: &KeySecret) -> Result<Secret, Failure> {
    match (&k.passphrase, &k.key_file) {
        (Some(p), None) => Ok(Secret::Passphrase(Zeroizing::new(p.as_bytes().to_vec()))),
        (None, Some(f)) => {
            let path = Path::new(f);
            if !path.is_absolute() {
                return Err(bad(format!("key file {f}: give an absolute path")));
            }
            if k.create_key_file && !path.exists() {
                create_key_file(path)?;
            }
            let bytes =
                std::fs::read(path).map_err(|e| bad(format!("cannot read key file {f}: {e}")))?;
            Ok(Secret::KeyFile(Zeroizing::new(bytes)))
        }
        (None, None) => Err(bad("give a passphrase or a key file")),
        (Some(_), Some(_)) => Err(bad("give a passphrase or a key file, not both")),
    }
}

/// `POST /v1/repo/init`'s work: a repository, encrypted when the request says so.
pub(super) fn create(r: &RepoInit, size: u32, level: i32) -> Result<Repo, Failure> {
    let root = Path::new(&r.path);
    let version = r.format.unwrap_or(crate::repo::VERSION);
    let Some(enc) = &r.encrypt else {
        if r.key_from.is_some() {
            return Err(bad(
                "key_from needs encrypt (the new repository's first key slot)",
            ));
        }
        return Repo::create(root, size, level, version, None).map_err(repo_error);
    };
    let key = match &r.key_from {
        None => None,
        Some(from) => {
            let from = Repo::open(Path::new(from)).map_err(repo_error)?;
            Some(from.master_key().map_err(repo_error)?.clone())
        }
    };
    let secret = secret(enc)?;
    let init = InitKey {
        secret: &secret,
        label: r.key_label.as_deref().unwrap_or("initial"),
        cost: KdfCost::DEFAULT,
        key,
    };
    Repo::create(root, size, level, version, Some(init)).map_err(repo_error)
}

fn slot_info(s: &Slot) -> KeySlot {
    KeySlot {
        id: s.id.clone(),
        kind: match s.kind {
            SlotKind::Passphrase => "passphrase",
            SlotKind::KeyFile => "key-file",
        }
        .to_owned(),
        label: s.label.clone(),
        created: s.created,
    }
}

pub async fn unlock(
    State(s): State<ControlState>,
    Body(r): Body<UnlockRequest>,
) -> Reply<LockState> {
    let root = repo_path(&s, r.repo.as_deref())?;
    let secret = secret(&r.secret)?;
    let shown = root.display().to_string();
    let (_, slot) = blocking(move || Repo::unlock(&root, &secret))
        .await?
        .map_err(repo_error)?;
    tracing::info!("repository {shown} unlocked (key slot {slot})");
    Ok(Json(LockState {
        repo: shown,
        unlocked: true,
        slot: Some(slot),
        was_unlocked: false,
    }))
}

pub async fn lock(State(s): State<ControlState>, Body(r): Body<LockRequest>) -> Reply<LockState> {
    let root = repo_path(&s, r.repo.as_deref())?;
    let was = Repo::lock(&root).map_err(repo_error)?;
    Ok(Json(LockState {
        repo: root.display().to_string(),
        unlocked: false,
        slot: None,
        was_unlocked: was,
    }))
}

#[derive(Debug, Deserialize)]
pub struct RepoQuery {
    repo: Option<String>,
}

pub async fn list(
    State(s): State<ControlState>,
    Params(q): Params<RepoQuery>,
) -> Reply<Vec<KeySlot>> {
    let repo = open(&s, q.repo.as_deref()).await?;
    let slots = repo.key_slots().map_err(repo_error)?;
    if !repo.is_encrypted() {
        return Err(bad(format!(
            "repository {} is not encrypted: it has no keys",
            repo.root().display()
        )));
    }
    Ok(Json(slots.iter().map(slot_info).collect()))
}

pub async fn add(State(s): State<ControlState>, Body(r): Body<KeyAdd>) -> Reply<KeySlot> {
    let repo = open(&s, r.repo.as_deref()).await?;
    let secret = secret(&r.secret)?;
    let slot = blocking(move || repo.add_key(&secret, &r.label, KdfCost::DEFAULT))
        .await?
        .map_err(repo_error)?;
    Ok(Json(slot_info(&slot)))
}

pub async fn remove(
    State(s): State<ControlState>,
    UrlPath(id): UrlPath<String>,
    Params(q): Params<RepoQuery>,
) -> Reply<Vec<KeySlot>> {
    let repo = open(&s, q.repo.as_deref()).await?;
    repo.remove_key(&id).map_err(repo_error)?;
    let slots = repo.key_slots().map_err(repo_error)?;
    Ok(Json(slots.iter().map(slot_info).collect()))
}

pub async fn passwd(State(s): State<ControlState>, Body(r): Body<KeyChange>) -> Reply<KeyChanged> {
    let repo = open(&s, r.repo.as_deref()).await?;
    let old = secret(&r.old)?;
    let new = secret(&r.new)?;
    let (slot, removed) = blocking(move || repo.change_key(&old, &new, KdfCost::DEFAULT))
        .await?
        .map_err(repo_error)?;
    Ok(Json(KeyChanged {
        added: slot_info(&slot),
        removed,
    }))
}
