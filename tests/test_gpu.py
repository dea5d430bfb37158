"""The CUDA path: fp16 engine, the worker on a GPU, the 12.8B random-weight shape. Skipped without CUDA.

Run on a GPU machine with `make test`, `.venv/bin/python -m pytest -m gpu` (a CUDA build of torch), or
`bash bench/gpu/run.sh` on a bare GPU host. The GPU check's dry run sets `KULLM_GPU_TESTS_DEVICE=cpu`
to run the same tests on the CPU (fp32 there), so they cannot rot where no GPU is at hand.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from inference.engine import GenerationUpdate, Loaded
from testkit.engines import IN_PROCESS_MODEL
from testkit.processes import WorkerProcess, run_kullm
from testkit.redis_server import RedisServer
from tests.test_engine import load, request, run, transformers_engine

DEVICE = os.environ.get("KULLM_GPU_TESTS_DEVICE", "cuda")


def cuda_missing() -> bool:
    """Asked when a test is set up, not at collection: a test process that runs none of these never imports torch."""
    import torch

    return DEVICE == "cuda" and not torch.cuda.is_available()


pytestmark = [pytest.mark.gpu, pytest.mark.skipif("cuda_missing()", reason="needs a CUDA device"), IN_PROCESS_MODEL]
QUESTIONS = ["딥러닝이 뭐야?", "한국의 수도는 어디야?", "긴 이야기를 들려줘", "인사해줘"]


def answer(loaded: Loaded, questions: list[str]) -> dict[str, str]:
    for index, question in enumerate(questions):
        loaded.engine.add(request(loaded, str(index), question))
    finished: dict[str, GenerationUpdate] = {}
    run(loaded.engine, finished)
    return {questions[int(i)]: u.text for i, u in finished.items()}


def test_the_engine_runs_in_fp16_on_the_gpu_and_batching_changes_no_answer(model_dir: Path) -> None:
    import torch

    from inference.model import resolve_dtype

    loaded = load(model_dir, device=DEVICE, max_batch_size=8)  # DTYPE=auto
    parameter = next(transformers_engine(loaded).model.parameters())
    assert parameter.device.type == torch.device(DEVICE).type
    assert parameter.dtype == resolve_dtype("auto", parameter.device)
    if parameter.device.type == "cuda":
        assert parameter.dtype == torch.float16  # the seed's setting
    solo = {q: answer(loaded, [q])[q] for q in QUESTIONS}
    assert answer(loaded, QUESTIONS) == solo


def test_the_paged_engine_gives_the_builtin_engines_answers_on_the_gpu(model_dir: Path) -> None:
    builtin = load(model_dir, device=DEVICE, max_batch_size=8)
    expected = answer(builtin, QUESTIONS)
    paged = load(model_dir, device=DEVICE, max_batch_size=8, engine="paged")
    try:
        assert answer(paged, QUESTIONS) == expected
    finally:
        paged.engine.close()


def test_cuda_graphs_give_the_eager_answers_on_the_gpu(model_dir: Path) -> None:
    """CUDA_GRAPHS: builtin's captured decode steps (auto, the default, on a GPU) and transformers' graphs under paged
    (true) answer as eager builtin."""
    expected = answer(load(model_dir, device=DEVICE, max_batch_size=8, cuda_graphs=False), QUESTIONS)
    graphs = load(model_dir, device=DEVICE, max_batch_size=8, cuda_graphs=True if DEVICE == "cpu" else "auto")
    assert answer(graphs, QUESTIONS) == expected
    # Again, in another order: graphs captured above replay between new ones.
    assert answer(graphs, QUESTIONS[::-1]) == expected
    decoder = transformers_engine(graphs).graphs
    assert decoder is not None, "a capture failed: the engine fell back to eager decoding (the log says why)"
    if DEVICE == "cuda":
        assert decoder.captured >= 1
    paged = load(model_dir, device=DEVICE, max_batch_size=8, engine="paged", cuda_graphs=True)
    try:
        assert answer(paged, QUESTIONS) == expected
    finally:
        paged.engine.close()


def test_a_worker_on_the_gpu_answers_kullm_ask(model_dir: Path, tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    worker = WorkerProcess(server.url, model_dir, tmp_path / "worker.log", DEVICE=DEVICE).start()
    try:
        result = run_kullm(["ask", "한국의 수도는 어디야?"], server.url)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip(), "the answer is empty"
        assert f"on {DEVICE}" in worker.log_path.read_text()
    finally:
        worker.stop()
        server.stop()


def test_the_12_8b_shape_builds_with_random_fp16_weights_and_generates() -> None:
    if DEVICE != "cuda":
        pytest.skip("the 12.8B shape needs a GPU with about 40 GB free")
    import torch

    from bench import engine as engine_bench

    free, _ = torch.cuda.mem_get_info()
    if free < 40 * 2**30:
        pytest.skip("the 12.8B shape needs about 30 GB of free GPU memory")
    args = argparse.Namespace(
        architecture="polyglot-ko-12.8b", model=None, device="cuda", dtype="float16", new_tokens=8
    )
    model, tokenizer, device = engine_bench.load(args)
    try:
        weights = sum(p.numel() for p in model.parameters())
        assert 12.5e9 < weights < 13.5e9
        assert next(model.parameters()).dtype == torch.float16
        ours = engine_bench.run_engine(model, tokenizer, 4, 8, device)
        assert ours.tokens == 32  # forced lengths
    finally:
        del model
        torch.cuda.empty_cache()


def test_a_worker_picks_the_gpu_by_itself_and_never_falls_back_to_the_cpu(model_dir: Path, tmp_path: Path) -> None:
    if DEVICE != "cuda":
        pytest.skip("the dry run has no GPU to pick or to hide")
    server = RedisServer(tmp_path / "redis")
    server.start()
    worker = WorkerProcess(server.url, model_dir, tmp_path / "auto.log", DEVICE="auto").start()
    try:
        assert "on cuda" in worker.log_path.read_text(), "DEVICE=auto takes the GPU"
    finally:
        worker.stop()
    # The GPU hidden (as an old driver or a container without --gpus leaves it): 12.8B must not go to the CPU.
    hidden = WorkerProcess(
        server.url, model_dir, tmp_path / "hidden.log", DEVICE="auto", MODEL="kullm-v1", CUDA_VISIBLE_DEVICES=""
    )
    hidden.env.pop("MODEL_ID")
    try:
        hidden.start(wait=False)
        assert hidden.process is not None and hidden.process.wait(120) == 2
        said = hidden.log_path.read_text()
        assert "an NVIDIA driver is loaded (a GPU host), but" in said and "DEVICE=cpu" in said, said[-2000:]
        assert "loading metterian/kullm-polyglot-12.8b" not in said
    finally:
        hidden.stop()
        server.stop()
