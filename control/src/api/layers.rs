//! Authentication at the door: the middleware resolves the request's
//! credential (if it has one) once into a [`Principal`] request extension;
//! handlers take `Principal` as an extractor (401 when absent) or
//! `Option<Principal>` (WebSockets, which may authenticate in-band).

use axum::extract::{FromRequestParts, OptionalFromRequestParts, Request, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::app::AppState;
use crate::auth::{self, Principal};

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Principal>().cloned().ok_or_else(|| {
            ApiError::Unauthorized("missing credentials: send X-API-Key or a Bearer token".into())
        })
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Principal {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Principal>().cloned())
    }
}

/// The credential a request carries, if any.
fn credential(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get("x-api-key") {
        return Some(v.to_str().unwrap_or_default().trim().to_string());
    }
    let auth = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = auth.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

/// Middleware: a credential that is present but invalid is refused here
/// with 401; requests without one pass through, for public routes and for
/// WebSocket routes that authenticate in-band.
pub async fn authenticate(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    if let Some(token) = credential(req.headers()) {
        match auth::authenticate(&app, &token).await {
            Ok(p) => {
                req.extensions_mut().insert(p);
            }
            Err(err) => return ApiError::from(err).into_response(),
        }
    }
    next.run(req).await
}
