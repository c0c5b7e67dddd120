"""Twilio's REST API, awaited on the event loop: ending or redirecting a live call, SMS, call-outs.

twilio-python's `*_async` methods over its aiohttp client (`AsyncTwilioHttpClient`), so a
request never blocks the loop. `TWILIO_API_BASE` points the client at another host (the
local impersonator in `app.simulators.twilio_rest`) by rewriting the URLs the library builds.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_incrementing
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from app.config import Settings
from app.logs import mask_phone

log = logging.getLogger(__name__)

TWILIO_API = "https://api.twilio.com"
TWIML_MAX_CHARS = 4000  # the REST `Twiml` parameter's limit (Twilio error 32018)
CALL_NOT_FOUND = 20404  # the call does not exist, or has already ended
REQUEST_TIMEOUT_SECONDS = 10.0
# Only updates are retried: setting a call's status or TwiML twice does what doing it once does,
# whereas creating a message or a call twice would text or ring the farmer twice.
UPDATE_ATTEMPTS = 3
RETRY_BACKOFF_SECONDS = 0.25

T = TypeVar("T")


class TwilioRestError(Exception):
    """A refused or failed REST request. `status` is the HTTP status (None when no answer came),
    `code` Twilio's error code when it gave one."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status >= 500


class ReroutedHttpClient(AsyncTwilioHttpClient):
    """The library's aiohttp client, sending `https://api.twilio.com/…` to `api_base` instead
    when one is set, with a default timeout, and with transport failures as TwilioRestError."""

    def __init__(self, api_base: str | None, *, timeout: float = REQUEST_TIMEOUT_SECONDS) -> None:
        super().__init__(timeout=timeout)
        self.api_base = api_base.rstrip("/") if api_base else None
        self.default_timeout = timeout

    async def request(self, method: str, url: str, params: dict[str, object] | None = None,
                      data: dict[str, object] | None = None, headers: dict[str, str] | None = None,
                      auth: tuple[str, str] | None = None, timeout: float | None = None,
                      allow_redirects: bool = False) -> Response:
        if self.api_base and (url == TWILIO_API or url.startswith(TWILIO_API + "/")):
            url = self.api_base + url[len(TWILIO_API):]
        if auth is not None:
            # As a header: aiohttp deprecates its `auth` argument (the library never logs this header).
            credentials = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            headers = {**(headers or {}), "Authorization": f"Basic {credentials}"}
        try:
            return await super().request(method, url, params=params, data=data, headers=headers, auth=None,
                                         timeout=timeout if timeout is not None else self.default_timeout,
                                         allow_redirects=allow_redirects)
        except TimeoutError:
            raise TwilioRestError(f"Twilio's REST API did not answer {method} {url} in time") from None
        except aiohttp.ClientError as exc:
            raise TwilioRestError(f"Twilio's REST API is unreachable ({method} {url}): "
                                  f"{type(exc).__name__}: {exc}") from None


class TwilioRest:
    """The calls this service makes to Twilio's REST API; one instance for the service's life."""

    def __init__(self, settings: Settings) -> None:
        self._account_sid = settings.twilio_account_sid or ""
        self._auth_token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else ""
        self._api_base = settings.twilio_api_base
        self._phone_number = settings.twilio_phone_number
        self._http: ReroutedHttpClient | None = None
        self._client: Client | None = None

    @property
    def configured(self) -> bool:
        return bool(self._account_sid and self._auth_token)

    @property
    def sends_sms(self) -> bool:
        return self.configured and bool(self._phone_number)

    def _api(self) -> Client:
        if not self.configured:
            raise TwilioRestError("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are not both set")
        if self._client is None:
            # Built on first use, inside the loop: aiohttp binds its session to the running loop.
            self._http = ReroutedHttpClient(self._api_base)
            self._client = Client(self._account_sid, self._auth_token, http_client=self._http)
        return self._client

    def _from_number(self) -> str:
        if not self._phone_number:
            raise TwilioRestError("TWILIO_PHONE_NUMBER is not set: no number to call or text from")
        return self._phone_number

    async def hang_up(self, call_sid: str) -> None:
        """End a live call; a call that has already ended counts as hung up."""
        api = self._api()
        try:
            await self._idempotent(lambda: api.calls(call_sid).update_async(status="completed"))
        except TwilioRestError as exc:
            if exc.status == 404 or exc.code == CALL_NOT_FOUND:
                log.info("call %s had already ended when we hung up", call_sid)
                return
            raise
        log.info("hung up call %s through the REST API", call_sid)

    async def redirect(self, call_sid: str, twiml: str) -> None:
        """Replace the TwiML a live call runs (its media stream ends)."""
        if len(twiml) > TWIML_MAX_CHARS:
            raise TwilioRestError(f"TwiML of {len(twiml)} characters is over Twilio's {TWIML_MAX_CHARS} "
                                  "(error 32018); serve it from a URL instead", code=32018)
        api = self._api()
        await self._idempotent(lambda: api.calls(call_sid).update_async(twiml=twiml))
        log.info("redirected call %s to new TwiML through the REST API", call_sid)

    async def send_sms(self, to: str, body: str) -> str:
        """Text `body` to `to` from TWILIO_PHONE_NUMBER; returns the message SID."""
        api, from_ = self._api(), self._from_number()
        message = await _translated(lambda: api.messages.create_async(to=to, from_=from_, body=body))
        log.info("SMS %s queued for %s", message.sid, mask_phone(to))
        return message.sid

    async def place_call(self, to: str, *, url: str, status_callback: str | None = None,
                         machine_detection: bool = False) -> str:
        """Call `to` from TWILIO_PHONE_NUMBER; Twilio fetches the call's TwiML from `url`. Returns the call SID."""
        api, from_ = self._api(), self._from_number()
        options: dict[str, str] = {}
        if status_callback:
            options["status_callback"] = status_callback
        if machine_detection:
            options["machine_detection"] = "Enable"
        call = await _translated(lambda: api.calls.create_async(to=to, from_=from_, url=url, **options))
        log.info("placed call %s to %s", call.sid, mask_phone(to))
        return call.sid

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
            self._client = None

    async def _idempotent(self, request: Callable[[], Awaitable[T]]) -> T:
        """Run an idempotent request, again after a transport failure or a 5xx, a bounded number of times."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(UPDATE_ATTEMPTS),
            wait=wait_incrementing(RETRY_BACKOFF_SECONDS, RETRY_BACKOFF_SECONDS),
            retry=retry_if_exception(lambda exc: isinstance(exc, TwilioRestError) and exc.retryable),
            before_sleep=lambda state: log.warning("Twilio REST request failed (%s), attempt %d of %d",
                                                   state.outcome.exception(), state.attempt_number, UPDATE_ATTEMPTS),
            reraise=True)
        return await retrying(_translated, request)


async def _translated(request: Callable[[], Awaitable[T]]) -> T:
    """The library's refusals as TwilioRestError (transport failures already are)."""
    try:
        return await request()
    except TwilioRestException as exc:
        # Without a code in the answer the library puts the HTTP status there.
        code = exc.code if isinstance(exc.code, int) and exc.code != exc.status else None
        raise TwilioRestError(f"Twilio refused the request (HTTP {exc.status}): {exc.msg}",
                              status=exc.status, code=code) from None
    except TwilioServiceException as exc:  # the newer problem-details error shape
        raise TwilioRestError(f"Twilio refused the request (HTTP {exc.status}): {exc.title} {exc.detail or ''}",
                              status=exc.status, code=exc.code) from None
