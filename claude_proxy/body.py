"""Reading a client's request: the body (``Content-Length`` or chunked)
within a size limit, and the whole request within a time limit.

A body over the limit is refused by its announced size, before it is read
(a chunked one chunk by chunk); :func:`drain` then reads and drops what the
client is still sending, within a bound, so that it can read the 413
instead of a reset.  :class:`ClientReader` bounds the time a request may
take to arrive, however slowly it trickles in.
"""

import time

from .socket_timeouts import TimedSocketIO, set_read_timeout

DRAIN_LIMIT = 64 * 1024 * 1024  # what is read (and dropped) of an oversized body before closing
DRAIN_SECONDS = 5.0


class ReceiveTimeout(TimeoutError):
    """The request did not arrive whole within the receive time limit."""


class ClientReader(TimedSocketIO):
    """The reads of one client connection, on two clocks.

    Between requests each read may wait ``idle`` seconds (the keep-alive
    idle timeout, the socket's own timeout).  Once a request's first byte
    has arrived, all of its head and body must arrive within ``limit``
    seconds, however it trickles: a byte every few seconds keeps every read
    within the idle timeout, and would otherwise hold a thread forever
    (slowloris).  Past the limit a read raises :class:`ReceiveTimeout` (a
    ``TimeoutError``, which ``http.server`` answers by closing the
    connection).  :meth:`request_received` stops the clock.
    """

    def __init__(self, sock, idle, limit):
        super().__init__(sock, "rb")
        self._idle = idle
        self._limit = limit
        self._deadline = None
        self._shortened = False  # the socket's timeout is below ``idle`` (a request's clock runs)

    def readinto(self, buffer):
        if self._deadline is None:  # waiting for a request: the idle timeout applies
            count = super().readinto(buffer)
            if count:
                self._deadline = time.monotonic() + self._limit
            return count
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise ReceiveTimeout(f"the request did not arrive within {self._limit:g}s")
        set_read_timeout(self._sock, min(self._idle, left))
        self._shortened = True
        try:
            return super().readinto(buffer)
        except TimeoutError:  # one read timed out: fatal only past the whole request's deadline
            if time.monotonic() >= self._deadline:
                raise ReceiveTimeout(f"the request did not arrive within {self._limit:g}s") from None
            raise

    def request_received(self):
        """The request is in (or refused): reads wait for the next one, idle timeout only.

        The socket's timeout is set back only if a read shortened it: a
        request that arrived in one read costs no system call here."""
        self._deadline = None
        if self._shortened:
            self._shortened = False
            set_read_timeout(self._sock, self._idle)


class TooLarge(Exception):
    """The request body is over the limit; ``remaining`` is its announced length, if any."""

    def __init__(self, remaining):
        super().__init__(remaining)
        self.remaining = remaining


class MalformedBody(ValueError):
    """The body's framing cannot be read (a bad length or chunk); the text says how."""


def read_body(rfile, headers, limit):
    """The request body, or None if the client left before sending all of it.

    Raises :class:`TooLarge` or :class:`MalformedBody`.
    """
    if is_chunked(headers):
        return b"".join(_chunks(rfile, limit))
    length = content_length(headers)
    if length > limit:
        raise TooLarge(length)
    body = rfile.read(length) if length else b""
    return body if len(body) == length else None


def is_chunked(headers):
    return "chunked" in headers.get("transfer-encoding", "").lower()


def content_length(headers):
    value = headers.get("content-length", "0")
    if not value.strip().isdigit():
        raise MalformedBody(f"invalid Content-Length {value!r}")
    return int(value)


def _chunks(rfile, limit):
    """Decode a chunked body (RFC 9112 section 7.1)."""
    left = limit
    while True:
        line = rfile.readline(1024)
        if not line.endswith(b"\n"):
            raise MalformedBody("truncated chunk size line")
        size_text = line.split(b";", 1)[0].strip()
        if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
            raise MalformedBody(f"bad chunk size {size_text[:20]!r}")
        size = int(size_text, 16)
        if size > left:
            raise TooLarge(None)
        if size == 0:
            while rfile.readline(8192).strip():  # trailers
                pass
            return
        data = rfile.read(size)
        if len(data) != size or rfile.read(2) != b"\r\n":
            raise MalformedBody("truncated chunk")
        left -= size
        yield data


def drain(rfile, sock, remaining):
    """Read and drop what is left of a refused body, within a bound.

    ``remaining`` is the announced length, or None for a chunked body.
    """
    deadline = time.monotonic() + DRAIN_SECONDS
    budget = DRAIN_LIMIT if remaining is None else min(remaining, DRAIN_LIMIT)
    try:
        sock.settimeout(1.0)
        while budget > 0 and time.monotonic() < deadline:
            data = rfile.read1(min(budget, 65536))
            if not data:
                break
            budget -= len(data)
            if remaining is None and data.endswith(b"0\r\n\r\n"):
                break
    except OSError:  # the client stopped sending or left: nothing more to drain
        pass
