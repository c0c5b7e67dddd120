"""What a check of `octi doctor` finds: a status, a message, and what to change."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "warning", "problem"]


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    status: Status
    message: str
    fix: str = ""

    @property
    def text(self) -> str:
        return f"{self.message}. Fix: {self.fix}" if self.fix else self.message


def ok(check: str, message: str) -> Finding:
    return Finding(check, "ok", message)


def warning(check: str, message: str, fix: str = "") -> Finding:
    return Finding(check, "warning", message, fix)


def problem(check: str, message: str, fix: str = "") -> Finding:
    return Finding(check, "problem", message, fix)
