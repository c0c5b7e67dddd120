"""`octi serve --workers N`: N worker processes sharing one listening socket.

The parent first has one process do what the workers would otherwise all do at once on a fresh
DATA_DIR (`prepare`: migrate the call log, seed the knowledge base), then binds the socket and
starts the workers, each running `worker(socket)` (the same draining server as a single
process, `app/serve.py`), then only passes signals on: SIGTERM drains every worker (a second
SIGTERM stops them at once), SIGINT (Ctrl-C) stops them. It exits once they all have: 0 when
each drained or stopped cleanly, 130 after Ctrl-C.

Workers are spawned (fresh interpreters, not forks), so they read PROMETHEUS_MULTIPROC_DIR when
they import prometheus-client: the parent sets it to a directory of its own when none is given,
and `/metrics`, whichever worker answers, sums them all. Each worker is in a process group of
its own, so that Ctrl-C in a terminal reaches them once, through the parent; a worker whose
parent died drains by itself. A worker that ends on its own (a crash) is not replaced: the
others are drained and the parent exits 1, for whatever runs the service to restart it whole.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from prometheus_client import multiprocess

from app.cli_support import INTERRUPTED_EXIT_CODE

log = logging.getLogger(__name__)

METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own setting
ORPHAN_CHECK_SECONDS = 1.0

Worker = Callable[[socket.socket], None]


def serve_workers(count: int, host: str, port: int, worker: Worker, *, prepare: Callable[[], None]) -> int:
    """Run `count` processes of `worker` on one socket bound to host:port, once `prepare` has
    run in a process of its own; the exit code."""
    context = multiprocessing.get_context("spawn")
    stopped = _prepare(context, prepare)
    if stopped is not None:
        return stopped
    metrics_dir, temporary = _metrics_directory()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.create_server((host, port), family=family, backlog=2048)
    try:
        processes = [context.Process(target=_run_worker, args=(worker, listener, os.getpid()),
                                     name=f"octi-worker-{n}") for n in range(count)]
        for process in processes:
            process.start()
        log.info("serving on %s:%d with %d workers (pids %s)", host, listener.getsockname()[1], count,
                 ", ".join(str(process.pid) for process in processes))
        return _supervise(processes, metrics_dir)
    finally:
        listener.close()
        if temporary:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _prepare(context: multiprocessing.context.SpawnContext, prepare: Callable[[], None]) -> int | None:
    """Run `prepare` in a process of its own; the exit code when a signal stopped it, else None."""
    preparation = context.Process(target=prepare, name="octi-prepare")
    stopped: list[int] = []

    def stop(sig: int, frame: FrameType | None) -> None:
        stopped.append(sig)
        if preparation.pid is not None:
            preparation.terminate()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        preparation.start()
        preparation.join()
    except KeyboardInterrupt:  # Ctrl-C reached the preparation too
        preparation.join()
        return INTERRUPTED_EXIT_CODE
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0 if stopped else None  # nothing served yet: nothing to drain


def _supervise(processes: list[multiprocessing.process.BaseProcess], metrics_dir: Path) -> int:
    """Pass SIGTERM and SIGINT on to the workers until they have all ended; the exit code."""
    received: list[int] = []

    def pass_on(sig: int, frame: FrameType | None) -> None:
        received.append(sig)
        _signal_all(processes, sig)

    previous = {sig: signal.signal(sig, pass_on) for sig in (signal.SIGTERM, signal.SIGINT)}
    crashed = False  # a worker ended with no signal asking it to, or ended badly
    try:
        running = list(processes)
        while running:
            multiprocessing.connection.wait([process.sentinel for process in running])
            for process in [process for process in running if not process.is_alive()]:
                running.remove(process)
                multiprocess.mark_process_dead(process.pid, str(metrics_dir))
                if not received:
                    log.error("worker %d ended on its own (exit code %s): draining the others",
                              process.pid, process.exitcode)
                    received.append(signal.SIGTERM)
                    _signal_all(running, signal.SIGTERM)
                    crashed = True
                # Killed by SIGTERM itself, it was still starting (a started worker drains): no call lost.
                elif process.exitcode not in (0, -signal.SIGTERM) and signal.SIGINT not in received:
                    crashed = True
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if signal.SIGINT in received:
        return INTERRUPTED_EXIT_CODE
    return 1 if crashed else 0


def _signal_all(processes: list[multiprocessing.process.BaseProcess], sig: int) -> None:
    for process in processes:
        if process.pid is not None and process.exitcode is None:
            os.kill(process.pid, sig)


def _metrics_directory() -> tuple[Path, bool]:
    """The directory the workers write their metrics to, emptied of an earlier run's; True
    when it is a temporary one, to remove at the end."""
    given = os.environ.get(METRICS_DIR_VARIABLE)
    if not given:
        path = Path(tempfile.mkdtemp(prefix="octi-metrics-"))
        os.environ[METRICS_DIR_VARIABLE] = str(path)
        return path, True
    path = Path(given)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):  # counts of processes gone would be summed forever
        stale.unlink()
    return path, False


def _run_worker(worker: Worker, listener: socket.socket, parent: int) -> None:
    os.setpgid(0, 0)  # Ctrl-C in a terminal reaches the parent only, which passes it on once
    threading.Thread(target=_drain_when_orphaned, args=(parent,), name="orphan-watch", daemon=True).start()
    try:
        worker(listener)
    except KeyboardInterrupt:  # Ctrl-C passed on while the worker was still starting (importing)
        sys.exit(INTERRUPTED_EXIT_CODE)


def _drain_when_orphaned(parent: int) -> None:
    """The parent died without passing a signal on (SIGKILL, a crash): drain as on SIGTERM."""
    while os.getppid() == parent:
        time.sleep(ORPHAN_CHECK_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)
