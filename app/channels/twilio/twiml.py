"""The TwiML documents we answer with, rendered from the templates in `twiml/`."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from string import Template
from xml.sax.saxutils import escape

TEMPLATE_DIR = Path(__file__).resolve().parents[3] / "twiml"
SAY_VOICE = "Polly.Lea"


@cache
def _template(name: str) -> Template:
    return Template((TEMPLATE_DIR / f"{name}.xml").read_text(encoding="utf-8"))


def render(name: str, **values: str) -> str:
    escaped = {key: escape(str(value), {'"': "&quot;"}) for key, value in values.items()}
    return _template(name).substitute(escaped, voice=SAY_VOICE)


def connect_stream(*, stream_url: str, status_url: str, action_url: str, token: str, call_sid: str,
                   caller: str, called: str, call_back: str | None = None) -> str:
    """`call_back`: the question of a call-back OCTI placed (see CallIdentity.call_back)."""
    return render("connect_stream", stream_url=stream_url, status_url=status_url, action_url=action_url,
                  token=token, call_sid=call_sid, caller=caller, called=called,
                  direction="inbound" if call_back is None else "outbound", question=call_back or "")


def unavailable() -> str:
    return render("unavailable")


def hangup() -> str:
    return render("hangup")


REFUSALS = {
    "not_allowed": "Bonjour, vous êtes bien sur la ligne OCTI. Ce numéro est réservé aux adhérents : "
                   "votre numéro n'est pas inscrit. Renseignez-vous auprès de votre coopérative. Au revoir.",
    "rate_limited": "Bonjour, vous êtes bien sur la ligne OCTI. Vous avez déjà appelé plusieurs fois "
                    "cette heure-ci. Merci de rappeler un peu plus tard. Au revoir.",
    "busy": "Bonjour, vous êtes bien sur la ligne OCTI. Toutes nos lignes sont occupées. "
            "Merci de rappeler dans quelques minutes. Au revoir.",
}


def refused(reason: str) -> str:
    return say_goodbye(REFUSALS[reason])


def say_goodbye(message: str) -> str:
    return render("say_goodbye", message=message)
