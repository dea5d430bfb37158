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
import textwrap
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pydantic import SecretStr, ValidationError

from bot.texts import Language, text
from chatbus.config import settings_problem
from chatbus.messages import MAX_CONTEXT_CHARS, MAX_NEW_TOKENS, TASKS
from runtime.exits import EXIT_CANCELLED, EXIT_INPUT, EXIT_PIPE

if TYPE_CHECKING:
    from pydantic_settings import BaseSettings

    from bot.settings import ClientSettings

# Servers' --host/--port (and the worker's --metrics-host/--metrics-port) set these, as the environment would.
SERVER_OPTIONS = {
    "api": ("API_HOST", "API_PORT"),
    "slack": ("SLACK_HTTP_HOST", "SLACK_HTTP_PORT"),
    "worker": ("METRICS_HOST", "METRICS_PORT"),
}


class UsageError(Exception):
    """Arguments argparse refused: one line, exit 2."""


class InputError(Exception):
    """An argument that parses but cannot be used: its message (in BOT_LANGUAGE) in one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one line instead of a usage block on bad arguments, and an epilog naming the environment
    variables the command reads, computed only when --help asks for it (the settings classes import their side)."""

    def __init__(self, *args: Any, settings: Callable[[], Sequence[type[BaseSettings]]] | None = None, **kw: Any):
        kw.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kw)
        self.settings = settings

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")

    def format_help(self) -> str:
        if self.settings is not None and self.epilog is None:
            self.epilog = environment_help(self.settings())
        return super().format_help()


def environment_help(classes: Sequence[type[BaseSettings]]) -> str:
    """The environment variables (also read from .env) that `classes` define, each with its default."""
    seen: dict[str, str] = {}
    for settings_class in classes:
        for name, field in settings_class.model_fields.items():
            default = field.get_default(call_default_factory=False)
            shown = "" if default is None or isinstance(default, SecretStr) or callable(default) else f"={default}"
            seen.setdefault(name.upper(), f"{name.upper()}{shown!s:.60}")
    listed = textwrap.fill(", ".join(seen.values()), width=100, break_on_hyphens=False)
    return f"environment variables (or .env in the working directory; .env.example explains each):\n{listed}"


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is between 1 and 65535, not {port}")
    return port


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


def _client() -> list[type[BaseSettings]]:
    from bot.settings import ClientSettings

    return [ClientSettings]


def _worker() -> list[type[BaseSettings]]:
    from inference.settings import WorkerSettings

    return [WorkerSettings]


def _discord() -> list[type[BaseSettings]]:
    from bot.settings import DiscordSettings

    return [DiscordSettings]


def _slack() -> list[type[BaseSettings]]:
    from bot.settings import SlackSettings

    return [SlackSettings]


def _api() -> list[type[BaseSettings]]:
    from bot.api.settings import ApiSettings

    return [ApiSettings]


def _everything() -> list[type[BaseSettings]]:
    return [*_worker(), *_discord(), *_slack()]


def _prompt_settings() -> list[type[BaseSettings]]:
    from bot.settings import LanguageSettings

    return [*_worker(), LanguageSettings]


def _context_options(command: argparse.ArgumentParser) -> None:
    given = command.add_mutually_exclusive_group()
    given.add_argument("--context", "-c", default="", help="맥락: text the answer should use")
    given.add_argument(
        "--context-file",
        metavar="PATH",
        help="맥락 from a file, read as a chat attachment is: text in UTF-8 or CP949/EUC-KR, or a PDF ('-': stdin)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kullm", description="KULLM (구름) chat service. `kullm COMMAND --help` for each command.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    ask = commands.add_parser("ask", help="ask a question and stream the answer", settings=_client)
    ask.add_argument("question", nargs="?", default="", help="the question (with --task: the text to work on)")
    _context_options(ask)
    ask.add_argument(
        "--task",
        choices=TASKS,
        default="ask",
        help="summarize, translate (Korean<->English) or proofread the text given (as QUESTION or --context-file)",
    )
    ask.add_argument("--max-new-tokens", type=_token_count, default=None, help=f"1 to {MAX_NEW_TOKENS}")
    ask.add_argument("--json", action="store_true", help="print the answer events as JSON lines (see README)")
    prompt = commands.add_parser(
        "prompt", help="print the exact prompt the worker would send, and its tokens", settings=_prompt_settings
    )
    prompt.add_argument("question")
    _context_options(prompt)
    prompt.add_argument(
        "--history-from",
        metavar="THREAD",
        help="with that conversation's stored turns: discord:<thread id> or slack:<channel>:<thread ts>",
    )
    prompt.add_argument("--channel", metavar="PLATFORM:CHANNEL", help="with that channel's persona (/kullm-설정)")
    prompt.add_argument("--max-new-tokens", type=_token_count, default=None, help=f"1 to {MAX_NEW_TOKENS}")
    prompt.add_argument("--json", action="store_true", help="the prompt and its counts as one JSON object")
    status = commands.add_parser(
        "status", help="which Redis, queue depth, in-flight questions, workers, dead letters", settings=_client
    )
    status.add_argument("--json", action="store_true", help="one JSON object")
    feedback = commands.add_parser(
        "feedback", help="the 👍/👎 votes on answers, per model, template and engine", settings=_client
    )
    feedback.add_argument("--since", type=_date, default=None, metavar="DATE", help="from this day (YYYY-MM-DD)")
    feedback.add_argument("--json", action="store_true", help="one JSON line per vote")
    keys = commands.add_parser("keys", help="the OpenAI-compatible API's keys: create, list, revoke", settings=_client)
    key_actions = keys.add_subparsers(dest="action", required=True, parser_class=_Parser)
    create = key_actions.add_parser("create", help="make a key (printed once) with its limits", settings=_client)
    create.add_argument("name")
    create.add_argument("--questions-per-minute", type=_positive, default=None, help="default 60")
    create.add_argument("--tokens-per-day", type=_positive, default=None, help="prompt + completion; default none")
    create.add_argument("--concurrent", type=_positive, default=None, help="questions open at once; default 4")
    key_actions.add_parser("list", help="each key's limits and today's tokens", settings=_client)
    key_actions.add_parser("revoke", help="stop a key at once", settings=_client).add_argument("name")
    usage = commands.add_parser(
        "usage", help="questions and tokens per day, by user, channel, API key or platform", settings=_client
    )
    usage.add_argument("--since", type=_date, default=None, metavar="DATE", help="from this day (default: 7 days)")
    usage.add_argument("--by", choices=("user", "channel", "key", "platform"), default="user")
    usage.add_argument("--json", action="store_true", help="one JSON line per row")
    api = commands.add_parser("api", help="run the OpenAI-compatible API (same as python -m bot api)", settings=_api)
    api.add_argument("--host", help="address to listen on (API_HOST; default 127.0.0.1)")
    api.add_argument("--port", type=_port, help="port to listen on (API_PORT; default 8080)")
    worker = commands.add_parser(
        "worker", help="run an inference worker (same as python -m inference)", settings=_worker
    )
    worker.add_argument("--metrics-host", help="/healthz and /metrics address (METRICS_HOST; default 127.0.0.1)")
    worker.add_argument(
        "--metrics-port", type=_port, help="their port (METRICS_PORT; default 9400, or the next free one)"
    )
    commands.add_parser("discord", help="run the Discord adapter (same as python -m bot discord)", settings=_discord)
    slack = commands.add_parser("slack", help="run the Slack adapter (same as python -m bot slack)", settings=_slack)
    slack.add_argument("--host", help="SLACK_MODE=http: address to listen on (SLACK_HTTP_HOST; default 127.0.0.1)")
    slack.add_argument("--port", type=_port, help="SLACK_MODE=http: port to listen on (SLACK_HTTP_PORT; default 3000)")
    up = commands.add_parser(
        "up",
        help="run Redis (if needed), a worker and the configured adapters as processes",
        settings=_everything,
    )
    up.add_argument(
        "--redis-port",
        type=_port,
        default=None,
        help="port of the private redis-server (default: the one it used last in this directory, else 6379)",
    )
    up.add_argument(
        "--demo", action="store_true", help="serve the demo model (MODEL=demo): no GPU, no download, a few answers"
    )
    download = commands.add_parser(
        "download", help="fetch the model into the Hugging Face cache ahead of time", settings=_worker
    )
    download.add_argument("--model", help="repo id (default: MODEL_ID from the environment / .env)")
    return parser


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
        return _main(_parser().parse_args(args_given))
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
