"""Every event we send must validate against the official `openai.types.realtime` models."""

import json

import pydantic
import pytest
from openai.types.realtime import RealtimeClientEvent

from app.agent.session import realtime_session_update
from app.config import Settings
from app.realtime import protocol

CLIENT_EVENT = pydantic.TypeAdapter(RealtimeClientEvent)


def assert_strictly_valid(event: dict) -> None:
    model = CLIENT_EVENT.validate_python(event)

    def no_extras(value, path="event"):
        if isinstance(value, pydantic.BaseModel):
            assert not value.model_extra, f"unknown fields at {path}: {value.model_extra}"
            for name in type(value).model_fields:
                no_extras(getattr(value, name), f"{path}.{name}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                no_extras(item, f"{path}[{index}]")

    no_extras(model)


@pytest.mark.parametrize("overrides", [
    {}, {"audio_codec": "pcmu"}, {"turn_detection": "semantic_vad"}, {"noise_reduction": "off"},
    {"noise_reduction": "near_field"},
])
def test_session_update_is_valid_ga(overrides):
    event = protocol.session_update(Settings(_env_file=None, **overrides))
    assert_strictly_valid(event)
    session = event["session"]
    assert session["type"] == "realtime"
    fmt = session["audio"]["input"]["format"]
    assert fmt == ({"type": "audio/pcmu"} if overrides.get("audio_codec") == "pcmu"
                   else {"type": "audio/pcm", "rate": 24000})
    assert session["audio"]["output"]["format"] == fmt


def test_defaults_suit_a_noisy_barn_and_french_callers():
    session = protocol.session_update(Settings(_env_file=None))["session"]
    assert session["audio"]["input"]["noise_reduction"] == {"type": "far_field"}
    assert session["audio"]["input"]["transcription"]["language"] == "fr"
    assert session["audio"]["input"]["turn_detection"]["interrupt_response"] is True


@pytest.mark.parametrize("mode", ["inject", "tool", "off"])
def test_the_agent_session_follows_the_rag_mode(mode):
    event = realtime_session_update(Settings(_env_file=None, rag_mode=mode))
    assert_strictly_valid(event)
    session = event["session"]
    assert session["audio"]["input"]["turn_detection"]["create_response"] is (mode != "inject")
    assert [tool["name"] for tool in session.get("tools", [])] == (["search_knowledge"] if mode == "tool" else [])


def test_other_client_events_are_valid():
    for event in (
        protocol.response_create(),
        protocol.response_create("Réponds à partir des extraits."),
        protocol.function_output("call_1", '{"passages": []}'),
        protocol.greeting_response("Bonjour"),
        json.loads(protocol.append_audio(b"\x00\x01" * 10)),
        protocol.truncate_item("item_1", 1200),
        protocol.delete_item("item_1"),
        protocol.cancel_response(),
    ):
        assert_strictly_valid(event)
