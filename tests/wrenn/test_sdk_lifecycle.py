"""Capsule lifecycle through the wrenn SDK: create, get, list, pause,
resume, ping, stats, usage, metrics, events, destroy, and the SDK's typed
errors. Needs no envd, so it also runs against the stand-in agent."""

import threading

import pytest
from wrenn import (
    Capsule,
    WrennNotFoundError,
    WrennValidationError,
)
from wrenn.models import Status

from conftest import TEMPLATE


def test_create_get_list_destroy(client):
    info = client.capsules.create(template=TEMPLATE, vcpus=1, memory_mb=256)
    assert info.id and info.id.startswith("sb-")
    assert info.status in (Status.running, Status.starting)
    assert info.template == TEMPLATE
    got = client.capsules.get(info.id)
    assert got.id == info.id and got.vcpus == 1 and got.memory_mb == 256
    assert info.id in [c.id for c in client.capsules.list()]
    client.capsules.destroy(info.id)
    assert client.capsules.get(info.id).status in (Status.stopped, Status.stopping)


def test_pause_resume_ping(capsule):
    capsule.ping()
    assert capsule.pause(wait=True).status == Status.paused
    assert not capsule.is_running()
    assert capsule.resume(wait=True).status == Status.running
    assert capsule.is_running()
    capsule.ping()


def test_connect_resumes_a_paused_capsule(capsule):
    capsule.pause(wait=True)
    again = Capsule.connect(capsule.capsule_id)
    assert again.get_info().status == Status.running


def test_stats_usage_metrics(client, capsule):
    stats = client.capsules.stats(range="5m")
    assert stats.current.running_count >= 1
    assert stats.current.memory_mb_reserved >= 1
    assert len(stats.series.labels) == len(stats.series.running) > 0
    usage = client.capsules.usage()
    assert usage.points
    metrics = client.capsules.metrics(capsule.capsule_id, range="10m")
    assert metrics.sandbox_id == capsule.capsule_id


def test_events_stream_sees_creates(client):
    seen = []
    ready = threading.Event()

    def listen():
        from wrenn import WrennClient

        with WrennClient() as c:
            for ev in c.events.stream():
                ready.set()
                seen.append(ev)
                if ev.event and ev.event.value == "capsule.create":
                    return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert ready.wait(10), "no 'connected' frame"
    info = client.capsules.create(template=TEMPLATE)
    t.join(20)
    client.capsules.destroy(info.id)
    created = [e for e in seen if e.event and e.event.value == "capsule.create"]
    assert created and created[0].resource.id == info.id


def test_typed_errors(client):
    with pytest.raises(WrennNotFoundError):
        client.capsules.get("sb-00000000deadbeef")
    with pytest.raises(WrennNotFoundError):
        client.capsules.create(template="no-such-template")
    with pytest.raises(WrennValidationError):
        client.capsules.create(template=TEMPLATE, vcpus=0)
    with pytest.raises(WrennValidationError):
        client.capsules.create(template=TEMPLATE, memory_mb=10**9)


def test_snapshot_list(client):
    names = [t.name for t in client.snapshots.list()]
    assert TEMPLATE in names
