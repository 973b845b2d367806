"""Relaying a provider's answer to the client as it arrives.

The commit point: nothing reaches the client until the proxy has chosen the
provider that answers.  For a stream that means the first complete SSE event
has arrived (an ``event: error`` there is a failover trigger, like a 529).
After the first byte has gone to the client the provider is never switched:
if it dies mid-stream, the client gets one ``event: error`` frame in
Anthropic's format and a cleanly ended response; no ``message_stop`` is
invented.

Bytes are passed through exactly as the provider sent them, forwarded at
event boundaries: a read that ends inside an event holds back only that
unfinished event, so every complete event reaches the client at once and a
cut never leaves half an event in front of the error frame.
"""

import json
import logging

from .errors import UpstreamError

log = logging.getLogger(__name__)

# SSE events end with a blank line; providers use LF, CRLF is tolerated.
_BOUNDARIES = (b"\n\n", b"\r\n\r\n")
USAGE_JSON_LIMIT = 8 * 1024 * 1024
FIRST_EVENT_LIMIT = 1024 * 1024


class ClientGone(Exception):
    """The client closed its connection while the answer was being written."""


def is_event_stream(response):
    """A 200 answer that streams server-sent events."""
    content_type = response.header("content-type") or ""
    return response.status == 200 and content_type.lower().startswith("text/event-stream")


def read_first_event(response):
    """Read until the first complete SSE event has arrived (or the body ends).

    Returns everything read, which may run past that event.  This is the
    commit point's wait: an error here is still the provider's to fail over from.
    """
    buffer = b""
    while not event_boundary(buffer) and len(buffer) <= FIRST_EVENT_LIMIT:
        data = response.read1()
        if not data:
            break
        buffer += data
    return buffer


def event_boundary(buffer):
    """Index just past the last complete event in ``buffer`` (0 if none)."""
    end = 0
    for marker in _BOUNDARIES:
        at = buffer.rfind(marker)
        if at >= 0:
            end = max(end, at + len(marker))
    return end


def split_events(data):
    """The complete events in ``data`` (which ends at an event boundary)."""
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    return [event for event in data.split(b"\n\n") if event.strip()]


def event_name_and_data(event):
    """``(event name, data string)`` of one SSE event, per the SSE line rules."""
    name, data = None, []
    for line in event.split(b"\n"):
        if line.startswith(b"event:"):
            name = line[6:].strip().decode("utf-8", "replace")
        elif line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
    return name, b"\n".join(data).decode("utf-8", "replace")


def first_event_error(buffer):
    """The error type if the stream's first event is ``event: error``, else None."""
    events = split_events(buffer[: event_boundary(buffer)])
    if not events:
        return None
    name, data = event_name_and_data(events[0])
    if name != "error":
        return None
    try:
        return json.loads(data)["error"]["type"]
    except (ValueError, KeyError, TypeError):
        return "error"


def error_frame(error_type, message):
    body = json.dumps({"type": "error", "error": {"type": error_type, "message": message}})
    return f"event: error\ndata: {body}\n\n".encode("utf-8")


class Usage:
    """Token counts read from ``message_start``/``message_delta`` or a JSON answer."""

    FIELDS = {
        "input_tokens": "input_tokens",
        "output_tokens": "output_tokens",
        "cache_read_input_tokens": "cache_read_tokens",
        "cache_creation_input_tokens": "cache_creation_tokens",
    }

    def __init__(self):
        self.input_tokens = self.output_tokens = 0
        self.cache_read_tokens = self.cache_creation_tokens = 0

    def update(self, usage):
        """Take the figures in an Anthropic ``usage`` object (later ones win: they are cumulative)."""
        if not isinstance(usage, dict):
            return
        for key, attr in self.FIELDS.items():
            value = usage.get(key)
            if isinstance(value, int):
                setattr(self, attr, value)

    def feed_events(self, data):
        for event in split_events(data):
            head = event[:40]
            if b"message_start" not in head and b"message_delta" not in head:
                continue
            name, payload = event_name_and_data(event)
            try:
                message = json.loads(payload)
            except ValueError:
                continue
            if name == "message_start":
                self.update((message.get("message") or {}).get("usage"))
            elif name == "message_delta":
                self.update(message.get("usage"))

    def feed_json(self, body):
        try:
            message = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return
        if isinstance(message, dict):
            self.update(message.get("usage"))

    def __str__(self):
        text = f"in={self.input_tokens} out={self.output_tokens}"
        if self.cache_read_tokens or self.cache_creation_tokens:
            text += f" cache_read={self.cache_read_tokens} cache_write={self.cache_creation_tokens}"
        return text


class ClientWriter:
    """Writes a response body to the client: chunked, or raw when the length is known."""

    def __init__(self, wfile, chunked):
        self._wfile = wfile
        self.chunked = chunked
        self.bytes_sent = 0

    def write(self, data):
        if not data:
            return
        try:
            if self.chunked:
                self._wfile.write(b"%x\r\n%b\r\n" % (len(data), data))
            else:
                self._wfile.write(data)
        except OSError as exc:  # reset, broken pipe or a write timeout: the client is gone
            raise ClientGone(str(exc)) from None
        self.bytes_sent += len(data)

    def end(self):
        if self.chunked:
            try:
                self._wfile.write(b"0\r\n\r\n")
            except OSError as exc:
                raise ClientGone(str(exc)) from None


def relay_stream(response, writer, first, usage, cancel):
    """Relay an SSE answer whose start (``first``, one or more whole events
    plus possibly a partial one) has already been read.

    Returns None when the stream ended, or a short description of how it
    failed; in that case an ``event: error`` frame has been written.
    Raises :class:`ClientGone` if the client disconnects.
    """
    pending = first
    finished = False  # a message_stop or error event has gone out
    while True:
        cut = event_boundary(pending)
        if cut:
            ready, pending = pending[:cut], pending[cut:]
            usage.feed_events(ready)  # first: tokens announced are spent even if the client left
            writer.write(ready)
            finished = finished or b"event: message_stop" in ready or b"event: error" in ready
        try:
            data = response.read1()
        except UpstreamError as exc:
            if cancel.is_set():
                raise ClientGone("client went away") from None
            return _end_with_error(writer, exc.provider, exc.kind,
                                   "timeout_error" if exc.kind == "timeout" else "api_error")
        if not data:
            if cancel.is_set():
                raise ClientGone("client went away")
            if response.ends_at_close and not finished:
                # Without framing, a closed connection is all a cut looks like.
                return _end_with_error(writer, response.provider.name, "closed", "api_error")
            writer.write(pending)  # a final event without its blank line, as sent
            writer.end()
            return None
        pending += data


def _end_with_error(writer, provider, kind, error_type):
    writer.write(error_frame(
        error_type, f"The provider {provider} failed mid-stream ({kind}); the answer is incomplete."))
    writer.end()
    return f"cut mid-stream ({kind})"


def relay_body(response, writer, usage, cancel, collect_usage):
    """Relay a non-stream body as it arrives.  Returns None, or how it failed."""
    kept, kept_size = [], 0
    while True:
        try:
            data = response.read1()
        except UpstreamError as exc:
            if cancel.is_set():
                raise ClientGone("client went away") from None
            return f"cut ({exc.kind})"
        if not data:
            break
        writer.write(data)
        if collect_usage and kept_size < USAGE_JSON_LIMIT:
            kept.append(data)
            kept_size += len(data)
    writer.end()
    if collect_usage and kept_size < USAGE_JSON_LIMIT:
        usage.feed_json(b"".join(kept))
    return None
