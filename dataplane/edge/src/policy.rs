//! Warren's decisions about each request (the relay engine's [`Policy`]):
//!
//! - a request that names a capsule ([`crate::target`]) goes to it when it
//!   runs on this host, after the access checks of [`crate::access`]; a
//!   paused capsule that resumes on traffic is woken and the request waits
//!   for it ([`crate::wake`]); a capsule on another host is reached through
//!   that host's edge, marked with [`HOP_HEADER`] so it never goes round;
//! - every other request is the API's, the console's or their streams': it
//!   goes to the control plane, limited per API key ([`crate::apirate`]).
//!
//! It also writes the heads on the way: `X-Forwarded-*`, routing and token
//! headers stripped before a capsule sees them, envd's token injected for
//! the control plane's own calls, `Location` rewritten and service-worker
//! scope widening refused on path routes.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use warren_proto::addr::ENVD_PORT;
use warren_relay::head::{Head, push_header, write_request_start, write_response};
use warren_relay::{Admitted, ErrorCode, Limits, Policy, ProxyError, Request, View};
use warren_runtime as runtime;

use crate::access::{self, AGENT_TOKEN_HEADER, Caller, HOP_HEADER, TRAFFIC_TOKEN_HEADERS};
use crate::apirate::ApiRate;
use crate::config::EdgeConfig;
use crate::location;
use crate::table::{CapsuleState, Place, Route, RouteTable, Routes, Secret};
use crate::target::{self, RouteError, RouteKind, Target};
use crate::wake::Waker;

/// What every core's policy shares.
pub(crate) struct Shared {
    pub(crate) config: EdgeConfig,
    pub(crate) routes: Arc<Routes>,
    pub(crate) waker: Option<Arc<dyn Waker>>,
    /// Pool key of the control plane's connections.
    control_key: String,
}

impl Shared {
    pub(crate) fn new(
        config: EdgeConfig,
        routes: Arc<Routes>,
        waker: Option<Arc<dyn Waker>>,
    ) -> Self {
        Self {
            config,
            routes,
            waker,
            control_key: "control plane".into(),
        }
    }
}

/// One core's policy.
pub struct EdgePolicy {
    shared: Arc<Shared>,
    api_rate: RefCell<ApiRate>,
    control_key: Rc<str>,
}

impl EdgePolicy {
    pub(crate) fn new(shared: Arc<Shared>, cores: usize) -> Self {
        let api_rate = ApiRate::new(shared.config.api_rate, cores);
        Self {
            control_key: Rc::from(shared.control_key.as_str()),
            shared,
            api_rate: RefCell::new(api_rate),
        }
    }
}

/// Where an admitted request goes, for the later phases.
pub enum Ctx {
    /// A capsule on this host.
    Capsule {
        target: Target,
        caller: Caller,
        address: std::net::IpAddr,
        envd_token: Option<Secret>,
    },
    /// A capsule behind another host's edge.
    Remote { target: Target, edge: SocketAddr },
    /// The control plane (API, console, their streams).
    Api,
}

fn route_error(error: RouteError) -> ProxyError {
    let code = if error == RouteError::NoCapsule {
        ErrorCode::NoRoute
    } else {
        ErrorCode::BadTarget
    };
    ProxyError::new(code, error.to_string())
}

impl EdgePolicy {
    fn api(&self, req: &Request<'_>, caller: Caller) -> Result<Admitted<Ctx>, ProxyError> {
        let Some(control) = self.shared.config.control else {
            return Err(route_error(RouteError::NoCapsule));
        };
        if caller == Caller::Internal {
            return Err(ProxyError::new(
                ErrorCode::BadRequest,
                "the agent token is for capsule calls, not for the API",
            ));
        }
        self.api_rate.borrow_mut().admit(req.head, Instant::now())?;
        Ok(Admitted {
            addr: control,
            key: Rc::clone(&self.control_key),
            tracked: false,
            limits: Limits::default(),
            ctx: Ctx::Api,
        })
    }

    /// A capsule on this host that may not take traffic now: wake it when
    /// it resumes on traffic and wait (bounded), else say why.
    async fn await_running(
        &self,
        target: &Target,
        caller: Caller,
        route: &Route,
    ) -> Result<Arc<RouteTable>, ProxyError> {
        let (id, port) = (&target.id, target.port);
        let paused = || {
            ProxyError::new(
                ErrorCode::CapsulePaused,
                format!("capsule {id} is paused: resume it to reach port {port}"),
            )
        };
        match route.state {
            CapsuleState::Unavailable => {
                return Err(ProxyError::new(
                    ErrorCode::CapsuleUnavailable,
                    format!(
                        "capsule {id} is starting or stopping; port {port} cannot be reached now"
                    ),
                ));
            }
            CapsuleState::Paused if !route.auto_resume || caller == Caller::Internal => {
                return Err(paused());
            }
            _ => {}
        }
        let Some(waker) = &self.shared.waker else {
            return Err(paused());
        };
        waker.wake(id);
        let wait = self.shared.config.resume_wait;
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            runtime::sleep(Duration::from_millis(20)).await;
            let table = self.shared.routes.load_full();
            match table.get(id).map(|r| r.state) {
                Some(CapsuleState::Running) => return Ok(table),
                Some(_) => {}
                None => {
                    return Err(ProxyError::new(
                        ErrorCode::CapsuleNotFound,
                        format!("capsule {id} went away while it was being resumed"),
                    ));
                }
            }
        }
        Err(ProxyError::new(
            ErrorCode::UpstreamTimeout,
            format!("capsule {id} did not resume within {wait:?}; port {port} was not reached"),
        ))
    }
}

impl Policy for EdgePolicy {
    type Ctx = Ctx;

    async fn admit(&self, req: &Request<'_>, view: &View<'_>) -> Result<Admitted<Ctx>, ProxyError> {
        let config = &self.shared.config;
        let head = req.head;
        if head.method().eq_ignore_ascii_case(b"CONNECT") {
            return Err(ProxyError::new(
                ErrorCode::BadRequest,
                "CONNECT is not relayed: name a capsule port in the URL instead",
            ));
        }
        let caller = access::classify(head, config.agent_token.as_ref())?;
        let target = match target::resolve(head, config.domain.as_deref()) {
            Ok(target) => target,
            Err(RouteError::NoCapsule) => return self.api(req, caller),
            Err(error) => return Err(route_error(error)),
        };
        let (id, port) = (&target.id, target.port);
        let mut table = self.shared.routes.load_full();
        let not_found = || {
            ProxyError::new(
                ErrorCode::CapsuleNotFound,
                format!("capsule {id} does not exist (port {port})"),
            )
        };
        let route = table.get(id).ok_or_else(not_found)?;
        if let Place::Host(edge) = route.place {
            if head.header(HOP_HEADER).is_some() {
                return Err(ProxyError::new(
                    ErrorCode::LoopDetected,
                    format!(
                        "capsule {id} is not on this host, and the request was already forwarded here by another edge"
                    ),
                ));
            }
            access::authorize(caller, head, &target, route)?;
            return Ok(Admitted {
                addr: edge,
                key: Rc::from(edge.to_string()),
                tracked: false,
                limits: Limits::default(),
                ctx: Ctx::Remote { target, edge },
            });
        }
        if route.state != CapsuleState::Running {
            table = self.await_running(&target, caller, route).await?;
        }
        let route = table.get(id).ok_or_else(not_found)?;
        let Place::Here(address) = route.place else {
            // Moved to another host while it was being resumed: let the
            // client try again, and reach it there.
            return Err(ProxyError::new(
                ErrorCode::CapsuleUnavailable,
                format!("capsule {id} moved to another host; try again"),
            ));
        };
        if caller == Caller::Public && view.stats(id).is_draining() {
            return Err(ProxyError::new(
                ErrorCode::CapsuleUnavailable,
                format!(
                    "capsule {id} is being paused or stopped; try again once it runs (port {port})"
                ),
            ));
        }
        access::authorize(caller, head, &target, route)?;
        Ok(Admitted {
            addr: SocketAddr::new(address, port),
            key: Rc::from(id.as_str()),
            tracked: true,
            limits: route.limits,
            ctx: Ctx::Capsule {
                envd_token: route.envd_access_token.clone(),
                address,
                caller,
                target,
            },
        })
    }

    fn upstream_request(&self, ctx: &Ctx, req: &Request<'_>, upgrade: bool, out: &mut Vec<u8>) {
        let head = req.head;
        match ctx {
            Ctx::Capsule {
                target,
                caller,
                envd_token,
                ..
            } => {
                let inject = match (envd_token, caller, target.port) {
                    (Some(token), Caller::Internal, ENVD_PORT) => Some(token),
                    _ => None,
                };
                write_request_start(out, head, &target.upstream_path, upgrade, |name| {
                    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
                    is(AGENT_TOKEN_HEADER)
                        || is(HOP_HEADER)
                        || TRAFFIC_TOKEN_HEADERS[1..].iter().any(|h| is(h))
                        || is("e2b-sandbox-id")
                        || is("e2b-sandbox-port")
                        || is_forwarded(name)
                        || (inject.is_some() && is("x-access-token"))
                });
                self.forwarded(req, out);
                if let RouteKind::Path { prefix } = &target.kind {
                    push_header(out, b"x-forwarded-prefix", prefix.as_bytes());
                }
                if let Some(token) = inject {
                    push_header(out, b"x-access-token", token.expose().as_bytes());
                }
            }
            Ctx::Remote { .. } => {
                // The next edge routes it again: the request as it came,
                // marked as forwarded once.
                write_request_start(out, head, head.target(), upgrade, |name| {
                    name.eq_ignore_ascii_case(HOP_HEADER.as_bytes())
                        || name.eq_ignore_ascii_case(b"x-forwarded-for")
                });
                self.forwarded_for(req, out);
                push_header(out, HOP_HEADER.as_bytes(), b"1");
            }
            Ctx::Api => {
                let (_, origin) = target::split_target(head.target());
                write_request_start(out, head, &origin, upgrade, |name| {
                    is_forwarded(name) || name.eq_ignore_ascii_case(HOP_HEADER.as_bytes())
                });
                self.forwarded(req, out);
            }
        }
        out.extend_from_slice(b"\r\n");
    }

    fn response(
        &self,
        ctx: &Ctx,
        req: &Request<'_>,
        response: &Head,
        close: bool,
        out: &mut Vec<u8>,
    ) {
        let Ctx::Capsule {
            target:
                Target {
                    kind: RouteKind::Path { prefix },
                    port,
                    ..
                },
            address,
            ..
        } = ctx
        else {
            return write_response(out, response, close, |_, _, _| false);
        };
        write_response(out, response, close, |name, value, out| {
            if name.eq_ignore_ascii_case(b"service-worker-allowed") {
                // A worker under /proxy/{id}/{port}/ must not claim the
                // whole origin, where other capsules live.
                return true;
            }
            if !name.eq_ignore_ascii_case(b"location") {
                return false;
            }
            let upstream = SocketAddr::new(*address, *port).to_string();
            let mut hosts = vec![
                upstream.clone(),
                format!("localhost:{port}"),
                format!("127.0.0.1:{port}"),
            ];
            if *port == 80 {
                hosts.extend([address.to_string(), "localhost".into(), "127.0.0.1".into()]);
            }
            let mut authorities: Vec<&[u8]> = hosts.iter().map(|h| h.as_bytes()).collect();
            if let Some(host) = req.head.header("host") {
                authorities.push(host);
            }
            match location::rewrite(value, prefix, &authorities) {
                Some(rewritten) => {
                    push_header(out, name, &rewritten);
                    true
                }
                None => false,
            }
        });
    }

    fn upstream_name(&self, ctx: &Ctx) -> String {
        match ctx {
            Ctx::Capsule { target, .. } => format!("capsule {} port {}", target.id, target.port),
            Ctx::Remote { target, edge } => format!(
                "capsule {} port {} (on the host whose edge is {edge})",
                target.id, target.port
            ),
            Ctx::Api => "the control plane".into(),
        }
    }
}

fn is_forwarded(name: &[u8]) -> bool {
    [
        &b"x-forwarded-for"[..],
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-prefix",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

impl EdgePolicy {
    /// `X-Forwarded-For` with the client appended.
    fn forwarded_for(&self, req: &Request<'_>, out: &mut Vec<u8>) {
        let ip = req.peer.ip().to_string();
        match req.head.header("x-forwarded-for") {
            Some(previous) => push_header(
                out,
                b"x-forwarded-for",
                &[previous, b", ", ip.as_bytes()].concat(),
            ),
            None => push_header(out, b"x-forwarded-for", ip.as_bytes()),
        }
    }

    /// `X-Forwarded-For`, `-Proto` and `-Host` for the next hop.
    fn forwarded(&self, req: &Request<'_>, out: &mut Vec<u8>) {
        self.forwarded_for(req, out);
        let proto = match (&self.shared.config.forwarded_proto, req.tls) {
            (Some(proto), _) => proto.as_str(),
            (None, true) => "https",
            (None, false) => "http",
        };
        push_header(out, b"x-forwarded-proto", proto.as_bytes());
        if let Some(host) = req.head.header("host") {
            push_header(out, b"x-forwarded-host", host);
        }
    }
}
