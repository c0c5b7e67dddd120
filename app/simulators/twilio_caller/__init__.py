"""A simulated phone caller that behaves exactly as Twilio does towards our server (`octi call`).

It sends the signed voice webhook, executes the TwiML answer (records `<Say>`, honours
`<Hangup/>`, opens the `<Connect><Stream>`), then plays the Twilio side of a bidirectional
Media Stream in real time: a `media` frame every 20 ms for the whole call, scripted caller
speech from WAV files, noise bursts, DTMF, and a playback buffer with Twilio's mark/clear semantics, so
what the caller *hears* (and when) is recorded sample-accurately. Everything the server sends
is validated like Twilio would (warnings 31950/31951) and recorded, never fatal.

Used by people (no phone needed), by tests and by benchmarks, through the server's real sockets.

The parts: `call` runs one call (`place_call`) from the `script`: `webhooks` for Twilio's HTTP
requests, `stream` for the media stream with the caller's `speech` and the `playback` buffer,
all recorded on the `timeline` into `records`; `summary` and `command` are for `octi call`.
With `place_call(..., rest_api=...)` the call is `live` for Twilio's REST API impersonator
(`app.simulators.twilio_rest`), and `legs` runs what its updates ask for.
"""

from app.simulators.twilio_caller.call import place_call
from app.simulators.twilio_caller.command import cli
from app.simulators.twilio_caller.playback import BURST_GAP_MS, Playback
from app.simulators.twilio_caller.records import (
    Burst,
    CallResult,
    Clear,
    DialRecord,
    MarkEcho,
    StreamSegment,
    TwimlRun,
    UtteranceRecord,
)
from app.simulators.twilio_caller.script import Advisor, CallScript, NoiseBurst, Utterance
from app.simulators.twilio_caller.stream import SKIP, STREAM_USER_AGENT, SendHook
from app.simulators.twilio_caller.webhooks import WEBHOOK_PATH, WEBHOOK_USER_AGENT

__all__ = [
    "BURST_GAP_MS",
    "SKIP",
    "STREAM_USER_AGENT",
    "WEBHOOK_PATH",
    "WEBHOOK_USER_AGENT",
    "Advisor",
    "Burst",
    "CallResult",
    "CallScript",
    "Clear",
    "DialRecord",
    "MarkEcho",
    "NoiseBurst",
    "Playback",
    "SendHook",
    "StreamSegment",
    "TwimlRun",
    "Utterance",
    "UtteranceRecord",
    "cli",
    "place_call",
]
