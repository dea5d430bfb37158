"""Errors raised by the queue contract.

Hierarchy::

    ChatbusError
    ├── MalformedMessage   a stream entry or JSON value that does not decode
    └── QueueFull          the question queue is at its configured depth
"""

from __future__ import annotations


class ChatbusError(Exception):
    """Root of every error the contract raises."""


class MalformedMessage(ChatbusError):
    """A Redis value that is not a valid message of this contract version."""

    def __init__(self, reason: str, entry_id: str | None = None) -> None:
        self.reason = reason
        self.entry_id = entry_id
        where = f" (entry {entry_id})" if entry_id else ""
        super().__init__(f"malformed message{where}: {reason}")


class QueueFull(ChatbusError):
    """The question stream already holds `max_queue` questions."""

    def __init__(self, depth: int, max_queue: int) -> None:
        self.depth = depth
        self.max_queue = max_queue
        super().__init__(f"queue full: {depth} questions waiting (limit {max_queue})")
