//! Files in a capsule, through envd: multipart upload (`files/write`,
//! limited; `files/stream/write`, unlimited), download (`files/read`,
//! `files/stream/read`), listing with depth, mkdir and remove. Uploads and
//! downloads are streamed chunk by chunk in both directions; no file is
//! ever held whole in memory.

use axum::Json;
use axum::body::Body;
use axum::extract::{Multipart, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::ToSchema;
use warren_proto::filesystem as fs;

use super::extract::{ApiJson, ApiQuery};
use super::session::{CapsuleSession, check_path};
use crate::agent_client::rpc_to_api;
use crate::app::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::transfer::BoxError;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PathRequest {
    pub path: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameRequest {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListRequest {
    pub path: String,
    /// 1 (default): the directory's entries; more descends further.
    pub depth: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FileEntry {
    pub name: String,
    pub path: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub size: i64,
    pub mode: u32,
    pub permissions: String,
    pub owner: String,
    pub group: String,
    /// Unix seconds.
    pub modified_at: i64,
    pub symlink_target: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ListResponse {
    pub entries: Vec<FileEntry>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MakeDirResponse {
    pub entry: FileEntry,
}

#[derive(Debug, Default, Deserialize)]
pub struct UploadQuery {
    pub path: Option<String>,
}

pub fn entry(e: fs::EntryInfo) -> FileEntry {
    let kind = match fs::FileType::try_from(e.r#type).unwrap_or(fs::FileType::Unspecified) {
        fs::FileType::Directory => "directory",
        fs::FileType::Symlink => "symlink",
        _ if e.is_symlink => "symlink",
        _ => "file",
    };
    FileEntry {
        name: e.name,
        path: e.path,
        kind: kind.into(),
        size: e.size,
        mode: e.mode,
        permissions: e.permissions,
        owner: e.owner,
        group: e.group,
        modified_at: e.modified_time.map_or(0, |t| t.seconds),
        symlink_target: e.symlink_target,
    }
}

/// Streams a multipart upload's `file` part into envd. The `path` comes
/// from `?path=` or a `path` field before the file.
async fn upload(
    app: &AppState,
    p: &Principal,
    id: &str,
    query_path: Option<String>,
    mut form: Multipart,
    limit: Option<u64>,
) -> ApiResult<StatusCode> {
    let mut path = query_path;
    if let Some(pth) = &path {
        check_path(pth)?;
    }
    let s = CapsuleSession::open(app, &p.team_id, id).await?;
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::invalid(format!("malformed multipart body: {e}"))
    };
    while let Some(mut field) = form.next_field().await.map_err(bad)? {
        match field.name() {
            Some("path") => {
                let v = field.text().await.map_err(bad)?;
                check_path(&v)?;
                path = Some(v);
            }
            Some("file") => {
                let dest = path
                    .clone()
                    .ok_or_else(|| ApiError::invalid("the path field must come before the file"))?;
                let (tx, rx) = mpsc::channel::<Result<Bytes, BoxError>>(4);
                let send = s.envd.upload(&dest, ReceiverStream::new(rx));
                let pump = async move {
                    let mut total: u64 = 0;
                    loop {
                        let chunk = match field.chunk().await {
                            Ok(Some(c)) => c,
                            Ok(None) => return Ok(()),
                            Err(e) => {
                                let err = ApiError::invalid(format!("reading upload: {e}"));
                                let _ = tx.send(Err(err.to_string().into())).await;
                                return Err(err);
                            }
                        };
                        total += chunk.len() as u64;
                        if let Some(max) = limit {
                            if total > max {
                                let _ = tx.send(Err("upload too large".into())).await;
                                return Err(ApiError::TooLarge(format!(
                                    "file exceeds {max} bytes; use files/stream/write"
                                )));
                            }
                        }
                        if tx.send(Ok(chunk)).await.is_err() {
                            return Ok(());
                        }
                    }
                };
                let (sent, pumped) = tokio::join!(send, pump);
                pumped?;
                sent?;
                return Ok(StatusCode::NO_CONTENT);
            }
            _ => {}
        }
    }
    Err(ApiError::invalid("the multipart body has no file field"))
}

/// Upload a file (multipart `path` + `file`), up to the configured limit.
#[utoipa::path(post, path = "/v1/capsules/{id}/files/write", tag = "files", params(("id" = String, Path)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn write(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<UploadQuery>,
    form: Multipart,
) -> ApiResult<StatusCode> {
    let limit = app.cfg.max_upload_bytes;
    upload(&app, &p, &id, q.path, form, Some(limit)).await
}

/// Upload a file of any size, streamed.
#[utoipa::path(post, path = "/v1/capsules/{id}/files/stream/write", tag = "files", params(("id" = String, Path)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn stream_write(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<UploadQuery>,
    form: Multipart,
) -> ApiResult<StatusCode> {
    upload(&app, &p, &id, q.path, form, None).await
}

async fn download(
    app: &AppState,
    p: &Principal,
    id: &str,
    req: PathRequest,
) -> ApiResult<Response> {
    check_path(&req.path)?;
    let s = CapsuleSession::open(app, &p.team_id, id).await?;
    let body = s.envd.download(&req.path).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::new(body),
    )
        .into_response())
}

/// Download a file (streamed).
#[utoipa::path(post, path = "/v1/capsules/{id}/files/read", tag = "files", params(("id" = String, Path)),
    request_body = PathRequest, responses((status = 200, content_type = "application/octet-stream"), (status = 404, body = ErrorBody)))]
pub async fn read(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<PathRequest>,
) -> ApiResult<Response> {
    download(&app, &p, &id, req).await
}

/// Download a file of any size (streamed, chunked).
#[utoipa::path(post, path = "/v1/capsules/{id}/files/stream/read", tag = "files", params(("id" = String, Path)),
    request_body = PathRequest, responses((status = 200, content_type = "application/octet-stream"), (status = 404, body = ErrorBody)))]
pub async fn stream_read(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<PathRequest>,
) -> ApiResult<Response> {
    download(&app, &p, &id, req).await
}

/// List a directory.
#[utoipa::path(post, path = "/v1/capsules/{id}/files/list", tag = "files", params(("id" = String, Path)),
    request_body = ListRequest, responses((status = 200, body = ListResponse), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ListRequest>,
) -> ApiResult<Json<ListResponse>> {
    check_path(&req.path)?;
    let depth = req.depth.unwrap_or(1).max(1);
    if depth > 32 {
        return Err(ApiError::invalid("depth must be at most 32"));
    }
    let s = CapsuleSession::open(&app, &p.team_id, &id).await?;
    let entries = s
        .envd
        .list_dir(&req.path, depth)
        .await
        .map_err(rpc_to_api)?;
    Ok(Json(ListResponse {
        entries: entries.into_iter().map(entry).collect(),
    }))
}

/// Create a directory (and its parents); 409 `already_exists` if it is there.
#[utoipa::path(post, path = "/v1/capsules/{id}/files/mkdir", tag = "files", params(("id" = String, Path)),
    request_body = PathRequest, responses((status = 200, body = MakeDirResponse), (status = 409, body = ErrorBody)))]
pub async fn mkdir(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<PathRequest>,
) -> ApiResult<Json<MakeDirResponse>> {
    check_path(&req.path)?;
    let s = CapsuleSession::open(&app, &p.team_id, &id).await?;
    let made = s.envd.make_dir(&req.path).await.map_err(rpc_to_api)?;
    let info = match made {
        Some(e) => e,
        None => s
            .envd
            .stat(&req.path)
            .await
            .map_err(rpc_to_api)?
            .ok_or_else(|| ApiError::Agent("envd returned no entry".into()))?,
    };
    Ok(Json(MakeDirResponse { entry: entry(info) }))
}

/// Rename or move a file or directory (the destination must not exist).
#[utoipa::path(post, path = "/v1/capsules/{id}/files/rename", tag = "files", params(("id" = String, Path)),
    request_body = RenameRequest, responses((status = 200, body = MakeDirResponse), (status = 400, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn rename(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<RenameRequest>,
) -> ApiResult<Json<MakeDirResponse>> {
    check_path(&req.from)?;
    check_path(&req.to)?;
    let s = CapsuleSession::open(&app, &p.team_id, &id).await?;
    let moved = s
        .envd
        .rename(&req.from, &req.to)
        .await
        .map_err(rpc_to_api)?
        .ok_or_else(|| ApiError::Agent("envd returned no entry".into()))?;
    Ok(Json(MakeDirResponse {
        entry: entry(moved),
    }))
}

/// Remove a file or a directory tree.
#[utoipa::path(post, path = "/v1/capsules/{id}/files/remove", tag = "files", params(("id" = String, Path)),
    request_body = PathRequest, responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn remove(
    State(app): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<PathRequest>,
) -> ApiResult<StatusCode> {
    check_path(&req.path)?;
    let s = CapsuleSession::open(&app, &p.team_id, &id).await?;
    s.envd.remove(&req.path).await.map_err(rpc_to_api)?;
    Ok(StatusCode::NO_CONTENT)
}
