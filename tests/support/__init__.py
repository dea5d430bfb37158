"""Helpers the tests (and the benchmarks) share: processes, polling, engines, the tiny model."""
