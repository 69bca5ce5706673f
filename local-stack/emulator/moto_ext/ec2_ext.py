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


def _drops(ec2_backend) -> dict:
    """Running events to lose (POST /_fleet/events/drop), on the backend so that /moto-api/reset clears them:
    {"next": n for any instance, "instances": {id: n}, "dropped": [{"instanceId", "state", "time"}]}."""
    return ec2_backend.__dict__.setdefault("_fleet_drops", {"next": 0, "instances": {}, "dropped": []})


def _lose_events(ec2_backend, instance_ids: list[str], state: str) -> list[str]:
    """The ids whose event EC2 delivers: without those tagged DROP_RUNNING_EVENT and those the drop control
    still has a count for (the instance's own first, then the "next" count)."""
    drops = _drops(ec2_backend)
    keep = []
    for iid in instance_ids:
        try:
            tags = sim_tags.tags_of(ec2_backend.get_instance(iid))
        except Exception:  # noqa: BLE001
            tags = {}
        if sim_tags.drops_running_event(tags):
            lost = True
        elif drops["instances"].get(iid, 0) > 0:
            drops["instances"][iid] -= 1
            lost = True
        elif drops["next"] > 0:
            drops["next"] -= 1
            lost = True
        else:
            lost = False
        if lost:
            drops["dropped"].append({"instanceId": iid, "state": state, "time": time.time()})
        else:
            keep.append(iid)
    return keep


def drop_control(method: str, body: dict) -> dict:
    """/_fleet/events/drop: lose EC2 "running" events, as EventBridge's best-effort delivery sometimes does.
    POST {"count": n} loses the next n events of any instance; POST {"instanceIds": [...], "count": n} the next n
    of each instance named (count defaults to 1; both add to what is pending). GET reads the pending counts and
    the events lost so far; DELETE clears both. Events put with POST /_fleet/events/ec2-running are never lost."""
    from moto.ec2.models import ec2_backends

    backend = ec2_backends[str(body.get("account") or "123456789012")][str(body.get("region") or "us-east-1")]
    drops = _drops(backend)
    if method == "POST":
        count = body.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 1_000_000:
            raise ValueError("count must be a whole number from 1 to 1000000")
        ids = body.get("instanceIds")
        if ids is None:
            drops["next"] += count
        else:
            if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
                raise ValueError("instanceIds must be a non-empty list of instance ids")
            for iid in ids:
                drops["instances"][iid] = drops["instances"].get(iid, 0) + count
    elif method == "DELETE":
        drops.update(next=0, instances={}, dropped=[])
    return {"next": drops["next"], "instances": {k: v for k, v in drops["instances"].items() if v},
            "dropped": list(drops["dropped"])}


def emit_state_change(ec2_backend, instance_ids: list[str], state: str = "running", force: bool = False) -> None:
    """Put EC2's state-change events on the default bus through the backend (as EC2 does; the PutEvents API
    refuses "aws." sources from callers). force: even with FLEET_SIM_EC2_EVENTS=0 (an explicit request), and
    never lost. Otherwise an event can be lost: see _lose_events."""
    if not instance_ids or not (force or _events_enabled()):
        return
    if not force:
        instance_ids = _lose_events(ec2_backend, instance_ids, state)
        if not instance_ids:
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
    for inst in reservation.instances if name or arn else ():
        inst._fleet_profile_at_launch = True   # its association dates from the launch (agent_credentials)
    if name or arn:
        # The RunInstances response handler associates instances[0] itself after this returns.
        for inst in reservation.instances[1:]:
            self.associate_iam_instance_profile(
                instance_id=inst.id, iam_instance_profile_name=name if not arn else None,
                iam_instance_profile_arn=arn)
    emit_state_change(self, [i.id for i in reservation.instances if i.id not in quiet])
    return reservation


def bulk_launch(body: dict) -> dict:
    """Launch a large simulated fleet straight into moto's EC2 backend (POST /_fleet/ec2/run-instances): the
    same RunInstances model code, without rendering a RunInstances response for every instance (which costs
    ~1 ms an instance). Body: {"count": n, "tags": {k: v}, "instanceProfileName": name?, "region": r?,
    "instanceType": t?}. Up to 1,000 instances a reservation, as RunInstances allows."""
    from moto.ec2.models import ec2_backends

    count = int(body["count"])
    if not 1 <= count <= 200_000:
        raise ValueError("count must be between 1 and 200000")
    backend = ec2_backends[body.get("account", "123456789012")][body.get("region", "us-east-1")]
    ami = next(a.id for a in backend.amis.values() if "windows" not in (a.platform or "").lower())
    tags = {str(k): str(v) for k, v in (body.get("tags") or {}).items()}
    profile = body.get("instanceProfileName")
    ids: list[str] = []
    for start in range(0, count, 1000):
        n = min(1000, count - start)
        reservation = backend.run_instances(
            ami, n, None, [], instance_type=body.get("instanceType", "t3.micro"), is_instance_type_default=False,
            tags={"instance": tags} if tags else {}, iam_instance_profile_name=profile)
        if profile:  # the RunInstances response handler associates the first instance itself
            backend.associate_iam_instance_profile(instance_id=reservation.instances[0].id,
                                                   iam_instance_profile_name=profile)
        ids += [i.id for i in reservation.instances]
    return {"instanceIds": ids}


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


def _patch_image_lookup() -> None:
    """Every new instance looks its AMI up with describe_images(filters={"image-id": id}), which evaluates the
    filter against every AMI moto ships (~10 ms an instance). Answer that exact query from the AMI dict."""
    from moto.ec2.models.amis import AmiBackend

    orig = AmiBackend.describe_images

    def describe_images(self, ami_ids=None, filters=None, exec_users=None, owners=None):
        if not ami_ids and not exec_users and not owners and filters and list(filters) == ["image-id"]:
            wanted = filters["image-id"]
            wanted = [wanted] if isinstance(wanted, str) else list(wanted)
            return [self.amis[i] for i in wanted if i in self.amis]
        return orig(self, ami_ids=ami_ids, filters=filters, exec_users=exec_users, owners=owners)

    AmiBackend.describe_images = describe_images


#: DescribeInstances result lists kept for the pages that follow: token prefix -> (created, instances)
_PAGES: dict[str, tuple[float, list]] = {}
_PAGES_TTL = 300.0


def _patch_describe_instances() -> None:
    """DescribeInstances as EC2 pages it: MaxResults counts instances (moto counts reservations, so one page of
    1,000 reservations can hold 100,000 instances), and NextToken is a cursor into the result of the first page
    (moto filters the whole fleet again for every page, which makes paging through N instances O(N^2/page)).
    With an instance-id filter only the id is compared (a set lookup) before moto's full filter runs."""
    import copy
    import uuid

    from moto.ec2.exceptions import InvalidParameterCombination, InvalidParameterValueError
    from moto.ec2.responses.instances import InstanceResponse
    from moto.ec2.utils import passes_filter_dict
    from moto.core.responses import ActionResult

    def candidates(backend, filter_dict):
        wanted = filter_dict.get("instance-id")
        if wanted is None:
            return [(r, i) for r in list(backend.reservations.values()) for i in r.instances]
        wanted = set([wanted] if isinstance(wanted, str) else wanted)
        out = []
        for r in list(backend.reservations.values()):
            for i in r.instances:
                if i.id in wanted:
                    out.append((r, i))
        return out

    def describe_instances(self):
        self.error_on_dryrun()
        if "InstanceId.1" in self.data and "MaxResults" in self.data:
            raise InvalidParameterCombination("The parameter instancesSet cannot be used with the parameter maxResults")
        filter_dict = self._filters_from_querystring()
        instance_ids = self._get_param("InstanceIds", [])
        token = self._get_param("NextToken")
        max_results = self._get_param("MaxResults")
        if max_results is not None:
            max_results = int(max_results)
            if not 5 <= max_results <= 1000:
                raise InvalidParameterValueError(f"( {max_results} ) for MaxResults (5 to 1000)")
        now = time.time()
        for k in [k for k, (t, _) in _PAGES.items() if now - t > _PAGES_TTL]:
            _PAGES.pop(k, None)
        if instance_ids:
            rows = [(r, i) for r in self.ec2_backend.get_reservations_by_instance_ids(instance_ids, filters=filter_dict)
                    for i in r.instances]
            key, start = None, 0
        elif token:
            key, _, offset = token.partition(":")
            if key not in _PAGES or not offset.isdigit():
                raise InvalidParameterValueError(f"{token} (an unknown or expired NextToken)")
            start, rows = int(offset), _PAGES[key][1]
        else:
            rows = [(r, i) for r, i in candidates(self.ec2_backend, filter_dict)
                    if not filter_dict or passes_filter_dict(i, filter_dict)]
            key, start = uuid.uuid4().hex, 0
        end = len(rows) if max_results is None else start + max_results
        page = rows[start:end]
        next_token = None
        if key is not None and end < len(rows):
            _PAGES.setdefault(key, (now, rows))  # kept from the first page: later pages reuse its list
            next_token = f"{key}:{end}"
        grouped: dict = {}
        for r, i in page:
            grouped.setdefault(r.id, (r, []))[1].append(i)
        reservations = []
        for r, members in grouped.values():
            shallow = copy.copy(r)
            shallow.instances = members
            reservations.append(shallow)
        return ActionResult({"Reservations": reservations, "NextToken": next_token})

    InstanceResponse.describe_instances = describe_instances


def _patch_id_lookups() -> None:
    """moto finds an instance by id by scanning every instance, and a volume by id by scanning every volume; each
    RunInstances does both for every new instance, so launching N instances costs O(N^2). Index them by id
    (instances are never removed from moto's reservations, so a miss only means the index is behind)."""
    from moto.ec2.exceptions import InvalidInstanceIdError, InvalidVolumeIdError
    from moto.ec2.models.elastic_block_store import EBSBackend

    def get_instance(self, instance_id):
        index = self.__dict__.setdefault("_fleet_instance_index", {})
        inst = index.get(instance_id)
        if inst is None:  # most likely in the newest reservation (RunInstances looks up what it just made)
            reservations = list(self.reservations.values())
            for i in reversed(reservations[-1].instances if reservations else []):
                index[i.id] = i
                if i.id == instance_id:
                    inst = i
                    break
        if inst is None:
            index.update((i.id, i) for r in reservations for i in r.instances)
            inst = index.get(instance_id)
        if inst is None:
            raise InvalidInstanceIdError(instance_id)
        return inst

    InstanceBackend.get_instance = get_instance

    orig_volumes = EBSBackend.describe_volumes

    def describe_volumes(self, volume_ids=None, filters=None):
        if volume_ids and not filters:
            missing = [v for v in volume_ids if v not in self.volumes]
            if missing:
                raise InvalidVolumeIdError(missing)
            return [self.volumes[v] for v in dict.fromkeys(volume_ids)]
        return orig_volumes(self, volume_ids=volume_ids, filters=filters)

    EBSBackend.describe_volumes = describe_volumes


def install() -> None:
    _patch_id_lookups()
    _patch_image_lookup()
    _patch_describe_instances()
    _patch_tag_lookup()
    _patch_event_shape()
    InstanceBackend.run_instances = run_instances
    InstanceBackend.start_instances = start_instances
