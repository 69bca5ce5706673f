"""The simulated SSM agent and Run Command (moto_ext.ssm_agent) against a real extended moto server."""

import json
import time
import urllib.request

import botocore.exceptions
import pytest

from moto_ext import sim_tags as T

HASH = "a" * 64

# Self-contained documents with the shape of documents/*.yml (those change independently of the simulation).
LINUX_DOC = """
schemaVersion: '2.2'
description: test install document (Linux)
parameters:
  InstallerUrl:
    type: String
    allowedPattern: '^https://[A-Za-z0-9.-]+/[A-Za-z0-9._~%/+-]*\\.(rpm|deb|pkg)$'
  InstallerSha256:
    type: String
    allowedPattern: '^[A-Fa-f0-9]{64}$'
  ServiceName:
    type: String
    default: fleet-agent
    allowedPattern: '^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$'
mainSteps:
  - action: aws:runShellScript
    name: installAgent
    precondition:
      StringEquals: [platformType, Linux]
    inputs:
      runCommand: ['exit 0']
"""
WINDOWS_DOC = LINUX_DOC.replace("(rpm|deb|pkg)", "(msi|exe)").replace("Linux", "Windows").replace(
    "aws:runShellScript", "aws:runPowerShellScript")


SSM_POLICY = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
EC2_TRUST = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]})


def instance_profile(aws, name, policy=SSM_POLICY):
    """An instance profile whose role (of the same name) carries `policy` (None: no policy)."""
    aws.iam.create_role(RoleName=name, AssumeRolePolicyDocument=EC2_TRUST)
    if policy:
        aws.iam.attach_role_policy(RoleName=name, PolicyArn=policy)
    aws.iam.create_instance_profile(InstanceProfileName=name)
    aws.iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)


@pytest.fixture
def env(aws):
    instance_profile(aws, "ssm-role")
    for name, content in (("fleet-linux", LINUX_DOC), ("fleet-windows", WINDOWS_DOC)):
        aws.ssm.create_document(Name=name, Content=content, DocumentType="Command",
                                DocumentFormat="YAML", TargetType="/AWS::EC2::Instance")
    image = next(i["ImageId"] for i in aws.ec2.describe_images(Owners=["amazon"])["Images"]
                 if i.get("Platform") != "windows")

    def launch(n=1, profile=True, **tags):
        kw = dict(ImageId=image, MinCount=n, MaxCount=n)
        if profile:
            kw["IamInstanceProfile"] = {"Name": "ssm-role"}
        tag_list = [{"Key": (T.PREFIX + k.replace("_", "-")) if not k.startswith("tag_") else k[4:], "Value": str(v)}
                    for k, v in tags.items()]
        if tag_list:
            kw["TagSpecifications"] = [{"ResourceType": "instance", "Tags": tag_list}]
        return [i["InstanceId"] for i in aws.ec2.run_instances(**kw)["Instances"]]

    aws.launch = launch
    return aws


def linux_params(**over):
    p = {"InstallerUrl": ["https://example.com/agent.rpm"], "InstallerSha256": [HASH]}
    p.update(over)
    return p


def info(aws, ids=None, **kw):
    if ids is not None:
        kw["Filters"] = [{"Key": "InstanceIds", "Values": ids}]
    return {i["InstanceId"]: i for i in aws.ssm.describe_instance_information(**kw)["InstanceInformationList"]}


def wait_invocations(aws, cid, until, timeout=10):
    deadline = time.time() + timeout
    while True:
        invs = aws.ssm.list_command_invocations(CommandId=cid, Details=True)["CommandInvocations"]
        if invs and until(invs):
            return invs
        if time.time() > deadline:
            raise AssertionError(f"timeout; last: {[(i['InstanceId'], i['Status']) for i in invs]}")
        time.sleep(0.1)


def final(invs):
    return all(i["Status"] not in ("Pending", "InProgress", "Delayed", "Cancelling") for i in invs)


def error_code(excinfo):
    return excinfo.value.response["Error"]["Code"]


# ------------------------------------------------------------------------------------ registration
def test_registration_rules(env):
    managed = env.launch(3)
    unmanaged = env.launch(1, managed="false")
    no_profile = env.launch(1, profile=False)
    late = env.launch(1, register_delay=1.5)
    seen = info(env)
    assert set(seen) == set(managed), "only managed instances with a profile whose delay has passed"
    assert all(i["PingStatus"] == "Online" for i in seen.values())
    time.sleep(1.6)
    seen = info(env)
    assert set(seen) == set(managed + late)
    assert unmanaged[0] not in seen and no_profile[0] not in seen


def test_all_instances_of_one_run_get_the_profile(env):
    ids = env.launch(4)
    described = [i for r in env.ec2.describe_instances(InstanceIds=ids)["Reservations"] for i in r["Instances"]]
    assert all(i.get("IamInstanceProfile") for i in described)
    assert set(info(env, ids)) == set(ids)


def test_platform_tag_and_defaults(env):
    ubuntu = env.launch(1, platform="Linux|Ubuntu|22.04")[0]
    bsd = env.launch(1, platform="Linux|FreeBSD|14.1")[0]
    default = env.launch(1)[0]
    seen = info(env)
    assert (seen[ubuntu]["PlatformType"], seen[ubuntu]["PlatformName"], seen[ubuntu]["PlatformVersion"]) == \
        ("Linux", "Ubuntu", "22.04")
    assert (seen[bsd]["PlatformName"], seen[bsd]["PlatformVersion"]) == ("FreeBSD", "14.1")
    assert (seen[default]["PlatformType"], seen[default]["PlatformName"], seen[default]["PlatformVersion"]) == \
        ("Linux", "Amazon Linux", "2023")


def test_filters_pagination_and_limits(env):
    a = env.launch(6, tag_team="a")
    b = env.launch(2, tag_team="b", platform="Windows|Microsoft Windows Server 2022 Datacenter|10.0.20348")
    assert set(info(env, a[:2] + b[:1])) == set(a[:2] + b[:1])
    assert set(info(env, Filters=[{"Key": "tag:team", "Values": ["b"]}])) == set(b)
    assert set(info(env, Filters=[{"Key": "PlatformTypes", "Values": ["Windows"]}])) == set(b)
    assert set(info(env, Filters=[{"Key": "PingStatus", "Values": ["Online"]}])) == set(a + b)
    pages = list(env.ssm.get_paginator("describe_instance_information").paginate(PaginationConfig={"PageSize": 5}))
    assert [len(p["InstanceInformationList"]) for p in pages] == [5, 3]
    for bad in (4, 51):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            env.ssm.describe_instance_information(MaxResults=bad)
        assert error_code(e) == "ValidationException"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        info(env, [f"i-{n:017x}" for n in range(51)])
    assert error_code(e) == "InvalidInstanceInformationFilterValue"


def test_stopped_instance_loses_connection(env):
    iid = env.launch(1)[0]
    assert info(env, [iid])[iid]["PingStatus"] == "Online"
    env.ec2.stop_instances(InstanceIds=[iid])
    assert info(env, [iid])[iid]["PingStatus"] == "ConnectionLost"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        env.ssm.send_command(InstanceIds=[iid], DocumentName="fleet-linux", Parameters=linux_params())
    assert error_code(e) == "InvalidInstanceId"
    env.ec2.terminate_instances(InstanceIds=[iid])
    assert info(env, [iid]) == {}


# ------------------------------------------------------------------------------------- SendCommand
def test_send_rejects_unregistered_targets_like_ssm(env):
    good = env.launch(1)[0]
    bad = env.launch(1, managed="false")[0]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        env.ssm.send_command(InstanceIds=[good, bad], DocumentName="fleet-linux", Parameters=linux_params())
    assert error_code(e) == "InvalidInstanceId"
    assert e.value.response["Error"]["Message"] == f"Instances [[{bad}]] not in a valid state for account 123456789012"


def test_send_validates_document_and_parameters(env):
    iid = env.launch(1)[0]
    cases = [
        (dict(DocumentName="nope", Parameters=linux_params()), "InvalidDocument"),
        (dict(DocumentName="fleet-linux", DocumentVersion="7", Parameters=linux_params()), "InvalidDocumentVersion"),
        (dict(DocumentName="fleet-linux", Parameters=linux_params(Bogus=["x"])), "InvalidParameters"),
        (dict(DocumentName="fleet-linux", Parameters=linux_params(InstallerUrl=["http://x/a.rpm"])), "InvalidParameters"),
        (dict(DocumentName="fleet-linux", Parameters=linux_params(InstallerSha256=["abc"])), "InvalidParameters"),
        (dict(DocumentName="fleet-linux", Parameters={"InstallerUrl": ["https://e.com/a.rpm"]}), "InvalidParameters"),
        (dict(DocumentName="fleet-linux", Parameters=linux_params(InstallerUrl=["https://e.com/a.rpm\n"])),
         "InvalidParameters"),
    ]
    for kw, code in cases:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            env.ssm.send_command(InstanceIds=[iid], **kw)
        assert error_code(e) == code, kw


def test_send_targets_exactly_the_given_instances(env):
    ids = env.launch(5)
    cmd = env.ssm.send_command(InstanceIds=ids[:2], DocumentName="fleet-linux", DocumentVersion="1",
                               Parameters=linux_params(), Comment="fleet-install k1 exec",
                               TimeoutSeconds=600, MaxConcurrency="50", MaxErrors="100%",
                               CloudWatchOutputConfig={"CloudWatchLogGroupName": "out",
                                                       "CloudWatchOutputEnabled": True})["Command"]
    assert sorted(cmd["InstanceIds"]) == sorted(ids[:2])
    assert cmd["Status"] == "Pending" and cmd["DocumentVersion"] == "1" and cmd["Comment"] == "fleet-install k1 exec"
    assert cmd["CloudWatchOutputConfig"]["CloudWatchLogGroupName"] == "out"
    invs = wait_invocations(env, cmd["CommandId"], final)
    assert sorted(i["InstanceId"] for i in invs) == sorted(ids[:2])


def test_invocations_evolve_and_are_invisible_at_first(env):
    iid = env.launch(1, install_seconds=1.5)[0]
    cid = env.ssm.send_command(InstanceIds=[iid], DocumentName="fleet-linux",
                               Parameters=linux_params())["Command"]["CommandId"]
    assert env.ssm.list_command_invocations(CommandId=cid)["CommandInvocations"] == []
    with pytest.raises(botocore.exceptions.ClientError) as e:
        env.ssm.get_command_invocation(CommandId=cid, InstanceId=iid)
    assert error_code(e) == "InvocationDoesNotExist"
    seen = []
    deadline = time.time() + 6
    while time.time() < deadline:
        invs = env.ssm.list_command_invocations(CommandId=cid, Details=True)["CommandInvocations"]
        if invs and (not seen or seen[-1] != invs[0]["Status"]):
            seen.append(invs[0]["Status"])
        if seen and seen[-1] == "Success":
            break
        time.sleep(0.05)
    assert seen[-1] == "Success" and "InProgress" in seen
    plugin = invs[0]["CommandPlugins"][0]
    assert plugin["Name"] == "installAgent" and plugin["ResponseCode"] == 0
    assert "agent installed and running" in plugin["Output"]
    got = env.ssm.get_command_invocation(CommandId=cid, InstanceId=iid)
    assert got["Status"] == "Success" and got["ResponseCode"] == 0
    cmd = env.ssm.list_commands(CommandId=cid)["Commands"][0]
    assert (cmd["Status"], cmd["CompletedCount"], cmd["ErrorCount"], cmd["TargetCount"]) == ("Success", 1, 0, 1)


def test_outcomes(env):
    ok = env.launch(1, install_seconds=0.2)[0]
    failed = env.launch(1, install_seconds=0.2, outcome="Failed")[0]
    timed_out = env.launch(1, install_seconds=0.2, outcome="TimedOut")[0]
    undeliverable = env.launch(1, install_seconds=0.2, outcome="Undeliverable")[0]
    installed = env.launch(1, install_seconds=30, installed="true")[0]
    cid = env.ssm.send_command(InstanceIds=[ok, failed, timed_out, undeliverable, installed],
                               DocumentName="fleet-linux", Parameters=linux_params(),
                               MaxErrors="100%")["Command"]["CommandId"]
    invs = {i["InstanceId"]: i for i in wait_invocations(env, cid, final)}
    summary = {k: (v["Status"], v["StatusDetails"], v["CommandPlugins"][0]["ResponseCode"]) for k, v in invs.items()}
    assert summary[ok] == ("Success", "Success", 0)
    assert summary[failed] == ("Failed", "Failed", 1)
    assert invs[failed]["CommandPlugins"][0]["Output"].startswith("install failed: ")
    assert summary[timed_out] == ("TimedOut", "Execution Timed Out", -1)
    assert summary[undeliverable] == ("Failed", "Undeliverable", -1)
    assert summary[installed] == ("Success", "Success", 0)
    assert "already installed" in invs[installed]["CommandPlugins"][0]["Output"]
    cmd = env.ssm.list_commands(CommandId=cid)["Commands"][0]
    assert cmd["Status"] == "Success" and cmd["ErrorCount"] == 3   # MaxErrors 100%: the command itself succeeds
    cid0 = env.ssm.send_command(InstanceIds=[failed], DocumentName="fleet-linux",
                                Parameters=linux_params())["Command"]["CommandId"]
    wait_invocations(env, cid0, final)
    assert env.ssm.list_commands(CommandId=cid0)["Commands"][0]["Status"] == "Failed"   # MaxErrors 0


def test_fail_attempts_then_success_then_already_installed(env):
    iid = env.launch(1, install_seconds=0.1, fail_attempts=2)[0]
    results = []
    for _ in range(4):
        cid = env.ssm.send_command(InstanceIds=[iid], DocumentName="fleet-linux",
                                   Parameters=linux_params())["Command"]["CommandId"]
        inv = wait_invocations(env, cid, final)[0]
        results.append((inv["Status"], inv["CommandPlugins"][0]["Output"].split(":")[0]))
    assert [r[0] for r in results] == ["Failed", "Failed", "Success", "Success"]
    assert "already installed" in env.ssm.get_command_invocation(CommandId=cid, InstanceId=iid)["StandardOutputContent"]


def test_windows_document_on_linux_is_skipped_and_fails(env):
    iid = env.launch(1)[0]
    cid = env.ssm.send_command(InstanceIds=[iid], DocumentName="fleet-windows",
                               Parameters={"InstallerUrl": ["https://e.com/agent.msi"], "InstallerSha256": [HASH]},
                               )["Command"]["CommandId"]
    inv = wait_invocations(env, cid, final)[0]
    assert inv["Status"] == "Failed" and "unsatisfied preconditions" in inv["CommandPlugins"][0]["Output"]


def test_targets_by_tag_reach_only_managed_online_instances(env):
    a = env.launch(2, tag_team="x")
    env.launch(1, tag_team="x", managed="false")
    env.launch(1, tag_team="y")
    cmd = env.ssm.send_command(Targets=[{"Key": "tag:team", "Values": ["x"]}], DocumentName="fleet-linux",
                               Parameters=linux_params())["Command"]
    invs = wait_invocations(env, cmd["CommandId"], lambda invs: True)
    assert sorted(i["InstanceId"] for i in invs) == sorted(a)


def test_cancel_command(env):
    ids = env.launch(2, install_seconds=20)
    cid = env.ssm.send_command(InstanceIds=ids, DocumentName="fleet-linux",
                               Parameters=linux_params())["Command"]["CommandId"]
    time.sleep(0.6)
    env.ssm.cancel_command(CommandId=cid, InstanceIds=ids[:1])
    invs = {i["InstanceId"]: i["Status"] for i in env.ssm.list_command_invocations(CommandId=cid)["CommandInvocations"]}
    assert invs == {ids[0]: "Cancelled", ids[1]: "InProgress"}
    env.ssm.cancel_command(CommandId=cid)
    assert env.ssm.list_commands(CommandId=cid)["Commands"][0]["Status"] == "Cancelled"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        env.ssm.cancel_command(CommandId="00000000-0000-0000-0000-000000000000")
    assert error_code(e) == "InvalidCommandId"


def test_max_concurrency_queues_invocations(env):
    ids = env.launch(3, install_seconds=0.6)
    cid = env.ssm.send_command(InstanceIds=ids, DocumentName="fleet-linux", Parameters=linux_params(),
                               MaxConcurrency="1")["Command"]["CommandId"]
    time.sleep(0.7)
    statuses = sorted(i["Status"] for i in env.ssm.list_command_invocations(CommandId=cid)["CommandInvocations"])
    assert statuses == ["InProgress", "Pending", "Pending"]
    invs = wait_invocations(env, cid, final)
    assert all(i["Status"] == "Success" for i in invs)


def test_list_commands_filters_and_pagination(env):
    iid = env.launch(1)[0]
    before = time.time()
    cids = [env.ssm.send_command(InstanceIds=[iid], DocumentName="fleet-linux", Parameters=linux_params(),
                                 Comment=f"c{n}")["Command"]["CommandId"] for n in range(3)]
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(before - 1))
    found = env.ssm.list_commands(Filters=[{"key": "InvokedAfter", "value": since},
                                           {"key": "DocumentName", "value": "fleet-linux"}])["Commands"]
    assert [c["Comment"] for c in found] == ["c2", "c1", "c0"]
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
    assert env.ssm.list_commands(Filters=[{"key": "InvokedAfter", "value": later}])["Commands"] == []
    assert env.ssm.list_commands(Filters=[{"key": "DocumentName", "value": "other"}])["Commands"] == []
    page = env.ssm.list_commands(MaxResults=2)
    rest = env.ssm.list_commands(MaxResults=2, NextToken=page["NextToken"])
    assert [c["CommandId"] for c in page["Commands"] + rest["Commands"]] == cids[::-1]
    assert len(env.ssm.list_commands(InstanceId=iid)["Commands"]) == 3
    with pytest.raises(botocore.exceptions.ClientError) as e:
        env.ssm.list_command_invocations(CommandId=cids[0], MaxResults=51)
    assert error_code(e) == "ValidationException"


def test_list_command_invocations_paginates(env):
    ids = env.launch(7, install_seconds=0.1)
    cid = env.ssm.send_command(InstanceIds=ids, DocumentName="fleet-linux",
                               Parameters=linux_params())["Command"]["CommandId"]
    time.sleep(0.6)
    p1 = env.ssm.list_command_invocations(CommandId=cid, MaxResults=5)
    p2 = env.ssm.list_command_invocations(CommandId=cid, MaxResults=5, NextToken=p1["NextToken"])
    assert len(p1["CommandInvocations"]) == 5 and len(p2["CommandInvocations"]) == 2 and "NextToken" not in p2


# -------------------------------------------------------------------------- EC2 events and counter
def test_running_events_reach_the_queue_through_the_rule(env):
    q = env.sqs.create_queue(QueueName="q")["QueueUrl"]
    arn = env.sqs.get_queue_attributes(QueueUrl=q, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    env.events.put_rule(Name="running", EventPattern=json.dumps({
        "source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"],
        "detail": {"state": ["running"]}}))
    env.events.put_targets(Rule="running", Targets=[{"Id": "q", "Arn": arn}])
    ids = env.launch(2)
    msgs = env.sqs.receive_message(QueueUrl=q, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
    bodies = [json.loads(m["Body"]) for m in msgs]
    assert sorted(b["detail"]["instance-id"] for b in bodies) == sorted(ids)
    assert all(b["source"] == "aws.ec2" and b["detail"]["state"] == "running" for b in bodies)
    assert all(isinstance(b["time"], str) and b["time"].endswith("Z") and b["account"] == "123456789012" for b in bodies)


def test_api_call_counter(env):
    ids = env.launch(3)
    urllib.request.urlopen(urllib.request.Request(env.url + "/_fleet/api-calls", method="DELETE")).read()
    info(env, ids)
    env.ssm.send_command(InstanceIds=ids[:2], DocumentName="fleet-linux", Parameters=linux_params())
    counts = json.loads(urllib.request.urlopen(env.url + "/_fleet/api-calls").read())
    # calls per operation, and what the batched ones carried (make bench's API floor)
    assert counts == {"ssm.DescribeInstanceInformation": 1, "ssm.SendCommand": 1,
                      "items:ssm.DescribeInstanceInformation": 3, "items:ssm.SendCommand": 2}
