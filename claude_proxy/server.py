"""The HTTP server clients talk to.

Routes:

- ``GET /health``                  liveness, no token
- ``GET /status``                  JSON state of the daemon and providers (token)
- ``POST /shutdown``               stop after in-flight requests, bounded (token)
- ``HEAD /``, ``HEAD /provider/X`` a client's connectivity check, answered here
- ``/provider/NAME/...``           pinned mode: that provider only
- anything else                    fallback mode: forwarded under each provider's base URL

Every error the proxy itself produces is JSON in Anthropic's error shape;
provider answers, errors included, are passed through byte for byte.
"""

import dataclasses
import hmac
import http.server
import json
import logging
import os
import re
import socket
import sys
import threading
import time
from urllib.parse import parse_qs

from . import __version__
from .config import http_url
from .errors import UpstreamError, UsageError, error_type
from .failover import FailoverPolicy, describe_error, retry_after_seconds
from .relay import (
    Cancel, ClientGone, ClientWriter, DisconnectWatcher, Usage, first_event_error,
    is_event_stream, read_first_event, relay_body, relay_stream,
)
from .state import read_token
from .upstream import HOP_BY_HOP, Upstreams, rewrite_model, upstream_headers

log = logging.getLogger("claude_proxy")

CLIENT_IDLE_TIMEOUT = 300.0     # seconds an idle keep-alive client may hold a thread
LISTEN_BACKLOG = 1024
ERROR_BODY_LIMIT = 1024 * 1024  # a failover answer's body is kept for the client up to this
WHOLE_BODY_LIMIT = 256 * 1024   # a non-stream body up to this is read whole before the commit point
CHUNKED = object()              # _send_head's framing: Transfer-Encoding: chunked
DRAIN_LIMIT = 64 * 1024 * 1024  # what is read (and dropped) of an oversized body before closing
DRAIN_SECONDS = 5.0
SHUTDOWN_GRACE = 10.0
PINNED_PREFIX = "/provider/"
_SENDABLE_TARGET = re.compile(r"[!-~]*\Z")  # printable ASCII: what a request line may carry


@dataclasses.dataclass
class Exchange:
    """One client request on its way through the providers; prints as its log line's start."""

    method: str
    path: str       # as the client sent it
    api_path: str   # what is appended to each provider's base URL
    mode: str       # "fallback", or the pinned provider's name
    body: bytes
    client_headers: list
    started: float
    cancel: Cancel = None
    first_byte: float = None
    tried: list = dataclasses.field(default_factory=list)

    def note(self, provider, outcome):
        self.tried.append(f"{provider.name}={outcome}")

    def elapsed(self):
        return time.monotonic() - self.started

    def __str__(self):
        return f"{self.method} {self.path} {self.mode} {' '.join(self.tried)}".rstrip()


@dataclasses.dataclass
class FailedAnswer:
    """A provider's failover answer (429, 5xx, an error as first event), kept whole."""

    status: int
    reason: str
    headers: list
    body: bytes


def reuse_address_allowed(os_name):
    """SO_REUSEADDR lets a restarted daemon rebind at once on POSIX; on Windows it
    would let a second daemon bind the same port silently, so it is never set there."""
    return os_name != "nt"


class ProxyServer(http.server.ThreadingHTTPServer):
    """The listening server; holds what every request shares."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG
    allow_reuse_address = reuse_address_allowed(os.name)

    def __init__(self, config, token, token_path=None):
        self.address_family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        self.config = config
        self.token = token
        self.token_path = token_path
        self._token_mtime = None
        self.policy = FailoverPolicy(config)
        self.upstreams = Upstreams(config.providers)
        self.watcher = DisconnectWatcher()
        self.started = time.time()
        self._active = 0
        self._active_cond = threading.Condition()
        self.grace = SHUTDOWN_GRACE
        self.stopping = False
        try:
            super().__init__((config.host, config.port), ProxyHandler)
        except OSError as exc:
            self.watcher.close()
            raise UsageError(_bind_error(config, exc)) from None

    def token_matches(self, offered):
        """Is one of the ``offered`` strings the client token?

        On a mismatch the token file is read again if it changed: it is what
        clients are given, so it wins over the token this server started with.
        """
        if self._matches(offered):
            return True
        if self.token_path is None:
            return False
        try:
            mtime = os.stat(self.token_path).st_mtime_ns
        except OSError:
            return False
        if mtime == self._token_mtime:
            return False
        self._token_mtime = mtime
        fresh = read_token(self.token_path)
        if not fresh or fresh == self.token:
            return False
        self.token = fresh
        log.info("the client token changed in %s; using it", self.token_path)
        return self._matches(offered)

    def _matches(self, offered):
        expected = (self.token or "").encode()
        return bool(expected) and any(hmac.compare_digest(v.encode(), expected) for v in offered)

    def server_bind(self):
        if os.name == "nt" and hasattr(socket, "SO_EXCLUSIVEADDRUSE"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
        super().server_bind()

    @property
    def port(self):
        return self.server_address[1]

    @property
    def url(self):
        return http_url(self.config.host, self.port)

    def request_started(self):
        with self._active_cond:
            self._active += 1

    def request_finished(self):
        with self._active_cond:
            self._active -= 1
            self._active_cond.notify_all()

    def wait_idle(self):
        """Wait up to ``self.grace`` seconds for in-flight requests; True if none are left.

        Waits in short slices, so that a second stop signal (grace 0) ends it at once.
        """
        started = time.monotonic()
        with self._active_cond:
            if self._active and self.grace:
                log.info("stopping: waiting up to %.0fs for %d request(s) in flight "
                         "(stop again to end them now)", self.grace, self._active)
            while self._active and time.monotonic() - started < self.grace:
                self._active_cond.wait(0.2)
            return self._active == 0

    def stop_soon(self, grace=None):
        """Stop serving from another thread (``shutdown()`` blocks until the loop exits)."""
        if grace is not None:
            self.grace = grace
        threading.Thread(target=self.shutdown, name="shutdown", daemon=True).start()

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (OSError, ClientGone)):  # routine: the client went away
            log.debug("connection from %s ended: %s", client_address[0], exc)
        else:
            log.exception("internal error while serving %s", client_address[0])

    def server_close(self):
        super().server_close()
        self.watcher.close()
        self.upstreams.close()


def printable(text):
    """``text`` for a log line: control characters escaped, so a request cannot forge lines."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _bind_error(config, exc):
    if getattr(exc, "errno", None) in (98, 48, 10048, 10013) or isinstance(exc, PermissionError):
        return (f"port {config.port} on {config.host} is already in use (another claude-proxy "
                f"or another program); stop it, or set \"proxy_port\" in {config.path}")
    return f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}"


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else each keep-alive response waits ~40 ms for an ACK
    timeout = CLIENT_IDLE_TIMEOUT
    server_version = f"claude-proxy/{__version__}"
    sys_version = ""

    # --- routing ------------------------------------------------------------

    def do_GET(self):
        self._route()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = do_GET

    def _route(self):
        path, _, query = self.path.partition("?")
        server = self.server
        if path == "/health" and self.command in ("GET", "HEAD"):
            return self._send_json(200, {"status": "ok", "version": __version__, "pid": os.getpid()})
        if path == "/status" and self.command == "GET":
            if self._authorized():
                self._send_json(200, self._status())
            return None
        if path == "/shutdown" and self.command == "POST":
            if self._authorized():
                self._shutdown(query)
            return None
        pinned = name = None
        api_path = self.path
        if path.startswith(PINNED_PREFIX):
            name, slash, rest = path[len(PINNED_PREFIX):].partition("/")
            pinned = server.config.provider(name)
            api_path = slash + rest + (f"?{query}" if query else "")
            path = slash + rest
        if self.command == "HEAD" and path in ("", "/") and (name is None or pinned is not None):
            return self._send_json(200, {"status": "ok"}, head=True)
        if not self._authorized():
            return None
        if not _SENDABLE_TARGET.match(api_path):
            return self._refuse(400, "The request path has characters that cannot be sent on; "
                                     "percent-encode them.")
        if name is not None and pinned is None:
            names = ", ".join(server.config.provider_names) or "none"
            return self._refuse(404, f"Unknown provider '{name}'. Configured providers: {names}.")
        server.request_started()
        try:
            self._forward(api_path or "/", pinned)
        finally:
            server.request_finished()
        return None

    def _authorized(self):
        """True if the request carries the client token (as x-api-key or bearer)."""
        if not self.server.config.require_token:
            return True
        scheme, _, credentials = self.headers.get("authorization", "").partition(" ")
        offered = [self.headers.get("x-api-key", ""),
                   credentials.strip() if scheme.lower() == "bearer" else ""]
        if self.server.token_matches(offered):
            return True
        self._refuse(401, "Missing or wrong claude-proxy token. Run `proxy.py env` (or claude-fb) "
                              "to set ANTHROPIC_AUTH_TOKEN for this session.")
        return False

    # --- the proxy ------------------------------------------------------------

    def _forward(self, api_path, pinned):
        """Try the providers in the policy's order until one answers (the commit
        point), then relay that answer; if none does, send the last failure."""
        started = time.monotonic()
        body = self._read_body()
        if body is None:
            return None
        ex = Exchange(self.command, self.path, api_path, pinned.name if pinned else "fallback",
                      body, list(self.headers.items()), started)
        plan = self.server.policy.plan(pinned)
        if not plan:
            return self._no_provider(pinned, ex)
        ex.cancel = self.server.watcher.watch(self.connection)
        try:
            failures = []
            for provider in plan:
                outcome = self._attempt(provider, ex)
                if isinstance(outcome, tuple):
                    return self._answer(provider, *outcome, ex)
                if ex.cancel.is_set():
                    self.close_connection = True
                    log.info("%s -> client cancelled before the answer", ex)
                    return None
                failures.append(outcome)
            return self._all_failed(failures, ex)
        finally:
            self.server.watcher.unwatch(self.connection)

    def _attempt(self, provider, ex):
        """Send the request to ``provider`` and wait for its answer to begin.

        Returns ``(response, first)`` if this provider answers, else the
        failure to fail over from: an :class:`UpstreamError` or a
        :class:`FailedAnswer`.  ``first`` is what was read before the commit
        point: a stream's first event, or a small body whole (up to
        ``WHOLE_BODY_LIMIT``, so it goes out in one write).  Failures are
        booked with the policy here.
        """
        policy = self.server.policy
        body = rewrite_model(ex.body, provider)
        length = len(body) if body or ex.method in ("POST", "PUT", "PATCH") else None
        headers = upstream_headers(provider, ex.client_headers, length)
        try:
            response = self.server.upstreams.send(
                provider, ex.method, provider.base_path + ex.api_path, headers, body, ex.cancel)
            if response.status in self.server.config.failover_statuses:
                return self._failover_answer(provider, response, ex)
            stream = is_event_stream(response)
            if stream:
                first = read_first_event(response)
            elif response.content_length is not None and response.content_length <= WHOLE_BODY_LIMIT:
                first = response.read_all(WHOLE_BODY_LIMIT)  # a cut body is still a failover
            else:
                first = b""
        except UpstreamError as exc:
            ex.note(provider, exc.kind)
            if not ex.cancel.is_set():  # a client hang-up is not the provider's fault
                policy.record_failure(provider, f"{exc.kind}: {exc.detail}")
            return exc
        failed = stream and first_event_error(first)
        if failed:
            response.close()
            ex.note(provider, f"stream-{failed}")
            policy.record_failure(provider, f"stream began with {failed}")
            return FailedAnswer(response.status, response.reason, response.headers, first)
        return response, first

    def _failover_answer(self, provider, response, ex):
        """Keep a 429/5xx answer whole, in case it is the last one (the client then gets it)."""
        try:
            body = response.read_all(ERROR_BODY_LIMIT)
        except UpstreamError as exc:  # its status is what matters; the body is a courtesy
            log.debug("%s: error body unreadable: %s", provider.name, exc)
            body = b""
        ex.note(provider, response.status)
        self.server.policy.record_failure(provider, describe_error(response.status, body),
                                          retry_after_seconds(response.headers))
        return FailedAnswer(response.status, response.reason, response.headers, body)

    def _answer(self, provider, response, first, ex):
        """Past the commit point: relay ``provider``'s answer to the client and book it."""
        ex.note(provider, response.status)
        usage = Usage()
        failure = None
        stream = is_event_stream(response)
        json_body = (response.header("content-type") or "").startswith("application/json")
        try:
            if response.complete:  # read whole before the commit point (or it has no body)
                if stream:  # a short stream with a Content-Length, all there in one read
                    usage.feed_events(first)
                elif json_body:
                    usage.feed_json(first)
                self._send_head(response.status, response.reason, response.headers,
                                self._whole_body_framing(response, first), first)
                ex.first_byte = time.monotonic()
            else:
                framing = CHUNKED if stream or response.content_length is None else response.content_length
                if framing is CHUNKED and self.request_version == "HTTP/1.0":
                    framing = None  # no chunked encoding there: the close ends the body
                    self.close_connection = True
                writer = ClientWriter(self.wfile, chunked=framing is CHUNKED)
                self._send_head(response.status, response.reason, response.headers, framing)
                ex.first_byte = time.monotonic()
                if self.command == "HEAD":
                    response.close()
                elif stream:
                    failure = relay_stream(response, writer, first, usage, ex.cancel)
                else:
                    failure = relay_body(response, writer, usage, ex.cancel, json_body)
                    if failure:  # the body cannot be completed: the client must see it end short
                        self.close_connection = True
        except ClientGone:
            response.close()
            self.close_connection = True
            self._book(provider, response, None, usage)  # it answered; the tokens were spent
            log.info("%s -> client cancelled after %.3fs %s", ex, ex.elapsed(), usage)
            return
        self._book(provider, response, failure, usage)
        log.info("%s -> %s%s ttfb=%.3fs total=%.3fs %s", ex, response.status,
                 f" ({failure})" if failure else "", ex.first_byte - ex.started, ex.elapsed(), usage)

    def _book(self, provider, response, failure, usage):
        policy = self.server.policy
        if failure:
            policy.record_failure(provider, failure)
        elif 200 <= response.status < 300:
            policy.record_success(provider, usage)
        else:
            policy.record_answer(provider)

    def _all_failed(self, failures, ex):
        """Every provider failed: give the client the latest real answer (so its
        own retry logic sees the 429/529 and its retry-after), else our own error."""
        answers = [f for f in failures if isinstance(f, FailedAnswer)]
        if answers:
            last = answers[-1]
            status = last.status
            self._send_head(last.status, last.reason, last.headers, len(last.body), last.body)
        else:
            error = failures[-1]
            status = 504 if error.kind == "timeout" else 502
            self._send_error(status, f"No provider could answer ({', '.join(ex.tried)}); "
                                     f"last: {error.provider} {error.kind}: {error.detail}")
        outcome = "pinned provider failed" if ex.mode != "fallback" else "all failed"
        log.warning("%s -> %s (%s) total=%.3fs", ex, status, outcome, ex.elapsed())

    def _no_provider(self, pinned, ex):
        config = self.server.config
        if pinned is not None and not pinned.enabled:
            message = f"Provider '{pinned.name}' is disabled in {config.path}"
        elif pinned is not None and pinned.key_problem:
            message = (f"Provider '{pinned.name}' has no usable API key: {pinned.key_problem}; "
                       "fix it and restart claude-proxy")
        elif pinned is not None:
            message = (f"Provider '{pinned.name}' has no API key: set {pinned.api_key_env} in "
                       f"{config.env_path} or the environment, and restart claude-proxy")
        elif any(p.key_problem for p in config.providers if p.enabled):
            why = "; ".join(p.missing_key(config.env_path) for p in config.providers if p.enabled)
            message = f"No provider is usable: {why}. Fix that and restart claude-proxy"
        else:
            wanted = ", ".join(p.api_key_env for p in config.providers if p.enabled) or "a provider"
            message = (f"No provider is usable: set {wanted} in {config.env_path} "
                       f"(or enable one in {config.path}) and restart claude-proxy")
        self._send_error(503, message, {"x-should-retry": "false"})
        log.warning("%s -> 503 (no usable provider)", ex)

    # --- request bodies -------------------------------------------------------

    def _read_body(self):
        """The request body, or None after answering 413/400 for it.

        A Content-Length body and a chunked one are held to the same limit;
        a chunk is refused by its announced size, before it is read.
        """
        limit = self.server.config.max_body_bytes
        try:
            if "chunked" in self.headers.get("transfer-encoding", "").lower():
                return b"".join(self._chunks(limit))
            length = self._content_length()
            if length > limit:
                raise _TooLarge(length)
            body = self.rfile.read(length) if length else b""
        except _TooLarge as exc:
            self._too_large(exc.remaining)
            return None
        except ValueError as exc:
            self.close_connection = True
            self._send_error(400, f"Malformed request body: {exc}.")
            return None
        if len(body) != length:  # the client left mid-body: nothing to forward
            self.close_connection = True
            return None
        return body

    def _content_length(self):
        value = self.headers.get("content-length", "0")
        if not value.strip().isdigit():
            raise ValueError(f"invalid Content-Length {value!r}")
        return int(value)

    def _chunks(self, limit):
        """Decode a chunked body (RFC 9112 section 7.1); ValueError if malformed."""
        left = limit
        while True:
            line = self.rfile.readline(1024)
            if not line.endswith(b"\n"):
                raise ValueError("truncated chunk size line")
            size_text = line.split(b";", 1)[0].strip()
            if not size_text or size_text.strip(b"0123456789abcdefABCDEF"):
                raise ValueError(f"bad chunk size {size_text[:20]!r}")
            size = int(size_text, 16)
            if size > left:
                raise _TooLarge(None)
            if size == 0:
                while self.rfile.readline(8192).strip():  # trailers
                    pass
                return
            data = self.rfile.read(size)
            if len(data) != size or self.rfile.read(2) != b"\r\n":
                raise ValueError("truncated chunk")
            left -= size
            yield data

    def _too_large_message(self):
        return (f"Request body is larger than the proxy's limit of "
                f"{self.server.config.max_body_bytes / 1024 / 1024:g} MB (max_body_mb in the config).")

    def _too_large(self, remaining):
        """Answer 413, then read (and drop) what the client is still sending,
        within a bound, so that it can read the answer instead of a reset.
        ``remaining`` is the announced length, or None for a chunked body."""
        self.close_connection = True
        message = self._too_large_message()
        self._send_error(413, message)
        log.info("%s %s -> 413 refused: %s", self.command, printable(self.path), message)
        deadline = time.monotonic() + DRAIN_SECONDS
        budget = DRAIN_LIMIT if remaining is None else min(remaining, DRAIN_LIMIT)
        try:
            self.connection.settimeout(1.0)
            while budget > 0 and time.monotonic() < deadline:
                data = self.rfile.read1(min(budget, 65536))
                if not data:
                    break
                budget -= len(data)
                if remaining is None and data.endswith(b"0\r\n\r\n"):
                    break
        except OSError:  # the client stopped sending or left: nothing more to drain
            pass

    def _refuse(self, status, message, extra_headers=None):
        """Answer early with an error, after reading the request's body, so the
        keep-alive connection stays in step (or 413/400 if the body is bad)."""
        if self._read_body() is not None:
            self._send_error(status, message, extra_headers)
            log.info("%s %s -> %s refused: %s", self.command, printable(self.path), status, message)

    def handle_expect_100(self):
        """Refuse an oversized body before the client sends it."""
        try:
            length = self._content_length()
        except ValueError:
            length = 0
        if length > self.server.config.max_body_bytes:
            self.close_connection = True
            self._send_error(413, self._too_large_message())
            return False
        return super().handle_expect_100()

    # --- management endpoints ---------------------------------------------------

    def _status(self):
        server = self.server
        config = server.config
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime_seconds": round(time.time() - server.started, 1),
            "listen": server.url,
            "config": str(config.path),
            "config_exists": config.exists,
            "state_dir": str(config.state_dir),
            "require_token": config.require_token,
            "providers": server.policy.snapshot(),
        }

    def _shutdown(self, query):
        grace = None
        values = parse_qs(query).get("grace")
        if values:
            try:
                grace = max(0.0, float(values[0]))
            except ValueError:
                return self._refuse(400, "grace must be a number of seconds")
        if self._read_body() is None:
            return None
        self.close_connection = True
        self._send_json(200, {"status": "stopping"})
        log.info("shutdown requested")
        self.server.stop_soon(grace)
        return None

    # --- writing responses --------------------------------------------------------

    def _whole_body_framing(self, response, body):
        if self.command == "HEAD":  # the provider's length is the GET body's: pass it on
            return response.header("content-length")
        if response.status in (204, 304):  # never a body, never a length (RFC 9110 8.6)
            return None
        return len(body)

    def _send_head(self, status, reason, headers, framing, body=b""):
        """Write the status line and headers, and ``body`` in the same write.

        ``framing`` is the Content-Length, ``CHUNKED``, or None for neither
        (no body, or one that ends when the connection closes).
        """
        lines = [f"HTTP/1.1 {status} {reason or ''}".rstrip()]
        for name, value in headers:
            lowered = name.lower()
            if lowered in HOP_BY_HOP or lowered == "content-length":
                continue
            lines.append(f"{name}: {value}")
        if framing is CHUNKED:
            lines.append("Transfer-Encoding: chunked")
        elif framing is not None:
            lines.append(f"Content-Length: {framing}")
        if self.close_connection:
            lines.append("Connection: close")
        lines.append("\r\n")
        head = "\r\n".join(lines).encode("latin-1", "replace")
        try:
            self.wfile.write(head + body if body else head)
        except OSError as exc:
            raise ClientGone(str(exc)) from None

    def _send_json(self, status, payload, extra_headers=None, head=False):
        body = json.dumps(payload).encode()
        headers = [("Content-Type", "application/json")]
        headers.extend((extra_headers or {}).items())
        reason = self.responses.get(status, ("",))[0]
        with_body = not head and self.command != "HEAD"
        self._send_head(status, reason, headers, len(body), body if with_body else b"")

    def _send_error(self, status, message, extra_headers=None):
        payload = {"type": "error", "error": {"type": error_type(status), "message": message}}
        self._send_json(status, payload, extra_headers)

    def send_error(self, code, message=None, explain=None):
        """http.server's own errors (malformed request line, ...), in Anthropic's shape."""
        self.close_connection = True
        try:
            self._send_error(code, message or self.responses.get(code, ("Error",))[0])
        except (OSError, ClientGone):  # the client is already gone
            pass

    def log_message(self, format, *args):
        log.debug("%s - " + format, self.address_string(), *args)


class _TooLarge(Exception):
    """The request body is over the limit; ``remaining`` is its announced length, if any."""

    def __init__(self, remaining):
        super().__init__(remaining)
        self.remaining = remaining
