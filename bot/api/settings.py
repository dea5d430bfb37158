"""The API server's settings: the chat front-ends' (`ClientSettings`) and its own listener, limits and model name."""

from __future__ import annotations

from pydantic import Field

from bot.settings import ClientSettings
from runtime.http_guard import HEADER_TIMEOUT_S


class ApiSettings(ClientSettings):
    """The API server's settings."""

    api_host: str = "127.0.0.1"  # compose sets 0.0.0.0 inside its network and publishes the port on 127.0.0.1
    api_port: int = Field(default=8080, ge=1, le=65535)
    api_max_tokens: int = Field(default=512, ge=1)  # `max_tokens` above this is lowered to it
    api_model: str = ""  # the model name shown; empty: what the workers report serving
    # Connections open at once (lowered to what the process's file descriptors allow), and how long a connection
    # may take to send its request headers.
    api_max_connections: int = Field(default=4096, ge=16)
    # A verified key is trusted this long without a Redis lookup, so a revoked key still works at most this long.
    api_key_cache_s: float = Field(default=10.0, ge=0, le=300)
    api_header_timeout_s: float = Field(default=HEADER_TIMEOUT_S, gt=0)
