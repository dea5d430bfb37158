"""`SlotCache`: the running batch's keys and values in preallocated buffers, written in place.

Each layer holds one key and one value buffer of shape [slots, heads, columns, head_dim]. Rows
0..rows-1 are the live questions. A row's tokens are contiguous and end where its next token goes:
at `end` for every row until speculative steps (below) leave some rows a few columns short of it. The
columns a row does not use are padding, masked out by the engine. So:

- a decode step writes one column of each buffer in place — no `torch.cat` of the whole cache;
- a newcomer's prefilled keys and values are copied into a free row at [end - length, end):
  only its own tokens move;
- a finishing row is replaced by the last row: one row moves;
- only when a buffer is full (slots, columns to the right, or room on the left for a prompt
  longer than every live row) are the buffers reallocated with a margin and the live region
  copied once. `copies` counts those; tests check that steps and joins make none while the
  buffers have room.

The buffers start zeroed and only ever hold real keys and values, so masked padding never
carries a NaN into attention.

Speculative steps (`speculation`) let rows gain different numbers of tokens in one step, so a row's next column
may lie left of `end` (the engine keeps each row's lag). Every decode step therefore runs in a `Window`
(`attending`): row r's queries are written at its own columns, held in a tensor, and attention reads the
columns [first, last). The eager step reads from `start`; a step at fixed shapes (`decode_graphs`,
`CUDA_GRAPHS=1`) reads a fixed number of columns from column 0, for a padded number of rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer

# Columns added to the right when a buffer is full (at least; half the live width when that is more).
GROW_COLUMNS = 128
# Rows added when the slots are full (at least; half the live rows when that is more), up to the batch cap.
GROW_SLOTS = 4


@dataclass(frozen=True)
class Window:
    """Where one forward pass over the first `rows` rows writes and reads: query q of row r goes to column
    `index[r, 0, q, 0]`; attention reads the columns [first, last)."""

    rows: int
    first: int
    last: int
    index: torch.Tensor  # [rows, 1, queries, 1]


def attending(
    columns: torch.Tensor, at: torch.Tensor, positions: torch.Tensor, queries: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The attention mask and write index of a step that feeds `queries` tokens to each row.

    `columns` [width] are the columns attention reads, `at` [rows] the column each row's first query is written
    to, `positions` [rows] the tokens each row already has (in the columns just before `at`). Query q of row r
    sees its row's tokens and its own queries up to q: the mask is [rows, 1, queries, width], the index (for
    `Window`) [rows, 1, queries, 1]. Tensor operations only, so a CUDA graph can record them.
    """
    written = at[:, None] + torch.arange(queries, device=at.device)  # [rows, queries]
    sees = (columns >= (at - positions)[:, None, None]) & (columns <= written[:, :, None])
    return sees[:, None], written[:, None, :, None]


class SlotCache(Cache):
    """The running batch's KV cache; the engine owns its geometry (`rows`, `start`, `end`)."""

    def __init__(self, num_layers: int) -> None:
        super().__init__(layers=[_SlotLayer(self) for _ in range(num_layers)])
        self.rows = 0
        self.start = 0  # first column a live row uses
        self.end = 0  # the column every row's next token is written to
        self.copies = 0  # reallocations that moved live keys and values
        self.compactions = 0  # in-place moves of the live columns to column 0 (`compact`)
        # During a decode step's forward pass: where it writes and reads (`attending`).
        self.window: Window | None = None

    @property
    def slot_capacity(self) -> int:
        keys = self._slot_layers()[0].keys
        return 0 if keys is None else int(keys.shape[0])

    @property
    def column_capacity(self) -> int:
        keys = self._slot_layers()[0].keys
        return 0 if keys is None else int(keys.shape[2])

    @property
    def buffers(self) -> torch.Tensor:
        """The first layer's key buffer: a new tensor whenever the buffers are (re)allocated."""
        keys = self._slot_layers()[0].keys
        assert keys is not None, "no buffers before the first place()"
        return keys

    @property
    def width(self) -> int:
        """Columns attention reads: from the first live row's first token to the last written column."""
        return self.end - self.start

    def place(self, source: Any, lengths: list[int], max_rows: int) -> None:
        """Copy prefilled rows into new rows ending at `end`.

        Row i of `source` holds its `lengths[i]` tokens right-aligned (a left-padded prefill batch).
        """
        sources: list[Any] = list(source.layers)
        first_keys: torch.Tensor = sources[0].keys
        longest = max(lengths)
        self._reserve(self.rows + len(lengths), longest, max_rows, first_keys)
        source_width = first_keys.shape[2]
        for layer, prefilled in zip(self._slot_layers(), sources, strict=True):
            assert layer.keys is not None and layer.values is not None
            for i, length in enumerate(lengths):
                row = self.rows + i
                layer.keys[row, :, self.end - length : self.end] = prefilled.keys[i, :, source_width - length :]
                layer.values[row, :, self.end - length : self.end] = prefilled.values[i, :, source_width - length :]
        self.start = min(self.start, self.end - longest) if self.rows else self.end - longest
        self.rows += len(lengths)

    def make_room(self, columns: int = 1) -> None:
        """Before a decode step: make sure the columns [end, end + columns) exist."""
        if self.end + columns > self.column_capacity:
            right = max(GROW_COLUMNS, self.width // 2, columns)
            self._reallocate(self.slot_capacity, left=0, right=right)

    def advance(self, columns: int = 1) -> None:
        """Move `end` after a decode step: by one column, or by what a speculative step's rows gained (a step
        whose row at `end` left may move it back)."""
        self.end += columns

    def move_row(self, source: int, target: int) -> None:
        """Copy row `source`'s live columns over row `target` (the engine then forgets `source`)."""
        for layer in self._slot_layers():
            assert layer.keys is not None and layer.values is not None
            layer.keys[target, :, self.start : self.end] = layer.keys[source, :, self.start : self.end]
            layer.values[target, :, self.start : self.end] = layer.values[source, :, self.start : self.end]

    def compact(self) -> None:
        """Move the live columns to column 0, in place: every row by the same offset, so each keeps its place.

        Only when the columns left of them are at least as many as they are (source and target do not
        overlap). The buffers stay the same tensors; `compactions` counts these moves.
        """
        width = self.width
        assert self.start >= width, "compact() needs as many free columns before the live ones as there are live ones"
        for layer in self._slot_layers():
            assert layer.keys is not None and layer.values is not None
            for buffer in (layer.keys, layer.values):
                buffer[: self.rows, :, :width] = buffer[: self.rows, :, self.start : self.end]
        self.start, self.end = 0, width
        self.compactions += 1

    def truncate(self, rows: int, first_column: int) -> None:
        """Keep rows [0, rows); attention starts at `first_column`, the earliest token a kept row has."""
        self.rows = rows
        self.start = first_column if rows else self.end

    def _reserve(self, rows: int, longest: int, max_rows: int, like: torch.Tensor) -> None:
        """Room for `rows` rows and for a prompt of `longest` tokens ending at `end` (plus one decode column)."""
        if self.rows == 0:
            if rows <= self.slot_capacity and longest < self.column_capacity:
                self.start = self.end = longest
                return
            slots = max(rows, min(max_rows, GROW_SLOTS))
            self._allocate(like, slots, longest + max(GROW_COLUMNS, longest // 2))
            self.start = self.end = longest
            return
        slots = self.slot_capacity
        if rows > slots:
            slots = max(rows, min(max_rows, slots + max(GROW_SLOTS, slots // 2)))
        left = max(0, longest - self.width)
        if slots == self.slot_capacity and self.end >= longest:
            return
        if self.end < longest:
            left += GROW_COLUMNS
        right = max(self.column_capacity - self.end, GROW_COLUMNS)
        self._reallocate(slots, left=left, right=right)

    def _allocate(self, like: torch.Tensor, slots: int, columns: int) -> None:
        heads, head_dim = like.shape[1], like.shape[3]
        for layer in self._slot_layers():
            layer.keys = like.new_zeros((slots, heads, columns, head_dim))
            layer.values = like.new_zeros((slots, heads, columns, head_dim))
            layer.device = like.device
            layer.is_initialized = True

    def _reallocate(self, slots: int, *, left: int, right: int) -> None:
        """New buffers with `left` free columns before the live ones and `right` after; copies the live rows."""
        width = self.width
        for layer in self._slot_layers():
            assert layer.keys is not None and layer.values is not None
            for name in ("keys", "values"):
                old: torch.Tensor = getattr(layer, name)
                new = old.new_zeros((slots, old.shape[1], left + width + right, old.shape[3]))
                new[: self.rows, :, left : left + width] = old[: self.rows, :, self.start : self.end]
                setattr(layer, name, new)  # one layer at a time: the old buffer goes before the next is made
        self.start, self.end = left, left + width
        self.copies += 1

    def _slot_layers(self) -> list[_SlotLayer]:
        return self.layers  # type: ignore[return-value]  # built in __init__: every layer is a _SlotLayer


class _SlotLayer(DynamicLayer):  # type: ignore[no-untyped-call]  # transformers is untyped
    """One layer's buffers; the geometry is its cache's, shared by every layer."""

    def __init__(self, owner: SlotCache) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.owner = owner

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        raise RuntimeError("SlotCache buffers are allocated by SlotCache.place, before the first forward pass")

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new tokens in place, at each row's columns in the decode step's `window`; return the columns
        attention reads, padding included."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        keys, values, window = self.keys, self.values, self.owner.window
        assert keys is not None and values is not None
        if window is None:
            raise RuntimeError("a SlotCache is written by decode steps only, each in a Window (`attending`)")
        index = window.index.expand(-1, key_states.shape[1], -1, key_states.shape[3])
        keys[: window.rows].scatter_(2, index, key_states)
        values[: window.rows].scatter_(2, index, value_states)
        return keys[: window.rows, :, window.first : window.last], values[: window.rows, :, window.first : window.last]

    def get_seq_length(self) -> int:
        return self.owner.width

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.owner.width + query_length, 0

    def get_max_length(self) -> int:
        return -1
