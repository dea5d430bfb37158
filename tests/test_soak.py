"""The soak and fault suite (bench/soak.py) in a small size, so CI keeps it working.

The full run (`python -m bench.soak`, 300 questions and repeated faults, workers on the tiny model)
writes docs/RELIABILITY.md; this one runs its workers on the scripted engine.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import soak
from testkit.processes import BUSY_MACHINE_TIMEOUT_S

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(BUSY_MACHINE_TIMEOUT_S)
def test_every_scenario_ends_each_question_once(tmp_path: Path) -> None:
    report = tmp_path / "RELIABILITY.md"
    args = ["--questions", "16", "--users", "8", "--fault-trials", "1", "--kill-trials", "1", "--redis-trials", "1"]
    args += ["--engine", "scripted"]  # the tiny model's answers without torch: workers restart in about a second
    status = soak.main([*args, "--output", str(report)])
    text = report.read_text()
    table = [line.split(" | ") for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    header, rows = table[0], table[1:]
    assert header[-5:] == ["told busy", "lost", "duplicated", "wrong", "stuck |"]
    assert len(rows) == 16, f"every scenario ran:\n{text}"
    for row in rows:
        assert row[-4:] == ["0", "0", "0", "0 |"], f"{row[0]}: lost, duplicated, wrong or stuck:\n{text}"
        assert int(row[2]) > 0 and int(row[3]) + int(row[4]) == int(row[2]), text
    assert status == 0, text
