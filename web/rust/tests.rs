//! The embedded build as warren-control serves it (through an axum router
//! with `serve` as its fallback). Without a build, the page that says so.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::{built, serve};

async fn get(path: &str, headers: &[(&str, &str)]) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    get_with("GET", path, headers).await
}

async fn get_with(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let app: Router = Router::new().fallback(serve);
    let res = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, headers, body)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn api_misses_stay_json_404s() {
    for path in [
        "/v1/nope",
        "/v3/templates/x",
        "/sandboxes",
        "/assets/none-123.js",
    ] {
        let (status, headers, body) = get(path, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert!(text(&body).contains(r#""code":"not_found""#));
    }
    let (status, _, _) = get_with("POST", "/capsules", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "only GET and HEAD are pages");
}

#[tokio::test]
async fn unbuilt_console_says_how_to_build_it() {
    if built() {
        return; // covered by the tests below
    }
    let (status, headers, body) = get("/capsules", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(text(&body).contains("make web"));
}

/// The first script of the console's page.
async fn entry_script() -> Option<String> {
    if !built() {
        eprintln!("skipped: web/dist is not built (make web)");
        return None;
    }
    let (status, headers, body) = get("/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
    assert!(
        headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    let html = text(&body);
    let start = html.find("/assets/")?;
    let end = start + html[start..].find('"')?;
    Some(html[start..end].to_string())
}

#[tokio::test]
async fn client_routes_get_the_console_page() {
    let Some(_) = entry_script().await else {
        return;
    };
    let (_, _, index) = get("/", &[]).await;
    for path in [
        "/capsules",
        "/capsules/cap-123/terminal",
        "/admin/builds/new",
    ] {
        let (status, headers, body) = get(path, &[]).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert_eq!(body, index, "{path}");
    }
    let (status, _, body) = get_with("HEAD", "/capsules", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty(), "HEAD has no body");
}

#[tokio::test]
async fn hashed_assets_are_cached_compressed_and_revalidated() {
    let Some(script) = entry_script().await else {
        return;
    };
    let (status, headers, plain) = get(&script, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .contains("javascript")
    );
    assert_eq!(
        headers[header::CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    assert!(headers.get(header::CONTENT_ENCODING).is_none());

    let (_, headers, br) = get(&script, &[("accept-encoding", "gzip, deflate, br")]).await;
    assert_eq!(headers[header::CONTENT_ENCODING], "br");
    assert!(br.len() < plain.len());
    let (_, gz_headers, gz) = get(&script, &[("accept-encoding", "gzip")]).await;
    assert_eq!(gz_headers[header::CONTENT_ENCODING], "gzip");
    let mut unzipped = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut unzipped).unwrap();
    assert_eq!(unzipped, plain, "the gzip twin is the same file");

    let etag = headers[header::ETAG].to_str().unwrap().to_string();
    let (status, _, body) = get(
        &script,
        &[("accept-encoding", "br"), ("if-none-match", &etag)],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    let (status, _, _) = get(&script, &[("if-none-match", &etag)]).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the brotli tag does not match the plain file"
    );
}

#[tokio::test]
async fn docs_are_served_offline() {
    let Some(_) = entry_script().await else {
        return;
    };
    let (status, _, body) = get("/docs", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let html = text(&body);
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(
        !html.contains("unpkg.com") && !html.contains("https://"),
        "no CDN: {html}"
    );
}
