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
