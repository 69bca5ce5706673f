"""Real fleets, end to end on the local stack (issue 10): old SSM agents, the documents' exit codes, and
instances without an instance profile (Default Host Management Configuration)."""
import json
import os
import subprocess
import sys
import time

import pytest

from fleet import OUTPUTS, ROOT

pytestmark = pytest.mark.e2e

OLD = "3.3.1142.0"          # below 3.3.2746.0, which the ENV_VAR install documents need
ANCIENT = "3.1.1004.0"      # below 3.2.582.0, which DHMC needs
UPDATE_DOCUMENT = "AWS-UpdateSSMAgent"
RUN = [sys.executable, str(ROOT / "local-stack" / "emulator" / "run.py")]
CLI = ROOT / "target" / "debug" / "fleet-install"


def documents_sent(stack, iid):
    return sorted(c["DocumentName"] for c in stack.commands_for(iid))


def test_a_burst_with_20_percent_old_agents_updates_them_then_installs_them(stack):
    since = time.time() - 1
    ubuntu = {"fleet-sim:platform": "Linux|Ubuntu|22.04"}
    old = stack.launch(4, dict(ubuntu, **{"fleet-sim:agent-version": OLD}))
    old_windows = stack.launch(1, {"fleet-sim:platform": "Windows|Microsoft Windows Server 2022 Datacenter|10.0.20348",
                                   "fleet-sim:agent-version": OLD})
    current = stack.launch(19, ubuntu)
    cannot = stack.launch(1, dict(ubuntu, **{"fleet-sim:agent-version": OLD, "fleet-sim:agent-update": "fail"}))
    executions = stack.wait_for_executions(at_least=1, timeout=240, since=since)
    assert all(e["status"] == "SUCCEEDED" for e in executions), executions
    ledger = stack.ledger()
    install_docs = {stack.outputs["LinuxInstallDocumentName"], stack.outputs["WindowsInstallDocumentName"]}
    for iid in old + old_windows:
        item = ledger[iid]
        assert item["state"] == "installed", item
        sent = documents_sent(stack, iid)
        # exactly one update and one install: SendCommand calls per instance
        assert len(sent) == 2 and sent.count(UPDATE_DOCUMENT) == 1 and set(sent) - {UPDATE_DOCUMENT} <= install_docs, sent
    for iid in current:
        assert ledger[iid]["state"] == "installed"
        assert UPDATE_DOCUMENT not in documents_sent(stack, iid) and len(documents_sent(stack, iid)) == 1
    (bad,) = cannot
    item = ledger[bad]
    assert item["reasonCode"] == "AgentTooOld" and item["state"] != "failed", item
    assert OLD in item["reason"] and "3.3.2746.0" in item["reason"], item["reason"]
    assert documents_sent(stack, bad) == [UPDATE_DOCUMENT], "an agent that could not be updated was sent the install"
    # the runs' summaries count the updates
    updated = sum(json.loads(stack.sfn.describe_execution(executionArn=e["executionArn"])["output"])["summary"].get("agentUpdated", 0)
                  for e in executions)
    assert updated == len(old + old_windows)


def test_with_automatic_updates_off_old_agents_are_recorded_and_never_sent_anything(stack):
    subprocess.run(RUN + ["reconfigure", "filter-managed", "--env", "AUTO_UPDATE_SSM_AGENT=false"], check=True, cwd=ROOT, timeout=180)
    try:
        since = time.time() - 1
        old = stack.launch(2, {"fleet-sim:platform": "Linux|Ubuntu|22.04", "fleet-sim:agent-version": OLD})
        (ex,) = stack.wait_for_executions(at_least=1, timeout=180, since=since)
    finally:
        subprocess.run(RUN + ["reconfigure", "filter-managed", "--env", "AUTO_UPDATE_SSM_AGENT=true"], check=True, cwd=ROOT, timeout=180)
    assert ex["status"] == "SUCCEEDED"
    ledger = stack.ledger()
    for iid in old:
        assert ledger[iid]["reasonCode"] == "AgentTooOld", ledger[iid]
        assert stack.commands_for(iid) == []


def test_a_checksum_mismatch_is_sent_once_and_a_download_failure_is_retried(stack):
    since = time.time() - 1
    (bad,) = stack.launch(1, {"fleet-sim:exit-code": "5"})
    (flaky,) = stack.launch(1, {"fleet-sim:exit-code": "4", "fleet-sim:fail-attempts": "1"})
    stack.wait_for_executions(at_least=1, timeout=180, since=since)
    ledger = stack.ledger()
    assert (ledger[bad]["state"], ledger[bad]["reasonCode"]) == ("failed", "ChecksumMismatch"), ledger[bad]
    assert len(stack.commands_for(bad)) == 1, "a checksum mismatch was sent again"
    assert "checksum" in ledger[bad]["reason"].lower() or "sha-256" in ledger[bad]["reason"].lower(), ledger[bad]["reason"]
    assert ledger[flaky]["state"] == "installed", ledger[flaky]
    assert len(stack.commands_for(flaky)) == 2


def test_default_host_management_reaches_instances_without_a_profile_and_lists_those_it_cannot(stack):
    since = time.time() - 1
    ready = stack.launch(2, {"fleet-sim:platform": "Linux|Ubuntu|22.04"}, profile=False, imdsv2=True)
    imds_v1 = stack.launch(1, {}, profile=False, imdsv2=False)
    ancient = stack.launch(1, {"fleet-sim:agent-version": ANCIENT}, profile=False, imdsv2=True)
    stack.wait_for_executions(at_least=1, timeout=180, since=since)
    ledger = stack.ledger()
    for iid in ready + imds_v1 + ancient:
        assert ledger[iid]["reasonCode"] == "NoInstanceProfile", ledger[iid]
    reason = ledger[ready[0]]["reason"]
    assert "prereq" in reason and "default-host-management" in reason.replace("_", "-").lower(), reason

    env = stack.operator_env()
    base = [str(CLI), "--endpoint-url", stack.endpoint, "--outputs-file", str(OUTPUTS), "--output", "json"]
    before = subprocess.run(base + ["prereq"], env=env, capture_output=True, text=True, timeout=300)
    assert before.returncode in (0, 2), before.stderr
    report = json.loads(before.stdout)
    text = json.dumps(report)
    assert imds_v1[0] in text, "an IMDSv1 instance DHMC cannot reach is not listed"

    run = subprocess.run(base + ["prereq", "--apply", "--enable-default-host-management"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode in (0, 2), run.stderr
    setting = stack.ssm.get_service_setting(SettingId="/ssm/managed-instance/default-ec2-instance-management-role")
    assert setting["ServiceSetting"]["SettingValue"] not in ("", "$None"), setting

    # DHMC registers them; the next start (or the sweep) installs them
    again = time.time() - 1
    for iid in ready + imds_v1 + ancient:
        stack.running_event(iid)
    stack.wait_for_executions(at_least=1, timeout=180, since=again)
    ledger = stack.ledger()
    for iid in ready:
        assert ledger[iid]["state"] == "installed", ledger[iid]
    for iid in imds_v1 + ancient:
        assert ledger[iid]["state"] == "unmanaged", ledger[iid]
    after = json.loads(subprocess.run(base + ["prereq"], env=env, capture_output=True, text=True, timeout=300).stdout)
    listed = json.dumps(after)
    assert imds_v1[0] in listed and ancient[0] in listed
