"""The sweep, end to end on the local stack: it lists every running instance of the account, compares them
with the ledger and installs, retries, verifies or marks gone what needs it. Each test asserts ledger states
and the commands each instance was sent.

The sweep sees the whole account, so the module starts from an empty fleet (earlier tests' instances are
terminated; the first sweep marks their items gone) and each test counts only its own instances' commands."""
import json
import subprocess
import time
import uuid

import boto3
import pytest

from fleet import ROOT

pytestmark = pytest.mark.e2e

RUN = ["python3", str(ROOT / "local-stack" / "emulator" / "run.py")]
MAX_ATTEMPTS = 3  # the template's default
INSTALL_DOCS = ("LinuxInstallDocumentName", "WindowsInstallDocumentName")
WINDOWS = {"fleet-sim:platform": "Windows|Microsoft Windows Server 2022 Datacenter|10.0.20348"}


@pytest.fixture(scope="module", autouse=True)
def empty_fleet(stack):
    terminate_all(stack)
    yield


def terminate_all(stack):
    running = [i["InstanceId"]
               for page in stack.ec2.get_paginator("describe_instances").paginate(
                   Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
               for r in page["Reservations"] for i in r["Instances"]]
    for n in range(0, len(running), 500):
        stack.ec2.terminate_instances(InstanceIds=running[n:n + 500])


def sweep(stack, verify_all: bool = False, timeout: float = 300, wait: bool = True) -> dict | str:
    arn = stack.sfn.start_execution(
        stateMachineArn=stack.outputs["SweepStateMachineArn"], name=f"sweep-e2e-{uuid.uuid4().hex[:12]}",
        input=json.dumps({"verifyAll": verify_all}))["executionArn"]
    if not wait:
        return arn
    return finished(stack, arn, timeout)


def finished(stack, arn: str, timeout: float = 300) -> dict:
    d = stack.wait_for_execution(arn, timeout)
    if d["status"] != "SUCCEEDED":
        events = stack.sfn.get_execution_history(executionArn=arn, reverseOrder=True, maxResults=5)["events"]
        raise AssertionError(f"sweep {d['status']}: {json.dumps(events, default=str)[:3000]}")
    return json.loads(d["output"])


def install_commands(stack, iid: str) -> list[dict]:
    docs = {stack.outputs[k] for k in INSTALL_DOCS}
    return [c for c in stack.commands_for(iid) if c["DocumentName"] in docs]


def wait_for_state(stack, ids, state, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        ledger = stack.ledger()
        if all(ledger.get(i, {}).get("state") == state for i in ids):
            return ledger
        time.sleep(1)
    ledger = stack.ledger()
    raise AssertionError(f"not all {state}: {[(i, ledger.get(i, {}).get('state')) for i in ids]}")


def reconfigure_sweep(**env):
    subprocess.run(RUN + ["reconfigure", "sweep"] + [a for k, v in env.items() for a in ("--env", f"{k}={v}")],
                   check=True, cwd=ROOT, timeout=300)


def test_instances_running_before_the_stack_are_installed_by_the_sweep_and_gone_ones_marked(stack):
    # pre-existing instances: no running event ever came, no ledger item
    ids = stack.launch(3, {"fleet-sim:existing": "true"})
    ids += stack.launch(1, {"fleet-sim:existing": "true", **WINDOWS})
    # and one installed through its event, then terminated
    (ended,) = stack.launch(1)
    wait_for_state(stack, [ended], "installed")
    stack.ec2.terminate_instances(InstanceIds=[ended])
    ledger = stack.ledger()
    assert not any(i in ledger for i in ids)
    report = sweep(stack)
    assert report["work"].get("neverSeen", 0) >= len(ids)
    ledger = wait_for_state(stack, ids, "installed", timeout=5)
    for i in ids:
        assert len(install_commands(stack, i)) == 1, i
        assert ledger[i]["reasonCode"] == "Installed" and ledger[i].get("verifiedAt"), ledger[i]
    # a terminated instance's item is gone now, and expires (so are earlier tests' instances, terminated above)
    assert ledger[ended]["state"] == "gone" and ledger[ended]["reasonCode"] == "Gone", ledger[ended]
    assert int(ledger[ended]["expiresAt"]) > time.time() + 30 * 86400
    # the report counts what its invocations marked (a retried invocation does not count what the failed try
    # wrote): at most every gone item
    gone = [v for v in ledger.values() if v.get("state") == "gone"]
    assert 0 < report["gone"] <= len(gone)


def test_a_compliant_fleet_sweep_sends_only_what_the_drift_check_needs(stack):
    terminate_all(stack)
    linux = stack.launch(4, {"fleet-sim:existing": "true"})
    windows = stack.launch(2, {"fleet-sim:existing": "true", **WINDOWS})
    ids = linux + windows
    sweep(stack)
    wait_for_state(stack, ids, "installed", timeout=5)
    before = {i: len(stack.commands_for(i)) for i in ids}
    calls = stack.api_calls().get("ssm.SendCommand", 0)
    # Every running instance was installed and verified less than DriftCheckIntervalHours (24) ago: nothing is sent.
    report = sweep(stack)
    assert report["sent"] == 0, report
    assert stack.api_calls().get("ssm.SendCommand", 0) == calls
    assert report["ratioBefore"] == 1.0 and report["ratioAfter"] == 1.0
    # With every installed instance due for its drift check (--verify-all), the sweep sends exactly the
    # verification: one SendCommand per document batch of at most 50, here 2 (one Linux, one Windows), and each
    # instance gets one command, answered "already installed and running".
    report = sweep(stack, verify_all=True)
    assert report["work"] == {"verify": len(ids)}, report
    assert stack.api_calls().get("ssm.SendCommand", 0) - calls == 2
    ledger = stack.ledger()
    for i in ids:
        assert len(stack.commands_for(i)) == before[i] + 1, i
        assert ledger[i]["state"] == "installed" and ledger[i]["reasonCode"] == "Verified", ledger[i]
    assert report["verified"] == len(ids) and report["driftRepaired"] == 0


def test_an_instance_that_always_fails_is_backed_off(stack):
    base = 60
    reconfigure_sweep(SWEEP_RETRY_BASE_SECONDS=base)
    try:
        (iid,) = stack.launch(1, {"fleet-sim:outcome": "Failed"})
        wait_for_state(stack, [iid], "failed", timeout=180)
        sent = len(install_commands(stack, iid))
        assert sent == MAX_ATTEMPTS
        first = sweep(stack)
        assert first["work"].get("retry") == 1, first
        ledger = stack.ledger()[iid]
        assert ledger["state"] == "failed" and int(ledger["sweepAttempts"]) == 1 and ledger["retryAfter"]
        assert len(install_commands(stack, iid)) == sent + MAX_ATTEMPTS
        # the next sweep, before the retry time: not sent
        second = sweep(stack)
        assert "retry" not in second["work"], second
        assert len(install_commands(stack, iid)) == sent + MAX_ATTEMPTS
        # once the retry time has come, sent again, and the next wait is twice as long
        retry_after = ledger["retryAfter"]
        while time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) <= retry_after[:19]:
            time.sleep(1)
        third = sweep(stack)
        assert third["work"].get("retry") == 1, third
        assert len(install_commands(stack, iid)) == sent + 2 * MAX_ATTEMPTS
        again = stack.ledger()[iid]
        assert int(again["sweepAttempts"]) == 2 and again["retryAfter"] > retry_after
    finally:
        reconfigure_sweep(SWEEP_RETRY_BASE_SECONDS=43200)


def test_two_overlapping_sweeps_send_no_instance_twice(stack):
    ids = stack.launch(5, {"fleet-sim:existing": "true", "fleet-sim:install-seconds": "4"})
    arns = [sweep(stack, wait=False), sweep(stack, wait=False)]
    outputs = [finished(stack, a) for a in arns]
    ran = [o for o in outputs if "running" in o]
    stood_down = [o for o in outputs if o.get("acquired") is False]
    assert len(ran) == 1 and len(stood_down) == 1, outputs
    assert stood_down[0]["holder"] in arns
    wait_for_state(stack, ids, "installed", timeout=5)
    for i in ids:
        assert len(install_commands(stack, i)) == 1, i
    # and the lock is free again
    assert sweep(stack)["sent"] == 0


@pytest.mark.expect_denials
def test_an_event_that_ended_in_the_dead_letter_queue_is_installed_by_the_next_sweep(stack):
    iam = boto3.client("iam", endpoint_url=stack.endpoint, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    role = next(r["RoleName"] for r in iam.list_roles()["Roles"] if r["RoleName"].endswith("StartInstallFunctionRole"))
    deny = {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "states:StartExecution", "Resource": "*"}]}
    dlq = stack.outputs["InstallDeadLetterQueueUrl"]
    iam.put_role_policy(RoleName=role, PolicyName="e2e-deny-start", PolicyDocument=json.dumps(deny))
    try:
        (iid,) = stack.launch(1)
        deadline = time.time() + 180
        while time.time() < deadline:
            msgs = stack.sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, VisibilityTimeout=0).get("Messages", [])
            if any(iid in m["Body"] for m in msgs):
                break
            time.sleep(1)
        else:
            raise AssertionError("the running event never reached the dead-letter queue")
    finally:
        iam.delete_role_policy(RoleName=role, PolicyName="e2e-deny-start")
    assert iid not in stack.ledger(), "an instance whose event is in the DLQ has a ledger item"
    report = sweep(stack)
    assert report["work"].get("neverSeen", 0) >= 1
    ledger = wait_for_state(stack, [iid], "installed", timeout=5)
    assert ledger[iid]["reasonCode"] == "Installed"
    assert len(install_commands(stack, iid)) == 1


def test_an_instance_whose_running_event_was_lost_is_installed_by_the_next_sweep(stack):
    (iid,) = stack.launch(1, drop_running_event=True)
    time.sleep(3)  # what its event would have taken to arrive: it never does
    assert iid in stack.dropped_running_events()
    assert iid not in stack.ledger()
    report = sweep(stack)
    assert report["work"].get("neverSeen", 0) >= 1
    ledger = wait_for_state(stack, [iid], "installed", timeout=5)
    assert ledger[iid]["reasonCode"] == "Installed"
    assert len(install_commands(stack, iid)) == 1


def test_unmanaged_instances_are_installed_by_the_sweep_once_their_cause_is_fixed(stack):
    iam = boto3.client("iam", endpoint_url=stack.endpoint, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    # one without an instance profile
    (bare,) = stack.launch(1, profile=False)
    # one whose role lacks the SSM policy
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    iam.create_role(RoleName="e2e-sweep-bare", AssumeRolePolicyDocument=json.dumps(trust))
    iam.create_instance_profile(InstanceProfileName="e2e-sweep-bare")
    iam.add_role_to_instance_profile(InstanceProfileName="e2e-sweep-bare", RoleName="e2e-sweep-bare")
    args = dict(ImageId=stack.ami, MinCount=1, MaxCount=1, InstanceType="t3.micro",
                IamInstanceProfile={"Name": "e2e-sweep-bare"})
    nopolicy = stack.ec2.run_instances(**args)["Instances"][0]["InstanceId"]
    stack.running_event(nopolicy)
    ids = [bare, nopolicy]
    ledger = wait_for_state(stack, ids, "unmanaged", timeout=240)
    assert ledger[bare]["reasonCode"] == "NoInstanceProfile", ledger[bare]
    assert ledger[nopolicy]["reasonCode"] == "AgentNotReporting", ledger[nopolicy]
    # a sweep before anything is fixed: classified again, still unmanaged, the check's time recorded
    sweep(stack)
    again = stack.ledger()
    for i in ids:
        assert again[i]["state"] == "unmanaged" and again[i]["updatedAt"] > ledger[i]["updatedAt"], again[i]
        assert install_commands(stack, i) == []
    # the fixes: a profile associated; the policy attached by `fleet-install prereq --apply`
    stack.associate_profile(bare)
    from test_rollout_e2e import cli
    run = cli(stack, "prereq", "--apply")
    assert run.returncode == 0, run.stderr
    attached = [p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName="e2e-sweep-bare")["AttachedPolicies"]]
    assert attached == ["arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"]
    report = sweep(stack)
    assert report["work"].get("reclassify", 0) >= 2
    ledger = wait_for_state(stack, ids, "installed", timeout=5)
    for i in ids:
        assert len(install_commands(stack, i)) == 1, i


def test_an_agent_removed_or_stopped_after_its_install_is_repaired_in_one_sweep_and_counted_as_drift(stack):
    removed, stopped, fine = stack.launch(3)
    ids = [removed, stopped, fine]
    wait_for_state(stack, ids, "installed", timeout=180)
    stack.remove_agent([removed], "removed")
    stack.remove_agent([stopped], "stopped")
    assert stack.agent_states(ids) == {removed: "absent", stopped: "stopped", fine: "running"}
    report = sweep(stack, verify_all=True)
    assert report["driftRepaired"] >= 2
    ledger = stack.ledger()
    assert stack.agent_states(ids) == {i: "running" for i in ids}
    for i in (removed, stopped):
        assert ledger[i]["state"] == "installed" and ledger[i]["reasonCode"] == "DriftRepaired", ledger[i]
        assert int(ledger[i]["driftCount"]) == 1 and ledger[i]["lastDriftAt"], ledger[i]
        assert len(install_commands(stack, i)) == 2, i  # its install, and the one verification that repaired it
    assert "again" in ledger[removed]["reason"] and "started" in ledger[stopped]["reason"]
    assert ledger[fine]["reasonCode"] == "Verified" and "driftCount" not in ledger[fine]
