//! The answers about copy jobs and ports: `GET /v1/copies`, `GET /v1/ports`,
//! `PUT /v1/ports/{name}`.

use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use cowd_api::copies::{CopyJob, PortChange, PortInfo, PortRole};

use super::request::{Body, ControlState, Reply, blocking, error};
use crate::jobs::{JobView, Outcome};
use crate::san::{Port, Role};

pub async fn list(State(s): State<ControlState>) -> Reply<Vec<CopyJob>> {
    let copies = s.copies.clone();
    let jobs = blocking(move || copies.list())
        .await?
        .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(Json(jobs.iter().rev().map(copy_job).collect()))
}

pub async fn ports(State(s): State<ControlState>) -> Json<Vec<PortInfo>> {
    Json(s.copies.ports().list().iter().map(port_info).collect())
}

pub async fn set_port(
    State(s): State<ControlState>,
    UrlPath(name): UrlPath<String>,
    Body(change): Body<PortChange>,
) -> Reply<PortInfo> {
    let role = change.role.map(|r| match r {
        PortRole::Target => Role::Target,
        PortRole::Initiator => Role::Initiator,
    });
    let ports = s.copies.ports();
    if !ports.list().iter().any(|p| p.name == name) {
        return Err(error(
            StatusCode::NOT_FOUND,
            format!("no port named {name}"),
        ));
    }
    let p = ports
        .set(&name, role, change.group.map(Some))
        .map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    tracing::info!(port = %p.name, role = ?p.role, group = ?p.group, "port changed");
    Ok(Json(port_info(&p)))
}

fn port_info(p: &Port) -> PortInfo {
    PortInfo {
        name: p.name.clone(),
        role: match p.role {
            Role::Target => PortRole::Target,
            Role::Initiator => PortRole::Initiator,
        },
        address: p.address.clone(),
        group: p.group.clone(),
    }
}

fn copy_job(v: &JobView) -> CopyJob {
    let mut what: Vec<String> = Vec::new();
    for t in &v.spec.transfers {
        let pair = format!("{} -> {}", t.src, t.dst);
        if !what.contains(&pair) {
            what.push(pair);
        }
    }
    let (error, reason) = match &v.outcome {
        Some(Outcome::Failed { error, reason, .. }) => {
            (Some(error.to_string()), Some(reason.clone()))
        }
        _ => (None, None),
    };
    CopyJob {
        id: v.id,
        origin: v.spec.origin.to_string(),
        state: v.state().to_owned(),
        what,
        group: v.spec.group.clone(),
        mover: v.mover.clone(),
        path: v.path.clone(),
        bytes: v.bytes,
        durable: v.durable,
        total: v.spec.bytes(),
        claims: v.claims,
        unavailable: v.unavailable.clone(),
        error,
        reason,
    }
}
