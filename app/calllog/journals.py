"""Opening each call's journal, whatever channel carries the call: its start recorded, the
caller masked and hashed with the service's salt, and with RECORD_CALLS a recorder."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from app.audio.formats import AudioFormat
from app.calllog.journal import CallJournal, caller_hash, caller_salt
from app.calllog.records import CallRecord
from app.calllog.recording import StereoRecorder
from app.channels.contract import CallIdentity
from app.config import Settings
from app.logs import mask_phone


class CallJournals:
    def __init__(self, settings: Settings, submit: Callable[[CallRecord], None]) -> None:
        self._settings = settings
        self._submit = submit
        self._salt = b""
        # Absolute, as the call log keeps it: `octi calls purge` and the review may run from
        # another working directory than the service (DATA_DIR defaults to a relative "data").
        self._recordings = settings.data_dir.resolve() / "recordings"

    async def start(self) -> None:
        """Read (or create) the caller-hash salt, off the event loop."""
        secret = self._settings.caller_hash_salt
        self._salt = await asyncio.to_thread(
            caller_salt, secret.get_secret_value() if secret else None, self._settings.data_dir)

    def open(self, identity: CallIdentity, *, stream_sid: str, audio_format: AudioFormat,
             recorded: bool = True) -> CallJournal:
        """`recorded` False: never record this call (one that will carry no audio)."""
        settings = self._settings
        # GPT-Live transcribes the caller itself (within its billed time) and gets its knowledge
        # by delegation, whatever RAG_MODE and OPENAI_TRANSCRIBE_MODEL say.
        live = settings.engine == "gpt-live"
        journal = CallJournal(
            identity.call_id, self._submit, model=settings.speech_model, prices=settings.model_prices,
            transcription_model=settings.gpt_live_model if live else settings.openai_transcribe_model,
            recorder=StereoRecorder(audio_format) if settings.record_calls and recorded else None,
            recording_path=self._recordings / f"{identity.call_id}.wav",
        )
        journal.started(
            # A phone number is masked; a browser user's name is who they are.
            stream_sid=stream_sid, channel=identity.channel,
            caller_masked=mask_phone(identity.caller) if identity.channel == "twilio" else identity.caller,
            caller_hash=caller_hash(identity.caller, self._salt),
            caller_number=identity.caller if settings.store_caller_number else None,
            called=identity.called, codec=settings.model_codec,
            model=settings.speech_model, rag_mode="delegation" if live else settings.rag_mode,
        )
        if identity.call_back is not None:  # the record has no direction: an event says it
            journal.event("outbound", identity.call_back)
        return journal
