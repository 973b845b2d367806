"""``proxy.py status``: is the daemon running, how this session uses it, each provider."""

import json
import os
import sys
from urllib.parse import urlsplit

from .daemon import load_target, on_address, ownership, probe, proxy_command
from .errors import EXIT_FAILURE, EXIT_NOT_RUNNING, EXIT_OK
from .errors import ProxyError
from .state import read_token
from .reload import local_time
from .routing import ANY_MODEL
from .usage_report import today_by_provider
from .wording import (describe_keys, describe_provider_state, format_duration, key_set_since_start, plural,
                      where_next)


def cmd_status(args):
    target = load_target(args, lenient=True)
    return status(target, as_json=args.json)


def status(target, as_json=False, environ=None, out=None):
    out = out or sys.stdout
    environ = os.environ if environ is None else environ
    current = probe(target.paths, target.config)
    silent = current.silent
    url = proxy_url_of(current, target)
    session = this_session(environ, current, target)
    today = usage_today(target)
    if as_json:
        report = {"running": current.running,
                  "state": "running" if current.running else "not answering" if silent else "not running",
                  "config": str(target.config_path), "state_dir": str(target.paths.dir),
                  "log": str(target.paths.log), "session": session, "today": today}
        if current.running:
            report.update(current.status, url=url)
        elif silent:
            report.update(pid=current.record["pid"], url=url)
        print(json.dumps(report, indent=2), file=out)
    else:
        print(format_status(current, target, session, silent, today), file=out)
    if current.running:
        return EXIT_OK
    return EXIT_FAILURE if silent else EXIT_NOT_RUNNING


def proxy_url_of(current, target):
    """Where the proxy of ``target`` is (or would be): the recorded address, else the config's; or None."""
    if current.running or current.silent:
        return current.url
    if target.config is not None and target.config.port:
        return target.config.url
    return None


def this_session(environ, current, target):
    """How the session with ``environ`` uses the proxy (:func:`session_mode`), with
    ``token_ok`` when the running proxy wants a token: is the session's the proxy's?"""
    session = session_mode(environ.get("ANTHROPIC_BASE_URL"), proxy_url_of(current, target))
    if current.running and session["mode"] in ("fallback", "pinned", "strategy") \
            and current.status.get("require_token"):
        offered = environ.get("ANTHROPIC_AUTH_TOKEN") or environ.get("ANTHROPIC_API_KEY")
        session["token_ok"] = offered == read_token(target.paths.token)
    return session


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
    for prefix, kind, key in (("/provider/", "pinned", "provider"), ("/strategy/", "strategy", "strategy")):
        if path.startswith(prefix) and "/" not in path[len(prefix):]:
            return {**mode, "mode": kind, key: path[len(prefix):]}
    return mode


def describe_session(session):
    if session["mode"] == "normal":
        return "normal (ANTHROPIC_BASE_URL is not set; not using the proxy)"
    if session["mode"] == "fallback":
        return f"fallback through the proxy ({session['base_url']})"
    if session["mode"] == "pinned":
        return f"pinned to {session['provider']} ({session['base_url']})"
    if session["mode"] == "strategy":
        return f"through the proxy with strategy {session['strategy']} ({session['base_url']})"
    return f"not through this proxy (ANTHROPIC_BASE_URL={session['base_url']})"




def usage_today(target):
    """Today's figures per provider from usage.db (a list, [] when there are none), or
    ``{"error": ...}`` when it cannot be read."""
    config = target.config
    try:
        return today_by_provider(target.paths.usage, config.prices if config else {},
                                 config.provider_names if config else ())
    except ProxyError as exc:
        return {"error": str(exc)}


def format_today(today, record):
    """The "today" lines of the status: per provider, requests, tokens and cost."""
    lines = []
    if isinstance(today, dict):
        lines.append(f"  today: {today['error']}")
    elif not today:
        lines.append("  today: no requests yet")
    else:
        lines.append("  today, per provider (local time; `proxy.py usage` for more):")
        width = max(len(row["provider"] or "(none)") for row in today)
        for row in today:
            cost = row["cost_usd"]
            parts = [plural(row["requests"], "request")]
            if row["failovers"]:
                parts.append(plural(row["failovers"], "failover"))
            if row["failures"]:
                parts.append(plural(row["failures"], "failure"))
            lines.append(
                f"    {row['provider'] or '(none)':<{width}}  {', '.join(parts)}, tokens in {row['input_tokens']:,} "
                f"out {row['output_tokens']:,} cache read {row['cache_read_input_tokens']:,} "
                f"write {row['cache_creation_input_tokens']:,}, cost "
                f"{'?' if cost is None else f'${cost:,.2f}'}")
    record = record or {}
    trouble = []
    if record.get("dropped"):
        trouble.append(f"{plural(record['dropped'], 'request')} not recorded (the writer was behind)")
    if record.get("unwritten"):
        trouble.append(f"{plural(record['unwritten'], 'request')} not written")
    if record.get("problem"):
        trouble.append(record["problem"])
    if trouble:
        lines.append(f"  usage record: {'; '.join(trouble)}")
    return lines


def format_status(current, target, session, silent=False, today=None):
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
    error = s.get("config_error")
    if error:
        lines.append(f"  config error since {local_time(error['since'])}: {error['message']}")
        lines.append("    the proxy goes on with the config it had; fix the file (it is read again "
                     "when saved)")
    for line in s.get("restart_needed") or ():
        lines.append(f"  {line}")
    lines.append(f"  log:      {target.paths.log}")
    lines.append(f"  this session: {describe_session(session)}")
    rows = s.get("providers") or []
    strategy = session.get("strategy") or s.get("strategy") or "fallback"
    if session["mode"] == "pinned" or (session["mode"] in ("fallback", "strategy") and strategy == "fallback"):
        lines.append(f"  next request: {where_next(rows, session['provider'])}")
    elif session["mode"] in ("fallback", "strategy"):
        lines.append(f"  next request: by strategy {strategy} among the ready providers, cooling ones last")
    if session.get("token_ok") is False:
        lines.append("  warning: this session's ANTHROPIC_AUTH_TOKEN is not the proxy's client token, so "
                     "its requests get a 401; run claude-fb (or claude-switch) again in this session")
    if s.get("waiting_requests"):
        lines.append(f"  waiting: {plural(s['waiting_requests'], 'request')} waiting for a provider "
                     "to recover (wait_when_all_fail)")
    lines.append(f"  strategy: {s.get('strategy', 'fallback')} (the default for sessions; "
                 "a session can choose its own with claude-fb's strategy option)")
    lines.append("  providers, in config order:")
    width = max((len(r.get("name", "")) for r in rows), default=0)
    state_width = max((len(describe_provider_state(r)) for r in rows), default=0)
    for number, row in enumerate(rows, start=1):
        tokens = row.get("tokens") or {}
        lines.append(
            f"    {number}. {row.get('name', ''):<{width}}  {describe_provider_state(row):<{state_width}}  "
            f"{plural(row.get('requests', 0), 'request')}, {plural(row.get('failures', 0), 'failure')}, tokens "
            f"in {tokens.get('input', 0):,} out {tokens.get('output', 0):,} "
            f"cache read {tokens.get('cache_read', 0):,} write {tokens.get('cache_creation', 0):,}")
        if row.get("keys"):
            lines.append("       keys: " + describe_keys(row["keys"]))
        for model, speed in (row.get("speed") or {}).items():
            if speed.get("samples"):
                lines.append(f"       speed{f' ({model})' if model != ANY_MODEL else ''}: first token "
                             f"{speed['ttft_ms']} ms, {speed['tokens_per_second'] or '?'} tokens/s, "
                             f"score {speed['score_seconds']} s over {plural(speed['samples'], 'answer')}")
        if row.get("models_cooling"):
            lines.append("       models cooling: " + ", ".join(
                f"{m['model']} for {format_duration(m['seconds_left'])}" for m in row["models_cooling"]))
        if row.get("last_error"):
            lines.append(f"       last error: {row['last_error']}")
        if row.get("key_problem"):
            lines.append(f"       {row['key_problem']}")
        if key_set_since_start(target.config, row):
            lines.append(f"       {row.get('key_env')} is set now, but the proxy reads keys when it "
                         f"starts: restart it (`{proxy_command(target, 'stop')}`, then claude-fb)")
    if today is not None:
        lines.extend(format_today(today, s.get("usage_record")))
    return "\n".join(lines)

