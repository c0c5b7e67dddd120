"""Failed sign-ins per client address: a client with MAX_FAILURES failures (wrong password or
token) in the last WINDOW_SECONDS is refused until the oldest leaves that window; a successful
sign-in forgets its failures.

The verdict comes after the credentials are checked, from the count itself (`failed`,
`succeeded`): checking a count first and adding to it later would let guesses sent in parallel
all pass before any is counted. A right answer from a refused address is refused like a wrong
one, so that guessing on past the limit tells nothing.
"""

from __future__ import annotations

from app.ratelimit import MovingWindowLimit

MAX_FAILURES = 5
WINDOW_SECONDS = 15 * 60


class SignInLimiter(MovingWindowLimit):
    def __init__(self, redis_url: str | None = None, *, max_failures: int = MAX_FAILURES,
                 window_seconds: int = WINDOW_SECONDS) -> None:
        super().__init__(redis_url, limit=max_failures, window_seconds=window_seconds,
                         key="octi-review-sign-in", counted="review sign-in failures")

    async def failed(self, client: str) -> int | None:
        """Count a failure; the seconds to wait when the client was already at its limit."""
        if await self.hit(client):
            return None
        return await self.retry_after(client) or 1

    async def succeeded(self, client: str) -> int | None:
        """Forget the client's failures; or the seconds to wait when it is at its limit."""
        wait = await self.retry_after(client)
        if wait is None:
            await self.clear(client)
        return wait
