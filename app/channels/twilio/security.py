"""Who may talk to us: Twilio request signatures and the per-call stream token.

Signed URLs are always built from the configured public base URL, never from the Host
header: behind ngrok or a load balancer the app sees another scheme, host or port.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

from twilio.request_validator import RequestValidator

from app.config import Settings, kept_secret

# Where Twilio posts status changes: of our media streams, and of the calls we place.
STATUS_PATH = "/voice/status"


def public_base_url(settings: Settings) -> str:
    return settings.public_base_url or f"http://{settings.host}:{settings.port}"


def public_url(settings: Settings, path: str, query: str = "") -> str:
    return public_base_url(settings) + path + (f"?{query}" if query else "")


def websocket_url(settings: Settings, path: str) -> str:
    """The stream URL we give Twilio; Twilio signs the upgrade over exactly this URL."""
    base = public_base_url(settings)
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :] + path
    return "ws://" + base[len("http://") :] + path


class SignatureChecker:
    """Validates X-Twilio-Signature; without an auth token only a loopback-bound dev server accepts."""

    def __init__(self, settings: Settings) -> None:
        token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else ""
        self._validator = RequestValidator(token) if token else None
        self._unsigned_allowed = not token and settings.binds_loopback_only

    @property
    def enforced(self) -> bool:
        return self._validator is not None

    @property
    def refuses_everything(self) -> bool:
        return self._validator is None and not self._unsigned_allowed

    def valid(self, url: str, params: Mapping[str, str], signature: str | None) -> bool:
        if self._validator is None:
            return self._unsigned_allowed
        return bool(signature) and self._validator.validate(url, dict(params), signature)


class StreamTokens:
    """A short-lived HMAC token binding a media stream to the call its webhook answered.

    The websocket signature proves the upgrade came from Twilio; the token proves the
    stream belongs to a call we answered moments ago, so a replayed upgrade cannot
    open a session for another call.
    """

    def __init__(self, settings: Settings) -> None:
        token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else ""
        # Every worker and host must agree: derived from the auth token, or, in a tokenless dev
        # server, from a random key kept in DATA_DIR.
        seed = token.encode() if token else kept_secret(settings.data_dir, "stream-token-key")
        self._key = hmac.new(seed, b"octi-stream-token", hashlib.sha256).digest()
        self._ttl = settings.stream_token_ttl_seconds

    def _mac(self, call_sid: str, expires: int) -> str:
        return hmac.new(self._key, f"{call_sid}|{expires}".encode(), hashlib.sha256).hexdigest()

    def issue(self, call_sid: str, now: float | None = None) -> str:
        expires = int((now if now is not None else time.time()) + self._ttl)
        return f"{expires}.{self._mac(call_sid, expires)}"

    def check(self, call_sid: str, token: str | None, now: float | None = None) -> bool:
        if not token or "." not in token:
            return False
        expires_text, mac = token.split(".", 1)
        if not expires_text.isdigit():
            return False
        expires = int(expires_text)
        if expires < (now if now is not None else time.time()):
            return False
        return hmac.compare_digest(mac, self._mac(call_sid, expires))
