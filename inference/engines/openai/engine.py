"""`OpenAIEngine`: an OpenAI-compatible server behind the `Engine` protocol (`ENGINE=openai`).

vLLM, SGLang or `transformers serve` does the generation; the worker keeps everything else (the
queue, leases, takeover, cancel, dead letters, limits, metrics, templates). The worker renders our
prompt and this engine streams it from `POST {ENGINE_URL}/completions`, up to `max_batch_size`
streams at once, on one event loop in its own thread. A step hands newcomers to that loop and
reads whatever text came back (waiting up to `STEP_WAIT_S` for some).

Cancelling closes the stream, which is how these servers are told to stop. A stream that fails —
the server down, an HTTP error, an error event, silence past `ENGINE_READ_TIMEOUT_S`, a stream
that ends without a finish — fails that question alone (`GenerationUpdate.error`): the worker
retries it and dead-letters it past MAX_DELIVERIES, as it does a crashed batch's questions, and
the user is told.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.client
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from chatbus.messages import FinishReason
from inference.engine import GenerationRequest, GenerationUpdate, Loaded, Sampling
from inference.engines.answer import Answer
from inference.engines.handoff import HandOff
from inference.errors import EngineLoadError, ModelNotFound
from inference.prompt import token_counter
from inference.settings import WorkerSettings
from inference.tokenizer import configured_window, load_tokenizer, prompt_builder

log = logging.getLogger(__name__)

# How long a step waits for text to come back (then it takes whatever else has arrived).
STEP_WAIT_S = 0.05
# Polyglot-ko's window, when neither CONTEXT_WINDOW, the server nor the model's config says.
DEFAULT_CONTEXT_WINDOW = 2048
# How often the worker asks whether the server is up while it starts (vLLM loads a 12.8B model in minutes).
START_POLL_S = 2.0
# What `GET /models` answers while the server (or a proxy in front of it) is still starting: wait on these. Any
# other error means it is up but cannot list its models (transformers serve 5.17 answers 500 on a host with no
# Hugging Face cache): the model is then checked with a one-token completion instead.
STARTING_STATUSES = (502, 503, 504)


@dataclass(frozen=True)
class Server:
    """Where the completions come from."""

    base_url: str  # ending in /v1
    model: str
    api_key: str | None
    read_timeout_s: float

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


@dataclass(frozen=True)
class _Event:
    """What a stream sent: text (with the server's finish and token counts when it ends), or its failure."""

    name: str
    text: str = ""
    finish_reason: str | None = None
    usage: Mapping[str, int] | None = None
    error: str | None = None


class OpenAIEngine(HandOff):
    """Streams of `/v1/completions`, one per running request."""

    def __init__(self, server: Server, *, sampling: Sampling, max_batch_size: int, count_tokens: Any) -> None:
        super().__init__("s")
        self.server = server
        self.model_id = server.model
        self.sampling = sampling
        self.max_batch_size = max_batch_size
        self.count_tokens = count_tokens
        self.last_batch = self.last_tokens = 0
        self._streams: dict[str, Future[None]] = {}
        self._events: queue.Queue[_Event] = queue.Queue()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="openai-engine", daemon=True)
        self._thread.start()
        self._session: aiohttp.ClientSession | None = None

    def close(self) -> None:
        """Close every stream and the HTTP session, then stop the loop's thread."""
        self.reset()
        if self._session is not None:
            closing = asyncio.run_coroutine_threadsafe(self._session.close(), self._loop)
            with contextlib.suppress(Exception):  # stopping anyway: a session that will not close is dropped
                closing.result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()

    def step(self) -> list[GenerationUpdate]:
        """Open streams for newcomers while there is room, then read what the streams sent."""
        self._hand_over()
        self.last_batch = len(self._running)
        self.last_tokens = 0
        events: list[_Event] = []
        try:
            events.append(self._events.get(timeout=STEP_WAIT_S))
            while True:
                events.append(self._events.get_nowait())
        except queue.Empty:
            pass
        updates = (self._read(event) for event in events)
        return [update for update in updates if update is not None]

    def _begin(self, name: str, request: GenerationRequest) -> Answer:
        self._streams[name] = asyncio.run_coroutine_threadsafe(self._stream(name, request), self._loop)
        return Answer(request, self.count_tokens(request.prompt), self.sampling.eos_token_id)

    def _stop(self, name: str) -> None:
        """Forget a stream here and close it (the server stops generating for it)."""
        del self._running[name]
        self._streams.pop(name).cancel()

    def _read(self, event: _Event) -> GenerationUpdate | None:
        answer = self._running.get(event.name)
        if answer is None:  # closed meanwhile
            return None
        if event.error is not None:
            self._stop(event.name)
            return GenerationUpdate(answer.id, "", True, None, answer.prompt_tokens, 0, error=event.error)
        tokens = 1 if event.text else 0
        self.last_tokens += tokens
        finish: FinishReason | None = None
        if event.finish_reason is not None:  # vLLM also says "abort"; anything but length ended the answer
            finish = "length" if event.finish_reason == "length" else "stop"
            if event.usage:
                answer.prompt_tokens = int(event.usage.get("prompt_tokens", answer.prompt_tokens))
                tokens = int(event.usage.get("completion_tokens", 0)) - answer.completion_tokens
        update = answer.add_text(event.text, max(tokens, 0), finish)
        if answer.finish_reason is not None:
            self._stop(event.name)  # a finished server stream is closed already; ours (a `###` section) is now
        return update

    async def _stream(self, name: str, request: GenerationRequest) -> None:
        """POST the prompt with `stream: true` and put each text piece on the event queue."""
        body: dict[str, Any] = {
            "model": self.server.model,
            "prompt": request.prompt,
            "max_tokens": request.max_new_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": _or(request.temperature, self.sampling.temperature) if self.sampling.do_sample else 0.0,
            "top_p": _or(request.top_p, self.sampling.top_p) if self.sampling.do_sample else 1.0,
        }
        if self.sampling.seed is not None:
            body["seed"] = self.sampling.seed
        try:
            finished = await self._post(name, body)
            if not finished:
                self._events.put(_Event(name, error="the stream ended before the answer did"))
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self._events.put(_Event(name, error=describe(exc, self.server.base_url)))

    async def _post(self, name: str, body: dict[str, Any]) -> bool:
        """The stream's events onto the queue; whether the server said the answer finished.

        The finishing chunk is held until the stream ends, so the usage some servers send after it (vLLM, in a
        chunk of its own) goes with it.
        """
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=self.server.read_timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout, headers=self.server.headers)
        finish: _Event | None = None
        async with self._session.post(f"{self.server.base_url}/completions", json=body) as response:
            if response.status != 200:
                detail = (await response.text())[:300]
                self._events.put(_Event(name, error=f"HTTP {response.status} from the engine server: {detail}"))
                return True
            async for raw in response.content:
                chunk = _sse_chunk(raw)
                if chunk is None:
                    continue
                if "error" in chunk:
                    self._events.put(_Event(name, error=f"the engine server failed: {_message(chunk['error'])}"))
                    return True
                event = _chunk_event(name, chunk)
                if finish is not None:
                    finish = dataclasses.replace(finish, usage=event.usage or finish.usage)
                elif event.finish_reason is not None:
                    finish = event
                elif event.text:
                    self._events.put(event)
        if finish is not None:
            self._events.put(finish)
        return finish is not None


def _sse_chunk(raw: bytes) -> dict[str, Any] | None:
    """One line of a completions stream: its JSON chunk, or None for a blank line, a comment or `[DONE]`."""
    if not raw.startswith(b"data:"):
        return None
    data = raw.decode("utf-8").removeprefix("data:").strip()
    if data == "[DONE]":
        return None
    chunk: dict[str, Any] = json.loads(data)
    return chunk


def _chunk_event(name: str, chunk: Mapping[str, Any]) -> _Event:
    """A completion chunk: its text and finish reason (choice 0), and the usage that comes with the last."""
    choices = chunk.get("choices") or [{}]
    usage = chunk.get("usage")
    return _Event(name, choices[0].get("text") or "", choices[0].get("finish_reason"), usage if usage else None)


def _message(error: Any) -> str:
    return str(error.get("message", error)) if isinstance(error, dict) else str(error)


def describe(exc: BaseException, base_url: str) -> str:
    """What went wrong with the server, for logs and dead letters (no key, no prompt)."""
    if isinstance(exc, aiohttp.ClientConnectorError | ConnectionError | urllib.error.URLError):
        return f"cannot reach the engine server at {base_url} ({type(exc).__name__})"
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return f"the engine server at {base_url} went silent"
    return f"{type(exc).__name__} from the engine server: {exc}"


# ---------------------------------------------------------------------------------------------- start-up


def build_openai(settings: WorkerSettings) -> Loaded:
    """ENGINE=openai: wait for the server, pick its model, and count tokens with MODEL_ID's tokenizer."""
    if not settings.engine_url:
        raise EngineLoadError("ENGINE=openai needs ENGINE_URL, the server's OpenAI-compatible base URL (…/v1)")
    base_url = api_base(settings.engine_url)
    api_key = settings.engine_api_key.get_secret_value() if settings.engine_api_key else None
    models = wait_for_models(base_url, api_key, settings.engine_start_timeout_s)
    if models is None:  # up, but it cannot list its models: ask the model itself
        model = settings.engine_model or settings.model_id
        probe_model(base_url, model, api_key, settings.engine_read_timeout_s)
        models = []
    else:
        model = settings.engine_model or _default_model(models, settings.model_id)
        if model not in {m["id"] for m in models}:
            served = ", ".join(m["id"] for m in models) or "none"
            raise EngineLoadError(f"ENGINE_MODEL={model!r} is not served at {base_url} (it serves: {served})")
    tokenizer = _tokenizer(settings)
    server = Server(base_url, model, api_key, settings.engine_read_timeout_s)

    count_tokens = token_counter(tokenizer)
    engine = OpenAIEngine(
        server, sampling=Sampling.of(settings), max_batch_size=settings.max_batch_size, count_tokens=count_tokens
    )
    served_window = next((m.get("max_model_len") for m in models if m["id"] == model), None)
    window = int(settings.context_window or served_window or configured_window(settings) or DEFAULT_CONTEXT_WINDOW)
    log.info("engine server %s serving %s (window %d tokens)", base_url, model, window)
    prompts = prompt_builder(settings, tokenizer, window, count_tokens)
    return Loaded(engine, prompts)


def api_base(url: str) -> str:
    """The base URL the OpenAI clients take (…/v1); a bare host:port gets /v1."""
    url = url.rstrip("/")
    return url if urlsplit(url).path else f"{url}/v1"


def wait_for_models(base_url: str, api_key: str | None, timeout_s: float) -> list[dict[str, Any]] | None:
    """`GET /models`, retried while the server is not up yet (it may still be loading the model); None when it is
    up but cannot list them."""
    deadline = time.monotonic() + timeout_s
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    said = False
    while True:
        try:
            request = urllib.request.Request(f"{base_url}/models", headers=headers)
            with urllib.request.urlopen(request, timeout=10) as response:
                listed: list[dict[str, Any]] = json.load(response).get("data", [])
                return listed
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise EngineLoadError(
                    f"the engine server at {base_url} refused ENGINE_API_KEY (HTTP {exc.code})"
                ) from exc
            if exc.code not in STARTING_STATUSES:
                log.warning("the engine server at %s answers GET /models with HTTP %d: it is up", base_url, exc.code)
                return None
            problem = f"HTTP {exc.code}"
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            problem = describe(exc, base_url)
        if time.monotonic() >= deadline:
            raise EngineLoadError(
                f"the engine server at {base_url} did not answer in {timeout_s:.0f} s ({problem}); "
                "check ENGINE_URL and that the server is running"
            )
        if not said:
            log.info("waiting for the engine server at %s (%s)", base_url, problem)
            said = True
        time.sleep(START_POLL_S)


def probe_model(base_url: str, model: str, api_key: str | None, timeout_s: float) -> None:
    """A one-token completion from `model`, streamed as the engine streams: an EngineLoadError saying what the server
    answered when it cannot give one."""
    body = {"model": model, "prompt": "안녕", "max_tokens": 1, "stream": True}
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {api_key}"} if api_key else {})
    request = urllib.request.Request(f"{base_url}/completions", json.dumps(body).encode(), headers, method="POST")
    refused = f"the engine server at {base_url} lists no models, and a first completion from ENGINE_MODEL={model!r}"
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            for raw in response:
                if (chunk := _sse_chunk(raw)) is not None and "error" in chunk:
                    raise EngineLoadError(f"{refused} failed: {_message(chunk['error'])[:300]}")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:300]
        raise EngineLoadError(f"{refused} was refused (HTTP {exc.code}: {detail})") from exc
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        raise EngineLoadError(f"{refused} failed: {describe(exc, base_url)}") from exc
    except (http.client.HTTPException, ValueError) as exc:  # not HTTP, or not JSON
        raise EngineLoadError(f"{refused} came back as something other than an OpenAI stream ({exc!r})") from exc
    log.info("the engine server at %s lists no models; %s answers", base_url, model)


def _default_model(models: list[dict[str, Any]], model_id: str) -> str:
    """MODEL_ID when the server serves it under that name, else the server's first model."""
    ids = [m["id"] for m in models]
    if model_id in ids or not ids:
        return model_id
    return str(ids[0])


def _tokenizer(settings: WorkerSettings) -> Any:
    from inference.placement import model_source

    try:
        return load_tokenizer(model_source(settings))
    except ModelNotFound as exc:
        raise EngineLoadError(f"ENGINE=openai counts prompt tokens with MODEL_ID's tokenizer: {exc}") from exc


def _or(own: float | None, default: float) -> float:
    """A request's own sampling value, else the worker's."""
    return default if own is None else own
