//! envd's plain HTTP routes: `/health`, `/init`, `/envs`, `/metrics`,
//! `/files`, and the agent-only `/snapshot/prepare`.

pub mod files;
pub mod init;
pub mod metrics;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use warren_proto::connect::ResponseBody;

/// The protocol level envd implements, reported by `/health`: the newest
/// feature set E2B's SDKs know about (file metadata, octet-stream uploads,
/// closing stdin, entries in watch events, network-mount watches).
pub const ENVD_VERSION: &str = "0.6.4";

pub fn full(body: impl Into<Bytes>) -> ResponseBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<ResponseBody> {
    let mut resp = Response::new(full(serde_json::to_vec(value).unwrap_or_default()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// envd's error body: `{"code": <HTTP status>, "message": "..."}`.
pub fn error(status: StatusCode, message: impl std::fmt::Display) -> Response<ResponseBody> {
    json(
        status,
        &serde_json::json!({ "code": status.as_u16(), "message": message.to_string() }),
    )
}

/// An error answered with envd's error body.
#[derive(Debug)]
pub struct HttpError {
    pub status: StatusCode,
    pub message: String,
}

impl HttpError {
    pub fn new(status: StatusCode, message: impl std::fmt::Display) -> Self {
        Self {
            status,
            message: message.to_string(),
        }
    }

    pub fn into_response(self) -> Response<ResponseBody> {
        error(self.status, self.message)
    }
}

pub fn no_content() -> Response<ResponseBody> {
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}

pub fn health() -> Response<ResponseBody> {
    json(
        StatusCode::OK,
        &serde_json::json!({ "version": ENVD_VERSION }),
    )
}
