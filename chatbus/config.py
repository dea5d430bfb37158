"""Where the queue is, for every process: the settings both sides share, and how a bad setting is told.

Redis is found in this order: `REDIS_URL` (the environment or `.env`); else the private Redis that
`kullm up` runs for this directory, which it records in `.kullm/redis.json`; else the default,
redis://localhost:6379/0. Every process can say which one it uses and why (`RedisSettings.redis_said`),
so `kullm ask` in one terminal and `kullm up` in another never wait on two different servers.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

from pydantic import PrivateAttr, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from chatbus.connection import redact_url

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
# What `kullm up` runs lives under this directory of the working directory: its Redis's data and the record.
DATA_DIR = Path(".kullm")
RECORD_NAME = "redis.json"
REDIS_SCHEMES = ("redis", "rediss", "unix")


@dataclass(frozen=True)
class RedisRecord:
    """The private Redis `kullm up` runs (or last ran) for a directory: its port stays the same across restarts."""

    port: int
    data: str  # its data directory

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def path(data_dir: Path = DATA_DIR) -> Path:
        return data_dir / RECORD_NAME

    @classmethod
    def read(cls, data_dir: Path = DATA_DIR) -> RedisRecord | None:
        """The record in `data_dir`, or None when there is none (or it cannot be read: then it is not trusted)."""
        try:
            document = json.loads(cls.path(data_dir).read_text(encoding="utf-8"))
            port = int(document["port"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return cls(port, str(document.get("data", ""))) if 1 <= port <= 65535 else None

    def write(self, data_dir: Path = DATA_DIR) -> None:
        """Written aside and renamed, so a client never reads half of it."""
        data_dir.mkdir(parents=True, exist_ok=True)
        aside = data_dir / f".{RECORD_NAME}.{os.getpid()}"
        aside.write_text(json.dumps({"port": self.port, "data": self.data, "url": self.url}) + "\n", encoding="utf-8")
        aside.replace(self.path(data_dir))


class RedisSettings(BaseSettings):
    """Where the queue is: shared by the adapters, the terminal client, the API and the workers."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True)

    redis_url: str = DEFAULT_REDIS_URL
    redis_password: SecretStr | None = None  # used when REDIS_URL carries none (compose's Redis)
    key_prefix: str = "kullm:"
    _redis_record: Path | None = PrivateAttr(default=None)

    @field_validator("redis_url")
    @classmethod
    def _is_a_redis_url(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme not in REDIS_SCHEMES or "://" not in value:
            raise ValueError(f"must start with redis://, rediss:// or unix:// (for example {DEFAULT_REDIS_URL})")
        return value

    @model_validator(mode="after")
    def _kullm_ups_redis(self) -> Self:
        """Without REDIS_URL, the Redis `kullm up` runs for this directory, when it has recorded one."""
        if "redis_url" not in self.model_fields_set and (record := RedisRecord.read()) is not None:
            object.__setattr__(self, "redis_url", record.url)  # found, not set: `kullm up` still sees it unset
            self._redis_record = RedisRecord.path()
        return self

    @property
    def redis_from_kullm_up(self) -> bool:
        return self._redis_record is not None

    @property
    def redis_said(self) -> str:
        """Which Redis this process uses, and why, without its password."""
        url = redact_url(self.redis_url)
        if "redis_url" in self.model_fields_set:
            return f"{url} (REDIS_URL)"
        if self._redis_record is not None:
            return f"{url} (kullm up's private Redis, recorded in {self._redis_record})"
        return f"{url} (the default: REDIS_URL is unset and no `kullm up` runs in this directory)"


def settings_problem(exc: ValidationError, lead: str = "invalid setting") -> str:
    """A settings error as one line per bad variable, named as it is set (`MODEL`, not `model`), without the
    value (it may be a secret) and without pydantic's documentation link."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        name = ".".join(str(part) for part in error["loc"]).upper() or "settings"
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{lead} {name}: {message}")
    return "\n".join(lines)
