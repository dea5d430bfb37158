"""The inference side: the worker (`inference.worker`), which reads the question queue through the contract,
batches questions through an engine (`inference.engines`, behind `inference.engine.Engine`) and writes answer
events back, fenced by ownership; the prompt templates (`prompt`), tasks in passes (`tasks`), the model presets
(`presets`), where a model comes from and runs (`placement`, `model`).

Boundaries: it imports the contract (`chatbus`) and `runtime`, never `bot` or the chat libraries, nor `redis`; the
worker loop imports no torch (only the engines that run a model in this process do).
"""
