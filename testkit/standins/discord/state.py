"""What the parts of the stand-in share, for the type checker: the state `DiscordStandIn.__init__` sets up and the
calls one part makes on another (each part is a mixin of `DiscordStandIn`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from aiohttp import web

    from testkit.standins.discord.common import (
        Call,
        Served,
        _Failure,
        _Request,
    )


class DiscordState:
    """The stand-in's shared state and cross-part calls (declared here, defined in the parts)."""

    _backlog: list[tuple[int, str]]
    _command_ids: dict[tuple[str, str, int], int]
    _failures: list[_Failure]
    _interactions: dict[str, dict[str, Any]]
    _live_ws: web.WebSocketResponse | None
    _reactions: dict[int, dict[str, list[int]]]
    _resumed_ok: int
    _routes: Any
    _send_lock: Any
    _seq: int
    _sockets: set[web.WebSocketResponse]
    application_id: int
    attachment_data: dict[int, bytes]
    bot_id: int
    bot_user: Any
    calls: list[Call]
    channels: dict[int, dict[str, Any]]
    close_on_identify_code: int | None
    commands: dict[str, list[dict[str, Any]]]
    deleted_messages: dict[int, dict[str, Any]]
    dispatched: list[dict[str, Any]]
    dms_closed: set[int]
    failures_served: int
    gateway_received: list[dict[str, Any]]
    guild_id: int
    host: str
    identifies: int
    identify_payloads: list[dict[str, Any]]
    intents: int | None
    layouts_refused: bool
    expired_tokens: set[str]
    not_joined: set[int]
    user_install: bool
    foreign_guild_id: int
    interaction_responses: list[dict[str, Any]]
    locales: dict[int, str]
    member_roles: dict[int, list[int]]
    messages: dict[int, dict[str, Any]]
    modals: dict[str, dict[str, Any]]
    opened_commands: set[str]
    owner_id: int
    port: int
    resumes: int
    served: list[Served]
    session_id: str | None
    threads: dict[int, dict[str, Any]]
    token: Any
    users: dict[int, dict[str, Any]]

    if TYPE_CHECKING:

        async def _announce(self, event: str, msg: dict[str, Any]) -> None:
            raise NotImplementedError

        async def _answer(self, request: web.Request, path: str, req: _Request, route: Any) -> web.Response:
            raise NotImplementedError

        async def _apply_callback(
            self, it: dict[str, Any], kind: int, data: dict[str, Any], files: list[tuple[str, str, bytes]]
        ) -> dict[str, Any] | None:
            raise NotImplementedError

        def _attach_reference(self, msg: dict[str, Any], ref: dict[str, Any], allowed: dict[str, Any] | None) -> None:
            raise NotImplementedError

        def _attachments(self, channel_id: int, files: list[tuple[str, str, bytes]]) -> list[dict[str, Any]]:
            raise NotImplementedError

        async def _bulk_commands(self, req: _Request, app_id: str, guild_id: str | None = None) -> web.Response:
            raise NotImplementedError

        async def _callback(self, req: _Request, interaction_id: str, token: str) -> web.Response:
            raise NotImplementedError

        async def _channel_messages(self, req: _Request, channel_id: str) -> web.Response:
            raise NotImplementedError

        def _check_offered(self, command: dict[str, Any], user: dict[str, Any], channel_id: int) -> None:
            raise NotImplementedError

        def _context_of(self, channel_id: int) -> int:
            raise NotImplementedError

        async def _create_dm(self, req: _Request) -> web.Response:
            raise NotImplementedError

        async def _create_thread(
            self, parent_id: int, thread_id: int, body: dict[str, Any], owner: str | None = None
        ) -> web.Response:
            raise NotImplementedError

        async def _delete(self, msg: dict[str, Any]) -> None:
            raise NotImplementedError

        async def _dispatch(self, event: str, data: dict[str, Any], intent: int = 0) -> bool:
            raise NotImplementedError

        def _dm_channel(self, channel_id: int, user: dict[str, Any]) -> dict[str, Any]:
            raise NotImplementedError

        def _edit(self, msg: dict[str, Any], payload: dict[str, Any], files: list[tuple[str, str, bytes]]) -> None:
            raise NotImplementedError

        def _layout_refusal(self, payload: dict[str, Any], before: dict[str, Any] | None = None) -> str | None:
            raise NotImplementedError

        async def _emit(self, event: str, data: dict[str, Any], intent: int = 0) -> bool:
            raise NotImplementedError

        @staticmethod
        def _emoji(emoji: str) -> dict[str, Any]:
            raise NotImplementedError

        @staticmethod
        def _failure_response(failure: _Failure) -> web.Response:
            raise NotImplementedError

        def _find_command(self, name: str, kind: int, locale: str = "") -> tuple[str, dict[str, Any]]:
            raise NotImplementedError

        async def _followup(self, req: _Request, app_id: str, token: str) -> web.Response:
            raise NotImplementedError

        async def _gateway_op(self, ws: web.WebSocketResponse, frame: dict[str, Any]) -> None:
            raise NotImplementedError

        async def _get_application(self, req: _Request) -> web.Response:
            raise NotImplementedError

        async def _get_channel(self, req: _Request, channel_id: str) -> web.Response:
            raise NotImplementedError

        async def _get_gateway(self, req: _Request) -> web.Response:
            raise NotImplementedError

        async def _get_me(self, req: _Request) -> web.Response:
            raise NotImplementedError

        async def _get_user(self, req: _Request, user_id: str) -> web.Response:
            raise NotImplementedError

        def _guild_of(self, channel_id: int) -> int | None:
            raise NotImplementedError

        def _guild_payload(self) -> dict[str, Any]:
            raise NotImplementedError

        def _history(self, channel_id: int, query: Mapping[str, str]) -> web.Response:
            raise NotImplementedError

        async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
            raise NotImplementedError

        async def _interact(
            self,
            kind: int,
            data: dict[str, Any],
            user: dict[str, Any],
            channel_id: int,
            message: dict[str, Any] | None = None,
        ) -> dict[str, Any]:
            raise NotImplementedError

        def _interaction_for(self, app_id: str, token: str) -> dict[str, Any] | None:
            raise NotImplementedError

        def _member(self, user: dict[str, Any], *, with_user: bool = True) -> dict[str, Any]:
            raise NotImplementedError

        def _mentions(
            self, content: str, allowed: dict[str, Any] | None
        ) -> tuple[list[dict[str, Any]], list[str], bool]:
            raise NotImplementedError

        def _message(self, message_id: int) -> dict[str, Any]:
            raise NotImplementedError

        def _new_message(
            self,
            channel_id: int,
            author: dict[str, Any],
            payload: dict[str, Any],
            files: list[tuple[str, str, bytes]] | None = None,
            msg_type: int = 0,
        ) -> dict[str, Any]:
            raise NotImplementedError

        async def _one_message(self, req: _Request, channel_id: str, message_id: str) -> web.Response:
            raise NotImplementedError

        async def _original_message(self, req: _Request, app_id: str, token: str) -> web.Response:
            raise NotImplementedError

        async def _react(self, channel_id: int, message_id: int, user_id: int, emoji: str, *, add: bool) -> None:
            raise NotImplementedError

        async def _reaction_route(
            self, req: _Request, channel_id: str, message_id: str, emoji: str | None, who: str | None
        ) -> web.Response:
            raise NotImplementedError

        async def _read(self, request: web.Request) -> _Request:
            raise NotImplementedError

        async def _request_members(self, data: dict[str, Any]) -> None:
            raise NotImplementedError

        def _response_message_type(self, it: dict[str, Any]) -> int:
            raise NotImplementedError

        async def _resume(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> None:
            raise NotImplementedError

        def _snowflake(self) -> int:
            raise NotImplementedError

        @staticmethod
        def _submitted(row: dict[str, Any], values: dict[str, str]) -> dict[str, Any]:
            raise NotImplementedError

        async def _thread_from_message(self, req: _Request, channel_id: str, message_id: str) -> web.Response:
            raise NotImplementedError

        async def _thread_without_message(self, req: _Request, channel_id: str) -> web.Response:
            raise NotImplementedError

        async def _typing(self, req: _Request, channel_id: str) -> web.Response:
            raise NotImplementedError

        async def _wait_session(self) -> None:
            raise NotImplementedError

        def _webhook_author_payload(self, body: dict[str, Any]) -> dict[str, Any]:
            raise NotImplementedError

        async def _webhook_message(self, req: _Request, app_id: str, token: str, which: str) -> web.Response:
            raise NotImplementedError

        def _wire(self, msg: dict[str, Any]) -> dict[str, Any]:
            raise NotImplementedError

        @property
        def gateway_url(self) -> str:
            raise NotImplementedError

        def locale_of(self, user: dict[str, Any]) -> str:
            raise NotImplementedError

        def messages_in(self, channel_id: int) -> list[dict[str, Any]]:
            raise NotImplementedError

        def permissions_of(self, user_id: int) -> int:
            raise NotImplementedError

        async def wait_for(self, predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
            raise NotImplementedError
