//! The control plane as a library: [`Server::builder`] takes the
//! configuration and what an embedding application adds (extensions):
//! routes, background workers and hooks on capsule events. `build`
//! connects to Postgres and applies the migrations; `serve` runs the HTTP
//! server and the background loops until shutdown, then drains in-flight
//! requests. `warren-control`'s `main` is this with no extensions.
//!
//! ```no_run
//! # async fn demo(cfg: warren_control::config::ControlConfig) -> anyhow::Result<()> {
//! use axum::routing::get;
//! use warren_control::{Server, auth::Principal};
//!
//! let hello = axum::Router::new().route(
//!     "/v1/hello",
//!     get(|p: Principal| async move { format!("hello, team {}", p.team_id) }),
//! );
//! Server::builder(cfg)
//!     .routes(hello)
//!     .on_capsule_event(|_app, event| async move { println!("{event:?}") })
//!     .build()
//!     .await?
//!     .run()
//!     .await
//! # }
//! ```

use std::time::Duration;

use anyhow::Context;
use axum::Router;
use futures::future::BoxFuture;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use utoipa_axum::router::OpenApiRouter;

use crate::api::{self, Extra};
use crate::app::AppState;
use crate::config::ControlConfig;
use crate::extension::{CapsuleEvent, Hook, Hooks};
use crate::{build, db, ids, monitor, reconciler};

/// A background worker: started with the server, stopped with it.
type Worker = Box<dyn FnOnce(AppState) -> BoxFuture<'static, ()> + Send>;

/// Clients must send a request's headers within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// In-flight requests get this long to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(30);

/// Configuration plus extensions; see the module docs.
pub struct ServerBuilder {
    cfg: ControlConfig,
    extra: Extra,
    workers: Vec<(String, Worker)>,
    hooks: Vec<Hook>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("extra", &self.extra)
            .field(
                "workers",
                &self.workers.iter().map(|w| &w.0).collect::<Vec<_>>(),
            )
            .field("hooks", &self.hooks.len())
            .finish()
    }
}

impl ServerBuilder {
    /// Routes merged into the API: handlers may take
    /// [`crate::auth::Principal`] (the caller, authenticated like any API
    /// call) and `State<AppState>`, and mutating calls are audited.
    pub fn routes(mut self, router: Router<AppState>) -> Self {
        self.extra.plain.push(router);
        self
    }

    /// Like [`Self::routes`], and listed in `/openapi.json`.
    pub fn documented_routes(mut self, router: OpenApiRouter<AppState>) -> Self {
        self.extra.documented.push(router);
        self
    }

    /// A loop run beside the built-in ones (from when the server serves
    /// until it stops).
    pub fn worker<F, Fut>(mut self, name: &str, worker: F) -> Self
    where
        F: FnOnce(AppState) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let boxed: Worker = Box::new(move |app| Box::pin(worker(app)));
        self.workers.push((name.to_string(), boxed));
        self
    }

    /// A hook on capsule events (see [`crate::extension`] for when it
    /// runs).
    pub fn on_capsule_event<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(AppState, CapsuleEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.hooks
            .push(std::sync::Arc::new(move |app, ev| Box::pin(hook(app, ev))));
        self
    }

    /// Connects to the database (migrating it) and makes the shared state.
    pub async fn build(self) -> anyhow::Result<Server> {
        let cfg = self.cfg;
        let pool = db::connect(&cfg.database_url, cfg.db_pool, Duration::from_secs(30)).await?;
        let secret = match &cfg.jwt_secret {
            Some(s) if s.len() >= 16 => s.clone(),
            Some(_) => anyhow::bail!("WARREN_JWT_SECRET must be at least 16 characters"),
            None => db::setting_or_init(&pool, "jwt_secret", || ids::new_secret(64)).await?,
        };
        Ok(Server {
            app: AppState::new(pool, cfg, &secret, Hooks::new(self.hooks)),
            extra: self.extra,
            workers: self.workers,
        })
    }
}

/// A control replica, ready to serve.
pub struct Server {
    app: AppState,
    extra: Extra,
    workers: Vec<(String, Worker)>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("app", &self.app).finish()
    }
}

impl Server {
    pub fn builder(cfg: ControlConfig) -> ServerBuilder {
        ServerBuilder {
            cfg,
            extra: Extra::default(),
            workers: Vec::new(),
            hooks: Vec::new(),
        }
    }

    /// The replica's shared state (database pool, configuration, ...).
    pub fn app(&self) -> &AppState {
        &self.app
    }

    /// Starts the event listener, the hooks, the extensions' workers, the
    /// build workers (unless there are none) and (unless disabled) the
    /// monitor and the reconciler.
    fn spawn_background(&mut self) -> Vec<JoinHandle<()>> {
        let app = &self.app;
        let mut tasks = vec![tokio::spawn(app.events.clone().run(app.db.clone()))];
        tasks.extend(app.hooks.start(app));
        for (name, worker) in self.workers.drain(..) {
            tracing::info!(worker = %name, "starting extension worker");
            tasks.push(tokio::spawn(worker(app.clone())));
        }
        if app.cfg.build_workers > 0 {
            tasks.push(tokio::spawn(build::worker::run(app.clone())));
        }
        if !app.cfg.no_background {
            tasks.push(tokio::spawn(monitor::run(app.clone())));
            tasks.push(tokio::spawn(reconciler::run(app.clone())));
        }
        tasks
    }

    /// Serves on `listener` until `shutdown` resolves, then drains
    /// in-flight requests and stops the background tasks.
    pub async fn serve(
        mut self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let tasks = self.spawn_background();
        let router = api::router(self.app.clone(), self.extra);
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

    /// Listens on the configured address and serves until SIGTERM or
    /// SIGINT.
    pub async fn run(self) -> anyhow::Result<()> {
        let listen = self.app.cfg.listen;
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        tracing::info!(address = %listener.local_addr()?, "warren-control listening");
        self.serve(listener, shutdown_signal()).await
    }
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
