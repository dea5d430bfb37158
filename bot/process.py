"""What every adapter process does at start-up: read its settings, set up logging, stop on a signal."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from typing import TypeVar

from pydantic import ValidationError

from bot.settings import ClientSettings
from chatbus.config import settings_problem

# Exit statuses of every kullm process (`kullm ask`'s are in bot/terminal.py's docstring). 2 is a
# configuration or input error: `kullm up` does not restart a child that exits with it.
EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_BUSY, EXIT_REDIS, EXIT_TIMEOUT, EXIT_CANCELLED = 0, 1, 2, 3, 4, 5, 130
EXIT_INPUT = EXIT_CONFIG
EXIT_NO_WORKER = 6  # `kullm ask`: no worker serves the queue (none serving, none loading its model)
EXIT_PIPE = 141  # stdout closed under us (a pipe's reader left), as a shell reports a process SIGPIPE ended
SettingsT = TypeVar("SettingsT", bound=ClientSettings)


def configure_logging(level: str = "INFO") -> None:
    """One logging set-up per process; ids only, never user text or tokens."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("discord.gateway").setLevel(logging.WARNING)


def load_settings(settings_class: type[SettingsT]) -> SettingsT | None:
    """The adapter's settings, with logging set up; None (after saying why on stderr) when they are invalid."""
    try:
        settings = settings_class()
    except ValidationError as exc:
        print(settings_problem(exc), file=sys.stderr)
        return None
    configure_logging()
    logging.getLogger("bot").info("redis: %s", settings.redis_said)
    return settings


def on_stop_signal(stop: Callable[[], object]) -> None:
    """Call `stop` on SIGTERM (docker stop) and SIGINT (Ctrl-C), in the running loop."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
