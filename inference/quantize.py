"""QUANTIZATION=int8: weight-only int8, per output channel, for the transformer blocks' linear layers.

Each weight row is scaled by its largest magnitude to [-127, 127] and stored as int8 with its scale; the
activations stay in the model's dtype, and a matmul multiplies by the int8 weights and then by the scales.
KULLM 12.8B's blocks then take 12.5 GB instead of 25 GB; the embeddings and the output layer stay as loaded
(0.6 GB in fp16), as LLM.int8 leaves them: the output layer decides every token.

On a CPU the matmul is PyTorch's fused int8 weight-only kernel (`aten._weight_int8pack_mm`); elsewhere the
weights are widened to the activations' dtype inside the matmul call (exact, but eager it reads the weights
twice). With COMPILE_DECODE, Inductor can fuse that widening into the matmul it generates, which is gpt-fast's
int8 weight-only path; the GPU check's compiled step measures it against fp16 (issue 40's speed, still open).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


class Int8Linear(torch.nn.Module):
    """A linear layer whose weight is int8 with one scale per output channel."""

    def __init__(self, weight: torch.Tensor, scales: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", weight)
        self.register_buffer("scales", scales)
        self.register_buffer("bias", bias)

    @classmethod
    def of(cls, linear: torch.nn.Linear) -> Int8Linear:
        """`linear`'s weight quantised (symmetric, per output channel); its bias kept as it is."""
        weight = linear.weight.detach()
        scales = weight.abs().amax(dim=1).float().clamp(min=1e-8) / 127
        quantised = torch.round(weight.float() / scales[:, None]).clamp(-127, 127).to(torch.int8)
        bias = linear.bias.detach() if linear.bias is not None else None
        return cls(quantised, scales.to(weight.dtype), bias)

    weight: torch.Tensor
    scales: torch.Tensor
    bias: torch.Tensor | None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        scales = self.scales.to(x.dtype)
        out: torch.Tensor
        if flat.device.type == "cpu":
            out = torch.ops.aten._weight_int8pack_mm(flat, self.weight, scales)
        else:
            out = F.linear(flat, self.weight.to(x.dtype)) * scales
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per channel"


def quantize_int8(model: Any) -> int:
    """Replace every linear layer of the model's blocks (not its output layer) by an `Int8Linear`, in place; returns
    how many were replaced."""
    output = model.get_output_embeddings()
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear) and child is not output:
                setattr(parent, name, Int8Linear.of(child))
                replaced += 1
    return replaced


def weight_bytes(model: Any) -> int:
    """The bytes of the model's parameters and buffers (int8 weights and their scales included)."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)
