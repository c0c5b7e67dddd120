import pytest

from app.agent.playback import PlaybackTracker
from app.audio.framing import FrameAssembler


def test_acknowledged_marks_count_as_heard_and_the_head_chunk_is_interpolated():
    tracker = PlaybackTracker()
    first = tracker.sent("item", 100, now=0.0)
    tracker.sent("item", 100, now=0.0)
    assert tracker.heard_ms("item", now=0.05) == pytest.approx(50)         # half of the first chunk played
    tracker.acknowledged(first, now=0.1)
    assert tracker.heard_ms("item", now=0.1) == 100
    assert tracker.heard_ms("item", now=0.13) == pytest.approx(130)
    assert tracker.heard_ms("item", now=5.0) == 200          # never more than what was sent


def test_marks_flushed_by_clear_do_not_count_as_played():
    tracker = PlaybackTracker()
    marks = [tracker.sent("item", 100, now=0.0) for _ in range(5)]
    tracker.acknowledged(marks[0], now=0.1)
    tracker.flush()
    for mark in marks[1:]:                                   # Twilio echoes them after a clear
        tracker.acknowledged(mark, now=0.11)
    assert tracker.heard_ms("item", now=1.0) == 100
    assert not tracker.audio_queued


def test_an_acknowledgement_covers_every_earlier_chunk_and_items_are_kept_apart():
    tracker = PlaybackTracker()
    tracker.sent("a", 60, now=0.0)
    tracker.sent("a", 60, now=0.0)
    last_of_a = tracker.sent("a", 60, now=0.0)
    tracker.sent("b", 40, now=0.0)
    assert tracker.queued_items() == ["a", "b"]
    tracker.acknowledged(last_of_a, now=0.2)
    assert tracker.heard_ms("a", now=0.2) == 180
    assert tracker.playing_item == "b"
    assert tracker.heard_ms("b", now=0.22) == pytest.approx(20)


def test_a_chunk_sent_after_idle_starts_playing_when_sent():
    tracker = PlaybackTracker()
    tracker.acknowledged(tracker.sent("a", 20, now=0.0), now=0.02)
    tracker.sent("b", 100, now=3.0)
    assert tracker.heard_ms("b", now=3.03) == pytest.approx(30)


def test_frame_assembler_emits_whole_frames_and_pads_the_tail():
    frames = FrameAssembler(160, b"\xff")
    assert frames.push(b"\x01" * 100) == b""
    out = frames.push(b"\x02" * 300)
    assert len(out) == 320 and frames.pending_bytes == 80
    tail = frames.flush()
    assert tail == b"\x02" * 80 + b"\xff" * 80
    assert frames.flush() == b""
    frames.push(b"\x03" * 10)
    frames.clear()
    assert frames.pending_bytes == 0
