"""A 100,000-target rollout, and then a sweep of the 100,000-instance fleet, stay within Step Functions' limits
(issues 4 and 11).

The fleet exists only in the emulator's EC2; the rollout workflow, plan-rollout and evaluate-wave, the sweep workflow
and the sweep function are the real ones; each chunk's install execution is an instant stand-in that reads the chunk
from the ledger (see local-stack/scenarios/scale.py). Runs in a session of its own (`pytest -m scale`) so that
100,000 instances do not slow the other end-to-end tests down. Writes its figures to target/e2e/scale-100k.json and
target/e2e/scale-sweep-100k.json and prints them.
"""
import json
import math
import re
import sys

import pytest

from fleet import ROOT

sys.path.insert(0, str(ROOT / "local-stack" / "scenarios"))
import scale  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.scale]

PAYLOAD_LIMIT = 262_144
HISTORY_LIMIT = 25_000
#: plan-rollout's MAX_LIST_PAGES, as template.yaml sets it
MAX_LIST_PAGES = int(re.search(r'MAX_LIST_PAGES:\s*"?(\d+)', (ROOT / "template.yaml").read_text()).group(1))
#: the sweep function's MAX_LIST_PAGES, as template.yaml sets it
SWEEP_MAX_LIST_PAGES = int(re.search(r'\n  SweepFunction:\n(?:.*\n)*?\s+MAX_LIST_PAGES:\s*"?(\d+)',
                                     (ROOT / "template.yaml").read_text()).group(1))


def test_a_100k_target_rollout_stays_within_payload_and_history_limits(stack):
    r = scale.rollout_at_scale(stack, targets=100_000, canary=500, wave_percent=10, opted_out=100, timeout=1800)
    ids = r.pop("instanceIds")
    out = ROOT / "target" / "e2e" / "scale-100k.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(r, indent=2))
    print(f"\n100k rollout: {r['status']} in {r['seconds']} s; largest payload {r['maxPayloadBytes']} bytes "
          f"({r['maxPayloadAt']}), largest history {r['maxHistoryEvents']} events (rollout {r['rolloutHistoryEvents']}), "
          f"{r['childExecutions']} install executions; listing: {r['listInvocations']} invocations reading "
          f"{r['listPagesRead']} pages (at most {r['listMaxPages']} each) in {r['listSeconds']} s; "
          f"figures in {out.relative_to(ROOT)}")

    assert r["status"] == "SUCCEEDED", f"{r.get('error')}: {r.get('cause')}"
    assert r["maxPayloadBytes"] < PAYLOAD_LIMIT
    assert r["maxHistoryEvents"] < HISTORY_LIMIT
    # no invocation pages through the fleet: each list invocation read at most MAX_LIST_PAGES (10 in the template)
    # pages of 1,000, read from the function's own output in the history; 100,100 instances are 101 pages, so 11
    # invocations
    assert r["listMaxPages"] == MAX_LIST_PAGES
    assert r["maxListPagesPerInvocation"] <= MAX_LIST_PAGES, r["listPagesRead"]
    assert sum(r["listPagesRead"]) == r["listPages"] == 101, r["listPagesRead"]
    assert r["listInvocations"] == 11, r["listPagesRead"]
    # a canary of 500, then waves of 10 %: 1 + 10 waves, every target in exactly one wave
    assert [w["instances"] for w in r["waves"]] == [500] + [10_000] * 9 + [9_500]
    assert r["installedReported"] == 100_000

    # the chunks in the ledger hold every target exactly once, at most 1,000 to a chunk
    name = r["rolloutArn"].rsplit(":", 1)[1]
    chunks, kw = [], {"TableName": stack.outputs["LedgerTableName"]}
    while True:
        page = stack.ddb.scan(**kw)
        chunks += [it for it in page["Items"] if it.get("kind", {}).get("S") == "rolloutTargets"
                   and it["rolloutId"]["S"] == name]
        if "LastEvaluatedKey" not in page:
            break
        kw["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    members = [v["S"] for c in chunks for v in c["instanceIds"]["L"]]
    assert len(chunks) == r["childExecutions"] == 101
    assert max(len(c["instanceIds"]["L"]) for c in chunks) <= 1000
    assert len(members) == len(set(members)) == 100_000
    assert set(members) == set(ids)

    # the opted-out instances are recorded as skipped, not installed
    ledger = stack.ledger()
    skipped = [i for i, item in ledger.items() if item.get("reasonCode") == "OptedOut"]
    assert len(skipped) == r["optedOut"] == 100


def test_status_pages_through_a_history_longer_than_one_page(stack):
    """The 100k rollout's history is longer than GetExecutionHistory's largest page (1,000 events); the last
    waves are only on the second page, so `status` shows every wave only if it pages (the local stack pages
    like AWS: maxResults, nextToken)."""
    import os
    import subprocess

    run = json.loads((ROOT / "target" / "e2e" / "scale-100k.json").read_text())
    assert run["rolloutHistoryEvents"] > 1000, run["rolloutHistoryEvents"]
    arn = run["rolloutArn"]
    outputs = dict(stack.outputs, RolloutStateMachineArn=arn.replace(":execution:", ":stateMachine:").rsplit(":", 1)[0])
    path = ROOT / "target" / "e2e" / "scale-outputs.json"
    path.write_text(json.dumps(outputs))
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_REGION="us-east-1")
    r = subprocess.run([str(ROOT / "target" / "debug" / "fleet-install"), "--endpoint-url", stack.endpoint,
                        "--outputs-file", str(path), "--output", "json", "status", arn],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["kind"] == "rollout"
    assert len(report["waves"]) == 11, report["waves"]
    assert sum(w["instances"] for w in report["waves"]) == 100_000



def running_in_ec2(stack) -> int:
    """Running instances as EC2 counts them: DescribeInstanceStatus, which describes running instances only unless
    asked for all (20 s for 100,000 here, where DescribeInstances pages take 140 s)."""
    pages = stack.ec2.get_paginator("describe_instance_status").paginate(PaginationConfig={"PageSize": 1000})
    return sum(len(page["InstanceStatuses"]) for page in pages)


def test_a_sweep_of_the_100k_fleet_pages_across_invocations_within_payload_and_history_limits(stack):
    """After the rollout, the sweep lists the same fleet: 100,000 targets it has never seen installed (the stand-in
    wrote no ledger item for them) and 100 opted out. Every list invocation reads at most MAX_LIST_PAGES
    DescribeInstances pages, every gone invocation as many ledger Scan pages, and the work goes to 100 chunks."""
    rollout = json.loads((ROOT / "target" / "e2e" / "scale-100k.json").read_text())
    running = running_in_ec2(stack)
    assert running == rollout["targets"] + rollout["optedOut"] == 100_100

    s = scale.sweep_at_scale(stack, timeout=1800)
    out = ROOT / "target" / "e2e" / "scale-sweep-100k.json"
    out.write_text(json.dumps(s, indent=2))
    print(f"\n100k sweep: {s['status']} in {s['seconds']} s; list: {s['listInvocations']} invocations reading "
          f"{s['listPagesRead']} pages in {s['listSeconds']} s; gone: {s['goneInvocations']} reading "
          f"{s['gonePagesRead']} pages (at most {s['maxPages']} each); largest payload {s['maxPayloadBytes']} bytes "
          f"({s['maxPayloadAt']}), largest history {s['maxHistoryEvents']} events (sweep {s['sweepHistoryEvents']}, "
          f"{s['sweepTransitions']} transitions), {s['childExecutions']} install executions; figures in "
          f"{out.relative_to(ROOT)}")

    assert s["status"] == "SUCCEEDED", f"{s.get('error')}: {s.get('cause')}"
    assert s["maxPayloadBytes"] < PAYLOAD_LIMIT
    assert s["maxHistoryEvents"] < HISTORY_LIMIT
    # no invocation pages through the fleet or the ledger: at most the sweep function's MAX_LIST_PAGES (10 in the
    # template, as the stack runs it) pages each; 100,100 running instances are 101 pages, so 11 list invocations
    assert s["maxPages"] == SWEEP_MAX_LIST_PAGES == 10
    assert max(s["listPagesRead"] + s["gonePagesRead"]) <= SWEEP_MAX_LIST_PAGES, (s["listPagesRead"], s["gonePagesRead"])
    assert sum(s["listPagesRead"]) == math.ceil(running / 1000) == 101, s["listPagesRead"]
    assert s["listInvocations"] == 11 and s["goneInvocations"] >= 1, s

    # the report counts the fleet EC2 lists: the 100 opted out apart, the 100,000 never seen (no ledger item) sent
    r = s["report"]
    assert r["running"] == running
    assert r["found"]["byBucket"] == {"not_compliant": 100_000, "opted_out": 100}, r["found"]
    assert r["found"]["byReason"] == {"NeverSeen": 100_000}, r["found"]
    assert r["work"] == {"neverSeen": 100_000} and r["sent"] == 100_000, r
    assert r["installExecutions"] == s["childExecutions"] == 100 and r["failedExecutions"] == 0, r
    assert r["installed"] == 100_000 and r["gone"] == 0, r
    assert r["ratioBefore"] == 0.0 and r["ratioAfter"] == 1.0, r

    # the chunks in the ledger hold every never-seen instance exactly once, at most 1,000 to a chunk
    name = s["sweepArn"].rsplit(":", 1)[1]
    chunks, kw = [], {"TableName": stack.outputs["LedgerTableName"]}
    while True:
        page = stack.ddb.scan(**kw)
        chunks += [it for it in page["Items"] if it["instanceId"]["S"].startswith(f"sweep#{name}#c")]
        if "LastEvaluatedKey" not in page:
            break
        kw["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    members = [v["S"] for c in chunks for v in c["instanceIds"]["L"]]
    assert len(chunks) == 100 and max(len(c["instanceIds"]["L"]) for c in chunks) <= 1000
    assert len(members) == len(set(members)) == 100_000
    opted_out = {i for i, item in stack.ledger().items() if item.get("reasonCode") == "OptedOut"}
    assert len(opted_out) == 100 and not opted_out & set(members)
