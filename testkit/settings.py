"""Settings as a test builds them: from the arguments and the environment, never from a `.env` file in the
working directory (a developer's own would change what the tests see)."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic_settings import BaseSettings

S = TypeVar("S", bound=BaseSettings)


def settings_of(kind: type[S], **values: Any) -> S:
    """`kind(**values)` without reading `.env` (pydantic-settings' `_env_file=None`)."""
    return kind(**{"_env_file": None}, **values)
