"""The dashboard's KPIs as the page shows them: French titles and explanations, the value a
chart plots, how a table cell and an axis tick read, and the seed plan's targets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from app.review.formatting import cost, fr_int, fr_number, milliseconds
from app.review.kpi_figures import (
    TARGET_ERROR_RATE,
    TARGET_LATENCY_P95_MS,
    TARGET_TURNS_PER_CALL,
    ChannelFigures,
)


def percent(rate: float | None) -> str:
    """0.25 → "25 %", 1/3 → "33,3 %" (one decimal only when it says something)."""
    if rate is None:
        return "—"
    value = rate * 100
    digits = 0 if abs(value - round(value)) < 0.05 else 1
    return f"{fr_number(value, digits)}\u202f%"


def dollars(value: float) -> str:
    """An axis tick in dollars: two decimals, three for steps under a cent."""
    digits = 2 if abs(value * 100 - round(value * 100)) < 1e-9 else 3
    return f"${value:,.{digits}f}"


def plural(count: int, word: str) -> str:
    """French: 0 and 1 take the singular."""
    return f"{fr_int(count)} {word if count in (0, 1) else word + 's'}"


@dataclass(frozen=True, slots=True)
class Target:
    value: float
    label: str


@dataclass(frozen=True, slots=True)
class Metric:
    key: str
    title: str
    explanation: str
    axis: str                                           # the y axis' title
    value: Callable[[ChannelFigures], float | None]     # what the chart plots; None leaves a gap
    tick: Callable[[float], str]
    cell: Callable[[ChannelFigures], tuple[str, str]]   # a table cell: the figure, and what it is made of
    targets: tuple[Target, ...] = ()
    meets: Callable[[float], bool] | None = None        # whether a value meets the target
    target_text: str = ""
    whole_numbers: bool = False                         # counts: no tick between two
    zero_without_calls: bool = False                    # a period without calls is 0, not a gap
    # A period whose figure is not the whole story (costs unknown), marked "?" on the chart.
    incomplete: Callable[[ChannelFigures], bool] = lambda figures: False


def _latency_cell(figures: ChannelFigures) -> tuple[str, str]:
    if not figures.answers:
        return "—", "aucune réponse"
    return (milliseconds(figures.latency_p95_ms),
            f"médiane {milliseconds(figures.latency_p50_ms)} · {plural(figures.answers, 'réponse')}")


def _share_cell(part: int, rate: float | None, calls: int) -> tuple[str, str]:
    if not calls:
        return "—", "aucune conversation"
    return percent(rate), f"{fr_int(part)} sur {plural(calls, 'conversation')}"


def _cost_cell(figures: ChannelFigures) -> tuple[str, str]:
    unknown = figures.unknown_cost_calls
    if not unknown:
        return cost(figures.cost_usd), plural(figures.calls, "conversation") if figures.calls else ""
    unknown_text = plural(unknown, "conversation") + " au coût inconnu"
    if figures.cost_usd is None:
        return "coût inconnu", unknown_text
    return f"≥ {cost(figures.cost_usd)}", unknown_text


LATENCY = Metric(
    key="latency", title="Latence de réponse (P95)",
    explanation="Pour chaque réponse d'OCTI : de la fin de la question de l'appelant au premier son de la réponse "
                "envoyé. Le P95 est la durée que 95 % des réponses ne dépassent pas ; la médiane (P50) est dans le "
                "tableau.",
    axis="P95 (ms)", value=lambda f: f.latency_p95_ms, tick=lambda v: fr_int(round(v)), cell=_latency_cell,
    targets=(Target(TARGET_LATENCY_P95_MS, f"objectif {fr_int(round(TARGET_LATENCY_P95_MS))} ms"),),
    meets=lambda v: v < TARGET_LATENCY_P95_MS,
    target_text=f"moins de {fr_int(round(TARGET_LATENCY_P95_MS))} ms",
)
INTERRUPTIONS = Metric(
    key="interruptions", title="Taux d'interruption",
    explanation="Part des conversations où l'appelant a coupé la parole à OCTI au moins une fois.",
    axis="Interrompues (%)", value=lambda f: f.interruption_rate, tick=percent,
    cell=lambda f: _share_cell(f.interrupted_calls, f.interruption_rate, f.calls),
)
TURNS = Metric(
    key="turns", title="Tours par conversation",
    explanation="Nombre moyen de prises de parole de l'appelant par conversation (celles d'OCTI ne comptent pas).",
    axis="Tours par conversation", value=lambda f: f.turns_per_call, tick=lambda v: fr_number(v, 1),
    cell=lambda f: ((fr_number(f.turns_per_call, 1), f"{plural(f.caller_turns, 'tour')} · "
                     f"{plural(f.calls, 'conversation')}") if f.calls else ("—", "aucune conversation")),
    targets=tuple(Target(value, f"objectif {fr_int(round(value))} tours") for value in TARGET_TURNS_PER_CALL),
    meets=lambda v: TARGET_TURNS_PER_CALL[0] <= v <= TARGET_TURNS_PER_CALL[1],
    target_text=f"de {fr_int(round(TARGET_TURNS_PER_CALL[0]))} à {fr_int(round(TARGET_TURNS_PER_CALL[1]))} tours",
)
ERRORS = Metric(
    key="errors", title="Taux d'erreur",
    explanation="Part des conversations terminées sur une erreur.",
    axis="En erreur (%)", value=lambda f: f.error_rate, tick=percent,
    cell=lambda f: _share_cell(f.error_calls, f.error_rate, f.calls),
    targets=(Target(TARGET_ERROR_RATE, f"objectif {percent(TARGET_ERROR_RATE)}"),),
    meets=lambda v: v < TARGET_ERROR_RATE, target_text=f"moins de {percent(TARGET_ERROR_RATE)}",
)
COST = Metric(
    key="cost", title="Coût",
    explanation="Somme des coûts estimés des conversations (modèle temps réel et transcription), en dollars. "
                "Un coût inconnu (modèle sans prix) ne compte jamais pour 0 : la période est marquée « ? » et le "
                "tableau dit combien de conversations sont concernées.",
    axis="Coût (USD)", value=lambda f: f.cost_usd, tick=dollars, cell=_cost_cell,
    incomplete=lambda f: f.unknown_cost_calls > 0, zero_without_calls=True,
)
USERS = Metric(
    key="users", title="Utilisateurs actifs",
    explanation="Appelants distincts : numéros de téléphone (par leur empreinte) et utilisateurs du navigateur "
                "(par leur nom). Sur une semaine ou un mois, chacun ne compte qu'une fois.",
    axis="Utilisateurs", value=lambda f: float(f.users), tick=lambda v: fr_int(round(v)),
    cell=lambda f: (fr_int(f.users), plural(f.calls, "conversation") if f.calls else ""), whole_numbers=True,
    zero_without_calls=True,
)

METRICS = (LATENCY, INTERRUPTIONS, TURNS, ERRORS, COST, USERS)
