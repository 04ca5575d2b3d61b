//! Template builds of the caller's team: queue one, list them, see one,
//! follow its log, cancel it. The work itself is the build workers'
//! ([`crate::build`]).
//!
//! Everything that can be known before a capsule exists is checked when a
//! build is queued, so a bad request is a typed error and leaves nothing
//! behind: the name (invalid; taken: conflict), the base (unknown: not
//! found), the recipe (invalid, naming each error's line and column), the
//! archive (invalid if it is not a tar, tar.gz or zip, or holds an entry
//! escaping its root), and every COPY source being in it.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::broadcast;
use warren_api_types::builds::{BuildEnd, BuildLog, BuildStep, BuildView};
use warren_api_types::status::{BuildStatus, StepStatus};
use warren_recipe::{self as recipe, ParseError, plan};

use super::templates::{self, TemplateError};
use crate::app::AppState;
use crate::auth::Principal;
use crate::build::notify::{self, Kind, Wake};
use crate::build::runner::base_of;
use crate::db::builds::{self, BuildRow, NewBuild, NewStep};
use crate::lifecycle;
use crate::{db, ids};

/// Longest recipe accepted, in bytes.
const MAX_RECIPE: usize = 1 << 20;
/// How long a cancel waits for the build to end.
const CANCEL_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{0}")]
    Invalid(String),
    /// The recipe does not parse (every error, with line and column).
    #[error("recipe: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    InvalidRecipe(Vec<ParseError>),
    #[error("{0}")]
    TooLarge(String),
    #[error("build not found")]
    NotFound,
    #[error("base template '{0}' not found")]
    BaseNotFound(String),
    #[error("the build already ended ({0})")]
    Ended(BuildStatus),
    #[error("a build of '{0}' is already queued or running")]
    AlreadyQueued(String),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

type Result<T> = std::result::Result<T, BuildError>;

/// A build as asked for.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub name: String,
    /// Base template (default: the platform's default template).
    pub base: Option<String>,
    pub recipe: String,
    pub archive: Option<Vec<u8>>,
    /// Replace a team template of the same name.
    pub overwrite: bool,
    /// The build capsule's and the template's size.
    pub vcpus: Option<u32>,
    pub memory_mb: Option<u32>,
}

/// Checks `req` and queues it for the caller's team.
pub async fn submit(app: &AppState, p: &Principal, req: Request) -> Result<BuildView> {
    templates::validate_name(&req.name)?;
    lifecycle::check_size(app, req.vcpus, req.memory_mb)
        .map_err(|e| BuildError::Invalid(e.to_string()))?;
    if req.recipe.len() > MAX_RECIPE {
        return Err(BuildError::TooLarge(format!(
            "the recipe exceeds {MAX_RECIPE} bytes"
        )));
    }
    let base_name = req
        .base
        .clone()
        .unwrap_or_else(|| app.cfg.default_template.clone());
    let base_tpl = db::templates::resolve(&app.db, &p.team_id, &base_name)
        .await?
        .ok_or(BuildError::BaseNotFound(base_name))?;
    templates::claim_name(app, &p.team_id, &req.name, req.overwrite).await?;

    let base = base_of(&base_tpl);
    let parsed = recipe::parse_with_env(&req.recipe, &base.env)
        .map_err(|e| BuildError::InvalidRecipe(e.errors))?;
    if parsed.steps.is_empty() {
        return Err(BuildError::Invalid("the recipe has no steps".into()));
    }
    let index = match &req.archive {
        Some(bytes) => Some(
            recipe::archive::inspect(std::io::Cursor::new(bytes))
                .map_err(|e| BuildError::Invalid(format!("archive: {e}")))?,
        ),
        None => None,
    };
    let plan = plan::plan(
        &req.recipe,
        &parsed,
        &base,
        index.as_ref(),
        Duration::from_secs(app.cfg.build_step_timeout_secs),
    )
    .map_err(|e| BuildError::Invalid(e.to_string()))?;

    let steps: Vec<NewStep> = plan
        .steps
        .iter()
        .map(|s| NewStep {
            line: i32::try_from(s.line).unwrap_or(i32::MAX),
            instruction: s.keyword.to_string(),
            text: s.text.clone(),
            cache_key: s.cache_key.to_string(),
        })
        .collect();
    let build = NewBuild {
        id: ids::new_id("bld-"),
        team_id: p.team_id.clone(),
        created_by: p.actor_id().to_string(),
        name: req.name,
        base: base_tpl.name.clone(),
        base_template_id: base_tpl.id.clone(),
        recipe: req.recipe,
        overwrite: req.overwrite,
        vcpus: req.vcpus.map(|v| i32::try_from(v).unwrap_or(i32::MAX)),
        memory_mb: req.memory_mb.map(|v| i32::try_from(v).unwrap_or(i32::MAX)),
    };
    let row = builds::insert(&app.db, &build, &steps, req.archive.as_deref())
        .await
        .map_err(|e| {
            if db::is_unique_violation(&e) {
                BuildError::AlreadyQueued(build.name.clone())
            } else {
                e.into()
            }
        })?;
    Ok(builds::view(&app.db, &row).await?)
}

async fn row(app: &AppState, team_id: &str, id: &str) -> Result<BuildRow> {
    builds::get(&app.db, team_id, id)
        .await?
        .ok_or(BuildError::NotFound)
}

/// The team's builds, newest first (at most 100).
pub async fn list(app: &AppState, p: &Principal) -> Result<Vec<BuildView>> {
    let rows = builds::list(&app.db, &p.team_id, 100).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(builds::view(&app.db, r).await?);
    }
    Ok(out)
}

/// One build with the state of each step.
pub async fn get(app: &AppState, p: &Principal, id: &str) -> Result<BuildView> {
    let row = row(app, &p.team_id, id).await?;
    let mut view = builds::view(&app.db, &row).await?;
    view.recipe = Some(row.recipe);
    Ok(view)
}

/// Asks a build to stop: a queued one is cancelled at once; a running one
/// has its step stopped, its capsule destroyed and nothing kept. Waits up
/// to 30 seconds for the build to end; the build, and whether it ended.
pub async fn cancel(app: &AppState, p: &Principal, id: &str) -> Result<(BuildView, bool)> {
    let b = row(app, &p.team_id, id).await?;
    if b.status.is_terminal() {
        return Err(BuildError::Ended(b.status));
    }
    let mut wake = app.events.builds.subscribe();
    if builds::cancel_queued(&app.db, id).await?.is_none()
        && builds::request_cancel(&app.db, id).await?.is_none()
    {
        // It ended in between.
        let b = row(app, &p.team_id, id).await?;
        if b.status != BuildStatus::Cancelled {
            return Err(BuildError::Ended(b.status));
        }
    }
    let deadline = tokio::time::Instant::now() + CANCEL_WAIT;
    loop {
        let b = row(app, &p.team_id, id).await?;
        let ended = b.status.is_terminal();
        if ended || tokio::time::Instant::now() >= deadline {
            return Ok((builds::view(&app.db, &b).await?, ended));
        }
        notify::wait_for(&mut wake, id, &[Kind::Status], Duration::from_secs(1)).await;
    }
}

/// One event of a build's log.
#[derive(Debug, Clone)]
pub enum LogEvent {
    /// A stored log chunk.
    Log(BuildLog),
    /// A step's new state.
    Step(BuildStep),
    /// The build ended; nothing follows.
    End(BuildEnd),
    /// Following failed; nothing follows.
    Failed(String),
}

/// A build's log, followed: stored lines first, then new ones as they are
/// written, step changes, and the end.
pub struct Follow {
    app: AppState,
    build_id: String,
    team_id: String,
    cursor: i64,
    steps: Vec<StepStatus>,
    queue: VecDeque<LogEvent>,
    done: bool,
    wake: broadcast::Receiver<Wake>,
}

/// Follows build `id`'s log from after log row `after`.
pub async fn follow(app: &AppState, p: &Principal, id: &str, after: i64) -> Result<Follow> {
    row(app, &p.team_id, id).await?;
    Ok(Follow {
        wake: app.events.builds.subscribe(),
        app: app.clone(),
        build_id: id.to_string(),
        team_id: p.team_id.clone(),
        cursor: after,
        steps: Vec::new(),
        queue: VecDeque::new(),
        done: false,
    })
}

impl Follow {
    /// Queues what is new.
    async fn poll(&mut self) -> Result<()> {
        let db = &self.app.db;
        let b = row(&self.app, &self.team_id, &self.build_id).await?;
        let logs = builds::logs_after(db, &self.build_id, self.cursor, 500).await?;
        if let Some(last) = logs.last() {
            self.cursor = last.id;
        }
        let caught_up = logs.is_empty();
        self.queue.extend(logs.into_iter().map(LogEvent::Log));
        let steps = builds::steps(db, &self.build_id).await?;
        for s in &steps {
            let i = usize::try_from(s.idx).unwrap_or(usize::MAX);
            if self.steps.get(i) != Some(&s.status) {
                self.queue.push_back(LogEvent::Step(s.clone()));
            }
        }
        self.steps = steps.into_iter().map(|s| s.status).collect();
        // The row was read before the logs: when it had ended, every log
        // line was already written.
        if caught_up && b.status.is_terminal() {
            self.queue.push_back(LogEvent::End(BuildEnd {
                status: b.status,
                error: b.error.clone(),
                template: (b.status == BuildStatus::Succeeded).then(|| b.name.clone()),
            }));
            self.done = true;
        }
        Ok(())
    }

    /// The next event; `None` once the build ended and all was said.
    pub async fn next(&mut self) -> Option<LogEvent> {
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return Some(ev);
            }
            if self.done {
                return None;
            }
            let before = self.queue.len();
            match self.poll().await {
                Ok(()) if self.queue.len() > before || self.done => continue,
                Ok(()) => {
                    notify::wait_for(
                        &mut self.wake,
                        &self.build_id,
                        &[Kind::Log, Kind::Status],
                        Duration::from_secs(5),
                    )
                    .await;
                }
                Err(e) => {
                    self.done = true;
                    self.queue.push_back(LogEvent::Failed(e.to_string()));
                }
            }
        }
    }
}
