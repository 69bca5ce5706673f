#!/usr/bin/env python3
"""Cold start and memory of every fleet-install Lambda function, measured on this machine.

    .venv/bin/python local-stack/scenarios/bench_functions.py [--runs 5] [--no-build] [--out target/bench/functions.json]

What is measured, per function (release build for the host, target/release/<crate>):

- ``init_ms``: wall time from starting the process (just before ``Popen``) to its first
  ``GET /2018-06-01/runtime/invocation/next`` on a Lambda Runtime API that this script serves (a small
  ``ThreadingHTTPServer`` on 127.0.0.1): process start, tracing set-up, configuration from the environment,
  the AWS SDK configuration and clients, up to the moment the runtime asks for its first event.
- ``rss_mb``: peak resident memory (``VmHWM`` of ``/proc/<pid>/status``, in MiB) once the function has
  handled one event carrying 1,000 instances and asks for the next one.

Each run is a fresh process that handles exactly one event; ``--runs`` runs per function, the medians are
reported (the single runs too). The event must come back as a response: a function error, an init error, a
crash or an implausible result (say filter-managed not finding the 1,000 managed instances) fails that
function, which gets no figure, and the script exits non-zero. Missing a target is reported, not an error.

The inputs are realistic and mostly real: the script starts its own moto server with the project's
extensions (``local-stack/emulator/server.py``, ``FLEET_SIM_EC2_EVENTS=0``), creates the stack with ``stack.build``
(fast) and launches a simulated fleet of 1,000 long-running instances (Amazon Linux, Ubuntu, RHEL, FreeBSD,
Windows; 20 whose install fails) with the simulation's instance profile, so that the simulated SSM agent
lists them as managed. The pipeline then feeds itself, as the install workflow does:

- filter-managed: the 1,000 instance ids;
- group-by-platform: filter-managed's ``managed`` list;
- send-command: group-by-platform's batches (20 SendCommand calls); every run is a new execution against a
  ledger cleared of the previous run's claims, so every run sends;
- check-status: the commands of the last send-command run, once the simulated agent has finished them;
- record-unmanaged: 1,000 unmanaged instances (no instance profile / agent not reporting);
- plan-rollout: the list step of a rollout over the fleet's tag (1,000 running tagged instances: one page);
- evaluate-wave: a wave of 1,000 instances, with the summaries of its 10 chunks;
- start-install: an SQS batch of 1,000 EC2 "running" events (new event ids each run, so each run starts
  an install execution; moto's Step Functions then finds no Lambda endpoint and lets it fail).

The functions get the environment Lambda gives them (``AWS_LAMBDA_*``, ``AWS_LAMBDA_LOG_FORMAT=JSON``, 128 MB),
their ``Environment`` from template.yaml as the local stack resolves it, and ``AWS_ENDPOINT_URL`` with test
credentials. Everything listens on 127.0.0.1; the moto server and every function process are stopped by
their PID, also on Ctrl-C or failure. Logs: target/bench/logs/.

Importable: ``measure(runs=5, build=True) -> dict`` returns what is written to the JSON file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BENCH_DIR = os.path.join(ROOT, "target", "bench")
LOG_DIR = os.path.join(BENCH_DIR, "logs")
DEFAULT_OUT = os.path.join(BENCH_DIR, "functions.json")
EMPTY_HOME = os.path.join(BENCH_DIR, "home")
VENV_PY = os.path.join(ROOT, ".venv", "bin", "python")
PY = VENV_PY if os.path.exists(VENV_PY) else sys.executable

#: Measured in this order: each function's input is built from the responses of the ones before it.
FUNCTIONS = ("filter-managed", "group-by-platform", "send-command", "check-status", "record-unmanaged",
             "plan-rollout", "evaluate-wave", "start-install")
TARGETS = {"init_ms": 15, "rss_mb": 40}
INSTANCES = 1000
MEMORY_SIZE_MB = 128
REGION = "us-east-1"
ACCOUNT = "123456789012"
FLEET_TAG = ("team", "bench-fleet")

RUNTIME_PREFIX = "/2018-06-01/runtime"
NEXT_PATH = RUNTIME_PREFIX + "/invocation/next"
INIT_ERROR_PATH = RUNTIME_PREFIX + "/init/error"

#: (count, fleet-sim:platform, Windows AMI, extra sim tags): 1,000 instances shaped like the write-up's fleet.
FLEET_GROUPS: tuple[tuple[int, str, bool, dict[str, str]], ...] = (
    (380, "Linux|Amazon Linux|2023", False, {}),
    (20, "Linux|Amazon Linux|2023", False, {"fleet-sim:outcome": "Failed"}),
    (200, "Linux|Ubuntu|22.04", False, {}),
    (150, "Linux|Red Hat Enterprise Linux|9.4", False, {}),
    (50, "Linux|FreeBSD|14.1", False, {}),
    (200, "Windows|Microsoft Windows Server 2022 Datacenter|10.0.20348", True, {}),
)

EMULATOR = os.path.join(os.path.dirname(HERE), "emulator")
sys.path.insert(0, EMULATOR)


class BenchError(Exception):
    """A function could not be measured: it failed, or its input could not be built."""


class MeasureFailed(Exception):
    """measure() found functions that failed; ``result`` holds everything measured (the failures included)."""

    def __init__(self, result: dict[str, Any]):
        self.result = result
        failed = ", ".join(f"{n}: {result['functions'][n]['error']}" for n in result["failed"])
        super().__init__(f"{len(result['failed'])} function(s) failed: {failed}")


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _now_rfc3339() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ------------------------------------------------------------------------------------ Lambda Runtime API
@dataclass
class Invocation:
    """One event for one function process, and what the process did with it."""

    request_id: str
    event: bytes
    function_arn: str
    deadline_ms: int
    first_next_at: float | None = None     # perf_counter() of the first GET /next
    event_sent_at: float | None = None
    completed_at: float | None = None
    outcome: str | None = None             # "response" | "error" | "init_error"
    body: bytes = b""
    error_type: str = ""
    next_calls: int = 0
    started: threading.Event = field(default_factory=threading.Event)   # the event was delivered
    finished: threading.Event = field(default_factory=threading.Event)  # response, error or init error posted
    parked: threading.Event = field(default_factory=threading.Event)    # the runtime asks for the next event
    release: threading.Event = field(default_factory=threading.Event)   # lets the parked GET /next go


class _RuntimeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_RuntimeServer"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass   # trailers
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self) -> None:
        now = time.perf_counter()
        api = self.server.api
        inv = api.current
        if self.path != NEXT_PATH or inv is None:
            self._reply(404 if self.path != NEXT_PATH else 500, b'{"errorMessage": "no invocation"}')
            return
        with api.lock:
            first = inv.next_calls == 0
            inv.next_calls += 1
            if first:
                inv.first_next_at = now
        if not first:
            # The event is handled and the runtime waits for the next one: hold it here while the benchmark
            # reads its memory and stops it.
            inv.parked.set()
            inv.release.wait()
            self.close_connection = True
            return
        headers = {
            "Lambda-Runtime-Aws-Request-Id": inv.request_id,
            "Lambda-Runtime-Deadline-Ms": str(inv.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": inv.function_arn,
            "Lambda-Runtime-Trace-Id": f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Sampled=0",
        }
        inv.event_sent_at = time.perf_counter()
        self._reply(200, inv.event, headers)
        inv.started.set()

    def do_POST(self) -> None:
        body = self._body()
        inv = self.server.api.current
        if inv is None:
            self._reply(404, b'{"errorMessage": "no invocation"}')
            return
        base = f"{RUNTIME_PREFIX}/invocation/{inv.request_id}"
        if self.path == base + "/response":
            inv.outcome = "response"
        elif self.path == base + "/error":
            inv.outcome = "error"
        elif self.path == INIT_ERROR_PATH:
            inv.outcome = "init_error"
        else:
            self._reply(404, b'{"errorMessage": "unknown path"}')
            return
        inv.completed_at = time.perf_counter()
        inv.body = body
        inv.error_type = self.headers.get("Lambda-Runtime-Function-Error-Type", "")
        inv.finished.set()
        self._reply(202, b'{"status": "OK"}')


class _RuntimeServer(ThreadingHTTPServer):
    daemon_threads = True
    api: "RuntimeApi"


class RuntimeApi:
    """A Lambda Runtime API on 127.0.0.1 serving one invocation at a time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current: Invocation | None = None
        self.server = _RuntimeServer(("127.0.0.1", 0), _RuntimeHandler)
        self.server.api = self
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="runtime-api", daemon=True)
        self._thread.start()

    def arm(self, event: dict[str, Any], function_arn: str, timeout_s: int) -> Invocation:
        inv = Invocation(request_id=str(uuid.uuid4()), event=json.dumps(event).encode(), function_arn=function_arn,
                         deadline_ms=int(time.time() * 1000) + timeout_s * 1000)
        self.current = inv
        return inv

    def disarm(self, inv: Invocation) -> None:
        inv.release.set()
        if self.current is inv:
            self.current = None

    def close(self) -> None:
        if self.current is not None:
            self.current.release.set()
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------------------- processes
_LIVE: set[subprocess.Popen] = set()


def _stop(proc: subprocess.Popen, grace: float = 0.0) -> None:
    """Stop one process we started, by its PID."""
    if proc.poll() is None:
        if grace:
            proc.terminate()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
        else:
            proc.kill()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass
    _LIVE.discard(proc)


def _stop_all() -> None:
    for proc in list(_LIVE):
        _stop(proc, grace=5)


def _tail(path: str, n: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - n))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _vm_hwm_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise BenchError(f"no VmHWM in /proc/{pid}/status")


def cargo_build() -> None:
    _say("cargo build --release --workspace --bins ...")
    r = subprocess.run(["cargo", "build", "--release", "--workspace", "--bins", "--quiet"], cwd=ROOT,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise SystemExit(f"cargo build failed ({r.returncode}):\n{r.stdout[-4000:]}")


class MotoServer:
    """local-stack/emulator/server.py on a free port of 127.0.0.1, without EC2 events."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = os.path.join(BENCH_DIR, "moto.log")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = dict(os.environ, FLEET_SIM_EC2_EVENTS="0", MOTO_PORT=str(self.port))
        # Nothing listens there: the install executions start-install starts fail instead of reaching any
        # cargo lambda watch that may run on this machine.
        lambda_endpoint = f"http://127.0.0.1:{_free_port()}"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([PY, os.path.join(EMULATOR, "server.py"), "--port", str(self.port),
                                          "--lambda-endpoint", lambda_endpoint],
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=ROOT, env=env)
        _LIVE.add(self.proc)
        deadline = time.time() + 60
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"moto server exited with {self.proc.returncode}:\n{_tail(self.log)}")
            try:
                with urllib.request.urlopen(self.url + "/_fleet/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.time() > deadline:
                raise BenchError(f"moto server not up after 60 s:\n{_tail(self.log)}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc, grace=10)
            self.proc = None


# -------------------------------------------------------------------------------------------- runs
@dataclass
class RunResult:
    init_ms: float
    rss_mb: float
    invoke_ms: float
    response: Any


def _wait(event: threading.Event, proc: subprocess.Popen, timeout: float, what: str, log: str) -> None:
    deadline = time.monotonic() + timeout
    while not event.wait(0.02):
        if proc.poll() is not None and not event.is_set():
            raise BenchError(f"exited with {proc.returncode} before {what}; log {log}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise BenchError(f"no {what} after {timeout:.0f} s; log {log}:\n{_tail(log)}")


def run_once(api: RuntimeApi, binary: str, env: dict[str, str], event: dict[str, Any], function_arn: str,
             timeout_s: int, log: str) -> RunResult:
    """Start the binary, give it one event, read its peak RSS once it asks for the next one, stop it."""
    inv = api.arm(event, function_arn, timeout_s)
    with open(log, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen([binary], env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=BENCH_DIR)
    _LIVE.add(proc)
    try:
        _wait(inv.started, proc, 30, "GET /next", log)
        _wait(inv.finished, proc, max(timeout_s, 30) + 30, "response", log)
        if inv.outcome != "response":
            detail = inv.body.decode(errors="replace")[:2000]
            raise BenchError(f"{inv.outcome} {inv.error_type}: {detail}")
        _wait(inv.parked, proc, 30, "GET /next after the response", log)
        rss = _vm_hwm_mb(proc.pid)
    finally:
        _stop(proc)
        api.disarm(inv)
    assert inv.first_next_at is not None and inv.event_sent_at is not None and inv.completed_at is not None
    try:
        response = json.loads(inv.body) if inv.body else None
    except ValueError as e:
        raise BenchError(f"response is not JSON: {e}: {inv.body[:200]!r}") from e
    return RunResult(init_ms=(inv.first_next_at - t0) * 1000.0, rss_mb=rss,
                     invoke_ms=(inv.completed_at - inv.event_sent_at) * 1000.0, response=response)


# ------------------------------------------------------------------------------------------ inputs
class Scenario:
    """The local stack, the simulated fleet, and each function's event (built from earlier responses)."""

    def __init__(self, moto_url: str) -> None:
        import boto3
        import stack as stack_mod

        self.moto_url = moto_url
        self.info = stack_mod.build(moto_url, None, fast=True, out_dir=os.path.join(BENCH_DIR, "local-stack"))
        self.outputs: dict[str, str] = self.info["outputs"]
        self.params: dict[str, str] = self.info["parameters"]
        kw = dict(endpoint_url=moto_url, region_name=REGION, aws_access_key_id="testing",
                  aws_secret_access_key="testing")
        self.ec2 = boto3.client("ec2", **kw)
        self.ssm = boto3.client("ssm", **kw)
        self.ddb = boto3.client("dynamodb", **kw)
        self.sfn = boto3.client("stepfunctions", **kw)
        self.table = self.outputs["LedgerTableName"]
        self.responses: dict[str, Any] = {}
        self.executions: dict[str, dict[str, str]] = {}
        self.instance_ids = self._launch_fleet()

    # --- set-up ------------------------------------------------------------------------------------
    def function(self, name: str) -> dict[str, Any]:
        return self.info["functions"][name]

    def _launch_fleet(self) -> list[str]:
        images = self.ec2.describe_images(Owners=["amazon"])["Images"]
        linux = next(i["ImageId"] for i in images if "windows" not in (i.get("Platform") or "").lower())
        windows = next((i["ImageId"] for i in images if "windows" in (i.get("Platform") or "").lower()), linux)
        ids: list[str] = []
        for count, platform, is_windows, extra in FLEET_GROUPS:
            tags = {"fleet-sim:existing": "true", "fleet-sim:platform": platform, FLEET_TAG[0]: FLEET_TAG[1],
                    **extra}
            out = self.ec2.run_instances(
                ImageId=windows if is_windows else linux, MinCount=count, MaxCount=count, InstanceType="t3.micro",
                IamInstanceProfile={"Name": self.outputs["SimInstanceProfileName"]},
                TagSpecifications=[{"ResourceType": "instance",
                                    "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}])
            ids += [i["InstanceId"] for i in out["Instances"]]
        if len(ids) != INSTANCES:
            raise BenchError(f"launched {len(ids)} instances, expected {INSTANCES}")
        return ids

    def execution(self, key: str, name: str) -> dict[str, str]:
        """{executionId, executionStartTime} of a (pretend) execution of the stack's state machine `key`."""
        sm = self.outputs[key]
        return {"executionId": sm.replace(":stateMachine:", ":execution:") + ":" + name,
                "executionStartTime": _now_rfc3339()}

    def _clear_claims(self) -> None:
        """Forget the previous send-command run: the fleet's ledger items and every batch lock."""
        keys = list(self.instance_ids)
        kw: dict[str, Any] = {"TableName": self.table, "ProjectionExpression": "instanceId"}
        while True:
            page = self.ddb.scan(**kw)
            keys += [it["instanceId"]["S"] for it in page["Items"] if it["instanceId"]["S"].startswith("batch#")]
            if "LastEvaluatedKey" not in page:
                break
            kw["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        for i in range(0, len(keys), 25):
            requests = [{"DeleteRequest": {"Key": {"instanceId": {"S": k}}}} for k in keys[i:i + 25]]
            while requests:
                out = self.ddb.batch_write_item(RequestItems={self.table: requests})
                requests = out.get("UnprocessedItems", {}).get(self.table, [])

    def _wait_for_commands(self, command_ids: list[str], timeout: float = 120) -> None:
        deadline = time.time() + timeout
        pending = set(command_ids)
        while pending:
            for cid in list(pending):
                cmd = self.ssm.list_commands(CommandId=cid)["Commands"][0]
                if cmd["Status"] not in ("Pending", "InProgress"):
                    pending.discard(cid)
            if pending and time.time() > deadline:
                raise BenchError(f"{len(pending)} command(s) still running after {timeout:.0f} s")
            if pending:
                time.sleep(0.5)

    def _needs(self, name: str) -> Any:
        if name not in self.responses:
            raise BenchError(f"its input is built from {name}'s response, and {name} failed")
        return self.responses[name]

    # --- events ---------------------------------------------------------------------------------------
    def prepare(self, fn: str, run: int) -> None:
        """Called before each run."""
        if fn == "send-command":
            self._clear_claims()
            self.executions[fn] = self.execution("InstallStateMachineArn", f"bench-send-{run}-{uuid.uuid4().hex[:8]}")
        elif fn == "check-status" and run == 0:
            sent = self._needs("send-command")
            self._wait_for_commands([c["commandId"] for c in sent["inFlight"]])

    def event(self, fn: str, run: int) -> dict[str, Any]:
        return getattr(self, "event_" + fn.replace("-", "_"))(run)

    def event_filter_managed(self, run: int) -> dict[str, Any]:
        return {"instanceIds": self.instance_ids,
                "registrationDeadlineSeconds": int(self.params["RegistrationDeadlineSeconds"]),
                **self.execution("InstallStateMachineArn", "bench-filter")}

    def event_group_by_platform(self, run: int) -> dict[str, Any]:
        return {"managed": self._needs("filter-managed")["managed"], "attempt": 1}

    def event_send_command(self, run: int) -> dict[str, Any]:
        return {"batches": self._needs("group-by-platform")["batches"], "inFlight": [], "summary": {},
                **self.executions["send-command"]}

    def event_check_status(self, run: int) -> dict[str, Any]:
        sent = self._needs("send-command")
        return {"commands": sent["inFlight"], "maxAttempts": int(self.params["MaxAttempts"]),
                "summary": sent["summary"], **sent["_execution"]}

    def event_record_unmanaged(self, run: int) -> dict[str, Any]:
        unmanaged = []
        for n in range(INSTANCES):
            iid = f"i-{0x0be000000000000 + n:017x}"
            if n % 5 < 3:
                unmanaged.append({
                    "instanceId": iid, "reasonCode": "NoInstanceProfile", "platform": "Linux/UNIX",
                    "reason": "no IAM instance profile, so the SSM agent cannot register: attach a role with "
                              "AmazonSSMManagedInstanceCore (not registered 900s after launch)"})
            else:
                unmanaged.append({
                    "instanceId": iid, "reasonCode": "AgentNotReporting",
                    "platform": "Windows" if n % 5 == 4 else "Linux/UNIX",
                    "reason": "SSM agent never registered 900s after launch: agent missing or stopped, role lacks "
                              "AmazonSSMManagedInstanceCore, or no route to the SSM endpoints"})
        return {"mode": "record", "unmanaged": unmanaged, "skipped": [], "unrouted": [], "summary": {},
                **self.execution("InstallStateMachineArn", "bench-unmanaged")}

    def event_plan_rollout(self, run: int) -> dict[str, Any]:
        # the rollout's first state, "List Target Instances": 1,000 instances are one DescribeInstances page, so one
        # list invocation reads them all (its targets are kept in the ledger, its cursor and counts returned)
        return {"mode": "list", "rolloutId": "bench-rollout", "tags": [{"key": FLEET_TAG[0], "values": [FLEET_TAG[1]]}],
                "canary": 15, "waveSize": 0, "wavePercent": 30,
                **self.execution("RolloutStateMachineArn", "bench-rollout")}

    def event_evaluate_wave(self, run: int) -> dict[str, Any]:
        rollout = "bench-rollout"
        chunks, outcomes = [], []
        platforms = ("Amazon Linux", "Ubuntu", "RHEL", "FreeBSD", "Windows")
        for c in range(10):
            chunks.append({"targetsKey": f"rollout#{rollout}#w1#c{c}", "instances": 100,
                           "executionName": f"{rollout}-w1-c{c}"})
            by_state: dict[str, int] = {}
            by_platform: dict[str, dict[str, int]] = {}
            by_reason: dict[str, int] = {}
            for n in range(100):
                state, reason = (("failed", "CommandFailed") if n == 0 else ("unmanaged", "AgentNotReporting")
                                 if n == 1 else ("skipped", "OptedOut") if n == 2 else ("installed", None))
                platform = platforms[(c * 100 + n) % len(platforms)]
                by_state[state] = by_state.get(state, 0) + 1
                by_platform.setdefault(platform, {})[state] = by_platform.get(platform, {}).get(state, 0) + 1
                if reason:
                    by_reason[reason] = by_reason.get(reason, 0) + 1
            arn = self.outputs["InstallStateMachineArn"].replace(":stateMachine:", ":execution:")
            outcomes.append({"executionArn": f"{arn}:{rollout}-w1-c{c}",
                             "summary": {"byState": by_state, "byPlatform": by_platform, "byReason": by_reason}})
        canary = {"wave": 0, "label": "canary", "instances": 15, "installed": 15, "failed": 0, "unmanaged": 0,
                  "skipped": 0, "duplicate": 0, "failureRatio": 0.0}
        return {"wave": {"wave": 1, "label": "wave 1", "instances": INSTANCES, "chunks": chunks},
                "outcomes": outcomes, "maxFailureRatio": 0.05, "results": [canary], "wavesTotal": 4}

    def event_start_install(self, run: int) -> dict[str, Any]:
        mapping = next(m for m in self.info["eventSourceMappings"] if m["Function"] == "start-install")
        now_ms = int(time.time() * 1000)
        records = []
        for iid in self.instance_ids:
            body = json.dumps({
                "version": "0", "id": str(uuid.uuid4()), "detail-type": "EC2 Instance State-change Notification",
                "source": "aws.ec2", "account": ACCOUNT, "time": _now_rfc3339()[:19] + "Z", "region": REGION,
                "resources": [f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{iid}"],
                "detail": {"instance-id": iid, "state": "running"}})
            records.append({
                "messageId": str(uuid.uuid4()), "receiptHandle": uuid.uuid4().hex * 4, "body": body,
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": str(now_ms),
                               "SenderId": "AIDAIENQZJOLO23YVJ4VO", "ApproximateFirstReceiveTimestamp": str(now_ms)},
                "messageAttributes": {}, "md5OfBody": hashlib.md5(body.encode()).hexdigest(),
                "eventSource": "aws:sqs", "eventSourceARN": mapping["QueueArn"], "awsRegion": REGION})
        return {"Records": records}

    # --- plausibility of the responses -----------------------------------------------------------
    def accept(self, fn: str, run: int, response: Any) -> None:
        """Check that the function did the work a 1,000-instance event means; keep its response."""
        r = response if isinstance(response, dict) else {}

        def expect(ok: bool, what: str) -> None:
            if not ok:
                raise BenchError(f"implausible response ({what}): {json.dumps(response)[:600]}")

        if fn == "filter-managed":
            expect(len(r.get("managed", [])) == INSTANCES, f"{INSTANCES} managed instances expected")
        elif fn == "group-by-platform":
            n = sum(len(b["instances"]) for b in r.get("batches", []))
            expect(n == INSTANCES and not r.get("skipped"), f"{INSTANCES} instances in batches expected")
        elif fn == "send-command":
            batches = len(self._needs("group-by-platform")["batches"])
            n = sum(len(c["instances"]) for c in r.get("inFlight", []))
            expect(r.get("sent") == batches and n == INSTANCES, f"{batches} commands for {INSTANCES} instances")
            r = dict(r, _execution=self.executions["send-command"])
        elif fn == "check-status":
            s = r.get("summary", {}).get("byState", {})
            n = sum(s.values()) + sum(len(b["instances"]) for b in r.get("retry", []))
            expect(not r.get("inFlight") and n == INSTANCES, f"final outcome or retry for {INSTANCES} instances")
        elif fn == "record-unmanaged":
            expect(r.get("recorded") == INSTANCES, f"{INSTANCES} recorded")
        elif fn == "plan-rollout":
            expect((r.get("listing") or {}).get("targets") == INSTANCES and r.get("more") is False,
                   f"{INSTANCES} targets listed in one invocation")
        elif fn == "evaluate-wave":
            expect(r.get("result", {}).get("instances") == INSTANCES, f"{INSTANCES} instances in the wave")
        elif fn == "start-install":
            expect(r.get("batchItemFailures") == [], "no batch item failures")
        self.responses[fn] = r


# ---------------------------------------------------------------------------------------- measure
def function_env(scenario: Scenario, fn: str, runtime_api: str) -> dict[str, str]:
    """The environment Lambda gives the function, pointed at the local stack."""
    spec = scenario.function(fn)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "AWS_LAMBDA_RUNTIME_API": runtime_api,
        "AWS_LAMBDA_FUNCTION_NAME": fn,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(MEMORY_SIZE_MB),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{fn}",
        "AWS_LAMBDA_LOG_STREAM_NAME": f"{dt.date.today():%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}",
        "AWS_LAMBDA_LOG_FORMAT": "JSON",
        "AWS_LAMBDA_LOG_LEVEL": "INFO",
        "LAMBDA_TASK_ROOT": "/var/task",
        "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "_HANDLER": "bootstrap",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL": scenario.moto_url,
        # an empty home: no ~/.aws/config or credentials of this machine reach the SDK
        "HOME": EMPTY_HOME,
    }
    env.update(spec["env"])
    return env


def _median(xs: list[float]) -> float:
    return round(statistics.median(xs), 1)


def measure(runs: int = 5, build: bool = True, strict: bool = True,
            functions: tuple[str, ...] = FUNCTIONS, progress: Callable[[str], None] = _say) -> dict[str, Any]:
    """Measure every function; return {"functions": {...}, "targets": {...}, "failed": [...], ...}.

    With `strict` (the default) a failed function raises MeasureFailed, whose `result` is the dict.
    """
    if runs < 1:
        raise ValueError("runs must be at least 1")
    os.makedirs(LOG_DIR, exist_ok=True)
    os.makedirs(EMPTY_HOME, exist_ok=True)
    if build:
        cargo_build()
    binaries = {fn: os.path.join(ROOT, "target", "release", fn) for fn in functions}
    missing = [b for b in binaries.values() if not os.access(b, os.X_OK)]
    if missing:
        raise SystemExit(f"missing release binaries (run without --no-build): {missing}")
    result: dict[str, Any] = {"functions": {}, "targets": dict(TARGETS), "failed": [], "runs": runs,
                              "input_instances": INSTANCES, "memory_size_mb": MEMORY_SIZE_MB,
                              "host": {"machine": os.uname().machine, "cpus": os.cpu_count()},
                              "measured_at": _now_rfc3339()}
    moto = MotoServer()
    api = RuntimeApi()
    try:
        progress(f"moto server on {moto.url}, Runtime API on {api.address}")
        moto.start()
        t = time.time()
        scenario = Scenario(moto.url)
        progress(f"stack and fleet of {INSTANCES} instances ready in {time.time() - t:.1f} s")
        for fn in (f for f in FUNCTIONS if f in functions):
            spec = scenario.function(fn)
            runs_out: list[RunResult] = []
            try:
                for run in range(runs):
                    scenario.prepare(fn, run)
                    event = scenario.event(fn, run)
                    log = os.path.join(LOG_DIR, f"{fn}.{run}.log")
                    r = run_once(api, binaries[fn], function_env(scenario, fn, api.address), event, spec["arn"],
                                 int(spec.get("timeout", 60)), log)
                    scenario.accept(fn, run, r.response)
                    runs_out.append(r)
            except BenchError as e:
                result["functions"][fn] = {"error": str(e), "input_instances": INSTANCES}
                result["failed"].append(fn)
                progress(f"FAILED {fn}: {e}")
                continue
            entry = {
                "init_ms": _median([r.init_ms for r in runs_out]),
                "rss_mb": _median([r.rss_mb for r in runs_out]),
                "init_ms_runs": [round(r.init_ms, 1) for r in runs_out],
                "rss_mb_runs": [round(r.rss_mb, 1) for r in runs_out],
                "invoke_ms": _median([r.invoke_ms for r in runs_out]),
                "input_instances": INSTANCES,
            }
            result["functions"][fn] = entry
            progress(f"{fn:18} init {entry['init_ms']:6.1f} ms  rss {entry['rss_mb']:5.1f} MB  "
                     f"invoke {entry['invoke_ms']:7.1f} ms")
    finally:
        _stop_all()
        moto.stop()
        api.close()
    result["over_target"] = sorted(
        f"{fn}.{k}" for fn, e in result["functions"].items() for k, limit in TARGETS.items()
        if k in e and e[k] > limit)
    if strict and result["failed"]:
        raise MeasureFailed(result)
    return result


def table(result: dict[str, Any]) -> str:
    t = result["targets"]
    lines = [f"{'function':18} {'init_ms':>8} {'rss_mb':>7}  {'init_ms runs':32} rss_mb runs",
             f"{'(target)':18} {'<=' + str(t['init_ms']):>8} {'<=' + str(t['rss_mb']):>7}"]
    for fn, e in result["functions"].items():
        if "error" in e:
            lines.append(f"{fn:18} {'FAILED':>8}  {e['error'].splitlines()[0][:100]}")
            continue
        flag = lambda k: "*" if e[k] > t[k] else " "  # noqa: E731
        lines.append(f"{fn:18} {e['init_ms']:8.1f}{flag('init_ms')}{e['rss_mb']:7.1f}{flag('rss_mb')} "
                     f"{' '.join(f'{x:.1f}' for x in e['init_ms_runs']):32} "
                     f"{' '.join(f'{x:.1f}' for x in e['rss_mb_runs'])}")
    if result.get("over_target"):
        lines.append("* over target: " + ", ".join(result["over_target"]))
    return "\n".join(lines)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="fresh processes per function (default 5)")
    ap.add_argument("--no-build", action="store_true", help="use target/release as it is")
    ap.add_argument("--out", default=DEFAULT_OUT, help="JSON output (default target/bench/functions.json)")
    ap.add_argument("--only", action="append", choices=FUNCTIONS, help="measure only this function (repeatable; "
                    "the functions whose responses its input is built from run too)")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)   # also when started as a background job
    functions = FUNCTIONS
    if args.only:
        last = max(FUNCTIONS.index(f) for f in args.only)
        deps = {"group-by-platform": ["filter-managed"],
                "send-command": ["filter-managed", "group-by-platform"],
                "check-status": ["filter-managed", "group-by-platform", "send-command"]}
        wanted = set(args.only) | {d for f in args.only for d in deps.get(f, [])}
        functions = tuple(f for f in FUNCTIONS[:last + 1] if f in wanted)
    try:
        result = measure(args.runs, build=not args.no_build, strict=False, functions=functions)
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(table(result))
    print(f"written to {os.path.relpath(args.out, os.getcwd())}")
    if result["failed"]:
        _say(f"FAILED: {', '.join(result['failed'])} (see {os.path.relpath(LOG_DIR, os.getcwd())})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
