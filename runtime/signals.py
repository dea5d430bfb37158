"""Stopping a process the way Docker and a terminal ask it to."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable


def on_stop_signal(stop: Callable[[], object]) -> None:
    """Call `stop` on SIGTERM (docker stop) and SIGINT (Ctrl-C), in the running loop."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
