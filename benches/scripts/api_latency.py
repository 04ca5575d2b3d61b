"""REST API latency end to end against a whole local Warren (`warren up`,
the real agent, namespace capsules on `tiny`): create -> running and an exec
round trip, one at a time, p50/p99 after 5 warm-up rounds.

Run by `make bench` through tests/wrenn/run.sh, which brings Warren up on
private ports and tears it down:
    PROFILE=release tests/wrenn/run.sh benches/scripts/api_latency.py -k api_latency -s
"""
import json, os, time, urllib.request, statistics

def call(method, path, body=None):
    req = urllib.request.Request(os.environ["WRENN_BASE_URL"] + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"X-API-Key": os.environ["WRENN_API_KEY"], "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return r.status, r.read()

def pct(xs, p):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

def test_api_latency():
    create, exec_, ids = [], [], []
    for i in range(45):
        t = time.perf_counter()
        st, b = call("POST", "/v1/capsules", {"template": "tiny"})
        dt = time.perf_counter() - t
        assert st in (201, 202), b
        cap = json.loads(b); assert cap["status"] == "running", cap
        t = time.perf_counter()
        st, b = call("POST", f"/v1/capsules/{cap['id']}/exec", {"cmd": "true"})
        de = time.perf_counter() - t
        assert st == 200, b
        call("DELETE", f"/v1/capsules/{cap['id']}")
        if i >= 5:
            create.append(dt * 1e3); exec_.append(de * 1e3)
    for name, xs in (("create->running", create), ("exec true", exec_)):
        print(f"\nAPI end to end, real agent: {name}: n={len(xs)} p50={pct(xs,50):.1f} ms p99={pct(xs,99):.1f} ms")
