"""The benchmarks' code paths run in CI (small sizes, no timing assertions: speed is for bench/)."""

from __future__ import annotations

import argparse
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from bench import queue as queue_bench
from testkit.engines import IN_PROCESS_MODEL
from testkit.processes import ServeProcess
from testkit.redis_server import RedisServer


@IN_PROCESS_MODEL
def test_random_weight_architecture_runs_both_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    # The 12.8B shape scaled down: built on the meta device, allocated, initialised, then generated with.
    import torch

    from bench import engine as engine_bench
    from testkit import random_weights  # loads torch: imported by the test that needs it, not at collection

    shape = dict(random_weights.ARCHITECTURES["polyglot-ko-12.8b"])
    shape.update(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    monkeypatch.setitem(random_weights.ARCHITECTURES, "scaled", shape)
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
    # What the memory went to: the cache's buffers, 2 layers of keys and values, 4 heads of 16 in float32.
    match = re.fullmatch(r"KV cache ([\d.,]+) MB \((\d+) rows × (\d+) columns\)", ours.memory)
    assert match, ours.memory
    rows, columns = int(match[2]), int(match[3])
    assert rows >= 3 and columns >= 6
    assert match[1] == f"{2 * 2 * rows * 4 * columns * 16 * 4 / 2**20:,.1f}"
    graphed = engine_bench.run_engine(model, tokenizer, 3, 6, device, "builtin+graphs")
    assert graphed.tokens == 18 and graphed.memory.endswith("0 graphs captured, 1 shapes kept")  # a CPU captures none
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
    assert "started for its rows, stopped after them" in table  # not holding the cores while others are measured


def test_transformers_serve_is_started_with_the_options_it_is_given(model_dir: Path, tmp_path: Path) -> None:
    """The benchmark asks for `--continuous-batching` on Llama; the server's own command line must carry it (it once
    did not, and the benchmark printed the mode it had asked for while the server ran in plain mode).

    Its port is picked free, but the server binds it only after loading the model: another test's process can take
    it meanwhile (CI saw a redis-server do so). Taken here on purpose, it starts again on a fresh port."""
    server = ServeProcess(model_dir, tmp_path / "serve.log", device="cpu", continuous_batching=True)
    taken = server.port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        server.start()
    try:
        assert server.port != taken and "address already in use" in server.log()
        assert server.process is not None
        command = Path(f"/proc/{server.process.pid}/cmdline").read_bytes().split(b"\0")
        assert b"--continuous-batching" in command and command[command.index(b"--device") + 1] == b"cpu"
        assert server.continuous_batching
    finally:
        server.stop()
    plain = ServeProcess(model_dir, tmp_path / "plain.log")
    assert not plain.continuous_batching  # not started


async def test_queue_benchmark_measures_through_a_real_redis(redis_server: RedisServer) -> None:
    args = argparse.Namespace(questions=200, idle=20, batch=16, floor_requests=500)
    table = await queue_bench.run(args, redis_server)
    assert "enqueue → started" in table and "questions/s" in table


def test_repeated_rounds_report_the_median_row_and_the_range_of_queue_shares() -> None:
    from bench.engine import Result, _median_round, _queue_shares

    def result(name: str, tokens_per_s: float) -> Result:
        return Result(f"{name}, 16 in flight", 16, int(tokens_per_s * 10), 10.0, [0.1], [10.0], 0.0)

    rounds = [
        [result("builtin", direct), result("builtin through the queue", queued)]
        for direct, queued in ((200, 190), (180, 198), (220, 176))
    ]
    assert _median_round(tuple(r[0] for r in rounds)).tokens_per_s == 200
    assert _median_round(tuple(r[1] for r in rounds[:2])).tokens_per_s == 190  # an even count: the lower middle
    # Each share is taken within one round (side by side), never between a round's direct and another's queue.
    assert _queue_shares(rounds) == [
        "16 in flight: builtin through the queue 80%–110% of builtin called directly, median 95% over 3 rounds "
        "(95%, 110%, 80%)"
    ]
    assert _queue_shares(rounds[:1]) == ["16 in flight: builtin through the queue 95% of builtin called directly"]


def test_rows_show_every_round_and_rounds_that_disagree_mark_the_row_and_its_ratios_unreliable() -> None:
    """The issue's own measurement: builtin 152.5 then 242.9 tokens/s at 16 in flight, `transformers serve` 30.0
    then 238.1 — a row must show both rounds and say it cannot be trusted, never average them into a figure."""
    import argparse

    import torch

    from bench.engine import Result, _median_round, comparisons, report

    def result(name: str, tokens_per_s: float) -> Result:
        return Result(f"{name}, 16 in flight", 16, int(tokens_per_s * 10), 10.0, [0.1], [10.0], 0.0)

    builtin = _median_round((result("builtin", 152.5), result("builtin", 242.9)))
    paged = _median_round((result("paged", 100.0), result("paged", 110.0)))
    assert builtin.tokens_per_s == 152.5 and builtin.rounds == (152.5, 242.9) and builtin.unreliable
    assert not paged.unreliable and paged.spread == pytest.approx(0.1)
    baseline = Result("pipeline, one at a time", 4, 400, 10.0, [0.1], [2.5], 0.0)
    table = report(
        baseline, [builtin, paged], argparse.Namespace(architecture="x", model=None, new_tokens=64), torch.device("cpu")
    )
    row = next(line for line in table.splitlines() if line.startswith("| builtin, 16"))
    assert "152.5 / 242.9 (spread 59%) **unreliable**" in row
    assert "100.0 / 110.0 (spread 10%) |" in next(line for line in table.splitlines() if line.startswith("| paged, 16"))
    assert "| – |" in next(line for line in table.splitlines() if line.startswith("| pipeline"))
    (ratio,) = comparisons([builtin, paged])
    assert ratio.startswith("16 in flight: builtin 1.52× paged") and "unreliable: the rounds of builtin, 16" in ratio


def test_graph_memory_is_traced_to_the_lines_that_allocated_it() -> None:
    """A CUDA memory snapshot in the shape torch documents (`torch.cuda.memory._snapshot`), summarised for the GPU
    check: what was allocated off the default stream, by line, and what the graphs' pools hold."""
    from bench.engine import allocation_sources

    attention = [
        {"filename": "/site/torch/nn/functional.py", "line": 1, "name": "scaled_dot_product_attention"},
        {"filename": "/site/transformers/models/gpt_neox/modeling_gpt_neox.py", "line": 120, "name": "forward"},
    ]
    ours = [{"filename": "/repo/inference/decode_graphs.py", "line": 140, "name": "forward"}]
    mb = 2**20
    traces = [
        {"action": "alloc", "stream": 7, "size": 100 * mb, "frames": attention},
        {"action": "alloc", "stream": 7, "size": 60 * mb, "frames": attention},
        {"action": "free_requested", "stream": 7, "size": 60 * mb, "frames": attention},
        {"action": "alloc", "stream": 7, "size": 2 * mb, "frames": ours},
        {"action": "alloc", "stream": 0, "size": 900 * mb, "frames": ours},  # the default stream: prefill, not graphs
    ]
    segments = [
        {"segment_pool_id": (0, 0), "total_size": 4000 * mb, "allocated_size": 3000 * mb},
        {"segment_pool_id": (1, 0), "total_size": 200 * mb, "allocated_size": 2 * mb},
        {"segment_pool_id": (2, 0), "total_size": 100 * mb, "allocated_size": 2 * mb},
    ]
    assert allocation_sources(traces, segments) == (
        "off the default stream, modeling_gpt_neox.py:120 forward: 160 MB in 2 (largest 100.0 MB); "
        "decode_graphs.py:140 forward: 2 MB in 1 (largest 2.0 MB); "
        "graph pools at the end: 300 MB reserved, 4 MB allocated"
    )


def test_the_memory_alive_at_a_passes_peak_is_named_by_line() -> None:
    """Where a graphed pass's peak memory goes: the trace replayed to the moment the most recorded memory was in use,
    and the lines whose blocks were alive then; a block freed before the peak, or allocated only after it, is not
    counted, and neither is one freed that the recording never saw allocated (the weights)."""
    from bench.engine import peak_holders

    def frames(filename: str, line: int) -> list[dict[str, Any]]:
        return [
            {"filename": "/site/torch/nn/modules/module.py", "line": 1, "name": "_call_impl"},
            {"filename": filename, "line": line, "name": "forward"},
        ]

    cache = frames("/repo/inference/kv_cache.py", 170)
    attention = frames("/site/transformers/models/gpt_neox/modeling_gpt_neox.py", 103)
    workspace = [{"filename": "/site/torch/x.py", "line": 9, "name": "f"}]
    mb = 2**20
    traces = [
        {"action": "free_requested", "addr": 1, "size": 50 * mb},  # allocated before the recording began
        {"action": "alloc", "addr": 2, "size": 400 * mb, "frames": cache},
        {"action": "alloc", "addr": 3, "size": 100 * mb, "frames": attention},
        {"action": "free_requested", "addr": 3, "size": 100 * mb},
        {"action": "free_completed", "addr": 3, "size": 100 * mb},
        {"action": "alloc", "addr": 4, "size": 300 * mb, "frames": attention},
        {"action": "alloc", "addr": 5, "size": 30 * mb, "frames": attention},
        {"action": "alloc", "addr": 6, "size": 8 * mb, "frames": workspace},
        {"action": "free_requested", "addr": 4, "size": 300 * mb},
        {"action": "alloc", "addr": 7, "size": 200 * mb, "frames": cache},  # after the peak: 638 MB at most
    ]
    assert peak_holders(traces) == (
        "alive at the recorded peak, 738 MB over the recording's start: kv_cache.py:170 forward: 400 MB in 1; "
        "modeling_gpt_neox.py:103 forward: 330 MB in 2; x.py:9 f: 8 MB in 1"
    )
    assert peak_holders([]) == "alive at the recorded peak, 0 MB over the recording's start: nothing"


def test_kernels_are_sorted_by_the_names_cuda_gives_them() -> None:
    """The decode-step line splits a GPU step's kernel time by kind (names as torch's profiler reported them)."""
    from bench.engine import kernel_kind

    for name in (
        "nvjet_hsh_64x8_64x16_4x1_v_bz_splitK_TNT",
        "sm90_xmma_gemm_f16f16_f16f32_f32_tn_n_tilesize64x64x64_warpgroupsize1x1x1_execute_segment_k_off_kernel",
        "void gemv2T_kernel_val<int, int, __half, __half, float, 128, 16, 4, 4, false, false>",
        "void cutlass::Kernel2<cutlass_80_tensorop_f16_s16816gemm_relu_f16_64x64_64x4_tn_align8>",
    ):
        assert kernel_kind(name) == "matmul", name
    for name in (
        "fmha_cutlassF_f16_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel<cutlass::half_t>::Params)",
        "void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 32, 4, false, false, cutlass::half_t>>",
    ):
        assert kernel_kind(name) == "attention", name
    for name in (
        "void at::native::vectorized_elementwise_kernel<4, at::native::GeluCUDAKernelImpl>",
        "void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<c10::Half, float>",
        "void at::native::index_elementwise_kernel<128, 4>",
    ):
        assert kernel_kind(name) == "other", name


async def test_knowledge_benchmark_indexes_searches_and_scores_recall() -> None:
    """`bench.knowledge` end to end at a small size (its own redis-server, the real analyzer): every figure is
    reported, and the generated questions are answerable (recall is measured, and well above chance)."""
    from bench import knowledge

    passages, questions = knowledge.corpus(3000)
    decisions = {q.answer for q in questions}
    assert len(questions) == 200 and all(passages[int(a)].text.endswith(("요", "다")) for a in decisions)
    report = await knowledge.run(argparse.Namespace(messages=3000, queries=60, rounds=2))
    assert re.search(r"indexing: [\d.]+ s .*used_memory \d+ MiB", report), report
    assert len(re.findall(r"search round \d \(60 questions, k=5\): p50 [\d.]+ ms, p95 [\d.]+ ms", report)) == 2
    recall = float(re.search(r"recall@5: \d+/60 = ([\d.]+)", report)[1])  # type: ignore[index]
    assert recall >= 0.6, report
