"""Fixtures: a network namespace per test, a real envd inside it, and the
official e2b SDK (debug mode: it talks to envd on localhost:49983) as the
client.

Tests run forked (see pytest.ini): the forked test process moves itself into
a namespace it created, so envd and the SDK see only each other."""

import ctypes
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

CLONE_NEWNET = 0x40000000
ENVD_PORT = 49983
REPO = Path(__file__).resolve().parents[2]
ENVD = os.environ.get("ENVD_BIN") or str(REPO / "target" / "debug" / "envd")

_libc = ctypes.CDLL("libc.so.6", use_errno=True)


def _join_netns(name: str) -> None:
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


def _kill_namespace_processes(name: str) -> None:
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
    for pid in out.stdout.split():
        if int(pid) == os.getpid():  # the test process joined it too
            continue
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass


def pytest_sessionstart(session):
    """Removes namespaces left by test processes that died without cleaning
    up (their pid is in the name)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        parts = name.split("-")
        if len(parts) == 3 and parts[0] == "we2b" and parts[1].isdigit() and not Path(f"/proc/{parts[1]}").exists():
            _kill_namespace_processes(name)
            subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def netns():
    """A fresh network namespace that this (forked) test process joins; every
    process in it is killed and the namespace deleted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    name = f"we2b-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        _join_netns(name)
        yield name
    finally:
        _kill_namespace_processes(name)
        subprocess.run(["ip", "netns", "del", name], check=False)


class Envd:
    def __init__(self, proc: subprocess.Popen, log: Path):
        self.proc = proc
        self.log = log
        self.url = f"http://127.0.0.1:{ENVD_PORT}"

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def envd(netns, tmp_path):
    """The real envd binary, listening on :49983 inside the test's namespace."""
    if not Path(ENVD).exists():
        pytest.fail(f"envd binary not found at {ENVD}: run `cargo build -p envd` (make test does)")
    log = tmp_path / "envd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([ENVD], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", ENVD_PORT), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"envd did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.02)
    yield Envd(proc, log)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("envd did not stop on SIGTERM")


@pytest.fixture(params=["2", "1.1"], ids=["h2", "http1"])
def http_version(request, monkeypatch):
    monkeypatch.setenv("E2B_HTTP_VERSION", request.param)
    return request.param


@pytest.fixture
def sandbox(envd, monkeypatch):
    monkeypatch.setenv("E2B_DEBUG", "true")
    from e2b import Sandbox

    return Sandbox.create()


@pytest.fixture
def workdir(tmp_path):
    """A directory for file tests, readable by everyone."""
    d = tmp_path / "work"
    d.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(d, 0o777)
    return d
