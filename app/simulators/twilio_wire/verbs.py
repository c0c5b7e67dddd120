"""TwiML as an ordered list of verbs, for running a document step by step (after a REST redirect,
a <Dial> action, a whisper): Say, Pause, Hangup, Dial/Number, Connect/Stream, Record. Other verbs are
kept by name and skipped."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from app.simulators.twilio_wire.webhook import StreamSpec, TwimlError, local_name, stream_spec, twiml_root

DIAL_TIMEOUT_DEFAULT = 30  # seconds Twilio lets a <Dial> ring
PAUSE_DEFAULT = 1
RECORD_MAX_LENGTH_DEFAULT = 3600


@dataclass(frozen=True, slots=True)
class Say:
    text: str


@dataclass(frozen=True, slots=True)
class Pause:
    seconds: float


@dataclass(frozen=True, slots=True)
class Hangup:
    pass


@dataclass(frozen=True, slots=True)
class DialNumber:
    number: str
    url: str | None = None  # the whisper: TwiML run for the callee before the two are connected
    method: str = "POST"


@dataclass(frozen=True, slots=True)
class Dial:
    numbers: list[DialNumber]
    timeout: float = DIAL_TIMEOUT_DEFAULT
    action: str | None = None
    method: str = "POST"
    caller_id: str | None = None


@dataclass(frozen=True, slots=True)
class ConnectStream:
    stream: StreamSpec
    action: str | None = None
    method: str = "POST"


@dataclass(frozen=True, slots=True)
class Record:
    """A voicemail: the caller's message, then its action URL gets the recording."""

    action: str | None = None
    method: str = "POST"
    max_length: float = RECORD_MAX_LENGTH_DEFAULT


@dataclass(frozen=True, slots=True)
class Unsupported:
    name: str


Verb = Say | Pause | Hangup | Dial | ConnectStream | Record | Unsupported


@dataclass(slots=True)
class VerbList:
    verbs: list[Verb] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        """The verbs' TwiML names, as `Twiml.verbs` has them."""
        return [v.name if isinstance(v, Unsupported) else "Connect" if isinstance(v, ConnectStream)
                else type(v).__name__ for v in self.verbs]

    @property
    def says(self) -> list[str]:
        return [v.text for v in self.verbs if isinstance(v, Say)]


def _number(text: str, label: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise TwimlError(f"{label} {text!r} is not a number") from None


def _dial(element: ET.Element) -> Dial:
    numbers = [DialNumber(number="".join(child.itertext()).strip(), url=child.get("url"),
                          method=(child.get("method") or "POST").upper())
               for child in element if local_name(child.tag) == "Number"]
    bare = (element.text or "").strip()
    if bare:
        numbers.insert(0, DialNumber(number=bare))
    if not numbers:
        raise TwimlError("<Dial> without a number")
    return Dial(numbers=numbers, timeout=_number(element.get("timeout", str(DIAL_TIMEOUT_DEFAULT)), "<Dial timeout>"),
                action=element.get("action"), method=(element.get("method") or "POST").upper(),
                caller_id=element.get("callerId"))


def parse_verbs(text: str | bytes) -> VerbList:
    """The document's verbs in order; TwimlError when Twilio could not run it."""
    result = VerbList()
    for element in twiml_root(text):
        name = local_name(element.tag)
        if name == "Say":
            result.verbs.append(Say("".join(element.itertext()).strip()))
        elif name == "Pause":
            result.verbs.append(Pause(_number(element.get("length", str(PAUSE_DEFAULT)), "<Pause length>")))
        elif name == "Hangup":
            result.verbs.append(Hangup())
        elif name == "Record":
            result.verbs.append(Record(action=element.get("action"), method=(element.get("method") or "POST").upper(),
                                       max_length=_number(element.get("maxLength", str(RECORD_MAX_LENGTH_DEFAULT)),
                                                          "<Record maxLength>")))
        elif name == "Dial":
            result.verbs.append(_dial(element))
        elif name == "Connect":
            streams = [child for child in element if local_name(child.tag) == "Stream"]
            if not streams:
                result.verbs.append(Unsupported("Connect"))
                continue
            result.verbs.append(ConnectStream(stream_spec(streams[0]), action=element.get("action"),
                                              method=(element.get("method") or "POST").upper()))
        else:
            result.verbs.append(Unsupported(name))
    return result
