"""Settings of the adapters and the terminal client, read once in `__main__`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from chatbus.messages import MAX_QUESTION_CHARS

# A worker that takes a question just before it expires still sends `started` (or `expired`) soon after.
START_AFTER_EXPIRY_S = 30.0


class ClientSettings(BaseSettings):
    """What every front-end shares: where the queue is and the limits it enforces before enqueueing."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True)

    redis_url: str = "redis://localhost:6379/0"
    redis_password: SecretStr | None = None  # used when REDIS_URL carries none (compose's Redis)
    key_prefix: str = "kullm:"
    bot_language: Literal["ko", "en"] = "ko"
    max_question_chars: int = Field(default=4000, ge=1, le=MAX_QUESTION_CHARS)  # the contract's ceiling
    max_queue: int = Field(default=200, ge=1)
    question_ttl_s: float = Field(default=600.0, gt=0)
    answer_start_timeout_s: float | None = Field(default=None, gt=0)
    answer_stall_timeout_s: float = Field(default=180.0, gt=0)
    user_questions_per_minute: int = Field(default=6, ge=1)
    user_concurrent_questions: int = Field(default=2, ge=1)
    history_turns: int = Field(default=10, ge=0)
    history_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    lease_ttl_s: float = Field(default=10.0, gt=0)
    redis_outage_s: float = Field(default=60.0, ge=0)
    # 👍/👎 under every finished answer, votes kept this many days (0: no vote buttons, nothing kept).
    feedback_ttl_days: int = Field(default=90, ge=0, le=3650)
    # Keep each voted answer's question and answer text with its votes (`kullm feedback --json` prints them).
    feedback_keep_text: bool = False

    @property
    def feedback_ttl_s(self) -> int:
        return self.feedback_ttl_days * 24 * 3600

    @property
    def start_timeout_s(self) -> float:
        """How long a follower waits for an answer's first event: ANSWER_START_TIMEOUT_S, or long
        enough for the question to wait out its whole lifetime in the queue and then start."""
        return self.answer_start_timeout_s or self.question_ttl_s + START_AFTER_EXPIRY_S


def parse_ids(value: str) -> frozenset[int]:
    """Comma- or space-separated numeric ids (Discord snowflakes) from one variable."""
    return frozenset(int(part) for part in value.replace(",", " ").split())


class DiscordSettings(ClientSettings):
    """The Discord adapter's settings."""

    discord_token: SecretStr | None = None
    discord_guild_ids: str = ""
    discord_allowed_channel_ids: str = ""
    discord_allowed_role_ids: str = ""
    discord_edit_interval_s: float = Field(default=1.2, gt=0)
    discord_api_base: str | None = None

    @property
    def guild_ids(self) -> frozenset[int]:
        return parse_ids(self.discord_guild_ids)

    @property
    def allowed_channel_ids(self) -> frozenset[int]:
        return parse_ids(self.discord_allowed_channel_ids)

    @property
    def allowed_role_ids(self) -> frozenset[int]:
        return parse_ids(self.discord_allowed_role_ids)


class SlackSettings(ClientSettings):
    """The Slack adapter's settings."""

    slack_bot_token: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_mode: Literal["socket", "http"] = "socket"
    slack_http_host: str = "127.0.0.1"  # behind a reverse proxy; compose sets 0.0.0.0
    slack_http_port: int = Field(default=3000, ge=1, le=65535)
    slack_allowed_channel_ids: str = ""
    slack_edit_interval_s: float = Field(default=1.0, gt=0)
    # Answers in threads stream with Slack's chat.startStream/appendStream/stopStream; off: by chat.update.
    slack_native_streaming: bool = True
    slack_api_base: str | None = None

    @property
    def allowed_channel_ids(self) -> frozenset[str]:
        return frozenset(self.slack_allowed_channel_ids.replace(",", " ").split())
