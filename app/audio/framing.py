"""Re-framing of model audio, which arrives in deltas of arbitrary size, into whole frames."""

from __future__ import annotations


class FrameAssembler:
    def __init__(self, frame_bytes: int, silence: bytes) -> None:
        self._frame = frame_bytes
        self._silence = silence
        self._pending = bytearray()

    @property
    def pending_bytes(self) -> int:
        return len(self._pending)

    def push(self, data: bytes) -> bytes:
        """Append audio; return every whole frame now available (a multiple of the frame size)."""
        self._pending += data
        whole = len(self._pending) - len(self._pending) % self._frame
        if not whole:
            return b""
        frames = bytes(self._pending[:whole])
        del self._pending[:whole]
        return frames

    def flush(self) -> bytes:
        """The remainder padded with silence to one whole frame (b"" when nothing is left)."""
        if not self._pending:
            return b""
        frame = bytes(self._pending) + self._silence * (self._frame - len(self._pending))
        self._pending.clear()
        return frame

    def clear(self) -> None:
        self._pending.clear()
