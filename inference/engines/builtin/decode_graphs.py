"""`FixedShapeDecoder`: the builtin engine's decode step at fixed shapes, replayed as CUDA graphs on a GPU.

Why: with one question, an eager decode step of KULLM's 12.8B model takes several times the time its weights take
to read once; the rest is Python launching about a thousand small kernels one after another (the figures are in
bench/RESULTS.md). A CUDA graph records those launches once and replays them with one call (`CUDA_GRAPHS=1`).
A graph replays fixed shapes at fixed addresses, so the step is reshaped:

- the batch is padded to a bucket of rows (1, 2, 4, 8, then multiples of 8, up to the cache's
  slots); a padding row decodes the pad token at position 0 into a free slot, and its logits are
  dropped;
- attention reads the cache's columns [0, width), `width` the next multiple of `COLUMN_BUCKET`
  past the last column written; each row's mask is computed inside the graph from its position and the
  column it writes (`kv_cache.attending`), so a row sees its own tokens only (a padding row, only the
  columns it writes);
- a speculative step feeds each row its next token and its drafts, `queries` tokens in all (1 in a
  plain step; 2, 3, 5, 9, … with guesses, `padded_queries`): the queries are part of the shape, so the
  speculative steps have graphs of their own.
  When the rows that started earliest have left, the live columns sit far from column 0: once
  the columns before them are as many as they are, they are moved to column 0 in place
  (`SlotCache.compact`), so attention never reads more than about twice what it needs;
- the new keys and values are written with `scatter_` at each row's columns, held in a tensor (rows
  that gained different numbers of tokens in a speculative step write at different columns), so one
  graph serves every step until `end` reaches its width.

A graph is captured the first time its (rows, width, queries) is needed, after one warm-up run on a side
stream (the warm-up writes the same keys and values the replay then writes). Graphs point into
the cache's buffers: when the cache reallocates or is replaced they are dropped and captured
anew, and a graph whose width `end` has reached is dropped at once, so only a few are alive.
Each graph has its own memory pool: sharing one among them (`torch.cuda.graph_pool_handle`, as vLLM does)
would not lower the peak, because what graphs add to it is not their pools, which are small (bench/RESULTS.md,
"memory sources"; the GPU check's line of that name says what it is).

On a CPU there is nothing to capture and the same fixed-shape step runs as it is: the tests
check that it gives the eager engine's answers and that it traces as one graph, with nothing in
it reading a tensor back into Python, which is what a CUDA capture needs.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Any

import torch

from inference.engines.builtin.compiled import CompiledStep, symbolic_sizes
from inference.engines.builtin.kv_cache import SlotCache, Window, attending
from inference.errors import GraphsUnavailable

log = logging.getLogger(__name__)

# Columns attention reads grow in steps of this many (one graph per batch bucket serves that many decode steps).
COLUMN_BUCKET = 128


@dataclass
class _Shape:
    """One fixed (rows, width, queries): its input tensors, and on a GPU its graph and the logits the graph writes."""

    rows: int
    width: int
    queries: int
    tokens: torch.Tensor  # [rows, queries]
    positions: torch.Tensor  # [rows, queries]: each query's position
    at: torch.Tensor  # [rows]: the column each row's first query is written to
    columns: torch.Tensor  # [width]: 0 .. width-1
    graph: Any = None
    logits: torch.Tensor | None = None


class FixedShapeDecoder:
    """Decode steps of the running batch at bucketed shapes; captured as CUDA graphs when `capture`."""

    def __init__(
        self,
        model: Any,
        *,
        cache_name: str,
        forward_options: dict[str, Any],
        pad_token_id: int,
        compiled: bool = False,
    ) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.capture = self.device.type == "cuda"
        self.captured = 0  # graphs captured so far (tests and benchmarks read it)
        # The last captures: rows, width, the bytes still allocated after each (its logits, and what its pool kept),
        # and the seconds it took, warm-up included (a step that captures is that much later).
        self.held: deque[tuple[int, int, int, float]] = deque(maxlen=32)
        self._cache_name = cache_name
        self._forward_options = forward_options
        self._pad = pad_token_id
        self._shapes: dict[tuple[int, int, int], _Shape] = {}
        self._buffers: weakref.ref[torch.Tensor] | None = None  # the cache buffer the graphs point into
        # The stream warm-ups run on, the same for all captures: cuBLAS keeps a workspace for each stream it meets.
        self._side: Any = None
        self.last: _Shape | None = None  # the shape of the last step, with its inputs
        # COMPILE_DECODE: the step compiled (`compiled`), and run by graphs and uncaptured steps alike.
        self.compiled = CompiledStep(self.forward) if compiled else None
        self._run = self.compiled or self.forward

    @property
    def alive(self) -> int:
        """Shapes (and on a GPU, graphs) currently kept."""
        return len(self._shapes)

    def clear(self) -> None:
        """Drop every shape and graph (the engine's reset: their memory goes now, not at the next step)."""
        self._shapes.clear()
        self.last = None
        self._buffers = None

    def step(self, cache: SlotCache, tokens: torch.Tensor, positions: torch.Tensor, lags: torch.Tensor) -> torch.Tensor:
        """Feed the cache's `rows` rows their `tokens` [rows, queries] (positions [rows]: the tokens each has; lags
        [rows]: how far left of `end` its next column is): the logits [rows, queries, vocabulary].

        The columns up to `end + queries` must exist (`SlotCache.make_room`); the caller moves `end` after.
        """
        if cache.start >= max(cache.width, COLUMN_BUCKET):
            cache.compact()
        rows, queries = tokens.shape
        # Compiled, a step that read a whole buffer would be a graph of its own: it reads one column short of it.
        spare = 1 if self.compiled is not None else 0
        if spare:
            cache.make_room(queries + spare)
        self._forget_stale(cache)
        width = padded_width(cache.end + queries - 1, cache.column_capacity - spare)
        shape = self._shape(bucket(rows, cache.slot_capacity), width, queries)
        shape.tokens.fill_(self._pad)
        shape.tokens[:rows] = tokens
        shape.positions.copy_(torch.arange(queries, device=self.device).expand(shape.rows, -1))
        shape.positions[:rows] += positions[:, None]
        shape.at.fill_(cache.end)
        shape.at[:rows] = cache.end - lags
        self.last = shape
        if not self.capture:
            return self._run(shape, cache)[:rows]
        if shape.graph is None:
            self._capture(shape, cache)
        shape.graph.replay()
        assert shape.logits is not None
        return shape.logits[:rows]

    def _shape(self, rows: int, width: int, queries: int) -> _Shape:
        shape = self._shapes.get((rows, width, queries))
        if shape is None:
            longs: dict[str, Any] = {"dtype": torch.long, "device": self.device}
            shape = _Shape(
                rows,
                width,
                queries,
                tokens=torch.zeros((rows, queries), **longs),
                positions=torch.zeros((rows, queries), **longs),
                at=torch.zeros(rows, **longs),
                columns=torch.arange(width, **longs),
            )
            self._shapes[(rows, width, queries)] = shape
        return shape

    def forward(self, shape: _Shape, cache: SlotCache) -> torch.Tensor:
        """The step itself, on the shape's tensors only: what a graph records (the tests trace it)."""
        rows, width = shape.tokens.shape[0], shape.columns.shape[0]  # sizes, not ints: compiled, they stay symbolic
        mask, index = attending(shape.columns, shape.at, shape.positions[:, 0], shape.queries)
        cache.window = Window(rows, 0, width, index)
        options = dict(self._forward_options)
        if "logits_to_keep" in options:
            options["logits_to_keep"] = shape.queries
        try:
            result = self.model(
                input_ids=shape.tokens,
                attention_mask=mask,
                position_ids=shape.positions,
                use_cache=True,
                **{self._cache_name: cache},
                **options,
            )
        finally:
            cache.window = None
        logits: torch.Tensor = result.logits[:, -shape.queries :, :]
        return logits

    def _capture(self, shape: _Shape, cache: SlotCache) -> None:
        allocated, started = torch.cuda.memory_allocated(self.device), time.perf_counter()
        current = torch.cuda.current_stream(self.device)
        if self._side is None:
            self._side = torch.cuda.Stream(device=self.device)  # type: ignore[no-untyped-call]  # untyped in torch
        side = self._side
        side.wait_stream(current)
        try:
            with torch.cuda.stream(side):  # warm-up: lazy initialisations (and compiling) happen here, not in the graph
                self._run(shape, cache)
            current.wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):  # other threads may call CUDA meanwhile
                shape.logits = self._run(shape, cache)
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:
            raise GraphsUnavailable(f"{type(exc).__name__}: {exc}") from exc
        shape.graph = graph
        self.captured += 1
        held = torch.cuda.memory_allocated(self.device) - allocated
        self.held.append((shape.rows, shape.width, held, time.perf_counter() - started))
        log.debug("CUDA graph captured for %d rows × %d columns × %d queries", shape.rows, shape.width, shape.queries)

    def _forget_stale(self, cache: SlotCache) -> None:
        """Drop every graph when the cache's buffers changed, and those too narrow for column `end`."""
        buffers = cache.buffers
        if self._buffers is None or self._buffers() is not buffers:
            self.clear()
            self._buffers = weakref.ref(buffers)
            if self.compiled is not None:
                symbolic_sizes(cache)
            return
        for key in [key for key, shape in self._shapes.items() if shape.width <= cache.end]:
            del self._shapes[key]


def fixed_decoder(
    model: Any, cache_name: str, forward_options: dict[str, Any], pad_token_id: int, compiled: bool
) -> FixedShapeDecoder | None:
    """CUDA_GRAPHS=1 (or COMPILE_DECODE): the fixed-shape decoder, unless the model spans several devices (a graph
    records one device's stream: the other devices' work would be lost)."""
    devices = {parameter.device for parameter in model.parameters()}
    if len(devices) > 1:
        log.warning("CUDA_GRAPHS=1 needs the model on one device; it spans %d: decoding eagerly", len(devices))
        return None
    decoder = FixedShapeDecoder(
        model, cache_name=cache_name, forward_options=forward_options, pad_token_id=pad_token_id, compiled=compiled
    )
    step = "compiled decode step" if compiled else "decode step"
    if decoder.capture:
        log.info("CUDA graphs on: each %s shape is captured when it first occurs, then replayed", step)
    else:
        log.warning(
            "fixed shapes on %s: each %s runs at a bucketed shape, with no graph to replay", decoder.device, step
        )
    return decoder


def bucket(rows: int, slots: int) -> int:
    """The padded batch for `rows` rows: the next of 1, 2, 4, 8, 16, 24, 32, …, or all the cache's slots when that
    is fewer (padding rows cost attention a full row each, so the steps past 8 are small)."""
    padded = 1 << (rows - 1).bit_length() if rows <= 8 else -(-rows // 8) * 8
    return min(padded, slots)


def padded_queries(queries: int) -> int:
    """Tokens a step feeds each row, padded: one, or one and 1, 2, 4, 8, … guesses (a graph per count)."""
    return queries if queries <= 2 else 1 + (1 << (queries - 2).bit_length())


def padded_width(last: int, capacity: int) -> int:
    """Columns attention reads to write up to column `last`: the next multiple of `COLUMN_BUCKET` past it, within
    the buffers."""
    return min(-(-(last + 1) // COLUMN_BUCKET) * COLUMN_BUCKET, capacity)
