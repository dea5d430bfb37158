"""The worker's outbox: answer events and acks waiting to be written to Redis, fenced by ownership.

Events and acks are collected while the worker steps and written in one fenced call per
flush (`Consumer.publish`). If Redis is unreachable or refuses writes, the call raises and
everything stays here for the next flush: nothing is lost and nothing is written twice.
"""

from __future__ import annotations

from chatbus import AnswerEvent, Bus, Delivery, Write


class Outbox:
    """Events and acks of one worker, written together by `flush`."""

    def __init__(self, bus: Bus, consumer: str) -> None:
        self.bus = bus
        self.consumer = consumer
        self._events: list[tuple[Delivery, str, AnswerEvent]] = []
        self._acks: list[Delivery] = []

    def __bool__(self) -> bool:
        return bool(self._events or self._acks)

    def emit(self, delivery: Delivery, question_id: str, event: AnswerEvent) -> None:
        """Queue an answer event of the question `delivery` carries."""
        self._events.append((delivery, question_id, event))

    def ack(self, delivery: Delivery) -> None:
        """Queue the ack that ends an entry (after its last event)."""
        self._acks.append(delivery)

    async def flush(self) -> set[str]:
        """Write what is queued; returns the entries another worker owns now (their writes were dropped).

        Raises what Redis raises; then nothing was taken out and the next flush tries again.
        """
        if not self:
            return set()
        lost = await self.bus.consumer.publish(self.consumer, self.writes())
        self._events, self._acks = [], []
        return lost

    def held(self) -> list[Write]:
        """The deliveries with writes waiting here: still this worker's to finish, so still its to heartbeat."""
        return [Write(w.entry_id, w.deliveries, w.question_id) for w in self.writes()]

    def writes(self) -> list[Write]:
        """Events and acks grouped per delivery, in the order they were emitted."""
        grouped: dict[str, tuple[Delivery, str, list[AnswerEvent]]] = {}
        for delivery, question_id, event in self._events:
            grouped.setdefault(delivery.entry_id, (delivery, question_id, []))[2].append(event)
        for delivery in self._acks:
            if delivery.entry_id not in grouped and delivery.question is not None:
                grouped[delivery.entry_id] = (delivery, delivery.question.id, [])
        acked = {d.entry_id for d in self._acks}
        return [
            Write(d.entry_id, d.deliveries, question_id, tuple(events), d.entry_id in acked)
            for d, question_id, events in grouped.values()
        ]
