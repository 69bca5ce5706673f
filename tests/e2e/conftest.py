"""The local stack for end-to-end tests: brought up once per session, always brought down."""
import os
import socket
import subprocess
import sys

import pytest

from fleet import ROOT, Stack, moto_endpoint

RUN = [sys.executable, str(ROOT / "local-stack" / "emulator" / "run.py")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def stack():
    os.environ.setdefault("MOTO_PORT", str(_free_port()))
    os.environ.setdefault("WATCH_PORT", str(_free_port()))
    try:
        subprocess.run(RUN + ["up", "--build"], check=True, cwd=ROOT, timeout=1200)
        yield Stack(moto_endpoint())
    finally:
        subprocess.run(RUN + ["down"], cwd=ROOT, timeout=120)


@pytest.fixture(autouse=True)
def no_access_denied(request):
    """IAM is enforced on the local stack: a test passes only if nothing it made the system do was denied,
    unless it says it expects denials (marker expect_denials)."""
    if "stack" not in request.fixturenames:
        yield
        return
    st = request.getfixturevalue("stack")
    st.iam_denials(reset=True)
    yield
    denied = st.iam_denials(reset=True)
    if request.node.get_closest_marker("expect_denials") is None:
        assert not denied, "requests denied by IAM: " + "; ".join(d["message"] for d in denied)
