"""Fixtures for the wrenn SDK tests against a Warren control plane.

The SDK is used exactly as its users use it: pointed at Warren through
WRENN_BASE_URL and WRENN_API_KEY. Tests skip (with the reason) when those
are not set; tests/wrenn/run.sh sets them up with `warren up`.
"""

import os

import pytest

TEMPLATE = os.environ.get("WARREN_TEST_TEMPLATE", "tiny")


def _require_server():
    if not os.environ.get("WRENN_BASE_URL") or not os.environ.get("WRENN_API_KEY"):
        pytest.skip("WRENN_BASE_URL / WRENN_API_KEY not set: no Warren control plane to test")


@pytest.fixture
def client():
    _require_server()
    from wrenn import WrennClient

    with WrennClient() as c:
        yield c


@pytest.fixture
def capsule():
    """A running capsule from the test template, destroyed afterwards."""
    _require_server()
    from wrenn import Capsule

    c = Capsule(template=TEMPLATE, wait=True)
    try:
        yield c
    finally:
        try:
            c.destroy()
        except Exception:
            pass


def needs_envd():
    """Skip unless a real agent with envd serves the capsules."""
    if os.environ.get("WARREN_TEST_STUB_AGENT"):
        pytest.skip("the stand-in agent runs no envd")
