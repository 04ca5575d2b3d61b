"""Terminals: create, input, resize, kill, bad sizes."""

import time

import pytest
from e2b.exceptions import InvalidArgumentException
from e2b.sandbox.commands.command_handle import PtySize


def read_until(chunks, needle, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in b"".join(chunks):
            return True
        time.sleep(0.05)
    return False


def test_pty_input_resize_kill(sandbox, http_version):
    import threading

    handle = sandbox.pty.create(PtySize(rows=24, cols=80), timeout=0)
    chunks = []
    waiter = threading.Thread(target=lambda: _wait_quietly(handle, chunks), daemon=True)
    waiter.start()

    sandbox.pty.send_stdin(handle.pid, b"echo $((6*7)); tty\n")
    assert read_until(chunks, b"42"), b"".join(chunks)
    assert read_until(chunks, b"/dev/pts/")

    sandbox.pty.resize(handle.pid, PtySize(rows=31, cols=101))
    sandbox.pty.send_stdin(handle.pid, b"stty size\n")
    assert read_until(chunks, b"31 101"), b"".join(chunks)

    assert sandbox.pty.kill(handle.pid) is True
    waiter.join(10)
    assert not waiter.is_alive()
    assert handle.pid not in {p.pid for p in sandbox.commands.list()}


def _wait_quietly(handle, chunks):
    try:
        handle.wait(on_pty=lambda data: chunks.append(bytes(data)))
    except Exception:
        pass


def test_bad_pty_size_is_invalid_argument(sandbox):
    with pytest.raises(InvalidArgumentException, match="PTY size"):
        sandbox.pty.create(PtySize(rows=0, cols=80))
