"""What hostile or broken peers may send us, as hypothesis strategies, and the two settings
profiles the property tests run under.

"ci" (the default) keeps the suite quick and the same on every run; "fuzz" tries 100 000 new
inputs per target (`python -m benchmarks.fuzz`, or OCTI_HYPOTHESIS_PROFILE=fuzz for pytest).
Neither keeps an example database: nothing is written into the checkout, and a failure prints
the input that caused it.
"""

from __future__ import annotations

import base64
import json
import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

PROFILE_VARIABLE = "OCTI_HYPOTHESIS_PROFILE"
FUZZ_EXAMPLES = 100_000

# deadline=None: a slow example on a busy machine is not a failure (no timing in tests).
settings.register_profile("ci", max_examples=120, deadline=None, database=None, derandomize=True)
settings.register_profile("fuzz", max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
                          suppress_health_check=list(HealthCheck))
settings.load_profile(os.environ.get(PROFILE_VARIABLE, "ci"))

# Any JSON value, nested a little.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)


# A value of any JSON type, for a field that expects another: cheaper to draw than json_values,
# which matters with a dozen fields per object.
wrong_values = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                | st.text(max_size=5) | st.lists(st.integers(), max_size=2)
                | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def shaped(fields: dict[str, st.SearchStrategy]) -> st.SearchStrategy[dict]:
    """Objects with some of `fields`, each plausible or of any JSON type, and perhaps an extra key."""
    return st.fixed_dictionaries({}, optional={key: value | wrong_values for key, value in fields.items()}).flatmap(
        lambda known: st.dictionaries(st.text(max_size=10), wrong_values, max_size=1).map(lambda extra: extra | known))


def text_frames(objects: st.SearchStrategy[dict]) -> st.SearchStrategy[str | bytes]:
    """Frames around a protocol: its objects as JSON, cut short, any JSON, any text, any bytes."""
    dumped = objects.map(json.dumps)
    return st.one_of(
        dumped,
        st.tuples(dumped, st.integers(min_value=0)).map(lambda cut: cut[0][: cut[1] % (len(cut[0]) + 1)]),
        json_values.map(json.dumps),
        st.text(max_size=200),
        st.binary(max_size=200),
    )


# ------------------------------------------------------------------ Twilio Media Streams

STREAM_SID = "MZ" + "0123456789abcdef" * 2
base64_text = st.binary(max_size=400).map(lambda audio: base64.b64encode(audio).decode()) | st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \n%", max_size=40)
numeric_text = st.integers(min_value=-10, max_value=10**12).map(str) | st.text(max_size=6)

twilio_messages = shaped({
    "event": st.sampled_from(("connected", "start", "media", "mark", "dtmf", "stop", "clear", "someday-new")),
    "streamSid": st.just(STREAM_SID) | st.text(max_size=40),
    "sequenceNumber": numeric_text,
    "protocol": st.just("Call"),
    "media": shaped({"payload": base64_text, "timestamp": numeric_text, "chunk": numeric_text,
                     "track": st.just("inbound")}),
    "mark": shaped({"name": st.text(max_size=20)}),
    "dtmf": shaped({"digit": st.sampled_from("0123456789*#"), "track": st.just("inbound_track")}),
    "stop": shaped({"callSid": st.text(max_size=40), "accountSid": st.text(max_size=40)}),
    "start": shaped({
        "streamSid": st.just(STREAM_SID) | st.text(max_size=70), "callSid": st.text(max_size=40),
        "accountSid": st.text(max_size=40), "tracks": st.just(["inbound"]),
        "customParameters": st.dictionaries(st.text(max_size=10), st.text(max_size=20) | wrong_values, max_size=3),
        "mediaFormat": shaped({"encoding": st.just("audio/x-mulaw"), "sampleRate": st.just(8000) | numeric_text,
                               "channels": st.just(1)}),
    }),
})
twilio_frames = text_frames(twilio_messages)

# ------------------------------------------------------------------ the browser protocol

browser_messages = shaped({
    "type": st.sampled_from(("start_conversation", "user_audio_end", "reset_session", "interrupt", "playback",
                             "user_text", "hangup")),
    "samples": st.integers(min_value=-5, max_value=10**9),
    "text": st.text(max_size=60),
})
# Audio frames of every length class: empty, odd, even, and over the wire's limit.
browser_audio = st.integers(min_value=0, max_value=100_000).map(lambda size: b"\x01" * size)
browser_frames = text_frames(browser_messages) | browser_audio

# ------------------------------------------------------------------ Realtime server events

REALTIME_TYPES = (
    "input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped", "input_audio_buffer.committed",
    "conversation.item.input_audio_transcription.delta", "conversation.item.input_audio_transcription.completed",
    "conversation.item.input_audio_transcription.failed", "response.created", "response.output_audio.delta",
    "response.output_audio.done", "response.output_audio_transcript.delta", "response.output_audio_transcript.done",
    "response.function_call_arguments.done", "response.done", "error",
    "session.updated", "rate_limits.updated", "response.someday_new",
)
item_ids = st.sampled_from(("item_1", "item_2", ""))
realtime_events = shaped({
    "item_id": item_ids, "response_id": st.sampled_from(("resp_1", "resp_2")),
    "audio_start_ms": st.integers(min_value=-1000, max_value=10**7), "audio_end_ms": st.integers(max_value=10**7),
    "delta": base64_text, "transcript": st.text(max_size=30), "arguments": st.text(max_size=30),
    "call_id": st.text(max_size=10), "name": st.text(max_size=20),
    "usage": shaped({"input_tokens": st.integers(), "output_tokens": st.integers()}),
    "error": shaped({"code": st.sampled_from(("session_expired", "response_cancel_not_active",
                                              "input_audio_buffer_commit_empty", "rate_limit")),
                     "message": st.text(max_size=30)}),
    "response": shaped({"id": st.sampled_from(("resp_1", "resp_2")),
                        "status": st.sampled_from(("completed", "cancelled", "failed", "incomplete")),
                        "output": st.lists(shaped({"id": item_ids}), max_size=3),
                        "status_details": shaped({"reason": st.text(max_size=10)}),
                        "usage": shaped({"total_tokens": st.integers()})}),
}).flatmap(lambda event: st.sampled_from(REALTIME_TYPES).map(lambda kind: event | {"type": kind}))

# ------------------------------------------------------------------ Twilio webhooks

TWILIO_FORM_KEYS = ("CallSid", "AccountSid", "From", "To", "CallStatus", "Direction", "StreamEvent", "StreamError",
                    "StreamSid", "DialCallStatus", "RecordingUrl", "RecordingDuration", "Digits")
webhook_forms = st.dictionaries(
    st.sampled_from(TWILIO_FORM_KEYS) | st.text(min_size=1, max_size=12),
    st.sampled_from(("CA" + "1" * 32, "+33612345678", "stream-error", "completed", "")) | st.text(max_size=40),
    max_size=8,
)
