"""EC2 fixes for the simulation.

- RunInstances with MinCount > 1: moto attaches the instance profile to the first instance only; attach it to all.
- Every instance remembers when it was first launched (the simulated agent's registration delay counts from it).
- EC2 "running" state-change events: real EC2 emits one to EventBridge whenever an instance enters running
  (launch and start). moto emits none, so RunInstances and StartInstances here put the real event shape on the
  default bus, where the template's rule forwards it to the install queue. Disable with FLEET_SIM_EC2_EVENTS=0.
"""

from __future__ import annotations

import datetime
import json
import os
import datetime as _dt
import time

from . import sim_tags

from moto.ec2.models.instances import InstanceBackend


def _events_enabled() -> bool:
    return os.environ.get("FLEET_SIM_EC2_EVENTS", "1") not in ("0", "false", "no")


def emit_state_change(ec2_backend, instance_ids: list[str], state: str = "running") -> None:
    if not instance_ids or not _events_enabled():
        return
    from moto.events.models import events_backends

    events = events_backends[ec2_backend.account_id][ec2_backend.region_name]
    now = time.time()
    entries = [{
        "Source": "aws.ec2",
        "DetailType": "EC2 Instance State-change Notification",
        "Detail": json.dumps({"instance-id": iid, "state": state}),
        "Resources": [f"arn:aws:ec2:{ec2_backend.region_name}:{ec2_backend.account_id}:instance/{iid}"],
        "Time": now,
    } for iid in instance_ids]
    for i in range(0, len(entries), 10):
        events.put_events(entries[i:i + 10])


_orig_run = InstanceBackend.run_instances
_orig_start = InstanceBackend.start_instances


def run_instances(self, image_id, count, user_data, security_group_names, **kwargs):
    reservation = _orig_run(self, image_id, count, user_data, security_group_names, **kwargs)
    now = time.time()
    quiet = []
    for inst in reservation.instances:
        inst._fleet_launched = now
        tags = {t["key"]: t["value"] for t in inst.get_tags()} if hasattr(inst, "get_tags") else {}
        if tags.get(sim_tags.EXISTING, "").lower() == "true":
            week_ago = now - 7 * 86400
            inst._fleet_launched = week_ago
            inst.launch_time = _dt.datetime.fromtimestamp(week_ago, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
            quiet.append(inst.id)
    name, arn = kwargs.get("iam_instance_profile_name"), kwargs.get("iam_instance_profile_arn")
    if name or arn:
        # The RunInstances response handler associates instances[0] itself after this returns.
        for inst in reservation.instances[1:]:
            self.associate_iam_instance_profile(
                instance_id=inst.id, iam_instance_profile_name=name if not arn else None,
                iam_instance_profile_arn=arn)
    emit_state_change(self, [i.id for i in reservation.instances if i.id not in quiet])
    return reservation


def start_instances(self, instance_ids):
    result = _orig_start(self, instance_ids)
    emit_state_change(self, [inst.id for inst, prev in result if prev.name != "running"])
    return result


def _epoch(value) -> float:
    if isinstance(value, datetime.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)).timestamp()
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return float(value)
        except ValueError:
            d = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
            return (d if d.tzinfo else d.replace(tzinfo=datetime.timezone.utc)).timestamp()
    return time.time()


def _patch_event_shape() -> None:
    """moto's default event template lacks "account" (EventBridge always sends it). moto turns the numeric
    "time" into ISO-8601 when it delivers to SQS, so Time is normalised to epoch seconds here."""
    from moto.events.models import EventsBackend
    from moto.events.utils import EventTemplateParser

    EventTemplateParser.DEFAULT_EVENT_INPUT_TEMPLATE = (
        '{"version": "0", "id": "<id>", "detail-type": "<detail-type>", "source": "<source>", '
        '"account": "<account>", "time": <time>, "region": "<region>", "resources": <resources>, '
        '"detail": <detail>}')
    orig_put = EventsBackend.put_events

    def put_events(self, events):
        for e in events:
            e["Time"] = _epoch(e.get("Time"))
        return orig_put(self, events)

    EventsBackend.put_events = put_events


def _patch_tag_lookup() -> None:
    """moto finds an instance's tags by matching a regex against every tag of the account (describe_tags with a
    resource-id filter), which makes DescribeInstances quadratic: 20 s for 1,400 instances. Look them up by id."""
    from moto.ec2.models.core import TaggedEC2Resource
    from moto.ec2.utils import EC2_PREFIX_TO_RESOURCE, get_prefix

    def get_tags(self):
        rid = getattr(self, "id", None)
        if not rid:
            return []
        tags = dict(self.ec2_backend.tags.get(rid, {}))
        rtype = EC2_PREFIX_TO_RESOURCE.get(get_prefix(rid), "")
        return [{"resource_id": rid, "key": k, "value": v, "resource_type": rtype} for k, v in tags.items()]

    TaggedEC2Resource.get_tags = get_tags


def install() -> None:
    _patch_tag_lookup()
    _patch_event_shape()
    InstanceBackend.run_instances = run_instances
    InstanceBackend.start_instances = start_instances
