"""The fixed-shape decode step compiled (`COMPILE_DECODE`): torch.compile's Inductor fuses the step's many small
kernels (residual adds, layer norms, GELU, rotary, the mask) into a few it generates (Triton on a GPU, C++ on a
CPU), inside the CUDA graphs `decode_graphs` captures.

Why: with one question, KULLM's 12.8B decode step spends about a fifth of its time in ~900 small kernels beside the
matmuls that read the weights (bench/RESULTS.md, GPU); fused, the step comes closer to the time its bytes take.

Shapes are compiled with symbolic sizes, so batch sizes and attention widths do not each compile anew: one graph
for a single row and one for several (torch specialises a size of 1), for each number of tokens a step feeds a row
(1, or with speculative guesses 2, 3, 5, 9, …). A step never reads a whole buffer, which would be a graph of its
own: the decoder keeps one column free past what it reads. The worker compiles the step for one row and for several
while it loads (`warm_up`), before it turns ready; the compiled code is kept on disk (`cache_directory`), so a
restart loads it instead of compiling again.

A step that cannot be compiled (no Triton, no C++ compiler, an operator Inductor refuses) runs as it did before:
the worker says so once and goes on.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

# Graphs dynamo may keep for the step: rows (one, several) × queries fed (1, 2, 3, 5, 9, 17, 33) with room to spare.
# Past its default (8) dynamo would silently run the step uncompiled.
RECOMPILE_LIMIT = 64


def compile_on(setting: bool | str, device: torch.device, fixed_shapes: bool = True) -> tuple[bool, str]:
    """COMPILE_DECODE: whether to compile, and why not when it will not. auto compiles on a GPU whose decode steps
    run at fixed shapes (CUDA_GRAPHS) where Triton is installed, and not on a CPU (where generated C++ lost to torch's
    own kernels for a batch); true compiles wherever, at fixed shapes (a CPU needs a C++ compiler)."""
    if setting == "auto":
        if device.type != "cuda" or not fixed_shapes:
            return False, ""
        if importlib.util.find_spec("triton") is None:
            return False, "COMPILE_DECODE=auto: Triton is not installed, so the decode step is not compiled"
        return True, ""
    return bool(setting), ""


def cache_directory() -> Path:
    """Where Inductor keeps compiled code: TORCHINDUCTOR_CACHE_DIR when set, else beside the Hugging Face cache
    (the model volume in compose and on Kubernetes, so it outlives the container), not torch's own default under
    /tmp. torch writes its default into the variable once anything asked it, so that value counts as unset."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    configured = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if configured and os.path.abspath(configured) != os.path.abspath(default_cache_dir()):
        return Path(configured)
    from huggingface_hub import constants

    return Path(constants.HF_HOME) / "torchinductor"


class CompiledStep:
    """`forward(shape, cache)` compiled on its first call; uncompiled from then on if compiling fails."""

    def __init__(self, forward: Callable[[Any, Any], torch.Tensor]) -> None:
        self._plain = forward
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_directory())  # read by Inductor whenever it caches
        limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
        setattr(torch._dynamo.config, limit, max(getattr(torch._dynamo.config, limit), RECOMPILE_LIMIT))
        self._compiled: Callable[[Any, Any], torch.Tensor] | None = torch.compile(forward, fullgraph=True, dynamic=True)
        self.graphs = 0  # graphs compiled for the step so far
        self.seconds = 0.0  # the time the steps that compiled took (the start-up cost, with the first run of each)

    @property
    def compiled(self) -> bool:
        """False once compiling failed (the step then runs uncompiled)."""
        return self._compiled is not None

    def __call__(self, shape: Any, cache: Any) -> torch.Tensor:
        if self._compiled is None:
            return self._plain(shape, cache)
        from torch._dynamo.utils import counters

        before, started = counters["stats"]["unique_graphs"], time.perf_counter()
        try:
            logits = self._compiled(shape, cache)
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:
            cause = getattr(exc, "inner_exception", None) or exc  # what the compiler backend raised
            first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
            log.warning(
                "COMPILE_DECODE: the decode step could not be compiled (%s: %s); it runs uncompiled",
                type(cause).__name__,
                first,
            )
            self._compiled = None
            return self._plain(shape, cache)
        if counters["stats"]["unique_graphs"] > before:
            self.graphs += counters["stats"]["unique_graphs"] - before
            self.seconds += time.perf_counter() - started
        return logits


def warm_up(engine: Any) -> None:
    """Compile the step for one row and for several before the worker takes questions, so that no asker's answer
    waits for it (a few tokens of a throwaway prompt, one question and then two); says what it took."""
    from inference.engine import GenerationRequest

    step = engine.graphs.compiled if engine.graphs is not None else None
    if step is None:
        return
    started = time.perf_counter()
    for rows in (1, 2):
        for row in range(rows):
            # greedy (temperature 0): no draw from the engine's generator, so SEED gives the answers it gave before
            warm = GenerationRequest(f"compile warm-up {rows}.{row}", "warm-up", 3, ignore_eos=True, temperature=0)
            engine.add(warm)
        while engine.active:
            engine.step()
    if step.compiled:
        log.info(
            "COMPILE_DECODE: decode step ready for one row and for several in %.1f s (%d graphs compiled, the rest "
            "from %s)",
            time.perf_counter() - started,
            step.graphs,
            os.environ["TORCHINDUCTOR_CACHE_DIR"],
        )


def symbolic_sizes(cache: Any) -> None:
    """Compile for any number of slots and columns in the cache's (new) buffers, not for the ones they have now:
    buffers grow as the batch does, and each size would otherwise compile the step again."""
    for layer in cache.layers:
        for buffer in (layer.keys, layer.values):
            torch._dynamo.maybe_mark_dynamic(buffer, 0)
            torch._dynamo.maybe_mark_dynamic(buffer, 2)
