"""The security review's findings, as the deployed template must keep them (issue 9).

Each test reads template.yaml (and, where it matters, SAM's expansion of it, which is what `sam deploy`
creates) and fails if a finding comes back.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import sys

from project import ROOT

sys.path.insert(0, str(ROOT / "local-stack" / "emulator"))
import stack as local_stack  # noqa: E402

LEDGER_RS = ROOT / "functions" / "fleet-core" / "src" / "ledger.rs"


RECORD_RS = ROOT / "functions" / "fleet-core" / "src" / "record.rs"


def rust_str_const(path: pathlib.Path, name: str) -> str:
    """A string constant's value; one defined as another (`= attr::EXPIRES_AT;`) is followed to record.rs,
    where the ledger's attribute names are written once."""
    text = path.read_text()
    m = re.search(rf'pub const {name}: &str = "([^"]+)";', text)
    if m:
        return m.group(1)
    alias = re.search(rf'pub const {name}: &str = attr::([A-Z_]+);', text)
    assert alias, f"{name} not in {path}"
    return rust_str_const(RECORD_RS, alias.group(1))


def resources(template, kind):
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def test_the_running_rule_target_retries_and_has_a_dead_letter_queue(template):
    (target,) = template["Resources"]["InstanceRunningRule"]["Properties"]["Targets"]
    assert target["RetryPolicy"]["MaximumEventAgeInSeconds"] == 86400
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 185
    dlq = target["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0]
    assert template["Resources"][dlq]["Type"] == "AWS::SQS::Queue"
    # EventBridge may send to it, and only for this rule
    policies = [p for p in resources(template, "AWS::SQS::QueuePolicy").values()
                if {"Ref": dlq} in p["Properties"]["Queues"]]
    assert policies, "no queue policy lets EventBridge send to the rule's DLQ"
    (st,) = policies[0]["Properties"]["PolicyDocument"]["Statement"]
    assert st["Principal"] == {"Service": "events.amazonaws.com"} and st["Action"] == "sqs:SendMessage"
    assert st["Condition"]["ArnEquals"]["aws:SourceArn"] == {"Fn::GetAtt": ["InstanceRunningRule", "Arn"]}


def test_alarms_watch_failed_deliveries_and_the_queue_age(template):
    alarms = resources(template, "AWS::CloudWatch::Alarm").values()
    by_metric = {(a["Properties"]["Namespace"], a["Properties"]["MetricName"]): a["Properties"] for a in alarms}
    failed = by_metric[("AWS/Events", "FailedInvocations")]
    assert failed["Dimensions"] == [{"Name": "RuleName", "Value": {"Ref": "InstanceRunningRule"}}]
    age = by_metric[("AWS/SQS", "ApproximateAgeOfOldestMessage")]
    assert age["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["InstallQueue", "QueueName"]}}]
    assert age["Threshold"] == {"Ref": "InstallQueueMaxAgeSeconds"}
    for a in (failed, age):
        assert a["AlarmActions"] == [{"Ref": "AlarmTopic"}]


def test_the_sqs_trigger_has_a_maximum_concurrency(template):
    ev = template["Resources"]["StartInstallFunction"]["Properties"]["Events"]["InstallQueueBatch"]["Properties"]
    assert ev["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "TriggerMaxConcurrency"}
    assert int(template["Parameters"]["TriggerMaxConcurrency"]["MinValue"]) >= 2   # Lambda's minimum


def test_the_trigger_role_is_explicit_and_scoped_to_the_queue(template):
    st = local_stack.Stack("http://127.0.0.1:1", template_path=os.environ.get("FLEET_TEMPLATE"))
    fn = st.translated["Resources"]["StartInstallFunction"]["Properties"]
    assert fn["Role"] == {"Fn::GetAtt": ["StartInstallFunctionRole", "Arn"]}
    role = st.translated["Resources"]["StartInstallFunctionRole"]["Properties"]
    assert not role.get("ManagedPolicyArns"), "SAM's account-wide SQS policy (or another managed policy) is back"
    sqs = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]
           if any(a.startswith("sqs:") for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]))]
    assert sqs and all(s["Resource"] == {"Fn::GetAtt": ["InstallQueue", "Arn"]} for s in sqs)


def test_ledger_ttl_is_the_attribute_the_code_writes(template):
    ttl = template["Resources"]["LedgerTable"]["Properties"]["TimeToLiveSpecification"]
    assert ttl == {"AttributeName": rust_str_const(LEDGER_RS, "TTL_ATTRIBUTE"), "Enabled": True}


def test_opt_out_description_says_what_the_code_and_the_deny_do(template):
    p = template["Parameters"]["OptOutTagKey"]
    assert "whatever its value" in p["Description"]
    # the Deny policy uses the key alone (Null: the tag is present), not a value
    doc = template["Resources"]["OptOutSendDenyPolicy"]["Properties"]["PolicyDocument"]["Fn::Sub"]
    assert '"Null": {"ssm:resourceTag/${OptOutTagKey}": "false"}' in doc
    assert {"Ref": "OptOutSendDenyPolicy"} in template["Resources"]["SendCommandFunction"]["Properties"]["Policies"]
    # and the code treats the key alone as opt-out (no comparison of the value)
    adapters = (ROOT / "functions" / "fleet-core" / "src" / "adapters.rs").read_text()
    body = re.search(r"pub fn has_opt_out_tag\(.*?\n}\n", adapters, re.S)
    assert body and "key()" in body.group(0) and "value()" not in body.group(0), body
    assert adapters.count("has_opt_out_tag(") >= 2, "the opt-out check is not the one the adapters use"


def test_send_command_resolves_documents_from_its_own_environment(template):
    env = template["Resources"]["SendCommandFunction"]["Properties"]["Environment"]["Variables"]
    assert env["LINUX_DOCUMENT_NAME"] == {"Ref": "LinuxInstallDocument"}
    assert env["WINDOWS_DOCUMENT_NAME"] == {"Ref": "WindowsInstallDocument"}
    for doc in ("LinuxInstallDocument", "WindowsInstallDocument"):
        # UpdateMethod Replace is why the name changes on an update: the test above is what keeps retries working
        assert template["Resources"][doc]["Properties"]["UpdateMethod"] == "Replace"


def test_operator_policy_is_an_output_and_attaches_only_the_instance_policies(template):
    assert template["Outputs"]["OperatorPolicyArn"]["Value"] == {"Ref": "OperatorPolicy"}
    statements = template["Resources"]["OperatorPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    attach = [s for s in statements if "iam:AttachRolePolicy" in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])]
    # every attach is conditioned on the policy: the two instance policies on any role, DHMC's on its role only
    assert attach and all(set(s["Condition"]) == {"ArnEquals"} and list(s["Condition"]["ArnEquals"]) == ["iam:PolicyARN"]
                          for s in attach)
    instance = next(s for s in attach if s["Sid"] == "AttachInstancePoliciesOnly")["Condition"]["ArnEquals"]["iam:PolicyARN"]
    assert {"Ref": "CommandOutputWriterPolicy"} in instance and len(instance) == 2
    dhmc = next(s for s in attach if s["Sid"] != "AttachInstancePoliciesOnly")
    assert all("AWSSystemsManagerDefaultEC2InstanceManagementRole" in r["Fn::Sub"] for r in dhmc["Resource"])
    def actions(s):
        return [s["Action"]] if isinstance(s["Action"], str) else s["Action"]

    on_ledger = {a for s in statements for a in actions(s) if a.startswith("dynamodb:")
                 and "RunResultsTable" not in json.dumps(s["Resource"])}
    assert on_ledger <= {"dynamodb:Scan", "dynamodb:Query"}, "the CLI never writes the ledger"
    # `cancel` records the instances it cancelled in the run results table, nothing else
    on_results = [s for s in statements if "RunResultsTable" in json.dumps(s["Resource"])]
    assert [s["Resource"] for s in on_results] == [{"Fn::GetAtt": ["RunResultsTable", "Arn"]}]
    assert {a for s in on_results for a in actions(s)} == {"dynamodb:Query", "dynamodb:BatchWriteItem"}


def test_checkov_skips_are_justified(template):
    for name, res in template["Resources"].items():
        for skip in ((res.get("Metadata") or {}).get("checkov") or {}).get("skip") or []:
            assert skip.get("id", "").startswith("CKV_") and len(skip.get("comment", "")) > 20, (name, skip)


def test_installer_urls_are_documented_as_long_lived_and_non_secret(template):
    """We chose public, long-lived URLs over S3 with the instance role (README, "The documents"); the parameters
    say so where an operator sets them."""
    for name in ("InstallerUrlRpm", "InstallerUrlDeb", "InstallerUrlFreeBsd", "InstallerUrlWindows"):
        text = template["Parameters"][name]["Description"]
        assert "long-lived and non-secret" in text and "presigned" in text, name
    readme = (ROOT / "README.md").read_text()
    assert "Installer URLs must be long-lived and non-secret" in readme
