"""`kullm`'s command line: every subcommand, its options and arguments (checked as they are read), and in each
command's `--help` the environment variables it reads, from its settings classes."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

from pydantic import SecretStr

from chatbus.messages import MAX_NEW_TOKENS, TASKS

if TYPE_CHECKING:
    from pydantic_settings import BaseSettings


class UsageError(Exception):
    """Arguments argparse refused: one line, exit 2."""


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


def _eval_settings() -> list[type[BaseSettings]]:
    from kullm.eval.cli import EvalSettings

    return [EvalSettings]


def _eval_commands(commands: Any) -> None:
    """`kullm eval run | report | compare`."""
    from kullm.eval.cli import DEFAULT_JUDGE_URL, PROTOCOL_NAMES

    evaluation = commands.add_parser(
        "eval", help="the KULLM README's evaluation against this deployment (run, report, compare)"
    )
    actions = evaluation.add_subparsers(dest="action", required=True, parser_class=_Parser)
    run = actions.add_parser(
        "run",
        help="ask the 252 instructions through the queue, judge the answers, write the report",
        settings=_eval_settings,
    )
    run.add_argument("--protocol", choices=PROTOCOL_NAMES, default=PROTOCOL_NAMES[0])
    run.add_argument(
        "--judge-url",
        default=DEFAULT_JUDGE_URL,
        help=f"an OpenAI-compatible API's base URL (default {DEFAULT_JUDGE_URL})",
    )
    run.add_argument(
        "--judge-model", help="the judge (default: the protocol's published one, gpt-4 or gpt-4-0125-preview)"
    )
    run.add_argument("--limit", type=_positive, default=None, help="only the first N items (default all 252)")
    run.add_argument("--concurrency", type=_positive, default=4, help="items asked and judged at once (default 4)")
    run.add_argument("--out", default="eval-runs", metavar="DIR", help="where runs are kept (default ./eval-runs)")
    run.add_argument("--channel", metavar="PLATFORM:CHANNEL", help="ask with that channel's persona (/kullm-설정)")
    run.add_argument(
        "--samples", type=_positive, default=5, help="replies averaged per answer when the judge gives no logprobs"
    )
    run.add_argument("--judge-timeout", type=_seconds, default=120.0, metavar="S", help="per judge request (120)")
    run.add_argument(
        "--judge-backoff",
        type=_seconds,
        default=2.0,
        metavar="S",
        help="first wait before asking a busy judge again, doubled each time (2; Retry-After wins)",
    )
    run.add_argument(
        "--feedback-since", type=_date, default=None, metavar="DATE", help="members' 👍/👎 from this day (30 days)"
    )
    report = actions.add_parser("report", help="write a run's report again (report.md, scores.png)", settings=_client)
    report.add_argument("run", metavar="RUN", help="a run's folder (OUT/<deployment>/<protocol>-<judge>)")
    compare = actions.add_parser(
        "compare", help="paired differences per criterion between two runs, and which are beyond noise"
    )
    compare.add_argument("first", metavar="RUN_A")
    compare.add_argument("second", metavar="RUN_B")


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not 0 < seconds <= 3600:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 3600, not {value}")
    return seconds


def parser() -> argparse.ArgumentParser:
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
    ask.add_argument(
        "--knowledge",
        metavar="CHANNEL",
        help="answer from that channel's history (knowledge on): discord:<channel id> or slack:<channel id>",
    )
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
    _eval_commands(commands)
    download = commands.add_parser(
        "download", help="fetch the model into the Hugging Face cache ahead of time", settings=_worker
    )
    download.add_argument("--model", help="repo id (default: MODEL_ID from the environment / .env)")
    return parser
