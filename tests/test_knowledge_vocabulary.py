"""The transcription keywords come from the knowledge base: its words that everyday French rarely uses."""

from __future__ import annotations

import asyncio
from pathlib import Path

from app.config import Settings
from app.knowledge.vocabulary import farm_vocabulary
from app.simulators.twilio_caller import CallScript, place_call
from tests.harness import AUTH_TOKEN, PUBLIC_URL, running_line

SAMPLE_PACK = Path(__file__).resolve().parents[1] / "app" / "knowledge" / "sample_pack"


def sample_pack() -> list[tuple[str, str]]:
    documents = []
    for path in sorted(SAMPLE_PACK.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        documents.append((text.splitlines()[0].lstrip("# "), text))
    return documents


def test_the_sample_pack_gives_the_farm_words_and_not_everyday_ones():
    words = farm_vocabulary(sample_pack(), 60)
    assert len(words) == 60 and len(set(words)) == 60
    for farm_word in ("couveuse", "coccidiose", "picage", "pododermatite", "Gumboro", "fientes"):
        assert farm_word in words, farm_word
    for everyday in ("température", "poules", "jours", "eau", "bâtiment", "plein", "source"):
        assert everyday not in words, everyday
    assert "éclosoir" in words  # spelt with its accent
    assert not any(word.endswith("ez") for word in words)  # the fiches' instructions ("repaillez")


def test_the_vocabulary_follows_the_corpus_not_a_list():
    bees = [("Le varroa", "Le varroa affaiblit la colonie. Traitez le varroa après la miellée."),
            ("La hausse", "Posez la hausse quand la colonie occupe neuf cadres ; surveillez l'essaimage.")]
    words = farm_vocabulary(bees, 10)
    assert words[0] == "varroa" and "miellée" in words and "essaimage" in words
    assert "couveuse" not in words
    assert farm_vocabulary(bees, 0) == [] and farm_vocabulary([], 5) == []


def test_plural_and_singular_count_as_one_word():
    words = farm_vocabulary([("Pintades", "Les pintadeaux et un pintadeau. Des pintadeaux.")], 5)
    assert words.count("pintadeaux") + words.count("pintadeau") == 1


async def test_a_keyword_transcription_model_gets_the_knowledge_base_vocabulary(double):
    async with running_line(openai_realtime_url=double.url, openai_transcribe_model="gpt-transcribe") as line:
        for _ in range(600):  # seeding and warm-up run in the background after start-up
            if line.service.knowledge.vocabulary:
                break
            await asyncio.sleep(0.1)
        result = await place_call(line.url, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN,
                                  script=CallScript(hangup_after=1.0))
    assert result.status == "completed"
    transcription = double.connections[0].session["audio"]["input"]["transcription"]
    assert transcription["model"] == "gpt-transcribe"
    assert "couveuse" in transcription["keywords"] and "coccidiose" in transcription["keywords"]
    assert len(transcription["keywords"]) == Settings(_env_file=None).transcribe_keywords


async def test_the_streaming_default_sends_a_delay_and_no_keywords(double):
    async with running_line(openai_realtime_url=double.url) as line:
        result = await place_call(line.url, public_url=PUBLIC_URL, auth_token=AUTH_TOKEN,
                                  script=CallScript(hangup_after=1.0))
        assert line.service.knowledge.vocabulary == []  # not even computed: nothing would use it
    assert result.status == "completed"
    session = double.connections[0].session
    assert session["audio"]["input"]["transcription"] == {
        "model": "gpt-realtime-whisper", "language": "fr", "delay": "low"}
    assert session["reasoning"] == {"effort": "minimal"} and session["model"] == "gpt-realtime-2.1"
