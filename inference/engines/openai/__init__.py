"""`ENGINE=openai`: an OpenAI-compatible inference server (vLLM, TGI, llama.cpp…) generates; the worker keeps
everything else (`engine.OpenAIEngine`)."""

from inference.engines.openai.engine import OpenAIEngine, Server, build_openai

build = build_openai

__all__ = ["OpenAIEngine", "Server", "build"]
