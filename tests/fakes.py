"""Fake providers that really misbehave, on 127.0.0.1, for the tests.

A :class:`FakeProvider` is a real HTTP server on port 0.  Each request gets
the next scripted behaviour (``provider.queue(...)``), else the default one
(``provider.default = ...``): answer, stream with delays, cut a stream after
N events, stall, reset the connection, hang up without answering.
"""

import http.client
import http.server
import json
import select
import socket
import struct
import threading
import time
from collections import deque
from urllib.parse import urlsplit

MESSAGE = {
    "id": "msg_fake",
    "type": "message",
    "role": "assistant",
    "model": "fake-model",
    "content": [{"type": "text", "text": "Hello from the fake provider"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 12, "output_tokens": 7, "cache_read_input_tokens": 3,
              "cache_creation_input_tokens": 0},
}


def sse(event, data):
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def message_events(text="Hello there", model="fake-model", input_tokens=25, output_tokens=9,
                   pieces=3):
    """A complete Anthropic stream, one bytes frame per event."""
    chunk = max(1, len(text) // pieces)
    parts = [text[i:i + chunk] for i in range(0, len(text), chunk)]
    frames = [sse("message_start", {
        "type": "message_start",
        "message": {"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
                    "content": [], "stop_reason": None, "stop_sequence": None,
                    "usage": {"input_tokens": input_tokens, "output_tokens": 1,
                              "cache_read_input_tokens": 5, "cache_creation_input_tokens": 2}}})]
    frames.append(sse("content_block_start", {"type": "content_block_start", "index": 0,
                                              "content_block": {"type": "text", "text": ""}}))
    frames.append(sse("ping", {"type": "ping"}))
    for part in parts:
        frames.append(sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                  "delta": {"type": "text_delta", "text": part}}))
    frames.append(sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
    frames.append(sse("message_delta", {"type": "message_delta",
                                        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                        "usage": {"output_tokens": output_tokens}}))
    frames.append(sse("message_stop", {"type": "message_stop"}))
    return frames


OVERLOADED_EVENT = sse("error", {"type": "error", "error": {"type": "overloaded_error",
                                                            "message": "Overloaded"}})


def error_json(status, error_type, message):
    return json.dumps({"type": "error", "error": {"type": error_type, "message": message}}).encode()


# --- behaviours -------------------------------------------------------------


class Reply:
    """Answer with a status, headers and a body (JSON by default)."""

    def __init__(self, status=200, body=None, headers=(), content_type="application/json",
                 delay=0.0, chunked=False):
        if body is None:
            body = MESSAGE
        self.status = status
        self.body = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.headers = list(headers.items() if isinstance(headers, dict) else headers)
        self.content_type = content_type
        self.delay = delay
        self.chunked = chunked

    def __call__(self, handler):
        if self.delay:
            time.sleep(self.delay)
        handler.send_response(self.status)
        handler.send_header("Content-Type", self.content_type)
        for name, value in self.headers:
            handler.send_header(name, value)
        if self.chunked:
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            handler.wfile.write(b"%x\r\n%b\r\n0\r\n\r\n" % (len(self.body), self.body))
        else:
            handler.send_header("Content-Length", str(len(self.body)))
            handler.end_headers()
            handler.wfile.write(self.body)


class Stream:
    """Stream SSE frames (chunked), ``delay`` seconds apart.

    ``cut_after=N`` drops the connection after N frames (``reset`` picks RST
    over a plain close); ``stall_after=N`` goes silent after N frames until
    the proxy hangs up or the test calls ``provider.release()``;
    ``hold_after=N`` waits for ``provider.release()`` after N frames, then
    goes on.
    """

    def __init__(self, frames=None, delay=0.0, cut_after=None, reset=False, stall_after=None,
                 hold_after=None, headers=()):
        self.frames = list(frames if frames is not None else message_events())
        self.delay = delay
        self.cut_after = cut_after
        self.reset = reset
        self.stall_after = stall_after
        self.hold_after = hold_after
        self.headers = list(headers.items() if isinstance(headers, dict) else headers)

    def __call__(self, handler):
        provider = handler.server.provider
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Transfer-Encoding", "chunked")
        for name, value in self.headers:
            handler.send_header(name, value)
        handler.end_headers()
        try:
            for number, frame in enumerate(self.frames):
                if number == self.cut_after:
                    abort(handler, rst=self.reset)
                    return
                if number == self.stall_after:
                    Stall()(handler)
                    return
                if number == self.hold_after:
                    provider.wait_for_release()
                if number and self.delay:
                    time.sleep(self.delay)
                handler.wfile.write(b"%x\r\n%b\r\n" % (len(frame), frame))
                provider.frames_sent += 1
            if self.stall_after == len(self.frames):
                Stall()(handler)
                return
            handler.wfile.write(b"0\r\n\r\n")
        except OSError:  # the proxy hung up on us: that is what some tests want
            provider.client_hung_up.set()
            handler.close_connection = True


class CutBody:
    """A 200 JSON answer that stops partway: its framing (a Content-Length, or
    chunked) promises more than is sent before the connection drops."""

    def __init__(self, chunked=False, reset=False):
        self.chunked = chunked
        self.reset = reset

    def __call__(self, handler):
        part = b'{"id": "msg_cut", "content": ['
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        if self.chunked:
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            handler.wfile.write(b"%x\r\n%b\r\n" % (len(part), part))
        else:
            handler.send_header("Content-Length", "500")
            handler.end_headers()
            handler.wfile.write(part)
        abort(handler, rst=self.reset)


class Stall:
    """Say nothing for ``seconds`` (or until released); notice if the proxy hangs up meanwhile."""

    def __init__(self, seconds=30.0):
        self.seconds = seconds

    def __call__(self, handler):
        provider = handler.server.provider
        provider.stalled.set()
        conn = handler.connection
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline and not provider.released():
            readable, _, _ = select.select([conn], [], [], 0.05)
            if readable:
                try:
                    data = conn.recv(1, socket.MSG_PEEK)
                except OSError:
                    data = b""
                if not data:
                    provider.client_hung_up.set()
                    break
        abort(handler, rst=False)


class Reset:
    """Reset the connection (RST) without answering."""

    def __call__(self, handler):
        abort(handler, rst=True)


class Hangup:
    """Close the connection cleanly without answering."""

    def __call__(self, handler):
        abort(handler, rst=False)


def abort(handler, rst):
    conn = handler.connection
    if rst:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    try:
        conn.shutdown(socket.SHUT_RDWR) if not rst else None
    except OSError:
        pass
    conn.close()
    handler.close_connection = True


# --- the server ---------------------------------------------------------------


class RecordedRequest:
    def __init__(self, handler, body):
        self.method = handler.command
        self.path = handler.path
        self.header_list = list(handler.headers.items())
        self.headers = {k.lower(): v for k, v in self.header_list}
        self.body = body

    def json(self):
        return json.loads(self.body)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def _serve(self):
        provider = self.server.provider
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        provider.record(RecordedRequest(self, body))
        provider.next_behaviour()(self)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve

    def log_message(self, format, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def get_request(self):
        conn, addr = super().get_request()
        self.provider.connections += 1
        return conn, addr

    def handle_error(self, request, client_address):
        pass


class FakeProvider:
    """A scripted Anthropic-compatible provider on 127.0.0.1."""

    def __init__(self, default=None):
        self.default = default or Reply()
        self._queue = deque()
        self._lock = threading.Lock()
        self.requests = []
        self.connections = 0
        self.frames_sent = 0
        self.stalled = threading.Event()
        self.client_hung_up = threading.Event()
        self._release = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.provider = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    @property
    def port(self):
        return self._server.server_address[1]

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def queue(self, *behaviours):
        with self._lock:
            self._queue.extend(behaviours)
        return self

    def next_behaviour(self):
        with self._lock:
            return self._queue.popleft() if self._queue else self.default

    def record(self, request):
        with self._lock:
            self.requests.append(request)

    def wait_for_release(self, timeout=30.0):
        self._release.wait(timeout)

    def release(self):
        self._release.set()

    def released(self):
        return self._release.is_set()

    def close(self):
        self.release()
        self._server.shutdown()
        self._server.server_close()


def closed_port():
    """A port on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def request(url, method="POST", path="/v1/messages", body=None, headers=None, timeout=10):
    """One request with http.client; returns ``(status, headers dict, body bytes)``."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        conn.request(method, parts.path.rstrip("/") + path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        conn.close()


def eventually(predicate, timeout=5.0):
    """Poll ``predicate`` until it holds (the proxy books a request just after
    its last byte has gone out, so a test may look a moment too early)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


# --- a fake steered over HTTP (for tests in another process, e.g. Pester) -----------------


class _ControlHandler(_Handler):
    """``_Handler`` plus ``/_fake/...`` control requests, which are not recorded."""

    def _serve(self):
        if not self.path.startswith("/_fake/"):
            return super()._serve()
        provider = self.server.provider
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}") if length else {}
        if self.command == "POST" and self.path == "/_fake/mode":
            if body.get("mode") not in provider.MODES:
                return Reply(400, error_json(400, "invalid_request_error",
                                             f"mode must be one of {provider.MODES}"))(self)
            provider.mode = body["mode"]
        elif self.command == "POST" and self.path == "/_fake/reset":
            provider.reset()
        elif not (self.command == "GET" and self.path == "/_fake/count"):
            return Reply(404, error_json(404, "not_found_error", f"no control {self.path}"))(self)
        return Reply(200, {"mode": provider.mode, "requests": provider.count()})(self)

    do_GET = do_POST = _serve


class ControlledFakeProvider(FakeProvider):
    """A fake provider that another process steers and reads over HTTP.

    ``POST /_fake/mode`` with ``{"mode": "ok"}`` answers every request (a
    stream when the request asks for one), ``{"mode": "overloaded"}`` answers
    529; ``GET /_fake/count`` says how many requests it received;
    ``POST /_fake/reset`` forgets them and goes back to "ok".  Each answer is
    ``{"mode": ..., "requests": N}``.  Answers say ``hello from NAME``.
    """

    MODES = ("ok", "overloaded")

    def __init__(self, name):
        self.name = name
        self.mode = "ok"
        super().__init__()
        self._server.RequestHandlerClass = _ControlHandler

    def count(self):
        with self._lock:
            return len(self.requests)

    def reset(self):
        with self._lock:
            self.requests.clear()
        self.mode = "ok"

    def next_behaviour(self):
        if self.mode == "overloaded":
            return Reply(529, error_json(529, "overloaded_error", f"{self.name} is overloaded"))
        with self._lock:
            wants_stream = bool(self.requests) and _asks_for_stream(self.requests[-1])
        text = f"hello from {self.name}"
        if wants_stream:
            return Stream(message_events(text=text))
        return Reply(body={**MESSAGE, "content": [{"type": "text", "text": text}]})


def _asks_for_stream(recorded):
    try:
        return bool(recorded.json().get("stream"))
    except (ValueError, AttributeError):  # not a JSON object: answer plainly
        return False


if __name__ == "__main__":
    # `python tests/fakes.py alpha beta`: controlled fakes of those names for a
    # test run in another process (tests/ClaudeProxy.Tests.ps1 run by hand);
    # prints {"alpha": URL, ...} on one line, serves until stdin closes.
    import sys

    fakes = {name: ControlledFakeProvider(name) for name in sys.argv[1:]}
    print(json.dumps({name: fake.url for name, fake in fakes.items()}), flush=True)
    sys.stdin.read()
    for fake in fakes.values():
        fake.close()
