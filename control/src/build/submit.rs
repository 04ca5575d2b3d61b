//! Checking and queueing a build request. Everything that can be known
//! before a capsule exists is checked here, so a bad request is a typed
//! error and leaves nothing behind: the name (400; taken: 409), the base
//! (unknown: 404), the recipe (400 naming each error's line and column),
//! the archive (400 for one that is not a tar, tar.gz or zip, or holds an
//! entry escaping its root), and every COPY source being in it (400).

use std::time::Duration;

use super::plan;
use super::runner::base_of;
use super::store::{self, BuildRow, NewBuild, NewStep};
use crate::api::snapshots::validate_template_name;
use crate::app::AppState;
use crate::db::templates;
use crate::error::{ApiError, ApiResult};
use crate::recipe;

/// Longest recipe accepted, in bytes.
const MAX_RECIPE: usize = 1 << 20;

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

fn check_size(app: &AppState, req: &Request) -> ApiResult<()> {
    if req.vcpus.is_some_and(|v| v == 0 || v > app.cfg.max_vcpus) {
        return Err(ApiError::invalid(format!(
            "vcpus must be between 1 and {}",
            app.cfg.max_vcpus
        )));
    }
    if req
        .memory_mb
        .is_some_and(|m| !(128..=app.cfg.max_memory_mb).contains(&m))
    {
        return Err(ApiError::invalid(format!(
            "memory_mb must be between 128 and {}",
            app.cfg.max_memory_mb
        )));
    }
    Ok(())
}

/// Checks `req` and queues it for `team_id` (asked by `actor`).
pub async fn submit(
    app: &AppState,
    team_id: &str,
    actor: &str,
    req: Request,
) -> ApiResult<BuildRow> {
    validate_template_name(&req.name)?;
    check_size(app, &req)?;
    if req.recipe.len() > MAX_RECIPE {
        return Err(ApiError::TooLarge(format!(
            "the recipe exceeds {MAX_RECIPE} bytes"
        )));
    }
    let base_name = req
        .base
        .clone()
        .unwrap_or_else(|| app.cfg.default_template.clone());
    let base_tpl = templates::resolve(&app.db, team_id, &base_name)
        .await
        .map_err(|e| match e {
            ApiError::NotFound(_) => {
                ApiError::NotFound(format!("base template '{base_name}' not found"))
            }
            other => other,
        })?;
    templates::claim_name(&app.db, team_id, &req.name, req.overwrite).await?;

    let base = base_of(&base_tpl);
    let parsed =
        recipe::parse_with_env(&req.recipe, &base.env).map_err(|e| ApiError::InvalidRecipe {
            message: format!("recipe: {e}"),
            errors: e.errors,
        })?;
    if parsed.steps.is_empty() {
        return Err(ApiError::invalid("the recipe has no steps"));
    }
    let index = match &req.archive {
        Some(bytes) => Some(
            recipe::archive::inspect(std::io::Cursor::new(bytes))
                .map_err(|e| ApiError::invalid(format!("archive: {e}")))?,
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
    .map_err(|e| ApiError::invalid(e.to_string()))?;

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
        id: crate::ids::new_id("bld-"),
        team_id: team_id.to_string(),
        created_by: actor.to_string(),
        name: req.name,
        base: base_tpl.name.clone(),
        base_template_id: base_tpl.id.clone(),
        recipe: req.recipe,
        overwrite: req.overwrite,
        vcpus: req.vcpus.map(|v| i32::try_from(v).unwrap_or(i32::MAX)),
        memory_mb: req.memory_mb.map(|v| i32::try_from(v).unwrap_or(i32::MAX)),
    };
    store::insert(&app.db, &build, &steps, req.archive.as_deref()).await
}
