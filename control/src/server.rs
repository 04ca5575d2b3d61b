//! Wiring: database, state, background loops, the HTTP server, and clean
//! shutdown on SIGTERM / SIGINT.

use std::time::Duration;

use anyhow::Context;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::app::AppState;
use crate::config::ControlConfig;
use crate::{api, db, ids, monitor, reconciler};

/// Connects, migrates and builds the shared state.
pub async fn state(cfg: ControlConfig) -> anyhow::Result<AppState> {
    let pool = db::connect(&cfg.database_url, cfg.db_pool, Duration::from_secs(30)).await?;
    let secret = match &cfg.jwt_secret {
        Some(s) if s.len() >= 16 => s.clone(),
        Some(_) => anyhow::bail!("WARREN_JWT_SECRET must be at least 16 characters"),
        None => db::setting_or_init(&pool, "jwt_secret", || ids::new_secret(64)).await?,
    };
    Ok(AppState::new(pool, cfg, &secret))
}

/// Starts the event listener and (unless disabled) the monitor and the
/// reconciler.
pub fn spawn_background(app: &AppState) -> Vec<JoinHandle<()>> {
    let mut tasks = vec![tokio::spawn(app.events.clone().run(app.db.clone()))];
    if !app.cfg.no_background {
        tasks.push(tokio::spawn(monitor::run(app.clone())));
        tasks.push(tokio::spawn(reconciler::run(app.clone())));
    }
    tasks
}

/// Clients must send a request's headers within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// In-flight requests get this long to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(30);

/// Serves until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    app: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let tasks = spawn_background(&app);
    let router = api::router(app);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: back off.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(router.clone());
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still running after {DRAIN:?}; closing them");
    }
    for t in tasks {
        t.abort();
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
    tracing::info!("shutting down");
}

/// `warren-control`'s main.
pub async fn run(cfg: ControlConfig) -> anyhow::Result<()> {
    let listen = cfg.listen;
    let app = state(cfg).await?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(address = %listener.local_addr()?, "warren-control listening");
    serve(app, listener, shutdown_signal()).await
}

/// Logs to stderr at `LOG_LEVEL` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LOG_LEVEL")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Logging for the CLI: warnings only unless `LOG_LEVEL` says otherwise.
pub fn init_logging_quiet() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LOG_LEVEL")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
