"""The request bodies of `/v1/chat/completions` and `/v1/completions`, validated by pydantic (a wrong one is a 400
naming the parameter, in OpenAI's shape) and converted inward to a `Call`: the last user message is the question,
the user/assistant turns before it its history, system and developer messages its instructions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError, field_validator

from bot.api.errors import ApiError
from chatbus import Turn
from chatbus.messages import MAX_INSTRUCTIONS_CHARS, MAX_TOP_LOGPROBS, MAX_TURN_CHARS

# The contract's sampling bounds (chatbus.messages.Question); the worker's DO_SAMPLE=false still wins.
MAX_TEMPERATURE = 2.0


@dataclass
class Call:
    """One completion request, as the API handles it."""

    chat: bool
    question: str
    history: list[Turn]
    instructions: str
    max_tokens: int
    temperature: float | None
    top_p: float | None
    stream: bool
    include_usage: bool
    # Log-probabilities wanted: None, none; n, each answer token's and its n most likely alternatives'.
    logprobs: int | None = None


class Message(BaseModel):
    """A chat message; content as a string or as parts, of which only the text ones count."""

    model_config = ConfigDict(extra="allow")

    role: str = ""
    content: str | list[Any] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(
                str(part.get("text", ""))
                for part in self.content
                if isinstance(part, dict) and part.get("type") == "text"
            )
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: StrictBool = False


class _Request(BaseModel):
    """What both endpoints take (the rest of OpenAI's parameters are accepted and ignored)."""

    model_config = ConfigDict(extra="allow")

    n: StrictInt | None = 1
    max_tokens: Annotated[StrictInt | None, Field(ge=1)] = None
    max_completion_tokens: Annotated[StrictInt | None, Field(ge=1)] = None
    temperature: Annotated[float | None, Field(ge=0, le=MAX_TEMPERATURE, allow_inf_nan=False, strict=True)] = None
    top_p: Annotated[float | None, Field(gt=0, le=1, allow_inf_nan=False, strict=True)] = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None

    @field_validator("n")
    @classmethod
    def _one_answer(cls, n: int | None) -> int | None:
        if n is not None and n != 1:
            raise ValueError("only n=1 is supported")
        return n

    def call(self, question: str, history: list[Turn], instructions: str, max_tokens_bound: int) -> Call:
        requested = self.max_completion_tokens or self.max_tokens
        return Call(
            chat=isinstance(self, ChatRequest),
            question=question,
            history=history,
            instructions=instructions,
            max_tokens=min(requested or max_tokens_bound, max_tokens_bound),
            temperature=self.temperature,
            top_p=self.top_p,
            stream=self.stream,
            include_usage=bool(self.stream_options and self.stream_options.include_usage),
            logprobs=self.logprobs_wanted(),
        )

    def logprobs_wanted(self) -> int | None:
        return None


TopCount = Annotated[StrictInt, Field(ge=0, le=MAX_TOP_LOGPROBS)]


class ChatRequest(_Request):
    messages: Annotated[list[Message], Field(min_length=1)]
    logprobs: StrictBool | None = None
    top_logprobs: TopCount | None = None

    def logprobs_wanted(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(_Request):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]
    logprobs: TopCount | None = None  # the legacy endpoint's: how many alternatives per token

    def logprobs_wanted(self) -> int | None:
        return self.logprobs


async def read_call(request: web.Request, chat: bool, max_tokens_bound: int) -> Call:
    """The request's body as a `Call`; ApiError(400) naming the parameter that is wrong."""
    body = await _json(request)
    try:
        parsed = ChatRequest.model_validate(body) if chat else CompletionRequest.model_validate(body)
    except ValidationError as exc:
        problem = exc.errors()[0]
        param = str(problem["loc"][0]) if problem["loc"] else None
        message = problem["msg"].removeprefix("Value error, ")
        raise ApiError(400, f"`{param}`: {message}" if param else message, param=param) from exc
    if isinstance(parsed, ChatRequest):
        if parsed.top_logprobs is not None and not parsed.logprobs:
            raise ApiError(400, "`top_logprobs` needs `logprobs: true`", param="top_logprobs")
        return parsed.call(*conversation(parsed.messages), max_tokens_bound)
    prompt = parsed.prompt if isinstance(parsed.prompt, str) else parsed.prompt[0]
    if not prompt.strip():
        raise ApiError(400, "`prompt` must be one non-empty string", param="prompt")
    return parsed.call(prompt, [], "", max_tokens_bound)


def conversation(messages: list[Message]) -> tuple[str, list[Turn], str]:
    """The last user message (the question), the user/assistant pairs before it, and the system messages."""
    system = "\n\n".join(m.text() for m in messages if m.role in ("system", "developer"))
    talk = [m for m in messages if m.role in ("user", "assistant")]
    if not talk or talk[-1].role != "user" or not talk[-1].text().strip():
        raise ApiError(400, "the last message must be the user's, with text", param="messages")
    history: list[Turn] = []
    pending: str | None = None
    for message in talk[:-1]:
        if message.role == "user":
            pending = message.text() if pending is None else pending + "\n\n" + message.text()
            continue
        try:
            history.append(Turn(question=pending or "", answer=message.text()))
        except ValidationError as exc:
            raise ApiError(
                400, f"a turn of `messages` is over {MAX_TURN_CHARS:,} characters", param="messages"
            ) from exc
        pending = None
    if len(system) > MAX_INSTRUCTIONS_CHARS:
        raise ApiError(400, f"system messages over {MAX_INSTRUCTIONS_CHARS} characters", param="messages")
    return talk[-1].text(), history, system


async def _json(request: web.Request) -> Any:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the body is not JSON ({exc})") from exc
    except RecursionError as exc:  # arrays or objects nested past Python's stack
        raise ApiError(400, "the body is nested too deeply") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body
