"""Fuzz what peers send us: each property of tests/test_hostile_properties.py on 100 000 fresh
inputs (hypothesis' "fuzz" profile), rather than the suite's 120 fixed ones.

Run from the repo root: .venv/bin/python benchmarks/fuzz.py [--examples N] [target ...]

Targets: twilio-parser, browser-protocol, engine-events, webhooks (all by default). Prints, per
target, the inputs tried, the time, inputs per second and the failures; a failure also prints
the smallest input hypothesis found for it. Exits 1 if any property failed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from hypothesis import settings  # noqa: E402

from tests import test_hostile_properties as properties  # noqa: E402
from tests.hostile_inputs import FUZZ_EXAMPLES  # noqa: E402

TARGETS: dict[str, Callable[[], None]] = {
    "twilio-parser": properties.test_any_twilio_frame_parses_or_is_refused_with_a_reason,
    "browser-protocol": properties.test_any_browser_frame_parses_or_is_refused_with_a_code,
    "engine-events": properties.test_any_server_event_becomes_an_engine_event_or_is_dropped,
    "webhooks": properties.test_any_webhook_form_is_answered_or_refused_never_a_server_error,
}


def fuzz(prop: Callable[[], None], examples: int) -> tuple[int, float, str | None]:
    """(inputs tried, seconds, the failure or None) for one property."""
    tried = 0
    inner = prop.hypothesis.inner_test  # hypothesis' documented hook around each input

    def counted(*args, **kwargs):
        nonlocal tried
        tried += 1
        return inner(*args, **kwargs)

    prop.hypothesis.inner_test = counted
    run = settings(settings.get_profile("fuzz"), max_examples=examples)(prop)
    started = time.perf_counter()
    try:
        run()
        failure = None
    except Exception:  # the property's own failure, with hypothesis' smallest example
        failure = traceback.format_exc()
    finally:
        prop.hypothesis.inner_test = inner
    return tried, time.perf_counter() - started, failure


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=FUZZ_EXAMPLES, help="inputs per target")
    parser.add_argument("targets", nargs="*", metavar="target", help=", ".join(TARGETS))
    options = parser.parse_args()
    unknown = set(options.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    logging.disable(logging.CRITICAL)  # every refused input logs: keep the figures readable
    print(f"{'target':<18} {'inputs':>8} {'seconds':>8} {'inputs/s':>9} failures")
    failed = 0
    for name in options.targets or TARGETS:
        tried, seconds, failure = fuzz(TARGETS[name], options.examples)
        failed += failure is not None
        print(f"{name:<18} {tried:>8} {seconds:>8.1f} {tried / seconds:>9.0f} {int(failure is not None)}", flush=True)
        if failure is not None:
            print(failure, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
