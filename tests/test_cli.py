"""The `kullm` command's help and README's command reference agree, by the parsers themselves; every command's
--help names the environment variables its settings classes read; README states no count that can go stale."""

from __future__ import annotations

import argparse
import re

import pytest

from kullm.parser import parser as kullm_parser
from testkit.processes import ROOT

README = (ROOT / "README.md").read_text()


def commands() -> dict[str, argparse.ArgumentParser]:
    """Every runnable command, by its name as typed (`keys create` included)."""
    (sub,) = [a for a in kullm_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    found: dict[str, argparse.ArgumentParser] = {}
    for name, parser in sub.choices.items():
        nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if nested:
            found |= {f"{name} {action}": inner for action, inner in nested[0].choices.items()}
        else:
            found[name] = parser
    return found


def options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help"}


def test_the_readme_command_reference_matches_the_parsers() -> None:
    section = README.split("## Command reference", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `kullm ([a-z ]+?)(?: [A-Z_]+)*` \| (.*?) \| .* \|$", section, re.MULTILINE)
    documented = {name: set(re.findall(r"(--[a-z-]+)", given)) for name, given in rows}
    assert documented == {name: options(parser) for name, parser in commands().items()}


@pytest.mark.parametrize(
    ("command", "variables"),
    [
        ("ask", {"REDIS_URL", "BOT_LANGUAGE", "MAX_QUESTION_CHARS"}),
        ("up", {"REDIS_URL", "MODEL", "DISCORD_TOKEN", "SLACK_BOT_TOKEN"}),
        ("worker", {"MODEL", "MODEL_ID", "DEVICE", "METRICS_PORT", "HF_HUB_OFFLINE", "HF_ENDPOINT"}),
        ("api", {"API_HOST", "API_PORT", "REDIS_URL"}),
        ("discord", {"DISCORD_TOKEN", "DISCORD_GUILD_IDS"}),
        ("slack", {"SLACK_BOT_TOKEN", "SLACK_HTTP_PORT"}),
        ("prompt", {"MODEL", "BOT_LANGUAGE"}),
        ("keys create", {"REDIS_URL"}),
    ],
)
def test_every_help_lists_its_options_and_the_variables_it_reads(
    command: str, variables: set[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", "a-token-never-shown")  # help shows defaults, never what is set
    shown = commands()[command].format_help()
    assert all(option in shown for option in options(commands()[command]))
    listed = set(re.findall(r"\b([A-Z][A-Z0-9_]+)(?==|,|\n|$)", shown.split("environment variables", 1)[1]))
    assert variables <= listed
    assert "a-token-never-shown" not in shown


def test_the_readme_states_no_count_that_goes_stale() -> None:
    assert not re.findall(r"\d+ (?:tests|passed)\b", README), "test counts change with every commit: say a range"
