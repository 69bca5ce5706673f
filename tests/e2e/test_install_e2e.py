"""End to end on the local stack: real ASL in moto's engine, real Rust functions under cargo lambda
watch, simulated SSM agents. Each test launches its own instances and checks the ledger."""
import json
import time

import pytest

pytestmark = pytest.mark.e2e

MAX_ATTEMPTS = 3  # the template's default, unchanged by the local stack

# name -> (count, tags, profile, expected state, expected reason code, expected attempts or None)
SCENARIO = {
    "amazon-linux": (4, {}, True, "installed", "Installed", 1),
    "ubuntu": (2, {"fleet-sim:platform": "Linux|Ubuntu|22.04"}, True, "installed", "Installed", 1),
    "rhel": (1, {"fleet-sim:platform": "Linux|Red Hat Enterprise Linux Server|8.9"}, True, "installed", "Installed", 1),
    "centos": (1, {"fleet-sim:platform": "Linux|CentOS Linux|7.9"}, True, "installed", "Installed", 1),
    "fedora": (1, {"fleet-sim:platform": "Linux|Fedora|39"}, True, "installed", "Installed", 1),
    "freebsd": (1, {"fleet-sim:platform": "Linux|FreeBSD|14.1"}, True, "installed", "Installed", 1),
    "windows": (2, {"fleet-sim:platform": "Windows|Microsoft Windows Server 2022 Datacenter|10.0.20348"}, True, "installed", "Installed", 1),
    "already-installed": (1, {"fleet-sim:installed": "true"}, True, "installed", "Installed", 1),
    "slow-registration": (2, {"fleet-sim:register-delay": "8"}, True, "installed", "Installed", 1),
    "fails-once": (1, {"fleet-sim:fail-attempts": "1"}, True, "installed", "Installed", 2),
    "install-fails": (2, {"fleet-sim:outcome": "Failed"}, True, "failed", "CommandFailed", MAX_ATTEMPTS),
    "times-out": (1, {"fleet-sim:outcome": "TimedOut"}, True, "failed", "ExecutionTimedOut", MAX_ATTEMPTS),
    "undeliverable": (1, {"fleet-sim:outcome": "Undeliverable"}, True, "failed", "Undeliverable", MAX_ATTEMPTS),
    "no-profile": (2, {}, False, "unmanaged", "NoInstanceProfile", None),
    "agent-missing": (1, {"fleet-sim:managed": "false"}, True, "unmanaged", "AgentNotReporting", None),
    "opted-out": (1, {"fleet-install:opt-out": "true"}, True, "skipped", "OptedOut", None),
    "macos": (1, {"fleet-sim:platform": "MacOS|macOS|14.2"}, True, "skipped", "NoRoute", None),
}


def test_launch_burst_every_instance_ends_in_the_ledger_as_its_agent_implies(stack):
    since = time.time() - 1
    expected = {}
    for name, (count, tags, profile, state, code, attempts) in SCENARIO.items():
        for iid in stack.launch(count, tags, profile):
            expected[iid] = (name, state, code, attempts)
    # one more that is terminated before its event is processed
    (gone,) = stack.launch(1)
    stack.ec2.terminate_instances(InstanceIds=[gone])
    expected[gone] = ("terminated", "skipped", "Terminated", None)

    executions = stack.wait_for_executions(at_least=1, timeout=240, since=since)
    assert all(e["status"] == "SUCCEEDED" for e in executions), executions
    ledger = stack.ledger()
    problems = []
    for iid, (name, state, code, attempts) in expected.items():
        item = ledger.get(iid)
        if item is None:
            problems.append(f"{name} {iid}: not in the ledger")
            continue
        got = (item.get("state"), item.get("reasonCode"))
        if got != (state, code):
            problems.append(f"{name} {iid}: {got} != {(state, code)}: {item.get('reason')}")
        if attempts is not None and int(item.get("attempts", 0)) != attempts:
            problems.append(f"{name} {iid}: attempts {item.get('attempts')} != {attempts}")
        if not item.get("reason"):
            problems.append(f"{name} {iid}: no reason")
    assert not problems, "\n".join(problems)
    # failures carry the status detail
    failed = [ledger[i] for i, e in expected.items() if e[1] == "failed"]
    assert all(f.get("statusDetail") and f.get("commandId") for f in failed), failed
    # the workflows' summaries account for every instance
    total = 0
    for e in executions:
        out = stack.sfn.describe_execution(executionArn=e["executionArn"])["output"]
        total += sum(json.loads(out)["summary"]["byState"].values())
    assert total == len(expected)


def test_a_duplicate_running_event_installs_once(stack):
    since = time.time() - 1
    (iid,) = stack.launch(1, {"fleet-sim:platform": "Linux|Ubuntu|24.04"})
    stack.running_event(iid)  # EventBridge fires again (redelivery, or a second start)
    stack.wait_for_executions(at_least=1, timeout=120, since=since)
    # ... and once more after the install finished
    again = time.time()
    stack.running_event(iid)
    ex = stack.wait_for_executions(at_least=1, timeout=120, since=again)
    assert all(e["status"] == "SUCCEEDED" for e in ex)
    item = stack.ledger()[iid]
    assert (item["state"], item["reasonCode"]) == ("installed", "Installed")
    commands = stack.commands_for(iid)
    assert len(commands) == 1, f"sent {len(commands)} commands to {iid}"


def test_malformed_and_foreign_messages_are_reported_and_nothing_is_lost(stack):
    queue, dlq = stack.outputs["InstallQueueUrl"], stack.outputs["InstallDeadLetterQueueUrl"]
    garbage = "this is not an EventBridge event"
    foreign = '{"source": "aws.s3", "detail-type": "Object Created", "detail": {"bucket": {"name": "b"}}}'
    # an EC2 event's values as a JSON array: serde would take it as the struct, the trigger must not
    positional = json.dumps(["0", "aws.ec2", "EC2 Instance State-change Notification",
                             {"instance-id": "i-0123456789abcdef0", "state": "running"}, []])
    stack.sqs.send_message(QueueUrl=queue, MessageBody=garbage)
    stack.sqs.send_message(QueueUrl=queue, MessageBody=foreign)
    stack.sqs.send_message(QueueUrl=queue, MessageBody=positional)
    deadline = time.time() + 120
    dead = []
    while time.time() < deadline:
        msgs = stack.sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, VisibilityTimeout=0).get("Messages", [])
        dead = [m["Body"] for m in msgs]
        attrs = stack.sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
        in_queue = int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])
        if garbage in dead and positional in dead and in_queue == 0:
            break
        time.sleep(1)
    assert garbage in dead, "the unparseable message did not reach the DLQ"
    assert positional in dead, "a JSON array was taken as an EC2 event"
    assert foreign not in dead, "a well-formed foreign event is dropped with a log line, not dead-lettered"
    assert in_queue == 0


def test_a_run_that_fails_midway_is_redriven_without_sending_any_batch_twice(stack):
    since = time.time() - 1
    # send-command runs (its batch is sent) and then its response is lost: the worst case.
    stack.inject_fault(function="send-command", after=True, times=1, errorType="FleetInstall.AwsRejected",
                       errorMessage="injected: response lost after the send")
    try:
        ids = stack.launch(3, {"fleet-sim:platform": "Linux|Ubuntu|22.04", "fleet-sim:install-seconds": "2"})
        (failed,) = stack.wait_for_executions(at_least=1, timeout=120, since=since)
    finally:
        stack.clear_faults()
    assert failed["status"] == "FAILED"
    d = stack.sfn.describe_execution(executionArn=failed["executionArn"])
    assert d["error"] == "FleetInstall.WorkflowFailed", d
    ledger = stack.ledger()
    assert {ledger[i]["reasonCode"] for i in ids} == {"WorkflowError"}, [ledger[i] for i in ids]
    sent_before = {i: len(stack.commands_for(i)) for i in ids}
    assert sent_before == {i: 1 for i in ids}

    stack.sfn.redrive_execution(executionArn=failed["executionArn"])
    d = stack.wait_for_execution(failed["executionArn"], timeout=120)
    assert d["status"] == "SUCCEEDED", d
    assert d.get("redriveCount") == 1
    ledger = stack.ledger()
    assert {ledger[i]["state"] for i in ids} == {"installed"}
    assert {i: len(stack.commands_for(i)) for i in ids} == sent_before, "a batch was sent twice"


def test_an_instance_that_goes_offline_before_the_send_is_recorded_and_the_rest_installed(stack):
    """SSM rejects a whole SendCommand when one instance is no longer online; send-command then asks SSM which
    one (ssm:DescribeInstanceInformation, which its role must allow: IAM is enforced here) and sends the rest."""
    since = time.time() - 1
    # send-command starts 6 s late: the instance is stopped in that gap, after Filter Managed Instances saw it online
    stack.inject_fault(function="send-command", delaySeconds=6, times=1)
    try:
        gone, stays = stack.launch(2, {"fleet-sim:platform": "Linux|Ubuntu|22.04"})
        stack.wait_for_fault_taken("send-command")
        stack.ec2.stop_instances(InstanceIds=[gone])
        (ex,) = stack.wait_for_executions(at_least=1, timeout=120, since=since)
    finally:
        stack.clear_faults()
    assert ex["status"] == "SUCCEEDED", stack.sfn.describe_execution(executionArn=ex["executionArn"])
    ledger = stack.ledger()
    assert ledger[stays]["state"] == "installed"
    assert ledger[gone]["state"] != "installed" and ledger[gone].get("reason"), ledger[gone]
    assert len(stack.commands_for(gone)) == 0, "the offline instance was sent a command"


@pytest.mark.expect_denials
def test_an_instance_tagged_opt_out_just_before_the_send_is_never_sent_a_command(stack):
    """IAM denies SendCommand to any instance with the opt-out tag key (the stack's OptOutSendDenyPolicy,
    enforced here by ssm:resourceTag); send-command then reads the tags again, records the instance as
    skipped and sends the rest."""
    since = time.time() - 1
    stack.inject_fault(function="send-command", delaySeconds=6, times=1)
    try:
        late, other = stack.launch(2, {"fleet-sim:platform": "Linux|Ubuntu|22.04"})
        stack.wait_for_fault_taken("send-command")
        stack.ec2.create_tags(Resources=[late], Tags=[{"Key": stack.outputs["OptOutTagKey"], "Value": ""}])
        (ex,) = stack.wait_for_executions(at_least=1, timeout=120, since=since)
    finally:
        stack.clear_faults()
    assert ex["status"] == "SUCCEEDED", stack.sfn.describe_execution(executionArn=ex["executionArn"])
    ledger = stack.ledger()
    assert (ledger[late]["state"], ledger[late]["reasonCode"]) == ("skipped", "OptedOut"), ledger[late]
    assert ledger[other]["state"] == "installed"
    assert stack.commands_for(late) == []
    denied = stack.iam_denials()
    assert denied and all(d["action"] == "ssm:SendCommand" and d["decision"] == "explicit" for d in denied), denied
    assert any(d["resource"].endswith(f"instance/{late}") for d in denied)


@pytest.mark.expect_denials
def test_a_permission_the_role_lacks_fails_the_run_at_once_with_access_denied(stack):
    """AccessDenied is not retried (AWS would answer the same): the run fails with the denied call named.
    check-status's role loses ssm:ListCommandInvocations for this test only; await-commands keeps its own, so
    each command's completion event has written its instances' outcomes already, and the failed run's
    Record Workflow Failure leaves those finished instances as they are."""
    import boto3

    iam = boto3.client("iam", endpoint_url=stack.endpoint, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    role = "fleet-install-CheckStatusFunctionRole"
    iam.put_role_policy(RoleName=role, PolicyName="e2e-deny", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Deny", "Action": "ssm:ListCommandInvocations", "Resource": "*"}]}))
    since = time.time() - 1
    before = stack.api_calls().get("lambda.Invoke:check-status", 0)
    try:
        ids = stack.launch(2, {"fleet-sim:platform": "Linux|Ubuntu|22.04"})
        (ex,) = stack.wait_for_executions(at_least=1, timeout=120, since=since)
    finally:
        iam.delete_role_policy(RoleName=role, PolicyName="e2e-deny")
    d = stack.sfn.describe_execution(executionArn=ex["executionArn"])
    assert d["status"] == "FAILED", d
    assert "FleetInstall.AccessDenied" in d["cause"] and "ssm:ListCommandInvocations" in d["cause"], d["cause"]
    assert stack.api_calls().get("lambda.Invoke:check-status", 0) - before == 1, "AccessDenied was retried"
    ledger = stack.ledger()
    for i in ids:
        item = ledger[i]
        assert item["state"] == "installed" and item["reasonCode"] == "Installed", item
        # written once, by the event of the command that installed it, and not overwritten by the failure
        assert item["outcomeOf"] == item["commandId"] and item["executionArn"] == ex["executionArn"], item
    denied = stack.iam_denials()
    assert denied and {d["action"] for d in denied} == {"ssm:ListCommandInvocations"}, denied
