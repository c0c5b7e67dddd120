"""Password hashes: argon2 (pwdlib) for new ones; earlier PBKDF2 ones (reviewers) still verify.

REVIEW_PASSWORD may be a plain password (hashed with argon2 at start-up, and only the hash is
kept), an argon2 hash made by ``octi review hash-password``, or a
``pbkdf2_sha256$<iterations>$<salt>$<base64 digest>`` hash (Django's format, which earlier
versions printed). Hashing and verifying are CPU work: callers on the event loop run them in a
worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac

import anyio
import argon2
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

PBKDF2_ALGORITHM = "pbkdf2_sha256"
PBKDF2_PREFIX = PBKDF2_ALGORITHM + "$"
ARGON2_PREFIX = "$argon2"

_argon2 = PasswordHash((Argon2Hasher(),))


def hash_password(password: str) -> str:
    """An argon2id hash with pwdlib's recommended parameters."""
    if not password:
        raise ValueError("empty password")
    return _argon2.hash(password)


def _parse_pbkdf2(encoded: str) -> tuple[int, bytes, bytes] | None:
    """(iterations, salt, digest) of a well-formed ``pbkdf2_sha256$…`` hash, else None."""
    parts = encoded.split("$")
    if len(parts) != 4 or parts[0] + "$" != PBKDF2_PREFIX or not parts[2] or not parts[1].isdigit():
        return None
    try:
        digest = base64.b64decode(parts[3], validate=True)
    except binascii.Error:
        return None
    iterations = int(parts[1])
    if iterations < 1 or len(digest) != hashlib.sha256().digest_size:
        return None
    return iterations, parts[2].encode(), digest


def is_password_hash(value: str) -> bool:
    """Whether `value` is a well-formed argon2 or pbkdf2_sha256 hash."""
    if value.startswith(PBKDF2_PREFIX):
        return _parse_pbkdf2(value) is not None
    if value.startswith(ARGON2_PREFIX):
        try:
            argon2.extract_parameters(value)
        except argon2.exceptions.InvalidHashError:
            return False
        return True
    return False


def stored_password_hash(value: str) -> str:
    """REVIEW_PASSWORD as the hash to keep: a hash as is, a plain password hashed now.

    A value that looks like a hash but is malformed raises ValueError, so that a copy-paste
    mistake is found at start-up rather than by a reviewer who can never sign in.
    """
    if value.startswith((PBKDF2_PREFIX, ARGON2_PREFIX)):
        if not is_password_hash(value):
            raise ValueError("REVIEW_PASSWORD looks like a password hash but is malformed")
        return value
    return hash_password(value)


def verify_password(password: str, encoded: str) -> bool:
    """Whether `password` matches `encoded` (argon2 or pbkdf2_sha256), in constant time."""
    legacy = _parse_pbkdf2(encoded)
    if legacy is not None:
        iterations, salt, expected = legacy
        actual = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
        return hmac.compare_digest(actual, expected)
    if not encoded.startswith(ARGON2_PREFIX):
        return False
    return _argon2.verify(password, encoded)


BUSY_RETRY_SECONDS = 5  # what a sign-in turned away for TooManyPasswordChecks is told to wait


class TooManyPasswordChecks(Exception):
    """More sign-ins wait for a password check than may queue: answer « try again later »."""


class PasswordChecks:
    """Password checks one at a time, in a worker thread, at most MAX_WAITING queued behind.

    An argon2 check takes 64 MiB and a core for a moment: a flood of sign-ins must neither
    exhaust memory nor take the cores the calls' audio needs. One per owner (the browser's
    users, the review), made where its event loop runs."""

    MAX_WAITING = 8

    def __init__(self) -> None:
        self._one_at_a_time = asyncio.Semaphore(1)
        self._waiting = 0

    async def verify(self, password: str, encoded: str) -> bool:
        if self._waiting >= self.MAX_WAITING:
            raise TooManyPasswordChecks
        self._waiting += 1
        try:
            async with self._one_at_a_time:
                return await anyio.to_thread.run_sync(verify_password, password, encoded)
        finally:
            self._waiting -= 1
