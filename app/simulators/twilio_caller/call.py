"""One simulated call from start to end: the webhook, then the media stream, then the figures of
what the caller heard."""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Mapping

import httpx

from app.simulators import twilio_wire as wire
from app.simulators.twilio_caller.legs import CallLegs, stream_segment
from app.simulators.twilio_caller.live import CallRegistry, LiveCall
from app.simulators.twilio_caller.playback import Playback
from app.simulators.twilio_caller.records import CallResult, TwimlRun
from app.simulators.twilio_caller.script import CallScript, NoiseBurst, Utterance
from app.simulators.twilio_caller.speech import CallerSpeech
from app.simulators.twilio_caller.stream import MediaStream, SendHook
from app.simulators.twilio_caller.timeline import CallTimeline
from app.simulators.twilio_caller.webhooks import WEBHOOK_PATH, WEBHOOK_USER_AGENT, TwilioRequests


async def place_call(server_url: str, *, script: CallScript, public_url: str | None = None,
                     auth_token: str | None = None, call_sid: str | None = None,
                     from_number: str = "+33612345678", to_number: str = "+33198765432", realtime: bool = True,
                     sign_stream: bool = True, extra_stream_headers: dict[str, str] | None = None,
                     send_hook: SendHook | None = None, account_sid: str | None = None,
                     webhook_path: str = WEBHOOK_PATH, rest_api: CallRegistry | None = None,
                     outbound: bool = False, answered_by: str | None = None,
                     tunnels: Mapping[str, str] | None = None) -> CallResult:
    """Call `server_url` as Twilio would and return what happened. Never raises for server misbehaviour.

    `public_url` is the base URL Twilio believes it is calling (what gets signed); requests
    still go to `server_url`, like through a tunnel. `tunnels` maps further public base URLs to
    the servers they land on (the media stream's own listener, behind a tunnel of its own).
    `realtime=False` runs the media clock as fast as the event loop allows (one loop turn per
    20 ms tick): the exchange is complete but its timings mean nothing. `send_hook(message)`
    sees every protocol message before it is sent and may return a replacement (dict, or raw
    str/bytes), SKIP to drop it, or None to keep it.
    `webhook_path` is where the voice webhook is posted (another server's route, for benchmarks).

    `rest_api` (the REST impersonator, `app.simulators.twilio_rest`) links the call to Twilio's
    REST API: the call belongs to its account (its SID and auth token, unless given), and REST
    updates hang it up or replace its TwiML while it runs (see `legs`). `outbound` makes it a
    call placed through that API (`Direction=outbound-api`; `answered_by` when machine
    detection was asked for).
    """
    if rest_api is not None:
        account_sid = account_sid or rest_api.account_sid
        auth_token = auth_token or rest_api.auth_token
    result = CallResult(server_url=server_url.rstrip("/"), public_url=(public_url or server_url).rstrip("/"),
                        tunnels=dict(tunnels or {}),
                        call_sid=call_sid or wire.new_sid("CA"), account_sid=account_sid or wire.new_sid("AC"),
                        direction="outbound-api" if outbound else "inbound")
    call_params = wire.outbound_call_params if outbound else wire.inbound_call_params
    params = call_params(call_sid=result.call_sid, account_sid=result.account_sid, from_number=from_number,
                         to_number=to_number, **({"answered_by": answered_by} if outbound else {}))
    live = LiveCall(result.call_sid, result.account_sid, from_number=from_number, to_number=to_number,
                    direction=result.direction)
    if rest_api is not None:
        rest_api.attach(live)
    timeline = CallTimeline(result, realtime=realtime)
    playback = Playback()
    # Decoding and resampling WAVs is CPU work: keep it off the event loop.
    audio = await asyncio.gather(*(asyncio.to_thread(_line_audio, u, index)
                                   for index, u in enumerate(script.utterances)))
    bounds = await asyncio.gather(*(asyncio.to_thread(wire.speech_bounds, a) for a in audio))
    speech = CallerSpeech(script, audio, bounds, playback, result, timeline)
    try:
        async with httpx.AsyncClient(timeout=15, trust_env=False, verify=_tls_context(),
                                     headers={"User-Agent": WEBHOOK_USER_AGENT}) as http:
            requests = TwilioRequests(http, result, timeline, auth_token=auth_token, params=params,
                                      webhook_path=webhook_path)
            stream = MediaStream(requests, timeline, playback, speech, sign_stream=sign_stream,
                                 extra_stream_headers=extra_stream_headers, send_hook=send_hook,
                                 stop_requested=live.requested)
            has_stream = await requests.webhook()
            if result.status in ("pending", "spoken_only"):  # its TwiML was read
                result.documents.append(TwimlRun(source="webhook", url=result.public_url + webhook_path,
                                                 verbs=list(result.verbs), say_texts=list(result.say_texts),
                                                 hangup=result.hangup))
            if has_stream:
                opened = await stream.open()
                if opened:
                    result.status = "completed"
                    await stream.run()
                result.streams.append(stream_segment(result, playback, live, opened=opened))
                if result.closed_by == "server" and live.pending is None:
                    await requests.after_stream()
                elif live.pending is not None:
                    legs = CallLegs(http=http, result=result, live=live, script=script, audio=audio, bounds=bounds,
                                    auth_token=auth_token, params=params, webhook_path=webhook_path,
                                    realtime=realtime, next_utterance=speech.next_utt)
                    await legs.follow(live.take())
            await requests.settle()
    finally:
        live.completed = True
    return _finish(result, timeline, playback, stream)


def _line_audio(utterance: Utterance | NoiseBurst, index: int) -> bytes:
    if isinstance(utterance, NoiseBurst):
        return wire.noise_burst(utterance.duration_ms, utterance.dbfs, seed=index)
    return wire.wav_to_ulaw(utterance.wav)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """httpx's default TLS context, built once per process: building it loads the CA bundle
    (~28 ms of CPU), which a load test placing hundreds of calls would pay for each."""
    return httpx.create_ssl_context()


def _finish(result: CallResult, timeline: CallTimeline, playback: Playback, stream: MediaStream) -> CallResult:
    """Settle the record: times of a call without a stream count from its start, then what was
    heard and each utterance's answer and barge-in figures."""
    r = result
    if timeline.t0 is None:
        timeline.rebase(timeline.origin)
    r.bursts = playback.bursts
    r.clears = playback.clears
    r.played_audio = bytes(stream.played)
    r.sent_audio = bytes(stream.sent)
    if timeline.violation_count > len(r.violations):
        r.errors.append(f"{timeline.violation_count - len(r.violations)} further violations not recorded")
    for u, following in zip(r.utterances, [*r.utterances[1:], None]):
        until = following.start_t if following else float("inf")
        answer = next((b for b in r.bursts if u.start_t < b.start_t < until), None)
        u.answer_latency_ms = round((answer.start_t - u.speech_end_t) * 1000, 1) if answer else None
        cleared = next((c for c in r.clears if u.start_t <= c.t < until), None)
        u.clear_after_ms = round((cleared.t - u.start_t) * 1000, 1) if cleared else None
    return r
