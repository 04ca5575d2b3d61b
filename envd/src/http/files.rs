//! `GET /files` (streamed download with Range and gzip) and `POST /files`
//! (multipart or raw uploads, streamed to a temporary file, fsynced, owned by
//! the user, then renamed into place so a failed upload never leaves a torn
//! file).

use std::{
    collections::HashMap,
    io::ErrorKind,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header, request::Parts};
use http_body::Frame;
use http_body_util::{BodyDataStream, BodyExt, StreamBody};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufReader};
use tokio_util::io::{ReaderStream, StreamReader};
use warren_proto::connect::{BoxError, ResponseBody};

use super::{HttpError, error};
use crate::{
    auth,
    fs::{METADATA_XATTR_PREFIX, ensure_dirs},
    paths,
    state::Envd,
    users::User,
};

const CHUNK: usize = 64 * 1024;
const METADATA_HEADER_PREFIX: &str = "x-metadata-";

fn query(parts: &Parts) -> HashMap<String, String> {
    parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// The user a `/files` request acts as: `?username=`, else the Basic header,
/// else the default user.
fn request_user(
    envd: &Envd,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<User, HttpError> {
    let explicit = match params.get("username").filter(|u| !u.is_empty()) {
        Some(u) => Some(u.clone()),
        None => auth::basic_username(headers)
            .map_err(|e| HttpError::new(StatusCode::UNAUTHORIZED, e))?,
    };
    auth::resolve_user(envd, explicit.as_deref())
        .map_err(|e| HttpError::new(StatusCode::UNAUTHORIZED, e))
}

fn io_status(e: &std::io::Error) -> StatusCode {
    match e.kind() {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => StatusCode::INSUFFICIENT_STORAGE,
        ErrorKind::IsADirectory | ErrorKind::NotADirectory | ErrorKind::InvalidInput => {
            StatusCode::BAD_REQUEST
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Opens `path` for reading only if it is a regular file. The open itself
/// is non-blocking so a FIFO swapped in cannot hang it; the check is made
/// on the opened descriptor.
fn open_regular(path: &Path) -> Result<(std::fs::File, u64), HttpError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| HttpError::new(io_status(&e), format!("{}: {e}", path.display())))?;
    let meta = file
        .metadata()
        .map_err(|e| HttpError::new(io_status(&e), format!("{}: {e}", path.display())))?;
    if meta.is_dir() {
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            format!("{} is a directory", path.display()),
        ));
    }
    if !meta.is_file() {
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "{} is not a regular file (device, pipe or socket)",
                path.display()
            ),
        ));
    }
    let flags = nix::fcntl::OFlag::from_bits_truncate(
        nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL)
            .map_err(|e| HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?,
    );
    nix::fcntl::fcntl(
        &file,
        nix::fcntl::FcntlArg::F_SETFL(flags - nix::fcntl::OFlag::O_NONBLOCK),
    )
    .map_err(|e| HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    Ok((file, meta.len()))
}

/// A single `bytes=a-b`, `bytes=a-` or `bytes=-n` range. `Ok(None)`: serve
/// the whole file (no range, or several ranges). `Err`: unsatisfiable.
fn parse_range(value: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", "") => return Err(()),
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            (len.saturating_sub(n), len.checked_sub(1).ok_or(())?)
        }
        (a, "") => (a.parse().map_err(|_| ())?, len.checked_sub(1).ok_or(())?),
        (a, b) => {
            let (a, b): (u64, u64) = (a.parse().map_err(|_| ())?, b.parse().map_err(|_| ())?);
            (a, b.min(len.saturating_sub(1)))
        }
    };
    if start >= len || start > end {
        return Err(());
    }
    Ok(Some((start, end)))
}

fn stream_body<S, E>(stream: S) -> ResponseBody
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<BoxError> + 'static,
{
    StreamBody::new(stream.map_ok(Frame::data).map_err(Into::into)).boxed_unsync()
}

pub async fn download(envd: &Envd, parts: &Parts) -> Response<ResponseBody> {
    let params = query(parts);
    let user = match request_user(envd, &params, &parts.headers) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let workdir = envd.defaults().workdir;
    let path = paths::resolve(
        params.get("path").map(String::as_str).unwrap_or_default(),
        &user,
        workdir.as_deref(),
    );
    let (file, len) = match open_regular(&path) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let mut file = tokio::fs::File::from_std(file);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();

    let range = match parts
        .headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
    {
        None => None,
        Some(v) => match parse_range(v, len) {
            Ok(r) => r,
            Err(()) => {
                let mut resp = error(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    format!("range {v:?} not satisfiable for {len} bytes"),
                );
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return resp;
            }
        },
    };
    let gzip = range.is_none()
        && parts
            .headers
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|e| e.trim().split(';').next() == Some("gzip"))
            });

    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes");
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{}\"",
        name.replace('"', "_")
    )) {
        builder = builder.header(header::CONTENT_DISPOSITION, v);
    }
    let body = if let Some((start, end)) = range {
        if let Err(e) = file.seek(std::io::SeekFrom::Start(start)).await {
            return error(StatusCode::INTERNAL_SERVER_ERROR, e);
        }
        let count = end - start + 1;
        builder = builder
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_LENGTH, count)
            .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"));
        stream_body(ReaderStream::with_capacity(file.take(count), CHUNK))
    } else if gzip {
        builder = builder.header(header::CONTENT_ENCODING, "gzip");
        let encoder = async_compression::tokio::bufread::GzipEncoder::new(
            BufReader::with_capacity(CHUNK, file),
        );
        stream_body(ReaderStream::with_capacity(encoder, CHUNK))
    } else {
        builder = builder.header(header::CONTENT_LENGTH, len);
        stream_body(ReaderStream::with_capacity(file, CHUNK))
    };
    builder
        .body(body)
        .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e))
}

/// `X-Metadata-*` headers: user metadata for every uploaded file.
fn upload_metadata(headers: &HeaderMap) -> Result<Vec<(String, String)>, HttpError> {
    let mut out = Vec::new();
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix(METADATA_HEADER_PREFIX) else {
            continue;
        };
        let value = value
            .to_str()
            .ok()
            .filter(|v| v.bytes().all(|b| (0x20..0x7f).contains(&b)))
            .ok_or_else(|| {
                HttpError::new(
                    StatusCode::BAD_REQUEST,
                    format!("metadata {key:?}: value must be printable ASCII"),
                )
            })?;
        if key.is_empty() {
            return Err(HttpError::new(
                StatusCode::BAD_REQUEST,
                "metadata keys must not be empty",
            ));
        }
        out.push((key.to_ascii_lowercase(), value.to_owned()));
    }
    Ok(out)
}

fn temp_name(dest: &Path) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.upload-{}-{n}", std::process::id()))
}

/// Streams `data` into `dest` through a temporary file; on any failure the
/// temporary file is removed and `dest` is untouched.
async fn write_file<S, E>(
    dest: &Path,
    user: &User,
    data: S,
    metadata: &[(String, String)],
) -> Result<serde_json::Value, HttpError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let fail = |e: std::io::Error, what: &str| {
        HttpError::new(io_status(&e), format!("{what} {}: {e}", dest.display()))
    };
    if dest.is_dir() {
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            format!("{} is a directory", dest.display()),
        ));
    }
    let parent = dest.parent().unwrap_or(Path::new("/"));
    ensure_dirs(parent, user).map_err(|e| fail(e, "creating the parent of"))?;
    let temp = temp_name(dest);
    let result = async {
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&temp)
            .await
            .map_err(|e| fail(e, "creating"))?;
        let mut data = data;
        while let Some(chunk) = data.next().await {
            let chunk = chunk.map_err(|e| {
                HttpError::new(
                    StatusCode::BAD_REQUEST,
                    format!("reading the upload of {}: {e}", dest.display()),
                )
            })?;
            file.write_all(&chunk)
                .await
                .map_err(|e| fail(e, "writing"))?;
        }
        file.sync_all().await.map_err(|e| fail(e, "syncing"))?;
        std::os::unix::fs::chown(&temp, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
            .map_err(|e| fail(e, "chowning"))?;
        for (key, value) in metadata {
            xattr::set(
                &temp,
                format!("{METADATA_XATTR_PREFIX}{key}"),
                value.as_bytes(),
            )
            .map_err(|e| fail(e, "storing metadata on"))?;
        }
        tokio::fs::rename(&temp, dest)
            .await
            .map_err(|e| fail(e, "renaming into"))
    }
    .await;
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut entry =
        serde_json::json!({ "name": name, "type": "file", "path": dest.display().to_string() });
    if !metadata.is_empty() {
        entry["metadata"] = serde_json::json!(metadata.iter().cloned().collect::<HashMap<_, _>>());
    }
    Ok(entry)
}

pub async fn upload(
    envd: Arc<Envd>,
    req: Request<hyper::body::Incoming>,
) -> Response<ResponseBody> {
    let (parts, body) = req.into_parts();
    let params = query(&parts);
    let user = match request_user(&envd, &params, &parts.headers) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let metadata = match upload_metadata(&parts.headers) {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    let workdir = envd.defaults().workdir;
    let resolve = |p: &str| paths::resolve(p, &user, workdir.as_deref());
    let path_param = params.get("path").filter(|p| !p.is_empty()).cloned();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let stream = BodyDataStream::new(body);
    let mut written = Vec::new();

    if content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        let boundary = match multer::parse_boundary(&content_type) {
            Ok(b) => b,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("multipart body: {e}")),
        };
        let mut multipart = multer::Multipart::new(stream, boundary);
        loop {
            let field = match multipart.next_field().await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("multipart body: {e}")),
            };
            let target = match (written.is_empty(), &path_param, field.file_name()) {
                (true, Some(p), _) => p.clone(),
                (_, _, Some(name)) if !name.is_empty() => name.to_owned(),
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "each uploaded file needs a path (the `path` parameter or the part's filename)",
                    );
                }
            };
            let dest = resolve(&target);
            match write_file(&dest, &user, field, &metadata).await {
                Ok(entry) => written.push(entry),
                Err(e) => return e.into_response(),
            }
        }
        if written.is_empty() {
            return error(StatusCode::BAD_REQUEST, "the multipart body holds no file");
        }
    } else {
        let Some(target) = path_param else {
            return error(
                StatusCode::BAD_REQUEST,
                "the `path` parameter is required for a raw upload",
            );
        };
        let dest = resolve(&target);
        let gzip = parts
            .headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().eq_ignore_ascii_case("gzip"))
            .unwrap_or(false);
        let result = if gzip {
            let reader = StreamReader::new(stream.map_err(std::io::Error::other));
            let decoder =
                async_compression::tokio::bufread::GzipDecoder::new(BufReader::new(reader));
            write_file(
                &dest,
                &user,
                ReaderStream::with_capacity(decoder, CHUNK),
                &metadata,
            )
            .await
        } else {
            write_file(&dest, &user, stream, &metadata).await
        };
        match result {
            Ok(entry) => written.push(entry),
            Err(e) => return e.into_response(),
        }
    }
    super::json(StatusCode::OK, &serde_json::Value::Array(written))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(parse_range("bytes=50-1000", 100), Ok(Some((50, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Err(()));
        assert_eq!(parse_range("bytes=5-2", 100), Err(()));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(parse_range("items=0-1", 100), Ok(None));
        assert_eq!(parse_range("bytes=0-0", 0), Err(()));
    }
}
