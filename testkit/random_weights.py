"""A real model's shape with random weights, nothing downloaded: the GPU check's model (12.8B's shape on an H100/
H200), the CPU dry runs' small and mid sizes, and Llama twins (KULLM3's architecture). A worker serves one with
`ENGINE=testkit.random_weights:random_weights_engine MODEL_ID=random:<architecture>`."""

from __future__ import annotations

from typing import Any

import torch

from inference.engine import Loaded
from inference.engines import builtin
from inference.errors import EngineLoadError
from inference.model import resolve_device, resolve_dtype
from inference.settings import WorkerSettings

POLYGLOT_VOCAB = 30080
ARCHITECTURES: dict[str, dict[str, Any]] = {
    # Polyglot-ko 12.8B, the backbone of metterian/kullm-polyglot-12.8b.
    "polyglot-ko-12.8b": {
        "vocab_size": POLYGLOT_VOCAB,
        "hidden_size": 5120,
        "num_hidden_layers": 40,
        "num_attention_heads": 40,
        "intermediate_size": 20480,
        "rotary_pct": 0.5,
        "max_position_embeddings": 2048,
        "eos_token_id": 2,
        "use_parallel_residual": True,
        "tie_word_embeddings": False,
    },
}
# The same architecture scaled down for CPU dry runs of the GPU check (about 18 M parameters).
ARCHITECTURES["polyglot-ko-small"] = {
    **ARCHITECTURES["polyglot-ko-12.8b"],
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "intermediate_size": 1024,
}
# Mid-size, for CPU comparisons where the model, not Python, sets the pace (about 90 M parameters).
ARCHITECTURES["polyglot-ko-mid"] = {
    **ARCHITECTURES["polyglot-ko-12.8b"],
    "hidden_size": 768,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
}
# KULLM3's architecture (Llama, grouped-query attention) at the same width, depth and vocabulary: the twins
# on which transformers' own continuous batching runs (it fails on GPT-NeoX). `llama-12.8b` (about 15.5 B
# parameters: Llama's MLP has three matrices) is the GPU check's.
LLAMA = "llama"
for _name in ("polyglot-ko-small", "polyglot-ko-mid", "polyglot-ko-12.8b"):
    _shape = ARCHITECTURES[_name]
    ARCHITECTURES[_name.replace("polyglot-ko", LLAMA)] = {
        "model_type": LLAMA,
        "vocab_size": POLYGLOT_VOCAB,
        "hidden_size": _shape["hidden_size"],
        "num_hidden_layers": _shape["num_hidden_layers"],
        "num_attention_heads": _shape["num_attention_heads"],
        "num_key_value_heads": _shape["num_attention_heads"] // 4,
        "intermediate_size": _shape["intermediate_size"],
        "max_position_embeddings": 2048,
        "eos_token_id": 2,
        "tie_word_embeddings": False,
    }
# The tests' tiny model's shape (GPT-NeoX, trained) as a random-weight Llama: its twin in `--suite`.
ARCHITECTURES["llama-tiny"] = {
    **ARCHITECTURES["llama-small"],
    "hidden_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 1,
    "intermediate_size": 384,
}
RANDOM_PREFIX = "random:"


def random_model_tokenizer(vocab_size: int = POLYGLOT_VOCAB) -> Any:
    """The tiny model's Korean tokenizer grown to the full vocabulary, so every sampled id decodes to text.

    The tiny BPE has about a thousand tokens; random weights sample from all 30,080 ids, and ids the
    tokenizer lacks decode to nothing — no deltas would stream. Hangul syllables, then Hanja, fill the rest.
    """
    from transformers import AutoTokenizer

    from testkit.tiny_model import build

    tokenizer = AutoTokenizer.from_pretrained(build())
    known = set(tokenizer.get_vocab())
    filler = (chr(c) for c in [*range(0xAC00, 0xD7A4), *range(0x4E00, 0xA000)] if chr(c) not in known)
    tokenizer.add_tokens([next(filler) for _ in range(vocab_size - len(tokenizer))])
    return tokenizer


def random_weights_engine(settings: WorkerSettings) -> Loaded:
    """Worker engine factory: `MODEL_ID=random:<architecture>` served with random weights, nothing downloaded."""
    if not settings.model_id.startswith(RANDOM_PREFIX) or settings.model_id[len(RANDOM_PREFIX) :] not in ARCHITECTURES:
        raise EngineLoadError(f"MODEL_ID must be {RANDOM_PREFIX}<architecture>, one of {sorted(ARCHITECTURES)}")
    device = resolve_device(settings.device)
    model = random_model(settings.model_id[len(RANDOM_PREFIX) :], resolve_dtype(settings.dtype, device), device)
    model.eval()
    return builtin.on_model(model, random_model_tokenizer(), settings)


def random_model(name: str, dtype: torch.dtype, device: torch.device) -> Any:
    """The architecture's real shape with random weights: built on the meta device, then allocated."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    shape = dict(ARCHITECTURES[name])
    if shape.pop("model_type", None) == LLAMA:
        from transformers import LlamaConfig, LlamaForCausalLM

        config: Any = LlamaConfig(**shape)
        model_class: Any = LlamaForCausalLM
    else:
        config, model_class = GPTNeoXConfig(**shape), GPTNeoXForCausalLM
    with torch.device("meta"):
        model = model_class(config)
    model = model.to_empty(device=device).to(dtype)
    with torch.no_grad():  # to_empty leaves every tensor uninitialised: set each one, buffers included
        for module in model.modules():
            _initialise(module, device)
    broken = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if not bool(torch.isfinite(t).all())]
    if broken:
        raise RuntimeError(f"random weights left non-finite tensors: {broken[:5]}")
    return model


def _initialise(module: Any, device: torch.device) -> None:
    """The initialisation transformers gives a fresh model: normal(0, 0.02) weights, LayerNorm at 1, zero biases."""
    if isinstance(module, torch.nn.LayerNorm):
        module.weight.fill_(1.0)
        module.bias.zero_()
    elif type(module).__name__.endswith("RMSNorm"):
        module.weight.fill_(1.0)
    elif isinstance(module, torch.nn.Linear | torch.nn.Embedding):
        module.weight.normal_(0.0, 0.02)
        bias = getattr(module, "bias", None)
        if isinstance(bias, torch.Tensor):
            bias.zero_()
    if hasattr(module, "inv_freq") and hasattr(module, "config"):
        # A rotary embedding: its buffers come from the config. Built afresh rather than through `rope_init_fn`,
        # which transformers 5.24 no longer keeps on the module: without this the buffers stayed uninitialised
        # memory, sometimes finite garbage, and the seed pipeline sampled NaN now and then.
        with torch.device(device):
            fresh = type(module)(module.config)
        module.inv_freq = fresh.inv_freq.to(device)
        module.original_inv_freq = getattr(fresh, "original_inv_freq", fresh.inv_freq).clone().to(device)
        module.attention_scaling = fresh.attention_scaling
