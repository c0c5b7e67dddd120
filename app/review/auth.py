"""Who may read the call logs: reviewer sign-in, bearer token, signed session cookie.

Modes, decided once from the settings:

* ``signin``: REVIEW_USERNAME + REVIEW_PASSWORD and/or REVIEW_TOKEN are set. Pages need a
  session cookie (got from the sign-in form, or from ``?token=`` once); the JSON API, the
  CSV export and the recording also accept ``Authorization: Bearer <REVIEW_TOKEN>``.
* ``open``: nothing is configured and the server binds loopback only (local development).
  Everything is readable without sign-in; pages show "accès local sans authentification".
* ``disabled``: nothing is configured and the server is reachable from elsewhere. The review
  routes answer 404 with a page explaining how to enable them.

Passwords: a plain REVIEW_PASSWORD is hashed with PBKDF2-SHA256 (random salt) when the
router is built and only the hash is kept; a ``pbkdf2_sha256$<iterations>$<salt>$<base64>``
value (Django's format, made by ``octi review hash-password``) is used as is.

Session cookie: ``v1.<base64url JSON payload>.<base64url HMAC-SHA256>``, HttpOnly,
SameSite=Lax, Secure over HTTPS, for SESSION_SECONDS (the expiry is inside the signed
payload too). The HMAC key is derived (PBKDF2, once at start-up) from the stored password
hash and the token, so changing either signs everyone out. With a pre-hashed password
and/or a token, sessions survive restarts and are shared by workers; with a plain password
the hash's salt is random, so sessions last until the process restarts.

The sign-in form carries a per-form CSRF token (signed, bound to a random nonce held in a
SameSite=Strict cookie) besides the SameSite session cookie. Failed sign-ins and failed
tokens are counted per client IP (in memory); past MAX_FAILURES in WINDOW_SECONDS the IP is
refused with 429 until the window has passed.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import hmac
import json
import logging
import secrets
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import anyio

from app.config import Settings

log = logging.getLogger(__name__)

ALGORITHM = "pbkdf2_sha256"
DEFAULT_ITERATIONS = 600_000        # OWASP 2023 figure for PBKDF2-HMAC-SHA256
SESSION_COOKIE = "octi_review_session"
CSRF_COOKIE = "octi_review_csrf"
SESSION_SECONDS = 12 * 3600
CSRF_SECONDS = 3600
MAX_FAILURES = 5
WINDOW_SECONDS = 15 * 60

Mode = Literal["signin", "open", "disabled"]


# ---------------------------------------------------------------- password hashes

def hash_password(password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: str | None = None) -> str:
    """``pbkdf2_sha256$<iterations>$<salt>$<base64 hash>``, compatible with Django's hasher."""
    if not password:
        raise ValueError("empty password")
    salt = salt or secrets.token_urlsafe(16)
    if "$" in salt:
        raise ValueError("the salt may not contain '$'")
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return f"{ALGORITHM}${iterations}${salt}${base64.b64encode(digest).decode('ascii')}"


def is_password_hash(value: str) -> bool:
    return _parse_hash(value) is not None


def _parse_hash(value: str) -> tuple[int, str, bytes] | None:
    parts = value.split("$")
    if len(parts) != 4 or parts[0] != ALGORITHM:
        return None
    try:
        iterations = int(parts[1])
        expected = base64.b64decode(parts[3], validate=True)
    except ValueError:
        return None
    if iterations < 1 or not parts[2] or len(expected) != 32:
        return None
    return iterations, parts[2], expected


def verify_password(password: str, encoded: str) -> bool:
    """CPU-bound (PBKDF2): call it from a worker thread, not on the event loop."""
    parsed = _parse_hash(encoded)
    if parsed is None:
        return False
    iterations, salt, expected = parsed
    actual = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return hmac.compare_digest(actual, expected)


# ---------------------------------------------------------------- rate limit

class LoginLimiter:
    """Failed attempts per client IP in a sliding window; bounded memory."""

    def __init__(self, max_failures: int = MAX_FAILURES, window_seconds: float = WINDOW_SECONDS,
                 clock: Callable[[], float] = time.monotonic, max_clients: int = 10_000) -> None:
        self.max_failures = max_failures
        self.window = window_seconds
        self.clock = clock
        self.max_clients = max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, client: str) -> deque[float] | None:
        failures = self._failures.get(client)
        if failures is None:
            return None
        horizon = self.clock() - self.window
        while failures and failures[0] <= horizon:
            failures.popleft()
        if not failures:
            del self._failures[client]
            return None
        return failures

    def retry_after(self, client: str) -> int | None:
        """Seconds until `client` may try again, or None when it may try now."""
        failures = self._recent(client)
        if failures is None or len(failures) < self.max_failures:
            return None
        return max(1, int(failures[-self.max_failures] + self.window - self.clock()) + 1)

    def failed(self, client: str) -> None:
        failures = self._recent(client)
        if failures is None:
            failures = self._failures[client] = deque(maxlen=self.max_failures)
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)
        self._failures.move_to_end(client)
        failures.append(self.clock())

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)


# ---------------------------------------------------------------- signing helpers

def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Reviewer:
    name: str                                  # the username, "jeton" or "local"
    via: Literal["password", "token", "local"]
    nonce: str = ""                            # the session's, binds the sign-out form


class ReviewAuth:
    """Everything the routes ask about access; built once from the settings."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time,
                 limiter: LoginLimiter | None = None) -> None:
        self.clock = clock
        self.limiter = limiter or LoginLimiter()
        self.username = (settings.review_username or "").strip() or None
        password = settings.review_password.get_secret_value() if settings.review_password else ""
        token = settings.review_token.get_secret_value() if settings.review_token else ""
        self.problem: str | None = None
        self._password_hash: str | None = None
        if password and self.username:
            if password.startswith(ALGORITHM + "$"):
                if not is_password_hash(password):
                    raise ValueError("REVIEW_PASSWORD looks like a pbkdf2_sha256 hash but is malformed")
                self._password_hash = password
                self._stable = True
            else:
                self._password_hash = hash_password(password)  # random salt: sessions end at restart
                self._stable = False
        elif password or self.username:
            self.problem = "REVIEW_USERNAME et REVIEW_PASSWORD doivent être définis ensemble."
            log.warning("review: REVIEW_USERNAME and REVIEW_PASSWORD must both be set; password sign-in is off")
        del password
        # Only a digest of the token is kept; comparisons are between digests.
        self._token_digest = hashlib.sha256(token.encode()).digest() if token else None
        if token and len(token) < 24:
            log.warning("review: REVIEW_TOKEN is short; use e.g. `python -c 'import secrets; "
                        "print(secrets.token_urlsafe(32))'`")
        if self._password_hash or self._token_digest:
            self.mode: Mode = "signin"
            material = "\0".join([self.username or "", self._password_hash or "", token]).encode()
            self._key = hashlib.pbkdf2_hmac("sha256", material, b"octi-review-session-v1", 100_000)
        else:
            self.mode = "open" if settings.binds_loopback_only else "disabled"
            self._key = secrets.token_bytes(32)
        del token

    # -- what is configured

    @property
    def password_enabled(self) -> bool:
        return self._password_hash is not None

    @property
    def token_enabled(self) -> bool:
        return self._token_digest is not None

    # -- credentials

    async def check_password(self, username: str, password: str) -> Reviewer | None:
        """PBKDF2 runs in a worker thread, and runs even for a wrong username."""
        if self._password_hash is None or self.username is None:
            return None
        same_user = hmac.compare_digest(username.encode(), self.username.encode())
        good = await anyio.to_thread.run_sync(verify_password, password, self._password_hash)
        return Reviewer(self.username, "password") if same_user and good else None

    def check_token(self, token: str | None) -> Reviewer | None:
        if not token or self._token_digest is None:
            return None
        if hmac.compare_digest(hashlib.sha256(token.encode()).digest(), self._token_digest):
            return Reviewer("jeton", "token")
        return None

    # -- session cookie

    def _sign(self, purpose: str, payload: bytes) -> str:
        return _b64(hmac.new(self._key, purpose.encode() + b"\0" + payload, hashlib.sha256).digest())

    def issue_session(self, reviewer: Reviewer) -> str:
        payload = json.dumps({"sub": reviewer.name, "via": reviewer.via, "exp": int(self.clock()) + SESSION_SECONDS,
                              "n": secrets.token_urlsafe(12)}, separators=(",", ":")).encode()
        return f"v1.{_b64(payload)}.{self._sign('session', payload)}"

    def read_session(self, cookie: str | None) -> Reviewer | None:
        if self.mode != "signin" or not cookie:
            return None
        try:
            version, body, signature = cookie.split(".")
            payload = _unb64(body)
        except ValueError:
            return None
        if version != "v1" or not hmac.compare_digest(signature, self._sign("session", payload)):
            return None
        try:
            data = json.loads(payload)
            expires, name, via, nonce = int(data["exp"]), str(data["sub"]), data["via"], str(data["n"])
        except (ValueError, KeyError, TypeError):
            return None
        if expires <= self.clock() or via not in ("password", "token"):
            return None
        return Reviewer(name, via, nonce)

    # -- CSRF tokens

    def new_csrf_nonce(self) -> str:
        return secrets.token_urlsafe(16)

    def csrf_token(self, nonce: str) -> str:
        """The sign-in form's token: bound to the nonce of the CSRF cookie, valid CSRF_SECONDS."""
        issued = str(int(self.clock()))
        return f"{issued}.{self._sign('csrf', f'{nonce}.{issued}'.encode())}"

    def check_csrf(self, token: str | None, nonce: str | None) -> bool:
        if not token or not nonce:
            return False
        issued, _, signature = token.partition(".")
        if not issued.isdigit() or self.clock() - int(issued) > CSRF_SECONDS:
            return False
        return hmac.compare_digest(signature, self._sign("csrf", f"{nonce}.{issued}".encode()))

    def logout_token(self, reviewer: Reviewer) -> str:
        return self._sign("logout", reviewer.nonce.encode())

    def check_logout(self, reviewer: Reviewer, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(token, self.logout_token(reviewer))


# ---------------------------------------------------------------- command line

def cli(argv: list[str]) -> int:
    """``octi review hash-password``: print a REVIEW_PASSWORD value that holds no clear password."""
    parser = argparse.ArgumentParser(prog="octi review", description="Reviewer access to the call logs.")
    commands = parser.add_subparsers(dest="command", required=True)
    hashing = commands.add_parser("hash-password", help="hash a password for REVIEW_PASSWORD")
    hashing.add_argument("--stdin", action="store_true", help="read the password from standard input")
    hashing.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("the passwords differ", file=sys.stderr)
            return 1
    if not password:
        print("empty password", file=sys.stderr)
        return 1
    print(hash_password(password, iterations=args.iterations))
    print("Set it as REVIEW_PASSWORD (in a .env file as is; in docker-compose double each '$').",
          file=sys.stderr)
    return 0
