//! Authentication and authorisation: who is calling (an API key or a
//! user's JWT session) and what their role in the team allows.
//!
//! [`authenticate`] resolves a credential into a [`Principal`]; the REST
//! layer does it once per request (`crate::api::layers`) and handlers take
//! the `Principal` as an extractor. Domain modules check it with its
//! `require_*` methods, whose refusal is [`Denied`].

pub mod apikey;
pub mod jwt;
pub mod password;
mod principal;

pub use principal::{Actor, AuthError, Denied, Principal, authenticate};
