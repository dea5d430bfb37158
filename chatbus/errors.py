"""Errors raised by the queue contract.

Hierarchy::

    ChatbusError
    ├── MalformedMessage   a stream entry or JSON value that does not decode
    ├── QueueFull          the question queue is at its configured depth
    └── AnswerTimeout      no answer event came within the follower's start or stall timeout
"""

from __future__ import annotations

import re

from redis.exceptions import MasterDownError, OutOfMemoryError, ReadOnlyError, ResponseError

# Redis answers these while it is up but will not take writes: `maxmemory` with `noeviction` (OOM),
# a replica after a failover (READONLY), a failed save with stop-writes-on-bgsave-error (MISCONF),
# too few replicas (NOREPLICAS), a replica cut off from its master (MASTERDOWN), a blocked read
# ended by a role change (UNBLOCKED, during a failover). Each can pass.
_REFUSALS = re.compile(r"\b(OOM|READONLY|MISCONF|NOREPLICAS|MASTERDOWN|UNBLOCKED)\b")


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


def write_refusal(exc: BaseException) -> str | None:
    """`OOM`, `READONLY`, `MISCONF`… when Redis refused a write for a reason that can pass, else None."""
    if not isinstance(exc, ResponseError):
        return None
    # redis-py strips the code of the errors it has a class for; the others keep it in the message.
    for kind, code in ((OutOfMemoryError, "OOM"), (ReadOnlyError, "READONLY"), (MasterDownError, "MASTERDOWN")):
        if isinstance(exc, kind):
            return code
    match = _REFUSALS.search(str(exc))
    return match.group(1) if match else None
