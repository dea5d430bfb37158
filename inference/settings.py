"""Worker settings, read once in `inference.__main__` from the environment and `.env`."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from chatbus.config import RedisSettings
from inference.presets import DEFAULT_PRESET, DEMO_MODEL_DIR, PRESETS, Preset, find_preset, preset_named
from inference.prompt import Template

DEFAULT_MODEL_ID = PRESETS[DEFAULT_PRESET].model_id
MAX_SYSTEM_PROMPT_CHARS = 8000


def _default_worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class WorkerSettings(RedisSettings):
    """Everything a worker process can be told; see `.env.example` for each variable."""

    # A preset (`inference.presets`) fills MODEL_ID, TEMPLATE, EOS_TOKEN_ID, CONTEXT_WINDOW and SYSTEM_PROMPT;
    # each of them, when set, overrides its part.
    model: str = DEFAULT_PRESET
    model_id: str = DEFAULT_MODEL_ID
    model_revision: str | None = None
    # The name clients see (`kullm status`, the API's /v1/models), as vLLM's --served-model-name; empty: the preset's
    # name (MODEL), never MODEL_ID, which may be a path on this host.
    served_model_name: str = Field(default="", max_length=128)
    hf_token: SecretStr | None = None
    hf_hub_offline: bool = False
    hf_endpoint: str = "https://huggingface.co"  # HF_ENDPOINT, as huggingface_hub reads it (a mirror)
    hf_hub_timeout_s: float = Field(default=5.0, gt=0, le=120)  # how long the Hub is given to answer once at start
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    device: str = "auto"
    device_map: str | None = None
    quantization: Literal["none", "int8", "8bit", "4bit"] = "none"
    engine: str = "builtin"
    prefill_chunk_tokens: int = Field(default=512, ge=16)
    # auto: builtin replays decode steps as CUDA graphs on a GPU (faster than eager); paged does not (transformers'
    # own graphs were slower than its eager path; figures in bench/RESULTS.md). true forces both, false neither.
    cuda_graphs: Literal["auto"] | bool = "auto"
    # builtin: the fixed-shape decode step compiled by torch.compile (fused kernels inside the graphs). auto: on a GPU
    # with CUDA graphs and Triton; true: wherever, at fixed shapes (a CPU needs a C++ compiler); false: never, the
    # default until the GPU check has measured it.
    compile_decode: Literal["auto"] | bool = False
    # builtin: speculative steps with prompt-lookup drafts (same answers' distribution, fewer steps). auto: for the
    # answers that copy their prompt (tasks, questions with a 맥락); on: every answer; off: none.
    speculative: Literal["auto", "on", "off"] = "auto"
    speculative_tokens: int = Field(default=16, ge=1, le=32)  # guessed tokens fed per row and step, at most
    # Tokens a speculative step feeds in all, at most (rows × (1 + guesses)); 0: by device (256 on a GPU, 64 on a CPU).
    speculative_step_tokens: int = Field(default=0, ge=0)
    # ENGINE=openai: an OpenAI-compatible server (vLLM, SGLang, transformers serve).
    engine_url: str | None = None
    engine_model: str | None = None
    engine_api_key: SecretStr | None = None
    engine_start_timeout_s: float = Field(default=600.0, ge=0)
    engine_read_timeout_s: float = Field(default=120.0, gt=0)

    template: Template = Template.KULLM_V1
    context_window: int | None = Field(default=None, ge=64)
    system_prompt: str | None = Field(default=None, max_length=MAX_SYSTEM_PROMPT_CHARS)  # "none": no system prompt
    max_new_tokens: int = Field(default=512, ge=1)
    do_sample: bool = True
    temperature: float = Field(default=0.7, gt=0)
    top_p: float = Field(default=0.9, gt=0, le=1)
    eos_token_id: int = 2
    seed: int | None = None
    max_batch_size: int = Field(default=16, ge=1)

    worker_name: str = Field(default_factory=_default_worker_name)
    max_deliveries: int = Field(default=3, ge=1)
    reclaim_idle_s: float = Field(default=30.0, gt=0)
    reclaim_interval_s: float = Field(default=2.0, gt=0)
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    cancel_poll_s: float = Field(default=0.25, gt=0)
    idle_read_s: float = Field(default=0.25, gt=0, le=5)
    delta_interval_s: float = Field(default=0.2, ge=0)
    drain_grace_s: float = Field(default=60.0, ge=0)
    usage_ttl_days: int = Field(default=90, ge=1)  # how long per-day usage counts (`kullm usage`) are kept
    metrics_host: str = "127.0.0.1"  # compose sets 0.0.0.0 inside its network
    metrics_port: int = Field(default=9400, ge=0, le=65535)
    log_level: str = "INFO"

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data: Any) -> Any:
        """Each part of MODEL's preset that is not set on its own."""
        if not isinstance(data, dict):
            return data
        preset = find_preset(str(data.get("model") or DEFAULT_PRESET))
        if preset is None:  # refused by `_known_preset`, whose error does not echo every setting (tokens among them)
            return data
        parts: dict[str, Any] = {
            "model_id": preset.model_id,
            "template": preset.template,
            "eos_token_id": preset.eos_token_id,
            "system_prompt": preset.system_prompt,
        }
        if preset.greedy:
            parts["do_sample"] = False
        if data.get("model_id") in (None, preset.model_id):  # another model's window is in its own config
            parts["context_window"] = preset.context_window
        return {**parts, **{k: v for k, v in data.items() if v is not None}}

    @model_validator(mode="after")
    def _int8_on_one_device(self) -> WorkerSettings:
        if self.quantization == "int8" and self.device_map:
            raise ValueError(
                "QUANTIZATION=int8 puts the model on one device and DEVICE_MAP spreads it: set one of them"
            )
        return self

    @field_validator("model")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        return preset_named(value).name

    @field_validator("model_id")
    @classmethod
    def _local_directory_exists(cls, value: str) -> str:
        """A MODEL_ID written as a path must be a directory here: otherwise loading it would blame the Hub's cache."""
        looks_like_a_path = value.startswith(("/", "./", "../", "~", ".\\")) or value.count("/") > 1 or "\\" in value
        if looks_like_a_path and value != str(DEMO_MODEL_DIR) and not Path(value).expanduser().is_dir():
            raise ValueError(
                f"no such directory: {value} (a local model is a directory holding config.json; "
                "a Hugging Face model is named OWNER/NAME)"
            )
        return value

    @field_validator("system_prompt")
    @classmethod
    def _no_system_prompt(cls, value: str | None) -> str | None:
        return None if value is None or value.strip().lower() in ("", "none") else value

    def deployment(self) -> dict[str, str]:
        """What decides how this worker answers (model and revision, template and system prompt, sampling,
        precision, engine): workers that report the same answer alike, and `kullm eval` keys its runs by it."""
        system = self.system_prompt
        described = {
            "preset": self.model,
            "model_id": self.model_id,
            "revision": self.model_revision or "unpinned",
            "template": self.template.value,
            "system_prompt": hashlib.sha256(system.encode()).hexdigest()[:12] if system else "none",
            "dtype": self.dtype,
            "quantization": self.quantization,
            "engine": self.engine if self.engine != "transformers" else "builtin",
            "sampling": f"temperature {self.temperature}, top_p {self.top_p}" if self.do_sample else "greedy",
            "max_new_tokens": str(self.max_new_tokens),
            "eos_token_id": str(self.eos_token_id),
        }
        if self.engine == "openai":
            described["engine_model"] = self.engine_model or ""
        return described

    @property
    def served_name(self) -> str:
        """SERVED_MODEL_NAME, or the preset's name."""
        return self.served_model_name or self.model

    @property
    def preset(self) -> Preset:
        return PRESETS[self.model]

    @property
    def serves_preset(self) -> bool:
        """Whether MODEL_ID is the preset's own model (so its size and window are known)."""
        return self.model_id == self.preset.model_id
