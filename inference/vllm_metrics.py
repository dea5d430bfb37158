"""The worker's metrics under the names vLLM exports (`vllm:…`, labelled `model_name` and `engine`), with the same
meanings, beside its own (`kullm_…`): dashboards and autoscalers written for vLLM — its published Grafana dashboard,
a KEDA or HPA rule on `vllm:num_requests_waiting` — work against these workers unchanged.

The meanings follow vLLM's V1 engine (vllm/v1/metrics/loggers.py): a request's arrival is when the question was
enqueued (the worker's queue is the shared stream), it is waiting until a worker starts generating it, running
until it is done; time per output token is observed each decode step for each sequence in it. Three are fixed by
what this worker is: it never swaps (`vllm:num_requests_swapped` 0), it has no CPU cache (`vllm:cpu_cache_usage_perc`
0), and its KV cache is the batch's sequence slots, so the cache's use is the share of slots in use (the older
`vllm:gpu_cache_usage_perc` and the newer `vllm:kv_cache_usage_perc` both say it).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LABELS = ("model_name", "engine")
ENGINE_INDEX = "0"  # vLLM numbers its engine cores; a worker is one

# vLLM's own buckets, so quantiles computed from either agree.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
                80.0, 160.0, 640.0, 2560.0)  # fmt: skip
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
                80.0)  # fmt: skip
REQUEST_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
                   480.0, 960.0, 1920.0, 7680.0)  # fmt: skip
TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


class VllmMetrics:
    """vLLM's metric names on the worker's registry, for one served model."""

    def __init__(self, registry: CollectorRegistry, model_name: str) -> None:
        r, labels = registry, (model_name, ENGINE_INDEX)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, LABELS, registry=r).labels(*labels)

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, LABELS, buckets=buckets, registry=r).labels(*labels)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, LABELS, registry=r).labels(*labels)

        self.running = gauge("vllm:num_requests_running", "Number of requests in model execution batches.")
        self.waiting = gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.")
        self.swapped = gauge("vllm:num_requests_swapped", "Number of requests swapped to CPU (never, here).")
        self.kv_cache = gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.")
        self.gpu_cache = gauge("vllm:gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage.")
        self.cpu_cache = gauge("vllm:cpu_cache_usage_perc", "CPU KV-cache usage (none, here).")
        self.prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = counter("vllm:generation_tokens", "Number of generation tokens processed.")
        self._success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            (*LABELS, "finished_reason"),
            registry=r,
        )
        self._labels = labels
        seconds = "Histogram of time spent in {} phase for request."
        self.ttft = histogram(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", TTFT_BUCKETS
        )
        self.tpot = histogram(
            "vllm:time_per_output_token_seconds", "Histogram of time per output token in seconds.", TPOT_BUCKETS
        )
        self.e2e = histogram(
            "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", REQUEST_BUCKETS
        )
        self.queue = histogram("vllm:request_queue_time_seconds", seconds.format("WAITING"), REQUEST_BUCKETS)
        self.inference = histogram("vllm:request_inference_time_seconds", seconds.format("RUNNING"), REQUEST_BUCKETS)
        self.prefill = histogram("vllm:request_prefill_time_seconds", seconds.format("PREFILL"), REQUEST_BUCKETS)
        self.decode = histogram("vllm:request_decode_time_seconds", seconds.format("DECODE"), REQUEST_BUCKETS)
        tokens = "Number of {} tokens processed."
        self.prompt_length = histogram("vllm:request_prompt_tokens", tokens.format("prefill"), TOKEN_BUCKETS)
        self.generation_length = histogram("vllm:request_generation_tokens", tokens.format("generation"), TOKEN_BUCKETS)
        self.max_generation = histogram(
            "vllm:request_max_num_generation_tokens",
            "Histogram of maximum number of requested generation tokens.",
            TOKEN_BUCKETS,
        )
        for fixed in (self.swapped, self.cpu_cache):
            fixed.set(0)

    def scheduler(self, running: int, waiting: int, slots: int) -> None:
        """The worker's state now: questions being generated, those in hand waiting for a slot, and the slots."""
        self.running.set(running)
        self.waiting.set(waiting)
        usage = min(1.0, running / slots) if slots else 0.0
        self.kv_cache.set(usage)
        self.gpu_cache.set(usage)

    def step(self, elapsed_s: float, sequences: int, tokens: int) -> None:
        """One decode step: each of its sequences waited `elapsed_s` for its next token."""
        for _ in range(sequences):
            self.tpot.observe(elapsed_s)
        if tokens:
            self.generation_tokens.inc(tokens)

    def started(self, queued_s: float) -> None:
        self.queue.observe(queued_s)

    def first_token(self, since_arrival_s: float) -> None:
        self.ttft.observe(since_arrival_s)

    def finished_early(self, reason: str) -> None:
        """A request that ended before its answer did (`abort`: its asker stopped it)."""
        self._success.labels(*self._labels, reason).inc()

    def finished(
        self,
        reason: str,
        *,
        e2e_s: float,
        running_s: float,
        prefill_s: float,
        prompt_tokens: int,
        generation_tokens: int,
    ) -> None:
        """A request done (`reason`: stop, length, abort)."""
        self._success.labels(*self._labels, reason).inc()
        self.e2e.observe(e2e_s)
        self.inference.observe(running_s)
        self.prefill.observe(prefill_s)
        self.decode.observe(max(0.0, running_s - prefill_s))
        self.prompt_tokens.inc(prompt_tokens)
        self.prompt_length.observe(prompt_tokens)
        self.generation_length.observe(generation_tokens)
        self.max_generation.observe(generation_tokens)
