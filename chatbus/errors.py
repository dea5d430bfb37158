"""Errors raised by the queue contract: the only ones its callers catch.

Hierarchy::

    ChatbusError
    ├── MalformedMessage   a stream entry or JSON value that does not decode
    ├── QueueFull          the question queue is at its configured depth
    ├── AnswerTimeout      no answer event came within the follower's start or stall timeout
    └── BusError           Redis could not do what was asked (the Redis exception is the __cause__)
        ├── BusDown            Redis cannot be used now and may come back
        │   ├── Unreachable        no connection: refused, dropped, no free pooled connection
        │   │   └── PasswordRefused    the server refused the password (REDIS_PASSWORD / the URL's)
        │   └── NotAnswering       connected, but no reply within the socket timeout (paused, stuck)
        └── WritesRefused      up, but refusing writes for a reason that can pass (`reason`: OOM, READONLY…)

Redis' own exceptions never leave `chatbus`: every call of the contract translates them
(`chatbus.connection.translated`), so `bot/`, `inference/` and `kullm/` never import `redis`.
"""

from __future__ import annotations


class ChatbusError(Exception):
    """Root of every error the contract raises."""


class AnswerTimeout(ChatbusError):
    """No answer event arrived within the time the follower was willing to wait."""


class MalformedMessage(ChatbusError):
    """A Redis value that is not a valid message of this contract version."""

    def __init__(self, reason: str, entry_id: str | None = None, *, oversized: bool = False) -> None:
        self.reason = reason
        self.entry_id = entry_id
        self.oversized = oversized  # past one of the contract's size limits (answered as `too_long`)
        where = f" (entry {entry_id})" if entry_id else ""
        super().__init__(f"malformed message{where}: {reason}")


class QueueFull(ChatbusError):
    """The question stream already holds `max_queue` questions."""

    def __init__(self, depth: int, max_queue: int) -> None:
        self.depth = depth
        self.max_queue = max_queue
        super().__init__(f"queue full: {depth} questions waiting (limit {max_queue})")


class BusError(ChatbusError):
    """Redis failed a call of the contract; the subclasses say which failures can pass."""


class BusDown(BusError):
    """Redis cannot be used now (no connection, or no reply); waiting for it may help."""


class Unreachable(BusDown):
    """No connection to Redis: refused, dropped, or every pooled connection busy past the pool's wait."""


class PasswordRefused(Unreachable):
    """Redis refused the password it was given (or wanted one and got none)."""


class NotAnswering(BusDown):
    """Connected, but Redis did not reply within the socket timeout (paused, swapping, a slow script)."""


class WritesRefused(BusError):
    """Redis is up but refuses writes: `reason` is its code (OOM, READONLY, MISCONF, NOREPLICAS, MASTERDOWN,
    UNBLOCKED); each can pass (memory freed, a failover finished, a save succeeded)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"Redis refuses writes ({reason}){': ' + detail if detail else ''}")
