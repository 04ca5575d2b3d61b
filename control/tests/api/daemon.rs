//! The `warren-control` binary as `warren up` runs it: its own log file
//! under `$WARREN_DIR/logs/` (plain text), reopened on SIGHUP after
//! logrotate moved it, and a clean exit on SIGTERM.

use std::process::{Command, Stdio};

use crate::common::*;

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

#[tokio::test]
async fn control_writes_its_own_log_and_reopens_it_on_sighup() {
    let db = fresh_db().await;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(warren_testkit::built_bin("warren-control", None))
        .env("WARREN_DIR", dir.path())
        .env("DATABASE_URL", &db)
        .env("WARREN_LISTEN", format!("127.0.0.1:{port}"))
        .env("WARREN_BUILD_WORKERS", "0")
        .env("LOG_LEVEL", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let log = dir.path().join("logs/control.log");
    let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap_or_default();
    eventually(30, || async {
        read(&log)
            .contains("warren-control listening")
            .then_some(())
    })
    .await;
    assert!(!read(&log).contains('\x1b'), "colour codes in the log file");

    // logrotate moves the file away and signals: the next lines go to a
    // new file at the same path.
    let rotated = dir.path().join("logs/control.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    signal(child.id(), libc::SIGHUP);
    eventually(10, || async {
        read(&log).contains("log file reopened").then_some(())
    })
    .await;
    assert!(read(&rotated).contains("warren-control listening"));

    signal(child.id(), libc::SIGTERM);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(read(&log).contains("shutting down"), "{}", read(&log));
}
