//! Who a request acts as, and whether it may act at all.
//!
//! The user is chosen by a Basic `Authorization` header carrying the username
//! (`base64("user:")`), as E2B's SDKs send it; without one, the default user
//! applies. Once `/init` sets an access token, every request must carry it in
//! `X-Access-Token`, compared in constant time.

use base64::Engine;
use http::HeaderMap;
use subtle::ConstantTimeEq;
use warren_proto::connect::ConnectError;

use crate::{
    state::Envd,
    users::{User, UserError},
};

pub const ACCESS_TOKEN_HEADER: &str = "x-access-token";

/// Whether the request carries the access token (or none is required).
pub fn token_ok(envd: &Envd, headers: &HeaderMap) -> bool {
    match envd.token() {
        None => true,
        Some(expected) => headers
            .get(ACCESS_TOKEN_HEADER)
            .map(|got| bool::from(got.as_bytes().ct_eq(expected.as_bytes())))
            .unwrap_or(false),
    }
}

/// Why a request's user could not be determined.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("malformed Authorization header: expected Basic base64(\"username:\")")]
    Malformed,
    #[error(transparent)]
    User(#[from] UserError),
}

impl From<AuthError> for ConnectError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::User(UserError::Read { .. }) => ConnectError::internal(e.to_string()),
            _ => ConnectError::unauthenticated(e.to_string()),
        }
    }
}

/// The username named by a Basic `Authorization` header, if there is one.
pub fn basic_username(headers: &HeaderMap) -> Result<Option<String>, AuthError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| AuthError::Malformed)?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
        .ok_or(AuthError::Malformed)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| AuthError::Malformed)?;
    let decoded = String::from_utf8(decoded).map_err(|_| AuthError::Malformed)?;
    let name = decoded.split(':').next().unwrap_or_default();
    Ok((!name.is_empty()).then(|| name.to_owned()))
}

/// The user a request acts as: the one named by `explicit` (a header or a
/// query parameter), else the default user.
pub fn resolve_user(envd: &Envd, explicit: Option<&str>) -> Result<User, AuthError> {
    let name = match explicit.filter(|n| !n.is_empty()) {
        Some(name) => name.to_owned(),
        None => envd.defaults().user,
    };
    Ok(envd.accounts.user(&name)?)
}

/// The user of an RPC (from its `Authorization` header).
pub fn rpc_user(envd: &Envd, headers: &HeaderMap) -> Result<User, AuthError> {
    let name = basic_username(headers)?;
    resolve_user(envd, name.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[test]
    fn parses_basic_usernames() {
        assert_eq!(basic_username(&HeaderMap::new()).unwrap(), None);
        // base64("user:")
        assert_eq!(
            basic_username(&headers("Basic dXNlcjo="))
                .unwrap()
                .as_deref(),
            Some("user")
        );
        // base64("root:pw") still names root.
        assert_eq!(
            basic_username(&headers("Basic cm9vdDpwdw=="))
                .unwrap()
                .as_deref(),
            Some("root")
        );
        assert!(basic_username(&headers("Bearer abc")).is_err());
        assert!(basic_username(&headers("Basic !!!")).is_err());
    }
}
