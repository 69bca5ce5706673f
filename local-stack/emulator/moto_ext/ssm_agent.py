"""Simulated SSM agents and Run Command for moto 5.2.5.

moto registers no instance with SSM, has no DescribeInstanceInformation worth the name, no ListCommandInvocations
and no CancelCommand, and its SendCommand runs on every instance at once with instant success. This module
replaces those operations (on moto's SimpleSystemManagerResponse, so the HTTP API and the Step Functions SDK
integrations both see them) with a simulation driven by EC2 instance tags (see sim_tags).

State lives on the SSM backend object (attribute ``_fleet_sim``), so ``POST /moto-api/reset`` clears it.
"""

from __future__ import annotations

import base64
import datetime
import heapq
import json
import math
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from moto.core.responses import ActionResult
from moto.ec2.models import ec2_backends
from moto.ssm.exceptions import SSMException
from moto.ssm.responses import SimpleSystemManagerResponse as _Resp

from . import cloudwatch_output as CW
from . import install_outcomes as O
from . import run_outcomes as R
from . import ssm_events as EV
from . import sim_tags as T

#: The latest SSM Agent the simulation knows (IsLatestVersion compares with it).
AGENT_VERSION = T.LATEST_AGENT_VERSION
UPDATE_AGENT_DOCUMENT = "AWS-UpdateSSMAgent"


# --------------------------------------------------------------------------------------------- errors
class _Err(SSMException):
    def __init__(self, code: str, message: str):
        super().__init__(code, message)


# moto finds the error model through the exception's module name ("moto.<service>..."); ours is "moto_ext...".
_Err.__module__ = "moto.ssm.exceptions"


def invalid_instance_id(ids: list[str], account: str) -> _Err:
    return _Err("InvalidInstanceId", f"Instances [[{', '.join(ids)}]] not in a valid state for account {account}")


def validation(message: str) -> _Err:
    return _Err("ValidationException", message)


def _max_results(value: Any, low: int, high: int, default: int, field_name: str = "maxResults") -> int:
    if value is None:
        return default
    n = int(value)
    if n < low:
        raise validation(f"1 validation error detected: Value '{n}' at '{field_name}' failed to satisfy constraint: "
                         f"Member must have value greater than or equal to {low}")
    if n > high:
        raise validation(f"1 validation error detected: Value '{n}' at '{field_name}' failed to satisfy constraint: "
                         f"Member must have value less than or equal to {high}")
    return n


def _encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode()


def _decode_token(token: str | None) -> int:
    if not token:
        return 0
    try:
        return int(json.loads(base64.urlsafe_b64decode(token.encode()))["o"])
    except Exception:  # noqa: BLE001
        raise _Err("InvalidNextToken", "The specified token isn't valid.")


def _page(items: list, token: str | None, size: int) -> tuple[list, str | None]:
    start = _decode_token(token)
    page = items[start:start + size]
    return page, (_encode_token(start + size) if start + size < len(items) else None)


def _dt(epoch: float) -> datetime.datetime:
    """Naive UTC datetime, like moto's own utcnow()."""
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).replace(tzinfo=None)


def _epoch(dt: datetime.datetime) -> float:
    return dt.replace(tzinfo=datetime.timezone.utc).timestamp() if dt.tzinfo is None else dt.timestamp()


def _parse_time(value: str) -> float:
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    v = value.replace("Z", "+00:00")
    d = datetime.datetime.fromisoformat(v)
    if d.tzinfo is None:
        d = d.replace(tzinfo=datetime.timezone.utc)
    return d.timestamp()


# ---------------------------------------------------------------------------------------------- state
@dataclass
class Invocation:
    instance_id: str
    platform: tuple[str, str, str]
    send_number: int
    start: float          # seconds after RequestedDateTime when it leaves Pending
    end: float            # seconds after RequestedDateTime when it reaches its final status
    status: str           # final Status
    details: str          # final StatusDetails
    response_code: int
    output: str
    plugins: list[str]
    skipped_plugins: list[str]
    cancelled_at: float | None = None  # seconds after RequestedDateTime
    stdout: str | None = None    # when set: StandardOutputContent (else output), and stderr StandardErrorContent
    stderr: str = ""
    agent_version_after: str | None = None   # AWS-UpdateSSMAgent: the version the agent runs once this succeeds
    result: str | None = None    # install documents, on success: the path taken (install_outcomes.RESULTS)
    agent_after: str | None = None   # install documents: the security agent's state once this reaches `status`
    cw: bool = True              # its output goes to CloudWatch Logs when the command asks (it ran at all)
    plugin_output: str | None = None   # CommandPlugins[].Output when not stdout and stderr (an agent error)
    skip_output: dict = field(default_factory=dict)   # skipped plugin -> its Output, when not a precondition's


@dataclass
class Command:
    command_id: str
    requested: float
    document_name: str
    document_version: str
    comment: str
    parameters: dict
    instance_ids: list[str]
    targets: list
    timeout_seconds: int
    max_concurrency: str
    max_errors: str
    cloudwatch: dict | None
    output_s3: dict
    service_role: str
    notification: dict | None
    invocations: dict[str, Invocation] = field(default_factory=dict)


class SimState:
    def __init__(self):
        self.lock = threading.RLock()
        self.registered_at: dict[str, float] = {}
        self.last_ping: dict[str, float] = {}
        self.sends: dict[str, int] = {}
        #: instance id -> the security agent's state (sim_tags.AGENT_*) once an install run or the agent control
        #: changed it; until then the INSTALLED tag says
        self.agent: dict[str, str] = {}
        #: instances whose AGENT_LOST tag has taken effect (once per instance)
        self.lost: set[str] = set()
        #: install-document invocations whose effect on the agent is not applied yet (see apply_finished)
        self.pending: list[tuple[Command, Invocation]] = []
        #: instance id -> [(command, invocation, version)] of AWS-UpdateSSMAgent runs, in send order
        self.upgrades: dict[str, list] = {}
        self.commands: list[Command] = []
        self.by_id: dict[str, Command] = {}


def sim_state(ssm_backend) -> SimState:
    st = ssm_backend.__dict__.get("_fleet_sim")
    if st is None:
        st = ssm_backend.__dict__.setdefault("_fleet_sim", SimState())
    return st


def _ec2(ssm_backend):
    return ec2_backends[ssm_backend.account_id][ssm_backend.region_name]


def launch_epoch(instance) -> float:
    """First launch time of the instance (set by the RunInstances wrapper; moto's launch_time otherwise)."""
    return getattr(instance, "_fleet_launched", None) or _epoch(instance.launch_time)


def has_instance_profile(ec2_backend, instance) -> bool:
    return instance.id in getattr(ec2_backend, "iam_instance_profile_associations", {})


def current_agent_version(st: SimState, instance, tags: dict, now: float) -> str:
    """The agent version the instance runs now: its tag (or the latest), or what a finished update installed."""
    version = T.agent_version(tags)
    for cmd, inv, target in st.upgrades.get(instance.id, ()):
        if inv_status(cmd, inv, now)[0] == "Success":
            version = target
    return version


def imdsv2_required(instance) -> bool:
    return getattr(getattr(instance, "metadata_options", None), "http_tokens", "optional") == "required"


def dhmc_since(ssm_backend, instance, tags: dict, now: float) -> float | None:
    """Default Host Management Configuration: the agent of an instance without a profile gets credentials of the
    setting's role when the role exists and allows registering, IMDSv2 is required and the agent is 3.2.582.0 or
    later. Since when (the latest of the setting's change, the role's grant, IMDSv2 required), or None."""
    from .agent_credentials import role_allows
    from .ssm_settings import dhmc_role, dhmc_set_at

    if not imdsv2_required(instance):
        return None
    role = dhmc_role(ssm_backend)
    if role is None:
        return None
    allowed, since = role_allows(ssm_backend.account_id, role)
    if not allowed:
        return None
    version = current_agent_version(sim_state(ssm_backend), instance, tags, now)
    if not T.version_at_least(version, T.DHMC_MIN_AGENT_VERSION):
        return None
    return max(since, dhmc_set_at(ssm_backend), getattr(instance, "_fleet_imdsv2_at", 0.0))


def credentials_since(ssm_backend, instance, tags: dict, now: float) -> float | None:
    """Since when the instance's agent has credentials that may register (its profile's role, else DHMC's)."""
    from .agent_credentials import profile_since

    ec2 = _ec2(ssm_backend)
    if has_instance_profile(ec2, instance):
        return profile_since(ec2, instance)   # a profile's credentials win; DHMC serves instances without one
    return dhmc_since(ssm_backend, instance, tags, now)


# ----------------------------------------------------------------------------------- registration
def registration(ssm_backend, instance, now: float) -> str | None:
    """None when SSM does not list the instance, else its PingStatus (Online or ConnectionLost)."""
    st = sim_state(ssm_backend)
    state = instance.state
    if state in ("terminated", "shutting-down"):
        return None
    tags = T.tags_of(instance)
    since = credentials_since(ssm_backend, instance, tags, now) if T.is_managed(tags) else None
    if since is None:
        # no agent, or no credentials that may register: real SSM never hears from it (an earlier registration
        # goes stale)
        return "ConnectionLost" if instance.id in st.registered_at else None
    with st.lock:
        if instance.id not in st.registered_at:
            # the agent registers register-delay seconds after it is up with usable credentials
            at = max(launch_epoch(instance), since) + T.register_delay(tags)
            if state != "running" or now < at:
                return None
            st.registered_at[instance.id] = at
        if state == "running":
            st.last_ping[instance.id] = now
            return "Online"
        return "ConnectionLost"


def instance_information(ssm_backend, instance, ping: str, now: float) -> dict:
    st = sim_state(ssm_backend)
    tags = T.tags_of(instance)
    ptype, pname, pversion = T.platform(tags, getattr(instance, "platform", None))
    version = current_agent_version(st, instance, tags, now)
    ip = instance.private_ip or "10.0.0.1"
    info = {
        "InstanceId": instance.id,
        "PingStatus": ping,
        "LastPingDateTime": _dt(st.last_ping.get(instance.id, now)),
        "AgentVersion": version,
        "IsLatestVersion": T.version_at_least(version, AGENT_VERSION),
        "PlatformType": ptype,
        "PlatformName": pname,
        "PlatformVersion": pversion,
        "ResourceType": "EC2Instance",
        "IPAddress": ip,
        "ComputerName": ("EC2AMAZ-" + instance.id[-7:].upper()) if ptype == "Windows"
        else f"ip-{ip.replace('.', '-')}.ec2.internal",
        "AssociationStatus": "Success",
        "SourceId": instance.id,
        "SourceType": "AWS::EC2::Instance",
    }
    return info


_INFO_FILTER_FIELDS = {
    "InstanceIds": "InstanceId", "PlatformTypes": "PlatformType", "PingStatus": "PingStatus",
    "ResourceType": "ResourceType", "AgentVersion": "AgentVersion", "AssociationStatus": "AssociationStatus",
}


def describe_instance_information(self):  # SimpleSystemManagerResponse method
    backend = self.ssm_backend
    size = _max_results(self._get_param("MaxResults"), 5, 50, 50)
    filters = [(f.get("Key"), f.get("Values") or []) for f in (self._get_param("Filters") or [])]
    legacy = [(f.get("key"), f.get("valueSet") or []) for f in (self._get_param("InstanceInformationFilterList") or [])]
    if filters and legacy:
        raise validation("You can't specify both Filters and InstanceInformationFilterList.")
    filters += [({"InstanceIds": "InstanceIds", "PlatformTypes": "PlatformTypes", "PingStatus": "PingStatus",
                  "ResourceType": "ResourceType", "AgentVersion": "AgentVersion", "IamRole": "IamRole",
                  "ActivationIds": "ActivationIds", "AssociationStatus": "AssociationStatus"}.get(k, k), v)
                for k, v in legacy]
    for key, values in filters:
        if not values:
            raise _Err("InvalidInstanceInformationFilterValue", f"Filter {key} needs at least one value.")
        if len(values) > 100:
            raise _Err("InvalidInstanceInformationFilterValue", f"Filter {key} has more than 100 values.")
        if key == "InstanceIds" and len(values) > 50:
            raise _Err("InvalidInstanceInformationFilterValue",
                       "The InstanceIds filter accepts at most 50 values.")
        if not (key in _INFO_FILTER_FIELDS or key.startswith("tag:") or key == "tag-key"):
            raise _Err("InvalidFilterKey", f"The filter key {key} is not valid.")
    now = time.time()
    ec2 = _ec2(backend)
    rows = []
    candidates = ec2.all_instances()
    wanted = set()
    for key, values in filters:
        if key == "InstanceIds":
            wanted = set(values) if not wanted else wanted & set(values)
    if wanted:  # look only at the named instances, not the whole account
        candidates = [i for i in candidates if i.id in wanted]
    for inst in sorted(candidates, key=lambda i: (launch_epoch(i), i.id)):
        ping = registration(backend, inst, now)
        if ping is None:
            continue
        info = instance_information(backend, inst, ping, now)
        tags = T.tags_of(inst)
        ok = True
        for key, values in filters:
            if key.startswith("tag:"):
                ok = tags.get(key[4:]) in values
            elif key == "tag-key":
                ok = any(v in tags for v in values)
            else:
                ok = info[_INFO_FILTER_FIELDS[key]] in values
            if not ok:
                break
        if ok:
            rows.append(info)
    page, token = _page(rows, self._get_param("NextToken"), size)
    out: dict[str, Any] = {"InstanceInformationList": page}
    if token:
        out["NextToken"] = token
    return ActionResult(out)


# ------------------------------------------------------------------------------------ SendCommand
def _find_document(backend, name: str, version: str | None):
    if not name:
        raise validation("DocumentName is required.")
    if name.startswith("arn:"):
        name = name.split(":document/", 1)[-1]
    documents = backend._documents.get(name)
    if not documents:
        raise _Err("InvalidDocument", f"Document with name {name} does not exist.")
    if version in (None, "", "$DEFAULT"):
        doc = documents.get_default_version()
    elif version == "$LATEST":
        doc = documents.get_latest_version()
    else:
        doc = documents.find_by_version(version)
    if doc is None:
        raise _Err("InvalidDocumentVersion", f"Document {name} has no version {version}.")
    return name, doc


def _pattern_matches(pattern: str, value: str) -> bool:
    # SSM matches allowedPattern against the whole value (Java's matches()): AWS-RunShellScript's unanchored
    # executionTimeout pattern refuses 172801. fullmatch also refuses a trailing newline after "$".
    try:
        return re.fullmatch(pattern, value) is not None
    except re.error:
        return True


def _number(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def validate_parameters(doc, parameters: dict) -> dict:
    declared = (doc.content_json or {}).get("parameters") or {}
    for key, values in parameters.items():
        if key not in declared:
            raise _Err("InvalidParameters", f"Parameter \"{key}\" is not declared in document {doc.name}.")
        if not isinstance(values, list):
            values = [values]
        pattern = declared[key].get("allowedPattern")
        allowed = declared[key].get("allowedValues")
        low, high = _number(declared[key].get("minItems")), _number(declared[key].get("maxItems"))
        if low is not None and len(values) < low:
            raise _Err("InvalidParameters", f"Parameter \"{key}\" has {len(values)} values: it needs at least {low}.")
        if high is not None and len(values) > high:
            raise _Err("InvalidParameters", f"Parameter \"{key}\" has {len(values)} values: it takes at most {high}.")
        min_chars, max_chars = _number(declared[key].get("minChars")), _number(declared[key].get("maxChars"))
        for v in values:
            if isinstance(v, str) and ((min_chars is not None and len(v) < min_chars)
                                       or (max_chars is not None and len(v) > max_chars)):
                raise _Err("InvalidParameters", f"Parameter \"{key}\" failed to satisfy constraint: Member must have "
                                                f"length between {min_chars or 0} and {max_chars}.")
            if not isinstance(v, str):
                v = json.dumps(v)
            if pattern and not _pattern_matches(pattern, v):
                raise _Err("InvalidParameters",
                           f"Parameter \"{key}\" \"{v}\" failed to satisfy constraint: "
                           f"Member must satisfy regular expression pattern: {pattern}")
            if allowed and v not in [str(a) for a in allowed]:
                raise _Err("InvalidParameters", f"Parameter \"{key}\" \"{v}\" is not one of the allowed values.")
    missing = [k for k, d in declared.items() if "default" not in d and k not in parameters]
    if missing:
        raise _Err("InvalidParameters", f"Document {doc.name} requires parameter(s) {', '.join(missing)}.")
    return parameters


def _limit(value: str | None, count: int, default: int) -> int:
    if value in (None, ""):
        return default
    value = str(value).strip()
    if value.endswith("%"):
        return max(1, math.ceil(count * float(value[:-1]) / 100.0)) if count else 0
    return int(value)


def _error_limit(value: str | None, count: int) -> int:
    if value in (None, ""):
        return 0
    value = str(value).strip()
    if value.endswith("%"):
        return math.floor(count * float(value[:-1]) / 100.0)
    return int(value)


def _doc_steps(doc) -> list[tuple[str, str | None]]:
    """(step name, platformType precondition or None) for each mainSteps entry (schema 2.x) or runtimeConfig."""
    content = doc.content_json or {}
    steps = []
    for s in content.get("mainSteps") or []:
        pre = ((s.get("precondition") or {}).get("StringEquals") or [None, None])
        plat = pre[1] if len(pre) == 2 and pre[0] == "platformType" else None
        steps.append((s.get("name") or s.get("action", "step"), plat))
    for name in (content.get("runtimeConfig") or {}):
        steps.append((name, None))
    return steps or [("aws:runShellScript", None)]


def declares_env_var(doc) -> bool:
    """True when the document declares a parameter with interpolationType ENV_VAR (SSM Agent 3.3.2746.0+)."""
    params = (doc.content_json or {}).get("parameters") or {}
    return any(isinstance(p, dict) and str(p.get("interpolationType", "")).upper() == "ENV_VAR"
               for p in params.values())


def is_update_agent(doc) -> bool:
    return "aws:updateSsmAgent" in ((doc.content_json or {}).get("runtimeConfig") or {})


#: The last line a successful run of the stack's install documents prints (documents/*.yml).
INSTALL_RESULT_MARKER = O.RESULT_PREFIX


def is_install_document(doc) -> bool:
    """The stack's install documents (documents/install-agent-{linux,windows}.yml) and documents of their shape:
    they declare an installer URL and its SHA-256 (InstallerUrl*, InstallerSha256*: InstallerUrl on Windows,
    InstallerUrlRpm/Deb/FreeBsd on Linux), or their scripts print the FLEET_INSTALL_RESULT= result line. Every
    other command document but AWS-UpdateSSMAgent is a generic run (_plan_run). Remembered per document version
    (moto never changes a version's content)."""
    known = doc.__dict__.get("_fleet_is_install")
    if known is not None:
        return known
    content = doc.content_json or {}
    params = content.get("parameters") or {}
    found = (any(k.startswith("InstallerUrl") for k in params) and any(k.startswith("InstallerSha256") for k in params)
             or INSTALL_RESULT_MARKER in json.dumps(content.get("mainSteps") or content.get("runtimeConfig") or {}))
    doc.__dict__["_fleet_is_install"] = found
    return found


def _host(instance, platform) -> str:
    return ("EC2AMAZ-" + instance.id[-7:].upper()) if platform[0] == "Windows" else \
        f"ip-{(instance.private_ip or '10.0.0.1').replace('.', '-')}"


def _script_failure(iid, platform, n, dur, code, stdout, message, run, skipped) -> Invocation:
    stderr = f"fleet-install: ERROR: {message}\nfailed to run commands: exit status {code}"
    return Invocation(iid, platform, n, 0, dur, "Failed", "Failed", code, O.combined_output(stdout, stderr),
                      run, skipped, stdout=stdout, stderr=stderr)


def _plan_update(st: SimState, instance, platform, parameters: dict, now: float, run, skipped) -> Invocation:
    """AWS-UpdateSSMAgent on one instance (the aws:updateSsmAgent plugin)."""
    tags = T.tags_of(instance)
    iid = instance.id
    current = current_agent_version(st, instance, tags, now)
    wanted = O._param(parameters, "version")
    allow_downgrade = O._param(parameters, "allowDowngrade", "false").lower() == "true"
    target = wanted or T.agent_update_to(tags)
    dur = T.agent_update_seconds(tags)
    head = f"Updating amazon-ssm-agent from {current} to {target}\nSuccessfully downloaded manifest\n"
    if T.agent_update_fails(tags):
        out = (head + f"Successfully downloaded updater version {target}\n"
               f"failed to install/update the agent: amazon-ssm-agent {target} installation failed, "
               f"rolled back to {current}")
        return Invocation(iid, platform, 0, 0, dur, "Failed", "Failed", 1, out, run, skipped)
    if T.version_key(target) == T.version_key(current):
        out = (f"amazon-ssm-agent {current} is already latest, update skipped" if not wanted else
               f"amazon-ssm-agent {current} has already been installed, update skipped")
        return Invocation(iid, platform, 0, 0, min(dur, 0.5), "Success", "Success", 0, out, run, skipped)
    if T.version_key(target) < T.version_key(current) and not allow_downgrade:
        if not wanted:
            out = f"amazon-ssm-agent {current} is already latest, update skipped"
            return Invocation(iid, platform, 0, 0, min(dur, 0.5), "Success", "Success", 0, out, run, skipped)
        out = (f"failed to install/update the agent: updating amazon-ssm-agent from {current} to the older "
               f"version {target} requires allowDowngrade true")
        return Invocation(iid, platform, 0, 0, min(dur, 0.5), "Failed", "Failed", 1, out, run, skipped)
    out = (head + f"Successfully downloaded updater version {target}\n"
           f"Initiating amazon-ssm-agent update to {target}\n"
           f"amazon-ssm-agent updated successfully to {target}")
    return Invocation(iid, platform, 0, 0, dur, "Success", "Success", 0, out, run, skipped,
                      agent_version_after=target)


def _plan_invocation(st: SimState, doc, instance, platform: tuple[str, str, str], parameters: dict | None = None,
                     now: float | None = None) -> Invocation:
    now = time.time() if now is None else now
    parameters = parameters or {}
    tags = T.tags_of(instance)
    iid = instance.id
    steps = _doc_steps(doc)
    run = [name for name, plat in steps if plat in (None, platform[0])]
    skipped = [name for name, plat in steps if plat not in (None, platform[0])]
    if is_update_agent(doc):
        return _plan_update(st, instance, platform, parameters, now, run, skipped)
    if not is_install_document(doc):
        return _plan_run(doc, instance, platform, parameters)
    st.sends[iid] = st.sends.get(iid, 0) + 1
    n = st.sends[iid]
    dur = T.install_seconds(tags)
    if not run:
        return Invocation(iid, platform, n, 0, 0, "Failed", "Failed", -1,
                          f"Step execution skipped due to unsatisfied preconditions: platformType is {platform[0]}. "
                          f"No step of document {doc.name} applies to this instance.", [], skipped)
    if declares_env_var(doc) and not T.version_at_least(current_agent_version(st, instance, tags, now),
                                                          T.ENV_VAR_MIN_AGENT_VERSION):
        # The agent does not set SSM_* variables: the script's parameter check fails before anything else.
        return _script_failure(iid, platform, n, min(dur, 0.2), 2, "", O.env_var_failure(platform), run, skipped)
    code = T.exit_code(tags)
    if T.fail_attempts_set(tags):
        outcome = "Failed" if n <= T.fail_attempts(tags) else T.outcome(tags)
    else:
        outcome = "Failed" if code is not None else T.outcome(tags)
    if outcome == "Undeliverable":   # the agent never receives the command, whatever the document would do
        return Invocation(iid, platform, n, 0, dur, "Failed", "Undeliverable", -1, "", run, skipped)
    host = _host(instance, platform)
    windows = platform[0] == "Windows"
    # The documents check their parameters (and, on Windows, elevation) before they look at the agent.
    if outcome == "Failed" and code in ((2, 3) if windows else (2,)):
        stdout, message = O.failure(platform, code, parameters, host)
        return _script_failure(iid, platform, n, min(dur, 0.2), code, stdout, message, run, skipped)
    agent = agent_state(st, instance, tags)
    if agent == T.AGENT_RUNNING:
        # "already installed and running; nothing to do": the other failure tags describe the install path
        return Invocation(iid, platform, n, 0, 0.2, "Success", "Success", 0,
                          O.success(platform, "verified", parameters, host), run, skipped, result="verified")
    if agent == T.AGENT_STOPPED:
        # "installed but not running; starting it": only a service that does not start (7; on Windows also 10,
        # a reboot pending) fails here
        if outcome == "Failed" and code in ((7, 10) if windows else (7,)):
            stdout, message = O.start_failure(platform, code, parameters, host)
            inv = _script_failure(iid, platform, n, min(dur, 0.5), code, stdout, message, run, skipped)
            inv.agent_after = T.AGENT_STOPPED
            return inv
        return Invocation(iid, platform, n, 0, min(dur, 0.5), "Success", "Success", 0,
                          O.success(platform, "started", parameters, host), run, skipped, result="started",
                          agent_after=T.AGENT_RUNNING)
    if outcome == "Success":
        return Invocation(iid, platform, n, 0, dur, "Success", "Success", 0,
                          O.success(platform, "installed", parameters, host, T.install_output_lines(tags)),
                          run, skipped, result="installed", agent_after=T.AGENT_RUNNING)
    if outcome == "Failed" and code not in (None, 1):
        stdout, message = O.failure(platform, code, parameters, host)
        inv = _script_failure(iid, platform, n, dur, code, stdout, message, run, skipped)
        if code == 7 or (windows and code == 10):
            inv.agent_after = T.AGENT_STOPPED    # the package is installed; its service did not come up
        return inv
    if outcome == "Failed":
        return Invocation(iid, platform, n, 0, dur, "Failed", "Failed", 1,
                          f"install failed: simulated failure (send {n} to {iid})\n"
                          f"failed to run commands: exit status 1", run, skipped)
    return Invocation(iid, platform, n, 0, dur, "TimedOut", "Execution Timed Out", -1,
                      "install did not finish within the execution timeout; the agent stopped the script.",
                      run, skipped)


def _plan_run(doc, instance, platform: tuple[str, str, str], parameters: dict) -> Invocation:
    """Any other command document (AWS-RunShellScript, ...): the RUN_* and TIME_SCALE tags decide (see sim_tags and
    run_outcomes). Durations are simulated seconds times the time scale; nothing on the instance changes."""
    tags = T.tags_of(instance)
    iid, ptype = instance.id, platform[0]
    scale = T.time_scale(tags)
    seconds = T.run_seconds(tags)
    outcome = T.run_outcome(tags)
    precond = R.supports_preconditions(doc)
    run, skipped, skip_output, missing = [], [], {}, None
    for step in R.plugin_steps(doc):
        if step["platform"] not in (None, ptype):
            skipped.append(step["name"])
        elif R.no_handler(step["action"], ptype):
            if precond:
                skipped.append(step["name"])
                skip_output[step["name"]] = R.incompatible_message(step["name"])
            elif missing is None:
                missing = step
        else:
            run.append(step)
    names = [s["name"] for s in run]
    if outcome == "Undeliverable":   # never reaches the agent: Pending, then Undeliverable
        return Invocation(iid, platform, 0, 0, seconds * scale, "Failed", "Undeliverable", -1, "",
                          names or [s["name"] for s in R.plugin_steps(doc)][:1], skipped, cw=False)
    start_failure = min(seconds * scale, R.START_FAILURE_SECONDS)
    if missing is not None:          # schema 1.2/2.0: the agent fails the step it has no handler for
        message = R.not_found_message(missing["action"], missing["name"])
        return Invocation(iid, platform, 0, 0, start_failure, "Failed", "Failed", 1, message,
                          [missing["name"]] + names, skipped, stdout="", stderr=message, cw=False,
                          skip_output=skip_output, plugin_output=message)
    if not run:
        return Invocation(iid, platform, 0, 0, 0, "Failed", "Failed", -1,
                          f"Step execution skipped due to unsatisfied preconditions: platformType is {ptype}. "
                          f"No step of document {doc.name} applies to this instance.", [], skipped, cw=False,
                          skip_output=skip_output)
    no_pwsh = R.pwsh_missing(run[0]["action"], ptype)
    if no_pwsh:
        return Invocation(iid, platform, 0, 0, start_failure, "Failed", "Failed", 1, no_pwsh, names, skipped,
                          stdout="", stderr=no_pwsh, skip_output=skip_output)
    timeout = R.execution_timeout(doc, run[0], parameters)
    stdout = R.stdout_of(T.run_output(tags), T.run_output_lines(tags), _host(instance, platform), doc.name)
    if outcome == "TimedOut" or seconds > timeout:
        # the agent stops the script at its execution timeout; a script that never ends has printed it all
        printed = stdout if outcome == "TimedOut" else R.printed_before(stdout, timeout / seconds)
        return Invocation(iid, platform, 0, 0, timeout * scale, "TimedOut", "Execution Timed Out", -1, printed,
                          names, skipped, stdout=printed, stderr="", skip_output=skip_output)
    code = T.run_exit_code(tags, outcome)
    if code:
        stderr = R.exit_status(code)
        return Invocation(iid, platform, 0, 0, seconds * scale, "Failed", "Failed", code,
                          O.combined_output(stdout, stderr), names, skipped, stdout=stdout, stderr=stderr,
                          skip_output=skip_output)
    return Invocation(iid, platform, 0, 0, seconds * scale, "Success", "Success", 0, stdout, names, skipped,
                      stdout=stdout, stderr="", skip_output=skip_output)


def _resolve_targets(backend, targets: list, now: float) -> list[str]:
    ec2 = _ec2(backend)
    ids: list[str] = []
    for t in targets or []:
        key, values = t.get("Key"), t.get("Values") or []
        if key == "InstanceIds":
            ids += values
        elif key and (key.startswith("tag:") or key == "tag-key"):
            for inst in ec2.all_instances():
                tags = T.tags_of(inst)
                hit = tags.get(key[4:]) in values if key.startswith("tag:") else any(v in tags for v in values)
                if hit and registration(backend, inst, now) == "Online":
                    ids.append(inst.id)
        else:
            raise validation(f"Target key {key} is not supported by the local simulation.")
    return ids


def send_command_impl(backend, req: dict) -> Command:
    now = time.time()
    st = sim_state(backend)
    ec2 = _ec2(backend)
    instance_ids = req.get("InstanceIds") or []
    targets = req.get("Targets") or []
    if instance_ids and targets:
        raise validation("You can specify either InstanceIds or Targets, not both.")
    if not instance_ids and not targets:
        raise validation("You must specify either InstanceIds or Targets.")
    if len(instance_ids) > 50:
        raise validation("1 validation error detected: Value at 'instanceIds' failed to satisfy constraint: "
                         "Member must have length less than or equal to 50")
    timeout = req.get("TimeoutSeconds")
    if timeout is not None and not 30 <= int(timeout) <= 2592000:
        raise validation("TimeoutSeconds must be between 30 and 2592000.")
    name, doc = _find_document(backend, req.get("DocumentName"), req.get("DocumentVersion"))
    parameters = validate_parameters(doc, req.get("Parameters") or {})
    if instance_ids:
        ids = list(dict.fromkeys(instance_ids))
        bad = []
        for iid in ids:
            try:
                inst = ec2.get_instance_by_id(iid)
            except Exception:  # noqa: BLE001
                inst = None
            if inst is None or registration(backend, inst, now) != "Online":
                bad.append(iid)
        if bad:
            raise invalid_instance_id(bad, backend.account_id)
    else:
        ids = list(dict.fromkeys(_resolve_targets(backend, targets, now)))
    cmd = Command(
        command_id=str(uuid.uuid4()), requested=now, document_name=name,
        document_version=str(req.get("DocumentVersion") or "$DEFAULT"), comment=req.get("Comment") or "",
        parameters=parameters, instance_ids=ids, targets=targets, timeout_seconds=int(timeout or 3600),
        max_concurrency=str(req.get("MaxConcurrency") or "50"), max_errors=str(req.get("MaxErrors") or "0"),
        cloudwatch=req.get("CloudWatchOutputConfig"),
        output_s3={k: req.get(k, "") for k in ("OutputS3Region", "OutputS3BucketName", "OutputS3KeyPrefix")},
        service_role=req.get("ServiceRoleArn") or "", notification=req.get("NotificationConfig"),
    )
    with st.lock:
        plans = []
        for iid in ids:
            inst = ec2.get_instance_by_id(iid)
            plans.append(_plan_invocation(st, doc, inst, T.platform(T.tags_of(inst), getattr(inst, "platform", None)),
                                          parameters, now))
        # MaxConcurrency: an invocation leaves Pending when a slot is free
        slots = max(1, _limit(cmd.max_concurrency, len(ids), 50))
        busy: list[float] = []
        for inv in plans:
            begin = T.INVISIBLE_SECONDS
            if len(busy) >= slots:
                begin = max(begin, heapq.heappop(busy))
            inv.start = begin
            inv.end = begin + inv.end
            heapq.heappush(busy, inv.end)
            cmd.invocations[inv.instance_id] = inv
            if inv.agent_version_after:
                st.upgrades.setdefault(inv.instance_id, []).append((cmd, inv, inv.agent_version_after))
        _track(st, cmd)
        st.commands.append(cmd)
        st.by_id[cmd.command_id] = cmd
    CW.schedule(backend, cmd)
    EV.schedule(backend, cmd)   # Run Command events on EventBridge (ssm_events)
    return cmd


# --------------------------------------------------------------------------------- status views
ACTIVE = ("Pending", "InProgress", "Delayed", "Cancelling")


def inv_status(cmd: Command, inv: Invocation, now: float) -> tuple[str, str]:
    t = now - cmd.requested
    if inv.cancelled_at is not None and inv.cancelled_at < inv.end and t >= inv.cancelled_at:
        return "Cancelled", "Cancelled"
    if t >= inv.end:
        return inv.status, inv.details
    if t < inv.start or inv.details == "Undeliverable":
        return "Pending", "Pending"
    return "InProgress", "In Progress"


def visible(cmd: Command, now: float) -> bool:
    return now - cmd.requested >= T.INVISIBLE_SECONDS


def command_view(st: SimState, cmd: Command, now: float, fresh: bool = False) -> dict:
    statuses = [inv_status(cmd, inv, now) for inv in cmd.invocations.values()]
    completed = sum(s not in ACTIVE for s, _ in statuses)
    delivery_timed_out = sum(d == "Delivery Timed Out" for _, d in statuses)
    errors = sum(s in ("Failed", "TimedOut") for s, _ in statuses) - delivery_timed_out
    if fresh:
        status, completed, errors = "Pending", 0, 0
    elif any(s in ACTIVE for s, _ in statuses):
        status = "InProgress"
    elif statuses and all(s == "Cancelled" for s, _ in statuses):
        status = "Cancelled"
    elif errors + delivery_timed_out > _error_limit(cmd.max_errors, len(statuses)):
        status = "TimedOut" if any(s == "TimedOut" for s, _ in statuses) and not any(
            s == "Failed" for s, _ in statuses) else "Failed"
    elif not statuses:
        status = "Success"
    else:
        status = "Success"
    view = {
        "CommandId": cmd.command_id,
        "DocumentName": cmd.document_name,
        "DocumentVersion": cmd.document_version,
        "Comment": cmd.comment,
        "ExpiresAfter": _dt(cmd.requested + cmd.timeout_seconds),
        "Parameters": cmd.parameters,
        "InstanceIds": cmd.instance_ids if not cmd.targets else [],
        "Targets": cmd.targets,
        "RequestedDateTime": _dt(cmd.requested),
        "Status": status,
        "StatusDetails": {"InProgress": "In Progress"}.get(status, status),
        "MaxConcurrency": cmd.max_concurrency,
        "MaxErrors": cmd.max_errors,
        "TargetCount": len(statuses) if not fresh else 0,
        "CompletedCount": completed,
        "ErrorCount": errors,
        "DeliveryTimedOutCount": delivery_timed_out,
        "ServiceRole": cmd.service_role,
        "TimeoutSeconds": cmd.timeout_seconds,
        **cmd.output_s3,
    }
    if cmd.notification:
        view["NotificationConfig"] = cmd.notification
    view["CloudWatchOutputConfig"] = CW.view(cmd.cloudwatch)
    return view


def _streams(inv: Invocation) -> tuple[str, str]:
    """(stdout, stderr) of a finished invocation."""
    return (inv.output, "") if inv.stdout is None else (inv.stdout, inv.stderr)


def _plugin_views(cmd: Command, inv: Invocation, now: float) -> list[dict]:
    status, details = inv_status(cmd, inv, now)
    final = status not in ACTIVE
    out = []
    for name in inv.plugins:
        p = {"Name": name, "Status": status, "StatusDetails": details,
             "ResponseCode": inv.response_code if final and status != "Cancelled" else -1,
             "Output": (inv.plugin_output if inv.plugin_output is not None else O.plugin_output(*_streams(inv)))
             if final and status != "Cancelled" else "",
             "StandardOutputUrl": "", "StandardErrorUrl": "",
             "OutputS3Region": cmd.output_s3.get("OutputS3Region") or "us-east-1",
             "OutputS3BucketName": cmd.output_s3.get("OutputS3BucketName") or "",
             "OutputS3KeyPrefix": cmd.output_s3.get("OutputS3KeyPrefix") or ""}
        if status not in ("Pending",):
            p["ResponseStartDateTime"] = _dt(cmd.requested + inv.start)
        if final:
            p["ResponseFinishDateTime"] = _dt(cmd.requested + min(inv.end, inv.cancelled_at or inv.end))
        out.append(p)
    for name in inv.skipped_plugins:
        out.append({"Name": name, "Status": "Success", "StatusDetails": "Success", "ResponseCode": 0,
                    "Output": inv.skip_output.get(name) or
                    "Step execution skipped due to unsatisfied preconditions: platformType did not match."})
    if not out:
        out.append({"Name": "aws:runShellScript", "Status": status, "StatusDetails": details,
                    "ResponseCode": inv.response_code if final else -1, "Output": inv.output if final else ""})
    return out


def invocation_view(cmd: Command, inv: Invocation, now: float, details: bool) -> dict:
    status, status_details = inv_status(cmd, inv, now)
    view = {
        "CommandId": cmd.command_id, "InstanceId": inv.instance_id,
        "InstanceName": "", "Comment": cmd.comment, "DocumentName": cmd.document_name,
        "DocumentVersion": cmd.document_version, "RequestedDateTime": _dt(cmd.requested),
        "Status": status, "StatusDetails": status_details, "TraceOutput": "",
        "StandardOutputUrl": "", "StandardErrorUrl": "", "ServiceRole": cmd.service_role,
    }
    if cmd.notification:
        view["NotificationConfig"] = cmd.notification
    view["CloudWatchOutputConfig"] = CW.view(cmd.cloudwatch)
    view["CommandPlugins"] = _plugin_views(cmd, inv, now) if details else []
    return view


def _command(st: SimState, command_id: str | None) -> Command:
    cmd = st.by_id.get(command_id or "")
    if cmd is None:
        raise _Err("InvalidCommandId", "")
    return cmd


def _time_filters(filters: list[dict]) -> list[tuple[str, str]]:
    allowed = ("InvokedAfter", "InvokedBefore", "Status", "ExecutionStage", "DocumentName")
    out = []
    for f in filters or []:
        key, value = f.get("key") or f.get("Key"), f.get("value") or f.get("Value")
        if key not in allowed:
            raise _Err("InvalidFilterKey", f"The filter key {key} is not valid.")
        out.append((key, value))
    return out


def _command_matches(cmd: Command, status: str, filters: list[tuple[str, str]]) -> bool:
    for key, value in filters:
        if key == "InvokedAfter" and cmd.requested < _parse_time(value):
            return False
        if key == "InvokedBefore" and cmd.requested > _parse_time(value):
            return False
        if key == "DocumentName" and cmd.document_name != value:
            return False
        if key == "Status" and status != value:
            return False
        if key == "ExecutionStage" and (status in ACTIVE) != (value == "Executing"):
            return False
    return True


# ---------------------------------------------------------------------- response-method overrides
def send_command(self):
    req = {k: self._get_param(k) for k in (
        "InstanceIds", "Targets", "DocumentName", "DocumentVersion", "DocumentHash", "DocumentHashType",
        "TimeoutSeconds", "Comment", "Parameters", "OutputS3Region", "OutputS3BucketName", "OutputS3KeyPrefix",
        "MaxConcurrency", "MaxErrors", "ServiceRoleArn", "NotificationConfig", "CloudWatchOutputConfig",
        "AlarmConfiguration")}
    cmd = send_command_impl(self.ssm_backend, req)
    st = sim_state(self.ssm_backend)
    return ActionResult({"Command": command_view(st, cmd, time.time(), fresh=True)})


def list_commands(self):
    st = sim_state(self.ssm_backend)
    now = time.time()
    size = _max_results(self._get_param("MaxResults"), 1, 50, 50)
    command_id, instance_id = self._get_param("CommandId"), self._get_param("InstanceId")
    filters = _time_filters(self._get_param("Filters") or [])
    with st.lock:
        if command_id:
            cmds = [_command(st, command_id)]
        else:
            cmds = list(reversed(st.commands))   # newest first, like SSM
        rows = []
        for cmd in cmds:
            if instance_id and instance_id not in cmd.invocations:
                continue
            view = command_view(st, cmd, now, fresh=not visible(cmd, now))
            if _command_matches(cmd, view["Status"], filters):
                rows.append(view)
    page, token = _page(rows, self._get_param("NextToken"), size)
    out: dict[str, Any] = {"Commands": page}
    if token:
        out["NextToken"] = token
    return ActionResult(out)


def list_command_invocations(self):
    st = sim_state(self.ssm_backend)
    now = time.time()
    size = _max_results(self._get_param("MaxResults"), 1, 50, 50)
    command_id, instance_id = self._get_param("CommandId"), self._get_param("InstanceId")
    details = bool(self._get_param("Details", False))
    filters = _time_filters(self._get_param("Filters") or [])
    with st.lock:
        cmds = [_command(st, command_id)] if command_id else list(reversed(st.commands))
        rows = []
        for cmd in cmds:
            if not visible(cmd, now):
                continue   # SSM has not fanned the command out yet
            for iid, inv in cmd.invocations.items():
                if instance_id and iid != instance_id:
                    continue
                view = invocation_view(cmd, inv, now, details)
                if _command_matches(cmd, view["Status"], filters):
                    rows.append(view)
    page, token = _page(rows, self._get_param("NextToken"), size)
    out: dict[str, Any] = {"CommandInvocations": page}
    if token:
        out["NextToken"] = token
    return ActionResult(out)


def get_command_invocation(self):
    st = sim_state(self.ssm_backend)
    now = time.time()
    command_id, instance_id = self._get_param("CommandId"), self._get_param("InstanceId")
    plugin_name = self._get_param("PluginName")
    with st.lock:
        cmd = st.by_id.get(command_id or "")
        inv = cmd.invocations.get(instance_id or "") if cmd else None
        if cmd is None or inv is None or not visible(cmd, now):
            raise _Err("InvocationDoesNotExist", "")
        plugins = _plugin_views(cmd, inv, now)
        if plugin_name:
            plugins = [p for p in plugins if p["Name"] == plugin_name]
            if not plugins:
                raise _Err("InvalidPluginName", f"Plugin {plugin_name} is not in document {cmd.document_name}.")
        p = plugins[0]
        status, details = inv_status(cmd, inv, now)
        end = inv.cancelled_at if status == "Cancelled" else inv.end
        elapsed = max(0.0, min(now - cmd.requested, end) - inv.start)
        out = {
            "CommandId": cmd.command_id, "InstanceId": instance_id, "Comment": cmd.comment,
            "DocumentName": cmd.document_name, "DocumentVersion": cmd.document_version,
            "PluginName": p["Name"], "ResponseCode": p["ResponseCode"],
            "ExecutionStartDateTime": _dt(cmd.requested + inv.start).isoformat() + "Z" if status != "Pending" else "",
            "ExecutionElapsedTime": f"PT{elapsed:.3f}S",
            "ExecutionEndDateTime": _dt(cmd.requested + end).isoformat() + "Z" if status not in ACTIVE else "",
            "Status": status, "StatusDetails": details,
            # the first characters of each stream, as SSM keeps them
            "StandardOutputContent": _streams(inv)[0][:O.STDOUT_CONTENT]
            if status not in ACTIVE and status != "Cancelled" else "",
            "StandardOutputUrl": "", "StandardErrorContent": "" if status != "Failed" or not inv.response_code > 0
            else (inv.stderr or f"failed to run commands: exit status {inv.response_code}")[:O.STDERR_CONTENT],
            "StandardErrorUrl": "",
        }
        out["CloudWatchOutputConfig"] = CW.view(cmd.cloudwatch)
    return ActionResult(out)


def cancel_command(self):
    st = sim_state(self.ssm_backend)
    now = time.time()
    command_id = self._get_param("CommandId")
    ids = self._get_param("InstanceIds") or []
    with st.lock:
        cmd = _command(st, command_id)
        for iid in ids or list(cmd.invocations):
            inv = cmd.invocations.get(iid)
            if inv is None:
                continue
            if inv_status(cmd, inv, now)[0] in ACTIVE and inv.cancelled_at is None:
                inv.cancelled_at = now - cmd.requested
    EV.poke(self.ssm_backend, cmd)   # the cancelled invocations' events, at once
    return ActionResult({})


def agent_state(st: SimState, instance, tags: dict | None = None) -> str:
    """The security agent on the instance now (sim_tags.AGENT_*): the simulation's record once an install run or
    the agent control changed it, else what the INSTALLED tag says. Call apply_finished first."""
    state = st.agent.get(instance.id)
    if state is not None:
        return state
    return T.agent_at_launch(T.tags_of(instance) if tags is None else tags)


def apply_finished(backend, now: float) -> None:
    """Apply what finished install runs did to the agent, in the order they finished: a run that installed or
    started it leaves it running (and then, once, what the AGENT_LOST tag says), a service that did not come up
    leaves it stopped. A verification changes nothing. Runs still going stay pending."""
    st = sim_state(backend)
    with st.lock:
        done, still = [], []
        for cmd, inv in st.pending:
            status = inv_status(cmd, inv, now)[0]
            if status in ACTIVE:
                still.append((cmd, inv))
            elif status == inv.status:      # reached its planned end (not cancelled)
                done.append((cmd.requested + inv.end, cmd, inv))
        st.pending = still
        if not done:
            return
        ec2 = _ec2(backend)
        for _, cmd, inv in sorted(done, key=lambda d: d[0]):
            st.agent[inv.instance_id] = inv.agent_after
            if inv.result in ("installed", "started") and inv.instance_id not in st.lost:
                try:
                    lost = T.agent_lost(T.tags_of(ec2.get_instance_by_id(inv.instance_id)))
                except Exception:  # noqa: BLE001 - an instance moto no longer knows
                    lost = None
                if lost:
                    st.agent[inv.instance_id] = lost
                    st.lost.add(inv.instance_id)


def _track(st: SimState, cmd: Command) -> None:
    for inv in cmd.invocations.values():
        if inv.agent_after:
            st.pending.append((cmd, inv))


def _applying_finished(fn):
    def wrapper(self, *a, **kw):
        apply_finished(self.ssm_backend, time.time())
        return fn(self, *a, **kw)
    wrapper.__name__ = fn.__name__
    return wrapper


# ------------------------------------------------------------------------------- the agent control
AGENT_MODES = {"removed": T.AGENT_ABSENT, "stopped": T.AGENT_STOPPED}


def _agent_backend(body: dict):
    from moto.ssm.models import ssm_backends

    return ssm_backends[str(body.get("account") or "123456789012")][str(body.get("region") or "us-east-1")]


def _known_instances(backend, ids) -> list:
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise ValueError("instanceIds must be a non-empty list of instance ids")
    ec2 = _ec2(backend)
    found, missing = [], []
    for iid in dict.fromkeys(ids):
        try:
            inst = ec2.get_instance_by_id(iid)
        except Exception:  # noqa: BLE001
            inst = None
        if inst is None:
            missing.append(iid)
        else:
            found.append(inst)
    if missing:
        raise ValueError(f"no such instances: {', '.join(missing)}")
    return found


def remove_agent(body: dict) -> dict:
    """POST /_fleet/agent/remove {"instanceIds": [...], "mode": "removed" | "stopped"}: the security agent on
    these instances is removed (package gone) or stopped (service stopped), as an AMI refresh in place, a package
    clean-up or a vendor script would leave it. Install runs that finished before are applied first; a run still
    going when this is called applies its own result when it ends (it started before the change)."""
    mode = body.get("mode", "removed")
    if mode not in AGENT_MODES:
        raise ValueError(f"mode must be one of {', '.join(AGENT_MODES)}, not {mode!r}")
    backend = _agent_backend(body)
    instances = _known_instances(backend, body.get("instanceIds"))
    st = sim_state(backend)
    with st.lock:
        apply_finished(backend, time.time())
        absent = [i.id for i in instances if agent_state(st, i) == T.AGENT_ABSENT]
        if mode == "stopped" and absent:
            raise ValueError(f"the agent is not installed on {', '.join(absent)}: it cannot be stopped")
        for inst in instances:
            st.agent[inst.id] = AGENT_MODES[mode]
        return {"mode": mode, "agents": {i.id: st.agent[i.id] for i in instances}}


def agent_states(body: dict) -> dict:
    """GET /_fleet/agent?instanceIds=i-1,i-2: {"agents": {id: "running" | "stopped" | "absent"}}."""
    backend = _agent_backend(body)
    instances = _known_instances(backend, body.get("instanceIds"))
    st = sim_state(backend)
    with st.lock:
        apply_finished(backend, time.time())
        return {"agents": {i.id: agent_state(st, i) for i in instances}}


def install() -> None:
    # Apply what finished runs did to the agent before a send decides which path the document takes.
    _Resp.describe_instance_information = describe_instance_information
    _Resp.send_command = _applying_finished(send_command)
    _Resp.list_commands = list_commands
    _Resp.list_command_invocations = list_command_invocations
    _Resp.get_command_invocation = get_command_invocation
    _Resp.cancel_command = cancel_command
