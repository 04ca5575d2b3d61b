//! One build attempt, from a claimed row to a registered template (or a
//! clean failure):
//!
//! 1. capsules a previous attempt left are destroyed;
//! 2. the recipe is planned on the base template;
//! 3. the build capsule is made from the deepest cached layer (or the base),
//!    on the host that holds it; the steps that layer covers are `cached`
//!    (START daemons among them are started again: a process is not part
//!    of a filesystem layer);
//! 4. every other step runs through envd, and after each one that changes
//!    files the capsule is snapshotted into a layer;
//! 5. the health check is polled, the capsule is snapshotted into the
//!    template (with its defaults and start command), and the template row
//!    and the build's success are written in one transaction;
//! 6. the build capsule is destroyed.
//!
//! Meanwhile a watcher renews the lease and listens for a cancel. A cancel
//! destroys the capsule at once (which stops the running step), lets the
//! work wind down, then removes what this attempt made: the template and
//! the layers. A failure removes the template only (the layers of the
//! steps that worked stay cached, so the fix re-runs from the failed
//! step). A lost lease (another replica took the build over) stops the
//! work and touches nothing the new owner holds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use warren_api_types::status::{BuildStatus, CapsuleStatus, StepStatus};
use warren_proto::agent::v1 as pb;
use warren_proto::connect::Code;
use warren_recipe as recipe;
use warren_recipe::plan::{self, Action, Base, Plan};

use super::cache::{self, Layer};
use super::exec::{Capsule, Log, StepError};
use super::notify::{self, Kind};
use crate::agent_client::Unreachable;
use crate::app::AppState;
use crate::db::build_cache;
use crate::db::builds::{self, BuildRow, Fence, FenceError};
use crate::db::capsules::{self, CapsuleRow};
use crate::db::hosts;
use crate::db::templates::{self as template_rows, TeamTemplate, TemplateRow};
use crate::domain::templates::{self, TemplateError};
use crate::events::{self, Notification};
use crate::lifecycle::{self, Launch, LifecycleError};

/// How long a cancelled build's work may take to wind down once its
/// capsule is gone.
const WIND_DOWN: Duration = Duration::from_secs(60);
/// Build capsules without a size in the request or the base template.
const BUILD_VCPUS: u32 = 2;
const BUILD_MEMORY_MB: u32 = 2048;
/// Cap on the bytes one COPY reads from the archive.
const COPY_CAP: u64 = 4 << 30;
/// Attempts after which a build whose workers keep dying fails.
const MAX_ATTEMPTS: i32 = 3;

/// Why the work stopped early.
#[derive(Debug, thiserror::Error)]
enum Stop {
    #[error("{0}")]
    Failed(String),
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Fence(#[from] FenceError),
}

impl From<StepError> for Stop {
    fn from(e: StepError) -> Self {
        match e {
            StepError::Failed(m) => Self::Failed(m),
            StepError::Fence(f) => Self::Fence(f),
        }
    }
}

/// What the services a build uses report fails the build.
macro_rules! fails_the_build {
    ($($error:ty),+) => {$(
        impl From<$error> for Stop {
            fn from(e: $error) -> Self {
                Self::Failed(e.to_string())
            }
        }
    )+};
}

fails_the_build!(LifecycleError, TemplateError, Unreachable);

impl From<sqlx::Error> for Stop {
    fn from(e: sqlx::Error) -> Self {
        Self::Fence(FenceError::Db(e))
    }
}

/// What this attempt made, for the cleanup whatever happens to the work.
#[derive(Debug, Default)]
struct Made {
    cancelled: AtomicBool,
    capsule: Mutex<Option<String>>,
    layers: Mutex<Vec<String>>,
    /// The new template's agent name, when it is a fresh one (an
    /// overwritten template is never removed).
    template: Mutex<Option<String>>,
}

impl Made {
    fn check(&self) -> Result<(), Stop> {
        if self.cancelled.load(Ordering::SeqCst) {
            Err(Stop::Cancelled)
        } else {
            Ok(())
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; the data is plain.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Job {
    app: AppState,
    row: BuildRow,
    log: Log,
    made: Made,
}

/// Runs the claimed build `row` to its end (or until this replica loses
/// it).
pub async fn run(app: AppState, row: BuildRow) {
    let job = Job {
        log: Log {
            db: app.db.clone(),
            fence: row.fence(),
        },
        app,
        row,
        made: Made::default(),
    };
    let id = job.row.id.clone();
    if let Err(e) = job.drive().await {
        tracing::warn!(build = %id, error = %e, "build attempt ended without settling");
    }
}

/// What ended the race between the work and the watcher.
enum Ended {
    Work(Result<(), Stop>),
    CancelAsked,
    Lost,
}

impl Job {
    fn fence(&self) -> &Fence {
        &self.log.fence
    }

    async fn drive(&self) -> Result<(), FenceError> {
        let db = &self.app.db;
        tracing::info!(build = %self.row.id, attempt = self.row.attempts, "build attempt starts");
        // A previous attempt's capsule (its worker died).
        self.destroy_capsules().await;
        if self.row.capsule_id.is_some() {
            self.fence().set_capsule(db, None, None).await?;
        }
        if self.row.cancel_requested {
            return self.settle(Ended::CancelAsked).await;
        }
        if self.row.attempts > MAX_ATTEMPTS {
            let msg = format!(
                "the build was interrupted {} times (its workers stopped)",
                self.row.attempts - 1
            );
            return self.settle(Ended::Work(Err(Stop::Failed(msg)))).await;
        }
        self.fence().reset_unfinished(db).await?;
        let work = self.work();
        tokio::pin!(work);
        let ended = tokio::select! {
            r = &mut work => Ended::Work(r),
            e = self.watch() => e,
        };
        if matches!(ended, Ended::CancelAsked | Ended::Lost) {
            // Destroying the capsule stops the running step; the work
            // then ends at its next step boundary.
            self.made.cancelled.store(true, Ordering::SeqCst);
            self.destroy_capsules().await;
            let _ = tokio::time::timeout(WIND_DOWN, work).await;
        }
        self.settle(ended).await
    }

    /// Renews the lease until a cancel is asked for or the lease is lost.
    async fn watch(&self) -> Ended {
        let lease = self.app.cfg.build_lease();
        let every = lease / 4;
        let mut wake = self.app.events.builds.subscribe();
        loop {
            match self.fence().renew(&self.app.db, lease).await {
                Ok(true) => return Ended::CancelAsked,
                Ok(false) => {}
                Err(FenceError::Lost) => return Ended::Lost,
                Err(FenceError::Db(e)) => {
                    tracing::warn!(build = %self.row.id, error = %e, "renewing the build lease failed");
                }
            }
            notify::wait_for(&mut wake, &self.row.id, &[Kind::Cancel], every).await;
        }
    }

    /// Writes the outcome and removes what must not stay.
    async fn settle(&self, ended: Ended) -> Result<(), FenceError> {
        let db = &self.app.db;
        match ended {
            Ended::Work(Ok(())) => Ok(()),
            Ended::Lost | Ended::Work(Err(Stop::Fence(FenceError::Lost))) => {
                tracing::info!(build = %self.row.id, "build taken over by another worker");
                self.destroy_own_capsule().await;
                Ok(())
            }
            Ended::Work(Err(Stop::Fence(e))) => {
                // The database failed us: leave the row to the lease (a
                // later attempt starts over from the cache).
                self.destroy_own_capsule().await;
                Err(e)
            }
            Ended::CancelAsked | Ended::Work(Err(Stop::Cancelled)) => {
                self.destroy_capsules().await;
                self.remove_template().await;
                let layers = std::mem::take(&mut *lock(&self.made.layers));
                for name in layers {
                    if let Err(e) = cache::remove(&self.app, &name).await {
                        tracing::warn!(build = %self.row.id, layer = %name, error = %e, "removing a layer of a cancelled build failed");
                    }
                }
                self.log.system(None, "build cancelled").await?;
                let mut tx = db.begin().await?;
                self.fence()
                    .finish(
                        &mut tx,
                        BuildStatus::Cancelled,
                        None,
                        None,
                        StepStatus::Cancelled,
                    )
                    .await?;
                tx.commit().await?;
                self.publish("template.build.cancel", "error").await;
                Ok(())
            }
            Ended::Work(Err(Stop::Failed(msg))) => {
                self.destroy_capsules().await;
                self.remove_template().await;
                self.log
                    .system(None, &format!("build failed: {msg}"))
                    .await?;
                let mut tx = db.begin().await?;
                self.fence()
                    .finish(
                        &mut tx,
                        BuildStatus::Failed,
                        Some(&msg),
                        None,
                        StepStatus::Skipped,
                    )
                    .await?;
                tx.commit().await?;
                self.publish("template.build.fail", "error").await;
                Ok(())
            }
        }
    }

    /// Destroys every capsule of this build made by this attempt or an
    /// earlier one (never a later attempt's).
    async fn destroy_capsules(&self) {
        let rows = capsules::live_of_build(&self.app.db, &self.row.id, self.row.attempts).await;
        match rows {
            Ok(rows) => {
                for row in rows {
                    self.destroy(row).await;
                }
            }
            Err(e) => {
                tracing::warn!(build = %self.row.id, error = %e, "listing build capsules failed");
            }
        }
    }

    async fn destroy_own_capsule(&self) {
        let id = lock(&self.made.capsule).clone();
        if let Some(Ok(Some(row))) = match id {
            Some(id) => Some(capsules::get_any(&self.app.db, &id).await),
            None => None,
        } {
            self.destroy(row).await;
        }
    }

    async fn destroy(&self, row: CapsuleRow) {
        if row.status.is_terminal() {
            return;
        }
        let id = row.id.clone();
        if let Err(e) = lifecycle::destroy(&self.app, row).await {
            tracing::warn!(build = %self.row.id, capsule = %id, error = %e, "destroying a build capsule failed; the reconciler keeps at it");
        }
    }

    async fn remove_template(&self) {
        let name = lock(&self.made.template).take();
        if let Some(name) = name {
            templates::forget_agent_template(&self.app, &name).await;
        }
    }

    async fn publish(&self, event: &str, outcome: &str) {
        let n = Notification {
            team_id: Some(self.row.team_id.clone()),
            event: event.into(),
            data: events::frame(
                event,
                Some(outcome),
                ("template", &self.row.name),
                serde_json::json!({ "build_id": self.row.id }),
                None,
            ),
        };
        if let Err(e) = events::publish(&self.app.db, &n).await {
            tracing::warn!(error = %e, "publishing a build event");
        }
    }

    /// The build proper.
    async fn work(&self) -> Result<(), Stop> {
        let db = &self.app.db;
        let row = &self.row;
        self.log
            .system(
                None,
                &format!(
                    "building template '{}' on '{}' (attempt {})",
                    row.name, row.base, row.attempts
                ),
            )
            .await?;
        let base_tpl = match &row.base_template_id {
            Some(id) => template_rows::by_id(db, id).await?,
            None => None,
        }
        .ok_or_else(|| Stop::Failed(format!("base template '{}' no longer exists", row.base)))?;
        let archive = builds::archive(db, &row.id).await?.unwrap_or_default();
        let plan = make_plan(&self.app, row, &base_tpl, &archive)?;
        let total = plan.steps.len();

        let (capsule, resume) = self.make_capsule(&base_tpl, &plan).await?;
        // Whether every step so far came from the cache (an ENV then has
        // nothing to do that the cache did not do already).
        let mut all_cached = resume > 0;
        for (i, step) in plan.steps.iter().enumerate() {
            self.made.check()?;
            let head = format!("step {}/{total}: {}", i + 1, step.text);
            if i < resume && !matches!(step.action, Action::Start { .. }) {
                self.fence()
                    .step(db, i, StepStatus::Cached, None, None)
                    .await?;
                self.log
                    .system(Some(i), &format!("{head} (cached)"))
                    .await?;
                continue;
            }
            if matches!(step.action, Action::Env) && all_cached {
                self.fence()
                    .step(db, i, StepStatus::Cached, None, None)
                    .await?;
                self.log
                    .system(Some(i), &format!("{head} (cached)"))
                    .await?;
                continue;
            }
            if matches!(step.action, Action::Healthcheck) {
                // Polled once every step ran.
                continue;
            }
            // A START runs in every build (its daemon is a process, not
            // files); it does not make the steps after it misses.
            if !matches!(step.action, Action::Start { .. }) {
                all_cached = false;
            }
            self.fence()
                .step(db, i, StepStatus::Running, None, None)
                .await?;
            self.log.system(Some(i), &head).await?;
            let ran = capsule
                .step(&self.log, i, &step.action, &step.ctx, &archive, COPY_CAP)
                .await;
            if let Err(e) = ran {
                self.made.check()?;
                return Err(self.step_failed(i, &step.text, e).await);
            }
            if step.makes_layer() {
                self.store_layer(&capsule, step).await?;
            }
            self.fence()
                .step(db, i, StepStatus::Done, None, None)
                .await?;
        }
        self.made.check()?;
        self.healthcheck(&capsule, &plan).await?;
        self.made.check()?;
        self.finish(&capsule, &base_tpl, &plan).await
    }

    async fn step_failed(&self, i: usize, text: &str, e: StepError) -> Stop {
        let msg = match e {
            StepError::Failed(m) => m,
            StepError::Fence(f) => return Stop::Fence(f),
        };
        if let Err(f) = self
            .fence()
            .step(&self.app.db, i, StepStatus::Failed, None, Some(&msg))
            .await
        {
            return Stop::Fence(f);
        }
        Stop::Failed(format!("step {} ({text}) failed: {msg}", i + 1))
    }

    /// The build capsule, from the deepest layer available (else the
    /// base), and the index of the first step it does not cover.
    async fn make_capsule(
        &self,
        base: &TemplateRow,
        plan: &Plan,
    ) -> Result<(Capsule, usize), Stop> {
        let db = &self.app.db;
        let keys: Vec<String> = plan
            .steps
            .iter()
            .filter(|s| s.makes_layer())
            .map(|s| s.cache_key.to_string())
            .collect();
        let stored = build_cache::find(db, &self.row.team_id, &keys).await?;
        let mut candidates: Vec<(usize, Layer)> = plan
            .steps
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let key = s.cache_key.to_string();
                stored
                    .iter()
                    .find(|l| l.cache_key == key)
                    .map(|l| (i + 1, l.clone()))
            })
            .collect();
        candidates.reverse();
        for (resume, layer) in candidates {
            match self.launch(base, &layer.agent_name, true).await {
                Ok(c) => {
                    build_cache::touch(db, &self.row.team_id, &layer).await?;
                    self.log
                        .system(
                            None,
                            &format!("starting from the cached layer of step {resume}"),
                        )
                        .await?;
                    return Ok((c, resume));
                }
                Err(Stop::Failed(m)) => {
                    tracing::info!(build = %self.row.id, layer = %layer.agent_name, error = %m, "cached layer unusable; trying a shallower one");
                    build_cache::forget(db, &layer.agent_name, Some(&layer.host_id)).await?;
                }
                Err(other) => return Err(other),
            }
        }
        let capsule = self.launch(base, &base.agent_name, base.pinned()).await?;
        Ok((capsule, 0))
    }

    /// Makes a build capsule of `agent_template`.
    async fn launch(
        &self,
        base: &TemplateRow,
        agent_template: &str,
        pinned: bool,
    ) -> Result<Capsule, Stop> {
        let row = &self.row;
        let size = |req: Option<i32>, tpl: Option<i32>, dflt: u32| {
            req.or(tpl)
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(dflt)
        };
        let launch = Launch {
            tpl: base.clone(),
            agent_template: agent_template.to_string(),
            pinned,
            vcpus: size(row.vcpus, base.vcpus, BUILD_VCPUS),
            memory_mb: size(row.memory_mb, base.memory_mb, BUILD_MEMORY_MB),
            timeout_sec: 0,
            metadata: HashMap::from([
                ("build_id".to_string(), row.id.clone()),
                ("build_attempt".to_string(), row.attempts.to_string()),
            ]),
        };
        let capsule = lifecycle::launch(&self.app, &row.team_id, launch).await?;
        *lock(&self.made.capsule) = Some(capsule.id.clone());
        self.made.check()?;
        if capsule.status != CapsuleStatus::Running {
            return Err(Stop::Failed(format!(
                "the build capsule did not start (status {})",
                capsule.status
            )));
        }
        let host = lifecycle::host(&self.app, capsule.host()?).await?;
        self.fence()
            .set_capsule(&self.app.db, Some(&capsule.id), Some(&host.id))
            .await?;
        Ok(Capsule {
            app: self.app.clone(),
            host,
            id: capsule.id,
        })
    }

    /// The capsule's row as it is now.
    async fn capsule_row(&self, capsule: &Capsule) -> Result<CapsuleRow, Stop> {
        capsules::get_any(&self.app.db, &capsule.id)
            .await?
            .ok_or_else(|| Stop::Failed("the build capsule is gone".into()))
    }

    /// Snapshots the capsule into `step`'s layer.
    async fn store_layer(&self, capsule: &Capsule, step: &plan::Step) -> Result<(), Stop> {
        let name = cache::layer_name(&self.row.team_id, &step.cache_key);
        lock(&self.made.layers).push(name.clone());
        let row = self.capsule_row(capsule).await?;
        let size = match lifecycle::snapshot_to(&self.app, row, &name, false, None).await {
            Ok(info) => i64::try_from(info.size_bytes).unwrap_or(i64::MAX),
            // Another build made the same layer first: same key, same files.
            Err(LifecycleError::Agent(e)) if e.code == Code::AlreadyExists => {
                lock(&self.made.layers).retain(|n| *n != name);
                let mut conn = self.app.db.acquire().await?;
                hosts::record_template(&mut conn, &capsule.host.id, &name, None).await?;
                0
            }
            Err(e) => return Err(Stop::Failed(format!("storing the layer: {e}"))),
        };
        let layer = Layer {
            cache_key: step.cache_key.to_string(),
            host_id: capsule.host.id.clone(),
            agent_name: name,
        };
        build_cache::record(&self.app.db, &self.row.team_id, &layer, &self.row.id, size).await?;
        Ok(())
    }

    /// Polls the recipe's (last) HEALTHCHECK, if any.
    async fn healthcheck(&self, capsule: &Capsule, plan: &Plan) -> Result<(), Stop> {
        let db = &self.app.db;
        let checks: Vec<usize> = plan
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s.action, Action::Healthcheck))
            .map(|(i, _)| i)
            .collect();
        let (Some(health), Some((&last, earlier))) = (&plan.outcome.health, checks.split_last())
        else {
            return Ok(());
        };
        for &i in earlier {
            self.fence()
                .step(db, i, StepStatus::Done, None, None)
                .await?;
            self.log
                .system(
                    Some(i),
                    &format!(
                        "superseded by the HEALTHCHECK on line {}",
                        plan.steps[last].line
                    ),
                )
                .await?;
        }
        self.fence()
            .step(db, last, StepStatus::Running, None, None)
            .await?;
        self.log
            .system(
                Some(last),
                &format!(
                    "step {}/{}: {}",
                    last + 1,
                    plan.steps.len(),
                    plan.steps[last].text
                ),
            )
            .await?;
        if let Err(e) = capsule.health(&self.log, last, health).await {
            self.made.check()?;
            return Err(self.step_failed(last, &plan.steps[last].text, e).await);
        }
        self.fence()
            .step(db, last, StepStatus::Done, None, None)
            .await?;
        Ok(())
    }

    /// Snapshots the capsule into the template and registers it.
    async fn finish(&self, capsule: &Capsule, base: &TemplateRow, plan: &Plan) -> Result<(), Stop> {
        let db = &self.app.db;
        let row = &self.row;
        let previous =
            templates::claim_name(&self.app, &row.team_id, &row.name, row.overwrite).await?;
        let (agent_name, replace) = templates::agent_name_for(previous.as_ref(), &capsule.host.id);
        if !replace {
            *lock(&self.made.template) = Some(agent_name.clone());
        }
        let o = &plan.outcome;
        let defaults = pb::TemplateDefaults {
            user: o.user.clone(),
            env: o.env.clone().into_iter().collect(),
            workdir: o.workdir.clone().unwrap_or_default(),
            start_cmd: o.start_cmd.clone().unwrap_or_default(),
            vcpus: row.vcpus.and_then(|v| u32::try_from(v).ok()).unwrap_or(0),
            memory_mb: row
                .memory_mb
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(0),
        };
        self.log
            .system(None, &format!("saving template '{}'", row.name))
            .await?;
        let info = lifecycle::snapshot_to(
            &self.app,
            self.capsule_row(capsule).await?,
            &agent_name,
            replace,
            Some(defaults),
        )
        .await
        .map_err(|e| Stop::Failed(format!("saving the template: {e}")))?;
        self.made.check()?;
        let health = o.health.as_ref().map(|h| {
            serde_json::json!({
                "cmd": h.argv,
                "interval_ms": h.interval.as_millis() as u64,
                "timeout_ms": h.timeout.as_millis() as u64,
                "start_period_ms": h.start_period.as_millis() as u64,
                "retries": h.retries,
            })
        });
        let new = TeamTemplate {
            team_id: row.team_id.clone(),
            name: row.name.clone(),
            agent_name,
            host_id: capsule.host.id.clone(),
            size_bytes: i64::try_from(info.size_bytes).unwrap_or(i64::MAX),
            vcpus: row.vcpus.or(base.vcpus),
            memory_mb: row.memory_mb.or(base.memory_mb),
            default_user: o.user.clone(),
            default_workdir: o.workdir.clone(),
            default_env: serde_json::to_value(&o.env).unwrap_or_default(),
            shell: base.shell.clone(),
            metadata: serde_json::json!({
                "build_id": row.id,
                "base": row.base,
                "start_cmd": o.start_cmd,
                "healthcheck": health,
                "memory_snapshot": info.has_memory_snapshot,
            }),
        };
        let mut tx = db.begin().await?;
        let tpl = templates::put_team_template(&mut tx, &new, previous.as_ref()).await?;
        self.fence()
            .finish(
                &mut tx,
                BuildStatus::Succeeded,
                None,
                Some(&tpl.id),
                StepStatus::Done,
            )
            .await?;
        tx.commit().await?;
        // The template is the team's now.
        lock(&self.made.template).take();
        if !info.has_memory_snapshot && o.start_cmd.is_some() {
            tracing::info!(build = %row.id, "no memory snapshot on this backend: the start command runs at each create");
        }
        self.destroy_capsules().await;
        if let Some(prev) = previous.filter(|p| p.agent_name != tpl.agent_name) {
            templates::forget_agent_template(&self.app, &prev.agent_name).await;
        }
        if let Err(e) = cache::evict(&self.app, &row.team_id, self.app.cfg.build_cache_layers).await
        {
            tracing::warn!(error = %e, "evicting build layers failed");
        }
        self.publish("template.build.create", "success").await;
        tracing::info!(build = %row.id, template = %row.name, "build succeeded");
        Ok(())
    }
}

/// The base template as a recipe sees it.
pub fn base_of(tpl: &TemplateRow) -> Base {
    let env = tpl.env();
    Base {
        identity: serde_json::json!({
            "template": tpl.agent_name,
            "made": tpl.created_at.timestamp_millis(),
            "env": tpl.default_env,
            "workdir": tpl.default_workdir,
        })
        .to_string(),
        user: tpl.default_user.clone(),
        env,
        workdir: tpl.default_workdir.clone(),
    }
}

/// Parses and plans `row`'s recipe (already checked at submission; a
/// failure here means the base changed under it).
fn make_plan(
    app: &AppState,
    row: &BuildRow,
    base_tpl: &TemplateRow,
    archive: &[u8],
) -> Result<Plan, Stop> {
    let base = base_of(base_tpl);
    let recipe = recipe::parse_with_env(&row.recipe, &base.env)
        .map_err(|e| Stop::Failed(format!("recipe: {e}")))?;
    let index = if archive.is_empty() {
        None
    } else {
        Some(
            recipe::archive::inspect(std::io::Cursor::new(archive))
                .map_err(|e| Stop::Failed(format!("archive: {e}")))?,
        )
    };
    plan::plan(
        &row.recipe,
        &recipe,
        &base,
        index.as_ref(),
        Duration::from_secs(app.cfg.build_step_timeout_secs),
    )
    .map_err(|e| Stop::Failed(e.to_string()))
}
