"""Package boundaries of DESIGN: bot/ and inference/ never import each other; only chatbus talks to Redis;
chatbus stays small; no module imports itself back through others."""

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
        # Redis is the contract's business: its exceptions are translated there (chatbus.connection).
        ("bot", {"inference", "torch", "transformers", "redis"}),
        ("inference", {"bot", "discord", "slack_bolt", "slack_sdk", "redis"}),
        ("kullm", {"redis"}),
        ("chatbus", {"bot", "inference", "torch"}),
        ("runtime", {"chatbus", "bot", "inference", "kullm", "torch"}),  # process plumbing: anyone may import it
        # The test kit serves tests and benchmarks alike; neither the kit nor the benchmarks reach into the tests.
        ("testkit", {"tests", "bench"}),
        ("bench", {"tests"}),
    ],
)
def test_forbidden_imports(package: str, forbidden: set[str]) -> None:
    assert imported_roots(package) & forbidden == set()


def test_chatbus_imports_only_stdlib_redis_and_pydantic() -> None:
    # pydantic_settings: where the queue is (chatbus.config) is read as every other setting is; a core dependency.
    assert imported_roots("chatbus") - STDLIB <= {"chatbus", "redis", "pydantic", "pydantic_settings"}


def test_the_terminal_client_never_loads_torch() -> None:
    code = "import sys, kullm.cli, bot.terminal.ask; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_the_worker_loop_never_loads_torch() -> None:
    # torch comes with the real engine only: inference.engine.engine_factory imports it for ENGINE=builtin.
    modules = "inference.__main__, inference.worker, inference.worker.outbox, inference.governor, inference.engine"
    code = f"import sys, {modules}; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


PROJECT = ("bot", "chatbus", "inference", "kullm", "runtime")


def module_imports() -> dict[str, set[str]]:
    """Each project module and the project modules it imports, TYPE_CHECKING and function-local imports included."""
    modules = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
        for package in PROJECT
        for path in (ROOT / package).rglob("*.py")
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            found |= {target for target in targets if target in modules and target != name}
        graph[name] = found
    return graph


def test_no_module_imports_itself_back_through_others() -> None:
    graph = module_imports()
    circles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start and len(path) > 1 and not start.endswith(("__init__", "chatbus", "bot", "inference")):
                    circles.append(" → ".join([*path, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    assert not circles, circles


def test_the_front_ends_exceptions_share_one_root() -> None:
    from bot.api.errors import ApiError
    from bot.errors import BotError
    from bot.surface import CannotPost, PlaceholderGone
    from bot.workspace import FileRefused

    assert all(issubclass(error, BotError) for error in (ApiError, CannotPost, PlaceholderGone, FileRefused))


def test_no_module_is_much_over_400_lines() -> None:
    """One concept per module: one that grows past this is split where its concepts part. The text catalogue
    (bot/texts/catalogue.py) sits at the line, on purpose: both languages of every message in one place."""
    long = {
        str(path.relative_to(ROOT)): count
        for package in (*PROJECT, "testkit")
        for path in (ROOT / package).rglob("*.py")
        if (count := len(path.read_text().splitlines())) > 420
    }
    assert not long, long
