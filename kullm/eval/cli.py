"""`kullm eval run | report | compare`: the arguments made into a run, a report or a comparison. Imported when the
command line is built, so only names load here; the work loads when a command runs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

from pydantic import SecretStr

from bot.settings import ClientSettings
from runtime.exits import EXIT_INPUT, EXIT_OK

DEFAULT_JUDGE_URL = "https://api.openai.com/v1"
PROTOCOL_NAMES = ("kullm-2023", "kullm3-2024")


class EvalSettings(ClientSettings):
    """The queue's (a client's), and the judge's key (for `kullm api` as the judge: one from `kullm keys create`)."""

    judge_api_key: SecretStr | None = None


def main(args: argparse.Namespace) -> int:
    if args.action == "compare":
        return _compare(Path(args.first), Path(args.second))
    if args.action == "report":
        return asyncio.run(_report(Path(args.run)))
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    from kullm.eval.protocols import PROTOCOLS
    from kullm.eval.run import Options, run

    protocol = PROTOCOLS[args.protocol]
    settings = EvalSettings()
    key = settings.judge_api_key
    options = Options(
        protocol=protocol,
        judge_url=args.judge_url,
        judge_model=args.judge_model or protocol.judge_model,
        judge_key=key.get_secret_value() if key else None,
        out=Path(args.out),
        limit=args.limit,
        concurrency=args.concurrency,
        channel=args.channel,
        samples=args.samples,
        judge_timeout_s=args.judge_timeout,
        judge_backoff_s=args.judge_backoff,
        feedback_since=args.feedback_since,
    )
    return asyncio.run(run(settings, options))


def _is_run(folder: Path) -> bool:
    return (folder / "run.json").is_file() and (folder.parent / "deployment.json").is_file()


async def _report(folder: Path) -> int:
    from chatbus import Bus, BusError
    from kullm.eval import report
    from kullm.eval.protocols import PROTOCOLS
    from kullm.eval.store import read_json

    if not _is_run(folder):
        print(f"{folder} is not a run's folder (OUT/<deployment>/<protocol>-<judge>)", file=sys.stderr)
        return EXIT_INPUT
    settings = ClientSettings()
    votes = None
    bus = Bus.open(settings.redis_url, settings.redis_password, settings.key_prefix)
    with contextlib.suppress(BusError):  # the members' votes are an addition: the report stands without Redis
        votes = await report.feedback_rates(bus, read_json(folder.parent / "deployment.json"), None)
    await bus.aclose()
    protocol = PROTOCOLS[read_json(folder / "run.json")["protocol"]]
    sys.stdout.write(report.write(folder, None, protocol, votes))
    return EXIT_OK


def _compare(first: Path, second: Path) -> int:
    from kullm.eval import report

    for folder in (first, second):
        if not _is_run(folder):
            print(f"{folder} is not a run's folder (OUT/<deployment>/<protocol>-<judge>)", file=sys.stderr)
            return EXIT_INPUT
    try:
        sys.stdout.write(report.compare(first, second))
    except ValueError as exc:
        print(f"kullm eval compare: {exc}", file=sys.stderr)
        return EXIT_INPUT
    return EXIT_OK
