//! Routing a request to a capsule port, in this order: the headers
//! `E2b-Sandbox-Id` + `E2b-Sandbox-Port`; the host `{port}-{id}.{domain}`;
//! the path `/proxy/{id}/{port}/…` (the prefix is stripped).

use warren_proto::addr::{self, HostError};

use crate::head::Head;

/// How a request named its capsule; path routes also rewrite `Location`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteKind {
    /// `E2b-Sandbox-Id` / `E2b-Sandbox-Port` headers.
    Headers,
    /// `Host: {port}-{id}.{domain}`.
    Host,
    /// `/proxy/{id}/{port}/…`; holds the prefix that was stripped.
    Path {
        /// `/proxy/{id}/{port}`, without a trailing slash.
        prefix: String,
    },
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Capsule id.
    pub id: String,
    /// Port inside the capsule.
    pub port: u16,
    /// How it was named.
    pub kind: RouteKind,
    /// The request target to send upstream (path routes strip their prefix).
    pub upstream_path: Vec<u8>,
}

/// A request that names no capsule, or names one badly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Nothing in the request names a capsule.
    #[error(
        "the request names no capsule: use {{port}}-{{id}}.<domain>, /proxy/{{id}}/{{port}}/ or the E2b-Sandbox-Id and E2b-Sandbox-Port headers"
    )]
    NoCapsule,
    /// Only one of the two routing headers.
    #[error("E2b-Sandbox-Id and E2b-Sandbox-Port must be sent together")]
    HalfHeaders,
    /// A capsule id with characters outside `[A-Za-z0-9_-]` or too long.
    #[error("invalid capsule id")]
    BadId,
    /// A port that is not a number in 1..=65535.
    #[error("invalid capsule port")]
    BadPort,
}

fn parse_port(port: &[u8]) -> Result<u16, RouteError> {
    addr::parse_port(port).ok_or(RouteError::BadPort)
}

fn id_string(id: &[u8]) -> Result<String, RouteError> {
    if !addr::valid_capsule_id(id) {
        return Err(RouteError::BadId);
    }
    // valid_capsule_id admits ASCII only.
    Ok(String::from_utf8_lossy(id).into_owned())
}

/// Routes `head`; `domain` enables host routing (`{port}-{id}.{domain}`).
pub fn resolve(head: &Head, domain: Option<&str>) -> Result<Target, RouteError> {
    let path = head.target();
    match (
        head.header("e2b-sandbox-id"),
        head.header("e2b-sandbox-port"),
    ) {
        (Some(id), Some(port)) => {
            return Ok(Target {
                id: id_string(id)?,
                port: parse_port(port)?,
                kind: RouteKind::Headers,
                upstream_path: path.to_vec(),
            });
        }
        (None, None) => {}
        _ => return Err(RouteError::HalfHeaders),
    }
    if let (Some(domain), Some(host)) = (domain, head.header("host"))
        && let Some(target) = from_host(host, domain, path)?
    {
        return Ok(target);
    }
    from_path(path)?.ok_or(RouteError::NoCapsule)
}

/// `{port}-{id}.{domain}[:port]` → target; `None` when the host is not under `domain`.
fn from_host(host: &[u8], domain: &str, path: &[u8]) -> Result<Option<Target>, RouteError> {
    let named = addr::capsule_host(host, Some(domain)).map_err(|e| match e {
        HostError::BadPort => RouteError::BadPort,
        HostError::BadId => RouteError::BadId,
    })?;
    Ok(named.map(|named| Target {
        port: named.port,
        id: named.id.to_owned(),
        kind: RouteKind::Host,
        upstream_path: path.to_vec(),
    }))
}

/// `/proxy/{id}/{port}[/rest][?query]` → target with upstream path `/rest[?query]`.
fn from_path(path: &[u8]) -> Result<Option<Target>, RouteError> {
    let Some(rest) = path.strip_prefix(b"/proxy/") else {
        return Ok(None);
    };
    let id_end = rest
        .iter()
        .position(|&b| b == b'/')
        .ok_or(RouteError::NoCapsule)?;
    let id = id_string(&rest[..id_end])?;
    let after_id = &rest[id_end + 1..];
    let port_end = after_id
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(after_id.len());
    let port = parse_port(&after_id[..port_end])?;
    let tail = &after_id[port_end..];
    let mut upstream_path = Vec::with_capacity(tail.len() + 1);
    if !tail.starts_with(b"/") {
        upstream_path.push(b'/');
    }
    upstream_path.extend_from_slice(tail);
    Ok(Some(Target {
        kind: RouteKind::Path {
            prefix: format!("/proxy/{id}/{port}"),
        },
        id,
        port,
        upstream_path,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(raw: &str, domain: Option<&str>) -> Result<Target, RouteError> {
        let (head, _) = Head::parse_request(raw.as_bytes()).unwrap().unwrap();
        resolve(&head, domain)
    }

    #[test]
    fn headers_win_over_host_and_path() {
        let t = route(
            "GET /proxy/b/2/x HTTP/1.1\r\nHost: 1-a.w.dev\r\nE2b-Sandbox-Id: c\r\nE2b-Sandbox-Port: 3\r\n\r\n",
            Some("w.dev"),
        )
        .unwrap();
        assert_eq!(
            (t.id.as_str(), t.port, t.kind),
            ("c", 3, RouteKind::Headers)
        );
        assert_eq!(t.upstream_path, b"/proxy/b/2/x");
    }

    #[test]
    fn host_splits_at_first_dash() {
        let t = route(
            "GET /x HTTP/1.1\r\nHost: 8080-abc-def.W.dev:443\r\n\r\n",
            Some("w.dev"),
        )
        .unwrap();
        assert_eq!(
            (t.id.as_str(), t.port, t.kind),
            ("abc-def", 8080, RouteKind::Host)
        );
        assert_eq!(t.upstream_path, b"/x");
        // Other hosts fall through to path routing.
        assert_eq!(
            route(
                "GET /x HTTP/1.1\r\nHost: 8080-abc.other.dev\r\n\r\n",
                Some("w.dev")
            ),
            Err(RouteError::NoCapsule)
        );
        assert_eq!(
            route(
                "GET /x HTTP/1.1\r\nHost: x-abc.w.dev\r\n\r\n",
                Some("w.dev")
            ),
            Err(RouteError::BadPort)
        );
    }

    #[test]
    fn path_prefix_is_stripped_keeping_slashes() {
        let cases = [
            ("/proxy/abc/80/dir/", "/dir/"),
            ("/proxy/abc/80/dir", "/dir"),
            ("/proxy/abc/80/", "/"),
            ("/proxy/abc/80", "/"),
            ("/proxy/abc/80?q=1", "/?q=1"),
            ("/proxy/abc/80/a//b/?q=/x", "/a//b/?q=/x"),
        ];
        for (path, upstream) in cases {
            let t = route(&format!("GET {path} HTTP/1.1\r\n\r\n"), None).unwrap();
            assert_eq!(t.upstream_path, upstream.as_bytes(), "{path}");
            assert_eq!(
                t.kind,
                RouteKind::Path {
                    prefix: "/proxy/abc/80".into()
                }
            );
        }
    }

    #[test]
    fn rejects_bad_names() {
        assert_eq!(
            route("GET /proxy/a.b/80/ HTTP/1.1\r\n\r\n", None),
            Err(RouteError::BadId)
        );
        assert_eq!(
            route("GET /proxy/ab/0/ HTTP/1.1\r\n\r\n", None),
            Err(RouteError::BadPort)
        );
        assert_eq!(
            route("GET /proxy/ab/99999/ HTTP/1.1\r\n\r\n", None),
            Err(RouteError::BadPort)
        );
        assert_eq!(
            route("GET / HTTP/1.1\r\nE2b-Sandbox-Id: a\r\n\r\n", None),
            Err(RouteError::HalfHeaders)
        );
        assert_eq!(
            route("GET / HTTP/1.1\r\n\r\n", None),
            Err(RouteError::NoCapsule)
        );
    }
}
