"""Errors raised by the inference worker.

Hierarchy::

    InferenceError
    ├── ModelNotFound     MODEL_ID names nothing loadable (offline cache miss, typo, no access)
    ├── ModelDoesNotFit   the model needs more memory than the device it would run on has
    ├── DeviceUnavailable a GPU was asked for, or is plainly there, and torch cannot use it
    ├── PromptTooLong     the question does not fit the context window even without history
    ├── EngineOutOfMemory a generation step ran out of (GPU or host) memory
    ├── EngineLoadError   ENGINE names no importable engine factory
    ├── PortInUse         the metrics port (and the ones after it that were tried) is held by another process
    └── GraphsUnavailable CUDA_GRAPHS=true, but capturing a decode step failed (the engine decodes eagerly)
"""

from __future__ import annotations


class InferenceError(Exception):
    """Root of every error the worker raises on purpose."""


class ModelNotFound(InferenceError):
    """The model or its tokenizer could not be loaded."""


class ModelDoesNotFit(InferenceError):
    """Refused at start: the weights and one window of cache exceed the device's memory (GPU memory or free RAM)."""


class DeviceUnavailable(InferenceError):
    """Refused at start: the worker would otherwise fall back from a GPU to the CPU without a word."""


class PromptTooLong(InferenceError):
    """The prompt needs more tokens than the context window leaves after max_new_tokens."""

    def __init__(self, prompt_tokens: int, budget: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.budget = budget
        super().__init__(f"prompt needs {prompt_tokens} tokens, only {budget} fit")


class EngineOutOfMemory(InferenceError):
    """A step did not fit in memory; the engine keeps its requests until the worker resets it."""


class EngineLoadError(InferenceError):
    """The configured engine factory could not be imported."""


class PortInUse(InferenceError):
    """METRICS_PORT is held by another process (a second worker on the host) and no free port was found."""


class GraphsUnavailable(InferenceError):
    """Capturing a CUDA graph failed (not for want of memory): the engine decodes eagerly from then on."""
