"""`fleet-install compliance` and `fleet-install sweep`, as an operator runs them (with nothing but the stack's
OperatorPolicy), end to end on the local stack.

compliance and the sweep look at every running instance of the account, so the totals are checked against
what EC2 lists at that moment, and the expectations per instance only for the instances a test launched."""
import json
import subprocess
import time

import pytest

from fleet import OUTPUTS, ROOT

pytestmark = pytest.mark.e2e

CLI = ROOT / "target" / "debug" / "fleet-install"
BUCKETS = {"compliant", "not_compliant", "skipped", "opted_out"}


def cli(stack, *args, output="json", timeout=600):
    env = stack.operator_env()
    argv = [str(CLI), "--endpoint-url", stack.endpoint, "--outputs-file", str(OUTPUTS), "--output", output, *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)


def running_ids(stack) -> list[str]:
    return [i["InstanceId"]
            for page in stack.ec2.get_paginator("describe_instances").paginate(
                Filters=[{"Name": "instance-state-name", "Values": ["running"]}])
            for r in page["Reservations"] for i in r["Instances"]]


def wait_for_ledger(stack, expected: dict[str, tuple[str, str]], timeout=240) -> dict:
    """Until every instance has its (state, reasonCode) in the ledger."""
    deadline = time.time() + timeout
    while True:
        ledger = stack.ledger()
        got = {i: (ledger.get(i, {}).get("state"), ledger.get(i, {}).get("reasonCode")) for i in expected}
        if got == expected:
            return ledger
        if time.time() > deadline:
            raise AssertionError(f"ledger after {timeout}s: {got} != {expected}")
        time.sleep(1)


def compliance(stack, *args) -> dict:
    run = cli(stack, "compliance", *args)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_compliance_puts_every_running_instance_in_exactly_one_bucket(stack):
    installed = stack.launch(2, {"fleet-sim:platform": "Linux|Ubuntu|22.04"})
    (no_profile,) = stack.launch(1, profile=False)
    (opted_out,) = stack.launch(1, {"fleet-install:opt-out": "true"})
    (macos,) = stack.launch(1, {"fleet-sim:platform": "MacOS|macOS|14.2"})
    (never_seen,) = stack.launch(1, {"fleet-sim:existing": "true"})  # running before the stack: no event
    (stopped,) = stack.launch(1, {"fleet-sim:existing": "true"})
    stack.ec2.stop_instances(InstanceIds=[stopped])
    wait_for_ledger(stack, {
        **{i: ("installed", "Installed") for i in installed},
        no_profile: ("unmanaged", "NoInstanceProfile"),
        opted_out: ("skipped", "OptedOut"),
        macos: ("skipped", "NoRoute"),
    })
    running = running_ids(stack)
    report = compliance(stack, "--instances")

    # the totals: every running instance, and only those, each in exactly one bucket
    assert report["running"] == len(running)
    assert set(report["byBucket"]) == BUCKETS
    assert sum(report["byBucket"].values()) == report["running"]
    listed = [i["instanceId"] for i in report["instances"]]
    assert len(listed) == len(set(listed)), "an instance is in two buckets"
    assert sorted(listed) == sorted(running)
    assert stopped not in listed
    assert sum(sum(b.values()) for b in report["byPlatform"].values()) == report["running"]
    assert sum(report["byReason"].values()) == report["byBucket"]["not_compliant"]
    should = report["running"] - report["byBucket"]["opted_out"]
    assert report["ratio"] == pytest.approx(report["byBucket"]["compliant"] / should)

    # each of this test's instances in the bucket its ledger item and tags imply
    mine = {i["instanceId"]: (i["bucket"], i.get("reason")) for i in report["instances"]}
    assert {mine[i] for i in installed} == {("compliant", None)}
    assert mine[no_profile] == ("not_compliant", "NoInstanceProfile")
    assert mine[opted_out] == ("opted_out", None)
    assert mine[macos] == ("skipped", "NoRoute")
    assert mine[never_seen] == ("not_compliant", "NeverSeen")
    assert report["byPlatform"]["Ubuntu"]["compliant"] >= 2
    oldest = report["oldestNotCompliant"]
    assert oldest["instanceId"] in {i["instanceId"] for i in report["instances"] if i["bucket"] == "not_compliant"}
    # the pre-existing instance was launched "a week back": it is the oldest not compliant
    assert oldest["ageHours"] >= 24 * 6, oldest

    # the breakdowns, as tables
    by_platform = cli(stack, "compliance", "--by", "platform", output="table")
    assert by_platform.returncode == 0, by_platform.stderr
    assert "PLATFORM" in by_platform.stdout and "\nUbuntu " in by_platform.stdout, by_platform.stdout
    by_reason = cli(stack, "compliance", "--by", "reason", output="table")
    assert by_reason.returncode == 0, by_reason.stderr
    assert "NeverSeen" in by_reason.stdout and "NoRoute" in by_reason.stdout, by_reason.stdout
    bad = cli(stack, "compliance", "--by", "bucket")
    assert bad.returncode == 2 and "platform" in bad.stderr


def test_sweep_wait_installs_what_it_finds_and_reports_it(stack):
    ids = stack.launch(2, {"fleet-sim:existing": "true"})
    before = compliance(stack, "--instances")
    assert {i["instanceId"]: i.get("reason") for i in before["instances"] if i["instanceId"] in ids} == \
        {i: "NeverSeen" for i in ids}

    run = cli(stack, "sweep", "--wait")
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["status"] == "SUCCEEDED" and out["name"].startswith("sweep-"), out
    assert out["executionArn"].startswith(stack.outputs["SweepStateMachineArn"].replace(":stateMachine:", ":execution:"))
    report = out["report"]
    # the CLI shows the sweep's own report, unchanged
    described = stack.sfn.describe_execution(executionArn=out["executionArn"])
    assert report == json.loads(described["output"])
    assert report["work"]["neverSeen"] >= 2 and report["found"]["byReason"]["NeverSeen"] >= 2, report
    assert report["sent"] == sum(report["work"].values())
    assert report["installed"] >= 2 and report["failedExecutions"] == 0, report
    assert report["ratioAfter"] >= report["ratioBefore"]
    assert sum(report["found"]["byBucket"].values()) == report["running"]
    ledger = stack.ledger()
    assert {ledger[i]["state"] for i in ids} == {"installed"}
    # its install executions are named after it
    children = [e["name"] for e in stack.executions() if e["name"].startswith(out["name"] + "-c")]
    assert len(children) == report["installExecutions"] >= 1

    after = compliance(stack, "--instances")
    assert {i["instanceId"]: i["bucket"] for i in after["instances"] if i["instanceId"] in ids} == \
        {i: "compliant" for i in ids}

    # nothing left to do: the table says so
    again = cli(stack, "sweep", "--wait", output="table")
    assert again.returncode == 0, again.stderr
    assert "Status     SUCCEEDED" in again.stdout and "Compliance" in again.stdout, again.stdout
    assert "never seen          0" in again.stdout, again.stdout


def test_a_sweep_started_while_another_runs_names_it(stack):
    stack.launch(3, {"fleet-sim:existing": "true", "fleet-sim:install-seconds": "8"})
    first = cli(stack, "sweep")
    assert first.returncode == 0, first.stderr
    started = json.loads(first.stdout)
    assert started["verifyAll"] is False and started["name"].startswith("sweep-")
    arn = started["executionArn"]
    # once the first holds the lock (it lists the fleet), start another and wait for it
    deadline = time.time() + 60
    while not any(e.get("stateEnteredEventDetails", {}).get("name") == "List Running Instances"
                  for e in stack.sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]):
        assert time.time() < deadline, "the first sweep never took the lock"
        time.sleep(0.2)
    second = cli(stack, "sweep", "--wait")
    assert second.returncode == 0, second.stderr
    out = json.loads(second.stdout)
    assert out["status"] == "SUCCEEDED" and "report" not in out, out
    assert out["anotherSweepRunning"] == {"executionArn": arn, "name": started["name"]}
    assert out["name"] != started["name"]
    assert stack.wait_for_execution(arn, 300)["status"] == "SUCCEEDED"
    table = cli(stack, "sweep", "--wait", output="table")
    assert table.returncode == 0 and "Another sweep" not in table.stdout, table.stdout


def test_two_sweeps_started_in_the_same_second_do_not_collide(stack):
    runs = [subprocess.Popen([str(CLI), "--endpoint-url", stack.endpoint, "--outputs-file", str(OUTPUTS),
                              "--output", "json", "sweep"], env=stack.operator_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [r.communicate(timeout=60) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], outs
    started = [json.loads(o[0]) for o in outs]
    assert started[0]["name"] != started[1]["name"]
    results = [stack.wait_for_execution(s["executionArn"], 300) for s in started]
    assert [r["status"] for r in results] == ["SUCCEEDED", "SUCCEEDED"]


def test_a_failed_sweep_exits_2_and_says_why(stack):
    stack.inject_fault(function="sweep", times=1, errorType="FleetInstall.AwsRejected",
                       errorMessage="injected: the sweep's first step is refused")
    try:
        run = cli(stack, "sweep", "--wait")
    finally:
        stack.clear_faults()
    assert run.returncode == 2, (run.returncode, run.stdout, run.stderr)
    out = json.loads(run.stdout)
    assert out["status"] == "FAILED" and out["error"] == "FleetInstall.SweepFailed", out
    assert "injected: the sweep's first step is refused" in out["cause"]
    assert "FAILED" in run.stderr
