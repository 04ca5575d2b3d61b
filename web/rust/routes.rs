//! What a path that no API route took names: a file of the build, a page
//! of the console (its client-side routes), or nothing.

/// The console's page, served for its client-side routes.
pub const INDEX: &str = "index.html";

#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    /// A file of the build (path inside `dist/`).
    File(String),
    /// A console route: `index.html`.
    Page,
    NotFound,
}

/// First path segments the API owns (Wrenn's `/v1`, E2B's `/sandboxes`,
/// `/templates`, `/v2`, `/v3`, capsule ports under `/proxy`): a miss there
/// is the API's 404, never the console.
fn is_api(first: &str) -> bool {
    let versioned =
        first.len() > 1 && first.starts_with('v') && first[1..].bytes().all(|b| b.is_ascii_digit());
    versioned
        || matches!(
            first,
            "sandboxes" | "templates" | "proxy" | "health" | "openapi.json"
        )
}

pub fn classify(path: &str, exists: impl Fn(&str) -> bool) -> Target {
    let rel = path.trim_start_matches('/');
    let file = match rel {
        "" => INDEX.to_string(),
        "docs" | "docs/" => "docs/index.html".to_string(),
        _ => rel.to_string(),
    };
    // Compressed twins are served by negotiation, never by name.
    let twin = file.ends_with(".gz") || file.ends_with(".br");
    if !twin && !file.split('/').any(|s| s == "..") && exists(&file) {
        return Target::File(file);
    }
    let first = rel.split('/').next().unwrap_or_default();
    let last = rel.rsplit('/').next().unwrap_or_default();
    if is_api(first) || first == "assets" || first == "docs" || last.contains('.') {
        Target::NotFound
    } else {
        Target::Page
    }
}

/// Content-hashed assets never change under their name; the rest (the
/// HTML pages) is revalidated on every load.
pub fn cache_control(path: &str) -> &'static str {
    if path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built(p: &str) -> bool {
        [
            "index.html",
            "docs/index.html",
            "assets/app-1a2b.js",
            "assets/app-1a2b.js.br",
        ]
        .contains(&p)
    }

    #[test]
    fn files_pages_and_misses() {
        let file = |p: &str| Target::File(p.to_string());
        assert_eq!(classify("/", built), file("index.html"));
        assert_eq!(classify("/docs", built), file("docs/index.html"));
        assert_eq!(classify("/docs/", built), file("docs/index.html"));
        assert_eq!(
            classify("/assets/app-1a2b.js", built),
            file("assets/app-1a2b.js")
        );
        for page in [
            "/capsules",
            "/capsules/cap-1/terminal",
            "/admin/builds/b-1",
            "/login",
            "/keys",
        ] {
            assert_eq!(classify(page, built), Target::Page, "{page}");
        }
        for miss in [
            "/v1/nothing",
            "/v2",
            "/sandboxes/x",
            "/templates",
            "/assets/gone-9z.js",
            "/assets/app-1a2b.js.br",
            "/favicon.ico",
            "/docs/swagger.js",
            "/assets/../index.html",
        ] {
            assert_eq!(classify(miss, built), Target::NotFound, "{miss}");
        }
    }

    #[test]
    fn only_hashed_assets_are_immutable() {
        assert!(cache_control("assets/app-1a2b.js").contains("immutable"));
        assert_eq!(cache_control("index.html"), "no-cache");
        assert_eq!(cache_control("docs/index.html"), "no-cache");
    }
}
