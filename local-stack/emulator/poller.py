#!/usr/bin/env python3
"""Emulates the template's SQS -> StartInstallFunction event source mapping (moto cannot invoke Lambda from SQS).

Like Lambda's SQS poller it gathers up to BatchSize messages, or what arrived within
MaximumBatchingWindowInSeconds of the first one, invokes the function once with a real SQS event
({"Records": [{messageId, receiptHandle, body, attributes, messageAttributes, md5OfBody, eventSource: "aws:sqs",
eventSourceARN, awsRegion}]}), and then:
- function error (HTTP 500 from cargo lambda watch, or X-Amz-Function-Error): deletes nothing; the messages come
  back after the visibility timeout;
- success with ReportBatchItemFailures: deletes every message except those in batchItemFailures[].itemIdentifier
  (an unknown or empty identifier fails the whole batch, as Lambda does);
- success without it: deletes the whole batch.
The queue's RedrivePolicy (created from the template) makes SQS itself (moto implements it) move a message to the
dead-letter queue once it has been received maxReceiveCount times.

    .venv/bin/python local-stack/emulator/poller.py [--stack target/local-stack/stack.json] [--batch-size N]
        [--window SECONDS] [--failure-visibility SECONDS]

Every invocation is counted in the moto server as "lambda.Invoke:<function>" (GET /_fleet/api-calls).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
import urllib.request

import boto3
import requests
from botocore.config import Config

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
log = logging.getLogger("poller")


class Poller:
    def __init__(self, stack: dict, mapping: dict, lambda_endpoint: str, batch_size: int | None = None,
                 window: float | None = None, failure_visibility: int | None = None):
        self.stack = stack
        self.m = mapping
        self.function = mapping["Function"]
        self.queue_url = mapping["QueueUrl"]
        self.queue_arn = mapping["QueueArn"]
        self.batch_size = batch_size or mapping["BatchSize"]
        self.window = mapping["MaximumBatchingWindowInSeconds"] if window is None else window
        self.report_failures = "ReportBatchItemFailures" in (mapping.get("FunctionResponseTypes") or [])
        self.failure_visibility = failure_visibility
        self.lambda_url = f"{lambda_endpoint.rstrip('/')}/2015-03-31/functions/{self.function}/invocations"
        self.endpoint = stack["endpoint"]
        # Lambda's event source mapping reads the queue with the function's execution role: run.py passes
        # that role's credentials as POLLER_AWS_*.
        self.sqs = boto3.client("sqs", endpoint_url=self.endpoint, region_name=stack["region"],
                                aws_access_key_id=os.environ.get("POLLER_AWS_ACCESS_KEY_ID", "fleet-poller"),
                                aws_secret_access_key=os.environ.get("POLLER_AWS_SECRET_ACCESS_KEY", "testing"),
                                aws_session_token=os.environ.get("POLLER_AWS_SESSION_TOKEN"),
                                config=Config(retries={"total_max_attempts": 3}))
        self.local_sqs = boto3.client("sqs", endpoint_url=self.endpoint, region_name=stack["region"],
                                      aws_access_key_id="fleet-setup", aws_secret_access_key="testing")
        self.stopping = False
        self.stats = {"invocations": 0, "messages": 0, "deleted": 0, "failed": 0}

    def _count(self, **counts: int) -> None:
        try:
            req = urllib.request.Request(self.endpoint + "/_fleet/api-calls", method="POST",
                                         data=json.dumps({f"lambda.{k}:{self.function}": n for k, n in counts.items()}).encode(),
                                         headers={"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=2).read()
        except OSError:
            pass

    def gather(self) -> list[dict]:
        batch: list[dict] = []
        first = None
        while not self.stopping and len(batch) < self.batch_size:
            wait = 1 if first is None else max(0, min(1, int(first + self.window - time.time())))
            resp = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=min(10, self.batch_size - len(batch)),
                WaitTimeSeconds=wait, AttributeNames=["All"], MessageAttributeNames=["All"])
            msgs = resp.get("Messages") or []
            if not msgs and first is None:
                time.sleep(0.2)   # moto does not always long-poll
            if msgs and first is None:
                first = time.time()
            batch += msgs
            if first is not None and (time.time() - first >= self.window or (not msgs and self.window == 0)):
                break
        return batch

    def record(self, m: dict) -> dict:
        attrs = m.get("Attributes") or {}
        mattrs = {}
        for k, v in (m.get("MessageAttributes") or {}).items():
            mattrs[k] = {"stringValue": v.get("StringValue"), "binaryValue": v.get("BinaryValue"),
                         "stringListValues": [], "binaryListValues": [], "dataType": v.get("DataType")}
        return {
            "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
            "attributes": {k: attrs[k] for k in ("ApproximateReceiveCount", "SentTimestamp", "SenderId",
                                                 "ApproximateFirstReceiveTimestamp") if k in attrs},
            "messageAttributes": mattrs, "md5OfBody": m.get("MD5OfBody", ""), "eventSource": "aws:sqs",
            "eventSourceARN": self.queue_arn, "awsRegion": self.stack["region"],
        }

    def invoke(self, batch: list[dict]) -> set[str] | None:
        """Message ids to delete, or None when the whole batch failed."""
        event = {"Records": [self.record(m) for m in batch]}
        self.stats["invocations"] += 1
        started = time.monotonic()
        try:
            r = requests.post(self.lambda_url, data=json.dumps(event), timeout=900,
                              headers={"Content-Type": "application/json"})
            self._count(Invoke=1, DurationMs=round((time.monotonic() - started) * 1000))
        except requests.RequestException as ex:
            self._count(Invoke=1)
            log.warning("invoke %s failed: %s", self.function, ex)
            return None
        if r.status_code >= 300 or r.headers.get("X-Amz-Function-Error"):
            log.warning("%s returned an error (HTTP %s): %s", self.function, r.status_code, r.text[:500])
            return None
        ids = {m["MessageId"] for m in batch}
        if not self.report_failures:
            return ids
        try:
            body = r.json()
        except ValueError:
            body = None
        failures = (body or {}).get("batchItemFailures") if isinstance(body, dict) else None
        if not failures:
            return ids
        failed = set()
        for f in failures:
            ident = (f or {}).get("itemIdentifier")
            if not ident or ident not in ids:
                log.warning("batchItemFailures has an unknown itemIdentifier %r: the whole batch failed", ident)
                return None
            failed.add(ident)
        return ids - failed

    def settle(self, batch: list[dict], delete: set[str] | None) -> None:
        delete = delete or set()
        done = [m for m in batch if m["MessageId"] in delete]
        kept = [m for m in batch if m["MessageId"] not in delete]
        for i in range(0, len(done), 10):
            self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=[
                {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(done[i:i + 10])])
        if kept and self.failure_visibility is not None:
            for i in range(0, len(kept), 10):
                # A local speed-up Lambda does not make (it waits the queue's visibility timeout), so it runs
                # as the local stack itself, not with the function's role.
                self.local_sqs.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=[
                    {"Id": str(n), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": self.failure_visibility}
                    for n, m in enumerate(kept[i:i + 10])])
        self.stats["deleted"] += len(done)
        self.stats["failed"] += len(kept)
        log.info("batch of %d: %d deleted, %d left for retry", len(batch), len(done), len(kept))

    def run_once(self) -> int:
        batch = self.gather()
        if batch:
            self.stats["messages"] += len(batch)
            self.settle(batch, self.invoke(batch))
        return len(batch)

    def run(self) -> None:
        log.info("polling %s -> %s (batch %d, window %ss, ReportBatchItemFailures %s)", self.queue_url,
                 self.function, self.batch_size, self.window, self.report_failures)
        while not self.stopping:
            try:
                self.run_once()
            except Exception as ex:  # noqa: BLE001  (keep polling: moto restarts, transient errors)
                log.warning("poll error: %s", ex)
                time.sleep(1)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stack", default=os.path.join(os.environ.get("FLEET_LOCAL_STACK_DIR") or os.path.join(ROOT, "target", "local-stack"), "stack.json"))
    ap.add_argument("--lambda-endpoint", default=None, help="default: the stack's lambdaEndpoint")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the template's BatchSize")
    ap.add_argument("--window", type=float, default=None,
                    help="default: the template's MaximumBatchingWindowInSeconds (as the stack resolved it)")
    ap.add_argument("--failure-visibility", type=int, default=None,
                    help="after a failed batch, make its messages visible again after this many seconds "
                         "(default: the queue's VisibilityTimeout, 900 s in the template)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s poller %(levelname)s %(message)s")
    with open(args.stack) as f:
        stack = json.load(f)
    mappings = stack["eventSourceMappings"]
    if not mappings:
        sys.exit("the template declares no SQS event source")
    endpoints = stack.get("lambdaEndpoints") or {}
    pollers = [Poller(stack, m, args.lambda_endpoint or endpoints.get(m["Function"]) or stack["lambdaEndpoint"],
                      args.batch_size, args.window,
                      args.failure_visibility) for m in mappings]

    def stop(*_):
        for p in pollers:
            p.stopping = True
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if len(pollers) == 1:
        pollers[0].run()
    else:
        import threading
        threads = [threading.Thread(target=p.run, daemon=True) for p in pollers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


if __name__ == "__main__":
    main()
