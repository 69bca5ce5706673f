"""Event-driven completion on the local stack: the install workflow waits for its commands on a task token,
and SSM's completion events (EventBridge -> await-commands) resume it; a lost event is covered by the fallback
check, duplicates and unknown commands change nothing.

The simulated agent puts SSM's Run Command events on the default bus as SSM does (both kinds); the control at
/_fleet/events/ssm loses, duplicates or injects them.
"""
from __future__ import annotations

import json
import time
import uuid

import pytest
import requests

pytestmark = pytest.mark.e2e

WINDOWS = "Windows|Microsoft Windows Server 2022 Datacenter|10.0.20348"


def ssm_events(stack, method: str = "GET", body: dict | None = None) -> dict:
    r = requests.request(method, f"{stack.endpoint}/_fleet/events/ssm", json=body, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def history(stack, arn: str) -> list[dict]:
    events, kw = [], {"executionArn": arn, "maxResults": 1000}
    while True:
        page = stack.sfn.get_execution_history(**kw)
        events += page["events"]
        if not page.get("nextToken"):
            return events
        kw["nextToken"] = page["nextToken"]


def entered(events: list[dict], state: str) -> int:
    return sum(1 for e in events if e["type"].endswith("StateEntered") and e["stateEnteredEventDetails"]["name"] == state)


def waits(events: list[dict]) -> list[dict]:
    """How each Wait For Commands ended: {"resumedBy": ...} from SendTaskSuccess, or {"timedOut": True}."""
    out = []
    for e in events:
        if e["type"] == "TaskSucceeded" and e["taskSucceededEventDetails"].get("resourceType") == "lambda" \
                and "resumedBy" in (e["taskSucceededEventDetails"].get("output") or ""):
            out.append(json.loads(e["taskSucceededEventDetails"]["output"]))
        elif e["type"] == "TaskTimedOut":
            out.append({"timedOut": True})
    return out


def start_install(stack, ids: list[str]) -> str:
    return stack.sfn.start_execution(stateMachineArn=stack.outputs["InstallStateMachineArn"],
                                     name=f"events-{uuid.uuid4().hex[:12]}",
                                     input=json.dumps({"instanceIds": ids}))["executionArn"]


def invocations(stack, function: str = "await-commands") -> int:
    return stack.api_calls().get(f"lambda.Invoke:{function}", 0)


def test_a_burst_completes_on_completion_events_alone(stack):
    ssm_events(stack, "DELETE")
    since = time.time() - 1
    linux = stack.launch(30, {"team": "events-burst", "fleet-sim:install-seconds": "3"})
    windows = stack.launch(10, {"team": "events-burst", "fleet-sim:install-seconds": "3",
                                "fleet-sim:platform": WINDOWS})
    ids = linux + windows       # their EC2 running events start the install
    executions = stack.wait_for_executions(1, 300, since=since)
    ours = [e for e in executions if e["startDate"].timestamp() >= since]
    assert all(e["status"] == "SUCCEEDED" for e in ours), ours
    ledger = stack.ledger()
    assert {ledger[i]["state"] for i in ids} == {"installed"}, {i: ledger[i].get("reasonCode") for i in ids}
    for e in ours:
        h = history(stack, e["executionArn"])
        ended = waits(h)
        # every wait was resumed by SSM's completion events (or found its commands ended at registration), none
        # by the fallback bound; and each wait is followed by exactly one status check, which collects the
        # final results
        assert ended and not any(w.get("timedOut") for w in ended), ended
        assert any(w["resumedBy"] == "event" for w in ended), ended
        assert entered(h, "Check Command Status") == entered(h, "Wait For Commands") == len(ended)
    seen = ssm_events(stack)
    assert seen["emitted"].get("EC2 Command Status-change Notification", 0) >= 2
    assert seen["emitted"].get("EC2 Command Invocation Status-change Notification", 0) >= len(ids)
    assert invocations(stack) > 0


def test_lost_completion_events_of_a_batch_end_through_the_fallback(stack):
    ssm_events(stack, "DELETE")
    linux = stack.launch(6, {"team": "events-lost", "fleet-sim:existing": "true", "fleet-sim:install-seconds": "2"})
    windows = stack.launch(4, {"team": "events-lost", "fleet-sim:existing": "true", "fleet-sim:install-seconds": "2",
                               "fleet-sim:platform": WINDOWS})
    broken = stack.launch(1, {"team": "events-lost", "fleet-sim:existing": "true", "fleet-sim:platform": WINDOWS,
                              "fleet-sim:exit-code": "5"})
    lost = windows + broken
    # every event of the Windows batch's commands is lost (best-effort delivery)
    ssm_events(stack, "POST", {"drop": {"instanceIds": lost}})
    t0 = time.time()
    arn = start_install(stack, linux + lost)
    d = stack.wait_for_execution(arn, 400)
    took = time.time() - t0
    assert d["status"] == "SUCCEEDED", d
    h = history(stack, arn)
    ended = waits(h)
    # the wait timed out into the one fallback check (the Linux batch's event alone cannot close it)
    assert {"timedOut": True} in ended, ended
    assert entered(h, "Check Command Status") == entered(h, "Wait For Commands")
    assert took >= 55, took   # CommandDeliveryTimeoutSeconds 30 + CommandExecutionTimeoutSeconds 20 + grace 5 (local)
    ledger = stack.ledger()
    assert {ledger[i]["state"] for i in linux + windows} == {"installed"}
    assert ledger[broken[0]]["state"] == "failed"
    assert "exit code 5" in ledger[broken[0]]["reason"], ledger[broken[0]]
    seen = ssm_events(stack)
    assert seen["dropped"].get("EC2 Command Status-change Notification", 0) >= 1
    ssm_events(stack, "DELETE")


def test_duplicate_late_and_unknown_command_events_change_nothing(stack):
    ssm_events(stack, "DELETE")
    ids = stack.launch(5, {"team": "events-dup", "fleet-sim:existing": "true", "fleet-sim:install-seconds": "2"})
    # every event of these commands is delivered twice (at least once, as EventBridge promises)
    ssm_events(stack, "POST", {"duplicate": {"instanceIds": ids}})
    arn = start_install(stack, ids)
    d = stack.wait_for_execution(arn, 120)
    assert d["status"] == "SUCCEEDED", d
    h = history(stack, arn)
    assert not any(w.get("timedOut") for w in waits(h))
    assert entered(h, "Check Command Status") == entered(h, "Wait For Commands")
    assert ssm_events(stack)["duplicated"].get("EC2 Command Status-change Notification", 0) >= 1
    ledger_before = {i: stack.ledger()[i] for i in ids}
    executions_before = {e["executionArn"]: e["status"] for e in stack.executions()}
    command = stack.commands_for(ids[0])[0]
    calls_before = stack.api_calls()
    # a late duplicate of the finished command, and commands nobody sent through fleet-install
    ssm_events(stack, "POST", {"emit": {"commandId": command["CommandId"], "status": "Success",
                                        "documentName": command["DocumentName"]}})
    for status in ("Success", "Failed"):
        ssm_events(stack, "POST", {"emit": {"commandId": str(uuid.uuid4()), "status": status}})
    deadline = time.time() + 30
    while time.time() < deadline and invocations(stack) < calls_before.get("lambda.Invoke:await-commands", 0) + 3:
        time.sleep(0.5)
    calls = stack.api_calls()
    assert calls.get("lambda.Invoke:await-commands", 0) >= calls_before.get("lambda.Invoke:await-commands", 0) + 3
    # nothing resumed, nothing written, no execution started or changed
    assert calls.get("stepfunctions.SendTaskSuccess", 0) == calls_before.get("stepfunctions.SendTaskSuccess", 0)
    assert {i: stack.ledger()[i] for i in ids} == ledger_before
    assert {e["executionArn"]: e["status"] for e in stack.executions()} == executions_before
    ssm_events(stack, "DELETE")
