"""What every adapter process does at start-up: read its settings and set up logging (`runtime` has the rest of
the plumbing: exit statuses, signals)."""

from __future__ import annotations

import logging
import sys
from typing import TypeVar

from pydantic import ValidationError

from bot.settings import ClientSettings
from chatbus.config import settings_problem
from runtime.logs import configure_logging

SettingsT = TypeVar("SettingsT", bound=ClientSettings)


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
