"""`kullm api`: an OpenAI-compatible HTTP API on the same queue as the chat bots.

`GET /v1/models`, `POST /v1/chat/completions` and `POST /v1/completions`, streamed (server-sent
events) or not, in OpenAI's shapes. A request becomes a question like any other: the last user
message is the question, the earlier user/assistant turns its history, system messages its
instructions (as a channel's persona is); workers answer it in the model's template. Every request
needs a key (`kullm keys create`): keys are stored as SHA-256 digests only, and each has its limits —
questions a minute, tokens a day, questions open at once (which is also what keeps one key from
starving the others: it can never hold more than that many places in the queue). A client that
disconnects cancels its question within DISCONNECT_POLL_S, queued or answering, streamed or not.

Hostile clients cost little: a key verified once is trusted for API_KEY_CACHE_S without a Redis round trip,
and keys not yet verified are looked up at most FAILED_KEYS_PER_S a second per client address (a burst
of FAILED_KEY_BURST), so a flood of wrong keys is refused before it reaches Redis; the listener sits
behind the shared connection guard (header timeout, a connection cap sized to the descriptors); every
waiting answer is followed through the process's one answer reader, not a connection each.

    kullm api          # 127.0.0.1:8080 by default (API_HOST, API_PORT)
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from pydantic import Field, ValidationError

from bot.errors import BotError
from bot.follow import follow_answer
from bot.limits import check_question
from bot.process import load_settings
from bot.settings import ClientSettings
from chatbus import (
    AnswerTimeout,
    ApiKey,
    Bus,
    Delta,
    Done,
    ErrorEvent,
    Question,
    QueueFull,
    Restart,
    Turn,
)
from chatbus.api_keys import digest
from chatbus.errors import BusError, NotAnswering, WritesRefused
from chatbus.ledger import prompt_bound
from chatbus.messages import MAX_INSTRUCTIONS_CHARS, MAX_TURN_CHARS, MAX_TURNS
from runtime.exits import EXIT_CONFIG, EXIT_OK
from runtime.http_guard import HEADER_TIMEOUT_S, ConnectionGuard, descriptor_cap
from runtime.signals import on_stop_signal

log = logging.getLogger(__name__)
_T = TypeVar("_T")

RATE_WINDOW_S = 60
DISCONNECT_POLL_S = 0.25
MODELS_TTL_S = 10.0  # how long the workers' reported model names are reused
KEY_CACHE_MAX = 10_000
FAILED_KEYS_PER_S = 5.0
FAILED_KEY_BURST = 20
ADDRESSES_MAX = 10_000  # client addresses whose failed-key budget is remembered (the least recent forgotten)
KEEPALIVE_TIMEOUT_S = 15.0
# The contract's sampling bounds (chatbus.messages.Question); the worker's DO_SAMPLE=false still wins.
MAX_TEMPERATURE = 2.0


class ApiSettings(ClientSettings):
    """The API server's settings."""

    api_host: str = "127.0.0.1"  # compose sets 0.0.0.0 inside its network and publishes the port on 127.0.0.1
    api_port: int = Field(default=8080, ge=1, le=65535)
    api_max_tokens: int = Field(default=512, ge=1)  # `max_tokens` above this is lowered to it
    api_model: str = ""  # the model name shown; empty: what the workers report serving
    # Connections open at once (lowered to what the process's file descriptors allow), and how long a connection
    # may take to send its request headers.
    api_max_connections: int = Field(default=4096, ge=16)
    # A verified key is trusted this long without a Redis lookup, so a revoked key still works at most this long.
    api_key_cache_s: float = Field(default=10.0, ge=0, le=300)
    api_header_timeout_s: float = Field(default=HEADER_TIMEOUT_S, gt=0)


class ApiError(BotError):
    """An error answered in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> web.Response:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
        return web.json_response(self.body(), status=self.status, headers=headers)


@dataclass
class Call:
    """One completion request, parsed."""

    chat: bool
    question: str
    history: list[Turn]
    instructions: str
    max_tokens: int
    temperature: float | None
    top_p: float | None
    stream: bool
    include_usage: bool


class KeyCheck:
    """Which API key a request carries, at the least cost to Redis; see the module docstring."""

    def __init__(self, bus: Bus, cache_s: float) -> None:
        self.bus = bus
        self.cache_s = cache_s
        self._verified: dict[str, tuple[ApiKey, float]] = {}  # digest → (key, verified at), oldest first
        self._budgets: dict[str, tuple[float, float]] = {}  # address → (tokens, updated at), least recent first
        self._looking_up: dict[str, asyncio.Future[ApiKey | None]] = {}  # digest → its lookup under way

    async def key(self, request: web.Request) -> ApiKey:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "missing API key: send `Authorization: Bearer <key>`", code="invalid_api_key")
        found = digest(token.strip())
        now = time.monotonic()
        cached = self._verified.get(found)
        if cached is not None and now - cached[1] < self.cache_s:
            return cached[0]
        pending = self._looking_up.get(found)
        try:
            key = await asyncio.shield(pending) if pending is not None else await self._look_up(found, request, now)
        except BusError as exc:
            raise unavailable(exc) from exc
        if key is None:
            raise ApiError(401, "incorrect API key", code="invalid_api_key")
        return key

    async def _look_up(self, found: str, request: web.Request, now: float) -> ApiKey | None:
        """One Redis lookup, shared by the requests that carry the same key meanwhile; paid from the address's
        budget unless it finds a key."""
        address = request.remote or "?"
        if not self._spend(address, now):
            raise ApiError(
                429,
                "too many requests with unknown API keys from this address",
                "requests",
                "rate_limit_exceeded",
                retry_after=max(1, round(1 / FAILED_KEYS_PER_S)),
            )
        lookup = self._looking_up[found] = asyncio.ensure_future(self.bus.api_keys.get(found))
        try:
            key = await asyncio.shield(lookup)
        except BusError as exc:
            raise unavailable(exc) from exc
        finally:
            self._looking_up.pop(found, None)
        if key is not None:
            self._refund(address)
            self._verified.pop(found, None)
            self._verified[found] = (key, now)
            if len(self._verified) > KEY_CACHE_MAX:
                del self._verified[next(iter(self._verified))]
        return key

    def _spend(self, address: str, now: float) -> bool:
        """Take one lookup from the address's budget (a token bucket); False when it has none left."""
        tokens, updated = self._budgets.pop(address, (float(FAILED_KEY_BURST), now))
        tokens = min(float(FAILED_KEY_BURST), tokens + (now - updated) * FAILED_KEYS_PER_S)
        self._budgets[address] = (tokens - 1 if tokens >= 1 else tokens, now)
        if len(self._budgets) > ADDRESSES_MAX:
            del self._budgets[next(iter(self._budgets))]
        return tokens >= 1

    def _refund(self, address: str) -> None:
        """A lookup that found a key costs the address nothing."""
        tokens, updated = self._budgets.get(address, (float(FAILED_KEY_BURST), 0.0))
        self._budgets[address] = (min(float(FAILED_KEY_BURST), tokens + 1), updated)


def unavailable(exc: BusError) -> ApiError:
    """503 naming why the queue cannot be used: down, not answering, or refusing writes."""
    why = "is not answering" if isinstance(exc, NotAnswering) else "is unreachable"
    if isinstance(exc, WritesRefused):  # the reason the relay and `kullm ask` name too
        why = f"refuses writes ({exc.reason})"
    return ApiError(503, f"the queue (Redis) {why}", "server_error", "service_unavailable", retry_after=5)


class Api:
    """The HTTP handlers, on one bus."""

    def __init__(self, bus: Bus, settings: ApiSettings) -> None:
        self.bus = bus
        self.settings = settings
        self.keys = KeyCheck(bus, settings.api_key_cache_s)
        self._served: list[str] = []
        self._models_read_at = 0.0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_get("/healthz", self.health)
        return app

    async def health(self, request: web.Request) -> web.Response:
        """200 while Redis answers; 503 naming why not (down, not answering within its timeout)."""
        try:
            await self.bus.queue.depth()
        except BusError as exc:
            return web.json_response({"status": unavailable(exc).message}, status=503)
        return web.json_response({"status": "ok"})

    # ------------------------------------------------------------------ endpoints

    async def models(self, request: web.Request) -> web.Response:
        try:
            await self.keys.key(request)
            names = await self._models()
        except ApiError as exc:
            return exc.response()
        except BusError as exc:
            return unavailable(exc).response()
        return web.json_response({"object": "list", "data": [_model(name) for name in names]})

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=False)

    async def _complete(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        try:
            key = await self.keys.key(request)
            call = _parse(await _json(request), chat, self.settings.api_max_tokens)
            refusal = check_question(self.settings, call.question)
            if refusal:
                raise ApiError(400, refusal, code="context_length_exceeded", param="messages" if chat else "prompt")
            await self._check_limits(key)
            model = (await self._models())[0]
        except ApiError as exc:
            return exc.response()
        except BusError as exc:
            return unavailable(exc).response()
        try:
            item = Question.new(
                "api",
                call.question,
                ttl_s=self.settings.question_ttl_s,
                history=tuple(call.history[-MAX_TURNS:]),
                instructions=call.instructions,
                user=key.name,
                max_new_tokens=call.max_tokens,
                temperature=call.temperature,
                top_p=call.top_p,
            )
        except ValidationError as exc:  # past the queue contract's limits (a turn, the whole entry)
            problem = exc.errors()[0]
            where = ".".join(str(part) for part in problem["loc"])
            return ApiError(400, f"{where}: {problem['msg']}", param="messages" if chat else "prompt").response()
        deadline = item.expires_at + self.settings.answer_stall_timeout_s
        try:
            item = await self._reserve(key, item, deadline)
        except ApiError as exc:
            return exc.response()
        except BusError as exc:
            return unavailable(exc).response()
        try:
            if not await self.bus.api_keys.open_question(key.name, item.id, deadline, key.concurrent):
                raise ApiError(
                    429,
                    f"this key already has {key.concurrent} questions open (its `concurrent` limit)",
                    "requests",
                    "rate_limit_exceeded",
                    retry_after=1,
                )
            try:
                await self.bus.queue.enqueue(item, self.settings.max_queue)
            except QueueFull as exc:
                await self.bus.api_keys.close_question(key.name, item.id)
                raise ApiError(503, f"the queue is full ({exc.depth} waiting)", "server_error", "overloaded") from exc
        except ApiError as exc:
            await self._release(key, item)
            return exc.response()
        except BusError as exc:
            await self._release(key, item)
            return unavailable(exc).response()
        log.info("api question %s queued (key %s)", item.id, key.name)
        try:
            if call.stream:
                return await self._stream(request, call, item, model)
            return await self._whole(request, call, item, model)
        finally:
            with contextlib.suppress(BusError):
                await self.bus.api_keys.close_question(key.name, item.id)

    # ------------------------------------------------------------------ answering

    async def _whole(self, request: web.Request, call: Call, item: Question, model: str) -> web.StreamResponse:
        """The answer in one response."""
        try:
            done = await self._until_disconnect(request, item.id, self._final(item.id))
        except ApiError as exc:
            return exc.response()
        if done is None:
            return web.Response(status=499)
        return web.json_response(_completion(call, item.id, model, done))

    async def _final(self, question_id: str) -> Done:
        async for event in self._events(question_id):
            if isinstance(event, Done):
                return event
        raise ApiError(500, "the answer ended without text", "server_error", "failed")

    async def _stream(self, request: web.Request, call: Call, item: Question, model: str) -> web.StreamResponse:
        """Server-sent events: OpenAI's chunks, `[DONE]` last; an error mid-stream is one `error` event."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        if await self._until_disconnect(request, item.id, self._send_events(response, call, item, model)) is None:
            return response
        with contextlib.suppress(ConnectionError):
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        return response

    async def _send_events(self, response: web.StreamResponse, call: Call, item: Question, model: str) -> bool:
        """The answer's events as chunks; a restarted answer continues after the characters already sent."""
        sent = 0
        shown = ""
        try:
            if call.chat:
                await _send(response, _chunk(call, item.id, model, "", role=True))
            async for event in self._events(item.id):
                if isinstance(event, Restart):
                    shown = ""
                elif isinstance(event, Delta):
                    shown += event.text
                    if len(shown) > sent:
                        await _send(response, _chunk(call, item.id, model, shown[sent:]))
                        sent = len(shown)
                elif isinstance(event, Done):
                    if len(event.text) > sent:
                        await _send(response, _chunk(call, item.id, model, event.text[sent:]))
                    await _send(response, _chunk(call, item.id, model, "", finish=event.finish_reason))
                    if call.include_usage:
                        await _send(response, _usage_chunk(call, item.id, model, event))
        except ApiError as exc:
            await _send(response, exc.body())
        return True

    async def _until_disconnect(self, request: web.Request, question_id: str, answering: Awaitable[_T]) -> _T | None:
        """`answering`'s result; None when the client went away first (its question is then cancelled, whether
        it was queued or being answered): the connection is checked every DISCONNECT_POLL_S, and a write to a
        closed one ends it at once."""
        task = asyncio.ensure_future(answering)
        try:
            while not task.done():
                transport = request.transport
                if transport is None or transport.is_closing():
                    break
                await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if task.done() and not isinstance(task.exception(), ConnectionError):
                return task.result()
        finally:
            task.cancel()
        await self._cancel(question_id, "client disconnected")
        return None

    async def _events(self, question_id: str) -> AsyncIterator[Any]:
        """The answer's events, read on through a Redis outage of up to REDIS_OUTAGE_S; an `error` event, a silent
        worker or a Redis that stays away becomes an ApiError."""
        try:
            async for event in follow_answer(self.bus, question_id, self.settings):
                if isinstance(event, ErrorEvent):
                    raise _error_of(event)
                yield event
        except AnswerTimeout as exc:
            raise ApiError(504, "no answer arrived in time", "server_error", "timeout") from exc
        except BusError as exc:
            raise unavailable(exc) from exc

    async def _cancel(self, question_id: str, why: str) -> None:
        log.info("api question %s: %s, cancelled", question_id, why)
        with contextlib.suppress(BusError):
            await self.bus.queue.request_cancel(question_id)

    # ------------------------------------------------------------------ keys and limits

    async def _check_limits(self, key: ApiKey) -> None:
        if await self.bus.queue.count_request("api", key.name, RATE_WINDOW_S) > key.questions_per_minute:
            wait = await self.bus.queue.rate_reset_s("api", key.name)
            raise ApiError(
                429,
                f"over this key's {key.questions_per_minute} questions a minute",
                "requests",
                "rate_limit_exceeded",
                retry_after=wait,
            )

    async def _reserve(self, key: ApiKey, item: Question, deadline: float) -> Question:
        """With a daily token cap: the question with `max_tokens` lowered to what the cap has left once its prompt's
        upper bound is reserved too (`chatbus.ledger`); 429 when not one new token is left."""
        if key.tokens_per_day is None:
            return item
        bound = prompt_bound(item)
        most = bound + (item.max_new_tokens or self.settings.api_max_tokens)
        granted = await self.bus.ledger.reserve(item, key.tokens_per_day, bound + 1, most, deadline)
        if not granted:
            raise ApiError(
                429,
                f"this key's {key.tokens_per_day:,} tokens for today (UTC) are used or held by its open answers",
                "insufficient_quota",
                "insufficient_quota",
                retry_after=_seconds_to_midnight(),
            )
        return item.model_copy(update={"max_new_tokens": granted - bound})

    async def _release(self, key: ApiKey, item: Question) -> None:
        """Give back what `_reserve` held for a question that was not queued after all (none without a cap)."""
        if key.tokens_per_day is None:
            return
        with contextlib.suppress(BusError):
            await self.bus.ledger.release(item)

    async def _models(self) -> list[str]:
        """API_MODEL, or what the live workers report serving (read at most every MODELS_TTL_S, not per request)."""
        if self.settings.api_model:
            return [self.settings.api_model]
        if time.monotonic() - self._models_read_at > MODELS_TTL_S or not self._served:
            stats = await self.bus.workers.stats()
            self._served = sorted({worker.model for worker in stats.workers})
            self._models_read_at = time.monotonic()
        return self._served or ["kullm"]


# ---------------------------------------------------------------------------------------------- request parsing


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not JSON ({exc})") from exc
    except RecursionError as exc:  # arrays or objects nested past Python's stack
        raise ApiError(400, "the body is nested too deeply") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def _parse(body: dict[str, Any], chat: bool, max_tokens_bound: int) -> Call:
    """A request body as a question; ApiError(400) naming the parameter that is wrong."""
    if chat:
        question, history, instructions = _messages(body.get("messages"))
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt.strip():
            raise ApiError(400, "`prompt` must be one non-empty string", param="prompt")
        question, history, instructions = prompt, [], ""
    n = body.get("n", 1)
    if n is not None and (type(n) is not int or n != 1):  # OpenAI refuses `true` and `1.0` for an integer too
        raise ApiError(400, "only n=1 is supported" if type(n) is int else "`n` must be an integer", param="n")
    requested = body.get("max_completion_tokens", body.get("max_tokens"))
    if requested is not None and (not isinstance(requested, int) or isinstance(requested, bool) or requested < 1):
        raise ApiError(400, "`max_tokens` must be a positive integer", param="max_tokens")
    temperature = _number(body, "temperature", 0.0, MAX_TEMPERATURE, low_open=False)
    top_p = _number(body, "top_p", 0.0, 1.0, low_open=True)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "`stream` must be true or false", param="stream")
    options = body.get("stream_options") or {}
    return Call(
        chat=chat,
        question=question,
        history=history,
        instructions=instructions,
        max_tokens=min(requested or max_tokens_bound, max_tokens_bound),
        temperature=temperature,
        top_p=top_p,
        stream=stream,
        include_usage=bool(isinstance(options, dict) and options.get("include_usage")),
    )


def _number(body: dict[str, Any], name: str, low: float, high: float, *, low_open: bool) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApiError(400, f"`{name}` must be a number", param=name)
    if value > high or value < low or (low_open and value == low):
        raise ApiError(
            400, f"`{name}` must be {'above' if low_open else 'at least'} {low} and at most {high}", param=name
        )
    return float(value)


def _content(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):  # content parts: only text ones
        return "".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return content if isinstance(content, str) else ""


def _messages(messages: Any) -> tuple[str, list[Turn], str]:
    """The last user message (the question), the user/assistant pairs before it, and the system messages."""
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise ApiError(400, "`messages` must be a non-empty list of messages", param="messages")
    system = "\n\n".join(_content(m) for m in messages if m.get("role") in ("system", "developer"))
    talk = [m for m in messages if m.get("role") in ("user", "assistant")]
    if not talk or talk[-1].get("role") != "user" or not _content(talk[-1]).strip():
        raise ApiError(400, "the last message must be the user's, with text", param="messages")
    history: list[Turn] = []
    pending: str | None = None
    for message in talk[:-1]:
        if message.get("role") == "user":
            pending = _content(message) if pending is None else pending + "\n\n" + _content(message)
            continue
        try:
            history.append(Turn(question=pending or "", answer=_content(message)))
        except ValidationError as exc:
            raise ApiError(
                400, f"a turn of `messages` is over {MAX_TURN_CHARS:,} characters", param="messages"
            ) from exc
        pending = None
    if len(system) > MAX_INSTRUCTIONS_CHARS:
        raise ApiError(400, f"system messages over {MAX_INSTRUCTIONS_CHARS} characters", param="messages")
    return _content(talk[-1]), history, system


def _error_of(event: ErrorEvent) -> ApiError:
    if event.code == "too_long":
        return ApiError(400, "the messages are longer than the model can read", code="context_length_exceeded")
    if event.code == "overloaded":
        return ApiError(503, "the service is overloaded", "server_error", "overloaded")
    if event.code == "expired":
        return ApiError(503, "the question waited past its expiry", "server_error", "timeout")
    if event.code == "cancelled":
        return ApiError(499, "the question was cancelled", code="cancelled")
    return ApiError(500, "the answer failed", "server_error", "failed")


# ---------------------------------------------------------------------------------------------- responses


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "kullm"}


def _usage(done: Done) -> dict[str, int]:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    }


def _completion(call: Call, question_id: str, model: str, done: Done) -> dict[str, Any]:
    created = int(time.time())
    if call.chat:
        message = {"role": "assistant", "content": done.text, "refusal": None}
        choice = {"index": 0, "message": message, "finish_reason": done.finish_reason, "logprobs": None}
        kind, prefix = "chat.completion", "chatcmpl-"
    else:
        choice = {"index": 0, "text": done.text, "finish_reason": done.finish_reason, "logprobs": None}
        kind, prefix = "text_completion", "cmpl-"
    return {
        "id": prefix + question_id,
        "object": kind,
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": _usage(done),
    }


def _chunk(
    call: Call, question_id: str, model: str, piece: str, *, role: bool = False, finish: str | None = None
) -> dict[str, Any]:
    if call.chat:
        delta: dict[str, Any] = (
            {"role": "assistant", "content": piece} if role else ({"content": piece} if piece else {})
        )
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        kind, prefix = "chat.completion.chunk", "chatcmpl-"
    else:
        choice = {"index": 0, "text": piece, "finish_reason": finish, "logprobs": None}
        kind, prefix = "text_completion", "cmpl-"
    return {
        "id": prefix + question_id,
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
    }


def _usage_chunk(call: Call, question_id: str, model: str, done: Done) -> dict[str, Any]:
    chunk = _chunk(call, question_id, model, "")
    return {**chunk, "choices": [], "usage": _usage(done)}


async def _send(response: web.StreamResponse, document: dict[str, Any]) -> None:
    await response.write(b"data: " + json.dumps(document, ensure_ascii=False).encode() + b"\n\n")


def _seconds_to_midnight() -> int:
    now = time.gmtime()
    midnight = calendar.timegm((now.tm_year, now.tm_mon, now.tm_mday, 0, 0, 0)) + 86400
    return max(1, midnight - int(time.time()))


# ---------------------------------------------------------------------------------------------- the process


def main() -> int:
    """`kullm api` (same as `python -m bot api`)."""
    settings = load_settings(ApiSettings)
    if settings is None:
        return EXIT_CONFIG
    return asyncio.run(_serve(settings))


async def _serve(settings: ApiSettings) -> int:
    bus = Bus.open(settings.redis_url, settings.redis_password, settings.key_prefix)
    api = Api(bus, settings)
    runner = web.AppRunner(api.app(), access_log=None, keepalive_timeout=KEEPALIVE_TIMEOUT_S)
    await runner.setup()
    assert runner.server is not None
    guard = ConnectionGuard(
        header_timeout_s=settings.api_header_timeout_s, max_connections=descriptor_cap(settings.api_max_connections)
    )
    listener = await guard.serve(runner.server, settings.api_host, settings.api_port)
    log.info("OpenAI-compatible API on http://%s:%d/v1", settings.api_host, settings.api_port)
    stop = asyncio.Event()
    on_stop_signal(stop.set)
    try:
        await stop.wait()
    finally:
        listener.close()
        await runner.cleanup()
        await bus.aclose()
    return EXIT_OK
