//! Who may reach what. Public traffic to a private capsule needs the
//! capsule's access token; envd's internal routes are never reachable from
//! the public side. Requests carrying the agent's internal token (the control
//! plane relaying envd calls) are "internal": they skip the traffic token,
//! may reach every envd route, and get the capsule's envd token injected.

use crate::errors::{ErrorCode, ProxyError};
use crate::head::Head;
use crate::table::{Route, Secret};
use crate::target::{RouteKind, Target};
use warren_proto::addr::ENVD_PORT;

/// Header carrying the agent's internal token.
pub const AGENT_TOKEN_HEADER: &str = "x-warren-agent-token";
/// Headers that may carry a private capsule's traffic token.
pub const TRAFFIC_TOKEN_HEADERS: [&str; 2] = ["x-access-token", "e2b-traffic-access-token"];

/// envd routes only the agent may call (compared after normalisation).
const INTERNAL_PATHS: [&str; 2] = ["init", "snapshot/prepare"];

/// Who sent a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// Anyone on the network.
    Public,
    /// The control plane, through the agent's internal token.
    Internal,
}

/// Tells internal requests from public ones; a wrong agent token is refused
/// rather than treated as public.
pub fn classify(head: &Head, agent_token: Option<&Secret>) -> Result<Caller, ProxyError> {
    let Some(presented) = head.header(AGENT_TOKEN_HEADER) else {
        return Ok(Caller::Public);
    };
    match agent_token {
        Some(token) if token.matches(presented) => Ok(Caller::Internal),
        _ => Err(ProxyError::new(
            ErrorCode::AgentTokenInvalid,
            "the X-Warren-Agent-Token header is not this agent's token",
        )),
    }
}

/// Checks that `caller` may send this request to `target` on `route`.
pub fn authorize(
    caller: Caller,
    head: &Head,
    target: &Target,
    route: &Route,
) -> Result<(), ProxyError> {
    let (id, port) = (&target.id, target.port);
    match caller {
        Caller::Internal => {
            if target.kind != RouteKind::Headers {
                return Err(ProxyError::new(
                    ErrorCode::BadRequest,
                    format!(
                        "internal requests must name capsule {id} with the E2b-Sandbox-Id and E2b-Sandbox-Port headers"
                    ),
                ));
            }
            Ok(())
        }
        Caller::Public => {
            if port == ENVD_PORT && is_internal_path(&target.upstream_path) {
                return Err(ProxyError::new(
                    ErrorCode::InternalRoute,
                    format!(
                        "this envd route of capsule {id} (port {port}) is reserved for the agent"
                    ),
                ));
            }
            let Some(token) = &route.access_token else {
                return Ok(());
            };
            let mut presented = TRAFFIC_TOKEN_HEADERS
                .iter()
                .filter_map(|h| head.header(h))
                .peekable();
            if presented.peek().is_none() {
                return Err(ProxyError::new(
                    ErrorCode::AccessTokenMissing,
                    format!(
                        "capsule {id} is private: send its access token in the X-Access-Token or e2b-traffic-access-token header (port {port})"
                    ),
                ));
            }
            if presented.any(|value| token.matches(value)) {
                Ok(())
            } else {
                Err(ProxyError::new(
                    ErrorCode::AccessTokenInvalid,
                    format!("the access token does not match capsule {id} (port {port})"),
                ))
            }
        }
    }
}

/// True when `target` (path and query) names one of envd's internal routes,
/// however it is spelled: percent-escapes, dot segments, repeated slashes
/// and case do not hide it.
pub fn is_internal_path(target: &[u8]) -> bool {
    let path = target
        .split(|&b| b == b'?' || b == b'#')
        .next()
        .unwrap_or(target);
    let decoded = percent_decode(path);
    let mut segments: Vec<&[u8]> = Vec::new();
    for segment in decoded.split(|&b| b == b'/' || b == b'\\') {
        match segment {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let normalised = segments.join(&b'/');
    INTERNAL_PATHS
        .iter()
        .any(|p| normalised.eq_ignore_ascii_case(p.as_bytes()))
}

fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if input[i] == b'%'
            && let (Some(h), Some(l)) = (
                input.get(i + 1).and_then(|&b| hex(b)),
                input.get(i + 2).and_then(|&b| hex(b)),
            )
        {
            // Two hex digits always fit a byte.
            out.push(u8::try_from(h * 16 + l).unwrap_or(b'%'));
            i += 3;
            continue;
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_paths_in_every_spelling() {
        for p in [
            "/init",
            "/init/",
            "//init",
            "/./init",
            "/x/../init",
            "/%69nit",
            "/INIT?x=1",
            "/snapshot/prepare",
            "/snapshot//prepare/",
            "/snapshot%2Fprepare",
        ] {
            assert!(is_internal_path(p.as_bytes()), "{p}");
        }
        for p in ["/", "/initial", "/files", "/health", "/snapshot", "/envs"] {
            assert!(!is_internal_path(p.as_bytes()), "{p}");
        }
    }
}
