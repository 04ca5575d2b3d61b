//! Hosts: records made by administrators (regular) or team owners and
//! admins (BYOC), one-time registration tokens, the agent's register and
//! heartbeat calls, tags, and removal.
//!
//! The agent's side, exactly:
//! 1. `POST /v1/hosts/register` with `{"token": <registration token>,
//!    "address": "<ip:port of its agent.v1 RPC>", "agent_token": "<the
//!    bearer token it accepts>"?, "proxy_address": "<ip:port of its data
//!    plane>"?, "arch", "cpu_cores", "memory_mb", "disk_gb"}` (no other
//!    auth). Answer 201 `{"host": {...}, "token": <host token>,
//!    "agent_token": <token control will present>}`. Without `agent_token`
//!    in the request, control makes one and the agent must accept it.
//! 2. Every few seconds (well under the heartbeat timeout, 30 s by
//!    default): `POST /v1/hosts/{id}/heartbeat` with `X-Host-Token: <host
//!    token>` (or `Authorization: Bearer`), any JSON body or none. 204.
//!
//! Control pulls everything else (capacity, templates, proxy address,
//! capsules, metrics) with GetHostInfo / ListCapsules / GetMetrics.

use std::time::Duration;

use warren_api_types::hosts::{
    CreateHostRequest, CreateHostResponse, Host, RegisterRequest, RegisterResponse,
};
use warren_api_types::status::{HostKind, HostStatus, Role};

use crate::app::AppState;
use crate::auth::{Denied, Principal};
use crate::events::{self, Notification};
use crate::{db, ids, lifecycle};

/// Registration tokens are valid this long.
const REGISTRATION_TTL: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The host still holds capsules (their ids).
    #[error("host has capsules; use ?force=true to destroy them and delete the host")]
    HasCapsules(Vec<String>),
    #[error("host has already registered")]
    AlreadyRegistered,
    #[error("invalid or expired registration token")]
    BadRegistrationToken,
    #[error("invalid host token")]
    BadHostToken,
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

type Result<T> = std::result::Result<T, HostError>;

/// A host the caller may see: any for platform admins, else their team's.
async fn visible(app: &AppState, p: &Principal, id: &str) -> Result<Host> {
    db::hosts::visible(&app.db, id, p.is_admin, &p.team_id)
        .await?
        .ok_or(HostError::NotFound("host"))
}

/// Administrators manage every host; team owners and admins their BYOC ones.
fn require_manage(p: &Principal, host_team: Option<&str>) -> Result<()> {
    if p.is_admin {
        return Ok(());
    }
    match host_team {
        Some(t) if t == p.team_id => Ok(p.require_role(Role::Admin)?),
        _ => Err(Denied::AdminsOnly.into()),
    }
}

/// A visible host the caller may manage.
async fn managed(app: &AppState, p: &Principal, id: &str) -> Result<Host> {
    let host = visible(app, p, id).await?;
    require_manage(p, host.team_id.as_deref())?;
    Ok(host)
}

fn check_short(field: &str, v: &Option<String>) -> Result<()> {
    match v {
        Some(s) if s.is_empty() || s.len() > 64 || s.chars().any(char::is_control) => Err(
            HostError::Invalid(format!("{field} must be 1 to 64 printable characters")),
        ),
        _ => Ok(()),
    }
}

async fn issue_registration(app: &AppState, id: &str) -> Result<String> {
    let token = format!("wrt_{}", ids::new_secret(40));
    db::hosts::set_registration(&app.db, id, &ids::token_hash(&token), REGISTRATION_TTL).await?;
    Ok(token)
}

/// Creates a host record and its one-time registration token.
pub async fn create(
    app: &AppState,
    p: &Principal,
    req: &CreateHostRequest,
) -> Result<CreateHostResponse> {
    check_short("provider", &req.provider)?;
    check_short("availability_zone", &req.availability_zone)?;
    let kind = HostKind::parse(&req.kind)
        .ok_or_else(|| HostError::Invalid("type must be 'regular' or 'byoc'".into()))?;
    let team = match kind {
        HostKind::Regular => {
            p.require_admin()?;
            if req.team_id.is_some() {
                return Err(HostError::Invalid("regular hosts belong to no team".into()));
            }
            None
        }
        HostKind::Byoc => {
            let team = req.team_id.clone().unwrap_or_else(|| p.team_id.clone());
            if team != p.team_id && !p.is_admin {
                return Err(Denied::rule("BYOC hosts can only be added to your own team").into());
            }
            require_manage(p, Some(&team))?;
            Some(team)
        }
    };
    let id = ids::new_id("host-");
    let new = db::hosts::NewHost {
        id: &id,
        kind,
        team_id: team.as_deref(),
        provider: req.provider.as_deref(),
        availability_zone: req.availability_zone.as_deref(),
        created_by: p.actor_id(),
    };
    db::hosts::insert(&app.db, &new).await.map_err(|e| {
        if db::is_foreign_key_violation(&e) {
            HostError::NotFound("team")
        } else {
            e.into()
        }
    })?;
    let registration_token = issue_registration(app, &id).await?;
    Ok(CreateHostResponse {
        host: visible(app, p, &id).await?,
        registration_token,
    })
}

/// Hosts the caller may see.
pub async fn list(app: &AppState, p: &Principal) -> Result<Vec<Host>> {
    Ok(db::hosts::list_visible(&app.db, p.is_admin, &p.team_id).await?)
}

pub async fn get(app: &AppState, p: &Principal, id: &str) -> Result<Host> {
    visible(app, p, id).await
}

/// Removes a host. With capsules on it: refused, listing them, unless
/// `force` (they are destroyed first).
pub async fn delete(app: &AppState, p: &Principal, id: &str, force: bool) -> Result<()> {
    managed(app, p, id).await?;
    let live = db::capsules::live(&app.db, None, Some(id)).await?;
    if !live.is_empty() && !force {
        return Err(HostError::HasCapsules(
            live.iter().map(|c| c.id.clone()).collect(),
        ));
    }
    for row in live {
        let cid = row.id.clone();
        if let Err(e) = lifecycle::destroy(app, row).await {
            tracing::warn!(capsule = %cid, error = %e, "destroying capsule of deleted host");
        }
    }
    db::hosts::delete(&app.db, id).await?;
    // Capsules still recorded on it (their destroy was not confirmed) went
    // with it.
    for row in db::capsules::stop_all_on_host(&app.db, id).await? {
        app.hooks.destroyed(&row);
    }
    Ok(())
}

/// A new registration token for a host that has not registered yet.
pub async fn regenerate_token(
    app: &AppState,
    p: &Principal,
    id: &str,
) -> Result<CreateHostResponse> {
    let host = managed(app, p, id).await?;
    if host.status != HostStatus::Pending {
        return Err(HostError::AlreadyRegistered);
    }
    let registration_token = issue_registration(app, id).await?;
    Ok(CreateHostResponse {
        host: visible(app, p, id).await?,
        registration_token,
    })
}

/// Brings the host of a one-time registration token online (the agent
/// calls this on first start); the host's team for the audit trail.
pub async fn register(
    app: &AppState,
    req: &RegisterRequest,
) -> Result<(RegisterResponse, Option<String>)> {
    if req.address.trim().is_empty() || req.address.len() > 256 {
        return Err(HostError::Invalid(
            "address is required (ip:port of the agent RPC)".into(),
        ));
    }
    if req
        .agent_token
        .as_ref()
        .is_some_and(|t| t.len() < 16 || t.len() > 256)
    {
        return Err(HostError::Invalid(
            "agent_token must be 16 to 256 characters".into(),
        ));
    }
    let host_token = format!("wht_{}", ids::new_secret(40));
    let agent_token = req
        .agent_token
        .clone()
        .unwrap_or_else(|| ids::new_secret(40));
    let registration = db::hosts::Registration {
        registration_hash: ids::token_hash(&req.token),
        address: req.address.trim(),
        proxy_address: req.proxy_address.as_deref(),
        agent_token: &agent_token,
        host_token_hash: ids::token_hash(&host_token),
        arch: req.arch.as_deref(),
        cpu_cores: req.cpu_cores.map(|c| c as i32),
        memory_mb: req.memory_mb.map(|m| m as i64),
        disk_gb: req.disk_gb.map(|d| d as i32),
    };
    let (id, team) = db::hosts::register(&app.db, &registration)
        .await?
        .ok_or(HostError::BadRegistrationToken)?;
    host_event(app, &id, team.clone(), "host.up").await;
    let host = db::hosts::visible(&app.db, &id, true, "")
        .await?
        .ok_or(HostError::NotFound("host"))?;
    let body = RegisterResponse {
        host,
        token: host_token,
        agent_token,
    };
    Ok((body, team))
}

/// Publishes a host event (`host.up`, `host.down`) to the team that owns
/// the host (or to administrators, for regular hosts).
pub async fn host_event(app: &AppState, host_id: &str, team_id: Option<String>, event: &str) {
    let n = Notification {
        team_id,
        event: event.into(),
        data: events::frame(event, None, ("host", host_id), serde_json::json!({}), None),
    };
    if let Err(e) = events::publish(&app.db, &n).await {
        tracing::warn!(error = %e, "publishing host event");
    }
}

/// The agent's liveness signal, authenticated by its host token, for host
/// `id`.
pub async fn heartbeat(app: &AppState, id: &str, token: &str) -> Result<()> {
    let beat = db::hosts::heartbeat(&app.db, &ids::token_hash(token))
        .await?
        .ok_or(HostError::BadHostToken)?;
    if beat.id != id {
        return Err(Denied::rule("host id does not match the token").into());
    }
    if beat.previous == HostStatus::Unreachable {
        tracing::info!(host = %beat.id, "host is back");
        host_event(app, &beat.id, beat.team_id, "host.up").await;
    }
    Ok(())
}

pub async fn tags(app: &AppState, p: &Principal, id: &str) -> Result<Vec<String>> {
    Ok(visible(app, p, id).await?.tags)
}

pub async fn add_tag(app: &AppState, p: &Principal, id: &str, tag: &str) -> Result<()> {
    managed(app, p, id).await?;
    let tag = tag.trim();
    if tag.is_empty()
        || tag.len() > 64
        || !tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:-=".contains(c))
    {
        return Err(HostError::Invalid(
            "tag must be 1 to 64 of [A-Za-z0-9._:=-]".into(),
        ));
    }
    Ok(db::hosts::add_tag(&app.db, id, tag).await?)
}

pub async fn remove_tag(app: &AppState, p: &Principal, id: &str, tag: &str) -> Result<()> {
    managed(app, p, id).await?;
    if !db::hosts::remove_tag(&app.db, id, tag).await? {
        return Err(HostError::NotFound("tag"));
    }
    Ok(())
}
