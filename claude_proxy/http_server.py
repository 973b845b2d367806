"""The HTTP server clients talk to.

Routes:

- ``GET /health``                  liveness, no token
- ``GET /status``                  JSON state of the daemon and providers (token)
- ``GET /events``                  the live feed for ``top`` and the dashboard: server-sent
                                   events, a status snapshot each second and requests as
                                   they start and end (token or dashboard session)
- ``POST /control``                disable, enable, cool, uncool a provider (token or
                                   dashboard session)
- ``POST /reload``                 read config.json and .env again (token)
- ``POST /shutdown``               stop after in-flight requests, bounded (token)
- ``/dashboard``, ``/dashboard/...`` the dashboard page, its sign-in and its data (:mod:`dashboard`)
- ``HEAD /``, ``HEAD /provider/X`` a client's connectivity check, answered here
- ``/provider/NAME/...``           pinned mode: that provider only
- anything else                    fallback mode: forwarded under each provider's base URL

Every error the proxy itself produces is JSON in Anthropic's error shape;
provider answers, errors included, are passed through byte for byte.
"""

import errno
import hmac
import http.client
import http.server
import io
import json
import logging
import os
import re
import socket
import sys
import threading
import time
from http import HTTPStatus
from urllib.parse import parse_qs

from . import __version__
from .access import LocalAddresses
from .body import ClientReader, MalformedBody, ReceiveTimeout, TooLarge, drain, content_length, read_body
from .cancel import DisconnectWatcher
from . import reload, sse
from .config import http_url, load_config
from .dashboard import FOREIGN, SIGNED_IN, Dashboard, Request as DashboardRequest, without_code
from .dashboard_data import figures
from .errors import ConfigError, UsageError, error_type
from .failover import FailoverPolicy
from .feed import Feed
from .forward import CHUNKED, ClientSide, Exchange, Forwarder, no_provider_message
from .framing import target_problem
from .head import read_head
from .logfile import printable
from .relay import ClientGone, ClientWriter
from .request_log import CapturingWriter, RequestLog
from .sending import SocketWriter
from .socket_timeouts import set_timeout
from .state import StatePaths, read_token
from .headers import HOP_BY_HOP
from .routing import STRATEGIES
from .reload import ConfigWatcher
from .upstream import Upstreams, requested_model
from .usage import Entry, NoRecord, UsageRecord

log = logging.getLogger("claude_proxy")

CLIENT_IDLE_TIMEOUT = 300.0     # seconds an idle keep-alive client may hold a thread
LISTEN_BACKLOG = 1024
SHUTDOWN_GRACE = 10.0
ABORT_WAIT = 2.0  # seconds requests get to write their ending after the grace period
EVENTS_EVERY = 1.0  # seconds between the status snapshots of the live feed
EVENTS_SEND_BUFFER = 32 * 1024  # bytes the kernel holds for a live view that is not reading
PINNED_PREFIX = "/provider/"
STRATEGY_PREFIX = "/strategy/"
RETRYABLE_REFUSALS = (408, 429)  # a timeout or a rate limit may pass; other 4xx of ours will not
#: accept() failing for want of resources: the connection stays in the backlog (the
#: listening socket stays readable), so retrying at once would spin.
OUT_OF_RESOURCES = frozenset(getattr(errno, name) for name in ("EMFILE", "ENFILE", "ENOBUFS", "ENOMEM")
                             if hasattr(errno, name))
ACCEPT_BACKOFF = (0.05, 1.0)  # seconds: the first pause after such a failure, and the longest
_SENDABLE_TARGET = re.compile(r"[!-~]*\Z")  # printable ASCII: what a request line may carry


def reuse_address_allowed(os_name):
    """SO_REUSEADDR lets a restarted daemon rebind at once on POSIX; on Windows it
    would let a second daemon bind the same port silently, so it is never set there."""
    return os_name != "nt"


class ProxyServer(http.server.ThreadingHTTPServer):
    """The listening server; holds what every request shares."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG
    allow_reuse_address = reuse_address_allowed(os.name)

    def __init__(self, config, token, token_path=None, loader=None):
        """``loader()`` reads the config again for a reload (default: from
        ``config.path``, keys from the environment and ``.env``); it raises
        :class:`ConfigError` for a config with problems."""
        self.address_family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        self.token = token
        self.token_path = token_path
        self._token_mtime = None
        self.policy = FailoverPolicy(config)
        #: The forwarder holds the config and the provider connections; a reload swaps it
        #: whole (one assignment), and each request keeps the one it started with.
        self.forwarder = Forwarder(config, self.policy, Upstreams(config.providers))
        self._loader = loader or (lambda: load_config(config.path, must_exist=config.exists, reloading=True))
        self._reload_lock = threading.Lock()
        self.config_error = None  # {"since": epoch, "message": ...} while the file has a problem
        self.restart_needed = []  # settings changed in the file that a reload cannot apply
        self.config_loaded = time.time()
        self.config_watcher = None
        self.watcher = DisconnectWatcher()
        self.feed = Feed()
        self.started = time.time()
        self._active = 0
        self._active_cond = threading.Condition()
        self.grace = SHUTDOWN_GRACE
        self.stopping = False
        self.connections = 0  # client connections open (each has its thread)
        self._connections_lock = threading.Lock()
        self._accept_pause = 0.0
        self._turned_away = 0
        self._busy_answer = _busy_answer(config.max_connections)
        self.usage, self.request_log = NoRecord(), None  # until it listens (server_close may come first)
        try:
            super().__init__((config.host, config.port), ProxyHandler)
        except OSError as exc:
            self.watcher.close()
            raise UsageError(_bind_error(config, exc)) from None
        self.addresses = LocalAddresses(config.host, self.port, config.allowed_hosts)
        self.dashboard = Dashboard(self.port)
        self.usage = (UsageRecord(StatePaths(config.state_dir).usage, config, config.usage_retention_days)
                      if config.usage_record else NoRecord())
        if config.request_log is not None:
            try:
                self.request_log = RequestLog(config.request_log, config)
            except OSError as exc:  # the log is a convenience: requests are served without it
                log.warning("request log: cannot write %s (%s); it is off", config.request_log.path,
                            exc.strerror or exc)
        self.config_watcher = ConfigWatcher([config.path, config.env_path], lambda: self.reload("file changed"))

    @property
    def config(self):
        return self.forwarder.config

    @property
    def upstreams(self):
        return self.forwarder.upstreams

    # --- hot reload -------------------------------------------------------------

    def reload(self, trigger):
        """Read the config again and, if it is sound, use it for every new request.

        A config with problems changes nothing: the error is logged and kept in
        :attr:`config_error` (for status) until a reload succeeds.  A sound one is
        swapped in at once (:mod:`reload` says what a reload cannot change);
        requests in flight finish with the config and connections they began with,
        and the provider states carry over by name.  Returns what ``POST /reload``
        answers: ``{"applied", "changes", "restart_needed", "error", "previous_read_at"}``
        (when the config in use before this reload was read).
        """
        with self._reload_lock:
            if self.config_watcher is not None:
                self.config_watcher.mark_seen()  # what is read now needs no second reload
            running = self.config
            try:
                loaded = self._loader()
                new = reload.keep_restart_only(running, loaded)
            except (ConfigError, OSError) as exc:  # OSError: a file that vanished or is locked mid-read
                if self.config_watcher is not None:
                    self.config_watcher.try_again()
                message = str(exc) if isinstance(exc, ConfigError) else \
                    f"{running.path}: cannot read it ({exc.strerror or exc})"
                if self.config_error is None or self.config_error["message"] != message:
                    log.error("config reload (%s) failed; still using the config loaded at %s: %s",
                              trigger, reload.local_time(self.config_loaded), message)
                    self.config_error = {"since": time.time(), "message": message}
                return {"applied": False, "changes": [], "restart_needed": self.restart_needed,
                        "error": message}
            pending = reload.restart_only(running, loaded)
            changes = reload.describe_changes(running, new)
            upstreams, retired = self.upstreams.reconfigured(new.providers)
            forwarder = self.forwarder.reconfigured(new, upstreams)
            self.policy.reconfigure(new)
            self.addresses = LocalAddresses(new.host, self.port, new.allowed_hosts)
            self._busy_answer = _busy_answer(new.max_connections)
            self.usage.reconfigure(new)
            if self.request_log is not None:
                self.request_log.reconfigure(new)
            self.forwarder = forwarder  # from here on, new requests use the new config
            for pool in retired:
                pool.close()
            if self.config_error is not None:
                log.warning("config reload (%s): the config has no problem any more", trigger)
            previous_read = self.config_loaded
            self.config_error, self.restart_needed, self.config_loaded = None, pending, time.time()
            for warning in new.warnings:
                log.warning("%s", warning)
            if changes:
                log.warning("config reloaded (%s): %s", trigger, "; ".join(changes))
            else:
                log.info("config reloaded (%s): nothing changed", trigger)
            for line in pending:
                log.warning("%s", line)
            return {"applied": True, "changes": changes, "restart_needed": pending, "error": None,
                    "previous_read_at": previous_read}

    def record(self, ex, capture=None):
        """Hand the ended exchange ``ex`` to the usage record and the request log (never raises)."""
        try:
            entry = Entry.of(ex)
            if self.request_log is not None:
                self.request_log.add(entry, ex.body, ex.client_headers, capture, self.token)
            self.usage.add(entry)
        except Exception:  # neither may ever break a request
            log.exception("could not record a request")

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
        except OSError:  # no token file (deleted?): the token this server has stays
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

    # --- accepting connections ------------------------------------------------

    def get_request(self):
        """Accept a connection, pausing first if the last tries ran out of file
        descriptors (EMFILE, ENFILE) or buffers: the pending connection stays
        in the backlog, so without a pause the serve loop would spin at 100%
        CPU.  The pause doubles up to ``ACCEPT_BACKOFF[1]`` and ends at the
        first success."""
        try:
            accepted = super().get_request()
        except OSError as exc:
            if exc.errno in OUT_OF_RESOURCES:
                if not self._accept_pause:
                    log.warning("cannot accept connections: %s; pausing accepts until it passes "
                                "(raise the open-files limit, or lower max_connections)",
                                exc.strerror or exc)
                self._accept_pause = min(ACCEPT_BACKOFF[1], self._accept_pause * 2 or ACCEPT_BACKOFF[0])
                time.sleep(self._accept_pause)
            raise  # socketserver drops this try and polls again
        if self._accept_pause:
            self._accept_pause = 0.0
            log.warning("accepting connections again")
        return accepted

    def process_request(self, request, client_address):
        """Give the connection a thread of its own, unless ``max_connections``
        are open: then answer 503 and close it here, in the accepting thread,
        so that a flood of connections never piles up threads."""
        with self._connections_lock:
            full = self.connections >= self.config.max_connections
            if not full:
                self.connections += 1
        if full:
            self._turn_away(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread was started: it will not count itself out
            self._connection_closed()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connection_closed()

    def _connection_closed(self):
        with self._connections_lock:
            self.connections -= 1
            if self.connections < self.config.max_connections and self._turned_away:
                log.warning("below max_connections again; %d connection(s) were turned away",
                            self._turned_away)
                self._turned_away = 0

    def _turn_away(self, request):
        """The 503 for a connection over the cap: one non-blocking send, never a wait."""
        if not self._turned_away:
            log.warning("%d client connections open (max_connections): new ones get a 503",
                        self.connections)
        self._turned_away += 1
        try:
            request.setblocking(False)
            request.send(self._busy_answer)
            request.recv(65536)  # what the client sent already: unread, the close would be a reset
        except OSError:  # nothing sent yet, or the client is gone: the close says enough
            pass

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

    def wait_idle(self, seconds=None):
        """Wait up to ``seconds`` (default: ``self.grace``) for in-flight requests;
        True if none are left.

        Waits in short slices, so that a second stop signal (grace 0) ends it at once.
        """
        started = time.monotonic()
        with self._active_cond:
            if self._active and self.grace and seconds is None:
                log.info("stopping: waiting up to %.0fs for %d request(s) in flight "
                         "(stop again to end them now)", self.grace, self._active)
            while self._active and time.monotonic() - started < (self.grace if seconds is None else seconds):
                self._active_cond.wait(0.2)
            return self._active == 0

    def stop_soon(self, grace=None):
        """Stop serving, from any thread, without blocking it.

        New API requests get a 503 (``x-should-retry: true``) from now on;
        requests in flight get ``self.grace`` seconds to finish.  Those still
        running then are ended the way a provider's death is ended: a stream
        with an ``event: error`` and a clean end, a request still waiting for
        its provider with a 503.  A second call with ``grace=0`` cuts the wait short.
        """
        if grace is not None:
            self.grace = grace
        if self.stopping:
            return
        self.stopping = True
        threading.Thread(target=self._drain_and_stop, name="shutdown", daemon=True).start()

    def _drain_and_stop(self):
        if not self.wait_idle():
            log.warning("stopping with %d request(s) still in flight after %.0fs: ending them",
                        self._active, self.grace)
            self.watcher.abort_all()
            self.wait_idle(ABORT_WAIT)
        self.shutdown()

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (OSError, ClientGone)):  # routine: the client went away
            log.debug("connection from %s ended: %s", client_address[0], exc)
        else:
            log.exception("internal error while serving %s", client_address[0])

    def server_close(self):
        super().server_close()
        if self.config_watcher is not None:
            self.config_watcher.close()
        self.watcher.close()
        self.upstreams.close()
        self.usage.close()
        if self.request_log is not None:
            self.request_log.close()


def _busy_answer(max_connections):
    """The whole 503 answer to a connection over ``max_connections``."""
    body = json.dumps({"type": "error", "error": {"type": error_type(503), "message": (
        f"claude-proxy has {max_connections} connections open (max_connections); "
        "try again in a moment")}}).encode()
    return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
            b"x-should-retry: true\r\nretry-after: 1\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


def _bind_error(config, exc):
    if getattr(exc, "errno", None) in (98, 48, 10048, 10013) or isinstance(exc, PermissionError):
        return (f"port {config.port} on {config.host} is already in use (another claude-proxy "
                f"or another program); stop it, or set \"proxy_port\" in {config.path}")
    return f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}"


class ProxyHandler(http.server.BaseHTTPRequestHandler, ClientSide):
    protocol_version = "HTTP/1.1"
    _capture = None  # a request_log.Capture while a request is forwarded with the request log on
    disable_nagle_algorithm = True  # else each keep-alive response waits ~40 ms for an ACK
    timeout = CLIENT_IDLE_TIMEOUT
    server_version = f"claude-proxy/{__version__}"
    sys_version = ""

    # --- admission ------------------------------------------------------------

    def setup(self):
        super().setup()
        set_timeout(self.connection, self.timeout)  # in the kernel where it can be: one call per read
        self.rfile.close()  # replaced by one that also bounds the time a request takes to arrive
        self._reader = ClientReader(self.connection, self.timeout, self.server.config.receive_timeout)
        self.rfile = io.BufferedReader(self._reader)
        self.wfile = SocketWriter(self.connection)  # a small answer in one system call, not two

    def handle_one_request(self):
        try:
            super().handle_one_request()
        finally:
            self._reader.request_received()

    def parse_request(self):
        """The request line and headers, read as ``http.server`` reads them (its
        checks, limits and answers, :meth:`_parse_request_line`), the headers
        parsed without ``email`` when they are plain (:func:`head.read_head`); then what
        every request must be: a head that can be read only one way
        (:mod:`framing`, else 400), addressed to the proxy by one of its own
        names (:mod:`access`, else 421), from no foreign web page (else 403).
        Returns False after answering and closing otherwise.  ``Expect:
        100-continue`` is answered only once the head has passed."""
        self._expects_continue = False
        if not self._parse_request_line():
            return False
        try:
            headers, problem = read_head(self.rfile, self.request_version)
        except http.client.LineTooLong as err:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long", str(err))
            return False
        except http.client.HTTPException as err:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers", str(err))
            return False
        self.headers = headers
        conntype = headers.get("Connection", "").lower()
        if conntype == "close":
            self.close_connection = True
        elif conntype == "keep-alive" and self.protocol_version >= "HTTP/1.1":
            self.close_connection = False
        if headers.get("Expect", "").lower() == "100-continue" and self.protocol_version >= "HTTP/1.1" \
                and self.request_version >= "HTTP/1.1":
            self._expects_continue = True
        if problem:
            return self._refuse_head(400, f"Malformed request: {problem}.")
        addresses = self.server.addresses
        host = headers.get("host")
        if not addresses.host_allowed(host):
            return self._refuse_head(421, (
                f"Host {host!r} is not an address of this proxy; use "
                f"{self.server.url}, or add the name to \"allowed_hosts\" in {self.server.config.path}."))
        origin = headers.get("origin")
        if not addresses.origin_allowed(origin):
            return self._refuse_head(403, (
                f"Requests from web pages (Origin {origin!r}) are refused."))
        if "content-length" not in headers and "transfer-encoding" not in headers:
            self._reader.request_received()  # no body: the head was all of it
        if self._expects_continue:
            return self._continue()
        return True

    def _parse_request_line(self):
        """``http.server``'s reading of the request line (as of Python 3.11:
        the version's numbers must be digits, 10 at most), with its answers:
        400 for a bad line or version, 505 for HTTP/2 and later, a lone
        ``GET`` for an HTTP/0.9 request; ``//`` at the start of the path made
        one ``/`` (gh-87389)."""
        self.command = None  # set in case of error on the first line
        self.request_version = version = self.default_request_version
        self.close_connection = True
        requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        self.requestline = requestline
        words = requestline.split()
        if not words:
            return False
        if len(words) >= 3:  # enough to determine the protocol version
            version = words[-1]
            try:
                if not version.startswith("HTTP/"):
                    raise ValueError
                base_version_number = version.split("/", 1)[1]
                version_number = base_version_number.split(".")
                # RFC 2145 section 3.1: one ".", and the numbers are separate integers.
                if len(version_number) != 2:
                    raise ValueError
                if any(not component.isdigit() for component in version_number):
                    raise ValueError("non digit in http version")
                if any(len(component) > 10 for component in version_number):
                    raise ValueError("unreasonable length http version")
                version_number = int(version_number[0]), int(version_number[1])
            except (ValueError, IndexError):
                self.send_error(HTTPStatus.BAD_REQUEST, "Bad request version (%r)" % version)
                return False
            if version_number >= (1, 1) and self.protocol_version >= "HTTP/1.1":
                self.close_connection = False
            if version_number >= (2, 0):
                self.send_error(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED,
                                "Invalid HTTP version (%s)" % base_version_number)
                return False
            self.request_version = version
        if not 2 <= len(words) <= 3:
            self.send_error(HTTPStatus.BAD_REQUEST, "Bad request syntax (%r)" % requestline)
            return False
        command, path = words[:2]
        if len(words) == 2:
            self.close_connection = True
            if command != "GET":
                self.send_error(HTTPStatus.BAD_REQUEST, "Bad HTTP/0.9 request type (%r)" % command)
                return False
        self.command, self.path = command, path
        if self.path.startswith("//"):  # gh-87389: //path would be read as a host by clients
            self.path = "/" + self.path.lstrip("/")
        return True

    def _refuse_head(self, status, message):
        """Answer a request refused on its head alone, and close: its body is
        not read, since its framing (or its sender) is not to be trusted."""
        self.close_connection = True
        self.send_error_json(status, message)
        log.info("%s %s -> %s refused: %s", self.command, self._shown_path, status,
                 printable(message))
        return False

    def _continue(self):
        """Refuse an oversized body before the client sends it, else say 100 Continue."""
        try:
            length = content_length(self.headers)
        except MalformedBody:  # refused when the body is read
            length = 0
        if length > self.server.config.max_body_bytes:
            self.close_connection = True
            self.send_error_json(413, self._too_large_message())
            return False
        return super().handle_expect_100()

    # --- routing ------------------------------------------------------------

    def do_GET(self):
        self._route()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = do_GET

    def _route(self):
        problem = target_problem(self.path)
        if problem:
            return self._refuse(400, f"Refused: {problem}.")
        path, _, query = self.path.partition("?")
        server = self.server
        if path == "/health" and self.command in ("GET", "HEAD"):
            return self._send_json(200, {"status": "ok", "version": __version__, "pid": os.getpid()})
        if path == "/status" and self.command == "GET":
            if self._authorized(required=True):
                self._send_json(200, self._status())
            return None
        if path == "/events" and self.command == "GET":
            if self._authorized(required=True, session=True):
                self._events()
            return None
        if path == "/shutdown" and self.command == "POST":
            if self._authorized(required=True):
                self._shutdown(query)
            return None
        if path == "/control" and self.command == "POST":
            if self._authorized(required=True, session=True):
                self._control(query)
            return None
        if path == "/dashboard" or path.startswith("/dashboard/"):
            return self._dashboard(path, query)
        if path == "/reload" and self.command == "POST":
            if self._authorized(required=True) and self._read_body() is not None:
                self._send_json(200, server.reload("proxy.py reload"))
            return None
        forwarder = server.forwarder  # this request's config and providers, whatever a reload does
        config = forwarder.config
        pinned = name = strategy = None
        api_path = self.path
        if path.startswith(PINNED_PREFIX):
            name, slash, rest = path[len(PINNED_PREFIX):].partition("/")
            pinned = config.provider(name)
            api_path = slash + rest + (f"?{query}" if query else "")
            path = slash + rest
        elif path.startswith(STRATEGY_PREFIX):  # this session's own strategy
            strategy, slash, rest = path[len(STRATEGY_PREFIX):].partition("/")
            api_path = slash + rest + (f"?{query}" if query else "")
            path = slash + rest
        if self.command == "HEAD" and path in ("", "/"):  # the same for every name: none is revealed
            return self._send_json(200, {"status": "ok"}, head=True)
        if not self._authorized(config.require_token):
            return None
        if not _SENDABLE_TARGET.match(api_path):
            return self._refuse(400, "The request path has characters that cannot be sent on; "
                                     "percent-encode them.")
        if name is not None and pinned is None:
            names = ", ".join(config.provider_names) or "none"
            # A 400, not a 404: Claude Code shows a 404 as "an issue with the selected model",
            # a 400 with this message as it is.
            return self._refuse(400, f"Unknown provider '{name}' in ANTHROPIC_BASE_URL "
                                     f"(.../provider/{name}). Configured providers: {names}. "
                                     "Run claude-switch with one of them, or claude-fb.")
        if strategy is not None and strategy.lower() not in STRATEGIES:
            return self._refuse(400, f"Unknown strategy '{strategy}' in ANTHROPIC_BASE_URL "
                                     f"(.../strategy/{strategy}). Strategies: {', '.join(STRATEGIES)}.")
        if server.stopping:
            self.close_connection = True
            return self._refuse(503, "claude-proxy is shutting down; try again in a moment.",
                                {"x-should-retry": "true"})
        server.request_started()
        try:
            self._forward(forwarder, api_path or "/", pinned, strategy and strategy.lower())
        finally:
            server.request_finished()
        return None

    def _authorized(self, required, session=False):
        """True if the request carries the client token (as x-api-key or bearer),
        or the token is not ``required``, or (with ``session``) the cookie of a
        dashboard session, from the dashboard page itself; else answers 401 (403
        for a session's cookie sent by another page).  The proxy's own endpoints
        always require it (``require_token`` is about API requests)."""
        if not required or self._offers_token():
            return True
        if session:
            verdict = self.server.dashboard.session_verdict(self.command, self.headers)
            if verdict == SIGNED_IN:
                return True
            if verdict == FOREIGN:
                self._refuse(403, "The dashboard's session works from the dashboard page only.")
                return False
        self._refuse(401, "Missing or wrong claude-proxy token. Run `proxy.py env` (or claude-fb) "
                              "to set ANTHROPIC_AUTH_TOKEN for this session.")
        return False

    def _offers_token(self):
        scheme, _, credentials = self.headers.get("authorization", "").partition(" ")
        offered = [self.headers.get("x-api-key", ""),
                   credentials.strip() if scheme.lower() == "bearer" else ""]
        return self.server.token_matches(offered)

    # --- the proxy ------------------------------------------------------------

    def _forward(self, forwarder, api_path, pinned, strategy=None):
        """Read the body, plan the providers, and hand the request to ``forwarder``."""
        started = time.monotonic()
        body = self._read_body()
        if body is None:
            return None
        config = forwarder.config
        mode = pinned.name if pinned else (strategy or config.strategy)
        ex = Exchange(self.command, self.path, api_path, mode, body, list(self.headers.items()), started)
        # The plan depends on the model only with model lists or speed routing.
        if config.has_model_lists or "fastest" in (strategy, config.strategy):
            ex.model = requested_model(body)
        request_log = self.server.request_log
        self._capture = request_log.capture() if request_log is not None else None
        self.server.feed.started(ex)
        try:
            plan = self.server.policy.plan(pinned, ex.model, strategy, config)
            if not plan:
                ex.ended("no provider", status=503)
                self.send_error_json(503, no_provider_message(config, pinned),
                                     {"x-should-retry": "false"})
                log.warning("%s -> 503 (no usable provider)", ex)
                return None
            ex.cancel = self.server.watcher.watch(self.connection)
            try:
                return forwarder.forward(ex, plan, self)
            finally:
                self.server.watcher.unwatch(self.connection)
        finally:
            self.server.feed.finished(ex)
            self.server.record(ex, self._capture)
            self._capture = None

    # --- request bodies -------------------------------------------------------

    def _read_body(self):
        """The request body, or None after answering 413/400 for it (or when the client left)."""
        try:
            body = read_body(self.rfile, self.headers, self.server.config.max_body_bytes)
        except TooLarge as exc:
            self._reader.request_received()  # the drain has bounds of its own
            self._too_large(exc.remaining)
            return None
        except MalformedBody as exc:
            self.close_connection = True
            self.send_error_json(400, f"Malformed request body: {exc}.")
            return None
        self._reader.request_received()
        if body is None:  # the client left mid-body: nothing to forward
            self.close_connection = True
        return body

    def _too_large_message(self):
        return (f"Request body is larger than the proxy's limit of "
                f"{self.server.config.max_body_bytes / 1024 / 1024:g} MB (max_body_mb in the config).")

    def _too_large(self, remaining):
        """Answer 413, then read (and drop) what the client is still sending,
        within a bound, so that it can read the answer instead of a reset.
        ``remaining`` is the announced length, or None for a chunked body."""
        self.close_connection = True
        message = self._too_large_message()
        self.send_error_json(413, message)
        log.info("%s %s -> 413 refused: %s", self.command, self._shown_path, message)
        drain(self.rfile, self.connection, remaining)

    @property
    def _shown_path(self):
        """The request's path as the log shows it: printable, and without a sign-in code."""
        return printable(without_code(self.path or ""))

    def _refuse(self, status, message, extra_headers=None):
        """Answer early with an error, after reading the request's body, so the
        keep-alive connection stays in step (or 413/400 if the body is bad)."""
        if self._read_body() is not None:
            self.send_error_json(status, message, extra_headers)
            log.info("%s %s -> %s refused: %s", self.command, self._shown_path, status,
                     printable(message))

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
            "strategy": config.strategy,
            "config_loaded_at": server.config_loaded,
            "config_error": server.config_error,
            "restart_needed": server.restart_needed,
            "waiting_requests": server.policy.waiting,
            "connections": server.connections,
            "providers": server.policy.snapshot(),
            "usage_record": server.usage.stats(),
            "request_log": server.request_log.stats() if server.request_log is not None else None,
            "in_flight": server.feed.in_flight_rows(),
            "recent": server.feed.recent_rows(),
        }

    def _events(self):
        """``GET /events``: the live feed (:mod:`feed`) as server-sent events until the
        client leaves or the proxy stops.  First a ``status`` event (what ``/status``
        says), then ``start`` and ``end`` events as requests come and go, and a new
        ``status`` each ``EVENTS_EVERY`` seconds (with ``dropped``: events this view
        missed by reading too slowly).  It is not a request in flight: a stop does not wait for it."""
        if self._read_body() is None:
            return
        self.close_connection = True
        # A view that stops reading should fall behind (and see its drops counted)
        # within seconds, not after the kernel has buffered megabytes for it.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, EVENTS_SEND_BUFFER)
        self.send_head(200, "OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-store")],
                       None if self.http10 else CHUNKED)
        writer = ClientWriter(self.wfile, chunked=not self.http10)
        feed = self.server.feed
        watcher = feed.watch()
        try:
            next_status = 0.0
            while not self.server.stopping:
                now = time.monotonic()
                if now >= next_status:
                    snapshot = self._status()
                    snapshot["dropped"] = watcher.dropped
                    writer.write(sse.frame("status", snapshot))
                    next_status = now + EVENTS_EVERY
                event = watcher.next(max(0.0, next_status - time.monotonic()))
                if event is not None:
                    writer.write(sse.frame(*event))
            writer.end()
        except ClientGone:  # the view was closed
            pass
        finally:
            feed.unwatch(watcher)

    def _control(self, query):
        """``POST /control?action=disable|enable|cool|uncool&provider=NAME&seconds=N``:
        runtime control of the providers (``proxy.py disable`` and friends).  Nothing
        is written to the config; a restart forgets it."""
        values = {key: found[0] for key, found in parse_qs(query).items()}
        action, name = values.get("action"), values.get("provider")
        policy, config = self.server.policy, self.server.config
        try:
            seconds = float(values["seconds"]) if "seconds" in values else None
        except ValueError:  # the CLI always sends a number: this is a hand-made request
            seconds = -1.0
        if action not in ("disable", "enable", "cool", "uncool") or (seconds is not None and not (
                0 < seconds <= config.max_cooldown_seconds * 365)):
            return self._refuse(400, "action must be disable, enable, cool or uncool, and seconds a "
                                     "positive number")
        if name is None and action != "uncool":
            return self._refuse(400, f"{action} needs a provider")
        targets = config.providers if name is None else [config.provider(name)]
        if targets == [None]:
            names = ", ".join(config.provider_names)
            return self._refuse(404, f"unknown provider '{name}'; configured providers: {names}")
        if self._read_body() is None:
            return None
        changed = []
        for provider in targets:
            if action == "disable":
                policy.disable(provider, seconds)
            elif action == "enable":
                policy.enable(provider)
            elif action == "cool":
                policy.cool(provider, seconds or config.cooldown_seconds)
            elif policy.uncool(provider):
                changed.append(provider.name)
        self._send_json(200, {"action": action, "providers": [p.name for p in targets],
                              "changed": changed if action == "uncool" else [p.name for p in targets]})
        return None

    def _dashboard(self, path, query):
        """Everything under ``/dashboard``: :meth:`dashboard.Dashboard.answer` decides."""
        if self._read_body() is None:
            return None
        server = self.server
        answer = server.dashboard.answer(DashboardRequest(
            self.command, path, query, self.headers, self._offers_token(),
            lambda days: figures(server.usage.path, days, server.config.providers)))
        reason = self.responses.get(answer.status, ("",))[0]
        self.send_head(answer.status, reason, answer.headers, len(answer.body),
                       b"" if self.command == "HEAD" else answer.body)
        if answer.status >= 400:
            log.info("%s %s -> %s refused", self.command, self._shown_path, answer.status)
        return None

    def _shutdown(self, query):
        grace = None
        values = parse_qs(query).get("grace")
        if values:
            try:
                grace = max(0.0, float(values[0]))
            except ValueError:  # the user's typo: say so
                return self._refuse(400, "grace must be a number of seconds")
        if self._read_body() is None:
            return None
        self.close_connection = True
        self._send_json(200, {"status": "stopping"})
        log.info("shutdown requested")
        self.server.stop_soon(grace)
        return None

    # --- writing responses --------------------------------------------------------

    @property
    def http10(self):
        return self.request_version == "HTTP/1.0"

    def body_writer(self, chunked):
        if self._capture is not None:
            return CapturingWriter(self.wfile, chunked, self._capture)
        return ClientWriter(self.wfile, chunked=chunked)

    def send_head(self, status, reason, headers, framing, body=b""):
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
        if self._capture is not None:
            self._capture.head(status, headers, body)
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
        self.send_head(status, reason, headers, len(body), body if with_body else b"")

    def send_error_json(self, status, message, extra_headers=None):
        """An error of the proxy's own.  A refusal (4xx) says ``x-should-retry:
        false``: the same request would be refused again, and without it the
        SDKs and Claude Code retry a 401 for minutes."""
        payload = {"type": "error", "error": {"type": error_type(status), "message": message}}
        if 400 <= status < 500 and status not in RETRYABLE_REFUSALS:
            extra_headers = {"x-should-retry": "false", **(extra_headers or {})}
        self._send_json(status, payload, extra_headers)

    def send_error(self, code, message=None, explain=None):
        """http.server's own errors (malformed request line, ...), in Anthropic's shape."""
        self.close_connection = True
        try:
            self.send_error_json(code, message or self.responses.get(code, ("Error",))[0])
        except (OSError, ClientGone):  # the client is already gone
            pass

    def log_error(self, format, *args):
        if args and isinstance(args[-1], ReceiveTimeout):  # http.server's "Request timed out"
            log.info("%s: %s; connection closed", self.address_string(), args[-1])
        else:
            self.log_message(format, *args)

    def log_message(self, format, *args):
        log.debug("%s - %s", self.address_string(), printable(format % args))
