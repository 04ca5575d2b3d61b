"""Directory watches: polled (sync SDK) and streamed (async SDK)."""

import asyncio
import time

from e2b.sandbox.filesystem.watch_handle import FilesystemEventType


def _collect(handle, want, timeout=10):
    events = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events += handle.get_new_events()
        if want(events):
            break
        time.sleep(0.05)
    return events


def test_polled_watch_sees_create_write_remove(sandbox, workdir):
    handle = sandbox.files.watch_dir(str(workdir))
    (workdir / "f.txt").write_text("one")
    (workdir / "f.txt").unlink()
    events = _collect(handle, lambda ev: any(e.type == FilesystemEventType.REMOVE for e in ev))
    kinds = [(e.name, e.type) for e in events]
    assert ("f.txt", FilesystemEventType.CREATE) in kinds
    assert ("f.txt", FilesystemEventType.WRITE) in kinds
    assert ("f.txt", FilesystemEventType.REMOVE) in kinds
    handle.stop()


def test_recursive_watch_follows_new_directories(sandbox, workdir):
    handle = sandbox.files.watch_dir(str(workdir), recursive=True, include_entry=True)
    (workdir / "sub").mkdir()
    time.sleep(0.2)
    (workdir / "sub" / "deep.txt").write_text("x")
    events = _collect(handle, lambda ev: any(e.name == "sub/deep.txt" for e in ev))
    created = [e for e in events if e.name == "sub/deep.txt" and e.type == FilesystemEventType.CREATE]
    assert created, events
    handle.stop()


def test_streamed_watch_with_async_sdk(envd, workdir, monkeypatch):
    monkeypatch.setenv("E2B_DEBUG", "true")
    from e2b import AsyncSandbox

    async def scenario():
        sandbox = await AsyncSandbox.create()
        seen = []
        got = asyncio.Event()

        def on_event(e):
            seen.append(e)
            if e.name == "streamed.txt":
                got.set()

        handle = await sandbox.files.watch_dir(str(workdir), on_event=on_event)
        (workdir / "streamed.txt").write_text("x")
        await asyncio.wait_for(got.wait(), 10)
        await handle.stop()
        return seen

    seen = asyncio.run(scenario())
    assert any(e.type == FilesystemEventType.CREATE for e in seen)
