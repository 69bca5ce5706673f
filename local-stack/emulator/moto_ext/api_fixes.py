"""Request handling moto 5.2.5 gets wrong, made to answer as AWS does.

- Step Functions GetExecutionHistory: moto ignores ``maxResults``, ``reverseOrder``, ``nextToken`` and
  ``includeExecutionData`` and returns the whole history. Here: pages of ``maxResults`` events (0 or absent: 100;
  more than 1000 or negative: ValidationException), newest first with ``reverseOrder``, an opaque ``nextToken``
  bound to the execution and the order (anything else: ``InvalidToken``), and ``includeExecutionData: false``
  drops the events' input and output.
- EventBridge PutEvents: AWS refuses an entry whose Source begins with "aws." (only AWS services may send those)
  with a per-entry error, ``NotAuthorizedForSourceException`` / "Not authorized for the source.", counted in
  FailedEntryCount; the other entries are delivered. The simulation's own EC2 events go straight to the backend
  (ec2_ext.emit_state_change), and ``POST /_fleet/events/ec2-running {"instanceIds": [...]}`` (counter.py) posts
  them on request.
- EC2 ModifyInstanceMetadataOptions: moto replaces every option, so a call that sets only HttpTokens resets
  HttpEndpoint and the others to null. AWS changes only the options given.
- Step Functions StopExecution: AWS ends the execution at once as ABORTED. The engine only flags its frames; a
  state waiting on a ``.sync`` child then falls out of its wait with no result, fails with States.Runtime, and
  the execution ends FAILED a moment later. Here a stopped execution is ABORTED from the call on, whatever its
  worker does afterwards, with the request's error and cause (moto's handler dropped them).
- SSM documents (GetDocument, DescribeDocument, ...): AWS takes DocumentVersion ``$DEFAULT`` (the default
  version) as well as ``$LATEST`` and a number; moto looks ``$DEFAULT`` up as a version number and answers
  InvalidDocument.
"""

from __future__ import annotations

import base64
import json


# ---------------------------------------------------------------------------------- GetExecutionHistory
def _encode(arn: str, reverse: bool, offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"a": arn, "r": reverse, "o": offset}).encode()).decode()


def _decode(token: str, arn: str, reverse: bool) -> int:
    from moto.stepfunctions.exceptions import InvalidToken

    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        offset = int(data["o"])
    except Exception:  # noqa: BLE001
        raise InvalidToken(f"Invalid token: {token}")
    if data.get("a") != arn or bool(data.get("r")) != reverse or offset < 0:
        raise InvalidToken("The token was issued for a different request; keep all other arguments unchanged")
    return offset


def _strip_data(event: dict) -> dict:
    out = dict(event)
    for key, details in event.items():
        if key.endswith("EventDetails") and isinstance(details, dict):
            out[key] = {k: v for k, v in details.items() if k not in ("input", "output")}
    return out


def _patch_execution_history() -> None:
    from moto.core.responses import ActionResult
    from moto.stepfunctions import responses as sfn_responses
    from moto.stepfunctions.exceptions import ValidationException

    def get_execution_history(self):
        arn = self._get_param("executionArn")
        raw_max = self._get_param("maxResults")
        size = 100 if raw_max in (None, "") else int(raw_max)
        if size < 0:
            raise ValidationException(f"1 validation error detected: Value '{size}' at 'maxResults' failed to satisfy "
                                      "constraint: Member must have value greater than or equal to 0")
        if size > 1000:
            raise ValidationException(f"1 validation error detected: Value '{size}' at 'maxResults' failed to satisfy "
                                      "constraint: Member must have value less than or equal to 1000")
        size = size or 100
        reverse = bool(self._get_param("reverseOrder", False))
        include = self._get_param("includeExecutionData")
        include = True if include is None else bool(include)
        token = self._get_param("nextToken")
        history = self.stepfunction_backend.get_execution_history(arn)
        events = list(history.get("events") or [])
        if reverse:
            events.reverse()
        start = _decode(token, arn, reverse) if token else 0
        page = events[start:start + size]
        if not include:
            page = [_strip_data(e) for e in page]
        out: dict = {"events": page}
        if start + size < len(events):
            out["nextToken"] = _encode(arn, reverse, start + size)
        return ActionResult(out)

    sfn_responses.StepFunctionResponse.get_execution_history = get_execution_history


# ---------------------------------------------------------------------------------------------- PutEvents
NOT_AUTHORIZED = {"ErrorCode": "NotAuthorizedForSourceException", "ErrorMessage": "Not authorized for the source."}


def _patch_put_events() -> None:
    from moto.events.responses import EventsHandler

    def put_events(self) -> str:
        events = self._get_param("Entries") or []
        if len(events) > 10:
            entries = self.events_backend.put_events(events)   # moto's own length validation
        else:
            allowed = [e for e in events if not str(e.get("Source") or "").startswith("aws.")]
            delivered = iter(self.events_backend.put_events(allowed) if allowed else [])
            entries = [dict(NOT_AUTHORIZED) if str(e.get("Source") or "").startswith("aws.") else next(delivered)
                       for e in events]
        return json.dumps({"FailedEntryCount": sum(1 for e in entries if "ErrorCode" in e), "Entries": entries})

    EventsHandler.put_events = put_events


def post_ec2_running(body: dict) -> dict:
    """POST /_fleet/events/ec2-running {"instanceIds": [...], "state"?: "running", "region"?, "account"?}: put EC2
    "EC2 Instance State-change Notification" events on the default bus as EC2 itself does (not through
    PutEvents, which refuses aws.* sources)."""
    from moto.ec2.models import ec2_backends

    from . import ec2_ext

    ids = body.get("instanceIds")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise ValueError("instanceIds must be a non-empty list of instance ids")
    backend = ec2_backends[body.get("account", "123456789012")][body.get("region", "us-east-1")]
    ec2_ext.emit_state_change(backend, ids, str(body.get("state") or "running"), force=True)
    return {"instanceIds": ids, "state": str(body.get("state") or "running")}


# ------------------------------------------------------------------------------ ModifyInstanceMetadataOptions
def _patch_metadata_options() -> None:
    from moto.ec2.models.instances import InstanceBackend, MetadataOptions

    def modify_instance_metadata_options(self, instance_id, http_tokens=None, hop_limit=None, http_endpoint=None,
                                         dry_run=False, http_protocol=None, metadata_tags=None):
        instance = self.get_instance(instance_id)
        old = getattr(instance, "metadata_options", None) or MetadataOptions({})
        merged = MetadataOptions({
            "State": "applied",
            "HttpTokens": http_tokens if http_tokens is not None else old.http_tokens,
            "HttpPutResponseHopLimit": hop_limit if hop_limit is not None else old.http_put_response_hop_limit,
            "HttpEndpoint": http_endpoint if http_endpoint is not None else old.http_endpoint,
            "HttpProtocolIpv6": http_protocol if http_protocol is not None else old.http_protocol_ipv6,
            "InstanceMetadataTags": metadata_tags if metadata_tags is not None else old.instance_metadata_tags,
        })
        if merged.http_tokens == "required" and getattr(old, "http_tokens", None) != "required":
            import time

            instance._fleet_imdsv2_at = time.time()   # DHMC credentials from now on (ssm_agent.dhmc_since)
        instance.metadata_options = merged
        return merged

    InstanceBackend.modify_instance_metadata_options = modify_instance_metadata_options


def _patch_default_document_version() -> None:
    from moto.ssm.models import Documents

    original = Documents.find
    if getattr(original, "_fleet_default", False):
        return

    def find(self, document_version=None, version_name=None, strict=True):
        if document_version == "$DEFAULT":
            document_version = None
        return original(self, document_version, version_name, strict)

    find._fleet_default = True
    Documents.find = find


def _patch_stop_execution() -> None:
    from moto.stepfunctions.parser.api import ExecutionStatus
    from moto.stepfunctions.parser.backend import execution as ex

    if getattr(ex.Execution.stop, "_fleet_abort", False):
        return
    original_stop = ex.Execution.stop
    original_reflect = ex.BaseExecutionWorkerCommunication._reflect_execution_status

    def stop(self, stop_date, error, cause):
        if self.exec_status == ExecutionStatus.RUNNING:
            self._fleet_aborted = stop_date
            self.exec_status = ExecutionStatus.ABORTED
            self.stop_date = stop_date
            self.error, self.cause = error or None, cause or None
        return original_stop(self, stop_date=stop_date, error=error, cause=cause)

    def reflect(self):
        aborted = getattr(self.execution, "_fleet_aborted", None)
        if aborted is None:
            return original_reflect(self)
        error, cause = getattr(self.execution, "_fleet_stop_reason", (self.execution.error, self.execution.cause))
        original_reflect(self)
        self.execution.exec_status = ExecutionStatus.ABORTED
        self.execution.stop_date = aborted
        self.execution.error, self.execution.cause = error, cause
        self.execution.output = None

    stop._fleet_abort = True
    ex.Execution.stop = stop
    ex.BaseExecutionWorkerCommunication._reflect_execution_status = reflect

    # moto's StopExecution handler drops the request's error and cause; AWS records them on the execution.
    from moto.core.responses import ActionResult
    from moto.stepfunctions.responses import StepFunctionResponse

    def stop_execution(self):
        execution = self.stepfunction_backend.stop_execution(self._get_param("executionArn"))
        reason = (self._get_param("error") or None, self._get_param("cause") or None)
        if getattr(execution, "_fleet_aborted", None) is not None:
            execution._fleet_stop_reason = reason
            execution.error, execution.cause = reason
        return ActionResult({"stopDate": execution.stop_date})

    StepFunctionResponse.stop_execution = stop_execution


def install() -> None:
    _patch_stop_execution()
    _patch_default_document_version()
    _patch_execution_history()
    _patch_put_events()
    _patch_metadata_options()
