"""Which caller audio goes to the engine at once, and which is gathered between turns."""

from __future__ import annotations

import audioop
import math

from app.agent.caller_audio import GATHER_MS, HANGOVER_MS, QUIET_RMS, SPEECH_GATHER_MS, CallerAudioGate
from app.audio.convert import make_converter
from app.audio.formats import REALTIME_PCM16, TELEPHONE_ULAW

QUIET = b"\xff" * 160  # 20 ms of μ-law idle code


def ulaw_tone(rms: float, samples: int = 160) -> bytes:
    peak = rms * math.sqrt(2)
    pcm = b"".join(int(peak * math.sin(2 * math.pi * 440 * n / 8000)).to_bytes(2, "little", signed=True)
                   for n in range(samples))
    return audioop.lin2ulaw(pcm, 2)


SPEECH = ulaw_tone(1000)  # -30 dBFS, a phone voice
HUSH = ulaw_tone(QUIET_RMS * 0.6)  # an idle line's hiss
GATHERED = int(GATHER_MS / 20)  # frames in one send of quiet audio


def feed(gate: CallerAudioGate, frames: list[bytes], start: float = 100.0) -> list[bytes | None]:
    return [gate.take(frame, start + index * 0.02) for index, frame in enumerate(frames)]


def test_quiet_audio_between_turns_goes_a_few_frames_at_a_time_in_order_and_whole():
    gate = CallerAudioGate(TELEPHONE_ULAW, TELEPHONE_ULAW, may_wait=True)
    count = 2 * GATHERED + 2
    frames = [bytes([0xFF - (index % 3)]) * 160 for index in range(count)]  # distinct, all near silence
    sent = feed(gate, frames)
    assert [len(audio) if audio else 0 for audio in sent] == ([0] * (GATHERED - 1) + [160 * GATHERED]) * 2 + [0, 0]
    assert gate.release() == b"".join(frames[-2:])
    assert b"".join(audio for audio in sent if audio) == b"".join(frames[:-2])
    assert gate.release() is None


def test_a_sound_goes_at_once_with_the_quiet_audio_before_it():
    gate = CallerAudioGate(TELEPHONE_ULAW, TELEPHONE_ULAW, may_wait=True)
    sent = feed(gate, [HUSH, HUSH, SPEECH])
    assert sent == [None, None, HUSH + HUSH + SPEECH]


def test_after_a_sound_every_frame_goes_alone_until_the_hangover_is_over():
    gate = CallerAudioGate(TELEPHONE_ULAW, TELEPHONE_ULAW, may_wait=True)
    assert gate.take(SPEECH, 100.0) == SPEECH
    hangover = int(HANGOVER_MS / 20)
    sent = feed(gate, [QUIET] * (hangover + 5), start=100.02)
    assert sent[:hangover - 1] == [QUIET] * (hangover - 1)
    assert sent[-4:] == [None] * 4, "gathered again once the hangover is over"


def test_every_quiet_frame_of_the_callers_turn_goes_at_once():
    gate = CallerAudioGate(TELEPHONE_ULAW, TELEPHONE_ULAW, may_wait=True)
    gate.turn_open = True  # the engine heard speech: its end must be heard as soon as it comes
    assert feed(gate, [QUIET] * 10, start=500.0) == [QUIET] * 10
    gate.turn_open = False
    assert feed(gate, [QUIET] * GATHERED, start=600.0) == [None] * (GATHERED - 1) + [QUIET * GATHERED]


def test_speech_inside_the_callers_turn_goes_a_few_frames_at_a_time_in_order_and_whole():
    gate = CallerAudioGate(TELEPHONE_ULAW, TELEPHONE_ULAW, may_wait=True)
    gate.turn_open = True  # the engine heard the turn begin; it cannot end while speech goes on
    words = [ulaw_tone(900 + 50 * index) for index in range(5)]  # distinct, all speech
    together = int(SPEECH_GATHER_MS / 20)
    assert together == 2
    assert feed(gate, words, start=500.0) == [None, words[0] + words[1], None, words[2] + words[3], None]
    assert gate.release() == words[4]


def test_quiet_inside_the_turn_goes_at_once_with_the_speech_held_before_it():
    gate = CallerAudioGate(TELEPHONE_ULAW, TELEPHONE_ULAW, may_wait=True)
    gate.turn_open = True
    assert feed(gate, [SPEECH, QUIET, QUIET, SPEECH, HUSH], start=500.0) == [
        None, SPEECH + QUIET, QUIET, None, SPEECH + HUSH]


def test_speech_before_the_engine_reports_a_turn_goes_frame_by_frame():
    gate = CallerAudioGate(TELEPHONE_ULAW, TELEPHONE_ULAW, may_wait=True)
    assert feed(gate, [SPEECH] * 4) == [SPEECH] * 4, "the start of speech, as soon as it comes"


def test_nothing_is_gathered_for_an_engine_that_takes_every_frame():
    gate = CallerAudioGate(TELEPHONE_ULAW, TELEPHONE_ULAW, may_wait=False)
    assert feed(gate, [QUIET] * 6) == [QUIET] * 6
    gate.turn_open = True
    assert feed(gate, [SPEECH] * 3, start=200.0) == [SPEECH] * 3
    assert gate.release() is None


def test_pcm16_chunks_of_any_length_are_judged_on_their_whole_samples():
    gate = CallerAudioGate(REALTIME_PCM16, REALTIME_PCM16, may_wait=True)
    quiet = b"\x00" * 961  # 20 ms and half a sample: the rest comes with the next chunk
    loud = audioop.ulaw2lin(SPEECH, 2) * 3
    assert gate.take(quiet, 100.0) is None
    assert gate.take(loud + b"\x01", 100.02) == quiet + loud + b"\x01"


def test_what_goes_is_converted_as_one_stream_whatever_was_gathered():
    gate = CallerAudioGate(TELEPHONE_ULAW, REALTIME_PCM16, may_wait=True)
    frames = [HUSH] * 7 + [SPEECH] * 3 + [QUIET] * 60 + [HUSH] * 12
    sent = feed(gate, frames)
    gate.turn_open = True
    turn = [SPEECH] * 5 + [QUIET] + [SPEECH] * 3
    sent += feed(gate, turn, start=200.0)
    frames += turn
    sent = [audio for audio in sent if audio] + [gate.release()]
    assert len(sent) < len(frames) - 12
    assert b"".join(sent) == make_converter(TELEPHONE_ULAW, REALTIME_PCM16).convert(b"".join(frames))
