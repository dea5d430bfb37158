"""API keys as the contract keeps them: a key is shown once when minted (`kullm keys create`) and stored only as
its SHA-256 digest (`Bus.add_api_key`), which the API looks each request's key up by."""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "kullm-"


def digest(key: str) -> str:
    """What a key is stored and looked up under."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh key: the prefix and 256 random bits."""
    return KEY_PREFIX + secrets.token_urlsafe(32)
