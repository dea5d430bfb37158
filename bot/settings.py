"""Settings of the adapters and the terminal client, read once in `__main__`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ClientSettings(BaseSettings):
    """What every front-end shares: where the queue is and the limits it enforces before enqueueing."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True)

    redis_url: str = "redis://localhost:6379/0"
    key_prefix: str = "kullm:"
    bot_language: Literal["ko", "en"] = "ko"
    max_question_chars: int = Field(default=4000, ge=1)
    max_queue: int = Field(default=200, ge=1)
    question_ttl_s: float = Field(default=600.0, gt=0)
    answer_start_timeout_s: float | None = Field(default=None, gt=0)
    answer_stall_timeout_s: float = Field(default=180.0, gt=0)
