"""`kullm`: one command for the worker and the terminal client.

Each subcommand imports its side lazily, so `kullm ask` never loads torch and the bot
image needs no worker dependencies.
"""

from __future__ import annotations

import argparse
import asyncio
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kullm", description="KULLM (구름) chat service")
    commands = parser.add_subparsers(dest="command", required=True)
    ask = commands.add_parser("ask", help="ask a question and stream the answer")
    ask.add_argument("question")
    ask.add_argument("--context", "-c", default="", help="맥락: text the answer should use")
    ask.add_argument("--max-new-tokens", type=int, default=None)
    ask.add_argument("--json", action="store_true", help="print the answer events as JSON lines")
    status = commands.add_parser("status", help="queue depth, in-flight questions, workers, dead letters")
    status.add_argument("--json", action="store_true")
    commands.add_parser("worker", help="run an inference worker (same as python -m inference)")
    commands.add_parser("discord", help="run the Discord adapter (same as python -m bot discord)")
    commands.add_parser("slack", help="run the Slack adapter (same as python -m bot slack)")
    up = commands.add_parser("up", help="run Redis (if needed), the worker and the configured adapters as processes")
    up.add_argument("--redis-port", type=int, default=6379, help="port of the private redis-server (if one is needed)")
    download = commands.add_parser("download", help="fetch the model into the Hugging Face cache ahead of time")
    download.add_argument("--model", help="repo id (default: MODEL_ID from the environment / .env)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    args = _parser().parse_args(argv)
    if args.command == "worker":
        from inference.__main__ import main as worker_main

        return worker_main()
    if args.command == "up":
        from kullm.up import main as up_main

        return up_main(redis_port=args.redis_port)
    if args.command == "download":
        from kullm.download import main as download_main

        return download_main(args.model)
    if args.command in {"discord", "slack"}:
        from bot.__main__ import main as bot_main

        return bot_main([args.command])
    from pydantic import ValidationError

    from bot import terminal
    from bot.settings import ClientSettings

    try:
        settings = ClientSettings()
    except ValidationError as exc:
        print(f"invalid settings:\n{exc}", file=sys.stderr)
        return 2
    if args.command == "ask":
        return asyncio.run(
            terminal.ask(
                settings, args.question, context=args.context, max_new_tokens=args.max_new_tokens, as_json=args.json
            )
        )
    return asyncio.run(terminal.status(settings, as_json=args.json))


if __name__ == "__main__":
    sys.exit(main())
