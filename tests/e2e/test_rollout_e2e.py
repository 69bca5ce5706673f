"""The rollout workflow and the operator CLI, end to end on the local stack."""
import json
import os
import subprocess
import time

import pytest

from fleet import ROOT, OUTPUTS

pytestmark = pytest.mark.e2e

CLI = ROOT / "target" / "debug" / "fleet-install"
SSM_POLICY = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
EC2_TRUST = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})
LAMBDA_TRUST = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": ["lambda.amazonaws.com"]}, "Action": "sts:AssumeRole"}]})


def cli(stack, *args, timeout=300):
    """The CLI as an operator runs it: with nothing but the stack's OperatorPolicy (IAM is enforced)."""
    env = stack.operator_env()
    argv = [str(CLI), "--endpoint-url", stack.endpoint, "--outputs-file", str(OUTPUTS), "--output", "json", *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)


def existing_fleet(stack, count, tag_value, **tags):
    """Instances running long before fleet-install: no launch event, registered with SSM long ago."""
    return stack.launch(count, {"team": tag_value, "fleet-sim:existing": "true", **tags})


def test_prereq_attaches_the_policy_exactly_where_needed(stack):
    import boto3

    iam = boto3.client("iam", endpoint_url=stack.endpoint, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    iam.create_role(RoleName="e2e-web", AssumeRolePolicyDocument=EC2_TRUST)
    iam.create_role(RoleName="e2e-ready", AssumeRolePolicyDocument=EC2_TRUST)
    iam.attach_role_policy(RoleName="e2e-ready", PolicyArn=SSM_POLICY)
    iam.create_role(RoleName="e2e-lambda", AssumeRolePolicyDocument=LAMBDA_TRUST)

    def attached(role):
        return [p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]]

    dry = cli(stack, "prereq")
    assert dry.returncode == 0, dry.stderr
    assert SSM_POLICY not in attached("e2e-web"), "prereq without --apply changed a role"
    assert json.loads(dry.stdout)["dryRun"] is True
    alias = cli(stack, "prereq", "--dry-run")
    assert alias.returncode == 0, alias.stderr
    assert SSM_POLICY not in attached("e2e-web"), "--dry-run changed a role"
    other = cli(stack, "prereq", "--apply", "--policy-arn", "arn:aws:iam::aws:policy/AdministratorAccess")
    assert other.returncode == 2 and "--allow-any-policy" in other.stderr, other.stderr
    assert attached("e2e-web") == [], "an unconfirmed --policy-arn was attached"
    run = cli(stack, "prereq", "--apply")
    assert run.returncode == 0, run.stderr
    assert attached("e2e-web") == [SSM_POLICY]
    assert attached("e2e-ready") == [SSM_POLICY]
    assert attached("e2e-lambda") == [], "a role EC2 cannot assume was changed"
    report = json.loads(run.stdout)
    text = json.dumps(report)
    assert "e2e-web" in text and "e2e-lambda" not in text
    assert report["dryRun"] is False and report["unreadableRoles"] == []


@pytest.mark.expect_denials
def test_the_operator_policy_lets_prereq_attach_nothing_but_the_instance_policies(stack):
    """Confirmed with --allow-any-policy, another policy passes the CLI's own check, and then IAM refuses it:
    OperatorPolicy allows iam:AttachRolePolicy only for AmazonSSMManagedInstanceCore and CommandOutputWriterPolicy."""
    import boto3

    iam = boto3.client("iam", endpoint_url=stack.endpoint, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    iam.create_role(RoleName="e2e-admin-bait", AssumeRolePolicyDocument=EC2_TRUST)
    admin = "arn:aws:iam::aws:policy/AdministratorAccess"
    run = cli(stack, "prereq", "--apply", "--policy-arn", admin, "--allow-any-policy")
    assert run.returncode != 0, run.stdout
    assert admin not in [p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName="e2e-admin-bait")["AttachedPolicies"]]
    denied = stack.iam_denials()
    assert any(d["action"] == "iam:AttachRolePolicy" and d["resource"].endswith("role/e2e-admin-bait") for d in denied), denied
    assert "e2e-admin-bait" in run.stdout
    # the CLI says why, in IAM's words
    assert "AccessDenied" in run.stdout and "iam:AttachRolePolicy" in run.stdout, run.stdout


def test_a_canary_over_budget_stops_the_rollout_before_the_next_wave(stack):
    ids = existing_fleet(stack, 12, "canary-bad", **{"fleet-sim:outcome": "Failed", "fleet-sim:install-seconds": "1"})
    r = cli(stack, "rollout", "--tag", "team=canary-bad", "--canary", "3", "--wave-size", "3", "--max-failure-ratio", "0.2",
            "--pause", "1", "--name", "e2e-canary-bad", "--wait", timeout=400)
    assert r.returncode != 0, r.stdout
    arn = stack.outputs["RolloutStateMachineArn"].replace(":stateMachine:", ":execution:") + ":e2e-canary-bad"
    d = stack.sfn.describe_execution(executionArn=arn)
    assert d["status"] == "FAILED" and d["error"] == "FleetInstall.FailureBudgetExceeded", d
    ledger = stack.ledger()
    touched = [i for i in ids if i in ledger]
    assert len(touched) == 3, f"only the canary may run; {len(touched)} instances were touched"
    assert all(ledger[i]["state"] == "failed" for i in touched)
    children = [e for e in stack.executions() if e["name"].startswith("e2e-canary-bad-")]
    assert len(children) == 1


def test_a_good_rollout_covers_every_target_exactly_once(stack):
    ids = existing_fleet(stack, 11, "good", **{"fleet-sim:platform": "Linux|Ubuntu|22.04"})
    opted = existing_fleet(stack, 1, "good", **{"fleet-install:opt-out": "true"})
    r = cli(stack, "rollout", "--tag", "team=good", "--canary", "2", "--wave-size", "4", "--max-failure-ratio", "0.1",
            "--pause", "1", "--name", "e2e-good", "--wait", timeout=400)
    assert r.returncode == 0, r.stdout + r.stderr
    arn = stack.outputs["RolloutStateMachineArn"].replace(":stateMachine:", ":execution:") + ":e2e-good"
    out = json.loads(stack.sfn.describe_execution(executionArn=arn)["output"])
    assert [w["instances"] for w in out["waves"]] == [2, 4, 4, 1]
    ledger = stack.ledger()
    assert all(ledger[i]["state"] == "installed" for i in ids), [ledger.get(i) for i in ids]
    assert all(len(stack.commands_for(i)) == 1 for i in ids)
    assert (ledger[opted[0]]["state"], ledger[opted[0]]["reasonCode"]) == ("skipped", "OptedOut")


def family_images(stack) -> dict[str, str]:
    """One AMI of each of three platform families, by what EC2 says of the AMI (not by what plan-rollout makes of
    it): Linux/UNIX on x86_64, Linux/UNIX on arm64 (moto ships one), Windows on x86_64."""
    images = stack.ec2.describe_images()["Images"]

    def first(windows: bool, arch: str) -> str:
        return next(i["ImageId"] for i in images
                    if ((i.get("Platform") or "").lower() == "windows") == windows and i.get("Architecture") == arch)
    return {"linux-x86_64": first(False, "x86_64"), "linux-arm64": first(False, "arm64"),
            "windows-x86_64": first(True, "x86_64")}


def test_the_canary_holds_every_platform_family_and_grows_when_they_outnumber_its_slots(stack):
    """20 Linux x86_64 instances, 1 Linux arm64 and 1 Windows: a canary of 2 picked in shuffled order would
    hold two Linux x86_64 instances almost every time. The canary grows to one instance per family (3), and
    its install execution is what installed one instance of each family (read from the ledger)."""
    images = family_images(stack)
    tags = {"team": "families", "fleet-sim:existing": "true", "fleet-sim:install-seconds": "1"}
    family_of = {}
    for family, count in (("linux-x86_64", 20), ("linux-arm64", 1), ("windows-x86_64", 1)):
        for i in stack.launch(count, tags, image_id=images[family]):
            family_of[i] = family
    name = "e2e-families"
    r = cli(stack, "rollout", "--tag", "team=families", "--canary", "2", "--wave-size", "10", "--max-failure-ratio", "0.1",
            "--pause", "0", "--name", name, "--wait", timeout=400)
    assert r.returncode == 0, r.stdout + r.stderr
    arn = stack.outputs["RolloutStateMachineArn"].replace(":stateMachine:", ":execution:") + ":" + name
    out = json.loads(stack.sfn.describe_execution(executionArn=arn)["output"])
    assert [w["instances"] for w in out["waves"]] == [3, 10, 9], out["waves"]
    # the canary's install execution (wave 0, chunk 0) claimed and installed one instance of each family
    ledger = stack.ledger()
    canary = [i for i in family_of if ledger.get(i, {}).get("executionArn", "").endswith(f":{name}-w0-c0")]
    assert sorted(family_of[i] for i in canary) == ["linux-arm64", "linux-x86_64", "windows-x86_64"], canary
    assert all(ledger[i]["state"] == "installed" for i in canary), [ledger[i] for i in canary]
    assert all(ledger[i]["state"] == "installed" for i in family_of), "an instance was left out"
    canary_run = [e for e in stack.executions() if e["name"] == f"{name}-w0-c0"]
    assert len(canary_run) == 1 and canary_run[0]["status"] == "SUCCEEDED", canary_run
    # the windows instance got the Windows document, the arm64 one the Linux document
    documents = {family_of[i]: {c["DocumentName"] for c in stack.commands_for(i)} for i in canary}
    assert documents["windows-x86_64"] == {stack.outputs["WindowsInstallDocumentName"]}, documents
    assert documents["linux-arm64"] == documents["linux-x86_64"] == {stack.outputs["LinuxInstallDocumentName"]}, documents


def test_the_rollout_lists_its_targets_across_invocations(stack):
    """Listing pages across invocations, each bounded: the list state runs once per MAX_LIST_PAGES pages (the
    template's 10 pages of 1,000 here; one invocation for this small fleet), returns the cursor and counts, and
    the ids stay in the ledger (rollout#<name>#list#<n>), never in the payload."""
    ids = existing_fleet(stack, 5, "listing", **{"fleet-sim:install-seconds": "1"})
    opted = existing_fleet(stack, 2, "listing", **{"fleet-install:opt-out": "true"})
    name = "e2e-listing"
    r = cli(stack, "rollout", "--tag", "team=listing", "--canary", "1", "--wave-size", "4", "--pause", "0",
            "--name", name, "--wait", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    arn = stack.outputs["RolloutStateMachineArn"].replace(":stateMachine:", ":execution:") + ":" + name
    events = stack.sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    listed = [json.loads(e["stateExitedEventDetails"]["output"]) for e in events
              if e["type"] == "TaskStateExited" and e["stateExitedEventDetails"]["name"] == "List Target Instances"]
    assert len(listed) == 1, listed
    assert listed[0]["maxPages"] == 10 and listed[0]["pagesRead"] == 1 and listed[0]["more"] is False, listed
    assert listed[0]["listing"] == {"nextToken": None, "pages": 1, "targets": 5, "optedOut": 2}, listed
    assert not any(i in json.dumps(listed) for i in ids + opted), "instance ids travelled in the payload"
    page = stack.ddb.get_item(TableName=stack.outputs["LedgerTableName"],
                              Key={"instanceId": {"S": f"rollout#{name}#list#0"}}, ConsistentRead=True)["Item"]
    assert "state" not in page and "expiresAt" in page
    assert sorted(v["S"] for ids_ in page["targets"]["M"].values() for v in ids_["L"]) == sorted(ids)
    ledger = stack.ledger()
    assert all(ledger[i]["state"] == "installed" for i in ids)
    assert {ledger[i]["reasonCode"] for i in opted} == {"OptedOut"}


def test_a_rollout_named_with_multibyte_characters_runs(stack):
    """Names are cut at character boundaries: a long multibyte rollout name once panicked plan-rollout (byte
    slicing; release builds abort on panic). 78 characters, 2 or 3 bytes each: every chunk's child
    execution name has to be cut."""
    ids = existing_fleet(stack, 3, "unicode", **{"fleet-sim:platform": "Linux|Ubuntu|22.04"})
    name = ("déploiement-été-日本語-" * 4)[:78]
    assert len(name) == 78 and len(name.encode()) > 80
    r = cli(stack, "rollout", "--tag", "team=unicode", "--canary", "1", "--wave-size", "2", "--pause", "0",
            "--name", name, "--wait", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    arn = stack.outputs["RolloutStateMachineArn"].replace(":stateMachine:", ":execution:") + ":" + name
    d = stack.sfn.describe_execution(executionArn=arn)
    assert d["status"] == "SUCCEEDED", d
    ledger = stack.ledger()
    assert all(ledger[i]["state"] == "installed" for i in ids), [ledger.get(i) for i in ids]
    children = [e["name"] for e in stack.executions() if e["startDate"] >= d["startDate"]]
    assert children and all(len(c) <= 80 for c in children), children


def test_replay_reruns_only_the_failed_instances(stack):
    since = time.time() - 1
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since))
    flaky = stack.launch(3, {"fleet-sim:fail-attempts": "3"})  # fails all 3 attempts, then works
    healthy = stack.launch(3, {})
    stack.wait_for_executions(at_least=1, timeout=180, since=since)
    ledger = stack.ledger()
    assert {ledger[i]["state"] for i in flaky} == {"failed"}
    assert {ledger[i]["state"] for i in healthy} == {"installed"}
    before = {i: len(stack.commands_for(i)) for i in flaky + healthy}
    again = time.time()
    r = cli(stack, "replay", "--failed-since", stamp)
    assert r.returncode == 0, r.stdout + r.stderr
    stack.wait_for_executions(at_least=1, timeout=180, since=again)
    ledger = stack.ledger()
    assert {ledger[i]["state"] for i in flaky} == {"installed"}
    assert {i: len(stack.commands_for(i)) for i in healthy} == {i: before[i] for i in healthy}, "replay touched a healthy instance"
    assert all(len(stack.commands_for(i)) == before[i] + 1 for i in flaky)
