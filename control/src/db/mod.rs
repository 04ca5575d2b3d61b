//! Postgres: the pool, the embedded migrations, shared settings, and the
//! queries that hold invariants (capsule state transitions, host
//! bookkeeping). Plain CRUD lives next to its handler.

pub mod capsules;
pub mod hosts;
pub mod templates;

use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// Connects (retrying for up to `wait`, so control may start before its
/// database) and applies the embedded migrations.
pub async fn connect(url: &str, max_connections: u32, wait: Duration) -> anyhow::Result<PgPool> {
    let deadline = tokio::time::Instant::now() + wait;
    let pool = loop {
        match PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
        {
            Ok(pool) => break pool,
            Err(err) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %err, "database not reachable yet, retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(err) => return Err(err).context("connecting to Postgres"),
        }
    };
    sqlx::migrate!("./migrations")
        .run(&pool)
        .await
        .context("applying migrations")?;
    Ok(pool)
}

/// Returns the setting `key`, creating it with `make()` if absent. Replicas
/// racing on first start all end up with the first writer's value.
pub async fn setting_or_init(
    pool: &PgPool,
    key: &str,
    make: impl FnOnce() -> String,
) -> sqlx::Result<String> {
    sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
        .bind(key)
        .bind(make())
        .execute(pool)
        .await?;
    sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
        .bind(key)
        .fetch_one(pool)
        .await
}
