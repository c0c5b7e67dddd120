"""The one error the knowledge stores raise when they cannot answer."""

from __future__ import annotations

__all__ = ["KnowledgeUnavailable"]


class KnowledgeUnavailable(RuntimeError):
    """A store could not answer in time or at all (timeout, server down, refused, partial write).

    Callers on a live call treat it as "no knowledge this turn" and carry on; `reason` is a
    short machine-readable tag for logs and metrics: "timeout", "unreachable", "permission",
    "error" or "partial_write".
    """

    def __init__(self, message: str, *, reason: str = "error") -> None:
        super().__init__(message)
        self.reason = reason
