"""Patches to moto 5.2.5's Step Functions engine (moto/stepfunctions/parser, a trimmed LocalStack engine).

1. JSONata: the engine's evaluator is cut out (``_eval_jsonata`` is None), so every ``$var`` read in JSONPath mode
   (variables from ``Assign``) failed with "'NoneType' object is not callable". jsonata-python fills it in, and the
   variable declarations it builds now escape strings properly.
2. Service integrations: the engine stubs the mapping of ASL parameter names onto botocore member names and back,
   so e.g. ``arn:aws:states:::states:startExecution.sync:2`` failed with KeyError 'StateMachineArn'.
3. StartExecution without a name: the parser backend named every such execution "None".
5. $$.Execution.RedriveCount and RedriveExecution: see redrive.py.
4. Lambda tasks (plain function ARNs and ``arn:aws:states:::lambda:invoke``) are POSTed to ``cargo lambda watch``
   at $LAMBDA_ENDPOINT/2015-03-31/functions/<name>/invocations instead of moto's Docker-based Lambda.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
import threading
import os
import uuid

import requests

from . import counter

LAMBDA_TIMEOUT_SECONDS = 900


def lambda_endpoint(name: str | None = None) -> str:
    """Where a function is served: its own cargo lambda watch (one per function, with the function's own
    environment and role credentials; set by run.py through POST /_fleet/lambda), else $LAMBDA_ENDPOINT."""
    if name and name in ENDPOINTS:
        return ENDPOINTS[name]
    return os.environ.get("LAMBDA_ENDPOINT", "http://127.0.0.1:9099").rstrip("/")


#: function name -> base URL of the cargo lambda watch that serves it.
ENDPOINTS: dict[str, str] = {}


def control(method: str, path: str, body: bytes):
    """/_fleet/lambda: GET the function endpoints; POST {"endpoints": {"<function>": "http://127.0.0.1:port"}}."""
    if method == "POST":
        data = json.loads(body or b"{}")
        ENDPOINTS.update({str(k): str(v).rstrip("/") for k, v in (data.get("endpoints") or {}).items()})
    return 200, {"endpoints": dict(ENDPOINTS)}


def function_name(function: str) -> str:
    """Function name, ARN or partial ARN, with or without qualifier -> the name cargo lambda watch serves."""
    if ":function:" in function:
        return function.split(":function:", 1)[1].split(":", 1)[0]
    return function.split(":", 1)[0]      # name or name:qualifier


# Fault injection for end-to-end tests: POST /_fleet/faults {"function": "send-command", "errorType": "...",
# "times": 1, "after": true}, or {"function": ..., "delaySeconds": n, "times": 1}. "after": the function runs (its side effects happen), then the task fails as if
# the response were lost: the hardest case for idempotency.
FAULTS: list[dict] = []
_FAULTS_LOCK = threading.Lock()


def take_fault(name: str):
    with _FAULTS_LOCK:
        for f in FAULTS:
            if f.get("function") == name and f.get("times", 1) > 0:
                f["times"] = f.get("times", 1) - 1
                return dict(f)
    return None


def _fault_response(fault: dict) -> dict:
    return {"StatusCode": 200, "FunctionError": "Unhandled", "ExecutedVersion": "$LATEST",
            "Payload": {"errorType": fault.get("errorType", "FleetInstall.AwsRejected"),
                        "errorMessage": fault.get("errorMessage", "local stack: injected fault")}}


def invoke(parameters: dict, region: str = "us-east-1", state_credentials=None) -> dict:
    fault = take_fault(function_name(str(parameters["FunctionName"])))
    if fault and fault.get("delaySeconds"):
        # {"delaySeconds": n}: the invocation starts n seconds late and then runs normally (a slow cold start,
        # or the gap in which the fleet changes between two steps).
        time.sleep(float(fault["delaySeconds"]))
        return _invoke(parameters, region, state_credentials)
    if fault and not fault.get("after"):
        return _fault_response(fault)
    resp = _invoke(parameters, region, state_credentials)
    if fault:
        return _fault_response(fault)
    return resp


def _invoke(parameters: dict, region: str = "us-east-1", state_credentials=None) -> dict:
    name = function_name(str(parameters["FunctionName"]))
    payload = parameters.get("Payload")
    if payload is None:
        payload = b"{}"
    elif isinstance(payload, str):
        payload = payload.encode()
    elif not isinstance(payload, (bytes, bytearray)):
        payload = json.dumps(payload).encode()
    function_arn = str(parameters["FunctionName"])
    if not function_arn.startswith("arn:"):
        function_arn = f"arn:aws:lambda:{region}:123456789012:function:{function_arn}"
    role_arn = getattr(state_credentials, "role_arn", None)
    if role_arn:
        from . import iam_ext

        denied = iam_ext.authorise_invoke(role_arn.split(":")[4], role_arn, function_arn)
        if denied:
            # What Step Functions reports when its role may not invoke the function (Lambda answers 403).
            return {"StatusCode": 403, "FunctionError": "Unhandled", "ExecutedVersion": "$LATEST",
                    "Payload": {"errorType": "Lambda.AWSLambdaException",
                                "errorMessage": f"{denied} (Service: Lambda, Status Code: 403, "
                                                f"Error Code: AccessDeniedException)"}}
    counter.count(f"lambda.Invoke:{name}")
    url = f"{lambda_endpoint(name)}/2015-03-31/functions/{name}/invocations"
    started = time.monotonic()
    try:
        r = requests.post(url, data=payload, headers={"Content-Type": "application/json"},
                          timeout=LAMBDA_TIMEOUT_SECONDS)
        # the handler's wall time as the caller sees it (what Lambda bills, plus the local hop)
        counter.count(f"lambda.DurationMs:{name}", round((time.monotonic() - started) * 1000))
    except requests.RequestException as ex:
        # As if the Lambda service itself failed: ASL can Retry on Lambda.ServiceException.
        return {"StatusCode": 200, "FunctionError": "Unhandled", "ExecutedVersion": "$LATEST",
                "Payload": {"errorType": "Lambda.ServiceException",
                            "errorMessage": f"local stack: cannot reach cargo lambda watch at {url}: {ex}"}}
    try:
        body = r.json()
    except ValueError:
        body = r.text
    resp = {"StatusCode": 200, "ExecutedVersion": "$LATEST", "Payload": body}
    # cargo lambda watch answers a handler error with HTTP 500 and {errorType, errorMessage};
    # real Lambda answers 200 with the X-Amz-Function-Error header.
    if r.status_code >= 400 or r.headers.get("X-Amz-Function-Error"):
        resp["FunctionError"] = r.headers.get("X-Amz-Function-Error", "Unhandled")
        if not isinstance(body, dict) or "errorType" not in body:
            resp["Payload"] = {"errorType": "Lambda.Unknown",
                               "errorMessage": f"HTTP {r.status_code} from cargo lambda watch: {str(body)[:2000]}"}
    return resp


def _patch_lambda() -> None:
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import lambda_eval_utils

    lambda_eval_utils._invoke_lambda_function = invoke


def _patch_jsonata() -> None:
    import jsonata as pyjsonata
    from moto.stepfunctions.parser.asl.eval import states as _states
    from moto.stepfunctions.parser.asl.eval import variable_store as _vs
    from moto.stepfunctions.parser.asl.jsonata import jsonata as moto_jsonata
    from moto.stepfunctions.parser.asl.utils.encoding import to_json_str

    def eval_jsonata(expr):
        try:
            out = pyjsonata.Jsonata(expr).evaluate(None)
        except Exception as ex:  # noqa: BLE001
            raise moto_jsonata.JSONataException("UNKNOWN", str(ex))
        return None if out is None else json.loads(json.dumps(out))

    def encode_declarations(bindings):
        return "".join(
            f"{ref}:={json.dumps(val) if isinstance(val, str) else to_json_str(val, separators=(',', ':'))};"
            for ref, val in bindings.items())

    moto_jsonata._eval_jsonata = eval_jsonata
    for mod in (moto_jsonata, _vs, _states):
        if hasattr(mod, "encode_jsonata_variable_declarations"):
            mod.encode_jsonata_variable_declarations = encode_declarations


def _patch_service_shapes() -> None:
    import botocore.session
    from botocore import xform_name
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service import (
        StateTaskService,
    )

    session = botocore.session.get_session()
    cache: dict = {}

    def op_model(self, boto_service_name, service_action_name):
        svc = self._get_boto_service_name(boto_service_name=boto_service_name)
        act = self._get_boto_service_action(service_action_name=service_action_name)
        if (svc, act) not in cache:
            try:
                sm = session.get_service_model(svc)
                names = {xform_name(n): n for n in sm.operation_names}
                cache[(svc, act)] = sm.operation_model(names[act]) if act in names else None
            except Exception:  # noqa: BLE001
                cache[(svc, act)] = None
        return cache[(svc, act)]

    def to_boto(v, shape):
        if shape is None:
            return v
        if shape.type_name == "structure" and isinstance(v, dict):
            low = {m.lower(): m for m in shape.members}
            new = {}
            for k, x in v.items():
                m = low.get(k.lower())
                new[m or k] = to_boto(x, shape.members[m]) if m else x
            v.clear()
            v.update(new)
        elif shape.type_name == "list" and isinstance(v, list):
            for i, x in enumerate(v):
                v[i] = to_boto(x, shape.member)
        elif shape.type_name == "map" and isinstance(v, dict):
            for k in v:
                v[k] = to_boto(v[k], shape.value)
        return v

    def from_boto(v, shape):
        if isinstance(v, _dt.datetime):
            return int(v.timestamp() * 1000)
        if shape is None:
            return v
        if shape.type_name == "structure" and isinstance(v, dict):
            new = {k[:1].upper() + k[1:]: from_boto(x, shape.members.get(k)) for k, x in v.items()}
            v.clear()
            v.update(new)
        elif shape.type_name == "list" and isinstance(v, list):
            for i, x in enumerate(v):
                v[i] = from_boto(x, shape.member)
        elif shape.type_name == "map" and isinstance(v, dict):
            for k in v:
                v[k] = from_boto(v[k], shape.value)
        return v

    def normalise_parameters(self, parameters, boto_service_name=None, service_action_name=None):
        op = op_model(self, boto_service_name, service_action_name)
        if op is not None and op.input_shape is not None:
            to_boto(parameters, op.input_shape)

    def normalise_response(self, response, boto_service_name=None, service_action_name=None):
        op = op_model(self, boto_service_name, service_action_name)
        if op is not None and op.output_shape is not None and isinstance(response, dict):
            response.pop("ResponseMetadata", None)
            from_boto(response, op.output_shape)

    StateTaskService._normalise_parameters = normalise_parameters
    StateTaskService._normalise_response = normalise_response


def _patch_unnamed_executions() -> None:
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    orig = StepFunctionsParserBackend.start_execution

    def start_execution(self, state_machine_arn, name=None, execution_input=None, trace_header=None):
        return orig(self, state_machine_arn, name or str(uuid.uuid4()), execution_input, trace_header)

    StepFunctionsParserBackend.start_execution = start_execution


def install() -> None:
    from moto.core.config import default_user_config

    default_user_config["stepfunctions"]["execute_state_machine"] = True
    _patch_lambda()
    _patch_jsonata()
    _patch_service_shapes()
    _patch_unnamed_executions()
