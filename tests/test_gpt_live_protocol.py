"""GPT-Live translation: every client event we build is a valid `openai.types.live` client event
with no unknown field, and server events (themselves checked against the types) become the
engine contract's events as the protocol module documents."""

import base64
import json

import orjson
import pydantic
import pytest
from openai.types.live import ClientEvent, ServerEvent

from app.audio.g711 import pcm16_to_ulaw
from app.engines.contract import (
    AnswerAudio, AnswerAudioDone, AnswerDone, AnswerStarted, AnswerTextPiece, CallerWords, EngineError, Exchange,
    SpeechStarted, SpeechStopped, ToolCall, UsageReport, Yielded,
)
from app.engines.gpt_live import greeting, protocol, translator
from app.engines.gpt_live.delegation import route
from app.engines.gpt_live.translator import LiveTranslator
from app.simulators.realtime_schema import ClientEventError, StrictEventParser

PARSER = StrictEventParser(ClientEvent)
SERVER_EVENT = pydantic.TypeAdapter(ServerEvent)

LOUD = pcm16_to_ulaw((3000).to_bytes(2, "little", signed=True) * 800)  # 100 ms of sound
SILENT = b"\xff" * 800


def strictly_valid(event: dict | bytes) -> None:
    raw = event.decode() if isinstance(event, bytes) else json.dumps(event)
    data, kind, event_id = PARSER.envelope(raw)
    PARSER.validate(kind, data, event_id)


@pytest.mark.parametrize("event", [
    protocol.session_start("gpt-live-1.1", "marin"),
    protocol.session_start("gpt-live-1", "cedar", history=[Exchange("caller", "Mes poussins ont froid."),
                                                           Exchange("assistant", "Montez la lampe", cut=True)],
                           context="Fiche chauffage : 32 °C la première semaine."),
    protocol.append_audio(SILENT),
    protocol.commentary("passages", "del_1"),
    protocol.thinking("appel transféré", "del_2"),
    protocol.say("Bonjour, ici OCTI."),
    protocol.session_close(),
])
def test_every_client_event_is_a_strictly_valid_live_event(event):
    strictly_valid(event)


def test_session_start_asks_for_telephone_audio_and_client_delegation():
    session = protocol.session_start("gpt-live-1.1", "marin")["session"]
    assert session["audio"] == {"format": {"type": "audio/pcmu", "rate": 8000}, "output": {"voice": "marin"}}
    assert session["delegation"] == {"type": "client"}
    assert "français" in session["instructions"] and "délègue" in session["instructions"]
    assert "input" not in session  # a fresh call starts with no history


def test_history_is_capped_at_the_services_limit_and_marks_a_cut_answer():
    history = [Exchange("assistant" if i % 2 else "caller", f"phrase {i}", cut=i == 199) for i in range(200)]
    items = protocol.session_start("gpt-live-1", "marin", history=history)["session"]["input"]
    assert len(items) == protocol.MAX_INITIAL_ITEMS
    assert items[-1]["content"][0]["text"] == "phrase 199 …"


def test_a_long_calls_history_fits_the_services_token_limit_and_keeps_the_passages():
    """A long call's exchanges (two hundred of 600 characters: far over 8,192 tokens) and the
    passages of the question being answered: the passages and the latest exchanges go, within
    the limit, oldest first."""
    history = [Exchange("assistant" if i % 2 else "caller", f"{i} " + "é" * 600) for i in range(200)]
    items = protocol.session_start("gpt-live-1", "marin", history=history, context="Fiche : 32 °C.")["session"]["input"]
    texts = [item["content"][0]["text"] for item in items]
    assert texts[-1] == "Fiche : 32 °C." and texts[-2].startswith("199 ")
    numbers = [int(text.split()[0]) for text in texts[:-1]]
    assert numbers == list(range(numbers[0], 200)) and len(numbers) > 20
    estimated = sum(protocol.MESSAGE_FRAMING_TOKENS + len(text) / 3 + 1 for text in texts)
    assert estimated <= protocol.INITIAL_ITEMS_TOKENS
    strictly_valid(protocol.session_start("gpt-live-1", "marin", history=history, context="Fiche : 32 °C."))

def test_long_results_fit_one_append():
    event = protocol.commentary("mot " * 1000, "del_1")
    assert len(event["content"]) <= protocol.APPEND_MAX_CHARS
    assert event["content"].endswith(" …")
    strictly_valid(event)


def test_the_strict_parser_refuses_what_the_service_refuses():
    with pytest.raises(ClientEventError) as refused:
        strictly_valid({"type": "session.start", "session": {"model": "gpt-live-1", "turn_detection": {}}})
    assert (refused.value.code, refused.value.param) == ("unknown_parameter", "session.turn_detection")
    with pytest.raises(ClientEventError) as refused:
        strictly_valid({"type": "response.cancel"})
    assert refused.value.code == "invalid_value" and refused.value.param == "type"


# ------------------------------------------------------------------ server events


def server(event: dict) -> dict:
    """A server event, checked against the types before the translator sees it."""
    SERVER_EVENT.validate_python(event)
    return event


def audio(data: bytes) -> dict:
    return server({"type": "session.output_audio.delta", "delta": base64.b64encode(data).decode()})


def heard(text: str, start_ms: int, end_ms: int) -> dict:
    return server({"type": "session.input_transcript.delta", "event_id": f"ev_{start_ms}", "delta": text,
                   "start_ms": start_ms, "end_ms": end_ms})


def kinds(events) -> list[type]:
    return [type(event) for event in events]


def test_the_models_voice_opens_an_answer_and_quiet_ends_it():
    live = LiveTranslator()
    assert live.translate(audio(SILENT), 0.0) == []  # silence between answers is dropped
    started = live.translate(audio(LOUD), 1.0)
    assert kinds(started) == [AnswerStarted, AnswerAudio]
    answer, item = started[0].answer, started[1].item
    assert kinds(live.translate(audio(SILENT), 1.1)) == [AnswerAudio]  # a pause within the answer
    text = live.translate(server({"type": "session.output_transcript.delta", "event_id": "ev_t", "delta": "Réglez",
                                  "start_ms": 900, "end_ms": 1300}), 1.15)
    assert text == [AnswerTextPiece(item, "Réglez")]
    assert live.tick(1.0 + translator.QUIET_MS / 1000 - 0.05) == []
    ended = live.tick(1.0 + translator.QUIET_MS / 1000 + 0.01)
    assert ended == [AnswerAudioDone(answer, item), AnswerDone(answer, "completed", (item,))]


def said(text: str, start_ms: int, end_ms: int) -> dict:
    return server({"type": "session.output_transcript.delta", "event_id": f"ev_said_{start_ms}", "delta": text,
                   "start_ms": start_ms, "end_ms": end_ms})


def test_the_models_words_that_come_before_its_voice_are_the_next_answers():
    """An audio chunk's words may come before it: they are the answer it opens, not lost (the
    first answer) nor the previous answer's, and the caller's yes replies to all of them."""
    live = LiveTranslator()
    assert live.translate(said(" Bonjour,", 0, 100), 0.0) == []
    greeting = live.translate(audio(LOUD), 0.05)
    greeted = greeting[1].item
    assert greeting[2:] == [AnswerTextPiece(greeted, " Bonjour,")]
    assert live.translate(said(" ici OCTI.", 100, 200), 0.1) == [AnswerTextPiece(greeted, " ici OCTI.")]
    assert kinds(live.tick(1.0)) == [AnswerAudioDone, AnswerDone]
    assert live.translate(said(" Je vous envoie le récapitulatif par SMS ?", 2000, 2100), 2.0) == []
    offer = live.translate(audio(LOUD), 2.05)
    offered = offer[1].item
    assert offered != greeted
    assert offer[2:] == [AnswerTextPiece(offered, " Je vous envoie le récapitulatif par SMS ?")]
    assert live.translate(said(" Dites-moi.", 2100, 2200), 2.1) == [AnswerTextPiece(offered, " Dites-moi.")]
    live.tick(3.0)
    live.translate(heard("Oui, je veux bien.", 3100, 3800), 3.9)
    assert live.translate(delegated("del_1"), 4.0)[-1].name == "send_recap_by_sms"


def test_the_caller_turn_opens_with_words_and_closes_when_the_model_answers():
    live = LiveTranslator()
    opened = live.translate(heard(" Mes poussins", 2000, 2600), 3.0)
    assert opened == [SpeechStarted("live_turn_1", 2000.0), CallerWords("live_turn_1", " Mes poussins", final=False)]
    live.translate(heard(" ont froid.", 2600, 3200), 3.4)
    answered = live.translate(audio(LOUD), 4.0)
    assert answered[:2] == [SpeechStopped("live_turn_1", 3200.0, 1200.0),
                            CallerWords("live_turn_1", "Mes poussins ont froid.", final=True)]
    assert kinds(answered[2:]) == [AnswerStarted, AnswerAudio]


def test_a_caller_turn_the_model_lets_pass_closes_once_they_are_quiet():
    """« Attendez… », a word to someone beside them: the model says nothing, the turn closes all
    the same once neither their sound nor their words came for CALLER_QUIET_MS."""
    live = LiveTranslator()
    live.translate(heard(" Attendez,", 1000, 1400), 1.5)
    live.caller_sound(2.0)  # still sound on their line, no word yet
    live.translate(heard(" je regarde.", 1400, 2100), 2.2)
    quiet = 2.2 + translator.CALLER_QUIET_MS / 1000
    assert live.tick(quiet - 0.05) == []
    assert live.tick(quiet + 0.01) == [SpeechStopped("live_turn_1", 2100.0, 1100.0),
                                       CallerWords("live_turn_1", "Attendez, je regarde.", final=True)]
    assert live.tick(quiet + 5.0) == []
    assert kinds(live.translate(heard(" Bon.", 9000, 9300), 9.4)) == [SpeechStarted, CallerWords]  # a new turn


def test_a_caller_turn_over_the_model_stays_open_while_it_talks():
    """The model decides whether words over it were an interruption: their turn closes for
    quiet only once the model is silent."""
    live = LiveTranslator()
    live.translate(audio(LOUD), 0.0)
    live.translate(heard(" oui", 300, 500), 0.6)
    for at in (1.0, 1.5, 2.0, 2.5):
        assert kinds(live.translate(audio(LOUD), at)) == [AnswerAudio]
        assert live.tick(at + 0.05) == []
    assert kinds(live.tick(2.5 + translator.QUIET_MS / 1000 + 0.01)) == [AnswerAudioDone, AnswerDone, SpeechStarted]
    assert kinds(live.tick(3.2)) == [SpeechStopped, CallerWords]


def test_the_model_going_quiet_while_the_caller_talks_is_yielding():
    live = LiveTranslator()
    answer = live.translate(audio(LOUD), 0.0)[0].answer
    # The caller talks over it: the model, not the first word, decides; nothing is announced yet.
    assert kinds(live.translate(heard(" Attendez", 400, 800), 0.5)) == [CallerWords]
    assert kinds(live.translate(audio(LOUD), 0.6)) == [AnswerAudio]  # it keeps talking a while
    assert live.translate(audio(SILENT), 0.8) == []  # quiet while the caller talks: held back
    yielded = live.translate(audio(SILENT), 1.0)
    assert kinds(yielded) == [AnswerAudioDone, Yielded, AnswerDone, SpeechStarted]
    assert yielded[1] == Yielded(answer, yielded[0].item)
    assert yielded[2].status == "cancelled"
    assert yielded[3] == SpeechStarted("live_turn_1", 400.0)


def test_a_pause_while_the_caller_talks_is_held_then_heard():
    live = LiveTranslator()
    live.translate(audio(LOUD), 0.0)
    live.caller_sound(0.05)
    assert live.translate(audio(SILENT), 0.1) == [] and live.translate(audio(SILENT), 0.2) == []
    resumed = live.translate(audio(LOUD), 0.3)  # it talks on: the pause was a pause
    assert kinds(resumed) == [AnswerAudio, AnswerAudio, AnswerAudio]
    assert [event.audio for event in resumed] == [SILENT, SILENT, LOUD]


def test_a_fixture_opens_an_answer_with_its_text_and_the_caller_cannot_make_it_yield():
    live = LiveTranslator(fixture_text="Bonjour, ici OCTI.")
    assert live.translate(server({"type": "session.output_audio.fixture.playing", "event_id": "ev_p",
                                  "client_event_id": "octi_greeting_fixture"}), 0.0) == []
    started = live.translate(audio(LOUD), 0.1)
    assert kinds(started) == [AnswerStarted, AnswerAudio, AnswerTextPiece]
    assert started[2] == AnswerTextPiece(started[1].item, "Bonjour, ici OCTI.")
    live.caller_sound(0.2)  # the service drops their audio while the fixture plays
    live.translate(server({"type": "session.output_audio.fixture.played", "event_id": "ev_d"}), 0.3)
    assert kinds(live.translate(audio(SILENT), 0.35)) == [AnswerAudio]  # not held back as a yield
    ended = live.tick(0.1 + translator.QUIET_MS / 1000 + 0.01)
    assert kinds(ended) == [AnswerAudioDone, AnswerDone] and ended[1].status == "completed"
    assert kinds(live.translate(audio(LOUD), 2.0)) == [AnswerStarted, AnswerAudio]  # the model's own: no text given


def test_the_greeting_fixture_is_a_strictly_valid_live_event():
    strictly_valid(greeting.fixture_play(greeting.GreetingClip(b"\x00\x01" * 2400, "Bonjour")))


def test_a_word_long_before_the_end_is_not_a_yield():
    live = LiveTranslator()
    live.translate(audio(LOUD), 0.0)
    live.translate(heard(" oui", 300, 500), 0.4)  # a backchannel; the model talks on
    live.translate(audio(LOUD), 3.0)
    ended = live.tick(3.0 + translator.QUIET_MS / 1000 + 0.01)
    assert kinds(ended) == [AnswerAudioDone, AnswerDone, SpeechStarted]
    assert ended[1].status == "completed"


def test_a_client_delegation_becomes_the_tool_the_callers_words_call_for():
    live = LiveTranslator()
    live.translate(heard(" À quelle température pour la couveuse ?", 1000, 2500), 2.6)
    events = live.translate(server({"type": "session.delegation.created", "event_id": "ev_d", "offset_ms": 2600,
                                    "delegation": {"id": "del_1", "target": "client", "type": "delegation"}}), 2.7)
    assert kinds(events) == [SpeechStopped, CallerWords, ToolCall]
    call = events[-1]
    assert (call.call, call.name) == ("del_1", "search_knowledge")
    assert json.loads(call.arguments) == {"query": "À quelle température pour la couveuse ?"}
    responses = server({"type": "session.delegation.created", "event_id": "ev_r", "offset_ms": 10,
                        "delegation": {"id": "del_2", "target": "responses", "type": "delegation"}})
    assert live.translate(responses, 3.0) == []  # not ours to answer


@pytest.mark.parametrize("words, tool", [
    ("Je voudrais parler à un conseiller", "transfer_to_human"),
    ("Merci, au revoir", "end_call"),
    ("Mes poules ne pondent plus", "search_knowledge"),
    ("Vous pouvez m'envoyer ça par texto ?", "send_recap_by_sms"),
    ("Oui, volontiers", "search_knowledge"),  # a yes to nothing offered
])
def test_delegations_route_to_the_call_tools(words, tool):
    live = LiveTranslator()
    live.translate(heard(words, 0, 900), 1.0)
    assert live.translate(delegated("del"), 1.1)[-1].name == tool


@pytest.mark.parametrize("words, tool", [
    ("J'ai fini de vacciner, je fais quoi maintenant ?", "search_knowledge"),
    ("C'est tout ce qu'il faut faire pour la ventilation ?", "search_knowledge"),
    ("C'est tout ?", "search_knowledge"),
    ("Le vétérinaire m'a dit de baisser la température, c'est bon ?", "search_knowledge"),
    ("Mon technicien dit 32 degrés pour les poussins, c'est juste ?", "search_knowledge"),
    ("Quelqu'un m'a dit que les poules pondent moins l'hiver, c'est vrai ?", "search_knowledge"),
    ("Je peux avoir le numéro du vétérinaire ?", "search_knowledge"),
    ("J'ai reçu un SMS de la coopérative sur la grippe aviaire, je fais quoi ?", "search_knowledge"),
    ("Non, c'est tout, merci. Bonne journée !", "end_call"),
    ("Passez-moi quelqu'un, s'il vous plaît.", "transfer_to_human"),
    ("Est-ce que je peux parler au vétérinaire de la coopérative ?", "transfer_to_human"),
    ("Un conseiller, s'il vous plaît.", "transfer_to_human"),
    ("Je voudrais le récapitulatif par écrit.", "send_recap_by_sms"),
])
def test_only_a_whole_goodbye_or_a_request_for_a_person_ends_or_transfers_the_call(words, tool):
    """A word found anywhere decides nothing: the words as a whole take leave, or open on
    asking for a person; anything else, a question above all, goes to the knowledge base."""
    assert route(words)[0] == tool


def test_a_yes_is_the_sms_tool_only_when_it_is_the_whole_reply_to_the_offer():
    offer = "Voulez-vous le récapitulatif par SMS ?"
    assert route("D'accord, merci.", offer)[0] == "send_recap_by_sms"
    assert route("Oui, et l'humidité ?", offer)[0] == "search_knowledge"
    assert route("Oui, mais combien de temps pour la couvaison ?", offer)[0] == "search_knowledge"


def delegated(delegation_id: str) -> dict:
    return server({"type": "session.delegation.created", "event_id": f"ev_{delegation_id}", "offset_ms": 950,
                   "delegation": {"id": delegation_id, "target": "client", "type": "delegation"}})


def test_a_delegation_after_the_model_spoke_or_again_is_about_the_callers_latest_words():
    """The model may speak before it delegates (which closes the caller's turn) or delegate twice
    for the same words: the delegation is about the caller's latest words all the same, never
    about nothing, until newer ones come."""
    live = LiveTranslator()
    live.translate(heard(" Quelle température pour la couveuse ?", 0, 1500), 1.6)
    assert kinds(live.translate(audio(LOUD), 1.7))[:2] == [SpeechStopped, CallerWords]  # « Je regarde. »
    first = live.translate(delegated("del_1"), 1.8)[-1]
    second = live.translate(delegated("del_2"), 1.9)[-1]
    assert first.name == second.name == "search_knowledge"
    assert json.loads(first.arguments) == json.loads(second.arguments) == {"query": "Quelle température pour la couveuse ?"}
    live.tick(3.0)
    live.translate(heard(" Et l'humidité ?", 3000, 3800), 3.9)
    assert json.loads(live.translate(delegated("del_3"), 4.0)[-1].arguments) == {"query": "Et l'humidité ?"}


def test_a_yes_to_the_sms_offer_is_the_sms_tool_when_the_model_speaks_before_delegating():
    live = LiveTranslator()
    live.translate(audio(LOUD), 0.0)
    live.translate(said(" Je vous envoie le récapitulatif par SMS ?", 0, 300), 0.05)
    live.tick(1.0)
    live.translate(heard(" Oui, je veux bien.", 1100, 1800), 1.9)
    live.translate(audio(LOUD), 2.0)
    live.translate(said(" Très bien.", 2000, 2300), 2.05)  # what the yes replied to was before this
    assert live.translate(delegated("del_1"), 2.2)[-1].name == "send_recap_by_sms"


def test_a_yes_to_the_models_offer_of_an_sms_is_the_sms_tool_and_only_right_after_it():
    live = LiveTranslator()
    live.translate(audio(LOUD), 0.0)
    offer = "Voulez-vous le récapitulatif par SMS ?"
    live.translate(server({"type": "session.output_transcript.delta", "event_id": "ev_t", "delta": offer,
                           "start_ms": 0, "end_ms": 200}), 0.1)
    live.tick(1.0)  # the model went quiet: its answer ended
    live.translate(heard("Oui, je veux bien.", 1100, 1800), 1.9)
    assert live.translate(delegated("del_1"), 2.0)[-1].name == "send_recap_by_sms"
    # The model's next answer offers nothing: a yes to it is a question like any other.
    live.translate(audio(LOUD), 2.5)
    live.translate(server({"type": "session.output_transcript.delta", "event_id": "ev_u",
                           "delta": "Il faut 37,7 degrés.", "start_ms": 2500, "end_ms": 2700}), 2.6)
    live.tick(3.5)
    live.translate(heard("Oui, et pour l'humidité ?", 3600, 4400), 4.5)
    assert live.translate(delegated("del_2"), 4.6)[-1].name == "search_knowledge"


def test_cumulative_usage_becomes_reports_that_add_up():
    live = LiveTranslator()
    reports = [live.translate(server({"type": "session.usage.updated", "event_id": f"u{n}",
                                      "usage": {"seconds": seconds}}), 0.0)[0]
               for n, seconds in enumerate((5, 12, 12))]
    assert all(isinstance(report, UsageReport) for report in reports)
    assert sum(report.usage["seconds"] for report in reports) == 12
    assert sum(report.usage["active_seconds"] for report in reports) == 12  # no split: all active
    split = live.translate(server({"type": "session.usage.updated", "event_id": "u9",
                                   "usage": {"seconds": 20, "active_seconds": 15, "paused_seconds": 5}}), 0.0)[0]
    assert (split.usage["seconds"], split.usage["active_seconds"], split.usage["paused_seconds"]) == (8, 3, 5)


def closed(reason: str) -> dict:
    return server({"type": "session.closed", "event_id": "ev_c", "reason": reason, "usage": {"seconds": 30},
                   "session": {"id": "sess_1", "expires_at": 1, "model": "gpt-live-1", "status": "active"}})


def test_the_service_closing_the_session_is_fatal_unless_we_asked():
    expired = LiveTranslator().translate(closed("expired"), 0.0)
    assert kinds(expired) == [UsageReport, EngineError]
    assert expired[1].code == "session_expired" and expired[1].fatal
    ours = LiveTranslator(closed_by_us=True).translate(closed("close_requested"), 0.0)
    assert kinds(ours) == [UsageReport]


def test_errors_are_reported_with_their_code():
    error = server({"type": "error", "event_id": "ev_e", "error": {"type": "invalid_request_error",
                                                                  "code": "unknown_parameter", "message": "no"}})
    assert LiveTranslator().translate(error, 0.0) == [EngineError("unknown_parameter", "no", fatal=False)]


def test_the_audio_append_carries_the_bytes():
    event = orjson.loads(protocol.append_audio(b"\x01\x02\xff"))
    assert base64.b64decode(event["audio"]) == b"\x01\x02\xff"


def test_live_time_is_priced_per_active_and_standby_minute():
    from app.calllog.cost import estimate_live_cost, sum_live_usage, sum_usage
    from app.config import Settings

    prices = Settings(_env_file=None).model_prices
    live = LiveTranslator()
    usages = [live.translate(server({"type": "session.usage.updated", "event_id": f"u{n}", "usage": usage}), 0.0)[0].usage
              for n, usage in enumerate(({"seconds": 30, "active_seconds": 20, "paused_seconds": 10},
                                         {"seconds": 90, "active_seconds": 65, "paused_seconds": 25}))]
    totals = sum_live_usage(usages)
    assert totals == {"seconds": 90, "active_seconds": 65, "paused_seconds": 25}
    assert estimate_live_cost("gpt-live-1.1", totals, prices) == pytest.approx(65 / 60 * 0.05 + 25 / 60 * 0.02)
    assert sum_usage(usages)["responses"] == 0, "time is not tokens"
    assert estimate_live_cost("gpt-live-9", totals, prices) is None  # unknown, never $0
    assert estimate_live_cost("gpt-live-9", sum_live_usage([]), prices) == 0.0


def test_the_callers_sound_makes_a_yield_known_before_their_words():
    live = LiveTranslator()
    answer = live.translate(audio(LOUD), 0.0)[0].answer
    live.caller_sound(0.3)  # the engine heard the caller in the audio it sent
    assert live.translate(audio(SILENT), 0.2) == []
    yielded = live.translate(audio(SILENT), 0.5)
    assert kinds(yielded) == [AnswerAudioDone, Yielded, AnswerDone] and yielded[1] == Yielded(answer, yielded[0].item)
    live.caller_sound(1.0)  # sound while the model is silent is no interruption of anything
    assert live.translate(audio(SILENT), 1.1) == []
