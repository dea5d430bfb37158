"""The queue contract between chat adapters and inference workers (Redis Streams).

The ground floor: `bot/` (front-ends), `inference/` (workers) and `kullm/` (the command line) meet only here and
never import each other's internals nor `redis`. `Bus` (chatbus.bus) holds the contract's parts by role; the
messages (chatbus.messages) are what travels; the errors (chatbus.errors) are all a caller catches.
"""

from chatbus.bus import Bus
from chatbus.connection import cancel_requested, connect, redact_url, usage_field
from chatbus.consumer import Delivery, Write
from chatbus.errors import (
    AnswerTimeout,
    BusDown,
    BusError,
    ChatbusError,
    MalformedMessage,
    NotAnswering,
    PasswordRefused,
    QueueFull,
    Unreachable,
    WritesRefused,
)
from chatbus.keys import DEFAULT_PREFIX, WORKER_GROUP, Keys
from chatbus.messages import (
    AnsweredRecord,
    AnswerEvent,
    ApiKey,
    DeadLetter,
    Delta,
    Done,
    ErrorCode,
    ErrorEvent,
    InflightRecord,
    Persona,
    Progress,
    Question,
    Restart,
    Started,
    Task,
    TokenLogprob,
    TopLogprob,
    Turn,
    Vote,
    WorkerStatus,
    decode_event,
    is_final,
)
from chatbus.registry import BusStats

__all__ = [
    "DEFAULT_PREFIX",
    "WORKER_GROUP",
    "AnswerEvent",
    "AnswerTimeout",
    "AnsweredRecord",
    "ApiKey",
    "Bus",
    "BusDown",
    "BusError",
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
    "NotAnswering",
    "PasswordRefused",
    "Persona",
    "Progress",
    "Question",
    "QueueFull",
    "Restart",
    "Started",
    "Task",
    "TokenLogprob",
    "TopLogprob",
    "Turn",
    "Unreachable",
    "Vote",
    "WorkerStatus",
    "Write",
    "WritesRefused",
    "cancel_requested",
    "connect",
    "decode_event",
    "is_final",
    "redact_url",
    "usage_field",
]
