"""Counts AWS API calls per operation, served at GET /_fleet/api-calls (DELETE resets).

Keys: "<service>.<Action>" for calls from clients (the Rust functions, tests, the CLI); "internal:<service>.<Action>"
for calls the Step Functions engine makes itself (its SDK integrations use the access key "ak"); "poller:" and
"setup:" for the SQS poller's and stack.py's calls;
"lambda.Invoke:<function>" for Lambda invocations forwarded to cargo lambda watch (and, posted by poller.py,
for the SQS trigger's invocations). POST {"key": n} adds to a count.
"""

from __future__ import annotations

import collections
import json
import threading

#: access key id -> label prefix. "ak": the Step Functions engine's own SDK clients; the others are used by
#: the local stack's processes so that their calls do not mix with the system's.
LABELS = {"ak": "internal:", "fleet-poller": "poller:", "fleet-setup": "setup:"}

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
            elif path == "/_fleet/health":
                body, status = b'{"ok": true}', "200 OK"
            else:
                body, status = b'{"error": "not found"}', "404 Not Found"
            start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        return orig_wsgi(self, environ, start_response)

    werkzeug_app.DomainDispatcherApplication.__call__ = wsgi
