"""`make bench` reports honestly: a scenario that fails makes it exit non-zero, and its figures are absent, never
replaced by another scenario's (a failed 100,000-target rollout once printed `max_history_events, 100,000 targets: 37`,
the 10,000-instance rollout's install history). No local stack needed: the scenarios are stand-ins."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "scenarios"))

import bench  # noqa: E402


def rows(text: str) -> dict[str, list[str]]:
    """The table's rows: label -> the other columns (columns are two or more spaces apart)."""
    import re

    out = {}
    for line in text.splitlines()[1:]:
        cells = re.split(r"\s{2,}", line.strip())
        out[cells[0]] = cells[1:]
    return out


def rollout_figures(instances=10_000, install_history=37, payload=30_000):
    api = {"byOperation": {"ssm.SendCommand": {"calls": 200, "floor": 200}}, "calls": 200, "floor": 200, "ratio": 1.0}
    return {"instances": instances, "api": api, "transitionsPerInstance": 0.014, "cost": {"usdPer1000Instances": 0.0005},
            "rolloutHistoryEvents": 30, "installMaxHistoryEvents": install_history, "maxPayloadBytes": payload}


def scale_figures(status="SUCCEEDED", history=1_004):
    return {"targets": 100_000, "status": status, "maxHistoryEvents": history, "maxPayloadBytes": 31_000,
            "listInvocations": 11, "listPagesRead": [10] * 10 + [1], "listPages": 101, "listMaxPages": 10,
            "maxListPagesPerInvocation": 10, "listSeconds": 120.0, "instanceIds": ["i-0123456789abcdef0"],
            **({} if status == "SUCCEEDED" else {"error": "States.Timeout", "cause": "Plan Waves timed out"})}


def test_a_failed_scale_rollout_fails_the_bench_and_leaves_its_figures_out(monkeypatch):
    # the rollout at scale ran to its end but did not succeed: its history is short (the failure came early)
    monkeypatch.setattr(bench.scale, "rollout_at_scale", lambda stack, targets, log: scale_figures("FAILED", history=9))
    report = {}
    bench.run_scenario(report, "rollout", lambda: rollout_figures(install_history=37))
    assert bench.run_scenario(report, "scale", lambda: bench.scale_scenario(None, 100_000)) is None
    bench.summarize(report)

    assert "scale" not in report and "States.Timeout" in report["failed"]["scale"]
    assert bench.exit_status(report) == 1
    # each figure is the scenario's own: the rollout's 37 events stay the rollout's
    assert report["max_history_events"] == {"rollout": 37}
    assert "scale" not in report["max_payload_bytes"]
    text = bench.table(report)
    assert "100,000 targets" not in text, text
    assert rows(text)["max_history_events, 10,000 rollout"][0] == "37", text
    assert rows(text)["scale scenario"][0] == "FAILED", text


def test_a_scenario_that_gives_up_is_a_failure_and_the_others_still_count():
    report = {}

    def settle_timed_out():
        raise SystemExit("burst: not settled after 900 s (1000/1100 final)")
    bench.run_scenario(report, "burst", settle_timed_out)
    bench.run_scenario(report, "rollout", lambda: rollout_figures())
    bench.summarize(report)
    assert report["failed"] == {"burst": "burst: not settled after 900 s (1000/1100 final)"}
    assert "burst" not in report["api_calls_ratio"] and report["api_calls_ratio"] == {"rollout": 1.0}
    assert "demo_seconds" not in report  # the burst's wall time
    assert bench.exit_status(report) == 1
    assert rows(bench.table(report))["burst scenario"][0] == "FAILED"


def test_scenarios_that_succeed_exit_zero_with_every_figure_labelled_by_its_scenario(monkeypatch):
    monkeypatch.setattr(bench.scale, "rollout_at_scale", lambda stack, targets, log: scale_figures())
    report = {}
    bench.run_scenario(report, "rollout", lambda: rollout_figures(install_history=37))
    bench.run_scenario(report, "scale", lambda: bench.scale_scenario(None, 100_000))
    bench.summarize(report)
    assert bench.exit_status(report) == 0 and "failed" not in report
    assert report["max_history_events"] == {"rollout": 37, "scale": 1_004}
    assert "instanceIds" not in report["scale"]
    text = bench.table(report)
    assert rows(text)["max_history_events, 100,000 targets"] == ["1004", "< 25000", "met"], text
    assert rows(text)["list pages per invocation, 100,000 targets"][0].startswith("<= 10 (11 invocations"), text


def sweep_figures(instances=10_000, sent=0, ratio=1.0, list_pages=(10,), gone_pages=(10, 3)):
    api = {"byOperation": {"ec2.DescribeInstances": {"calls": 60, "floor": 60}}, "calls": 172, "floor": 170,
           "ratio": ratio}
    return {"instances": instances, "seconds": 21.5, "report": {"running": instances, "sent": sent},
            "installExecutions": 1 if sent else 0, "api": api, "transitionsPerInstance": 0.0012,
            "cost": {"usdPer1000Instances": 0.0001}, "maxHistoryEvents": 40, "maxPayloadBytes": 9_000, "maxPages": 10,
            "listPagesRead": list(list_pages), "listSeconds": 8.0, "gonePagesRead": list(gone_pages),
            "goneSeconds": 5.0, "maxPagesPerInvocation": max(list_pages + gone_pages)}


def test_sweep_rows_show_calls_against_their_floor_and_pages_per_invocation():
    report = {}
    bench.run_scenario(report, "sweep_not_compliant", lambda: sweep_figures(sent=500, ratio=1.05))
    bench.run_scenario(report, "sweep_compliant", lambda: sweep_figures(gone_pages=(10, 11)))
    bench.summarize(report)
    assert bench.exit_status(report) == 0
    assert report["api_calls_ratio"] == {"sweep_not_compliant": 1.05, "sweep_compliant": 1.0}
    assert report["sweep_seconds"] == {"sweep_not_compliant": 21.5, "sweep_compliant": 21.5}
    assert report["pages_per_invocation"] == {"sweep_not_compliant": 10, "sweep_compliant": 11}
    table = rows(bench.table(report))
    assert table["api calls / floor, sweep of 10,000, compliant"][0] == "172 / 170"
    assert table["api_calls_ratio, sweep of 10,000, 5 % not compliant"] == ["1.05", "<= 1.1", "met"]
    assert table["list pages per invocation, sweep of 10,000, compliant"][-1] == "met"
    # an invocation that read more pages than it may is shown, and missed
    assert table["gone pages per invocation, sweep of 10,000, compliant"][0].startswith("<= 11 (2 invocations")
    assert table["gone pages per invocation, sweep of 10,000, compliant"][-1] == "MISSED"


def test_a_failed_sweep_fails_the_bench_and_leaves_its_figures_out():
    report = {}

    def lock_held():
        raise bench.ScenarioFailed("the sweep bench-sweep-compliant-1 did not run: another sweep held the lock")
    bench.run_scenario(report, "sweep_not_compliant", lambda: sweep_figures(sent=500))
    bench.run_scenario(report, "sweep_compliant", lock_held)
    bench.summarize(report)
    assert bench.exit_status(report) == 1
    assert "sweep_compliant" not in report["api_calls_ratio"] and "sweep_compliant" not in report["sweep_seconds"]
    text = bench.table(report)
    assert not [k for k in rows(text) if k.endswith(", compliant")], text
    assert rows(text)["sweep_seconds, sweep of 10,000, 5 % not compliant"][0].startswith("21.5 (sent 500")
    assert rows(text)["sweep_compliant scenario"][0] == "FAILED"


def test_the_sweep_floor_counts_listing_pages_id_lookups_and_ledger_pages():
    calls = {"ec2.DescribeInstances": 62, "items:ec2.DescribeInstances": 10_400, "dynamodb.BatchGetItem": 100,
             "items:dynamodb.BatchGetItem": 10_000, "dynamodb.Scan": 13, "dynamodb.UpdateItem": 1,
             "items:dynamodb.UpdateItem": 1, "dynamodb.DeleteItem": 1, "items:dynamodb.DeleteItem": 1,
             "bench:ec2.DescribeInstances": 11, "internal:states.StartExecution": 1}
    api = bench.sweep_api_figures(calls, running=10_000, ledger=(12_345, 4_000_000))
    ops = api["byOperation"]
    # 10 listing pages of 1,000 + 10,400 ids / 200
    assert ops["ec2.DescribeInstances"]["floor"] == 10 + 52
    assert ops["dynamodb.BatchGetItem"]["floor"] == 100
    assert ops["dynamodb.Scan"]["floor"] == 13
    assert api["calls"] == 62 + 100 + 13 + 1 + 1 and api["floor"] == 62 + 100 + 13 + 1 + 1 and api["ratio"] == 1.0
    assert "bench:ec2.DescribeInstances" not in ops
    # a ledger of large items (sweep chunks of 1,000 ids) takes a page per MB
    big = bench.sweep_api_figures(calls, running=10_000, ledger=(12_345, 25_500_000))
    assert big["byOperation"]["dynamodb.Scan"]["floor"] == 26


def test_item_sizes_count_names_and_values_as_the_page_limit_does():
    item = {"instanceId": {"S": "i-0123456789abcdef0"}, "attempts": {"N": "3"},
            "instanceIds": {"L": [{"S": "i-0123456789abcdef0"}, {"S": "i-0123456789abcdef1"}]},
            "summary": {"M": {"ok": {"BOOL": True}}}}
    assert sum(len(k) + bench.item_bytes(v) for k, v in item.items()) == (10 + 19) + (8 + 1) + (11 + 38) + (7 + 3)


def test_sweep_pages_per_invocation_come_from_the_list_and_gone_states_outputs():
    import datetime
    import json

    t = datetime.datetime(2026, 12, 2, tzinfo=datetime.timezone.utc)
    events = []

    def state(name, output, at):
        events.append({"type": "TaskStateEntered", "timestamp": t + datetime.timedelta(seconds=at),
                       "stateEnteredEventDetails": {"name": name}})
        events.append({"type": "TaskStateExited", "timestamp": t + datetime.timedelta(seconds=at + 1),
                       "stateExitedEventDetails": {"name": name, "output": json.dumps(output)}})
    state("List Running Instances", {"pages": 10, "nextToken": "x"}, 0)
    state("List Running Instances", {"pages": 1, "nextToken": None}, 2)
    state("Find Gone Instances", {"pages": 3, "cursor": None}, 5)
    f = bench.scale.sweep_page_figures(events)
    assert f["listPagesRead"] == [10, 1] and f["listInvocations"] == 2 and f["listSeconds"] == 3.0
    assert f["gonePagesRead"] == [3] and f["maxPagesPerInvocation"] == 10
