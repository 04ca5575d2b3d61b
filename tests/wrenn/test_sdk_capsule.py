"""Inside a capsule through the wrenn SDK (needs a real warren-agent with
envd): commands with envs and cwd, background processes, streams, files
(including streamed upload and download checked by SHA-256), PTY, pause and
resume keeping a file and a running process, get_url to a server in the
capsule, snapshots, destroy."""

import hashlib
import os
import time
import urllib.parse

import httpx
import pytest
from wrenn import Capsule, WrennNotFoundError
from wrenn.models import Status

from conftest import TEMPLATE, needs_envd

pytestmark = pytest.mark.usefixtures("_envd")


@pytest.fixture
def _envd():
    needs_envd()


def test_exec_with_envs_and_cwd(capsule):
    r = capsule.commands.run("echo hello; echo oops >&2; exit 3")
    assert (r.stdout, r.stderr, r.exit_code) == ("hello\n", "oops\n", 3)
    r = capsule.commands.run("echo $GREETING-$OTHER; pwd", envs={"GREETING": "hi", "OTHER": "x y"}, cwd="/tmp")
    assert r.stdout == "hi-x y\n/tmp\n"
    assert r.exit_code == 0 and r.duration_ms is not None


def test_background_processes(capsule):
    h = capsule.commands.run("while true; do echo tick; sleep 0.2; done", background=True, tag="ticker")
    assert h.pid > 0 and h.tag == "ticker"
    procs = capsule.commands.list()
    assert any(p.pid == h.pid and p.tag == "ticker" for p in procs)
    events = capsule.commands.connect(h.pid)
    first = next(events)
    assert first.type in ("start", "stdout")
    out = next(e for e in events if e.type == "stdout")
    assert "tick" in out.data
    capsule.commands.kill(h.pid)
    time.sleep(0.5)
    assert not any(p.pid == h.pid for p in capsule.commands.list())
    with pytest.raises(WrennNotFoundError):
        capsule.commands.kill(h.pid)


def test_exec_stream(capsule):
    events = list(capsule.commands.stream("echo one; echo two >&2; exit 4"))
    kinds = [e.type for e in events]
    assert kinds[0] == "start" and kinds[-1] == "exit"
    assert "one\n" in "".join(e.data for e in events if e.type == "stdout")
    assert "two\n" in "".join(e.data for e in events if e.type == "stderr")
    assert events[-1].exit_code == 4


def test_files(capsule):
    capsule.files.write("/tmp/a/b/hello.txt", "hello files")
    assert capsule.files.read("/tmp/a/b/hello.txt") == "hello files"
    assert capsule.files.exists("/tmp/a/b/hello.txt")
    names = [e.name for e in capsule.files.list("/tmp/a", depth=2)]
    assert "b" in names and "hello.txt" in names
    d = capsule.files.make_dir("/tmp/newdir/x")
    assert d.type.value == "directory"
    again = capsule.files.make_dir("/tmp/newdir/x")
    assert again.name == "x"
    capsule.files.remove("/tmp/a")
    assert not capsule.files.exists("/tmp/a/b/hello.txt")
    with pytest.raises(WrennNotFoundError):
        capsule.files.read("/tmp/a/b/hello.txt")
    binary = bytes(range(256)) * 40
    capsule.files.write("/tmp/bin.dat", binary)
    assert capsule.files.read_bytes("/tmp/bin.dat") == binary


def test_streamed_upload_and_download(capsule):
    size = 64 << 20
    chunk = os.urandom(1 << 20)
    sent = hashlib.sha256()

    def chunks():
        for i in range(size // len(chunk)):
            piece = bytes([i % 256]) + chunk[1:]
            sent.update(piece)
            yield piece

    capsule.files.upload_stream("/tmp/big.bin", chunks())
    r = capsule.commands.run("sha256sum /tmp/big.bin")
    assert r.stdout.split()[0] == sent.hexdigest()
    got = hashlib.sha256()
    total = 0
    for piece in capsule.files.download_stream("/tmp/big.bin"):
        got.update(piece)
        total += len(piece)
    assert total == size and got.hexdigest() == sent.hexdigest()


def test_pty(capsule):
    with capsule.pty(cmd="/bin/sh", cols=100, rows=30) as term:
        started = next(term)
        assert started.type.value == "started" and term.tag.startswith("pty-")
        term.write(b"echo pty-$((6*7))\n")
        out = b""
        for ev in term:
            if ev.type.value == "output":
                out += ev.data
                if b"pty-42" in out:
                    break
        term.resize(120, 40)
        term.write(b"exit 5\n")
        code = None
        for ev in term:
            if ev.type.value == "exit":
                code = ev.exit_code
                break
        assert code == 5


def test_pause_resume_keeps_files_and_processes(capsule):
    capsule.files.write("/tmp/keep.txt", "still here")
    h = capsule.commands.run(
        "i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.1; done", background=True
    )
    time.sleep(0.5)
    capsule.pause(wait=True)
    capsule.resume(wait=True)
    assert capsule.files.read("/tmp/keep.txt") == "still here"
    before = int(capsule.files.read("/tmp/counter"))
    time.sleep(0.6)
    after = int(capsule.files.read("/tmp/counter"))
    assert after > before
    assert any(p.pid == h.pid for p in capsule.commands.list())


def test_get_url_reaches_a_server_in_the_capsule(capsule):
    capsule.files.write("/tmp/www/index.html", "served from the capsule")
    capsule.commands.run("busybox httpd -f -p 8000 -h /tmp/www", background=True)
    url = capsule.get_url(8000)
    parsed = urllib.parse.urlsplit(url)
    assert parsed.netloc.startswith(f"8000-{capsule.capsule_id}.")
    # The SDK's host name (`8000-<id>.127.0.0.1:<port>`) needs wildcard DNS
    # to resolve; send the same request where it points (the control plane's
    # address, which relays capsule ports) with that Host header.
    base = urllib.parse.urlsplit(os.environ["WRENN_BASE_URL"]).netloc
    for _ in range(50):
        try:
            r = httpx.get(f"http://{base}/index.html", headers={"Host": parsed.netloc}, timeout=5)
            if r.status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    assert r.status_code == 200 and r.text == "served from the capsule"


def test_snapshot_then_new_capsule_has_the_file(capsule, client):
    capsule.files.write("/tmp/snap.txt", "from the snapshot")
    name = f"snap-test-{int(time.time())}"
    tpl = capsule.create_snapshot(name=name)
    assert tpl.name == name and tpl.type.value == "snapshot"
    assert name in [t.name for t in client.snapshots.list(type="snapshot")]
    with Capsule(template=name, wait=True) as c2:
        assert c2.files.read("/tmp/snap.txt") == "from the snapshot"
    client.snapshots.delete(name)
    assert name not in [t.name for t in client.snapshots.list()]


def test_destroy(client):
    c = Capsule(template=TEMPLATE, wait=True)
    c.destroy(wait=True)
    assert client.capsules.get(c.capsule_id).status in (Status.stopped, Status.missing)
