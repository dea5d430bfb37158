"""`kullm prompt`: exactly what the worker would send the model for a question, and its token count.

Same builder as the worker (template, system prompt, a channel's persona, neutralising, window
fitting), on MODEL_ID's tokenizer alone: no weights are loaded. The prompt goes to stdout as it is;
what fitting it cost goes to stderr (or everything as one JSON object with --json).
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass

from bot.texts import Language, text
from chatbus import Bus, BusError, Turn, redact_url
from inference.errors import InferenceError, PromptTooLong
from inference.model import DEFAULT_CONTEXT_WINDOW
from inference.placement import model_source
from inference.settings import WorkerSettings
from inference.tokenizer import configured_window, load_tokenizer, prompt_builder
from runtime.exits import EXIT_FAILED, EXIT_INPUT, EXIT_OK


@dataclass(frozen=True)
class Request:
    """What `kullm prompt` was asked to render."""

    question: str
    context: str = ""
    history_from: str | None = None  # PLATFORM:CONVERSATION, e.g. discord:<thread id>, slack:<channel>:<thread ts>
    channel: str | None = None  # PLATFORM:CHANNEL whose persona applies
    max_new_tokens: int | None = None
    as_json: bool = False


class BadOption(ValueError):
    """--history-from or --channel not given as PLATFORM:ID."""

    def __init__(self, option: str) -> None:
        super().__init__(option)
        self.option = option


def _platform_and_key(value: str, option: str) -> tuple[str, str]:
    platform, _, key = value.partition(":")
    if not platform or not key:
        raise BadOption(option)
    return platform, key


async def _stored(settings: WorkerSettings, request: Request) -> tuple[list[Turn], str]:
    """The conversation's turns and the channel's persona, as the relay would send them."""
    if not request.history_from and not request.channel:
        return [], ""
    bus = Bus.open(settings.redis_url, settings.redis_password, settings.key_prefix)
    try:
        history: list[Turn] = []
        instructions = ""
        if request.history_from:
            history = await bus.threads.history(*_platform_and_key(request.history_from, "--history-from"))
        if request.channel:
            persona = await bus.personas.get(*_platform_and_key(request.channel, "--channel"))
            instructions = persona.text if persona else ""
        return history, instructions
    finally:
        await bus.aclose()


def main(request: Request, language: Language = "ko") -> int:
    """Print the prompt; exit 1 when the question alone does not fit or the model's tokenizer cannot load, 2 for a
    bad option. Errors are one line in BOT_LANGUAGE."""
    settings = WorkerSettings()
    try:
        history, instructions = asyncio.run(_stored(settings, request))
    except BadOption as exc:
        return _fail(EXIT_INPUT, text("prompt_bad_option", language, option=exc.option))
    except BusError:
        return _fail(EXIT_FAILED, text("prompt_no_history", language, url=redact_url(settings.redis_url)))
    try:
        settings = model_source(settings)
        tokenizer = load_tokenizer(settings)
    except InferenceError as exc:
        return _fail(EXIT_FAILED, text("prompt_no_tokenizer", language, reason=exc))
    window = settings.context_window or configured_window(settings) or DEFAULT_CONTEXT_WINDOW
    max_new_tokens = min(request.max_new_tokens or settings.max_new_tokens, settings.max_new_tokens)
    builder = prompt_builder(settings, tokenizer, window)
    try:
        built = builder.build(
            request.question.strip(),
            context=request.context.strip(),
            history=history,
            instructions=instructions,
            max_new_tokens=max_new_tokens,
        )
    except PromptTooLong:
        return _fail(EXIT_FAILED, text("too_long_tokens", language))
    summary = {
        "model": settings.model_id,
        "template": settings.template.value,
        "window": window,
        "max_new_tokens": max_new_tokens,
        "tokens": built.tokens,
        "turns": len(history) - built.dropped_turns,
        "dropped_turns": built.dropped_turns,
        "context_cut": built.context_cut,
    }
    if request.as_json:
        print(json.dumps({"prompt": built.text, **summary}, ensure_ascii=False))
        return EXIT_OK
    sys.stdout.write(built.text)
    sys.stdout.flush()
    notes = [f"{built.tokens} tokens (+ up to {max_new_tokens} new, window {window})"]
    notes += [f"template {settings.template.value}", f"model {settings.model_id}"]
    if history:
        notes.append(f"{summary['turns']} of {len(history)} past turns kept")
    if built.context_cut:
        notes.append("맥락 cut to fit")
    print("\n---\n" + "; ".join(notes), file=sys.stderr)
    return EXIT_OK


def _fail(status: int, message: str) -> int:
    print(message, file=sys.stderr)
    return status
