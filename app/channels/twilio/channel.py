"""The Twilio Media Stream as a `CallChannel`: wire protocol in, session events out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from time import perf_counter

from app.channels.contract import (
    CallerAudio,
    CallIdentity,
    CallOutcome,
    ChannelEvent,
    ChannelUpdate,
    Digit,
    PlaybackMark,
)
from app.agent import phrases
from app.audio.formats import TELEPHONE_ULAW
from app.calllog.records import CallRecord
from app.channels.dropped import DroppedMessages
from app.channels.websocket_io import FrameSocket, SocketClosed, close_code
from app.metrics import Metrics
from app.channels.twilio import wire
from app.channels.twilio.numbers import withheld
from app.channels.twilio.rest import TwilioRest, TwilioRestError
from app.channels.twilio.transfer import TwilioTransfers

log = logging.getLogger(__name__)

# Ends of our making, which REST makes sure of (the caller hanging up needs nothing).
HUNG_UP_BY_US = {CallOutcome.AGENT_ENDED, CallOutcome.TIMEOUT}


class StreamRejected(Exception):
    """The stream never produced a usable `start` message."""


class TwilioChannel:
    audio_format = TELEPHONE_ULAW

    def __init__(
        self,
        websocket: FrameSocket,
        start: wire.Start,
        *,
        max_message_bytes: int,
        metrics: Metrics,
        submit: Callable[[CallRecord], None],
        on_end: Callable[[str, CallOutcome], Awaitable[None]],
        max_seconds: float | None = None,
        rest: TwilioRest | None = None,
        transfers: TwilioTransfers | None = None,
    ) -> None:
        self._ws = websocket
        self.max_seconds = max_seconds
        self.start = start
        self.stream_sid = start.stream_sid
        params = start.custom_parameters
        self.identity = CallIdentity(
            call_id=start.call_sid, caller=params.get("from", ""), called=params.get("to", ""), channel="twilio",
            call_back=params.get("question", "") if params.get("direction") == "outbound" else None,
        )
        self._max_bytes = max_message_bytes
        self._dropped = DroppedMessages(metrics, call_id=start.call_sid, submit=submit)
        self._on_end = on_end
        self._rest = rest if rest is not None and rest.configured else None
        self._transfers = transfers
        self._closed = False

    @staticmethod
    async def receive_start(websocket: FrameSocket, *, timeout: float, max_message_bytes: int,
                            metrics: Metrics) -> wire.Start:
        """Read `connected` then `start`; anything else before `start` is dropped."""
        dropped = DroppedMessages(metrics)  # no call known yet: counted and logged only

        async def read() -> wire.Start:
            while True:
                raw = await websocket.receive()
                if raw is None:
                    raise StreamRejected("the stream closed before 'start'")
                message = _parse(raw, max_message_bytes, dropped)
                if isinstance(message, wire.Start):
                    return message
                if isinstance(message, wire.Stop):
                    raise StreamRejected("the stream stopped before 'start'")

        try:
            async with asyncio.timeout(timeout):
                return await read()
        except TimeoutError:
            raise StreamRejected("no 'start' message in time") from None

    async def events(self) -> AsyncIterator[ChannelEvent]:
        while True:
            raw = await self._ws.receive()
            if raw is None:
                return
            message = _parse(raw, self._max_bytes, self._dropped, self.stream_sid)
            if isinstance(message, wire.Stop):
                return
            event = _event(message, perf_counter())
            if event is not None:
                yield event

    async def _send(self, *texts: str) -> None:
        if self._closed:
            return
        try:
            for text in texts:
                await self._ws.send(text)
        except SocketClosed:
            self._closed = True

    async def send_audio(self, audio: bytes, mark: str) -> None:
        await self._send(wire.media_message(self.stream_sid, audio), wire.mark_message(self.stream_sid, mark))

    async def clear_playback(self) -> None:
        await self._send(wire.clear_message(self.stream_sid))

    async def show(self, update: ChannelUpdate) -> None:
        """A phone has no screen: what OCTI says is all the caller gets."""

    def transfer_unavailable(self) -> str | None:
        return phrases.NO_PERSON if self._transfers is None else self._transfers.unavailable()

    async def transfer(self, summary: str) -> str | None:
        if self._transfers is None:
            return phrases.NO_PERSON
        return await self._transfers.transfer(self.start.call_sid, self.identity.caller, summary)

    def texts_unavailable(self) -> str | None:
        if self._rest is None or not self._rest.sends_sms or withheld(self.identity.caller):
            return phrases.NO_SMS
        return None

    async def send_text(self, text: str) -> None:
        if self._rest is None:
            raise TwilioRestError(phrases.NO_SMS)
        await self._rest.send_sms(self.identity.caller, text)

    async def end(self, outcome: CallOutcome) -> None:
        # Recorded first: closing the stream makes Twilio request the <Connect> action URL,
        # whose answer (voicemail or hang-up) depends on it.
        await self._on_end(self.start.call_sid, outcome)
        if not self._closed:
            self._closed = True
            await self._ws.close(close_code(outcome))
        if outcome in HUNG_UP_BY_US and self._rest is not None:
            # Closing the stream ends the call through the <Connect> action; REST makes sure.
            try:
                await self._rest.hang_up(self.start.call_sid)
            except TwilioRestError as exc:
                log.warning("could not hang up %s through the REST API: %s", self.start.call_sid, exc)


def _event(message: wire.InboundMessage | None, received_at: float) -> ChannelEvent | None:
    """The session's event for a parsed message; None for those the session does not see."""
    if isinstance(message, wire.Media):
        return CallerAudio(message.payload, received_at)
    if isinstance(message, wire.Mark):
        return PlaybackMark(message.name)
    if isinstance(message, wire.Dtmf):
        return Digit(message.digit)
    return None


def _parse(raw: str | bytes, max_bytes: int, dropped: DroppedMessages,
           stream_sid: str | None = None) -> wire.InboundMessage | None:
    """Parse a frame; malformed or oversized frames are dropped (`DroppedMessages`).

    The size of a text frame is counted in characters: measuring its UTF-8 bytes would copy it,
    and the websocket server's frame limit bounds it in bytes already.
    """
    if len(raw) > max_bytes:
        dropped.drop("oversized", f"{len(raw)} characters or bytes, over the limit of {max_bytes}")
        return None
    try:
        return wire.parse_inbound(raw, stream_sid)
    except wire.MalformedMessage as exc:
        dropped.drop(exc.reason, str(exc))
        return None
