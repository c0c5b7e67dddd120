"""Every event we send must validate against the official `openai.types.realtime` models."""

import json

import pydantic
import pytest
from openai.types.realtime import RealtimeClientEvent

from app.agent.rag import SEARCH_TOOL
from app.audio.formats import REALTIME_PCM16, TELEPHONE_ULAW, AudioFormat
from app.engines.openai_realtime.engine import tool_object
from app.engines.openai_realtime.engine import session_update
from app.service import engine_options
from app.config import Settings
from app.engines.openai_realtime import protocol

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
    {"noise_reduction": "near_field"}, {"openai_transcribe_model": "gpt-transcribe"},
    {"openai_realtime_model": "gpt-realtime-1.5", "truncation_token_limit": 4000},
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
    # A sound over OCTI may be a noise: the service must not cancel the answer for it.
    assert session["audio"]["input"]["turn_detection"]["interrupt_response"] is False


def test_without_a_barge_in_minimum_the_service_interrupts_its_answer_itself():
    session = protocol.session_update(Settings(_env_file=None, barge_in_min_ms=0))["session"]
    assert session["audio"]["input"]["turn_detection"]["interrupt_response"] is True


PCM_24K = {"type": "audio/pcm", "rate": 24000}


@pytest.mark.parametrize(("codec", "channel", "heard", "answers"), [
    ("pcm16", TELEPHONE_ULAW, PCM_24K, {"type": "audio/pcmu"}),  # the phone
    ("pcmu", TELEPHONE_ULAW, {"type": "audio/pcmu"}, {"type": "audio/pcmu"}),
    ("pcm16", REALTIME_PCM16, PCM_24K, PCM_24K),  # a browser page at 24 kHz
    ("pcmu", AudioFormat("pcm16", 16000), {"type": "audio/pcmu"}, PCM_24K),  # no 16 kHz from the service
])
def test_the_model_hears_the_audio_codec_and_answers_in_the_channels_format_when_it_can(codec, channel, heard,
                                                                                      answers):
    settings = Settings(_env_file=None, audio_codec=codec)
    event = session_update(settings, engine_options(settings, channel_format=channel))
    assert_strictly_valid(event)
    assert event["session"]["audio"]["input"]["format"] == heard
    assert event["session"]["audio"]["output"]["format"] == answers


@pytest.mark.parametrize("mode", ["inject", "tool", "off"])
@pytest.mark.parametrize("barge_in_min_ms", [300, 0])
def test_the_agent_session_follows_the_rag_mode(mode, barge_in_min_ms):
    settings = Settings(_env_file=None, rag_mode=mode, barge_in_min_ms=barge_in_min_ms)
    event = session_update(settings, engine_options(settings))
    assert_strictly_valid(event)
    session = event["session"]
    # Judging interruptions, we ask for every answer; otherwise only to inject the passages.
    service_answers = mode != "inject" and barge_in_min_ms == 0
    assert session["audio"]["input"]["turn_detection"]["create_response"] is service_answers
    # The call's ways out are there in every mode; the knowledge is a tool in tool mode only.
    names = [tool["name"] for tool in session.get("tools", [])]
    assert names == (["search_knowledge"] if mode == "tool" else []) + ["end_call", "transfer_to_human"]
    # The instructions say when to use them (and to search first, in tool mode).
    assert "end_call" in session["instructions"] and "transfer_to_human" in session["instructions"]
    assert ("appelle d'abord l'outil search_knowledge" in session["instructions"]) is (mode == "tool")


def test_other_client_events_are_valid():
    for event in (
        protocol.response_create(),
        protocol.response_create("Réponds à partir des extraits."),
        protocol.response_create("Cherche d'abord.", tools=[tool_object(SEARCH_TOOL)]),
        protocol.function_output("call_1", '{"passages": []}'),
        protocol.system_message("octi_context_1", "# Extraits de la base de connaissances"),
        protocol.say_response("Bonjour"),
        json.loads(protocol.append_audio(b"\x00\x01" * 10)),
        protocol.truncate_item("item_1", 1200),
        protocol.delete_item("item_1"),
        protocol.cancel_response(),
        protocol.commit_audio(),
        protocol.out_of_band_text("Résume l'appel.", "summary"),
    ):
        assert_strictly_valid(event)


def test_model_specific_fields_go_only_to_the_models_that_take_them():
    """reasoning to the 2.x line; delay to the streaming whisper; keywords to gpt-transcribe."""
    default = protocol.session_update(Settings(_env_file=None), keywords=["couveuse"])["session"]
    assert default["model"] == "gpt-realtime-2.1" and default["reasoning"] == {"effort": "minimal"}
    assert default["audio"]["input"]["transcription"] == {
        "model": "gpt-realtime-whisper", "language": "fr", "delay": "low"}
    assert default["max_output_tokens"] == 600
    assert default["truncation"] == {"type": "retention_ratio", "retention_ratio": 0.8}  # at the model's limit

    older = Settings(_env_file=None, openai_realtime_model="gpt-realtime-1.5", openai_transcribe_model="gpt-transcribe",
                     truncation_token_limit=40_000)
    event = protocol.session_update(older, keywords=["couveuse", "picage"])
    assert_strictly_valid(event)
    session = event["session"]
    assert "reasoning" not in session
    assert session["audio"]["input"]["transcription"] == {
        "model": "gpt-transcribe", "language": "fr", "keywords": ["couveuse", "picage"]}
    # The limit never exceeds what a 32k model leaves after an answer.
    assert session["truncation"]["token_limits"]["post_instructions"] == 32_768 - 600


def test_the_doubles_parser_takes_item_references_in_a_response_input():
    from app.simulators.realtime_schema import parse_client_event

    event = parse_client_event(json.dumps({"type": "response.create", "response": {
        "input": [{"type": "item_reference", "id": "item_1"}]}}))
    assert event.item_references == {0: "item_1"}
