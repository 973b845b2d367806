"""Following the daemon's live feed (``GET /events``, see :mod:`feed`) from a view.

A :class:`FeedReader` thread finds the daemon the way every command does
(the pid file and the client token of the state directory, :mod:`daemon`),
reads its server-sent events and hands them to the view through a queue.
When the daemon goes away, stops answering or was never there, it says so
with a ``down`` event (the :class:`daemon.Probe` that tells "not running"
from "not answering"), then tries again every ``retry`` seconds until the
daemon is back, on whatever address its pid file names by then.

:class:`LiveState` is what the view knows at a moment: the last ``status``
snapshot, corrected by the ``start`` and ``end`` events that came after it.
"""

import collections
import http.client
import json
import queue
import socket
import threading
import time

from .daemon import Probe, connect_host, probe, recorded_address
from .feed import RECENT
from .sse import EventBuffer, event_name_and_data, split_events
from .state import read_pid_file, read_token

RETRY_SECONDS = 1.0    # between attempts to reach a daemon that is not there
READ_TIMEOUT = 5.0     # a feed silent this long (it sends a status every second) is hung
MAX_EVENT_BYTES = 8 * 1024 * 1024  # a feed that never ends an event is not ours


class FeedReader:
    """Reads one state directory's daemon's feed in a thread; see the module docstring.

    :meth:`events` gives what came since the last call, as ``(name, payload)``:
    ``("status", snapshot)``, ``("start", row)``, ``("end", row)`` from the daemon,
    ``("connected", record)`` when a feed begins (the pid file's record of the daemon),
    ``("down", probe)`` when there is none."""

    def __init__(self, paths, config=None, retry=RETRY_SECONDS, read_timeout=READ_TIMEOUT):
        self.paths = paths
        self.config = config
        self.retry = retry
        self.read_timeout = read_timeout
        self._queue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._conn = None
        self._thread = threading.Thread(target=self._run, name="feed-reader", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self, timeout=5.0):
        """Stop reading: the connection is closed under the thread, which ends."""
        self._stop.set()
        with self._lock:
            conn = self._conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in a read
            except OSError:  # already closed by the daemon or by the thread
                pass
        if self._thread.is_alive():
            self._thread.join(timeout)

    def events(self, timeout=0.0):
        """Every event queued now; waits up to ``timeout`` seconds for a first one."""
        found = []
        try:
            found.append(self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait())
        except queue.Empty:
            return found
        while True:
            try:
                found.append(self._queue.get_nowait())
            except queue.Empty:
                return found

    def _run(self):
        while not self._stop.is_set():
            record = read_pid_file(self.paths.pid)
            if record is not None:
                self._follow(record)
            if self._stop.is_set():
                break
            # No feed now: say why (this asks /status once, within its own timeout).
            self._queue.put(("down", probe(self.paths, self.config)))
            self._stop.wait(self.retry)

    def _follow(self, record):
        """Read the recorded daemon's feed, queueing its events, until it ends or cannot be had."""
        address = recorded_address(record, self.config)
        if address is None:
            return
        host, port = connect_host(address[0]), address[1]
        conn = http.client.HTTPConnection(host, port, timeout=self.read_timeout)
        with self._lock:
            self._conn = conn
        try:
            if self._stop.is_set():
                return
            token = read_token(self.paths.token)
            conn.request("GET", "/events", headers={"x-api-key": token} if token else {})
            response = conn.getresponse()
            if response.status != 200:
                return
            buffer = EventBuffer()
            first = True
            while not self._stop.is_set():
                data = response.read1(65536)
                if not data:
                    return
                buffer.feed(data)
                if buffer.size > MAX_EVENT_BYTES:
                    return
                for event in split_events(buffer.take_events()):
                    name, payload = event_name_and_data(event)
                    try:
                        payload = json.loads(payload)
                    except ValueError:  # not our daemon's event: skip it
                        continue
                    if first:
                        # The pid file's daemon, not another program on its old port.
                        if name != "status" or payload.get("pid") != record["pid"]:
                            return
                        self._queue.put(("connected", record))
                        first = False
                    self._queue.put((name, payload))
        # Refused, reset, timed out (a hung daemon), cut mid-chunk, or closed by stop():
        # each means "no feed now", which the caller reports and retries.
        except (OSError, http.client.HTTPException):
            return
        finally:
            with self._lock:
                self._conn = None
            conn.close()


class LiveState:
    """What the view shows: the daemon's last status, updated by the events after it.

    ``status`` is None until a first snapshot (and while the daemon is down,
    when ``down`` is the :class:`daemon.Probe` saying why); ``record`` is the
    pid file's record of the daemon the feed comes from.  ``received`` is
    the monotonic time of the last snapshot, so that countdowns and elapsed
    times can go on between snapshots."""

    def __init__(self):
        self.status = None
        self.received = None
        self.record = None
        self.down = None
        self.in_flight = {}
        self.recent = collections.deque(maxlen=RECENT)
        self.ended_since_today = False  # an end event came: today's figures are worth reading again

    def apply(self, name, payload, now=None):
        """Take one event from :meth:`FeedReader.events` into account."""
        now = time.monotonic() if now is None else now
        if name == "connected":
            self.record = payload
        elif name == "down":
            self.down, self.status, self.received = payload, None, None
            self.in_flight.clear()
            self.recent.clear()
        elif name == "status":
            self.status, self.received, self.down = payload, now, None
            self.in_flight = {row["id"]: row for row in payload.get("in_flight") or ()}
            self.recent.clear()
            self.recent.extend(payload.get("recent") or ())
        elif name == "start" and self.status is not None:
            self.in_flight[payload["id"]] = payload
        elif name == "end" and self.status is not None:
            self.in_flight.pop(payload["id"], None)
            if not any(row.get("id") == payload["id"] for row in self.recent):
                self.recent.append(payload)
            self.ended_since_today = True

    def probe(self, config=None):
        """The daemon as :func:`daemon.probe` would say now: running with the last
        status, or down (None before anything is known)."""
        if self.status is not None:
            return Probe(self.record, self.status, config)
        return self.down

    def age(self, now=None):
        """Seconds since the last snapshot (0 without one)."""
        if self.received is None:
            return 0.0
        return max(0.0, (time.monotonic() if now is None else now) - self.received)
