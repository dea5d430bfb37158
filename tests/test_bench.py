"""The benchmarks' code paths run in CI (small sizes, no timing assertions: speed is for bench/)."""

from __future__ import annotations

import argparse

import pytest

from bench import queue as queue_bench
from tests.support.engines import IN_PROCESS_MODEL
from tests.support.processes import RedisServer


@IN_PROCESS_MODEL
def test_random_weight_architecture_runs_both_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    # The 12.8B shape scaled down: built on the meta device, allocated, initialised, then generated with.
    import torch

    from bench import engine as engine_bench

    shape = dict(engine_bench.ARCHITECTURES["polyglot-ko-12.8b"])
    shape.update(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    monkeypatch.setitem(engine_bench.ARCHITECTURES, "scaled", shape)
    args = argparse.Namespace(architecture="scaled", model=None, device="cpu", dtype="float32", new_tokens=6)
    model, tokenizer, device = engine_bench.load(args)
    assert next(model.parameters()).device.type == "cpu"
    assert not any(p.is_meta for p in model.parameters())
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    rotary = model.gpt_neox.rotary_emb  # computed from the config, not left as uninitialised memory
    fresh = type(rotary)(model.config)
    assert torch.equal(rotary.inv_freq, fresh.inv_freq)
    assert torch.equal(rotary.original_inv_freq, fresh.original_inv_freq)
    baseline = engine_bench.run_baseline(model, tokenizer, 2, 6, device)
    ours = engine_bench.run_engine(model, tokenizer, 3, 6, device)
    assert (baseline.tokens, ours.tokens) == (12, 18)  # forced lengths: counts compare (paged: the test below)
    table = engine_bench.report(baseline, [ours], args, device)
    assert "| builtin, 3 in flight | 3 |" in table and "1.00×" in table
    single = engine_bench.run_engine(model, tokenizer, 1, 6, device)
    line = engine_bench.bandwidth_line(model, single, engine_bench.copy_bandwidth(device, megabytes=16))
    assert line.startswith("bandwidth bound: copy bandwidth") and "of the bound" in line
    ttft = engine_bench.idle_ttft(model, tokenizer, device, prompt_tokens=200, runs=2)
    length = int(ttft.split("idle: ")[1].split("-token")[0])
    assert 180 <= length <= 230 and ttft.endswith("ms over 2 runs")


@IN_PROCESS_MODEL
@pytest.mark.e2e  # it starts `transformers serve`
def test_the_engine_benchmark_runs_our_engines_and_transformers_serve_directly_and_through_the_queue() -> None:
    from bench import engine as engine_bench

    args = argparse.Namespace(
        engines="builtin,paged,serve", compare="static,queue", concurrency="2", new_tokens=4, baseline_questions=1
    )
    args.device, args.dtype = "cpu", "float32"
    table = engine_bench.bench_model("tiny", args)
    for setting in (
        "builtin, 2 in flight",
        "paged, 2 in flight",
        "transformers serve, 2 streams",
        "builtin through the queue, 2 in flight",
        "paged through the queue, 2 in flight",
        "openai (transformers serve) through the queue, 2 in flight",
        "static generate, 2 at once",
    ):
        assert f"| {setting} | 2 |" in table, setting
    assert "2 in flight: builtin through the queue" in table and "2 in flight: builtin" in table
    assert "transformers serve: plain mode, cpu" in table  # the tiny model is GPT-NeoX


async def test_queue_benchmark_measures_through_a_real_redis(redis_server: RedisServer) -> None:
    args = argparse.Namespace(questions=200, idle=20, batch=16, floor_requests=500)
    table = await queue_bench.run(args, redis_server)
    assert "enqueue → started" in table and "questions/s" in table
