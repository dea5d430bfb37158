"""Answers in OpenAI's shapes: a whole completion, the chunks of a streamed one, usage, log-probabilities, the model
list."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from bot.api.models import Call
from chatbus import Done, TokenLogprob, TopLogprob


def model_entry(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "kullm"}


def _usage(done: Done) -> dict[str, int]:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    }


def _chat_token(entry: TopLogprob) -> dict[str, Any]:
    return {"token": entry.token, "logprob": entry.logprob, "bytes": list(entry.token.encode())}


def logprobs_of(call: Call, entries: Sequence[TokenLogprob], offset: int = 0) -> dict[str, Any] | None:
    """`logprobs` of a choice: chat's `content` list, or the legacy endpoint's parallel lists (`text_offset`
    counted from `offset`, the characters of the answer sent before these tokens); None when none were asked."""
    if call.logprobs is None:
        return None
    if call.chat:
        content = [{**_chat_token(e), "top_logprobs": [_chat_token(t) for t in e.top]} for e in entries]
        return {"content": content, "refusal": None}
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry.token)
    return {
        "tokens": [e.token for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [{t.token: t.logprob for t in e.top} for e in entries],
        "text_offset": offsets,
    }


def completion(
    call: Call, question_id: str, model: str, done: Done, logprobs: Sequence[TokenLogprob] = ()
) -> dict[str, Any]:
    created = int(time.time())
    scores = logprobs_of(call, logprobs)
    if call.chat:
        message = {"role": "assistant", "content": done.text, "refusal": None}
        choice = {"index": 0, "message": message, "finish_reason": done.finish_reason, "logprobs": scores}
        kind, prefix = "chat.completion", "chatcmpl-"
    else:
        choice = {"index": 0, "text": done.text, "finish_reason": done.finish_reason, "logprobs": scores}
        kind, prefix = "text_completion", "cmpl-"
    return {
        "id": prefix + question_id,
        "object": kind,
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": _usage(done),
    }


def chunk(
    call: Call,
    question_id: str,
    model: str,
    piece: str,
    *,
    role: bool = False,
    finish: str | None = None,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    if call.chat:
        delta: dict[str, Any] = (
            {"role": "assistant", "content": piece} if role else ({"content": piece} if piece or logprobs else {})
        )
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": logprobs}
        kind, prefix = "chat.completion.chunk", "chatcmpl-"
    else:
        choice = {"index": 0, "text": piece, "finish_reason": finish, "logprobs": logprobs}
        kind, prefix = "text_completion", "cmpl-"
    return {
        "id": prefix + question_id,
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
    }


def usage_chunk(call: Call, question_id: str, model: str, done: Done) -> dict[str, Any]:
    return {**chunk(call, question_id, model, ""), "choices": [], "usage": _usage(done)}


async def send(response: web.StreamResponse, document: dict[str, Any]) -> None:
    await response.write(b"data: " + json.dumps(document, ensure_ascii=False).encode() + b"\n\n")
