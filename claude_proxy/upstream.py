"""Connections to the providers: pooled, kept alive, and the only place that
touches their sockets.

Every low-level failure on the provider side (``OSError``, TLS errors,
timeouts, ``http.client.HTTPException``) is wrapped here, once, into an
:class:`UpstreamError`; the failover policy decides what to do with it.  A
connection that saw an error is closed, never returned to its pool.

A pooled connection the provider closed while it sat idle is retried once on
a fresh connection before anything counts as the provider's failure, so a
stale socket never causes a failover.
"""

import collections
import http.client
import json
import logging
import re
import select
import socket
import ssl
import threading
import time

from .errors import UpstreamError
from .head import read_head, read_header_lines
from .headers import REPLACED_REQUEST_HEADERS
from .sending import send_all
from .socket_timeouts import reader, set_timeout

log = logging.getLogger(__name__)

_FOLD = re.compile(r"\r?\n[ \t]+")
_UNSENDABLE = re.compile(r"[\r\n\0]")

MAX_IDLE_PER_PROVIDER = 256  # as many as sessions usually stream at once
IDLE_TTL = 50.0  # seconds; most servers drop idle keep-alive connections after 60 s
RECENT = 1.0     # seconds; a connection idle for less is reused without a liveness poll
                 # (if the provider did close it, the stale-connection retry covers it)
READ_SIZE = 64 * 1024


def upstream_headers(provider, client_headers, body_length, key=None):
    """The headers sent to ``provider``: the client's, minus its credentials
    and hop-by-hop headers, plus the provider's key and configured headers."""
    dropped = REPLACED_REQUEST_HEADERS | provider.header_names
    for name, value in client_headers:
        if name.lower() == "connection":
            dropped = dropped | {t.strip().lower() for t in value.split(",")}
    headers = []
    for name, value in client_headers:
        if name.lower() in dropped:
            continue
        if _UNSENDABLE.search(value):
            # A folded line (obsolete, RFC 9112 5.2) is unfolded; anything else cannot be sent.
            value = _FOLD.sub(" ", value)
            if _UNSENDABLE.search(value):
                continue
        headers.append((name, value))
    headers.extend(provider.headers.items())
    headers.append(("Host", provider.netloc))
    headers.append(("Accept-Encoding", "identity"))
    headers.extend(key_headers(provider, key))
    if body_length is not None:
        headers.append(("Content-Length", str(body_length)))
    return headers


def key_headers(provider, key=None):
    """The headers that carry ``key`` (default: ``provider``'s first key), as its
    ``auth_header`` says.

    A configured header of the same name (``headers`` in the config) is
    sent instead of the one made from the key.
    """
    key = key or provider.api_key
    wanted = provider.auth_header
    if wanted == "both":
        pairs = [("x-api-key", key), ("Authorization", f"Bearer {key}")]
    elif wanted == "bearer":
        pairs = [("Authorization", f"Bearer {key}")]
    else:  # "x-api-key", or the name of a header that carries the key as it is (Azure: api-key)
        pairs = [(wanted, key)]
    return [(name, value) for name, value in pairs if name.lower() not in provider.header_names]


def rewrite_model(body, provider, target=None):
    """``body`` with its top-level ``"model"`` mapped for ``provider`` (or set to ``target``).

    Only the model's string is replaced; every other byte of the JSON stays
    as the client sent it (field order, spacing, escapes, numbers).  Bodies
    that are not a JSON object with a string model pass through untouched.
    """
    if not provider.models or not body:
        return body
    span = _top_level_string(body, "model")
    if span is None:
        return body
    text, start, end, model = span
    mapped = provider.map_model(model) if target is None else target
    if mapped == model:
        return body
    return (text[:start] + json.dumps(mapped, ensure_ascii=False) + text[end:]).encode("utf-8")


_MODEL_FIRST = re.compile(rb'\s*\{\s*"model"\s*:\s*"([^"\\]{0,200})"')
MODEL_FIRST_SCAN = 512  # bytes of the body looked at by model_first


def model_first(body):
    """The model of a JSON request body that names it first, without escapes (Claude
    Code's, and the common case), found in the first bytes only; else None."""
    match = _MODEL_FIRST.match(body, 0, MODEL_FIRST_SCAN) if body else None
    return match.group(1).decode("utf-8", "replace") if match else None


def requested_model(body):
    """The top-level ``"model"`` of a JSON request body, or None."""
    span = _top_level_string(body, "model") if body else None
    return span[3] if span else None


_decoder = json.JSONDecoder()
_WHITESPACE = " \t\r\n"


def _top_level_string(body, wanted):
    """Locate the first top-level ``wanted`` key with a string value.

    Returns ``(text, start, end, value)`` with the value's span in ``text``,
    or None.  Values before it are skipped with the C scanner, so the common
    case (``model`` first) costs almost nothing.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:  # not UTF-8 JSON: sent untouched
        return None
    n = len(text)

    def skip(i):
        while i < n and text[i] in _WHITESPACE:
            i += 1
        return i

    i = skip(0)
    if i >= n or text[i] != "{":
        return None
    i += 1
    try:
        while True:
            i = skip(i)
            if i < n and text[i] == "}":
                return None
            key, i = _decoder.raw_decode(text, i)
            i = skip(i)
            if i >= n or text[i] != ":" or not isinstance(key, str):
                return None
            i = skip(i + 1)
            value, end = _decoder.raw_decode(text, i)
            if key == wanted and isinstance(value, str):
                return text, i, end, value
            i = skip(end)
            if i < n and text[i] == ",":
                i += 1
            else:
                return None
    except (json.JSONDecodeError, IndexError):  # not a JSON object: sent untouched
        return None


def wrap_error(provider, exc):
    """Turn a low-level exception into an :class:`UpstreamError` with a short kind."""
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, (TimeoutError, socket.timeout)):
        kind = "timeout"
    elif isinstance(exc, ConnectionRefusedError):
        kind = "refused"
    elif isinstance(exc, socket.gaierror):
        kind = "dns"
    elif isinstance(exc, (ConnectionError, http.client.IncompleteRead, ssl.SSLEOFError)):
        kind = "reset"
    elif isinstance(exc, ssl.SSLError):
        kind = "tls"
    elif isinstance(exc, http.client.HTTPException):
        kind = "protocol"
    elif isinstance(exc, ValueError):
        kind = "request"
    else:
        kind = "network"
    detail = provider.redact(str(exc) or type(exc).__name__)
    return UpstreamError(provider.name, kind, detail)


# Failures that, on a reused connection, mean "the provider closed it while idle".
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
          ConnectionAbortedError, http.client.BadStatusLine, ssl.SSLEOFError)


class _OneWrite:
    """``http.client``'s connection, cheaper per request.

    The request head and a small body go out in one write, not two (with
    Nagle off, two packets and two reads on the provider's side), in one
    system call where the socket takes it (:func:`sending.send_all`), and the
    headers are added in one step: ``upstream_headers`` and the config
    loader already guarantee what ``putheader`` checks one header at a time
    with two regular expressions.
    """

    ONE_WRITE_LIMIT = 1024 * 1024

    def put_headers(self, headers):
        self._buffer.extend(f"{name}: {value}".encode("latin-1") for name, value in headers)

    def send(self, data):
        if self.sock is not None and isinstance(data, bytes):
            send_all(self.sock, data)
        else:  # not connected yet (http.client connects or refuses), or a file or an iterable
            super().send(data)

    def _send_output(self, message_body=None, encode_chunked=False):
        if isinstance(message_body, bytes) and len(message_body) <= self.ONE_WRITE_LIMIT:
            self._buffer.extend((b"", message_body))  # joined with CRLF: the blank line, then the body
            message = b"\r\n".join(self._buffer)
            del self._buffer[:]
            self.send(message)
            return
        super()._send_output(message_body, encode_chunked)


MAX_INTERIM_HEADER_LINES = 100


class _Readable:
    """What ``HTTPResponse`` is given for a socket: it only asks it for ``makefile``,
    answered with a reader that keeps the socket's timeout however it is kept
    (:mod:`socket_timeouts`)."""

    def __init__(self, sock):
        self._sock = sock

    def makefile(self, mode):
        return reader(self._sock)


class _Response(http.client.HTTPResponse):
    """``http.client``'s response, skipping every interim (1xx) answer, its
    headers parsed without ``email`` when they are plain (:mod:`head`).

    ``http.client`` skips only ``100 Continue``; a ``102 Processing`` or
    ``103 Early Hints`` would be taken as the final answer, and the real one
    would stay in the socket for the next request on the pooled connection
    (RFC 9110 section 15.2: a client must be able to parse one or more 1xx
    responses before the final one).  ``101 Switching Protocols`` is final.
    """

    def __init__(self, sock, debuglevel=0, method=None, url=None):
        super().__init__(_Readable(sock), debuglevel, method, url)

    def _read_status(self):
        while True:
            version, status, reason = super()._read_status()
            if not 102 <= status < 200:  # 100 is skipped by begin(); 101 and 2xx+ are final
                return version, status, reason
            for _ in range(MAX_INTERIM_HEADER_LINES):  # the interim answer's headers, up to its blank line
                line = self.fp.readline(http.client._MAXLINE + 1)
                if line in (b"\r\n", b"\n", b""):
                    break
            else:
                raise http.client.HTTPException("too many headers in an interim (1xx) answer")

    def begin(self):
        """``HTTPResponse.begin`` (the same in Python 3.10 to 3.13), with the
        headers read by :func:`head.read_head`: the same message, made cheaper."""
        if self.headers is not None:  # already started reading the response
            return
        while True:  # read until a non-100 answer
            version, status, reason = self._read_status()
            if status != http.client.CONTINUE:
                break
            read_header_lines(self.fp)  # the 100 answer's headers, skipped
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):  # some servers say "0.9": taken as 1.0
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11  # HTTP/1.1 for HTTP/1.x, x >= 1
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = read_head(self.fp)[0]
        tr_enc = self.headers.get("transfer-encoding")
        if tr_enc and tr_enc.lower() == "chunked":
            self.chunked = True
            self.chunk_left = None
        else:
            self.chunked = False
        self.will_close = self._check_close()
        self.length = None
        length = self.headers.get("content-length")
        if length and not self.chunked:  # RFC 9112 section 6.3: chunked wins over a length
            try:
                self.length = int(length)
            except ValueError:
                self.length = None
            else:
                if self.length < 0:  # a nonsensical negative length is ignored
                    self.length = None
        if status in (http.client.NO_CONTENT, http.client.NOT_MODIFIED) or 100 <= status < 200 \
                or self._method == "HEAD":
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True  # no framing: the body ends when the connection closes


class _HTTPConnection(_OneWrite, http.client.HTTPConnection):
    response_class = _Response


class _HTTPSConnection(_OneWrite, http.client.HTTPSConnection):
    response_class = _Response


class ProviderPool:
    """Idle keep-alive connections to one provider."""

    def __init__(self, provider, ssl_context):
        self.provider = provider
        self._ssl_context = ssl_context
        self._idle = collections.deque()  # (connection, time it was returned)
        self._lock = threading.Lock()
        self._closed = False  # retired by a reload (or the server closed): keep nothing

    def reaches(self, provider):
        """Are this pool's connections good for ``provider`` (same address and timeouts)?"""
        return _transport(self.provider) == _transport(provider)

    def acquire(self, fresh=False):
        """Return ``(connection, reused)``; a fresh one is already connected."""
        now = time.monotonic()
        while not fresh:
            with self._lock:
                if not self._idle:
                    break
                conn, since = self._idle.pop()
            idle = now - since
            if conn.sock is not None and (idle < RECENT or (idle < IDLE_TTL and _looks_alive(conn))):
                return conn, True
            conn.close()
        return self._connect(), False

    def release(self, conn):
        now = time.monotonic()
        expired = []
        with self._lock:
            # The oldest are on the left; after a burst they would otherwise
            # sit there (closed by the provider, a file descriptor each) until popped.
            while self._idle and now - self._idle[0][1] >= IDLE_TTL:
                expired.append(self._idle.popleft()[0])
            if not self._closed and len(self._idle) < MAX_IDLE_PER_PROVIDER:
                self._idle.append((conn, now))
                conn = None
        for old in expired:
            old.close()
        if conn is not None:
            conn.close()

    def close(self):
        """Close the idle connections now, and each one in use when it is given back."""
        with self._lock:
            self._closed = True
            idle, self._idle = list(self._idle), collections.deque()
        for conn, _ in idle:
            conn.close()

    def _connect(self):
        p = self.provider
        if p.scheme == "https":
            conn = _HTTPSConnection(p.host, p.port, timeout=p.connect_timeout, context=self._ssl_context)
        else:
            conn = _HTTPConnection(p.host, p.port, timeout=p.connect_timeout)
        try:
            conn.connect()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise wrap_error(p, exc) from None
        set_timeout(conn.sock, p.read_timeout)
        return conn


def _transport(provider):
    return (provider.scheme, provider.host, provider.port, provider.connect_timeout, provider.read_timeout)


def _looks_alive(conn):
    """An idle connection must have nothing to read: data or EOF means it is done."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        if hasattr(select, "poll"):  # select() cannot take descriptors >= 1024
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return not poller.poll(0)
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):  # closed under us
        return False
    return not readable


class Upstreams:
    """One pool per provider and one shared TLS context."""

    def __init__(self, providers, ssl_context=None, pools=None):
        self.ssl_context = ssl_context or ssl.create_default_context()
        self._pools = {p.name: (pools or {}).get(p.name) or ProviderPool(p, self.ssl_context)
                       for p in providers}

    def close(self):
        for pool in self._pools.values():
            pool.close()

    def reconfigured(self, providers):
        """The pools for ``providers`` (a reload): a provider reached the same way as
        before keeps its pool and its idle connections.  Returns ``(upstreams,
        retired)``: ``retired`` are the pools of providers removed or now reached
        differently, for the caller to close (a connection in use is closed when it is
        given back)."""
        kept = {p.name: self._pools[p.name] for p in providers
                if p.name in self._pools and self._pools[p.name].reaches(p)}
        kept_ids = {id(pool) for pool in kept.values()}
        retired = [pool for pool in self._pools.values() if id(pool) not in kept_ids]
        return Upstreams(providers, self.ssl_context, kept), retired

    def send(self, provider, method, target, headers, body, cancel=None):
        """Send one request and return the provider's :class:`UpstreamResponse`.

        Raises :class:`UpstreamError` when the provider cannot be reached or
        does not answer within its ``read_timeout``.  ``cancel`` (a
        :class:`relay.Cancel`) is told the socket so a client hang-up can
        abort the wait.
        """
        pool = self._pools[provider.name]
        for attempt in (1, 2):
            conn, reused = pool.acquire(fresh=attempt == 2)
            if cancel is not None and not cancel.attach(conn.sock):
                conn.close()
                raise UpstreamError(provider.name, "cancelled", "client went away")
            try:
                conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
                conn.put_headers(headers)
                conn.endheaders(body if body else None)
                response = conn.getresponse()
            except (OSError, http.client.HTTPException, ValueError) as exc:
                # ValueError: a request line or header http.client cannot send (e.g. a host
                # name that is not ASCII); the handler and the config loader rule out the rest.
                conn.close()
                if reused and attempt == 1 and isinstance(exc, _STALE) \
                        and not (cancel and cancel.is_set()):
                    log.debug("%s: pooled connection was stale (%s); retrying on a fresh one",
                              provider.name, exc)
                    continue
                raise wrap_error(provider, exc) from None
            return UpstreamResponse(provider, pool, conn, response, cancel)
        raise AssertionError("unreachable")


class UpstreamResponse:
    """A provider's answer: status and headers now, the body as it arrives."""

    def __init__(self, provider, pool, conn, response, cancel=None):
        self.provider = provider
        self._cancel = cancel
        self.status = response.status
        self.reason = response.reason
        self.headers = list(response.msg.items())
        self._pool = pool
        self._conn = conn
        self._response = response
        self._done = False
        self.complete = False  # the whole body has been read (or there is none)

    def header(self, name):
        return self._response.getheader(name)

    @property
    def content_length(self):
        """The body length the provider announced, or None (chunked / until close)."""
        if self._response.chunked:
            return None
        return self._response.length

    @property
    def ends_at_close(self):
        """The body has no framing: it ends when the provider closes the connection."""
        return not self._response.chunked and self._response.length is None

    def read1(self, size=READ_SIZE):
        """Whatever part of the body has arrived (one read); b"" at its end.

        Raises :class:`UpstreamError` if the provider fails or is silent for
        longer than its ``read_timeout``, or the body ends short.
        """
        if self._done:
            return b""
        try:
            data = self._response.read1(size)
            if not data and self._response.length:
                raise http.client.IncompleteRead(b"", self._response.length)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            # ValueError: http.client read from a connection closed under it (cancel).
            self.close()
            raise wrap_error(self.provider, exc) from None
        if not data or self._response.length == 0:
            self._finish()
        return data

    def read_all(self, limit):
        """The whole body, up to ``limit`` bytes (the rest is dropped with the connection)."""
        parts, size = [], 0
        while size < limit:
            data = self.read1(min(READ_SIZE, limit - size))
            if not data:
                break
            parts.append(data)
            size += len(data)
        if not self._done:
            self.close()
        return b"".join(parts)

    def _finish(self):
        """The body is fully read: return the connection to the pool if it may be reused."""
        self._done = self.complete = True
        response = self._response
        if response.will_close or self.status < 200:
            # A 101 hands the connection over to another protocol: never reuse it.
            self._conn.close()
            return
        response.read()  # closes the response object itself; the socket stays open
        if self._cancel is not None:
            self._cancel.detach()  # a late client hang-up must not touch a pooled socket
        self._pool.release(self._conn)

    def close(self):
        """Drop the connection (the answer was not read to its end, or failed).

        A complete answer's connection is back in the pool, perhaps already
        serving another request: it is no longer this answer's to close.
        """
        if self.complete:
            return
        self._done = True
        self._response.close()
        self._conn.close()
