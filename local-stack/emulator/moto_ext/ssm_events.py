"""SSM Run Command events on EventBridge, as SSM emits them, driven by the simulated agent (ssm_agent).

SSM puts two kinds of event on the default bus of the command's account and region (source ``aws.ssm``):

- ``EC2 Command Status-change Notification``: one per change of the command's Status. resources: the instance
  ARNs of the command; detail: command-id, document-name, expire-after, parameters, requested-date-time, status.
- ``EC2 Command Invocation Status-change Notification``: one per change of an invocation's Status. resources:
  [the instance ARN]; detail: command-id, document-name, instance-id, requested-date-time, status.

The statuses are the simulation's own (ssm_agent.inv_status and command_view, what the API answers), never
planned separately: a scheduler thread keeps a heap of checkpoints (each invocation's start and end, the moment a
command becomes visible, "now" after a CancelCommand); at each one it compares the command's current statuses with
the ones it last put and puts the differences. Pending is never put. The command's InProgress is put once one of
its invocations has left Pending; a terminal command event is put after the invocation events that led to it. The
status word is the API's, except that the API's ``Cancelled`` is put as ``Canceled``, the word the Systems Manager
user guide lists for both event types ("Reference: Amazon EventBridge event patterns and types for Systems
Manager": Success, InProgress, TimedOut, Canceled, Failed).

Events go straight into moto's EventsBackend.put_events, as SSM's do (PutEvents refuses ``aws.*`` sources from
callers). State (what was put per command, the drop / duplicate rules, the counts) lives on the SSM backend
(attribute ``_fleet_ssm_events``), so ``POST /moto-api/reset`` clears it. Disable with FLEET_SIM_SSM_EVENTS=0 (the
``emit`` control still works).

Control, POST/GET/DELETE /_fleet/events/ssm (see control()).
"""

from __future__ import annotations

import collections
import datetime
import heapq
import itertools
import json
import logging
import os
import threading
import time

log = logging.getLogger(__name__)

SOURCE = "aws.ssm"
COMMAND_EVENT = "EC2 Command Status-change Notification"
INVOCATION_EVENT = "EC2 Command Invocation Status-change Notification"
DETAIL_TYPES = (COMMAND_EVENT, INVOCATION_EVENT)
#: The API's status -> the word the event carries (the user guide's list spells it Canceled).
EVENT_STATUS = {"Cancelled": "Canceled"}
#: What the emit control accepts as "status": the event words, the API's words, and SSM's other API statuses.
EMIT_STATUSES = ("Pending", "InProgress", "Delayed", "Success", "Failed", "TimedOut", "Canceled", "Cancelled",
                 "Cancelling")
DEFAULT_DOCUMENT = "AWS-RunShellScript"
RECENT = 200
#: a checkpoint is looked at this long after the moment it marks (float rounding: requested + end - requested)
EPSILON = 0.001


def enabled() -> bool:
    return os.environ.get("FLEET_SIM_SSM_EVENTS", "1") not in ("0", "false", "no")


def event_status(api_status: str) -> str:
    return EVENT_STATUS.get(api_status, api_status)


def iso_ms(epoch: float) -> str:
    """2016-07-10T21:51:30.049Z, as SSM writes requested-date-time and expire-after."""
    d = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


# ---------------------------------------------------------------------------------------------- state
class EventState:
    """Per SSM backend: what was put for each command, the control's rules and counts."""

    def __init__(self):
        self.lock = threading.RLock()
        #: command id -> {"command": last status put or None, "invocations": {instance id: last status put}}
        self.last: dict[str, dict] = {}
        self.drop: set[str] = set()
        self.duplicate: set[str] = set()
        self.emitted: collections.Counter = collections.Counter()
        self.dropped: collections.Counter = collections.Counter()
        self.duplicated: collections.Counter = collections.Counter()
        self.injected: collections.Counter = collections.Counter()
        self.recent: collections.deque = collections.deque(maxlen=RECENT)


def state(ssm_backend) -> EventState:
    st = ssm_backend.__dict__.get("_fleet_ssm_events")
    if st is None:
        st = ssm_backend.__dict__.setdefault("_fleet_ssm_events", EventState())
    return st


# ------------------------------------------------------------------------------------------ scheduler
_cond = threading.Condition()
_due: list = []                  # heap of (epoch, seq, ssm backend, its EventState, command id)
_seq = itertools.count()
_thread: threading.Thread | None = None


def _push(backend, es: EventState, command_id: str, at: float) -> None:
    global _thread
    with _cond:
        heapq.heappush(_due, (at, next(_seq), backend, es, command_id))
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_run, name="fleet-ssm-events", daemon=True)
            _thread.start()
        _cond.notify()


def schedule(backend, cmd) -> None:
    """SendCommand planned `cmd`: check it when it becomes visible and at each invocation's start and end."""
    if not enabled():
        return
    from . import sim_tags as T

    es = state(backend)
    with es.lock:
        es.last.setdefault(cmd.command_id, {"command": None, "invocations": {}})
    times = {cmd.requested + T.INVISIBLE_SECONDS}
    for inv in cmd.invocations.values():
        times.add(cmd.requested + inv.start)
        times.add(cmd.requested + inv.end)
    for at in sorted(times):
        _push(backend, es, cmd.command_id, at + EPSILON)


def poke(backend, cmd) -> None:
    """Something changed `cmd` now (CancelCommand): check it at once."""
    if not enabled():
        return
    es = state(backend)
    if cmd.command_id in es.last:
        _push(backend, es, cmd.command_id, time.time())


def _run() -> None:
    while True:
        try:
            with _cond:
                while not _due or _due[0][0] > time.time():
                    _cond.wait(None if not _due else max(0.0, _due[0][0] - time.time()))
                now = time.time()
                batch = []
                while _due and _due[0][0] <= now:
                    batch.append(heapq.heappop(_due))
            seen = set()
            for _, _, backend, es, command_id in batch:
                if (id(es), command_id) in seen:
                    continue
                seen.add((id(es), command_id))
                try:
                    check(backend, es, command_id)
                except Exception:  # noqa: BLE001 - one command's trouble must not stop the others' events
                    log.exception("SSM events for command %s failed", command_id)
        except Exception:  # noqa: BLE001 - the thread must survive anything
            log.exception("SSM event scheduler")
            time.sleep(0.05)


def check(backend, es: EventState, command_id: str) -> None:
    """Put the events of what changed in the command since the last events put for it."""
    from .ssm_agent import command_view, inv_status, sim_state, visible

    if backend.__dict__.get("_fleet_ssm_events") is not es:
        return                          # the backend was reset since (moto re-initialises it in place)
    sim = sim_state(backend)
    cmd = sim.by_id.get(command_id)
    if cmd is None:
        return
    now = time.time()
    with sim.lock:
        statuses = {iid: inv_status(cmd, inv, now)[0] for iid, inv in cmd.invocations.items()}
        command_status = command_view(sim, cmd, now, fresh=not visible(cmd, now))["Status"]
    with es.lock:
        last = es.last.setdefault(command_id, {"command": None, "invocations": {}})
        first, invocations, after = [], [], []
        for iid, status in statuses.items():
            if status != "Pending" and last["invocations"].get(iid) != status:
                last["invocations"][iid] = status
                invocations.append(invocation_event(backend, cmd.command_id, cmd.document_name, iid,
                                                    cmd.requested, event_status(status), now))
        if command_status not in ("Pending", last["command"]):
            if command_status == "InProgress":
                if any(s != "Pending" for s in statuses.values()):   # an invocation has left Pending
                    last["command"] = command_status
                    first.append(command_event(backend, cmd, event_status(command_status), now))
            else:
                last["command"] = command_status
                after.append(command_event(backend, cmd, event_status(command_status), now))
        entries = first + invocations + after
        if entries:
            _put(backend, es, entries, cmd.instance_ids)


# --------------------------------------------------------------------------------------------- events
def _instance_arn(backend, instance_id: str) -> str:
    return f"arn:aws:ec2:{backend.region_name}:{backend.account_id}:instance/{instance_id}"


def _parameters(parameters: dict) -> dict:
    """name -> list of strings, as SSM's events carry them."""
    out = {}
    for key, values in (parameters or {}).items():
        values = values if isinstance(values, list) else [values]
        out[key] = [v if isinstance(v, str) else json.dumps(v) for v in values]
    return out


def command_event(backend, cmd, status: str, now: float) -> dict:
    detail = {
        "command-id": cmd.command_id,
        "document-name": cmd.document_name,
        "expire-after": iso_ms(cmd.requested + cmd.timeout_seconds),
        "parameters": _parameters(cmd.parameters),
        "requested-date-time": iso_ms(cmd.requested),
        "status": status,
    }
    return {"Source": SOURCE, "DetailType": COMMAND_EVENT, "Detail": json.dumps(detail),
            "Resources": [_instance_arn(backend, i) for i in cmd.instance_ids], "Time": now}


def invocation_event(backend, command_id: str, document: str, instance_id: str, requested: float, status: str,
                     now: float) -> dict:
    detail = {
        "command-id": command_id,
        "document-name": document,
        "instance-id": instance_id,
        "requested-date-time": iso_ms(requested),
        "status": status,
    }
    return {"Source": SOURCE, "DetailType": INVOCATION_EVENT, "Detail": json.dumps(detail),
            "Resources": [_instance_arn(backend, instance_id)], "Time": now}


def _may_match(events_backend) -> bool:
    """Whether any rule of the default bus could match an aws.ssm event (else putting changes nothing)."""
    bus = events_backend.event_buses.get("default")
    for rule in list((bus.rules if bus else {}).values()):
        pattern = getattr(rule.event_pattern, "_pattern", None) or {}
        sources = pattern.get("source") if isinstance(pattern, dict) else None
        if not isinstance(sources, list) or any(not isinstance(s, str) or s == SOURCE for s in sources):
            return True
    return False


def _recent(es: EventState, entry: dict) -> None:
    detail = json.loads(entry["Detail"])
    row = {"detail-type": entry["DetailType"], "command-id": detail.get("command-id")}
    if "instance-id" in detail:
        row["instance-id"] = detail["instance-id"]
    row.update({"status": detail.get("status"), "time": entry["Time"]})
    es.recent.append(row)


def _put(backend, es: EventState, entries: list[dict], instance_ids, rules: bool = True) -> None:
    """Put `entries` (in order) on the default bus; with `rules`, the control's drop and duplicate rules apply to
    the command (a command that carries a dropped instance loses all its events). Call with es.lock held."""
    from moto.events.models import events_backends

    ids = set(instance_ids or ())
    lost = rules and bool(ids & es.drop)
    twice = rules and not lost and bool(ids & es.duplicate)
    out = []
    for entry in entries:
        kind = entry["DetailType"]
        if lost:
            es.dropped[kind] += 1
            continue
        copies = 2 if twice else 1
        es.emitted[kind] += copies
        if twice:
            es.duplicated[kind] += 1
        for _ in range(copies):
            _recent(es, entry)
            out.append(dict(entry))
    if not out:
        return
    events = events_backends[backend.account_id][backend.region_name]
    if not _may_match(events):
        return
    for i in range(0, len(out), 10):
        events.put_events(out[i:i + 10])


# -------------------------------------------------------------------------------------------- control
def _backend(body: dict):
    from moto.ssm.models import ssm_backends

    return ssm_backends[str(body.get("account") or "123456789012")][str(body.get("region") or "us-east-1")]


def _instance_list(value, key: str) -> list[str]:
    ids = (value or {}).get("instanceIds") if isinstance(value, dict) else None
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise ValueError(f'{key} must be {{"instanceIds": [...]}} with a non-empty list of instance ids')
    return ids


def snapshot(es: EventState) -> dict:
    with es.lock:
        return {
            "enabled": enabled(),
            "emitted": dict(es.emitted), "dropped": dict(es.dropped), "duplicated": dict(es.duplicated),
            "injected": dict(es.injected),
            "drop": sorted(es.drop), "duplicate": sorted(es.duplicate),
            "recent": list(es.recent),
        }


def emit(backend, es: EventState, spec) -> None:
    """The control's "emit": one event now, for any command id; never lost nor duplicated."""
    if not isinstance(spec, dict):
        raise ValueError('emit must be an object: {"commandId": "...", "status": "...", "instanceId"?, '
                         '"documentName"?}')
    unknown = set(spec) - {"commandId", "status", "instanceId", "documentName"}
    if unknown:
        raise ValueError(f"emit: unknown key(s) {', '.join(sorted(unknown))}")
    command_id, status = spec.get("commandId"), spec.get("status")
    if not isinstance(command_id, str) or not command_id:
        raise ValueError("emit.commandId must be a non-empty string")
    if status not in EMIT_STATUSES:
        raise ValueError(f"emit.status must be one of {', '.join(EMIT_STATUSES)}, not {status!r}")
    instance_id, document = spec.get("instanceId"), spec.get("documentName")
    if instance_id is not None and (not isinstance(instance_id, str) or not instance_id):
        raise ValueError("emit.instanceId must be a non-empty string")
    if document is not None and (not isinstance(document, str) or not document):
        raise ValueError("emit.documentName must be a non-empty string")
    from .ssm_agent import sim_state

    cmd = sim_state(backend).by_id.get(command_id)
    now = time.time()
    if instance_id is not None:
        entry = invocation_event(backend, command_id, cmd.document_name if cmd else document or DEFAULT_DOCUMENT,
                                 instance_id, cmd.requested if cmd else now, status, now)
    elif cmd is not None:
        entry = command_event(backend, cmd, status, now)
    else:
        detail = {"command-id": command_id, "document-name": document or DEFAULT_DOCUMENT,
                  "expire-after": iso_ms(now + 3600), "parameters": {}, "requested-date-time": iso_ms(now),
                  "status": status}
        entry = {"Source": SOURCE, "DetailType": COMMAND_EVENT, "Detail": json.dumps(detail), "Resources": [],
                 "Time": now}
    with es.lock:
        es.injected[entry["DetailType"]] += 1
        _put(backend, es, [entry], (), rules=False)


def control(method: str, body: dict) -> dict:
    """/_fleet/events/ssm.

    POST {"drop": {"instanceIds": [...]}}: from now on every Run Command event (both kinds) of a command that
    carries any of these instances is lost. POST {"duplicate": {"instanceIds": [...]}}: every such event is put
    twice (drop wins over duplicate). POST {"emit": {"commandId", "status", "instanceId"?, "documentName"?}}: one
    event now (an invocation event when instanceId is given, else a command event), for any command id; never lost
    or duplicated. A POST may carry several of these. GET: the counts, the rules and the last 200 events put.
    DELETE: clears rules, counts and recent events. "account" and "region" pick the backend (default
    123456789012 / us-east-1)."""
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    backend = _backend(body)
    es = state(backend)
    if method == "POST":
        unknown = set(body) - {"drop", "duplicate", "emit", "account", "region"}
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))}: use drop, duplicate or emit")
        if not {"drop", "duplicate", "emit"} & set(body):
            raise ValueError('POST needs "drop", "duplicate" or "emit"')
        drop = _instance_list(body["drop"], "drop") if "drop" in body else []
        duplicate = _instance_list(body["duplicate"], "duplicate") if "duplicate" in body else []
        if "emit" in body:
            emit(backend, es, body["emit"])       # validated before any rule changes
        with es.lock:
            es.drop.update(drop)
            es.duplicate.update(duplicate)
    elif method == "DELETE":
        with es.lock:
            es.drop.clear()
            es.duplicate.clear()
            for c in (es.emitted, es.dropped, es.duplicated, es.injected):
                c.clear()
            es.recent.clear()
    elif method != "GET":
        raise ValueError(f"method {method} is not supported: GET, POST or DELETE")
    return snapshot(es)
