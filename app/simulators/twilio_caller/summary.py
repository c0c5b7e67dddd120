"""The human summary of a simulated call that `octi call` prints."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.simulators.twilio_caller.records import CallResult


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


def describe(r: CallResult) -> str:
    lines = [f"Call {r.call_sid} → {r.server_url}: {r.status}"]
    if r.http_status is None:
        lines.append("Webhook: no answer (" + "; ".join(r.errors) + ")")
        return "\n".join(lines)
    lines.append(f"Webhook: HTTP {r.http_status} in {_ms(r.webhook_ms)}; TwiML verbs: {', '.join(r.verbs) or 'none'}")
    for text in r.say_texts:
        lines.append(f'  <Say>: "{text}"')
    if r.stream_url:
        lines.append(f"Media stream: {r.stream_url} → {r.stream_connect_url} (HTTP {r.stream_http_status}), "
                     f"{len(r.custom_parameters)} custom parameter(s)")
    if r.status in ("refused_stream", "stream_unreachable"):
        lines.extend(f"  error: {e}" for e in r.errors)
        return "\n".join(lines)
    if r.status != "completed":
        lines.extend(f"  error: {e}" for e in r.errors)
        return "\n".join(lines)
    if r.bursts:
        first = r.bursts[0]
        lines.append(f"Greeting heard after {_ms(r.greeting_latency_ms)} ({first.played_ms / 1000:.2f} s of audio)")
    else:
        lines.append("OCTI never spoke")
    for u in r.utterances:
        head = f'Utterance "{u.label}": {u.start_t:.2f}–{u.end_t:.2f} s'
        if u.barge_in:
            head += " (barge-in" + (f" over burst {u.burst}" if u.burst is not None else ", nothing playing") + ")"
        tail = [f"first answer audio {_ms(u.answer_latency_ms)} after the end of speech"]
        if u.clear_after_ms is not None:
            tail.append(f"OCTI cleared its audio {_ms(u.clear_after_ms)} after the caller started")
        lines.append(head + " → " + "; ".join(tail))
    for c in r.clears:
        lines.append(f"Clear at {c.t:.2f} s: {c.played_ms:.0f} ms of burst {c.burst} played, "
                     f"{c.flushed_ms:.0f} ms flushed, {len(c.marks)} mark(s) released")
    underruns = sum(b.underruns for b in r.bursts)
    lines.append(f"OCTI audio: {len(r.bursts)} burst(s), {sum(b.played_ms for b in r.bursts) / 1000:.2f} s heard, "
                 f"{underruns} underrun(s); {len(r.marks_echoed)} mark(s) echoed")
    if r.violations:
        lines.append(f"Violations: {len(r.violations)}")
        lines.extend(f"  [{v['code']}] {v['kind']}: {v['detail']}" for v in r.violations[:10])
    else:
        lines.append("Violations: none")
    if r.closed_by == "server":
        lines.append(f"Ended: the server closed the stream (code {r.close_code}) after {r.duration_s:.1f} s")
        if r.after_stream:
            after = r.after_stream
            what = [f'<Say> "{t}"' for t in after.get("say_texts", [])] + (["<Hangup/>"] if after.get("hangup") else [])
            via = f"action {after.get('url')} (HTTP {after.get('http_status')})" if after["source"] == "action" \
                else "the verbs after <Connect>"
            lines.append(f"  then Twilio ran {via}: {', '.join(what) or 'nothing'}")
    elif r.streams and r.streams[0].ended_by.startswith("rest_"):
        how = "hung up" if r.streams[0].ended_by == "rest_hang_up" else "redirected"
        lines.append(f"Ended: Twilio's REST API {how} the call after {r.duration_s:.1f} s")
    else:
        lines.append(f"Ended: the caller hung up after {r.duration_s:.1f} s")
    for run in r.documents[1:]:
        lines.append(f"Then ran TwiML from {run.source}: {', '.join(run.verbs) or 'nothing'}"
                     + (f" (error: {run.error})" if run.error else ""))
    for dial in r.dials:
        lines.append(f"Dialled {dial.number}: {dial.status}, {dial.duration_s} s"
                     + (f"; whisper: {' '.join(dial.whisper_texts)}" if dial.whisper_texts else ""))
    for segment in r.streams[1:]:
        lines.append(f"Media stream again ({segment.stream_sid}): {segment.duration_s:.1f} s, ended by "
                     f"{segment.ended_by}, caller said {', '.join(segment.utterances) or 'nothing'}")
    if r.hung_up_by_rest:
        lines.append("Twilio's REST API hung up the call")
    for cb in r.status_callbacks:
        lines.append(f"Status callback {cb['event']}: " + (f"HTTP {cb['http_status']}" if "http_status" in cb
                                                           else cb.get("error", "")))
    lines.extend(f"Error: {e}" for e in r.errors)
    if r.max_tick_lag_ms > 60:
        lines.append(f"Note: the simulator's own pacing ran up to {r.max_tick_lag_ms:.0f} ms late")
    return "\n".join(lines)
