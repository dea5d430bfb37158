"""`kullm`: one command for the worker and the terminal client.

Each subcommand imports its side lazily, so `kullm ask` never loads torch and the bot
image needs no worker dependencies. Bad arguments get one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from bot.process import EXIT_CANCELLED, EXIT_INPUT
from bot.texts import Language, text
from chatbus.messages import MAX_CONTEXT_CHARS, MAX_NEW_TOKENS, TASKS

if TYPE_CHECKING:
    from bot.settings import ClientSettings


class _Parser(argparse.ArgumentParser):
    """argparse, with one line instead of a usage block on bad arguments."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_INPUT, f"{self.prog}: {message} (see {self.prog} --help)\n")


class InputError(Exception):
    """An argument that parses but cannot be used: its message (in BOT_LANGUAGE) in one line, exit 2."""


def _token_count(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if not 1 <= count <= MAX_NEW_TOKENS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_NEW_TOKENS}, not {count}")
    return count


def _positive(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {count}")
    return count


def _date(value: str) -> float:
    """A day (YYYY-MM-DD, or an ISO date and time) as epoch seconds, in UTC unless it names a zone."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kullm", description="KULLM (구름) chat service")
    commands = parser.add_subparsers(dest="command", required=True)
    ask = commands.add_parser("ask", help="ask a question and stream the answer")
    ask.add_argument("question", nargs="?", default="", help="the question (with --task: the text to work on)")
    given = ask.add_mutually_exclusive_group()
    given.add_argument("--context", "-c", default="", help="맥락: text the answer should use")
    given.add_argument("--context-file", metavar="PATH", help="맥락 from a UTF-8 text file ('-' reads stdin)")
    ask.add_argument(
        "--task",
        choices=TASKS,
        default="ask",
        help="summarize, translate (Korean<->English) or proofread the text given (as QUESTION or --context-file)",
    )
    ask.add_argument("--max-new-tokens", type=_token_count, default=None, help=f"1 to {MAX_NEW_TOKENS}")
    ask.add_argument("--json", action="store_true", help="print the answer events as JSON lines (see README)")
    prompt = commands.add_parser("prompt", help="print the exact prompt the worker would send, and its tokens")
    prompt.add_argument("question")
    given = prompt.add_mutually_exclusive_group()
    given.add_argument("--context", "-c", default="", help="맥락: text the answer should use")
    given.add_argument("--context-file", metavar="PATH", help="맥락 from a UTF-8 text file ('-' reads stdin)")
    prompt.add_argument(
        "--history-from",
        metavar="THREAD",
        help="with that conversation's stored turns: discord:<thread id> or slack:<channel>:<thread ts>",
    )
    prompt.add_argument("--channel", metavar="PLATFORM:CHANNEL", help="with that channel's persona (/kullm-설정)")
    prompt.add_argument("--max-new-tokens", type=_token_count, default=None, help=f"1 to {MAX_NEW_TOKENS}")
    prompt.add_argument("--json", action="store_true", help="the prompt and its counts as one JSON object")
    status = commands.add_parser("status", help="queue depth, in-flight questions, workers, dead letters")
    status.add_argument("--json", action="store_true")
    feedback = commands.add_parser("feedback", help="the 👍/👎 votes on answers, per model, template and engine")
    feedback.add_argument("--since", type=_date, default=None, metavar="DATE", help="from this day (YYYY-MM-DD)")
    feedback.add_argument("--json", action="store_true", help="one JSON line per vote")
    keys = commands.add_parser("keys", help="the OpenAI-compatible API's keys: create, list, revoke")
    key_actions = keys.add_subparsers(dest="action", required=True)
    create = key_actions.add_parser("create", help="make a key (printed once) with its limits")
    create.add_argument("name")
    create.add_argument("--questions-per-minute", type=_positive, default=None, help="default 60")
    create.add_argument("--tokens-per-day", type=_positive, default=None, help="prompt + completion; default none")
    create.add_argument("--concurrent", type=_positive, default=None, help="questions open at once; default 4")
    key_actions.add_parser("list", help="each key's limits and today's tokens")
    key_actions.add_parser("revoke", help="stop a key at once").add_argument("name")
    usage = commands.add_parser("usage", help="questions and tokens per day, by user, channel, API key or platform")
    usage.add_argument("--since", type=_date, default=None, metavar="DATE", help="from this day (default: 7 days)")
    usage.add_argument("--by", choices=("user", "channel", "key", "platform"), default="user")
    usage.add_argument("--json", action="store_true", help="one JSON line per row")
    commands.add_parser("api", help="run the OpenAI-compatible API (same as python -m bot api)")
    commands.add_parser("worker", help="run an inference worker (same as python -m inference)")
    commands.add_parser("discord", help="run the Discord adapter (same as python -m bot discord)")
    commands.add_parser("slack", help="run the Slack adapter (same as python -m bot slack)")
    up = commands.add_parser("up", help="run Redis (if needed), the worker and the configured adapters as processes")
    up.add_argument("--redis-port", type=int, default=6379, help="port of the private redis-server (if one is needed)")
    download = commands.add_parser("download", help="fetch the model into the Hugging Face cache ahead of time")
    download.add_argument("--model", help="repo id (default: MODEL_ID from the environment / .env)")
    return parser


def _text_argument(value: str, key: str, language: Language) -> str:
    """A command-line argument as text: bytes that are not UTF-8 arrive as lone surrogates (PEP 383)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(text(key, language)) from None
    return value


def _context(args: argparse.Namespace, language: Language) -> str:
    if args.context_file is None:
        return _text_argument(args.context, "context_not_utf8", language)
    limit = MAX_CONTEXT_CHARS * 4  # bytes: UTF-8 takes at most 4 a character, so more is surely too long
    source = "stdin" if args.context_file == "-" else args.context_file
    try:
        if args.context_file == "-":
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with Path(args.context_file).open("rb") as file:
                data = file.read(limit + 1)
    except OSError as exc:
        raise InputError(text("context_file_unreadable", language, path=source, reason=exc.strerror)) from None
    if len(data) > limit:
        raise InputError(text("context_too_long", language, length=len(data), limit=MAX_CONTEXT_CHARS))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(text("context_file_not_utf8", language, path=source, offset=exc.start)) from None


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    try:
        return _main(_parser().parse_args(argv))
    except InputError as exc:
        print(exc, file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:  # Ctrl-C before `ask` took over the signal (connecting, loading settings)
        return EXIT_CANCELLED


def _main(args: argparse.Namespace) -> int:
    if args.command == "worker":
        from inference.__main__ import main as worker_main

        return worker_main()
    if args.command == "up":
        from kullm.up import main as up_main

        return up_main(redis_port=args.redis_port)
    if args.command == "download":
        from kullm.download import main as download_main

        return download_main(args.model)
    if args.command in {"discord", "slack", "api"}:
        from bot.__main__ import main as bot_main

        return bot_main([args.command])
    from pydantic import ValidationError

    if args.command == "prompt":
        from kullm import prompt

        request = prompt.Request(
            question=_text_argument(args.question, "question_not_utf8", "en"),
            context=_context(args, "en"),
            history_from=args.history_from,
            channel=args.channel,
            max_new_tokens=args.max_new_tokens,
            as_json=args.json,
        )
        try:
            return prompt.main(request)
        except ValidationError as exc:
            print(f"invalid worker settings:\n{exc}", file=sys.stderr)
            return EXIT_INPUT

    from bot.settings import ClientSettings

    try:
        settings = ClientSettings()
    except ValidationError as exc:
        print(f"invalid settings:\n{exc}", file=sys.stderr)
        return EXIT_INPUT
    return _client_command(args, settings)


def _client_command(args: argparse.Namespace, settings: ClientSettings) -> int:
    """The commands that talk to the queue: ask, keys, usage, feedback, status."""
    from bot import terminal

    if args.command == "ask":
        language = settings.bot_language
        question = _text_argument(args.question, "question_not_utf8", language)
        context = _context(args, language)
        if args.task != "ask":  # the text to work on: --context / --context-file, or the argument itself
            question, context = "", context or question
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
        return asyncio.run(terminal.keys(settings, args.action, getattr(args, "name", None), **limits))
    if args.command == "usage":
        return asyncio.run(terminal.usage(settings, since=args.since, by=args.by, as_json=args.json))
    if args.command == "feedback":
        return asyncio.run(terminal.feedback(settings, since=args.since or 0.0, as_json=args.json))
    return asyncio.run(terminal.status(settings, as_json=args.json))


if __name__ == "__main__":
    sys.exit(main())
