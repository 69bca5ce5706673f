"""`fleet-install run`, `output`, `cancel` and `status` of a run, as an operator runs them (nothing but the
stack's OperatorPolicy), end to end on the local stack: any allowed SSM command document across a fleet in canary
waves with a failure budget, results kept apart from the install ledger.

The simulated agent runs AWS-RunShellScript and AWS-RunPowerShellScript from the instances' tags
(fleet-sim:run-*; local-stack/README.md). Instances are launched as "existing" (no EC2 running event), so no
install runs on them unless a test wants one."""
import json
import subprocess
import time

import pytest

from fleet import OUTPUTS, ROOT

pytestmark = pytest.mark.e2e

CLI = ROOT / "target" / "debug" / "fleet-install"


def cli(stack, *args, output="json", timeout=600):
    argv = [str(CLI), "--endpoint-url", stack.endpoint, "--outputs-file", str(OUTPUTS), "--output", output, *args]
    return subprocess.run(argv, env=stack.operator_env(), capture_output=True, text=True, timeout=timeout)


def results(stack, run: str) -> dict[str, dict]:
    """The run's results by instance, straight from the table (batch markers left out)."""
    out, kw = {}, {}
    while True:
        page = stack.ddb.query(TableName=stack.outputs["RunResultsTableName"], ConsistentRead=True,
                               KeyConditionExpression="runId = :r",
                               ExpressionAttributeValues={":r": {"S": run}}, **kw)
        for item in page["Items"]:
            key = item["instanceId"]["S"]
            if not key.startswith("#"):
                out[key] = {k: next(iter(v.values())) for k, v in item.items()}
        if "LastEvaluatedKey" not in page:
            return out
        kw = {"ExclusiveStartKey": page["LastEvaluatedKey"]}


def rollout_arn(stack, name: str) -> str:
    return stack.outputs["RolloutStateMachineArn"].replace(":stateMachine:", ":execution:") + ":" + name


def run_chunks(stack, name: str) -> list[dict]:
    return [e for e in stack.executions("RunStateMachineArn") if e["name"].startswith(f"{name}-w")]


def count_commands(stack) -> int:
    return sum(len(p["Commands"]) for p in stack.ssm.get_paginator("list_commands").paginate())


def windows_image(stack) -> str:
    return next(i["ImageId"] for i in stack.ec2.describe_images()["Images"]
                if (i.get("Platform") or "").lower() == "windows")


def existing(stack, count: int, team: str, image_id: str | None = None, profile: bool = True, **tags) -> list[str]:
    return stack.launch(count, {"team": team, "fleet-sim:existing": "true", **tags}, image_id=image_id, profile=profile)


def test_a_shell_script_runs_across_a_mixed_fleet_of_300_with_a_canary_and_a_failure_budget(stack):
    """240 Linux and 56 Windows instances, one document per family; 4 Linux instances exit 3 and 4 have no
    instance profile (unreachable). The budget is per wave and the canary's 10 are a shuffle of the targets, so
    it is set to hold even when all 4 failures land in the canary (0.4); the run over budget is the next test.
    Every instance ends with a result; none is written to the install ledger."""
    team = "run300"
    linux = existing(stack, 240, team, **{"fleet-sim:run-output": "disk ok\\nload 0.1"})
    windows = existing(stack, 56, team, image_id=windows_image(stack))
    failing = linux[:4]
    for i in failing:
        stack.ec2.create_tags(Resources=[i], Tags=[{"Key": "fleet-sim:run-outcome", "Value": "Failed"},
                                                    {"Key": "fleet-sim:run-exit-code", "Value": "3"}])
    unreachable = existing(stack, 4, team, profile=False)
    name = "e2e-run-300"
    r = cli(stack, "run", "--document", "linux=AWS-RunShellScript", "--document", "windows=AWS-RunPowerShellScript",
            "--parameter", "commands=df -h", "--parameter", "commands=uptime", "--tag", f"team={team}",
            "--canary", "10", "--wave-percent", "50", "--max-failure-ratio", "0.45", "--name", name, "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert report["withinBudget"] is True and report["status"] == "SUCCEEDED", report
    assert [w["label"] for w in report["waves"]][0] == "canary"
    assert sum(w["instances"] for w in report["waves"]) == 300
    assert report["run"]["byOutcome"] == {"succeeded": 292, "failed": 4, "unreachable": 4}, report["run"]

    res = results(stack, name)
    assert len(res) == 300
    assert {i for i, x in res.items() if x["outcome"] == "failed"} == set(failing)
    assert all(res[i]["exitCode"] == "3" and res[i]["status"] == "Failed" for i in failing)
    assert {i for i, x in res.items() if x["outcome"] == "unreachable"} == set(unreachable)
    assert all("not a managed instance" in res[i]["reason"] for i in unreachable), [res[i] for i in unreachable]
    # one document per family, through the routing
    assert {res[i]["document"] for i in windows} == {"AWS-RunPowerShellScript"}
    assert {res[i]["document"] for i in linux} == {"AWS-RunShellScript"}
    # the canary held both families (Linux/UNIX and Windows)
    canary = [i for i, x in res.items() if x.get("wave") == "0"]
    assert len(canary) == 10 and {i in windows for i in canary} == {True, False}, canary
    # output: the last lines, and where the full output is
    ok = linux[10] if linux[10] not in failing else linux[11]
    assert res[ok]["output"].endswith("disk ok\nload 0.1"), res[ok]
    assert res[ok]["logGroup"] == stack.outputs["CommandOutputLogGroupName"]
    assert res[ok]["logStream"] == f"{res[ok]['commandId']}/{ok}/aws-runShellScript/stdout"
    logs = stack.logs.get_log_events(logGroupName=res[ok]["logGroup"], logStreamName=res[ok]["logStream"])
    assert "load 0.1" in "".join(e["message"] for e in logs["events"])
    one = cli(stack, "output", name, "--instance", failing[0], output="table")
    assert one.returncode == 0, one.stderr
    assert "exit status 3" in one.stdout and f"/{failing[0]}/aws-runShellScript/stdout" in one.stdout, one.stdout
    table = cli(stack, "output", name, output="table")
    assert table.returncode == 0 and table.stdout.count("\ni-") == 300, table.stdout[-2000:]
    # status shows the run's waves and outcomes
    status = cli(stack, "status", name, output="table")
    assert status.returncode == 0, status.stderr
    assert "SUCCEEDED" in status.stdout and "UNREACHABLE" in status.stdout and "Source     run" in status.stdout
    # an ad-hoc run never writes the install ledger
    ledger = stack.ledger()
    assert not [i for i in res if i in ledger], "a run wrote install ledger items"


def test_a_run_over_budget_stops_after_its_canary_and_wait_exits_1(stack):
    ids = existing(stack, 12, "run-bad", **{"fleet-sim:run-outcome": "Failed"})
    name = "e2e-run-bad"
    argv = ["run", "--document", "AWS-RunShellScript", "--parameter", "commands=false", "--tag", "team=run-bad",
            "--canary", "3", "--wave-size", "3", "--max-failure-ratio", "0.2", "--name", name, "--wait"]
    r = cli(stack, *argv)
    assert r.returncode == 1, r.stdout + r.stderr
    # a scheduler's retry of the same step follows the run it started, and starts nothing
    again = cli(stack, *argv)
    assert again.returncode == 1 and "following run e2e-run-bad" in again.stderr, again.stdout + again.stderr
    assert "FailureBudgetExceeded" in r.stderr or "budget" in r.stderr.lower(), r.stderr
    d = stack.sfn.describe_execution(executionArn=rollout_arn(stack, name))
    assert d["status"] == "FAILED" and d["error"] == "FleetInstall.FailureBudgetExceeded", d
    res = results(stack, name)
    assert len(res) == 3 and all(x["outcome"] == "failed" for x in res.values()), res
    assert set(res) <= set(ids)
    assert len(run_chunks(stack, name)) == 1


def test_a_command_of_40_minutes_completes_and_one_past_its_timeout_is_stopped(stack):
    """Scaled: fleet-sim:time-scale 0.01 runs 2,400 simulated seconds in 24 real ones, and scales the execution
    timeout the same way (3,600 s: the document's default). Nothing in the workflow bounds the command below
    48 hours (a contract test reads the deployed timeouts)."""
    scale = {"fleet-sim:time-scale": "0.01"}
    forty = existing(stack, 2, "run-long", **scale, **{"fleet-sim:run-seconds": "2400"})
    (too_long,) = existing(stack, 1, "run-long", **scale, **{"fleet-sim:run-seconds": "4000"})
    name = "e2e-run-long"
    r = cli(stack, "run", "--document", "AWS-RunShellScript", "--parameter", "commands=./migrate.sh",
            "--tag", "team=run-long", "--canary", "0", "--wave-size", "10", "--max-failure-ratio", "0.5",
            "--name", name, "--wait", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    res = results(stack, name)
    assert all(res[i]["outcome"] == "succeeded" for i in forty), [res[i] for i in forty]
    assert (res[too_long]["outcome"], res[too_long]["status"]) == ("failed", "TimedOut"), res[too_long]
    # the workflow waited, not a Lambda: the chunk's history polls with Wait states
    (chunk,) = run_chunks(stack, name)
    events = stack.sfn.get_execution_history(executionArn=chunk["executionArn"], maxResults=1000)["events"]
    waits = [e for e in events if e["type"] == "WaitStateEntered"]
    assert len(waits) >= 3, len(waits)


def test_cancel_stops_the_commands_in_flight_and_records_them_cancelled(stack):
    ids = existing(stack, 4, "run-cancel", **{"fleet-sim:run-seconds": "900"})
    name = "e2e-run-cancel"
    r = cli(stack, "run", "--document", "AWS-RunShellScript", "--parameter", "commands=sleep 900",
            "--tag", "team=run-cancel", "--canary", "0", "--wave-size", "10", "--name", name)
    assert r.returncode == 0, r.stdout + r.stderr
    deadline = time.time() + 180
    while not (len(res := results(stack, name)) == 4 and all(x["outcome"] == "running" for x in res.values())):
        assert time.time() < deadline, res
        time.sleep(1)
    c = cli(stack, "cancel", name)
    assert c.returncode == 0, c.stdout + c.stderr
    report = json.loads(c.stdout)
    assert sorted(report["cancelled"]) == sorted(ids), report
    assert len(report["commandsCancelled"]) == 1
    res = results(stack, name)
    assert all(x["outcome"] == "cancelled" and x["status"] == "Cancelled" for x in res.values()), res
    command = next(iter(res.values()))["commandId"]
    invocations = stack.ssm.list_command_invocations(CommandId=command)["CommandInvocations"]
    assert {i["Status"] for i in invocations} == {"Cancelled"}, invocations
    d = stack.sfn.describe_execution(executionArn=rollout_arn(stack, name))
    assert (d["status"], d.get("error")) == ("ABORTED", "FleetInstall.Cancelled"), d
    chunks = run_chunks(stack, name)
    assert chunks and all(e["status"] == "ABORTED" for e in chunks), chunks
    # a second cancel finds nothing left to do
    again = json.loads(cli(stack, "cancel", name).stdout)
    assert again["cancelled"] == [] and again["executionsStopped"] == [], again


def test_an_ad_hoc_run_leaves_the_install_ledger_items_of_its_instances_as_they_were(stack):
    ids = stack.launch(3, {"team": "run-ledger", "fleet-sim:install-seconds": "1"})
    deadline = time.time() + 240
    while not all(stack.ledger().get(i, {}).get("state") == "installed" for i in ids):
        assert time.time() < deadline, [stack.ledger().get(i) for i in ids]
        time.sleep(1)
    before = {i: stack.ledger()[i] for i in ids}
    name = "e2e-run-ledger"
    r = cli(stack, "run", "--document", "AWS-RunShellScript", "--parameter", "commands=systemctl status agent",
            "--instance-ids", ",".join(ids), "--canary", "1", "--wave-size", "10", "--name", name, "--wait")
    assert r.returncode == 0, r.stdout + r.stderr
    assert {x["outcome"] for x in results(stack, name).values()} == {"succeeded"}
    after = stack.ledger()
    assert {i: after[i] for i in ids} == before


def test_bad_parameters_and_documents_outside_the_allowlist_are_refused_before_anything_starts(stack):
    (target,) = existing(stack, 1, "run-refused")
    rollouts = len(stack.executions("RolloutStateMachineArn"))
    commands = count_commands(stack)
    base = ["run", "--instance-ids", target, "--name", "e2e-run-refused"]
    for args, says in [
        (["--document", "AWS-RunShellScript", "--parameter", "commands=ls", "--parameter", "comands=ls"],
         '"comands" is not declared by document AWS-RunShellScript'),
        (["--document", "AWS-RunShellScript", "--parameter", "workingDirectory=/tmp"], '"commands" is required'),
        (["--document", "AWS-RunShellScript", "--parameter", "commands=ls", "--parameter", "executionTimeout=172801"],
         '"executionTimeout"'),
        (["--document", "AWS-UpdateSSMAgent"], "AWS-UpdateSSMAgent is not in the stack's allowlist"),
        (["--document", "AWS-RunShellScript", "--parameter", "commands=ls", "--execution-timeout", "200000"],
         "--execution-timeout"),
    ]:
        r = cli(stack, *base, *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert says in r.stderr, (args, r.stderr)
    assert len(stack.executions("RolloutStateMachineArn")) == rollouts
    assert count_commands(stack) == commands
    assert results(stack, "e2e-run-refused") == {}
