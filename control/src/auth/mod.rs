//! Authentication and authorisation: who is calling (an API key, a user's
//! JWT session, or a host's token) and what their role in the team allows.
//!
//! The [`middleware`] resolves credentials once per request into a
//! [`Principal`] request extension; handlers take `Principal` as an
//! extractor (401 when absent) and call its `require_*` checks.

pub mod apikey;
pub mod jwt;
pub mod password;
mod principal;

pub use principal::{Actor, Principal, Role, authenticate_token, middleware};
