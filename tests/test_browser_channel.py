"""The browser channel over real sockets: the server between a page and the Realtime double."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from contextlib import asynccontextmanager

import httpx
import pytest
import websockets

from app.accounts.passwords import PasswordChecks
from app.accounts.tokens import AccessTokens, token_key
from app.agent import phrases
from app.channels.browser.sign_in import MAX_FAILURES_PER_ACCOUNT, MAX_FAILURES_PER_CLIENT
from app.agent.behaviours import GOODBYE_TIMEOUT_SECONDS
from tests.browser_client import PASSWORD, open_page, sign_in, speech, started, stored_calls
from tests.harness import running_line

REVIEW_TOKEN = "review-token-0123456789abcdef"


@asynccontextmanager
async def hearing_a_long_greeting(double, *, heard_ms: float, **page_options):
    """A signed-in page in a conversation whose 6 s greeting streams in real time, once the
    page has played `heard_ms` of it: (the running line, the page)."""
    double.script_next_connection(greeting_seconds=6.0)
    double.speed = 1.0
    async with running_line(openai_realtime_url=double.url) as line:
        token = await sign_in(line)
        async with open_page(line.url, token=token, **page_options) as page:
            await started(page)
            while len(page.played) < 48 * heard_ms:
                await asyncio.sleep(0.02)
            yield line, page


async def test_a_conversation_in_the_seed_protocol_lands_in_the_call_log(double):
    double.script_next_connection(answer_seconds=1.5, greeting_seconds=1.0)
    async with running_line(openai_realtime_url=double.url, review_token=REVIEW_TOKEN) as line:
        token = await sign_in(line)
        async with open_page(line.url, token=token, origin=line.url) as page:
            await started(page)
            await page.until_type("bot_audio_end")  # the greeting
            await page.played_out()
            await page.speak(speech("question_incubation.wav", trailing_silence_ms=1200))
            await page.until(lambda m: sum(t["type"] == "bot_audio_end" for t in page.texts) == 2, timeout=15)
            await page.played_out()  # the answer heard to its end, else the log would say where it was cut
            words = "".join(m["text"] for m in page.texts if m["type"] == "transcript_delta")
        connection = double.connections[0]
        assert [r.kind for r in connection.responses] == ["greeting", "answer"]
        # 24 kHz both ways: the double's audio arrives whole, in whole samples.
        assert len(page.audio) % 2 == 0
        assert len(page.audio) / 48 == pytest.approx(sum(r.audio_ms for r in connection.responses), abs=40)
        [call] = await stored_calls(line)
        assert call.summary.channel == "web" and call.summary.caller_masked == "marie"
        assert [turn.role for turn in call.turns] == ["assistant", "caller", "assistant"]
        assert not any(turn.interrupted for turn in call.turns) and "clear_audio" not in str(page.texts)
        # The screen got OCTI's words as they were said: the same text as the log's.
        assert words == call.turns[0].text + call.turns[2].text
        assert call.turns[1].text  # the caller's words, transcribed
        # Reviewers see it among the calls, as a browser conversation.
        async with httpx.AsyncClient(base_url=line.url, headers={"Authorization": f"Bearer {REVIEW_TOKEN}"}) as client:
            listed = (await client.get("/api/calls")).json()["items"]
            page_html = (await client.get(f"/calls/{call.summary.id}?token={REVIEW_TOKEN}", follow_redirects=True)).text
        assert [(item["channel"], item["caller_masked"]) for item in listed] == [("web", "marie")]
        assert "navigateur" in page_html and "marie" in page_html


async def test_bad_frames_get_an_error_each_and_the_socket_stays_open(double):
    async with running_line(openai_realtime_url=double.url) as line:
        token = await sign_in(line)
        async with open_page(line.url, token=token) as page:
            await page.ws.send(b"\x00\x00" * 10)  # audio before the conversation
            await page.ws.send("pas du json")
            await started(page)
            for frame in ('{"type":"raccrocher"}', b"\x00" * 7, b'{"type":"user_audio_end"}',
                          b"\x00" * 200_000, '{"type":"playback","samples":-3}'):
                await page.ws.send(frame)
            await page.until(lambda m: m.get("code") == "bad_message")
            codes = [m.get("code") for m in page.texts if m["type"] == "error"]
            assert codes == ["not_started", "bad_json", "unknown_type", "bad_audio", "json_as_audio",
                             "audio_too_large", "bad_message"]
            assert all(m["message"] for m in page.texts if m["type"] == "error")
            assert page.closed is None
            await page.send_json({"type": "user_audio_end"})  # still served
            await asyncio.sleep(0.3)
            assert page.closed is None


@pytest.mark.parametrize("case", ["no token", "forged token", "expired token", "unknown user", "disabled user",
                                  "foreign origin", "bad rate", "no start"])
async def test_refusals_are_clear_errors_then_a_close(double, case, caplog):
    async with running_line(openai_realtime_url=double.url) as line:
        token = await sign_in(line)
        kwargs = {"token": token, "origin": line.url}
        if case == "no token":
            kwargs["token"] = None
        elif case == "forged token":
            kwargs["token"] = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        elif case == "expired token":
            kwargs["token"] = AccessTokens(token_key(line.settings), lifetime_seconds=60,
                                           clock=lambda: time.time() - 3600).issue("marie")
        elif case == "unknown user":
            kwargs["token"] = line.service.browser.tokens.issue("paul")
        elif case == "disabled user":
            assert await line.service.browser.users.set_disabled("marie", True)
        elif case == "no start":
            line.service.browser.start_timeout_seconds = 0.5
        elif case == "foreign origin":
            kwargs["origin"] = "https://evil.example"
        else:
            kwargs["rate"] = 44100
        async with open_page(line.url, **kwargs) as page:
            code, _ = await page.wait_closed()
        [error] = page.texts
        expected = {"no token": "unauthorized", "forged token": "unauthorized", "expired token": "unauthorized",
                    "unknown user": "unauthorized", "disabled user": "unauthorized",
                    "foreign origin": "origin_refused", "bad rate": "bad_sample_rate", "no start": "start_timeout"}[case]
        assert error["type"] == "error" and error["code"] == expected and error["message"]
        assert code == 1008
        assert double.connections == []  # no model session was opened
        assert any("refused a browser conversation" in r.getMessage() for r in caplog.records)


async def test_the_seed_protocol_on_ws_voice_too_and_the_token_from_the_cookie(double):
    async with running_line(openai_realtime_url=double.url) as line:
        token = await sign_in(line)
        url = line.url.replace("http", "ws", 1) + "/ws/voice"
        async with websockets.connect(url, additional_headers={"Cookie": f"octi_web_token={token}"}) as ws:
            await ws.send(json.dumps({"type": "start_conversation"}))
            assert json.loads(await ws.recv()) == {"type": "ready"}
            async with asyncio.timeout(10):
                while not isinstance(await ws.recv(), bytes):  # until the greeting's audio
                    pass


async def test_five_conversations_an_hour_then_a_refusal_and_reconnecting_counts(double):
    async with running_line(openai_realtime_url=double.url, web_sessions_per_hour=2) as line:
        token = await sign_in(line)
        for _ in range(2):  # a conversation, then a reconnect
            async with open_page(line.url, token=token) as page:
                await started(page)
        async with open_page(line.url, token=token) as page:
            await page.send_json({"type": "start_conversation"})
            refusal = await page.until_type("error")
            await page.wait_closed()
        assert refusal["code"] == "rate_limited" and "2 conversations par heure" in refusal["message"]
        assert len(double.connections) == 2


async def test_sixteen_khz_pages_are_resampled_both_ways(double):
    double.script_next_connection(greeting_seconds=1.0)
    async with running_line(openai_realtime_url=double.url) as line:
        token = await sign_in(line)
        async with open_page(line.url, token=token, rate=16000) as page:
            await started(page)
            await page.until_type("bot_audio_end")
            greeting_bytes = len(page.audio)
            await page.played_out()
            await page.speak(speech("question_incubation.wav", rate=16000, trailing_silence_ms=1200))
            connection = double.connections[0]
            await connection.wait_for_server(lambda e: e["type"] == "input_audio_buffer.speech_stopped", timeout=10)
        # The service has no 16 kHz: it speaks PCM16 24 kHz, resampled for the page.
        assert connection.session["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
        greeting = connection.responses[0].audio_ms
        assert greeting_bytes / 32 == pytest.approx(greeting, abs=40)  # 16 kHz: 32 bytes a ms
        # The model heard 24 kHz audio as long as what the page said.
        said_ms = len(speech("question_incubation.wav", rate=16000, trailing_silence_ms=1200)) / 32
        appended = connection.client_event_counts["input_audio_buffer.append"]
        assert appended > 0 and connection.input_audio.total_units / 48 == pytest.approx(said_ms, abs=60)


async def test_a_barge_in_clears_the_page_and_cuts_the_answer_where_the_page_was(double):
    async with hearing_a_long_greeting(double, heard_ms=1500) as (_, page):
        await page.speak(speech("question_followup.wav", trailing_silence_ms=800))
        await page.until_type("clear_audio")
        connection = double.connections[0]
        truncate = await connection.wait_for(lambda e: e["type"] == "conversation.item.truncate", timeout=10)
        heard_ms = page.played_at_clear / 48
    # Cut where the page had got to (it reports every 60 ms; the tracker fills in the rest).
    assert abs(truncate["audio_end_ms"] - heard_ms) < 150
    assert truncate["audio_end_ms"] < len(page.audio) / 48 - 100  # less than was sent: what was heard


async def test_a_page_that_never_reports_playback_is_cut_where_it_could_have_got_to(double):
    async with hearing_a_long_greeting(double, heard_ms=1500, report_playback=False) as (_, page):
        await page.speak(speech("question_followup.wav", trailing_silence_ms=800))
        await page.until_type("clear_audio")
        connection = double.connections[0]
        truncate = await connection.wait_for(lambda e: e["type"] == "conversation.item.truncate", timeout=10)
        heard_ms = page.played_at_clear / 48
    # Without reports, what had time to play counts as heard: as far as this page, which
    # plays in real time, had got; not what was sent ahead of it.
    assert abs(truncate["audio_end_ms"] - heard_ms) < 150
    assert truncate["audio_end_ms"] < len(page.audio) / 48 - 100


async def test_a_page_that_never_reports_playback_has_heard_what_had_time_to_play(double):
    """The seed's own client plays what it gets and says nothing: once an answer has had time
    to play out, it was heard, and the caller's next question cuts nothing."""
    double.script_next_connection(greeting_seconds=1.0, answer_seconds=1.0)
    async with running_line(openai_realtime_url=double.url) as line:
        token = await sign_in(line)
        async with open_page(line.url, token=token, report_playback=False) as page:
            await started(page)
            await page.until_type("bot_audio_end")
            await page.played_out()
            await asyncio.sleep(0.5)
            await page.speak(speech("question_incubation.wav", trailing_silence_ms=1200))
            await page.until(lambda m: sum(t["type"] == "bot_audio_end" for t in page.texts) == 2, timeout=15)
            await page.played_out()
            await asyncio.sleep(0.3)
        connection = double.connections[0]
        [call] = await stored_calls(line)
    assert "clear_audio" not in str(page.texts)
    assert not [e for e in connection.client_events if e["type"] == "conversation.item.truncate"]
    assert call.summary.barge_ins == 0
    greeting = call.turns[0]
    assert not greeting.interrupted and greeting.text == connection.responses[0].transcript


async def test_a_page_that_never_reports_playback_is_let_go_once_the_goodbye_had_time_to_play(double):
    double.script_next_connection(greeting_seconds=0.5)
    async with running_line(openai_realtime_url=double.url, silence_prompt_seconds=0) as line:
        token = await sign_in(line)
        async with open_page(line.url, token=token, report_playback=False) as page:
            await started(page)
            await page.until_type("bot_audio_end")
            await page.send_json({"type": "user_text", "text": "Bon, merci beaucoup, au revoir !"})
            await page.until(lambda m: sum(t["type"] == "bot_audio_end" for t in page.texts) == 2)
            goodbye_sent_at = time.perf_counter()
            goodbye_ms = len(page.audio) / 48 - double.connections[0].responses[0].audio_ms
            await page.wait_closed(timeout=20)
            closed_after = time.perf_counter() - goodbye_sent_at
    # Once the goodbye had time to play, not after GOODBYE_TIMEOUT_SECONDS.
    assert closed_after < goodbye_ms / 1000 + 1.0 < GOODBYE_TIMEOUT_SECONDS


async def test_reset_starts_afresh_on_the_same_socket(double):
    async with running_line(openai_realtime_url=double.url) as line:
        token = await sign_in(line)
        async with open_page(line.url, token=token) as page:
            await started(page)
            first = await double.wait_for_connection()
            await page.send_json({"type": "reset_session"})
            await page.until(lambda m: m["type"] == "ready" and page.texts.count(m) == 2)
            second = await double.wait_for_connection()
            assert second is not first
            assert second.conversation == []
        [call] = await stored_calls(line)
        assert [event.type for event in call.events] == ["conversation_reset"]


async def test_the_session_cap_is_announced_then_the_conversation_ends(double):
    double.script_next_connection(greeting_seconds=0.5)
    async with running_line(openai_realtime_url=double.url, web_session_max_seconds=4.0) as line:
        token = await sign_in(line)
        async with open_page(line.url, token=token) as page:
            await started(page)
            code, _ = await page.wait_closed(timeout=10)
            ending = [m for m in page.texts if m["type"] == "error"]
        assert ending and ending[-1]["code"] == "time_limit" and code == 1000
        warning = [e for e in double.connections[0].client_events if e["type"] == "response.create"][1]
        assert "Il nous reste 1 seconde" in warning["response"]["instructions"]
        [call] = await stored_calls(line)
        assert call.summary.outcome == "timeout"


async def test_octi_s_goodbye_says_ended_then_closes_normally(double):
    """OCTI ending the conversation itself (here the model's end_call after « au revoir »)
    tells the page so, that it does not reconnect, before the normal close."""
    double.script_next_connection(greeting_seconds=0.5, answer_seconds=1.0)
    async with running_line(openai_realtime_url=double.url, silence_prompt_seconds=0) as line:
        token = await sign_in(line)
        async with open_page(line.url, token=token) as page:
            await started(page)
            await page.until_type("bot_audio_end")
            await page.send_json({"type": "user_text", "text": "Bon, merci beaucoup, au revoir !"})
            code, _ = await page.wait_closed(timeout=20)
        [call] = await stored_calls(line)
    assert page.texts[-1] == {"type": "ended", "reason": "agent_ended"} and code == 1000
    assert call.summary.outcome == "agent_ended"


async def test_sign_in_refuses_wrong_passwords_and_then_too_many(double):
    async with running_line(openai_realtime_url=double.url) as line:
        await line.service.browser.users.add("marie", PASSWORD)
        async with httpx.AsyncClient(base_url=line.url) as client:
            statuses = [(await client.post("/api/web/token", json={"username": "marie", "password": "non"})).status_code
                        for _ in range(6)]
            good_but_late = await client.post("/api/web/token", json={"username": "marie", "password": PASSWORD})
            malformed = await client.post("/api/web/token", json={"username": "marie"})
        assert statuses == [401] * 5 + [429]
        assert good_but_late.status_code == 429 and "Retry-After" in good_but_late.headers
        assert malformed.status_code == 422


async def test_signing_in_to_ones_own_account_does_not_reset_the_guesses_at_anothers(double):
    """Four wrong passwords for marie, then paul signs in from the same address: the fifth and
    sixth guesses at marie's still count, and the sixth is refused. Trying other usernames does
    not give each its own allowance either: past MAX_FAILURES_PER_CLIENT the address waits."""
    async with running_line(openai_realtime_url=double.url) as line:
        await line.service.browser.users.add("marie", PASSWORD)
        await line.service.browser.users.add("paul", PASSWORD)
        async with httpx.AsyncClient(base_url=line.url) as client:
            async def sign_in_as(username: str, password: str = "non") -> int:
                answer = await client.post("/api/web/token", json={"username": username, "password": password})
                return answer.status_code

            guesses = [await sign_in_as("marie") for _ in range(4)]
            own = await sign_in_as("paul", PASSWORD)
            more = [await sign_in_as("marie") for _ in range(2)]
            assert (guesses, own, more) == ([401] * 4, 200, [401, 429])
            others = [await sign_in_as(f"eleveur{n}") for n in range(MAX_FAILURES_PER_CLIENT - 5)]
            assert others == [401] * (MAX_FAILURES_PER_CLIENT - 5)
            assert await sign_in_as("quelquun") == 429
            assert await sign_in_as("paul", PASSWORD) == 429, "the address waits, whatever the account"

async def test_a_flood_of_sign_ins_is_turned_away_instead_of_checking_every_password_at_once(double):
    """Each argon2 check takes 64 MiB and a core: 30 sign-ins at once get one check at a time,
    a few queued, and the rest a 429 at once (before the failures count could stop them)."""
    flood = 30
    async with running_line(openai_realtime_url=double.url) as line:
        await line.service.browser.users.add("marie", PASSWORD)
        async with httpx.AsyncClient(base_url=line.url, timeout=60) as client:
            answers = await asyncio.gather(*(client.post("/api/web/token", json={"username": "marie", "password": "non"})
                                             for _ in range(flood)))
    turned_away = [a for a in answers if a.status_code == 429 and "connexions en cours" in a.json()["error"]]
    # Checked: wrong, or past the failures' limit once checked (counted after the check).
    checked = [a for a in answers if a.status_code == 401 or "Trop d'essais" in a.json()["error"]]
    assert len(checked) <= 1 + PasswordChecks.MAX_WAITING and len(checked) + len(turned_away) == flood
    assert all(a.headers["Retry-After"] == "5" for a in turned_away)


async def test_wrong_passwords_sent_at_once_are_counted_before_any_is_answered(double):
    """Wrong passwords for one account sent all at once (as many as the password checks take in):
    only MAX_FAILURES_PER_ACCOUNT are answered as wrong, the rest refused, and the right password
    afterwards too. (In memory: in the shared Redis, this address's failures would outlive the test.)"""
    username = f"u{secrets.token_hex(6)}"
    async with running_line(openai_realtime_url=double.url) as line:
        await line.service.browser.users.add(username, PASSWORD)
        async with httpx.AsyncClient(base_url=line.url, timeout=60) as client:
            burst = 1 + PasswordChecks.MAX_WAITING
            answers = await asyncio.gather(*(client.post("/api/web/token", json={"username": username, "password": "non"})
                                             for _ in range(burst)))
            right = await client.post("/api/web/token", json={"username": username, "password": PASSWORD})
    statuses = [answer.status_code for answer in answers]
    assert statuses.count(401) == MAX_FAILURES_PER_ACCOUNT and statuses.count(429) == burst - MAX_FAILURES_PER_ACCOUNT
    assert right.status_code == 429

async def test_workers_sharing_redis_share_each_users_conversation_count(double, redis_url):
    """Two service processes (here two servers) behind one Redis: a user's conversations are
    counted across both."""
    username = f"u{secrets.token_hex(6)}"  # runs sharing the Redis never count each other's
    async with (running_line(openai_realtime_url=double.url, web_sessions_per_hour=2, redis_url=redis_url) as first,
                running_line(openai_realtime_url=double.url, web_sessions_per_hour=2, redis_url=redis_url) as second):
        tokens = [await sign_in(first, username), await sign_in(second, username)]
        for line, token in zip((first, second), tokens):
            async with open_page(line.url, token=token) as page:
                await started(page)
        async with open_page(first.url, token=tokens[0]) as page:
            await page.send_json({"type": "start_conversation"})
            assert (await page.until_type("error"))["code"] == "rate_limited"


async def test_a_typed_question_is_answered_with_the_knowledge_base(double):
    """The softphone's fallback without a microphone: the question goes in as text, the
    passages for it go with the answer, and the log has it as the caller's turn."""
    double.script_next_connection(answer_seconds=1.0, greeting_seconds=0.5)
    async with running_line(openai_realtime_url=double.url) as line:
        token = await sign_in(line)
        async with open_page(line.url, token=token) as page:
            await started(page)
            await page.until_type("bot_audio_end")
            await page.send_json({"type": "user_text", "text": "À quelle température régler la couveuse ?"})
            await page.until(lambda m: sum(t["type"] == "bot_audio_end" for t in page.texts) == 2, timeout=15)
        connection = double.connections[0]
        assert [r.kind for r in connection.responses] == ["greeting", "answer"]
        typed = [item for item in connection.conversation if item.get("role") == "user"]
        assert typed[0]["content"] == [{"type": "input_text", "text": "À quelle température régler la couveuse ?"}]
        context = [item for item in connection.responses[1].input_items if item.get("role") == "system"]
        assert context and "Extraits" in context[0]["content"][0]["text"]
        [call] = await stored_calls(line)
        caller = [turn for turn in call.turns if turn.role == "caller"]
        assert caller[0].text == "À quelle température régler la couveuse ?" and caller[0].passages


async def test_the_interrupt_button_stops_octi_and_counts_as_an_interruption(double):
    async with hearing_a_long_greeting(double, heard_ms=1000) as (line, page):
        await page.send_json({"type": "interrupt"})
        await page.until_type("clear_audio")
        connection = double.connections[0]
        truncate = await connection.wait_for(lambda e: e["type"] == "conversation.item.truncate", timeout=10)
        heard_ms = page.played_at_clear / 48
        await page.ws.close()
        [call] = await stored_calls(line)
    assert abs(truncate["audio_end_ms"] - heard_ms) < 150
    assert call.summary.barge_ins == 1 and call.turns[0].interrupted


async def test_a_user_database_that_is_down_refuses_cleanly(double, tmp_path):
    """The token is fine but the users cannot be checked: a clear refusal, no model session."""
    async with running_line(openai_realtime_url=double.url,
                            database_url="postgresql://octi@127.0.0.1:1/none") as line:
        token = line.service.browser.tokens.issue("marie")
        async with open_page(line.url, token=token) as page:
            code, _ = await page.wait_closed()
        assert page.texts[0]["code"] == "unavailable" and code == 1008
        assert double.connections == []


async def test_a_reset_whose_new_session_cannot_be_opened_leaves_the_conversation_going(double):
    """The model refuses the new session a reset asks for: the page is told, the call log has it
    as a model failure, and the conversation goes on in the session it had."""
    double.script_next_connection(answer_seconds=1.0, greeting_seconds=0.5)
    async with running_line(openai_realtime_url=double.url) as line:
        token = await sign_in(line)
        async with open_page(line.url, token=token) as page:
            await started(page)
            await page.until_type("bot_audio_end")
            double.refuse_next(1)
            await page.send_json({"type": "reset_session"})
            notice = await page.until(lambda m: m.get("code") == "unavailable")
            await page.send_json({"type": "user_text", "text": "À quelle température régler la couveuse ?"})
            await page.until(lambda m: sum(t["type"] == "bot_audio_end" for t in page.texts) == 2, timeout=15)
            readies = [m for m in page.texts if m["type"] == "ready"]
            answers = [r.kind for r in double.connections[0].responses]
        [call] = await stored_calls(line)
    assert notice["message"] == phrases.UNAVAILABLE and len(readies) == 1
    assert len(double.rejected_handshakes) == 1 and len(double.connections) == 1
    assert answers == ["greeting", "answer"]
    assert [event.type for event in call.events] == ["upstream_failure"]
    assert call.summary.outcome == "caller_hung_up"
