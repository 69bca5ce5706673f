"""SSM Run Command events on EventBridge (moto_ext.ssm_events) and EventBridge rule targets that are Lambda
functions (moto_ext.events_lambda), against a real extended moto server."""

import datetime
import json
import re
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from test_drift_sim import control
from test_ssm_sim import env, final, wait_invocations  # noqa: F401

SHELL = "AWS-RunShellScript"
COMMAND = "EC2 Command Status-change Notification"
INVOCATION = "EC2 Command Invocation Status-change Notification"
ACCOUNT, REGION = "123456789012", "us-east-1"
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
MS_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
EVENT_KEYS = {"version", "id", "detail-type", "source", "account", "time", "region", "resources", "detail"}


def arn(iid):
    return f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{iid}"


def epoch(text):
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def send(env, ids, **kw):
    kw.setdefault("MaxErrors", "100%")
    return env.ssm.send_command(InstanceIds=ids, DocumentName=SHELL, Parameters={"commands": ["echo hi"]},
                                **kw)["Command"]["CommandId"]


class Inbox:
    """A queue behind a rule on aws.ssm (or `pattern`): every event received, in order."""

    def __init__(self, env, name="ssm-events", pattern=None, extra_targets=()):
        self.env = env
        self.url = env.sqs.create_queue(QueueName=name)["QueueUrl"]
        queue_arn = env.sqs.get_queue_attributes(QueueUrl=self.url,
                                                  AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        env.events.put_rule(Name=name, EventPattern=json.dumps(pattern or {"source": ["aws.ssm"]}))
        env.events.put_targets(Rule=name, Targets=[{"Id": "q", "Arn": queue_arn}, *extra_targets])
        self.events = []

    def drain(self):
        while True:
            msgs = self.env.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10).get("Messages") or []
            if not msgs:
                return self.events
            for m in msgs:
                self.events.append(json.loads(m["Body"]))
                self.env.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=m["ReceiptHandle"])

    def of(self, cid):
        return [e for e in self.drain() if e["detail"]["command-id"] == cid]

    def until(self, cid, done, timeout=10):
        deadline = time.time() + timeout
        while True:
            got = self.of(cid)
            if done(got):
                return got
            if time.time() > deadline:
                raise AssertionError(f"timeout; got {summary(got)}")
            time.sleep(0.05)


def summary(events):
    """(kind, instance or None, status) for each event, in order."""
    return [("command" if e["detail-type"] == COMMAND else "invocation", e["detail"].get("instance-id"),
             e["detail"]["status"]) for e in events]


def command_status(events):
    return [s for kind, _, s in summary(events) if kind == "command"]


def terminal_command(events):
    return any(s not in ("InProgress",) for s in command_status(events))


def events_control(env, method, body=None):
    return control(env, method, "/_fleet/events/ssm", body)


def recent_of(env, cid):
    status, out = events_control(env, "GET")
    assert status == 200, out
    return [(r["detail-type"], r.get("instance-id"), r["status"]) for r in out["recent"] if r["command-id"] == cid]


def api_status(env, cid):
    return env.ssm.list_commands(CommandId=cid)["Commands"][0]["Status"]


def api_invocations(env, cid):
    return {i["InstanceId"]: i for i in env.ssm.list_command_invocations(CommandId=cid)["CommandInvocations"]}


# ---------------------------------------------------------------------------------- 1. what SSM puts
def test_a_command_that_succeeds(env):
    inbox = Inbox(env)
    a, b = env.launch(2, run_seconds=1)
    cid = send(env, [a, b])
    got = inbox.until(cid, terminal_command)
    assert api_status(env, cid) == "Success"      # the terminal event came once the API says so
    assert sorted(summary(got)) == sorted([
        ("command", None, "InProgress"), ("invocation", a, "InProgress"), ("invocation", b, "InProgress"),
        ("invocation", a, "Success"), ("invocation", b, "Success"), ("command", None, "Success")])
    # the order the simulation put them in: the command's InProgress first, each invocation's InProgress before
    # its end, the command's terminal event after the invocation events that led to it
    order = recent_of(env, cid)
    assert order[0] == (COMMAND, None, "InProgress") and order[-1] == (COMMAND, None, "Success")
    for iid in (a, b):
        assert order.index((INVOCATION, iid, "InProgress")) < order.index((INVOCATION, iid, "Success"))

    cmd = env.ssm.list_commands(CommandId=cid)["Commands"][0]
    for e in got:
        assert set(e) == EVENT_KEYS
        assert (e["version"], e["source"], e["account"], e["region"]) == ("0", "aws.ssm", ACCOUNT, REGION)
        assert TIME.match(e["time"]) and e["id"]
        d = e["detail"]
        assert (d["command-id"], d["document-name"]) == (cid, SHELL)
        assert MS_TIME.match(d["requested-date-time"])
        assert abs(epoch(d["requested-date-time"]) - cmd["RequestedDateTime"].timestamp()) < 0.001
        if e["detail-type"] == COMMAND:
            assert set(d) == {"command-id", "document-name", "expire-after", "parameters", "requested-date-time",
                              "status"}
            assert sorted(e["resources"]) == sorted([arn(a), arn(b)])
            assert d["parameters"] == {"commands": ["echo hi"]}
            assert MS_TIME.match(d["expire-after"])
            assert abs(epoch(d["expire-after"]) - epoch(d["requested-date-time"]) - 3600) < 0.002
        else:
            assert set(d) == {"command-id", "document-name", "instance-id", "requested-date-time", "status"}
            assert e["resources"] == [arn(d["instance-id"])]
    # emitted within about 0.2 s of the change the API shows
    status, out = events_control(env, "GET")
    put_at = {(r["detail-type"], r.get("instance-id"), r["status"]): r["time"] for r in out["recent"]
              if r["command-id"] == cid}
    for iid in (a, b):
        inv = env.ssm.get_command_invocation(CommandId=cid, InstanceId=iid)
        # (about 0.2 s; a looser bound here for a busy machine)
        assert 0 <= put_at[(INVOCATION, iid, "Success")] - epoch(inv["ExecutionEndDateTime"]) < 1.0
        assert 0 <= put_at[(INVOCATION, iid, "InProgress")] - epoch(inv["ExecutionStartDateTime"]) < 1.0
    assert out["emitted"] == {COMMAND: 2, INVOCATION: 4} and out["dropped"] == {} and out["duplicated"] == {}


def test_a_command_that_fails_on_one_instance(env):
    inbox = Inbox(env)
    ok = env.launch(1, run_seconds=1)[0]
    bad = env.launch(1, run_seconds=1, run_outcome="Failed")[0]
    cid = send(env, [ok, bad], MaxErrors="0")
    got = inbox.until(cid, terminal_command)
    invs = api_invocations(env, cid)
    assert (invs[ok]["Status"], invs[bad]["Status"], api_status(env, cid)) == ("Success", "Failed", "Failed")
    assert sorted(summary(got)) == sorted([
        ("command", None, "InProgress"), ("invocation", ok, "InProgress"), ("invocation", bad, "InProgress"),
        ("invocation", ok, "Success"), ("invocation", bad, "Failed"), ("command", None, "Failed")])
    assert recent_of(env, cid)[-1] == (COMMAND, None, "Failed")


def test_a_cancelled_command(env):
    inbox = Inbox(env)
    a, b = env.launch(2, run_seconds=30)
    cid = send(env, [a, b])
    inbox.until(cid, lambda got: sum(1 for k, _, s in summary(got) if k == "invocation" and s == "InProgress") == 2)
    cancelled = time.time()
    env.ssm.cancel_command(CommandId=cid)
    got = inbox.until(cid, terminal_command)
    assert time.time() - cancelled < 1.5
    assert api_status(env, cid) == "Cancelled"
    assert {i["Status"] for i in api_invocations(env, cid).values()} == {"Cancelled"}
    # the user guide's word for it in both event types: Canceled (the API says Cancelled)
    assert summary(got)[-3:-1] in ([("invocation", a, "Canceled"), ("invocation", b, "Canceled")],
                                   [("invocation", b, "Canceled"), ("invocation", a, "Canceled")])
    assert summary(got)[-1] == ("command", None, "Canceled")
    assert len(got) == 6


def test_an_undeliverable_instance(env):
    inbox = Inbox(env)
    ok = env.launch(1, run_seconds=1)[0]
    offline = env.launch(1, run_seconds=1, run_outcome="Undeliverable")[0]
    cid = send(env, [ok, offline])
    got = inbox.until(cid, terminal_command)
    invs = {i["InstanceId"]: i for i in env.ssm.list_command_invocations(CommandId=cid)["CommandInvocations"]}
    assert (invs[offline]["Status"], invs[offline]["StatusDetails"]) == ("Failed", "Undeliverable")
    # never delivered: no InProgress, only its final status, as the API has it
    assert [(k, s) for k, i, s in summary(got) if i == offline] == [("invocation", "Failed")]
    assert [(k, s) for k, i, s in summary(got) if i == ok] == [("invocation", "InProgress"), ("invocation", "Success")]
    assert command_status(got) == ["InProgress", api_status(env, cid)]


# ------------------------------------------------------------------------------------- 2. the control
def test_drop_and_duplicate(env):
    inbox = Inbox(env)
    x, y, z = (env.launch(1, run_seconds=1)[0] for _ in range(3))
    assert events_control(env, "POST", {"drop": {"instanceIds": [x]}})[0] == 200
    status, out = events_control(env, "POST", {"duplicate": {"instanceIds": [z]}})
    assert status == 200 and (out["drop"], out["duplicate"]) == ([x], [z])
    lost = send(env, [x, y])           # carries a dropped instance: all its events are lost
    kept = send(env, [y])
    twice = send(env, [z])
    for cid in (lost, kept, twice):
        wait_invocations(env, cid, final)
    inbox.until(kept, terminal_command)
    inbox.until(twice, lambda got: command_status(got).count("Success") == 2)
    time.sleep(0.5)
    assert inbox.of(lost) == []
    assert len(inbox.of(kept)) == 4
    doubled = summary(inbox.of(twice))
    assert sorted(doubled) == sorted(2 * [("command", None, "InProgress"), ("invocation", z, "InProgress"),
                                          ("invocation", z, "Success"), ("command", None, "Success")])
    status, out = events_control(env, "GET")
    assert out["dropped"] == {COMMAND: 2, INVOCATION: 4}
    assert out["duplicated"] == {COMMAND: 2, INVOCATION: 2}
    assert out["emitted"] == {COMMAND: 2 + 4, INVOCATION: 2 + 4}
    assert not [r for r in out["recent"] if r["command-id"] == lost]
    status, out = events_control(env, "DELETE")
    assert status == 200 and out["drop"] == out["duplicate"] == [] and out["emitted"] == {} and out["recent"] == []
    again = send(env, [x])             # no rule any more
    assert command_status(inbox.until(again, terminal_command)) == ["InProgress", "Success"]


def test_emit_puts_one_event_for_any_command(env):
    inbox = Inbox(env)
    nobody = "11111111-2222-3333-4444-555555555555"
    status, out = events_control(env, "POST", {"emit": {"commandId": nobody, "status": "Success"}})
    assert status == 200 and out["injected"] == {COMMAND: 1}
    status, _ = events_control(env, "POST", {"emit": {"commandId": nobody, "status": "Failed",
                                                       "instanceId": "i-0123456789abcdef0",
                                                       "documentName": "fleet-install-linux"}})
    assert status == 200
    got = inbox.until(nobody, lambda got: len(got) == 2)
    assert summary(got) == [("command", None, "Success"), ("invocation", "i-0123456789abcdef0", "Failed")]
    assert (got[0]["detail"]["document-name"], got[0]["resources"], got[0]["detail"]["parameters"]) == (SHELL, [], {})
    assert got[1]["detail"]["document-name"] == "fleet-install-linux"
    assert got[1]["resources"] == [arn("i-0123456789abcdef0")]

    # a late duplicate of a known command's event: its document and request time; never lost, even when dropped
    a = env.launch(1, run_seconds=0.2)[0]
    cid = send(env, [a])
    first = inbox.until(cid, terminal_command)
    events_control(env, "POST", {"drop": {"instanceIds": [a]}})
    assert events_control(env, "POST", {"emit": {"commandId": cid, "status": "Success", "instanceId": a}})[0] == 200
    late = inbox.until(cid, lambda got: len(got) == len(first) + 1)[-1]
    original = next(e for e in first if e["detail"].get("instance-id") == a and e["detail"]["status"] == "Success")
    assert late["detail"] == original["detail"] and late["resources"] == original["resources"]
    assert late["id"] != original["id"]


BAD_BODIES = [
    ({}, "needs"),
    ({"bogus": 1}, "unknown key"),
    ({"drop": ["i-1"]}, "instanceIds"),
    ({"drop": {"instanceIds": []}}, "instanceIds"),
    ({"duplicate": {"instanceIds": [1]}}, "instanceIds"),
    ({"emit": {"status": "Success"}}, "commandId"),
    ({"emit": {"commandId": "c", "status": "Done"}}, "status"),
    ({"emit": {"commandId": "c", "status": "Success", "instanceId": ""}}, "instanceId"),
    ({"emit": {"commandId": "c", "status": "Success", "extra": 1}}, "unknown key"),
    ({"drop": {"instanceIds": ["i-1"]}, "emit": {"commandId": "c"}}, "status"),
    ([1], "object"),
]


def test_control_refuses_bad_input_and_reset_clears_it(aws):
    for body, message in BAD_BODIES:
        status, out = events_control(aws, "POST", body)
        assert status == 400 and message in out["error"], (body, out)
    status, out = events_control(aws, "GET")
    assert out["drop"] == [] and out["injected"] == {} and out["enabled"] is True    # nothing applied
    assert events_control(aws, "PUT", {})[0] == 404
    rules = {"drop": {"instanceIds": ["i-1"]}, "duplicate": {"instanceIds": ["i-2"]}}
    assert events_control(aws, "POST", rules)[0] == 200
    urllib.request.urlopen(urllib.request.Request(aws.url + "/moto-api/reset", method="POST")).read()
    status, out = events_control(aws, "GET")
    assert (out["drop"], out["duplicate"]) == ([], [])     # the state lives on the SSM backend


def test_disabled_by_environment(monkeypatch):
    from moto_ext import ssm_events

    monkeypatch.setenv("FLEET_SIM_SSM_EVENTS", "0")
    assert not ssm_events.enabled()
    ssm_events.schedule(object(), object())      # returns before looking at anything
    monkeypatch.setenv("FLEET_SIM_SSM_EVENTS", "1")
    assert ssm_events.enabled()


# ---------------------------------------------------------------------------------- 3. Lambda targets
class Functions:
    """Tiny Lambda functions on 127.0.0.1: "ok" answers 200, "fail" a handler error (HTTP 500 as cargo lambda
    watch answers), "flaky" first 200 with X-Amz-Function-Error then 200, "slow" takes 1.5 s."""

    def __init__(self, prefix):
        self.prefix = prefix
        self.calls: dict[str, list] = {}
        self.lock = threading.Lock()
        functions = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                name = self.path.split("/functions/", 1)[1].split("/", 1)[0]
                with functions.lock:
                    calls = functions.calls.setdefault(name, [])
                    calls.append((time.time(), json.loads(body), threading.current_thread().name))
                    n = len(calls)
                kind = name[len(functions.prefix):]
                code, headers, out = 200, {}, {}
                if kind == "fail":
                    code, out = 500, {"errorType": "Boom", "errorMessage": "always"}
                elif kind == "flaky" and n == 1:
                    headers, out = {"X-Amz-Function-Error": "Unhandled"}, {"errorType": "Once", "errorMessage": "x"}
                elif kind == "slow":
                    time.sleep(1.5)
                data = json.dumps(out).encode()
                self.send_response(code)
                for k, v in {"Content-Type": "application/json", "Content-Length": str(len(data)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def arn(self, kind):
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.prefix}{kind}"

    def of(self, kind):
        with self.lock:
            return list(self.calls.get(self.prefix + kind, []))

    def wait(self, kind, n, timeout=10):
        deadline = time.time() + timeout
        while len(self.of(kind)) < n:
            if time.time() > deadline:
                raise AssertionError(f"{kind}: {len(self.of(kind))} calls, wanted {n}")
            time.sleep(0.05)
        return self.of(kind)


@pytest.fixture
def functions(env):
    f = Functions(f"ssm-events-test-{int(time.time() * 1000)}-")
    try:
        names = {f.prefix + k: f.url for k in ("ok", "shape", "fail", "flaky", "slow")}
        status, out = control(env, "POST", "/_fleet/lambda", {"endpoints": names})
        assert status == 200, out
        yield f
    finally:
        f.server.shutdown()
        f.server.server_close()


def api_calls(env):
    return json.loads(urllib.request.urlopen(env.url + "/_fleet/api-calls").read())


def test_lambda_target_receives_the_events_asynchronously(env, functions):
    inbox = Inbox(env, extra_targets=[
        {"Id": "fn", "Arn": functions.arn("ok")},
        {"Id": "shape", "Arn": functions.arn("shape"), "InputTransformer": {
            "InputPathsMap": {"s": "$.detail.status", "c": "$.detail.command-id"},
            "InputTemplate": '{"status": "<s>", "command": "<c>"}'}}])
    a = env.launch(1, run_seconds=1)[0]
    cid = send(env, [a])
    queued = inbox.until(cid, terminal_command)
    calls = functions.wait("ok", 4)
    bodies = [body for _, body, _ in calls]
    # the same events as the queue's (another target of the same rule), each delivered once
    def canonical(events):
        return sorted(json.dumps(e, sort_keys=True) for e in events)

    assert canonical(bodies) == canonical(queued)
    assert all(TIME.match(b["time"]) and set(b) == EVENT_KEYS for b in bodies)
    shaped = [body for _, body, _ in functions.wait("shape", 4)]
    assert sorted(b["status"] for b in shaped) == ["InProgress", "InProgress", "Success", "Success"]
    assert {b["command"] for b in shaped} == {cid}
    time.sleep(0.3)
    counts = api_calls(env)
    assert counts[f"lambda.Invoke:{functions.prefix}ok"] == 4
    assert f"lambda.DurationMs:{functions.prefix}ok" in counts

    # the caller that puts the event never waits for the function
    Inbox(env, name="slow", pattern={"source": ["aws.ssm"], "detail": {"command-id": ["slow-1"]}},
          extra_targets=[{"Id": "fn", "Arn": functions.arn("slow")}])
    started = time.time()
    assert events_control(env, "POST", {"emit": {"commandId": "slow-1", "status": "Success"}})[0] == 200
    assert time.time() - started < 1.0
    functions.wait("slow", 1)


def test_lambda_function_error_is_retried_twice_then_dropped(env, functions):
    for kind in ("fail", "flaky"):
        Inbox(env, name=kind, pattern={"source": ["aws.ssm"], "detail": {"command-id": [f"{kind}-1"]}},
              extra_targets=[{"Id": "fn", "Arn": functions.arn(kind)}])
    for kind in ("fail", "flaky"):
        assert events_control(env, "POST", {"emit": {"commandId": f"{kind}-1", "status": "Failed"}})[0] == 200
    calls = functions.wait("fail", 3, timeout=15)
    times = [t for t, _, _ in calls]
    assert times[1] - times[0] >= 0.9 and times[2] - times[1] >= 1.9     # the local retry delays: 1 s, then 2 s
    assert all(body == calls[0][1] for _, body, _ in calls)              # the same event each time
    assert len(functions.wait("flaky", 2)) == 2                          # a function error in the header: retried
    time.sleep(2.5)
    assert len(functions.of("fail")) == 3 and len(functions.of("flaky")) == 2   # then dropped / done
    counts = api_calls(env)
    assert counts[f"lambda.Invoke:{functions.prefix}fail"] == 3
    assert counts[f"lambda.Invoke:{functions.prefix}flaky"] == 2
