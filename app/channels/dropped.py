"""What a channel does with a message it cannot use: the call goes on without it.

Each one is counted by reason (`octi_stream_messages_dropped_total{reason}`). The first of each
reason in a call is logged as a warning and journaled as a `message_dropped` event, later ones
are logged at debug level only: a peer repeating a mistake 50 times a second must not flood the
log or the call log (Twilio itself warns once per stream, errors 31950 and 31951).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from app.calllog.records import CallEvent, CallRecord
from app.metrics import Metrics

log = logging.getLogger(__name__)


class DroppedMessages:
    def __init__(self, metrics: Metrics, *, call_id: str = "",
                 submit: Callable[[CallRecord], None] | None = None) -> None:
        """`call_id` and `submit` (to the call log) once the call is known."""
        self._metrics = metrics
        self._call_id = call_id
        self._submit = submit
        self._reasons_seen: set[str] = set()

    def drop(self, reason: str, detail: str) -> None:
        self._metrics.stream_messages_dropped.labels(reason).inc()
        if reason in self._reasons_seen:
            log.debug("dropping another message (%s): %s", reason, detail)
            return
        self._reasons_seen.add(reason)
        log.warning("dropping a message (%s): %s", reason, detail)
        if self._call_id and self._submit is not None:
            self._submit(CallEvent.now(self._call_id, "message_dropped", f"{reason}: {detail}"))
