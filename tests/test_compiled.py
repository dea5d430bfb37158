"""COMPILE_DECODE: the fixed-shape decode step compiled by torch.compile (inference/engines/builtin/compiled.py).

On this CPU Inductor generates C++ (a C++ compiler is on CI's machines); on a GPU it generates Triton, measured by
the GPU check. Both architectures give the eager engine's tokens, batch sizes and widths that change after the
first steps compile nothing new, and a step that cannot be compiled runs as before and says so once.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from inference.engine import GenerationRequest
from testkit.engines import IN_PROCESS_MODEL

pytestmark = [
    IN_PROCESS_MODEL,
    pytest.mark.e2e,  # Inductor starts compiler processes (its compile workers, g++)
    pytest.mark.skipif(shutil.which("g++") is None, reason="Inductor on a CPU needs g++"),
    # Inductor itself calls torch.jit.script_method, deprecated (pytest turns warnings into errors here)
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]
QUESTIONS = ["딥러닝이 뭐야?", "한국의 수도는 어디야?", "인사해줘", "고려대학교는 어디에 있어?", "긴 이야기를 들려줘"]


def engine_on(model: Any, tokenizer: Any, *, compiled: bool) -> Any:
    from inference.engine import Sampling
    from inference.engines.builtin import BuiltinEngine

    return BuiltinEngine(
        model,
        tokenizer,
        model_id="t",
        sampling=Sampling(do_sample=False),
        max_batch_size=8,
        fixed_shapes=compiled,
        compiled=compiled,
    )


def answer(engine: Any, waves: list[list[tuple[int, int]]]) -> dict[str, tuple[str, int]]:
    """Each wave's questions (question index, new tokens) join the running batch in turn, a few steps apart; every
    answer's final text and token count (greedy: the same tokens give the same text)."""
    tokens: dict[str, tuple[str, int]] = {}
    n = 0
    for wave in waves:
        for question, new_tokens in wave:
            prompt = f"### 질문: {QUESTIONS[question]}\n\n### 답변:"
            engine.add(GenerationRequest(f"q{n}", prompt, new_tokens, ignore_eos=True))
            n += 1
        for _ in range(6):
            tokens |= {u.id: (u.text, u.completion_tokens) for u in engine.step() if u.finished}
    while engine.active:
        tokens |= {u.id: (u.text, u.completion_tokens) for u in engine.step() if u.finished}
    return tokens


def graphs_compiled() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


@pytest.mark.parametrize("architecture", ["gpt-neox", "llama"])
def test_the_compiled_step_gives_eager_tokens_and_compiles_nothing_new_as_batches_change(
    model_dir: Path, architecture: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.test_engine import tiny_llama

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = tiny_llama(tokenizer) if architecture == "llama" else AutoModelForCausalLM.from_pretrained(model_dir)
    torch._dynamo.reset()
    # Warm-up: one row, then several (past a 128-column bucket), as a worker's first minutes would go.
    warm = [[(0, 20)], [(1, 150), (2, 30)]]
    # Then other batch sizes (1, 2, 3, 5 rows, buckets 1–8) and widths: nothing new may compile.
    later = [[(3, 40)], [(4, 170)], [(0, 10), (1, 60), (2, 90)], [(3, 30), (4, 20)]]
    compiled = engine_on(model, tokenizer, compiled=True)
    assert compiled.graphs is not None and compiled.graphs.compiled is not None
    before = graphs_compiled()  # the count is the process's, across tests
    first = answer(compiled, warm)
    after_warm_up = graphs_compiled()
    assert 1 <= after_warm_up - before <= 2, "one graph for a single row, one for several"
    second = answer(compiled, later)
    assert graphs_compiled() == after_warm_up, "a batch size or width compiled anew after the warm-up"
    assert compiled.graphs.compiled.compiled, "the step fell back to running uncompiled"
    eager = engine_on(model, tokenizer, compiled=False)
    assert (first, second) == (answer(eager, warm), answer(eager, later))
    assert any((tmp_path / "inductor").iterdir()), "compiled code is kept on disk for the next start"


def test_a_step_that_cannot_be_compiled_runs_as_before_and_says_so_once(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def no_compiler(forward: Any, **_: Any) -> Any:
        def fails(*args: Any) -> Any:
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore detail")

        return fails

    monkeypatch.setattr(torch, "compile", no_compiler)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    waves = [[(0, 12), (1, 12)], [(2, 12)]]
    with caplog.at_level(logging.WARNING, logger="inference.engines.builtin.compiled"):
        tokens = answer(engine_on(model, tokenizer, compiled=True), waves)
    assert tokens == answer(engine_on(model, tokenizer, compiled=False), waves)
    said = [r.getMessage() for r in caplog.records if "could not be compiled" in r.getMessage()]
    assert said == [
        "COMPILE_DECODE: the decode step could not be compiled (RuntimeError: InvalidCxxCompiler: "
        "No working C++ compiler found); it runs uncompiled"
    ]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_auto_compiles_on_a_gpu_with_triton_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    import torch

    from inference.engines.builtin.compiled import compile_on

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert compile_on("auto", cpu) == (False, "")
    assert compile_on(True, cpu) == (True, "") and compile_on(False, cuda) == (False, "")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "triton" else real(name))
    on, why = compile_on("auto", cuda)
    assert not on and why == "COMPILE_DECODE=auto: Triton is not installed, so the decode step is not compiled"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name == "triton" else real(name))
    assert compile_on("auto", cuda) == (True, "")


def test_compiled_code_goes_beside_the_model_cache_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from huggingface_hub import constants
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    from inference.engines.builtin.compiled import cache_directory

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    assert cache_directory() == Path(constants.HF_HOME) / "torchinductor"  # compose's hf-cache volume
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())  # what torch writes there once asked
    assert cache_directory() == Path(constants.HF_HOME) / "torchinductor"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    assert cache_directory() == tmp_path


def test_the_worker_setting_compiles_the_builtin_step_before_the_first_question(
    model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import torch

    from tests.test_engine import load, transformers_engine

    torch._dynamo.reset()
    with caplog.at_level(logging.INFO, logger="inference.engines.builtin.compiled"):
        engine = transformers_engine(load(model_dir, compile_decode=True))  # on a CPU: fixed shapes, compiled
    assert engine.graphs is not None and engine.graphs.compiled is not None
    assert engine.graphs.compiled.graphs == 2 and not engine.active, "one row, then several, compiled at load"
    ready = [r.getMessage() for r in caplog.records if "decode step ready" in r.getMessage()]
    assert len(ready) == 1 and "2 graphs compiled" in ready[0], ready
    assert transformers_engine(load(model_dir)).graphs is None  # the default: neither on a CPU


def test_the_warm_up_draws_nothing_from_the_seeded_generator(model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from inference.engine import Sampling
    from inference.engines.builtin import BuiltinEngine
    from inference.engines.builtin.compiled import warm_up

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    engine = BuiltinEngine(
        model, tokenizer, model_id="t", sampling=Sampling(seed=3), max_batch_size=4, fixed_shapes=True, compiled=True
    )
    before = engine._generator.get_state()
    warm_up(engine)
    assert torch.equal(engine._generator.get_state(), before), "SEED would give other answers once compiled"
