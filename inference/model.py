"""Loading KULLM (or any causal LM) once, the way the seed does, and building the engine on it."""

from __future__ import annotations

import logging
from typing import Any

import torch

from inference.engine import Loaded, Sampling
from inference.errors import ModelDoesNotFit, ModelNotFound
from inference.paged_engine import PagedEngine
from inference.presets import too_small
from inference.prompt import prompt_builder
from inference.settings import WorkerSettings
from inference.transformers_engine import TransformersEngine

log = logging.getLogger(__name__)

# Polyglot-ko's window; used when the model config does not say.
DEFAULT_CONTEXT_WINDOW = 2048
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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
    check_fits(settings, device)
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


def check_fits(settings: WorkerSettings, device: torch.device) -> None:
    """Refuse, before downloading or loading anything, a preset the one GPU it would go on cannot hold."""
    if device.type != "cuda" or not settings.serves_preset or settings.device_map:
        return  # on CPU, spread over devices, or a model whose size is not known here
    properties = torch.cuda.get_device_properties(device)
    refusal = too_small(settings.preset, settings.quantization, properties.total_memory, properties.name)
    if refusal:
        raise ModelDoesNotFit(refusal)


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
    return f"cannot load model {settings.model_id!r}: {hint}. Cause: {exc}"
