"""Generic runs (`fleet-install run`): any command document that is not an install document runs on the simulated
agent with its outcome, run time and output from the instance's tags (sim_tags.RUN_*, TIME_SCALE); the AWS-owned
AWS-RunShellScript and AWS-RunPowerShellScript; CloudWatch output; cancel; IAM on AWS-owned document ARNs."""

import json
import os
import time
import types

import boto3
import botocore.exceptions
import pytest
import yaml
from botocore.config import Config

from moto_ext import iam_ext
from moto_ext import install_outcomes as O
from moto_ext import sim_tags as T
from test_drift_sim import control
from test_fleet_realism import DOCUMENTS, WIN, plugin
from test_ssm_sim import LINUX_DOC, WINDOWS_DOC, env, error_code, final, linux_params, wait_invocations  # noqa: F401

SHELL, POWERSHELL = "AWS-RunShellScript", "AWS-RunPowerShellScript"
TIMEOUT_PATTERN = "([1-9][0-9]{0,4})|(1[0-6][0-9]{4})|(17[0-1][0-9]{3})|(172[0-7][0-9]{2})|(172800)"


def client(aws, service, **creds):
    return boto3.client(service, endpoint_url=aws.url, region_name="us-east-1",
                        aws_access_key_id=creds.get("AccessKeyId", "testing"),
                        aws_secret_access_key=creds.get("SecretAccessKey", "testing"),
                        aws_session_token=creds.get("SessionToken"),
                        config=Config(retries={"total_max_attempts": 1}))


def send(aws, ids, document=SHELL, commands=("echo hi",), **kw):
    params = kw.pop("Parameters", {"commands": list(commands)})
    return aws.ssm.send_command(InstanceIds=ids, DocumentName=document, Parameters=params, MaxErrors="100%",
                                **kw)["Command"]["CommandId"]


def finished(aws, cid, timeout=15):
    return {i["InstanceId"]: i for i in wait_invocations(aws, cid, final, timeout=timeout)}


def summary(inv):
    return inv["Status"], inv["StatusDetails"], plugin(inv)["ResponseCode"]


def elapsed(got) -> float:
    return float(got["ExecutionElapsedTime"][2:-1])


# ----------------------------------------------------------------------------------- 1. the AWS documents
@pytest.mark.parametrize("name, plugin_name, platforms, completed", [
    (SHELL, "aws:runShellScript", ["Linux", "MacOS"], "complete"),
    (POWERSHELL, "aws:runPowerShellScript", ["Windows", "Linux"], "be completed")])
def test_aws_run_documents_through_get_and_describe_document(env, name, plugin_name, platforms, completed):
    got = env.ssm.get_document(Name=name)
    assert (got["DocumentFormat"], got["DocumentType"], got["DocumentVersion"], got["Status"]) == (
        "JSON", "Command", "1", "Active")
    assert got["Content"].startswith('{\n    "schemaVersion":"1.2",\n')   # AWS's own layout
    content = json.loads(got["Content"])
    assert content["schemaVersion"] == "1.2"
    params = content["parameters"]
    assert params["commands"]["type"] == "StringList" and "default" not in params["commands"]
    assert params["commands"]["minItems"] == 1
    assert params["workingDirectory"] == {"type": "String", "default": "",
                                          "description": "(Optional) The path to the working directory on your "
                                                         "instance.", "maxChars": 4096}
    timeout = params["executionTimeout"]
    assert (timeout["type"], timeout["default"], timeout["allowedPattern"]) == ("String", "3600", TIMEOUT_PATTERN)
    assert f"to {completed} before" in timeout["description"] and "Maximum is 172800 (48 hours)." in timeout["description"]
    assert content["runtimeConfig"] == {plugin_name: {"properties": [{
        "id": f"0.{plugin_name}", "runCommand": "{{ commands }}", "workingDirectory": "{{ workingDirectory }}",
        "timeoutSeconds": "{{ executionTimeout }}"}]}}
    as_yaml = env.ssm.get_document(Name=name, DocumentFormat="YAML")
    assert as_yaml["DocumentFormat"] == "YAML" and yaml.safe_load(as_yaml["Content"]) == content
    described = env.ssm.describe_document(Name=name)["Document"]
    assert (described["Owner"], described["PlatformTypes"], described["SchemaVersion"]) == ("Amazon", platforms, "1.2")
    assert {p["Name"]: p.get("DefaultValue") for p in described["Parameters"]} == {
        "commands": None, "workingDirectory": "", "executionTimeout": "3600"}


def test_get_document_takes_the_default_and_latest_versions_as_aws_does(env):
    for version in ("$DEFAULT", "$LATEST", "1"):
        got = env.ssm.get_document(Name="AWS-RunShellScript", DocumentVersion=version, DocumentFormat="JSON")
        assert got["DocumentVersion"] == "1", version
    with pytest.raises(botocore.exceptions.ClientError) as e:
        env.ssm.get_document(Name="AWS-RunShellScript", DocumentVersion="2")
    assert error_code(e) == "InvalidDocument"


def test_run_document_parameters_are_validated_as_ssm_does(env):
    iid = env.launch(1)[0]
    for params in ({"commands": ["true"], "executionTimeout": ["172800"]}, {"commands": ["true"],
                   "executionTimeout": ["5"], "workingDirectory": ["/tmp"]}):
        send(env, [iid], Parameters=params)
    bad = [{}, {"commands": []}, {"commands": ["true"], "executionTimeout": ["172801"]},
           {"commands": ["true"], "executionTimeout": ["0"]}, {"commands": ["true"], "executionTimeout": ["1h"]},
           {"commands": ["true"], "workingDirectory": ["/" * 4097]}, {"commands": ["true"], "shell": ["bash"]}]
    for params in bad:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            send(env, [iid], Parameters=params)
        assert error_code(e) == "InvalidParameters", params


# ------------------------------------------------------------------------------ 2. which documents install
def doc(content):
    return types.SimpleNamespace(content_json=content, name="d")


def test_install_documents_are_recognised_and_nothing_else():
    from moto_ext import ssm_agent, ssm_settings

    for name in ("linux", "windows"):
        with open(os.path.join(DOCUMENTS, f"install-agent-{name}.yml")) as f:
            assert ssm_agent.is_install_document(doc(yaml.safe_load(f)))
    for content in (LINUX_DOC, WINDOWS_DOC):     # the tests' documents of the same shape
        assert ssm_agent.is_install_document(doc(yaml.safe_load(content)))
    for name, (content, _) in ssm_settings.AWS_DOCUMENTS.items():
        assert not ssm_agent.is_install_document(doc(content)), name
    only_url = yaml.safe_load(LINUX_DOC)
    del only_url["parameters"]["InstallerSha256"]
    assert not ssm_agent.is_install_document(doc(only_url))
    prints_result = {"schemaVersion": "2.2", "mainSteps": [{"action": "aws:runShellScript", "name": "x", "inputs": {
        "runCommand": [f"echo {O.RESULT_PREFIX}installed"]}}]}
    assert ssm_agent.is_install_document(doc(prints_result))


def test_install_documents_behave_as_before_and_generic_runs_are_not_installs(env):
    iid = env.launch(1, install_seconds=0.1, fail_attempts=1, outcome="Failed", run_seconds=0.1)[0]
    # the install tags do not touch a generic run, and a generic run does not count as an install's send
    assert summary(finished(env, send(env, [iid]))[iid]) == ("Success", "Success", 0)
    first = finished(env, send(env, [iid], "fleet-linux", Parameters=linux_params()))[iid]
    assert summary(first) == ("Failed", "Failed", 1)
    assert plugin(first)["Output"].startswith(f"install failed: simulated failure (send 1 to {iid})")


# ------------------------------------------------------------------------------------------ 3. the tags
def test_default_run_prints_a_line_naming_host_and_document(env):
    iid = env.launch(1)[0]
    cid = send(env, [iid])
    inv = finished(env, cid)[iid]
    assert summary(inv) == ("Success", "Success", 0)
    assert plugin(inv)["Name"] == "aws:runShellScript"
    got = env.ssm.get_command_invocation(CommandId=cid, InstanceId=iid)
    assert got["PluginName"] == "aws:runShellScript" and got["ResponseCode"] == 0
    assert got["StandardOutputContent"] == plugin(inv)["Output"]
    assert got["StandardOutputContent"].startswith("ip-") and got["StandardOutputContent"].endswith(
        f": {SHELL} finished")
    assert got["StandardErrorContent"] == ""
    assert 0.9 <= elapsed(got) <= 1.3    # run-seconds 1 by default
    assert got["CloudWatchOutputConfig"] == {"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": False}
    assert inv["CloudWatchOutputConfig"] == got["CloudWatchOutputConfig"]


def test_outcome_and_exit_code_tags(env):
    ok = env.launch(1, run_seconds=0.1, run_output="two\\nlines")[0]
    failed = env.launch(1, run_seconds=0.1, run_outcome="Failed")[0]
    code = env.launch(1, run_seconds=0.1, run_exit_code=3)[0]
    failed_zero = env.launch(1, run_seconds=0.1, run_outcome="Failed", run_exit_code=0)[0]
    failed_code = env.launch(1, run_seconds=0.1, run_outcome="Failed", run_exit_code=42)[0]
    junk = env.launch(1, run_seconds=0.1, run_exit_code="300")[0]
    undeliverable = env.launch(1, run_seconds=1, run_outcome="Undeliverable")[0]
    ids = [ok, failed, code, failed_zero, failed_code, junk, undeliverable]
    cid = send(env, ids)
    time.sleep(0.8)
    early = {i["InstanceId"]: i["Status"] for i in env.ssm.list_command_invocations(CommandId=cid)["CommandInvocations"]}
    assert early[undeliverable] == "Pending" and early[ok] == "Success"
    invs = finished(env, cid)
    assert summary(invs[ok]) == ("Success", "Success", 0) and plugin(invs[ok])["Output"] == "two\nlines"
    for iid, n in ((failed, 1), (code, 3), (failed_zero, 1), (failed_code, 42)):
        assert summary(invs[iid]) == ("Failed", "Failed", n), iid
        got = env.ssm.get_command_invocation(CommandId=cid, InstanceId=iid)
        assert got["ResponseCode"] == n
        assert got["StandardErrorContent"] == f"failed to run commands: exit status {n}"
        assert plugin(invs[iid])["Output"].endswith(f"----------ERROR-------\nfailed to run commands: exit status {n}")
    assert summary(invs[junk]) == ("Success", "Success", 0)     # 300 is no exit code: the default
    assert summary(invs[undeliverable]) == ("Failed", "Undeliverable", -1)
    assert env.ssm.get_command_invocation(CommandId=cid, InstanceId=undeliverable)["StandardOutputContent"] == ""
    cmd = env.ssm.list_commands(CommandId=cid)["Commands"][0]
    assert (cmd["Status"], cmd["ErrorCount"], cmd["CompletedCount"]) == ("Success", 5, 7)


def test_output_lines_are_cut_as_the_agent_cuts_them(env):
    iid = env.launch(1, run_seconds=0.1, run_output="header", run_output_lines=3000, run_exit_code=2)[0]
    cid = send(env, [iid])
    inv = finished(env, cid)[iid]
    full = "header\n" + "\n".join(f"line {n} of 3000" for n in range(1, 3001))
    got = env.ssm.get_command_invocation(CommandId=cid, InstanceId=iid)
    assert len(full) > O.STDOUT_CONTENT
    assert got["StandardOutputContent"] == full[:O.STDOUT_CONTENT]
    assert got["StandardErrorContent"] == "failed to run commands: exit status 2"
    output = plugin(inv)["Output"]
    assert len(output) <= 2500 and output == O.plugin_output(full, "failed to run commands: exit status 2")
    assert output.startswith("header\nline 1 of 3000\n") and O.OUT_CUT in output
    assert output.endswith("failed to run commands: exit status 2")


def test_run_seconds_and_time_scale(env):
    # 40 minutes at 1/1000: 2.4 real seconds, within the default one-hour timeout (3.6 s here)
    iid = env.launch(1, run_seconds=2400, time_scale=0.001)[0]
    cid = send(env, [iid])
    time.sleep(1.5)
    assert env.ssm.get_command_invocation(CommandId=cid, InstanceId=iid)["Status"] == "InProgress"
    inv = finished(env, cid)[iid]
    assert summary(inv) == ("Success", "Success", 0)
    assert 2.3 <= elapsed(env.ssm.get_command_invocation(CommandId=cid, InstanceId=iid)) <= 2.6


def test_execution_timeout_is_honoured_at_scale(env):
    # 5,000 s against the default executionTimeout 3600 at 1/2000: TimedOut after 1.8 s, not 2.5 s
    slow = env.launch(1, run_seconds=5000, time_scale=0.0005, run_output_lines=10)[0]
    # 120 s against executionTimeout 60 at 1/100: TimedOut after 0.6 s with half its lines printed
    given = env.launch(1, run_seconds=120, time_scale=0.01, run_output_lines=10)[0]
    hangs = env.launch(1, run_outcome="TimedOut", time_scale=0.01, run_output="started")[0]
    a = send(env, [slow])
    b = send(env, [given, hangs], Parameters={"commands": ["sleep 120"], "executionTimeout": ["60"]})
    invs = {**finished(env, a), **finished(env, b)}
    for iid, cid, seconds in ((slow, a, 1.8), (given, b, 0.6), (hangs, b, 0.6)):
        assert summary(invs[iid]) == ("TimedOut", "Execution Timed Out", -1), iid
        got = env.ssm.get_command_invocation(CommandId=cid, InstanceId=iid)
        assert (got["Status"], got["StatusDetails"], got["ResponseCode"]) == ("TimedOut", "Execution Timed Out", -1)
        assert seconds - 0.1 <= elapsed(got) <= seconds + 0.2, (iid, got["ExecutionElapsedTime"])
        assert got["StandardErrorContent"] == ""
    assert env.ssm.get_command_invocation(CommandId=b, InstanceId=given)["StandardOutputContent"] == "\n".join(
        f"line {n} of 10" for n in range(1, 6))
    assert env.ssm.get_command_invocation(CommandId=a, InstanceId=slow)["StandardOutputContent"].count("\n") == 7
    assert plugin(invs[hangs])["Output"] == "started"
    assert env.ssm.list_commands(CommandId=b)["Commands"][0]["Status"] == "Success"   # MaxErrors 100%
    cid = env.ssm.send_command(InstanceIds=[hangs], DocumentName=SHELL, Parameters={
        "commands": ["sleep 120"], "executionTimeout": ["10"]})["Command"]["CommandId"]
    finished(env, cid)
    assert env.ssm.list_commands(CommandId=cid)["Commands"][0]["Status"] == "TimedOut"


def test_timeout_of_other_documents(env):
    # a customer document: the step's literal timeoutSeconds; none at all: the agent's 3600
    for name, inputs in (("literal", {"timeoutSeconds": 30, "runCommand": ["sleep 60"]}),
                         ("none", {"runCommand": ["sleep 60"]})):
        env.ssm.create_document(Name=f"generic-{name}", DocumentType="Command", DocumentFormat="JSON", Content=json.dumps({
            "schemaVersion": "2.2", "description": "generic", "mainSteps": [
                {"action": "aws:runShellScript", "name": "work", "inputs": inputs}]}))
    iid = env.launch(1, run_seconds=60, time_scale=0.01)[0]
    a = finished(env, send(env, [iid], "generic-literal", Parameters={}))[iid]
    b = finished(env, send(env, [iid], "generic-none", Parameters={}))[iid]
    assert summary(a) == ("TimedOut", "Execution Timed Out", -1) and plugin(a)["Name"] == "work"
    assert summary(b) == ("Success", "Success", 0)


# ------------------------------------------------------------------------------ 4. platform mismatch
def test_documents_for_another_platform_fail_as_the_agent_fails_them(env):
    linux = env.launch(1, run_seconds=0.1)[0]
    windows = env.launch(1, run_seconds=0.1, platform=WIN)[0]
    shell = send(env, [linux, windows])
    pwsh = send(env, [linux, windows], POWERSHELL)
    a, b = finished(env, shell), finished(env, pwsh)
    assert summary(a[linux]) == ("Success", "Success", 0)
    assert summary(a[windows]) == ("Failed", "Failed", 1)
    message = "Plugin with name aws:runShellScript not found. Step name: aws:runShellScript"
    assert plugin(a[windows])["Output"] == message
    got = env.ssm.get_command_invocation(CommandId=shell, InstanceId=windows)
    assert (got["StandardOutputContent"], got["StandardErrorContent"]) == ("", message)
    assert summary(b[windows]) == ("Success", "Success", 0)
    assert plugin(b[windows])["Name"] == "aws:runPowerShellScript"
    assert b[windows]["CommandPlugins"][0]["Output"].startswith("EC2AMAZ-")
    assert summary(b[linux]) == ("Failed", "Failed", 1)
    got = env.ssm.get_command_invocation(CommandId=pwsh, InstanceId=linux)
    assert got["StandardErrorContent"] == "failed to run commands: fork/exec /usr/bin/pwsh: no such file or directory"


def test_schema_22_skips_steps_of_another_platform(env):
    env.ssm.create_document(Name="both", DocumentType="Command", DocumentFormat="YAML", Content="""
schemaVersion: '2.2'
description: shell on Linux, PowerShell on Windows
mainSteps:
  - action: aws:runShellScript
    name: unix
    inputs: {runCommand: [uname]}
  - action: aws:runPowerShellScript
    name: windows
    precondition: {StringEquals: [platformType, Windows]}
    inputs: {runCommand: [hostname]}
""")
    linux = env.launch(1, run_seconds=0.1)[0]
    windows = env.launch(1, run_seconds=0.1, platform=WIN)[0]
    invs = finished(env, send(env, [linux, windows], "both", Parameters={}))
    assert summary(invs[linux]) == ("Success", "Success", 0)
    assert [p["Name"] for p in invs[linux]["CommandPlugins"]] == ["unix", "windows"]
    assert "unsatisfied preconditions" in invs[linux]["CommandPlugins"][1]["Output"]
    assert summary(invs[windows]) == ("Success", "Success", 0)
    assert [p["Name"] for p in invs[windows]["CommandPlugins"]] == ["windows", "unix"]
    assert invs[windows]["CommandPlugins"][1]["Output"] == (
        "Step execution skipped due to incompatible platform. Step name: unix")


# --------------------------------------------------------------------------------------------- 5. cancel
def test_cancel_a_generic_run_in_flight(env):
    quick = env.launch(1, run_seconds=0.1)[0]
    slow_a, slow_b = env.launch(2, run_seconds=3)
    queued = env.launch(1, run_seconds=0.1)[0]
    # two at a time: slow_a and quick start, slow_b takes quick's slot, queued waits for slow_a's (3.5 s)
    cid = send(env, [slow_a, quick, slow_b, queued], MaxConcurrency="2",
               CloudWatchOutputConfig={"CloudWatchOutputEnabled": True})
    wait_invocations(env, cid, lambda invs: any(i["InstanceId"] == quick and i["Status"] == "Success" for i in invs))
    statuses = {i["InstanceId"]: i["Status"] for i in env.ssm.list_command_invocations(CommandId=cid)["CommandInvocations"]}
    assert statuses == {quick: "Success", slow_a: "InProgress", slow_b: "InProgress", queued: "Pending"}
    env.ssm.cancel_command(CommandId=cid, InstanceIds=[slow_a])
    statuses = {i["InstanceId"]: i["Status"] for i in env.ssm.list_command_invocations(CommandId=cid)["CommandInvocations"]}
    assert statuses == {quick: "Success", slow_a: "Cancelled", slow_b: "InProgress", queued: "Pending"}
    env.ssm.cancel_command(CommandId=cid)
    time.sleep(3.5)    # past every planned end: nothing changes any more
    invs = {i["InstanceId"]: i for i in env.ssm.list_command_invocations(CommandId=cid, Details=True)["CommandInvocations"]}
    assert {k: summary(v) for k, v in invs.items()} == {
        quick: ("Success", "Success", 0), slow_a: ("Cancelled", "Cancelled", -1),
        slow_b: ("Cancelled", "Cancelled", -1), queued: ("Cancelled", "Cancelled", -1)}
    for iid in (slow_a, slow_b, queued):
        got = env.ssm.get_command_invocation(CommandId=cid, InstanceId=iid)
        assert (got["Status"], got["ResponseCode"], got["StandardOutputContent"]) == ("Cancelled", -1, "")
        assert plugin(invs[iid])["Output"] == ""
    assert env.ssm.list_commands(CommandId=cid)["Commands"][0]["Status"] == "Success"   # one ran, none failed
    # only the run that finished wrote its output
    logs = client(env, "logs")
    streams = [s["logStreamName"] for s in logs.describe_log_streams(logGroupName=f"/aws/ssm/{SHELL}")["logStreams"]]
    assert streams == [f"{cid}/{quick}/aws-runShellScript/stdout"]


# ------------------------------------------------------------------------------------ 6. CloudWatch output
def test_cloudwatch_output_default_group_and_streams(env):
    logs = client(env, "logs")
    ok = env.launch(1, run_seconds=2, run_output_lines=3000)[0]
    bad = env.launch(1, run_seconds=0.1, run_output="oops", run_exit_code=7)[0]
    cid = send(env, [ok, bad], CloudWatchOutputConfig={"CloudWatchOutputEnabled": True})
    cmd = env.ssm.list_commands(CommandId=cid)["Commands"][0]
    assert cmd["CloudWatchOutputConfig"] == {"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": True}
    wait_invocations(env, cid, lambda invs: any(i["InstanceId"] == bad and i["Status"] == "Failed" for i in invs))
    group = f"/aws/ssm/{SHELL}"
    assert [g["logGroupName"] for g in logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]] == [group]
    prefix = {iid: f"{cid}/{iid}/aws-runShellScript" for iid in (ok, bad)}
    names = lambda: sorted(s["logStreamName"] for s in logs.describe_log_streams(logGroupName=group)["logStreams"])  # noqa: E731
    assert names() == [f"{prefix[bad]}/stderr", f"{prefix[bad]}/stdout"]    # the other one is still running
    invs = finished(env, cid)
    assert names() == sorted([f"{prefix[bad]}/stderr", f"{prefix[bad]}/stdout", f"{prefix[ok]}/stdout"])

    def text(stream):
        evs = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True)["events"]
        return "\n".join(e["message"] for e in evs)

    full = "\n".join(f"line {n} of 3000" for n in range(1, 3001))
    assert text(f"{prefix[ok]}/stdout") == full          # all of it, not the API's first 24,000 characters
    assert text(f"{prefix[bad]}/stdout") == "oops"
    assert text(f"{prefix[bad]}/stderr") == "failed to run commands: exit status 7"
    got = env.ssm.get_command_invocation(CommandId=cid, InstanceId=ok)
    assert got["CloudWatchOutputConfig"] == {"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": True}
    assert invs[ok]["CloudWatchOutputConfig"] == got["CloudWatchOutputConfig"]


def test_cloudwatch_output_named_group_powershell_and_installs(env):
    logs = client(env, "logs")
    logs.create_log_group(logGroupName="/fleet/existing")
    windows = env.launch(1, run_seconds=0.1, platform=WIN, run_output="done")[0]
    linux = env.launch(1, install_seconds=0.1)[0]
    undeliverable = env.launch(1, run_seconds=0.1, run_outcome="Undeliverable")[0]
    a = send(env, [windows, undeliverable], POWERSHELL,
             CloudWatchOutputConfig={"CloudWatchLogGroupName": "/fleet/new", "CloudWatchOutputEnabled": True})
    b = send(env, [linux], "fleet-linux", Parameters=linux_params(),
             CloudWatchOutputConfig={"CloudWatchLogGroupName": "/fleet/existing", "CloudWatchOutputEnabled": True})
    c = send(env, [windows], POWERSHELL,
             CloudWatchOutputConfig={"CloudWatchLogGroupName": "/fleet/off", "CloudWatchOutputEnabled": False})
    for cid in (a, b, c):
        finished(env, cid)
    streams = {g: sorted(s["logStreamName"] for s in logs.describe_log_streams(logGroupName=g)["logStreams"])
               for g in ("/fleet/new", "/fleet/existing")}
    assert streams == {"/fleet/new": [f"{a}/{windows}/aws-runPowerShellScript/stdout"],
                       "/fleet/existing": [f"{b}/{linux}/installAgent/stdout"]}
    evs = logs.get_log_events(logGroupName="/fleet/existing", logStreamName=f"{b}/{linux}/installAgent/stdout")
    assert evs["events"][-1]["message"].endswith(O.RESULT_PREFIX + "installed")
    assert not logs.describe_log_groups(logGroupNamePrefix="/fleet/off")["logGroups"]
    got = env.ssm.get_command_invocation(CommandId=a, InstanceId=windows)
    assert got["CloudWatchOutputConfig"] == {"CloudWatchLogGroupName": "/fleet/new", "CloudWatchOutputEnabled": True}


def test_cloudwatch_events_are_whole_lines_of_at_most_200000_bytes():
    from moto_ext import cloudwatch_output as CW

    text = "\n".join("x" * 999 for _ in range(450))    # 450,000 bytes with the newlines
    evs = CW.events(text + "\n", 7)
    assert [len(e["message"]) for e in evs] == [200_000, 200_000, 49_999]
    assert "\n".join(e["message"].rstrip("\n") for e in evs) == text
    assert all(e["timestamp"] == 7 for e in evs) and CW.events("", 7) == []
    assert CW.stream_prefix("c", "i-1", "aws:runShellScript") == "c/i-1/aws-runShellScript"
    assert CW.group_name({"CloudWatchOutputEnabled": True}, SHELL) == "/aws/ssm/AWS-RunShellScript"


# -------------------------------------------------------------------------------------------------- 7. IAM
def test_send_command_document_arns_and_wildcards_as_iam_matches_them():
    ctx = iam_ext.request_context("ssm", "SendCommand", {"DocumentName": SHELL, "InstanceIds": ["i-1"]},
                                  "123456789012", "us-east-1")
    assert ctx[0][:2] == ("ssm:SendCommand", "arn:aws:ssm:us-east-1::document/AWS-RunShellScript")
    own = iam_ext.request_context("ssm", "SendCommand", {"DocumentName": "fleet-install-linux"}, "123456789012",
                                  "us-east-1")[0][1]
    assert own == "arn:aws:ssm:us-east-1:123456789012:document/fleet-install-linux"
    for op in ("GetDocument", "DescribeDocument"):
        assert iam_ext.request_context("ssm", op, {"Name": POWERSHELL}, "123456789012", "us-east-1")[0][1] == (
            "arn:aws:ssm:us-east-1::document/AWS-RunPowerShellScript")

    def allowed(resource, arn):
        policy = {"Statement": [{"Effect": "Allow", "Action": "ssm:SendCommand", "Resource": resource}]}
        return iam_ext.evaluate([policy], "ssm:SendCommand", arn, {}) == iam_ext.Decision.ALLOW

    aws_shell = "arn:aws:ssm:us-east-1::document/AWS-RunShellScript"
    for pattern in ("arn:aws:ssm:*:*:document/AWS-RunShellScript", "arn:aws:ssm:*::document/AWS-RunShellScript",
                    "arn:aws:ssm:us-east-1::document/AWS-Run*", "arn:aws:ssm:us-*-1::document/AWS-RunShell?cript",
                    "arn:aws:*:*:*:document/*", "arn:*:ssm:*:*:*", "*"):
        assert allowed(pattern, aws_shell), pattern
    for pattern in ("arn:aws:ssm:us-east-1:123456789012:document/AWS-RunShellScript",   # AWS-owned: no account
                    "arn:aws:ssm:*:*:document/AWS-RunPowerShellScript",
                    "arn:aws:ssm*document/AWS-RunShellScript",       # a * inside a segment stays in it
                    "arn:aws:ssm:us-east-1:?:document/AWS-RunShellScript"):
        assert not allowed(pattern, aws_shell), pattern
    assert allowed("arn:aws:ssm:*:*:document/fleet-*", own) and not allowed("arn:aws:ssm:*::document/fleet-*", own)
    arn_like = {"Statement": [{"Effect": "Allow", "Action": "ssm:SendCommand", "Resource": "*", "Condition": {
        "ArnLike": {"aws:SourceArn": "arn:aws:ssm:*:*:document/AWS-*"}}}]}
    assert iam_ext.evaluate([arn_like], "ssm:SendCommand", aws_shell, {"aws:SourceArn": aws_shell}) == "allow"


def test_a_role_scoped_to_an_allowlist_of_aws_documents(env):
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ssm:SendCommand", "Resource": [
            "arn:aws:ssm:*:*:document/AWS-RunShellScript", "arn:aws:ec2:*:*:instance/*"]},
        {"Effect": "Allow", "Action": ["ssm:GetDocument", "ssm:DescribeDocument"],
         "Resource": "arn:aws:ssm:*:*:document/AWS-RunShellScript"},
        {"Effect": "Allow", "Action": "ssm:GetCommandInvocation", "Resource": "*"}]}
    env.iam.create_role(RoleName="runner", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
                                                "Action": "sts:AssumeRole"}]}))
    env.iam.put_role_policy(RoleName="runner", PolicyName="run", PolicyDocument=json.dumps(policy))
    creds = client(env, "sts").assume_role(RoleArn="arn:aws:iam::123456789012:role/runner",
                                           RoleSessionName="run")["Credentials"]
    ssm = client(env, "ssm", **creds)
    iid = env.launch(1, run_seconds=0.1)[0]
    assert control(env, "POST", "/_fleet/iam", {"enforce": True})[0] == 200
    try:
        params = json.loads(ssm.get_document(Name=SHELL)["Content"])["parameters"]
        assert "commands" in params
        cid = ssm.send_command(InstanceIds=[iid], DocumentName=SHELL, Parameters={"commands": ["id"]})["Command"]
        for name, call in ((POWERSHELL, lambda: ssm.send_command(InstanceIds=[iid], DocumentName=POWERSHELL,
                                                                   Parameters={"commands": ["id"]})),
                           (POWERSHELL, lambda: ssm.get_document(Name=POWERSHELL))):
            with pytest.raises(botocore.exceptions.ClientError) as e:
                call()
            assert error_code(e) == "AccessDeniedException"
            assert f"arn:aws:ssm:us-east-1::document/{name}" in str(e.value)
    finally:
        control(env, "POST", "/_fleet/iam", {"enforce": False})
        denied = control(env, "DELETE", "/_fleet/iam/denials")[1]
    assert [(d["action"], d["resource"]) for d in denied] == [
        ("ssm:SendCommand", "arn:aws:ssm:us-east-1::document/AWS-RunPowerShellScript"),
        ("ssm:GetDocument", "arn:aws:ssm:us-east-1::document/AWS-RunPowerShellScript")]
    assert summary(finished(env, cid["CommandId"])[iid]) == ("Success", "Success", 0)


def test_tag_names():
    assert (T.RUN_OUTCOME, T.RUN_EXIT_CODE, T.RUN_SECONDS, T.RUN_OUTPUT, T.RUN_OUTPUT_LINES, T.TIME_SCALE) == (
        "fleet-sim:run-outcome", "fleet-sim:run-exit-code", "fleet-sim:run-seconds", "fleet-sim:run-output",
        "fleet-sim:run-output-lines", "fleet-sim:time-scale")
    assert set(T.ALL) >= {T.RUN_OUTCOME, T.RUN_EXIT_CODE, T.RUN_SECONDS, T.RUN_OUTPUT, T.RUN_OUTPUT_LINES, T.TIME_SCALE}
    assert T.run_output({T.RUN_OUTPUT: "a\\nb"}) == "a\nb" and T.run_output({}) is None
    assert T.time_scale({T.TIME_SCALE: "0.01"}) == 0.01 and T.time_scale({T.TIME_SCALE: "x"}) == 1.0
