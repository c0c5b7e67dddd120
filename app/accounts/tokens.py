"""Access tokens for the browser channel: JWTs (HS256, pyjwt) naming a web user.

A token is issued to a signed-in user (`POST /api/web/token`, or `octi web token` for an
operator) and presented on the websocket. It carries the user (`sub`), when it was issued and
when it expires, and an audience of its own, so that no other JWT signed with the same key
passes. The key is WEB_TOKEN_SECRET, else a random one kept in DATA_DIR (shared by the CLI and
the service on one machine; set WEB_TOKEN_SECRET when several hosts serve the browser channel).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jwt

from app.config import Settings, kept_secret

AUDIENCE = "octi-web"
ALGORITHM = "HS256"


class TokenRefused(Exception):
    """The token is missing, malformed, forged or expired; the message says which, in French."""


def token_key(settings: Settings) -> bytes:
    secret = settings.web_token_secret
    return secret.get_secret_value().encode() if secret else kept_secret(settings.data_dir, "web-token-secret")


class AccessTokens:
    def __init__(self, key: bytes, *, lifetime_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._lifetime = lifetime_seconds
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessTokens:
        return cls(token_key(settings), lifetime_seconds=settings.web_token_hours * 3600)

    @property
    def lifetime_seconds(self) -> float:
        return self._lifetime

    def issue(self, username: str) -> str:
        now = int(self._clock())
        claims = {"sub": username, "aud": AUDIENCE, "iat": now, "exp": now + int(self._lifetime)}
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    def verify(self, token: str | None) -> str:
        """The user a valid token names; TokenRefused otherwise."""
        if not token:
            raise TokenRefused("Jeton d'accès manquant.")
        try:
            # Expiry is checked against our clock below (the tests move it), not pyjwt's.
            claims = jwt.decode(token, self._key, algorithms=[ALGORITHM], audience=AUDIENCE,
                                options={"require": ["sub", "exp", "iat"], "verify_exp": False, "verify_iat": False})
        except jwt.InvalidTokenError:
            raise TokenRefused("Jeton d'accès invalide.") from None
        expires, subject = claims["exp"], claims["sub"]
        if not isinstance(expires, int | float) or not isinstance(subject, str) or not subject:
            raise TokenRefused("Jeton d'accès invalide.")
        if expires <= self._clock():
            raise TokenRefused("Jeton d'accès expiré : reconnectez-vous.")
        return subject
