//! The web console, embedded: the files `npm run build` writes to
//! `web/dist` (the Svelte console and the offline API reference at `/docs`)
//! compiled into the binary and served by warren-control as the fallback of
//! its router (`control/src/api/mod.rs`), so the console and the API share
//! one origin and nothing is fetched from the internet.
//!
//! [`serve`] answers a request that no API route took:
//! - a file of the build, with its content type, an `ETag`, a year of
//!   caching for the content-hashed `assets/` (everything else revalidates),
//!   and the `.br` or `.gz` twin the build wrote when the client takes it;
//! - `/docs` with Swagger UI;
//! - the console's `index.html` for its client-side routes (`/capsules/…`);
//! - the API's JSON 404 for anything that looks like an API call or a file.
//!
//! When `web/dist` was never built the crate still compiles (with a cargo
//! warning) and every page says how to build the console.

mod encoding;
mod routes;

use std::borrow::Cow;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::{EmbeddedFile, RustEmbed};

use encoding::Encoding;
use routes::Target;

#[derive(RustEmbed)]
#[folder = "dist/"]
#[allow_missing = true]
struct Dist;

/// Whether the console was built into this binary.
pub fn built() -> bool {
    Dist::get(routes::INDEX).is_some()
}

/// Serves the console (see the crate docs); meant as a router's fallback.
pub async fn serve(req: Request) -> Response {
    respond(req.method(), req.uri().path(), req.headers())
}

fn respond(method: &Method, path: &str, headers: &HeaderMap) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return not_found();
    }
    let mut response = match routes::classify(path, |p| Dist::get(p).is_some()) {
        Target::File(file) => asset(&file, headers),
        Target::Page if built() => asset(routes::INDEX, headers),
        Target::Page => not_built(),
        Target::NotFound => not_found(),
    };
    if method == Method::HEAD {
        *response.body_mut() = Body::empty();
    }
    response
}

/// One embedded file, in the best encoding the client accepts.
fn asset(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = Dist::get(path) else {
        return not_found();
    };
    let (encoding, body) = Encoding::accepted(headers)
        .into_iter()
        .find_map(|enc| Dist::get(&format!("{path}{}", enc.suffix())).map(|twin| (enc, twin.data)))
        .unwrap_or((Encoding::Identity, file.data.clone()));
    let etag = etag(&file, encoding.suffix());
    let mut out = HeaderMap::new();
    let mime = file.metadata.mimetype();
    let content_type = if mime.starts_with("text/") || mime == "application/javascript" {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    };
    insert(&mut out, header::CONTENT_TYPE, &content_type);
    insert(&mut out, header::ETAG, &etag);
    insert(&mut out, header::VARY, "Accept-Encoding");
    insert(&mut out, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    insert(&mut out, header::CACHE_CONTROL, routes::cache_control(path));
    if encoding != Encoding::Identity {
        insert(&mut out, header::CONTENT_ENCODING, encoding.name());
    }
    if mime == "text/html" {
        insert(&mut out, header::CONTENT_SECURITY_POLICY, CSP);
        insert(&mut out, header::REFERRER_POLICY, "same-origin");
    }
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    if fresh {
        return (StatusCode::NOT_MODIFIED, out).into_response();
    }
    let body = match body {
        Cow::Borrowed(b) => Body::from(b),
        Cow::Owned(v) => Body::from(v),
    };
    (out, body).into_response()
}

/// Everything the console and Swagger UI load comes from this origin.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; font-src 'self' data:; connect-src 'self'; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn etag(file: &EmbeddedFile, variant: &str) -> String {
    let hash = file.metadata.sha256_hash();
    format!("\"{}{variant}\"", hex::encode(&hash[..12]))
}

fn insert(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    // Every value here is ASCII we wrote ourselves.
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// The REST API's error shape, for requests the console does not serve.
fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"error":{"code":"not_found","message":"no such route"}}"#,
    )
        .into_response()
}

const NOT_BUILT: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Warren: console not built</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;padding:0 1rem">
<h1>The web console was not built into this binary</h1>
<p>Build it and then warren-control again: run <code>make web</code> (or
<code>cd web &amp;&amp; npm ci &amp;&amp; npm run build</code>) and rebuild; <code>make up</code>
and <code>make build</code> do both.</p>
<p>The API works without it: its description is at <a href="/openapi.json">/openapi.json</a>.</p>
</body></html>"#;

fn not_built() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        NOT_BUILT,
    )
        .into_response()
}

#[cfg(test)]
mod tests;
