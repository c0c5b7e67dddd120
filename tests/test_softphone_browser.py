"""The softphone in a real headless Chromium, its microphone a WAV file (Chromium's fake capture
device), against the real server and the Realtime double over real sockets.

Needs Debian's Chromium at /usr/bin/chromium (see tests/test_review_browser.py).
"""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path

import numpy as np
import pytest

from app.calllog.store import CallLogStore
from tests.harness import running_line
from tests.browser_client import PASSWORD, stored_calls
from tests.test_realtime_double import read_wav, to_pcm_24k
from tests.conftest import launched_chromium

RATE = 24000


def microphone_wav(path: Path, *parts: tuple[str | None, float]) -> Path:
    """A WAV for the fake microphone: each part a recording (or None for silence) and, for
    silence, its length in seconds."""
    pcm = b""
    for name, seconds in parts:
        if name is None:
            pcm += b"\x00\x00" * int(RATE * seconds)
            continue
        pcm += to_pcm_24k(*read_wav(name))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(pcm)
    return path


@pytest.fixture
async def chromium_with_microphone(chromium_path, tmp_path):
    """Chromium whose microphone says: (3 s) a question, (2 s) then talks over the answer."""
    wav = microphone_wav(tmp_path / "mic.wav", (None, 3.0), ("question_incubation.wav", 0), (None, 1.8),
                         ("interruption.wav", 0), (None, 20.0))
    async with launched_chromium(chromium_path, "--use-fake-device-for-media-stream",
                                 f"--use-file-for-fake-audio-capture={wav}%noloop") as browser:
        yield browser


async def open_softphone(browser, line, *, microphone: bool, query: str = "record=1", init_script: str = ""):
    context = await browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
                                        permissions=["microphone"] if microphone else [])
    page = await context.new_page()
    if init_script:
        await page.add_init_script(init_script)
    page.set_default_timeout(20_000)
    await page.goto(f"{line.url}/softphone/?{query}")
    return page


async def sign_in_by_api(page) -> None:
    status = await page.evaluate("""async (password) => (await fetch('/api/web/token', {method: 'POST',
        headers: {'Content-Type': 'application/json'},
        body: JSON.stringify({username: 'marie', password})})).status""", PASSWORD)
    assert status == 200


def states(history: list[str], wanted: list[str]) -> bool:
    """`wanted` appears in order within `history` (other states may come between)."""
    it = iter(history)
    return all(state in it for state in wanted)


async def test_a_spoken_question_an_answer_heard_and_a_barge_in(double, chromium_with_microphone):
    double.script_next_connection(greeting_seconds=1.5, answer_seconds=5.0)
    async with running_line(openai_realtime_url=double.url) as line:
        await line.service.browser.users.add("marie", PASSWORD)
        page = await open_softphone(chromium_with_microphone, line, microphone=True)
        await sign_in_by_api(page)
        await page.click("#talk")
        await page.wait_for_function("window.octiSoftphone.states.includes('interrupted')", timeout=30_000)
        await page.wait_for_function("document.querySelector('#talk').dataset.state === 'listening'"
                                     " || document.querySelector('#talk').dataset.state === 'speaking'")
        # OCTI paused at once; the answer is cut once the sound has proved to be speech
        # (BARGE_IN_MIN_MS later): a hang-up before that would end the call undecided.
        connection = double.connections[0]
        truncate = await connection.wait_for(lambda e: e["type"] == "conversation.item.truncate", timeout=5)
        history = await page.evaluate("window.octiSoftphone.states")
        played = np.array(await page.evaluate("window.octiSoftphone.played"), dtype=np.float32)
        transcript = await page.inner_text("#transcript")
        await page.click("#hang-up")
    assert states(history, ["idle", "listening", "speaking", "listening", "speaking", "interrupted"]), history
    greeting_ms = connection.responses[0].audio_ms
    answer = connection.responses[1]
    # What the speaker played: the greeting whole, then the answer up to the barge-in, as audio
    # (not silence), and the server cut the answer where the page's playback had got to.
    played_ms = len(played) / RATE * 1000
    heard_of_answer_ms = played_ms - greeting_ms
    assert 300 < heard_of_answer_ms < answer.audio_ms
    assert abs(truncate["audio_end_ms"] - heard_of_answer_ms) < 150, (truncate, heard_of_answer_ms)
    assert float(np.sqrt(np.mean(played ** 2))) > 0.01
    assert transcript.strip()  # OCTI's words on screen


async def test_a_refused_microphone_shows_the_text_fallback_and_answers_aloud(double, chromium_with_microphone):
    double.script_next_connection(greeting_seconds=0.5, answer_seconds=1.0)
    async with running_line(openai_realtime_url=double.url) as line:
        await line.service.browser.users.add("marie", PASSWORD)
        page = await open_softphone(chromium_with_microphone, line, microphone=False)
        await sign_in_by_api(page)
        await page.click("#talk")
        await page.wait_for_selector("#text-fallback", state="visible")
        await page.wait_for_function("document.querySelector('#talk').dataset.state === 'listening'")
        await page.fill("#question", "Quelle température pour la couveuse ?")
        await page.click("#text-fallback button[type=submit]")
        await page.wait_for_function("window.octiSoftphone.states.filter(s => s === 'speaking').length >= 2")
        errors = await page.evaluate("window.octiSoftphone.errors")
        assert "microphone: NotAllowedError" in errors
        assert "Quelle température pour la couveuse ?" in await page.inner_text("#transcript")
        connection = double.connections[0]
        await connection.wait_for_server(lambda e: e["type"] == "response.done", timeout=10, new_only=False)
    typed = [item for item in connection.conversation if item.get("role") == "user"]
    assert typed and typed[0]["content"][0]["text"] == "Quelle température pour la couveuse ?"


# A microphone the page cannot wire: connecting it throws, as Firefox's AudioContext does for a
# microphone of another rate than its own. The streams the page was given are kept for the test.
MICROPHONE_NOT_WIRED = """
    window.grantedStreams = [];
    const getUserMedia = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
    navigator.mediaDevices.getUserMedia = async (constraints) => {
      const stream = await getUserMedia(constraints);
      window.grantedStreams.push(stream);
      return stream;
    };
    AudioContext.prototype.createMediaStreamSource = () => {
      throw new DOMException('AudioContext.createMediaStreamSource: Connecting AudioNodes from AudioContexts '
                             + 'with different sample-rate is currently not supported.', 'NotSupportedError');
    };
"""


async def test_a_microphone_the_audio_context_refuses_is_let_go_and_typing_is_offered(double,
                                                                                      chromium_with_microphone):
    double.script_next_connection(greeting_seconds=0.5)
    async with running_line(openai_realtime_url=double.url) as line:
        await line.service.browser.users.add("marie", PASSWORD)
        page = await open_softphone(chromium_with_microphone, line, microphone=True,
                                    init_script=MICROPHONE_NOT_WIRED)
        await sign_in_by_api(page)
        await page.click("#talk")
        await page.wait_for_function("window.octiSoftphone.states.includes('listening')")
        assert "microphone: NotSupportedError" in await page.evaluate("window.octiSoftphone.errors")
        # The microphone was let go (the browser's indicator goes off), and the page does not
        # claim to listen: it offers typing.
        assert await page.evaluate("window.grantedStreams.length === 1 && "
                                   "window.grantedStreams[0].getTracks().every(t => t.readyState === 'ended')")
        assert await page.inner_text("#status") == "Écrivez votre question."
        assert await page.is_visible("#text-fallback") and await page.is_disabled("#done")
        await page.click("#hang-up")


# Firefox's rule, in Chromium: a microphone connects only to a context at the device's own rate
# (the rate of a context created without one).
FIREFOX_MICROPHONE_RATE_RULE = """
    const connect = AudioContext.prototype.createMediaStreamSource;
    AudioContext.prototype.createMediaStreamSource = function (stream) {
      const probe = new AudioContext();
      const deviceRate = probe.sampleRate;
      probe.close();
      if (this.sampleRate !== deviceRate) {
        throw new DOMException('AudioContext.createMediaStreamSource: Connecting AudioNodes from AudioContexts '
                               + 'with different sample-rate is currently not supported.', 'NotSupportedError');
      }
      return connect.call(this, stream);
    };
"""
TONE_HZ = 1000


def dominant_frequency(pcm: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize("rate", [24000, 16000])
async def test_the_microphone_at_the_device_s_own_rate_reaches_the_socket_at_its_rate(double, chromium_path,
                                                                                     tmp_path, rate):
    """The microphone's context runs at the device's rate (44.1 kHz in headless Chromium), which
    Firefox requires, and the page resamples it to the socket's: a 1 kHz tone reaches the
    service as a 1 kHz tone, at either socket rate."""
    t = np.arange(int(RATE * 0.4)) / RATE
    burst = (0.3 * 32767 * np.sin(2 * np.pi * TONE_HZ * t)).astype("<i2").tobytes()
    wav = tmp_path / "tone.wav"
    with wave.open(str(wav), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes((burst + b"\x00\x00" * int(RATE * 0.4)) * 20)
    double.script_next_connection(greeting_seconds=0.5)
    async with (launched_chromium(chromium_path, "--use-fake-device-for-media-stream",
                                  f"--use-file-for-fake-audio-capture={wav}") as browser,
                running_line(openai_realtime_url=double.url, record_calls=True) as line):
        await line.service.browser.users.add("marie", PASSWORD)
        page = await open_softphone(browser, line, microphone=True, query=f"rate={rate}",
                                    init_script=FIREFOX_MICROPHONE_RATE_RULE)
        await sign_in_by_api(page)
        await page.click("#talk")
        await page.wait_for_function("window.octiSoftphone.states.includes('listening')")
        assert await page.inner_text("#status") == "Parlez, OCTI vous écoute."
        await page.wait_for_function(f"window.octiSoftphone.sent >= {rate * 2 * 4}")  # 4 s of microphone
        debug = await page.evaluate("window.octiSoftphone")
        await page.click("#hang-up")
        [call] = await stored_calls(line)
        async with await CallLogStore.open(line.settings.effective_database_url) as store:
            recording = await store.recording_path(call.summary.id)
        with wave.open(str(recording)) as stereo:
            recorded_rate = stereo.getframerate()
            caller = np.frombuffer(stereo.readframes(stereo.getnframes()), "<i2").reshape(-1, 2)[:, 0].astype(float)
    assert not debug["errors"] and debug["captureRate"] != rate
    assert np.sqrt(np.mean(caller ** 2)) > 300  # the tone came through, not silence
    assert abs(dominant_frequency(caller, recorded_rate) - TONE_HZ) < 10


async def test_signing_in_on_the_page_then_talking(double, chromium_with_microphone):
    async with running_line(openai_realtime_url=double.url) as line:
        await line.service.browser.users.add("marie", PASSWORD)
        page = await open_softphone(chromium_with_microphone, line, microphone=True)
        await page.click("#talk")  # no token yet: the server refuses, the page asks to sign in
        await page.wait_for_selector("#sign-in", state="visible")
        assert await page.get_attribute("#talk", "data-state") == "error", await page.evaluate("window.octiSoftphone")
        await page.fill("input[name=username]", "marie")
        await page.fill("input[name=password]", "mauvais-mot")
        await page.click("#sign-in button[type=submit]")
        await page.wait_for_function("document.querySelector('#sign-in-error').textContent.length > 0")
        await page.fill("input[name=password]", PASSWORD)
        await page.click("#sign-in button[type=submit]")
        await page.wait_for_function("document.querySelector('#talk').dataset.state === 'listening'"
                                     " || document.querySelector('#talk').dataset.state === 'speaking'")
        assert await page.is_hidden("#sign-in")


async def test_idle_hang_up_and_reconnect_after_a_drop(double, chromium_with_microphone):
    async with running_line(openai_realtime_url=double.url) as line:
        await line.service.browser.users.add("marie", PASSWORD)
        page = await open_softphone(chromium_with_microphone, line, microphone=False, query="idle_ms=1500")
        await sign_in_by_api(page)
        await page.click("#talk")
        await page.wait_for_function("window.octiSoftphone.states.includes('listening')")
        # Nobody talks: the page hangs up by itself.
        await page.wait_for_function("document.querySelector('#talk').dataset.state === 'idle'", timeout=10_000)
        assert "sans échange" in await page.inner_text("#status")
        # A dropped connection (the server goes away mid-conversation) is retried, with backoff.
        # The server ends the conversation once the model cannot be reached again (three tries).
        await page.click("#talk")
        await page.wait_for_function("document.querySelector('#talk').dataset.state === 'listening'")
        double.refuse_next(3)
        await double.drop_all(code=1011)
        await page.wait_for_function("document.querySelector('#status').textContent.includes('nouvelle tentative')")
        await page.wait_for_function("window.octiSoftphone.states.filter(s => s === 'listening').length >= 3",
                                     timeout=15_000)


async def test_octi_s_goodbye_ends_the_conversation_without_starting_another(double, chromium_with_microphone):
    """Nobody answers OCTI: it asks, says goodbye and ends the conversation. The page says it is
    over and waits for the button, instead of reconnecting into a new greeting (and model session)."""
    double.script_next_connection(greeting_seconds=1.0)
    async with running_line(openai_realtime_url=double.url, silence_prompt_seconds=2,
                            silence_goodbye_seconds=2) as line:
        await line.service.browser.users.add("marie", PASSWORD)
        page = await open_softphone(chromium_with_microphone, line, microphone=False, query="idle_ms=60000")
        await sign_in_by_api(page)
        await page.click("#talk")
        await page.wait_for_function("document.querySelector('#status').textContent.includes('terminée')",
                                     timeout=25_000)
        await asyncio.sleep(2.5)  # past the first reconnection's delay (1 s)
        assert await page.get_attribute("#talk", "data-state") == "idle"
        history = await page.evaluate("window.octiSoftphone.states")
        assert history.count("connecting") == 1 and len(double.connections) == 1
        # The button starts a new conversation by hand.
        await page.click("#talk")
        await page.wait_for_function("(seen) => window.octiSoftphone.states.slice(seen).includes('listening')",
                                     arg=len(history))
        assert len(double.connections) == 2
        await page.click("#hang-up")


async def test_the_seed_readme_client_example_receives_ready_and_answer_audio(double, chromium_with_microphone):
    """The seed 004 README's example, in the page of a signed-in user. Two changes, both forced:
    the URL, and its two sends moved into `onopen` (as written they run while the socket is
    still connecting, which browsers refuse with InvalidStateError)."""
    async with running_line(openai_realtime_url=double.url) as line:
        await line.service.browser.users.add("marie", PASSWORD)
        page = await open_softphone(chromium_with_microphone, line, microphone=False)
        await sign_in_by_api(page)
        received = await page.evaluate("""(url) => new Promise((resolve) => {
            const log = {ready: false, audioBytes: 0, errors: []};
            const playAudio = (audioBuffer) => { log.audioBytes += audioBuffer.byteLength; };
            const ws = new WebSocket(url);
            ws.binaryType = 'arraybuffer';
            ws.onopen = () => {
              console.log('Connexion établie');
              ws.send(JSON.stringify({ type: 'start_conversation' }));
            };
            ws.onmessage = (event) => {
              if (typeof event.data === 'string') {
                const message = JSON.parse(event.data);
                switch (message.type) {
                  case 'ready': log.ready = true; break;
                  case 'bot_audio_end': resolve(log); break;
                  case 'transcript_delta': break;
                  case 'error': log.errors.push(message.message); break;
                }
              } else {
                const audioBuffer = event.data;
                playAudio(audioBuffer);
              }
            };
        })""", line.url.replace("http", "ws", 1) + "/ws/realtime")
    assert received["ready"] and received["audioBytes"] > 24000 and not received["errors"]
