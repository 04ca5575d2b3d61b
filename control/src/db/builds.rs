//! Build rows in Postgres: queueing, the workers' claim and lease, fenced
//! writes, steps and logs.
//!
//! A worker owns a build while its lease runs; every write it makes checks
//! the build is still `running` under the attempt number it claimed (the
//! fencing token), so a worker that lost its lease (it stalled, and another
//! replica took the build over) can no longer change anything.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgConnection, PgPool};
use warren_api_types::builds::{BuildLog, BuildStep, BuildView};
use warren_api_types::status::{BuildStatus, LogStream, StepStatus};

use crate::build::notify::{self, Kind};

/// Longest text one log row holds; longer output is split.
pub const MAX_LOG_ROW: usize = 64 << 10;

#[derive(Debug, Clone, FromRow)]
pub struct BuildRow {
    pub id: String,
    pub team_id: String,
    pub created_by: Option<String>,
    pub name: String,
    pub base: String,
    pub base_template_id: Option<String>,
    pub recipe: String,
    pub overwrite: bool,
    pub vcpus: Option<i32>,
    pub memory_mb: Option<i32>,
    pub status: BuildStatus,
    pub cancel_requested: bool,
    pub error: Option<String>,
    pub worker: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub host_id: Option<String>,
    pub capsule_id: Option<String>,
    pub template_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl BuildRow {
    /// The fence of the worker that holds this row.
    pub fn fence(&self) -> Fence {
        Fence {
            build_id: self.id.clone(),
            attempt: self.attempts,
        }
    }

    /// The build as the API shows it, with its `steps`.
    pub fn view(&self, steps: Vec<BuildStep>) -> BuildView {
        let succeeded = self.status == BuildStatus::Succeeded;
        BuildView {
            id: self.id.clone(),
            name: self.name.clone(),
            base: self.base.clone(),
            recipe: None,
            status: self.status,
            cancel_requested: self.cancel_requested,
            error: self.error.clone(),
            cached_steps: steps
                .iter()
                .filter(|s| s.status == StepStatus::Cached)
                .count(),
            steps,
            template: succeeded.then(|| self.name.clone()),
            attempts: self.attempts,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
        }
    }
}

/// What a new build row holds.
#[derive(Debug, Clone)]
pub struct NewBuild {
    pub id: String,
    pub team_id: String,
    pub created_by: String,
    pub name: String,
    pub base: String,
    pub base_template_id: String,
    pub recipe: String,
    pub overwrite: bool,
    pub vcpus: Option<i32>,
    pub memory_mb: Option<i32>,
}

/// A step as queued.
#[derive(Debug, Clone)]
pub struct NewStep {
    pub line: i32,
    pub instruction: String,
    pub text: String,
    pub cache_key: String,
}

/// Queues a build with its steps and archive; another open build of the
/// same name is a unique violation.
pub async fn insert(
    db: &PgPool,
    b: &NewBuild,
    steps: &[NewStep],
    archive: Option<&[u8]>,
) -> sqlx::Result<BuildRow> {
    let mut tx = db.begin().await?;
    let row = sqlx::query_as::<_, BuildRow>(
        "INSERT INTO builds (id, team_id, created_by, name, base, base_template_id, recipe,
                             overwrite, vcpus, memory_mb)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *",
    )
    .bind(&b.id)
    .bind(&b.team_id)
    .bind(&b.created_by)
    .bind(&b.name)
    .bind(&b.base)
    .bind(&b.base_template_id)
    .bind(&b.recipe)
    .bind(b.overwrite)
    .bind(b.vcpus)
    .bind(b.memory_mb)
    .fetch_one(&mut *tx)
    .await?;
    for (i, s) in steps.iter().enumerate() {
        sqlx::query(
            "INSERT INTO build_steps (build_id, idx, line, instruction, text, cache_key)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&b.id)
        .bind(i32::try_from(i).unwrap_or(i32::MAX))
        .bind(s.line)
        .bind(&s.instruction)
        .bind(&s.text)
        .bind(&s.cache_key)
        .execute(&mut *tx)
        .await?;
    }
    if let Some(data) = archive {
        sqlx::query("INSERT INTO build_archives (build_id, data) VALUES ($1, $2)")
            .bind(&b.id)
            .bind(data)
            .execute(&mut *tx)
            .await?;
    }
    notify::publish(&mut *tx, &b.id, Kind::Queued).await?;
    tx.commit().await?;
    Ok(row)
}

/// Build `id` of `team_id` (others' builds are not found).
pub async fn get(db: &PgPool, team_id: &str, id: &str) -> sqlx::Result<Option<BuildRow>> {
    sqlx::query_as::<_, BuildRow>("SELECT * FROM builds WHERE id = $1 AND team_id = $2")
        .bind(id)
        .bind(team_id)
        .fetch_optional(db)
        .await
}

pub async fn get_any(db: &PgPool, id: &str) -> sqlx::Result<Option<BuildRow>> {
    sqlx::query_as::<_, BuildRow>("SELECT * FROM builds WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

pub async fn list(db: &PgPool, team_id: &str, limit: i64) -> sqlx::Result<Vec<BuildRow>> {
    sqlx::query_as::<_, BuildRow>(
        "SELECT * FROM builds WHERE team_id = $1 ORDER BY created_at DESC, id LIMIT $2",
    )
    .bind(team_id)
    .bind(limit)
    .fetch_all(db)
    .await
}

pub async fn steps(db: &PgPool, build_id: &str) -> sqlx::Result<Vec<BuildStep>> {
    sqlx::query_as::<_, BuildStep>("SELECT * FROM build_steps WHERE build_id = $1 ORDER BY idx")
        .bind(build_id)
        .fetch_all(db)
        .await
}

pub async fn view(db: &PgPool, row: &BuildRow) -> sqlx::Result<BuildView> {
    Ok(row.view(steps(db, &row.id).await?))
}

/// Log rows of `build_id` after row `after`, oldest first.
pub async fn logs_after(
    db: &PgPool,
    build_id: &str,
    after: i64,
    limit: i64,
) -> sqlx::Result<Vec<BuildLog>> {
    sqlx::query_as::<_, BuildLog>(
        "SELECT id, step, stream, text, at FROM build_logs
          WHERE build_id = $1 AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(build_id)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

pub async fn archive(db: &PgPool, build_id: &str) -> sqlx::Result<Option<Vec<u8>>> {
    sqlx::query_scalar("SELECT data FROM build_archives WHERE build_id = $1")
        .bind(build_id)
        .fetch_optional(db)
        .await
}

/// Cancels a queued build on the spot; `None` if it is no longer queued.
pub async fn cancel_queued(db: &PgPool, id: &str) -> sqlx::Result<Option<BuildRow>> {
    let mut tx = db.begin().await?;
    let row = sqlx::query_as::<_, BuildRow>(
        "UPDATE builds SET status = 'cancelled', cancel_requested = TRUE, finished_at = now(),
                updated_at = now()
          WHERE id = $1 AND status = 'queued' RETURNING *",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    if row.is_some() {
        sqlx::query("UPDATE build_steps SET status = 'cancelled' WHERE build_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM build_archives WHERE build_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        notify::publish(&mut *tx, id, Kind::Status).await?;
    }
    tx.commit().await?;
    Ok(row)
}

/// Asks the worker of a running build to stop; `None` if it is not running.
pub async fn request_cancel(db: &PgPool, id: &str) -> sqlx::Result<Option<BuildRow>> {
    let mut tx = db.begin().await?;
    let row = sqlx::query_as::<_, BuildRow>(
        "UPDATE builds SET cancel_requested = TRUE, updated_at = now()
          WHERE id = $1 AND status = 'running' RETURNING *",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    if row.is_some() {
        notify::publish(&mut *tx, id, Kind::Cancel).await?;
    }
    tx.commit().await?;
    Ok(row)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Takes the oldest build that is queued, or running under a lease that ran
/// out (its worker died), for `worker`, with a lease of `lease`.
pub async fn claim(db: &PgPool, worker: &str, lease: Duration) -> sqlx::Result<Option<BuildRow>> {
    sqlx::query_as::<_, BuildRow>(
        "UPDATE builds SET status = 'running', worker = $1, attempts = attempts + 1,
                lease_until = now() + $2::BIGINT * interval '1 millisecond',
                started_at = COALESCE(started_at, now()), updated_at = now()
          WHERE id = (SELECT id FROM builds
                       WHERE status = 'queued' OR (status = 'running' AND lease_until < now())
                       ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
          RETURNING *",
    )
    .bind(worker)
    .bind(millis(lease))
    .fetch_optional(db)
    .await
}

/// The right to write to one build: its id and the attempt that claimed it.
#[derive(Debug, Clone)]
pub struct Fence {
    pub build_id: String,
    pub attempt: i32,
}

/// A fenced write found the build no longer held by this attempt.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error("the build is no longer held by this worker")]
    Lost,
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

const HELD: &str =
    "EXISTS (SELECT 1 FROM builds WHERE id = $1 AND attempts = $2 AND status = 'running')";

fn held(affected: u64) -> Result<(), FenceError> {
    if affected == 0 {
        Err(FenceError::Lost)
    } else {
        Ok(())
    }
}

impl Fence {
    /// Extends the lease; returns whether a cancel was asked for.
    pub async fn renew(&self, db: &PgPool, lease: Duration) -> Result<bool, FenceError> {
        sqlx::query_scalar::<_, bool>(
            "UPDATE builds SET lease_until = now() + $3::BIGINT * interval '1 millisecond'
              WHERE id = $1 AND attempts = $2 AND status = 'running'
              RETURNING cancel_requested",
        )
        .bind(&self.build_id)
        .bind(self.attempt)
        .bind(millis(lease))
        .fetch_optional(db)
        .await?
        .ok_or(FenceError::Lost)
    }

    /// Records the build capsule (and its host) as it is made or gone.
    pub async fn set_capsule(
        &self,
        db: &PgPool,
        capsule_id: Option<&str>,
        host_id: Option<&str>,
    ) -> Result<(), FenceError> {
        let r = sqlx::query(
            "UPDATE builds SET capsule_id = $3, host_id = COALESCE($4, host_id), updated_at = now()
              WHERE id = $1 AND attempts = $2 AND status = 'running'",
        )
        .bind(&self.build_id)
        .bind(self.attempt)
        .bind(capsule_id)
        .bind(host_id)
        .execute(db)
        .await?;
        held(r.rows_affected())
    }

    /// Moves step `idx` to `status` (counting a run when it starts).
    pub async fn step(
        &self,
        db: &PgPool,
        idx: usize,
        status: StepStatus,
        exit_code: Option<i32>,
        error: Option<&str>,
    ) -> Result<(), FenceError> {
        let mut tx = db.begin().await?;
        let r = sqlx::query(&format!(
            "UPDATE build_steps SET status = $4,
                    runs = runs + CASE WHEN $4 = 'running' THEN 1 ELSE 0 END,
                    exit_code = COALESCE($5, exit_code), error = $6,
                    started_at = CASE WHEN $4 = 'running' THEN now() ELSE started_at END,
                    finished_at = CASE WHEN $4 IN ('pending', 'running') THEN NULL ELSE now() END
              WHERE build_id = $1 AND idx = $3 AND {HELD}"
        ))
        .bind(&self.build_id)
        .bind(self.attempt)
        .bind(i32::try_from(idx).unwrap_or(i32::MAX))
        .bind(status)
        .bind(exit_code)
        .bind(error)
        .execute(&mut *tx)
        .await?;
        held(r.rows_affected())?;
        notify::publish(&mut *tx, &self.build_id, Kind::Status).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Steps a worker left running or unfinished go back to `pending` (a
    /// takeover starts them again).
    pub async fn reset_unfinished(&self, db: &PgPool) -> Result<(), FenceError> {
        sqlx::query(&format!(
            "UPDATE build_steps SET status = 'pending', exit_code = NULL, error = NULL,
                    finished_at = NULL
              WHERE build_id = $1 AND status <> 'pending' AND {HELD}"
        ))
        .bind(&self.build_id)
        .bind(self.attempt)
        .execute(db)
        .await?;
        Ok(())
    }

    /// Appends log text (split into rows of at most [`MAX_LOG_ROW`]).
    pub async fn log(
        &self,
        db: &PgPool,
        step: Option<usize>,
        stream: LogStream,
        text: &str,
    ) -> Result<(), FenceError> {
        if text.is_empty() {
            return Ok(());
        }
        let mut tx = db.begin().await?;
        for chunk in split_utf8(text, MAX_LOG_ROW) {
            let r = sqlx::query(&format!(
                "INSERT INTO build_logs (build_id, step, stream, text)
                 SELECT $1, $3, $4, $5 WHERE {HELD}"
            ))
            .bind(&self.build_id)
            .bind(self.attempt)
            .bind(step.map(|s| i32::try_from(s).unwrap_or(i32::MAX)))
            .bind(stream)
            .bind(chunk)
            .execute(&mut *tx)
            .await?;
            held(r.rows_affected())?;
        }
        notify::publish(&mut *tx, &self.build_id, Kind::Log).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends the build: `status` with `error`, the template it made, steps
    /// still open marked `open_steps`; the archive is dropped.
    pub async fn finish(
        &self,
        conn: &mut PgConnection,
        status: BuildStatus,
        error: Option<&str>,
        template_id: Option<&str>,
        open_steps: StepStatus,
    ) -> Result<(), FenceError> {
        let r = sqlx::query(
            "UPDATE builds SET status = $3, error = $4, template_id = $5, capsule_id = NULL,
                    lease_until = NULL, finished_at = now(), updated_at = now()
              WHERE id = $1 AND attempts = $2 AND status = 'running'",
        )
        .bind(&self.build_id)
        .bind(self.attempt)
        .bind(status)
        .bind(error)
        .bind(template_id)
        .execute(&mut *conn)
        .await?;
        held(r.rows_affected())?;
        sqlx::query(
            "UPDATE build_steps SET status = $2, finished_at = now()
              WHERE build_id = $1 AND status IN ('pending', 'running')",
        )
        .bind(&self.build_id)
        .bind(open_steps)
        .execute(&mut *conn)
        .await?;
        sqlx::query("DELETE FROM build_archives WHERE build_id = $1")
            .bind(&self.build_id)
            .execute(&mut *conn)
            .await?;
        notify::publish(&mut *conn, &self.build_id, Kind::Status).await?;
        Ok(())
    }
}

/// `text` in pieces of at most `max` bytes, cut on character boundaries.
fn split_utf8(text: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = rest.split_at(cut);
        out.push(head);
        rest = tail;
    }
    out.push(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_text_splits_on_char_boundaries() {
        assert_eq!(split_utf8("abc", 8), vec!["abc"]);
        assert_eq!(split_utf8("abcdef", 4), vec!["abcd", "ef"]);
        // "é" is two bytes: never cut through it.
        assert_eq!(split_utf8("aéb", 2), vec!["a", "é", "b"]);
    }
}
