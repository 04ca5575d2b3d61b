//! The seam between the engine and what a deployment decides about each
//! request: where it goes, who may send it, what its heads say on the way.
//!
//! For every request the engine calls, in order:
//! 1. [`Policy::admit`] with the parsed head: an [`Admitted`] upstream (its
//!    address, the key its connections are pooled, tracked and limited
//!    under) and a per-request context, or an error page to answer. It may
//!    wait (a capsule being woken up).
//! 2. [`Policy::upstream_request`] writes the head sent upstream.
//! 3. [`Policy::response`] writes the response head sent to the client.
//! 4. [`Policy::on_end`] once the exchange is over.
//!
//! One policy value lives on each core (made there by the factory given to
//! [`crate::Relay::start`]), so it may keep per-core state without locks;
//! the engine is generic over it, so a phase costs a direct call.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use crate::errors::ProxyError;
use crate::head::{Framing, Head};
use crate::ratelimit::Limits;
use crate::tracking::{CapsuleStats, CoreConns, Tracker};

/// A request as the policy sees it.
#[derive(Debug)]
pub struct Request<'a> {
    /// The parsed head.
    pub head: &'a Head,
    /// Its body framing (already checked to be unambiguous).
    pub framing: Framing,
    /// The client's address.
    pub peer: SocketAddr,
    /// True when the client connection is TLS.
    pub tls: bool,
}

/// Where an admitted request goes.
#[derive(Debug, Clone)]
pub struct Admitted<C> {
    /// The upstream's address.
    pub addr: SocketAddr,
    /// Idle upstream connections are pooled per key and address, never
    /// across keys; tracked requests are counted and drained under it.
    pub key: Rc<str>,
    /// Count this connection, its requests and bytes under `key` (and let a
    /// drain or evict of `key` close it).
    pub tracked: bool,
    /// Rate limits of `key` (bytes and operations).
    pub limits: Limits,
    /// What the later phases need to know.
    pub ctx: C,
}

/// What the engine can tell a policy during admission.
pub struct View<'a> {
    pub(crate) conns: &'a CoreConns,
    pub(crate) tracker: &'a Arc<Tracker>,
}

impl View<'_> {
    /// The live counters of `key` (from this core's cache).
    pub fn stats(&self, key: &str) -> Arc<CapsuleStats> {
        self.conns.stats(self.tracker, key).1
    }
}

/// How an exchange ended, for [`Policy::on_end`].
#[derive(Debug, Clone, Copy)]
pub struct End {
    /// The status sent to the client, if a response head went out.
    pub status: Option<u16>,
}

/// A deployment's decisions (see the module documentation).
pub trait Policy: 'static {
    /// Per-request state from admission to the end of the exchange.
    type Ctx;

    /// Decides where `req` goes, or which error page answers it.
    fn admit(
        &self,
        req: &Request<'_>,
        view: &View<'_>,
    ) -> impl Future<Output = Result<Admitted<Self::Ctx>, ProxyError>>;

    /// Writes the whole head sent upstream (ending with the empty line). For
    /// an `upgrade`, the engine relies on it to keep `Connection: upgrade`
    /// and `Upgrade` (see [`crate::head::write_request_start`]).
    fn upstream_request(
        &self,
        ctx: &Self::Ctx,
        req: &Request<'_>,
        upgrade: bool,
        out: &mut Vec<u8>,
    );

    /// Writes the whole response head sent to the client; `close` when the
    /// engine closes the connection after this response.
    fn response(
        &self,
        ctx: &Self::Ctx,
        req: &Request<'_>,
        response: &Head,
        close: bool,
        out: &mut Vec<u8>,
    ) {
        let _ = (ctx, req);
        crate::head::write_response(out, response, close, |_, _, _| false);
    }

    /// Names the upstream in error pages ("capsule abc port 8000").
    fn upstream_name(&self, ctx: &Self::Ctx) -> String;

    /// Called once the exchange is over (answered, relayed or broken).
    fn on_end(&self, ctx: Self::Ctx, end: End) {
        let _ = (ctx, end);
    }
}
