"""Least privilege, read from the code: each function's AWS calls -> IAM actions -> its role as SAM deploys it.

For every function crate, the SDK operations it can reach are read from its source and from the fleet-core
functions it calls (transitively), with test modules left out. Each operation is an IAM action (TransactWriteItems
is authorised by the item actions of its parts, as AWS does). The role comes from template.yaml expanded by
aws-sam-translator, as `sam deploy` creates it. Two checks:
- the role allows every action the code needs, on the resource the code uses it on;
- the role allows nothing beyond it: every action written in the template for a function is one the code (or
  the SQS event source mapping, or Lambda's logging) needs. The only exception is the AWS managed
  AWSLambdaBasicExecutionRole that SAM attaches to every role it generates (Lambda's logging).
So removing any action from a function's role fails the first check, and adding one fails the second.
The policies are evaluated with the local stack's own IAM evaluator (local-stack/emulator/moto_ext/iam_ext.py), the
one that enforces them end to end.
"""
from __future__ import annotations

import functools
import os
import pathlib
import re
import sys

import botocore.session
import pytest
from botocore import xform_name

from project import ROOT

sys.path.insert(0, str(ROOT / "local-stack" / "emulator"))
import stack as local_stack  # noqa: E402
from moto_ext import iam_ext  # noqa: E402

FUNCTIONS = ROOT / "functions"
CORE = FUNCTIONS / "fleet-core" / "src"

#: Rust SDK crate -> botocore service model and IAM prefix.
SERVICES = {"ec2": "ec2", "ssm": "ssm", "dynamodb": "dynamodb", "stepfunctions": "states", "sqs": "sqs"}
#: Names too generic to follow as calls into fleet-core.
GENERIC = {"new", "from", "default", "fmt", "into", "clone", "build", "s", "n", "get", "send", "len", "iter"}
#: The IAM actions whose API has no resource-level permissions (Resource must be "*").
NO_RESOURCE = {"ec2:DescribeInstances", "ssm:DescribeInstanceInformation", "ssm:ListCommands",
               "ssm:ListCommandInvocations"}
#: What Lambda's SQS event source mapping does with the function's execution role.
EVENT_SOURCE_SQS = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}
#: Lambda writes the function's logs with its role.
LOGGING = {"logs:CreateLogStream", "logs:PutLogEvents"}
#: The one policy not written in template.yaml that a function role may carry (SAM adds it to generated roles).
SAM_BASIC_EXECUTION = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
MUTATING_PREFIXES = ("Describe", "List", "Get", "Query", "Scan", "BatchGet")
#: The AWS-owned document send-command runs for SSM Agents too old for the install documents.
AGENT_UPDATE_DOCUMENT = re.search(r'pub const AGENT_UPDATE_DOCUMENT: &str = "([^"]+)";',
                                  (CORE / "routing.rs").read_text()).group(1)


@functools.lru_cache
def sdk_operations() -> dict[str, set[str]]:
    """snake_case fluent builder name -> IAM action(s), for the services the functions use."""
    session = botocore.session.get_session()
    out: dict[str, set[str]] = {}
    for svc, prefix in SERVICES.items():
        for op in session.get_service_model(svc).operation_names:
            out.setdefault(xform_name(op), set()).add(f"{prefix}:{op}")
    return out


def strip_tests(text: str) -> str:
    """Source without its #[cfg(test)] modules (mock setups name operations the code never calls)."""
    return text.split("#[cfg(test)]")[0]


@functools.lru_cache
def core_functions() -> dict[str, list[str]]:
    """fleet-core: fn name -> bodies (several fns may share a name across modules)."""
    out: dict[str, list[str]] = {}
    for path in CORE.glob("*.rs"):
        text = strip_tests(path.read_text())
        for m in re.finditer(r"\bfn\s+([a-z_][a-z0-9_]*)\s*(?:<[^>{]*>)?\s*\(", text):
            start = text.find("{", m.end())
            if start < 0:
                continue
            depth, i = 0, start
            while i < len(text):
                depth += {"{": 1, "}": -1}.get(text[i], 0)
                if depth == 0:
                    break
                i += 1
            out.setdefault(m.group(1), []).append(text[start:i + 1])
    return out


def reachable_source(crate: str) -> str:
    """The function crate's own source plus every fleet-core fn body it can reach by name."""
    own = "\n".join(strip_tests(p.read_text()) for p in (FUNCTIONS / crate / "src").glob("*.rs"))
    core = core_functions()
    seen: set[str] = set()
    todo = [own]
    parts = [own]
    while todo:
        text = todo.pop()
        for name in set(re.findall(r"\b([a-z_][a-z0-9_]*)\s*(?:::<[^>]*>)?\s*\(", text)):
            if name in core and name not in seen and name not in GENERIC:
                seen.add(name)
                for body in core[name]:
                    parts.append(body)
                    todo.append(body)
    return "\n".join(parts)


def code_actions(crate: str) -> set[str]:
    text = reachable_source(crate)
    ops = sdk_operations()
    actions = set()
    for m in re.findall(r"\.\s*([a-z][a-z0-9_]*)\s*\(\s*\)", text):
        if m in ops:
            assert len(ops[m]) == 1, f"{crate} calls {m}(), an operation of several services: {sorted(ops[m])}"
            actions |= ops[m]
    if "dynamodb:TransactWriteItems" in actions:
        actions.discard("dynamodb:TransactWriteItems")
        for part, action in (("Put", "PutItem"), ("Update", "UpdateItem"), ("Delete", "DeleteItem"),
                             ("ConditionCheck", "ConditionCheckItem")):
            if re.search(rf"\b{part}::builder\(\)", text):
                actions.add(f"dynamodb:{action}")
    return actions


# ------------------------------------------------------------------------------------------- the deployed roles
@functools.lru_cache
def deployed() -> local_stack.Stack:
    # FLEET_TEMPLATE: another template to check (the mutation check in local-stack/scenarios/iam_mutations.py)
    return local_stack.Stack("http://127.0.0.1:1", template_path=os.environ.get("FLEET_TEMPLATE"))


def function_specs() -> dict[str, dict]:
    st = deployed()
    return {spec["logical"]: dict(spec, crate=crate) for crate, spec in st.functions().items()}


def role_documents(role_logical: str, written_only: bool = False) -> list[dict]:
    """The role's policy documents, resolved; AWS managed policies come from moto's copy of them."""
    st = deployed()
    res = st.resolve(st.translated["Resources"][role_logical]["Properties"])
    import json

    docs = [p["PolicyDocument"] for p in res.get("Policies") or []]
    for arn in res.get("ManagedPolicyArns") or []:
        own = next((l for l, r in st.translated["Resources"].items()
                    if r["Type"] == "AWS::IAM::ManagedPolicy" and st.physical[l]["Ref"] == arn), None)
        if own:
            doc = st.resolve(st.translated["Resources"][own]["Properties"]["PolicyDocument"])
            docs.append(json.loads(doc) if isinstance(doc, str) else doc)
        elif not written_only:
            docs.append(aws_managed(arn))
    # the template's managed policies that name the role (attached from the policy's side, e.g. to avoid a
    # circular dependency)
    for r in st.translated["Resources"].values():
        if r["Type"] == "AWS::IAM::ManagedPolicy" and res_name(st, role_logical) in st.resolve(
                (r.get("Properties") or {}).get("Roles") or []):
            doc = st.resolve(r["Properties"]["PolicyDocument"])
            docs.append(json.loads(doc) if isinstance(doc, str) else doc)
    return docs


def res_name(st, role_logical: str) -> str:
    return st.physical[role_logical]["RoleName"]


def aws_managed(arn: str) -> dict:
    import json

    from moto.iam.aws_managed_policies import aws_managed_policies_data

    name = arn.rsplit("/", 1)[-1]
    return json.loads(aws_managed_policies_data)[name]["Document"] if isinstance(aws_managed_policies_data, str) \
        else aws_managed_policies_data[name]["Document"]


def role_logical(spec: dict) -> str:
    return spec["role"].rsplit("/", 1)[-1].removeprefix(f"{deployed().stack_name}-")


def resources_for(action: str, spec: dict) -> list[str]:
    """Where the code uses an action: the resources the role must allow it on."""
    st = deployed()
    if action in NO_RESOURCE:
        return ["*"]
    if spec["crate"] == "run-command":
        # A run reads its chunk from the ledger and writes only the run results table; it may send the
        # allowlist (RunDocuments' AWS-owned defaults) and the install documents.
        if action == "dynamodb:GetItem":
            return [st.physical["LedgerTable"]["Arn"], st.physical["RunResultsTable"]["Arn"]]
        if action.startswith("dynamodb:"):
            return [st.physical["RunResultsTable"]["Arn"]]
        if action == "ssm:SendCommand":
            return [st.resolve({"Fn::Sub": f"arn:aws:ssm:${{AWS::Region}}::document/{d}"})
                    for d in ("AWS-RunShellScript", "AWS-RunPowerShellScript")] + [
                st.resolve({"Fn::Sub": f"arn:aws:ssm:${{AWS::Region}}:${{AWS::AccountId}}:document/${{{d}}}"})
                for d in ("LinuxInstallDocument", "WindowsInstallDocument")] + [
                "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0"]
    if action.startswith("dynamodb:"):
        return [st.physical["LedgerTable"]["Arn"]]
    if action == "ssm:SendCommand":
        docs = [st.resolve({"Fn::Sub": f"arn:aws:ssm:${{AWS::Region}}:${{AWS::AccountId}}:document/${{{d}}}"})
                for d in ("LinuxInstallDocument", "WindowsInstallDocument")]
        # AWS's own agent update (routing::AGENT_UPDATE_DOCUMENT): an AWS-owned document has no account in its ARN.
        docs.append(st.resolve({"Fn::Sub": f"arn:aws:ssm:${{AWS::Region}}::document/{AGENT_UPDATE_DOCUMENT}"}))
        return docs + ["arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0"]
    if action == "states:StartExecution":
        return [st.physical["InstallStateMachine"]["Arn"]]
    if action == "states:SendTaskSuccess":
        # await-commands resumes install executions only (the token's state machine is the resource)
        return [st.physical["InstallStateMachine"]["Arn"]]
    if action == "states:DescribeExecution":
        # the sweep reads only its own executions (the lock's holder)
        name = st.physical["SweepStateMachine"]["Arn"].split(":")[-1]
        return [f"arn:aws:states:us-east-1:123456789012:execution:{name}:holder"]
    if action.startswith("sqs:"):
        return [st.physical["InstallQueue"]["Arn"]]
    if action.startswith("logs:"):
        group = (st.resolve(st.resources[spec["logical"]]["Properties"].get("LoggingConfig") or {})).get("LogGroup")
        return [f"arn:aws:logs:us-east-1:123456789012:log-group:{group}:log-stream:x"]
    raise AssertionError(f"no resource known for {action}: add it to resources_for")


def needed_actions(spec: dict) -> set[str]:
    actions = code_actions(spec["crate"]) | LOGGING
    if any(e["Type"] == "SQS" for e in spec["events"].values()):
        actions |= EVENT_SOURCE_SQS
    return actions


def written_actions(role: str) -> set[str]:
    """Every action the template itself allows this role (its own statements and own managed policies)."""
    out = set()
    for doc in role_documents(role, written_only=True):
        for st in iam_ext._as_list(doc.get("Statement")):
            if st.get("Effect") == "Allow":
                out |= set(iam_ext._as_list(st.get("Action")))
    return out


FUNCTION_LOGICALS = sorted(function_specs())


def test_every_function_is_covered():
    crates = {p.parent.parent.name for p in FUNCTIONS.glob("*/src/main.rs")}
    assert {s["crate"] for s in function_specs().values()} == crates, "a function crate is not in template.yaml"
    assert all(code_actions(s["crate"]) or s["crate"] in ("group-by-platform", "evaluate-wave")
               for s in function_specs().values()), "the code reader found no SDK call in a function that makes some"


def test_reader_finds_known_calls():
    """The reader itself: known calls are found, including through fleet-core and inside transactions."""
    assert "ssm:SendCommand" in code_actions("send-command")
    assert "states:StartExecution" in code_actions("start-install")
    # the ledger's transactions are conditional updates: UpdateItem, and no TransactWriteItems action
    assert "dynamodb:UpdateItem" in code_actions("check-status")
    assert not any("Transact" in a for a in code_actions("check-status"))
    assert "dynamodb:BatchWriteItem" in code_actions("plan-rollout")
    assert not code_actions("evaluate-wave")


@pytest.mark.parametrize("logical", FUNCTION_LOGICALS)
def test_role_allows_what_the_code_calls(logical):
    spec = function_specs()[logical]
    docs = role_documents(role_logical(spec))
    missing = []
    for action in sorted(needed_actions(spec)):
        for resource in resources_for(action, spec):
            if iam_ext.evaluate(docs, action, resource, {}) != iam_ext.Decision.ALLOW:
                missing.append(f"{action} on {resource}")
    assert not missing, f"{logical}'s role does not allow what its code calls: {missing}"


@pytest.mark.parametrize("logical", FUNCTION_LOGICALS)
def test_role_allows_nothing_beyond_the_code(logical):
    spec = function_specs()[logical]
    role = role_logical(spec)
    extra = sorted(written_actions(role) - needed_actions(spec))
    assert not extra, f"{logical}'s role allows actions its code never calls: {extra}"
    # What is not written in the template: only SAM's basic execution policy, and nothing in it beyond logging.
    st = deployed()
    managed = st.resolve(st.translated["Resources"][role]["Properties"]).get("ManagedPolicyArns") or []
    own = {st.physical[l]["Ref"] for l, r in st.translated["Resources"].items() if r["Type"] == "AWS::IAM::ManagedPolicy"}
    for arn in managed:
        if arn in own:
            continue
        assert arn == SAM_BASIC_EXECUTION, f"{logical}'s role carries {arn}"
        actions = {a for s in iam_ext._as_list(aws_managed(arn)["Statement"]) for a in iam_ext._as_list(s["Action"])}
        assert {a.split(":")[0] for a in actions} == {"logs"}


@pytest.mark.parametrize("logical", FUNCTION_LOGICALS)
def test_no_wildcard_on_a_mutating_action(logical):
    spec = function_specs()[logical]
    for doc in role_documents(role_logical(spec), written_only=True):
        for st in iam_ext._as_list(doc.get("Statement")):
            if st.get("Effect") != "Allow":
                continue
            for action in iam_ext._as_list(st.get("Action")):
                op = action.split(":", 1)[1]
                if "*" in action or not op.startswith(MUTATING_PREFIXES):
                    assert "*" not in iam_ext._as_list(st.get("Resource")), f"{logical}: {action} on *"


def test_send_command_is_denied_on_opted_out_instances():
    spec = function_specs()["SendCommandFunction"]
    docs = role_documents(role_logical(spec))
    key = deployed().parameters["OptOutTagKey"]
    instance = "arn:aws:ec2:us-east-1:123456789012:instance/i-0123456789abcdef0"
    allowed = iam_ext.evaluate(docs, "ssm:SendCommand", instance, {})
    assert allowed == iam_ext.Decision.ALLOW
    for value in ("true", "", "anything"):
        ctx = {f"ssm:resourceTag/{key}": value, "ssm:resourceTag/team": "web"}
        assert iam_ext.evaluate(docs, "ssm:SendCommand", instance, ctx) == iam_ext.Decision.EXPLICIT_DENY
    # other documents than the stack's are not allowed at all
    other = "arn:aws:ssm:us-east-1::document/AWS-RunShellScript"
    assert iam_ext.evaluate(docs, "ssm:SendCommand", other, {}) != iam_ext.Decision.ALLOW
    # AWS-UpdateSSMAgent is allowed as AWS owns it (no account), not a same-named document of this account
    update = f"arn:aws:ssm:us-east-1::document/{AGENT_UPDATE_DOCUMENT}"
    assert iam_ext.evaluate(docs, "ssm:SendCommand", update, {}) == iam_ext.Decision.ALLOW
    own = f"arn:aws:ssm:us-east-1:123456789012:document/{AGENT_UPDATE_DOCUMENT}"
    assert iam_ext.evaluate(docs, "ssm:SendCommand", own, {}) != iam_ext.Decision.ALLOW


def test_trigger_reads_only_its_own_queue():
    spec = function_specs()["StartInstallFunction"]
    docs = role_documents(role_logical(spec))
    st = deployed()
    own = st.physical["InstallQueue"]["Arn"]
    other = own.rsplit(":", 1)[0] + ":someone-elses-queue"
    for action in EVENT_SOURCE_SQS:
        assert iam_ext.evaluate(docs, action, own, {}) == iam_ext.Decision.ALLOW
        assert iam_ext.evaluate(docs, action, other, {}) != iam_ext.Decision.ALLOW
    managed = st.resolve(st.translated["Resources"][role_logical(spec)]["Properties"]).get("ManagedPolicyArns") or []
    assert not any("SQS" in a for a in managed), "SAM's account-wide SQS policy is back"


# ------------------------------------------------------------------------------------------ the evaluator itself
def test_evaluator_follows_aws_rules():
    allow = {"Statement": [{"Effect": "Allow", "Action": "dynamodb:PutItem", "Resource": "arn:t/ledger"}]}
    deny = {"Statement": [{"Effect": "Deny", "Action": "dynamodb:*", "Resource": "*"}]}
    star = {"Statement": [{"Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*"}]}
    E = iam_ext.evaluate
    assert E([allow], "dynamodb:PutItem", "arn:t/ledger", {}) == "allow"
    assert E([allow], "dynamodb:PutItem", "arn:t/other", {}) == "implicit"
    assert E([allow], "dynamodb:UpdateItem", "arn:t/ledger", {}) == "implicit"
    assert E([allow, deny], "dynamodb:PutItem", "arn:t/ledger", {}) == "explicit"
    assert E([star], "ec2:DescribeInstances", "*", {}) == "allow"
    # a request on "*" is matched only by Resource "*", never by a specific ARN
    assert E([allow], "dynamodb:PutItem", "*", {}) == "implicit"
    unknown = {"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*",
                              "Condition": {"SomeFutureOperator": {"k": "v"}}}]}
    assert E([unknown], "ssm:SendCommand", "*", {}) == "implicit"


def test_transactions_are_authorised_by_their_parts():
    ctx = iam_ext.request_context("dynamodb", "TransactWriteItems", {"TransactItems": [
        {"Update": {"TableName": "ledger"}}, {"ConditionCheck": {"TableName": "ledger"}},
        {"Put": {"TableName": "other"}}]}, "123456789012", "us-east-1")
    assert [(a, r) for a, r, _ in ctx] == [
        ("dynamodb:UpdateItem", "arn:aws:dynamodb:us-east-1:123456789012:table/ledger"),
        ("dynamodb:ConditionCheckItem", "arn:aws:dynamodb:us-east-1:123456789012:table/ledger"),
        ("dynamodb:PutItem", "arn:aws:dynamodb:us-east-1:123456789012:table/other")]


def test_the_run_role_may_send_only_the_allowlist_and_never_writes_the_ledger():
    """Least privilege of ad-hoc runs: documents outside RunDocuments and the install documents are denied,
    and so is any write to the install ledger."""
    spec = function_specs()["RunCommandFunction"]
    docs = role_documents(role_logical(spec))
    st = deployed()
    allowed = "arn:aws:ssm:us-east-1::document/AWS-RunShellScript"
    assert iam_ext.evaluate(docs, "ssm:SendCommand", allowed, {}) == iam_ext.Decision.ALLOW
    for denied in ("arn:aws:ssm:us-east-1::document/AWS-UpdateSSMAgent",
                   "arn:aws:ssm:us-east-1::document/AWS-RunRemoteScript",
                   "arn:aws:ssm:us-east-1:123456789012:document/AWS-RunShellScript-copy",
                   "arn:aws:ssm:us-east-1:123456789012:document/Customer-Doc"):
        assert iam_ext.evaluate(docs, "ssm:SendCommand", denied, {}) != iam_ext.Decision.ALLOW, denied
    ledger = st.physical["LedgerTable"]["Arn"]
    for write in ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:BatchWriteItem", "dynamodb:DeleteItem"):
        assert iam_ext.evaluate(docs, write, ledger, {}) != iam_ext.Decision.ALLOW, write
