//! Template builds (`/v1/admin/builds`): queue one (JSON, or multipart with
//! the archive COPY reads), list them, see one with its steps, follow its
//! log live (Server-Sent Events: stored lines first, then new ones), and
//! cancel it. Builds belong to the caller's team, like the templates they
//! make (the `/admin/` in the path follows Wrenn's route names).

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use warren_api_types::builds::{BuildView, CreateBuildRequest, LogStreamError, LogsQuery};

use super::audit::{AuditNote, noted};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiQuery, parse_json, read_limited};
use crate::app::AppState;
use crate::auth::Principal;
use crate::domain::builds::{self, LogEvent, Request as BuildRequest};

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
    let view = builds::submit(&app, &p, build).await?;
    let note = AuditNote::resource(view.id.clone());
    Ok(noted(
        (StatusCode::ACCEPTED, Json(view)).into_response(),
        note,
    ))
}

/// The team's builds, newest first (at most 100).
#[utoipa::path(get, path = "/v1/admin/builds", tag = "builds", responses((status = 200, body = [BuildView])))]
pub async fn list(State(app): State<AppState>, p: Principal) -> ApiResult<Json<Vec<BuildView>>> {
    Ok(Json(builds::list(&app, &p).await?))
}

/// One build with the state of each step.
#[utoipa::path(get, path = "/v1/admin/builds/{id}", tag = "builds", params(("id" = String, Path)),
    responses((status = 200, body = BuildView), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<BuildView>> {
    Ok(Json(builds::get(&app, &p, &id).await?))
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
    let (view, ended) = builds::cancel(&app, &p, &id).await?;
    let code = if ended {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((code, Json(view)).into_response())
}

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// A log event as a Server-Sent Event.
fn sse(ev: LogEvent) -> Event {
    match ev {
        LogEvent::Log(l) => Event::default()
            .event("log")
            .id(l.id.to_string())
            .data(json(&l)),
        LogEvent::Step(s) => Event::default().event("step").data(json(&s)),
        LogEvent::End(e) => Event::default().event("end").data(json(&e)),
        LogEvent::Failed(message) => Event::default()
            .event("error")
            .data(json(&LogStreamError { message })),
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
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok());
    let follow = builds::follow(&app, &p, &id, q.after.or(resume).unwrap_or(0)).await?;
    let stream = futures::stream::unfold(follow, |mut f| async move {
        f.next().await.map(|ev| (Ok(sse(ev)), f))
    });
    Ok(Sse::new(stream).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(15))
            .text("keepalive"),
    ))
}
