"""The browser line: who may open `/ws/realtime` (or `/ws/voice`), and running each conversation.

Every refusal is an `error` message with a code, then a close (1008), and a log line: the page
shows the message, where a refused handshake would only give it "connection failed". In order:

1. the page's origin: the service's own (PUBLIC_BASE_URL, else the request's Host), or one of
   WEB_ALLOWED_ORIGINS; a client that sends no Origin is not a browser and is let through to
   the token check;
2. the access token (`?token=`, or the cookie the sign-in endpoint sets), and its user still
   enabled;
3. the socket's `sample_rate`;
4. `start_conversation`, within START_TIMEOUT_SECONDS (audio before it gets an error);
5. the model reachable and room on this instance (MAX_CONCURRENT_CALLS), as for phone calls
   (`app/channels/admission.py`): `unavailable` or `busy`, before the user is charged;
6. one of their conversations in the last hour (WEB_SESSIONS_PER_HOUR).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from urllib.parse import urlsplit

from sqlalchemy.exc import SQLAlchemyError
from starlette.websockets import WebSocket

from app.accounts.tokens import AccessTokens, TokenRefused
from app.accounts.users import WebUsers
from app.agent import phrases
from app.audio.formats import AudioFormat
from app.calllog.journals import CallJournals
from app.calllog.records import CallRecord
from app.channels.admission import Admission
from app.channels.browser import wire
from app.channels.browser.channel import BrowserChannel
from app.channels.browser.sign_in import SignInFailures
from app.channels.contract import CallIdentity, Conversations
from app.channels.websocket_io import POLICY_VIOLATION, FrameSocket, SocketClosed, StarletteSocket
from app.config import Settings
from app.logs import current_call
from app.metrics import Metrics
from app.ratelimit import MovingWindowLimit

log = logging.getLogger(__name__)

REALTIME_PATH = "/ws/realtime"
VOICE_PATH = "/ws/voice"  # the seed plan's name for the same channel
TOKEN_COOKIE = "octi_web_token"
START_TIMEOUT_SECONDS = 30.0


class Refused(Exception):
    def __init__(self, code: str, message: str, log_detail: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.log_detail = log_detail or message


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


class BrowserLine:
    def __init__(self, settings: Settings, metrics: Metrics, *, agent: Conversations, admission: Admission,
                 journals: CallJournals, submit: Callable[[CallRecord], None], users: WebUsers,
                 tokens: AccessTokens) -> None:
        self.settings = settings
        self.metrics = metrics
        self._agent = agent
        self._admission = admission  # what every line checks, the phone's too
        self._journals = journals
        self._submit = submit  # to the call log: the messages a conversation's channel drops
        self.users = users
        self.tokens = tokens
        self.conversations_per_user = MovingWindowLimit(
            settings.redis_url, limit=settings.web_sessions_per_hour, window_seconds=3600,
            key="octi-web-conversations", counted="browser conversations")
        self.sign_in_failures = SignInFailures(settings.redis_url)
        self.start_timeout_seconds = START_TIMEOUT_SECONDS
        self.draining = False  # shutting down: no new conversations
        self._origins = {origin_of(o.strip()) for o in settings.web_allowed_origins.split(",") if o.strip()}
        if settings.public_base_url:
            self._origins.add(origin_of(settings.public_base_url))

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        if origin is None:
            return True  # not a browser: the token decides
        origin = origin.lower()
        if origin in self._origins:
            return True
        return host is not None and urlsplit(origin).netloc == host.lower()

    async def serve(self, websocket: WebSocket) -> None:
        socket = StarletteSocket(websocket)
        await socket.accept()
        call_id = f"WEB{secrets.token_hex(16)}"
        try:
            user, rate = await self._admit(websocket)
            if not await self._wait_for_start(socket):
                return
            self._check_room()
            # Its place is held while the user's count is checked (in Redis maybe): pages
            # starting together cannot all take the last one.
            self._admission.hold(call_id)
            try:
                await self._count_conversation(user)
            finally:
                self._admission.started(call_id)  # no await from here to the agent's first step, which counts it
        except Refused as refusal:
            self.metrics.refusals.labels(f"web_{refusal.code}").inc()
            log.warning("refused a browser conversation (%s): %s", refusal.code, refusal.log_detail)
            try:
                await socket.send(wire.error(str(refusal), refusal.code))
            except SocketClosed:
                pass
            await socket.close(POLICY_VIOLATION)
            return
        current_call.set(call_id)
        log.info("browser conversation for %s at %d Hz", user, rate)
        channel = BrowserChannel(socket, CallIdentity(call_id, caller=user, channel="web"),
                                 AudioFormat("pcm16", rate), max_seconds=self.settings.web_session_max_seconds,
                                 metrics=self.metrics, submit=self._submit)
        journal = self._journals.open(channel.identity, stream_sid="", audio_format=channel.audio_format)
        await self._agent.converse(channel, journal)

    async def _admit(self, websocket: WebSocket) -> tuple[str, int]:
        """The user and the audio rate of a socket allowed in; Refused otherwise."""
        if self.draining:
            raise Refused("unavailable", "OCTI redémarre. Réessayez dans une minute.", "draining")
        origin = websocket.headers.get("origin")
        if not self.origin_allowed(origin, websocket.headers.get("host")):
            raise Refused("origin_refused", "Cette page n'est pas autorisée à parler à OCTI.", f"origin {origin}")
        token = websocket.query_params.get("token") or websocket.cookies.get(TOKEN_COOKIE)
        try:
            user = self.tokens.verify(token)
        except TokenRefused as exc:
            raise Refused("unauthorized", str(exc)) from None
        try:
            active = await self.users.active(user)
        except (SQLAlchemyError, OSError) as exc:
            raise Refused("unavailable", "Service momentanément indisponible. Réessayez plus tard.",
                          f"user database unavailable: {exc}") from None
        if not active:
            raise Refused("unauthorized", "Compte inconnu ou désactivé.", f"user {user!r} unknown or disabled")
        try:
            rate = wire.sample_rate(websocket.query_params.get("sample_rate"))
        except wire.WireError as exc:
            raise Refused(exc.code, str(exc)) from None
        return user, rate

    async def _wait_for_start(self, socket: FrameSocket) -> bool:
        """Until `start_conversation`: other frames get an error; False if the page left."""
        async def wait() -> bool:
            while (frame := await socket.receive()) is not None:
                try:
                    message = wire.parse_client(frame)
                except wire.WireError as exc:
                    await socket.send(wire.error(str(exc), exc.code))
                    continue
                if isinstance(message, wire.StartConversation):
                    return True
                await socket.send(wire.error(
                    "Envoyez d'abord {\"type\":\"start_conversation\"}.", "not_started"))
            return False

        try:
            async with asyncio.timeout(self.start_timeout_seconds):
                return await wait()
        except TimeoutError:
            raise Refused("start_timeout", "Aucune conversation démarrée : connexion fermée.") from None
        except SocketClosed:
            return False

    def _check_room(self) -> None:
        if (unreachable := self._admission.unreachable()) is not None:
            raise Refused("unavailable", phrases.UNAVAILABLE, unreachable)
        if self._admission.full():
            raise Refused("busy", "Toutes les lignes d'OCTI sont occupées. Réessayez dans quelques minutes.",
                          "MAX_CONCURRENT_CALLS reached")

    async def _count_conversation(self, user: str) -> None:
        if not await self.conversations_per_user.hit(user):
            wait = await self.conversations_per_user.retry_after(user) or 60
            limit = self.settings.web_sessions_per_hour
            raise Refused("rate_limited", f"Limite de {limit} conversations par heure atteinte. "
                          f"Réessayez dans {max(1, round(wait / 60))} min.", f"user {user!r} over {limit}/hour")

    def close(self) -> None:
        self.conversations_per_user.close()
        self.sign_in_failures.close()
