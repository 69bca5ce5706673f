"""Serialise DynamoDB requests in the moto server.

moto's TransactWriteItems deep-copies the tables it touches (for rollback) while other request threads
write to them, which fails with "dictionary changed size during iteration" under concurrent load. Real
DynamoDB has no such problem, so the local stack runs DynamoDB calls one at a time.
"""
import threading

_LOCK = threading.RLock()


def install() -> None:
    from moto.dynamodb.responses import DynamoHandler

    orig = DynamoHandler.call_action

    def call_action(self):
        with _LOCK:
            return orig(self)

    DynamoHandler.call_action = call_action
