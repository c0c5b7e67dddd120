"""Run Twilio's sample relay (twilio-samples/speech-assistant-openai-realtime-api-python) against a local double.

The sample is not part of this repository and nothing of it is copied here: this launcher
imports the sample's own `main.py` from a checkout given on the command line, unmodified,
and changes only what must change to run it on this machine:

* its hard-coded `wss://api.openai.com/v1/realtime?...` URL: `websockets.connect` is wrapped
  before the sample is imported, so that a URL starting with `wss://api.openai.com` goes to
  `--realtime-url` instead (same path and query: `?model=gpt-realtime&temperature=…&voice=…`);
* where it listens: the sample's `__main__` runs `uvicorn.run(app, host="0.0.0.0", port=PORT)`;
  this runs `uvicorn.run(app, host=--host, port=--port)` with the same defaults otherwise
  (uvicorn's `auto` loop, HTTP and websocket implementations, its default logging), on
  loopback only;
* optionally (`--ai-speaks-first`, the default), the sample's own documented switch "Uncomment
  the next line to have the AI speak first": after the sample's `initialize_session` the
  sample's `send_initial_conversation_item` is called, so that each call opens with a greeting
  as OCTI's calls do (the benchmark's callers wait for the first answer before they speak).

The sample needs OPENAI_API_KEY in the environment (any value the double accepts). It speaks
the Realtime GA protocol (no `OpenAI-Beta` header) with μ-law in and out, no transcoding.

Get a checkout without keeping it in this repository, e.g. from a mirror's git directory:

  mkdir -p /tmp/twilio-sample && git --git-dir=MIRROR archive HEAD | tar -x -C /tmp/twilio-sample

Run (benchmarks/relay.py --target sample does this for you):

  OPENAI_API_KEY=sk-x .venv/bin/python benchmarks/sample_launcher.py --sample-dir /tmp/twilio-sample \\
      --port 5050 --realtime-url ws://127.0.0.1:8765/v1/realtime
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

OPENAI_PREFIX = "wss://api.openai.com"


def redirect_websockets(realtime_url: str) -> None:
    """Wrap `websockets.connect` (looked up by the sample at call time): OpenAI's URL goes to `realtime_url`."""
    import websockets
    from urllib.parse import urlsplit

    target = urlsplit(realtime_url)
    base = f"{target.scheme}://{target.netloc}"
    real_connect = websockets.connect

    def connect(uri: str, *args, **kwargs):
        if isinstance(uri, str) and uri.startswith(OPENAI_PREFIX):
            uri = base + uri[len(OPENAI_PREFIX):]
        return real_connect(uri, *args, **kwargs)

    websockets.connect = connect


def speak_first(module) -> None:
    """The sample's own "AI speaks first" switch, without editing it: its greeting after its session update."""
    initialize = module.initialize_session
    greet = module.send_initial_conversation_item

    async def initialize_and_greet(openai_ws):
        await initialize(openai_ws)
        await greet(openai_ws)

    module.initialize_session = initialize_and_greet


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sample-dir", type=Path, required=True, help="checkout of the sample (holds main.py)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5050)
    p.add_argument("--realtime-url", required=True, help="e.g. ws://127.0.0.1:8765/v1/realtime")
    p.add_argument("--ai-speaks-first", action=argparse.BooleanOptionalAction, default=True,
                   help="call the sample's send_initial_conversation_item after its session update (default on)")
    args = p.parse_args(argv)
    if not (args.sample_dir / "main.py").is_file():
        p.error(f"{args.sample_dir} has no main.py")
    if not args.host.startswith("127.") and args.host not in ("localhost", "::1"):
        p.error("loopback only")

    redirect_websockets(args.realtime_url)
    sys.path.insert(0, str(args.sample_dir.resolve()))
    sample = importlib.import_module("main")
    if args.ai_speaks_first:
        speak_first(sample)

    import uvicorn

    uvicorn.run(sample.app, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
