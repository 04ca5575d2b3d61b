//! Plain HTTP for what is not an RPC: envd's `/files` downloads and
//! uploads, streamed through the relay on their own connection pool.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ReqBody = UnsyncBoxBody<Bytes, BoxError>;
pub type HttpClient = Client<HttpConnector, ReqBody>;

/// A base URL plus headers sent with every request.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub base: String,
    pub headers: HeaderMap,
}

/// `host:port` or a URL, as an `http://` base URL.
pub fn base_url(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.trim_end_matches('/').to_string()
    } else {
        format!("http://{addr}")
    }
}

impl Endpoint {
    pub fn new(addr: &str, headers: HeaderMap) -> Self {
        Self {
            base: base_url(addr),
            headers,
        }
    }

    /// A request builder for `path_and_query` carrying the endpoint's headers.
    pub fn request(&self, method: Method, path_and_query: &str) -> http::request::Builder {
        let mut b = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path_and_query));
        for (k, v) in &self.headers {
            b = b.header(k, v);
        }
        b
    }
}

/// `name: value` for a header map, skipping values that cannot be headers.
pub fn header(map: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        map.insert(HeaderName::from_static(name), v);
    }
}

pub fn full_body(bytes: impl Into<Bytes>) -> ReqBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}
