"""The GPU check cannot rot: its bundle is made and used, and its script runs every step on the CPU.

`make gpu-bundle` downloads from the package registries (as `make setup` does); the dry run then
runs `bench/gpu/run.sh` exactly as a GPU host would, with the bundle's redis-server and tiny
model, on the CPU with a small shape. Speed is not asserted here: only that every step ran.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from bench.gpu import bundle
from testkit.polling import wait_until
from testkit.processes import BUSY_MACHINE_TIMEOUT_S, ROOT
from testkit.redis_server import free_port

pytestmark = pytest.mark.xdist_group("gpu_bundle")  # one bundle (a session fixture) serves them all
FLOOR = ROOT / ".cache" / "transformers-floor"  # the Makefile's FLOOR
BARE_HOST_LACKS = {"redis", "pydantic", "pydantic-core", "pydantic-settings", "python-dotenv", "pytest-asyncio"}


@pytest.fixture(scope="session")  # once per test process, whatever order xdist runs the group in
def gpu_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("bundle") / ".gpu"
    result = subprocess.run(
        [sys.executable, "-m", "bench.gpu.bundle", "--dest", str(dest)], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return dest


def test_the_closure_carries_what_the_host_lacks_and_refuses_what_it_cannot_meet() -> None:
    host = bundle.host_packages()
    closure = bundle.resolve(bundle.project_roots(), host)
    assert set(closure.carry) >= BARE_HOST_LACKS
    assert not {"torch", "transformers", "aiohttp", "rich", "numpy"} & set(closure.carry)
    assert set(bundle.ALWAYS_CARRY) <= set(closure.carry)  # the same test runner as CI, a recent typing-extensions
    too_new = [Requirement("transformers>=99")]
    with pytest.raises(bundle.BundleError, match=r"the GPU host has transformers 5\.17\.0"):
        bundle.resolve(too_new, host)
    with pytest.raises(bundle.BundleError, match="not installed here"):
        bundle.resolve([Requirement("surely-not-a-package-kullm")], host)


@pytest.mark.timeout(300)
def test_the_bundle_holds_wheels_a_redis_server_and_the_model(gpu_bundle: Path, tmp_path: Path) -> None:
    manifest = (gpu_bundle / "MANIFEST.txt").read_text()
    assert "python: 3.12" in manifest
    wheels = sorted(p.name for p in (gpu_bundle / "wheels").glob("*.whl"))
    names = {w.split("-")[0].replace("_", "-").lower() for w in wheels}
    assert names >= BARE_HOST_LACKS and "torch" not in names
    assert all(w.endswith("-none-any.whl") or ("cp312" in w and "x86_64" in w) for w in wheels)
    assert bundle.size_of(gpu_bundle) < bundle.CARRY_LIMIT_BYTES - bundle.tracked_size()
    assert (gpu_bundle / "model" / "ready.json").exists()
    # The bundled redis-server answers through its own loader, with no redis-server on PATH.
    port = free_port()
    server = subprocess.Popen(
        [gpu_bundle / "bin" / "redis-server", "--port", str(port), "--save", "", "--dir", str(tmp_path)],
        env={"PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
    )
    try:
        import redis

        client = redis.Redis(port=port)
        wait_until(lambda: _pings(client), 10, what="the bundled redis-server")
        assert client.info("server")["redis_version"].startswith("7.")
        client.close()
    finally:
        server.terminate()
        server.wait(10)


def python_3_12() -> str | None:
    """A CPython 3.12 that runs here (the GPU hosts' Python), if this machine has one."""
    candidates = [shutil.which("python3.12"), *map(str, Path.home().glob(".pyenv/versions/3.12*/bin/python3.12"))]
    for candidate in filter(None, candidates):
        is_312 = "import sys; assert sys.version_info[:2] == (3, 12)"
        check = subprocess.run([candidate, "-c", is_312], capture_output=True)
        if check.returncode == 0:
            return candidate
    return None


@pytest.mark.skipif(python_3_12() is None, reason="no CPython 3.12 on this machine")
def test_the_wheels_install_offline_and_import_on_python_3_12(gpu_bundle: Path, tmp_path: Path) -> None:
    python = python_3_12()
    assert python is not None
    wheels = [str(p) for p in (gpu_bundle / "wheels").glob("*.whl")]
    install = [python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(tmp_path), *wheels]
    assert subprocess.run(install, capture_output=True, text=True).returncode == 0
    # The runtime side only: pytest needs the host's pygments and packaging, which this Python may lack.
    imports = "import redis, pydantic, pydantic_core, pydantic_settings, dotenv, chatbus"
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": f"{tmp_path}:{ROOT}", "PYTHONNOUSERSITE": "1"}
    result = subprocess.run([python, "-c", imports], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.timeout(BUSY_MACHINE_TIMEOUT_S + 60)
def test_the_dry_run_runs_every_step_of_the_gpu_check(gpu_bundle: Path, tmp_path: Path) -> None:
    env = _dry_run_env(gpu_bundle, tmp_path)
    # every step, at a size CI can afford
    env |= {"GPU_CHECK_CONCURRENCY": "1,4", "GPU_CHECK_GRAPHS_CONCURRENCY": "1,4", "GPU_CHECK_CLIENTS": "8"}
    env |= {"GPU_CHECK_SERVE_CONCURRENCY": "2", "GPU_CHECK_TWIN_CONCURRENCY": "4", "GPU_CHECK_COMPILE_CONCURRENCY": "1"}
    env["GPU_CHECK_BUDGET_S"] = str(BUSY_MACHINE_TIMEOUT_S - 60)  # ~80 s here; room for a machine busy elsewhere
    env.pop("KULLM_TINY_MODEL", None)
    command = ["bash", "bench/gpu/run.sh"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=BUSY_MACHINE_TIMEOUT_S)
    summary = (tmp_path / "summary.md").read_text()
    assert result.returncode == 0, summary
    steps = ["install the bundle", "private redis-server", "gpu-marked tests", "engine benchmark", "end to end"]
    steps += ["compiled decode step", "speculative steps", "transformers serve", "Llama twin", "CUDA graphs, paged"]
    assert all(re.search(rf"^\| {step} \| .* \| passed \|$", summary, re.M) for step in steps), summary
    assert "nvidia-smi: not found" in summary and "torch 2." in summary  # the environment heads the results
    if floor_version():
        assert f"transformers {floor_version()}" in summary
    # On the CPU two skip: the 12.8B shape, and the worker picking (or refusing without) a GPU.
    assert re.search(r"4 passed, 2 skipped", summary)
    for inflight in (1, 4):
        assert f"| builtin, {inflight} in flight | {inflight} |" in summary
        assert f"| paged, {inflight} in flight | {inflight} |" in summary
        for engine in ("builtin", "paged"):
            assert f"| {engine}+graphs, {inflight} in flight | {inflight} |" in summary
            assert f"{inflight} in flight: {engine}+graphs " in summary
        assert f"| builtin+graphs through the queue, {inflight} in flight | {inflight} |" in summary
        assert f"{inflight} in flight: builtin+graphs through the queue " in summary
        assert f"{inflight} in flight: builtin+graphs " in summary and " paged; TTFT p50 " in summary
    # the compiled decode step (COMPILE_DECODE=1, C++ from Inductor here) against builtin+graphs, with its cost
    assert "| builtin+compile, 1 in flight | 1 |" in summary and "1 in flight: builtin+compile " in summary
    assert re.search(r"[1-9]\d* step graphs compiled in [\d.]+ s", summary), summary
    assert re.search(r"builtin\+compile: one question decodes at [\d.]+ tokens/s = \d+% of the bound", summary)
    # then int8 weights (QUANTIZATION=int8) in the same run, each engine against its fp16 row
    assert "QUANTIZATION=int8: " in summary and "| builtin+compile int8, 1 in flight | 1 |" in summary
    assert re.search(r"1 in flight: builtin\+compile int8 [\d.]+× fp16; peak [\d,]+ MB against", summary), summary
    # transformers serve (plain mode on GPT-NeoX), directly and behind ENGINE=openai, against builtin+graphs
    assert "| transformers serve, 2 streams | 2 |" in summary and "transformers serve: plain mode, cpu" in summary
    assert "| openai (transformers serve) through the queue, 2 in flight | 2 |" in summary
    assert "2 in flight: builtin+graphs " in summary and " transformers serve; TTFT p50 " in summary
    # the Llama twin: paged, and transformers' own continuous batching, which runs on Llama
    assert "model: llama-small" in summary and "| transformers continuous batching, 4 in flight | 4 |" in summary
    assert "4 in flight: builtin+graphs " in summary and " transformers' continuous batching; TTFT p50 " in summary
    assert "of the bound" in summary and "time to first token at idle" in summary
    # speculative steps against plain decoding, on the small shape fit to proofread its text
    assert re.search(r"^\| 맞춤법 교정 \| 1 \| auto \| [\d.]+ \| [\d.]+–[\d.]+× \|", summary, re.M), summary
    assert "| plain questions | 1 | on |" in summary
    steps_line = r"decode step, one question alone, median of \d+: builtin [\d.]+ ms; builtin\+graphs [\d.]+ ms"
    assert re.search(steps_line, summary), summary
    assert "| enqueue → first delta |" in summary and "answered 8/8" in summary
    assert len(list(tmp_path.iterdir())) <= 8  # what the device tool brings back from $OUT
    assert "딥러닝" not in (tmp_path / "e2e-worker.log").read_text()  # no user text in logs


def _pings(client: Any) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_gpu_check_steps_runs_only_the_steps_it_names(gpu_bundle: Path, tmp_path: Path) -> None:
    """A short check for a nearly spent device budget: setup, then only the named steps."""
    env = _dry_run_env(gpu_bundle, tmp_path) | {"GPU_CHECK_STEPS": "no-such-step"}
    result = subprocess.run(
        ["bash", "bench/gpu/run.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    summary = (tmp_path / "summary.md").read_text()
    assert result.returncode == 0, summary
    assert re.search(r"^\| private redis-server \| .* \| passed \|$", summary, re.M), summary
    for step in ("gpu-marked tests", "engine benchmark", "end to end", "CUDA graphs, paged"):
        assert f"| {step} | – | – | not run: GPU_CHECK_STEPS=no-such-step |" in summary


def _dry_run_env(gpu_bundle: Path, out: Path) -> dict[str, str]:
    """The GPU check on this CPU, this interpreter and the session's bundle, its results in `out`; as on the GPU
    hosts, with their transformers (the floor, which `make test` installs first) and no Hugging Face cache.

    Both broke a GPU run that passed here: transformers 5.17's ContinuousBatchingConfig has no `page_size`, and its
    `transformers serve` answers GET /v1/models with 500 where no cache directory exists.
    """
    env = {**os.environ, "DRY_RUN": "1", "OUT": str(out), "PYTHON": sys.executable, "GPU_BUNDLE": str(gpu_bundle)}
    env["HF_HUB_CACHE"] = str(out.parent / f"{out.name}-no-hf-cache")  # never made: the run is offline
    if (FLOOR / ".installed").exists():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(FLOOR), env.get("PYTHONPATH")]))
    return env


def floor_version() -> str | None:
    """The GPU hosts' transformers, when `make test` installed it for the dry run (else the run uses this one's)."""
    if not (FLOOR / ".installed").exists():
        return None
    text = (ROOT / "constraints" / "transformers-floor.txt").read_text()
    match = re.search(r"^transformers==(\S+)$", text, re.M)
    assert match
    return match[1]
