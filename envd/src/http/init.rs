//! `POST /init` (defaults for every later operation, access token, clock,
//! and the post-restore connection reset), `GET /envs`, and
//! `POST /snapshot/prepare`.

use std::{collections::BTreeMap, path::PathBuf};

use bytes::Bytes;
use http::{Response, StatusCode};
use serde::Deserialize;
use warren_proto::connect::ResponseBody;

use super::{error, json, no_content};
use crate::{fs::ensure_dirs, paths, state::Envd};

/// The largest `/init` body accepted.
pub const MAX_BODY: usize = 1 << 20;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InitRequest {
    #[serde(default)]
    env_vars: BTreeMap<String, String>,
    access_token: Option<String>,
    default_user: Option<String>,
    default_workdir: Option<String>,
    /// RFC 3339: the host's clock, for a guest restored from a snapshot.
    timestamp: Option<String>,
}

/// `conn`: the connection the request arrived on (kept open after a restore).
pub fn init(envd: &Envd, body: &Bytes, conn: Option<u64>) -> Response<ResponseBody> {
    let req: InitRequest = if body.iter().all(u8::is_ascii_whitespace) {
        InitRequest::default()
    } else {
        match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid /init body: {e}")),
        }
    };
    if let Some(key) = req
        .env_vars
        .keys()
        .find(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!("invalid environment variable name {key:?}"),
        );
    }
    let user = match req.default_user.as_deref().filter(|u| !u.is_empty()) {
        Some(name) => match envd.accounts.user(name) {
            Ok(user) => Some(user),
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("defaultUser: {e}")),
        },
        None => None,
    };
    let workdir = match req.default_workdir.as_deref().filter(|w| !w.is_empty()) {
        Some(dir) if !dir.starts_with('/') => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("defaultWorkdir must be absolute, got {dir:?}"),
            );
        }
        Some(dir) => {
            let dir = paths::clean(&PathBuf::from(dir));
            let owner = match &user {
                Some(u) => u.clone(),
                None => match envd.accounts.user(&envd.defaults().user) {
                    Ok(u) => u,
                    Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
                },
            };
            if let Err(e) = ensure_dirs(&dir, &owner) {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("defaultWorkdir {}: {e}", dir.display()),
                );
            }
            Some(dir)
        }
        None => None,
    };
    if let Some(ts) = req.timestamp.as_deref() {
        sync_clock(ts);
    }
    envd.update_defaults(|d| {
        d.env.extend(req.env_vars);
        if let Some(u) = user {
            d.user = u.name;
        }
        if workdir.is_some() {
            d.workdir = workdir;
        }
    });
    if let Some(token) = req.access_token.filter(|t| !t.is_empty()) {
        envd.set_token(Some(token));
    }
    let closed = envd.conns.after_restore(conn);
    if closed > 0 {
        tracing::info!(closed, "closed connections that predate the snapshot");
    }
    no_content()
}

/// Sets the clock from the host's timestamp when it is off by more than a
/// second (a restored microVM wakes up in the past). Without the privilege
/// (a namespace capsule shares the host's clock) this is a no-op.
fn sync_clock(rfc3339: &str) {
    let Some(secs) = parse_rfc3339_seconds(rfc3339) else {
        tracing::debug!(rfc3339, "ignoring unparsable /init timestamp");
        return;
    };
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME)
        .map(|t| t.tv_sec())
        .unwrap_or(secs);
    if (now - secs).abs() <= 1 {
        return;
    }
    let ts = nix::sys::time::TimeSpec::new(secs, 0);
    match nix::time::clock_settime(nix::time::ClockId::CLOCK_REALTIME, ts) {
        Ok(()) => tracing::info!(from = now, to = secs, "clock set from the host"),
        Err(e) => tracing::debug!(error = %e, "cannot set the clock"),
    }
}

/// Seconds since the epoch of an RFC 3339 timestamp (`2026-11-23T15:00:00Z`,
/// fractions and offsets allowed).
fn parse_rfc3339_seconds(s: &str) -> Option<i64> {
    let (date, time) = s.split_once(['T', 't', ' '])?;
    let mut d = date.split('-');
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let (clock, offset_secs) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else {
        let idx = time.rfind(['+', '-'])?;
        let (c, off) = time.split_at(idx);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':')?;
        (
            c,
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60),
        )
    };
    let mut c = clock.split(':');
    let (h, mi): (i64, i64) = (c.next()?.parse().ok()?, c.next()?.parse().ok()?);
    let sec: i64 = c.next()?.split('.').next()?.parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + sec - offset_secs)
}

pub fn envs(envd: &Envd) -> Response<ResponseBody> {
    json(StatusCode::OK, &serde_json::json!(envd.defaults().env))
}

pub fn snapshot_prepare(envd: &Envd) -> Response<ResponseBody> {
    let drained = envd.conns.prepare_snapshot();
    tracing::info!(
        drained,
        "prepared for snapshot: keep-alive off, connections draining"
    );
    no_content()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339() {
        assert_eq!(parse_rfc3339_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_seconds("2026-11-23T15:45:42.123Z"),
            Some(1_795_448_742)
        );
        assert_eq!(
            parse_rfc3339_seconds("2026-11-23T16:45:42+01:00"),
            Some(1_795_448_742)
        );
        assert_eq!(parse_rfc3339_seconds("yesterday"), None);
    }
}
