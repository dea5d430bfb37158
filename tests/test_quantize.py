"""QUANTIZATION=int8: weight-only int8 per output channel (`inference.quantize`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from inference.engine import GenerationRequest, GenerationUpdate, engine_factory
from inference.presets import GIB, PRESETS, too_small
from inference.quantize import Int8Linear, quantize_int8, weight_bytes
from inference.settings import WorkerSettings
from testkit import trained
from testkit.engines import IN_PROCESS_MODEL
from testkit.settings import settings_of

pytestmark = IN_PROCESS_MODEL


def test_an_int8_linear_layer_is_within_its_rounding_of_the_original() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 512)
    quantised = Int8Linear.of(linear)
    assert quantised.weight.dtype == torch.int8 and quantised.scales.shape == (512,)
    x = torch.randn(2, 5, 256)  # any leading shape
    with torch.no_grad():
        exact, approximate = linear(x), quantised(x)
    assert approximate.shape == exact.shape
    assert (approximate - exact).norm() / exact.norm() < 0.01
    # a row of zeros (a pruned channel) quantises to zeros, not to NaN
    with torch.no_grad():
        linear.weight[3] = 0
    assert torch.isfinite(Int8Linear.of(linear)(x)).all()


def test_the_worker_loads_int8_and_the_tiny_model_still_answers_what_it_knows(model_dir: Path) -> None:
    settings = settings_of(WorkerSettings, model_id=str(model_dir), do_sample=False, quantization="int8")
    loaded = engine_factory(settings.engine)(settings)
    model = loaded.engine.model  # type: ignore[attr-defined]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears == [model.get_output_embeddings()]  # every other linear layer is int8 now
    assert any(isinstance(m, Int8Linear) for m in model.modules())
    reference = settings_of(WorkerSettings, model_id=str(model_dir), do_sample=False)
    full = engine_factory(reference.engine)(reference).engine.model  # type: ignore[attr-defined]
    assert weight_bytes(model) < weight_bytes(full)
    finished: dict[str, GenerationUpdate] = {}
    for rid, question in (("dl", "딥러닝이 뭐야?"), ("capital", "한국의 수도는 어디야?")):
        prompt = loaded.prompts.build(question, max_new_tokens=200)
        loaded.engine.add(GenerationRequest(rid, prompt.text, 200))
    while loaded.engine.active:
        finished.update((u.id, u) for u in loaded.engine.step() if u.finished)
    assert finished["dl"].text == trained.DEEP_LEARNING and finished["capital"].text == trained.CAPITAL


def test_int8_is_offered_to_a_card_too_small_and_refused_with_device_map() -> None:
    refusal = too_small(PRESETS["kullm-v1"], "none", 24 * GIB, "RTX 4090")
    assert refusal is not None and "QUANTIZATION=int8 (15 GiB)" in refusal
    assert too_small(PRESETS["kullm-v1"], "int8", 24 * GIB, "RTX 4090") is None
    assert PRESETS["kullm-v1"].weight_bytes("int8") <= 14 * 10**9  # the bound for 12.8B
    with pytest.raises(ValidationError, match="QUANTIZATION=int8 puts the model on one device"):
        settings_of(WorkerSettings, quantization="int8", device_map="auto")


def test_quantising_leaves_the_output_layer_and_counts_what_it_replaced() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    model.get_output_embeddings = lambda: model[2]  # type: ignore[assignment]  # as a causal LM has
    assert quantize_int8(model) == 1
    assert isinstance(model[0], Int8Linear) and isinstance(model[2], torch.nn.Linear)
