//! Postgres: the pool, the embedded migrations ([`MIGRATOR`]), and every
//! query the control plane runs, one module per table family. Functions
//! take a pool or a connection and return what the rows say (`Option` for
//! a row that may be missing); what a missing row or a clash means to a
//! caller is the domain's call ([`crate::domain`]). Rows hold typed states
//! (`warren_api_types::status`), never bare strings.

pub mod audit;
pub mod build_cache;
pub mod builds;
pub mod capsules;
pub mod cluster;
pub mod hosts;
pub mod keys;
pub mod teams;
pub mod templates;
pub mod usage;
pub mod users;

use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

/// The control plane's schema, embedded. Applied by [`connect`];
/// exported for tools and embedders that manage the database themselves.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

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
    MIGRATOR.run(&pool).await.context("applying migrations")?;
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

/// `pg_notify(channel, payload)`: delivered to every listening replica
/// when the surrounding transaction commits (at once outside one).
pub async fn notify<'e, E>(exec: E, channel: &str, payload: &str) -> sqlx::Result<()>
where
    E: sqlx::PgExecutor<'e>,
{
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(payload)
        .execute(exec)
        .await?;
    Ok(())
}

/// Whether `err` is a unique-constraint clash.
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// Whether `err` is a foreign-key violation (a referenced row is missing).
pub fn is_foreign_key_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(d) if d.is_foreign_key_violation())
}
