"""A call when what the service depends on is down, over real sockets (the simulated Twilio
caller, the server, the Realtime double).

The set: the knowledge store down (here), the call-log database down (here with PostgreSQL, and
`tests/test_calllog_calls.py::test_the_database_down_during_a_call_loses_nothing` with SQLite),
the model's service down (`tests/test_reconnect.py`, and
`tests/test_call_path.py::test_an_unreachable_realtime_service_is_apologised_for`). Redis down
is in the Redis tests. How much time a store that is down costs a turn is measured by
`benchmarks/turn_latency.py --configs store-refusing store-hanging`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from app.calllog.store import CallLogStore
from app.simulators.hung_server import hung_server
from tests.harness import running_line
from tests.test_barge_in_noise import stored
from tests.test_call_path import played_between
from tests.test_calllog_store import _pg_url, create_pg_database, drop_pg_database
from tests.test_rag import ASKED, answer_context, ask_once, call, spoken


@contextlib.asynccontextmanager
async def knowledge_store_down(how: str, data_dir: Path) -> AsyncIterator[dict]:
    """The settings of a line whose knowledge store is down in the way `how` says."""
    if how == "weaviate_refusing":
        yield {"knowledge_backend": "weaviate", "weaviate_url": "http://127.0.0.1:9", "data_dir": data_dir}
    elif how == "weaviate_hanging":
        async with hung_server() as rest, hung_server() as grpc:
            yield {"knowledge_backend": "weaviate", "weaviate_url": f"http://127.0.0.1:{rest}?grpc_port={grpc}",
                   "data_dir": data_dir}
    else:  # the embedded store's file is damaged: every search fails
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "knowledge.sqlite3").write_bytes(b"not a database, a damaged file\n" * 200)
        yield {"data_dir": data_dir}


@pytest.mark.parametrize(("how", "outcome"), [("weaviate_refusing", "error"), ("weaviate_hanging", "timeout"),
                                              ("embedded_damaged", "error")])
async def test_with_the_knowledge_store_down_the_turn_goes_on_without_context(double, tmp_path, how, outcome):
    double.script_next_connection([ASKED], answer_seconds=1.5)
    async with knowledge_store_down(how, tmp_path / "data") as settings, \
            running_line(openai_realtime_url=double.url, **settings) as line:
        result = await call(line, ask_once())
        detail = await stored(line, result.call_sid)
        async with httpx.AsyncClient() as http:
            health = (await http.get(line.url + "/health")).json()
        metrics = line.metrics
    connection = double.connections[0]
    assert result.status == "completed", result.summary()
    assert connection.errors_sent == []

    # The answer went out, released by us at the end of the hold, told there is no context,
    # and the caller heard all of it.
    greeting, answer = spoken(connection)
    assert answer.trigger == "client" and answer.status == "completed"
    context = answer_context(answer)
    assert "n'a pas répondu" in context and "source :" not in context
    question = result.utterances[0]
    assert 0 <= played_between(result, question.speech_end_t, float("inf")) - answer.audio_ms < 20
    # Not sent round by the search tool, which would cost a second search and a second model
    # round trip: the time lost is the hold's at most.
    assert metrics.value("octi_turns_searched_by_the_model_total") == 0
    assert metrics.value("octi_turn_hold_seconds_count") == 1

    # The call log keeps the turn, with no passages and why.
    roles = [turn.role for turn in detail.turns]
    assert roles == ["assistant", "caller", "assistant"]
    asked = detail.turns[1]
    assert asked.text == ASKED and asked.passages == () and asked.retrieval_outcome == outcome
    assert metrics.value("octi_retrievals_total", outcome="ok") == 0
    assert metrics.value("octi_retrievals_total", outcome=outcome) >= 1
    assert health["status"] == "degraded" and health["knowledge"]["ok"] is False


# ------------------------------------------------------------------ the call-log database (PostgreSQL)

class SwitchableProxy:
    """A TCP relay to PostgreSQL that can be down (it cuts every connection, old and new) or up,
    on one address throughout: the database going away and coming back under the same URL."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.up = False
        self._links: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if not self.up:
            client_writer.close()
            return
        server_reader, server_writer = await asyncio.open_connection(*self.target)
        self._links |= {client_writer, server_writer}
        await asyncio.gather(_pipe(client_reader, server_writer), _pipe(server_reader, client_writer))
        self._links -= {client_writer, server_writer}

    def go_down(self) -> None:
        self.up = False
        for writer in list(self._links):
            writer.close()

    async def close(self) -> None:
        self.go_down()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@pytest.fixture
def pg_database() -> Iterator[str]:
    """An empty PostgreSQL database of its own (skipped locally without PostgreSQL, required in CI)."""
    name = create_pg_database()
    try:
        yield name
    finally:
        drop_pg_database(name)


async def test_postgresql_down_during_a_call_spools_the_records_and_they_land_when_it_returns(double, pg_database):
    double.script_next_connection([ASKED], answer_seconds=1.5)
    direct = make_url(_pg_url(pg_database))
    proxy = SwitchableProxy(direct.host or "127.0.0.1", direct.port or 5432)
    port = await proxy.start()
    through_proxy = direct.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    try:
        async with running_line(openai_realtime_url=double.url, database_url=through_proxy) as line:
            writer = line.service.calllog
            result = await call(line, ask_once())
            assert result.status == "completed", result.summary()
            while line.metrics.active_calls:
                await asyncio.sleep(0.05)
            assert not await writer.flush(timeout=1)
            async with httpx.AsyncClient() as http:
                health = (await http.get(line.url + "/health")).json()
                outage = health["call_log"]
                assert outage["database"] == "down" and outage["spool_pending"] > 0, "the records wait in the spool"
                assert health["status"] == "degraded"
                assert any(problem.startswith("call-log database down") for problem in health["problems"])

                proxy.up = True  # the database is back, at the same address: the writer finds it by itself
                assert await writer.flush(timeout=45)
                assert writer.status()["lost"] == 0 and writer.status()["spool_pending"] == 0
                health = (await http.get(line.url + "/health")).json()
                assert not any(problem.startswith("call-log") for problem in health["problems"])
    finally:
        await proxy.close()

    async with await CallLogStore.open(direct.render_as_string(hide_password=False)) as store:
        detail = await store.get_call(await store.find_call_id(result.call_sid))
    assert detail.summary.outcome == "caller_hung_up"
    assert [turn.role for turn in detail.turns] == ["assistant", "caller", "assistant"]
    assert detail.turns[1].text == ASKED and detail.turns[1].retrieval_outcome == "ok"
