"""Run Command output to CloudWatch Logs, as the SSM Agent uploads it when SendCommand's CloudWatchOutputConfig has
CloudWatchOutputEnabled true (any document).

Where (amazon-ssm-agent: generateCloudWatchConfigFromPayload, and the Run Command user guide):
- log group: CloudWatchLogGroupName, or ``/aws/ssm/<DocumentName>`` when it is empty or absent; created if missing;
- log streams ``<CommandId>/<InstanceId>/<PluginId>/stdout`` and ``.../stderr``, PluginId the plugin's name (the
  step name of a schema 2.x document, the plugin of a schema 1.2 one) with ``:`` replaced by ``-``
  (``aws:runShellScript`` -> ``aws-runShellScript``); created if missing, and only for a stream with something in it;
- the whole stream, not the 24,000 / 8,000 characters of GetCommandInvocation: lines grouped into events of at most
  200,000 bytes (the agent's MessageLengthThresholdInBytes), the final newline dropped.

When: the simulation is lazy. An invocation's output is written once it has ended (its planned end passed, not
cancelled), just before any CloudWatch Logs request is handled, with the time it ended as the events' timestamp.
Nothing is written for an invocation that never ran (Undeliverable, cancelled before its end, no step for its
platform, a plugin the agent has no handler for). Kinder than AWS: the instance role's logs permissions are not
checked (AWS needs logs:CreateLogStream, logs:PutLogEvents, ... on the group, and logs:CreateLogGroup for a new one).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time

DEFAULT_GROUP_PREFIX = "/aws/ssm/"
EVENT_BYTES = 200_000

_lock = threading.Lock()
_due: list = []                 # heap of (end epoch, seq, ssm backend, its SimState, command, invocation)
_seq = itertools.count()


def enabled(config: dict | None) -> bool:
    value = (config or {}).get("CloudWatchOutputEnabled")
    return value is True or str(value).lower() == "true"


def view(config: dict | None) -> dict:
    """CloudWatchOutputConfig as SSM reports it in command and invocation views: both fields, always."""
    return {"CloudWatchLogGroupName": (config or {}).get("CloudWatchLogGroupName") or "",
            "CloudWatchOutputEnabled": enabled(config)}


def group_name(config: dict | None, document_name: str) -> str:
    return (config or {}).get("CloudWatchLogGroupName") or DEFAULT_GROUP_PREFIX + document_name


def stream_prefix(command_id: str, instance_id: str, plugin: str) -> str:
    return f"{command_id}/{instance_id}/{plugin.replace(':', '-')}"


def events(text: str, timestamp_ms: int) -> list[dict]:
    """`text` as the agent uploads a finished file: whole lines per event, at most EVENT_BYTES each."""
    out, message, size = [], [], 0
    for line in text.splitlines(keepends=True):
        n = len(line.encode())
        if message and size + n > EVENT_BYTES:
            out.append("".join(message))
            message, size = [], 0
        message.append(line)
        size += n
    if message:
        out.append("".join(message))
    if out and out[-1].endswith("\n"):
        out[-1] = out[-1][:-1]
    return [{"timestamp": timestamp_ms, "message": m} for m in out if m]


def schedule(backend, cmd) -> None:
    """Remember the invocations of `cmd` whose output goes to CloudWatch (called once SendCommand planned them)."""
    from .ssm_agent import sim_state

    if not enabled(cmd.cloudwatch):
        return
    st = sim_state(backend)
    with _lock:
        for inv in cmd.invocations.values():
            if inv.cw and inv.plugins and inv.details != "Undeliverable":
                heapq.heappush(_due, (cmd.requested + inv.end, next(_seq), backend, st, cmd, inv))


def _write(backend, cmd, inv, ended: float) -> None:
    from moto.logs.models import logs_backends

    from .ssm_agent import _streams

    prefix = stream_prefix(cmd.command_id, inv.instance_id, inv.plugins[0])
    streams = [(f"{prefix}/{suffix}", events(text, int(ended * 1000)))
               for suffix, text in zip(("stdout", "stderr"), _streams(inv))]
    streams = [(name, evs) for name, evs in streams if evs]
    if not streams:
        return                  # the agent uploads nothing, so it creates nothing
    logs = logs_backends[backend.account_id][backend.region_name]
    group = group_name(cmd.cloudwatch, cmd.document_name)
    if group not in logs.groups:
        logs.create_log_group(group, {})
    for stream, evs in streams:
        if stream not in logs.groups[group].streams:
            logs.create_log_stream(group, stream)
        logs.put_log_events(group, stream, evs)


def flush(now: float | None = None) -> None:
    """Write the output of every invocation that has ended by `now`."""
    from .ssm_agent import inv_status

    now = time.time() if now is None else now
    with _lock:
        while _due and _due[0][0] <= now:
            ended, _, backend, st, cmd, inv = heapq.heappop(_due)
            if backend.__dict__.get("_fleet_sim") is not st:
                continue                  # the backend was reset since (moto re-initialises it in place)
            with st.lock:
                status = inv_status(cmd, inv, now)[0]
            if status != inv.status:
                continue                  # cancelled before it ended
            _write(backend, cmd, inv, ended)


def install() -> None:
    """Flush before every CloudWatch Logs request, so a reader sees the output of every run that has ended."""
    from moto.core.responses import BaseResponse

    orig = BaseResponse.call_action

    def call_action(self):
        if getattr(self, "service_name", None) == "logs":
            try:
                flush()
            except Exception:  # noqa: BLE001 - a failed write must not fail the reader's request
                import logging

                logging.getLogger(__name__).exception("writing Run Command output to CloudWatch Logs failed")
        return orig(self)

    BaseResponse.call_action = call_action
