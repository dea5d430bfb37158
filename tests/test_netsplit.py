"""A multi-host run for real (bench/netsplit.py): Redis, two workers and the front-ends in three network
namespaces joined by virtual links; one worker's host is cut off mid-answer and brought back.

The full run (`python -m bench.netsplit`, three rounds on the tiny model) writes docs/MULTIHOST.md; this one
runs one round on the scripted engine. Making namespaces needs root: elsewhere the test skips, saying why.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bench import netsplit
from testkit import netns
from testkit.processes import BUSY_MACHINE_TIMEOUT_S

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(BUSY_MACHINE_TIMEOUT_S)
def test_a_host_cut_off_mid_answer_loses_nothing_and_comes_back_fenced(tmp_path: Path) -> None:
    if reason := netns.unavailable():
        pytest.skip(reason)
    report = tmp_path / "MULTIHOST.md"
    status = netsplit.main(["--rounds", "1", "--questions", "12", "--engine", "scripted", "--output", str(report)])
    text = report.read_text()
    table = [line.split(" | ") for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    header, rows = table[0], table[1:]
    assert header[2:7] == ["answered once", "lost", "duplicated", "wrong", "stuck"], text
    assert len(rows) == 1, text
    (row,) = rows
    questions, answered, lost, duplicated, wrong, stuck = (int(cell) for cell in row[1:7])
    assert questions >= 12 + 6 + 1 and answered == questions, text
    assert (lost, duplicated, wrong, stuck) == (0, 0, 0, 0), text
    takeover, reclaimed, fenced = float(row[7]), int(row[10]), int(row[11].rstrip(" |"))
    assert 0 < takeover < 30 and reclaimed >= 1 and fenced >= 1, text
    assert status == 0, text
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"{netns.PREFIX}-{os.getpid()}-" not in left, f"namespaces left behind:\n{left}"


def test_without_root_it_says_why_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert netsplit.main([]) == 0
    assert capsys.readouterr().out == "bench.netsplit skipped: making network namespaces needs root\n"
    assert netsplit.main(["--require"]) == 1


def test_namespaces_left_by_a_run_that_was_killed_are_swept() -> None:
    if reason := netns.unavailable():
        pytest.skip(reason)
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid no process has now, as a killed run's
    stale, ours = f"{netns.PREFIX}-{gone.pid}-core", f"{netns.PREFIX}-{os.getpid()}-x"
    for name in (stale, ours):
        subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        netns.sweep()
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert stale not in listed and ours in listed, listed  # a live run's namespaces stay
    finally:
        for name in (stale, ours):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
