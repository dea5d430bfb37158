"""What the parts of the stand-in share, for the type checker: the state `SlackStandIn.__init__` sets up and the
calls one part makes on another (each part is a mixin of `SlackStandIn`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Coroutine
    from typing import Any

    from aiohttp import web

    from testkit.standins.slack.common import (
        Call,
        Handler,
        _Failure,
    )


class SlackState:
    """The stand-in's shared state and cross-part calls (declared here, defined in the parts)."""

    _ack_waiters: dict[str, asyncio.Future[dict[str, Any]]]
    _events: dict[str, tuple[dict[str, Any], dict[str, Any]]]
    _failures: dict[str, list[_Failure]]
    _hellos: int
    _methods: dict[str, Handler]
    _response_urls: dict[str, dict[str, Any]]
    _sockets: list[web.WebSocketResponse]
    _tickets: set[str]
    _triggers: dict[str, tuple[float, bool]]
    acks: list[dict[str, Any]]
    agent_sessions: bool
    app_id: str
    app_token: str
    assistant_threads: set[tuple[str, str]]
    bot_id: str
    bot_token: str
    bot_user_id: str
    calls: list[Call]
    channel_id: str
    channels: dict[str, dict[str, Any]]
    connections: int
    echo_own_messages: bool
    envelopes: list[dict[str, Any]]
    ephemerals: list[dict[str, Any]]
    failures_served: int
    feedback_buttons: bool
    granted: set[str]
    host: str
    loading_messages: dict[tuple[str, str], list[str]]
    messages: dict[tuple[str, str], dict[str, Any]]
    native_streaming: bool
    not_in_channel: set[str]
    port: int
    session_history: list[tuple[tuple[str, str], str]]
    sessions: dict[tuple[str, str], dict[str, Any]]
    status_history: list[tuple[tuple[str, str], str]]
    statuses: dict[tuple[str, str], str]
    stream_idle_timeout_s: float
    suggested_prompts: dict[tuple[str, str], dict[str, Any]]
    titles: dict[tuple[str, str], str]
    users: dict[str, dict[str, Any]]
    verification_token: str
    views: list[dict[str, Any]]

    if TYPE_CHECKING:

        def _apply_ack_payload(self, envelope: dict[str, Any], payload: dict[str, Any] | None) -> None:
            raise NotImplementedError

        def _assistant_thread(self, args: dict[str, Any]) -> tuple[str, str]:
            raise NotImplementedError

        async def _block_action(
            self, message: dict[str, Any], user: str, action: dict[str, Any], *, expect_ack: bool = True
        ) -> dict[str, Any]:
            raise NotImplementedError

        def _bot_fields(self) -> dict[str, Any]:
            raise NotImplementedError

        def _channel_ref(self, channel: str) -> dict[str, Any]:
            raise NotImplementedError

        def _check_view(self, view: Any) -> dict[str, Any]:
            raise NotImplementedError

        def _clicked_message(self, channel: str, message_ts: str) -> dict[str, Any]:
            raise NotImplementedError

        def _content(self, args: dict[str, Any], *, for_update: bool = False) -> dict[str, Any]:
            raise NotImplementedError

        def _deliver_response(
            self, body: dict[str, Any], target: dict[str, Any], *, via: str, url: str | None = None
        ) -> None:
            raise NotImplementedError

        def _failure_response(self, failure: _Failure) -> web.Response:
            raise NotImplementedError

        def _json(self, body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
            raise NotImplementedError

        def _message(self, channel: Any, ts: Any) -> dict[str, Any]:
            raise NotImplementedError

        def _message_event(self, message: dict[str, Any], kind: str) -> dict[str, Any]:
            raise NotImplementedError

        def _new_socket_url(self) -> str:
            raise NotImplementedError

        def _next_ts(self) -> str:
            raise NotImplementedError

        def _on_ack(self, data: dict[str, Any]) -> None:
            raise NotImplementedError

        async def _read_args(self, request: web.Request) -> dict[str, Any]:
            raise NotImplementedError

        def _resolve_channel(self, value: Any) -> dict[str, Any]:
            raise NotImplementedError

        def _response_target(self, channel: str, user: str, message_ts: str | None = None) -> str:
            raise NotImplementedError

        async def _send_envelope(
            self,
            kind: str,
            payload: dict[str, Any],
            *,
            accepts_response_payload: bool = False,
            retry: tuple[int, str] | None = None,
            expect_ack: bool = True,
        ) -> str:
            raise NotImplementedError

        def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
            raise NotImplementedError

        def _store(self, channel: str, *, text: str, user: str, thread_ts: str | None, **extra: Any) -> dict[str, Any]:
            raise NotImplementedError

        @staticmethod
        def _stream_text(args: dict[str, Any], *, required: bool) -> str:
            raise NotImplementedError

        def _stream_chunks(self, message: dict[str, Any], args: dict[str, Any]) -> None:
            raise NotImplementedError

        def _stream_session(self, channel: str, message: dict[str, Any], args: dict[str, Any]) -> None:
            raise NotImplementedError

        def _streaming_message(self, channel: str, ts: Any) -> dict[str, Any]:
            raise NotImplementedError

        def _team_ref(self) -> dict[str, Any]:
            raise NotImplementedError

        def _trigger(self) -> str:
            raise NotImplementedError

        def _user_profile(self, user_id: str) -> dict[str, Any]:
            raise NotImplementedError

        def _user_ref(self, user: str) -> dict[str, Any]:
            raise NotImplementedError

        @staticmethod
        def _wire(message: dict[str, Any]) -> dict[str, Any]:
            raise NotImplementedError

        def event_callback(self, event: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
            raise NotImplementedError

        def channel_type(self, channel: str) -> str:
            raise NotImplementedError

        def delivers_messages(self, channel: str) -> bool:
            raise NotImplementedError

        @property
        def http_base(self) -> str:
            raise NotImplementedError

        def slash_command_payload(self, command: str, text: str, user: str, channel: str) -> dict[str, Any]:
            raise NotImplementedError

        def thread(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
            raise NotImplementedError

        def upload(self, user: str, name: str, mimetype: str, data: bytes) -> dict[str, Any]:
            raise NotImplementedError

        async def wait_for(self, predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
            raise NotImplementedError
