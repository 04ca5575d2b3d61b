//! Stopping a page server releases everything it held; a page server killed in
//! the middle of a restore leaves the guest with an error, not a hang.
//!
//! This binary must hold no other userfaultfd or snapshot mapping than the one
//! under test: its descriptor checks read this process's `/proc/self`.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use warren_uffd::{End, State};

/// Descriptors of this process that point at a userfaultfd or at `file`.
fn held(file: &Path) -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .expect("list fds")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|t| t.display().to_string())
        .filter(|t| t == "anon_inode:[userfaultfd]" || Path::new(t) == file)
        .collect()
}

fn mapped(file: &Path) -> bool {
    std::fs::read_to_string("/proc/self/maps")
        .expect("maps")
        .contains(&*file.to_string_lossy())
}

#[test]
fn stop_closes_every_descriptor_and_mapping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mem, _) = memory_file(dir.path(), "mem", 4 * MIB, &[]);
    let mut cfg = config(dir.path(), "vm", snapshot(&mem), 64 * 1024);
    cfg.record = Some(dir.path().join("mem.wset"));
    let core = Core::one(cfg);
    let server = core.server().clone();
    assert!(mapped(&mem), "the snapshot is mapped while serving");

    // A guest touches half its memory and pauses, still connected.
    let mut guest = spawn_guest(
        &dir.path().join("vm.sock"),
        &mem,
        "touch:random:0:2m,pause,touch:seq",
        &[],
    );
    wait_for_line(&mut guest, "paused");
    assert!(matches!(server.state(), State::Serving { .. }));
    assert!(
        !held(&mem).is_empty(),
        "the server holds the VM's userfaultfd"
    );

    server.stop();
    let outcome = core.join().remove(0);
    assert_eq!(outcome.end, End::Stopped);
    assert_eq!(server.state(), State::Finished);
    assert_eq!(
        outcome.stats.faults,
        2 * MIB / (64 * 1024),
        "random touches with 64 KiB fault-around"
    );
    // The working set recorded so far was saved.
    let saved = outcome.working_set.expect("recording on").expect("saved");
    assert!(std::fs::metadata(saved).expect("working set file").len() > 0);
    // Everything is released once the task is done (a cancelled io_uring poll
    // may hold its dup until the runtime's last turn: poll briefly).
    eventually("descriptors released", || held(&mem).is_empty());
    assert!(!mapped(&mem), "the snapshot mapping is gone");
    assert!(!dir.path().join("vm.sock").exists());

    // The guest's next fault has no server: it must notice and exit with an
    // error (its watchdog may already have, so resuming it may find it gone).
    let _ = guest.stdin.take().map(|mut s| s.write_all(b"\n"));
    let (code, _, err) = finish(guest, Duration::from_secs(30));
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("page server closed the connection"), "{err}");
}

#[test]
fn a_handler_killed_mid_restore_gives_the_guest_an_error_not_a_hang() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mem, _) = memory_file(dir.path(), "mem", 8 * MIB, &[]);
    let sock = dir.path().join("vm.sock");
    let mut server = Proc::new(
        Command::new(bin())
            .args(["serve", "--fault-around", "4096", "--socket"])
            .arg(&sock)
            .arg("--memory")
            .arg(&mem)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn warren-uffd serve"),
    );
    wait_for_line(&mut server, &format!("listening on {}", sock.display()));

    let mut guest = spawn_guest(&sock, &mem, "touch:random:0:4m,pause,touch:seq", &[]);
    wait_for_line(&mut guest, "paused");
    // Kill the page server process outright in the middle of the restore.
    server.kill().expect("kill the page server");
    server.wait().expect("reap");
    let _ = guest.stdin.take().map(|mut s| s.write_all(b"\n"));
    let (code, out, err) = finish(guest, Duration::from_secs(30));
    assert_eq!(code, Some(3), "stdout: {out}\nstderr: {err}");
    assert!(err.contains("page server closed the connection"), "{err}");
    assert!(
        !out.contains("ok pages_checked"),
        "the guest did not finish: {out}"
    );
}

#[test]
fn serve_cli_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mem, _) = memory_file(dir.path(), "mem", MIB, &[]);
    let sock = dir.path().join("vm.sock");
    let mut server = Proc::new(
        Command::new(bin())
            .args(["serve", "--socket"])
            .arg(&sock)
            .arg("--memory")
            .arg(&mem)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn warren-uffd serve"),
    );
    wait_for_line(&mut server, &format!("listening on {}", sock.display()));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let (code, out, err) = finish(server, Duration::from_secs(10));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("end=Stopped"), "{out}");
    assert!(!sock.exists(), "the socket is removed");
}

#[test]
fn bad_start_requests_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mem, _) = memory_file(dir.path(), "mem", MIB, &[]);
    let snap = snapshot(&mem);
    // Not on a compio runtime thread.
    let err = warren_uffd::PageServer::spawn(config(dir.path(), "vm", snap.clone(), PAGE))
        .expect_err("no runtime");
    assert!(matches!(err, warren_uffd::ServerError::NoRuntime), "{err}");
    // A regular file where the socket should go is not replaced.
    let taken = dir.path().join("taken.sock");
    std::fs::write(&taken, b"keep me").expect("write");
    let runtime = compio::runtime::Runtime::new().expect("runtime");
    let err = runtime
        .block_on(async { warren_uffd::PageServer::spawn(config(dir.path(), "taken", snap, PAGE)) })
        .expect_err("not a socket");
    assert!(
        matches!(err, warren_uffd::ServerError::NotASocket(_)),
        "{err}"
    );
    assert_eq!(std::fs::read(&taken).expect("still there"), b"keep me");
}
