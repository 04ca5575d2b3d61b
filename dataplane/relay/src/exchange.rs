//! One client connection, request after request: read and check the head,
//! let the policy admit it, take or dial an upstream connection, relay the
//! request and the response (bodies spliced between plain sockets), and keep
//! both sides alive when HTTP allows. An `Upgrade` answered with `101`
//! becomes a raw bidirectional tunnel. Errors the relay answers itself are
//! typed pages (see [`crate::errors`]).

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::{Either, join, select};
use warren_runtime::{self as runtime, Socket, Stream};

use crate::body::{Flow, pump};
use crate::buf::InBuf;
use crate::errors::{ErrorCode, ProxyError, wants_html};
use crate::head::{Framing, Head, HeadError, list_has};
use crate::metrics::Metrics;
use crate::policy::{Admitted, End, Policy, Request, View};
use crate::proxy::Core;
use crate::ratelimit::Resource;
use crate::tracking::{CapsuleStats, ConnHandle};
use crate::upstream::{self, DialError};

/// Whether the client connection carries another request.
enum Next {
    KeepAlive,
    Close,
}

/// Serves one client connection until it closes, errs or idles out.
pub(crate) async fn serve_client<P: Policy, C: Stream>(
    core: Rc<Core<P>>,
    client: C,
    peer: SocketAddr,
    tls: bool,
) {
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
        let next = Box::pin(exchange(&core, &client, peer, tls, &mut buf, &conn)).await;
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
async fn read_head<P: Policy>(
    core: &Core<P>,
    sock: &impl Stream,
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
async fn reply<P: Policy>(
    core: &Core<P>,
    client: &impl Stream,
    error: &ProxyError,
    html: bool,
    close: bool,
) -> Next {
    core.shared.metrics.error(error.code);
    tracing::debug!(code = error.code.as_str(), message = %error.message, "answering with an error");
    match client.send_all(&error.response(html, close)).await {
        Ok(()) if !close => Next::KeepAlive,
        _ => Next::Close,
    }
}

/// One request and its response.
async fn exchange<P: Policy, C: Stream>(
    core: &Core<P>,
    client: &C,
    peer: SocketAddr,
    tls: bool,
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
            let error = ProxyError::new(
                ErrorCode::BadRequest,
                "the request head is not valid HTTP/1.1",
            );
            return reply(core, client, &error, false, true).await;
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
            let error = ProxyError::new(ErrorCode::BadRequest, "more than one Host header");
            return reply(core, client, &error, html, true).await;
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
    let request = Request {
        head: &head,
        framing,
        peer,
        tls,
    };
    let view = View {
        conns: &core.conns,
        tracker: &core.shared.tracker,
    };
    let admitted = match core.policy.admit(&request, &view).await {
        Ok(admitted) => admitted,
        Err(error) => return reply(core, client, &error, html, close_on_error).await,
    };
    let stats = if admitted.tracked {
        let (key, stats) = core.conns.stats(&core.shared.tracker, &admitted.key);
        conn.attach(&key, &stats);
        stats.count_request();
        stats
    } else {
        Arc::clone(&core.untracked)
    };
    Metrics::add(&core.shared.metrics.requests);
    let exchange = Exchange {
        core,
        client,
        request: &request,
        admitted: &admitted,
        stats: &stats,
        conn,
    };
    let (next, status) = match exchange.relay(buf).await {
        Ok((next, status)) => (next, Some(status)),
        Err(Failure::Answer(error)) => {
            let status = error.code.status();
            (reply(core, client, &error, html, true).await, Some(status))
        }
        Err(Failure::Abort(error)) => {
            tracing::debug!(upstream = %admitted.key, %error, "relay aborted");
            (Next::Close, None)
        }
    };
    conn.set_upstream(None);
    core.policy.on_end(admitted.ctx, End { status });
    next
}

/// How a relay failed.
enum Failure {
    /// Nothing was sent to the client yet: answer with this page.
    Answer(ProxyError),
    /// The response had started (or the client is gone): just close.
    Abort(io::Error),
}

/// True for errors that mean the peer had closed the connection.
fn upstream_closed(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof
    )
}

/// Everything one relayed request needs.
struct Exchange<'a, P: Policy, C> {
    core: &'a Core<P>,
    client: &'a C,
    request: &'a Request<'a>,
    admitted: &'a Admitted<P::Ctx>,
    stats: &'a Arc<CapsuleStats>,
    conn: &'a ConnHandle,
}

impl<P: Policy, C: Stream> Exchange<'_, P, C> {
    fn flow(&self, to_upstream: bool, idle: bool) -> Flow<'_> {
        Flow {
            stats: self.stats,
            limits: &self.admitted.limits,
            to_capsule: to_upstream,
            pipes: &self.core.pipes,
            bufs: &self.core.bufs,
            idle: idle.then_some(self.core.shared.config.idle_timeout),
            activity: None,
        }
    }

    /// The upstream broke before answering: a 502/504 page naming it.
    fn upstream_broke(&self, error: io::Error) -> Failure {
        let timed_out = error.kind() == io::ErrorKind::TimedOut;
        let (code, what) = if timed_out {
            (ErrorCode::UpstreamTimeout, "sent no response in time")
        } else {
            (
                ErrorCode::UpstreamUnreachable,
                "closed the connection or answered with invalid HTTP",
            )
        };
        let name = self.core.policy.upstream_name(&self.admitted.ctx);
        Failure::Answer(ProxyError::new(code, format!("{name} {what}: {error}")))
    }

    /// A pooled connection, or a new one.
    async fn connect(&self, pooled: bool) -> Result<(Socket, bool), Failure> {
        let config = &self.core.shared.config;
        let addr = self.admitted.addr;
        // A request without a body is retried on a fresh connection if a
        // pooled one turns out closed, so it needs no liveness probe.
        let probe = self.request.framing != Framing::Empty;
        if pooled
            && let Some(socket) = self.core.upstreams.take(
                &self.admitted.key,
                addr,
                config.upstream_idle_timeout,
                probe,
            )
        {
            Metrics::add(&self.core.shared.metrics.upstream_reused);
            return Ok((socket, true));
        }
        Metrics::add(&self.core.shared.metrics.upstream_dials);
        let name = || self.core.policy.upstream_name(&self.admitted.ctx);
        match upstream::dial(addr, config).await {
            Ok(socket) => Ok((socket, false)),
            Err(DialError::TimedOut(after)) => Err(Failure::Answer(ProxyError::new(
                ErrorCode::UpstreamTimeout,
                format!("{} did not accept a connection within {after:?}", name()),
            ))),
            Err(DialError::Failed { attempts, source }) => Err(Failure::Answer(ProxyError::new(
                ErrorCode::UpstreamUnreachable,
                format!(
                    "nothing answers on {} ({attempts} attempt(s): {source})",
                    name()
                ),
            ))),
        }
    }

    /// Relays the request and its response; the response status on success.
    async fn relay(&self, buf: &mut InBuf) -> Result<(Next, u16), Failure> {
        let head = self.request.head;
        let framing = self.request.framing;
        let limits = &self.admitted.limits;
        if limits.ops.is_some() {
            self.stats.limiter.acquire(limits, Resource::Ops, 1).await;
        }
        let upgrade = head.has_token("connection", b"upgrade") && head.header("upgrade").is_some();
        let expect = framing != Framing::Empty
            && head
                .header("expect")
                .is_some_and(|v| list_has(v, b"100-continue"));
        let mut request_head = Vec::with_capacity(head.target().len() + 512);
        self.core.policy.upstream_request(
            &self.admitted.ctx,
            self.request,
            upgrade,
            &mut request_head,
        );
        let (to_upstream, from_upstream) = (self.flow(true, true), self.flow(false, true));
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
                to_upstream
                    .body(self.client, buf, &upstream, &mut out, framing)
                    .await
            };
            if let Err(error) = sent {
                // A pooled connection the upstream closed meanwhile: retry
                // on a fresh one when nothing of a body was consumed.
                if reused && framing == Framing::Empty && upstream_closed(&error) {
                    pooled = false;
                    continue;
                }
                return Err(self.upstream_broke(error));
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
                Ok(None) if reused && framing == Framing::Empty => {
                    pooled = false;
                    continue;
                }
                Err(error) if reused && framing == Framing::Empty && upstream_closed(&error) => {
                    pooled = false;
                    continue;
                }
                Ok(None) => {
                    return Err(self.upstream_broke(io::ErrorKind::UnexpectedEof.into()));
                }
                Err(error) => return Err(self.upstream_broke(error)),
            };
            let body_sent = !expect || sent_continue;
            let status = response.status();
            let next = self
                .respond(
                    upstream,
                    upstream_buf,
                    response,
                    upgrade,
                    body_sent,
                    buf,
                    &from_upstream,
                )
                .await?;
            return Ok((next, status));
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
        let to_upstream = self.flow(true, true);
        to_upstream.send(upstream, out).await?;
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
        to_upstream
            .body(self.client, buf, upstream, out, self.request.framing)
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
                    let mut interim = Vec::with_capacity(256);
                    self.core.policy.response(
                        &self.admitted.ctx,
                        self.request,
                        &head,
                        false,
                        &mut interim,
                    );
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
        from_upstream: &Flow<'_>,
    ) -> Result<Next, Failure> {
        let head = self.request.head;
        if response.status() == 101 {
            if !upgrade {
                return Err(self.upstream_broke(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "101 without an upgrade request",
                )));
            }
            return self.tunnel(upstream, upstream_buf, &response, buf).await;
        }
        let framing = response.response_framing(head.method()).map_err(|_| {
            self.upstream_broke(io::Error::new(
                io::ErrorKind::InvalidData,
                "ambiguous response framing",
            ))
        })?;
        let close = head.wants_close() || framing == Framing::UntilClose || !request_body_sent;
        let mut out = Vec::with_capacity(512);
        self.core
            .policy
            .response(&self.admitted.ctx, self.request, &response, close, &mut out);
        from_upstream
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
                &self.admitted.key,
                self.admitted.addr,
                upstream,
                config.upstream_idle_max,
            );
        }
        Ok(if close { Next::Close } else { Next::KeepAlive })
    }

    /// After `101 Switching Protocols`: raw bytes both ways until both sides
    /// have closed their half, either breaks, or no byte moves either way
    /// for the tunnel idle timeout.
    async fn tunnel(
        &self,
        upstream: Socket,
        mut upstream_buf: InBuf,
        response: &Head,
        buf: &mut InBuf,
    ) -> Result<Next, Failure> {
        Metrics::add(&self.core.shared.metrics.tunnels);
        let activity = Cell::new(Instant::now());
        let up = Flow {
            activity: Some(&activity),
            ..self.flow(true, false)
        };
        let down = Flow {
            activity: Some(&activity),
            ..self.flow(false, false)
        };
        let mut out = Vec::with_capacity(512);
        self.core
            .policy
            .response(&self.admitted.ctx, self.request, response, false, &mut out);
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
        let close_both = || {
            runtime::shutdown_both(client.fd());
            runtime::shutdown_both(upstream.fd());
        };
        let closer = |result: io::Result<()>| {
            if result.is_err() {
                // One side broke: wake the other direction too.
                close_both();
            }
        };
        let pumps = join(
            async { closer(pump(&up, client, &upstream).await) },
            async { closer(pump(&down, &upstream, client).await) },
        );
        let idle = self.core.shared.config.tunnel_idle_timeout;
        let watchdog = async {
            let tick = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
            loop {
                runtime::sleep(tick).await;
                if activity.get().elapsed() >= idle {
                    close_both();
                    return;
                }
            }
        };
        futures_util::pin_mut!(pumps, watchdog);
        if let Either::Right(((), pumps)) = select(pumps, watchdog).await {
            // The watchdog closed both sides: let the pumps wind down.
            pumps.await;
        }
        Ok(Next::Close)
    }
}
