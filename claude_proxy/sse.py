"""Server-sent events as they come off a provider's socket.

An event ends with a blank line.  The SSE spec (HTML Living Standard,
"Parsing an event stream") allows three line endings, CRLF, LF and CR
alone, so a blank line is any two line endings in a row: ``\\n\\n``,
``\\r\\n\\r\\n``, ``\\r\\r``, ``\\n\\r\\n`` and the rest.  A CR followed by
LF is one line ending, never two.

:class:`EventBuffer` holds what has arrived and hands it out at event
boundaries, scanning each byte once: a provider that never sends a blank
line costs linear time, and :attr:`EventBuffer.size` lets the caller cap
what it holds.
"""

import json
import re

#: Two line endings in a row; a lone CR counts only when no LF follows it.
_BLANK_LINE = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r|\n)")
_OVERLAP = 3  # a blank line split across reads: rescan this much of what was scanned


class EventBuffer:
    """Bytes of a stream, handed out up to the last complete event."""

    def __init__(self):
        self._data = bytearray()
        self._boundary = 0  # just past the last blank line found so far
        self._scanned = 0   # no blank line ends before this index, after _boundary

    @property
    def size(self):
        return len(self._data)

    def feed(self, data):
        self._data += data

    def has_event(self):
        return self._scan() > 0

    def take_events(self):
        """Everything up to the end of the last complete event (b"" if none)."""
        end = self._scan()
        return self._take(end) if end else b""

    def take_all(self):
        """Everything held, complete events or not."""
        return self._take(len(self._data))

    def _scan(self):
        data = self._data
        start = max(self._boundary, self._scanned - _OVERLAP)
        if b"\r" not in data[start:]:  # the common case: LF only
            at = data.rfind(b"\n\n", start)
            if at >= 0:
                self._boundary = at + 2
        else:
            for match in _BLANK_LINE.finditer(data, start):
                self._boundary = match.end()
        self._scanned = len(data)
        return self._boundary

    def _take(self, end):
        taken = bytes(self._data[:end])
        del self._data[:end]
        self._boundary = self._scanned = 0
        return taken


def split_events(data):
    """The complete events in ``data`` (which ends at an event boundary), LF-separated."""
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return [event for event in data.split(b"\n\n") if event.strip()]


def event_name_and_data(event):
    """``(event name, data string)`` of one event from :func:`split_events`."""
    name, data = None, []
    for line in event.split(b"\n"):
        if line.startswith(b"event:"):
            name = line[6:].strip().decode("utf-8", "replace")
        elif line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
    return name, b"\n".join(data).decode("utf-8", "replace")


def first_event(data):
    """``(event name, data string)`` of the first complete event in ``data``, or None."""
    buffer = EventBuffer()
    buffer.feed(data)
    events = split_events(buffer.take_events())
    return event_name_and_data(events[0]) if events else None


def first_event_error(data):
    """The error type if the first complete event in ``data`` is ``event: error``, else None."""
    name, payload = first_event(data) or (None, None)
    if name != "error":
        return None
    try:
        return json.loads(payload)["error"]["type"]
    except (ValueError, KeyError, TypeError):  # an error event without Anthropic's shape
        return "error"


def frame(name, payload):
    """An ``event: NAME`` frame with ``payload`` as compact JSON (non-ASCII as UTF-8)."""
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"event: {name}\ndata: {data}\n\n".encode("utf-8")


def error_frame(error_type, message):
    """An ``event: error`` frame in Anthropic's shape."""
    body = json.dumps({"type": "error", "error": {"type": error_type, "message": message}})
    return f"event: error\ndata: {body}\n\n".encode("utf-8")
