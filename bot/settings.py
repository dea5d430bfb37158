"""Settings of the adapters and the terminal client, read once in `__main__`."""

from __future__ import annotations

import json
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.pdf_text import PdfBudget
from bot.texts import PANE_PROMPTS, text
from chatbus.config import RedisSettings
from chatbus.messages import MAX_CONTEXT_CHARS, MAX_QUESTION_CHARS

# A worker that takes a question just before it expires still sends `started` (or `expired`) soon after.
START_AFTER_EXPIRY_S = 30.0


class LanguageSettings(BaseSettings):
    """BOT_LANGUAGE alone: for the commands that read no client settings (`kullm prompt`) and for the message that
    says the settings themselves are invalid."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True)

    bot_language: Literal["ko", "en"] = "ko"


class ClientSettings(RedisSettings):
    """What every front-end shares: where the queue is and the limits it enforces before enqueueing."""

    bot_language: Literal["ko", "en"] = "ko"
    max_question_chars: int = Field(default=4000, ge=1, le=MAX_QUESTION_CHARS)  # the contract's ceiling
    max_queue: int = Field(default=200, ge=1)
    question_ttl_s: float = Field(default=600.0, gt=0)
    answer_start_timeout_s: float | None = Field(default=None, gt=0)
    answer_stall_timeout_s: float = Field(default=180.0, gt=0)
    user_questions_per_minute: int = Field(default=6, ge=1)
    user_concurrent_questions: int = Field(default=2, ge=1)
    user_tokens_per_day: int = Field(default=0, ge=0)  # prompt + completion tokens a chat user may use a day; 0: off
    history_turns: int = Field(default=10, ge=0)
    # Workspace actions: a thread's summary leaves out bots' messages (the bot's own answers too) unless set;
    # a file attached to a question is read as its 맥락 up to this size.
    summary_include_bots: bool = False
    max_file_bytes: int = Field(default=200_000, ge=1, le=MAX_CONTEXT_CHARS)
    # A PDF is read in a child process within these budgets (bot.pdf_text), at most PDF_PARALLEL at once.
    pdf_timeout_s: float = Field(default=10.0, gt=0, le=300)
    pdf_memory_mb: int = Field(default=768, ge=128)
    pdf_max_pages: int = Field(default=300, ge=1)
    pdf_parallel: int = Field(default=2, ge=1)
    history_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    lease_ttl_s: float = Field(default=10.0, gt=0)
    redis_outage_s: float = Field(default=60.0, ge=0)
    # Workspace knowledge (`/kullm-설정 지식`): how far back a channel's history is read when it is turned on, and how
    # long its messages are kept (0: until `forget`).
    knowledge_backfill_days: int = Field(default=90, ge=0, le=3650)
    knowledge_retention_days: int = Field(default=365, ge=0, le=3650)
    # The Discord and Slack adapters' /metrics and /healthz (whether each is connected to its platform); 0: none.
    adapter_metrics_host: str = "127.0.0.1"
    adapter_metrics_port: int = Field(default=0, ge=0, le=65535)
    # 👍/👎 under every finished answer, votes kept this many days (0: no vote buttons, nothing kept).
    feedback_ttl_days: int = Field(default=90, ge=0, le=3650)
    # Keep each voted answer's question and answer text with its votes (`kullm feedback --json` prints them).
    feedback_keep_text: bool = False
    # The key of voters' hashes in the feedback stream; unset: one is made once and kept in Redis.
    feedback_secret: SecretStr | None = None

    def pdf_budget(self) -> PdfBudget:
        return PdfBudget(
            wall_s=self.pdf_timeout_s,
            memory_bytes=self.pdf_memory_mb * 1024 * 1024,
            max_pages=self.pdf_max_pages,
            parallel=self.pdf_parallel,
        )

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
    # Answers as Components V2 layouts (the text in a container, its buttons and footer with it), or plain messages.
    discord_layout: Literal["components", "plain"] = "components"
    # Offer /kullm and the message actions to users who add the app to their account (any server, DM or group DM),
    # where the developer portal enables User Install and commands are global (DISCORD_GUILD_IDS empty).
    discord_user_install: bool = True

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
    # Each answer thread is one of Slack's agent sessions (status, title, Slack's own stop button) where the workspace
    # has them; off, or where Slack refuses them: the assistant pane's status and the bot's own messages only.
    slack_agent_sessions: bool = True
    # The assistant pane's suggested prompts, as JSON: [{"title": "…", "message": "…"}, …] (1 to 4); empty:
    # the built-in ones in BOT_LANGUAGE.
    slack_suggested_prompts: str = ""
    # The settings command as the app's manifest declares it; empty: the manifest's for BOT_LANGUAGE
    # (/kullm-설정 in slack/manifest.yml, /kullm-settings in slack/manifest.en.yml).
    slack_settings_command: str = Field(default="", pattern=r"^(/\S{1,31})?$")
    # Who may set a channel's persona besides workspace admins and owners: user ids, comma or space separated.
    slack_admin_user_ids: str = ""

    @field_validator("slack_suggested_prompts")
    @classmethod
    def _prompts_are_valid(cls, value: str) -> str:
        if value.strip():
            _parse_prompts(value)
        return value

    @property
    def suggested_prompts(self) -> list[dict[str, str]]:
        if self.slack_suggested_prompts.strip():
            return _parse_prompts(self.slack_suggested_prompts)
        return [dict(p) for p in PANE_PROMPTS[self.bot_language]]

    slack_api_base: str | None = None

    @property
    def settings_command(self) -> str:
        return self.slack_settings_command or "/" + text("cmd_settings", self.bot_language)

    @property
    def allowed_channel_ids(self) -> frozenset[str]:
        return frozenset(self.slack_allowed_channel_ids.replace(",", " ").split())

    @property
    def admin_user_ids(self) -> frozenset[str]:
        return frozenset(self.slack_admin_user_ids.replace(",", " ").split())


def _parse_prompts(value: str) -> list[dict[str, str]]:
    """SLACK_SUGGESTED_PROMPTS: a JSON list of 1 to 4 {"title", "message"} objects (Slack's limit)."""
    try:
        prompts = json.loads(value)
    except ValueError as exc:
        raise ValueError(f"SLACK_SUGGESTED_PROMPTS is not JSON: {exc}") from None
    valid = isinstance(prompts, list) and 1 <= len(prompts) <= 4
    if not valid or not all(
        isinstance(p, dict) and isinstance(p.get("title"), str) and isinstance(p.get("message"), str) and p["title"]
        for p in prompts
    ):
        raise ValueError('SLACK_SUGGESTED_PROMPTS must be a JSON list of 1 to 4 {"title": …, "message": …} objects')
    return [{"title": p["title"], "message": p["message"]} for p in prompts]
