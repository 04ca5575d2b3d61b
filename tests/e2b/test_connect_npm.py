"""A streaming call through the npm Connect client (@connectrpc/connect),
described by E2B's own compiled descriptor of process.proto (taken from the
e2b Python package), against our envd over HTTP/1.1."""

import ast
import base64
import json
import re
import subprocess
from pathlib import Path

import e2b.envd.process.process_pb as process_pb

NPM_DIR = Path(__file__).resolve().parents[1] / "connect-npm"


def e2b_process_descriptor() -> bytes:
    source = Path(process_pb.__file__).read_text()
    literal = re.search(r"_DESC = file_desc\(\s*(b'.*?'),\n", source, re.S).group(1)
    return ast.literal_eval(literal)


def test_npm_connect_client_streams_from_envd(envd):
    assert (NPM_DIR / "node_modules" / "@connectrpc" / "connect").exists(), (
        "run `npm ci --prefix tests/connect-npm` first (make test does)"
    )
    descriptor = base64.b64encode(e2b_process_descriptor()).decode()
    out = subprocess.run(
        ["node", "stream.mjs", envd.url, descriptor], cwd=NPM_DIR, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["stdout"] == "from-npm\n"
    assert result["events"][0] == "start"
    assert result["events"][-2:] == ["end", "exit:5"]
    assert result["listed"] == 0
