//! The `warren` CLI against an in-process control plane, a stand-in agent
//! and a local envd, on a throwaway Postgres. The harness is the control
//! plane's own integration tests' (`control/tests/api/`), compiled in here
//! too, so the binary under test is this package's freshly built one.
#![allow(clippy::unwrap_used)] // tests: failing loudly is the point

#[path = "../../control/tests/api/common.rs"]
#[allow(dead_code)]
mod common;
#[path = "../../control/tests/api/local_envd.rs"]
#[allow(dead_code)]
mod local_envd;
#[path = "../../control/tests/api/stub_agent.rs"]
#[allow(dead_code)]
mod stub_agent;

use common::*;
use local_envd::*;

/// Runs the `warren` CLI against the control plane.
async fn warren(c: &Control, key: &str, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .args(args)
        .env("WARREN_URL", &c.base)
        .env("WARREN_API_KEY", key)
        .env("WARREN_DIR", "/nonexistent")
        .output()
        .await
        .expect("run warren");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn warren_cli_with_stub_agent_and_local_envd() {
    let (c, _agent, _envd, key, id) = capsule_on_local_envd(100 << 20).await;
    let (code, out, err) = warren(&c, &key, &["capsule", "ls"]).await;
    assert!(
        code == 0 && out.contains(&id) && out.contains("running"),
        "{out}{err}"
    );
    let (code, out, _) = warren(&c, &key, &["template", "ls"]).await;
    assert!(code == 0 && out.contains("tiny"), "{out}");
    let (code, out, err) = warren(
        &c,
        &key,
        &[
            "capsule",
            "exec",
            &id,
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 7",
        ],
    )
    .await;
    assert_eq!((code, out.as_str(), err.as_str()), (7, "out\n", "err\n"));

    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src.bin");
    let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(&src, &data).expect("write");
    let remote = format!("{id}:{}/in-capsule.bin", dir.path().display());
    let back = dir.path().join("back.bin");
    let (code, _, err) = warren(
        &c,
        &key,
        &["capsule", "cp", src.to_str().expect("path"), &remote],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = warren(
        &c,
        &key,
        &["capsule", "cp", &remote, back.to_str().expect("path")],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(&back).expect("read"), data);

    for (cmd, status) in [("pause", "paused"), ("resume", "running")] {
        let (code, _, err) = warren(&c, &key, &["capsule", cmd, &id]).await;
        assert!(code == 0 && err.contains(status), "{cmd}: {err}");
    }
    let (code, out, err) = warren(&c, &key, &["capsule", "create", "--template", "tiny"]).await;
    assert!(code == 0 && out.trim().starts_with("sb-"), "{out}{err}");
    let (code, _, err) = warren(&c, &key, &["capsule", "rm", out.trim()]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = warren(
        &c,
        &key,
        &["capsule", "exec", "sb-00000000deadbeef", "--", "true"],
    )
    .await;
    assert!(code == 1 && err.contains("not_found"), "{err}");
    c.stop().await;
}
