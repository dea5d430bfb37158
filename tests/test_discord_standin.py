"""The Discord stand-in speaks the real protocol: a bare discord.py client works against it feature by feature."""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

with warnings.catch_warnings():
    # discord.py 2.7 imports the stdlib `audioop`, deprecated since 3.11; the suite runs with warnings as errors.
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    import discord
    from discord import app_commands

    from testkit.conformance import discord_standin_problems
    from testkit.standins.discord import DiscordStandIn
    from testkit.standins.discord.common import MESSAGE_CONTENT

pytestmark = pytest.mark.timeout(30)

RunClient = Callable[[discord.Client], Awaitable[discord.Client]]


class BareClient(discord.Client):
    """A minimal client that remembers what it was told, so tests can assert on it."""

    def __init__(self) -> None:
        intents = discord.Intents.default()
        intents.message_content = True
        # on_ready fires guild_ready_timeout after the last GUILD_CREATE; the 2 s default only slows tests down.
        super().__init__(intents=intents, guild_ready_timeout=0.05)
        self.received: list[discord.Message] = []
        self.raw_reactions: list[discord.RawReactionActionEvent] = []
        self.resumed = asyncio.Event()

    async def on_message(self, message: discord.Message) -> None:
        if message.author != self.user:  # Discord echoes the bot's own messages too
            self.received.append(message)

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        self.raw_reactions.append(payload)

    async def on_resumed(self) -> None:
        self.resumed.set()


@pytest.fixture
async def standin() -> AsyncIterator[DiscordStandIn]:
    """A started stand-in that discord.py is pointed at; stopped (and un-pointed) afterwards."""
    server = DiscordStandIn()
    await server.start()
    yield server
    await server.stop()
    problems = discord_standin_problems(server)
    assert not problems, "the stand-in answered what Discord's API description does not:\n" + "\n".join(problems)


@pytest.fixture
async def run_client(standin: DiscordStandIn) -> AsyncIterator[RunClient]:
    """Start clients against the stand-in and wait for on_ready; every client is closed at the end."""
    running: list[tuple[discord.Client, asyncio.Task[None]]] = []

    async def run(client: discord.Client) -> discord.Client:
        task = asyncio.create_task(client.start(standin.token))
        running.append((client, task))
        await standin.wait_for(lambda: client.is_ready() or task.done(), timeout=10)
        if task.done():
            task.result()  # surface why the client stopped before it got ready
        return client

    yield run
    for client, task in running:
        await client.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, timeout=5)


async def test_connects_and_sees_the_guild(standin: DiscordStandIn, run_client: RunClient) -> None:
    """IDENTIFY carries message_content; READY + GUILD_CREATE give the client the guild, channels and members."""
    client = await run_client(BareClient())
    assert client.user is not None and client.user.id == standin.bot_id
    assert client.application_id == standin.application_id
    guild = client.get_guild(standin.guild_id)
    assert guild is not None and guild.me is not None
    channel = client.get_channel(standin.channel_id)
    assert isinstance(channel, discord.TextChannel)
    assert channel.permissions_for(guild.me).send_messages
    moderator = guild.get_role(standin.moderator_role_id)
    assert moderator is not None and moderator.permissions.manage_messages
    assert standin.identifies == 1
    assert standin.identify_payloads[0]["intents"] & MESSAGE_CONTENT
    assert standin.calls[0].path == "/users/@me"


async def test_mention_thread_reply_and_edit(standin: DiscordStandIn, run_client: RunClient) -> None:
    """A mention reaches on_message; a thread on it, a reply without pings and an edit all land in the stand-in."""
    client = await run_client(BareClient())
    assert isinstance(client, BareClient)
    sent = await standin.send_message(
        standin.channel_id, standin.alice, f"<@{standin.bot_id}> 안녕하세요?", mention_bot=True
    )
    message = await standin.wait_for(lambda: client.received[-1] if client.received else None)
    assert message.id == int(sent["id"]) and client.user in message.mentions
    assert message.content.endswith("안녕하세요?") and message.author.id == int(standin.alice["id"])

    thread = await message.create_thread(name="KULLM 답변")
    assert thread.id == message.id  # Discord: a thread started from a message takes its id
    await standin.wait_for(lambda: client.get_channel(thread.id))  # THREAD_CREATE put it in the cache
    reply = await thread.send(f"<@{standin.alice['id']}> 생각 중...", allowed_mentions=discord.AllowedMentions.none())
    await reply.edit(content="답변: 반갑습니다.")

    stored = standin.messages[reply.id]
    assert stored["content"] == "답변: 반갑습니다." and stored["edits"] == 1
    assert stored["allowed_mentions"] == {"parse": []} and stored["mentions"] == []
    assert standin.threads[thread.id]["parent_id"] == str(standin.channel_id)
    assert standin.threads[thread.id]["type"] == 11 and standin.threads[thread.id]["name"] == "KULLM 답변"
    assert [m["id"] for m in standin.messages_in(thread.id)] == [str(reply.id)]


async def test_a_forward_arrives_as_discord_sends_one(standin: DiscordStandIn, run_client: RunClient) -> None:
    """A forward reaches on_message with a FORWARD reference and the original's snapshot (its file too); fetched
    over REST it is a message Discord's description (amended with the documented FORWARD type) allows."""
    client = await run_client(BareClient())
    assert isinstance(client, BareClient)
    original = await standin.send_message(
        standin.channel_id, standin.bob, "원문입니다", files=[("a.txt", "text/plain", b"file text")]
    )
    sent = await standin.forward_message(standin.channel_id, standin.alice, int(original["id"]))
    message = await standin.wait_for(lambda: next((m for m in client.received if m.id == int(sent["id"])), None))
    assert message.content == "" and message.reference is not None
    assert message.reference.type == discord.MessageReferenceType.forward
    assert message.reference.message_id == int(original["id"])
    [snapshot] = message.message_snapshots
    assert snapshot.content == "원문입니다" and await snapshot.attachments[0].read() == b"file text"
    channel = client.get_channel(standin.channel_id)
    assert isinstance(channel, discord.TextChannel)
    fetched = await channel.fetch_message(message.id)  # served over REST: checked by the fixture
    assert fetched.message_snapshots[0].content == "원문입니다"


async def test_rate_limited_edit_is_retried(standin: DiscordStandIn, run_client: RunClient) -> None:
    """A 429 on the edit is waited out by discord.py (retry_after) and the edit lands on the retry."""
    client = await run_client(BareClient())
    channel = client.get_channel(standin.channel_id)
    assert isinstance(channel, discord.TextChannel)
    sent = await channel.send("first")
    standin.fail_next("PATCH", r"/channels/\d+/messages/\d+", retry_after=0.3)
    await sent.edit(content="second")
    patches = [c for c in standin.calls if c.method == "PATCH"]
    assert len(patches) == 2 and patches[1].at - patches[0].at >= 0.25
    assert standin.messages[sent.id]["content"] == "second"


async def test_slash_command_context_menu_and_modal(standin: DiscordStandIn, run_client: RunClient) -> None:
    """tree.sync registers both commands; slash -> defer + followup; context menu -> modal -> on_submit."""
    client = BareClient()
    tree = app_commands.CommandTree(client)
    asked: list[str] = []
    submitted: list[tuple[str, int]] = []

    class AskModal(discord.ui.Modal, title="KULLM에게 묻기"):
        question: discord.ui.TextInput[AskModal] = discord.ui.TextInput(label="질문", custom_id="question")

        async def on_submit(self, interaction: discord.Interaction) -> None:
            submitted.append((self.question.value, interaction.user.id))
            await interaction.response.send_message("받았습니다", ephemeral=True)

    @tree.command(name="kullm", description="KULLM에게 질문합니다")
    @app_commands.rename(question="질문")
    async def kullm(interaction: discord.Interaction, question: str) -> None:
        asked.append(question)
        await interaction.response.defer()
        await interaction.followup.send("x")

    @tree.context_menu(name="KULLM에게 묻기")
    async def ask_about(interaction: discord.Interaction, message: discord.Message) -> None:
        await interaction.response.send_modal(AskModal(custom_id="ask-modal"))

    await run_client(client)
    synced = await tree.sync()
    assert {c.name for c in synced} == {"kullm", "KULLM에게 묻기"}
    registered = {c["name"]: c for c in standin.commands["global"]}
    assert registered["kullm"]["options"][0]["name"] == "질문" and registered["KULLM에게 묻기"]["type"] == 3

    slash = await standin.slash_command("kullm", {"질문": "서울의 날씨는?"}, standin.bob, standin.channel_id)
    await standin.wait_for(lambda: any(r["type"] == "followup" for r in standin.interaction_responses))
    assert asked == ["서울의 날씨는?"]
    defer, followup = standin.interaction_responses
    assert defer["interaction_id"] == slash["id"] and defer["type"] == 5
    assert followup["type"] == "followup" and followup["data"]["content"] == "x"
    assert standin.messages[followup["message_id"]]["content"] == "x"

    target = await standin.send_message(standin.channel_id, standin.alice, "이 문장을 설명해줘")
    await standin.message_command("KULLM에게 묻기", int(target["id"]), standin.alice, standin.channel_id)
    await standin.wait_for(lambda: "ask-modal" in standin.modals)
    assert standin.interaction_responses[-1]["type"] == 9
    await standin.submit_modal("ask-modal", {"question": "무슨 뜻이야?"}, standin.alice, standin.channel_id)
    await standin.wait_for(lambda: submitted)
    assert submitted == [("무슨 뜻이야?", int(standin.alice["id"]))]


async def test_button_click_reaches_the_view(standin: DiscordStandIn, run_client: RunClient) -> None:
    """A button sent with a message is clicked through the gateway; its callback sees the clicking user."""
    client = await run_client(BareClient())
    clicks: list[int] = []

    class Again(discord.ui.View):
        def __init__(self) -> None:
            super().__init__(timeout=None)

        @discord.ui.button(label="다시", custom_id="again")
        async def again(self, interaction: discord.Interaction, button: discord.ui.Button[Again]) -> None:
            clicks.append(interaction.user.id)
            await interaction.response.edit_message(content="다시 생성 중...")

    channel = client.get_channel(standin.channel_id)
    assert isinstance(channel, discord.TextChannel)
    sent = await channel.send("답변", view=Again())
    await standin.click_button(sent.id, "again", standin.bob)
    await standin.wait_for(lambda: standin.messages[sent.id]["content"] == "다시 생성 중...")
    assert clicks == [int(standin.bob["id"])]
    assert standin.interaction_responses[-1]["type"] == 7


async def test_reaction_reaches_raw_reaction_add(standin: DiscordStandIn, run_client: RunClient) -> None:
    """add_reaction dispatches MESSAGE_REACTION_ADD with the reacting user and the emoji."""
    client = await run_client(BareClient())
    assert isinstance(client, BareClient)
    channel = client.get_channel(standin.channel_id)
    assert isinstance(channel, discord.TextChannel)
    sent = await channel.send("답변")
    await sent.add_reaction("🤖")  # the bot's own reaction comes back as an event too
    await standin.add_reaction(standin.channel_id, sent.id, standin.alice, "👍")
    event = await standin.wait_for(lambda: [r for r in client.raw_reactions if r.user_id != standin.bot_id])
    assert event[0].user_id == int(standin.alice["id"]) and event[0].emoji.name == "👍"
    assert event[0].message_id == sent.id and event[0].member is not None
    assert {r["emoji"]["name"]: r["count"] for r in standin.messages[sent.id]["reactions"]} == {"🤖": 1, "👍": 1}


async def test_reconnect_resumes_the_session(standin: DiscordStandIn, run_client: RunClient) -> None:
    """Op 7 makes the client RESUME (not re-IDENTIFY), and messages still arrive afterwards."""
    client = await run_client(BareClient())
    assert isinstance(client, BareClient)
    await standin.reconnect()
    await asyncio.wait_for(client.resumed.wait(), timeout=5)
    assert (standin.identifies, standin.resumes) == (1, 1)
    await standin.send_message(standin.channel_id, standin.bob, "다시 연결됐나요?")
    message = await standin.wait_for(lambda: client.received[-1] if client.received else None)
    assert message.content == "다시 연결됐나요?"


async def test_missing_privileged_intent_is_reported(standin: DiscordStandIn) -> None:
    """A 4014 close on IDENTIFY surfaces from client.start as PrivilegedIntentsRequired."""
    standin.close_on_identify_code = 4014
    client = BareClient()
    try:
        with pytest.raises(discord.PrivilegedIntentsRequired):
            await asyncio.wait_for(client.start(standin.token), timeout=10)
    finally:
        await client.close()
    assert standin.identifies == 1
