"""envd's plain HTTP routes, driven with httpx and raw sockets."""

import socket
import time

import httpx
import pytest
from e2b.exceptions import AuthenticationException


def test_health_reports_the_protocol_level(envd):
    r = httpx.get(f"{envd.url}/health")
    assert r.status_code == 200
    assert r.json()["version"] == "0.6.4"


def test_init_defaults_apply_to_later_processes(sandbox, envd, workdir):
    r = httpx.post(
        f"{envd.url}/init",
        json={"envVars": {"FROM_INIT": "yes"}, "defaultUser": "nobody", "defaultWorkdir": str(workdir)},
    )
    assert r.status_code == 204, r.text
    assert httpx.get(f"{envd.url}/envs").json() == {"FROM_INIT": "yes"}
    out = sandbox.commands.run("echo $FROM_INIT; id -un; pwd").stdout.split()
    assert out == ["yes", "nobody", str(workdir)]
    # A request's own envs win over the defaults.
    assert sandbox.commands.run("echo $FROM_INIT", envs={"FROM_INIT": "no"}).stdout == "no\n"


def test_init_rejects_bad_input(envd):
    for body, needle in [
        ({"defaultUser": "ghost"}, "unknown user"),
        ({"defaultWorkdir": "relative/dir"}, "absolute"),
        ({"envVars": {"A=B": "x"}}, "invalid environment variable"),
    ]:
        r = httpx.post(f"{envd.url}/init", json=body)
        assert r.status_code == 400, body
        assert needle in r.json()["message"]
    r = httpx.post(f"{envd.url}/init", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400
    r = httpx.post(f"{envd.url}/init", content=b"x" * (2 << 20))
    assert r.status_code == 413


def test_access_token_gates_everything_but_health(sandbox, envd):
    assert httpx.post(f"{envd.url}/init", json={"accessToken": "s3cret"}).status_code == 204
    assert httpx.get(f"{envd.url}/health").status_code == 200
    assert httpx.get(f"{envd.url}/envs").status_code == 401
    assert httpx.get(f"{envd.url}/envs", headers={"X-Access-Token": "wrong"}).status_code == 401
    assert httpx.get(f"{envd.url}/envs", headers={"X-Access-Token": "s3cret"}).status_code == 200
    # Changing the token needs the current one.
    assert httpx.post(f"{envd.url}/init", json={"accessToken": "other"}).status_code == 401
    with pytest.raises(AuthenticationException):
        sandbox.commands.run("true")
    # Connect RPCs with the token go through.
    rpc = f"{envd.url}/process.Process/List"
    assert httpx.post(rpc, json={}).status_code == 401
    r = httpx.post(rpc, json={}, headers={"X-Access-Token": "s3cret"})
    assert r.status_code == 200 and r.json() == {}


def test_metrics(envd):
    m = httpx.get(f"{envd.url}/metrics").json()
    assert m["cpu_count"] >= 1
    assert 0 <= m["cpu_used_pct"] <= 100
    assert 0 < m["mem_used"] <= m["mem_total"]
    assert 0 < m["disk_used"] <= m["disk_total"]


def test_range_download(envd, workdir):
    (workdir / "r.bin").write_bytes(bytes(range(256)))
    r = httpx.get(f"{envd.url}/files", params={"path": f"{workdir}/r.bin"}, headers={"Range": "bytes=10-19"})
    assert r.status_code == 206
    assert r.content == bytes(range(10, 20))
    assert r.headers["content-range"] == "bytes 10-19/256"
    r = httpx.get(f"{envd.url}/files", params={"path": f"{workdir}/r.bin"}, headers={"Range": "bytes=300-"})
    assert r.status_code == 416


def test_upload_errors(envd, workdir):
    r = httpx.post(f"{envd.url}/files", content=b"x", headers={"content-type": "application/octet-stream"})
    assert r.status_code == 400 and "path" in r.json()["message"]
    r = httpx.post(f"{envd.url}/files", params={"path": str(workdir)}, content=b"x")
    assert r.status_code == 400 and "directory" in r.json()["message"]
    r = httpx.post(f"{envd.url}/files", params={"path": f"{workdir}/x", "username": "ghost"}, content=b"x")
    assert r.status_code == 401


def _keepalive_socket():
    s = socket.create_connection(("127.0.0.1", 49983))
    s.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
    assert b"200 OK" in s.recv(4096)
    return s


def _closed(sock, timeout=5):
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, socket.timeout):
        return False


def test_snapshot_prepare_then_init_closes_old_connections(envd):
    old = _keepalive_socket()
    # Prepare: idle connections are closed, keep-alive turns off.
    assert httpx.post(f"{envd.url}/snapshot/prepare").status_code == 204
    assert _closed(old)
    with httpx.Client() as c:
        r = c.get(f"{envd.url}/health")
        assert r.headers.get("connection") == "close"

    # A connection made during the pause window is closed by the first /init.
    busy = socket.create_connection(("127.0.0.1", 49983))
    time.sleep(0.1)
    assert httpx.post(f"{envd.url}/init", json={}).status_code == 204
    assert _closed(busy)
    # Keep-alive is back on for new connections, and they stay open.
    fresh = _keepalive_socket()
    assert httpx.post(f"{envd.url}/init", json={}).status_code == 204
    fresh.settimeout(0.5)
    with pytest.raises(socket.timeout):
        fresh.recv(1)
