"""Failed browser sign-ins, counted twice, in Redis when the service has one:

- per account and client address: MAX_FAILURES_PER_ACCOUNT in WINDOW_SECONDS, forgotten when
  that account signs in from that address (a farmer who mistyped is not held up later);
- per client address, whatever the account: MAX_FAILURES_PER_CLIENT, which no sign-in resets.
  Otherwise one's own account would reset the count of guesses at someone else's, and trying
  many usernames would give each its own allowance.

As for the review's sign-in (`app/review/limiter.py`), the verdict comes from the count taken
after the password is checked, and a right password past the limit is refused like a wrong one.
`retry_after` beforehand only spares the password check to an address already refused.
"""

from __future__ import annotations

from app.ratelimit import MovingWindowLimit

WINDOW_SECONDS = 15 * 60
MAX_FAILURES_PER_ACCOUNT = 5
MAX_FAILURES_PER_CLIENT = 20


class SignInFailures:
    def __init__(self, redis_url: str | None) -> None:
        self._per_account = MovingWindowLimit(redis_url, limit=MAX_FAILURES_PER_ACCOUNT, window_seconds=WINDOW_SECONDS,
                                              key="octi-web-sign-in", counted="browser sign-in failures")
        self._per_client = MovingWindowLimit(redis_url, limit=MAX_FAILURES_PER_CLIENT, window_seconds=WINDOW_SECONDS,
                                             key="octi-web-sign-in-client", counted="browser sign-in failures")

    async def retry_after(self, client: str, username: str) -> int | None:
        """Seconds before this account may be tried again from `client`, or None when it may now."""
        waits = [await self._per_client.retry_after(client),
                 await self._per_account.retry_after(_account_subject(client, username))]
        return max((wait for wait in waits if wait is not None), default=None)

    async def failed(self, client: str, username: str) -> int | None:
        """Count a wrong password; the seconds to wait when a limit was already reached."""
        if await self._per_client.hit(client) and await self._per_account.hit(_account_subject(client, username)):
            return None
        return await self.retry_after(client, username) or 1

    async def succeeded(self, client: str, username: str) -> int | None:
        """Forget the account's failures from `client`; or the seconds to wait when a limit is reached."""
        wait = await self.retry_after(client, username)
        if wait is None:
            await self._per_account.clear(_account_subject(client, username))
        return wait

    def close(self) -> None:
        self._per_account.close()
        self._per_client.close()


def _account_subject(client: str, username: str) -> str:
    return f"{client}|{username}"
