#!/usr/bin/env python3
"""`make bench`: what an install costs in API calls, state transitions, time and memory, on the local stack.

1. init_ms and rss_mb per function (bench_functions.py: release binaries under a Lambda Runtime API served here);
2. the local stack comes up (moto extended, the Rust functions under cargo lambda watch, the SQS poller);
3. a 1,100-instance launch burst shaped like the demo's: API calls per operation counted at the emulator,
   the install executions' state transitions, Lambda durations, and the wall time from the first running
   event to the last ledger write (demo_seconds);
4. a 10,000-instance rollout with real installs: API calls, transitions, the install executions' largest
   payload and history;
5. a 100,000-target rollout (installs simulated instantly, see scale.py): the largest payload and history;
6. a table of every figure against its target on stdout, and target/bench/report.json.

A scenario that fails (an exception, a settle that times out, a rollout that does not succeed) is listed under
"failed" in the report and as FAILED in the table, its figures are absent (never another scenario's in their
place: each figure is keyed by the scenario that measured it), the other scenarios still run, and the exit status
is 1.

    .venv/bin/python local-stack/scenarios/bench.py [--skip-functions] [--runs 5] [--rollout 10000] [--scale 100000]

The API floor of an operation is ceil(items / per-call limit), where items is what the calls carried, counted
at the emulator: instance ids for SendCommand (50 a call) and DescribeInstanceInformation (50), instance-id
filter values for DescribeInstances (200), items for DynamoDB writes (25, a batch write's limit, for
BatchWriteItem, TransactWriteItems and single writes alike). Polls (ListCommandInvocations) and lookups that are not
batched by instance count as measured: their floor is the call itself.
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

#: List prices (us-east-1): Step Functions Standard per transition; Lambda arm64 per GB-second and per request.
USD_PER_TRANSITION = 0.025 / 1000
USD_PER_GB_SECOND_ARM64 = 0.0000133334
USD_PER_REQUEST = 0.20 / 1_000_000
LAMBDA_GB = 128 / 1024

TARGETS = {
    "api_calls_ratio": ("<=", 1.1),
    "transitions_per_instance": ("<=", 0.05),
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
    figures = [scale.history_figures(stack.sfn, e["executionArn"]) for e in executions]
    api = api_figures(calls)
    transitions = sum(f["transitions"] for f in figures)
    by_state: dict[str, int] = {}
    for f in figures:
        for k, v in f["transitionsByState"].items():
            by_state[k] = by_state.get(k, 0) + v
    states = collections.Counter(ledger[i]["state"] for i in launched)
    return {
        "instances": n,
        "byState": dict(sorted(states.items())),
        # 20 % of the burst has agents too old for the install documents: their AWS-UpdateSSMAgent commands are
        # in the SendCommand calls and in the floor (instance ids per call), like the installs
        "agentUpdates": demo.agent_counts(ledger, launched),
        "executions": len(executions),
        "seconds": round(last_write - t0, 1),
        "api": api,
        "transitionsPerInstance": round(transitions / n, 4),
        "transitionsByState": dict(sorted(by_state.items(), key=lambda kv: -kv[1])),
        "cost": cost(transitions, api, n),
        "maxPayloadBytes": max(f["maxPayloadBytes"] for f in figures),
        "maxHistoryEvents": max(f["events"] for f in figures),
    }


def rollout(stack: Stack, n: int) -> dict:
    """A rollout with real installs over n managed, registered instances of a mixed fleet."""
    tag = f"bench-rollout-{int(time.time())}"
    mix = [(0.5, "Linux|Amazon Linux|2023"), (0.2, "Linux|Ubuntu|22.04"), (0.1, "Linux|Red Hat Enterprise Linux Server|8.9"),
           (0.05, "Linux|FreeBSD|14.1"), (0.15, "Windows|Microsoft Windows Server 2022 Datacenter|10.0.20348")]
    ids: list[str] = []
    for share, platform in mix:
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


def summarize(report: dict) -> dict:
    """The report's summary keys, each from the scenarios that succeeded, keyed by scenario: a failed scenario's
    figures are absent, never replaced by another scenario's."""
    ran = [k for k in ("burst", "rollout") if k in report]
    report["api_calls"] = {k: report[k]["api"]["byOperation"] for k in ran}
    report["api_calls_ratio"] = {k: report[k]["api"]["ratio"] for k in ran}
    report["transitions_per_instance"] = {k: report[k]["transitionsPerInstance"] for k in ran}
    report["usd_per_1000_instances"] = {k: report[k]["cost"]["usdPer1000Instances"] for k in ran}
    report["max_payload_bytes"] = {k: report[k]["maxPayloadBytes"] for k in ("burst", "rollout", "scale") if k in report}
    report["max_history_events"] = {}
    if "burst" in report:
        report["max_history_events"]["burst"] = report["burst"]["maxHistoryEvents"]
    if "rollout" in report:
        r = report["rollout"]
        report["max_history_events"]["rollout"] = max(r["rolloutHistoryEvents"], r["installMaxHistoryEvents"])
    if "scale" in report:
        report["max_history_events"]["scale"] = report["scale"]["maxHistoryEvents"]
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
    for fn, f in sorted((report.get("functions") or {}).items()):
        row(f"init_ms {fn}", "init_ms", f["init_ms"])
        row(f"rss_mb {fn}", "rss_mb", f["rss_mb"])
    if report.get("demo_seconds") is not None:
        rows.append(("demo_seconds (1,100 burst)", f"{report['demo_seconds']}", "", ""))
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
    ap.add_argument("--scale", type=int, default=100_000, help="targets of the rollout at scale (0: skip)")
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

    scenarios = [(name, n) for name, n in (("burst", args.burst), ("rollout", args.rollout), ("scale", args.scale)) if n]
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
            else:
                log(f"a {n:,}-target rollout, installs simulated instantly")
                run_scenario(report, "scale", lambda: scale_scenario(stack, n))
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
