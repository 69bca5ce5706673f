"""DynamoDB fixes for the local stack.

- Requests run one at a time. moto's DynamoDB backend is not thread-safe (TransactWriteItems iterating a table
  while another request thread writes to it fails with "dictionary changed size during iteration"); real DynamoDB
  has no such problem.
- TransactWriteItems keeps a copy of the items it touches for rollback, not of every table it touches: moto
  deep-copies whole tables on every transaction, which makes each ledger write O(ledger size) (seconds per call
  once the ledger holds tens of thousands of instances). All-or-nothing behaviour is unchanged.
"""
import copy
import threading

_LOCK = threading.RLock()


class _NoTableCopy:
    """Stands in for the `copy` module inside moto.dynamodb.models: tables are not deep-copied (the touched
    items are, by transact_write_items below); everything else is copied as before."""

    @staticmethod
    def deepcopy(obj, memo=None):
        from moto.dynamodb.models.table import Table

        return obj if isinstance(obj, Table) else copy.deepcopy(obj, memo)

    def __getattr__(self, name):
        return getattr(copy, name)


def _key_of(table, op_type: str, op: dict):
    if op_type == "Put":
        attrs = op["Item"]
        key = {table.hash_key_attr: attrs[table.hash_key_attr]}
        if table.range_key_attr is not None:
            key[table.range_key_attr] = attrs[table.range_key_attr]
        return key
    return op["Key"]


def install() -> None:
    from moto.dynamodb import models as ddb_models
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.responses import DynamoHandler

    orig = DynamoHandler.call_action

    def call_action(self):
        with _LOCK:
            return orig(self)

    DynamoHandler.call_action = call_action

    ddb_models.copy = _NoTableCopy()
    orig_transact = DynamoDBBackend.transact_write_items

    def transact_write_items(self, transact_items):
        saved = []
        for item in transact_items:
            try:
                op_type, op = next(iter(item.items()))
                table = self.tables.get(op.get("TableName"))
                if table is None:
                    continue
                key = _key_of(table, op_type, op)
                hash_value = DynamoType(key[table.hash_key_attr])
                range_value = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
                current = table.get_item(hash_value, range_value)
            except Exception:  # noqa: BLE001 - malformed operations are moto's to reject
                continue
            saved.append((table, hash_value, range_value, copy.deepcopy(current)))
        try:
            return orig_transact(self, transact_items)
        except Exception:
            for table, hash_value, range_value, before in reversed(saved):
                if range_value is None:
                    if before is None:
                        table.items.pop(hash_value, None)
                    else:
                        table.items[hash_value] = before
                else:
                    if before is None:
                        table.items.get(hash_value, {}).pop(range_value, None)
                    else:
                        table.items[hash_value][range_value] = before
            raise

    DynamoDBBackend.transact_write_items = transact_write_items
