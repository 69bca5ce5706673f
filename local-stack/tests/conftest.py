"""Fixtures: one extended moto server per test session on a free 127.0.0.1 port, reset before each test."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import boto3
from botocore.config import Config
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
LOCAL_STACK = os.path.dirname(HERE)
EMULATOR = os.path.join(LOCAL_STACK, "emulator")
REPO = os.path.dirname(LOCAL_STACK)
sys.path.insert(0, EMULATOR)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def endpoint(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, os.path.join(EMULATOR, "server.py"), "--port", str(port),
             "--lambda-endpoint", f"http://127.0.0.1:{free_port()}"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(url + "/_fleet/health", timeout=1).read()
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"moto server did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.1)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture
def aws(endpoint):
    urllib.request.urlopen(urllib.request.Request(endpoint + "/moto-api/reset", method="POST")).read()
    urllib.request.urlopen(urllib.request.Request(endpoint + "/_fleet/api-calls", method="DELETE")).read()
    kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
              aws_secret_access_key="testing",
              config=Config(parameter_validation=False, retries={"total_max_attempts": 1}))

    class Clients:
        url = endpoint
        ec2 = boto3.client("ec2", **kw)
        ssm = boto3.client("ssm", **kw)
        iam = boto3.client("iam", **kw)
        sqs = boto3.client("sqs", **kw)
        events = boto3.client("events", **kw)
        sfn = boto3.client("stepfunctions", **kw)
        ddb = boto3.client("dynamodb", **kw)

    return Clients
