import base64
import json

import pytest

from app.channels.twilio import wire


def media(payload: bytes = b"\xff" * 160, **overrides) -> str:
    message = {"event": "media", "sequenceNumber": "3", "streamSid": "MZ1",
               "media": {"track": "inbound", "chunk": "2", "timestamp": "40",
                         "payload": base64.b64encode(payload).decode()}}
    message.update(overrides)
    return json.dumps(message)


def test_media_is_parsed_whatever_its_length():
    for size in (1, 160, 333):
        parsed = wire.parse_inbound(media(b"\x01" * size))
        assert parsed == wire.Media(b"\x01" * size, 40)


def test_start_carries_identity_and_custom_parameters():
    raw = json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": "MZabc",
                      "start": {"streamSid": "MZabc", "accountSid": "AC1", "callSid": "CA1", "tracks": ["inbound"],
                                "customParameters": {"token": "t", "from": "+33612345678"},
                                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})
    start = wire.parse_inbound(raw)
    assert start == wire.Start("MZabc", "CA1", "AC1", {"token": "t", "from": "+33612345678"})


@pytest.mark.parametrize(("raw", "reason"), [
    (b"\x00\x01", "binary"),
    ("not json", "not_json"),
    ("[1, 2]", "not_object"),
    (json.dumps({"streamSid": "MZ1"}), "no_event"),
    (json.dumps({"event": ["media"], "streamSid": "MZ1"}), "no_event"),
    (json.dumps({"event": "media", "media": {"payload": "%%%"}}), "bad_base64"),
    (json.dumps({"event": "media", "media": "x"}), "bad_field"),
    (json.dumps({"event": "media", "media": {"payload": "AAAA", "timestamp": "soon"}}), "bad_field"),
    (json.dumps({"event": "mark", "mark": {}}), "bad_field"),
    (json.dumps({"event": "start", "start": {"streamSid": "MZ\"1", "callSid": "CA1"}}), "bad_field"),
    (json.dumps({"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1", "mediaFormat": "mulaw"}}),
     "bad_field"),
    (json.dumps({"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1",
                                             "mediaFormat": {"sampleRate": "eight thousand"}}}), "bad_field"),
    (json.dumps({"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1",
                                             "mediaFormat": {"sampleRate": None}}}), "bad_field"),
])
def test_malformed_messages_raise_a_clear_error_naming_their_kind(raw, reason):
    with pytest.raises(wire.MalformedMessage) as refused:
        wire.parse_inbound(raw)
    assert refused.value.reason == reason and refused.value.reason in wire.REASONS


def test_once_started_a_message_must_name_the_stream():
    assert wire.parse_inbound(media(), "MZ1") == wire.Media(b"\xff" * 160, 40)
    for other in (media(streamSid="MZ2"), media(streamSid=None), json.dumps({"event": "stop", "streamSid": "MZ2"})):
        with pytest.raises(wire.MalformedMessage) as refused:
            wire.parse_inbound(other, "MZ1")
        assert refused.value.reason == "wrong_stream"


def test_unknown_events_are_ignored_not_errors():
    assert wire.parse_inbound(json.dumps({"event": "someday-new", "streamSid": "MZ1"})) is None


def test_outbound_messages_have_twilio_shapes():
    assert json.loads(wire.media_message("MZ1", b"\xff\x7f")) == {
        "event": "media", "streamSid": "MZ1", "media": {"payload": base64.b64encode(b"\xff\x7f").decode()}}
    assert json.loads(wire.mark_message("MZ1", "a1")) == {"event": "mark", "streamSid": "MZ1", "mark": {"name": "a1"}}
    assert json.loads(wire.clear_message("MZ1")) == {"event": "clear", "streamSid": "MZ1"}
