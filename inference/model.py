"""Loading KULLM (or any causal LM) once, the way the seed does, and building the engine on it."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch

from inference.engine import Loaded, Sampling
from inference.errors import ModelNotFound
from inference.paged_engine import PagedEngine
from inference.placement import (
    Accelerator,
    available_ram,
    check_fit,
    choose_device,
    model_source,
    nvidia_driver,
    nvidia_driver_present,
)
from inference.settings import WorkerSettings
from inference.tokenizer import prompt_builder
from inference.transformers_engine import TransformersEngine

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
    if settings.quantization != "none":
        kwargs["quantization_config"] = _quantization(settings.quantization)
        kwargs.setdefault("device_map", "auto")
    log.info("loading %s (%s on %s)", settings.model_id, str(dtype).removeprefix("torch."), device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(settings.model_id, **common)
        model: Any = AutoModelForCausalLM.from_pretrained(settings.model_id, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelNotFound(_not_found_message(settings, exc)) from exc
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


def build_transformers(settings: WorkerSettings) -> Loaded:
    """ENGINE=builtin (the default): load the model and wrap it in our batcher."""
    model, tokenizer = load_model(settings)
    return engine_on(model, tokenizer, settings)


def build_paged(settings: WorkerSettings) -> Loaded:
    """ENGINE=paged: load the model and hand it to transformers' continuous batching."""
    model, tokenizer = load_model(settings)
    return engine_on(model, tokenizer, settings, paged=True)


def cuda_graphs_on(setting: bool | str, device: torch.device, *, paged: bool) -> bool:
    """CUDA_GRAPHS: true and false as set; auto means builtin's own graphs when the model is on a GPU, and
    never transformers' under paged (on an H200 they made it 0.34-0.58x as fast as without, bench/RESULTS.md)."""
    if setting == "auto":
        return not paged and device.type == "cuda"
    return bool(setting)


def engine_on(model: Any, tokenizer: Any, settings: WorkerSettings, *, paged: bool = False) -> Loaded:
    """The engine (ours, or transformers' paged batching) and its prompt builder on a model already loaded."""
    configured = getattr(model.config, "max_position_embeddings", None) or DEFAULT_CONTEXT_WINDOW
    window = int(settings.context_window or configured)
    engine_class: Any = PagedEngine if paged else TransformersEngine
    graphs = cuda_graphs_on(settings.cuda_graphs, next(model.parameters()).device, paged=paged)
    options: dict[str, Any] = (
        {"context_window": window, "cuda_graphs": graphs}  # paged sizes its page pool by the window
        if paged
        else {"fixed_shapes": graphs}
    )
    engine = engine_class(
        model,
        tokenizer,
        model_id=settings.model_id,
        sampling=Sampling.of(settings),
        max_batch_size=settings.max_batch_size,
        prefill_chunk=settings.prefill_chunk_tokens,
        **options,
    )
    prompts = prompt_builder(settings, tokenizer, window, engine.count_tokens)
    return Loaded(engine, prompts)


def _quantization(mode: str) -> Any:
    try:
        import bitsandbytes  # type: ignore[import-not-found]  # noqa: F401
    except ImportError as exc:
        raise ModelNotFound(f"QUANTIZATION={mode} needs bitsandbytes on a CUDA host: pip install bitsandbytes") from exc
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
