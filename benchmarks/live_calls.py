"""Shared by the benchmarks that place whole calls: `octi serve` as a subprocess pointed at an
in-process Realtime double, and question audio cut from real French speech."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import wave
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.simulators.realtime_double import ASSET_PATH  # noqa: E402
from app.simulators.transcriber import CHARS_PER_SECOND  # noqa: E402

QUESTIONS = REPO / "app" / "knowledge" / "eval" / "questions.json"
AUTH_TOKEN = "bench-auth-token-0123456789abcdef"
API_KEY = "sk-bench"


def load_questions(limit: int | None = None) -> list[dict[str, str]]:
    return json.loads(QUESTIONS.read_text())[:limit]


def question_wavs(questions: list[dict[str, str]], folder: Path) -> list[Path]:
    """Each question as a slice of real French speech (the double's voice recording, whose
    pauses are all shorter than the VAD's 500 ms), as long as the question takes to say at the
    double's transcription pace, so that streamed words keep time with the audio."""
    with wave.open(str(ASSET_PATH)) as asset:
        rate, width = asset.getframerate(), asset.getsampwidth()
        audio = asset.readframes(asset.getnframes())
    paths, cursor = [], 0
    for index, question in enumerate(questions):
        size = int(len(question["question"]) / CHARS_PER_SECOND * rate) * width
        if cursor + size > len(audio):
            cursor = 0
        path = folder / f"q{index:03d}.wav"
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(width)
            out.setframerate(rate)
            out.writeframes(audio[cursor : cursor + size])
        cursor += size
        paths.append(path)
    return paths


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def health(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return json.loads(response.read())
    except OSError:
        return None


def start_server(env: dict[str, str], double_url: str, data_dir: Path, *, port: int | None = None,
                 log: Path | None = None, seeded: bool = True) -> tuple[subprocess.Popen, int]:
    """`octi serve` with `env` on `port` (default: a free one), once its knowledge base is seeded
    (at once with RAG_MODE=off; `seeded` False: once it answers, for a knowledge store that is
    down); its output goes to `log` when given."""
    port = port or free_port()
    full_env = {**os.environ, "OPENAI_API_KEY": API_KEY, "OPENAI_REALTIME_URL": double_url, "HOST": "127.0.0.1",
                "PORT": str(port), "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "DATA_DIR": str(data_dir),
                "LOG_LEVEL": "WARNING", **env,
                # This checkout's code, not the one the virtualenv's editable install points at.
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    octi = Path(sys.executable).parent / "octi"
    out = open(log, "wb") if log else None
    try:
        server = subprocess.Popen([str(octi), "serve"], env=full_env, cwd=data_dir.parent, stdout=out, stderr=out)
    finally:
        if out is not None:
            out.close()
    deadline = time.monotonic() + 600  # the first start embeds the sample pack
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"octi serve exited with {server.returncode}")
        status = health(port)
        knowledge = (status or {}).get("knowledge", {})
        if status and (not seeded or knowledge.get("mode") == "off"
                       or (knowledge.get("chunks") and not knowledge.get("seeding"))):
            return server, port
        time.sleep(0.5)
    server.kill()
    raise RuntimeError("octi serve did not get ready")


def stop_server(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGINT)
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()


def quantile(values: list[float], q: float) -> float:
    """The nearest-rank `q` quantile of `values` (NaN when there are none)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] if ordered else float("nan")
