"""The contract as one object per process: `Bus` holds its parts, each for one role.

    bus.queue      admission: enqueue, depth, cancel flags, event dedupe, rate windows   (chatbus.queue)
    bus.answers    following an answer through Redis outages, stopping it                (chatbus.answers)
    bus.consumer   the workers' side: read, reclaim, heartbeat, fenced publish/release/dead letter (chatbus.consumer)
    bus.workers    the worker registry and `kullm status`'s numbers                      (chatbus.registry)
    bus.inflight   answers an adapter still posts, and their leases                      (chatbus.inflight)
    bus.threads, bus.personas, bus.feedback                                              (chatbus.stores)
    bus.ledger     daily token caps' reservations and usage counts                       (chatbus.ledger)
    bus.api_keys   the API's keys and their open questions                               (chatbus.api_keys)
    bus.knowledge  channels' messages with their terms, ranked by BM25 (workspace knowledge) (chatbus.knowledge)

Every part raises only the contract's exceptions (`chatbus.errors`). `bus.redis` is the raw client, for
tools that inspect or break Redis on purpose (the soak, the tests); front-ends and workers never use it.
"""

from __future__ import annotations

from pydantic import SecretStr
from redis.asyncio import Redis

from chatbus.answers import Answers
from chatbus.api_keys import ApiKeys
from chatbus.connection import Link, connect
from chatbus.consumer import Consumer
from chatbus.inflight import Inflight
from chatbus.keys import Keys
from chatbus.knowledge import Knowledge
from chatbus.ledger import Ledger
from chatbus.queue import Queue
from chatbus.registry import Workers
from chatbus.stores import Feedback, Personas, Threads


class Bus:
    """The contract's parts on one Redis client; see the module docstring."""

    def __init__(self, redis: Redis, keys: Keys | None = None) -> None:
        link = Link(redis, keys or Keys())
        self.redis, self.keys = link.redis, link.keys
        self.queue = Queue(link)
        self.answers = Answers(link, self.queue)
        self.consumer = Consumer(link)
        self.workers = Workers(link, self.queue, self.consumer)
        self.inflight = Inflight(link)
        self.threads = Threads(link)
        self.personas = Personas(link)
        self.feedback = Feedback(link)
        self.ledger = Ledger(link)
        self.api_keys = ApiKeys(link)
        self.knowledge = Knowledge(link)

    @classmethod
    def open(cls, url: str, password: SecretStr | str | None = None, prefix: str | None = None) -> Bus:
        """A bus on a new client for `url` (see `chatbus.connection.connect`); `aclose` closes it."""
        return cls(connect(url, password), Keys(prefix) if prefix is not None else None)

    async def aclose(self) -> None:
        """Close the client and its connections."""
        await self.redis.aclose()
