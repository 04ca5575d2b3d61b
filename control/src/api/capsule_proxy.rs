//! Capsule ports on the control plane's own address, as Wrenn serves them:
//! a request whose `Host` is `{port}-{capsule id}.{anything}` (what the SDK's
//! `get_url` builds from `WRENN_BASE_URL`) is relayed, body streaming both
//! ways and WebSocket upgrades included, to the data plane of the agent that
//! holds the capsule, which routes it on (`E2b-Sandbox-Id`/`-Port`).
//! Deployments with wildcard DNS pointing at the agents skip this hop.

use axum::{
    body::Body,
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

use super::error::ApiError;
use crate::{app::AppState, db, transfer};

/// `8000-cap-abc.example.com:7000` → (8000, "cap-abc").
pub fn parse_host(host: &str) -> Option<(u16, &str)> {
    let (label, rest) = host.split_once('.')?;
    if rest.is_empty() {
        return None;
    }
    let (port, id) = label.split_once('-')?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    (!id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then_some((port, id))
}

/// Relays capsule-port requests; everything else goes to the API.
pub async fn middleware(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or_default()
        .to_owned();
    match parse_host(&host) {
        Some((port, id)) => match relay(&app, port, id, req).await {
            Ok(resp) => resp,
            Err(e) => e.into_response(),
        },
        None => next.run(req).await,
    }
}

async fn relay(
    app: &AppState,
    port: u16,
    id: &str,
    mut req: Request,
) -> Result<Response, ApiError> {
    let lookup = async {
        let host_id = db::capsules::traffic_host(&app.db, id).await?;
        let host = match &host_id {
            Some(h) => db::hosts::conn(&app.db, h).await?,
            None => None,
        };
        Ok::<_, sqlx::Error>((host_id, host))
    };
    let (host_id, host) = lookup.await.map_err(ApiError::internal)?;
    let host_id = host_id.ok_or_else(|| ApiError::NotFound(format!("capsule {id} not found")))?;
    let host =
        host.ok_or_else(|| ApiError::HostUnavailable(format!("host {host_id} no longer exists")))?;
    let proxy = host.proxy_address.clone().ok_or_else(|| {
        ApiError::HostUnavailable(format!("host {host_id} has no data plane address yet"))
    })?;

    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let upgrade = req
        .headers()
        .get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let mut out = http::Request::builder().method(parts.method).uri(format!(
        "{}{}",
        transfer::base_url(&proxy),
        path
    ));
    for (k, v) in &parts.headers {
        out = out.header(k, v);
    }
    out = out
        .header(
            "e2b-sandbox-id",
            HeaderValue::from_str(id).map_err(|e| ApiError::InvalidRequest(e.to_string()))?,
        )
        .header("e2b-sandbox-port", port);
    let body = body
        .map_err(|e| Box::new(e) as transfer::BoxError)
        .boxed_unsync();
    let out = out
        .body(body)
        .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    let mut resp =
        app.user_traffic.request(out).await.map_err(|e| {
            ApiError::HostUnavailable(format!("capsule {id}: data plane {proxy}: {e}"))
        })?;

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                if let (Ok(client), Ok(upstream)) = (client_upgrade.await, upstream_upgrade.await) {
                    let (mut c, mut u) = (TokioIo::new(client), TokioIo::new(upstream));
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                }
            });
        }
    }
    let (parts, body) = resp.into_parts();
    Ok(Response::from_parts(parts, Body::new(body)))
}

#[cfg(test)]
mod tests {
    use super::parse_host;

    #[test]
    fn capsule_hosts() {
        assert_eq!(
            parse_host("8000-cap-1.localhost:7000"),
            Some((8000, "cap-1"))
        );
        assert_eq!(parse_host("49983-abc.example.com"), Some((49983, "abc")));
        assert_eq!(parse_host("127.0.0.1:7000"), None);
        assert_eq!(parse_host("localhost:7000"), None);
        assert_eq!(parse_host("api.example.com"), None);
        assert_eq!(parse_host("0-abc.x"), None);
        assert_eq!(parse_host("80-.x"), None);
        assert_eq!(parse_host("80-a/b.x"), None);
    }
}
