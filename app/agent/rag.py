"""Knowledge in a conversation: what the model is told, and when it is searched.

`TurnRetrieval` follows one caller turn's words as the transcription streams them in, so
that when the caller stops, the passages for what they said are ready (or nearly). The rest
is what the model reads: the passages for one answer, the search tool and its results.
"""

from __future__ import annotations

import asyncio
import json

from app.engines.contract import ToolSpec
from app.knowledge.french import query_terms
from app.knowledge.ingest.chunking import MAX_CHARS as CHUNK_MAX_CHARS
from app.knowledge.retrieval import Retrieval, Retriever

# A whole chunk, however ingestion grew it: the words it was found for may be at its end.
PASSAGE_CHARS = CHUNK_MAX_CHARS
# A title from a document (a heading, an HTML <title>, a PDF's) is not bounded at its source.
TITLE_CHARS = 160

SEARCH_TOOL = ToolSpec(
    name="search_knowledge",
    description=(
        "Cherche dans la base de connaissances OCTI (fiches techniques d'aviculture) les passages "
        "utiles pour répondre à la question de l'éleveur. À utiliser pour toute question technique."
    ),
    parameters={
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "La question de l'éleveur, reformulée si besoin."},
        },
        "required": ["query"],
    },
)


# After the last new words, how long retrieval waits for more before it searches: a pause
# between phrases, so a turn is searched a few times, not once per word.
DEBOUNCE_SECONDS = 0.1


class TurnRetrieval:
    """Searches a caller turn's words as they come in: debounced, a newer search superseding an
    older one, and `settle` to get, at the end of the turn, the passages for what was said."""

    def __init__(self, retriever: Retriever, previous_question: str | None,
                 debounce_s: float = DEBOUNCE_SECONDS) -> None:
        self._retriever = retriever
        self._previous = previous_question
        self._debounce = debounce_s
        self.words = ""
        self.final = False  # the transcript is complete: no more words will come
        self.latest: Retrieval | None = None  # the newest finished search
        self._search: asyncio.Task[Retrieval] | None = None
        self._search_query = ""
        self._timer: asyncio.TimerHandle | None = None
        self._changed = asyncio.Event()

    @property
    def query(self) -> str:
        return retrieval_query(self._previous, self.words.strip())

    def heard(self, words: str, *, final: bool = False) -> None:
        """The turn's words so far (the whole text, not a delta); `final` once the transcript
        is complete."""
        if final and not self.final:
            self.final = True
            self._changed.set()
        if words == self.words:
            return
        self.words = words
        self._changed.set()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self._debounce, self._search_words)

    def _search_words(self) -> None:
        self._timer = None
        query = self.query
        if not query_terms(query):  # fillers so far (« euh, alors… »): nothing to search, nothing found
            return
        if query == self._search_query or (self.latest is not None and self.latest.query == query):
            return
        if self._search is not None and not self._search.done():
            self._search.cancel()  # superseded by more words
        self._search_query = query
        self._search = asyncio.create_task(self._retriever.retrieve(query), name="turn-retrieval")
        self._search.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Retrieval]) -> None:
        if not task.cancelled() and task.exception() is None:
            self.latest = task.result()
        self._changed.set()

    def ready(self) -> bool:
        """The newest finished search is for every word of the turn."""
        return self.final and self.latest is not None and self.latest.query == self.query

    async def wordless(self, timeout_s: float) -> bool:
        """The complete transcript came, within `timeout_s`, without a word."""
        try:
            async with asyncio.timeout(timeout_s):
                while not self.final:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            return False
        return not self.words.strip()

    async def settle(self, budget_s: float) -> Retrieval | None:
        """The caller stopped: search the last words now, and wait at most `budget_s` for the
        transcript to complete and its search to finish. Returns that search if it did in
        time, else the newest one that finished (for the words up to then). When none has
        finished, the one under way is waited for: the retriever's budget (RAG_TIMEOUT_MS)
        bounds it, where the search tool would cost a model round trip more and the same
        search. None when there was nothing to search."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget_s
        while not self.ready():
            if self._timer is not None:  # no more debouncing: the turn is over
                self._timer.cancel()
            self._search_words()
            self._changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
            except TimeoutError:
                break
        while self.latest is None and self._search is not None and not self._search.done():
            await asyncio.wait({self._search})  # its end sets `latest` (or a newer search supersedes it)
        return self.latest

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._search is not None and not self._search.done():
            self._search.cancel()


# A question with fewer content words than this is a follow-up ("et pour les dindes ?") that
# leans on the previous one. Longer ones stand alone: joined to an unrelated previous question
# they lost their passage one time in four (benchmarks/README.md, "Turn latency").
FOLLOW_UP_TERMS = 4


def retrieval_query(previous_question: str | None, question: str) -> str:
    """The query for a caller's question: the previous caller turn rides along when the
    question is a short follow-up, so it finds its topic."""
    if previous_question and len(query_terms(question)) < FOLLOW_UP_TERMS:
        return f"{previous_question} {question}".strip()
    return question


def knowledge_context(retrieval: Retrieval) -> str:
    """What the model is told for one answer: the passages with their sources and how to use
    them, or why there are none. It goes in as a system message after the caller's question
    and is removed once answered: the session's instructions never change, so the service's
    prompt cache keeps the whole conversation before it."""
    if not retrieval.passages:
        reason = ("la base de connaissances n'a rien trouvé" if retrieval.outcome == "empty"
                  else "la base de connaissances n'a pas répondu à temps")
        return (
            f"# Base de connaissances\nPour cette question, {reason}. "
            "Réponds prudemment à partir de principes généraux, dis que tu n'as pas de fiche précise "
            "sur ce point, et propose l'avis du vétérinaire ou du technicien si l'enjeu est sanitaire."
        )
    extracts = "\n\n".join(
        f"[{index}] {shorten(passage.title, TITLE_CHARS)} (source : {passage.source})\n{shorten(passage.text)}"
        for index, passage in enumerate(retrieval.passages, start=1)
    )
    return (
        f"# Extraits de la base de connaissances OCTI pour cette question\n{extracts}\n\n"
        "# Comment utiliser ces extraits\n"
        "Réponds à partir de ces extraits, avec leurs chiffres. S'ils ne couvrent pas la question, "
        "dis-le simplement plutôt que d'inventer. Ne lis pas les numéros ni les sources à voix haute, "
        "sauf si l'éleveur demande d'où vient l'information."
    )


def instructions_with_search_tool(base: str) -> str:
    """Per-response instructions when the caller's words are not known yet: the model heard
    them, so it searches itself before answering."""
    return (
        f"{base}\n\n# Base de connaissances\nPour une question technique, appelle d'abord l'outil "
        f"{SEARCH_TOOL.name} avec la question de l'éleveur, puis réponds à partir des extraits qu'il "
        "renvoie. Tu peux d'abord dire une phrase d'attente très courte, comme « Je regarde ça. »"
    )


def tool_output(retrieval: Retrieval) -> str:
    """The `function_call_output` for search_knowledge: passages, or an error the model can act on."""
    if retrieval.outcome in {"ok", "empty"}:
        return json.dumps({"passages": [{"title": shorten(p.title, TITLE_CHARS), "source": p.source, "text": shorten(p.text)}
                                        for p in retrieval.passages]}, ensure_ascii=False)
    return json.dumps({"error": f"base de connaissances indisponible ({retrieval.outcome})"}, ensure_ascii=False)


def shorten(text: str, limit: int = PASSAGE_CHARS) -> str:
    """`text` on one line, cut at a word before `limit` characters (then « … »)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[: cut if cut > 0 else limit] + " …"
