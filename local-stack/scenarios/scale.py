"""Measurements over Step Functions executions, and the 100,000-target rollout on the local stack.

`history_figures(sfn, arn)` reads one execution's history: its events, its state transitions (what Step Functions
bills: every state entered), and the largest payload it carried (any input, output or parameters in the history,
in UTF-8 bytes). `list_figures(events)` reads a rollout's listing from its history: each "List Target Instances"
invocation's output (pages read, the most it may read, the cursor and counts).

`rollout_at_scale(stack, targets)` runs the real rollout workflow (statemachine/rollout.asl.json with the real
plan-rollout and evaluate-wave functions) over a fleet that exists only in the emulator's EC2, with installs
simulated instantly: each chunk's install execution is a two-state stand-in that reads the chunk's instance ids
from the ledger (the same item the real install workflow reads) and reports them installed, in a summary of the
install workflow's shape. The payloads and histories of the real install workflow depend on the chunk size (at most
1,000 instances), not on the rollout's size; `make bench` measures them on a rollout with real installs.

`sweep_at_scale(stack)` runs the real sweep workflow (statemachine/sweep.asl.json with the real sweep function)
over every running instance of the emulator's account, each chunk's install execution the same instant stand-in.
`sweep_page_figures(events)` reads from a sweep's history the pages each "List Running Instances" and "Find Gone
Instances" invocation read (the `pages` of its output).
"""

from __future__ import annotations

import json
import os
import time

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: Fields of history event details that carry a payload.
PAYLOAD_FIELDS = ("input", "output", "parameters", "cause")


def _all_pages(call, key: str, **kw) -> list[dict]:
    """Every item of a paginated Step Functions list (nextToken / maxResults 1000)."""
    out, token = [], None
    while True:
        page = call(**kw, maxResults=1000, **({"nextToken": token} if token else {}))
        out += page[key]
        token = page.get("nextToken")
        if not token:
            return out


def history(sfn, arn: str) -> list[dict]:
    return _all_pages(sfn.get_execution_history, "events", executionArn=arn)


def history_figures(sfn, arn: str, events: list[dict] | None = None) -> dict:
    events = history(sfn, arn) if events is None else events
    largest, where = 0, None
    for e in events:
        for k, details in e.items():
            if not k.endswith("EventDetails") or not isinstance(details, dict):
                continue
            for field in PAYLOAD_FIELDS:
                value = details.get(field)
                if isinstance(value, str) and len(value.encode()) > largest:
                    largest, where = len(value.encode()), f"{e['type']} {details.get('name') or ''}".strip()
    entered: dict[str, int] = {}
    for e in events:
        if e["type"].endswith("StateEntered"):
            name = e.get("stateEnteredEventDetails", {}).get("name", "?")
            entered[name] = entered.get(name, 0) + 1
    return {
        "events": len(events),
        "transitions": sum(entered.values()),
        "transitionsByState": entered,
        "maxPayloadBytes": largest,
        "maxPayloadAt": where,
    }


#: The rollout workflow's list state (statemachine/rollout.asl.json).
LIST_STATE = "List Target Instances"


def list_figures(events: list[dict]) -> dict:
    """The listing of a rollout, from its history: one entry per "List Target Instances" invocation that succeeded
    (its output: pagesRead, maxPages, more, listing), and the seconds from the first list state entered to the last
    one exited."""
    outputs, entered, exited = [], [], []
    for e in events:
        if e["type"] == "TaskStateEntered" and e["stateEnteredEventDetails"]["name"] == LIST_STATE:
            entered.append(e["timestamp"])
        if e["type"] == "TaskStateExited" and e["stateExitedEventDetails"]["name"] == LIST_STATE:
            exited.append(e["timestamp"])
            out = json.loads(e["stateExitedEventDetails"].get("output") or "{}")
            if "pagesRead" in out:
                outputs.append(out)
    pages_read = [o["pagesRead"] for o in outputs]
    last = outputs[-1]["listing"] if outputs else {}
    return {
        "listInvocations": len(outputs),
        "listPagesRead": pages_read,
        "listPages": last.get("pages"),
        "listMaxPages": max((o["maxPages"] for o in outputs), default=None),
        "maxListPagesPerInvocation": max(pages_read, default=None),
        "listSeconds": round((max(exited) - min(entered)).total_seconds(), 1) if entered and exited else None,
    }


def launch_fleet(endpoint: str, count: int, tags: dict[str, str], profile: str | None = None) -> list[str]:
    body = {"count": count, "tags": tags}
    if profile:
        body["instanceProfileName"] = profile
    r = requests.post(f"{endpoint}/_fleet/ec2/run-instances", json=body, timeout=1800)
    if r.status_code != 200:
        raise RuntimeError(f"bulk launch failed: HTTP {r.status_code} {r.text[:500]}")
    return r.json()["instanceIds"]


def stub_install_definition(table: str) -> str:
    return json.dumps({
        "Comment": "Stand-in for the install workflow at scale: reads the chunk from the ledger, installs instantly.",
        "StartAt": "Read Chunk",
        "TimeoutSeconds": 600,
        "States": {
            "Read Chunk": {
                "Type": "Task",
                "Resource": "arn:aws:states:::dynamodb:getItem",
                "Parameters": {"TableName": table, "Key": {"instanceId": {"S.$": "$.targetsKey"}}},
                "ResultSelector": {"instances.$": "States.ArrayLength($.Item.instanceIds.L)"},
                "Next": "Report Installed",
            },
            "Report Installed": {
                "Type": "Pass",
                "Comment": "The install workflow's summary, every field of it (fleet_core::model::Summary): its callers "
                           "select fields of it (the sweep's Map keeps byState, byReason and driftUnrepaired).",
                "Parameters": {"summary": {"byState": {"installed.$": "$.instances"}, "byPlatform": {}, "byReason": {},
                                           "agentUpdated": 0, "driftUnrepaired": 0}},
                "End": True,
            },
        },
    })


def stand_in_role(stack, tag: str) -> str:
    """A role for the measurement's own state machines: what the rollout copy and the install stand-in call."""
    import boto3

    iam = boto3.client("iam", endpoint_url=stack.endpoint, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "states.amazonaws.com"},
                                                     "Action": "sts:AssumeRole"}]}
    arn = iam.create_role(RoleName=f"{tag}-stand-in", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    iam.put_role_policy(RoleName=f"{tag}-stand-in", PolicyName="stand-in", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["states:StartExecution", "states:DescribeExecution", "states:StopExecution",
                                           "lambda:InvokeFunction", "dynamodb:GetItem",
                                           "events:PutTargets", "events:PutRule", "events:DescribeRule"],
             "Resource": "*"}]}))
    return arn


def with_stand_in_install(stack, key: str, tag: str) -> tuple[str, dict, dict]:
    """A copy of the stack's state machine `key` (an outputs key) whose install executions are the instant
    stand-in: (role, the copy, the stand-in), both created with a role of the measurement's own."""
    real = stack.sfn.describe_state_machine(stateMachineArn=stack.outputs[key])
    role = stand_in_role(stack, tag)
    stub = stack.sfn.create_state_machine(name=f"{tag}-install", roleArn=role,
                                          definition=stub_install_definition(stack.outputs["LedgerTableName"]))
    definition = real["definition"].replace(stack.outputs["InstallStateMachineArn"], stub["stateMachineArn"])
    assert definition != real["definition"], f"the definition of {key} does not start the install workflow"
    name = key.removesuffix("StateMachineArn").lower()
    copy = stack.sfn.create_state_machine(name=f"{tag}-{name}", roleArn=role, definition=definition)
    return role, copy, stub


def rollout_at_scale(stack, targets: int = 100_000, canary: int = 500, wave_percent: int = 10,
                     opted_out: int = 100, timeout: float = 3600, log=print) -> dict:
    """Run the rollout workflow over `targets` instances (plus `opted_out` opted-out ones) and return the figures
    of every execution it started. `stack` is tests/e2e/fleet.py's Stack."""
    tag = f"scale-{int(time.time())}"
    t0 = time.time()
    ids = launch_fleet(stack.endpoint, targets, {"rollout": tag, "fleet-sim:existing": "true"})
    skipped = launch_fleet(stack.endpoint, opted_out, {"rollout": tag, "fleet-sim:existing": "true",
                                                       stack.outputs.get("OptOutTagKey", "fleet-install:opt-out"): "true"}) if opted_out else []
    log(f"launched {len(ids) + len(skipped)} instances in the emulator's EC2 in {time.time() - t0:.0f} s")

    # The two state machines here are copies made for the measurement (the rollout's definition pointed at an
    # instant install stand-in), so the stack's roles, scoped to the stack's own state machines, do not fit
    # them: they get a role of their own. plan-rollout and evaluate-wave still run with their own roles.
    _, rollout, stub = with_stand_in_install(stack, "RolloutStateMachineArn", tag)

    t1 = time.time()
    arn = stack.sfn.start_execution(stateMachineArn=rollout["stateMachineArn"], name=tag, input=json.dumps({
        "tags": [{"key": "rollout", "values": [tag]}], "canary": canary, "waveSize": 0, "wavePercent": wave_percent,
        "maxFailureRatio": 0.05, "pauseSeconds": 0,
    }))["executionArn"]
    d = stack.wait_for_execution(arn, timeout)
    seconds = time.time() - t1
    log(f"rollout {d['status']} in {seconds:.0f} s")
    children = [e["executionArn"] for e in _executions(stack.sfn, stub["stateMachineArn"])]
    events = history(stack.sfn, arn)
    figures = {"rollout": history_figures(stack.sfn, arn, events)}
    listing = list_figures(events)
    log(f"listing: {listing['listInvocations']} invocations, pages read {listing['listPagesRead']} "
        f"(at most {listing['listMaxPages']} each), {listing['listSeconds']} s")
    children_figures = [history_figures(stack.sfn, c) for c in children]
    output = json.loads(d.get("output") or "{}")
    every = [figures["rollout"], *children_figures]
    biggest = max(every, key=lambda f: f["maxPayloadBytes"])
    return {
        "targets": targets,
        "optedOut": len(skipped),
        "status": d["status"],
        **({"error": d.get("error"), "cause": (d.get("cause") or "")[:2000]} if d["status"] != "SUCCEEDED" else {}),
        "seconds": round(seconds, 1),
        "waves": output.get("waves", []),
        "installedReported": sum(w.get("installed", 0) for w in output.get("waves", [])),
        "childExecutions": len(children),
        "rolloutHistoryEvents": figures["rollout"]["events"],
        "rolloutTransitions": figures["rollout"]["transitions"],
        "maxHistoryEvents": max(f["events"] for f in every),
        "maxPayloadBytes": biggest["maxPayloadBytes"],
        "maxPayloadAt": ("rollout: " if biggest is figures["rollout"] else "install chunk: ") + str(biggest["maxPayloadAt"]),
        **listing,
        "instanceIds": ids,
        "rolloutArn": arn,
    }


#: The sweep workflow's paging states (statemachine/sweep.asl.json): each reads at most MAX_LIST_PAGES pages.
SWEEP_PAGING_STATES = {"list": "List Running Instances", "gone": "Find Gone Instances"}


def function_env(function: str) -> dict[str, str]:
    """A function's environment as the local stack runs it (env.json, from its template `Environment`)."""
    state = os.environ.get("FLEET_LOCAL_STACK_DIR") or os.path.join(ROOT, "target", "local-stack")
    with open(os.path.join(state, "env.json")) as f:
        return json.load(f)[function]


def sweep_page_figures(events: list[dict]) -> dict:
    """The sweep's paging, from its history: for its list state (DescribeInstances pages of running instances) and
    its gone state (ledger Scan pages), the pages each invocation that succeeded read (its output's `pages`), and
    the seconds from the state's first entry to its last exit."""
    out: dict = {}
    for key, state in SWEEP_PAGING_STATES.items():
        pages, entered, exited = [], [], []
        for e in events:
            if e["type"] == "TaskStateEntered" and e["stateEnteredEventDetails"]["name"] == state:
                entered.append(e["timestamp"])
            if e["type"] == "TaskStateExited" and e["stateExitedEventDetails"]["name"] == state:
                exited.append(e["timestamp"])
                output = json.loads(e["stateExitedEventDetails"].get("output") or "{}")
                if "pages" in output:
                    pages.append(output["pages"])
        out[f"{key}Invocations"] = len(pages)
        out[f"{key}PagesRead"] = pages
        out[f"{key}Seconds"] = round((max(exited) - min(entered)).total_seconds(), 1) if entered and exited else None
    every = out["listPagesRead"] + out["gonePagesRead"]
    out["maxPagesPerInvocation"] = max(every, default=None)
    return out


def sweep_at_scale(stack, timeout: float = 3600, verify_all: bool = False, log=print) -> dict:
    """Run the sweep workflow over every running instance of the emulator's account, with the real sweep function
    and each chunk's install execution the instant stand-in (it reads the chunk from the ledger and reports its
    instances installed; nothing is written for them, so the next sweep finds them never seen again). Returns the
    sweep's report, its paging (pages per list and gone invocation, the most it may read: the sweep function's
    MAX_LIST_PAGES as the local stack runs it) and the payload and history of the sweep and of every child."""
    tag = f"sweep-scale-{int(time.time())}"
    _, sweep, stub = with_stand_in_install(stack, "SweepStateMachineArn", tag)
    t1 = time.time()
    arn = stack.sfn.start_execution(stateMachineArn=sweep["stateMachineArn"], name=tag,
                                    input=json.dumps({"verifyAll": verify_all}))["executionArn"]
    d = stack.wait_for_execution(arn, timeout)
    seconds = (d["stopDate"] - d["startDate"]).total_seconds() if d.get("stopDate") else time.time() - t1
    log(f"sweep {d['status']} in {seconds:.0f} s")
    events = history(stack.sfn, arn)
    own = history_figures(stack.sfn, arn, events)
    paging = sweep_page_figures(events)
    log(f"sweep paging: list {paging['listPagesRead']}, gone {paging['gonePagesRead']} pages per invocation")
    children = [e["executionArn"] for e in _executions(stack.sfn, stub["stateMachineArn"])]
    children_figures = [history_figures(stack.sfn, c) for c in children]
    every = [own, *children_figures]
    biggest = max(every, key=lambda f: f["maxPayloadBytes"])
    report = json.loads(d.get("output") or "{}") if d["status"] == "SUCCEEDED" else {}
    return {
        "status": d["status"],
        **({"error": d.get("error"), "cause": (d.get("cause") or "")[:2000]} if d["status"] != "SUCCEEDED" else {}),
        "seconds": round(seconds, 1),
        "report": report,
        "running": report.get("running"),
        "childExecutions": len(children),
        "sweepHistoryEvents": own["events"],
        "sweepTransitions": own["transitions"],
        "sweepTransitionsByState": own["transitionsByState"],
        # the sweep's own largest payload; the stand-in's (its GetItem of a 1,000-id chunk) may be larger
        "sweepMaxPayloadBytes": own["maxPayloadBytes"],
        "sweepMaxPayloadAt": own["maxPayloadAt"],
        "maxHistoryEvents": max(f["events"] for f in every),
        "maxPayloadBytes": biggest["maxPayloadBytes"],
        "maxPayloadAt": ("sweep: " if biggest is own else "install chunk: ") + str(biggest["maxPayloadAt"]),
        "maxPages": int(function_env("sweep")["MAX_LIST_PAGES"]),
        **paging,
        "sweepArn": arn,
    }


def _executions(sfn, state_machine_arn: str) -> list[dict]:
    return _all_pages(sfn.list_executions, "executions", stateMachineArn=state_machine_arn)
