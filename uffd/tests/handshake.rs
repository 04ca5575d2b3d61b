//! Malformed handshakes get a clear error and a closed connection; the server
//! keeps accepting, and a real Firecracker-like guest is then served.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use common::*;
use warren_uffd::guest::{new_userfaultfd, send_raw_handshake};
use warren_uffd::{End, HandshakeError, PageServer, State};

/// Asserts the server closed `conn` (EOF within a few seconds).
fn assert_closed(mut conn: UnixStream) {
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    let n = conn
        .read(&mut buf)
        .expect("the server closes the connection, it does not leave it hanging");
    assert_eq!(n, 0);
}

/// Waits until the server has refused `n` handshakes; returns the last error.
fn refusal(server: &PageServer, n: u64) -> String {
    eventually("the handshake to be refused", || {
        server.stats().handshake_failures >= n
    });
    assert_eq!(server.stats().handshake_failures, n);
    let err = server.last_handshake_error().expect("an error is recorded");
    err.to_string()
}

fn region(size: u64, offset: u64) -> String {
    format!(
        r#"[{{"base_host_virt_addr":139637976727552,"size":{size},"offset":{offset},"page_size":4096,"page_size_kib":4096}}]"#
    )
}

#[test]
fn malformed_handshakes_are_refused_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mem, _) = memory_file(dir.path(), "mem", 2 * MIB, &[]);
    let mut cfg = config(dir.path(), "vm", snapshot(&mem), PAGE);
    cfg.handshake_timeout = Duration::from_millis(300);
    let core = Core::one(cfg);
    let server = core.server().clone();
    let sock = dir.path().join("vm.sock");
    let uffd = new_userfaultfd().expect("userfaultfd");
    let good = region(MIB, 0);
    let send = |json: &str, fds: &[&dyn std::os::fd::AsRawFd]| {
        send_raw_handshake(&sock, json.as_bytes(), fds).expect("connect and send")
    };

    let mut n = 0;
    let mut expect = |conn: UnixStream, check: &dyn Fn(&str) -> bool| {
        assert_closed(conn);
        n += 1;
        let err = refusal(&server, n);
        assert!(check(&err), "unexpected error: {err}");
        assert_eq!(server.state(), State::Listening);
    };

    expect(send("{not json", &[&uffd]), &|e| {
        e.contains("not a JSON array")
    });
    expect(send(r#"{"base_host_virt_addr":0}"#, &[&uffd]), &|e| {
        e.contains("not a JSON array")
    });
    expect(send(&good, &[]), &|e| e.contains("no file descriptor"));
    let file = std::fs::File::open(&mem).expect("open");
    expect(send(&good, &[&file]), &|e| e.contains("not a userfaultfd"));
    expect(send(&good, &[&uffd, &file]), &|e| {
        e.contains("expected exactly one")
    });
    expect(send(&region(4 * MIB, 0), &[&uffd]), &|e| {
        e.contains("does not fit the memory file")
    });
    expect(send(&region(MIB, MIB + PAGE), &[&uffd]), &|e| {
        e.contains("does not fit the memory file")
    });
    expect(send(&region(PAGE + 1, 0), &[&uffd]), &|e| {
        e.contains("not a multiple of the page size")
    });
    expect(send("[]", &[&uffd]), &|e| e.contains("no memory regions"));
    // Half a message, then nothing: the timeout ends it.
    expect(send(&good[..20], &[&uffd]), &|e| {
        e.contains("no complete handshake within")
    });
    // Half a message, then the peer closes.
    let mut half = UnixStream::connect(&sock).expect("connect");
    half.write_all(&good.as_bytes()[..20]).expect("write");
    half.shutdown(std::net::Shutdown::Write).expect("shutdown");
    expect(half, &|e| e.contains("closed the connection"));
    let last = server.last_handshake_error().expect("error");
    assert!(matches!(*last, HandshakeError::Closed));

    // A real guest after all that is served normally.
    run_guest(&sock, &mem, "touch:random", &[]);
    let o = core.join().remove(0);
    assert_eq!(o.end, End::PeerClosed);
    assert_eq!(o.stats.faults, 2 * MIB / PAGE);
    assert_eq!(o.stats.handshake_failures, 11);
}

#[test]
fn once_a_vm_is_connected_the_socket_is_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mem, _) = memory_file(dir.path(), "mem", MIB, &[]);
    let core = Core::one(config(dir.path(), "vm", snapshot(&mem), PAGE));
    let sock = dir.path().join("vm.sock");
    let mut guest = spawn_guest(&sock, &mem, "pause,touch:seq", &[]);
    wait_for_line(&mut guest, "paused");
    let server = core.server().clone();
    eventually("serving", || {
        matches!(server.state(), State::Serving { pid: Some(_) })
    });
    assert!(
        !Path::new(&sock).exists(),
        "the socket path is removed after the handshake"
    );
    assert!(UnixStream::connect(&sock).is_err());
    guest
        .stdin
        .take()
        .map(|mut s| s.write_all(b"\n"))
        .transpose()
        .expect("resume");
    let (code, _, err) = finish(guest, Duration::from_secs(30));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(core.join()[0].end, End::PeerClosed);
}

#[test]
fn other_vms_on_the_core_are_unaffected_by_a_bad_handshake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mem, _) = memory_file(dir.path(), "mem", 4 * MIB, &[]);
    let snap = snapshot(&mem);
    let core = Core::start(vec![
        config(dir.path(), "a", snap.clone(), PAGE),
        config(dir.path(), "b", snap, PAGE),
    ]);
    let bad = send_raw_handshake(&dir.path().join("a.sock"), b"garbage", &[]).expect("send");
    assert_closed(bad);
    run_guest(&dir.path().join("b.sock"), &mem, "touch:random", &[]);
    run_guest(&dir.path().join("a.sock"), &mem, "touch:seq", &[]);
    for o in core.join() {
        assert_eq!(o.end, End::PeerClosed);
        assert_eq!(o.stats.faults, 4 * MIB / PAGE);
    }
}
