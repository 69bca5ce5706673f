"""SQS speed-up for the local stack (no behaviour change).

moto computes every queue attribute, including the three approximate message counts (each a scan of the queue
that reads the clock once per message), whenever code reads any attribute: SendMessage does so for every message
to learn ContentBasedDeduplication. A burst of N running events therefore cost O(N^2) clock reads. Here the
three counts come from one pass over the queue with one clock read.
"""

from __future__ import annotations


def install() -> None:
    from moto.core.utils import unix_time_millis
    from moto.sqs.models import Queue

    def counts(self) -> tuple[int, int, int]:
        """(available, delayed, in flight), as moto's three properties define them."""
        cached = self.__dict__.get("_fleet_counts")
        if cached is not None:
            return cached
        now = unix_time_millis()
        available = delayed = in_flight = 0
        for m in self._messages:
            is_delayed, is_visible = now < m.delayed_until, now > m.visible_at
            delayed += is_delayed
            in_flight += not is_visible
            available += is_visible and not is_delayed
        return available, delayed, in_flight

    Queue.approximate_number_of_messages = property(lambda self: counts(self)[0])
    Queue.approximate_number_of_messages_delayed = property(lambda self: counts(self)[1])
    Queue.approximate_number_of_messages_not_visible = property(lambda self: counts(self)[2])

    orig_attributes = Queue.attributes.fget

    def attributes(self):
        self.__dict__["_fleet_counts"] = counts(self)
        try:
            return orig_attributes(self)
        finally:
            self.__dict__.pop("_fleet_counts", None)

    Queue.attributes = property(attributes)
