"""`octi call`: place a simulated call from the command line and print what happened."""

from __future__ import annotations

import sys
import wave
from pathlib import Path

import click

from app.cli_support import HELP_OPTIONS, ParsedBy, run_coroutine
from app.simulators.twilio_caller.call import place_call
from app.simulators.twilio_caller.script import CallScript, NoiseBurst, Utterance


def _dtmf(value: str) -> tuple[float, str]:
    seconds, _, digit = value.partition(":")
    if not digit or len(digit) != 1 or digit not in "0123456789*#":
        raise ValueError(f"expected SECONDS:DIGIT, got {value!r}")
    return float(seconds), digit


WAV_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
OUTPUT_FILE = click.Path(dir_okay=False, path_type=Path)


@click.command(name="call", context_settings=HELP_OPTIONS)
@click.option("--url", default="http://127.0.0.1:8000", help="the server's real address")
@click.option("--public-url", help="the public base URL Twilio would use (what gets signed); default --url")
@click.option("--auth-token", envvar="TWILIO_AUTH_TOKEN",
              help="Twilio auth token to sign with (default $TWILIO_AUTH_TOKEN; none: unsigned)")
@click.option("--wav", "wavs", multiple=True, type=WAV_FILE,
              help="a caller utterance, spoken once OCTI falls silent; repeat for more turns")
@click.option("--barge-in-wav", type=WAV_FILE, help="an utterance spoken over OCTI's next answer")
@click.option("--barge-in-after-ms", type=float, default=1000.0,
              help="how far into OCTI's answer the barge-in starts (default 1000)")
@click.option("--noise-after-ms", "noise_after_ms", multiple=True, type=float, metavar="MS",
              help="a noise burst (a clang, no voice) that many ms into OCTI's next answer; repeat for more")
@click.option("--noise-ms", type=float, default=150.0, help="how long each noise burst lasts (default 150)")
@click.option("--dtmf", multiple=True, type=ParsedBy(_dtmf, "dtmf"), metavar="SECONDS:DIGIT")
@click.option("--duration", type=float, default=60.0, help="hang up after this many seconds (default 60)")
@click.option("--hangup-when-done", type=float, metavar="SECONDS",
              help="hang up this long after the last utterance once OCTI is silent")
@click.option("--out-wav", type=OUTPUT_FILE, help="write what the caller heard (8 kHz WAV)")
@click.option("--stereo", is_flag=True, help="--out-wav with the caller left and OCTI right")
@click.option("--timeline", type=OUTPUT_FILE, help="write the full call record as JSON")
@click.option("--from", "from_number", default="+33612345678")
@click.option("--to", "to_number", default="+33198765432")
def cli(url: str, public_url: str | None, auth_token: str | None, wavs: tuple[Path, ...], barge_in_wav: Path | None,
        barge_in_after_ms: float, noise_after_ms: tuple[float, ...], noise_ms: float,
        dtmf: tuple[tuple[float, str], ...], duration: float,
        hangup_when_done: float | None, out_wav: Path | None, stereo: bool, timeline: Path | None,
        from_number: str, to_number: str) -> None:
    """Call the OCTI phone line as Twilio would, without a phone."""
    utterances: list[Utterance | NoiseBurst] = [Utterance(wav) for wav in wavs]
    utterances += [NoiseBurst(noise_ms, after_answer_starts_ms=after) for after in noise_after_ms]
    if barge_in_wav:
        utterances.append(Utterance(barge_in_wav, after_answer_starts_ms=barge_in_after_ms))
    script = CallScript(utterances=utterances, dtmf=list(dtmf), hangup_after=duration,
                        hangup_when_done_after_s=hangup_when_done)
    try:
        result = run_coroutine(place_call(url, script=script, public_url=public_url, auth_token=auth_token or None,
                                          from_number=from_number, to_number=to_number))
    except (wave.Error, EOFError) as exc:
        click.echo(f"error: unreadable WAV: {exc}", err=True)
        sys.exit(2)
    click.echo(result.summary())
    if out_wav:
        result.write_wav(out_wav, stereo=stereo)
        click.echo(f"Heard audio written to {out_wav}")
    if timeline:
        result.write_timeline(timeline)
        click.echo(f"Timeline written to {timeline}")
    sys.exit(0 if result.status in ("completed", "spoken_only") else 1)
