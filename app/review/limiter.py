"""Failed sign-ins per client address: a client with MAX_FAILURES failures (wrong password or
token) in the last WINDOW_SECONDS is refused until the oldest leaves that window; a successful
sign-in forgets its failures."""

from __future__ import annotations

from app.ratelimit import MovingWindowLimit

MAX_FAILURES = 5
WINDOW_SECONDS = 15 * 60


class SignInLimiter(MovingWindowLimit):
    def __init__(self, redis_url: str | None = None, *, max_failures: int = MAX_FAILURES,
                 window_seconds: int = WINDOW_SECONDS) -> None:
        super().__init__(redis_url, limit=max_failures, window_seconds=window_seconds,
                         key="octi-review-sign-in", counted="review sign-in failures")

    async def failed(self, client: str) -> None:
        await self.hit(client)

    async def succeeded(self, client: str) -> None:
        await self.clear(client)
