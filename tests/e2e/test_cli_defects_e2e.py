"""The operator CLI's defects found by trying it as a new user would (issue 12), end to end on the local stack:
execution names that collide within a second, "started" said of an execution that was not started, negative
numbers refused as unknown arguments, and status showing the execution's name as the run's source."""
import json
import os
import re
import subprocess
import time

import pytest

from fleet import ROOT, OUTPUTS

pytestmark = pytest.mark.e2e

CLI = ROOT / "target" / "debug" / "fleet-install"


def argv(stack, *args, output="json"):
    return [str(CLI), "--endpoint-url", stack.endpoint, "--outputs-file", str(OUTPUTS), "--output", output, *args]


def cli(stack, *args, output="json", timeout=300):
    """The CLI as an operator runs it: with nothing but the stack's OperatorPolicy (IAM is enforced)."""
    return subprocess.run(argv(stack, *args, output=output), env=stack.operator_env(), capture_output=True, text=True,
                          timeout=timeout)


def test_negative_numbers_are_usage_errors_that_say_what_the_option_takes():
    """No stack needed: the value is refused while the arguments are parsed, before any AWS call."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    for args, says in [
        (["rollout", "--tag", "team=web", "--canary", "-1"], "must be 0 or more"),
        (["preview", "--tag", "team=web", "--wave-size", "-5"], "must be at least 1"),
        (["rollout", "--tag", "team=web", "--wave-percent", "-10"], "greater than 0 and at most 100"),
        (["rollout", "--tag", "team=web", "--max-failure-ratio", "-0.1"], "between 0 and 1"),
        (["rollout", "--tag", "team=web", "--pause", "-30"], "must be 0 or more"),
    ]:
        r = subprocess.run([str(CLI), "--endpoint-url", "http://127.0.0.1:9", "--region", "us-east-1", *args],
                           env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, (args, r.stderr)
        assert "unexpected argument" not in r.stderr, r.stderr
        assert args[3] in r.stderr and says in r.stderr, (args, r.stderr)
        assert r.stdout == ""


def test_two_replays_within_a_second_start_two_executions_and_status_shows_their_source(stack):
    since = time.time() - 1
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since))
    flaky = stack.launch(2, {"fleet-sim:fail-attempts": "3"})  # fails all 3 attempts, then works
    first_runs = stack.wait_for_executions(at_least=1, timeout=180, since=since)
    assert {stack.ledger()[i]["state"] for i in flaky} == {"failed"}
    again = time.time()
    # Both at once, so that both read the ledger before either execution claims the instances (a replay
    # started later finds them in progress, no longer failed) and both start within the same second.
    env = stack.operator_env()
    procs = [subprocess.Popen(argv(stack, "replay", "--failed-since", stamp), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    runs = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    for out, err, rc in runs:
        assert rc == 0, out + err
    rows = [json.loads(out)["executions"] for out, _, _ in runs]
    assert all(len(x) == 1 for x in rows), rows
    (a,), (b,) = rows
    assert a["action"] == b["action"] == "started", rows
    assert a["name"] != b["name"] and a["executionArn"] != b["executionArn"], rows
    for row in (a, b):
        assert re.fullmatch(r"replay-\d{8}T\d{6}-[0-9a-f]{8}-1", row["name"]), row["name"]
    stack.wait_for_executions(at_least=2, timeout=240, since=again)
    assert {stack.ledger()[i]["state"] for i in flaky} == {"installed"}
    for row in (a, b):
        s = cli(stack, "status", row["name"])
        assert s.returncode == 0, s.stdout + s.stderr
        status = json.loads(s.stdout)
        assert (status["name"], status["source"]) == (row["name"], "replay"), status
    table = cli(stack, "status", a["name"], output="table").stdout
    assert "\nSource     replay\n" in table and f"\nName       {a['name']}\n" in table, table
    # the install that EC2's running events started
    launched = next(e for e in first_runs if not e["name"].startswith("replay-"))
    s = cli(stack, "status", launched["executionArn"])
    assert s.returncode == 0, s.stdout + s.stderr
    assert json.loads(s.stdout)["source"] == "ec2-running", s.stdout


def test_a_rollout_name_already_running_is_not_reported_started(stack):
    since = time.time()
    stack.launch(3, {"team": "cli-defects", "fleet-sim:existing": "true"})
    name = "rollout-cli-defects-" + time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    # the pause after the canary keeps the rollout running while it is started again
    args = ["rollout", "--tag", "team=cli-defects", "--canary", "1", "--wave-size", "1",
            "--max-failure-ratio", "0.5", "--pause", "3600", "--name", name]
    first = cli(stack, *args)
    assert first.returncode == 0, first.stdout + first.stderr
    started = json.loads(first.stdout)
    assert started["name"] == name and started["executionArn"].endswith(":" + name), started
    try:
        again = cli(stack, *args)
        assert again.returncode == 2, again.stdout + again.stderr
        out = json.loads(again.stdout)
        assert out["started"] is False and out["executionArn"] == started["executionArn"], out
        assert out["status"] == "RUNNING" and "nothing was started" in out["reason"], out
        table = cli(stack, *args, output="table")
        assert table.returncode == 2 and "Started" not in table.stdout, table.stdout
        assert f"Not started  {name}: an execution of this name already exists (RUNNING since " in table.stdout
        # the canary's install execution: status names the rollout and the wave as its source
        canary = stack.wait_for_executions(at_least=1, timeout=180, since=since)
        child = next(e for e in canary if e["name"].startswith(name + "-w0"))
        s = cli(stack, "status", child["name"])
        assert s.returncode == 0, s.stdout + s.stderr
        status = json.loads(s.stdout)
        assert (status["name"], status["source"]) == (child["name"], f"rollout {name} wave 0"), status
    finally:
        stack.sfn.stop_execution(executionArn=started["executionArn"])
