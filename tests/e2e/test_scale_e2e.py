"""A 100,000-target rollout stays within Step Functions' limits (issue 4).

The fleet exists only in the emulator's EC2; the rollout workflow, plan-rollout and evaluate-wave are the real
ones; each chunk's install execution is an instant stand-in that reads the chunk from the ledger (see
local-stack/scenarios/scale.py). Runs in a session of its own (`pytest -m scale`) so that 100,000 instances do not slow
the other end-to-end tests down. Writes its figures to target/e2e/scale-100k.json and prints them.
"""
import json
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

