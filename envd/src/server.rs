//! envd's HTTP server: HTTP/1.1 and HTTP/2 with prior knowledge on one port
//! (hyper's automatic server), the access-token gate, and dispatch to the
//! Connect services and plain routes.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::net::{TcpListener, TcpStream};
use warren_proto::{
    connect::{ConnectError, ResponseBody, Router, error_response},
    filesystem::filesystem_router,
    process::process_router,
};

use crate::{
    auth,
    conns::{ConnId, Order},
    fs,
    http::{self as routes, files, init, metrics::CpuSampler},
    process,
    state::Envd,
};

/// How long a client may take to send a request head.
const READ_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Routes every request.
#[derive(Debug)]
pub struct App {
    envd: Arc<Envd>,
    rpc: Router,
    cpu: CpuSampler,
}

impl App {
    pub fn new(envd: Arc<Envd>) -> Arc<Self> {
        let rpc = process_router(Arc::new(process::Service::new(envd.clone())))
            .merge(filesystem_router(Arc::new(fs::Service::new(envd.clone()))));
        Arc::new(Self {
            envd,
            rpc,
            cpu: CpuSampler::default(),
        })
    }

    pub async fn handle(&self, req: Request<Incoming>) -> Response<ResponseBody> {
        let path = req.uri().path().to_owned();
        let method = req.method().clone();
        if path == "/health" {
            return routes::health();
        }
        let is_rpc = self.rpc.handles(&path);
        if !auth::token_ok(&self.envd, req.headers()) {
            let msg = "missing or invalid access token (X-Access-Token)";
            return if is_rpc {
                error_response(&ConnectError::unauthenticated(msg))
            } else {
                routes::error(StatusCode::UNAUTHORIZED, msg)
            };
        }
        if is_rpc {
            return self.rpc.call(req).await;
        }
        match (method, path.as_str()) {
            (Method::POST, "/init") => {
                let conn = req.extensions().get::<ConnId>().map(|c| c.0);
                match read_limited(req, init::MAX_BODY).await {
                    Ok(body) => init::init(&self.envd, &body, conn),
                    Err(resp) => resp,
                }
            }
            (Method::POST, "/snapshot/prepare") => init::snapshot_prepare(&self.envd),
            (Method::GET, "/envs") => init::envs(&self.envd),
            (Method::GET, "/metrics") => routes::metrics::metrics(&self.cpu).await,
            (Method::GET, "/files") => {
                let (parts, _) = req.into_parts();
                files::download(&self.envd, &parts).await
            }
            (Method::POST, "/files") => files::upload(self.envd.clone(), req).await,
            (_, "/init" | "/snapshot/prepare" | "/envs" | "/metrics" | "/files") => routes::error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{} does not allow this method", path),
            ),
            _ => routes::error(StatusCode::NOT_FOUND, format!("no route {path}")),
        }
    }
}

async fn read_limited(
    req: Request<Incoming>,
    limit: usize,
) -> Result<Bytes, Response<ResponseBody>> {
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(routes::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than {limit} bytes"),
        )),
        Err(e) => Err(routes::error(
            StatusCode::BAD_REQUEST,
            format!("reading body: {e}"),
        )),
    }
}

/// Serves one connection until it ends or envd orders it closed.
async fn serve_connection(app: Arc<App>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let envd = app.envd.clone();
    let registration = envd.conns.register();
    let mut orders = registration.orders.clone();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(registration.keep_alive)
        .timer(TokioTimer::new())
        .header_read_timeout(READ_HEADER_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let conn_id = ConnId(registration.id);
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(conn_id);
        let app = app.clone();
        async move { Ok::<_, Infallible>(app.handle(req).await) }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(conn = registration.id, error = %e, "connection ended with an error");
                }
                return;
            }
            changed = orders.changed() => {
                let order = if changed.is_ok() { *orders.borrow() } else { Order::Close };
                match order {
                    Order::Serve => {}
                    Order::Drain => conn.as_mut().graceful_shutdown(),
                    Order::Close => return,
                }
            }
        }
    }
}

/// Accepts connections until `shutdown` resolves, then drains them (up to
/// five seconds).
pub async fn serve(
    listener: TcpListener,
    envd: Arc<Envd>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let app = App::new(envd.clone());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(serve_connection(app.clone(), stream));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    envd.conns.drain_all();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while envd.conns.count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
