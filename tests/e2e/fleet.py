"""Helpers for end-to-end runs on the local stack: clients, a simulated fleet, waiting, the ledger."""
from __future__ import annotations

import json
import os
import pathlib
import time

import boto3
import requests

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUTPUTS = pathlib.Path(os.environ.get("FLEET_LOCAL_STACK_DIR") or ROOT / "target" / "local-stack") / "outputs.json"


class Stack:
    def __init__(self, endpoint: str, access_key: str = "testing"):
        """access_key: the emulator counts calls made with "fleet-bench" apart from the system's (make bench)."""
        self.endpoint = endpoint
        kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=access_key, aws_secret_access_key="testing")
        self.ec2 = boto3.client("ec2", **kw)
        self.ssm = boto3.client("ssm", **kw)
        self.sfn = boto3.client("stepfunctions", **kw)
        self.ddb = boto3.client("dynamodb", **kw)
        self.sqs = boto3.client("sqs", **kw)
        self.events = boto3.client("events", **kw)
        self.logs = boto3.client("logs", **kw)
        self.outputs = json.loads(OUTPUTS.read_text())
        self._ami = None

    def operator_env(self) -> dict[str, str]:
        """The environment the CLI runs with in the end-to-end tests: credentials of a role that has nothing
        but the stack's OperatorPolicy (IAM is enforced on the local stack)."""
        sts = boto3.client("sts", endpoint_url=self.endpoint, region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        c = sts.assume_role(RoleArn=self.outputs["LocalOperatorRoleArn"], RoleSessionName="operator")["Credentials"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(AWS_ACCESS_KEY_ID=c["AccessKeyId"], AWS_SECRET_ACCESS_KEY=c["SecretAccessKey"],
                   AWS_SESSION_TOKEN=c["SessionToken"], AWS_REGION="us-east-1")
        return env

    def iam_denials(self, reset: bool = False) -> list[dict]:
        """Requests the local stack denied (IAM enforced), as AWS would have."""
        r = requests.request("DELETE" if reset else "GET", f"{self.endpoint}/_fleet/iam/denials", timeout=10)
        return r.json()

    # --- fleet ---------------------------------------------------------------------------
    @property
    def ami(self) -> str:
        if self._ami is None:
            images = self.ec2.describe_images()["Images"]
            self._ami = next(i["ImageId"] for i in images if "windows" not in (i.get("Platform") or "").lower())
        return self._ami

    def launch(self, count: int, tags: dict[str, str] | None = None, profile: bool = True,
               imdsv2: bool | None = None, image_id: str | None = None,
               drop_running_event: bool = False) -> list[str]:
        """imdsv2: True requires IMDSv2 tokens (HttpTokens required), False allows IMDSv1, None: EC2's default.
        image_id: the AMI (its platform and architecture are the instance's); default: a Linux one.
        drop_running_event: EC2's "running" event of these instances is lost (tag fleet-sim:drop-running-event),
        as EventBridge's best-effort delivery can lose one; the instances are otherwise normal."""
        if drop_running_event:
            tags = {**(tags or {}), "fleet-sim:drop-running-event": "true"}
        args = dict(ImageId=image_id or self.ami, MinCount=count, MaxCount=count, InstanceType="t3.micro")
        if imdsv2 is not None:
            args["MetadataOptions"] = {"HttpTokens": "required" if imdsv2 else "optional", "HttpEndpoint": "enabled"}
        if tags:
            args["TagSpecifications"] = [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
        if profile:
            args["IamInstanceProfile"] = {"Name": self.outputs["SimInstanceProfileName"]}
        return [i["InstanceId"] for i in self.ec2.run_instances(**args)["Instances"]]

    def running_event(self, instance_id: str) -> None:
        """Put an EC2 "running" event on the default bus, as EC2 does on every start. PutEvents refuses sources
        that begin with "aws." (as AWS does), so the local stack's own control posts it, as EC2 would."""
        r = requests.post(f"{self.endpoint}/_fleet/events/ec2-running", json={"instanceIds": [instance_id]}, timeout=10)
        r.raise_for_status()

    # --- workflow --------------------------------------------------------------------------
    def executions(self, key: str = "InstallStateMachineArn") -> list[dict]:
        out, token = [], None
        while True:
            kw = {"stateMachineArn": self.outputs[key], "maxResults": 1000}
            if token:
                kw["nextToken"] = token
            page = self.sfn.list_executions(**kw)
            out += page["executions"]
            token = page.get("nextToken")
            if not token:
                return out

    def wait_for_executions(self, at_least: int, timeout: float, key: str = "InstallStateMachineArn", since: float = 0) -> list[dict]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            ex = [e for e in self.executions(key) if e["startDate"].timestamp() >= since]
            if len(ex) >= at_least and all(e["status"] != "RUNNING" for e in ex):
                return ex
            time.sleep(1)
        raise AssertionError(f"executions not finished after {timeout}s: {[(e['name'], e['status']) for e in self.executions(key)]}")

    def wait_for_execution(self, arn: str, timeout: float) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            d = self.sfn.describe_execution(executionArn=arn)
            if d["status"] != "RUNNING":
                return d
            time.sleep(0.5)
        raise AssertionError(f"{arn} still running after {timeout}s")

    # --- ledger ----------------------------------------------------------------------------
    def ledger(self) -> dict[str, dict]:
        items, kw = {}, {"TableName": self.outputs["LedgerTableName"]}
        while True:
            page = self.ddb.scan(**kw)
            for it in page["Items"]:
                key = it["instanceId"]["S"]
                if key.startswith(("batch#", "rollout#")):
                    continue
                items[key] = {k: next(iter(v.values())) for k, v in it.items()}
            if "LastEvaluatedKey" not in page:
                return items
            kw["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def batch_locks(self) -> list[dict]:
        page = self.ddb.scan(TableName=self.outputs["LedgerTableName"])
        return [{k: next(iter(v.values())) for k, v in it.items()} for it in page["Items"] if it["instanceId"]["S"].startswith("batch#")]

    def commands_for(self, instance_id: str) -> list[dict]:
        return self.ssm.list_commands(InstanceId=instance_id)["Commands"]

    # --- local stack controls ---------------------------------------------------------------
    def api_calls(self, reset: bool = False) -> dict[str, int]:
        r = requests.request("DELETE" if reset else "GET", f"{self.endpoint}/_fleet/api-calls", timeout=10)
        return r.json()

    def inject_fault(self, **fault) -> None:
        requests.post(f"{self.endpoint}/_fleet/faults", json=fault, timeout=10).raise_for_status()

    def wait_for_fault_taken(self, function: str, timeout: float = 120) -> None:
        """Until the injected fault for `function` has been used (its invocation has started)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            faults = [f for f in requests.get(f"{self.endpoint}/_fleet/faults", timeout=5).json()
                      if f.get("function") == function]
            if faults and all(f.get("times", 1) == 0 for f in faults):
                return
            time.sleep(0.2)
        raise AssertionError(f"{function} was never invoked")

    def clear_faults(self) -> None:
        requests.delete(f"{self.endpoint}/_fleet/faults", timeout=10)

    # --- drift, lost events, late credentials (the local stack's simulation) -----------------
    def remove_agent(self, ids: list[str], mode: str = "removed") -> dict[str, str]:
        """The security agent on these instances is lost after its install: "removed" (package gone; the next
        install run takes the document's install path) or "stopped" (service stopped; the next run starts it).
        Returns {instance id: "absent" | "stopped"}."""
        r = requests.post(f"{self.endpoint}/_fleet/agent/remove", json={"instanceIds": list(ids), "mode": mode},
                          timeout=30)
        assert r.status_code == 200, r.text
        return r.json()["agents"]

    def agent_states(self, ids: list[str]) -> dict[str, str]:
        """{instance id: "running" | "stopped" | "absent"}: the simulated security agent now."""
        r = requests.get(f"{self.endpoint}/_fleet/agent", params={"instanceIds": ",".join(ids)}, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()["agents"]

    def associate_profile(self, instance_id: str, profile: str | None = None) -> str:
        """Associate an instance profile with a running instance (default: the stack's SimInstanceProfileName,
        whose role allows SSM), as the account's root; the simulated SSM Agent registers register-delay seconds
        later, as a real one does once credentials appear. Returns the association id."""
        name = profile or self.outputs["SimInstanceProfileName"]
        out = self.ec2.associate_iam_instance_profile(InstanceId=instance_id, IamInstanceProfile={"Name": name})
        return out["IamInstanceProfileAssociation"]["AssociationId"]

    def drop_running_events(self, count: int = 1, ids: list[str] | None = None) -> None:
        """Lose the next `count` EC2 "running" events (of any instance, or of each of `ids`)."""
        body = {"count": count, **({"instanceIds": list(ids)} if ids else {})}
        requests.post(f"{self.endpoint}/_fleet/events/drop", json=body, timeout=10).raise_for_status()

    def dropped_running_events(self) -> list[str]:
        """The instance ids whose "running" event was lost so far, in order."""
        r = requests.get(f"{self.endpoint}/_fleet/events/drop", timeout=10)
        r.raise_for_status()
        return [d["instanceId"] for d in r.json()["dropped"]]


def moto_endpoint() -> str:
    return f"http://127.0.0.1:{os.environ.get('MOTO_PORT', '5055')}"
