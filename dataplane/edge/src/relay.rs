//! One client connection, request after request: read and route the head,
//! check access, take or dial an upstream connection, relay the request and
//! the response (bodies spliced), rewrite what a path route needs, and keep
//! both sides alive when HTTP allows. An `Upgrade` answered with `101`
//! becomes a raw bidirectional tunnel. Errors the proxy answers itself are
//! typed pages (see [`crate::errors`]).

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use futures_util::future::join;

use crate::access::{self, AGENT_TOKEN_HEADER, Caller};
use crate::body::{Flow, pump};
use crate::buf::InBuf;
use crate::errors::{ErrorCode, ProxyError, wants_html};
use crate::head::{Framing, Head, HeadError, is_hop_by_hop, list_has, push_header};
use crate::location;
use crate::metrics::Metrics;
use crate::ratelimit::Resource;
use crate::server::Core;
use crate::table::{CapsuleState, Route};
use crate::target::{self, RouteError, RouteKind, Target};
use crate::tracking::{CapsuleStats, ConnHandle};
use crate::upstream::{self, DialError};
use warren_proto::addr::ENVD_PORT;
use warren_runtime::{self as runtime, Socket};

/// Whether the client connection carries another request.
enum Next {
    KeepAlive,
    Close,
}

/// Serves one client connection until it closes, errs or idles out.
pub(crate) async fn serve_client(core: Rc<Core>, client: Socket, peer: SocketAddr) {
    let conn = core.conns.register(Rc::clone(client.fd()));
    let metrics = &core.shared.metrics;
    metrics.connections_open.inc();
    let mut buf = InBuf::default();
    loop {
        if buf.is_empty() {
            // Between requests: hold no buffer and no timer, just a readiness
            // poll; the core's idle sweep closes connections idle too long.
            buf.release(&core.bufs);
            if client.readable().await.is_err() {
                break;
            }
        }
        conn.set_busy(true);
        // Boxed so that an idle connection's task stays small.
        let next = Box::pin(exchange(&core, &client, peer, &mut buf, &conn)).await;
        conn.set_busy(false);
        if let Next::Close = next {
            break;
        }
    }
    metrics.connections_open.dec();
}

/// Why reading a head stopped.
enum HeadFailure {
    TooLarge,
    Bad,
    Io(io::Error),
}

/// [`Head::parse_request`] or [`Head::parse_response`].
type HeadParser = fn(&[u8]) -> Result<Option<(Head, usize)>, HeadError>;

/// Reads one head into `buf`; `Ok(None)`: the peer closed before a byte.
async fn read_head(
    core: &Core,
    sock: &Socket,
    buf: &mut InBuf,
    parse: HeadParser,
    limit: usize,
    wait_first: bool,
) -> Result<Option<Head>, HeadFailure> {
    loop {
        if !buf.is_empty() {
            match parse(buf.data()) {
                Ok(Some((head, len))) => {
                    buf.consume(len);
                    return Ok(Some(head));
                }
                Ok(None) if buf.data().len() >= limit || buf.is_full() => {
                    return Err(HeadFailure::TooLarge);
                }
                Ok(None) => {}
                Err(HeadError::TooManyHeaders) => return Err(HeadFailure::TooLarge),
                Err(_) => return Err(HeadFailure::Bad),
            }
        }
        let had = buf.data().len();
        if had == 0 && wait_first {
            // The peer has yet to answer: a read now would only find nothing.
            sock.readable().await.map_err(HeadFailure::Io)?;
        }
        match buf.fill(sock, &core.bufs).await {
            Ok(0) if had == 0 => return Ok(None),
            Ok(0) => return Err(HeadFailure::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => {}
            Err(error) => return Err(HeadFailure::Io(error)),
        }
    }
}

/// Sends an error page; the connection closes after it when `close`.
async fn reply(core: &Core, client: &Socket, error: &ProxyError, html: bool, close: bool) -> Next {
    core.shared.metrics.error(error.code);
    tracing::debug!(code = error.code.as_str(), message = %error.message, "answering with an error");
    match client.send_all(&error.response(html, close)).await {
        Ok(()) if !close => Next::KeepAlive,
        _ => Next::Close,
    }
}

/// One request and its response.
async fn exchange(
    core: &Core,
    client: &Socket,
    peer: SocketAddr,
    buf: &mut InBuf,
    conn: &ConnHandle,
) -> Next {
    let config = &core.shared.config;
    let read = read_head(
        core,
        client,
        buf,
        Head::parse_request,
        config.max_head_bytes,
        false,
    );
    let head = match runtime::timeout(config.header_timeout, read).await {
        Some(Ok(Some(head))) => head,
        Some(Ok(None) | Err(HeadFailure::Io(_))) => return Next::Close,
        Some(Err(HeadFailure::TooLarge)) => {
            let error = ProxyError::new(
                ErrorCode::HeadTooLarge,
                format!(
                    "the request head is larger than {} bytes or has too many header lines",
                    config.max_head_bytes
                ),
            );
            return reply(core, client, &error, false, true).await;
        }
        Some(Err(HeadFailure::Bad)) => {
            return reply(
                core,
                client,
                &ProxyError::new(
                    ErrorCode::BadRequest,
                    "the request head is not valid HTTP/1.1",
                ),
                false,
                true,
            )
            .await;
        }
        None => {
            let error = ProxyError::new(
                ErrorCode::HeadTimeout,
                format!(
                    "the request head did not arrive within {:?}",
                    config.header_timeout
                ),
            );
            return reply(core, client, &error, false, true).await;
        }
    };
    let html = wants_html(head.header("accept"));
    let hosts = head
        .headers()
        .filter(|(name, _)| name.eq_ignore_ascii_case(b"host"))
        .count();
    let framing = match head.request_framing() {
        Ok(_) if hosts > 1 => {
            return reply(
                core,
                client,
                &ProxyError::new(ErrorCode::BadRequest, "more than one Host header"),
                html,
                true,
            )
            .await;
        }
        Ok(framing) => framing,
        Err(_) => {
            let error = ProxyError::new(
                ErrorCode::BadRequest,
                "ambiguous request body framing (Content-Length and Transfer-Encoding, conflicting lengths, or an unknown coding)",
            );
            return reply(core, client, &error, html, true).await;
        }
    };
    // When we answer an error, keep the connection only if no body is pending.
    let close_on_error = framing != Framing::Empty || head.wants_close();
    let table = core.shared.routes.load_full();
    let admitted = admit(core, &head, &table);
    let (caller, target, route) = match admitted {
        Ok(admitted) => admitted,
        Err(error) => return reply(core, client, &error, html, close_on_error).await,
    };
    let (key, stats) = core.conns.stats(&core.shared.tracker, &target.id);
    if caller == Caller::Public && stats.is_draining() {
        let error = ProxyError::new(
            ErrorCode::CapsuleUnavailable,
            format!(
                "capsule {} is being paused or stopped; try again once it runs (port {})",
                target.id, target.port
            ),
        );
        return reply(core, client, &error, html, close_on_error).await;
    }
    conn.attach(&key, &stats);
    stats.count_request();
    Metrics::add(&core.shared.metrics.requests);
    let exchange = Exchange {
        core,
        client,
        peer,
        head: &head,
        framing,
        target: &target,
        route,
        caller,
        key: &key,
        stats: &stats,
        conn,
    };
    let next = match exchange.relay(buf).await {
        Ok(next) => next,
        Err(Failure::Answer(error)) => reply(core, client, &error, html, true).await,
        Err(Failure::Abort(error)) => {
            tracing::debug!(capsule = %target.id, port = target.port, %error, "relay aborted");
            Next::Close
        }
    };
    conn.set_upstream(None);
    next
}

/// Routes the request and checks it may pass.
fn admit<'t>(
    core: &Core,
    head: &Head,
    table: &'t Arc<crate::table::RouteTable>,
) -> Result<(Caller, Target, &'t Route), ProxyError> {
    let config = &core.shared.config;
    let caller = access::classify(head, config.agent_token.as_ref())?;
    let target = target::resolve(head, config.domain.as_deref()).map_err(|error| {
        let code = if error == RouteError::NoCapsule {
            ErrorCode::NoRoute
        } else {
            ErrorCode::BadTarget
        };
        ProxyError::new(code, error.to_string())
    })?;
    let (id, port) = (&target.id, target.port);
    let route = table.get(id).ok_or_else(|| {
        ProxyError::new(
            ErrorCode::CapsuleNotFound,
            format!("capsule {id} does not exist on this host (port {port})"),
        )
    })?;
    match route.state {
        CapsuleState::Running => {}
        CapsuleState::Paused => {
            return Err(ProxyError::new(
                ErrorCode::CapsulePaused,
                format!("capsule {id} is paused: resume it to reach port {port}"),
            ));
        }
        CapsuleState::Unavailable => {
            return Err(ProxyError::new(
                ErrorCode::CapsuleUnavailable,
                format!("capsule {id} is starting or stopping; port {port} cannot be reached now"),
            ));
        }
    }
    access::authorize(caller, head, &target, route)?;
    Ok((caller, target, route))
}

/// How a relay failed.
enum Failure {
    /// Nothing was sent to the client yet: answer with this page.
    Answer(ProxyError),
    /// The response had started (or the client is gone): just close.
    Abort(io::Error),
}

/// The upstream broke before answering: a 502 page, or close once bytes went out.
fn upstream_broke(target: &Target, answered: bool, error: io::Error) -> Failure {
    if answered {
        return Failure::Abort(error);
    }
    let timed_out = error.kind() == io::ErrorKind::TimedOut;
    let (code, what) = if timed_out {
        (ErrorCode::UpstreamTimeout, "sent no response in time")
    } else {
        (
            ErrorCode::UpstreamUnreachable,
            "closed the connection or answered with invalid HTTP",
        )
    };
    Failure::Answer(ProxyError::new(
        code,
        format!("capsule {} port {} {what}: {error}", target.id, target.port),
    ))
}

/// True for errors that mean the peer had closed the connection.
fn upstream_closed(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof
    )
}

/// Everything one relayed request needs.
struct Exchange<'a> {
    core: &'a Core,
    client: &'a Socket,
    peer: SocketAddr,
    head: &'a Head,
    framing: Framing,
    target: &'a Target,
    route: &'a Route,
    caller: Caller,
    key: &'a Rc<str>,
    stats: &'a Arc<CapsuleStats>,
    conn: &'a ConnHandle,
}

impl Exchange<'_> {
    fn flow(&self, to_capsule: bool, idle: bool) -> Flow<'_> {
        Flow {
            stats: self.stats,
            limits: &self.route.limits,
            to_capsule,
            pipes: &self.core.pipes,
            bufs: &self.core.bufs,
            idle: idle.then_some(self.core.shared.config.idle_timeout),
        }
    }

    fn upstream_addr(&self) -> SocketAddr {
        SocketAddr::new(self.route.address, self.target.port)
    }

    /// A pooled connection, or a new one.
    async fn connect(&self, pooled: bool) -> Result<(Socket, bool), Failure> {
        let config = &self.core.shared.config;
        let addr = self.upstream_addr();
        // A request without a body is retried on a fresh connection if a
        // pooled one turns out closed, so it needs no liveness probe.
        let probe = self.framing != Framing::Empty;
        if pooled
            && let Some(socket) =
                self.core
                    .upstreams
                    .take(self.key, addr, config.upstream_idle_timeout, probe)
        {
            Metrics::add(&self.core.shared.metrics.upstream_reused);
            return Ok((socket, true));
        }
        Metrics::add(&self.core.shared.metrics.upstream_dials);
        let (id, port) = (&self.target.id, self.target.port);
        match upstream::dial(addr, config).await {
            Ok(socket) => Ok((socket, false)),
            Err(DialError::TimedOut(after)) => Err(Failure::Answer(ProxyError::new(
                ErrorCode::UpstreamTimeout,
                format!("capsule {id} port {port} did not accept a connection within {after:?}"),
            ))),
            Err(DialError::Failed { attempts, source }) => Err(Failure::Answer(ProxyError::new(
                ErrorCode::UpstreamUnreachable,
                format!(
                    "nothing answers on capsule {id} port {port} ({attempts} attempt(s): {source})"
                ),
            ))),
        }
    }

    async fn relay(&self, buf: &mut InBuf) -> Result<Next, Failure> {
        let limits = &self.route.limits;
        if limits.ops.is_some() {
            self.stats.limiter.acquire(limits, Resource::Ops, 1).await;
        }
        let upgrade =
            self.head.has_token("connection", b"upgrade") && self.head.header("upgrade").is_some();
        let expect = self.framing != Framing::Empty
            && self
                .head
                .header("expect")
                .is_some_and(|v| list_has(v, b"100-continue"));
        let request_head = self.request_head(upgrade);
        let (to_capsule, from_capsule) = (self.flow(true, true), self.flow(false, true));
        let mut pooled = true;
        loop {
            let (upstream, reused) = self.connect(pooled).await?;
            self.conn.set_upstream(Some(Rc::clone(upstream.fd())));
            let mut upstream_buf = InBuf::default();
            let mut out = request_head.clone();
            let mut sent_continue = false;
            let mut early_final = None;
            let sent = if expect {
                self.expect_continue(
                    &upstream,
                    &mut upstream_buf,
                    &mut out,
                    buf,
                    &mut sent_continue,
                    &mut early_final,
                )
                .await
            } else {
                to_capsule
                    .body(self.client, buf, &upstream, &mut out, self.framing)
                    .await
            };
            if let Err(error) = sent {
                // A pooled connection the upstream closed meanwhile: retry
                // on a fresh one when nothing of a body was consumed.
                if reused && self.framing == Framing::Empty && upstream_closed(&error) {
                    pooled = false;
                    continue;
                }
                return Err(upstream_broke(self.target, false, error));
            }
            let response = match early_final {
                Some(head) => Ok(Some(head)),
                None => {
                    self.response_head(&upstream, &mut upstream_buf, false, sent_continue)
                        .await
                }
            };
            let response = match response {
                Ok(Some(head)) => head,
                // The upstream closed a pooled connection under us before
                // answering a byte: the request never ran, try a fresh one.
                Ok(None) if reused && self.framing == Framing::Empty => {
                    pooled = false;
                    continue;
                }
                Err(error)
                    if reused && self.framing == Framing::Empty && upstream_closed(&error) =>
                {
                    pooled = false;
                    continue;
                }
                Ok(None) => {
                    return Err(upstream_broke(
                        self.target,
                        false,
                        io::ErrorKind::UnexpectedEof.into(),
                    ));
                }
                Err(error) => return Err(upstream_broke(self.target, false, error)),
            };
            let body_sent = !expect || sent_continue;
            return self
                .respond(
                    upstream,
                    upstream_buf,
                    response,
                    upgrade,
                    body_sent,
                    buf,
                    &from_capsule,
                )
                .await;
        }
    }

    /// `Expect: 100-continue`: send the head alone, let the upstream say
    /// `100 Continue` (forwarded) or answer at once (`early_final`); when it
    /// says nothing in time, tell the client to go on ourselves.
    async fn expect_continue(
        &self,
        upstream: &Socket,
        upstream_buf: &mut InBuf,
        out: &mut Vec<u8>,
        buf: &mut InBuf,
        sent_continue: &mut bool,
        early_final: &mut Option<Head>,
    ) -> io::Result<()> {
        let to_capsule = self.flow(true, true);
        to_capsule.send(upstream, out).await?;
        out.clear();
        let config = &self.core.shared.config;
        if runtime::timeout(config.expect_continue_timeout, upstream.readable())
            .await
            .is_some()
        {
            match self
                .response_head(upstream, upstream_buf, true, false)
                .await?
            {
                None => return Err(io::ErrorKind::UnexpectedEof.into()),
                // Already forwarded to the client.
                Some(head) if head.status() == 100 => {}
                Some(head) => {
                    *early_final = Some(head);
                    return Ok(());
                }
            }
        } else {
            self.flow(false, false)
                .send(self.client, b"HTTP/1.1 100 Continue\r\n\r\n")
                .await?;
        }
        *sent_continue = true;
        to_capsule
            .body(self.client, buf, upstream, out, self.framing)
            .await
    }

    /// Reads the upstream's response head, forwarding interim (1xx)
    /// responses; a `100` is swallowed once the client had one, and ends the
    /// wait when `expecting_continue`.
    async fn response_head(
        &self,
        upstream: &Socket,
        buf: &mut InBuf,
        expecting_continue: bool,
        sent_continue: bool,
    ) -> io::Result<Option<Head>> {
        let idle = self.core.shared.config.idle_timeout;
        loop {
            let read = read_head(
                self.core,
                upstream,
                buf,
                Head::parse_response,
                usize::MAX,
                true,
            );
            let head = match runtime::timeout(idle, read).await {
                None => return Err(io::ErrorKind::TimedOut.into()),
                Some(Ok(head)) => head,
                Some(Err(HeadFailure::Io(error))) => return Err(error),
                Some(Err(HeadFailure::TooLarge | HeadFailure::Bad)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "invalid response head",
                    ));
                }
            };
            let Some(head) = head else { return Ok(None) };
            match head.status() {
                101 => return Ok(Some(head)),
                100 if sent_continue => {}
                100..=199 => {
                    let interim = self.response_head_bytes(&head, false);
                    self.flow(false, false).send(self.client, &interim).await?;
                    if expecting_continue && head.status() == 100 {
                        return Ok(Some(head));
                    }
                }
                _ => return Ok(Some(head)),
            }
        }
    }

    /// Sends the response and its body; pools the upstream connection when
    /// it can carry another request.
    #[allow(clippy::too_many_arguments)]
    async fn respond(
        &self,
        upstream: Socket,
        mut upstream_buf: InBuf,
        response: Head,
        upgrade: bool,
        request_body_sent: bool,
        buf: &mut InBuf,
        from_capsule: &Flow<'_>,
    ) -> Result<Next, Failure> {
        if response.status() == 101 {
            if !upgrade {
                return Err(upstream_broke(
                    self.target,
                    false,
                    io::Error::new(io::ErrorKind::InvalidData, "101 without an upgrade request"),
                ));
            }
            return self.tunnel(upstream, upstream_buf, &response, buf).await;
        }
        let framing = response.response_framing(self.head.method()).map_err(|_| {
            upstream_broke(
                self.target,
                false,
                io::Error::new(io::ErrorKind::InvalidData, "ambiguous response framing"),
            )
        })?;
        let close = self.head.wants_close() || framing == Framing::UntilClose || !request_body_sent;
        let mut out = self.response_head_bytes(&response, close);
        from_capsule
            .body(&upstream, &mut upstream_buf, self.client, &mut out, framing)
            .await
            .map_err(Failure::Abort)?;
        let reusable = request_body_sent
            && response.is_http11()
            && !response.has_token("connection", b"close")
            && framing != Framing::UntilClose
            && upstream_buf.is_empty();
        upstream_buf.release(&self.core.bufs);
        if reusable {
            let config = &self.core.shared.config;
            self.core.upstreams.put(
                self.key,
                self.upstream_addr(),
                upstream,
                config.upstream_idle_max,
            );
        }
        Ok(if close { Next::Close } else { Next::KeepAlive })
    }

    /// After `101 Switching Protocols`: raw bytes both ways until both sides
    /// have closed their half (or either breaks).
    async fn tunnel(
        &self,
        upstream: Socket,
        mut upstream_buf: InBuf,
        response: &Head,
        buf: &mut InBuf,
    ) -> Result<Next, Failure> {
        Metrics::add(&self.core.shared.metrics.tunnels);
        let (up, down) = (self.flow(true, false), self.flow(false, false));
        let mut out = self.response_head_bytes(response, false);
        out.extend_from_slice(upstream_buf.data());
        let leftover = buf.data().len();
        let head_sent = async {
            down.send(self.client, &out).await?;
            up.send(&upstream, buf.data()).await
        };
        head_sent.await.map_err(Failure::Abort)?;
        buf.consume(leftover);
        upstream_buf.consume(upstream_buf.data().len());
        let client = self.client;
        let closer = |result: io::Result<()>| {
            if result.is_err() {
                // One side broke: wake the other direction too.
                runtime::shutdown_both(client.fd());
                runtime::shutdown_both(upstream.fd());
            }
        };
        join(
            async { closer(pump(&up, client, &upstream).await) },
            async { closer(pump(&down, &upstream, client).await) },
        )
        .await;
        Ok(Next::Close)
    }

    /// The head sent upstream: hop-by-hop and routing headers dropped,
    /// `X-Forwarded-*` set, the envd token injected for internal calls.
    fn request_head(&self, upgrade: bool) -> Vec<u8> {
        let head = self.head;
        let inject = match (&self.route.envd_access_token, self.caller, self.target.port) {
            (Some(token), Caller::Internal, ENVD_PORT) => Some(token),
            _ => None,
        };
        let mut out = Vec::with_capacity(head.target().len() + 512);
        out.extend_from_slice(head.method());
        out.push(b' ');
        out.extend_from_slice(&self.target.upstream_path);
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let mut forwarded_for: Option<&[u8]> = None;
        for (name, value) in head.headers() {
            let lower = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
            if lower("x-forwarded-for") {
                forwarded_for = Some(value);
                continue;
            }
            let dropped = is_hop_by_hop(name)
                || lower(AGENT_TOKEN_HEADER)
                || lower("e2b-traffic-access-token")
                || lower("e2b-sandbox-id")
                || lower("e2b-sandbox-port")
                || lower("x-forwarded-proto")
                || lower("x-forwarded-host")
                || lower("x-forwarded-prefix")
                || (inject.is_some() && lower("x-access-token"))
                || head
                    .headers()
                    .any(|(n, v)| n.eq_ignore_ascii_case(b"connection") && list_has(v, name));
            if !dropped {
                push_header(&mut out, name, value);
            }
        }
        if upgrade && let Some(protocol) = head.header("upgrade") {
            push_header(&mut out, b"connection", b"upgrade");
            push_header(&mut out, b"upgrade", protocol);
        }
        let ip = self.peer.ip().to_string();
        match forwarded_for {
            Some(previous) => push_header(
                &mut out,
                b"x-forwarded-for",
                &[previous, b", ", ip.as_bytes()].concat(),
            ),
            None => push_header(&mut out, b"x-forwarded-for", ip.as_bytes()),
        }
        push_header(
            &mut out,
            b"x-forwarded-proto",
            self.core.shared.config.forwarded_proto.as_bytes(),
        );
        if let Some(host) = head.header("host") {
            push_header(&mut out, b"x-forwarded-host", host);
        }
        if let RouteKind::Path { prefix } = &self.target.kind {
            push_header(&mut out, b"x-forwarded-prefix", prefix.as_bytes());
        }
        if let Some(token) = inject {
            push_header(&mut out, b"x-access-token", token.expose().as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    /// The head sent to the client: hop-by-hop headers dropped (kept for a
    /// `101`), `Location` rewritten on path routes, `connection: close` when
    /// we close after it.
    fn response_head_bytes(&self, response: &Head, close: bool) -> Vec<u8> {
        let switching = response.status() == 101;
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(format!("HTTP/1.1 {} ", response.status()).as_bytes());
        out.extend_from_slice(response.reason());
        out.extend_from_slice(b"\r\n");
        for (name, value) in response.headers() {
            if !switching
                && (is_hop_by_hop(name)
                    || response
                        .headers()
                        .any(|(n, v)| n.eq_ignore_ascii_case(b"connection") && list_has(v, name)))
            {
                continue;
            }
            if name.eq_ignore_ascii_case(b"location")
                && let RouteKind::Path { prefix } = &self.target.kind
                && let Some(rewritten) = self.rewrite_location(value, prefix)
            {
                push_header(&mut out, name, &rewritten);
                continue;
            }
            push_header(&mut out, name, value);
        }
        if close {
            push_header(&mut out, b"connection", b"close");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    fn rewrite_location(&self, value: &[u8], prefix: &str) -> Option<Vec<u8>> {
        let port = self.target.port;
        let mut hosts = vec![
            format!("{}:{port}", SocketAddr::new(self.route.address, port).ip()),
            self.upstream_addr().to_string(),
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
        ];
        if port == 80 {
            hosts.extend([
                self.route.address.to_string(),
                "localhost".into(),
                "127.0.0.1".into(),
            ]);
        }
        let mut authorities: Vec<&[u8]> = hosts.iter().map(|h| h.as_bytes()).collect();
        if let Some(host) = self.head.header("host") {
            authorities.push(host);
        }
        location::rewrite(value, prefix, &authorities)
    }
}
