"""The API's handlers: a request is checked (key, body, limits), becomes a question like any other, and its answer
is followed (through Redis outages, as every front-end does) and sent whole or streamed; a client that disconnects
cancels its question within DISCONNECT_POLL_S, queued or answering."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from aiohttp import web
from pydantic import ValidationError

from bot.api.errors import ApiError, error_of, unavailable
from bot.api.keys import KeyCheck
from bot.api.models import Call, read_call
from bot.api.responses import chunk, completion, logprobs_of, model_entry, send, usage_chunk
from bot.api.settings import ApiSettings
from bot.follow import follow_answer
from bot.limits import check_question
from bot.quota import Quota, seconds_to_midnight
from chatbus import (
    AnswerTimeout,
    ApiKey,
    Bus,
    BusError,
    Delta,
    Done,
    ErrorEvent,
    Question,
    QueueFull,
    Restart,
    TokenLogprob,
)
from chatbus.messages import MAX_TURNS

log = logging.getLogger(__name__)
_T = TypeVar("_T")

DISCONNECT_POLL_S = 0.25
MODELS_TTL_S = 10.0  # how long the workers' reported model names are reused


class Api:
    """The HTTP handlers, on one bus."""

    def __init__(self, bus: Bus, settings: ApiSettings) -> None:
        self.bus = bus
        self.settings = settings
        self.keys = KeyCheck(bus, settings.api_key_cache_s)
        self.quota = Quota(bus, "api")
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
        return web.json_response({"object": "list", "data": [model_entry(name) for name in names]})

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=False)

    async def _complete(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        try:
            key = await self.keys.key(request)
            call = await read_call(request, chat, self.settings.api_max_tokens)
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
                logprobs=call.logprobs,
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
        return web.json_response(completion(call, item.id, model, *done))

    async def _final(self, question_id: str) -> tuple[Done, list[TokenLogprob]]:
        """The final answer, and the log-probabilities its deltas carried (those of the last attempt)."""
        logprobs: list[TokenLogprob] = []
        async for event in self._events(question_id):
            if isinstance(event, Restart):
                logprobs = []
            elif isinstance(event, Delta):
                logprobs += event.logprobs
            elif isinstance(event, Done):
                return event, logprobs
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
        """The answer's events as chunks; a restarted answer continues after the characters (and the tokens'
        log-probabilities) already sent."""
        sent = sent_logprobs = 0
        shown = ""
        logprobs: list[TokenLogprob] = []
        try:
            if call.chat:
                await send(response, chunk(call, item.id, model, "", role=True))
            async for event in self._events(item.id):
                if isinstance(event, Restart):
                    shown, logprobs = "", []
                elif isinstance(event, Delta):
                    shown += event.text
                    logprobs += event.logprobs
                    if len(shown) > sent or len(logprobs) > sent_logprobs:
                        scores = logprobs_of(call, logprobs[sent_logprobs:], sent)
                        await send(response, chunk(call, item.id, model, shown[sent:], logprobs=scores))
                        sent, sent_logprobs = max(sent, len(shown)), max(sent_logprobs, len(logprobs))
                elif isinstance(event, Done):
                    if len(event.text) > sent:
                        await send(response, chunk(call, item.id, model, event.text[sent:]))
                    await send(response, chunk(call, item.id, model, "", finish=event.finish_reason))
                    if call.include_usage:
                        await send(response, usage_chunk(call, item.id, model, event))
        except ApiError as exc:
            await send(response, exc.body())
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
                    raise error_of(event)
                yield event
        except AnswerTimeout as exc:
            raise ApiError(504, "no answer arrived in time", "server_error", "timeout") from exc
        except BusError as exc:
            raise unavailable(exc) from exc

    async def _cancel(self, question_id: str, why: str) -> None:
        log.info("api question %s: %s, cancelled", question_id, why)
        with contextlib.suppress(BusError):
            await self.bus.answers.cancel(question_id)

    # ------------------------------------------------------------------ keys and limits

    async def _check_limits(self, key: ApiKey) -> None:
        wait = await self.quota.over_rate(key.name, key.questions_per_minute)
        if wait is not None:
            raise ApiError(
                429,
                f"over this key's {key.questions_per_minute} questions a minute",
                "requests",
                "rate_limit_exceeded",
                retry_after=wait,
            )

    async def _reserve(self, key: ApiKey, item: Question, deadline: float) -> Question:
        """With a daily token cap: the question with `max_tokens` lowered to what the cap has left once its prompt's
        upper bound is reserved too (`bot.quota`); 429 when not one new token is left."""
        if key.tokens_per_day is None:
            return item
        new_tokens = item.max_new_tokens or self.settings.api_max_tokens
        reserved = await self.quota.reserve(item, key.tokens_per_day, new_tokens, deadline)
        if reserved is None:
            raise ApiError(
                429,
                f"this key's {key.tokens_per_day:,} tokens for today (UTC) are used or held by its open answers",
                "insufficient_quota",
                "insufficient_quota",
                retry_after=seconds_to_midnight(),
            )
        return reserved

    async def _release(self, key: ApiKey, item: Question) -> None:
        """Give back what `_reserve` held for a question that was not queued after all (none without a cap)."""
        if key.tokens_per_day is None:
            return
        with contextlib.suppress(BusError):
            await self.quota.release(item)

    async def _models(self) -> list[str]:
        """API_MODEL, or what the live workers report serving (read at most every MODELS_TTL_S, not per request)."""
        if self.settings.api_model:
            return [self.settings.api_model]
        if time.monotonic() - self._models_read_at > MODELS_TTL_S or not self._served:
            stats = await self.bus.workers.stats()
            self._served = sorted({worker.model for worker in stats.workers})
            self._models_read_at = time.monotonic()
        return self._served or ["kullm"]
