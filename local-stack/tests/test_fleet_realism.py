"""Issue 10, a simulation that does not hide real fleets: agent versions, ENV_VAR documents on old agents,
AWS-UpdateSSMAgent, the install documents' exit codes, DHMC, GetExecutionHistory paging, PutEvents sources."""

import json
import os
import time
import urllib.request

import botocore.exceptions
import pytest

from moto_ext import install_outcomes as O
from moto_ext import sim_tags as T
from test_ssm_sim import HASH, LINUX_DOC, WINDOWS_DOC, env, error_code, final, info, linux_params, wait_invocations  # noqa: F401

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCUMENTS = os.path.join(REPO, "documents")
OLD = "3.3.1142.0"


def env_var_doc(content: str) -> str:
    """The test document with every parameter passed as an environment variable, as documents/*.yml do."""
    return content.replace("    type: String\n", "    type: String\n    interpolationType: ENV_VAR\n")


@pytest.fixture
def docs(env):
    for name, content in (("fleet-linux-env", env_var_doc(LINUX_DOC)), ("fleet-windows-env", env_var_doc(WINDOWS_DOC))):
        env.ssm.create_document(Name=name, Content=content, DocumentType="Command", DocumentFormat="YAML",
                                TargetType="/AWS::EC2::Instance")
    return env


def run(aws, ids, document="fleet-linux", params=None, **kw):
    cid = aws.ssm.send_command(InstanceIds=ids, DocumentName=document,
                               Parameters=linux_params() if params is None else params, MaxErrors="100%",
                               **kw)["Command"]["CommandId"]
    return cid, {i["InstanceId"]: i for i in wait_invocations(aws, cid, final, timeout=15)}


def plugin(inv):
    return inv["CommandPlugins"][0]


WIN = "Windows|Microsoft Windows Server 2022 Datacenter|10.0.20348"
WIN_PARAMS = {"InstallerUrl": ["https://e.com/agent.msi"], "InstallerSha256": [HASH]}


# ----------------------------------------------------------------------------------------- 1. versions
def test_agent_version_tag_and_is_latest(env):
    new = env.launch(1)[0]
    old = env.launch(1, agent_version=OLD)[0]
    newer = env.launch(1, agent_version="3.3.10000.0")[0]
    seen = info(env)
    assert (seen[new]["AgentVersion"], seen[new]["IsLatestVersion"]) == (T.LATEST_AGENT_VERSION, True)
    assert T.LATEST_AGENT_VERSION == "3.3.3050.0"
    assert (seen[old]["AgentVersion"], seen[old]["IsLatestVersion"]) == (OLD, False)
    assert seen[newer]["IsLatestVersion"] is True   # numeric, not string, comparison
    only_old = info(env, Filters=[{"Key": "AgentVersion", "Values": [OLD]}])
    assert set(only_old) == {old}


def test_versions_compare_numerically():
    assert T.version_at_least("3.3.10000.0", "3.3.2746.0")
    assert not T.version_at_least("3.3.999.0", "3.3.2746.0")
    assert T.version_at_least("3.3.2746.0", "3.3.2746.0") and T.version_at_least("3.3.2746", "3.3.2746.0")
    assert not T.version_at_least("3.2.2746.0", "3.3.0.0")
    assert T.version_at_least("3.2.582.0", T.DHMC_MIN_AGENT_VERSION)
    assert not T.version_at_least("3.2.581.9", T.DHMC_MIN_AGENT_VERSION)


# ---------------------------------------------------------------------------------- 2. ENV_VAR documents
def test_env_var_document_fails_on_an_old_agent(docs):
    old, edge, new, below = (docs.launch(1, install_seconds=0.1, agent_version=v)[0]
                             for v in (OLD, "3.3.2746.0", "3.3.10000.0", "3.3.2745.99"))
    _, invs = run(docs, [old, edge, new, below], "fleet-linux-env")
    for iid in (old, below):
        inv = invs[iid]
        assert (inv["Status"], inv["StatusDetails"], plugin(inv)["ResponseCode"]) == ("Failed", "Failed", 2)
        assert O.ENV_VAR_LINUX in plugin(inv)["Output"]
        got = docs.ssm.get_command_invocation(CommandId=inv["CommandId"], InstanceId=iid)
        assert got["ResponseCode"] == 2 and got["StandardOutputContent"] == ""
        assert got["StandardErrorContent"] == (f"fleet-install: ERROR: {O.ENV_VAR_LINUX}\n"
                                               "failed to run commands: exit status 2")
    assert invs[edge]["Status"] == "Success" and invs[new]["Status"] == "Success"
    # a document without ENV_VAR parameters runs on the old agent
    _, invs = run(docs, [old], "fleet-linux")
    assert invs[old]["Status"] == "Success"


def test_env_var_document_on_an_old_windows_agent(docs):
    iid = docs.launch(1, platform=WIN, agent_version="3.2.582.0")[0]
    _, invs = run(docs, [iid], "fleet-windows-env", WIN_PARAMS)
    assert plugin(invs[iid])["ResponseCode"] == 2
    assert O.ENV_VAR_WINDOWS in plugin(invs[iid])["Output"]


def test_the_real_documents_need_env_var_and_fail_with_their_own_message(env):
    params = {"InstallerUrlRpm": ["https://e.com/a.rpm"], "InstallerSha256Rpm": [HASH],
              "InstallerUrlDeb": ["https://e.com/a.deb"], "InstallerSha256Deb": [HASH],
              "InstallerUrlFreeBsd": ["https://e.com/a.pkg"], "InstallerSha256FreeBsd": [HASH]}
    for name in ("linux", "windows"):
        with open(os.path.join(DOCUMENTS, f"install-agent-{name}.yml")) as f:
            env.ssm.create_document(Name=f"real-{name}", Content=f.read(), DocumentType="Command",
                                    DocumentFormat="YAML", TargetType="/AWS::EC2::Instance")
    lin = env.launch(1, agent_version=OLD)[0]
    win = env.launch(1, agent_version=OLD, platform=WIN)[0]
    _, invs = run(env, [lin], "real-linux", params)
    assert plugin(invs[lin])["ResponseCode"] == 2 and O.ENV_VAR_LINUX in plugin(invs[lin])["Output"]
    _, invs = run(env, [win], "real-windows", WIN_PARAMS)
    assert plugin(invs[win])["ResponseCode"] == 2 and O.ENV_VAR_WINDOWS in plugin(invs[win])["Output"]


def test_failure_messages_are_the_documents_own():
    with open(os.path.join(DOCUMENTS, "install-agent-linux.yml")) as f:
        linux = f.read()
    with open(os.path.join(DOCUMENTS, "install-agent-windows.yml")) as f:
        windows = f.read()
    assert O.ENV_VAR_LINUX in linux and O.ENV_VAR_WINDOWS in windows
    for code, template in O.LINUX.items():
        assert f'fail "$EX_' in linux and template in linux, (code, template)
    for code, template in O.WINDOWS.items():
        assert template in windows, (code, template)
    assert O.WINDOWS_HINT_EXE in windows and O.WINDOWS_HINT_MSI in windows
    for code in (4, 5, 6, 7):
        assert f" {code} " in linux.split("Exit codes:")[1][:400]


# ------------------------------------------------------------------------------------ 3. AWS-UpdateSSMAgent
def test_update_ssm_agent_document_is_aws_owned(env):
    d = env.ssm.describe_document(Name="AWS-UpdateSSMAgent")["Document"]
    assert d["Owner"] == "Amazon" and d["DocumentType"] == "Command"
    params = {p["Name"]: p for p in d["Parameters"]}
    assert set(params) == {"version", "allowDowngrade"}
    assert params["allowDowngrade"]["DefaultValue"] == "false"
    assert params["version"].get("DefaultValue", "") == ""


def test_update_ssm_agent_raises_the_version_and_then_env_var_documents_run(docs):
    iid = docs.launch(1, agent_version=OLD, agent_update_seconds=1, install_seconds=0.1)[0]
    _, invs = run(docs, [iid], "fleet-linux-env")
    assert plugin(invs[iid])["ResponseCode"] == 2
    cid = docs.ssm.send_command(InstanceIds=[iid], DocumentName="AWS-UpdateSSMAgent")["Command"]["CommandId"]
    time.sleep(0.7)
    assert info(docs, [iid])[iid]["AgentVersion"] == OLD       # still updating
    inv = wait_invocations(docs, cid, final)[0]
    assert (inv["Status"], plugin(inv)["Name"], plugin(inv)["ResponseCode"]) == ("Success", "aws:updateSsmAgent", 0)
    assert "updated successfully to 3.3.3050.0" in plugin(inv)["Output"]
    now = info(docs, [iid])[iid]
    assert (now["AgentVersion"], now["IsLatestVersion"], now["PingStatus"]) == ("3.3.3050.0", True, "Online")
    _, invs = run(docs, [iid], "fleet-linux-env")
    assert invs[iid]["Status"] == "Success"
    # already latest ($DEFAULT and $LATEST are accepted)
    for version in ("$DEFAULT", "$LATEST"):
        cid = docs.ssm.send_command(InstanceIds=[iid], DocumentName="AWS-UpdateSSMAgent",
                                    DocumentVersion=version)["Command"]["CommandId"]
        inv = wait_invocations(docs, cid, final)[0]
        assert inv["Status"] == "Success" and "already latest" in plugin(inv)["Output"]


def test_update_ssm_agent_target_and_failure(env):
    to = env.launch(1, agent_version=OLD, agent_update_seconds=0.2, agent_update_to="3.3.2800.0")[0]
    bad = env.launch(1, agent_version=OLD, agent_update_seconds=0.2, agent_update="fail")[0]
    cid = env.ssm.send_command(InstanceIds=[to, bad], DocumentName="AWS-UpdateSSMAgent",
                               MaxErrors="100%")["Command"]["CommandId"]
    invs = {i["InstanceId"]: i for i in wait_invocations(env, cid, final)}
    assert invs[to]["Status"] == "Success"
    assert (invs[bad]["Status"], plugin(invs[bad])["ResponseCode"]) == ("Failed", 1)
    assert "failed to install/update the agent" in plugin(invs[bad])["Output"]
    seen = info(env, [to, bad])
    assert seen[to]["AgentVersion"] == "3.3.2800.0" and seen[to]["IsLatestVersion"] is False
    assert seen[bad]["AgentVersion"] == OLD
    # an explicit version; an older one needs allowDowngrade
    cid = env.ssm.send_command(InstanceIds=[to], DocumentName="AWS-UpdateSSMAgent",
                               Parameters={"version": ["3.3.2000.0"]})["Command"]["CommandId"]
    assert wait_invocations(env, cid, final)[0]["Status"] == "Failed"
    cid = env.ssm.send_command(InstanceIds=[to], DocumentName="AWS-UpdateSSMAgent",
                               Parameters={"version": ["3.3.2000.0"], "allowDowngrade": ["true"]})["Command"]["CommandId"]
    assert wait_invocations(env, cid, final)[0]["Status"] == "Success"
    assert info(env, [to])[to]["AgentVersion"] == "3.3.2000.0"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        env.ssm.send_command(InstanceIds=[to], DocumentName="AWS-UpdateSSMAgent",
                             Parameters={"allowDowngrade": ["maybe"]})
    assert error_code(e) == "InvalidParameters"


def test_an_update_is_not_an_install(env):
    iid = env.launch(1, agent_version=OLD, agent_update_seconds=0.1, install_seconds=0.1)[0]
    run(env, [iid], "AWS-UpdateSSMAgent", {})
    _, invs = run(env, [iid])
    assert "already installed" not in plugin(invs[iid])["Output"]


# ---------------------------------------------------------------------------------------- 4. exit codes
def test_exit_code_then_success_with_fail_attempts(env):
    iid = env.launch(1, install_seconds=0.1, exit_code=4, fail_attempts=1)[0]
    _, invs = run(env, [iid])
    inv = invs[iid]
    assert (inv["Status"], plugin(inv)["ResponseCode"]) == ("Failed", 4)
    out = plugin(inv)["Output"]
    assert "fleet-install: ERROR: download of installer failed (curl exit code 22)" in out
    assert out.endswith("failed to run commands: exit status 4") and "----------ERROR-------" in out
    _, invs = run(env, [iid])
    assert invs[iid]["Status"] == "Success"


def test_exit_codes_without_fail_attempts_fail_every_send(env):
    lin = env.launch(1, install_seconds=0.1, exit_code=5)[0]
    win = {code: env.launch(1, install_seconds=0.1, exit_code=code, platform=WIN)[0] for code in (8, 9, 10)}
    for _ in range(2):
        _, invs = run(env, [lin])
        assert plugin(invs[lin])["ResponseCode"] == 5
        assert f"SHA-256 mismatch: expected {HASH}, got " in plugin(invs[lin])["Output"]
    _, invs = run(env, list(win.values()), "fleet-windows", WIN_PARAMS)
    for code, iid in win.items():
        assert (invs[iid]["Status"], plugin(invs[iid])["ResponseCode"]) == ("Failed", code)
    assert ("installer did not finish within InstallerTimeoutSeconds (600 s) and was killed with its child "
            "processes; another installation may be holding the Windows Installer") in plugin(invs[win[8]])["Output"]
    assert "installer exit code 1641" in plugin(invs[win[9]])["Output"]
    assert "requires a reboot to complete (exit code 3010)" in plugin(invs[win[10]])["Output"]


def test_outcome_tags_still_apply(env):
    failed = env.launch(1, install_seconds=0.1, outcome="Failed")[0]
    timed = env.launch(1, install_seconds=0.1, exit_code=6, fail_attempts=1, outcome="TimedOut")[0]
    _, invs = run(env, [failed, timed])
    assert plugin(invs[failed])["ResponseCode"] == 1 and plugin(invs[failed])["Output"].startswith("install failed: ")
    assert plugin(invs[timed])["ResponseCode"] == 6
    assert "package installation failed (exit code 1)" in plugin(invs[timed])["Output"]
    _, invs = run(env, [timed])
    assert invs[timed]["Status"] == "TimedOut"


# ------------------------------------------------------------------------------------------------ 5. DHMC
DHMC = "/ssm/managed-instance/default-ec2-instance-management-role"
DHMC_ARN = f"arn:aws:ssm:us-east-1:123456789012:servicesetting{DHMC}"


def test_dhmc_service_setting(env):
    got = env.ssm.get_service_setting(SettingId=DHMC)["ServiceSetting"]
    assert (got["SettingId"], got["Status"], got["ARN"]) == (DHMC, "Default", DHMC_ARN)
    assert got["SettingValue"] == "$None" and got["LastModifiedUser"] == "System"
    env.ssm.update_service_setting(SettingId=DHMC_ARN, SettingValue="service-role/DhmcRole")
    got = env.ssm.get_service_setting(SettingId=DHMC_ARN)["ServiceSetting"]
    assert (got["SettingValue"], got["Status"]) == ("service-role/DhmcRole", "Customized")
    assert got["LastModifiedUser"] == "arn:aws:iam::123456789012:root"
    reset = env.ssm.reset_service_setting(SettingId=DHMC)["ServiceSetting"]
    assert reset["Status"] == "Default" and reset["SettingValue"] == "$None"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        env.ssm.update_service_setting(SettingId=DHMC, SettingValue="")
    assert error_code(e) == "ValidationException"
    for bad in ("/ssm/no/such/setting", "arn:aws:ssm:eu-west-1:123456789012:servicesetting" + DHMC):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            env.ssm.get_service_setting(SettingId=bad)
        assert error_code(e) == "ServiceSettingNotFound"


def test_dhmc_registers_instances_without_a_profile(env):
    env.iam.create_role(RoleName="DhmcRole", Path="/service-role/", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ssm.amazonaws.com"},
                                                "Action": "sts:AssumeRole"}]}))
    env.iam.attach_role_policy(RoleName="DhmcRole",
                               PolicyArn="arn:aws:iam::aws:policy/AmazonSSMManagedEC2InstanceDefaultPolicy")
    image = env.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]

    def launch(tokens, version=None, delay=None):
        tags = [{"Key": k, "Value": v} for k, v in ((T.AGENT_VERSION, version), (T.REGISTER_DELAY, delay)) if v]
        kw = dict(ImageId=image, MinCount=1, MaxCount=1, MetadataOptions={"HttpTokens": tokens, "HttpEndpoint": "enabled"})
        if tags:
            kw["TagSpecifications"] = [{"ResourceType": "instance", "Tags": tags}]
        return env.ec2.run_instances(**kw)["Instances"][0]["InstanceId"]

    v2 = launch("required")
    v1 = launch("optional")
    old = launch("required", "3.2.500.0")
    late = launch("required", delay="1")
    assert info(env) == {}, "without the setting nothing registers without a profile"
    env.ssm.update_service_setting(SettingId=DHMC, SettingValue="service-role/NoSuchRole")
    assert info(env) == {}, "a role that does not exist gives no credentials"
    env.ssm.update_service_setting(SettingId=DHMC, SettingValue="service-role/DhmcRole")
    assert set(info(env)) == {v2}
    time.sleep(1.1)
    assert set(info(env)) == {v2, late}
    # IMDSv2 required later: the agent registers then; other options are kept
    env.ec2.modify_instance_metadata_options(InstanceId=v1, HttpTokens="required")
    opts = env.ec2.describe_instances(InstanceIds=[v1])["Reservations"][0]["Instances"][0]["MetadataOptions"]
    assert (opts["HttpTokens"], opts["HttpEndpoint"]) == ("required", "enabled")
    assert set(info(env)) == {v2, late, v1}
    # the old agent registers once updated (AWS-UpdateSSMAgent needs a registered agent: raise the tag instead)
    env.ec2.create_tags(Resources=[old], Tags=[{"Key": T.AGENT_VERSION, "Value": "3.2.582.0"}])
    assert set(info(env)) == {v2, late, v1, old}
    env.ssm.reset_service_setting(SettingId=DHMC)
    assert {i: s["PingStatus"] for i, s in info(env).items()} == {v2: "ConnectionLost", late: "ConnectionLost",
                                                                  v1: "ConnectionLost", old: "ConnectionLost"}


# ----------------------------------------------------------------------------------- 6. execution history
def test_stop_execution_aborts_at_once_with_the_error_and_cause_given(env):
    """AWS: StopExecution ends the execution ABORTED at once and records the request's error and cause, also
    while a state waits (here a Wait; a `.sync` child wait behaves the same)."""
    sm = env.sfn.create_state_machine(
        name="stoppable", roleArn="arn:aws:iam::123456789012:role/sfn",
        definition=json.dumps({"StartAt": "Hold", "States": {"Hold": {"Type": "Wait", "Seconds": 60, "Next": "Done"},
                                                            "Done": {"Type": "Succeed"}}}))["stateMachineArn"]
    arn = env.sfn.start_execution(stateMachineArn=sm, input="{}")["executionArn"]
    time.sleep(0.5)
    env.sfn.stop_execution(executionArn=arn, error="FleetInstall.Cancelled", cause="cancelled by a test")
    d = env.sfn.describe_execution(executionArn=arn)
    assert (d["status"], d.get("error"), d.get("cause")) == ("ABORTED", "FleetInstall.Cancelled", "cancelled by a test")
    time.sleep(1.5)   # whatever the engine's worker does once it notices, the answer stays
    d = env.sfn.describe_execution(executionArn=arn)
    assert (d["status"], d.get("error")) == ("ABORTED", "FleetInstall.Cancelled")


def test_get_execution_history_pages_as_aws_does(env):
    states = {f"S{n}": {"Type": "Pass", "Result": {"n": n}, "Next": f"S{n + 1}"} for n in range(60)}
    states["S60"] = {"Type": "Succeed"}
    sm = env.sfn.create_state_machine(name="history", roleArn="arn:aws:iam::123456789012:role/sfn",
                                      definition=json.dumps({"StartAt": "S0", "States": states}))["stateMachineArn"]
    arn = env.sfn.start_execution(stateMachineArn=sm, input='{"x": 1}')["executionArn"]
    deadline = time.time() + 20
    while env.sfn.describe_execution(executionArn=arn)["status"] == "RUNNING" and time.time() < deadline:
        time.sleep(0.2)
    everything, token = [], None
    while True:
        page = env.sfn.get_execution_history(executionArn=arn, maxResults=1000, **({"nextToken": token} if token else {}))
        everything += page["events"]
        token = page.get("nextToken")
        if not token:
            break
    total = len(everything)
    assert total > 100 and [e["id"] for e in everything] == sorted(e["id"] for e in everything)
    first = env.sfn.get_execution_history(executionArn=arn)
    assert len(first["events"]) == 100 and first["nextToken"]
    assert len(env.sfn.get_execution_history(executionArn=arn, maxResults=0)["events"]) == 100
    pages, token = [], None
    while True:
        page = env.sfn.get_execution_history(executionArn=arn, maxResults=7, reverseOrder=True,
                                             **({"nextToken": token} if token else {}))
        assert len(page["events"]) <= 7
        pages += page["events"]
        token = page.get("nextToken")
        if not token:
            break
    assert [e["id"] for e in pages] == [e["id"] for e in reversed(everything)]
    assert pages[0]["type"] == "ExecutionSucceeded"
    token = env.sfn.get_execution_history(executionArn=arn, maxResults=5)["nextToken"]
    for kw in ({"reverseOrder": True, "nextToken": token}, {"nextToken": "garbage"}):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            env.sfn.get_execution_history(executionArn=arn, maxResults=5, **kw)
        assert error_code(e) == "InvalidToken"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        env.sfn.get_execution_history(executionArn=arn, maxResults=1001)
    assert error_code(e) == "ValidationException"
    bare = env.sfn.get_execution_history(executionArn=arn, maxResults=1, includeExecutionData=False)["events"][0]
    assert "input" not in bare["executionStartedEventDetails"]
    full = env.sfn.get_execution_history(executionArn=arn, maxResults=1)["events"][0]
    assert json.loads(full["executionStartedEventDetails"]["input"]) == {"x": 1}


# ------------------------------------------------------------------------------------------ 7. PutEvents
def test_put_events_refuses_aws_sources_but_ec2_events_still_arrive(env):
    q = env.sqs.create_queue(QueueName="events")["QueueUrl"]
    arn = env.sqs.get_queue_attributes(QueueUrl=q, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    env.events.put_rule(Name="all", EventPattern=json.dumps({"source": ["aws.ec2", "my.app"]}))
    env.events.put_targets(Rule="all", Targets=[{"Id": "q", "Arn": arn}])
    resp = env.events.put_events(Entries=[
        {"Source": "aws.ec2", "DetailType": "EC2 Instance State-change Notification",
         "Detail": json.dumps({"instance-id": "i-0123456789abcdef0", "state": "running"})},
        {"Source": "my.app", "DetailType": "thing", "Detail": "{}"},
    ])
    assert resp["FailedEntryCount"] == 1
    assert resp["Entries"][0] == {"ErrorCode": "NotAuthorizedForSourceException",
                                  "ErrorMessage": "Not authorized for the source."}
    assert "EventId" in resp["Entries"][1]
    msgs = env.sqs.receive_message(QueueUrl=q, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    assert [json.loads(m["Body"])["source"] for m in msgs] == ["my.app"]
    for m in msgs:
        env.sqs.delete_message(QueueUrl=q, ReceiptHandle=m["ReceiptHandle"])
    # EC2's own events: on launch, and on request through the control
    launched = env.launch(1)[0]
    req = urllib.request.Request(env.url + "/_fleet/events/ec2-running", method="POST",
                                 data=json.dumps({"instanceIds": [launched]}).encode())
    assert json.loads(urllib.request.urlopen(req).read())["instanceIds"] == [launched]
    got = []
    deadline = time.time() + 5
    while len(got) < 2 and time.time() < deadline:
        got += [json.loads(m["Body"]) for m in env.sqs.receive_message(
            QueueUrl=q, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])]
    assert [(b["source"], b["detail"]["instance-id"], b["detail"]["state"]) for b in got] == \
        [("aws.ec2", launched, "running")] * 2
    bad = urllib.request.Request(env.url + "/_fleet/events/ec2-running", method="POST", data=b'{"instanceIds": []}')
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(bad)
    assert e.value.code == 400
