"""The chat adapters' /metrics and /healthz (ADAPTER_METRICS_PORT): whether each is connected to its platform, for
Prometheus's "front-end disconnected" alert (deploy/monitoring/alerts.yml) and a readiness probe — through the real
discord.py and slack-bolt clients against the stand-ins, connected, dropped and back, and cut off."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from testkit.polling import wait_until
from testkit.redis_server import free_port
from tests import test_discord, test_slack
from tests.test_discord import Discord
from tests.test_slack import Slack

pytestmark = pytest.mark.e2e
discord_env = test_discord.discord_env
slack_env_fixture = test_slack.slack_env_fixture
DISCORD_PORT, SLACK_PORT = free_port(), free_port()


def connected(port: int, platform: str) -> float | None:
    """kullm_platform_connected of the adapter on `port` (None while nothing answers there)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    line = f'kullm_platform_connected{{platform="{platform}"}} '
    return next((float(row[len(line) :]) for row in text.splitlines() if row.startswith(line)), None)


def health(port: int) -> tuple[int, dict[str, str]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


@pytest.mark.bot_env(ADAPTER_METRICS_PORT=str(DISCORD_PORT))
async def test_the_discord_bot_says_whether_it_is_connected(discord_env: Discord) -> None:
    d, s = discord_env, discord_env.standin
    wait_until(lambda: connected(DISCORD_PORT, "discord") == 1, 30, what="connected")
    assert health(DISCORD_PORT) == (200, {"status": "connected", "platform": "discord"})
    await s.drop()  # the gateway goes away; discord.py resumes
    wait_until(lambda: "discord: connected" in d.bot.log().split("discord: disconnected", 1)[-1], 30, what="back")
    assert connected(DISCORD_PORT, "discord") == 1
    await s.stop()  # and now for good: no gateway to come back to
    wait_until(lambda: connected(DISCORD_PORT, "discord") == 0, 30, what="disconnected")
    assert health(DISCORD_PORT)[0] == 503


@pytest.mark.bot_env(ADAPTER_METRICS_PORT=str(SLACK_PORT))
async def test_the_slack_bot_says_whether_its_socket_mode_connection_is_up(slack_env_fixture: Slack) -> None:
    s = slack_env_fixture.standin
    wait_until(lambda: connected(SLACK_PORT, "slack") == 1, 30, what="connected")
    assert health(SLACK_PORT) == (200, {"status": "connected", "platform": "slack"})
    await s.stop()  # Slack unreachable: slack_sdk keeps trying, and the bot says it is not connected
    wait_until(lambda: connected(SLACK_PORT, "slack") == 0, 30, what="disconnected")
    assert health(SLACK_PORT) == (503, {"status": "disconnected", "platform": "slack"})
