"""EventBridge rule targets that are Lambda functions (moto 5.2.5 raises NotImplementedError for them).

EventBridge invokes a Lambda target asynchronously (Lambda's Event invocation type): the caller that put the event
never waits for the function. Here a matching rule hands the event to a small pool of daemon worker threads, which
POST it to the function's cargo lambda watch, ``sfn.lambda_endpoint(name)/2015-03-31/functions/<name>/invocations``
(the endpoints registered with ``POST /_fleet/lambda``), never from the thread that put the event.

The payload is the event as moto builds it for its other targets (its EventTemplateParser: the default shape, or
the target's InputTransformer), with "time" as EventBridge delivers it, ISO-8601 ``YYYY-MM-DDTHH:MM:SSZ``.

A function error (HTTP status >= 300 or an ``X-Amz-Function-Error`` header) or an unreachable watch is retried up
to MAX_RETRIES more times (Lambda async's default MaximumRetryAttempts, 2), after RETRY_SECONDS (local: 1 s, then
2 s; AWS waits about 1 minute, then 2), and then logged and dropped (no on-failure destination or DLQ here).
Each attempt is counted as "lambda.Invoke:<name>" and "lambda.DurationMs:<name>" in the API counter, as
poller.py counts its invocations (DurationMs only when the watch answered).

Other target types keep moto's behaviour.
"""

from __future__ import annotations

import copy
import datetime
import json
import logging
import os
import queue
import threading
import time

import requests

from . import counter, sfn

log = logging.getLogger(__name__)

#: Lambda async's default MaximumRetryAttempts
MAX_RETRIES = 2
#: local waits before the retries (AWS: about 60 and 120 s); FLEET_SIM_EB_LAMBDA_RETRY_SECONDS="1,2" to change
RETRY_SECONDS = (1.0, 2.0)
WORKERS = 4
TIMEOUT_SECONDS = sfn.LAMBDA_TIMEOUT_SECONDS

_queue: queue.Queue = queue.Queue()
_workers: list[threading.Thread] = []
_workers_lock = threading.Lock()
#: what happened to the deliveries, for logs and tests: {"delivered", "retried", "dropped"}
STATS = {"delivered": 0, "retried": 0, "dropped": 0}
_stats_lock = threading.Lock()


def retry_seconds() -> tuple[float, ...]:
    raw = os.environ.get("FLEET_SIM_EB_LAMBDA_RETRY_SECONDS")
    if not raw:
        return RETRY_SECONDS
    try:
        values = tuple(max(0.0, float(v)) for v in raw.split(",") if v.strip())
    except ValueError:
        return RETRY_SECONDS
    return values or RETRY_SECONDS


def is_lambda_arn(arn) -> bool:
    parts = str(arn or "").split(":")
    return len(parts) >= 7 and parts[0] == "arn" and parts[2] == "lambda" and parts[5] == "function"


def _iso_time(event: dict) -> dict:
    value = event.get("time")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        event["time"] = datetime.datetime.fromtimestamp(float(value), datetime.timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%SZ")
    return event


def _count(key: str, n: int = 1) -> None:
    with _stats_lock:
        STATS[key] += n


def deliver(function_arn: str, event: dict) -> None:
    """Queue one asynchronous invocation of the function with `event`."""
    _ensure_workers()
    _queue.put((function_arn, json.dumps(event).encode(), 0))


def _ensure_workers() -> None:
    with _workers_lock:
        alive = [t for t in _workers if t.is_alive()]
        _workers[:] = alive
        while len(_workers) < WORKERS:
            t = threading.Thread(target=_work, name=f"fleet-eb-lambda-{len(_workers)}", daemon=True)
            t.start()
            _workers.append(t)


def _work() -> None:
    while True:
        job = _queue.get()
        try:
            _attempt(*job)
        except Exception:  # noqa: BLE001 - a worker must survive anything
            log.exception("EventBridge -> Lambda delivery failed")


def invoke_once(name: str, payload: bytes) -> str | None:
    """One invocation; None when the function succeeded, else why not."""
    url = f"{sfn.lambda_endpoint(name)}/2015-03-31/functions/{name}/invocations"
    counter.count(f"lambda.Invoke:{name}")
    started = time.monotonic()
    try:
        r = requests.post(url, data=payload, headers={"Content-Type": "application/json"}, timeout=TIMEOUT_SECONDS)
    except requests.RequestException as ex:
        return f"cannot reach {url}: {ex}"
    counter.count(f"lambda.DurationMs:{name}", round((time.monotonic() - started) * 1000))
    if r.status_code >= 300 or r.headers.get("X-Amz-Function-Error"):
        return f"function error (HTTP {r.status_code}, {r.headers.get('X-Amz-Function-Error') or 'Unhandled'}): " \
               f"{r.text[:500]}"
    return None


def _attempt(function_arn: str, payload: bytes, attempt: int) -> None:
    name = sfn.function_name(function_arn)
    why = invoke_once(name, payload)
    if why is None:
        _count("delivered")
        return
    delays = retry_seconds()
    if attempt < MAX_RETRIES:
        delay = delays[min(attempt, len(delays) - 1)]
        log.warning("EventBridge -> %s, attempt %d of %d: %s; retrying in %.1f s", name, attempt + 1,
                    MAX_RETRIES + 1, why, delay)
        _count("retried")
        timer = threading.Timer(delay, _queue.put, args=((function_arn, payload, attempt + 1),))
        timer.daemon = True
        timer.start()
        return
    _count("dropped")
    log.warning("EventBridge -> %s: dropped after %d attempts: %s; event %s", name, attempt + 1, why,
                payload[:500].decode(errors="replace"))


def install() -> None:
    from moto.events.models import Rule
    from moto.events.utils import EventTemplateParser

    orig = Rule.send_to_targets
    if getattr(orig, "_fleet_lambda", False):
        return

    def send_to_targets(self, original_event, transform_input: bool = True) -> None:
        lambdas = [t for t in self.targets if is_lambda_arn(t.get("Arn"))]
        if not lambdas:
            return orig(self, original_event, transform_input)
        if not self.event_pattern.matches_event(original_event):
            return None
        others = [t for t in self.targets if not is_lambda_arn(t.get("Arn"))]
        if others:
            # moto delivers the other targets as before; a shallow copy so that a concurrent caller never sees
            # the rule's own target list changed
            rest = copy.copy(self)
            rest.targets = others
            orig(rest, original_event, transform_input)
        for target in lambdas:
            if transform_input:
                transformer = target.get("InputTransformer", {})
                event = EventTemplateParser.parse(input_template=transformer.get("InputTemplate"),
                                                  input_paths_map=transformer.get("InputPathsMap", {}),
                                                  event=original_event)
            else:
                event = copy.deepcopy(original_event)
            deliver(target["Arn"], _iso_time(event) if isinstance(event, dict) else event)
        return None

    send_to_targets._fleet_lambda = True
    Rule.send_to_targets = send_to_targets
