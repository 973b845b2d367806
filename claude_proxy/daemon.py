"""Managing the background daemon: ``proxy.py start|stop|status|env|providers|check``.

The shell layers (ClaudeProxy.psm1, claude-proxy.sh) are thin wrappers of
these commands, so everything they need to decide is decided here.

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

Exit codes: 0 ok, 1 failure, 2 bad config or usage, 3 not running (status).
"""

import concurrent.futures
import dataclasses
import http.client
import json
import os
import secrets
import shlex
import socket
import sys
import time
import warnings
from pathlib import Path
from urllib.parse import urlsplit

from . import __version__
from . import process
from .config import APP_DIR, env_file_exposed, load_config, read_env_file, resolve_config_path
from .errors import ConfigError, UpstreamError, UsageError
from .state import (
    LAUNCH_ID_ENV, StatePaths, load_or_create_token, read_pid_file, read_token, remove_pid_file,
    state_dir_problem,
)

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_NOT_RUNNING = 0, 1, 2, 3

PROXY_SCRIPT = APP_DIR / "proxy.py"
START_TIMEOUT = 10.0     # seconds `start` waits for the daemon to answer /health
STOP_GRACE = 10.0        # seconds in-flight requests get after a shutdown request
STOP_MARGIN = 5.0        # and how much longer `stop` waits for the process to exit
RACE_WAIT = 3.0          # how long a `start` that lost the port waits for the winner to answer
HTTP_TIMEOUT = 2.0       # for the daemon's own endpoints, which answer at once
LIVE_TIMEOUT = 30.0      # for one `check --live` request to a provider
LIVE_MODEL = "claude-haiku-4-5"  # what `check --live` asks for; the provider's model map applies
NO_TOKEN_PLACEHOLDER = "claude-proxy-no-token-needed"

#: The session variables ``env`` sets (a value) or clears (None), in order.
SESSION_VARIABLES = ("ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_API_KEY")
SHELLS = ("bash", "zsh", "fish", "powershell", "cmd", "json")
default_shell = process.default_shell


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


def load_target(args, lenient=False):
    path, explicit = resolve_config_path(getattr(args, "config", None))
    try:
        config = load_config(path, must_exist=explicit)
    except ConfigError:
        if not lenient:
            raise
        state_dir = _state_dir_of_broken_config(path)
        print(f"claude-proxy: warning: {path} has problems (see `proxy.py check`); "
              f"looking for the proxy in {state_dir}", file=sys.stderr)
        return Target(path, explicit, None, StatePaths(state_dir))
    return Target(path, explicit, config, StatePaths(config.state_dir))


def _state_dir_of_broken_config(path):
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8-sig"))
        value = raw.get("state_dir") if isinstance(raw, dict) else None
    except (OSError, ValueError):
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
    """How the user runs ``proxy.py COMMAND`` for this config, for messages."""
    if not target.explicit:
        return f"proxy.py {command}"
    path = str(target.config_path)
    quoted = shlex.quote(path) if os.name == "posix" else (f'"{path}"' if " " in path else path)
    return f"proxy.py {command} --config {quoted}"


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

    def _json(self, method, path, auth=True):
        """The decoded JSON of a 200 answer, or None (no answer, refused, not JSON, not 200)."""
        if not isinstance(self.port, int) or not 0 < self.port < 65536:
            return None
        headers = {"Content-Length": "0"} if method == "POST" else {}
        if auth and self.token:
            headers["x-api-key"] = self.token
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request(method, path, headers=headers)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                return None
            answer = json.loads(body)
            return answer if isinstance(answer, dict) else None
        # Nothing listening, a reset, a timeout, or something that is not our daemon:
        # all mean "this daemon did not answer", which the callers handle.
        except (OSError, http.client.HTTPException, ValueError):
            return None
        finally:
            conn.close()


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
    except (TypeError, ValueError):
        return False


# --- start --------------------------------------------------------------------


def cmd_start(args):
    target = load_target(args)
    return start(target, timeout=args.timeout, quiet=args.quiet)


def start(target, timeout=START_TIMEOUT, quiet=False, out=None):
    """Start the daemon detached and wait until it answers; idempotent."""
    out = out or sys.stdout
    config, paths = target.config, target.paths

    def say(message):
        if not quiet:
            print(message, file=out, flush=True)

    current = probe(paths, config)
    if current.running:
        if not same_path(current.status.get("config", ""), config.path):
            raise UsageError(
                f"another claude-proxy (pid {current.record['pid']}, config "
                f"{current.status.get('config')}) uses the state directory {paths.dir}; "
                f"give {config.path} its own \"state_dir\"")
        say(f"claude-proxy is already running on {current.url} (pid {current.record['pid']})")
        return EXIT_OK
    if current.record is not None:
        if current.silent:
            raise UsageError(silent_message(current, target))
        remove_pid_file(paths.pid, current.record["pid"])
        say(f"claude-proxy: removed a stale pid file (pid {current.record['pid']} is not the proxy)")

    if config.port and is_listening(config.host, config.port):
        raise UsageError(_port_taken_message(config))
    problem = state_dir_problem(paths.dir, config.path)
    if problem:
        raise UsageError(problem)
    try:
        paths.dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the state directory {paths.dir}: {exc.strerror or exc}") from None

    launch_id = secrets.token_hex(8)
    argv = [sys.executable, str(PROXY_SCRIPT), "serve", "--quiet"]
    if target.explicit:
        argv += ["--config", str(config.path)]
    env = {**os.environ, LAUNCH_ID_ENV: launch_id, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}
    try:
        with open(paths.out, "wb") as output:
            child = process.spawn_detached(argv, output=output, cwd=str(paths.dir), env=env)
    except OSError as exc:
        raise UsageError(f"could not start {sys.executable} {PROXY_SCRIPT}: {exc.strerror or exc}") from None

    record = _wait_started(child, paths, launch_id, timeout)
    if record is None:
        other = _started_by_another(config, paths)
        if other is not None:
            # Another `start` (a second shell's claude-fb) won the race for the
            # port: the proxy is up all the same.
            _stop_child(child, paths, launch_id)
            say(f"claude-proxy is already running on {other.url} (pid {other.record['pid']})")
            return EXIT_OK
        _report_failed_start(child, paths, launch_id, timeout)
    _let_go(child)
    say(f"claude-proxy started on {base_url(record['host'], record['port'])} "
        f"(pid {record['pid']}); log: {paths.log}")
    if not quiet:
        for warning in key_warnings(target):
            print(f"claude-proxy: warning: {warning}", file=sys.stderr, flush=True)
    return EXIT_OK


def key_warnings(target):
    """What a start should point out about keys: one line per enabled provider
    without its key, and one more when no provider is usable at all.

    The daemon still starts then: it answers each request with a 503 that
    names what is missing, and `status` and the shell commands work.
    """
    config = target.config
    lines = [f"provider {p.name} has no key: " + (
                 f"{p.key_problem}" if p.key_problem else
                 f"set {p.api_key_env} in {config.env_path} (or the environment)") + "; it is skipped"
             for p in config.providers if p.enabled and not p.api_key]
    if not any(p.usable for p in config.providers):
        why = "has its key" if any(p.enabled for p in config.providers) else "is enabled"
        lines.append(f"no provider is usable: every request gets a 503 until one {why}; "
                     f"after changing that, restart the proxy (`{proxy_command(target, 'stop')}`, "
                     f"then `{proxy_command(target, 'start')}`)")
    return lines


def _port_taken_message(config):
    health = DaemonClient(config.host, config.port, None, timeout=0.5).health()
    if health and health.get("status") == "ok" and "pid" in health:
        return (f"port {config.port} is already used by another claude-proxy (pid {health['pid']}) "
                f"with a different config or state directory; stop that one, or set another "
                f"\"proxy_port\" in {config.path}")
    return (f"port {config.port} on {connect_host(config.host)} is already in use by another "
            f"program; stop it, or set another \"proxy_port\" in {config.path}")


def _wait_started(child, paths, launch_id, timeout):
    """The daemon's pid record once it answers /health, or None if it exited or timed out."""
    deadline = time.monotonic() + timeout
    while True:
        exited = child.poll() is not None
        record = read_pid_file(paths.pid)
        if record is not None and record.get("launch_id") == launch_id:
            health = DaemonClient.for_record(record, paths, timeout=1.0).health()
            if health is not None and health.get("pid") == record["pid"]:
                return record
        if exited or time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def _started_by_another(config, paths, wait=RACE_WAIT):
    """After a failed start: the daemon of this config that another `start` got going, or None."""
    deadline = time.monotonic() + wait
    while True:
        current = probe(paths, config)
        if current.running and same_path(current.status.get("config", ""), config.path):
            return current
        # Only worth waiting for while something holds the port (it may be that daemon starting).
        if not (config.port and is_listening(config.host, config.port)) or time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def _report_failed_start(child, paths, launch_id, timeout):
    """Show what the daemon printed, make sure it is gone, and fail."""
    code = child.poll()
    if code is None:  # alive but never answered: do not leave it behind
        _stop_child(child, paths, launch_id)
    try:
        output = paths.out.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        output = ""
    if output:
        print(output, file=sys.stderr)
    if code is None:
        reason = f"did not answer within {timeout:g} seconds and was stopped"
    else:
        reason = f"exited during start-up (exit code {code})"
    where = f"its output is above and in {paths.out}" if output else f"see {paths.log}"
    raise UsageError(f"the proxy {reason}; {where}")


def _stop_child(child, paths, launch_id):
    """End the daemon this `start` launched (it is ours: we hold its handle)."""
    if child.poll() is not None:
        return
    record = read_pid_file(paths.pid)
    if record is not None and record.get("launch_id") == launch_id:
        process.terminate(record["pid"], record.get("identity"))
        remove_pid_file(paths.pid, record["pid"])
    child.kill()
    child.wait(5)


def _let_go(child):
    """The daemon lives on after this process; drop the handle without a ResourceWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        child.returncode = 0  # Popen would otherwise warn that it is "still running"
        del child


# --- stop -----------------------------------------------------------------------


def cmd_stop(args):
    target = load_target(args, lenient=True)
    return stop(target, grace=args.grace, quiet=args.quiet)


def stop(target, grace=STOP_GRACE, quiet=False):
    """Stop the daemon through /shutdown; by its verified pid only if it does not answer."""
    paths = target.paths

    def say(message):
        if not quiet:
            print(message, flush=True)

    record = read_pid_file(paths.pid)
    if record is None:
        if _stop_unrecorded(target, grace):
            say("claude-proxy stopped")
        else:
            say("claude-proxy is not running")
        return EXIT_OK

    pid = record["pid"]
    client = DaemonClient.for_record(record, paths, config=target.config)
    if client.shutdown(grace) is not None and _wait_exit(record, grace + STOP_MARGIN):
        remove_pid_file(paths.pid, pid)
        say(f"claude-proxy stopped (pid {pid})")
        return EXIT_OK
    owner = ownership(record)
    where = on_address(_record_url(record, target.config))
    if owner == "gone":
        remove_pid_file(paths.pid, pid)
        say(f"claude-proxy is not running (removed a stale pid file: pid {pid} is not the proxy)")
        return EXIT_OK
    if owner == "unknown":
        raise UsageError(
            f"pid {pid} from {paths.pid} does not answer {where} "
            f"and cannot be verified as the proxy, so it was left alone; if it is the proxy, end it "
            f"yourself, then delete {paths.pid}")
    if not process.terminate(pid, record.get("identity")):
        if ownership(record) == "ours":
            raise UsageError(f"could not stop the proxy (pid {pid}); end it yourself")
    remove_pid_file(paths.pid, pid)
    say(f"claude-proxy stopped (pid {pid} did not answer {where}, so it was ended by its pid)")
    return EXIT_OK


def _record_url(record, config=None):
    address = recorded_address(record, config)
    return base_url(*address) if address else None


def _wait_exit(record, timeout):
    """Wait for the daemon to exit after a shutdown request; True once it has."""
    deadline = time.monotonic() + timeout
    pid, expected = record["pid"], record.get("identity")
    while time.monotonic() < deadline:
        if expected is not None:
            if not process.is_same_process(pid, expected):
                return True
        elif not process.is_alive(pid):
            return True
        time.sleep(0.05)
    return False


def _stop_unrecorded(target, grace):
    """No pid file: a daemon of ours may still listen on the configured port.

    Only a daemon that accepts our token is asked to stop; nothing is killed.
    """
    config = target.config
    if config is None or not config.port:
        return False
    client = DaemonClient(config.host, config.port, read_token(target.paths.token))
    status = client.status()
    if status is None or not same_path(status.get("config", ""), config.path):
        return False
    if client.shutdown(grace) is None:
        return False
    deadline = time.monotonic() + grace + STOP_MARGIN
    while time.monotonic() < deadline and client.health() is not None:
        time.sleep(0.05)
    return True


# --- status ---------------------------------------------------------------------


def cmd_status(args):
    target = load_target(args, lenient=True)
    return status(target, as_json=args.json)


def status(target, as_json=False, environ=None, out=None):
    out = out or sys.stdout
    environ = os.environ if environ is None else environ
    current = probe(target.paths, target.config)
    silent = current.silent
    if current.running or silent:
        url = current.url
    elif target.config is not None and target.config.port:
        url = target.config.url
    else:
        url = None
    session = session_mode(environ.get("ANTHROPIC_BASE_URL"), url)
    if as_json:
        report = {"running": current.running,
                  "state": "running" if current.running else "not answering" if silent else "not running",
                  "config": str(target.config_path), "state_dir": str(target.paths.dir),
                  "log": str(target.paths.log), "session": session}
        if current.running:
            report.update(current.status, url=url)
        elif silent:
            report.update(pid=current.record["pid"], url=url)
        print(json.dumps(report, indent=2), file=out)
    else:
        print(format_status(current, target, session, silent), file=out)
    if current.running:
        return EXIT_OK
    return EXIT_FAILURE if silent else EXIT_NOT_RUNNING


def session_mode(session_url, proxy_url):
    """How a session with ANTHROPIC_BASE_URL=``session_url`` uses the proxy at ``proxy_url``."""
    if not session_url:
        return {"mode": "normal", "provider": None, "base_url": None}
    mode = {"mode": "other", "provider": None, "base_url": session_url}
    if not proxy_url:
        return mode
    mine, theirs = urlsplit(proxy_url), urlsplit(session_url.strip())
    try:
        same_address = (mine.port == theirs.port and theirs.scheme == "http" and (
            mine.hostname == theirs.hostname
            or {mine.hostname, theirs.hostname} <= {"127.0.0.1", "localhost", "::1"}))
    except ValueError:  # a port that is not a number: not our address
        same_address = False
    if not same_address:
        return mode
    path = theirs.path.rstrip("/")
    if path == "":
        return {**mode, "mode": "fallback"}
    prefix = "/provider/"
    if path.startswith(prefix) and "/" not in path[len(prefix):]:
        return {**mode, "mode": "pinned", "provider": path[len(prefix):]}
    return mode


def describe_session(session):
    if session["mode"] == "normal":
        return "normal (ANTHROPIC_BASE_URL is not set; not using the proxy)"
    if session["mode"] == "fallback":
        return f"fallback through the proxy ({session['base_url']})"
    if session["mode"] == "pinned":
        return f"pinned to {session['provider']} ({session['base_url']})"
    return f"not through this proxy (ANTHROPIC_BASE_URL={session['base_url']})"


def format_duration(seconds):
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def plural(count, noun):
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def describe_provider_state(row):
    state = row.get("state")
    if state == "cooling":
        return f"cooling for {format_duration(row.get('cooldown_seconds_left') or 0)}"
    if state == "no_key":
        return f"{'unusable' if row.get('key_problem') else 'no'} key ({row.get('key_env')})"
    return state or "?"


def format_status(current, target, session, silent=False):
    lines = []
    if silent:
        # Consistent with `start` and the shell commands: "is running but does not answer".
        lines.append(f"claude-proxy is running (pid {current.record['pid']}) but does not answer "
                     f"{on_address(current.url)} (config: {target.config_path})")
        lines.append(f"  it may be hung; see its log for why: {target.paths.log}")
        lines.append(f"  `{proxy_command(target, 'stop')}` ends it (by its pid); then start it again "
                     f"(`{proxy_command(target, 'start')}`, or claude-fb)")
        lines.append(f"  this session: {describe_session(session)}")
        return "\n".join(lines)
    if not current.running:
        lines.append(f"claude-proxy is not running (config: {target.config_path})")
        if current.record is not None:
            lines.append(f"  the pid file names pid {current.record['pid']}, which does not answer "
                         f"{on_address(current.url)}")
            if ownership(current.record) == "unknown":
                lines.append(f"  that pid is alive but cannot be verified as the proxy, so it is left "
                             f"alone; if it is not the proxy, delete {target.paths.pid}")
            else:
                lines.append(f"  `{proxy_command(target, 'stop')}` removes the stale pid file")
        lines.append(f"  this session: {describe_session(session)}")
        lines.append(f"  log: {target.paths.log}")
        return "\n".join(lines)
    s = current.status
    lines.append(f"claude-proxy {s.get('version', '?')} is running (pid {s.get('pid')}, "
                 f"up {format_duration(s.get('uptime_seconds') or 0)})")
    lines.append(f"  url:      {current.url}")
    lines.append(f"  config:   {s.get('config')}")
    lines.append(f"  log:      {target.paths.log}")
    lines.append(f"  this session: {describe_session(session)}")
    rows = s.get("providers") or []
    lines.append("  providers, in fallback order:")
    width = max((len(r.get("name", "")) for r in rows), default=0)
    state_width = max((len(describe_provider_state(r)) for r in rows), default=0)
    for number, row in enumerate(rows, start=1):
        tokens = row.get("tokens") or {}
        lines.append(
            f"    {number}. {row.get('name', ''):<{width}}  {describe_provider_state(row):<{state_width}}  "
            f"{plural(row.get('requests', 0), 'request')}, {plural(row.get('failures', 0), 'failure')}, tokens "
            f"in {tokens.get('input', 0):,} out {tokens.get('output', 0):,} "
            f"cache read {tokens.get('cache_read', 0):,} write {tokens.get('cache_creation', 0):,}")
        if row.get("last_error"):
            lines.append(f"       last error: {row['last_error']}")
        if row.get("key_problem"):
            lines.append(f"       {row['key_problem']}")
        if key_set_since_start(target.config, row):
            lines.append(f"       {row.get('key_env')} is set now, but the proxy reads keys when it "
                         f"starts: restart it (`{proxy_command(target, 'stop')}`, then claude-fb)")
    return "\n".join(lines)


def key_set_since_start(config, row):
    """The running daemon found no key for this provider, but the config on disk has one now."""
    if config is None or row.get("state") != "no_key":
        return False
    provider = config.provider(row.get("name", ""))
    return provider is not None and bool(provider.api_key)


# --- env --------------------------------------------------------------------------


def cmd_env(args):
    target = load_target(args)
    return env(target, args.shell, args.provider, announce=args.announce)


def env(target, shell, provider_name=None, announce=False, out=None):
    """Print the session variables for ``shell`` (pinned to a provider if named)."""
    out = out or sys.stdout
    config, paths = target.config, target.paths
    pinned = known_provider(config, provider_name) if provider_name else None
    current = probe(paths, config)
    if current.running and not same_path(current.status.get("config", ""), config.path):
        current = Probe(None, None, config)  # another config's daemon: describe this config instead
    if current.running:
        url = current.url
    elif config.port:
        url = base_url(config.host, config.port)
    else:
        raise UsageError("the proxy is not running and picks its port when it starts "
                         "(\"proxy_port\": 0); run `proxy.py start` first")
    if pinned is not None:
        url = f"{url}/provider/{pinned.name}"
    if config.require_token:
        try:
            token = load_or_create_token(paths.token)
        except OSError as exc:
            problem = state_dir_problem(paths.dir, config.path)
            if problem:
                raise UsageError(problem) from None
            raise UsageError(f"cannot create the client token in {paths.dir}: {exc.strerror or exc}") from None
    else:
        token = NO_TOKEN_PLACEHOLDER
    variables = {"ANTHROPIC_BASE_URL": url, "ANTHROPIC_AUTH_TOKEN": token, "ANTHROPIC_API_KEY": None}
    summary = env_summary(config, current, url, pinned)
    if shell == "json":
        print(json.dumps({
            "variables": variables,
            "mode": "pinned" if pinned else "fallback",
            "provider": pinned.name if pinned else None,
            "providers": config.provider_names,
            "url": url,
            "summary": summary,
        }, indent=2), file=out)
    else:
        print(render_env(variables, shell), file=out)
    if not current.running:
        # On stderr: stdout is evaluated by the shell.
        if current.silent:
            print(f"claude-proxy: warning: {silent_message(current, target)}", file=sys.stderr)
        else:
            print(f"claude-proxy: warning: the proxy is not running, so these settings lead nowhere "
                  f"yet; start it with `{proxy_command(target, 'start')}`", file=sys.stderr)
    if announce:
        print(summary, file=sys.stderr)
    return EXIT_OK


def env_summary(config, current, url, pinned):
    """One line: where this session now goes, and which providers lack a key."""
    rows = (current.status or {}).get("providers") if current.running else None
    if rows is None:  # not running: what this config would do
        rows = [{"name": p.name, "state": "disabled" if not p.enabled else
                 ("ready" if p.api_key else "no_key"), "key_env": p.api_key_env}
                for p in config.providers]
    if pinned is not None:
        row = next((r for r in rows if r.get("name") == pinned.name), {})
        line = f"claude-proxy: this session is pinned to {pinned.name} ({url})"
        if key_set_since_start(config, row):
            line += (f"; warning: {pinned.name} had no key when the proxy started, so requests will "
                     f"fail until it is restarted")
        elif row.get("state") == "no_key":
            line += (f"; warning: {pinned.name} has no usable key ({row.get('key_env')}), so requests "
                     "will fail")
        elif row.get("state") == "disabled":
            line += f"; warning: {pinned.name} is disabled, so requests will fail"
        return line
    order = " > ".join(r["name"] for r in rows if r.get("state") not in ("no_key", "disabled"))
    line = f"claude-proxy: this session now goes through {url} (fallback order: {order or 'none usable'})"
    skipped = [f"{r['name']} ({why_skipped(config, r)})"
               for r in rows if r.get("state") in ("no_key", "disabled")]
    if skipped:
        line += "; skipped: " + ", ".join(skipped)
    return line


def why_skipped(config, row):
    """Why a provider of the daemon's /status is not in the fallback order, in a few words."""
    if row.get("state") == "disabled":
        return "disabled"
    if key_set_since_start(config, row):
        return f"no key when the proxy started; restart it to use {row.get('key_env')}"
    if row.get("key_problem"):
        return f"{row.get('key_env')} cannot be sent: see `proxy.py check`"
    return f"{row.get('key_env')} not set"


def render_env(variables, shell):
    """Shell code that sets each variable with a value and removes each one without."""
    lines = []
    for name, value in variables.items():
        if shell in ("bash", "zsh"):
            lines.append(f"unset {name}" if value is None else f"export {name}={shlex.quote(value)}")
        elif shell == "fish":
            lines.append(f"set -e {name}" if value is None else f"set -gx {name} {_fish_quote(value)}")
        elif shell == "powershell":
            lines.append(f"Remove-Item Env:{name} -ErrorAction SilentlyContinue" if value is None
                         else f"$env:{name} = {_powershell_quote(value)}")
        elif shell == "cmd":
            lines.append(f"set {name}=" if value is None else f'set "{name}={_cmd_value(value)}"')
        else:
            raise UsageError(f"unknown shell {shell!r}; choose one of {', '.join(SHELLS)}")
    return "\n".join(lines)


def _fish_quote(value):
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _powershell_quote(value):
    # PowerShell also takes the typographic single quotes as quotes: double them all.
    return "'" + "".join(c * 2 if c in "'\u2018\u2019\u201a\u201b" else c for c in value) + "'"


def _cmd_value(value):
    if any(c in value for c in '"%!\r\n'):
        raise UsageError(f"cannot write {value!r} safely for cmd.exe; use --shell powershell")
    return value


# --- providers ----------------------------------------------------------------------


def cmd_providers(args):
    """The configured names; with a NAME, that provider's name as configured (or an error)."""
    target = load_target(args)
    if args.name:
        print(known_provider(target.config, args.name).name)
        return EXIT_OK
    for name in target.config.provider_names:
        print(name)
    return EXIT_OK


def known_provider(config, name):
    provider = config.provider(name)
    if provider is None:
        raise UsageError(f"unknown provider \"{name}\"; configured providers: "
                         f"{', '.join(config.provider_names) or 'none'}")
    return provider


# --- check --------------------------------------------------------------------------


def cmd_check(args):
    path, explicit = resolve_config_path(args.config)
    return check(path, explicit, live=args.live)


def check(path, explicit, live=False, environ=None, out=None):
    """Validate the config and .env, print every finding; 0 unless there is a problem."""
    out = out or sys.stdout
    environ = os.environ if environ is None else environ
    problems, warnings_ = [], []

    def report(kind, message):
        if kind == "problem":
            problems.append(message)
        elif kind == "warning":
            warnings_.append(message)
        print(f"{kind}: {message}", file=out, flush=True)

    try:
        config = load_config(path, environ=environ, must_exist=explicit)
    except ConfigError as exc:
        for problem in exc.problems:
            report("problem", problem)
        return _check_summary(problems, warnings_, out)

    if config.exists:
        report("ok", f"config {config.path}")
    else:
        report("warning", f"no config at {config.path}: using the built-in defaults "
                          "(copy config.example.json to config.json to change them)")
    env_exists = config.env_path.is_file()
    report("ok" if env_exists else "warning",
           f".env {config.env_path}" + ("" if env_exists else " does not exist (keys come from "
                                                               "the environment only)"))
    if env_exists:
        try:
            mode = config.env_path.stat().st_mode
        except OSError:  # gone meanwhile, or not ours to stat: the read below reports it
            mode = 0
        if env_file_exposed(mode):
            report("warning", f".env {config.env_path} can be read by other users (mode "
                              f"{mode & 0o777:04o}); run `chmod 600 {shlex.quote(str(config.env_path))}`")
    for warning in config.warnings:
        report("warning", warning)
    dotenv, _ = read_env_file(config.env_path)
    used = {p.api_key_env for p in config.providers}
    for name in dotenv:
        if name not in used and ("KEY" in name or "TOKEN" in name):
            report("warning", f"{config.env_path}: {name} is not the api_key_env of any provider "
                              f"(they use {', '.join(sorted(used))}); a typo?")
    for p in config.providers:
        if not p.enabled:
            report("ok", f"provider {p.name}: disabled")
        elif p.api_key:
            source = "the environment" if p.key_source == "environment" else p.key_source
            report("ok", f"provider {p.name}: {p.base_url}, key {p.api_key_env} from {source}")
        else:
            report("warning", f"provider {p.name}: {p.missing_key(config.env_path)}; it will be skipped")
    if not any(p.usable for p in config.providers):
        report("problem", "no provider is usable: set at least one provider's key")
    state_problem = state_dir_problem(config.state_dir, config.path)
    if state_problem:
        report("problem", state_problem)
    if not config.require_token:
        report("ok", "require_token is false: the proxy accepts any key")
    elif not state_problem:
        report("ok", f"client token: {StatePaths(config.state_dir).token} "
                     "(created on first start; `proxy.py env` hands it to clients)")

    if live:
        for p, (kind, message) in zip(config.providers, live_check(config)):
            report(kind, f"provider {p.name}: {message}")
    return _check_summary(problems, warnings_, out)


def _check_summary(problems, warnings_, out):
    def count(n, word):
        return f"{n} {word}{'' if n == 1 else 's'}"

    verdict = "config has problems" if problems else "config is usable"
    print(f"check: {verdict} ({count(len(problems), 'problem')}, "
          f"{count(len(warnings_), 'warning')})", file=out)
    return EXIT_FAILURE if problems else EXIT_OK


def live_check(config):
    """One small request to each provider, concurrently; ``(kind, message)`` per provider.

    The request is ``POST /v1/messages`` with ``max_tokens: 1`` and a one-word
    prompt, for ``claude-haiku-4-5`` through the provider's model map: it
    proves reachability, the key and the model mapping for a few tokens.
    """
    from .upstream import Upstreams

    upstreams = Upstreams(config.providers)
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(config.providers))) as pool:
            return list(pool.map(lambda p: _live_check_one(upstreams, p), config.providers))
    finally:
        upstreams.close()


def _live_check_one(upstreams, provider):
    from .upstream import upstream_headers

    if not provider.enabled:
        return "ok", "skipped (disabled)"
    if not provider.api_key:
        return "warning", "skipped (no key)"
    model = provider.map_model(LIVE_MODEL)
    body = json.dumps({"model": model, "max_tokens": 1,
                       "messages": [{"role": "user", "content": "ping"}]}).encode()
    client_headers = [("anthropic-version", "2023-06-01"), ("content-type", "application/json"),
                      ("user-agent", f"claude-proxy/{__version__} check")]
    headers = upstream_headers(provider, client_headers, len(body))
    timed = dataclasses.replace(provider, read_timeout=min(provider.read_timeout, LIVE_TIMEOUT))
    started = time.monotonic()
    try:
        response = upstreams.send(timed, "POST", provider.base_path + "/v1/messages", headers, body)
        answer = response.read_all(64 * 1024)
    except UpstreamError as exc:
        return "problem", f"unreachable at {provider.base_url}: {exc.kind} ({_scrub(exc.detail, provider)})"
    ms = (time.monotonic() - started) * 1000
    detail = _scrub(_error_detail(answer), provider)
    status = response.status
    if 200 <= status < 300:
        return "ok", f"reachable, key accepted, model {model} answered in {ms:.0f} ms"
    if status in (401, 403):
        return "problem", f"key rejected ({status}{detail}) after {ms:.0f} ms; check {provider.api_key_env}"
    if status == 429 or status >= 500:
        return "warning", (f"reachable, but answering {status}{detail} right now ({ms:.0f} ms); "
                           "the proxy fails over from it")
    return "problem", (f"request refused ({status}{detail}) after {ms:.0f} ms; check base_url and "
                       f"the model map (sent model {model})")


def _error_detail(body):
    try:
        error = json.loads(body).get("error", {})
        text = f"{error.get('type', '')}: {error.get('message', '')}".strip(": ")
    except (ValueError, AttributeError):
        return ""
    return f" {text[:200]}" if text else ""


def _scrub(text, provider):
    """Provider messages sometimes quote the key they were sent; never show it."""
    if provider.api_key and provider.api_key in text:
        text = text.replace(provider.api_key, "***")
    return text
