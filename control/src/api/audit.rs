//! The audit trail: one row for every mutating call (POST, PUT, PATCH,
//! DELETE), written by a middleware after the handler answered, with the
//! caller, the resource, the action and whether it succeeded. Handlers that
//! know more (the id of what they created, the team of a caller who had no
//! session yet) attach an [`AuditNote`] to their response.
//!
//! Rows are team-scoped; a call that cannot be tied to a team (a failed
//! login) leaves none. Host heartbeats are not user actions and are left out.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::Value;

use crate::app::AppState;
use crate::auth::Principal;
use crate::db::audit::{self, NewEntry};

/// What a handler adds to its call's audit row.
#[derive(Debug, Clone, Default)]
pub struct AuditNote {
    pub team_id: Option<String>,
    pub resource_id: Option<String>,
    pub actor: Option<(String, String, String)>,
    pub metadata: Option<Value>,
}

impl AuditNote {
    pub fn resource(id: impl Into<String>) -> Self {
        Self {
            resource_id: Some(id.into()),
            ..Self::default()
        }
    }
}

/// Attaches `note` to a response.
pub fn noted(mut resp: Response, note: AuditNote) -> Response {
    resp.extensions_mut().insert(note);
    resp
}

/// `(resource_type, resource id path param, action)` for a route template
/// such as `/v1/capsules/{id}/pause`.
pub fn describe(method: &str, route: &str) -> (String, Option<&'static str>, String) {
    let segs: Vec<&str> = route
        .trim_start_matches('/')
        .split('/')
        .skip_while(|s| *s == "v1")
        .collect();
    let (family, rest) = match segs.split_first() {
        Some((&"admin", rest)) => match rest.split_first() {
            Some((f, r)) => (*f, r),
            None => ("admin", rest),
        },
        Some((f, r)) => (*f, r),
        None => ("root", &[][..]),
    };
    let resource = match family {
        "capsules" => "capsule",
        "snapshots" | "templates" => "template",
        "builds" => "build",
        "hosts" => "host",
        "api-keys" => "api_key",
        "teams" => "team",
        "users" | "me" => "user",
        "auth" => "session",
        other => other,
    };
    let id_param = rest
        .first()
        .filter(|s| s.starts_with('{'))
        .map(|_| "id")
        .or_else(|| (family == "snapshots" && !rest.is_empty()).then_some("name"));
    let statics: Vec<&str> = rest
        .iter()
        .copied()
        .filter(|s| !s.starts_with('{'))
        .collect();
    let action = if statics.is_empty() {
        match method {
            "POST" => "create".to_string(),
            "DELETE" => "delete".to_string(),
            _ => "update".to_string(),
        }
    } else {
        let mut a = statics.join(".");
        if method == "DELETE" {
            a.push_str(".delete");
        }
        a
    };
    (resource.to_string(), id_param, action)
}

pub async fn middleware(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_string();
    if !matches!(method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE") {
        return next.run(req).await;
    }
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let principal = req.extensions().get::<Principal>().cloned();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    let Some(route) = route else { return resp };
    if route.ends_with("/heartbeat") {
        return resp;
    }
    let note = resp
        .extensions()
        .get::<AuditNote>()
        .cloned()
        .unwrap_or_default();
    let team = note
        .team_id
        .clone()
        .or_else(|| principal.as_ref().map(|p| p.team_id.clone()));
    let Some(team_id) = team else { return resp };
    let (resource_type, id_param, action) = describe(&method, &route);
    let resource_id = note
        .resource_id
        .clone()
        .or_else(|| id_param.and_then(|_| path_param(&route, &path, 0)));
    let (actor_type, actor_id, actor_name) = match (&note.actor, &principal) {
        (Some((t, i, n)), _) => (t.clone(), Some(i.clone()), Some(n.clone())),
        (None, Some(p)) => (
            p.actor_type().to_string(),
            Some(p.actor_id().to_string()),
            Some(p.actor_name().to_string()),
        ),
        (None, None) => ("system".to_string(), None, None),
    };
    let status = resp.status();
    let mut metadata = note
        .metadata
        .clone()
        .unwrap_or_else(|| serde_json::json!({}));
    if let Some(obj) = metadata.as_object_mut() {
        obj.insert("route".into(), Value::String(format!("{method} {route}")));
    }
    let entry = NewEntry {
        team_id,
        actor_type,
        actor_id,
        actor_name,
        resource_type,
        resource_id,
        action,
        success: status.is_success() || status.is_informational(),
        http_status: i32::from(status.as_u16()),
        metadata,
    };
    let res = audit::insert(&app.db, &entry).await;
    if let Err(err) = res {
        tracing::error!(error = %err, "writing audit row");
    }
    resp
}

/// The value of the `n`th `{param}` of `route` in the concrete `path`.
fn path_param(route: &str, path: &str, n: usize) -> Option<String> {
    route
        .split('/')
        .zip(path.split('/'))
        .filter(|(r, _)| r.starts_with('{'))
        .nth(n)
        .map(|(_, p)| p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_routes() {
        let d = |m, r| {
            let (t, p, a) = describe(m, r);
            (t, p.is_some(), a)
        };
        assert_eq!(
            d("POST", "/v1/capsules"),
            ("capsule".into(), false, "create".into())
        );
        assert_eq!(
            d("DELETE", "/v1/capsules/{id}"),
            ("capsule".into(), true, "delete".into())
        );
        assert_eq!(
            d("POST", "/v1/capsules/{id}/pause"),
            ("capsule".into(), true, "pause".into())
        );
        assert_eq!(
            d("POST", "/v1/capsules/{id}/files/write"),
            ("capsule".into(), true, "files.write".into())
        );
        assert_eq!(
            d("DELETE", "/v1/capsules/{id}/processes/{selector}"),
            ("capsule".into(), true, "processes.delete".into())
        );
        assert_eq!(
            d("DELETE", "/v1/snapshots/{name}"),
            ("template".into(), true, "delete".into())
        );
        assert_eq!(
            d("POST", "/v1/admin/templates"),
            ("template".into(), false, "create".into())
        );
        assert_eq!(
            d("POST", "/v1/auth/login"),
            ("session".into(), false, "login".into())
        );
    }

    #[test]
    fn extracts_path_params() {
        assert_eq!(
            path_param("/v1/capsules/{id}/pause", "/v1/capsules/sb-1/pause", 0).as_deref(),
            Some("sb-1")
        );
        assert_eq!(path_param("/v1/capsules", "/v1/capsules", 0), None);
    }
}
