"""Running the proxy process: ``proxy.py serve``.

The start-up banner, the log, the pid file and token, and stopping on a
signal or a ``/shutdown`` request.  The background daemon (``proxy.py
start``) runs exactly this, detached.  The HTTP server itself is
:mod:`http_server`.
"""

import logging
import os
import signal
import sys
import threading

from . import __version__
from .errors import UsageError
from .http_server import ProxyServer
from .logfile import setup_logging
from .state import (StatePaths, load_or_create_token, remove_pid_file, state_dir_problem,
                    write_pid_file)

log = logging.getLogger("claude_proxy")

def banner(server):
    """The short start-up text: where it listens, the providers in order, what is missing."""
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
            state = f"NO KEY: {p.missing_key(config.env_path)}; skipped"
        kind = " [OpenAI-compatible]" if p.type == "openai" else ""
        lines.append(f"  {number}. {p.name:<12} {p.base_url}{kind}  ({state})")
    if not any(p.usable for p in config.providers):
        lines.append("  no provider is usable yet: requests will get a 503 explaining what is missing")
    if config.require_token:
        lines.append(f"  client token: {server.token_path} (`proxy.py env` prints the variables to set)")
    else:
        lines.append("  require_token is false: API requests need no token (status and shutdown do)")
    return "\n".join(lines)


def _stop_on_signals(server):
    """SIGTERM/SIGINT (SIGBREAK on Windows) stop the server gracefully; a second one at once."""
    def on_signal(signum, frame):
        server.stop_soon(0 if server.stopping else None)

    for name in ("SIGTERM", "SIGINT", "SIGBREAK"):
        if hasattr(signal, name):
            try:
                signal.signal(getattr(signal, name), on_signal)
            except ValueError:  # not the main thread (tests): signals are not ours to take
                pass


def _reload_on_sighup(server, attached=None):
    """SIGHUP (POSIX) reloads the config, as ``proxy.py reload`` does: for the
    background daemon, and under ``nohup``.  A proxy run in a terminal
    (``attached``: its stderr is one) keeps the default, so that closing the
    terminal stops it, as it stops every program started there."""
    if not hasattr(signal, "SIGHUP"):
        return
    if attached is None:
        attached = sys.stderr is not None and sys.stderr.isatty()
    if attached and signal.getsignal(signal.SIGHUP) is signal.SIG_DFL:
        return

    def on_signal(signum, frame):  # a signal handler must not wait for a lock: a thread reloads
        threading.Thread(target=server.reload, args=("SIGHUP",), name="reload", daemon=True).start()

    try:
        signal.signal(signal.SIGHUP, on_signal)
    except ValueError:  # not the main thread (tests): signals are not ours to take
        pass


def run(config, quiet=False, loader=None):
    """Serve until a shutdown request or a signal; returns the exit code.  ``loader()``
    reads the config again for a reload (see :meth:`ProxyServer.reload`)."""
    paths = StatePaths(config.state_dir)
    problem = state_dir_problem(paths.dir, config.path)
    if problem:
        raise UsageError(problem)
    try:
        token = load_or_create_token(paths.token)  # /status and /shutdown always need it
        setup_logging(paths, quiet)
    except OSError as exc:
        raise UsageError(f"cannot use the state directory {paths.dir}: {exc.strerror or exc}") from None
    server = ProxyServer(config, token, paths.token, loader)
    _stop_on_signals(server)
    _reload_on_sighup(server)  # before the pid file exists: whoever reads it may signal at once
    write_pid_file(paths.pid, host=config.host, port=server.port, config_path=config.path)
    for warning in config.warnings:
        log.warning("%s", warning)
    for p in config.providers:
        if p.enabled and not p.api_key:
            log.warning("%s: %s; skipped", p.name, p.missing_key(config.env_path),
                        extra={"console": False})  # the banner says it on the console
    if not quiet:
        print(banner(server), file=sys.stderr, flush=True)
    log.info("started: pid %s on %s, providers %s", os.getpid(), server.url,
             ", ".join(p.name for p in config.providers if p.usable) or "none usable")

    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        remove_pid_file(paths.pid, os.getpid())
        log.info("stopped")
    return 0
