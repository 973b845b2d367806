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

import hmac
import http.server
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from urllib.parse import parse_qs

from . import __version__
from .errors import UpstreamError, UsageError
from .failover import FailoverPolicy, error_type, retry_after_seconds
from .relay import (
    ClientGone, ClientWriter, DisconnectWatcher, Usage, event_boundary,
    first_event_error, relay_body, relay_stream,
)
from .state import StatePaths, load_or_create_token, remove_pid_file, write_pid_file
from .upstream import HOP_BY_HOP, Upstreams, rewrite_model, upstream_headers

log = logging.getLogger("claude_proxy")

CLIENT_IDLE_TIMEOUT = 300.0     # seconds an idle keep-alive client may hold a thread
LISTEN_BACKLOG = 1024
ERROR_BODY_LIMIT = 1024 * 1024  # a failover answer's body is kept for the client up to this
FIRST_EVENT_LIMIT = 1024 * 1024
DRAIN_LIMIT = 64 * 1024 * 1024  # what is read (and dropped) of an oversized body before closing
DRAIN_SECONDS = 5.0
SHUTDOWN_GRACE = 10.0
PINNED_PREFIX = "/provider/"


def reuse_address_allowed(os_name):
    """SO_REUSEADDR lets a restarted daemon rebind at once on POSIX; on Windows it
    would let a second daemon bind the same port silently, so it is never set there."""
    return os_name != "nt"


class ProxyServer(http.server.ThreadingHTTPServer):
    """The listening server; holds what every request shares."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG
    allow_reuse_address = reuse_address_allowed(os.name)

    def __init__(self, config, token):
        self.address_family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        self.config = config
        self.token = token
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

    def server_bind(self):
        if os.name == "nt" and hasattr(socket, "SO_EXCLUSIVEADDRUSE"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
        super().server_bind()

    @property
    def port(self):
        return self.server_address[1]

    @property
    def url(self):
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"http://{host}:{self.port}"

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
        token = self.server.token or ""
        scheme, _, credentials = self.headers.get("authorization", "").partition(" ")
        offered = [self.headers.get("x-api-key", ""),
                   credentials.strip() if scheme.lower() == "bearer" else ""]
        expected = token.encode()
        if token and any(hmac.compare_digest(value.encode(), expected) for value in offered):
            return True
        self._refuse(401, "Missing or wrong claude-proxy token. Run `proxy.py env` (or claude-fb) "
                              "to set ANTHROPIC_AUTH_TOKEN for this session.")
        return False

    # --- the proxy ------------------------------------------------------------

    def _forward(self, api_path, pinned):
        server = self.server
        started = time.monotonic()
        body = self._read_body()
        if body is None:
            return
        mode = pinned.name if pinned else "fallback"
        plan = server.policy.plan(pinned)
        if not plan:
            return self._no_provider(pinned, mode, started)

        client_headers = [(k, v) for k, v in self.headers.items()]
        tried = []
        last_answer = None  # (status, reason, headers, body) of the latest failover answer
        last_error = None
        cancel = server.watcher.watch(self.connection)
        try:
            for provider in plan:
                outcome = self._try(provider, api_path, client_headers, body, cancel, started, mode, tried)
                if outcome is None:          # answered (or the client left): done
                    return
                if cancel.is_set():
                    log.info("%s %s %s %s -> client cancelled before the answer",
                             self.command, self.path, mode, " ".join(tried))
                    self.close_connection = True
                    return
                if isinstance(outcome, UpstreamError):
                    last_error = outcome
                else:
                    last_answer = outcome
            self._all_failed(last_answer, last_error, mode, tried, started)
        finally:
            server.watcher.unwatch(self.connection)

    def _try(self, provider, api_path, client_headers, body, cancel, started, mode, tried):
        """Try one provider.  Returns None once the client has its answer, or the
        failure (an UpstreamError or a kept failover answer) to fail over from."""
        server = self.server
        policy = server.policy
        out_body = rewrite_model(body, provider)
        headers = upstream_headers(provider, client_headers,
                                   len(out_body) if out_body or self.command in ("POST", "PUT", "PATCH") else None)
        try:
            response = server.upstreams.send(provider, self.command, provider.base_path + api_path,
                                             headers, out_body, cancel)
        except UpstreamError as exc:
            tried.append(f"{provider.name}={exc.kind}")
            if not cancel.is_set():
                policy.record_failure(provider, f"{exc.kind}: {exc.detail}")
            return exc

        if response.status in server.config.failover_statuses:
            try:
                error = response.read_all(ERROR_BODY_LIMIT)
            except UpstreamError as exc:
                error = b""
                log.debug("%s: error body unreadable: %s", provider.name, exc)
            tried.append(f"{provider.name}={response.status}")
            policy.record_failure(provider, _describe_error(response.status, error),
                                  retry_after_seconds(response.headers))
            return (response.status, response.reason, response.headers, error)

        is_stream = response.status == 200 and (response.header("content-type") or "").lower() \
            .startswith("text/event-stream")
        first = b""
        if is_stream:
            try:
                first = _read_first_event(response)
            except UpstreamError as exc:
                tried.append(f"{provider.name}={exc.kind}")
                if not cancel.is_set():
                    policy.record_failure(provider, f"{exc.kind} before the first event: {exc.detail}")
                return exc
            failed = first_event_error(first)
            if failed:
                response.close()
                tried.append(f"{provider.name}=stream-{failed}")
                policy.record_failure(provider, f"stream began with {failed}")
                return (response.status, response.reason, response.headers, first)

        # Commit point: this provider answers.
        tried.append(f"{provider.name}={response.status}")
        usage = Usage()
        chunked = is_stream or response.content_length is None
        if self.request_version == "HTTP/1.0":
            chunked = False
            self.close_connection = True
        writer = ClientWriter(self.wfile, chunked)
        failure = None
        ttfb = None
        try:
            self._send_head(response.status, response.reason, response.headers,
                            None if chunked else response.content_length)
            ttfb = time.monotonic() - started
            if self.command == "HEAD":
                response.close()
            elif is_stream:
                failure = relay_stream(response, writer, first, usage, cancel)
            else:
                collect = (response.header("content-type") or "").startswith("application/json")
                failure = relay_body(response, writer, usage, cancel, collect)
                if failure:  # the body cannot be completed: the client must see it end short
                    self.close_connection = True
        except ClientGone:
            response.close()
            self.close_connection = True
            log.info("%s %s %s %s -> client cancelled after %.2fs", self.command, self.path, mode,
                     " ".join(tried), time.monotonic() - started)
            return None
        if failure:
            policy.record_failure(provider, failure)
        elif 200 <= response.status < 300:
            policy.record_success(provider, usage)
        else:
            policy.record_answer(provider)
        log.info("%s %s %s %s -> %s%s ttfb=%s total=%.2fs %s", self.command, self.path, mode,
                 " ".join(tried), response.status, f" ({failure})" if failure else "",
                 f"{ttfb:.3f}s" if ttfb is not None else "-", time.monotonic() - started, usage)
        return None

    def _all_failed(self, last_answer, last_error, mode, tried, started):
        """Every provider failed: give the client the latest real answer (so its
        own retry logic sees the 429/529 and its retry-after), else our own error."""
        if last_answer is not None:
            status, reason, headers, body = last_answer
            self._send_head(status, reason, headers, len(body), body)
        else:
            status = 504 if last_error.kind == "timeout" else 502
            self._send_error(status, f"No provider could answer ({', '.join(tried)}); "
                                     f"last: {last_error.provider} {last_error.kind}: {last_error.detail}")
        log.warning("%s %s %s %s -> %s (all failed) total=%.2fs", self.command, self.path, mode,
                    " ".join(tried), status, time.monotonic() - started)

    def _no_provider(self, pinned, mode, started):
        config = self.server.config
        if pinned is not None and not pinned.enabled:
            message = f"Provider '{pinned.name}' is disabled in {config.path}"
        elif pinned is not None:
            message = (f"Provider '{pinned.name}' has no API key: set {pinned.api_key_env} in "
                       f"{config.env_path} or the environment, and restart claude-proxy")
        else:
            wanted = ", ".join(p.api_key_env for p in config.providers if p.enabled) or "a provider"
            message = (f"No provider is usable: set {wanted} in {config.env_path} "
                       f"(or enable one in {config.path}) and restart claude-proxy")
        self._send_error(503, message, {"x-should-retry": "false"})
        log.warning("%s %s %s -> 503 (no usable provider) total=%.2fs", self.command, self.path,
                    mode, time.monotonic() - started)

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
        self._send_error(413, self._too_large_message())
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

    def _send_head(self, status, reason, headers, content_length, body=b""):
        """Write the status line and headers (and a small body, in the same write)."""
        lines = [f"HTTP/1.1 {status} {reason or ''}".rstrip()]
        for name, value in headers:
            lowered = name.lower()
            if lowered in HOP_BY_HOP or lowered == "content-length":
                continue
            lines.append(f"{name}: {value}")
        if content_length is not None:
            lines.append(f"Content-Length: {content_length}")
        elif self.request_version != "HTTP/1.0":
            lines.append("Transfer-Encoding: chunked")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        try:
            self.wfile.write(head + body)
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


def _read_first_event(response):
    """Read until the first complete SSE event (or the end of the body)."""
    buffer = b""
    while not event_boundary(buffer):
        data = response.read1()
        if not data:
            return buffer
        buffer += data
        if len(buffer) > FIRST_EVENT_LIMIT:
            return buffer
    return buffer


def _describe_error(status, body):
    """``429 rate_limit_error: message`` from a provider's error answer, for status and log."""
    detail = ""
    try:
        error = json.loads(body).get("error", {})
        detail = f" {error.get('type', '')}: {error.get('message', '')}".rstrip(": ")
    except (ValueError, AttributeError, UnicodeDecodeError):
        pass
    return f"{status}{detail}"[:300]


# --- running it ---------------------------------------------------------------------


def setup_logging(paths, quiet):
    from logging.handlers import RotatingFileHandler

    logger = logging.getLogger("claude_proxy")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    paths.dir.mkdir(parents=True, exist_ok=True)
    file_handler = RotatingFileHandler(paths.log, maxBytes=5 * 1024 * 1024, backupCount=3,
                                       encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(file_handler)
    if not quiet:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(console)


def banner(server):
    config = server.config
    lines = [f"claude-proxy {__version__} listening on {server.url}"]
    if not config.exists:
        lines.append(f"  no {config.path.name} at {config.path}: running on the built-in defaults "
                     "(copy config.example.json to config.json to change them)")
    for number, p in enumerate(config.providers, start=1):
        if not p.enabled:
            state = "disabled"
        elif p.api_key:
            state = f"key from {'environment' if p.key_source == 'environment' else '.env'}"
        else:
            state = f"NO KEY: set {p.api_key_env} in {config.env_path}; skipped"
        lines.append(f"  {number}. {p.name:<12} {p.base_url}  ({state})")
    if not any(p.usable for p in config.providers):
        lines.append("  no provider is usable yet: requests will get a 503 explaining what is missing")
    if config.require_token:
        lines.append(f"  client token: {server.token_path} (`proxy.py env` prints the variables to set)")
    else:
        lines.append("  require_token is false: any API key is accepted")
    return "\n".join(lines)


def _stop_on_signals(server):
    """SIGTERM/SIGINT (SIGBREAK on Windows) stop the server gracefully; a second one at once."""
    def on_signal(signum, frame):
        if server.stopping:
            server.grace = 0
        server.stopping = True
        server.stop_soon()

    for name in ("SIGTERM", "SIGINT", "SIGBREAK"):
        if hasattr(signal, name):
            try:
                signal.signal(getattr(signal, name), on_signal)
            except ValueError:  # not the main thread (tests): signals are not ours to take
                pass


def run(config, quiet=False):
    """Serve until a shutdown request or a signal; returns the exit code."""
    paths = StatePaths(config.state_dir)
    try:
        token = load_or_create_token(paths.token) if config.require_token else None
        setup_logging(paths, quiet)
    except OSError as exc:
        raise UsageError(f"cannot use the state directory {paths.dir}: {exc.strerror or exc}") from None
    server = ProxyServer(config, token)
    server.token_path = paths.token
    _stop_on_signals(server)  # before the pid file exists: whoever reads it may signal at once
    write_pid_file(paths.pid, host=config.host, port=server.port, config_path=config.path)
    for warning in config.warnings:
        log.warning("%s", warning)
    for p in config.providers:
        if p.enabled and not p.api_key:
            log.warning("%s: %s is not set (environment or %s); skipped", p.name, p.api_key_env,
                        config.env_path)
    if not quiet:
        print(banner(server), file=sys.stderr, flush=True)
    log.info("started: pid %s on %s, providers %s", os.getpid(), server.url,
             ", ".join(p.name for p in config.providers if p.usable) or "none usable")

    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        if not server.wait_idle():
            log.warning("stopping with requests still in flight after %.0fs", server.grace)
        server.server_close()
        remove_pid_file(paths.pid, os.getpid())
        log.info("stopped")
    return 0


class _TooLarge(Exception):
    """The request body is over the limit; ``remaining`` is its announced length, if any."""

    def __init__(self, remaining):
        super().__init__(remaining)
        self.remaining = remaining
