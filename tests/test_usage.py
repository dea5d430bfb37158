"""`kullm usage`: per-day counts grouped by platform, user, API key or channel, as the workers record them."""

from __future__ import annotations

import json
import time

import pytest

from bot.settings import ClientSettings
from chatbus import Bus, usage_field
from kullm import operator
from testkit.redis_server import RedisServer
from testkit.settings import settings_of


def record(platform: str, user: str, channel: str, questions: int, tokens: int) -> dict[str, int]:
    counts = {}
    for where in (channel, "*"):
        counts[usage_field(platform, user, where, "questions")] = questions
        counts[usage_field(platform, user, where, "prompt_tokens")] = tokens
        counts[usage_field(platform, user, where, "completion_tokens")] = tokens // 2
    return counts


async def test_usage_groups_by_user_channel_key_and_platform(
    bus: Bus, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    today = time.strftime("%Y-%m-%d", time.gmtime())
    for counts in (
        record("slack", "U1", "C1", 2, 100),
        record("slack", "U2", "C1", 1, 40),
        record("discord", "D1", "900", 3, 60),
        record("api", "notebook", "", 5, 500),
    ):
        await bus.ledger.settle(today, counts, 3600)
    settings = settings_of(ClientSettings, redis_url=redis_server.url)

    async def rows(by: str) -> list[dict[str, object]]:
        assert await operator.usage(settings, by=by, as_json=True) == 0
        return [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    assert [(r["platform"], r["user"], r["questions"]) for r in await rows("user")] == [
        ("discord", "D1", 3),
        ("slack", "U1", 2),
        ("slack", "U2", 1),
    ], "chat users; API keys apart"
    assert [(r["key"], r["prompt_tokens"], r["completion_tokens"]) for r in await rows("key")] == [
        ("notebook", 500, 250)
    ]
    by_channel = {(r["platform"], r["channel"]): r["questions"] for r in await rows("channel")}
    assert by_channel == {("slack", "C1"): 3, ("discord", "900"): 3, ("api", ""): 5}
    assert {r["platform"]: r["questions"] for r in await rows("platform")} == {"api": 5, "discord": 3, "slack": 3}
    assert await bus.ledger.tokens_today("slack", "U1") == 150
    assert await operator.usage(settings, by="user") == 0
    assert "U1" in capsys.readouterr().out
