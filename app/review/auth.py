"""Who may read the call logs: reviewer sign-in, bearer token, signed session cookie.

Modes, decided once from the settings:

* ``signin``: REVIEW_USERNAME + REVIEW_PASSWORD and/or REVIEW_TOKEN are set. Pages need a
  session cookie (got from the sign-in form, or from ``?token=`` once); the JSON API, the
  CSV export and the recording also accept ``Authorization: Bearer <REVIEW_TOKEN>``.
* ``open``: nothing is configured, the server binds loopback only and PUBLIC_BASE_URL is not
  set (local development). Everything is readable without sign-in, pages show "accès local
  sans authentification", except for a request that came through a proxy or a tunnel
  (``Forwarded``, ``X-Forwarded-*``, ``X-Real-IP``: ngrok forwards to 127.0.0.1), which gets
  the ``closed`` answer.
* ``closed``: nothing is configured, the server binds loopback only, but PUBLIC_BASE_URL is
  set: the service is exposed through a tunnel. The review routes answer 403 with a page (or
  JSON) saying to set REVIEW_USERNAME and REVIEW_PASSWORD; a warning is logged at start.
* ``disabled``: nothing is configured and the server is reachable from elsewhere. The review
  routes answer 404 with a page explaining how to enable them.

Passwords are argon2 hashes (``passwords.py``). The session cookie is signed and timestamped
by itsdangerous (HMAC-SHA256), and the routes set it HttpOnly, SameSite=Lax, Secure over HTTPS,
for SESSION_SECONDS. Its key is derived (PBKDF2, once at start-up) from the stored password
hash and the token, so changing either signs everyone out; with a plain REVIEW_PASSWORD the
hash's salt is random, so sessions last until the process restarts.

The sign-in form carries a CSRF token (signed, timestamped, bound to a random nonce held in a
SameSite=Strict cookie) besides the SameSite session cookie; the forms of a signed-in page
(sign-out, call-back) carry a signature of the session's own nonce (`form_token`); open pages
have no session, so each browser gets a random nonce of its own in a signed cookie
(LOCAL_COOKIE) for that. Failed sign-ins and failed tokens are counted per client address
(``limiter.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from itsdangerous import BadSignature, Signer, TimestampSigner, URLSafeTimedSerializer

from app.config import Settings, kept_secret
from app.review.limiter import SignInLimiter

from app.accounts.passwords import ARGON2_PREFIX, PBKDF2_PREFIX, PasswordChecks, stored_password_hash

log = logging.getLogger(__name__)

SESSION_COOKIE = "octi_review_session"
CSRF_COOKIE = "octi_review_csrf"
LOCAL_COOKIE = "octi_review_local"         # open pages: this browser's nonce, signed
SESSION_SECONDS = 12 * 3600
CSRF_SECONDS = 3600
SIGNING = {"digest_method": hashlib.sha256, "key_derivation": "hmac"}

Mode = Literal["signin", "open", "closed", "disabled"]
# Headers a reverse proxy or a tunnel (ngrok, cloudflared, nginx) adds: such a request does not
# come from this machine, whatever the socket's peer says.
PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip")


def through_proxy(headers: Mapping[str, str]) -> bool:
    return any(name in headers for name in PROXY_HEADERS)


def cookies_keyed_by_a_hash_alone(settings: Settings) -> bool:
    """Whether the cookies' signing key would come from the user name and a REVIEW_PASSWORD given
    hashed, with neither REVIEW_TOKEN nor REVIEW_SESSION_SECRET: whoever reads that hash could
    sign a session cookie."""
    password = settings.review_password.get_secret_value() if settings.review_password else ""
    return (bool((settings.review_username or "").strip()) and password.startswith((PBKDF2_PREFIX, ARGON2_PREFIX))
            and not any(secret is not None and secret.get_secret_value()
                        for secret in (settings.review_token, settings.review_session_secret)))


def mode_without_credentials(settings: Settings) -> Mode:
    """Open only when nothing says the service is reachable from elsewhere (`Settings.exposed`);
    closed (403) on a loopback bind behind a public URL, i.e. a tunnel such as ngrok; else
    disabled (404)."""
    if not settings.exposed:
        return "open"
    return "closed" if settings.binds_loopback_only else "disabled"


@dataclass(frozen=True, slots=True)
class Reviewer:
    name: str                                  # the username, "jeton" or "local"
    via: Literal["password", "token", "local"]
    nonce: str = ""                            # the session's (open pages: the browser's), binds its forms


class _ClockedSigner(TimestampSigner):
    """itsdangerous' timestamp signer, reading the time from `clock` (tests move it)."""

    def __init__(self, *args: Any, clock: Callable[[], float], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.clock = clock

    def get_timestamp(self) -> int:
        return int(self.clock())


class ReviewAuth:
    """Everything the routes ask about access; built once from the settings."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self.limiter = SignInLimiter(settings.redis_url)
        self.username = (settings.review_username or "").strip() or None
        password = settings.review_password.get_secret_value() if settings.review_password else ""
        token = settings.review_token.get_secret_value() if settings.review_token else ""
        self.problem: str | None = None
        self._password_hash: str | None = None
        if password and self.username:
            # Once, at start-up: a plain password is hashed here and only the hash is kept.
            self._password_hash = stored_password_hash(password)
        elif password or self.username:
            self.problem = "REVIEW_USERNAME et REVIEW_PASSWORD doivent être définis ensemble."
            log.warning("review: REVIEW_USERNAME and REVIEW_PASSWORD must both be set; password sign-in is off")
        # The signing key comes from the settings as given (a plain password's hash is salted
        # afresh in each process), so that every worker and host accepts every other's cookies.
        parts = [self.username or "", password if self._password_hash else "", token]
        if settings.review_session_secret:  # appended only when set: other deployments keep their key
            parts.append(settings.review_session_secret.get_secret_value())
        material = "\0".join(parts).encode()
        if cookies_keyed_by_a_hash_alone(settings):
            log.warning("review: REVIEW_PASSWORD is given hashed and neither REVIEW_TOKEN nor "
                        "REVIEW_SESSION_SECRET is set: whoever reads that hash can sign review cookies; "
                        "set REVIEW_SESSION_SECRET, the same on every host")
        del password, parts
        # Only a digest of the token is kept; comparisons are between digests.
        self._token_digest = hashlib.sha256(token.encode()).digest() if token else None
        if token and len(token) < 24:
            log.warning("review: REVIEW_TOKEN is short; use e.g. `python -c 'import secrets; "
                        "print(secrets.token_urlsafe(32))'`")
        if self._password_hash or self._token_digest:
            self.mode: Mode = "signin"
            # Slow derivation: a cookie must not help anyone guess a short password or token offline.
            key = hashlib.pbkdf2_hmac("sha256", material, b"octi-review-session-v3", 100_000)
        else:
            self.mode = mode_without_credentials(settings)
            if settings.public_base_url:
                log.warning("review: PUBLIC_BASE_URL is set but neither REVIEW_USERNAME/REVIEW_PASSWORD nor "
                            "REVIEW_TOKEN: the review pages (/calls) stay closed until they are set "
                            "(`octi review hash-password`)")
            # Open pages still sign their forms: with the same key in every worker.
            open_pages = self.mode == "open"
            key = kept_secret(settings.data_dir, "review-session-key") if open_pages else secrets.token_bytes(32)
        del token, material
        timed = {"signer": _ClockedSigner, "signer_kwargs": {**SIGNING, "clock": clock}}
        self._sessions = URLSafeTimedSerializer(key, salt="octi-review-session", **timed)
        self._csrf = URLSafeTimedSerializer(key, salt="octi-review-csrf", **timed)
        self._forms = Signer(key, salt="octi-review-form", **SIGNING)
        self._local = Signer(key, salt="octi-review-local", **SIGNING)
        self._checks = PasswordChecks()

    # -- what is configured

    @property
    def password_enabled(self) -> bool:
        return self._password_hash is not None

    @property
    def token_enabled(self) -> bool:
        return self._token_digest is not None

    # -- credentials

    async def check_password(self, username: str, password: str) -> Reviewer | None:
        """The hash is checked in a worker thread, and even for a wrong username
        (TooManyPasswordChecks when too many sign-ins wait already)."""
        if self._password_hash is None or self.username is None:
            return None
        same_user = hmac.compare_digest(username.encode(), self.username.encode())
        good = await self._checks.verify(password, self._password_hash)
        return Reviewer(self.username, "password") if same_user and good else None

    def check_token(self, token: str | None) -> Reviewer | None:
        if not token or self._token_digest is None:
            return None
        if hmac.compare_digest(hashlib.sha256(token.encode()).digest(), self._token_digest):
            return Reviewer("jeton", "token")
        return None

    # -- session cookie

    def issue_session(self, reviewer: Reviewer) -> str:
        return self._sessions.dumps({"sub": reviewer.name, "via": reviewer.via, "n": secrets.token_urlsafe(12)})

    def read_session(self, cookie: str | None) -> Reviewer | None:
        """The cookie's reviewer; None when it is missing, tampered with, foreign or expired."""
        if self.mode != "signin" or not cookie:
            return None
        try:
            data = self._sessions.loads(cookie, max_age=SESSION_SECONDS)
        except BadSignature:
            return None
        if not isinstance(data, dict) or data.get("via") not in ("password", "token"):
            return None
        name, nonce = data.get("sub"), data.get("n")
        if not isinstance(name, str) or not isinstance(nonce, str):
            return None
        return Reviewer(name, data["via"], nonce)

    # -- CSRF tokens

    def new_csrf_nonce(self) -> str:
        return secrets.token_urlsafe(16)

    def csrf_token(self, nonce: str) -> str:
        """The sign-in form's token: bound to the nonce of the CSRF cookie, valid CSRF_SECONDS."""
        return self._csrf.dumps(nonce)

    def check_csrf(self, token: str | None, nonce: str | None) -> bool:
        if not token or not nonce:
            return False
        try:
            signed_nonce = self._csrf.loads(token, max_age=CSRF_SECONDS)
        except BadSignature:
            return False
        return isinstance(signed_nonce, str) and hmac.compare_digest(signed_nonce.encode(), nonce.encode())

    def open_to(self, headers: Mapping[str, str]) -> bool:
        """Whether open pages may answer this request: open mode, and not through a proxy."""
        return self.mode == "open" and not through_proxy(headers)

    # -- the open pages' per-browser nonce

    def issue_local(self, nonce: str) -> str:
        return self._local.sign(nonce).decode("ascii")

    def read_local(self, cookie: str | None) -> str | None:
        """The nonce of a LOCAL_COOKIE this service signed; None otherwise."""
        if self.mode != "open" or not cookie:
            return None
        try:
            return self._local.unsign(cookie).decode("ascii")
        except (BadSignature, UnicodeError):
            return None

    def form_token(self, reviewer: Reviewer) -> str:
        """The CSRF token of the forms a reviewer's pages post (sign-out, call-back)."""
        return self._forms.get_signature(reviewer.nonce).decode("ascii")

    def check_form_token(self, reviewer: Reviewer, token: str | None) -> bool:
        # No nonce, no form: a constant one would make one token good for every browser forever.
        return bool(token) and bool(reviewer.nonce) and self._forms.verify_signature(reviewer.nonce, token)
