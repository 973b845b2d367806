"""What the benchmark sends and expects on the wire, shared by its processes.

- the request the load generator sends (a small Anthropic ``/v1/messages`` body,
  or its OpenAI Chat Completions counterpart);
- the answers the fake provider gives: a fixed JSON message, a 429 error, and a
  deterministic SSE stream per ``seed``, so the client can check every event it
  receives byte for byte against what the provider sent; the same in OpenAI's
  Chat Completions shape (a ``chat.completion``, ``chat.completion.chunk``
  frames ending in ``data: [DONE]``), and what the text of either must be
  once the proxy has translated it (:func:`translated_text`);
- a small incremental HTTP/1.1 response parser (Content-Length and chunked
  bodies), fast enough that the client is not the bottleneck, which can record
  when each SSE event completes.

Standard library only.
"""

import json
import re

# Headers the fake provider reads (the proxy forwards unknown headers verbatim).
H_DELAY = "x-bench-delay-ms"     # wait this long before answering (ms)
H_PACE = "x-bench-pace-ms"       # streams: wait this long between events (ms)
H_DELTAS = "x-bench-deltas"      # streams: number of content_block_delta events
H_SEED = "x-bench-seed"          # streams: which deterministic stream to send
H_FAIL = "x-bench-fail"          # comma list of provider prefixes that answer 429

MESSAGE_JSON = json.dumps({
    "id": "msg_bench_0001",
    "type": "message",
    "role": "assistant",
    "model": "bench-model",
    "content": [{"type": "text", "text": "Hello! This is a fixed answer from the benchmark's fake provider."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 25, "cache_creation_input_tokens": 0,
              "cache_read_input_tokens": 0, "output_tokens": 17},
}, separators=(",", ":")).encode()

RATE_LIMIT_JSON = json.dumps({
    "type": "error",
    "error": {"type": "rate_limit_error", "message": "Rate limited by the benchmark's fake provider"},
}, separators=(",", ":")).encode()


def request_body(stream=False, pad_bytes=0, knobs=None):
    """A small but realistic Messages request body (bytes).

    ``knobs`` (a dict of :data:`KNOBS` names and values) go into the message
    text (:func:`knob_text`): the way to reach a fake OpenAI provider through
    the proxy, which sends it none of the client's headers.
    """
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "stream": bool(stream),
        "messages": [{"role": "user", "content": "Say hello." + knob_text(knobs) + " " * max(0, pad_bytes)}],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def chat_request_body(stream=False, knobs=None):
    """The Chat Completions body the proxy makes of :func:`request_body` (sent directly)."""
    body = {"model": "bench-model",
            "messages": [{"role": "user", "content": "Say hello." + knob_text(knobs)}],
            "max_tokens": 1024}
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return json.dumps(body, separators=(",", ":")).encode()


#: Knobs the fake provider also takes from a request's body, as `` [bench seed=3 pace=20]``.
KNOBS = {"delay": H_DELAY, "pace": H_PACE, "deltas": H_DELTAS, "seed": H_SEED}
_KNOB_TEXT = re.compile(rb"\[bench ((?:[a-z]+=[0-9.]+ ?)*)\]")


def knob_text(knobs):
    if not knobs:
        return ""
    return " [bench " + " ".join(f"{name}={value}" for name, value in knobs.items()) + "]"


def knobs_in_body(body):
    """``{header name: value}`` for the knobs written into ``body`` by :func:`knob_text`."""
    match = _KNOB_TEXT.search(body)
    if not match:
        return {}
    out = {}
    for pair in match.group(1).decode().split():
        name, _, value = pair.partition("=")
        if name in KNOBS:
            out[KNOBS[name]] = value
    return out


def build_request(method, path, host_header, headers=None, body=b""):
    """Raw HTTP/1.1 keep-alive request bytes."""
    lines = [f"{method} {path} HTTP/1.1", f"host: {host_header}",
             "content-type: application/json", "anthropic-version: 2023-06-01",
             "x-api-key: bench-client-key", "user-agent: claude-proxy-bench/1",
             f"content-length: {len(body)}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _event(name, data):
    return b"event: " + name + b"\ndata: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


_ID = "@@ID@@"
_NUM = "@@NUM@@"
_START = _event(b"message_start", {
    "type": "message_start",
    "message": {"id": _ID, "type": "message", "role": "assistant", "model": "bench-model",
                "content": [], "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": 25, "cache_creation_input_tokens": 0,
                          "cache_read_input_tokens": 0, "output_tokens": 1}}})
_BLOCK_START = _event(b"content_block_start", {"type": "content_block_start", "index": 0,
                                               "content_block": {"type": "text", "text": ""}})
_DELTA = _event(b"content_block_delta", {
    "type": "content_block_delta", "index": 0,
    "delta": {"type": "text_delta", "text": f"{_ID} token {_NUM} lorem ipsum dolor sit amet "}})
_BLOCK_STOP = _event(b"content_block_stop", {"type": "content_block_stop", "index": 0})
_MESSAGE_DELTA = _event(b"message_delta", {
    "type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
    "usage": {"output_tokens": 999999999}}).replace(b"999999999", b"%d")
_MESSAGE_STOP = _event(b"message_stop", {"type": "message_stop"})
_START_T = _START.replace(_ID.encode(), b"%s")
_DELTA_T = _DELTA.replace(_ID.encode(), b"%s").replace(_NUM.encode(), b"%05d")


def iter_stream_events(seed, deltas):
    """The SSE events (each ``event:``+``data:`` ending in a blank line) for ``seed``.

    Anthropic's sequence: message_start, content_block_start, content_block_delta
    x ``deltas``, content_block_stop, message_delta, message_stop.  Every event
    names the stream (``msg_bench_<seed>``) and deltas carry their index, so a
    mix-up between streams, a loss or a reordering shows as a byte mismatch.
    Built from templates (about a microsecond per event), lazily.
    """
    msg_id = b"msg_bench_%08d" % seed
    yield _START_T % msg_id
    yield _BLOCK_START
    for i in range(deltas):
        yield _DELTA_T % (msg_id, i)
    yield _BLOCK_STOP
    yield _MESSAGE_DELTA % (deltas + 1)
    yield _MESSAGE_STOP


def stream_events(seed, deltas):
    """:func:`iter_stream_events` as a list."""
    return list(iter_stream_events(seed, deltas))


# --- OpenAI Chat Completions -------------------------------------------------------

ANSWER_TEXT = "Hello! This is a fixed answer from the benchmark's fake provider."

CHAT_COMPLETION_JSON = json.dumps({
    "id": "chatcmpl-bench0001",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "bench-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER_TEXT},
                 "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 25, "completion_tokens": 17, "total_tokens": 42},
}, separators=(",", ":")).encode()


def _chunk_frame(choices, usage=None):
    chunk = {"id": "@@ID@@", "object": "chat.completion.chunk", "created": 1700000000,
             "model": "bench-model", "choices": choices}
    if usage:
        chunk["usage"] = usage
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


_CHAT_ROLE = _chunk_frame([{"index": 0, "delta": {"role": "assistant", "content": ""},
                            "finish_reason": None}])
_CHAT_DELTA = _chunk_frame([{"index": 0, "delta": {"content": f"{_ID} token {_NUM} lorem ipsum dolor sit amet "},
                             "finish_reason": None}])
_CHAT_FINISH = _chunk_frame([{"index": 0, "delta": {}, "finish_reason": "stop"}])
_CHAT_USAGE = _chunk_frame([], {"prompt_tokens": 25, "completion_tokens": 999999999, "total_tokens": 1})
_CHAT_DONE = b"data: [DONE]\n\n"
_CHAT_ROLE_T = _CHAT_ROLE.replace(_ID.encode(), b"%s")
_CHAT_DELTA_T = _CHAT_DELTA.replace(_ID.encode(), b"%s", 2).replace(_NUM.encode(), b"%05d")
_CHAT_FINISH_T = _CHAT_FINISH.replace(_ID.encode(), b"%s")
_CHAT_USAGE_T = _CHAT_USAGE.replace(_ID.encode(), b"%s").replace(b"999999999", b"%d")


def iter_chat_events(seed, deltas):
    """The Chat Completions stream for ``seed``: the same text as :func:`iter_stream_events`.

    A role chunk, ``deltas`` content chunks, then a ``finish_reason`` chunk, a
    usage chunk (``choices: []``) and ``data: [DONE]``, as OpenAI sends them.
    Each item is sent at its own time; the last three come as one item, back
    to back as OpenAI sends them (the proxy's translation holds the end of the
    answer until the usage has come).
    """
    chat_id = b"chatcmpl-bench_%08d" % seed
    msg_id = b"msg_bench_%08d" % seed
    yield _CHAT_ROLE_T % chat_id
    for i in range(deltas):
        yield _CHAT_DELTA_T % (chat_id, msg_id, i)
    yield _CHAT_FINISH_T % chat_id + _CHAT_USAGE_T % (chat_id, deltas + 1) + _CHAT_DONE


def chat_events(seed, deltas):
    """The events of :func:`iter_chat_events`, one by one."""
    return [event + b"\n\n" for item in iter_chat_events(seed, deltas) for event in item.split(b"\n\n") if event]


def stream_text(seed, deltas):
    """The text a stream for ``seed`` carries (either shape)."""
    msg_id = "msg_bench_%08d" % seed
    return "".join(f"{msg_id} token {i:05d} lorem ipsum dolor sit amet " for i in range(deltas))


def translated_text(events):
    """``(text, ended)`` of an Anthropic stream the proxy translated: the text
    of its ``text_delta``\\ s, and whether its last event is ``message_stop``."""
    parts = []
    for event in events:
        if event.startswith(b"event: content_block_delta\n"):
            delta = json.loads(event.split(b"\ndata: ", 1)[1])["delta"]
            if delta.get("type") == "text_delta":
                parts.append(delta["text"])
    return "".join(parts), bool(events) and events[-1].startswith(b"event: message_stop\n")


class ProtocolError(Exception):
    pass


class ResponseParser:
    """Incremental parser for one HTTP/1.1 response.

    ``feed(data, now)`` returns True once the response is complete.  With
    ``sse=True`` the body is split into events as it arrives and ``event_times``
    holds, per event, the ``now`` of the ``feed`` call that completed it.
    """

    __slots__ = ("buf", "state", "status", "headers", "body", "remaining", "sse",
                 "events", "event_times", "_sse_buf", "first_byte")

    HEAD, LENGTH, CHUNK_SIZE, CHUNK_DATA, CHUNK_END, TRAILER, DONE, UNTIL_CLOSE = range(8)

    def __init__(self, sse=False):
        self.buf = b""
        self.state = self.HEAD
        self.status = 0
        self.headers = {}
        self.body = bytearray()
        self.remaining = 0
        self.sse = sse
        self.events = []
        self.event_times = []
        self._sse_buf = b""
        self.first_byte = None

    def _payload(self, data, now):
        self.body += data
        if self.sse:
            buf = self._sse_buf + data
            start = 0
            while True:
                end = buf.find(b"\n\n", start)
                if end < 0:
                    break
                self.events.append(buf[start:end + 2])
                self.event_times.append(now)
                start = end + 2
            self._sse_buf = buf[start:]

    def feed(self, data, now=0.0):
        if self.first_byte is None:
            self.first_byte = now
        buf = self.buf + data if self.buf else data
        pos = 0
        while True:
            state = self.state
            if state == self.HEAD:
                end = buf.find(b"\r\n\r\n", pos)
                if end < 0:
                    if len(buf) - pos > 65536:
                        raise ProtocolError("response head too large")
                    break
                lines = buf[pos:end].decode("latin-1").split("\r\n")
                pos = end + 4
                parts = lines[0].split(" ", 2)
                if len(parts) < 2 or not parts[0].startswith("HTTP/"):
                    raise ProtocolError(f"bad status line {lines[0]!r}")
                self.status = int(parts[1])
                headers = self.headers
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    self.state = self.CHUNK_SIZE
                elif "content-length" in headers:
                    self.remaining = int(headers["content-length"])
                    self.state = self.LENGTH if self.remaining else self.DONE
                elif self.status in (204, 304) or 100 <= self.status < 200:
                    self.state = self.DONE
                else:
                    self.state = self.UNTIL_CLOSE
            elif state in (self.LENGTH, self.CHUNK_DATA):
                take = min(self.remaining, len(buf) - pos)
                if take <= 0:
                    break
                self._payload(buf[pos:pos + take], now)
                pos += take
                self.remaining -= take
                if not self.remaining:
                    self.state = self.DONE if state == self.LENGTH else self.CHUNK_END
            elif state == self.CHUNK_SIZE:
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    break
                size_text = buf[pos:end].split(b";", 1)[0].strip()
                pos = end + 2
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size {size_text!r}") from None
                if size:
                    self.remaining = size
                    self.state = self.CHUNK_DATA
                else:
                    self.state = self.TRAILER
            elif state == self.CHUNK_END:
                if len(buf) - pos < 2:
                    break
                if buf[pos:pos + 2] != b"\r\n":
                    raise ProtocolError("chunk not followed by CRLF")
                pos += 2
                self.state = self.CHUNK_SIZE
            elif state == self.TRAILER:
                end = buf.find(b"\r\n", pos)
                if end < 0:
                    break
                empty = end == pos
                pos = end + 2
                if empty:
                    self.state = self.DONE
            elif state == self.UNTIL_CLOSE:
                if pos < len(buf):
                    self._payload(buf[pos:], now)
                pos = len(buf)
                break
            else:  # DONE
                break
        self.buf = buf[pos:]
        return self.state == self.DONE

    def eof(self, now=0.0):
        """The connection closed; True if that completes the response."""
        if self.state == self.UNTIL_CLOSE:
            self.state = self.DONE
        return self.state == self.DONE

    @property
    def done(self):
        return self.state == self.DONE

    @property
    def keep_alive(self):
        return self.headers.get("connection", "").lower() != "close"
