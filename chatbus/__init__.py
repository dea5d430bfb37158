"""The queue contract between chat adapters and inference workers (Redis Streams)."""

from chatbus.errors import AnswerTimeout, ChatbusError, MalformedMessage, QueueFull, write_refusal
from chatbus.keys import DEFAULT_PREFIX, WORKER_GROUP, Keys
from chatbus.messages import (
    AnswerEvent,
    DeadLetter,
    Delta,
    Done,
    ErrorCode,
    ErrorEvent,
    InflightRecord,
    Question,
    Restart,
    Started,
    Turn,
    WorkerStatus,
    decode_event,
    is_final,
)
from chatbus.streams import Bus, BusStats, Delivery, Write, cancel_requested, connect, redact_url

__all__ = [
    "DEFAULT_PREFIX",
    "WORKER_GROUP",
    "AnswerEvent",
    "AnswerTimeout",
    "Bus",
    "BusStats",
    "ChatbusError",
    "DeadLetter",
    "Delivery",
    "Delta",
    "Done",
    "ErrorCode",
    "ErrorEvent",
    "InflightRecord",
    "Keys",
    "MalformedMessage",
    "Question",
    "QueueFull",
    "Restart",
    "Started",
    "Turn",
    "WorkerStatus",
    "Write",
    "cancel_requested",
    "connect",
    "decode_event",
    "is_final",
    "redact_url",
    "write_refusal",
]
