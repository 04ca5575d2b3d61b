"""Foreground commands through the e2b SDK: output, exit codes, envs, cwd,
user, timeouts, concurrency — over HTTP/2 and HTTP/1.1."""

import concurrent.futures
import time

import pytest
from e2b import CommandExitException
from e2b.exceptions import AuthenticationException, InvalidArgumentException, TimeoutException


def test_stdout_stderr_and_exit_code(sandbox, http_version):
    result = sandbox.commands.run("echo out; echo err >&2")
    assert (result.stdout, result.stderr, result.exit_code) == ("out\n", "err\n", 0)

    with pytest.raises(CommandExitException) as exc:
        sandbox.commands.run("echo partial; echo bad >&2; exit 3")
    assert exc.value.exit_code == 3
    assert exc.value.stdout == "partial\n"
    assert exc.value.stderr == "bad\n"
    assert "exit status 3" in exc.value.error


def test_envs_cwd_and_login_shell(sandbox, workdir):
    result = sandbox.commands.run('echo "$GREETING $HOME"; pwd', envs={"GREETING": "hi"}, cwd=str(workdir))
    assert result.stdout == f"hi /root\n{workdir}\n"


def test_runs_as_the_requested_user(sandbox):
    assert sandbox.commands.run("id -u").stdout.strip() == "0"
    out = sandbox.commands.run("id -u; echo $USER; pwd", user="nobody", cwd="/tmp").stdout.split()
    assert out == ["65534", "nobody", "/tmp"]


def test_unknown_user_and_missing_cwd_are_clear_errors(sandbox):
    with pytest.raises(AuthenticationException, match="unknown user"):
        sandbox.commands.run("true", user="no-such-user")
    with pytest.raises(InvalidArgumentException, match="does not exist"):
        sandbox.commands.run("true", cwd="/no/such/dir")


def test_large_output_arrives_whole(sandbox):
    result = sandbox.commands.run("head -c 5000000 /dev/zero | tr '\\0' x")
    assert len(result.stdout) == 5_000_000
    assert set(result.stdout) == {"x"}


def test_many_concurrent_commands(sandbox):
    def run(i):
        return sandbox.commands.run(f"sleep 0.2; echo {i}").stdout.strip()

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        assert sorted(pool.map(run, range(32)), key=int) == [str(i) for i in range(32)]


def test_command_timeout_kills_the_process(sandbox):
    with pytest.raises(TimeoutException):
        sandbox.commands.run("sleep 30", timeout=1)
    # The process group is killed at the deadline: nothing is left running.
    deadline = time.monotonic() + 5
    while any("sleep 30" in " ".join(p.args) for p in sandbox.commands.list()):
        assert time.monotonic() < deadline, "the timed-out process is still running"
        time.sleep(0.05)
