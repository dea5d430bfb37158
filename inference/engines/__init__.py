"""The engines `ENGINE` names, each in its folder behind the `Engine` protocol (`inference.engine`):

    builtin   our batcher on a transformers model, in this process (the default)
    paged     transformers' continuous batching, in this process
    openai    an OpenAI-compatible inference server elsewhere

Shared by them: `answer` (stop rules and incremental text of one request, `detokenize`) and `handoff` (the
waiting/running bookkeeping of the engines whose batch runs outside our code). This package imports nothing
heavy itself: `openai` must not load torch.
"""
