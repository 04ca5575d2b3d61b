//! Typed errors the proxy answers itself, and their pages: a small HTML page
//! for browsers (`Accept: text/html`), `{"error":{"code","message"}}` for
//! everyone else. Messages name the capsule and port when there is one.

use std::fmt::Write as _;

/// Every error the proxy answers, with its HTTP status and stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 400: the head is not valid HTTP/1.1, or its framing is ambiguous.
    BadRequest,
    /// 400: nothing in the request names a capsule.
    NoRoute,
    /// 400: the capsule id or port is invalid.
    BadTarget,
    /// 401: a private capsule and no access token.
    AccessTokenMissing,
    /// 403: a private capsule and the wrong access token.
    AccessTokenInvalid,
    /// 403: an `X-Warren-Agent-Token` that is not the agent's.
    AgentTokenInvalid,
    /// 403: envd's internal routes from the public side.
    InternalRoute,
    /// 404: no such capsule on this host.
    CapsuleNotFound,
    /// 408: the request head did not arrive in time.
    HeadTimeout,
    /// 409: the capsule is paused.
    CapsulePaused,
    /// 431: the request head is too large.
    HeadTooLarge,
    /// 502: nothing answers on the capsule port, or it broke the protocol.
    UpstreamUnreachable,
    /// 503: the capsule is being drained, evicted, started or stopped.
    CapsuleUnavailable,
    /// 504: the capsule port did not accept in time.
    UpstreamTimeout,
}

impl ErrorCode {
    /// All codes, for metrics.
    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::BadRequest,
        ErrorCode::NoRoute,
        ErrorCode::BadTarget,
        ErrorCode::AccessTokenMissing,
        ErrorCode::AccessTokenInvalid,
        ErrorCode::AgentTokenInvalid,
        ErrorCode::InternalRoute,
        ErrorCode::CapsuleNotFound,
        ErrorCode::HeadTimeout,
        ErrorCode::CapsulePaused,
        ErrorCode::HeadTooLarge,
        ErrorCode::UpstreamUnreachable,
        ErrorCode::CapsuleUnavailable,
        ErrorCode::UpstreamTimeout,
    ];

    /// The HTTP status.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::NoRoute | ErrorCode::BadTarget => 400,
            ErrorCode::AccessTokenMissing => 401,
            ErrorCode::AccessTokenInvalid
            | ErrorCode::AgentTokenInvalid
            | ErrorCode::InternalRoute => 403,
            ErrorCode::CapsuleNotFound => 404,
            ErrorCode::HeadTimeout => 408,
            ErrorCode::CapsulePaused => 409,
            ErrorCode::HeadTooLarge => 431,
            ErrorCode::UpstreamUnreachable => 502,
            ErrorCode::CapsuleUnavailable => 503,
            ErrorCode::UpstreamTimeout => 504,
        }
    }

    /// The stable machine-readable code.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::NoRoute => "no_route",
            ErrorCode::BadTarget => "bad_target",
            ErrorCode::AccessTokenMissing => "access_token_missing",
            ErrorCode::AccessTokenInvalid => "access_token_invalid",
            ErrorCode::AgentTokenInvalid => "agent_token_invalid",
            ErrorCode::InternalRoute => "internal_route",
            ErrorCode::CapsuleNotFound => "capsule_not_found",
            ErrorCode::HeadTimeout => "request_timeout",
            ErrorCode::CapsulePaused => "capsule_paused",
            ErrorCode::HeadTooLarge => "request_header_too_large",
            ErrorCode::UpstreamUnreachable => "upstream_unreachable",
            ErrorCode::CapsuleUnavailable => "capsule_unavailable",
            ErrorCode::UpstreamTimeout => "upstream_timeout",
        }
    }

    fn reason(self) -> &'static str {
        match self.status() {
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            408 => "Request Timeout",
            409 => "Conflict",
            431 => "Request Header Fields Too Large",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            _ => "Gateway Timeout",
        }
    }
}

/// An error answer: its code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ProxyError {
    /// What went wrong.
    pub code: ErrorCode,
    /// Says which capsule and port, and what to do.
    pub message: String,
}

impl ProxyError {
    /// An error with `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The whole response (head and body) for a client; `html` for browsers.
    /// The connection is closed after it when `close`.
    pub fn response(&self, html: bool, close: bool) -> Vec<u8> {
        let (content_type, body) = if html {
            let title = format!("{} {}", self.code.status(), self.code.reason());
            let body = format!(
                "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n\
                 <body><h1>{title}</h1>\n<p>{}</p>\n<p><code>{}</code></p></body></html>\n",
                escape_html(&self.message),
                self.code.as_str()
            );
            ("text/html; charset=utf-8", body)
        } else {
            let body =
                serde_json::json!({"error": {"code": self.code.as_str(), "message": self.message}});
            ("application/json", format!("{body}\n"))
        };
        let mut out = String::with_capacity(body.len() + 160);
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\ncache-control: no-store\r\n{}\r\n{body}",
            self.code.status(),
            self.code.reason(),
            body.len(),
            if close { "connection: close\r\n" } else { "" },
        );
        out.into_bytes()
    }
}

/// True when the client prefers HTML (a browser).
pub fn wants_html(accept: Option<&[u8]>) -> bool {
    accept.is_some_and(|a| a.windows(9).any(|w| w.eq_ignore_ascii_case(b"text/html")))
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_html_pages() {
        let e = ProxyError::new(ErrorCode::CapsulePaused, "capsule <x> is paused");
        let json = String::from_utf8(e.response(false, false)).unwrap();
        assert!(json.starts_with("HTTP/1.1 409 Conflict\r\n"));
        let body = json.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "capsule_paused");
        let html = String::from_utf8(e.response(true, true)).unwrap();
        assert!(html.contains("capsule &lt;x&gt; is paused") && html.contains("connection: close"));
        assert!(wants_html(Some(b"text/html,application/xhtml+xml")));
        assert!(!wants_html(Some(b"application/json")));
    }
}
