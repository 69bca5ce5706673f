"""Counts AWS API calls per operation, served at GET /_fleet/api-calls (DELETE resets).

Keys: "<service>.<Action>" for calls from clients (the Rust functions, tests, the CLI); "internal:<service>.<Action>"
for calls the Step Functions engine makes itself (its SDK integrations use the access key "ak"); "poller:",
"setup:" and "bench:" for the SQS poller's, stack.py's and make bench's own calls;
"items:<key>" for what batched calls carried (see items_of);
"lambda.Invoke:<function>" and "lambda.DurationMs:<function>" for Lambda invocations forwarded to cargo lambda watch (and, posted by poller.py,
for the SQS trigger's invocations; and each attempt to invoke an EventBridge rule's Lambda target, see events_lambda).
POST {"key": n} adds to a count.

The same router serves the local stack's other controls: /_fleet/faults (fault injection, see sfn.py),
/_fleet/ec2/run-instances (a large simulated fleet at once, see ec2_ext.bulk_launch),
/_fleet/events/ec2-running (EC2 "running" events for given instances, see api_fixes.post_ec2_running),
/_fleet/events/drop (lose EC2 "running" events, see ec2_ext.drop_control), /_fleet/events/ssm (SSM Run Command
events: lose, duplicate or put them, see ssm_events.control), /_fleet/agent/remove and GET
/_fleet/agent (the simulated security agent removed or stopped, and its state; see ssm_agent.remove_agent),
/_fleet/health.
"""

from __future__ import annotations

import collections
import json
import threading

#: access key id -> label prefix. "ak": the Step Functions engine's own SDK clients; the others are used by
#: the local stack's processes so that their calls do not mix with the system's.
LABELS = {"ak": "internal:", "fleet-poller": "poller:", "fleet-setup": "setup:", "fleet-bench": "bench:"}

COUNTER: collections.Counter = collections.Counter()
_lock = threading.Lock()


def count(key: str, n: int = 1) -> None:
    with _lock:
        COUNTER[key] += n


def snapshot() -> dict:
    with _lock:
        return dict(sorted(COUNTER.items()))


def reset() -> dict:
    with _lock:
        out = dict(sorted(COUNTER.items()))
        COUNTER.clear()
        return out


def _json_body(response) -> dict:
    body = response.body
    if isinstance(body, dict):  # moto's DynamoDB handler has parsed it already
        return body
    try:
        return json.loads(body or "{}")
    except (TypeError, ValueError):
        return {}


def items_of(response, op: str) -> int | None:
    """How many instances (or items) a batched call carried, for the API floor of `make bench`:
    SendCommand instance ids; DescribeInstanceInformation instance-id filter values (first page);
    DescribeInstances instance-id filter values (first page); DynamoDB writes and batch reads, items.
    None for calls that are not batched by instance (their floor is the call itself)."""
    if op == "ssm.SendCommand":
        return len(_json_body(response).get("InstanceIds") or [])
    if op == "ssm.DescribeInstanceInformation":
        body = _json_body(response)
        if body.get("NextToken"):
            return 0
        return sum(len(f.get("Values") or []) for f in body.get("Filters") or [] if f.get("Key") == "InstanceIds")
    if op == "ec2.DescribeInstances":
        qs = response.querystring
        if qs.get("NextToken"):
            return 0
        names = {k.split(".")[1] for k, v in qs.items() if k.startswith("Filter.") and k.endswith(".Name")
                 and v and v[0] == "instance-id"}
        if not names:
            return None
        return sum(1 for k in qs if any(k.startswith(f"Filter.{n}.Value.") for n in names))
    if op == "dynamodb.BatchWriteItem":
        return sum(len(v) for v in (_json_body(response).get("RequestItems") or {}).values())
    if op == "dynamodb.TransactWriteItems":
        return len(_json_body(response).get("TransactItems") or [])
    if op == "dynamodb.BatchGetItem":
        return sum(len(v.get("Keys") or []) for v in (_json_body(response).get("RequestItems") or {}).values())
    if op in ("dynamodb.PutItem", "dynamodb.UpdateItem", "dynamodb.DeleteItem"):
        return 1
    return None


def install() -> None:
    from moto.core.responses import BaseResponse
    from moto.moto_server import werkzeug_app

    orig_call_action = BaseResponse.call_action

    def counting_call_action(self):
        try:
            auth = self.headers.get("Authorization") or ""
            prefix = next((p for k, p in LABELS.items() if f"Credential={k}/" in auth), "")
            key = f"{prefix}{self.service_name}.{self._get_action()}"
        except Exception:  # noqa: BLE001
            key = f"{getattr(self, 'service_name', '?')}.?"
        count(key)
        try:
            n = items_of(self, key.split(":")[-1])
        except Exception:  # noqa: BLE001 - counting must never break a call
            n = None
        if n is not None:
            count(f"items:{key}", n)
        return orig_call_action(self)

    BaseResponse.call_action = counting_call_action

    orig_wsgi = werkzeug_app.DomainDispatcherApplication.__call__

    def wsgi(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_fleet/"):
            method = environ["REQUEST_METHOD"]
            if path == "/_fleet/api-calls" and method in ("GET", "DELETE"):
                body = json.dumps(reset() if method == "DELETE" else snapshot(), sort_keys=True).encode()
                status = "200 OK"
            elif path == "/_fleet/api-calls" and method == "POST":
                # other local processes (the SQS poller) add their own counts: {"key": n}
                try:
                    size = int(environ.get("CONTENT_LENGTH") or 0)
                    for k, n in json.loads(environ["wsgi.input"].read(size) or b"{}").items():
                        count(str(k), int(n))
                    body, status = json.dumps(snapshot(), sort_keys=True).encode(), "200 OK"
                except (ValueError, AttributeError) as ex:
                    body, status = json.dumps({"error": str(ex)}).encode(), "400 Bad Request"
            elif path == "/_fleet/faults" and method in ("GET", "POST", "DELETE"):
                from . import sfn

                with sfn._FAULTS_LOCK:
                    if method == "POST":
                        size = int(environ.get("CONTENT_LENGTH") or 0)
                        sfn.FAULTS.append(json.loads(environ["wsgi.input"].read(size) or b"{}"))
                    elif method == "DELETE":
                        sfn.FAULTS.clear()
                    body, status = json.dumps(sfn.FAULTS).encode(), "200 OK"
            elif path == "/_fleet/ec2/run-instances" and method == "POST":
                from . import ec2_ext

                try:
                    size = int(environ.get("CONTENT_LENGTH") or 0)
                    body = json.dumps(ec2_ext.bulk_launch(json.loads(environ["wsgi.input"].read(size) or b"{}"))).encode()
                    status = "200 OK"
                except (ValueError, KeyError) as ex:
                    body, status = json.dumps({"error": str(ex)}).encode(), "400 Bad Request"
            elif path == "/_fleet/events/ec2-running" and method == "POST":
                from . import api_fixes

                try:
                    size = int(environ.get("CONTENT_LENGTH") or 0)
                    out = api_fixes.post_ec2_running(json.loads(environ["wsgi.input"].read(size) or b"{}"))
                    body, status = json.dumps(out).encode(), "200 OK"
                except (ValueError, KeyError, TypeError) as ex:
                    body, status = json.dumps({"error": str(ex)}).encode(), "400 Bad Request"
            elif path == "/_fleet/events/drop" and method in ("GET", "POST", "DELETE"):
                from . import ec2_ext

                try:
                    size = int(environ.get("CONTENT_LENGTH") or 0)
                    data = json.loads(environ["wsgi.input"].read(size) or b"{}") if size else {}
                    body, status = json.dumps(ec2_ext.drop_control(method, data)).encode(), "200 OK"
                except (ValueError, KeyError, TypeError) as ex:
                    body, status = json.dumps({"error": str(ex)}).encode(), "400 Bad Request"
            elif path == "/_fleet/events/ssm" and method in ("GET", "POST", "DELETE"):
                from urllib.parse import parse_qs

                from . import ssm_events

                try:
                    size = int(environ.get("CONTENT_LENGTH") or 0)
                    if method == "GET":
                        data = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
                    else:
                        data = json.loads(environ["wsgi.input"].read(size) or b"{}") if size else {}
                    body, status = json.dumps(ssm_events.control(method, data)).encode(), "200 OK"
                except (ValueError, KeyError, TypeError) as ex:
                    body, status = json.dumps({"error": str(ex)}).encode(), "400 Bad Request"
            elif (path, method) in (("/_fleet/agent/remove", "POST"), ("/_fleet/agent", "GET")):
                from urllib.parse import parse_qs

                from . import ssm_agent

                try:
                    if method == "GET":
                        query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
                        ids = [i for i in query.pop("instanceIds", "").split(",") if i]
                        out = ssm_agent.agent_states({**query, "instanceIds": ids})
                    else:
                        size = int(environ.get("CONTENT_LENGTH") or 0)
                        out = ssm_agent.remove_agent(json.loads(environ["wsgi.input"].read(size) or b"{}"))
                    body, status = json.dumps(out).encode(), "200 OK"
                except (ValueError, KeyError, TypeError) as ex:
                    body, status = json.dumps({"error": str(ex)}).encode(), "400 Bad Request"
            elif path.startswith(("/_fleet/iam", "/_fleet/lambda")):
                from . import iam_ext, sfn

                size = int(environ.get("CONTENT_LENGTH") or 0)
                data = environ["wsgi.input"].read(size) if size else b""
                try:
                    code, out = (iam_ext.control if path.startswith("/_fleet/iam") else sfn.control)(method, path, data)
                    body, status = json.dumps(out).encode(), {200: "200 OK", 404: "404 Not Found"}.get(code, "400 Bad Request")
                except (ValueError, KeyError, TypeError) as ex:
                    body, status = json.dumps({"error": str(ex)}).encode(), "400 Bad Request"
            elif path == "/_fleet/health":
                body, status = b'{"ok": true}', "200 OK"
            else:
                body, status = b'{"error": "not found"}', "404 Not Found"
            start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        return orig_wsgi(self, environ, start_response)

    werkzeug_app.DomainDispatcherApplication.__call__ = wsgi
