#!/usr/bin/env python3
"""`make bench`: what an install costs in API calls, state transitions, time and memory, on the local stack.

1. init_ms and rss_mb per function (bench_functions.py: release binaries under a Lambda Runtime API served here);
2. the local stack comes up (moto extended, the Rust functions under cargo lambda watch, the SQS poller);
3. a 1,100-instance launch burst shaped like the demo's: API calls per operation counted at the emulator,
   the install executions' state transitions, Lambda durations, and the wall time from the first running
   event to the last ledger write (demo_seconds);
4. a 10,000-instance rollout with real installs: API calls, transitions, the install executions' largest
   payload and history;
5. the sweep over a 10,000-instance fleet of which 5 % is not compliant (half of those running since before the
   stack, half launched with their `running` event lost), then over the same fleet, compliant: API calls against
   their floor, state transitions per instance, pages per list and gone invocation, and the sweep's wall time
   (the install of the 5 % is real: the sweep's install executions of the real install workflow);
6. a 100,000-target rollout (installs simulated instantly, see scale.py): the largest payload and history, and
   list pages per invocation;
7. a sweep over the whole fleet then (about 110,000 instances, 100,000 of them never seen; each chunk's install
   simulated instantly, see scale.py): pages per list and gone invocation, payload, history, wall time;
8. a table of every figure against its target on stdout, and target/bench/report.json.

A scenario that fails (an exception, a settle that times out, a rollout that does not succeed) is listed under
"failed" in the report and as FAILED in the table, its figures are absent (never another scenario's in their
place: each figure is keyed by the scenario that measured it), the other scenarios still run, and the exit status
is 1.

    .venv/bin/python local-stack/scenarios/bench.py [--skip-functions] [--runs 5] [--rollout 10000] [--sweep 10000]
        [--scale 100000] [--no-scale-sweep]

The API floor of an operation is ceil(items / per-call limit), where items is what the calls carried, counted
at the emulator: instance ids for SendCommand (50 a call) and DescribeInstanceInformation (50), instance-id
filter values for DescribeInstances (200), items for DynamoDB writes (25, a batch write's limit, for
BatchWriteItem, TransactWriteItems and single writes alike). Polls (ListCommandInvocations) and lookups that are not
batched by instance count as measured: their floor is the call itself.

The sweep's floor adds what listing the fleet and checking the ledger need: DescribeInstances, ceil(running / 1,000)
listing pages (EC2's largest page) plus the instance-id lookups counted as above (the gone check's and the installs'
200 ids a call); Scan, the pages reading the whole ledger takes: max(ceil(items / 1,000), the page the sweep asks
for, ceil(bytes / 1 MB), DynamoDB's page), with every item's size (attribute names and values) as the bench reads
the table after the sweep, chunks included; BatchGetItem, ceil(running / 100) (counted as above: keys per call); the
lock, one UpdateItem and one DeleteItem (counted as single writes).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import math
import os
import random
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
EMULATOR = os.path.join(os.path.dirname(HERE), "emulator")
sys.path.insert(0, HERE)
sys.path.insert(0, EMULATOR)
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

import scale  # noqa: E402
from fleet import Stack  # noqa: E402

RUN = [sys.executable, os.path.join(EMULATOR, "run.py")]
REPORT = os.path.join(ROOT, "target", "bench", "report.json")

#: Per-call limits of the batched operations (see the module docstring).
LIMITS = {
    "ssm.SendCommand": 50,
    "ssm.DescribeInstanceInformation": 50,
    "ec2.DescribeInstances": 200,
    "dynamodb.BatchWriteItem": 25,
    "dynamodb.TransactWriteItems": 25,  # the floor for a DynamoDB batch write (a transaction holds 100)
    "dynamodb.PutItem": 25,
    "dynamodb.UpdateItem": 25,
    "dynamodb.DeleteItem": 25,
    "dynamodb.BatchGetItem": 100,
}

#: The rollout's platform mix, also the sweep's never-seen instances'.
MIX = [(0.5, "Linux|Amazon Linux|2023"), (0.2, "Linux|Ubuntu|22.04"), (0.1, "Linux|Red Hat Enterprise Linux Server|8.9"),
       (0.05, "Linux|FreeBSD|14.1"), (0.15, "Windows|Microsoft Windows Server 2022 Datacenter|10.0.20348")]

#: List prices (us-east-1): Step Functions Standard per transition; Lambda arm64 per GB-second and per request.
USD_PER_TRANSITION = 0.025 / 1000
USD_PER_GB_SECOND_ARM64 = 0.0000133334
USD_PER_REQUEST = 0.20 / 1_000_000
LAMBDA_GB = 128 / 1024

TARGETS = {
    "api_calls_ratio": ("<=", 1.1),
    "transitions_per_instance": ("<=", 0.03),
    # median seconds from a command's last invocation finishing to its outcomes in the ledger (a poll every 30 s
    # would add 15 s on average)
    "completion_to_ledger_seconds": ("<=", 5),
    "max_payload_bytes": ("<", 262_144),
    "max_history_events": ("<", 25_000),
    "init_ms": ("<=", 15),
    "rss_mb": ("<=", 40),
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def api_figures(calls: dict[str, int]) -> dict:
    """Calls per operation made by the system (the Rust functions: not the bench's, the local stack's or the
    Step Functions engine's own), each operation's floor, and the ratio."""
    ops: dict[str, dict] = {}
    for key, n in calls.items():
        if key.startswith(("poller:", "setup:", "bench:", "items:", "lambda.", "internal:")):
            continue
        items = calls.get(f"items:{key}")
        limit = LIMITS.get(key)
        floor = n if items is None or limit is None else math.ceil(items / limit)
        ops[key] = {"calls": n, "floor": floor, **({"items": items, "perCall": limit} if items is not None else {})}
    total = sum(o["calls"] for o in ops.values())
    floor = sum(o["floor"] for o in ops.values())
    return {
        "byOperation": dict(sorted(ops.items())),
        "calls": total,
        "floor": floor,
        "ratio": round(total / floor, 3) if floor else None,
        # calls the Step Functions engine makes for its own integrations (moto polls child executions; AWS
        # does not): listed, not in the ratio
        "engine": {k.split(":", 1)[1]: n for k, n in calls.items() if k.startswith("internal:")},
        "lambdaInvocations": {k.split(":", 1)[1]: n for k, n in calls.items() if k.startswith("lambda.Invoke:")},
        "lambdaDurationMs": {k.split(":", 1)[1]: n for k, n in calls.items() if k.startswith("lambda.DurationMs:")},
    }


def cost(transitions: int, api: dict, instances: int) -> dict:
    invocations = sum(api["lambdaInvocations"].values())
    ms = sum(api["lambdaDurationMs"].values())
    sfn_usd = transitions * USD_PER_TRANSITION
    lambda_usd = ms / 1000 * LAMBDA_GB * USD_PER_GB_SECOND_ARM64 + invocations * USD_PER_REQUEST
    return {
        "transitions": transitions,
        "lambdaInvocations": invocations,
        "lambdaMs": ms,
        "usdStepFunctions": sfn_usd,
        "usdLambda": lambda_usd,
        "usdPer1000Instances": round((sfn_usd + lambda_usd) * 1000 / instances, 6),
    }


#: DescribeInstances returns at most 1,000 instances a page; the sweep scans the ledger 1,000 items a page, and a
#: DynamoDB Scan page holds at most 1 MB of items.
DESCRIBE_PAGE = 1000
SCAN_PAGE = 1000
SCAN_PAGE_BYTES = 1_000_000


def sweep_api_figures(calls: dict[str, int], running: int, ledger: tuple[int, int]) -> dict:
    """api_figures with the sweep's floors for DescribeInstances (listing pages + id lookups) and Scan (ledger
    pages); see the module docstring."""
    api = api_figures(calls)
    ops = api["byOperation"]
    if "ec2.DescribeInstances" in ops:
        listing = math.ceil(running / DESCRIBE_PAGE)
        by_id = math.ceil(calls.get("items:ec2.DescribeInstances", 0) / LIMITS["ec2.DescribeInstances"])
        ops["ec2.DescribeInstances"].update(floor=listing + by_id, listingFloor=listing, byIdFloor=by_id)
    if "dynamodb.Scan" in ops:
        items, size = ledger
        floor = max(1, math.ceil(items / SCAN_PAGE), math.ceil(size / SCAN_PAGE_BYTES))
        ops["dynamodb.Scan"].update(floor=floor, ledgerItems=items, ledgerBytes=size)
    api["calls"] = sum(o["calls"] for o in ops.values())
    api["floor"] = sum(o["floor"] for o in ops.values())
    api["ratio"] = round(api["calls"] / api["floor"], 3) if api["floor"] else None
    return api


def executions_since(stack: Stack, since: float, key: str = "InstallStateMachineArn") -> list[dict]:
    return [e for e in stack.executions(key) if e["startDate"].timestamp() >= since]


def wait_settled(stack: Stack, ids: set[str], timeout: float, what: str) -> dict:
    """Until every instance has a final ledger state and no install execution runs."""
    final = {"installed", "failed", "unmanaged", "skipped"}
    deadline, last = time.time() + timeout, 0.0
    while True:
        ledger = stack.ledger()
        done = sum(1 for i in ids if ledger.get(i, {}).get("state") in final)
        running = sum(e["status"] == "RUNNING" for e in stack.executions())
        if done == len(ids) and running == 0:
            return ledger
        if time.time() - last > 10:
            log(f"  {what}: {done}/{len(ids)} final, {running} install executions running")
            last = time.time()
        if time.time() > deadline:
            raise SystemExit(f"{what}: not settled after {timeout:.0f} s ({done}/{len(ids)} final)")
        time.sleep(2)


def epoch(iso: str) -> float:
    return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def completion_latency(stack: Stack, ledger: dict, ids: list[str]) -> dict:
    """Per install command whose outcomes the ledger holds: seconds from its last invocation finishing
    (ResponseFinishDateTime of its plugins, as SSM reports it) to the latest ledger write of its instances
    (updatedAt of the items whose final commandId is this command). The median is the figure; the fallback
    (no event) and the registration path are counted like the event path."""
    by_command: dict[str, list[str]] = {}
    for i in ids:
        item = ledger.get(i) or {}
        if item.get("commandId") and item.get("state") in ("installed", "failed"):
            by_command.setdefault(item["commandId"], []).append(i)
    delays, each = [], []
    for command_id, members in by_command.items():
        finished = []
        for page in stack.ssm.get_paginator("list_command_invocations").paginate(CommandId=command_id, Details=True):
            for inv in page["CommandInvocations"]:
                finished += [p["ResponseFinishDateTime"].timestamp() for p in inv.get("CommandPlugins") or []
                             if p.get("ResponseFinishDateTime")]
        if not finished:
            continue
        written = max(epoch(ledger[i]["updatedAt"]) for i in members)
        delays.append(round(written - max(finished), 2))
        each.append({"commandId": command_id, "instances": len(members), "finished": round(max(finished), 2),
                     "written": round(written, 2), "delay": delays[-1]})
    delays.sort()
    if not delays:
        return {"commands": 0}
    return {"commands": len(delays), "each": sorted(each, key=lambda c: c["finished"]), "median": delays[len(delays) // 2] if len(delays) % 2 else
            round((delays[len(delays) // 2 - 1] + delays[len(delays) // 2]) / 2, 2),
            "p90": delays[min(len(delays) - 1, int(len(delays) * 0.9))], "max": delays[-1], "min": delays[0]}


def path(events: list[dict]) -> list[str]:
    """The states an execution entered, in order, each with the seconds since the execution started."""
    if not events:
        return []
    t0 = events[0]["timestamp"].timestamp()
    return [f"{e['timestamp'].timestamp() - t0:.1f}s {e['stateEnteredEventDetails']['name']}"
            for e in events if e["type"].endswith("StateEntered")]


def burst(stack: Stack, n: int) -> dict:
    import demo

    rng = random.Random(1100)
    stack.api_calls(reset=True)
    t0 = time.time()
    launched = demo.launch(stack, demo.behaviours(n, rng), {"team": "bench-burst"})
    log(f"burst: {len(launched)} instances launched in {time.time() - t0:.1f} s")
    ledger = wait_settled(stack, set(launched), 900, "burst")
    calls = stack.api_calls()
    last_write = max(epoch(ledger[i]["updatedAt"]) for i in launched)
    executions = executions_since(stack, t0 - 1)
    histories = [scale.history(stack.sfn, e["executionArn"]) for e in executions]
    figures = [scale.history_figures(stack.sfn, e["executionArn"], h) for e, h in zip(executions, histories)]
    api = api_figures(calls)
    transitions = sum(f["transitions"] for f in figures)
    by_state: dict[str, int] = {}
    for f in figures:
        for k, v in f["transitionsByState"].items():
            by_state[k] = by_state.get(k, 0) + v
    states = collections.Counter(ledger[i]["state"] for i in launched)
    latency = completion_latency(stack, ledger, launched)
    return {
        "instances": n,
        "completionToLedgerSeconds": latency,
        "byState": dict(sorted(states.items())),
        # 20 % of the burst has agents too old for the install documents: their AWS-UpdateSSMAgent commands are
        # in the SendCommand calls and in the floor (instance ids per call), like the installs
        "agentUpdates": demo.agent_counts(ledger, launched),
        "executions": len(executions),
        "seconds": round(last_write - t0, 1),
        "api": api,
        "transitionsPerInstance": round(transitions / n, 4),
        "transitionsByState": dict(sorted(by_state.items(), key=lambda kv: -kv[1])),
        # each execution's states in the order entered, with the seconds since its start: where the rounds go
        "paths": [path(h) for h in histories],
        "pathStarts": [round(h[0]["timestamp"].timestamp(), 2) if h else None for h in histories],
        "cost": cost(transitions, api, n),
        "maxPayloadBytes": max(f["maxPayloadBytes"] for f in figures),
        "maxHistoryEvents": max(f["events"] for f in figures),
    }


def rollout(stack: Stack, n: int) -> dict:
    """A rollout with real installs over n managed, registered instances of a mixed fleet."""
    tag = f"bench-rollout-{int(time.time())}"
    ids: list[str] = []
    for share, platform in MIX:
        ids += scale.launch_fleet(stack.endpoint, round(n * share), {
            "team": tag, "fleet-sim:existing": "true", "fleet-sim:platform": platform, "fleet-sim:install-seconds": "2",
        }, profile=stack.outputs["SimInstanceProfileName"])
    stack.api_calls(reset=True)
    t0 = time.time()
    arn = stack.sfn.start_execution(stateMachineArn=stack.outputs["RolloutStateMachineArn"], name=tag, input=json.dumps({
        "tags": [{"key": "team", "values": [tag]}], "canary": 1000, "waveSize": 0, "wavePercent": 30,
        "maxFailureRatio": 0.05, "pauseSeconds": 0,
    }))["executionArn"]
    d = stack.wait_for_execution(arn, 3600)
    seconds = time.time() - t0
    if d["status"] != "SUCCEEDED":
        raise SystemExit(f"the {n}-instance rollout ended {d['status']}: {d.get('error')} {d.get('cause')}")
    calls = stack.api_calls()
    children = executions_since(stack, t0 - 1)
    child_figures = [scale.history_figures(stack.sfn, e["executionArn"]) for e in children]
    rollout_figures = scale.history_figures(stack.sfn, arn)
    api = api_figures(calls)
    transitions = rollout_figures["transitions"] + sum(f["transitions"] for f in child_figures)
    ledger = stack.ledger()
    states = collections.Counter(ledger.get(i, {}).get("state", "missing") for i in ids)
    biggest = max(child_figures, key=lambda f: f["maxPayloadBytes"])
    return {
        "instances": len(ids),
        "byState": dict(sorted(states.items())),
        "seconds": round(seconds, 1),
        "installExecutions": len(children),
        "api": api,
        "transitionsPerInstance": round(transitions / len(ids), 4),
        "cost": cost(transitions, api, len(ids)),
        "rolloutHistoryEvents": rollout_figures["events"],
        "installMaxHistoryEvents": max(f["events"] for f in child_figures),
        "installMaxPayloadBytes": biggest["maxPayloadBytes"],
        "installMaxPayloadAt": biggest["maxPayloadAt"],
        "maxPayloadBytes": max(rollout_figures["maxPayloadBytes"], biggest["maxPayloadBytes"]),
    }


class ScenarioFailed(Exception):
    """A scenario that ran to its end without the outcome it measures (e.g. a rollout that did not succeed)."""


def launch_mix(stack: Stack, n: int, tags: dict[str, str]) -> list[str]:
    """n managed instances of the mix (the simulation's instance profile, installs of 2 s), through the bulk launch."""
    ids: list[str] = []
    for k, (share, platform) in enumerate(MIX):
        count = n - len(ids) if k == len(MIX) - 1 else round(n * share)
        if count > 0:
            ids += scale.launch_fleet(stack.endpoint, count, {
                **tags, "fleet-sim:platform": platform, "fleet-sim:install-seconds": "2",
            }, profile=stack.outputs["SimInstanceProfileName"])
    return ids


def running_instances(stack: Stack) -> dict[str, dict[str, str]]:
    """Every running instance of the account (the bench's own DescribeInstances calls): id -> tags."""
    out = {}
    for page in stack.ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "instance-state-name", "Values": ["running"]}], PaginationConfig={"PageSize": 1000}):
        for r in page["Reservations"]:
            for i in r["Instances"]:
                out[i["InstanceId"]] = {t["Key"]: t["Value"] for t in i.get("Tags", [])}
    return out


def running_count(stack: Stack) -> int:
    """Running instances as EC2 counts them (the bench's own DescribeInstanceStatus calls, which describe running
    instances only unless asked for all; far lighter than DescribeInstances pages at 100,000 instances)."""
    pages = stack.ec2.get_paginator("describe_instance_status").paginate(PaginationConfig={"PageSize": 1000})
    return sum(len(page["InstanceStatuses"]) for page in pages)


def item_bytes(value) -> int:
    """The size of a DynamoDB value as its page limit counts it: strings and binaries their bytes, numbers their
    digits, lists and maps their members (and a map's keys)."""
    (kind, v), = value.items()
    if kind in ("S", "N"):
        return len(v.encode())
    if kind == "B":
        return len(v)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "L":
        return sum(item_bytes(x) for x in v)
    if kind == "M":
        return sum(len(k.encode()) + item_bytes(x) for k, x in v.items())
    return sum(len(str(x).encode()) for x in v)  # SS, NS, BS


def ledger_size(stack: Stack) -> tuple[int, int]:
    """Items in the ledger table, every kind, and their bytes (attribute names and values): the bench's own Scan."""
    n, size, kw = 0, 0, {"TableName": stack.outputs["LedgerTableName"]}
    while True:
        page = stack.ddb.scan(**kw)
        n += len(page["Items"])
        size += sum(len(k.encode()) + item_bytes(v) for it in page["Items"] for k, v in it.items())
        if "LastEvaluatedKey" not in page:
            return n, size
        kw["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def run_sweep(stack: Stack, label: str, timeout: float = 3600) -> tuple[str, dict, dict]:
    """Start the stack's sweep workflow and wait: (its name, DescribeExecution, its report). ScenarioFailed when
    it does not succeed or stood down for another sweep."""
    name = f"bench-{label}-{int(time.time())}"
    arn = stack.sfn.start_execution(stateMachineArn=stack.outputs["SweepStateMachineArn"], name=name,
                                    input=json.dumps({"verifyAll": False}))["executionArn"]
    d = stack.wait_for_execution(arn, timeout)
    if d["status"] != "SUCCEEDED":
        raise ScenarioFailed(f"the sweep {name} ended {d['status']}: {d.get('error')}: {(d.get('cause') or '')[:500]}")
    report = json.loads(d.get("output") or "{}")
    if "running" not in report:
        raise ScenarioFailed(f"the sweep {name} did not run: another sweep held the lock ({report})")
    return name, d, report


def measured_sweep(stack: Stack, label: str) -> dict:
    """One sweep of the stack's real workflow (its install executions the real install workflow), measured: API
    calls against the sweep's floor, state transitions of the sweep and of its install executions, pages per list
    and gone invocation, payload, history and the execution's wall time."""
    stack.api_calls(reset=True)
    name, d, report = run_sweep(stack, label)
    calls = stack.api_calls()
    arn = d["executionArn"]
    events = scale.history(stack.sfn, arn)
    own = scale.history_figures(stack.sfn, arn, events)
    children = [e for e in stack.executions() if e["name"].startswith(f"{name}-c")]
    child_figures = [scale.history_figures(stack.sfn, e["executionArn"]) for e in children]
    running = report["running"]
    api = sweep_api_figures(calls, running, ledger_size(stack))
    transitions = own["transitions"] + sum(f["transitions"] for f in child_figures)
    by_state: dict[str, int] = {}
    for f in (own, *child_figures):
        for k, v in f["transitionsByState"].items():
            by_state[k] = by_state.get(k, 0) + v
    return {
        "instances": running,
        "seconds": round((d["stopDate"] - d["startDate"]).total_seconds(), 1),
        "report": report,
        "installExecutions": len(children),
        "api": api,
        "transitions": transitions,
        "sweepTransitions": own["transitions"],
        "transitionsPerInstance": round(transitions / running, 4) if running else None,
        "transitionsByState": dict(sorted(by_state.items(), key=lambda kv: -kv[1])),
        "cost": cost(transitions, api, max(running, 1)),
        "sweepHistoryEvents": own["events"],
        "maxHistoryEvents": max(f["events"] for f in (own, *child_figures)),
        "maxPayloadBytes": max(f["maxPayloadBytes"] for f in (own, *child_figures)),
        "maxPages": int(scale.function_env("sweep")["MAX_LIST_PAGES"]),
        **scale.sweep_page_figures(events),
    }


def prepare_sweep_fleet(stack: Stack, compliant: int) -> dict:
    """Make the account's running fleet exactly `compliant` instances installed by the real system: the installed
    instances of the earlier scenarios are kept (the 10,000-instance rollout's first), every other running instance
    is terminated, and if fewer than `compliant` were installed, never-seen instances are launched to make up the
    number; then one sweep (not measured) marks the terminated ones gone and installs those (real installs)."""
    running = running_instances(stack)
    ledger = stack.ledger()
    installed = sorted((i for i in running if ledger.get(i, {}).get("state") == "installed"),
                       key=lambda i: (not running[i].get("team", "").startswith("bench-rollout"), i))
    keep = installed[:compliant]
    kept = set(keep)
    drop = [i for i in running if i not in kept]
    for n in range(0, len(drop), 1000):
        stack.ec2.terminate_instances(InstanceIds=drop[n:n + 1000])
    top_up = launch_mix(stack, compliant - len(keep), {"team": "bench-sweep-top-up", "fleet-sim:existing": "true"}) \
        if len(keep) < compliant else []
    log(f"  sweep fleet: {len(keep)} installed instances kept, {len(drop)} terminated, {len(top_up)} launched")
    _, d, report = run_sweep(stack, "sweep-prepare")
    ledger = stack.ledger()
    not_installed = [i for i in keep + top_up if ledger.get(i, {}).get("state") != "installed"]
    if not_installed or report["running"] != compliant:
        raise ScenarioFailed(f"the sweep's fleet is not {compliant} installed instances: {report['running']} running, "
                             f"{len(not_installed)} not installed (e.g. {not_installed[:3]})")
    return {"kept": len(keep), "terminated": len(drop), "launched": len(top_up), "goneMarked": report["gone"],
            "seconds": round((d["stopDate"] - d["startDate"]).total_seconds(), 1)}


def sweep_not_compliant(stack: Stack, n: int, share: float = 0.05) -> dict:
    """The sweep over n instances of which `share` are not compliant: half running since before the stack
    (fleet-sim:existing), half launched now with their `running` event lost (fleet-sim:drop-running-event); none
    has a ledger item. The sweep installs them (real installs)."""
    k = round(n * share)
    prepared = prepare_sweep_fleet(stack, n - k)
    existing = launch_mix(stack, k - k // 2, {"team": "bench-sweep", "fleet-sim:existing": "true"})
    lost = launch_mix(stack, k // 2, {"team": "bench-sweep", "fleet-sim:drop-running-event": "true"})
    dropped = set(stack.dropped_running_events())
    if not set(lost) <= dropped:
        raise ScenarioFailed(f"{len(set(lost) - dropped)} of the instances launched to lose their running event "
                             f"did not lose it")
    ledger = stack.ledger()
    if any(i in ledger for i in existing + lost):
        raise ScenarioFailed("instances meant to be never seen have ledger items before the sweep")
    figures = measured_sweep(stack, "sweep-5pct")
    r = figures["report"]
    ledger = stack.ledger()
    installed = sum(1 for i in existing + lost if ledger.get(i, {}).get("state") == "installed")
    if r["running"] != n or r["work"] != {"neverSeen": k} or installed != k or r["installed"] != k:
        raise ScenarioFailed(f"the sweep over {n} instances with {k} never seen: running {r['running']}, work "
                             f"{r['work']}, installed {r['installed']} (ledger: {installed} of {k})")
    figures["fleet"] = {"compliant": n - k, "neverSeenExisting": len(existing), "lostRunningEvent": len(lost),
                        "prepared": prepared}
    return figures


def sweep_compliant(stack: Stack, n: int, prepared: bool) -> dict:
    """The sweep over n instances, every one installed and verified recently (the fleet the 5 % sweep left, or one
    prepared here): it sends nothing."""
    fleet = {"prepared": prepare_sweep_fleet(stack, n)} if not prepared else {}
    figures = measured_sweep(stack, "sweep-compliant")
    r = figures["report"]
    if r["running"] != n or r["sent"] != 0 or r["ratioBefore"] != 1.0 or figures["installExecutions"]:
        raise ScenarioFailed(f"the sweep over {n} compliant instances: running {r['running']}, sent {r['sent']}, "
                             f"ratio before {r['ratioBefore']}, {figures['installExecutions']} install executions")
    figures["fleet"] = {"compliant": n, **fleet}
    return figures


def scale_sweep_scenario(stack: Stack, targets: int) -> dict:
    """The sweep over the whole fleet after the rollout at scale (scale.sweep_at_scale: installs simulated)."""
    running = running_count(stack)
    if running < targets:
        raise ScenarioFailed(f"the fleet holds {running:,} running instances, fewer than the {targets:,} to sweep")
    s = scale.sweep_at_scale(stack, log=log)
    if s["status"] != "SUCCEEDED":
        raise ScenarioFailed(f"the sweep of {running:,} instances ended {s['status']}: {s.get('error')}: "
                             f"{(s.get('cause') or '')[:500]}")
    r = s["report"]
    if r.get("running") != running or sum(s["listPagesRead"]) != math.ceil(running / DESCRIBE_PAGE):
        raise ScenarioFailed(f"the sweep counted {r.get('running')} running instances in {sum(s['listPagesRead'])} "
                             f"pages; EC2 lists {running:,}")
    s["transitionsPerInstance"] = round(s["sweepTransitions"] / running, 5)
    s.pop("sweepArn", None)
    return s


def run_scenario(report: dict, name: str, fn) -> dict | None:
    """Run one scenario: its figures go to report[name]; if it fails (any exception, or SystemExit from a wait that
    gave up), report["failed"][name] says why and report[name] stays absent."""
    try:
        figures = fn()
    except (Exception, SystemExit) as e:  # noqa: BLE001 - every failure of a scenario is reported, not raised
        reason = str(e) or type(e).__name__
        log(f"{name}: FAILED: {reason}")
        report.setdefault("failed", {})[name] = reason[:2000]
        report.pop(name, None)
        return None
    report[name] = figures
    return figures


def scale_scenario(stack: Stack, targets: int) -> dict:
    """The rollout at scale: its figures, or ScenarioFailed when the rollout did not succeed."""
    s = scale.rollout_at_scale(stack, targets=targets, log=log)
    s.pop("instanceIds", None)
    if s.get("status") != "SUCCEEDED":
        raise ScenarioFailed(f"the {targets:,}-target rollout ended {s.get('status')}: {s.get('error')}: "
                             f"{(s.get('cause') or '')[:500]}")
    return s


#: The 10,000-instance sweeps (report keys) and what the table calls them.
SWEEPS = ("sweep_not_compliant", "sweep_compliant")
SWEEP_LABELS = {"sweep_not_compliant": "5 % not compliant", "sweep_compliant": "compliant"}


def summarize(report: dict) -> dict:
    """The report's summary keys, each from the scenarios that succeeded, keyed by scenario: a failed scenario's
    figures are absent, never replaced by another scenario's."""
    ran = [k for k in ("burst", "rollout", *SWEEPS) if k in report]
    report["api_calls"] = {k: report[k]["api"]["byOperation"] for k in ran}
    report["api_calls_ratio"] = {k: report[k]["api"]["ratio"] for k in ran}
    report["transitions_per_instance"] = {k: report[k]["transitionsPerInstance"] for k in ran}
    report["usd_per_1000_instances"] = {k: report[k]["cost"]["usdPer1000Instances"] for k in ran}
    report["max_payload_bytes"] = {k: report[k]["maxPayloadBytes"] for k in ("burst", "rollout", "scale", *SWEEPS,
                                                                            "scale_sweep") if k in report}
    report["max_history_events"] = {}
    if "burst" in report:
        report["max_history_events"]["burst"] = report["burst"]["maxHistoryEvents"]
    if "rollout" in report:
        r = report["rollout"]
        report["max_history_events"]["rollout"] = max(r["rolloutHistoryEvents"], r["installMaxHistoryEvents"])
    for k in ("scale", *SWEEPS, "scale_sweep"):
        if k in report:
            report["max_history_events"][k] = report[k]["maxHistoryEvents"]
    report["sweep_seconds"] = {k: report[k]["seconds"] for k in (*SWEEPS, "scale_sweep") if k in report}
    report["pages_per_invocation"] = {k: report[k]["maxPagesPerInvocation"] for k in (*SWEEPS, "scale_sweep")
                                      if k in report}
    if "scale" in report and report["scale"].get("maxListPagesPerInvocation") is not None:
        report["pages_per_invocation"]["scale"] = report["scale"]["maxListPagesPerInvocation"]
    if "burst" in report and report["burst"].get("completionToLedgerSeconds", {}).get("median") is not None:
        report["completion_to_ledger_seconds"] = {"burst": report["burst"]["completionToLedgerSeconds"]["median"]}
    if "burst" in report:
        report["demo_seconds"] = report["burst"]["seconds"]
    else:
        report.pop("demo_seconds", None)
    report["targets"] = {k: {"op": op, "value": v} for k, (op, v) in TARGETS.items()}
    return report


def exit_status(report: dict) -> int:
    """1 when any scenario failed."""
    return 1 if report.get("failed") else 0


def check(name: str, value) -> str:
    if value is None:
        return "n/a"
    op, target = TARGETS[name]
    ok = value <= target if op == "<=" else value < target
    return "met" if ok else "MISSED"


def pages_row(rows: list, what: str, sw: dict) -> None:
    """Pages per invocation of the sweep's list and gone states, against the most one may read."""
    for key, label in (("list", "list"), ("gone", "gone")):
        read = sw.get(f"{key}PagesRead") or []
        if not read:
            continue
        rows.append((f"{label} pages per invocation, {what}",
                     f"<= {max(read)} ({len(read)} invocations, {sw.get(f'{key}Seconds')} s)", f"<= {sw['maxPages']}",
                     "met" if max(read) <= sw["maxPages"] else "MISSED"))


def table(report: dict) -> str:
    rows = [("figure", "value", "target", "")]

    def row(label, key, value):
        op, target = TARGETS[key] if key in TARGETS else ("", "")
        rows.append((label, f"{value}", f"{op} {target}".strip(), check(key, value) if key in TARGETS else ""))

    b, r = report.get("burst"), report.get("rollout")
    if b:
        row(f"api_calls_ratio, {b['instances']:,} burst", "api_calls_ratio", b["api"]["ratio"])
    if r:
        row(f"api_calls_ratio, {r['instances']:,} rollout", "api_calls_ratio", r["api"]["ratio"])
    if b:
        row(f"transitions_per_instance, {b['instances']:,} burst", "transitions_per_instance", b["transitionsPerInstance"])
    if r:
        row(f"transitions_per_instance, {r['instances']:,} rollout", "transitions_per_instance", r["transitionsPerInstance"])
    if b and b.get("completionToLedgerSeconds", {}).get("median") is not None:
        c = b["completionToLedgerSeconds"]
        row(f"completion_to_ledger_seconds, burst (median of {c['commands']} commands; p90 {c['p90']}, max {c['max']})",
            "completion_to_ledger_seconds", c["median"])
    if b:
        row("usd_per_1000_instances, burst", "usd", f"{b['cost']['usdPer1000Instances']:.4f}")
    if r:
        row("usd_per_1000_instances, rollout", "usd", f"{r['cost']['usdPer1000Instances']:.4f}")
    payload, history = report.get("max_payload_bytes") or {}, report.get("max_history_events") or {}
    if r and "rollout" in payload:
        row(f"max_payload_bytes, {r['instances']:,} rollout", "max_payload_bytes", payload["rollout"])
        row(f"max_history_events, {r['instances']:,} rollout", "max_history_events", history["rollout"])
    sc = report.get("scale")
    if sc and "scale" in payload:
        row(f"max_payload_bytes, {sc['targets']:,} targets", "max_payload_bytes", payload["scale"])
        row(f"max_history_events, {sc['targets']:,} targets", "max_history_events", history["scale"])
        if sc.get("listInvocations"):
            rows.append((f"list pages per invocation, {sc['targets']:,} targets",
                         f"<= {sc['maxListPagesPerInvocation']} ({sc['listInvocations']} invocations, "
                         f"{sc['listSeconds']} s)", f"<= {sc['listMaxPages']}",
                         "met" if sc["maxListPagesPerInvocation"] <= sc["listMaxPages"] else "MISSED"))
    for k in SWEEPS:
        sw = report.get(k)
        if not sw:
            continue
        what = f"sweep of {sw['instances']:,}, {SWEEP_LABELS[k]}"
        row(f"api_calls_ratio, {what}", "api_calls_ratio", sw["api"]["ratio"])
        rows.append((f"api calls / floor, {what}", f"{sw['api']['calls']} / {sw['api']['floor']}", "", ""))
        row(f"transitions_per_instance, {what}", "transitions_per_instance", sw["transitionsPerInstance"])
        rows.append((f"sweep_seconds, {what}", f"{sw['seconds']} (sent {sw['report']['sent']}, "
                     f"{sw['installExecutions']} install executions)", "", ""))
        row(f"max_payload_bytes, {what}", "max_payload_bytes", sw["maxPayloadBytes"])
        row(f"max_history_events, {what}", "max_history_events", sw["maxHistoryEvents"])
        pages_row(rows, what, sw)
    ss = report.get("scale_sweep")
    if ss:
        what = f"sweep of {ss['running']:,}"
        rows.append((f"sweep_seconds, {what}", f"{ss['seconds']} (sent {ss['report']['sent']:,}, installs simulated)",
                     "", ""))
        row(f"transitions_per_instance, {what} (sweep only)", "transitions_per_instance", ss["transitionsPerInstance"])
        row(f"max_payload_bytes, {what} and its install stand-ins", "max_payload_bytes", ss["maxPayloadBytes"])
        if ss.get("sweepMaxPayloadBytes") is not None:
            row(f"max_payload_bytes, {what}, the sweep's own", "max_payload_bytes", ss["sweepMaxPayloadBytes"])
        row(f"max_history_events, {what}", "max_history_events", ss["maxHistoryEvents"])
        pages_row(rows, what, ss)
    for fn, f in sorted((report.get("functions") or {}).items()):
        row(f"init_ms {fn}", "init_ms", f["init_ms"])
        row(f"rss_mb {fn}", "rss_mb", f["rss_mb"])
    if report.get("demo_seconds") is not None and b:
        rows.append((f"demo_seconds ({b['instances']:,} burst)", f"{report['demo_seconds']}", "", ""))
    for name, reason in sorted((report.get("failed") or {}).items()):
        first = reason.splitlines()[0] if reason else ""
        rows.append((f"{name} scenario", "FAILED", "", first[:160]))
    widths = [max(len(str(x[i])) for x in rows) for i in range(4)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(x, widths)).rstrip() for x in rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="processes per function for init_ms and rss_mb")
    ap.add_argument("--skip-functions", action="store_true")
    ap.add_argument("--burst", type=int, default=1100)
    ap.add_argument("--rollout", type=int, default=10_000, help="instances of the rollout with real installs (0: skip)")
    ap.add_argument("--sweep", type=int, default=10_000,
                    help="instances of the sweeps over a compliant and a 5 %% non-compliant fleet (0: skip)")
    ap.add_argument("--scale", type=int, default=100_000, help="targets of the rollout at scale (0: skip)")
    ap.add_argument("--no-scale-sweep", action="store_true", help="no sweep of the whole fleet after the rollout at scale")
    args = ap.parse_args(argv)
    report: dict = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "machine": {"cpus": os.cpu_count()}}
    if not args.skip_functions:
        import bench_functions

        log("init_ms and rss_mb of every function (release builds)")
        measured = run_scenario(report, "functions",
                                lambda: bench_functions.measure(runs=args.runs, build=True)["functions"])
        if measured is not None:
            report["init_ms"] = {fn: f["init_ms"] for fn, f in measured.items()}
            report["rss_mb"] = {fn: f["rss_mb"] for fn, f in measured.items()}

    scenarios = [(name, n) for name, n in (
        ("burst", args.burst), ("rollout", args.rollout), ("sweep_not_compliant", args.sweep),
        ("sweep_compliant", args.sweep), ("scale", args.scale),
        ("scale_sweep", 0 if args.no_scale_sweep else args.scale)) if n]
    started = False
    try:
        log("starting the local stack")
        # A batching window long enough to gather the whole burst, as the deployed 180 s window does.
        up = subprocess.run(RUN + ["up", "--build", "--param", "BatchWindowSeconds=20"], cwd=ROOT,
                            stdout=subprocess.DEVNULL)
        started = True
        if up.returncode != 0:
            for name, _ in scenarios:
                report.setdefault("failed", {})[name] = f"the local stack did not start (run.py up exited {up.returncode})"
            scenarios = []
        stack = Stack(f"http://127.0.0.1:{os.environ.get('MOTO_PORT', '5055')}", access_key="fleet-bench") \
            if scenarios else None
        for name, n in scenarios:
            if name == "burst":
                log(f"a {n:,}-instance launch burst")
                run_scenario(report, "burst", lambda: burst(stack, n))
            elif name == "rollout":
                log(f"a {n:,}-instance rollout with real installs")
                run_scenario(report, "rollout", lambda: rollout(stack, n))
            elif name == "sweep_not_compliant":
                log(f"a sweep over {n:,} instances, 5 % not compliant (real installs)")
                run_scenario(report, name, lambda: sweep_not_compliant(stack, n))
            elif name == "sweep_compliant":
                log(f"a sweep over {n:,} compliant instances")
                run_scenario(report, name, lambda: sweep_compliant(stack, n, prepared="sweep_not_compliant" in report))
            elif name == "scale":
                log(f"a {n:,}-target rollout, installs simulated instantly")
                run_scenario(report, "scale", lambda: scale_scenario(stack, n))
            else:
                log("a sweep over the whole fleet, installs simulated instantly")
                run_scenario(report, name, lambda: scale_sweep_scenario(stack, n))
    finally:
        if started:
            subprocess.run(RUN + ["down"], cwd=ROOT, stdout=subprocess.DEVNULL)

    summarize(report)
    os.makedirs(os.path.dirname(REPORT), exist_ok=True)
    with open(REPORT, "w") as f:
        json.dump(report, f, indent=2)
    print(table(report))
    print(f"\nReport: {os.path.relpath(REPORT, ROOT)}")
    if report.get("failed"):
        print(f"FAILED scenarios: {', '.join(sorted(report['failed']))} (their figures are absent)")
    return exit_status(report)


if __name__ == "__main__":
    sys.exit(main())
