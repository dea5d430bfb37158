"""Loading KULLM (or any causal LM) once, the way the seed does: the device, the dtype, the weights and the tokenizer,
for the engines that run the model in this process (`inference.engines.builtin`, `inference.engines.paged`)."""

from __future__ import annotations

import importlib.util
import logging
import warnings
from typing import Any

import torch

from inference.engine import Engine, Loaded
from inference.errors import ModelNotFound
from inference.placement import (
    Accelerator,
    available_ram,
    check_fit,
    choose_device,
    model_source,
    nvidia_driver,
    nvidia_driver_present,
)
from inference.quantize import quantize_int8
from inference.settings import WorkerSettings
from inference.tokenizer import prompt_builder

log = logging.getLogger(__name__)

# Polyglot-ko's window; used when the model config does not say.
DEFAULT_CONTEXT_WINDOW = 2048
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when torch can use it, else the CPU; a GPU asked for (or plainly there) that torch cannot
    use is DeviceUnavailable, never a silent CPU run (`inference.placement.choose_device`)."""
    return torch.device(choose_device(name, accelerator()))


def accelerator() -> Accelerator:
    """What this torch can do with GPUs, with torch's own words when it finds none it can use."""
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    return Accelerator(
        cuda_build=torch.version.cuda,
        available=available,
        driver_present=nvidia_driver_present(),
        torch_version=torch.__version__,
        driver=nvidia_driver(),
        diagnosis=" ".join(" ".join(str(w.message).split()) for w in said)[:300],
    )


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto` is fp16 on CUDA (the seed's setting) and fp32 on CPU, where fp16 matmuls are slow."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return _DTYPES[name]


def load_model(settings: WorkerSettings) -> tuple[Any, Any]:
    """Model and tokenizer through `from_pretrained`, as the seed loads KULLM."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    check_fits(settings, device, dtype)
    settings = model_source(settings)
    common: dict[str, Any] = {
        "revision": settings.model_revision,
        "token": settings.hf_token.get_secret_value() if settings.hf_token else None,
        "local_files_only": settings.hf_hub_offline,
    }
    kwargs: dict[str, Any] = {"dtype": dtype, **common}
    if settings.device_map:
        kwargs["device_map"] = settings.device_map
    if settings.quantization in ("8bit", "4bit"):
        kwargs["quantization_config"] = _quantization(settings.quantization)
        kwargs.setdefault("device_map", "auto")
    # QUANTIZATION=int8: read into host memory, quantised there, then moved (the fp16 weights never reach the GPU)
    log.info("loading %s (%s on %s)", settings.model_id, str(dtype).removeprefix("torch."), device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(settings.model_id, **common)
        model: Any = AutoModelForCausalLM.from_pretrained(settings.model_id, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelNotFound(_not_found_message(settings, exc)) from exc
    if settings.quantization == "int8":
        log.info("weight-only int8: %d linear layers quantised", quantize_int8(model))
    if "device_map" not in kwargs:
        model.to(device)
    model.eval()
    return model, tokenizer


def check_fits(settings: WorkerSettings, device: torch.device, dtype: torch.dtype) -> None:
    """Refuse, before downloading or loading anything, a model the device it would go on cannot hold: the one GPU's
    memory, or the RAM free on a CPU."""
    dtype_name = str(dtype).removeprefix("torch.")
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        check_fit(settings, "cuda", dtype_name, properties.total_memory, properties.name)
    elif device.type == "cpu":
        check_fit(settings, "cpu", dtype_name, available_ram())


def cuda_graphs_on(setting: bool | str, device: torch.device, *, paged: bool) -> bool:
    """CUDA_GRAPHS: true and false as set; auto means builtin's own graphs when the model is on a GPU, and
    never transformers' under paged (they made it slower than without: bench/RESULTS.md)."""
    if setting == "auto":
        return not paged and device.type == "cuda"
    return bool(setting)


def context_window(model: Any, settings: WorkerSettings) -> int:
    """CONTEXT_WINDOW, or what the model's config says, or Polyglot-ko's."""
    configured = getattr(model.config, "max_position_embeddings", None) or DEFAULT_CONTEXT_WINDOW
    return int(settings.context_window or configured)


def loaded(engine: Engine, tokenizer: Any, window: int, settings: WorkerSettings, count_tokens: Any) -> Loaded:
    """An engine on a model of this process, with the prompt builder of its tokenizer."""
    return Loaded(engine, prompt_builder(settings, tokenizer, window, count_tokens))


def _quantization(mode: str) -> Any:
    if importlib.util.find_spec("bitsandbytes") is None:  # asked, not imported: transformers loads it itself
        raise ModelNotFound(f"QUANTIZATION={mode} needs bitsandbytes on a CUDA host: pip install bitsandbytes")
    from transformers import BitsAndBytesConfig

    config: Any = BitsAndBytesConfig  # untyped in transformers

    if mode == "8bit":
        return config(load_in_8bit=True)
    return config(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float16)


def _not_found_message(settings: WorkerSettings, exc: Exception) -> str:
    hint = (
        "HF_HUB_OFFLINE is set, so it must already be in the Hugging Face cache (run `kullm download` "
        "while online, or point MODEL_ID at a local directory)"
        if settings.hf_hub_offline
        else "check MODEL_ID (a Hugging Face repo id or a local directory), network access and HF_TOKEN"
    )
    cause = " ".join(str(exc).split())[:300]  # one line: transformers' messages run over several
    return f"cannot load model {settings.model_id!r}: {hint}. Cause: {cause}"
