"""The voice webhook: the form Twilio posts, the TwiML it reads back, and the URLs in it as
Twilio resolves (and signs) them."""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit, urlunsplit

from app.simulators.twilio_wire.media_stream import Violation

TWIML_MAX_BYTES = 64_000  # Twilio rejects bigger documents (error 11750)


def new_sid(prefix: str) -> str:
    """A Twilio-shaped id: two-letter prefix and 32 hex digits (34 characters)."""
    return prefix + secrets.token_hex(16)


# --------------------------------------------------------------------------- webhook parameters


def _country(number: str) -> str:
    # Only the prefixes our callers use; Twilio leaves unknown geo fields empty.
    for prefix, country in (("+33", "FR"), ("+32", "BE"), ("+41", "CH"), ("+352", "LU")):
        if number.startswith(prefix):
            return country
    return ""


def inbound_call_params(*, call_sid: str, account_sid: str, from_number: str, to_number: str,
                        call_status: str = "ringing") -> dict[str, str]:
    """The form fields of Twilio's inbound voice request (geo fields empty, as Twilio often sends them)."""
    from_country, to_country = _country(from_number), _country(to_number)
    return {
        "AccountSid": account_sid,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "CallStatus": call_status,
        "Called": to_number,
        "CalledCity": "",
        "CalledCountry": to_country,
        "CalledState": "",
        "CalledZip": "",
        "Caller": from_number,
        "CallerCity": "",
        "CallerCountry": from_country,
        "CallerState": "",
        "CallerZip": "",
        "Direction": "inbound",
        "From": from_number,
        "FromCity": "",
        "FromCountry": from_country,
        "FromState": "",
        "FromZip": "",
        "To": to_number,
        "ToCity": "",
        "ToCountry": to_country,
        "ToState": "",
        "ToZip": "",
    }


def outbound_call_params(*, call_sid: str, account_sid: str, from_number: str, to_number: str,
                         answered_by: str | None = None) -> dict[str, str]:
    """The form fields of the voice request for a call placed through the REST API, once answered.

    `answered_by` (`human`, `machine_end_beep`…) is only sent when machine detection was asked for.
    """
    params = inbound_call_params(call_sid=call_sid, account_sid=account_sid, from_number=from_number,
                                 to_number=to_number, call_status="in-progress")
    params["Direction"] = "outbound-api"
    if answered_by is not None:
        params["AnsweredBy"] = answered_by
    return params


# --------------------------------------------------------------------------- TwiML


class TwimlError(ValueError):
    """The webhook answer is not TwiML Twilio could execute."""


@dataclass(slots=True)
class StreamSpec:
    url: str
    name: str | None = None
    status_callback: str | None = None
    status_callback_method: str = "POST"
    parameters: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Twiml:
    verbs: list[str] = field(default_factory=list)
    says: list[str] = field(default_factory=list)  # every <Say>, in document order
    says_after_connect: list[str] = field(default_factory=list)
    hangup: bool = False
    hangup_after_connect: bool = False
    stream: StreamSpec | None = None
    connect_action: str | None = None
    connect_method: str = "POST"


def local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def twiml_root(text: str | bytes) -> ET.Element:
    """The <Response> element of a TwiML document Twilio would accept."""
    if len(text) > TWIML_MAX_BYTES:
        raise TwimlError(f"TwiML of {len(text)} bytes is over Twilio's 64 kB limit (error 11750)")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise TwimlError(f"not XML: {exc}") from None
    if local_name(root.tag) != "Response":
        raise TwimlError(f"root element is <{local_name(root.tag)}>, not <Response>")
    return root


def stream_spec(element: ET.Element) -> StreamSpec:
    """A <Stream> element (inside <Connect>) with its <Parameter>s."""
    url = element.get("url")
    if not url:
        raise TwimlError("<Stream> without a url")
    params = {}
    for p in element:
        if local_name(p.tag) == "Parameter" and p.get("name") is not None:
            params[p.get("name")] = p.get("value", "")
    return StreamSpec(url=url, name=element.get("name"), status_callback=element.get("statusCallback"),
                      status_callback_method=(element.get("statusCallbackMethod") or "POST").upper(),
                      parameters=params)


def parse_twiml(text: str | bytes) -> Twiml:
    """Read the verbs the simulator executes: Say, Hangup, Connect/Stream/Parameter."""
    root = twiml_root(text)
    result = Twiml()
    after_connect = False
    for verb in root:
        name = local_name(verb.tag)
        result.verbs.append(name)
        if name == "Say":
            said = "".join(verb.itertext()).strip()
            result.says.append(said)
            if after_connect:
                result.says_after_connect.append(said)
        elif name == "Hangup":
            result.hangup = True
            result.hangup_after_connect = result.hangup_after_connect or after_connect
        elif name == "Connect" and result.stream is None:
            for child in verb:
                if local_name(child.tag) != "Stream":
                    continue
                result.stream = stream_spec(child)
                result.connect_action = verb.get("action")
                result.connect_method = (verb.get("method") or "POST").upper()
                after_connect = True
                break
    return result


def stream_url_warnings(url: str, parameters: dict[str, str]) -> list[Violation]:
    """What Twilio would refuse or alter in a <Stream>; the simulator reports it and goes on."""
    found = []
    parts = urlsplit(url)
    if parts.scheme != "wss":
        found.append(Violation("31922", "stream_url_scheme",
                               f"Twilio only accepts wss:// stream URLs, got {parts.scheme}://"))
    if parts.query:
        found.append(Violation("stream-url-query", "stream_url_query",
                               "query strings on <Stream url> are reported to be stripped by Twilio"))
    for name, value in parameters.items():
        if len(name) + len(value) >= 500:
            found.append(Violation("stream-parameter", "parameter_too_long",
                                   f"<Parameter name={name!r}> is {len(name) + len(value)} characters (limit 500)"))
    return found


# --------------------------------------------------------------------------- URLs


def resolve_twiml_url(url: str, *, document_url: str, websocket: bool) -> str:
    """The absolute URL Twilio would use (and sign) for a possibly relative TwiML URL."""
    if urlsplit(url).scheme:
        return url
    absolute = urlsplit(urljoin(document_url, url))
    scheme = absolute.scheme
    if websocket:
        # A relative stream URL inherits the document's host, on the websocket scheme.
        scheme = "wss" if scheme == "https" else "ws"
    return urlunsplit((scheme, absolute.netloc, absolute.path, absolute.query, ""))


def map_to_server(url: str, *, server_url: str, public_url: str, websocket: bool,
                  tunnels: Mapping[str, str] | None = None) -> str:
    """Where a public URL really lands: the server's address, as a tunnel like ngrok maps it.

    The host and scheme come from `server_url` (https/wss when it is https); a path prefix of
    the public base URL is swapped for the server's own prefix. `tunnels` are further public
    base URLs and the servers they land on (a listener of its own, behind its own tunnel): a URL
    on one of their hosts lands there.
    """
    target = urlsplit(url)
    for other_public, other_server in (tunnels or {}).items():
        if urlsplit(other_public).netloc == target.netloc:
            server_url, public_url = other_server, other_public
            break
    server, public = urlsplit(server_url), urlsplit(public_url)
    secure = server.scheme == "https"
    scheme = ("wss" if secure else "ws") if websocket else ("https" if secure else "http")
    path = target.path or "/"
    public_prefix, server_prefix = public.path.rstrip("/"), server.path.rstrip("/")
    if public_prefix and (path == public_prefix or path.startswith(public_prefix + "/")):
        path = server_prefix + path[len(public_prefix):]
    return urlunsplit((scheme, server.netloc, path, target.query, ""))
