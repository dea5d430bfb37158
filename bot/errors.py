"""The root of the front-ends' own exceptions, so a caller can tell them from a library's."""

from __future__ import annotations


class BotError(Exception):
    """Something a front-end decided: a refusal with a notice for the asker, a gone placeholder, an HTTP error."""
