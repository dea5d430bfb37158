"""KULLM's releases as one-word presets: `MODEL=kullm-v1 | kullm-v2 | kullm-v2-5.8b | kullm3`, and `MODEL=demo`.

A preset sets, together, what a deployment would otherwise read off a model card: the Hugging Face
id, the prompt template, the end-of-text id, the context window, the system prompt the model was
trained with, and how much memory it needs. `MODEL_ID`, `TEMPLATE`, `EOS_TOKEN_ID`, `CONTEXT_WINDOW`
and `SYSTEM_PROMPT` still override each part (`inference.settings`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from inference.prompt import Template

GIB = 1024**3
DEMO_PRESET = "demo"
# Where `MODEL=demo` builds its model, under the working directory's `.kullm` (beside `kullm up`'s Redis data).
DEMO_MODEL_DIR = Path(".kullm") / "demo-model"

# KULLM3's model card: "trained with fixed system prompt below", and it answers worse without it.
KULLM3_SYSTEM_PROMPT = "\n".join(
    [
        "당신은 고려대학교 NLP&AI 연구실에서 만든 AI 챗봇입니다.",
        "당신의 이름은 'KULLM'으로, 한국어로는 '구름'을 뜻합니다.",
        "당신은 비도덕적이거나, 성적이거나, 불법적이거나 또는 사회 통념적으로 허용되지 않는 발언은 하지 않습니다.",
        "사용자와 즐겁게 대화하며, 사용자의 응답에 가능한 정확하고 친절하게 응답함으로써 최대한 도와주려고 노력합니다.",
        "질문이 이상하다면, 어떤 부분이 이상한지 설명합니다. 거짓 정보를 발언하지 않도록 주의합니다.",
    ]
)

Quantization = Literal["none", "int8", "8bit", "4bit"]
# Bytes per weight as loaded: fp16/bf16; weight-only int8 (`inference.quantize`: the blocks in int8 with their
# scales, the embeddings and output layer in fp16: 13.1 GB for Polyglot-ko 12.8B); bitsandbytes int8; bitsandbytes
# nf4 (with its scales).
_WEIGHT_BYTES: dict[str, float] = {"none": 2.0, "int8": 1.03, "8bit": 1.0, "4bit": 0.56}
# CUDA context, allocator slack and activations of a batch, above weights and the KV cache.
OVERHEAD_BYTES = int(1.5 * GIB)


@dataclass(frozen=True)
class Preset:
    """One KULLM release and everything the worker needs to know to serve it well."""

    name: str
    model_id: str
    template: Template
    eos_token_id: int
    context_window: int  # tokens, prompt and answer together
    system_prompt: str | None
    parameters: float  # in billions
    layers: int
    kv_width: int  # key (= value) width per layer and token: KV heads x head size
    base: str
    license: str
    greedy: bool = False  # DO_SAMPLE=false unless set: the demo model answers exactly only when decoded greedily

    def weight_bytes(self, quantization: Quantization = "none", dtype_bytes: int = 2) -> int:
        """The weights in memory, loaded in fp16 (`dtype_bytes` 2; 4 for fp32 on a CPU) or quantised."""
        each = _WEIGHT_BYTES[quantization] if quantization != "none" else dtype_bytes
        return int(self.parameters * 1e9 * each)

    def kv_bytes(self, tokens: int, dtype_bytes: int = 2) -> int:
        """Keys and values of `tokens` tokens across all layers, in fp16 unless told."""
        return 2 * self.layers * self.kv_width * dtype_bytes * tokens

    def memory_needed(self, quantization: Quantization = "none", dtype_bytes: int = 2) -> int:
        """The least a device must hold to answer: weights, one full window of cache, overhead."""
        weights = self.weight_bytes(quantization, dtype_bytes)
        return weights + self.kv_bytes(self.context_window, dtype_bytes) + OVERHEAD_BYTES


_KULLM_V1 = Preset(
    name="kullm-v1",
    model_id="metterian/kullm-polyglot-12.8b",
    template=Template.KULLM_V1,
    eos_token_id=2,
    context_window=2048,
    system_prompt=None,
    parameters=12.9,
    layers=40,
    kv_width=5120,
    base="Polyglot-ko 12.8B",
    license="Apache-2.0",
)
# KULLM v2 is the same Polyglot-ko models with the Alpaca-style template; eos stays 2: its generation_config.json
# says 0 (padding), on which generation would never stop.
_KULLM_V2 = replace(
    _KULLM_V1, name="kullm-v2", model_id="nlpai-lab/kullm-polyglot-12.8b-v2", template=Template.KULLM_V2
)
PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        _KULLM_V1,
        _KULLM_V2,
        replace(
            _KULLM_V2,
            name="kullm-v2-5.8b",
            model_id="nlpai-lab/kullm-polyglot-5.8b-v2",
            parameters=5.9,
            layers=28,
            kv_width=4096,
            base="Polyglot-ko 5.8B",
        ),
        Preset(
            name="kullm3",
            model_id="nlpai-lab/KULLM3",
            template=Template.CHAT,
            eos_token_id=2,
            context_window=4096,
            system_prompt=KULLM3_SYSTEM_PROMPT,
            parameters=10.7,
            layers=48,
            kv_width=1024,  # grouped-query attention: 8 KV heads of 128
            base="SOLAR 10.7B (Llama)",
            license="Apache-2.0",
        ),
        # `inference.demo`: trained here in about a minute, no download, no GPU; it knows only a few answers.
        replace(
            _KULLM_V1,  # its template and eos, at a scale a CPU trains in a minute
            name=DEMO_PRESET,
            model_id=str(DEMO_MODEL_DIR),
            parameters=0.0065,
            layers=2,
            kv_width=96,
            base="a tiny GPT-NeoX trained on a few answers (inference/demo.py)",
            greedy=True,
        ),
    ]
}
DEFAULT_PRESET = "kullm-v1"


def find_preset(name: str) -> Preset | None:
    """The preset `name` (any case, surrounding spaces ignored), or None."""
    return PRESETS.get(name.strip().lower())


def preset_named(name: str) -> Preset:
    """The preset `name`, or a ValueError listing the ones there are."""
    preset = find_preset(name)
    if preset is None:
        raise ValueError(f"{name!r} is not a preset: use one of {', '.join(PRESETS)}")
    return preset


def too_small_for_ram(preset: Preset, dtype_bytes: int, available_bytes: int, dtype: str) -> str | None:
    """Why this machine's memory (`available_bytes` free) cannot hold `preset` on the CPU in `dtype`, or None."""
    needed = preset.memory_needed("none", dtype_bytes)
    if needed <= available_bytes:
        return None
    fits = []
    if dtype_bytes > 2 and preset.memory_needed("none", 2) <= available_bytes:
        fits.append(f"DTYPE=bfloat16 ({preset.memory_needed('none', 2) / GIB:.0f} GiB)")
    for other in PRESETS.values():
        if other.name in (preset.name, DEMO_PRESET) or other.parameters >= preset.parameters:
            continue
        for size, setting in ((dtype_bytes, ""), (2, " DTYPE=bfloat16")):
            if other.memory_needed("none", size) <= available_bytes:
                fits.append(f"MODEL={other.name}{setting} ({other.memory_needed('none', size) / GIB:.0f} GiB)")
                break
    if preset.name != DEMO_PRESET:
        fits.append(f"MODEL={DEMO_PRESET} (a tiny demo model)")
    return (
        f"MODEL={preset.name} ({preset.parameters:g}B) in {dtype} on the CPU needs about {needed / GIB:.0f} GiB of "
        f"memory and this machine has {available_bytes / GIB:.0f} GiB available: try "
        + ", or ".join([*fits, "a host with a GPU"])
    )


def too_small(preset: Preset, quantization: Quantization, total_bytes: int, device: str) -> str | None:
    """Why `device` (with `total_bytes` of memory) cannot serve `preset`, or None when it can."""
    needed = preset.memory_needed(quantization)
    if needed <= total_bytes:
        return None
    smaller = [
        f"QUANTIZATION={q} ({preset.memory_needed(q) / GIB:.0f} GiB)"
        for q in ("int8", "8bit", "4bit")
        if _WEIGHT_BYTES[q] < _WEIGHT_BYTES[quantization] and preset.memory_needed(q) <= total_bytes
    ]
    smaller += [
        f"MODEL={p.name} ({p.memory_needed(quantization) / GIB:.0f} GiB)"
        for p in PRESETS.values()
        if p.memory_needed(quantization) <= total_bytes and p.parameters < preset.parameters and p.name != DEMO_PRESET
    ]
    hint = f"try {' or '.join(smaller)}" if smaller else "use a larger GPU or several (DEVICE_MAP=auto)"
    return (
        f"MODEL={preset.name} ({preset.parameters:g}B, quantization {quantization}) needs about "
        f"{needed / GIB:.0f} GiB of GPU memory (weights, one {preset.context_window}-token window of cache, "
        f"overhead) and {device} has {total_bytes / GIB:.0f} GiB: {hint}"
    )
