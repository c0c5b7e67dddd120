"""How the review pages say things in French: labels, Paris times, numbers, costs, and the
call page's view of its turns and events."""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.calllog.records import TurnRecorded
from app.calllog.views import FLAG_ERROR, FLAG_INTERRUPTED, FLAG_NO_KNOWLEDGE, CallDetail, CallSummary
from app.channels.twilio.callback import REFUSALS

log = logging.getLogger(__name__)

OUTCOMES = {
    "caller_hung_up": "raccroché par l'appelant",
    "agent_ended": "terminé par OCTI",
    "transferred": "transféré",
    "error": "erreur",
    "timeout": "délai dépassé",
    "not_allowed": "refusé : numéro non inscrit",
    "rate_limited": "refusé : trop d'appels",
    "busy": "refusé : lignes occupées",
    "machine_answered": "rappel : répondeur, message laissé",
}
FLAGS = {FLAG_INTERRUPTED: "interrompu", FLAG_NO_KNOWLEDGE: "sans connaissance", FLAG_ERROR: "erreur"}
RETRIEVAL = {
    "ok": "passages trouvés",
    "empty": "aucun passage trouvé",
    "timeout": "délai de recherche dépassé",
    "error": "erreur de recherche",
    "cancelled": "recherche annulée",
    "unavailable": "base indisponible",
}
EVENTS = {
    "error": "erreur",
    "upstream_failure": "panne du modèle",
    "engine_lost": "connexion au modèle perdue",
    "engine_reconnect": "reconnecté au modèle : la conversation reprend",
    "engine_reconnect_failed": "reconnexion au modèle impossible",
    "engine_recycled": "session du modèle renouvelée",
    "dtmf": "touche DTMF",
    "signature_refused": "signature refusée",
    "stream_error": "erreur du flux",
    "model_error": "erreur du modèle",
    "transcription_failed": "transcription échouée",
    "conversation_reset": "conversation recommencée",
    "time_limit": "durée maximale atteinte",
    "caller_ended": "fin demandée au clavier",
    "person_requested": "conseiller demandé",
    "silence_prompt": "relance après un silence",
    "silence_goodbye": "fin après un silence",
    "agent_ended": "fin de l'appel par OCTI",
    "transfer": "transfert vers un conseiller",
    "transfer_refused": "transfert impossible",
    "transfer_failed": "transfert échoué",
    "transfer_answered": "conseiller en ligne",
    "transfer_unanswered": "conseiller injoignable",
    "voicemail": "message vocal, à rappeler",
    "sms_recap_accepted": "récapitulatif par SMS accepté",
    "sms_recap_sent": "récapitulatif envoyé par SMS",
    "sms_recap_failed": "récapitulatif par SMS non envoyé",
    "false_barge_in": "bruit sans paroles : OCTI a repris",
    "noise_unanswered": "bruit sans paroles : pas de réponse",
    "call_back": "rappel lancé",
    "call_back_unanswered": "rappel sans réponse",
    "outbound": "appel sortant : OCTI rappelle",
    "machine_answered": "répondeur : message laissé",
}

try:
    PARIS: Any = ZoneInfo("Europe/Paris")
    PARIS_LABEL = ""
except ZoneInfoNotFoundError:  # no system tz database and no `tzdata` package
    log.warning("review: no time zone data for Europe/Paris; times are shown in UTC")
    PARIS, PARIS_LABEL = timezone.utc, " UTC"


# ---------------------------------------------------------------- formatting (French)

def as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def paris(moment: datetime | None, fmt: str = "%d/%m/%Y %H:%M") -> str:
    return "—" if moment is None else as_utc(moment).astimezone(PARIS).strftime(fmt) + PARIS_LABEL


def fr_number(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "—"
    text = f"{value:,.{digits}f}".replace(",", "\u202f").replace(".", ",")
    return text


def fr_int(value: int | None) -> str:
    return "—" if value is None else f"{value:,d}".replace(",", "\u202f")


def clock(ms: float | None) -> str:
    """An offset on the call timeline as mm:ss (h:mm:ss past an hour)."""
    if ms is None:
        return "—"
    seconds = max(0, int(ms // 1000))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "en cours"
    total = int(round(seconds))
    minutes, rest = divmod(total, 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


UNKNOWN_COST = "coût inconnu"


def cost(usd: float | None) -> str:
    """A cost in dollars; None is a cost MODEL_PRICES could not price, never shown as $0."""
    if usd is None:
        return UNKNOWN_COST
    if 0 < usd < 0.005:
        return "< $0.01"
    return f"${usd:,.2f}"


def milliseconds(ms: float | None) -> str:
    return "—" if ms is None else f"{fr_int(int(round(ms)))} ms"


PLACED = "placed"  # the `?rappel=` of a call-back placed; a refusal's is its code
CALL_BACK_PLACED = "Rappel lancé : le téléphone de l'éleveur sonne. L'appel rejoindra le journal dès qu'il décroche."


@dataclasses.dataclass(frozen=True)
class CallBackResult:
    placed: bool
    message: str


def call_back_result(code: str | None) -> CallBackResult | None:
    """What the call page says after its « Rappeler » form (`?rappel=` the outcome's code)."""
    if code == PLACED:
        return CallBackResult(True, CALL_BACK_PLACED)
    if code in REFUSALS:
        return CallBackResult(False, REFUSALS[code][1])
    return None


def outcome_label(outcome: str | None, summary: CallSummary | None = None) -> str:
    if outcome is None:
        return "en cours" if summary is not None and summary.duration_s is None else "—"
    return OUTCOMES.get(outcome, outcome)


# ---------------------------------------------------------------- the call page's model

@dataclasses.dataclass
class TurnView:
    turn: TurnRecorded
    end_ms: float | None      # end_ms, or the next turn's start when unknown

    @property
    def role_label(self) -> str:
        return "Appelant" if self.turn.role == "caller" else "OCTI"

    @property
    def interrupted_label(self) -> str | None:
        if not self.turn.interrupted:
            return None
        if self.turn.heard_ms is None:
            return "interrompu"
        return f"interrompu après {fr_number(self.turn.heard_ms / 1000, 1)} s"

    @property
    def retrieval_label(self) -> str | None:
        outcome = self.turn.retrieval_outcome
        if outcome is None:
            return None
        if outcome == "ok" and not self.turn.passages:
            return RETRIEVAL["empty"]
        return RETRIEVAL.get(outcome, outcome)

    @property
    def has_latency(self) -> bool:
        return self.turn.role == "assistant" and (self.turn.speech_end_to_model_audio_ms is not None
                                                  or self.turn.model_audio_to_caller_ms is not None)

    @property
    def total_latency_ms(self) -> float | None:
        a, b = self.turn.speech_end_to_model_audio_ms, self.turn.model_audio_to_caller_ms
        return None if a is None or b is None else a + b


def turn_views(turns: list[TurnRecorded]) -> list[TurnView]:
    ordered = sorted(turns, key=lambda turn: turn.index)
    views = []
    for position, turn in enumerate(ordered):
        end = turn.end_ms
        if end is None and turn.start_ms is not None:
            later = [t.start_ms for t in ordered[position + 1:]
                     if t.start_ms is not None and t.start_ms > turn.start_ms]
            end = later[0] if later else None
        views.append(TurnView(turn, end))
    return views


def event_views(detail: CallDetail) -> list[dict[str, Any]]:
    start = as_utc(detail.summary.started_at)
    views = []
    for event in sorted(detail.events, key=lambda e: as_utc(e.at)):
        offset = (as_utc(event.at) - start).total_seconds() * 1000
        views.append({"time": paris(event.at, "%H:%M:%S"), "offset": clock(offset) if offset >= 0 else "—",
                      "type": EVENTS.get(event.type, event.type), "code": event.type, "detail": event.detail})
    return views

