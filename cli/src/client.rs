//! A client of the REST API, typed with the server's own request and
//! response types (`warren-api-types`), and the credentials `warren up`
//! leaves for later commands.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use warren_api_types::error::ErrorBody;

/// Where the control plane listens unless told otherwise.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// What `warren up` writes for later commands (mode 0600).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub url: String,
    pub api_key: String,
    pub admin_email: String,
    pub admin_password: String,
}

pub fn credentials_path(dir: &Path) -> PathBuf {
    dir.join("credentials.json")
}

pub fn read_credentials(dir: &Path) -> Option<Credentials> {
    let text = std::fs::read_to_string(credentials_path(dir)).ok()?;
    serde_json::from_str(&text).ok()
}

/// How requests authenticate.
#[derive(Debug, Clone)]
enum Auth {
    Key(String),
    Session(String),
    None,
}

/// A configured API client.
#[derive(Debug, Clone)]
pub struct Api {
    pub base: String,
    auth: Auth,
    http: reqwest::Client,
}

impl Api {
    fn with(base: &str, auth: Auth) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            auth,
            http: reqwest::Client::new(),
        }
    }

    /// A client that sends `key` as `X-API-Key`.
    pub fn new(base: &str, key: &str) -> Self {
        Self::with(base, Auth::Key(key.to_string()))
    }

    /// A client without credentials (signup, login, agent registration).
    pub fn anonymous(base: &str) -> Self {
        Self::with(base, Auth::None)
    }

    /// This client acting with a session token (JWT).
    pub fn session(&self, token: &str) -> Self {
        Self::with(&self.base, Auth::Session(token.to_string()))
    }

    /// Flags and environment first, then the local installation's file.
    pub fn resolve(dir: &Path, url: Option<String>, key: Option<String>) -> anyhow::Result<Self> {
        let creds = read_credentials(dir);
        let url = url
            .or_else(|| creds.as_ref().map(|c| c.url.clone()))
            .unwrap_or_else(|| DEFAULT_URL.into());
        let key = key
            .or_else(|| creds.map(|c| c.api_key))
            .context("no API key: set WARREN_API_KEY or run `warren up` first")?;
        Ok(Self::new(&url, &key))
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let r = self.http.request(method, format!("{}{}", self.base, path));
        match &self.auth {
            Auth::Key(k) => r.header("X-API-Key", k),
            Auth::Session(t) => r.bearer_auth(t),
            Auth::None => r,
        }
    }

    /// `resp` if it succeeded, else its `{"error":{"code","message"}}`.
    pub async fn check(resp: Response) -> anyhow::Result<Response> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        match resp.json::<ErrorBody>().await {
            Ok(e) => bail!("{} ({})", e.error.message, e.error.code),
            Err(_) => bail!("HTTP {status}"),
        }
    }

    /// Sends `req` and reads the answer as `T`.
    pub async fn send<T: DeserializeOwned>(&self, req: RequestBuilder) -> anyhow::Result<T> {
        let resp = req.send().await.context("reaching the control plane")?;
        Ok(Self::check(resp).await?.json().await?)
    }

    /// Sends `req`, expecting no answer body.
    pub async fn send_empty(&self, req: RequestBuilder) -> anyhow::Result<()> {
        let resp = req.send().await.context("reaching the control plane")?;
        Self::check(resp).await.map(drop)
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.request(Method::GET, path)).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    /// A `POST` that takes no body.
    pub async fn act<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.request(Method::POST, path)).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.send_empty(self.request(Method::DELETE, path)).await
    }

    pub fn ws_url(&self, path: &str) -> String {
        let base = self
            .base
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1);
        format!("{base}{path}")
    }

    /// The `X-API-Key` this client sends, if any.
    pub fn key(&self) -> Option<&str> {
        match &self.auth {
            Auth::Key(k) => Some(k),
            _ => None,
        }
    }
}

/// `segment` percent-encoded for a URL path (all but RFC 3986's
/// unreserved characters).
pub fn path_segment(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(super::path_segment("a b/c"), "a%20b%2Fc");
        assert_eq!(super::path_segment("tpl-1.x"), "tpl-1.x");
    }
}
