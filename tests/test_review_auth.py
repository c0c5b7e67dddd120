"""Reviewer access underneath the pages: password hashes (argon2, and the PBKDF2 ones earlier
versions printed), `octi review hash-password`, the CSRF tokens, and the sign-in rate limit in
memory and in Redis.

The Redis cases use the server at 127.0.0.1:6379 (OCTI_TEST_REDIS_URL to change it). Without a
reachable Redis they are skipped, except in CI (CI=true) where they fail.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import pty
import secrets
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.cli_runner import run_octi
from app.review.auth import CSRF_COOKIE, CSRF_SECONDS, SESSION_COOKIE, ReviewAuth, Reviewer
from app.review.cli import review
from app.review.limiter import MAX_FAILURES, SignInLimiter
from app.accounts.passwords import is_password_hash, verify_password
from tests.harness import free_loopback_port
from tests.test_review_pages import (
    CHEAP_ARGON2,
    PASSWORD,
    PASSWORD_HASH,
    TOKEN,
    USER,
    FakeReader,
    client,
    csrf_of,
    make_app,
    review_settings,
    sample_calls,
    sign_in,
    signin_settings,
)

ROOT = Path(__file__).resolve().parent.parent
# Django's published test vector for its PBKDF2 hasher: the format earlier versions printed.
DJANGO_PBKDF2 = "pbkdf2_sha256$30000$seasalt$VrX+V8drCGo68wlvy6rfu8i1d1pfkdeXA4LJkRGJodY="


def old_pbkdf2_hash(password: str, salt: str = "Zm9vYmFyYmF6", iterations: int = 600_000) -> str:
    """A REVIEW_PASSWORD as the former `octi review hash-password` printed it."""
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return f"pbkdf2_sha256${iterations}${salt}${base64.b64encode(digest).decode()}"


def new_client() -> str:
    """A client address of its own, so that runs sharing a Redis never count each other's failures."""
    return f"2001:db8::{secrets.token_hex(2)}:{secrets.token_hex(2)}"


@pytest.fixture
def reader() -> FakeReader:
    return FakeReader(sample_calls())


@pytest.fixture(params=["memory", "redis"])
def limiter_url(request) -> str | None:
    return None if request.param == "memory" else request.getfixturevalue("redis_url")


# ---------------------------------------------------------------- password hashes

def test_an_old_pbkdf2_hash_still_verifies():
    assert verify_password("lètmein", DJANGO_PBKDF2)
    assert not verify_password("letmein", DJANGO_PBKDF2)
    encoded = old_pbkdf2_hash("s3cret", iterations=1_000)
    assert verify_password("s3cret", encoded) and not verify_password("S3cret", encoded)
    salt, digest = encoded.split("$")[2:]
    for malformed in (f"pbkdf2_sha256$1000${salt}$notbase64!", f"pbkdf2_sha256$1000${salt}$QUJD",
                      f"pbkdf2_sha256$0${salt}${digest}", f"pbkdf2_sha256$1000$${digest}",
                      f"pbkdf2_sha1$1000${salt}${digest}", "s3cret"):
        assert not verify_password("s3cret", malformed), malformed


async def test_an_old_pbkdf2_review_password_still_signs_in(reader):
    settings = review_settings(review_username=USER, review_password=old_pbkdf2_hash(PASSWORD))
    async with client(make_app(reader, settings)) as http:
        assert (await sign_in(http, password="not it")).status_code == 401
        assert (await sign_in(http)).status_code == 303
        assert (await http.get("/calls")).status_code == 200


async def test_an_argon2_hash_from_hash_password_verifies_and_signs_in(reader):
    result = CliRunner().invoke(review, ["hash-password", "--stdin"], input=f"{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    printed = result.stdout.strip()
    assert printed.startswith("$argon2id$") and PASSWORD not in printed
    assert "REVIEW_PASSWORD" in result.stderr
    assert verify_password(PASSWORD, printed) and not verify_password(PASSWORD + "!", printed)
    again = CliRunner().invoke(review, ["hash-password", "--stdin"], input=f"{PASSWORD}\n").stdout.strip()
    assert again != printed                  # a random salt each time
    async with client(make_app(reader, review_settings(review_username=USER, review_password=printed))) as http:
        assert (await sign_in(http, password="not it")).status_code == 401
        assert (await sign_in(http)).status_code == 303


def test_a_malformed_hash_in_review_password_stops_the_start():
    assert is_password_hash(DJANGO_PBKDF2) and is_password_hash(CHEAP_ARGON2.hash("x"))
    assert not is_password_hash("plain password")
    for malformed in ("pbkdf2_sha256$broken", "$argon2id$v=19$m=65536,t=3,p=4", "$argon2id$garbage"):
        assert not is_password_hash(malformed)
        with pytest.raises(ValueError, match="malformed"):
            ReviewAuth(review_settings(review_username=USER, review_password=malformed))


def test_hash_password_through_octi():
    printed = run_octi("review", "hash-password", "--stdin", input="from stdin\n")
    assert printed.exit_code == 0
    assert printed.stdout.strip().startswith("$argon2id$") and verify_password("from stdin", printed.stdout.strip())
    empty = run_octi("review", "hash-password", "--stdin", input="\n")
    assert empty.exit_code == 1 and "empty password" in empty.stderr
    assert run_octi("review", "--help").exit_code == 0 and "hash-password" in run_octi("review", "--help").stdout
    assert run_octi("review", "no-such-command").exit_code == 2


def _read_until(terminal: int, wanted: bytes, transcript: bytearray, deadline: float) -> None:
    """Read the terminal into `transcript` until `wanted` shows up (or it closes)."""
    while wanted not in transcript:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out waiting for {wanted!r}; got {bytes(transcript)!r}"
        ready, _, _ = select.select([terminal], [], [], remaining)
        if not ready:
            continue
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # the command exited and closed the terminal
            return
        if not chunk:
            return
        transcript += chunk


def test_hash_password_prompts_twice_without_echo_on_a_terminal():
    secret = "pas vu à l'écran"
    leader, follower = pty.openpty()
    command = "from app.review.cli import review; review(['hash-password'], prog_name='octi review')"
    process = subprocess.Popen([sys.executable, "-c", command], stdin=follower, stdout=follower, stderr=follower,
                               cwd=ROOT, start_new_session=True)
    os.close(follower)
    transcript = bytearray()
    deadline = time.monotonic() + 30
    try:
        _read_until(leader, b"Password: ", transcript, deadline)
        os.write(leader, f"{secret}\n".encode())
        _read_until(leader, b"Again: ", transcript, deadline)
        os.write(leader, f"{secret}\n".encode())
        _read_until(leader, b"REVIEW_PASSWORD", transcript, deadline)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
        os.close(leader)
    shown = transcript.decode()
    assert secret not in shown
    printed = next(line.strip() for line in shown.splitlines() if line.startswith("$argon2id$"))
    assert verify_password(secret, printed)


# ---------------------------------------------------------------- CSRF

async def test_csrf_is_refused_without_a_valid_token(reader):
    now = [1_800_000_000.0]
    auth = ReviewAuth(signin_settings(), clock=lambda: now[0])
    async with client(make_app(reader, signin_settings(), auth=auth)) as http:
        credentials = {"username": USER, "password": PASSWORD, "next": "/calls"}
        form = await http.get("/review/login")
        nonce_cookie = next(h for h in form.headers.get_list("set-cookie") if h.startswith(CSRF_COOKIE))
        assert "HttpOnly" in nonce_cookie and "SameSite=strict" in nonce_cookie
        assert "Path=/review/login" in nonce_cookie and f"Max-Age={CSRF_SECONDS}" in nonce_cookie
        assert (await http.post("/review/login", data=credentials)).status_code == 403
        assert (await http.post("/review/login", data={**credentials, "csrf": ""})).status_code == 403
        # (A refused form comes back with a new nonce cookie: take the token of the latest form.)
        token = csrf_of((await http.get("/review/login")).text)
        now[0] += CSRF_SECONDS + 1                                       # the form sat too long
        stale = await http.post("/review/login", data={**credentials, "csrf": token})
        assert stale.status_code == 403 and "formulaire a expiré" in stale.text
        assert SESSION_COOKIE not in http.cookies
        fresh = csrf_of((await http.get("/review/login")).text)
        assert (await http.post("/review/login", data={**credentials, "csrf": fresh})).status_code == 303

        page = await http.get("/calls")
        for forged in ({}, {"csrf": ""}, {"csrf": csrf_of(page.text)[:-1]}, {"csrf": fresh}):
            refused = await http.post("/review/logout", data=forged)
            assert refused.status_code == 403 and "Requête refusée" in refused.text, forged
        assert (await http.get("/calls")).status_code == 200                # still signed in


# ---------------------------------------------------------------- the sign-in rate limit

@pytest.fixture
async def limiters():
    """Makes SignInLimiters and closes them (their Redis connections) after the test, on its loop."""
    made: list[SignInLimiter] = []

    def make(*args, **kwargs) -> SignInLimiter:
        made.append(SignInLimiter(*args, **kwargs))
        return made[-1]

    yield make
    for limiter in made:
        limiter.close()


async def test_the_limit_blocks_after_max_failures_and_forgets_them(limiter_url, limiters):
    limiter = limiters(limiter_url, max_failures=3, window_seconds=2)
    attacker, colleague = new_client(), new_client()
    for _ in range(2):
        assert await limiter.failed(attacker) is None
    assert await limiter.succeeded(attacker) is None         # a success forgets the failures
    for _ in range(3):
        assert await limiter.retry_after(attacker) is None
        assert await limiter.failed(attacker) is None
    assert 1 <= await limiter.retry_after(attacker) <= 2
    assert 1 <= await limiter.failed(attacker) <= 2          # one more is refused, not counted
    assert await limiter.succeeded(attacker) is not None     # so is the right answer, past the limit
    assert await limiter.retry_after(colleague) is None
    await asyncio.sleep(2.2)                                 # the window moves past them
    assert await limiter.retry_after(attacker) is None


async def test_redis_shares_the_count_between_workers(redis_url, limiters):
    first, second = (limiters(redis_url, max_failures=3, window_seconds=5) for _ in range(2))
    attacker = new_client()
    await first.failed(attacker)
    await second.failed(attacker)
    assert await second.succeeded(attacker) is None
    await first.failed(attacker)
    await second.failed(attacker)
    await first.failed(attacker)
    assert await first.retry_after(attacker) is not None and await second.retry_after(attacker) is not None

async def test_sign_in_attempts_are_limited_across_workers_with_redis(reader, redis_url):
    settings = signin_settings(redis_url=redis_url)
    worker, other_worker = make_app(reader, settings), make_app(reader, settings)
    attacker, colleague = new_client(), new_client()
    # Each app's lifespan, as a server runs it: the review router's closes its Redis connections.
    async with worker.router.lifespan_context(worker), other_worker.router.lifespan_context(other_worker):
        async with client(worker, ip=attacker) as http, client(other_worker, ip=attacker) as elsewhere:
            for _ in range(MAX_FAILURES):
                assert (await sign_in(http, password="guess")).status_code == 401
            blocked = await sign_in(elsewhere)
            assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
        async with client(other_worker, ip=colleague) as http:
            assert (await sign_in(http)).status_code == 303


async def test_guesses_sent_all_at_once_are_counted_before_any_is_answered(reader, redis_url):
    """Thirty wrong tokens at once from one address: no more than MAX_FAILURES are answered as
    wrong (each is counted before its answer, not checked against a count taken earlier), the
    rest are refused, and so is the right token afterwards."""
    app = make_app(reader, signin_settings(redis_url=redis_url))
    async with app.router.lifespan_context(app), client(app, ip=new_client()) as http:
        answers = await asyncio.gather(*(http.get("/api/calls", headers={"Authorization": f"Bearer guess-{n}"})
                                         for n in range(30)))
        right = await http.get("/api/calls", headers={"Authorization": f"Bearer {TOKEN}"})
    statuses = [answer.status_code for answer in answers]
    assert statuses.count(401) == MAX_FAILURES and statuses.count(429) == 30 - MAX_FAILURES
    assert right.status_code == 429

async def test_an_unreachable_redis_falls_back_to_memory_and_sign_in_still_works(reader, caplog):
    unreachable = f"redis://:hunter2-secret@127.0.0.1:{free_loopback_port()}/0"
    app = make_app(reader, signin_settings(redis_url=unreachable))
    with caplog.at_level(logging.WARNING, logger="app.review"):
        async with client(app, ip=new_client()) as http:
            assert (await sign_in(http)).status_code == 303
            assert (await http.get("/calls")).status_code == 200
        async with client(app, ip=new_client()) as attacker:
            for _ in range(MAX_FAILURES):
                assert (await sign_in(attacker, password="guess")).status_code == 401
            assert (await sign_in(attacker)).status_code == 429        # counted in memory meanwhile
    warnings = [record for record in caplog.records if "Redis" in record.getMessage()]
    assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage()  # once, not per request
    assert "hunter2-secret" not in caplog.text


def test_a_redis_url_of_another_kind_is_refused():
    with pytest.raises(ValueError, match="REDIS_URL"):
        SignInLimiter("http://127.0.0.1:6379")


def test_every_worker_accepts_the_others_sessions_and_forms(tmp_path):
    """Workers and hosts each start from the same settings: a plain password, hashed with a salt
    of its own in each process, or open pages on a loopback server, must still sign alike."""
    signing_in = {"review_username": USER, "review_password": "plain secret", "review_token": "t" * 32}
    first, second = (ReviewAuth(review_settings(**signing_in)) for _ in range(2))
    reviewer = second.read_session(first.issue_session(Reviewer(USER, "password")))
    assert reviewer is not None and second.check_form_token(reviewer, first.form_token(reviewer))
    assert second.check_csrf(first.csrf_token("nonce"), "nonce")
    first, second = (ReviewAuth(review_settings(host="127.0.0.1", data_dir=tmp_path)) for _ in range(2))
    assert first.mode == "open" and second.check_csrf(first.csrf_token("nonce"), "nonce")
    local = Reviewer("local", "local", "n")
    assert second.check_form_token(local, first.form_token(local))


def test_a_review_password_given_hashed_signs_no_cookie_without_the_session_secret(caplog):
    """The hash in REVIEW_PASSWORD is meant to be safe to keep in a deployment's settings: with
    REVIEW_SESSION_SECRET set, whoever reads it (and the user name) still cannot sign a cookie."""
    with caplog.at_level(logging.WARNING, logger="app.review.auth"):
        ReviewAuth(review_settings(review_username=USER, review_password=PASSWORD_HASH))
    assert "REVIEW_SESSION_SECRET" in caplog.text, "the start says what is exposed"
    caplog.clear()
    secret = secrets.token_urlsafe(32)
    with caplog.at_level(logging.WARNING, logger="app.review.auth"):
        worker, other_host = (ReviewAuth(review_settings(review_username=USER, review_password=PASSWORD_HASH,
                                                         review_session_secret=secret)) for _ in range(2))
    assert "REVIEW_SESSION_SECRET" not in caplog.text
    forger = ReviewAuth(review_settings(review_username=USER, review_password=PASSWORD_HASH))
    forged = forger.issue_session(Reviewer(USER, "password"))
    assert worker.read_session(forged) is None
    assert worker.check_csrf(forger.csrf_token("nonce"), "nonce") is False
    reviewer = other_host.read_session(worker.issue_session(Reviewer(USER, "password")))
    assert reviewer is not None and reviewer.name == USER, "every host with the secret accepts the others' cookies"
