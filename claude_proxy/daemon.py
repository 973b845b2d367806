"""Finding the background daemon and talking to it.

The commands that manage it live beside this module, one family each:
``lifecycle`` (start, stop, release), ``status``, ``session`` (env,
providers, the shells that use the proxy) and ``check``.  The shell layers
(ClaudeProxy.psm1, claude-proxy.sh, claude-proxy.fish) are thin wrappers
of those commands, so everything they need to decide is decided here.

How the commands know the daemon:

- The pid file in the state directory names the daemon's pid, its process
  identity (see :mod:`process`), its address and its config.
- A daemon is *running* when it answers ``GET /status`` at that address with
  the client token from the same state directory, and reports that pid.  The
  token proves it is ours; nothing is ever matched by process name.
- A pid is signalled only when ``stop`` cannot reach the daemon over HTTP and
  the process still has the identity the daemon recorded.  A record whose pid
  is gone or belongs to another process now is stale: it is removed, and the
  process, if any, is left alone.
"""

import dataclasses
import http.client
import json
import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlencode

from . import process
from .config import APP_DIR, load_config, resolve_config_path
from .errors import ConfigError, UsageError
from .state import StatePaths, read_pid_file, read_token

HTTP_TIMEOUT = 2.0       # for the daemon's own endpoints, which answer at once
PROXY_SCRIPT = APP_DIR / "proxy.py"

# --- which config, which state directory ------------------------------------


@dataclasses.dataclass
class Target:
    """The config a command acts on, and its state files.

    ``config`` is None only for ``stop`` and ``status`` on a config that has
    problems: they still find the daemon through the state directory.
    """

    config_path: Path
    explicit: bool
    config: object
    paths: StatePaths


def load_target(args, lenient=False, warn=True):
    """The config ``args`` name, loaded.  ``lenient``: a config with problems is
    no error (the daemon is found through its state directory), only a warning
    unless not ``warn``."""
    path, explicit = resolve_config_path(getattr(args, "config", None))
    try:
        config = load_config(path, must_exist=explicit)
    except ConfigError:
        if not lenient:
            raise
        state_dir = state_dir_of_broken_config(path)
        if warn:
            print(f"claude-proxy: warning: {path} has problems (see `proxy.py check`); "
                  f"looking for the proxy in {state_dir}", file=sys.stderr)
        return Target(path, explicit, None, StatePaths(state_dir))
    return Target(path, explicit, config, StatePaths(config.state_dir))


def state_dir_of_broken_config(path):
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8-sig"))
        value = raw.get("state_dir") if isinstance(raw, dict) else None
    except (OSError, ValueError):  # unreadable or not JSON: the config's folder, as by default
        value = None
    if isinstance(value, str) and value:
        return (Path(path).parent / Path(value).expanduser()).resolve()
    return Path(path).parent


# --- talking to a daemon ------------------------------------------------------


def connect_host(host):
    """Where a client on this machine reaches a daemon listening on ``host``."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def base_url(host, port):
    host = connect_host(host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def recorded_address(record, config=None):
    """``(host, port)`` where a pid record says its daemon listens, or None.

    A record without a usable port (written by hand, or damaged) stands for
    the daemon of ``config``, so the config's address is used when given.
    """
    port = record.get("port")
    if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536:
        return record.get("host") or "127.0.0.1", port
    if config is not None and config.port:
        return config.host, config.port
    return None


def on_address(url):
    """``on URL`` for messages, or what to say when a pid file names no address."""
    return f"on {url}" if url else "(its pid file names no port)"


def proxy_command(target, command):
    """How the user runs ``proxy.py COMMAND`` for this config, for messages:
    a command line that works from any folder (this Python, proxy.py's path)."""
    line = f"{process.python_command()} {process.quote_for_shell(str(PROXY_SCRIPT))} {command}"
    if target.explicit:
        line += f" --config {process.quote_for_shell(str(target.config_path))}"
    return line


class DaemonClient:
    """The daemon's own endpoints at one address.  Every failure reads as None."""

    def __init__(self, host, port, token, timeout=HTTP_TIMEOUT):
        self.host = connect_host(host)
        self.port = port
        self.token = token
        self.timeout = timeout

    @classmethod
    def for_record(cls, record, paths, timeout=HTTP_TIMEOUT, config=None):
        host, port = recorded_address(record, config) or ("127.0.0.1", None)
        return cls(host, port, read_token(paths.token), timeout)

    def health(self):
        return self._json("GET", "/health", auth=False)

    def status(self):
        return self._json("GET", "/status")

    def shutdown(self, grace):
        return self._json("POST", f"/shutdown?grace={grace:g}")

    def control(self, action, provider=None, seconds=None):
        """``(status, JSON answer)`` of a runtime-control request; ``(None, None)`` if no answer."""
        query = {"action": action}
        if provider is not None:
            query["provider"] = provider
        if seconds is not None:
            query["seconds"] = f"{seconds:g}"
        return self._call("POST", "/control?" + urlencode(query))

    def reload(self):
        """``(status, JSON answer)`` of ``POST /reload``; ``(None, None)`` if no answer."""
        return self._call("POST", "/reload")

    def dashboard_link(self):
        """``(status, JSON answer)`` of a request for a one-time dashboard sign-in link."""
        return self._call("POST", "/dashboard/link")

    def _json(self, method, path, auth=True):
        """The decoded JSON of a 200 answer, or None (no answer, refused, not JSON, not 200)."""
        status, answer = self._call(method, path, auth)
        return answer if status == 200 else None

    def _call(self, method, path, auth=True):
        """``(status, decoded JSON object or None)``, or ``(None, None)`` without an answer."""
        if not isinstance(self.port, int) or not 0 < self.port < 65536:
            return None, None
        headers = {"Content-Length": "0"} if method == "POST" else {}
        if auth and self.token:
            headers["x-api-key"] = self.token
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request(method, path, headers=headers)
            response = conn.getresponse()
            body = response.read()
        # Nothing listening, a reset, a timeout, or something that is not our daemon:
        # all mean "this daemon did not answer", which the callers handle.
        except (OSError, http.client.HTTPException):
            return None, None
        finally:
            conn.close()
        try:
            answer = json.loads(body)
        except ValueError:  # not our daemon's JSON
            return response.status, None
        return response.status, answer if isinstance(answer, dict) else None


def is_listening(host, port, timeout=0.5):
    """True if something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((connect_host(host), port), timeout=timeout):
            return True
    except OSError:  # refused, unreachable, timed out: nobody is listening there
        return False


@dataclasses.dataclass
class Probe:
    """What the pid file says, and whether that daemon answers."""

    record: dict | None
    status: dict | None  # /status from the recorded daemon, with our token
    config: object = None  # its address stands in for a record without a port

    @property
    def running(self):
        return self.status is not None

    @property
    def url(self):
        """Where the recorded daemon was asked, or None if the record names no address."""
        address = recorded_address(self.record, self.config)
        return base_url(*address) if address else None

    @property
    def silent(self):
        """The recorded daemon is alive and verified as ours, but did not answer (hung)."""
        return not self.running and self.record is not None and ownership(self.record) == "ours"


def probe(paths, config=None):
    record = read_pid_file(paths.pid)
    if record is None:
        return Probe(None, None, config)
    status = DaemonClient.for_record(record, paths, config=config).status()
    if status is not None and status.get("pid") != record["pid"]:
        status = None  # someone else answers at that address
    return Probe(record, status, config)


def silent_message(current, target):
    """The one line for a recorded daemon that is alive but does not answer."""
    return (f"the proxy (pid {current.record['pid']}) is running but does not answer "
            f"{on_address(current.url)}; see {target.paths.log}, then run "
            f"`{proxy_command(target, 'stop')}` and start it again")


def ownership(record):
    """Is the recorded pid still the daemon that wrote the record?

    ``"ours"``: alive with the recorded identity.  ``"gone"``: no such process,
    or another process has the pid now (stale record).  ``"unknown"``: alive,
    but its identity cannot be checked (a record without one, or no way to
    read it); such a process is never signalled.
    """
    pid, expected = record.get("pid"), record.get("identity")
    if not process.is_alive(pid):
        return "gone"
    actual = process.identity(pid)
    if expected is None or actual is None:
        return "unknown"
    return "ours" if actual == expected else "gone"


def same_path(a, b):
    try:
        return os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))
    except (TypeError, ValueError):  # not a path (a status without "config"): not the same
        return False



def known_provider(config, name):
    provider = config.provider(name)
    if provider is None:
        raise UsageError(f"unknown provider \"{name}\"; configured providers: "
                         f"{', '.join(config.provider_names) or 'none'}")
    return provider

