"""The live feed (``GET /events``): what the live views read, and what it costs a request."""

import collections
import http.client
import json
import socket
import threading
import time
from urllib.parse import urlsplit

from fakes import Reply, Stream, eventually, message_events

from claude_proxy.feed import Feed, Watcher


class EventReader:
    """A client of ``/events`` that parses the server-sent events as they arrive."""

    def __init__(self, running, headers=None):
        parts = urlsplit(running.url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        self.conn.request("GET", "/events", headers=running.auth() if headers is None else headers)
        self.response = self.conn.getresponse()
        self.events = []

    def next(self, name=None, timeout=5.0):
        """The next event (named ``name``, skipping others), as ``(name, payload)``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event, data = None, None
            while True:
                line = self.response.fp.readline().decode().rstrip("\n")
                if not line:
                    break
                field, _, value = line.partition(": ")
                if field == "event":
                    event = value
                elif field == "data":
                    data = json.loads(value)
            self.events.append((event, data))
            if name is None or event == name:
                return event, data
        raise AssertionError(f"no {name} event within {timeout}s; got {self.events}")

    def close(self):
        self.conn.close()


def test_events_needs_the_token(proxy, providers):
    running = proxy(providers())
    reader = EventReader(running, headers={})
    try:
        assert reader.response.status == 401
    finally:
        reader.close()


def test_events_start_with_a_status_and_follow_requests(proxy, providers):
    slow, fine = providers(Reply(529, {"type": "error"})), providers(Stream(delay=0.05))
    running = proxy(slow, fine)
    reader = EventReader(running)
    try:
        assert reader.response.status == 200
        assert reader.response.getheader("content-type") == "text/event-stream"
        name, status = reader.next()
        assert name == "status"
        assert [p["name"] for p in status["providers"]] == ["p1", "p2"]
        assert status["in_flight"] == [] and status["dropped"] == 0

        answer = {}
        threading.Thread(target=lambda: answer.update(r=running.post(
            {"model": "claude-x", "stream": True, "messages": []}))).start()
        _, started = reader.next("start")
        assert started["model"] == "claude-x" and started["path"] == "/v1/messages"
        _, ended = reader.next("end")
        assert ended["id"] == started["id"]
        assert ended["provider"] == "p2" and ended["outcome"] == "answered" and ended["status"] == 200
        assert ended["tried"] == ["p1=529", "p2=200"]
        assert ended["output_tokens"] == 9 and ended["ttft_seconds"] > 0
        assert eventually(lambda: answer.get("r", (0,))[0] == 200)

        _, later = reader.next("status")  # the next snapshot shows the failover's cooldown
        assert next(p for p in later["providers"] if p["name"] == "p1")["state"] == "cooling"
        assert later["recent"][-1]["id"] == ended["id"]
    finally:
        reader.close()


def test_a_stream_in_flight_shows_in_status(proxy, providers):
    fake = providers(Stream(hold_after=3))
    running = proxy(fake)
    with running.stream_held(fake, 3, model="claude-x") as answer:
        rows = eventually(lambda: running.server.feed.in_flight_rows())
        assert rows
        row = running.server.feed.in_flight_rows()[0]
        assert row["provider"] == "p1" and row["answering"] and row["bytes_out"] > 0
        assert row["input_tokens"] == 25
    assert answer["r"][0] == 200
    assert eventually(lambda: running.server.feed.in_flight_rows() == [])


def test_a_watcher_that_never_reads_does_not_slow_requests(proxy, providers):
    """A view that stops reading: its socket buffers fill, its queue fills, its events
    are dropped and counted, and requests go on at full speed."""
    running = proxy(providers(Reply()))
    parts = urlsplit(running.url)
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
    stuck.connect((parts.hostname, parts.port))
    stuck.sendall(f"GET /events HTTP/1.1\r\nHost: {parts.netloc}\r\nx-api-key: {running.token}\r\n\r\n"
                  .encode())
    try:
        assert eventually(lambda: running.server.feed.watched)
        started = time.monotonic()
        for _ in range(1500):  # more events than a watcher's queue holds
            assert running.post()[0] == 200
        assert time.monotonic() - started < 60
        watcher = running.server.feed._watchers[0]
        assert eventually(lambda: watcher.dropped > 0)
    finally:
        stuck.close()
    assert eventually(lambda: not running.server.feed.watched, timeout=5)


def test_a_watcher_queue_drops_and_counts_when_full():
    watcher = Watcher(size=2)
    for n in range(5):
        watcher.offer(("end", n))
    assert watcher.dropped == 3
    assert watcher.next(0.1) == ("end", 0)
    watcher.offer(("end", 5))
    assert [watcher.next(0.1), watcher.next(0.1), watcher.next(0.01)] == [("end", 1), ("end", 5), None]


def test_nobody_watching_builds_no_event():
    class Exchange:  # started() must not touch what only an event needs
        feed_id = 0

        def summary(self):
            return (self.feed_id,) + (None,) * 15

    feed = Feed(recent=2)
    exchanges = [Exchange() for _ in range(3)]
    for ex in exchanges:
        feed.started(ex)
        feed.finished(ex)
    assert [row["id"] for row in feed.recent_rows()] == [2, 3]
    assert feed.in_flight == {}


def test_two_requests_ending_at_once_each_get_their_own_end_event():
    class Exchange:
        feed_id = 0

        def summary(self):
            return (self.feed_id,) + (None,) * 15

    feed = Feed()
    first, second = Exchange(), Exchange()
    feed.started(first)
    feed.started(second)
    watcher = feed.watch()

    class Interleaved(collections.deque):
        def append(self, summary):
            super().append(summary)
            if summary[0] == first.feed_id:  # the second ends right now, in another thread
                feed.finished(second)

    feed.recent = Interleaved(maxlen=10)
    feed.finished(first)
    ended = [watcher.next(0.1), watcher.next(0.1)]
    assert sorted(payload["id"] for _, payload in ended) == [first.feed_id, second.feed_id]


def test_event_stream_body_is_what_the_provider_sent(proxy, providers):
    """Watching changes nothing in what clients get."""
    frames = message_events()
    running = proxy(providers(Stream(frames)))
    reader = EventReader(running)
    try:
        reader.next("status")
        status, _, body = running.post({"model": "m", "stream": True, "messages": []})
        assert status == 200 and body == b"".join(frames)
    finally:
        reader.close()
