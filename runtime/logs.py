"""The one logging set-up of every kullm process: ids and counts only, never user text or tokens."""

from __future__ import annotations

import logging

# Libraries that log every request or heartbeat at INFO: kept to warnings.
QUIET = ("discord.gateway", "httpx", "urllib3", "filelock")


def configure_logging(level: str = "INFO") -> None:
    """Timestamped `LEVEL name: message` lines on stderr at `level`."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
