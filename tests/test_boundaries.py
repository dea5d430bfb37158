"""Package boundaries of DESIGN: bot/ and inference/ never import each other; chatbus stays small."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STDLIB = set(sys.stdlib_module_names)


def imported_roots(package: str) -> set[str]:
    roots = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                roots |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("bot", {"inference", "torch", "transformers"}),
        ("inference", {"bot", "discord", "slack_bolt", "slack_sdk"}),
        ("chatbus", {"bot", "inference", "torch"}),
    ],
)
def test_forbidden_imports(package: str, forbidden: set[str]) -> None:
    assert imported_roots(package) & forbidden == set()


def test_chatbus_imports_only_stdlib_redis_and_pydantic() -> None:
    # pydantic_settings: where the queue is (chatbus.config) is read as every other setting is; a core dependency.
    assert imported_roots("chatbus") - STDLIB <= {"chatbus", "redis", "pydantic", "pydantic_settings"}


def test_the_terminal_client_never_loads_torch() -> None:
    code = "import sys, kullm.cli, bot.terminal; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_the_worker_loop_never_loads_torch() -> None:
    # torch comes with the real engine only: inference.engine.engine_factory imports it for ENGINE=builtin.
    modules = "inference.__main__, inference.worker, inference.outbox, inference.governor, inference.engine"
    code = f"import sys, {modules}; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
