"""A model's tokenizer and window, loaded as MODEL_ID's settings say (no weights), and the prompt builder over
them that every engine and `kullm prompt` use. Apart from `inference.prompt` (the templates themselves), which
therefore needs no settings: presets import templates, settings import presets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from inference.errors import ModelNotFound
from inference.prompt import PromptBuilder, Template, token_counter, tokenizer_chat_template, tokenizer_markers
from inference.settings import WorkerSettings


def prompt_builder(
    settings: WorkerSettings, tokenizer: Any, window: int, count_tokens: Callable[[str], int] | None = None
) -> PromptBuilder:
    """The builder every engine and `kullm prompt` use: TEMPLATE, SYSTEM_PROMPT and the tokenizer's own counts."""
    chat_template = tokenizer_chat_template(tokenizer)
    return PromptBuilder(
        Template(settings.template),
        count_tokens or token_counter(tokenizer),
        window,
        chat_template,
        settings.system_prompt,
        tokenizer_markers(tokenizer, chat_template),
    )


def configured_window(settings: WorkerSettings) -> int | None:
    """MODEL_ID's window from its config alone (no weights), or None when the config cannot be read."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(
            settings.model_id, revision=settings.model_revision, local_files_only=settings.hf_hub_offline
        )
    except (OSError, ValueError):
        return None
    window = getattr(config, "max_position_embeddings", None)
    return int(window) if window else None


def load_tokenizer(settings: WorkerSettings) -> Any:
    """MODEL_ID's tokenizer alone (no weights); ModelNotFound, naming MODEL_ID, when it cannot be loaded."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(
            settings.model_id,
            revision=settings.model_revision,
            token=settings.hf_token.get_secret_value() if settings.hf_token else None,
            local_files_only=settings.hf_hub_offline,
        )
    except (OSError, ValueError) as exc:
        cause = " ".join(str(exc).split())[:300]
        raise ModelNotFound(f"cannot load the tokenizer of MODEL_ID={settings.model_id!r} ({cause})") from exc
