"""REST API latency end to end against a whole local Warren (`warren up`,
the real agent, namespace capsules on `tiny`): create -> running and an exec
round trip, one at a time, p50/p99 after 5 warm-up rounds.

Run by `make bench` through tests/wrenn/run.sh, which brings Warren up on
private ports and tears it down:
    PROFILE=release tests/wrenn/run.sh benches/scripts/api_latency.py -k api_latency -s
"""
import json
import os
import statistics
import time
import urllib.request

WARMUP, ROUNDS = 5, 40


def call(method, path, body=None):
    req = urllib.request.Request(
        os.environ["WRENN_BASE_URL"] + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"X-API-Key": os.environ["WRENN_API_KEY"], "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req) as r:
        return r.status, r.read()


def timed(method, path, body=None):
    """(status, body, milliseconds)."""
    t = time.perf_counter()
    st, b = call(method, path, body)
    return st, b, (time.perf_counter() - t) * 1e3


def test_api_latency():
    create, exec_ = [], []
    for i in range(WARMUP + ROUNDS):
        st, b, create_ms = timed("POST", "/v1/capsules", {"template": "tiny"})
        assert st in (201, 202), b
        cap = json.loads(b)
        assert cap["status"] == "running", cap
        st, b, exec_ms = timed("POST", f"/v1/capsules/{cap['id']}/exec", {"cmd": "true"})
        assert st == 200, b
        call("DELETE", f"/v1/capsules/{cap['id']}")
        if i >= WARMUP:
            create.append(create_ms)
            exec_.append(exec_ms)
    for name, xs in (("create->running", create), ("exec true", exec_)):
        q = statistics.quantiles(xs, n=100, method="inclusive")
        print(f"\nAPI end to end, real agent: {name}: n={len(xs)} p50={q[49]:.1f} ms p99={q[98]:.1f} ms")
