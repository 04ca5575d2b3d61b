"""Background processes: list, connect, stdin, kill, and a process outliving
the stream that started it."""

import time

import pytest
from e2b import CommandExitException
from e2b.exceptions import NotFoundException, SandboxException


def test_list_and_kill(sandbox):
    handle = sandbox.commands.run("sleep 60", background=True, timeout=0)
    listed = {p.pid: p for p in sandbox.commands.list()}
    assert handle.pid in listed
    assert listed[handle.pid].args == ["-l", "-c", "sleep 60"]
    assert handle.kill() is True
    with pytest.raises(CommandExitException) as exc:
        handle.wait()
    assert exc.value.exit_code == -1
    assert "signal: killed" in exc.value.error
    assert handle.pid not in {p.pid for p in sandbox.commands.list()}
    # Killing what is gone reports it.
    assert sandbox.commands.kill(handle.pid) is False


def test_stdin_then_close(sandbox, http_version):
    handle = sandbox.commands.run("cat; echo END", background=True, stdin=True, timeout=0)
    sandbox.commands.send_stdin(handle.pid, "hello\n")
    sandbox.commands.send_stdin(handle.pid, b"bytes\n")
    sandbox.commands.close_stdin(handle.pid)
    assert handle.wait().stdout == "hello\nbytes\nEND\n"


def test_stream_input(sandbox):
    handle = sandbox.commands.run("wc -c", background=True, stdin=True, timeout=0)
    sandbox.commands.stream_input(handle.pid, (b"x" * 1000 for _ in range(50)))
    sandbox.commands.close_stdin(handle.pid)
    assert handle.wait().stdout.strip() == "50000"


def test_stdin_disabled_is_refused(sandbox):
    handle = sandbox.commands.run("sleep 5", background=True, stdin=False, timeout=0)
    with pytest.raises(SandboxException, match="stdin"):
        sandbox.commands.send_stdin(handle.pid, "x")
    handle.kill()


def test_process_outlives_its_stream_and_can_be_reattached(sandbox):
    handle = sandbox.commands.run("sleep 1; echo done; exit 7", background=True, timeout=0)
    pid = handle.pid
    handle.disconnect()
    again = sandbox.commands.connect(pid)
    with pytest.raises(CommandExitException) as exc:
        again.wait()
    assert exc.value.exit_code == 7
    assert exc.value.stdout == "done\n"


def test_many_background_processes(sandbox):
    handles = [sandbox.commands.run(f"sleep 0.5; echo {i}", background=True, timeout=0) for i in range(20)]
    assert len({h.pid for h in handles}) == 20
    assert [h.wait().stdout for h in handles] == [f"{i}\n" for i in range(20)]


def test_unknown_pid_is_not_found(sandbox):
    with pytest.raises(NotFoundException):
        sandbox.commands.send_stdin(999999, "x")
    with pytest.raises(NotFoundException):
        sandbox.commands.connect(999999)


def test_orphans_do_not_hold_the_end_event(sandbox):
    # The shell exits at once; its background child keeps stdout open.
    started = time.monotonic()
    result = sandbox.commands.run("(sleep 20 &) ; echo parent-done")
    assert result.stdout == "parent-done\n"
    assert time.monotonic() - started < 15
