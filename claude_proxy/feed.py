"""The live feed: requests in flight and just ended, for the live views.

``proxy.py top`` and the dashboard page watch the daemon through
``GET /events`` (:mod:`http_server`), a server-sent-events stream of
status snapshots and request ``start``/``end`` events that this module
produces.

The request path pays almost nothing for it: a dict insert and delete per
request, and a short tuple appended to a bounded deque of recent requests;
an event is built only while someone watches.  A watcher never slows a
request down: each has a bounded queue, and when a slow watcher's queue is
full its new events are dropped and counted (the view shows the count).
"""

import collections
import itertools
import queue
import threading
import time

RECENT = 50          # ended requests kept for a view that starts watching
WATCHER_QUEUE = 512  # events a watcher may fall behind by before they are dropped


class Watcher:
    """One view's queue of events; :meth:`next` waits for the next one."""

    def __init__(self, size=WATCHER_QUEUE):
        self._queue = queue.Queue(size)
        self._lock = threading.Lock()
        self.dropped = 0

    def offer(self, event):
        """Queue ``event`` unless the queue is full (then count it dropped); never blocks."""
        try:
            self._queue.put_nowait(event)
        except queue.Full:  # this view reads too slowly: it misses this one, and is told how many
            with self._lock:
                self.dropped += 1

    def next(self, timeout):
        """The next event, or None after ``timeout`` seconds without one."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None


class Feed:
    """Requests in flight, the last ones ended, and the watchers to tell."""

    def __init__(self, recent=RECENT):
        self._ids = itertools.count(1)
        self.in_flight = {}  # id -> forward.Exchange
        self.recent = collections.deque(maxlen=recent)
        self._watchers = ()  # replaced whole, so the request path reads it without a lock
        self._lock = threading.Lock()

    @property
    def watched(self):
        return bool(self._watchers)

    def started(self, ex):
        """``ex`` (a :class:`forward.Exchange`) began; gives it its feed id."""
        ex.feed_id = next(self._ids)
        self.in_flight[ex.feed_id] = ex
        if self._watchers:
            self._publish(("start", request_row(ex)))

    def finished(self, ex):
        """``ex`` ended (its outcome is set)."""
        self.in_flight.pop(ex.feed_id, None)
        summary = ex.summary()
        self.recent.append(summary)  # not recent[-1] after it: another request may have ended since
        if self._watchers:
            self._publish(("end", ended_row(summary)))

    def in_flight_rows(self):
        return sorted((request_row(ex) for ex in list(self.in_flight.values())),
                      key=lambda row: row["id"])

    def recent_rows(self):
        return [ended_row(summary) for summary in list(self.recent)]

    def watch(self, size=WATCHER_QUEUE):
        watcher = Watcher(size)
        with self._lock:
            self._watchers = self._watchers + (watcher,)
        return watcher

    def unwatch(self, watcher):
        with self._lock:
            self._watchers = tuple(w for w in self._watchers if w is not watcher)

    def _publish(self, event):
        for watcher in self._watchers:
            watcher.offer(event)


def request_row(ex):
    """A request in flight, as the views show it."""
    provider, usage, writer = ex.trying, ex.live_usage, ex.writer
    elapsed = time.monotonic() - ex.started
    return {"id": ex.feed_id, "method": ex.method, "path": ex.api_path, "mode": ex.mode,
            "model": ex.model_seen(), "provider": provider.name if provider is not None else None,
            "tried": list(ex.tried), "started_at": time.time() - elapsed,
            "elapsed_seconds": round(elapsed, 3), "answering": ex.first_byte is not None,
            "bytes_out": writer.bytes_sent if writer is not None else 0,
            "input_tokens": usage.input_tokens if usage else None,
            "output_tokens": usage.output_tokens if usage else None}


def ended_row(summary):
    """A request that ended (from :meth:`forward.Exchange.summary`)."""
    return dict(zip(SUMMARY_FIELDS, summary))


#: The fields of an ended request's summary, in order (a tuple is cheap to keep).
SUMMARY_FIELDS = ("id", "method", "path", "mode", "model", "provider", "tried", "outcome", "status",
                  "failure", "stream", "started_at", "duration_seconds", "ttft_seconds",
                  "input_tokens", "output_tokens")
