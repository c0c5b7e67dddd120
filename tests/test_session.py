"""The call session is plain asyncio: drive it through an in-memory channel, no web server."""

from __future__ import annotations

import asyncio
import audioop
import wave
from collections.abc import AsyncIterator
from time import perf_counter

from app.channels.contract import (
    AnswerEnded,
    AnswerWords,
    CallerAudio,
    CallIdentity,
    CallOutcome,
    ChannelEvent,
    ChannelUpdate,
    ConversationReset,
    Notice,
    PlaybackMark,
    SessionReady,
    TurnEnded,
)
from app.agent.caller_audio import GATHER_MS, QUIET_RMS, SPEECH_GATHER_MS
from app.agent.phrases import LIMIT_REACHED, TIME_UP_GOODBYE, UNAVAILABLE
from app.agent.resilience import filler
from app.agent.speaker import MESSAGE_MS
from app.agent.session import CallSession
from app.audio.formats import TELEPHONE_ULAW
from app.audio.g711 import ulaw_level
from app.config import Settings
from app.engines.openai_realtime.engine import RealtimeEngine
from app.service import engine_options
from tests.harness import AUDIO

FRAME = 160


def telephone_frames(path) -> list[bytes]:
    with wave.open(str(path)) as wav:
        pcm = wav.readframes(wav.getnframes())
        pcm, _ = audioop.ratecv(pcm, 2, 1, wav.getframerate(), 8000, None)
    ulaw = audioop.lin2ulaw(pcm, 2)
    return [ulaw[i : i + FRAME] for i in range(0, len(ulaw) - FRAME + 1, FRAME)]


class MemoryChannel:
    """A caller's side kept in memory: records what the session sends, never acknowledges marks."""

    audio_format = TELEPHONE_ULAW

    def __init__(self, max_seconds: float | None = None) -> None:
        self.max_seconds = max_seconds
        self.identity = CallIdentity("CA-memory")
        self.inbox: asyncio.Queue[ChannelEvent | None] = asyncio.Queue()
        self.sent: list[tuple[str, object]] = []
        self.ended: CallOutcome | None = None
        self.shown: list[ChannelUpdate] = []

    async def events(self) -> AsyncIterator[ChannelEvent]:
        while (event := await self.inbox.get()) is not None:
            yield event

    async def send_audio(self, audio: bytes, mark: str) -> None:
        self.sent.append(("audio", audio))
        self.sent.append(("mark", mark))

    async def clear_playback(self) -> None:
        self.sent.append(("clear", None))

    async def show(self, update: ChannelUpdate) -> None:
        self.shown.append(update)

    def transfer_unavailable(self) -> str | None:
        return "pas de conseiller en mémoire"

    async def transfer(self, summary: str) -> str | None:
        return self.transfer_unavailable()

    async def end(self, outcome: CallOutcome) -> None:
        self.ended = outcome

    async def speak(self, frames: list[bytes], *, real_time: bool = False) -> None:
        """Hand the frames over as fast as the session takes them, or one every 20 ms as on a call."""
        started = perf_counter()
        for index, frame in enumerate(frames):
            await self.inbox.put(CallerAudio(frame, perf_counter()))
            await asyncio.sleep(max(0.0, started + (index + 1) * 0.02 - perf_counter()) if real_time else 0)


async def open_session(double, channel: MemoryChannel) -> tuple[CallSession, asyncio.Task]:
    settings = Settings(_env_file=None, openai_api_key="sk-test", openai_realtime_url=double.url)
    engine = await RealtimeEngine.open(settings, engine_options(settings))
    session = CallSession(channel, engine, settings)
    return session, asyncio.create_task(session.run())


async def greeted(double, channel: MemoryChannel) -> tuple[CallSession, asyncio.Task, object]:
    """A session whose greeting the model has finished, and the double's connection."""
    session, running = await open_session(double, channel)
    connection = await double.wait_for_connection()
    await connection.wait_for_server(lambda e: e["type"] == "response.done", timeout=10)
    return session, running, connection


async def test_model_audio_reaches_the_channel_as_whole_frames_each_followed_by_a_unique_mark(double):
    channel = MemoryChannel()
    session, running, connection = await greeted(double, channel)
    await asyncio.sleep(0.05)
    await channel.inbox.put(None)  # hang up
    assert await running == CallOutcome.CALLER_HUNG_UP
    assert channel.ended == CallOutcome.CALLER_HUNG_UP

    kinds = [kind for kind, _ in channel.sent]
    assert kinds and kinds[0] == "audio"
    assert all(a == "audio" and b == "mark" for a, b in zip(kinds[::2], kinds[1::2])), "a mark after each chunk"
    chunks = [payload for kind, payload in channel.sent if kind == "audio"]
    assert all(len(chunk) % FRAME == 0 and FRAME <= len(chunk) <= 5 * FRAME for chunk in chunks)
    marks = [payload for kind, payload in channel.sent if kind == "mark"]
    assert len(set(marks)) == len(marks)
    greeting = connection.responses[0]
    assert 0 <= len(b"".join(chunks)) / 8 - greeting.audio_ms < 20  # all of it, padded to a whole frame
    assert (await connection.wait_closed()).initiated_by == "client"


async def test_unacknowledged_audio_is_never_counted_as_heard(double):
    double.script_next_connection(greeting_seconds=6.0)
    double.speed = 1.0
    channel = MemoryChannel()
    session, running = await open_session(double, channel)
    connection = await double.wait_for_connection()
    await connection.wait_for_server(lambda e: e["type"] == "response.output_audio.delta", timeout=10)
    await channel.speak(telephone_frames(AUDIO / "question_followup.wav"))  # talks over the greeting
    truncate = await connection.wait_for(lambda e: e["type"] in {"conversation.item.truncate",
                                                                 "conversation.item.delete"}, timeout=10)
    await channel.inbox.put(None)
    await running

    assert ("clear", None) in channel.sent
    # No mark came back: at most the chunk at the head of the queue can have been playing.
    if truncate["type"] == "conversation.item.truncate":
        assert 0 < truncate["audio_end_ms"] <= 100
    assert session.barge_ins == 1 and session.turns[0].interrupted
    assert connection.errors_sent == []


async def test_the_session_ends_when_the_model_cannot_be_reached_again(double):
    channel = MemoryChannel()
    session, running, connection = await greeted(double, channel)
    sent_before = len(channel.sent)
    double.refuse_connections = True
    await double.drop_all(code=1011)
    assert await asyncio.wait_for(running, 10) == CallOutcome.ERROR
    assert channel.ended == CallOutcome.ERROR
    assert len(double.rejected_handshakes) == 3, "three tries"
    first_chunk = filler(TELEPHONE_ULAW)[:TELEPHONE_ULAW.frame_bytes(MESSAGE_MS)]
    assert channel.sent[sent_before:sent_before + 2] == [("clear", None), ("audio", first_chunk)], "« Un instant. »"
    assert Notice(UNAVAILABLE, "unavailable") in channel.shown


async def test_an_expired_model_session_carries_on_in_a_new_one(double):
    channel = MemoryChannel()
    session, running = await open_session(double, channel)
    first = await double.wait_for_connection()
    greeting = await first.wait_for_server(lambda e: e["type"] == "response.output_audio_transcript.done",
                                           timeout=10)
    await first.wait_for_server(lambda e: e["type"] == "response.done", timeout=10)
    await asyncio.sleep(0.1)  # the greeting's last chunk goes to the channel
    await channel.inbox.put(PlaybackMark(channel.sent[-1][1]))  # the caller heard all of it
    await double.fail_all(code="session_expired", message="Your session hit the maximum duration of 60 minutes.",
                          error_type="invalid_request_error", close_code=1000)
    second = await double.wait_for_connection()
    await second.wait_for(lambda e: e["type"] == "conversation.item.create", timeout=5)
    assert not running.done()
    assert [(item["role"], item["content"][0]["text"]) for item in second.conversation] == [
        ("assistant", greeting["transcript"])]
    await channel.inbox.put(None)
    assert await running == CallOutcome.CALLER_HUNG_UP


async def test_a_screen_is_told_when_to_speak_what_octi_says_and_when_an_answer_ends(double):
    channel = MemoryChannel()
    session, running, connection = await greeted(double, channel)
    await asyncio.sleep(0.05)
    await channel.inbox.put(None)
    await running
    assert channel.shown[0] == SessionReady()
    words = "".join(update.text for update in channel.shown if isinstance(update, AnswerWords))
    assert words and words == session.turns[0].text
    assert channel.shown[-1] == AnswerEnded()


async def test_letting_go_of_the_button_ends_the_turn_and_brings_the_answer(double):
    """Push-to-talk: the caller's turn ends when they say so, before any silence."""
    channel = MemoryChannel()
    session, running, connection = await greeted(double, channel)
    frames = telephone_frames(AUDIO / "question_incubation.wav")
    await channel.speak(frames[: len(frames) * 3 // 5], real_time=True)  # still speaking
    await channel.inbox.put(TurnEnded())
    await connection.wait_for(lambda e: e["type"] == "input_audio_buffer.commit", timeout=5)
    await connection.wait_for_server(lambda e: e["type"] == "response.done", timeout=10, new_only=True)
    await channel.inbox.put(None)
    await running
    caller = [turn for turn in session.turns if turn.role == "caller"]
    assert len(caller) == 1 and caller[0].end_ms is not None
    assert [r.kind for r in connection.responses if r.conversation == "auto"] == ["greeting", "answer"]
    assert connection.errors_sent == []


async def test_a_reset_starts_a_fresh_conversation_on_the_same_channel(double):
    double.script_next_connection(greeting_seconds=6.0)
    double.speed = 1.0
    channel = MemoryChannel()
    session, running = await open_session(double, channel)
    first = await double.wait_for_connection()
    await first.wait_for_server(lambda e: e["type"] == "response.output_audio.delta", timeout=10)
    await asyncio.sleep(0.3)
    await channel.inbox.put(ConversationReset())
    second = await double.wait_for_connection()
    assert (await first.wait_closed(timeout=5)).initiated_by == "client"
    assert second.conversation == []  # nothing carried over
    await channel.inbox.put(None)
    assert await running == CallOutcome.CALLER_HUNG_UP
    assert ("clear", None) in channel.sent  # the greeting stopped playing
    assert channel.shown.count(SessionReady()) == 2
    assert session.barge_ins == 0  # a reset is not an interruption


async def test_a_time_limit_is_announced_then_octi_says_goodbye_and_ends_once_it_was_heard(double):
    double.script_next_connection(greeting_seconds=0.5)
    channel = MemoryChannel(max_seconds=4.0)
    started = perf_counter()
    session, running = await open_session(double, channel)
    connection = await double.wait_for_connection()

    async def play_everything() -> None:
        """A far end that plays instantly: every mark comes back as soon as it was sent."""
        echoed = 0
        while not running.done():
            marks = [payload for kind, payload in channel.sent if kind == "mark"]
            for mark in marks[echoed:]:
                await channel.inbox.put(PlaybackMark(mark))
            echoed = len(marks)
            await asyncio.sleep(0.02)

    player = asyncio.create_task(play_everything())
    assert await asyncio.wait_for(running, 15) == CallOutcome.TIMEOUT
    await player
    # Not before the limit; the bound above only says it did not run on (a loaded machine, as
    # under the parallel suite, has been seen to take over 3 s more for the warning and goodbye).
    assert 4.0 <= perf_counter() - started < 12.0
    creates = [e["response"]["instructions"] for e in connection.client_events if e["type"] == "response.create"]
    assert len(creates) == 3 and "Il nous reste 1 seconde avant" in creates[1] and TIME_UP_GOODBYE in creates[2]
    goodbye = connection.responses[2]
    sent_after_limit = b"".join(p for kind, p in channel.sent if kind == "audio")
    assert len(sent_after_limit) / 8 >= sum(r.audio_ms for r in connection.responses) - 20  # the goodbye went out whole
    assert goodbye.status == "completed"
    assert channel.shown[-1] == Notice(LIMIT_REACHED, "time_limit") and channel.ended == CallOutcome.TIMEOUT


QUIET = TELEPHONE_ULAW.silence_byte * FRAME


def appended_ms(connection, until: dict | None = None) -> list[float]:
    """The audio length of each append the double received (before `until`, if given)."""
    events = list(connection.client_events)
    if until is not None:
        events = events[:events.index(until)]
    return [event["audio_ms"] for event in events if event["type"] == "input_audio_buffer.append"]


def spoken_question() -> list[bytes]:
    """A question's phone frames from its first sound on."""
    frames = telephone_frames(AUDIO / "question_incubation.wav")
    return frames[next(i for i, frame in enumerate(frames) if ulaw_level(frame) >= QUIET_RMS):]


async def test_quiet_audio_between_turns_reaches_the_model_in_fewer_sends_and_speech_at_once(double):
    channel = MemoryChannel()
    session, running, connection = await greeted(double, channel)
    greeting = await connection.wait_for_server(lambda e: e["type"] == "response.done")
    question = spoken_question()
    await channel.speak([QUIET] * 50 + question)  # a second of quiet line, then the question
    await channel.speak([QUIET] * 75, real_time=True)  # the turn ends in this silence
    await connection.wait_for_server(lambda e: e["type"] == "response.done" and e != greeting, timeout=10)
    await channel.inbox.put(None)
    await running

    sent = appended_ms(connection)
    before = int(1000 / GATHER_MS)
    assert sent[:before] == [GATHER_MS] * before, "the quiet line before the question, gathered"
    assert sent[before] == 20, "the question's first sound at once"
    assert set(sent[before:before + len(question) // 2]) <= {20, SPEECH_GATHER_MS}, "the question, never gathered long"
    assert GATHER_MS in sent[-4:], "the quiet line once the turn ended and the hangover is over"
    frames = 50 + len(question) + 75
    assert sum(sent) == frames * 20 and len(sent) < frames - 40, "all of it, what was gathered last at hang-up"
    assert [r.kind for r in connection.responses if r.conversation == "auto"] == ["greeting", "answer"]
    assert connection.errors_sent == []


async def test_the_callers_speech_goes_in_fewer_sends_once_the_model_heard_the_turn_begin(double):
    channel = MemoryChannel()
    session, running, connection = await greeted(double, channel)
    greeting = await connection.wait_for_server(lambda e: e["type"] == "response.done")
    question = spoken_question()
    speaking = asyncio.create_task(channel.speak(question + [QUIET] * 75, real_time=True))
    await connection.wait_for_server(lambda e: e["type"] == "input_audio_buffer.speech_started", timeout=5)
    heard_begin = len(appended_ms(connection))
    await connection.wait_for_server(lambda e: e["type"] == "input_audio_buffer.speech_stopped", timeout=10)
    heard_end = len(appended_ms(connection))
    await speaking
    await connection.wait_for_server(lambda e: e["type"] == "response.done" and e != greeting, timeout=10)
    await channel.inbox.put(None)
    await running

    sent = appended_ms(connection)
    assert sent[:heard_begin] == [20] * heard_begin, "until the model hears speech, every frame at once"
    in_turn = sent[heard_begin:heard_end]
    assert set(in_turn) <= {20, SPEECH_GATHER_MS}
    assert len(in_turn) < 0.75 * sum(in_turn) / 20, "speech inside the turn, a few frames a send"
    assert sum(sent) == (len(question) + 75) * 20, "all of it"
    assert [r.kind for r in connection.responses if r.conversation == "auto"] == ["greeting", "answer"]
    assert connection.errors_sent == []


async def test_audio_gathered_before_the_end_of_a_turn_reaches_the_model_before_it(double):
    channel = MemoryChannel()
    session, running, connection = await greeted(double, channel)
    frames = int(GATHER_MS / 20)
    await channel.speak([QUIET] * (frames + 3))  # one send, then 60 ms gathered
    await channel.inbox.put(TurnEnded())
    commit = await connection.wait_for(lambda e: e["type"] == "input_audio_buffer.commit", timeout=5)
    await channel.inbox.put(None)
    await running
    assert appended_ms(connection, until=commit) == [GATHER_MS, 60]
