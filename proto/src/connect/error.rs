//! The Connect error: a code, a message, and its JSON wire form.

use serde::{Deserialize, Serialize};

use super::Code;

/// An RPC failure as Connect carries it: in a unary response body, or in the
/// end-of-stream message of a streaming response.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ConnectError {
    pub code: Code,
    pub message: String,
}

/// `{"code": "...", "message": "..."}`: the JSON form on the wire.
#[derive(Serialize, Deserialize)]
pub(crate) struct WireError {
    pub code: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl ConnectError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(Code::Unauthenticated, message)
    }

    pub fn unimplemented(message: impl Into<String>) -> Self {
        Self::new(Code::Unimplemented, message)
    }

    pub(crate) fn to_wire(&self) -> WireError {
        WireError {
            code: self.code.as_str().to_owned(),
            message: self.message.clone(),
        }
    }

    /// The JSON body of a unary error response.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising two strings into JSON cannot fail.
        serde_json::to_vec(&self.to_wire()).unwrap_or_default()
    }

    /// Parses an error body; `status` decides the code when the body is not a
    /// Connect error.
    pub fn from_body(status: u16, body: &[u8]) -> Self {
        match serde_json::from_slice::<WireError>(body) {
            Ok(wire) => Self::from_wire(wire, Code::from_http_status(status)),
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                let message = if text.is_empty() {
                    format!("HTTP status {status}")
                } else {
                    format!("HTTP status {status}: {}", truncate(text, 512))
                };
                Self::new(Code::from_http_status(status), message)
            }
        }
    }

    pub(crate) fn from_wire(wire: WireError, fallback: Code) -> Self {
        Self::new(wire.code.parse().unwrap_or(fallback), wire.message)
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip() {
        let err = ConnectError::not_found("process 7 not found");
        let back = ConnectError::from_body(404, &err.to_json());
        assert_eq!(back, err);
    }

    #[test]
    fn non_connect_body_maps_status() {
        let err = ConnectError::from_body(502, b"<html>bad gateway</html>");
        assert_eq!(err.code, Code::Unavailable);
        assert!(err.message.contains("bad gateway"));
        let err = ConnectError::from_body(503, b"");
        assert_eq!(err.message, "HTTP status 503");
    }

    #[test]
    fn unknown_code_in_body_falls_back_to_status() {
        let err = ConnectError::from_body(403, br#"{"code":"weird","message":"m"}"#);
        assert_eq!(err.code, Code::PermissionDenied);
        assert_eq!(err.message, "m");
    }
}
