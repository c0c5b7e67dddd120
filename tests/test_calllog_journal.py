"""The journal prices a call (realtime model and transcription), and records written by older
code (spooled before an upgrade) still load and land with the right cost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.calllog.journal import CallJournal
from app.calllog.records import CallEnded, CallRecord, CallStarted, from_dict, to_dict
from app.calllog.store import CallLogStore
from app.calllog.writer import SPOOL_NAME, CallLogWriter
from app.config import Settings
from tests.test_calllog_cost import duration, tokens, usage

PRICES = Settings().model_prices
# One response: 1000 text tokens in at $4/M, 2000 audio tokens out at $64/M (gpt-realtime-2.1).
RESPONSE = usage(1000, 0, 0, 0, 0, 2000)
RESPONSE_USD = (1000 * 4.0 + 2000 * 64.0) / 1_000_000


def journal(model: str = "gpt-realtime-2.1", **options: Any) -> tuple[CallJournal, list[CallRecord]]:
    records: list[CallRecord] = []
    return CallJournal("CA1", records.append, model=model, prices=PRICES, **options), records


def start(journal_: CallJournal) -> None:
    journal_.started(stream_sid="MZ1", channel="twilio", caller_masked="+336••••••78", caller_hash="h" * 32,
                     caller_number=None, called="+33900000000", codec="pcm16", model="gpt-realtime-2.1",
                     rag_mode="inject")


async def test_a_call_costs_its_model_and_its_transcription_by_the_minute() -> None:
    call, records = journal(transcription_model="gpt-realtime-whisper")
    start(call)
    await call.ended("caller_hung_up", [RESPONSE], turns=2, barge_ins=0,
                     transcription_usages=[duration(40.0), duration(50.0)])
    started, ended = records
    assert isinstance(started, CallStarted) and started.transcription_model == "gpt-realtime-whisper"
    assert isinstance(ended, CallEnded)
    assert ended.transcription_seconds == 90.0
    assert ended.transcription_cost_usd == pytest.approx(1.5 * 0.017)
    assert ended.cost_usd == pytest.approx(RESPONSE_USD + 1.5 * 0.017)


async def test_transcription_by_the_token_is_kept_with_its_audio_part() -> None:
    prices = {**PRICES, "token-asr": {"audio_in": 3.0, "text_in": 1.25, "text_out": 5.0}}
    records: list[CallRecord] = []
    call = CallJournal("CA1", records.append, model="gpt-realtime-2.1", prices=prices,
                       transcription_model="token-asr")
    await call.ended("caller_hung_up", [RESPONSE], turns=2, barge_ins=0,
                     transcription_usages=[tokens(2000, 100, 50), tokens(1000, 0, 30)])
    [ended] = records
    assert isinstance(ended, CallEnded)
    assert (ended.transcription_input_tokens, ended.transcription_input_audio_tokens,
            ended.transcription_output_tokens) == (3100, 3000, 80)
    heard = (3000 * 3.0 + 100 * 1.25 + 80 * 5.0) / 1_000_000
    assert ended.transcription_cost_usd == pytest.approx(heard)
    assert ended.cost_usd == pytest.approx(RESPONSE_USD + heard)


@pytest.mark.parametrize(("model", "transcription_model"), [("my-azure-deployment", "gpt-realtime-whisper"),
                                                            ("gpt-realtime-2.1", "unpriced-asr")])
async def test_a_part_without_a_price_makes_the_cost_unknown(model: str, transcription_model: str) -> None:
    call, records = journal(model, transcription_model=transcription_model)
    await call.ended("caller_hung_up", [RESPONSE], turns=2, barge_ins=0, transcription_usages=[duration(12.0)])
    [ended] = records
    assert isinstance(ended, CallEnded) and ended.cost_usd is None
    if transcription_model == "unpriced-asr":
        assert ended.transcription_cost_usd is None
    else:
        assert ended.transcription_cost_usd == pytest.approx(0.2 * 0.017)


async def test_without_transcription_usage_the_call_costs_its_model_only() -> None:
    # As callers that do not pass transcription usages yet (and a transcription model unset).
    call, records = journal()
    start(call)
    await call.ended("caller_hung_up", [RESPONSE], turns=2, barge_ins=0)
    started, ended = records
    assert isinstance(started, CallStarted) and started.transcription_model == ""
    assert isinstance(ended, CallEnded)
    assert ended.cost_usd == pytest.approx(RESPONSE_USD) and ended.transcription_cost_usd == 0.0
    # A call that never reached the model: nothing used, $0 known, whatever the model.
    unreached, records = journal("my-azure-deployment")
    await unreached.ended("error", [], turns=0, barge_ins=0)
    assert records[0].cost_usd == 0.0


# ---------------------------------------------------------------- records from older code

# What the spool held, line for line, as the code before unknown costs wrote it (to_dict of
# its records): no transcription fields, and a model without a price logged at $0.
OLD_SPOOL = [
    {"call_sid": "CAOLD", "stream_sid": "MZ1", "channel": "twilio", "caller_masked": "+336••••••78",
     "caller_hash": "h" * 32, "caller_number": None, "called": "+33900000000",
     "started_at": "2025-11-20T09:30:00+00:00", "codec": "pcm16", "model": "gpt-realtime", "rag_mode": "inject",
     "recorded": False, "kind": "call_started"},
    {"call_sid": "CAOLD", "ended_at": "2025-11-20T09:31:30+00:00", "outcome": "caller_hung_up",
     "answered_at": "2025-11-20T09:30:00+00:00", "duration_s": 90.0, "input_tokens": 1200, "output_tokens": 800,
     "input_audio_tokens": 900, "output_audio_tokens": 700, "cached_tokens": 300, "cost_usd": 0.0123,
     "turns": 2, "barge_ins": 1, "recording_path": None, "kind": "call_ended"},
    {"call_sid": "CAAZURE", "stream_sid": "MZ2", "channel": "twilio", "caller_masked": "+336••••••11",
     "caller_hash": "g" * 32, "caller_number": None, "called": "+33900000000",
     "started_at": "2025-11-20T10:00:00+00:00", "codec": "pcm16", "model": "my-azure-deployment",
     "rag_mode": "inject", "recorded": False, "kind": "call_started"},
    {"call_sid": "CAAZURE", "ended_at": "2025-11-20T10:01:00+00:00", "outcome": "caller_hung_up",
     "answered_at": "2025-11-20T10:00:00+00:00", "duration_s": 60.0, "input_tokens": 500, "output_tokens": 400,
     "input_audio_tokens": 300, "output_audio_tokens": 350, "cached_tokens": 0, "cost_usd": 0.0,
     "turns": 2, "barge_ins": 0, "recording_path": None, "kind": "call_ended"},
]


def test_old_records_still_load_and_new_ones_round_trip() -> None:
    started, ended = from_dict(dict(OLD_SPOOL[0])), from_dict(dict(OLD_SPOOL[1]))
    assert isinstance(started, CallStarted) and started.transcription_model == ""
    assert isinstance(ended, CallEnded) and ended.cost_usd == 0.0123 and ended.barge_ins == 1
    assert (ended.transcription_seconds, ended.transcription_cost_usd) == (0.0, None)

    unknown = CallEnded(call_sid="CA1", ended_at=ended.ended_at, outcome="caller_hung_up", answered_at=None,
                        duration_s=3.0, input_tokens=10, cost_usd=None, transcription_seconds=2.5,
                        transcription_cost_usd=None)
    line = json.dumps(to_dict(unknown))
    assert json.loads(line)["cost_usd"] is None
    assert from_dict(json.loads(line)) == unknown


async def test_an_old_spool_is_replayed_with_unknown_costs_made_unknown(tmp_path: Path) -> None:
    spool = tmp_path / "data" / SPOOL_NAME
    spool.parent.mkdir(parents=True)
    spool.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in OLD_SPOOL), encoding="utf-8")
    url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'calls.sqlite3'}"
    writer = CallLogWriter(url, spool, prices=PRICES, retry_initial=0.02, retry_max=0.1)
    await writer.start()
    assert await writer.flush(timeout=10)
    status = writer.status()
    await writer.close()
    assert (status["replayed"], status["rejected"], status["spool_pending"]) == (4, 0, 0)

    async with await CallLogStore.open(url) as store:
        old = await store.get_call(await store.find_call_id("CAOLD"))
        azure = await store.get_call(await store.find_call_id("CAAZURE"))
    assert old is not None and old.summary.cost_usd == 0.0123          # a cost it had is kept
    assert old.summary.barge_ins == 1 and not old.transcribed
    assert azure is not None and azure.input_tokens == 500
    assert azure.summary.cost_usd is None                               # was $0, is unknown
