"""Starting and stopping the background daemon: ``proxy.py start|stop|release``."""

import os
import secrets
import sys
import time
import warnings

from . import process
from .daemon import (
    PROXY_SCRIPT, DaemonClient, base_url, connect_host, is_listening, load_target, on_address,
    ownership, probe, proxy_command, recorded_address, same_path, silent_message,
)
from .errors import EXIT_OK, UsageError
from .logfile import open_private
from .session import forget_session, live_sessions
from .wording import plural
from .state import LAUNCH_ID_ENV, read_pid_file, read_token, remove_pid_file, state_dir_problem

START_TIMEOUT = 10.0     # seconds `start` waits for the daemon to answer /health
STOP_GRACE = 10.0        # seconds in-flight requests get after a shutdown request
STOP_MARGIN = 5.0        # and how much longer `stop` waits for the process to exit
RACE_WAIT = 3.0          # how long a `start` that lost the port waits for the winner to answer


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
        with open_private(paths.out, truncate=True) as output:
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
    except OSError:  # nothing was written: the log is named instead
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



# --- release ------------------------------------------------------------------------


def cmd_release(args):
    target = load_target(args, lenient=True)
    return release(target, args.session, keep_running=args.keep_running, quiet=args.quiet)


def release(target, pid, keep_running=False, quiet=False):
    """Shell ``pid`` is done with the proxy: stop it unless another live shell still uses it."""
    forget_session(target.paths, pid)
    if keep_running:
        return EXIT_OK
    others = live_sessions(target.paths)
    if others:
        if not quiet:
            print(f"claude-proxy keeps running for {plural(len(others), 'other shell session')} "
                  f"(pid {', '.join(map(str, others))}); `{proxy_command(target, 'stop')}` stops it "
                  "for them too", flush=True)
        return EXIT_OK
    return stop(target, quiet=quiet)
