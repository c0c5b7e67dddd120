"""The tools that end or hand over a call, called by the model (the Realtime double choosing
them from what the caller said), over real sockets with the simulated Twilio caller."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import datetime
from zoneinfo import ZoneInfo

import httpx
import pytest
from twilio.request_validator import RequestValidator

from app.agent import phrases
from app.channels.twilio.voicemail import VOICEMAIL_PATH
from app.agent.opening_hours import DAYS
from app.simulators.twilio_caller import Advisor, CallScript, Utterance
from app.simulators.twilio_rest import TwilioRestDouble
from tests.test_behaviours import creates, stored
from tests.test_call_path import INTERRUPTION, QUESTION, call
from tests.harness import AUDIO, AUTH_TOKEN, PUBLIC_URL, free_loopback_port, running_line

GOODBYE_WORDS = "Bon, merci beaucoup, au revoir !"
ASKS_FOR_A_PERSON = "Je voudrais parler à un conseiller, s'il vous plaît."


def say(**script) -> CallScript:
    script.setdefault("hangup_after", 25)
    return CallScript(utterances=[Utterance(QUESTION)], **script)


def function_calls(connection) -> list[dict]:
    return [r.function_call for r in connection.responses if r.kind == "function_call"]


def tool_outputs(connection) -> list[dict]:
    return [json.loads(item["output"]) for item in connection.conversation if item["type"] == "function_call_output"]


async def test_a_caller_saying_goodbye_is_told_goodbye_then_the_call_ends_once_it_was_heard(double):
    double.script_next_connection([GOODBYE_WORDS], greeting_seconds=1.0, answer_seconds=1.5)
    async with running_line(openai_realtime_url=double.url, silence_prompt_seconds=0) as line:
        result = await call(line, say())
        detail = await stored(line, result.call_sid)
    connection = double.connections[0]
    assert [c["name"] for c in function_calls(connection)] == ["end_call"]
    assert tool_outputs(connection) == [{"ok": True}]
    # The model did not answer the output: OCTI's own goodbye was the next and last thing said.
    assert phrases.GOODBYE in creates(connection)[-1]
    goodbye = [r for r in connection.responses if r.conversation == "auto"][-1]
    assert result.closed_by == "server" and result.after_stream["hangup"], result.summary()
    heard_after_question = sum(b.played_ms for b in result.bursts if b.start_t > result.utterances[0].speech_end_t)
    assert heard_after_question >= goodbye.audio_ms - 40, result.summary()
    assert detail.summary.outcome == "agent_ended"
    assert "agent_ended" in [e.type for e in detail.events]


async def test_asking_for_a_person_where_none_is_configured_gets_an_explanation_and_the_call_goes_on(double):
    double.script_next_connection([ASKS_FOR_A_PERSON], greeting_seconds=1.0, answer_seconds=1.0)
    async with running_line(openai_realtime_url=double.url, silence_prompt_seconds=0) as line:
        result = await call(line, say(hangup_when_done_after_s=2.0))
        detail = await stored(line, result.call_sid)
    connection = double.connections[0]
    [transfer] = function_calls(connection)
    assert transfer["name"] == "transfer_to_human"
    assert json.loads(transfer["arguments"]) == {"summary": ASKS_FOR_A_PERSON}
    assert tool_outputs(connection) == [{"error": phrases.NO_PERSON}]
    # The model carried on with an answer, and the caller hung up themselves.
    assert connection.responses[-1].kind == "answer" and connection.responses[-1].status == "completed"
    assert result.closed_by == "caller"
    assert detail.summary.outcome == "caller_hung_up"
    assert [e.type for e in detail.events] == ["transfer_refused"]


def closed_today() -> str:
    """Opening hours on every day but today (in the advisors' time zone)."""
    today = datetime.now(ZoneInfo("Europe/Paris")).weekday()
    return "; ".join(f"{day} 00:00-24:00" for index, day in enumerate(DAYS) if index != today)


async def test_outside_opening_hours_octi_is_told_the_advisors_are_closed(double):
    double.script_next_connection([ASKS_FOR_A_PERSON], greeting_seconds=1.0, answer_seconds=1.0)
    async with running_line(openai_realtime_url=double.url, silence_prompt_seconds=0,
                            transfer_number="+33555000111", transfer_hours=closed_today(),
                            twilio_account_sid="AC" + "0" * 32) as line:
        result = await call(line, say(hangup_when_done_after_s=2.0))
        detail = await stored(line, result.call_sid)
    assert tool_outputs(double.connections[0]) == [{"error": phrases.ADVISORS_CLOSED}]
    assert result.closed_by == "caller"
    assert [(e.type, e.detail) for e in detail.events] == [("transfer_refused", phrases.ADVISORS_CLOSED)]


# ------------------------------------------------------------------ through Twilio's REST API

ACCOUNT = "AC" + "7" * 32
ADVISOR = "+33611223344"


@contextlib.asynccontextmanager
async def line_with_rest(double, **settings):
    """The line, and the impersonator of Twilio's REST API it sends its requests to."""
    async with TwilioRestDouble(account_sid=ACCOUNT, auth_token=AUTH_TOKEN, public_url=PUBLIC_URL) as rest:
        async with running_line(openai_realtime_url=double.url, silence_prompt_seconds=0,
                                twilio_account_sid=ACCOUNT, twilio_api_base=rest.url,
                                twilio_phone_number="+33198765432", **settings) as line:
            rest.server_url = line.url
            yield line, rest


async def test_a_goodbye_call_the_caller_talked_over_does_not_end_the_call(double):
    """The model starts calling end_call (« au revoir »), the caller speaks again before it is
    done: the service cancels that response, and still reports the call's arguments as done,
    as the GA types say. A call of a cancelled response must not run: the call goes on."""
    double.script_next_connection([GOODBYE_WORDS, "Attendez, encore une question."], greeting_seconds=1.0,
                                  answer_seconds=1.0)
    double.latency = 3.0  # the model's think time before the call's arguments
    script = CallScript(utterances=[Utterance(QUESTION), Utterance(INTERRUPTION, at=6.0)], hangup_after=30,
                        hangup_when_done_after_s=2.0)
    async with running_line(openai_realtime_url=double.url, silence_prompt_seconds=0, barge_in_min_ms=0) as line:
        result = await call(line, script)
        detail = await stored(line, result.call_sid)
    connection = double.connections[0]
    [goodbye_call] = [r for r in connection.responses if r.kind == "function_call"]
    assert goodbye_call.function_call["name"] == "end_call" and goodbye_call.status == "cancelled"
    assert tool_outputs(connection) == []
    assert result.closed_by == "caller", result.summary()
    assert detail.summary.outcome == "caller_hung_up"
    assert "agent_ended" not in [e.type for e in detail.events]


async def test_octi_s_goodbye_is_made_sure_of_by_a_rest_hang_up(double):
    double.script_next_connection([GOODBYE_WORDS], greeting_seconds=1.0, answer_seconds=1.0)
    async with line_with_rest(double) as (line, rest):
        result = await call(line, say(), rest_api=rest, account_sid=ACCOUNT)
        detail = await stored(line, result.call_sid)
    assert [(u["call_sid"], u["params"]) for u in rest.call_updates][0] == (result.call_sid, {"Status": "completed"})
    assert detail.summary.outcome == "agent_ended"


@pytest.mark.parametrize("answer_delay", [0.0, 1.5], ids=["answered-at-once", "answered-after-the-stream-stopped"])
async def test_a_transfer_whispers_the_question_to_the_advisor_who_takes_the_call(double, answer_delay):
    """Also when Twilio answers the redirect only after the stream has stopped: the call is
    still logged as transferred, not as hung up by the caller."""
    double.script_next_connection([ASKS_FOR_A_PERSON], greeting_seconds=1.0, answer_seconds=1.0)
    script = say(twiml_speed=20.0, advisor=Advisor("answers", ring_seconds=2.0, talk_seconds=30.0))
    async with line_with_rest(double, transfer_number=ADVISOR) as (line, rest):
        rest.redirect_answer_delay = answer_delay
        result = await call(line, script, rest_api=rest, account_sid=ACCOUNT)
        detail = await stored(line, result.call_sid)
    connection = double.connections[0]
    assert phrases.TRANSFERRING in creates(connection)[-1]
    [dial] = result.dials
    assert (dial.number, dial.status) == (ADVISOR, "completed")
    assert dial.whisper_texts == [f"Appel de la ligne OCTI. {ASKS_FOR_A_PERSON}"]
    assert [s.ended_by for s in result.streams] == ["rest_redirect"]
    assert result.documents[-1].source == "dial_action" and result.documents[-1].hangup
    assert detail.summary.outcome == "transferred"
    assert [e.type for e in detail.events] == ["transfer", "transfer_answered"]
    assert result.errors == [] and result.violations == []


ACCEPTS_THE_SMS = "Oui, envoyez-moi le récapitulatif par texto."
CALLER = "+33612345678"


async def test_a_caller_who_accepts_the_recap_by_sms_is_texted_it_after_the_call(double):
    double.script_next_connection([ACCEPTS_THE_SMS], greeting_seconds=1.0, answer_seconds=1.0)
    async with line_with_rest(double) as (line, rest):
        result = await call(line, say(hangup_when_done_after_s=2.0), rest_api=rest, account_sid=ACCOUNT,
                            from_number=CALLER)
        detail = await stored(line, result.call_sid)
    connection = double.connections[0]
    assert [c["name"] for c in function_calls(connection)] == ["send_recap_by_sms"]
    assert tool_outputs(connection) == [{"ok": True, "note": phrases.SMS_RECAP_PROMISED}]
    [message] = rest.messages
    assert (message["to"], message["from"]) == (CALLER, "+33198765432")
    assert message["body"] == f"{phrases.SMS_RECAP_HEADER}\n{detail.recap}"
    assert [e.type for e in detail.events] == ["sms_recap_accepted", "sms_recap_sent"]


async def test_a_caller_who_withholds_their_number_is_not_offered_a_text(double):
    double.script_next_connection([ACCEPTS_THE_SMS], greeting_seconds=1.0, answer_seconds=1.0)
    async with line_with_rest(double) as (line, rest):
        result = await call(line, say(hangup_when_done_after_s=2.0), rest_api=rest, account_sid=ACCOUNT,
                            from_number="+266696687")  # Twilio's « ANONYMOUS »
        detail = await stored(line, result.call_sid)
    [output] = tool_outputs(double.connections[0])
    assert output == {"error": phrases.NO_SMS}
    assert rest.messages == [] and "sms_recap_accepted" not in [e.type for e in detail.events]


async def test_an_sms_twilio_refuses_is_logged_in_the_call_without_the_number(double):
    """Twilio refuses the text (error 21211 quotes the number it was given): the call log says
    it failed, with the number masked as in the service's logs."""
    double.script_next_connection([ACCEPTS_THE_SMS], greeting_seconds=1.0, answer_seconds=1.0)
    unusable = "33612345678"  # no « + »: not E.164, as some trunks pass a caller's number
    async with line_with_rest(double) as (line, rest):
        result = await call(line, say(hangup_when_done_after_s=2.0), rest_api=rest, account_sid=ACCOUNT,
                            from_number=unusable)
        detail = await stored(line, result.call_sid)
    assert rest.messages == []
    [failure] = [e for e in detail.events if e.type == "sms_recap_failed"]
    assert unusable not in failure.detail and "336••••••78" in failure.detail, failure.detail


async def test_without_the_caller_s_yes_no_sms_is_sent_unless_configured_always(double):
    for setting, texted in (("ask", 0), ("always", 1)):
        double.script_next_connection(["Combien de jours pour couver des œufs de cane ?"],
                                      greeting_seconds=1.0, answer_seconds=1.0)
        async with line_with_rest(double, sms_recap=setting) as (line, rest):
            result = await call(line, say(hangup_when_done_after_s=2.0), rest_api=rest, account_sid=ACCOUNT)
            detail = await stored(line, result.call_sid)
        assert detail.recap and len(rest.messages) == texted, setting


async def test_when_the_advisor_does_not_answer_the_caller_leaves_a_voicemail_for_a_call_back(double):
    double.script_next_connection([ASKS_FOR_A_PERSON], greeting_seconds=1.0, answer_seconds=1.0)
    # The second utterance is not said to OCTI: it is the message left after the beep.
    message = Utterance(AUDIO / "question_incubation.wav", at=120, label="message")
    script = say(twiml_speed=20.0, advisor=Advisor("no-answer"), hangup_after=60)
    script.utterances.append(message)
    async with line_with_rest(double, transfer_number=ADVISOR) as (line, rest):
        calling = asyncio.create_task(call(line, script, rest_api=rest, account_sid=ACCOUNT))
        seen: list[tuple[int, int]] = []  # (calls in conversation, calls a drain waits for)
        while not calling.done():
            seen.append((line.metrics.active_calls, line.service.calls_held))
            await asyncio.sleep(0.005)
        result = await calling
        detail = await stored(line, result.call_sid)
        held_after = line.service.calls_held
    # Past its stream, the call is owed our webhooks (the dial's outcome, the recording): a
    # drain waits for them, then lets go.
    after_stream = seen[max(i for i, (active, _) in enumerate(seen) if active) + 1:]
    assert after_stream and all(held == 1 for _, held in after_stream[:10]), after_stream[:10]
    assert held_after == 0
    [dial] = result.dials
    assert dial.status == "no-answer"
    assert [d.source for d in result.documents] == ["webhook", "rest_twiml", "dial_action", "record_action"]
    assert result.documents[2].say_texts[0] == phrases.VOICEMAIL_PROMPT
    [recording] = result.recordings
    assert recording.utterance == "message" and recording.action_http_status == 200
    assert result.documents[-1].say_texts == [phrases.VOICEMAIL_SAVED] and result.documents[-1].hangup
    assert detail.summary.outcome == "transferred"
    events = {e.type: e.detail for e in detail.events}
    assert list(events) == ["transfer", "transfer_unanswered", "voicemail"]
    assert events["transfer_unanswered"] == "no-answer" and events["voicemail"].startswith(recording.url)
    # Promised a call-back, the caller's number is kept for it (STORE_CALLER_NUMBER is off).
    assert not line.settings.store_caller_number and detail.caller_number == CALLER
    assert result.errors == []


# ------------------------------------------------------------------ the model out of reach


async def test_when_the_model_cannot_be_reached_callers_leave_their_question_as_a_voicemail():
    async with running_line(openai_realtime_url=f"ws://127.0.0.1:{free_loopback_port()}/v1/realtime",
                            realtime_connect_timeout_seconds=1.0) as line:
        # The first caller reaches the stream; the engine does not answer: voicemail after it.
        first = await call(line, CallScript(hangup_after=10))
        # The next one is sent to voicemail by the webhook, without a stream.
        second = await call(line, CallScript(hangup_after=10))
        # Twilio posts the recording of the question.
        form = {"CallSid": second.call_sid, "AccountSid": second.account_sid, "RecordingDuration": "7",
                "From": CALLER, "Direction": "inbound",
                "RecordingUrl": f"https://api.twilio.com/2010-04-01/Accounts/{second.account_sid}/Recordings/RE1"}
        url = PUBLIC_URL + VOICEMAIL_PATH
        signature = RequestValidator(AUTH_TOKEN).compute_signature(url, form)
        async with httpx.AsyncClient() as http:
            saved = await http.post(line.url + VOICEMAIL_PATH, data=form, headers={"X-Twilio-Signature": signature})
        details = [await stored(line, result.call_sid) for result in (first, second)]
    assert first.closed_by == "server" and first.after_stream["say_texts"][0] == phrases.FAILURE_VOICEMAIL
    assert "Record" in first.after_stream["twiml"]
    assert second.status == "spoken_only" and second.stream_url is None
    assert second.say_texts[0] == phrases.UNREACHABLE_VOICEMAIL and "Record" in second.verbs
    assert saved.status_code == 200 and phrases.VOICEMAIL_SAVED in saved.text
    assert [d.summary.outcome for d in details] == ["error", "error"]
    assert [d.caller_number for d in details] == [None, CALLER]  # only the one who left a message
    assert [(e.type, e.detail) for e in details[1].events] == [
        ("upstream_failure", "modèle injoignable : messagerie"), ("voicemail", f"{form['RecordingUrl']} (7 s)")]


async def test_the_person_key_transfers_with_the_last_question_as_the_whisper(double):
    double.script_next_connection(["Mes poules ne pondent plus depuis une semaine."],
                                  greeting_seconds=1.0, answer_seconds=1.0)
    script = say(dtmf=[(6.0, "0")], twiml_speed=20.0, advisor=Advisor("answers", ring_seconds=2.0, talk_seconds=10.0))
    async with line_with_rest(double, transfer_number=ADVISOR) as (line, rest):
        result = await call(line, script, rest_api=rest, account_sid=ACCOUNT)
        detail = await stored(line, result.call_sid)
    assert function_calls(double.connections[0]) == []
    [dial] = result.dials
    assert dial.status == "completed"
    assert dial.whisper_texts == ["Appel de la ligne OCTI. Mes poules ne pondent plus depuis une semaine."]
    assert detail.summary.outcome == "transferred"
    assert [e.type for e in detail.events] == ["dtmf", "person_requested", "transfer", "transfer_answered"]
