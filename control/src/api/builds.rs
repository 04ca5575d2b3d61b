//! Template builds (`/v1/admin/builds`): queue one (JSON, or multipart with
//! the archive COPY reads), list them, see one with its steps, follow its
//! log live (Server-Sent Events: stored lines first, then new ones), and
//! cancel it. Builds belong to the caller's team, like the templates they
//! make (the `/admin/` in the path follows Wrenn's route names).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{ApiQuery, parse_json, read_limited};
use crate::app::AppState;
use crate::audit::{AuditNote, noted};
use crate::auth::Principal;
use crate::build::notify::{self, Kind, Wake};
use crate::build::status::BuildStatus;
use crate::build::store::{self, BuildRow, BuildView, LogRow};
use crate::build::submit::{self, Request as BuildRequest};
use crate::error::{ApiError, ApiResult, ErrorBody};

/// `POST /v1/admin/builds` as JSON (multipart takes the same fields as
/// form fields, the recipe as a field or a file, plus `archive`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBuildRequest {
    /// The template to make (unique in the team).
    pub name: String,
    /// The template to build on (default: the platform's default template).
    pub base: Option<String>,
    /// The recipe text.
    pub recipe: String,
    /// Replace the team's template of this name.
    #[serde(default)]
    pub overwrite: bool,
    /// Size of the build capsule and default of the template.
    pub vcpus: Option<u32>,
    pub memory_mb: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct LogsQuery {
    /// Only log rows after this id (as `Last-Event-ID` does).
    pub after: Option<i64>,
}

/// The `end` event of a log stream.
#[derive(Debug, Serialize, ToSchema)]
pub struct BuildEnd {
    pub status: BuildStatus,
    pub error: Option<String>,
    pub template: Option<String>,
}

fn flag(v: &str) -> ApiResult<bool> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" | "" => Ok(false),
        _ => Err(ApiError::invalid("overwrite must be true or false")),
    }
}

fn number(name: &str, v: &str) -> ApiResult<u32> {
    v.trim()
        .parse()
        .map_err(|_| ApiError::invalid(format!("{name} must be a positive integer")))
}

/// Reads a multipart build request: text fields under the JSON limit, the
/// archive under the archive limit.
async fn from_multipart(app: &AppState, mut form: Multipart) -> ApiResult<BuildRequest> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::invalid(format!("malformed multipart body: {e}"))
    };
    let mut req = BuildRequest::default();
    let mut name = None;
    let mut recipe = None;
    while let Some(mut field) = form.next_field().await.map_err(bad)? {
        let field_name = field.name().unwrap_or_default().to_string();
        let limit = match field_name.as_str() {
            "archive" => app.cfg.max_build_archive_bytes,
            _ => app.cfg.max_body_bytes,
        };
        let mut data = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(bad)? {
            if data.len() + chunk.len() > limit {
                return Err(ApiError::TooLarge(format!(
                    "field '{field_name}' exceeds {limit} bytes"
                )));
            }
            data.extend_from_slice(&chunk);
        }
        if field_name == "archive" {
            req.archive = Some(data);
            continue;
        }
        let text = String::from_utf8(data)
            .map_err(|_| ApiError::invalid(format!("field '{field_name}' is not UTF-8")))?;
        match field_name.as_str() {
            "name" => name = Some(text),
            "base" => req.base = Some(text),
            "recipe" => recipe = Some(text),
            "overwrite" => req.overwrite = flag(text.trim())?,
            "vcpus" => req.vcpus = Some(number("vcpus", &text)?),
            "memory_mb" => req.memory_mb = Some(number("memory_mb", &text)?),
            other => return Err(ApiError::invalid(format!("unknown field '{other}'"))),
        }
    }
    req.name = name.ok_or_else(|| ApiError::invalid("the name field is required"))?;
    req.recipe = recipe.ok_or_else(|| ApiError::invalid("the recipe field is required"))?;
    Ok(req)
}

async fn view(app: &AppState, row: &BuildRow) -> ApiResult<BuildView> {
    Ok(store::view(&app.db, row).await?)
}

/// Queue a template build.
#[utoipa::path(post, path = "/v1/admin/builds", tag = "builds", request_body = CreateBuildRequest,
    responses((status = 202, body = BuildView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn create(
    State(app): State<AppState>,
    p: Principal,
    req: Request,
) -> ApiResult<Response> {
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    let build = if multipart {
        let form = Multipart::from_request(req, &app)
            .await
            .map_err(|e| ApiError::invalid(format!("malformed multipart body: {e}")))?;
        from_multipart(&app, form).await?
    } else {
        let bytes = read_limited(req.into_body(), app.cfg.max_body_bytes).await?;
        let r: CreateBuildRequest = parse_json(&bytes)?;
        BuildRequest {
            name: r.name,
            base: r.base,
            recipe: r.recipe,
            archive: None,
            overwrite: r.overwrite,
            vcpus: r.vcpus,
            memory_mb: r.memory_mb,
        }
    };
    let row = submit::submit(&app, &p.team_id, p.actor_id(), build).await?;
    let id = row.id.clone();
    Ok(noted(
        (StatusCode::ACCEPTED, Json(view(&app, &row).await?)).into_response(),
        AuditNote::resource(id),
    ))
}

/// The team's builds, newest first (at most 100).
#[utoipa::path(get, path = "/v1/admin/builds", tag = "builds", responses((status = 200, body = [BuildView])))]
pub async fn list(State(app): State<AppState>, p: Principal) -> ApiResult<Json<Vec<BuildView>>> {
    let rows = store::list(&app.db, &p.team_id, 100).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.push(view(&app, r).await?);
    }
    Ok(Json(out))
}

/// One build with the state of each step.
#[utoipa::path(get, path = "/v1/admin/builds/{id}", tag = "builds", params(("id" = String, Path)),
    responses((status = 200, body = BuildView), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<BuildView>> {
    let row = store::get(&app.db, &p.team_id, &id).await?;
    let mut view = view(&app, &row).await?;
    view.recipe = Some(row.recipe);
    Ok(Json(view))
}

/// Ask a build to stop: a queued one is cancelled at once; a running one
/// has its step stopped, its capsule destroyed and nothing kept. Waits up
/// to 30 seconds for the build to end (200), else answers 202.
#[utoipa::path(post, path = "/v1/admin/builds/{id}/cancel", tag = "builds", params(("id" = String, Path)),
    responses((status = 200, body = BuildView), (status = 202, body = BuildView), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn cancel(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let row = store::get(&app.db, &p.team_id, &id).await?;
    if row.status().is_terminal() {
        return Err(ApiError::InvalidState(format!(
            "the build already ended ({})",
            row.status
        )));
    }
    let mut wake = app.events.builds.subscribe();
    if store::cancel_queued(&app.db, &id).await?.is_none()
        && store::request_cancel(&app.db, &id).await?.is_none()
    {
        // It ended in between.
        let row = store::get(&app.db, &p.team_id, &id).await?;
        if row.status() != BuildStatus::Cancelled {
            return Err(ApiError::InvalidState(format!(
                "the build already ended ({})",
                row.status
            )));
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let row = store::get(&app.db, &p.team_id, &id).await?;
        if row.status().is_terminal() || tokio::time::Instant::now() >= deadline {
            let code = if row.status().is_terminal() {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            return Ok((code, Json(view(&app, &row).await?)).into_response());
        }
        notify::wait_for(&mut wake, &id, &[Kind::Status], Duration::from_secs(1)).await;
    }
}

/// Where a log stream is.
struct Follow {
    app: AppState,
    build_id: String,
    team_id: String,
    cursor: i64,
    steps: Vec<String>,
    queue: VecDeque<Event>,
    done: bool,
    wake: tokio::sync::broadcast::Receiver<Wake>,
}

fn log_event(l: &LogRow) -> Event {
    Event::default()
        .event("log")
        .id(l.id.to_string())
        .data(serde_json::to_string(l).unwrap_or_default())
}

impl Follow {
    /// Queues what is new; returns false once there is nothing more ever.
    async fn poll(&mut self) -> ApiResult<()> {
        let row = store::get(&self.app.db, &self.team_id, &self.build_id).await?;
        let logs = store::logs_after(&self.app.db, &self.build_id, self.cursor, 500).await?;
        if let Some(last) = logs.last() {
            self.cursor = last.id;
        }
        self.queue.extend(logs.iter().map(log_event));
        let steps = store::steps(&self.app.db, &self.build_id).await?;
        for s in &steps {
            let i = usize::try_from(s.idx).unwrap_or(usize::MAX);
            if self.steps.get(i) != Some(&s.status) {
                self.queue.push_back(
                    Event::default()
                        .event("step")
                        .data(serde_json::to_string(s).unwrap_or_default()),
                );
            }
        }
        self.steps = steps.into_iter().map(|s| s.status).collect();
        // The row was read before the logs: when it had ended, every log
        // line was already written.
        if logs.is_empty() && row.status().is_terminal() {
            let end = BuildEnd {
                status: row.status(),
                error: row.error.clone(),
                template: (row.status() == BuildStatus::Succeeded).then(|| row.name.clone()),
            };
            self.queue.push_back(
                Event::default()
                    .event("end")
                    .data(serde_json::to_string(&end).unwrap_or_default()),
            );
            self.done = true;
        }
        Ok(())
    }

    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        loop {
            if let Some(ev) = self.queue.pop_front() {
                return Some((Ok(ev), self));
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
                    self.queue.push_back(
                        Event::default()
                            .event("error")
                            .data(serde_json::json!({ "message": e.to_string() }).to_string()),
                    );
                }
            }
        }
    }
}

/// The build's log as Server-Sent Events: `log` (a stored chunk: id,
/// step, stream, text), `step` (a step's new state), and a last `end`
/// (status, error, template). Stored lines come first, then live ones;
/// `Last-Event-ID` or `?after=` resumes after a log id.
#[utoipa::path(get, path = "/v1/admin/builds/{id}/logs", tag = "builds",
    params(("id" = String, Path), ("after" = Option<i64>, Query)),
    responses((status = 200, description = "text/event-stream of log, step and end events"), (status = 404, body = ErrorBody)))]
pub async fn logs(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<LogsQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    store::get(&app.db, &p.team_id, &id).await?;
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    let follow = Follow {
        wake: app.events.builds.subscribe(),
        app,
        build_id: id,
        team_id: p.team_id,
        cursor: q.after.or(resume).unwrap_or(0),
        steps: Vec::new(),
        queue: VecDeque::new(),
        done: false,
    };
    let stream = futures::stream::unfold(follow, Follow::next);
    Ok(Sse::new(stream).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(15))
            .text("keepalive"),
    ))
}
