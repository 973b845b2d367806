"""A fast fake Anthropic-compatible (and OpenAI Chat Completions) provider for the benchmark (standard library only).

One asyncio process, raw HTTP/1.1 keep-alive, on 127.0.0.1 (port 0 by default).
It prints one JSON line ``{"port": N, "pid": P}`` on stdout once listening and
exits when its standard input closes (so it never outlives the benchmark) or on
SIGTERM/SIGINT.

Routes (an optional first path segment is the provider's *name*, so one process
can stand for several providers: ``base_url`` ``http://127.0.0.1:N/a`` makes the
proxy post to ``/a/v1/messages``):

- ``POST [/NAME]/v1/messages``: a JSON message, or an SSE stream when the body
  has ``"stream":true`` (see :func:`wire.stream_events`).  Per-request knobs, as
  headers (defaults from the command line): ``x-bench-delay-ms`` (before the
  answer), ``x-bench-pace-ms`` (between events), ``x-bench-deltas``,
  ``x-bench-seed``, ``x-bench-fail: a,b`` (those names answer 429 with
  ``retry-after: 0``, the mode used for the failover measurement).
- ``POST [/NAME]/v1/chat/completions``: the same in OpenAI's Chat Completions
  shape: a ``chat.completion``, or with ``"stream": true`` an SSE stream of
  ``chat.completion.chunk`` frames ending in ``data: [DONE]`` (see
  :func:`wire.iter_chat_events`), with the same knobs, which may also come in
  the body (:func:`wire.knob_text`): the proxy sends an OpenAI provider none
  of the client's headers.
- ``GET /_bench/stats``: per-name counts of answers by status, as JSON;
  ``POST /_bench/reset`` zeroes them.
- ``GET /health``, ``HEAD /...``: 200.

Run it alone: ``python bench/fake_provider.py --port 8900 --delay-ms 20``.
"""

import argparse
import asyncio
import heapq
import json
import os
import signal
import socket
import stat
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wire  # noqa: E402

MAX_HEAD = 65536


def _response(status, reason, body, content_type="application/json", extra=b""):
    return (b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n"
            b"request-id: req_bench\r\n%s\r\n" % (status, reason, content_type.encode(), len(body), extra)) + body


OK_MESSAGE = _response(200, b"OK", wire.MESSAGE_JSON)
OK_CHAT = _response(200, b"OK", wire.CHAT_COMPLETION_JSON)
CHAT_PATH = "/v1/chat/completions"
RATE_LIMITED = _response(429, b"Too Many Requests", wire.RATE_LIMIT_JSON,
                         extra=b"retry-after: 0\r\nx-should-retry: true\r\n")
NOT_FOUND = _response(404, b"Not Found", b'{"type":"error","error":{"type":"not_found_error","message":"no such route"}}')
HEALTH = _response(200, b"OK", b'{"status":"ok"}')
STREAM_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
               b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\nrequest-id: req_bench\r\n\r\n")



def _wants_stream(body):
    """Does a request body ask for a stream (as the load generator writes it, spaced or not)?"""
    return b'"stream":true' in body or b'"stream": true' in body

class Settings:
    def __init__(self, delay_ms=0.0, pace_ms=20.0, deltas=20):
        self.delay_ms = delay_ms
        self.pace_ms = pace_ms
        self.deltas = deltas
        self.stats = {}
        self.pacer = Pacer()

    def count(self, name, key):
        per = self.stats.setdefault(name or "-", {})
        per[key] = per.get(key, 0) + 1


def _chunk(data):
    return b"%x\r\n%s\r\n" % (len(data), data)


class ProviderConnection(asyncio.Protocol):
    """One client connection; requests are answered one at a time, in order."""

    def __init__(self, settings):
        self.settings = settings
        self.transport = None
        self.buf = b""
        self.busy = False
        self.closed = False

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc):
        self.closed = True

    def data_received(self, data):
        self.buf += data
        if not self.busy:
            self._process()

    def _process(self):
        while not self.busy and not self.closed:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self.transport.close()
                return
            head = self.buf[:end].decode("latin-1").split("\r\n")
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            start = end + 4
            if "chunked" in headers.get("transfer-encoding", "").lower():
                body, consumed = _dechunk(self.buf, start)
                if body is None:
                    return
            else:
                length = int(headers.get("content-length", "0") or 0)
                if len(self.buf) - start < length:
                    return
                body, consumed = self.buf[start:start + length], start + length
            self.buf = self.buf[consumed:]
            parts = head[0].split(" ")
            method, target = parts[0], parts[1] if len(parts) > 1 else "/"
            self._handle(method, target, headers, body)

    def _handle(self, method, target, headers, body):
        path = target.split("?", 1)[0]
        settings = self.settings
        if method == "HEAD":
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            return
        if path.endswith("/v1/messages") and method == "POST":
            name = path[:-len("/v1/messages")].strip("/")
            fail = headers.get(wire.H_FAIL)
            delay = float(headers.get(wire.H_DELAY, settings.delay_ms)) / 1000.0
            if fail and name in fail.split(","):
                settings.count(name, "429")
                self._answer(RATE_LIMITED, delay)
                return
            if _wants_stream(body):
                settings.count(name, "stream")
                self._start_stream(headers, delay, wire.iter_stream_events)
                return
            settings.count(name, "200")
            self._answer(OK_MESSAGE, delay)
            return
        if path.endswith(CHAT_PATH) and method == "POST":
            name = path[:-len(CHAT_PATH)].strip("/")
            knobs = {**wire.knobs_in_body(body), **headers}
            delay = float(knobs.get(wire.H_DELAY, settings.delay_ms)) / 1000.0
            if _wants_stream(body):
                settings.count(name, "stream")
                self._start_stream(knobs, delay, wire.iter_chat_events)
                return
            settings.count(name, "200")
            self._answer(OK_CHAT, delay)
            return
        if path == "/_bench/stats":
            self.transport.write(_response(200, b"OK", json.dumps(settings.stats).encode()))
        elif path == "/_bench/reset":
            settings.stats.clear()
            self.transport.write(_response(200, b"OK", b"{}"))
        elif path == "/health":
            self.transport.write(HEALTH)
        else:
            self.transport.write(NOT_FOUND)

    def _start_stream(self, knobs, delay, events):
        settings = self.settings
        pace = float(knobs.get(wire.H_PACE, settings.pace_ms)) / 1000.0
        deltas = int(knobs.get(wire.H_DELTAS, settings.deltas))
        seed = int(knobs.get(wire.H_SEED, "0"))
        self.busy = True
        asyncio.get_running_loop().create_task(self._stream(events(seed, deltas), delay, pace))

    def _answer(self, response, delay):
        if delay <= 0:
            self.transport.write(response)
            return
        self.busy = True
        asyncio.get_running_loop().call_later(delay, self._finish, response)

    def _finish(self, response):
        self.busy = False
        if not self.closed:
            self.transport.write(response)
            self._process()

    async def _stream(self, events, delay, pace):
        if delay > 0:
            await asyncio.sleep(delay)
        if self.closed:
            return
        self.settings.pacer.start(self, events, pace)

    def stream_done(self):
        self.busy = False
        if not self.closed:
            self._process()


class Pacer:
    """Sends every open stream's next event when it is due, from one timer.

    Cheaper than a sleeping task per stream (no future and timer handle per
    event), so the fake provider stays light at 256 streams x 50 events/s.
    Each stream keeps to a fixed schedule (start + i * pace), so lateness of
    one event does not shift the following ones.
    """

    SLACK = 0.0002  # send events due within this many seconds in the same pass

    def __init__(self):
        self.heap = []
        self.seq = 0
        self.timer = None
        self.timer_at = None

    def start(self, conn, events, pace):
        conn.transport.write(STREAM_HEAD + _chunk(next(events)))
        loop = asyncio.get_running_loop()
        self._advance(loop, conn, events, loop.time() + pace, pace)

    def _advance(self, loop, conn, events, due, pace):
        """Queue the stream's next event for ``due``, or end the stream."""
        event = next(events, None)
        if event is None:
            conn.transport.write(b"0\r\n\r\n")
            conn.stream_done()
            return
        self._push(loop, due, conn, event, events, pace)

    def _push(self, loop, due, conn, event, events, pace):
        self.seq += 1
        heapq.heappush(self.heap, (due, self.seq, conn, event, events, pace))
        if self.timer_at is None or due < self.timer_at:
            if self.timer is not None:
                self.timer.cancel()
            self.timer_at = due
            self.timer = loop.call_at(due, self._run)

    def _run(self):
        loop = asyncio.get_running_loop()
        self.timer = self.timer_at = None
        heap = self.heap
        limit = loop.time() + self.SLACK
        while heap and heap[0][0] <= limit:
            due, _, conn, event, events, pace = heapq.heappop(heap)
            if conn.closed:
                conn.stream_done()
                continue
            following = next(events, None)
            if following is None:
                conn.transport.write(_chunk(event) + b"0\r\n\r\n")
                conn.stream_done()
                continue
            conn.transport.write(_chunk(event))
            self.seq += 1
            heapq.heappush(heap, (due + pace, self.seq, conn, following, events, pace))
        if self.timer is not None:  # a stream started from inside this pass
            self.timer.cancel()
        self.timer = self.timer_at = None
        if heap:
            self.timer_at = heap[0][0]
            self.timer = loop.call_at(self.timer_at, self._run)


def _dechunk(buf, pos):
    """(body, end) of a chunked body starting at ``pos``, or (None, 0) if incomplete."""
    out = []
    while True:
        end = buf.find(b"\r\n", pos)
        if end < 0:
            return None, 0
        size = int(buf[pos:end].split(b";")[0], 16)
        pos = end + 2
        if size == 0:
            while True:  # trailers up to the empty line
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    return None, 0
                if end == pos:
                    return b"".join(out), end + 2
                pos = end + 2
        if len(buf) < pos + size + 2:
            return None, 0
        out.append(buf[pos:pos + size])
        pos += size + 2


async def serve(host, port, settings, ready=None):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: ProviderConnection(settings), host, port,
                                      backlog=4096, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    if ready:
        ready(bound)
    return server


async def _main(args):
    loop = asyncio.get_running_loop()
    settings = Settings(args.delay_ms, args.pace_ms, args.deltas)
    stop = loop.create_future()

    def done(*_):
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, done)
        except (NotImplementedError, RuntimeError):
            pass
    server = await serve(args.host, args.port, settings)
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"port": port, "pid": os.getpid()}), flush=True)
    if not args.no_stdin_watch and _stdin_is_pipe():
        # Exit when the parent goes away (our stdin, a pipe from it, closes).
        def on_stdin():
            try:
                data = os.read(sys.stdin.fileno(), 4096)
            except OSError:
                data = b""
            if not data:
                done()
        try:
            loop.add_reader(sys.stdin.fileno(), on_stdin)
        except (OSError, ValueError, NotImplementedError):
            pass
    await stop
    server.close()


def _stdin_is_pipe():
    try:
        return stat.S_ISFIFO(os.fstat(sys.stdin.fileno()).st_mode)
    except (OSError, ValueError, AttributeError):
        return False


def main(argv=None):
    parser = argparse.ArgumentParser(description="Fake Anthropic provider for the benchmark.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="default delay before answering")
    parser.add_argument("--pace-ms", type=float, default=20.0, help="default gap between SSE events")
    parser.add_argument("--deltas", type=int, default=20, help="default content_block_delta count")
    parser.add_argument("--no-stdin-watch", action="store_true",
                        help="keep running when stdin (a pipe) closes")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_main(args))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
