"""Issue 11, what a sweep must find and fix, made real on the local stack: the install documents' result line in
each path, an agent removed or stopped after its install, lost EC2 running events, and credentials that appear
later (an instance profile associated to a running instance, the SSM policy attached to its role)."""

import json
import os
import time
import urllib.error
import urllib.request

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from moto_ext import install_outcomes as O
from test_fleet_realism import DOCUMENTS, WIN, WIN_PARAMS, plugin, run
from test_ssm_sim import EC2_TRUST, SSM_POLICY, env, error_code, info, instance_profile  # noqa: F401

RESULT = {r: O.RESULT_PREFIX + r for r in O.RESULTS}
REAL_LINUX_PARAMS = {"InstallerUrlRpm": ["https://e.com/a.rpm"], "InstallerSha256Rpm": ["a" * 64],
                     "InstallerUrlDeb": ["https://e.com/a.deb"], "InstallerSha256Deb": ["a" * 64],
                     "InstallerUrlFreeBsd": ["https://e.com/a.pkg"], "InstallerSha256FreeBsd": ["a" * 64]}


def control(aws, method, path, body=None):
    """A local stack control: (HTTP status, JSON answer)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(aws.url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def agents(aws, ids):
    status, out = control(aws, "GET", "/_fleet/agent?instanceIds=" + ",".join(ids))
    assert status == 200, out
    return out["agents"]


def remove(aws, ids, mode="removed"):
    status, out = control(aws, "POST", "/_fleet/agent/remove", {"instanceIds": ids, "mode": mode})
    assert status == 200, out
    return out


def last_line(inv):
    return plugin(inv)["Output"].splitlines()[-1]


def result_of(aws, ids, document="fleet-linux", params=None):
    """Run the document once on `ids`: {id: (Status, last line of Output)}."""
    _, invs = run(aws, ids, document, params)
    return {i: (inv["Status"], last_line(inv) if plugin(inv)["Output"] else "") for i, inv in invs.items()}


# ----------------------------------------------------------------------------------- 1. the result line
def test_each_path_ends_with_its_result_line(env):
    absent = env.launch(1, install_seconds=0.1)[0]
    running = env.launch(1, installed="true")[0]
    stopped = env.launch(1, installed="stopped")[0]
    _, invs = run(env, [absent, running, stopped])
    for iid, result, says in ((absent, "installed", "fleet-install: service fleet-agent installed and running"),
                              (running, "verified", "is already installed and running; nothing to do"),
                              (stopped, "started", "is installed but not running; starting it")):
        inv = invs[iid]
        assert (inv["Status"], plugin(inv)["ResponseCode"]) == ("Success", 0)
        assert last_line(inv) == RESULT[result]
        assert says in plugin(inv)["Output"]
        got = env.ssm.get_command_invocation(CommandId=inv["CommandId"], InstanceId=iid)
        assert got["StandardOutputContent"].splitlines()[-1] == RESULT[result]
        assert got["StandardOutputContent"].count("FLEET_INSTALL_RESULT=") == 1


def test_windows_paths_and_the_real_documents_print_the_same_lines(env):
    for name in ("linux", "windows"):
        with open(os.path.join(DOCUMENTS, f"install-agent-{name}.yml")) as f:
            env.ssm.create_document(Name=f"real-{name}", Content=f.read(), DocumentType="Command",
                                    DocumentFormat="YAML", TargetType="/AWS::EC2::Instance")
    win = {state: env.launch(1, platform=WIN, install_seconds=0.1, **({"installed": state} if state else {}))[0]
           for state in ("", "true", "stopped")}
    lin = env.launch(1, install_seconds=0.1, platform="Linux|Ubuntu|22.04")[0]
    got = result_of(env, list(win.values()), "real-windows", WIN_PARAMS)
    assert [got[win[s]] for s in ("", "true", "stopped")] == [
        ("Success", RESULT["installed"]), ("Success", RESULT["verified"]), ("Success", RESULT["started"])]
    _, invs = run(env, [lin], "real-linux", REAL_LINUX_PARAMS)
    out = plugin(invs[lin])["Output"]
    assert "package format deb, installer from parameter InstallerUrlDeb" in out
    assert out.splitlines()[-1] == RESULT["installed"]


def test_success_lines_are_the_documents_own():
    with open(os.path.join(DOCUMENTS, "install-agent-linux.yml")) as f:
        linux = f.read()
    with open(os.path.join(DOCUMENTS, "install-agent-windows.yml")) as f:
        windows = f.read()
    for lines in O.LINUX_OK.values():
        for template in lines:
            assert template == "$noise" or f'log "{template}"' in linux, template
    for lines in O.WINDOWS_OK.values():
        for template in lines:
            assert template in ("$noise", "$run") or f'Write-Log "{template}"' in windows, template
    assert f'Write-Log "{O.WINDOWS_RUN_MSI}"' in windows and f'Write-Log "{O.WINDOWS_RUN_EXE}"' in windows
    for template in O.LINUX_START_FAILED.values():
        assert f'fail "$EX_SERVICE" "{template}"' in linux
    assert f'Stop-WithError $EX_SERVICE "{O.WINDOWS_START_FAILED[7]}"' in windows
    assert f'Stop-WithError $EX_REBOOT_REQUIRED "{O.WINDOWS_START_FAILED[10]}"' in windows
    # one result line each, printed only on success
    assert "printf 'FLEET_INSTALL_RESULT=%s\\n' \"$1\"" in linux
    assert 'Write-Host "FLEET_INSTALL_RESULT=$($script:Result)"' in windows
    for result in O.RESULTS:
        assert f"succeed {result}" in linux and f"$script:Result = '{result}'" in windows


def test_a_failed_run_prints_no_result_line(env):
    failing = env.launch(1, install_seconds=0.1, exit_code=6)[0]
    plain = env.launch(1, install_seconds=0.1, outcome="Failed")[0]
    _, invs = run(env, [failing, plain])
    for iid in (failing, plain):
        assert invs[iid]["Status"] == "Failed"
        assert "FLEET_INSTALL_RESULT" not in plugin(invs[iid])["Output"]


# ------------------------------------------------------------------------------- 2. the agent can be lost
def test_a_removed_agent_takes_the_install_path_again(env):
    iid = env.launch(1, install_seconds=0.1)[0]
    assert agents(env, [iid]) == {iid: "absent"}
    assert result_of(env, [iid])[iid] == ("Success", RESULT["installed"])
    assert agents(env, [iid]) == {iid: "running"}
    assert result_of(env, [iid])[iid] == ("Success", RESULT["verified"])
    assert remove(env, [iid]) == {"mode": "removed", "agents": {iid: "absent"}}
    assert result_of(env, [iid])[iid] == ("Success", RESULT["installed"])
    assert result_of(env, [iid])[iid] == ("Success", RESULT["verified"])


def test_a_stopped_agent_is_started(env):
    ids = env.launch(2, install_seconds=0.1)
    run(env, ids)
    remove(env, ids[:1], "stopped")
    assert agents(env, ids) == {ids[0]: "stopped", ids[1]: "running"}
    got = result_of(env, ids)
    assert got == {ids[0]: ("Success", RESULT["started"]), ids[1]: ("Success", RESULT["verified"])}
    assert agents(env, ids) == {ids[0]: "running", ids[1]: "running"}


def test_removing_overrides_the_installed_tag_and_a_removed_agent_can_fail_its_install(env):
    iid = env.launch(1, installed="true", install_seconds=0.1, exit_code=4)[0]
    assert result_of(env, [iid])[iid] == ("Success", RESULT["verified"])   # the download is never reached
    remove(env, [iid])
    _, invs = run(env, [iid])
    assert (invs[iid]["Status"], plugin(invs[iid])["ResponseCode"]) == ("Failed", 4)
    assert agents(env, [iid]) == {iid: "absent"}


def test_the_agent_control_refuses_what_cannot_be(env):
    iid = env.launch(1)[0]
    status, out = control(env, "POST", "/_fleet/agent/remove", {"instanceIds": [iid], "mode": "stopped"})
    assert status == 400 and "not installed" in out["error"]
    status, out = control(env, "POST", "/_fleet/agent/remove", {"instanceIds": [iid], "mode": "deleted"})
    assert status == 400 and "mode" in out["error"]
    status, out = control(env, "POST", "/_fleet/agent/remove", {"instanceIds": ["i-00000000000000000"]})
    assert status == 400 and "i-00000000000000000" in out["error"]
    status, out = control(env, "POST", "/_fleet/agent/remove", {"instanceIds": []})
    assert status == 400
    assert agents(env, [iid]) == {iid: "absent"}


def test_agent_lost_tag_loses_it_once_after_the_first_install(env):
    removed = env.launch(1, install_seconds=0.1, agent_lost="removed")[0]
    stopped = env.launch(1, install_seconds=0.1, agent_lost="stopped")[0]
    assert result_of(env, [removed, stopped]) == {removed: ("Success", RESULT["installed"]),
                                                  stopped: ("Success", RESULT["installed"])}
    assert agents(env, [removed, stopped]) == {removed: "absent", stopped: "stopped"}
    assert result_of(env, [removed, stopped]) == {removed: ("Success", RESULT["installed"]),
                                                  stopped: ("Success", RESULT["started"])}
    assert result_of(env, [removed, stopped]) == {removed: ("Success", RESULT["verified"]),
                                                  stopped: ("Success", RESULT["verified"])}


def test_which_failures_apply_in_which_path(env):
    # exit 7 in the install path leaves the package installed and its service stopped: the next run starts it
    seven = env.launch(1, install_seconds=0.1, exit_code=7, fail_attempts=1)[0]
    _, invs = run(env, [seven])
    assert plugin(invs[seven])["ResponseCode"] == 7 and agents(env, [seven]) == {seven: "stopped"}
    assert result_of(env, [seven])[seven] == ("Success", RESULT["started"])
    # a stopped agent that does not start fails with the start path's own message
    stuck = env.launch(1, installed="stopped", exit_code=7)[0]
    win_stuck = env.launch(1, installed="stopped", exit_code=10, platform=WIN)[0]
    _, invs = run(env, [stuck])
    assert plugin(invs[stuck])["ResponseCode"] == 7
    assert "fleet-install: ERROR: service fleet-agent is installed but is not running after start" in \
        plugin(invs[stuck])["Output"]
    _, invs = run(env, [win_stuck], "fleet-windows", WIN_PARAMS)
    assert plugin(invs[win_stuck])["ResponseCode"] == 10 and "Windows has a reboot pending" in \
        plugin(invs[win_stuck])["Output"]
    # the parameters are checked before the agent, in every path; an undeliverable command reaches no path
    bad_params = env.launch(1, installed="true", exit_code=2)[0]
    lost = env.launch(1, installed="true", outcome="Undeliverable", install_seconds=0.1)[0]
    _, invs = run(env, [bad_params, lost])
    assert plugin(invs[bad_params])["ResponseCode"] == 2
    assert (invs[lost]["Status"], invs[lost]["StatusDetails"]) == ("Failed", "Undeliverable")


def test_output_is_cut_as_the_ssm_agent_cuts_it(env):
    iid = env.launch(1, install_seconds=0.1, install_output_lines=200)[0]
    _, invs = run(env, [iid])
    out = plugin(invs[iid])["Output"]
    assert len(out) <= O.PLUGIN_OUTPUT and out.endswith(O.OUT_CUT)
    assert out.startswith("fleet-install: host ") and "FLEET_INSTALL_RESULT" not in out
    full = env.ssm.get_command_invocation(CommandId=invs[iid]["CommandId"], InstanceId=iid)["StandardOutputContent"]
    assert full.splitlines()[-1] == RESULT["installed"] and len(full) < O.STDOUT_CONTENT


def test_plugin_output_keeps_the_beginning_of_each_stream():
    assert O.plugin_output("out", "") == "out"
    assert O.plugin_output("out", "err") == "out" + O.ERROR_TITLE + "err"
    long_out, long_err = "o" * 5000, "e" * 5000
    both = O.plugin_output(long_out, long_err)
    assert len(both) <= O.PLUGIN_OUTPUT and both.startswith("ooo") and O.OUT_CUT + O.ERROR_TITLE + "eee" in both
    assert both.endswith(O.ERR_CUT)
    short_out = O.plugin_output("ok", long_err)
    assert short_out.startswith("ok" + O.ERROR_TITLE) and short_out.endswith(O.ERR_CUT)
    assert len(short_out) <= O.PLUGIN_OUTPUT
    short_err = O.plugin_output(long_out, "bad")
    assert short_err.endswith(O.OUT_CUT + O.ERROR_TITLE + "bad") and len(short_err) <= O.PLUGIN_OUTPUT


# ------------------------------------------------------------------------------ 3. lost running events
@pytest.fixture
def queue(env):
    q = env.sqs.create_queue(QueueName="running-events")["QueueUrl"]
    arn = env.sqs.get_queue_attributes(QueueUrl=q, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    env.events.put_rule(Name="running", EventPattern=json.dumps({
        "source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"],
        "detail": {"state": ["running"]}}))
    env.events.put_targets(Rule="running", Targets=[{"Id": "q", "Arn": arn}])

    def received():
        ids = []
        while True:
            msgs = env.sqs.receive_message(QueueUrl=q, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
            if not msgs:
                return sorted(ids)
            for m in msgs:
                ids.append(json.loads(m["Body"])["detail"]["instance-id"])
                env.sqs.delete_message(QueueUrl=q, ReceiptHandle=m["ReceiptHandle"])

    env.received = received
    yield env
    control(env, "DELETE", "/_fleet/events/drop")


def test_a_tagged_instance_emits_no_running_event_and_is_otherwise_normal(queue):
    dropped = queue.launch(1, drop_running_event="true", install_seconds=0.1)[0]
    normal = queue.launch(1)[0]
    assert queue.received() == [normal]
    assert [d["instanceId"] for d in control(queue, "GET", "/_fleet/events/drop")[1]["dropped"]] == [dropped]
    described = queue.ec2.describe_instances(InstanceIds=[dropped])["Reservations"][0]["Instances"][0]
    assert described["State"]["Name"] == "running"
    assert info(queue, [dropped])[dropped]["PingStatus"] == "Online"
    assert result_of(queue, [dropped])[dropped] == ("Success", RESULT["installed"])
    # while tagged, a start emits none either; an event put on request is never lost
    queue.ec2.stop_instances(InstanceIds=[dropped])
    queue.ec2.start_instances(InstanceIds=[dropped])
    assert queue.received() == []
    status, _ = control(queue, "POST", "/_fleet/events/ec2-running", {"instanceIds": [dropped]})
    assert status == 200 and queue.received() == [dropped]


def test_the_drop_control_loses_the_next_events(queue):
    status, out = control(queue, "POST", "/_fleet/events/drop", {"count": 2})
    assert status == 200 and out["next"] == 2
    first = queue.launch(3)
    assert queue.received() == [first[2]], "the next two events are lost, the third arrives"
    later = queue.launch(1)[0]
    assert queue.received() == [later]
    # per instance: the next restart's event of this one
    control(queue, "POST", "/_fleet/events/drop", {"instanceIds": [later]})
    queue.ec2.stop_instances(InstanceIds=[later, first[0]])
    queue.ec2.start_instances(InstanceIds=[later, first[0]])
    assert queue.received() == [first[0]]
    queue.ec2.stop_instances(InstanceIds=[later])
    queue.ec2.start_instances(InstanceIds=[later])
    assert queue.received() == [later], "only the next event was lost"
    got = control(queue, "GET", "/_fleet/events/drop")[1]
    assert (got["next"], got["instances"]) == (0, {})
    assert [d["instanceId"] for d in got["dropped"]] == [first[0], first[1], later]
    for bad in ({"count": 0}, {"count": "1"}, {"instanceIds": "i-1"}):
        assert control(queue, "POST", "/_fleet/events/drop", bad)[0] == 400
    assert control(queue, "DELETE", "/_fleet/events/drop")[1] == {"next": 0, "instances": {}, "dropped": []}


# ------------------------------------------------------------------- 4. credentials that appear later
def test_an_instance_profile_associated_later_makes_the_agent_register(env):
    iid = env.launch(1, profile=False, register_delay=1)[0]
    time.sleep(1.1)                       # its delay since launch has passed: without credentials, nothing
    assert info(env, [iid]) == {}
    assoc = env.ec2.associate_iam_instance_profile(InstanceId=iid, IamInstanceProfile={"Name": "ssm-role"})
    assert assoc["IamInstanceProfileAssociation"]["State"] in ("associating", "associated")
    assert info(env, [iid]) == {}, "the agent registers register-delay seconds after its credentials appear"
    deadline = time.time() + 10
    while iid not in info(env, [iid]) and time.time() < deadline:
        time.sleep(0.2)
    assert info(env, [iid])[iid]["PingStatus"] == "Online"
    assert result_of(env, [iid])[iid][0] == "Success"
    described = env.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert described["IamInstanceProfile"]["Arn"].endswith("instance-profile/ssm-role")


def test_a_role_without_the_ssm_policy_registers_once_it_is_attached(env):
    instance_profile(env, "no-ssm", policy=None)
    image = env.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    iid = env.ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1,
                                IamInstanceProfile={"Name": "no-ssm"})["Instances"][0]["InstanceId"]
    assert info(env, [iid]) == {}, "a role that does not allow ssm:UpdateInstanceInformation cannot register"
    env.iam.put_role_policy(RoleName="no-ssm", PolicyName="other", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}))
    assert info(env, [iid]) == {}
    env.iam.attach_role_policy(RoleName="no-ssm", PolicyArn=SSM_POLICY)
    assert info(env, [iid])[iid]["PingStatus"] == "Online"
    env.iam.detach_role_policy(RoleName="no-ssm", PolicyArn=SSM_POLICY)
    assert info(env, [iid])[iid]["PingStatus"] == "ConnectionLost"
    # an explicit Deny wins over the managed policy
    env.iam.attach_role_policy(RoleName="no-ssm", PolicyArn=SSM_POLICY)
    env.iam.put_role_policy(RoleName="no-ssm", PolicyName="deny", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "ssm:*", "Resource": "*"}]}))
    assert info(env, [iid])[iid]["PingStatus"] == "ConnectionLost"
    env.iam.delete_role_policy(RoleName="no-ssm", PolicyName="deny")
    assert info(env, [iid])[iid]["PingStatus"] == "Online"


def test_a_role_added_to_an_empty_profile_gives_credentials(env):
    env.iam.create_instance_profile(InstanceProfileName="empty")
    env.iam.create_role(RoleName="later", AssumeRolePolicyDocument=EC2_TRUST)
    env.iam.attach_role_policy(RoleName="later", PolicyArn=SSM_POLICY)
    image = env.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    iid = env.ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1,
                                IamInstanceProfile={"Name": "empty"})["Instances"][0]["InstanceId"]
    assert info(env, [iid]) == {}
    env.iam.add_role_to_instance_profile(InstanceProfileName="empty", RoleName="later")
    assert set(info(env, [iid])) == {iid}


def test_dhmc_needs_a_role_that_may_register(env):
    dhmc = "/ssm/managed-instance/default-ec2-instance-management-role"
    env.iam.create_role(RoleName="BareDhmc", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ssm.amazonaws.com"},
                                                "Action": "sts:AssumeRole"}]}))
    image = env.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    iid = env.ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, MetadataOptions={
        "HttpTokens": "required", "HttpEndpoint": "enabled"})["Instances"][0]["InstanceId"]
    env.ssm.update_service_setting(SettingId=dhmc, SettingValue="BareDhmc")
    try:
        assert info(env, [iid]) == {}
        env.iam.attach_role_policy(RoleName="BareDhmc",
                                   PolicyArn="arn:aws:iam::aws:policy/AmazonSSMManagedEC2InstanceDefaultPolicy")
        assert set(info(env, [iid])) == {iid}
    finally:
        env.ssm.reset_service_setting(SettingId=dhmc)


def test_associate_iam_instance_profile_with_iam_enforced(env):
    """Root (the local stack's own keys) may associate a profile; any other caller needs
    ec2:AssociateIamInstanceProfile and iam:PassRole on the profile's role, as in AWS."""
    env.iam.create_role(RoleName="associator", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
                                                "Action": "sts:AssumeRole"}]}))
    env.iam.put_role_policy(RoleName="associator", PolicyName="ec2", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ec2:AssociateIamInstanceProfile",
                                                "Resource": "*"}]}))
    creds = boto3.client("sts", endpoint_url=env.url, region_name="us-east-1", aws_access_key_id="testing",
                         aws_secret_access_key="testing").assume_role(
        RoleArn="arn:aws:iam::123456789012:role/associator", RoleSessionName="associator")["Credentials"]
    ec2 = boto3.client("ec2", endpoint_url=env.url, region_name="us-east-1", aws_access_key_id=creds["AccessKeyId"],
                       aws_secret_access_key=creds["SecretAccessKey"], aws_session_token=creds["SessionToken"],
                       config=Config(retries={"total_max_attempts": 1}))
    first, second, third = (env.launch(1, profile=False)[0] for _ in range(3))
    assert control(env, "POST", "/_fleet/iam", {"enforce": True})[0] == 200
    try:
        with pytest.raises(botocore.exceptions.ClientError) as e:
            ec2.associate_iam_instance_profile(InstanceId=first, IamInstanceProfile={"Name": "ssm-role"})
        assert error_code(e) == "UnauthorizedOperation" and "iam:PassRole" in str(e.value)
        env.iam.put_role_policy(RoleName="associator", PolicyName="pass", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Action": "iam:PassRole", "Resource": "arn:aws:iam::123456789012:role/ssm-role",
                "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}}]}))
        ec2.associate_iam_instance_profile(InstanceId=second, IamInstanceProfile={"Name": "ssm-role"})
        env.ec2.associate_iam_instance_profile(InstanceId=third, IamInstanceProfile={"Name": "ssm-role"})   # root
    finally:
        control(env, "POST", "/_fleet/iam", {"enforce": False})
        denied = control(env, "DELETE", "/_fleet/iam/denials")[1]
    assert [d["action"] for d in denied] == ["iam:PassRole"]
    assert set(info(env, [first, second, third])) == {second, third}
