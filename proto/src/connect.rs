//! The Connect RPC protocol (<https://connectrpc.com/docs/protocol>) for every
//! server and client in Warren: unary, server-streaming and client-streaming
//! calls over HTTP/1.1 or HTTP/2; `application/json`, `application/proto`,
//! `application/connect+json` and `application/connect+proto`; envelopes and
//! the end-of-stream message; error codes mapped to HTTP status;
//! `Connect-Timeout-Ms`; gzip-compressed requests.
//!
//! Services get typed server traits, routers and clients generated from the
//! `.proto` files (see `build.rs`): e.g. [`crate::process::ProcessService`],
//! [`crate::process::process_router`] and [`crate::process::ProcessClient`].

mod client;
mod code;
mod codec;
mod compression;
pub mod envelope;
mod error;
mod server;
mod stream;

pub use client::{Client, ClientBuilder, InvalidBaseUrl};
pub use code::{Code, UnknownCode};
pub use codec::{Codec, Message, RpcKind};
pub use compression::Compression;
pub use error::ConnectError;
pub use server::{DEFAULT_MESSAGE_LIMIT, RequestContext, ResponseBody, Router, error_response};
pub use stream::MessageStream;

/// The boxed error type of bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
