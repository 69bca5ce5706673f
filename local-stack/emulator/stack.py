#!/usr/bin/env python3
"""Create fleet-install's resources in the local moto server FROM THE FILES SAM DEPLOYS.

template.yaml (read with cfn-lint's decoder, so !Ref/!GetAtt/!Sub work), its Parameters' defaults, the ledger
table, the queues, the EventBridge rule, the SSM documents (documents/*.yml through the AWS::Include Location),
the state machine (statemachine/install.asl.json with its DefinitionSubstitutions) and each function's
Environment. Functions are not created in moto: the state machine only needs their ARNs, and the Lambda
forwarder sends arn:aws:lambda:<region>:<account>:function:<name> to cargo lambda watch's binary <name>, where
<name> is the last part of the function's CodeUri (the crate directory, e.g. filter-managed).

    .venv/bin/python local-stack/emulator/stack.py --endpoint http://127.0.0.1:5055 [--fast] [--param Key=Value ...]

Writes target/local-stack/outputs.json (the template's Outputs), env.json ({"<binary>": {VAR: value}}) and
stack.json (everything the poller and the runner need).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.request

import boto3
from botocore.config import Config

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT_DIR = os.environ.get("FLEET_LOCAL_STACK_DIR") or os.path.join(ROOT, "target", "local-stack")
REGION = "us-east-1"
ACCOUNT = "123456789012"
PARTITION = "aws"

#: Local values for the waits, so that a scenario takes seconds instead of minutes. Everything else keeps the
#: template's default. Several are below the template's MinValue on purpose (the engine does not check).
FAST_PARAMETERS = {
    "QueueDelaySeconds": "1",            # template 180: SQS DelaySeconds
    "BatchWindowSeconds": "1",           # template 180: event source MaximumBatchingWindowInSeconds
    "RegistrationDeadlineSeconds": "20", # template 900
    "RegistrationPollSeconds": "2",      # template 60
    "PollIntervalSeconds": "2",          # template 30
    "RetryBackoffSeconds": "1",          # template 120
    # The wait for completion events (delivery + execution timeout + grace) before the fallback status check:
    # 55 s here, 1,560 s with the template's defaults. The simulated installs do not depend on these timeouts.
    "CommandDeliveryTimeoutSeconds": "30",   # template 600 (SSM's minimum is 30)
    "CommandExecutionTimeoutSeconds": "20",  # template 900
    "CompletionEventGraceSeconds": "5",      # template 60
}

#: Local-only extras (not in the template): an instance profile for simulated instances.
SIM_INSTANCE_PROFILE = "fleet-sim-instance"
#: What the simulated instances' role carries (the policy `fleet-install prereq` attaches).
SIM_INSTANCE_POLICY = f"arn:{PARTITION}:iam::aws:policy/AmazonSSMManagedInstanceCore"
#: Local-only: the role the CLI runs under in the end-to-end tests; it has nothing but the stack's OperatorPolicy.
LOCAL_OPERATOR_ROLE = "fleet-install-local-operator"


def sam_translate(path: str, parameters: dict) -> dict:
    """template.yaml as `sam deploy` expands it (aws-sam-translator, which the SAM CLI uses). Local code paths
    stand in for the S3 locations that `sam package` would upload."""
    from samtranslator.translator.transform import transform
    from samtranslator.yaml_helper import yaml_parse

    class NoManagedPolicyNames:
        """Policies given by name would be looked up in IAM; this template names every one by ARN."""

        def load(self):
            return {}

    with open(path) as f:
        tpl = yaml_parse(f.read())
    for res in (tpl.get("Resources") or {}).values():
        props = res.get("Properties") or {}
        for key in ("CodeUri", "DefinitionUri"):
            if isinstance(props.get(key), str):
                props[key] = f"s3://fleet-install-local/{props[key]}"
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    return _plain(transform(tpl, dict(parameters), NoManagedPolicyNames()))


def load_template(path: str) -> dict:
    from cfnlint.decode import decode

    template, matches = decode(path)
    if matches:
        raise SystemExit(f"{path} does not parse: {matches}")
    return template


def _plain(v):
    """cfn-lint node classes -> plain dict/list/str."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, bool):
        return bool(v)
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v)
    if isinstance(v, str):
        return str(v)
    return v


class Stack:
    def __init__(self, endpoint: str, lambda_endpoint: str | None = None, fast: bool = False,
                 overrides: dict | None = None, stack_name: str = "fleet-install", root: str = ROOT,
                 template_path: str | None = None):
        self.endpoint = endpoint.rstrip("/")
        self.lambda_endpoint = lambda_endpoint
        self.root = root
        self.stack_name = stack_name
        self.template = _plain(load_template(template_path or os.path.join(root, "template.yaml")))
        self.resources: dict = self.template.get("Resources", {})
        self.globals_fn: dict = (self.template.get("Globals") or {}).get("Function") or {}
        self.parameters = self._parameters(fast, overrides or {})
        # What `sam deploy` really creates: the template as SAM expands it (generated roles, policy templates,
        # managed policies, event source mappings). IAM comes from here, so local roles are the deployed ones.
        self.translated = sam_translate(template_path or os.path.join(root, "template.yaml"), self.parameters)
        self.physical: dict[str, dict] = {}   # logical id -> {"Ref": ..., "Arn": ..., ...}
        self._plan_names()

    # ---------------------------------------------------------------------------------- parameters
    def _parameters(self, fast: bool, overrides: dict) -> dict:
        decl = self.template.get("Parameters") or {}
        values = {k: str(v.get("Default", "")) for k, v in decl.items()}
        if fast:
            values.update({k: v for k, v in FAST_PARAMETERS.items() if k in decl})
        for k, v in overrides.items():
            if k not in decl:
                raise SystemExit(f"unknown template parameter {k}")
            values[k] = str(v)
        for k, v in values.items():
            d = decl[k]
            if "AllowedPattern" in d and not re.search(d["AllowedPattern"], v):
                raise SystemExit(f"parameter {k}={v!r} does not match {d['AllowedPattern']}")
            if "AllowedValues" in d and v not in [str(x) for x in d["AllowedValues"]]:
                raise SystemExit(f"parameter {k}={v!r} is not one of {d['AllowedValues']}")
            if d.get("Type") == "Number":
                n = float(v)
                lo, hi = d.get("MinValue"), d.get("MaxValue")
                if (lo is not None and n < float(lo)) or (hi is not None and n > float(hi)):
                    print(f"note: {k}={v} is outside the template's range [{lo}, {hi}] (local speed-up)",
                          file=sys.stderr)
        return values

    # -------------------------------------------------------------------------------- naming/refs
    def function_binary(self, logical: str) -> str:
        return os.path.basename(self.resources[logical]["Properties"]["CodeUri"].rstrip("/"))

    def _plan_names(self) -> None:
        arn = f"arn:{PARTITION}:{{svc}}:{REGION}:{ACCOUNT}:{{res}}"
        every = dict(self.translated.get("Resources") or {})
        every.update(self.resources)
        for logical, res in every.items():
            t = res["Type"]
            name = f"{self.stack_name}-{logical}"
            p: dict = {}
            if t == "AWS::DynamoDB::Table":
                p = {"Ref": name, "Arn": arn.format(svc="dynamodb", res=f"table/{name}")}
            elif t == "AWS::SQS::Queue":
                p = {"Ref": f"{self.endpoint}/{ACCOUNT}/{name}", "Arn": f"arn:{PARTITION}:sqs:{REGION}:{ACCOUNT}:{name}",
                     "QueueName": name, "QueueUrl": f"{self.endpoint}/{ACCOUNT}/{name}"}
            elif t == "AWS::Events::Rule":
                p = {"Ref": name, "Arn": arn.format(svc="events", res=f"rule/{name}")}
            elif t == "AWS::Serverless::Function":
                fn = self.function_binary(logical)
                p = {"Ref": fn, "Arn": arn.format(svc="lambda", res=f"function:{fn}")}
            elif t == "AWS::Serverless::StateMachine":
                sm = arn.format(svc="states", res=f"stateMachine:{name}")
                p = {"Ref": sm, "Arn": sm, "Name": name}
            elif t == "AWS::Logs::LogGroup":
                lg = f"/fleet-install/{self.stack_name}/{logical}"
                p = {"Ref": lg, "Arn": arn.format(svc="logs", res=f"log-group:{lg}:*")}
            elif t == "AWS::SSM::Document":
                p = {"Ref": name}
            elif t == "AWS::IAM::ManagedPolicy":
                p = {"Ref": f"arn:{PARTITION}:iam::{ACCOUNT}:policy/{name}", "PolicyName": name}
            elif t == "AWS::IAM::Role":
                p = {"Ref": name, "Arn": f"arn:{PARTITION}:iam::{ACCOUNT}:role/{name}", "RoleName": name}
            elif t == "AWS::SNS::Topic":
                p = {"Ref": f"arn:{PARTITION}:sns:{REGION}:{ACCOUNT}:{name}", "TopicName": name}
            elif t == "AWS::KMS::Key":
                p = {"Ref": "00000000-0000-0000-0000-000000000000",
                     "Arn": arn.format(svc="kms", res="key/00000000-0000-0000-0000-000000000000")}
            else:
                p = {"Ref": name}
            self.physical[logical] = p

    def pseudo(self, name: str) -> str:
        return {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": PARTITION,
                "AWS::StackName": self.stack_name, "AWS::URLSuffix": "amazonaws.com",
                "AWS::NoValue": ""}[name]

    def resolve(self, v):
        """Resolve Ref / Fn::GetAtt / Fn::Sub / Fn::Join to local values."""
        if isinstance(v, list):
            return [self.resolve(x) for x in v]
        if not isinstance(v, dict):
            return v
        if len(v) == 1:
            (k, x), = v.items()
            if k == "Ref":
                if x in self.parameters:
                    decl = (self.template.get("Parameters") or {}).get(x) or {}
                    if decl.get("Type") == "CommaDelimitedList":
                        return [p.strip() for p in self.parameters[x].split(",")]
                    return self.parameters[x]
                if x.startswith("AWS::"):
                    return self.pseudo(x)
                return self.physical[x]["Ref"]
            if k == "Fn::GetAtt":
                logical, attr = (x.split(".", 1) if isinstance(x, str) else x)
                return self.physical[logical][attr]
            if k == "Fn::Sub":
                text, extra = (x, {}) if isinstance(x, str) else (x[0], self.resolve(x[1]))

                def sub(m):
                    key = m.group(1)
                    if key in extra:
                        return str(extra[key])
                    if "." in key:
                        return str(self.resolve({"Fn::GetAtt": key.split(".", 1)}))
                    return str(self.resolve({"Ref": key}))
                return re.sub(r"\$\{([A-Za-z0-9:._]+)\}", sub, text)
            if k == "Fn::Join":
                parts = self.resolve(x[1])
                return x[0].join(str(p) for p in (parts if isinstance(parts, list) else [parts]))
            if k == "Fn::Split":
                return str(self.resolve(x[1])).split(x[0])
        return {k: self.resolve(x) for k, x in v.items()}

    # ----------------------------------------------------------------------------------- functions
    def functions(self) -> dict:
        """{"<binary>": {"logical": ..., "arn": ..., "env": {...}, "events": {...}}}"""
        out = {}
        genv = (self.globals_fn.get("Environment") or {}).get("Variables") or {}
        for logical, res in self.resources.items():
            if res["Type"] != "AWS::Serverless::Function":
                continue
            props = res.get("Properties") or {}
            env = dict(genv)
            env.update(((props.get("Environment") or {}).get("Variables")) or {})
            env = {k: str(self.resolve(v)) for k, v in env.items()}
            events = {}
            for ev_name, ev in (props.get("Events") or {}).items():
                events[ev_name] = {"Type": ev["Type"], "Properties": self.resolve(ev.get("Properties") or {})}
            out[self.function_binary(logical)] = {
                "logical": logical, "arn": self.physical[logical]["Arn"], "env": env, "events": events,
                "role": self.role_of(logical),
                "timeout": int(props.get("Timeout", self.globals_fn.get("Timeout", 3))),
            }
        return out

    # ------------------------------------------------------------------------------------- create
    def clients(self):
        kw = dict(endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id="fleet-setup",
                  aws_secret_access_key="testing", config=Config(retries={"total_max_attempts": 2}))
        return {s: boto3.client(s, **kw) for s in ("dynamodb", "sqs", "events", "ssm", "iam", "stepfunctions",
                                                      "logs", "sns")}

    def create(self, require_asl: bool = False) -> dict:
        c = self.clients()
        created = []
        order = sorted(self.resources, key=lambda l: {"AWS::SQS::Queue": 0 if "Dead" in l else 1}.get(
            self.resources[l]["Type"], 2))
        for logical in order:
            res = self.resources[logical]
            t, props = res["Type"], res.get("Properties") or {}
            name = self.physical[logical].get("Name") or f"{self.stack_name}-{logical}"
            if t == "AWS::DynamoDB::Table":
                self._table(c["dynamodb"], name, props)
            elif t == "AWS::SQS::Queue":
                self._queue(c["sqs"], logical, name, props)
            elif t == "AWS::SQS::QueuePolicy":
                doc = json.dumps(self.resolve(props["PolicyDocument"]))
                for q in self.resolve(props["Queues"]):
                    c["sqs"].set_queue_attributes(QueueUrl=q, Attributes={"Policy": doc})
            elif t == "AWS::Events::Rule":
                self._rule(c["events"], name, props)
            elif t == "AWS::SSM::Document":
                self._document(c["ssm"], name, props)
            elif t == "AWS::Logs::LogGroup":
                try:
                    c["logs"].create_log_group(logGroupName=self.physical[logical]["Ref"])
                except c["logs"].exceptions.ResourceAlreadyExistsException:
                    pass
            else:
                continue
            created.append(logical)
        created += self._iam(c["iam"])
        sm_created = []
        for logical, res in self.resources.items():
            if res["Type"] == "AWS::Serverless::StateMachine":
                if self._state_machine(c["stepfunctions"], logical, res.get("Properties") or {},
                                       self.role_of(logical), require_asl):
                    sm_created.append(logical)
        return {"created": created + sm_created}

    # ------------------------------------------------------------------------------------------ IAM
    def role_of(self, logical: str) -> str:
        """The execution role ARN of a function or state machine, as SAM's expansion wires it."""
        props = (self.translated["Resources"][logical].get("Properties") or {})
        return str(self.resolve(props.get("Role") or props.get("RoleArn")))

    def _iam(self, iam) -> list[str]:
        """Every managed policy and role of the expanded template, with their inline and attached policies;
        then the local-only extras: the simulated instances' profile and the operator role."""
        created = []
        translated = self.translated["Resources"]
        for logical, res in translated.items():
            if res["Type"] != "AWS::IAM::ManagedPolicy":
                continue
            props = self.resolve(res.get("Properties") or {})
            name = self.physical[logical]["PolicyName"]
            doc = props["PolicyDocument"]
            doc = json.dumps(json.loads(doc) if isinstance(doc, str) else doc)   # a JSON string (Fn::Sub) too
            try:
                iam.create_policy(PolicyName=name, PolicyDocument=doc, Description=props.get("Description", ""))
            except iam.exceptions.EntityAlreadyExistsException:
                arn = self.physical[logical]["Ref"]
                for v in iam.list_policy_versions(PolicyArn=arn)["Versions"]:
                    if not v["IsDefaultVersion"]:
                        iam.delete_policy_version(PolicyArn=arn, VersionId=v["VersionId"])
                iam.create_policy_version(PolicyArn=arn, PolicyDocument=doc, SetAsDefault=True)
            created.append(logical)
        for logical, res in translated.items():
            if res["Type"] != "AWS::IAM::Role":
                continue
            props = self.resolve(res.get("Properties") or {})
            name = self.physical[logical]["RoleName"]
            trust = json.dumps(props["AssumeRolePolicyDocument"])
            try:
                iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust)
            except iam.exceptions.EntityAlreadyExistsException:
                iam.update_assume_role_policy(RoleName=name, PolicyDocument=trust)
            for pol in props.get("Policies") or []:
                # SAM writes its generated statements without "Version"; IAM then reads them as 2008-10-17
                # (no policy variables, none used here), moto refuses them: give moto the current version.
                doc = dict(pol["PolicyDocument"])
                doc.setdefault("Version", "2012-10-17")
                iam.put_role_policy(RoleName=name, PolicyName=pol["PolicyName"], PolicyDocument=json.dumps(doc))
            for arn in props.get("ManagedPolicyArns") or []:
                iam.attach_role_policy(RoleName=name, PolicyArn=arn)   # an unknown policy fails loudly
            created.append(logical)
        for logical, res in translated.items():
            if res["Type"] == "AWS::IAM::ManagedPolicy":
                for role in self.resolve((res.get("Properties") or {}).get("Roles") or []):
                    iam.attach_role_policy(RoleName=role, PolicyArn=self.physical[logical]["Ref"])

        ec2_trust = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
        try:
            iam.create_role(RoleName=SIM_INSTANCE_PROFILE, AssumeRolePolicyDocument=json.dumps(ec2_trust))
            iam.create_instance_profile(InstanceProfileName=SIM_INSTANCE_PROFILE)
            iam.add_role_to_instance_profile(InstanceProfileName=SIM_INSTANCE_PROFILE, RoleName=SIM_INSTANCE_PROFILE)
        except iam.exceptions.EntityAlreadyExistsException:
            pass
        # The simulated SSM Agent registers only if its role allows it, as a real one does.
        iam.attach_role_policy(RoleName=SIM_INSTANCE_PROFILE, PolicyArn=SIM_INSTANCE_POLICY)
        # The operator: a role with nothing but the stack's OperatorPolicy, for the CLI in the end-to-end tests.
        operator_policy = next((self.physical[l]["Ref"] for l, r in translated.items()
                                if l == "OperatorPolicy" and r["Type"] == "AWS::IAM::ManagedPolicy"), None)
        if operator_policy:
            account_trust = {"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Principal": {"AWS": f"arn:{PARTITION}:iam::{ACCOUNT}:root"},
                 "Action": "sts:AssumeRole"}]}
            try:
                iam.create_role(RoleName=LOCAL_OPERATOR_ROLE, AssumeRolePolicyDocument=json.dumps(account_trust))
            except iam.exceptions.EntityAlreadyExistsException:
                pass
            iam.attach_role_policy(RoleName=LOCAL_OPERATOR_ROLE, PolicyArn=operator_policy)
        return created

    def _table(self, ddb, name, props):
        kw = {"TableName": name, "AttributeDefinitions": props["AttributeDefinitions"],
              "KeySchema": props["KeySchema"], "BillingMode": props.get("BillingMode", "PROVISIONED")}
        if kw["BillingMode"] == "PROVISIONED":
            kw["ProvisionedThroughput"] = props.get("ProvisionedThroughput") or {
                "ReadCapacityUnits": 5, "WriteCapacityUnits": 5}
        if props.get("GlobalSecondaryIndexes"):
            kw["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        if props.get("SSESpecification"):
            kw["SSESpecification"] = {"Enabled": bool(props["SSESpecification"].get("SSEEnabled"))}
        try:
            ddb.create_table(**kw)
        except ddb.exceptions.ResourceInUseException:
            pass
        ttl = props.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled"):
            try:
                ddb.update_time_to_live(TableName=name, TimeToLiveSpecification={
                    "AttributeName": ttl["AttributeName"], "Enabled": True})
            except ddb.exceptions.ClientError as ex:
                if "already enabled" not in str(ex):
                    raise

    def _queue(self, sqs, logical, name, props):
        attrs = {}
        for k, v in props.items():
            if k in ("Tags", "QueueName", "SqsManagedSseEnabled", "KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds"):
                continue
            v = self.resolve(v)
            attrs[k] = json.dumps(v) if isinstance(v, dict) else str(v).lower() if isinstance(v, bool) else str(v)
        url = sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]
        self.physical[logical]["Ref"] = self.physical[logical]["QueueUrl"] = url
        self.physical[logical]["Arn"] = sqs.get_queue_attributes(
            QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    def _rule(self, events, name, props):
        kw = {"Name": name, "State": props.get("State", "ENABLED")}
        if props.get("EventPattern"):
            kw["EventPattern"] = json.dumps(self.resolve(props["EventPattern"]))
        if props.get("ScheduleExpression"):
            kw["ScheduleExpression"] = props["ScheduleExpression"]
        if props.get("Description"):
            kw["Description"] = props["Description"]
        events.put_rule(**kw)
        targets = [{k: v for k, v in self.resolve(t).items()} for t in props.get("Targets") or []]
        if targets:
            events.put_targets(Rule=name, Targets=targets)

    def _document(self, ssm, name, props):
        content = props["Content"]
        if isinstance(content, dict) and "Fn::Transform" in content:
            location = content["Fn::Transform"]["Parameters"]["Location"]
            with open(os.path.join(self.root, location)) as f:
                text = f.read()
        else:
            text = json.dumps(content)
        fmt = props.get("DocumentFormat", "JSON")
        kw = {"Name": name, "Content": text, "DocumentType": props.get("DocumentType", "Command"),
              "DocumentFormat": fmt}
        if props.get("TargetType"):
            kw["TargetType"] = props["TargetType"]
        try:
            ssm.create_document(**kw)
        except ssm.exceptions.DocumentAlreadyExists:
            # UpdateMethod Replace in the template; locally the name is fixed, so replace in place
            ssm.delete_document(Name=name)
            ssm.create_document(**kw)

    def definition(self, props) -> str | None:
        path = os.path.join(self.root, props["DefinitionUri"])
        if not os.path.exists(path):
            return None
        with open(path) as f:
            text = f.read()
        subs = {k: str(self.resolve(v)) for k, v in (props.get("DefinitionSubstitutions") or {}).items()}
        text = re.sub(r"\$\{([A-Za-z0-9_]+)\}", lambda m: subs.get(m.group(1), m.group(0)), text)
        left = sorted(set(re.findall(r"\$\{([A-Za-z0-9_]+)\}", text)))
        if left:
            raise SystemExit(f"{props['DefinitionUri']}: no DefinitionSubstitutions for {left}")
        json.loads(text)
        return text

    def _state_machine(self, sfn, logical, props, role_arn, require_asl) -> bool:
        text = self.definition(props)
        if text is None:
            if require_asl:
                raise SystemExit(f"{props['DefinitionUri']} does not exist")
            print(f"warning: {props['DefinitionUri']} does not exist yet; {logical} not created", file=sys.stderr)
            return False
        name = self.physical[logical]["Name"]
        arn = self.physical[logical]["Arn"]
        try:
            sfn.describe_state_machine(stateMachineArn=arn)
            sfn.update_state_machine(stateMachineArn=arn, definition=text, roleArn=role_arn)
        except sfn.exceptions.StateMachineDoesNotExist:
            arn = sfn.create_state_machine(name=name, definition=text, roleArn=role_arn,
                                           type=props.get("Type", "STANDARD"))["stateMachineArn"]
        self.physical[logical]["Ref"] = self.physical[logical]["Arn"] = arn
        return True

    # ------------------------------------------------------------------------------------- outputs
    def outputs(self) -> dict:
        out = {}
        for name, o in (self.template.get("Outputs") or {}).items():
            try:
                out[name] = str(self.resolve(o["Value"]))
            except KeyError:
                pass
        return out

    def event_source_mappings(self, functions: dict) -> list:
        maps = []
        for fn, spec in functions.items():
            for ev_name, ev in spec["events"].items():
                if ev["Type"] != "SQS":
                    continue
                p = ev["Properties"]
                queue_arn = p["Queue"]
                logical = next(l for l, ph in self.physical.items() if ph.get("Arn") == queue_arn)
                qprops = self.resolve(self.resources[logical].get("Properties") or {})
                redrive = qprops.get("RedrivePolicy") or {}
                dlq = next((ph.get("QueueUrl") for ph in self.physical.values()
                            if redrive and ph.get("Arn") == redrive.get("deadLetterTargetArn")), None)
                maps.append({
                    "Function": fn, "Event": ev_name, "QueueArn": queue_arn,
                    "QueueUrl": self.physical[logical]["QueueUrl"],
                    "BatchSize": int(p.get("BatchSize", 10)),
                    "MaximumBatchingWindowInSeconds": int(p.get("MaximumBatchingWindowInSeconds", 0)),
                    "FunctionResponseTypes": p.get("FunctionResponseTypes") or [],
                    "VisibilityTimeout": int(qprops.get("VisibilityTimeout", 30)),
                    "MaxReceiveCount": int(redrive["maxReceiveCount"]) if redrive else None,
                    "DeadLetterQueueUrl": dlq, "DeadLetterQueueArn": redrive.get("deadLetterTargetArn"),
                })
        return maps


def build(endpoint: str, lambda_endpoint: str | None = None, fast: bool = False, overrides: dict | None = None,
          out_dir: str = OUT_DIR, require_asl: bool = False, root: str = ROOT) -> dict:
    stack = Stack(endpoint, lambda_endpoint, fast, overrides, root=root)
    created = stack.create(require_asl=require_asl)
    functions = stack.functions()
    outputs = stack.outputs()
    outputs["SimInstanceProfileName"] = SIM_INSTANCE_PROFILE
    if "OperatorPolicy" in (stack.translated.get("Resources") or {}):
        outputs["LocalOperatorRoleArn"] = f"arn:{PARTITION}:iam::{ACCOUNT}:role/{LOCAL_OPERATOR_ROLE}"
    info = {
        "endpoint": stack.endpoint, "lambdaEndpoint": lambda_endpoint, "region": REGION, "account": ACCOUNT,
        "fast": fast, "parameters": stack.parameters, "outputs": outputs,
        "functions": {fn: {k: v for k, v in spec.items() if k != "events"} for fn, spec in functions.items()},
        "eventSourceMappings": stack.event_source_mappings(functions),
        "created": created["created"],
    }
    os.makedirs(out_dir, exist_ok=True)
    for fname, data in (("outputs.json", outputs), ("env.json", {fn: s["env"] for fn, s in functions.items()}),
                        ("stack.json", info)):
        with open(os.path.join(out_dir, fname), "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
    return info


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoint", default=f"http://127.0.0.1:{os.environ.get('MOTO_PORT', '5055')}")
    ap.add_argument("--lambda-endpoint", default=f"http://127.0.0.1:{os.environ.get('WATCH_PORT', '9099')}")
    ap.add_argument("--fast", action="store_true", help="shrink the waits (see FAST_PARAMETERS)")
    ap.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="override a template parameter")
    ap.add_argument("--out-dir", default=OUT_DIR)
    ap.add_argument("--require-asl", action="store_true")
    ap.add_argument("--reset", action="store_true", help="POST /moto-api/reset first")
    args = ap.parse_args(argv)
    if args.reset:
        urllib.request.urlopen(urllib.request.Request(args.endpoint + "/moto-api/reset", method="POST")).read()
    overrides = dict(p.split("=", 1) for p in args.param)
    info = build(args.endpoint, args.lambda_endpoint, args.fast, overrides, args.out_dir, args.require_asl)
    json.dump(info["outputs"], sys.stdout, indent=2, sort_keys=True)
    print()


if __name__ == "__main__":
    main()
