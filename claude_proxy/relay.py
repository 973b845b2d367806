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
from .signatures import signatures_in_events, signatures_in_message
from .sse import EventBuffer, error_frame, event_name_and_data, split_events

log = logging.getLogger(__name__)

USAGE_JSON_LIMIT = 8 * 1024 * 1024
#: What is held while waiting for an event to end.  Before the commit point a
#: first event longer than this is the provider's failure; after it, what is
#: held is relayed as it is (a provider that stopped separating its events).
MAX_EVENT_BYTES = 1024 * 1024


class ClientGone(Exception):
    """The client closed its connection while the answer was being written."""


def is_event_stream(response):
    """A 200 answer that streams server-sent events."""
    content_type = response.header("content-type") or ""
    return response.status == 200 and content_type.lower().startswith("text/event-stream")


def read_first_event(response):
    """Read until the first complete SSE event has arrived (or the body ends).

    Returns everything read, which may run past that event.  This is the
    commit point's wait: an error here is still the provider's to fail over
    from, and so is a first event that does not end within ``MAX_EVENT_BYTES``.
    """
    events = EventBuffer()
    while not events.has_event():
        if events.size > MAX_EVENT_BYTES:
            response.close()
            raise UpstreamError(response.provider.name, "protocol",
                                f"no event boundary in the first {MAX_EVENT_BYTES // 1024} KiB of the stream")
        data = response.read1()
        if not data:
            break
        events.feed(data)
    return events.take_all()


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
        self.signatures = []  # of the thinking blocks in the answer (see signatures.py)

    def update(self, usage):
        """Take the figures in an Anthropic ``usage`` object (later ones win: they are cumulative)."""
        if not isinstance(usage, dict):
            return
        for key, attr in self.FIELDS.items():
            value = usage.get(key)
            if isinstance(value, int):
                setattr(self, attr, value)

    def feed_events(self, data):
        self.signatures.extend(signatures_in_events(data))
        if b"message_start" not in data and b"message_delta" not in data:
            return  # most events of a stream: text and tool deltas, no usage
        for event in split_events(data):
            head = event[:40]
            if b"message_start" not in head and b"message_delta" not in head:
                continue
            name, payload = event_name_and_data(event)
            try:
                message = json.loads(payload)
            except ValueError:  # not JSON: no usage to read in it
                continue
            if name == "message_start":
                self.update((message.get("message") or {}).get("usage"))
            elif name == "message_delta":
                self.update(message.get("usage"))

    def feed_json(self, body):
        self.signatures.extend(signatures_in_message(body))
        try:
            message = json.loads(body)
        except (ValueError, UnicodeDecodeError):  # not JSON: no usage to read in it
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
    events = EventBuffer()
    events.feed(first)
    finished = False  # a message_stop or error event has gone out
    while True:
        ready = events.take_events()
        if not ready and events.size > MAX_EVENT_BYTES:
            ready = events.take_all()  # no boundary in sight: relay what is held, as it is
        if ready:
            usage.feed_events(ready)  # first: tokens announced are spent even if the client left
            writer.write(ready)
            finished = finished or b"event: message_stop" in ready or b"event: error" in ready
        try:
            data = response.read1()
        except UpstreamError as exc:
            if cancel.is_set():
                raise ClientGone("client went away") from None
            if cancel.aborted:
                return _end_with_error(writer, SHUTTING_DOWN, "shutdown")
            return _end_with_error(writer, _provider_failed(exc.provider, exc.kind), exc.kind,
                                   "timeout_error" if exc.kind == "timeout" else "api_error")
        if not data:
            if cancel.is_set():
                raise ClientGone("client went away")
            if cancel.aborted and not finished:
                return _end_with_error(writer, SHUTTING_DOWN, "shutdown")
            if response.ends_at_close and not finished:
                # Without framing, a closed connection is all a cut looks like.
                return _end_with_error(writer, _provider_failed(response.provider.name, "closed"), "closed")
            writer.write(events.take_all())  # a final event without its blank line, as sent
            writer.end()
            return None
        events.feed(data)


SHUTTING_DOWN = "claude-proxy is shutting down; the answer is incomplete."


def _provider_failed(provider, kind):
    return f"The provider {provider} failed mid-stream ({kind}); the answer is incomplete."


def _end_with_error(writer, message, kind, error_type="api_error"):
    writer.write(error_frame(error_type, message))
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
