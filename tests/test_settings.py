"""`.env.example` lists exactly the settings the processes read, and parses into them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.api.settings import ApiSettings
from bot.settings import ClientSettings, DiscordSettings, SlackSettings
from inference.settings import WorkerSettings
from kullm.eval.cli import EvalSettings
from testkit.settings import settings_of

ROOT = Path(__file__).resolve().parent.parent
# Read by docker compose itself, not by the processes.
COMPOSE_ONLY = {
    "COMPOSE_PROFILES",
    "COMPOSE_REDIS_URL",
    "GRAFANA_ADMIN_PASSWORD",
    "REDIS_PUBLISH_PORT",
    "TORCH_CHANNEL",
}
SETTINGS = (WorkerSettings, ClientSettings, DiscordSettings, SlackSettings, ApiSettings, EvalSettings)


def example_keys() -> list[str]:
    """Variables `.env.example` sets, and those it lists as `#NAME=value` (left at their default)."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    keys = [line.split("=", 1)[0] for line in lines if line and not line.startswith("#")]
    return keys + [m[1] for line in lines if (m := re.match(r"#([A-Z][A-Z0-9_]*)=", line))]


def test_every_variable_is_a_setting_and_every_setting_is_listed() -> None:
    keys = example_keys()
    assert len(keys) == len(set(keys)), "a variable is listed twice"
    fields = {name.upper() for cls in SETTINGS for name in cls.model_fields}
    assert set(keys) - fields == COMPOSE_ONLY, "unknown variables in .env.example"
    assert fields - set(keys) == set(), "settings missing from .env.example"


@pytest.mark.parametrize("settings_class", SETTINGS)
def test_the_example_parses_into_the_settings(
    settings_class: type, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key in example_keys():
        monkeypatch.delenv(key, raising=False)
    settings = settings_class(_env_file=ROOT / ".env.example")
    assert settings.redis_url == "redis://localhost:6379/0"
    if settings_class is WorkerSettings:
        assert (settings.max_new_tokens, settings.temperature, settings.top_p, settings.eos_token_id) == (
            512,
            0.7,
            0.9,
            2,
        )
        assert settings.model_id == "metterian/kullm-polyglot-12.8b" and settings.do_sample


def test_a_wrong_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("TOP_P", "7")
    with pytest.raises(ValidationError, match="top_p"):
        settings_of(WorkerSettings)


def test_listeners_bind_loopback_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("METRICS_HOST", "SLACK_HTTP_HOST"):
        monkeypatch.delenv(variable, raising=False)
    assert settings_of(WorkerSettings).metrics_host == "127.0.0.1"
    assert settings_of(SlackSettings).slack_http_host == "127.0.0.1"


def test_suggested_prompts_are_validated_with_a_clear_message() -> None:
    defaults = settings_of(SlackSettings).suggested_prompts
    assert len(defaults) == 4 and all(p["title"] and p["message"] for p in defaults)
    english = settings_of(SlackSettings, bot_language="en").suggested_prompts
    assert english[0]["title"] == "Explain simply"
    given = '[{"title": "요약", "message": "이 글을 요약해 줘"}]'
    assert settings_of(SlackSettings, slack_suggested_prompts=given).suggested_prompts == [
        {"title": "요약", "message": "이 글을 요약해 줘"}
    ]
    for wrong in ("요약", "[]", '[{"title": "a"}]', "[" + ",".join(['{"title": "a", "message": "b"}'] * 5) + "]"):
        with pytest.raises(ValueError, match="SLACK_SUGGESTED_PROMPTS"):
            settings_of(SlackSettings, slack_suggested_prompts=wrong)


def test_suggested_prompts_are_whole_requests_in_both_languages() -> None:
    # Slack sends a suggested prompt as soon as it is clicked: one that waits for more text sends nothing to work on.
    from bot.texts import PANE_PROMPTS

    for language, prompts in PANE_PROMPTS.items():
        assert 1 <= len(prompts) <= 4, language
        for prompt in prompts:
            assert not prompt["message"].rstrip().endswith((":", "：")), prompt
            assert (any("가" <= c <= "힣" for c in prompt["message"])) == (language == "ko"), prompt
