//! The `wrenn` Python SDK as the client of the lifecycle API, with the
//! stand-in agent (the in-capsule SDK tests need the real agent and run
//! from tests/wrenn/run.sh). Needs `WARREN_TEST_PYTHON`: a Python with
//! `wrenn` and `pytest` installed (tests/wrenn/run.sh makes such a venv).

use serde_json::json;

use crate::common::*;
use crate::stub_agent::{StubAgent, add_host};

#[tokio::test]
async fn wrenn_sdk_lifecycle_with_stub_agent() {
    let Ok(python) = std::env::var("WARREN_TEST_PYTHON") else {
        eprintln!(
            "SKIP wrenn_sdk_lifecycle_with_stub_agent: WARREN_TEST_PYTHON (a Python with wrenn and pytest) is not set"
        );
        return;
    };
    let c = Control::on(&fresh_db().await).await;
    let agent = StubAgent::start().await;
    let http = c.client();
    let admin = signup(&http, "sdk@example.com").await;
    make_admin(&c.app, &admin).await;
    let key = api_key(&http, &admin).await;
    add_host(&c, &admin.token, &agent).await;
    // The SDK's default memory_mb is 512; the stub host has 2 GiB.
    assert_eq!(http.with(&key).get("/v1/capsules").await.1, json!([]));

    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = tokio::process::Command::new(python)
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/wrenn/test_sdk_lifecycle.py",
        ])
        .current_dir(&repo)
        .env("WRENN_BASE_URL", &c.base)
        .env("WRENN_API_KEY", &key)
        .env("WARREN_TEST_STUB_AGENT", "1")
        .output()
        .await
        .expect("running pytest");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "wrenn SDK lifecycle tests failed:\n{text}"
    );
    assert!(text.contains("passed"), "{text}");
    eprintln!("{text}");
    c.stop().await;
}
