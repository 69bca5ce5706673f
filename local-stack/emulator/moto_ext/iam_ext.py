"""IAM enforced as AWS does it, once the stack exists: every request is checked against its caller's policies.

moto 5.2.5 can check IAM (``INITIAL_NO_AUTH_ACTION_COUNT``), but its model is kinder and coarser than AWS in ways
this project relies on, so the decision is made here instead (moto still finds the caller from the access key,
checks the signature and collects the caller's inline and attached policies):

- **Resources.** moto reports ``*`` as the resource of almost every request, so a statement scoped to a table,
  a queue, a document or a state machine never matches (or, in other models, the action alone decides).
  :func:`request_context` names the resources of each request as AWS does for the operations this project
  uses (DynamoDB tables and indexes, SQS queues, SSM documents and instances, Step Functions state machines and
  executions, IAM roles, the event bus). Any other operation is checked against ``*``: only a statement with
  ``Resource: "*"`` allows it, which is never kinder than AWS.
- **TransactWriteItems / TransactGetItems** need no action of their own in AWS: each part is authorised by its
  item action (PutItem, UpdateItem, DeleteItem, ConditionCheckItem, GetItem) on its own table. BatchWriteItem
  and BatchGetItem are actions of their own, on every table they name.
- **SendCommand** is authorised on the document and on every target instance, and the instance's tags are the
  ``ssm:resourceTag/<key>`` condition keys (AWS's documented way to scope or deny Run Command by tag).
- **Conditions.** StringEquals/NotEquals/Like/NotLike (and IgnoreCase), ArnEquals/Like/NotEquals/NotLike, Bool,
  Null, each with ``IfExists`` and ``ForAnyValue:``/``ForAllValues:``. An operator this module does not know
  makes an Allow statement not apply and a Deny statement apply: an unknown condition can only deny.
- **Explicit Deny** beats any Allow; no Allow means denied (implicit deny).
- The denial is the service's own error: ``AccessDeniedException`` (HTTP 400) for the JSON services,
  ``UnauthorizedOperation`` (403) for EC2, ``AccessDenied`` (403) for IAM and STS, with AWS's message.

Not modelled (see local-stack/README.md): resource-based policies (the queue policy for EventBridge), session
policies, permissions boundaries, SCPs, credential expiry, and ``aws:`` global condition keys other than those
a request sets here.

Callers: the local stack's own processes (stack creation, tests, demo, bench) sign with the keys in
:data:`ROOT_KEYS`: they act as the account's root user, which no identity policy limits. Everything of the
system itself runs with credentials from STS AssumeRole of its role: each function, the SQS poller (as the
event source mapping, with the trigger function's role), the Step Functions engine's own calls (as the state
machine's role; see :func:`engine_client`), and the CLI in the end-to-end tests (the operator role).

Control: ``POST /_fleet/iam {"enforce": true}`` turns checking on (``GET`` reads it); ``/moto-api/reset`` does not
turn it off. ``GET /_fleet/iam/denials`` lists the requests denied so far (``DELETE`` clears them).
"""

from __future__ import annotations

import fnmatch
import json
import re
import threading
from typing import Any, Iterable

#: Access keys of the local stack's own processes: the account root user (never limited by identity policies).
ROOT_KEYS = {"testing", "fleet-setup", "fleet-bench"}

STATE = {"enforce": False}
DENIALS: list[dict] = []
_lock = threading.Lock()

#: Operations that read or write a DynamoDB table's items: the IAM action and the request's table parameter.
_DDB_TABLE_OPS = {
    "GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan", "DescribeTable", "CreateTable",
    "DeleteTable", "UpdateTable", "DescribeTimeToLive", "UpdateTimeToLive", "DescribeContinuousBackups",
}
_TRANSACT_PARTS = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                   "ConditionCheck": "ConditionCheckItem", "Get": "GetItem"}


class Decision:
    ALLOW = "allow"
    IMPLICIT_DENY = "implicit"
    EXPLICIT_DENY = "explicit"


# ------------------------------------------------------------------------------------------------ evaluation
def _as_list(v) -> list:
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def _glob(pattern: str, value: str, case: bool = True) -> bool:
    """IAM wildcards in actions and string conditions: * any run of characters, ? one character."""
    if not case:
        pattern, value = pattern.lower(), value.lower()
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, value, re.S) is not None


def _arn_regex(pattern: str) -> str:
    """An ARN pattern as IAM matches it (Resource, ArnLike): wildcards may stand in any colon-separated segment
    (partition, service, region, account, resource), * for any run of characters (also none: the empty account of
    an AWS-owned SSM document matches `*`), ? for one; a * that ends its segment may also match across colons, any
    other wildcard stays within its segment."""
    out = []
    for i, c in enumerate(pattern):
        if c == "*":
            out.append(".*" if i + 1 == len(pattern) or pattern[i + 1] == ":" else "[^:]*")
        elif c == "?":
            out.append("[^:]")
        else:
            out.append(re.escape(c))
    return "".join(out)


def _arn_glob(pattern: str, value: str) -> bool:
    """Case-sensitive ARN match (see _arn_regex)."""
    return re.fullmatch(_arn_regex(pattern), value, re.S) is not None


def _action_matches(patterns, action: str) -> bool:
    return any(_glob(p, action, case=False) for p in _as_list(patterns))


def _resource_matches(patterns, resource: str) -> bool:
    for p in _as_list(patterns):
        if p == "*":
            return True
        if resource == "*":
            continue       # a request on "*" (no resource-level permission) matches only Resource "*"
        if _arn_glob(p, resource):
            return True
    return False


_STRING_OPS = {
    "StringEquals": lambda a, e: a == e,
    "StringNotEquals": lambda a, e: a != e,
    "StringEqualsIgnoreCase": lambda a, e: a.lower() == e.lower(),
    "StringNotEqualsIgnoreCase": lambda a, e: a.lower() != e.lower(),
    "StringLike": lambda a, e: _glob(e, a),
    "StringNotLike": lambda a, e: not _glob(e, a),
    "ArnEquals": lambda a, e: a == e,
    "ArnLike": lambda a, e: _arn_glob(e, a),
    "ArnNotEquals": lambda a, e: a != e,
    "ArnNotLike": lambda a, e: not _arn_glob(e, a),
    "Bool": lambda a, e: a.lower() == e.lower(),
}
_NEGATED = {"StringNotEquals", "StringNotEqualsIgnoreCase", "StringNotLike", "ArnNotEquals", "ArnNotLike"}


class UnknownCondition(Exception):
    pass


def _condition_holds(op: str, key: str, expected, context: dict) -> bool:
    qualifier = None
    if ":" in op and op.split(":", 1)[0] in ("ForAnyValue", "ForAllValues"):
        qualifier, op = op.split(":", 1)
    if_exists = op.endswith("IfExists")
    if if_exists:
        op = op[: -len("IfExists")]
    # condition keys are case-insensitive; their values are not
    actual = next((v for k, v in context.items() if k.lower() == key.lower()), None)
    expected = [str(e) for e in _as_list(expected)]
    if op == "Null":
        want_absent = expected[0].lower() == "true"
        return (actual is None) == want_absent
    fn = _STRING_OPS.get(op)
    if fn is None:
        raise UnknownCondition(op)
    if actual is None:
        if if_exists:
            return True
        # a negated operator on a missing key: AWS evaluates it as true only for ForAllValues
        return qualifier == "ForAllValues"
    values = [str(a) for a in _as_list(actual)]
    if qualifier == "ForAllValues":
        return all(any(fn(a, e) for e in expected) for a in values)
    if op in _NEGATED:
        return all(all(fn(a, e) for e in expected) for a in values)
    return any(any(fn(a, e) for e in expected) for a in values)


def _conditions_hold(conditions: dict | None, context: dict, effect: str) -> bool:
    if not conditions:
        return True
    try:
        return all(_condition_holds(op, key, exp, context)
                   for op, block in conditions.items() for key, exp in block.items())
    except UnknownCondition:
        return effect == "Deny"   # never kinder than AWS: an unknown operator can only deny


def _statements(policy_docs: Iterable[dict]) -> Iterable[dict]:
    for doc in policy_docs:
        for st in _as_list(doc.get("Statement")):
            yield st


def evaluate(policy_docs: list[dict], action: str, resource: str, context: dict) -> str:
    allowed = False
    for st in _statements(policy_docs):
        if "Action" in st:
            if not _action_matches(st["Action"], action):
                continue
        elif "NotAction" in st:
            if _action_matches(st["NotAction"], action):
                continue
        else:
            continue
        if "Resource" in st:
            if not _resource_matches(st["Resource"], resource):
                continue
        elif "NotResource" in st:
            if _resource_matches(st["NotResource"], resource):
                continue
        if not _conditions_hold(st.get("Condition"), context, st.get("Effect", "Allow")):
            continue
        if st.get("Effect") == "Deny":
            return Decision.EXPLICIT_DENY
        if st.get("Effect") == "Allow":
            allowed = True
    return Decision.ALLOW if allowed else Decision.IMPLICIT_DENY


def policy_documents(policies: list) -> list[dict]:
    """moto's collect_policies() answer (inline JSON strings, managed Policy objects) -> policy documents."""
    docs = []
    for p in policies:
        if isinstance(p, str):
            text = p
        elif isinstance(p, dict):
            text = p.get("policy_document") or p.get("PolicyDocument") or json.dumps(p)
        else:  # moto ManagedPolicy / AWSManagedPolicy
            version = next(v for v in p.versions if v.is_default)
            text = version.document
        docs.append(json.loads(text) if isinstance(text, str) else text)
    return docs


def role_policy_documents(account: str, role_name: str) -> list[dict]:
    from moto.iam.models import iam_backends

    iam = iam_backends[account]["aws"]
    inline = [iam.get_role_policy(role_name, n)[1] for n in iam.list_role_policies(role_name)]
    attached, _ = iam.list_attached_role_policies(role_name)
    return policy_documents(inline + list(attached))


# ------------------------------------------------------------------------------------------ request context
def _params(resp) -> dict:
    body = getattr(resp, "body", None)
    if isinstance(body, dict):
        return body
    raw = getattr(resp, "raw_body", None) or body
    if isinstance(raw, (bytes, bytearray)):
        raw = raw.decode("utf-8", "replace")
    if isinstance(raw, str) and raw.strip().startswith("{"):
        try:
            return json.loads(raw)
        except ValueError:
            pass
    qs = getattr(resp, "querystring", None) or {}
    return {k: (v[0] if isinstance(v, list) and len(v) == 1 else v) for k, v in qs.items()}


def _instance_tags(account: str, region: str, instance_id: str) -> dict[str, str]:
    from moto.ec2.models import ec2_backends

    try:
        return dict(ec2_backends[account][region].tags.get(instance_id, {}))
    except Exception:  # noqa: BLE001
        return {}


def _token_state_machine(account: str, region: str, token: str) -> str | None:
    """The ARN of the state machine whose execution issued a callback task token (moto keeps the tokens in
    each execution's callback pool), or None."""
    try:
        from moto.stepfunctions.models import stepfunction_backends

        backend = stepfunction_backends[account][region]
        for sm in list(backend.state_machines):
            for ex in list(getattr(sm, "executions", []) or []):
                env = getattr(getattr(ex, "exec_worker", None), "env", None)
                pool = getattr(getattr(env, "callback_pool_manager", None), "_pool", None) or {}
                if token in pool:
                    return sm.arn
    except Exception:  # noqa: BLE001 - an engine without callbacks: nothing issued the token
        return None
    return None


def request_context(service: str, op: str, params: dict, account: str, region: str) -> list[tuple[str, str, dict]]:
    """[(iam action, resource ARN or "*", condition context)]: every pair must be allowed."""
    part = "aws"
    ctx: dict = {}
    if service == "dynamodb":
        table = lambda n: f"arn:{part}:dynamodb:{region}:{account}:table/{n}"  # noqa: E731
        if op in ("TransactWriteItems", "TransactGetItems"):
            out = []
            for item in params.get("TransactItems") or []:
                for kind, body in item.items():
                    out.append((f"dynamodb:{_TRANSACT_PARTS.get(kind, kind)}", table(body.get("TableName")), ctx))
            return out
        if op in ("BatchWriteItem", "BatchGetItem"):
            return [(f"dynamodb:{op}", table(t), ctx) for t in (params.get("RequestItems") or {})]
        if op in _DDB_TABLE_OPS and params.get("TableName"):
            arn = table(params["TableName"])
            if op in ("Query", "Scan") and params.get("IndexName"):
                arn += f"/index/{params['IndexName']}"
            return [(f"dynamodb:{op}", arn, ctx)]
        return [(f"dynamodb:{op}", "*", ctx)]
    if service == "ssm":
        if op == "SendCommand":
            out = [("ssm:SendCommand", document_arn(params.get("DocumentName") or "", region, account), ctx)]
            for iid in params.get("InstanceIds") or []:
                tags = {f"ssm:resourceTag/{k}": v for k, v in _instance_tags(account, region, iid).items()}
                out.append(("ssm:SendCommand", f"arn:{part}:ec2:{region}:{account}:instance/{iid}", tags))
            if params.get("Targets"):
                out.append(("ssm:SendCommand", f"arn:{part}:ec2:{region}:{account}:instance/*", ctx))
            return out
        if op in ("GetDocument", "DescribeDocument", "DescribeDocumentPermission") and params.get("Name"):
            return [(f"ssm:{op}", document_arn(params["Name"], region, account), ctx)]
        if op in ("GetServiceSetting", "UpdateServiceSetting", "ResetServiceSetting") and params.get("SettingId"):
            sid = params["SettingId"]
            arn = sid if sid.startswith("arn:") else f"arn:{part}:ssm:{region}:{account}:servicesetting{sid}"
            return [(f"ssm:{op}", arn, ctx)]
        return [(f"ssm:{op}", "*", ctx)]
    if service == "stepfunctions":
        if params.get("stateMachineArn") and op in ("StartExecution", "StartSyncExecution", "ListExecutions",
                                                     "DescribeStateMachine", "UpdateStateMachine"):
            return [(f"states:{op}", params["stateMachineArn"], ctx)]
        if params.get("executionArn"):
            return [(f"states:{op}", params["executionArn"], ctx)]
        if op in ("SendTaskSuccess", "SendTaskFailure", "SendTaskHeartbeat") and params.get("taskToken"):
            # AWS authorises a callback on the state machine whose execution issued the token. A token no
            # execution issued is not authorised against anything: Step Functions answers InvalidToken.
            owner = _token_state_machine(account, region, str(params["taskToken"]))
            return [(f"states:{op}", owner, ctx)] if owner else []
        return [(f"states:{op}", "*", ctx)]
    if service == "sqs":
        # SendMessageBatch, DeleteMessageBatch and ChangeMessageVisibilityBatch are authorised by the
        # single-message action.
        op = op[: -len("Batch")] if op.endswith("MessageBatch") or op == "ChangeMessageVisibilityBatch" else op
        url = params.get("QueueUrl") or ""
        name = url.rstrip("/").split("/")[-1] if url else params.get("QueueName")
        if name:
            return [(f"sqs:{op}", f"arn:{part}:sqs:{region}:{account}:{name}", ctx)]
        return [(f"sqs:{op}", "*", ctx)]
    if service == "iam":
        role = params.get("RoleName")
        if role:
            c = dict(ctx)
            if params.get("PolicyArn"):
                c["iam:PolicyARN"] = params["PolicyArn"]
            if op == "CreateRole":   # the role does not exist yet: its ARN from the path asked for
                arn = f"arn:{part}:iam::{account}:role{params.get('Path') or '/'}{role}"
            else:
                arn = _role_arn(account, role)
            return [(f"iam:{op}", arn, c)]
        if params.get("InstanceProfileName"):
            return [(f"iam:{op}", f"arn:{part}:iam::{account}:instance-profile/{params['InstanceProfileName']}", ctx)]
        if params.get("PolicyArn"):
            return [(f"iam:{op}", params["PolicyArn"], ctx)]
        return [(f"iam:{op}", "*", ctx)]
    if service == "sts":
        if op == "AssumeRole":
            return [("sts:AssumeRole", params.get("RoleArn") or "*", ctx)]
        return [(f"sts:{op}", "*", ctx)]
    if service == "events":
        if op == "PutEvents":
            buses = {e.get("EventBusName") or "default" for e in params.get("Entries") or []} or {"default"}
            return [("events:PutEvents", b if b.startswith("arn:") else
                     f"arn:{part}:events:{region}:{account}:event-bus/{b}", ctx) for b in sorted(buses)]
        if params.get("Name") or params.get("Rule"):
            return [(f"events:{op}", f"arn:{part}:events:{region}:{account}:rule/{params.get('Name') or params.get('Rule')}", ctx)]
        return [(f"events:{op}", "*", ctx)]
    if service == "ec2" and op in ("RunInstances", "AssociateIamInstanceProfile",
                                   "ReplaceIamInstanceProfileAssociation"):
        # giving an instance a profile passes its role to EC2: iam:PassRole on the role, as AWS requires
        out = [(f"ec2:{op}", "*", ctx)]
        for role_arn in _profile_role_arns(account, params.get("IamInstanceProfile.Name"),
                                           params.get("IamInstanceProfile.Arn")):
            out.append(("iam:PassRole", role_arn, {"iam:PassedToService": "ec2.amazonaws.com"}))
        return out
    prefix = {"ec2": "ec2", "logs": "logs", "cloudformation": "cloudformation"}.get(service, service)
    return [(f"{prefix}:{op}", "*", ctx)]


#: Document name prefixes SSM reserves for AWS (CreateDocument refuses them): a document so named is AWS-owned.
AWS_DOCUMENT_PREFIXES = ("aws", "amazon", "amzn")


def document_arn(name: str, region: str, account: str) -> str:
    """An SSM document's ARN as IAM sees it: a document given by ARN as given; an AWS-owned document (AWS-RunShellScript,
    AWS-UpdateSSMAgent, ...) without an account, arn:aws:ssm:REGION::document/NAME; the account's own with it."""
    if name.startswith("arn:"):
        return name
    if name.lower().startswith(AWS_DOCUMENT_PREFIXES):
        return f"arn:aws:ssm:{region}::document/{name}"
    return f"arn:aws:ssm:{region}:{account}:document/{name}"


def _profile_role_arns(account: str, name: str | None, arn: str | None) -> list[str]:
    """The role ARNs of an instance profile given by name or ARN ([] if none given or it does not exist: EC2
    refuses the request itself then)."""
    from moto.iam.models import iam_backends

    if not name and not arn:
        return []
    if not name:
        name = str(arn).rsplit("/", 1)[-1]
    try:
        profile = iam_backends[account]["aws"].get_instance_profile(name)
    except Exception:  # noqa: BLE001
        return []
    return [r.arn for r in profile.roles]


def _role_arn(account: str, role_name: str) -> str:
    from moto.iam.models import iam_backends

    try:
        return iam_backends[account]["aws"].get_role(role_name).arn
    except Exception:  # noqa: BLE001
        return f"arn:aws:iam::{account}:role/{role_name}"


# ------------------------------------------------------------------------------------------------ denial
def denial_message(principal: str, action: str, resource: str, decision: str) -> str:
    on = f" on resource: {resource}" if resource != "*" else ""
    why = ("with an explicit deny in an identity-based policy" if decision == Decision.EXPLICIT_DENY
           else f"because no identity-based policy allows the {action} action")
    return f"User: {principal} is not authorized to perform: {action}{on} {why}"


def _raise_denied(service: str, message: str) -> None:
    from xml.sax.saxutils import escape

    from moto.core.exceptions import JsonRESTError, _RESTError

    if service == "ec2":
        err = _RESTError("UnauthorizedOperation", "")
        err.code = 403
        err.description = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>UnauthorizedOperation</Code>'
            f"<Message>{escape('You are not authorized to perform this operation. ' + message)}</Message>"
            "</Error></Errors><RequestID>00000000-0000-0000-0000-000000000000</RequestID></Response>")
        raise err
    if service in ("iam", "sts"):
        # IAM's and STS's own error shape (ErrorResponse/Error, not moto's ErrorResponse/Errors/Error, which the
        # Rust SDK cannot read a code from)
        err = _RESTError("AccessDenied", message)
        err.code = 403
        ns = "https://iam.amazonaws.com/doc/2010-05-08/" if service == "iam" else "https://sts.amazonaws.com/doc/2011-06-15/"
        err.description = (
            f'<ErrorResponse xmlns="{ns}"><Error><Type>Sender</Type><Code>AccessDenied</Code>'
            f"<Message>{escape(message)}</Message></Error>"
            "<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>")
        raise err
    raise JsonRESTError("AccessDeniedException", message)


def check(resp, principal: str, policies: list[dict]) -> None:
    service = resp.service_name
    op = resp._get_action()
    account, region = resp.current_account, resp.region
    for action, resource, context in request_context(service, op, _params(resp), account, region):
        decision = evaluate(policies, action, resource, context)
        if decision != Decision.ALLOW:
            msg = denial_message(principal, action, resource, decision)
            with _lock:
                DENIALS.append({"principal": principal, "action": action, "resource": resource,
                                "decision": decision, "message": msg})
            _raise_denied(service, msg)


def authorise_invoke(account: str, role_arn: str, function_arn: str) -> str | None:
    """The state machine role's lambda:InvokeFunction on a function: None if allowed, else the denial message."""
    if not STATE["enforce"] or not role_arn:
        return None
    docs = role_policy_documents(account, role_arn.split("/")[-1])
    decision = evaluate(docs, "lambda:InvokeFunction", function_arn, {})
    if decision == Decision.ALLOW:
        return None
    principal = f"arn:aws:sts::{account}:assumed-role/{role_arn.split('/')[-1]}/StepFunctions"
    msg = denial_message(principal, "lambda:InvokeFunction", function_arn, decision)
    with _lock:
        DENIALS.append({"principal": principal, "action": "lambda:InvokeFunction", "resource": function_arn,
                        "decision": decision, "message": msg})
    return msg


# -------------------------------------------------------------------------------- the state machine's role
_ENGINE_KEYS: dict[str, tuple[str, str, str]] = {}
_engine_lock = threading.Lock()


def role_credentials(account: str, role_arn: str, session: str = "StepFunctions") -> tuple[str, str, str]:
    """STS AssumeRole in-process (cached per role): the credentials the engine signs with for that role."""
    with _engine_lock:
        if role_arn not in _ENGINE_KEYS:
            from moto.sts.models import sts_backends

            role = sts_backends[account]["aws"].assume_role(
                region_name="us-east-1", role_session_name=session, role_arn=role_arn, policy="",
                duration=3600, external_id="")
            _ENGINE_KEYS[role_arn] = (role.access_key_id, role.secret_access_key, role.session_token)
            from . import counter

            counter.LABELS[role.access_key_id] = "internal:"
        return _ENGINE_KEYS[role_arn]


def engine_client(region: str, service: str, state_credentials: Any = None):
    """moto's Step Functions engine signs its SDK integrations (startExecution.sync:2 and its polling) with the
    key "ak", which no policy limits. Here they run as the execution's role (or the Task's Credentials role)."""
    import boto3
    from botocore.config import Config
    from moto.stepfunctions.parser.asl.utils.boto_client import TimeoutSeconds, moto_server_port

    role_arn = getattr(state_credentials, "role_arn", None)
    if role_arn:
        account = role_arn.split(":")[4] or "123456789012"
        ak, sk, token = role_credentials(account, role_arn)
    else:
        ak, sk, token = "ak", "sk", None
    return boto3.client(
        service_name=service, region_name=region, endpoint_url=f"http://localhost:{moto_server_port()}",
        aws_access_key_id=ak, aws_secret_access_key=sk, aws_session_token=token,
        config=Config(parameter_validation=False, retries={"max_attempts": 0, "total_max_attempts": 1},
                      connect_timeout=TimeoutSeconds.DEFAULT_TIMEOUT_SECONDS,
                      read_timeout=TimeoutSeconds.DEFAULT_TIMEOUT_SECONDS))


def _patch_engine_clients() -> None:
    import importlib
    import pkgutil

    import moto.stepfunctions.parser.asl as asl
    from moto.stepfunctions.parser.asl.utils import boto_client

    boto_client.boto_client_for = engine_client
    # the modules that imported boto_client_for by name (some modules of the trimmed engine do not import)
    for mod in pkgutil.walk_packages(asl.__path__, asl.__name__ + "."):
        if "antlr" in mod.name or "static_analyser" in mod.name:
            continue
        try:
            m = importlib.import_module(mod.name)
        except ImportError:
            continue
        if getattr(m, "boto_client_for", None) is not None and m is not boto_client:
            m.boto_client_for = engine_client


def _check_signature(resp, req) -> None:
    """moto recomputes the SigV4 signature from the request. For a form-encoded (query protocol) POST the raw
    body is gone once parsed, and moto re-encodes the parsed form with "+" for spaces, as boto3 does; the Rust
    SDK encodes them "%20" (RFC 3986). Both are valid: try the body as each would have encoded it."""
    from urllib.parse import quote, urlencode

    try:
        req.check_signature()
        return
    except Exception:  # noqa: BLE001 - moto raises its service's SignatureDoesNotMatch error
        data = getattr(resp, "data", None)
        if not isinstance(data, dict) or not data or req._body:
            raise
    items = [(k, v) for k, vs in data.items() for v in (vs if isinstance(vs, list) else [vs])]
    req._body = urlencode(items, quote_via=quote, safe="-_.~").encode()
    req.check_signature()


# ------------------------------------------------------------------------------------------------ install
def install() -> None:
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.iam.access_control import IAMRequest

    def authenticate_and_authorize(self, iam_request_cls, resource="*"):
        if not STATE["enforce"]:
            return
        auth = self.headers.get("Authorization") or ""
        m = re.search(r"Credential=([^/]+)/", auth)
        if m and m.group(1) in ROOT_KEYS:
            return
        from urllib.parse import urlparse

        parsed_url = urlparse(self.uri)
        path = self.raw_path + ("?" + parsed_url.query if parsed_url.query else "")
        req = IAMRequest(account_id=self.current_account, method=self.method, path=path, data=self.data,
                         body=self.raw_body, headers=self.headers, action=self._get_action())
        _check_signature(self, req)
        if req._action == "sts:GetCallerIdentity":
            return
        check(self, req._access_key.arn, policy_documents(req._access_key.collect_policies()))

    ActionAuthenticatorMixin._authenticate_and_authorize_action = authenticate_and_authorize
    _patch_engine_clients()


def control(method: str, path: str, body: bytes) -> tuple[int, Any]:
    if path == "/_fleet/iam":
        if method == "POST":
            data = json.loads(body or b"{}")
            if "enforce" in data:
                STATE["enforce"] = bool(data["enforce"])
            from . import counter

            for key, label in (data.get("labels") or {}).items():   # the API counter's label for a caller
                counter.LABELS[str(key)] = str(label)
        return 200, dict(STATE)
    if path == "/_fleet/iam/denials":
        with _lock:
            out = list(DENIALS)
            if method == "DELETE":
                DENIALS.clear()
        return 200, out
    return 404, {"error": f"no such control {path}"}
