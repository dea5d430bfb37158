"""Messages of the queue contract and their Redis encoding.

Every value is one JSON document with a version field `v`, stored in the stream field
`m`. Inside the code messages are frozen pydantic models; they become strings only at the
Redis edge through `to_fields()` / `from_fields()`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, TypeAlias, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from chatbus.errors import MalformedMessage
from chatbus.keys import FIELD

VERSION = 1
# Hard limits of the contract, whatever an adapter allows (its own limits are lower): an entry past
# them is refused at decode, so no worker tokenises megabytes or holds them in a batch.
MAX_QUESTION_CHARS = 16_000
MAX_CONTEXT_CHARS = 200_000  # a long replied-to message or a text file as 맥락
MAX_INSTRUCTIONS_CHARS = 4000  # a channel's persona (`/kullm-설정 persona`)
MAX_TURN_CHARS = 16_000  # each question and each answer of a past turn
MAX_TURNS = 50
MAX_NEW_TOKENS = 8192  # the most a question may ask for (each worker caps it at its own MAX_NEW_TOKENS)
# A task's first pass is split into at most this many parts: a longer text is summarised (or rewritten) from its
# latest part on, and the answer says its beginning was left out. Bounds the work one request can cost.
MAX_TASK_PARTS = 24
MAX_ENTRY_BYTES = 1_048_576  # the whole JSON document of one questions-stream entry
MAX_TIMESTAMP = 1e11  # seconds since the epoch (year 5138): anything later is absurd
MAX_TOP_LOGPROBS = 20  # the most likely alternatives a question may ask to see at each answer token (vLLM's bound)
LOGPROB_FLOOR = -9999.0  # a log-probability below this is sent as this (JSON has no -inf)
_M = TypeVar("_M", bound=BaseModel)
# "unsupported": the question asked for what this worker's engine cannot give (log-probabilities from ENGINE=paged).
ErrorCode: TypeAlias = Literal["too_long", "expired", "cancelled", "overloaded", "failed", "unsupported"]
FinishReason: TypeAlias = Literal["stop", "length"]
# What a question asks the worker to do with its text: answer it, or work on 맥락 (a thread, a message, a file).
Task: TypeAlias = Literal["ask", "summarize", "translate", "proofread"]
TASKS: tuple[Task, ...] = ("ask", "summarize", "translate", "proofread")


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    v: Literal[1] = 1
    # Fields added after the first release, written only when set: a peer older than them refuses the key
    # (extra="forbid"), so leaving them out while unused lets workers and adapters be upgraded in any order.
    OMITTED_WHEN_DEFAULT: ClassVar[frozenset[str]] = frozenset()

    def to_json(self) -> str:
        """The JSON document stored in Redis."""
        fields = type(self).model_fields
        unset = {
            name
            for name in self.OMITTED_WHEN_DEFAULT
            if getattr(self, name) == fields[name].get_default(call_default_factory=True)
        }
        return self.model_dump_json(exclude=unset or None)

    def to_fields(self) -> dict[str, str]:
        """Stream entry fields for XADD."""
        return {FIELD: self.to_json()}


class Turn(BaseModel):
    """One past question and its answer in a conversation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    question: str = Field(max_length=MAX_TURN_CHARS)
    answer: str = Field(max_length=MAX_TURN_CHARS)


class TopLogprob(BaseModel):
    """One of the most likely tokens at an answer position, with its log-probability."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    token: str
    logprob: float = Field(ge=LOGPROB_FLOOR, le=0)


class TokenLogprob(TopLogprob):
    """An answer token, its log-probability under the model (before temperature and top-p), and the `top` most
    likely tokens at its position (as many as the question's `logprobs` asked for)."""

    top: tuple[TopLogprob, ...] = Field(default=(), max_length=MAX_TOP_LOGPROBS)


class Question(_Message):
    """A question waiting for an answer; one entry of the questions stream."""

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    platform: str = Field(min_length=1, max_length=32)
    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS)
    context: str = Field(default="", max_length=MAX_CONTEXT_CHARS)
    history: tuple[Turn, ...] = Field(default=(), max_length=MAX_TURNS)
    target: dict[str, Annotated[str, Field(max_length=256)]] = Field(default_factory=dict, max_length=16)
    user: str = Field(default="", max_length=256)
    created_at: float = Field(ge=0, lt=MAX_TIMESTAMP)
    expires_at: float = Field(ge=0, lt=MAX_TIMESTAMP)
    max_new_tokens: int | None = Field(default=None, ge=1, le=MAX_NEW_TOKENS)
    # The channel's persona: with the worker's system prompt, or at the head of 맥락 for templates without one.
    instructions: str = Field(default="", max_length=MAX_INSTRUCTIONS_CHARS)
    # `ask` answers `question`; the other tasks work on `context` (`question` then says what was asked for).
    task: Task = "ask"
    # The asker's own sampling (the API's `temperature`, `top_p`), within the contract's bounds; None: the worker's.
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)

    # The channel it was asked in (a thread's parent), for usage accounting; "" outside channels.
    channel: str = Field(default="", max_length=256)
    # Log-probabilities wanted with the answer (the API's `logprobs`/`top_logprobs`): None, none; n, each answer
    # token's own and its n most likely alternatives', sent in the `delta` events. A worker whose engine cannot
    # (ENGINE=paged, openai) answers `unsupported`.
    logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)

    OMITTED_WHEN_DEFAULT = frozenset({"instructions", "task", "temperature", "top_p", "channel", "logprobs"})

    @classmethod
    def new(
        cls,
        platform: str,
        question: str,
        *,
        ttl_s: float,
        now: float | None = None,
        question_id: str | None = None,
        **fields: Any,
    ) -> Question:
        """A question (with a fresh id unless given), created now and expiring `ttl_s` later."""
        created = time.time() if now is None else now
        return cls(
            id=question_id or new_question_id(),
            platform=platform,
            question=question,
            created_at=created,
            expires_at=created + ttl_s,
            **fields,
        )

    @classmethod
    def from_fields(cls, fields: Mapping[Any, Any], entry_id: str | None = None) -> Question:
        """Decode a questions-stream entry; raises `MalformedMessage` on anything invalid."""
        return _decode(cls, _document(fields, entry_id), entry_id)


def new_question_id() -> str:
    """A fresh question id (adapters mint it early to name buttons after it)."""
    return uuid.uuid4().hex


class Started(_Message):
    """A worker took the question (attempt counts deliveries, starting at 1)."""

    type: Literal["started"] = "started"
    worker: str
    attempt: int = Field(ge=1)
    # The questions-stream entry being answered: a second entry with the same question id is a duplicate.
    entry: str | None = None


class Delta(_Message):
    """More answer text, coalesced by the worker to a few events a second."""

    type: Literal["delta"] = "delta"
    text: str
    # With a question's `logprobs`: the answer tokens this delta completes, in order (possibly with no new text: a
    # token that is half a character). The tokens of a stop marker cut from the answer are not sent.
    logprobs: tuple[TokenLogprob, ...] = ()

    OMITTED_WHEN_DEFAULT = frozenset({"logprobs"})


class Restart(_Message):
    """The question was reclaimed and starts over: drop the partial text."""

    type: Literal["restart"] = "restart"
    attempt: int = Field(ge=1)


class Progress(_Message):
    """A task in passes (a long thread summarised part by part): `done` of `total` parts so far. Readers that
    predate it skip it (an unknown event is dropped, not fatal)."""

    type: Literal["progress"] = "progress"
    done: int = Field(ge=0)
    total: int = Field(ge=1)


class Done(_Message):
    """The final answer: stop markers cut and whitespace trimmed."""

    type: Literal["done"] = "done"
    text: str
    finish_reason: FinishReason
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    queued_s: float = Field(ge=0)
    generate_s: float = Field(ge=0)
    # What answered, for feedback (`kullm feedback` compares models, templates and engines). Added after the
    # first release: adapters older than it refuse these keys, so upgrade adapters before workers.
    model: str = ""
    template: str = ""
    engine: str = ""
    # 맥락 did not fit the window and only its beginning was read: adapters tell the user under the answer.
    context_cut: bool = False

    OMITTED_WHEN_DEFAULT = frozenset({"context_cut"})


class ErrorEvent(_Message):
    """The question ends without an answer; `code` tells the adapter what to say."""

    type: Literal["error"] = "error"
    code: ErrorCode
    message: str = ""


AnswerEvent: TypeAlias = Annotated[
    Started | Delta | Progress | Restart | Done | ErrorEvent, Field(discriminator="type")
]
_EVENT_ADAPTER: TypeAdapter[AnswerEvent] = TypeAdapter(AnswerEvent)


def is_final(event: AnswerEvent) -> bool:
    """True for the events that end an answer stream."""
    return isinstance(event, Done | ErrorEvent)


def decode_event(fields: Mapping[Any, Any], entry_id: str | None = None) -> AnswerEvent:
    """Decode an answer-stream entry; raises `MalformedMessage` on anything invalid."""
    document = _document(fields, entry_id)
    try:
        return _EVENT_ADAPTER.validate_python(document)
    except ValidationError as exc:
        raise MalformedMessage(_first_error(exc), entry_id) from None


class InflightRecord(_Message):
    """An answer an adapter has not finished posting: enough to resume editing the same placeholder."""

    question_id: str
    platform: str
    target: dict[str, str]
    user: str
    thread: str | None = None
    question: str = ""
    language: Literal["ko", "en"] = "ko"
    created_at: float
    # An answer longer than one message: the earlier messages (oldest first), `target` being the newest.
    parts: tuple[dict[str, str], ...] = ()

    OMITTED_WHEN_DEFAULT = frozenset({"parts"})

    @classmethod
    def from_json(cls, raw: str | bytes) -> InflightRecord:
        """Decode one value of an inflight hash."""
        return _decode(cls, _loads(raw, None), None)


class DeadLetter(_Message):
    """A question given up on, kept in the dead stream for operators."""

    entry_id: str
    question_id: str | None
    reason: str
    deliveries: int
    worker: str
    at: float
    raw: str = Field(description="the original entry as received, lossily decoded, cut to DEAD_RAW_MAX_CHARS")


class AnsweredRecord(_Message):
    """What an adapter keeps about an answer it posted with vote buttons, while it can be rated."""

    question_id: str
    platform: str
    model: str = ""
    template: str = ""
    engine: str = ""
    answered_at: float
    # Only with FEEDBACK_KEEP_TEXT=1: otherwise no user's words are kept beyond the question's lifetime.
    question: str | None = None
    answer: str | None = None


class ApiKey(_Message):
    """An API key's name and limits (`kullm keys create`); stored under the SHA-256 of the key, never the key."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    questions_per_minute: int = Field(default=60, ge=1)
    tokens_per_day: int | None = Field(default=None, ge=1)  # prompt + completion tokens; None: no daily cap
    concurrent: int = Field(default=4, ge=1)  # questions queued or being answered at once
    created_at: float = Field(ge=0, lt=MAX_TIMESTAMP)


class Persona(_Message):
    """A channel's persona: instructions an admin set with `/kullm-설정 persona`, sent with each question."""

    text: str = Field(min_length=1, max_length=MAX_INSTRUCTIONS_CHARS)
    set_by: str = Field(max_length=256)  # the admin's platform user id
    set_at: float = Field(ge=0, lt=MAX_TIMESTAMP)


class Vote(_Message):
    """One person's 👍 or 👎 on one answer; a later vote by the same person on the same answer replaces it."""

    question_id: str
    platform: str
    voter: str  # a hash of the platform's user id: one vote per person, without keeping who they are
    vote: Literal["up", "down"]
    at: float
    model: str = ""
    template: str = ""
    engine: str = ""
    # 맥락 did not fit the window and only its beginning was read: adapters tell the user under the answer.
    context_cut: bool = False

    OMITTED_WHEN_DEFAULT = frozenset({"context_cut"})
    # Copied from the answer's record when FEEDBACK_KEEP_TEXT=1 was on as it was answered: rated answers only.
    question: str | None = None
    answer: str | None = None


class WorkerStatus(_Message):
    """What a worker last reported about itself (written with every heartbeat)."""

    name: str
    model: str
    active: int
    slots: int
    seen_at: float
    draining: bool = False
    heartbeat_s: float = Field(default=5.0, gt=0)  # how often it reports: a record older than 3 beats is dead
    tasks: dict[str, int] = Field(default_factory=dict)  # what it is answering, by task kind
    loading: bool = False  # started, still loading its model: clients wait for it rather than say none serves
    # What decides how it answers (`WorkerSettings.deployment`: model, revision, template, sampling, precision,
    # engine): `kullm eval` keys its runs by it and refuses a fleet whose workers differ.
    deployment: dict[str, Annotated[str, Field(max_length=512)]] = Field(default_factory=dict, max_length=32)

    OMITTED_WHEN_DEFAULT = frozenset({"tasks", "loading", "deployment"})

    def live(self, now: float) -> bool:
        """Reported within the last three heartbeats."""
        return now - self.seen_at <= 3 * self.heartbeat_s

    @classmethod
    def from_json(cls, raw: str | bytes) -> WorkerStatus:
        """Decode one record of the workers hash."""
        return _decode(cls, _loads(raw, None), None)


def _document(fields: Mapping[Any, Any], entry_id: str | None) -> Any:
    raw = fields.get(FIELD, fields.get(FIELD.encode()))
    if raw is None:
        raise MalformedMessage(f"missing field {FIELD!r}", entry_id)
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > MAX_ENTRY_BYTES:
        raise MalformedMessage(f"entry of {size} bytes exceeds {MAX_ENTRY_BYTES}", entry_id, oversized=True)
    return _loads(raw, entry_id)


def _loads(raw: str | bytes, entry_id: str | None) -> Any:
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        document = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedMessage(f"not UTF-8 JSON: {exc}", entry_id) from None
    if not isinstance(document, dict):
        raise MalformedMessage("not a JSON object", entry_id)
    if document.get("v") != VERSION:
        raise MalformedMessage(f"unsupported version {document.get('v')!r}", entry_id)
    return document


def _decode(model: type[_M], document: Any, entry_id: str | None) -> _M:
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        oversized = any(e["type"] in ("string_too_long", "too_long") for e in exc.errors())
        raise MalformedMessage(_first_error(exc), entry_id, oversized=oversized) from None


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "document"
    return f"{where}: {first['msg']}"
