"""Which API key a request carries, at the least cost to Redis: a key verified once is trusted for
API_KEY_CACHE_S without a lookup; keys not yet verified are looked up at most FAILED_KEYS_PER_S a second per
client address (a burst of FAILED_KEY_BURST), and requests carrying the same key meanwhile share one lookup."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from bot.api.errors import ApiError, unavailable
from chatbus import ApiKey, Bus, BusError
from chatbus.api_keys import digest

KEY_CACHE_MAX = 10_000
FAILED_KEYS_PER_S = 5.0
FAILED_KEY_BURST = 20
ADDRESSES_MAX = 10_000  # client addresses whose failed-key budget is remembered (the least recent forgotten)


class KeyCheck:
    """Which API key a request carries, at the least cost to Redis; see the module docstring."""

    def __init__(self, bus: Bus, cache_s: float) -> None:
        self.bus = bus
        self.cache_s = cache_s
        self._verified: dict[str, tuple[ApiKey, float]] = {}  # digest → (key, verified at), oldest first
        self._budgets: dict[str, tuple[float, float]] = {}  # address → (tokens, updated at), least recent first
        self._looking_up: dict[str, asyncio.Future[ApiKey | None]] = {}  # digest → its lookup under way

    async def key(self, request: web.Request) -> ApiKey:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "missing API key: send `Authorization: Bearer <key>`", code="invalid_api_key")
        found = digest(token.strip())
        now = time.monotonic()
        cached = self._verified.get(found)
        if cached is not None and now - cached[1] < self.cache_s:
            return cached[0]
        pending = self._looking_up.get(found)
        try:
            key = await asyncio.shield(pending) if pending is not None else await self._look_up(found, request, now)
        except BusError as exc:
            raise unavailable(exc) from exc
        if key is None:
            raise ApiError(401, "incorrect API key", code="invalid_api_key")
        return key

    async def _look_up(self, found: str, request: web.Request, now: float) -> ApiKey | None:
        """One Redis lookup, shared by the requests that carry the same key meanwhile; paid from the address's
        budget unless it finds a key."""
        address = request.remote or "?"
        if not self._spend(address, now):
            raise ApiError(
                429,
                "too many requests with unknown API keys from this address",
                "requests",
                "rate_limit_exceeded",
                retry_after=max(1, round(1 / FAILED_KEYS_PER_S)),
            )
        lookup = self._looking_up[found] = asyncio.ensure_future(self.bus.api_keys.get(found))
        try:
            key = await asyncio.shield(lookup)
        except BusError as exc:
            raise unavailable(exc) from exc
        finally:
            self._looking_up.pop(found, None)
        if key is not None:
            self._refund(address)
            self._verified.pop(found, None)
            self._verified[found] = (key, now)
            if len(self._verified) > KEY_CACHE_MAX:
                del self._verified[next(iter(self._verified))]
        return key

    def _spend(self, address: str, now: float) -> bool:
        """Take one lookup from the address's budget (a token bucket); False when it has none left."""
        tokens, updated = self._budgets.pop(address, (float(FAILED_KEY_BURST), now))
        tokens = min(float(FAILED_KEY_BURST), tokens + (now - updated) * FAILED_KEYS_PER_S)
        self._budgets[address] = (tokens - 1 if tokens >= 1 else tokens, now)
        if len(self._budgets) > ADDRESSES_MAX:
            del self._budgets[next(iter(self._budgets))]
        return tokens >= 1

    def _refund(self, address: str) -> None:
        """A lookup that found a key costs the address nothing."""
        tokens, updated = self._budgets.get(address, (float(FAILED_KEY_BURST), 0.0))
        self._budgets[address] = (min(float(FAILED_KEY_BURST), tokens + 1), updated)
