"""`kullm`: one command for the worker, the adapters, the API and the terminal client.

Each subcommand imports its side lazily, so `kullm ask` never loads torch and the bot image needs no worker
dependencies. Every command's `--help` lists its options and the environment variables it reads (from its
settings classes). Whatever goes wrong before a command runs is one line and a documented exit status: bad
arguments and bad settings 2 (with `ask --json`, a JSON `error` line), Ctrl-C 130, stdout closed under it 141.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from bot.texts import Language, text
from chatbus.config import settings_problem
from chatbus.messages import MAX_CONTEXT_CHARS
from runtime.exits import EXIT_CANCELLED, EXIT_INPUT, EXIT_PIPE

if TYPE_CHECKING:
    from bot.settings import ClientSettings
from kullm.parser import UsageError, parser

# Servers' --host/--port (and the worker's --metrics-host/--metrics-port) set these, as the environment would.
SERVER_OPTIONS = {
    "api": ("API_HOST", "API_PORT"),
    "slack": ("SLACK_HTTP_HOST", "SLACK_HTTP_PORT"),
    "worker": ("METRICS_HOST", "METRICS_PORT"),
}


class InputError(Exception):
    """An argument that parses but cannot be used: its message (in BOT_LANGUAGE) in one line, exit 2."""


def _language() -> Language:
    """BOT_LANGUAGE for messages about arguments and settings (Korean when it cannot be read either)."""
    from bot.settings import LanguageSettings

    try:
        return LanguageSettings().bot_language
    except ValidationError:
        return "ko"


def _text_argument(value: str, key: str, language: Language) -> str:
    """A command-line argument as text: bytes that are not UTF-8 arrive as lone surrogates (PEP 383)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(text(key, language)) from None
    return value


def _context(args: argparse.Namespace, language: Language, pdf_budget: Any = None) -> str:
    """--context, or --context-file read by the rule every file into 맥락 follows (`bot.workspace.file_text`)."""
    if args.context_file is None:
        return _text_argument(args.context, "context_not_utf8", language)
    from bot.pdf_text import PdfReader
    from bot.workspace import FileRefused, file_text

    limit = MAX_CONTEXT_CHARS * 4  # bytes: UTF-8 takes at most 4 a character, so more is surely too long
    name = "stdin" if args.context_file == "-" else args.context_file
    try:
        if args.context_file == "-":
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with Path(args.context_file).open("rb") as file:
                data = file.read(limit + 1)
    except OSError as exc:
        raise InputError(text("context_file_unreadable", language, path=name, reason=exc.strerror)) from None
    if len(data) > limit:
        raise InputError(text("context_too_long", language, length=len(data), limit=MAX_CONTEXT_CHARS))
    try:
        return asyncio.run(file_text(Path(name).name, data, limit, language, PdfReader(pdf_budget)))
    except FileRefused as exc:
        raise InputError(exc.notice) from None


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    args_given = sys.argv[1:] if argv is None else argv
    as_json = bool(args_given) and args_given[0] == "ask" and "--json" in args_given
    try:
        return _main(parser().parse_args(args_given))
    except (UsageError, InputError) as exc:
        return _refused(str(exc), as_json)
    except ValidationError as exc:
        return _refused(settings_problem(exc, lead=text("settings_invalid", _language())), as_json)
    except KeyboardInterrupt:  # Ctrl-C before `ask` took over the signal (connecting, loading settings)
        return EXIT_CANCELLED
    except BrokenPipeError:
        _stdout_gone()
        return EXIT_PIPE


def _refused(message: str, as_json: bool) -> int:
    if as_json:
        from bot.terminal.render import notice_for

        return notice_for(True, sys.stdout, sys.stderr)(EXIT_INPUT, message)
    print(message, file=sys.stderr)
    return EXIT_INPUT


def _stdout_gone() -> None:
    """stdout's reader left: point it at /dev/null, so that the flush at exit does not raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _main(args: argparse.Namespace) -> int:
    for option, variable in zip(("host", "port"), SERVER_OPTIONS.get(args.command, ()), strict=False):
        value = getattr(args, option if args.command != "worker" else f"metrics_{option}", None)
        if value is not None:
            os.environ[variable] = str(value)  # as if set in the environment: above .env, validated by the settings
    if args.command == "worker":
        from inference.__main__ import main as worker_main

        return worker_main()
    if args.command == "up":
        from kullm.up import main as up_main

        return up_main(redis_port=args.redis_port, demo=args.demo)
    if args.command == "download":
        from kullm.download import main as download_main

        return download_main(args.model)
    if args.command in {"discord", "slack", "api"}:
        from bot.__main__ import main as bot_main

        return bot_main([args.command])
    if args.command == "prompt":
        return _prompt(args)
    if args.command == "eval":
        from kullm.eval.cli import main as eval_main

        return eval_main(args)
    from bot.settings import ClientSettings

    return _client_command(args, ClientSettings())


def _prompt(args: argparse.Namespace) -> int:
    from kullm import prompt

    language = _language()
    request = prompt.Request(
        question=_text_argument(args.question, "question_not_utf8", language),
        context=_context(args, language),
        history_from=args.history_from,
        channel=args.channel,
        max_new_tokens=args.max_new_tokens,
        as_json=args.json,
    )
    return prompt.main(request, language)


def _client_command(args: argparse.Namespace, settings: ClientSettings) -> int:
    """The commands that talk to the queue: ask, keys, usage, feedback, status."""
    from bot.terminal import ask as terminal
    from kullm import operator

    if args.command == "ask":
        language = settings.bot_language
        question = _text_argument(args.question, "question_not_utf8", language)
        context = _context(args, language, settings.pdf_budget())
        if args.task != "ask":  # the text to work on: --context / --context-file, or the argument itself
            question, context = "", context or question
        if args.knowledge:
            if context or args.task != "ask":  # its 맥락 is the channel's messages
                raise InputError(text("knowledge_alone", language))
            from bot.terminal.knowledge import ask_workspace

            return asyncio.run(
                ask_workspace(settings, question, args.knowledge, max_new_tokens=args.max_new_tokens, as_json=args.json)
            )
        return asyncio.run(
            terminal.ask(
                settings,
                question,
                context=context,
                task=args.task,
                max_new_tokens=args.max_new_tokens,
                as_json=args.json,
            )
        )
    if args.command == "keys":
        limits = {}
        if args.action == "create":
            limits = {
                "questions_per_minute": args.questions_per_minute,
                "tokens_per_day": args.tokens_per_day,
                "concurrent": args.concurrent,
            }
        return asyncio.run(operator.keys(settings, args.action, getattr(args, "name", None), **limits))
    if args.command == "usage":
        return asyncio.run(operator.usage(settings, since=args.since, by=args.by, as_json=args.json))
    if args.command == "feedback":
        return asyncio.run(operator.feedback(settings, since=args.since or 0.0, as_json=args.json))
    return asyncio.run(operator.status(settings, as_json=args.json))


if __name__ == "__main__":
    sys.exit(main())
