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
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use warren_api_types::files::{
    ListRequest, ListResponse, MakeDirResponse, PathRequest, RenameRequest, UploadQuery,
};

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery};
use crate::app::AppState;
use crate::auth::Principal;
use crate::domain::capsules::session::{self, check_path};
use crate::transfer::BoxError;

/// Streams a multipart upload's `file` part into envd. The `path` comes
/// from `?path=` or a `path` field before the file.
async fn upload(
    app: &AppState,
    p: &Principal,
    id: &str,
    mut path: Option<String>,
    mut form: Multipart,
    limit: Option<u64>,
) -> ApiResult<StatusCode> {
    if let Some(pth) = &path {
        check_path(pth)?;
    }
    let s = session::open(app, p, id).await?;
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
                let send = s.upload(&dest, ReceiverStream::new(rx));
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
                        if let Some(max) = limit.filter(|max| total > *max) {
                            let _ = tx.send(Err("upload too large".into())).await;
                            return Err(ApiError::TooLarge(format!(
                                "file exceeds {max} bytes; use files/stream/write"
                            )));
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

async fn download(app: &AppState, p: &Principal, id: &str, path: &str) -> ApiResult<Response> {
    let body = session::download(app, p, id, path).await?;
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
    download(&app, &p, &id, &req.path).await
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
    download(&app, &p, &id, &req.path).await
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
    Ok(Json(
        session::list_dir(&app, &p, &id, &req.path, req.depth).await?,
    ))
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
    let entry = session::make_dir(&app, &p, &id, &req.path).await?;
    Ok(Json(MakeDirResponse { entry }))
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
    let entry = session::rename(&app, &p, &id, &req.from, &req.to).await?;
    Ok(Json(MakeDirResponse { entry }))
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
    session::remove(&app, &p, &id, &req.path).await?;
    Ok(StatusCode::NO_CONTENT)
}
