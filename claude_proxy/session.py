"""The shell sessions that use the proxy: ``proxy.py env`` and ``proxy.py providers``.

``env`` prints the variables that point a shell session at the proxy, in
that shell's syntax; the shell commands (claude-fb, claude-switch) evaluate
it.  With ``--session PID`` it also registers that shell (its process id)
as one using the proxy, so that ``claude-reset`` in one shell stops the
proxy only when no other live shell still uses it (``proxy.py release``).
A session is a file ``sessions/PID.json`` in the state directory holding
the shell's process identity; a session whose shell has exited (or whose
pid now names another process) no longer counts, and its file is removed
when found.
"""

import json
import os
import shlex
import sys

from . import process
from .config import mask_key
from .daemon import Probe, base_url, known_provider, load_target, probe, proxy_command, same_path, silent_message
from .errors import EXIT_OK, UsageError
from .state import load_or_create_token, state_dir_problem
from .wording import cooling_phrase, format_duration, key_set_since_start, why_skipped

NO_TOKEN_PLACEHOLDER = "claude-proxy-no-token-needed"
#: The session variables ``env`` sets (a value) or clears (None), in order.
SESSION_VARIABLES = ("ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_API_KEY")
SHELLS = ("bash", "zsh", "fish", "powershell", "cmd", "json")
default_shell = process.default_shell


def cmd_env(args):
    target = load_target(args)
    code = env(target, args.shell, args.provider, announce=args.announce, strategy=args.strategy)
    if args.session is not None:
        register_session(target.paths, args.session)
    return code


def env(target, shell, provider_name=None, announce=False, out=None, strategy=None):
    """Print the session variables for ``shell`` (pinned to a provider if named,
    or with a routing strategy of its own)."""
    out = out or sys.stdout
    config, paths = target.config, target.paths
    pinned = known_provider(config, provider_name) if provider_name else None
    if strategy is not None and pinned is not None:
        raise UsageError("a session is pinned to one provider (--provider) or routed by a strategy "
                         "(--strategy), not both")
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
    elif strategy is not None:
        url = f"{url}/strategy/{strategy}"
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
    summary = env_summary(config, current, url, pinned, strategy)
    if shell == "json":
        print(json.dumps({
            "variables": variables,
            "mode": "pinned" if pinned else "strategy" if strategy else "fallback",
            "strategy": None if pinned else strategy or config.strategy,
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


def env_summary(config, current, url, pinned, strategy=None):
    """One line: where this session now goes, and which providers lack a key."""
    rows = (current.status or {}).get("providers") if current.running else None
    if rows is None:  # not running: what this config would do
        rows = [{"name": p.name, "state": p.availability, "key_env": p.api_key_env}
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
        elif row.get("state") == "cooling":
            line += (f"; warning: {cooling_phrase(row)} (a pinned session uses it anyway; claude-fb "
                     "fails over instead)")
        return line
    order = " > ".join(r["name"] + (f" (cooling {format_duration(r.get('cooldown_seconds_left') or 0)})"
                                    if r.get("state") == "cooling" else "")
                       for r in rows if r.get("state") not in ("no_key", "disabled"))
    routing = strategy or config.strategy
    if routing == "fallback":
        how = f"fallback order: {order or 'none usable'}"
    else:
        how = f"strategy {routing} over {order.replace(' > ', ', ') or 'none usable'}"
    line = f"claude-proxy: this session now goes through {url} ({how})"
    skipped = [f"{r['name']} ({why_skipped(config, r)})"
               for r in rows if r.get("state") in ("no_key", "disabled")]
    if skipped:
        line += "; skipped: " + ", ".join(skipped)
    return line




def render_env(variables, shell):
    """Shell code that sets each variable with a value and removes each one without."""
    lines = []
    for name, value in variables.items():
        if shell in ("bash", "zsh"):
            lines.append(f"unset {name}" if value is None else f"export {name}={shlex.quote(value)}")
        elif shell == "fish":
            # Only the session's (global) variable: a bare `set -e` would erase a universal
            # variable for every fish session, for good.  A universal one stays, hidden by
            # an empty global for this session.
            lines.append(f"set -e -g {name}; set -q -U {name}; and set -gx {name} ''" if value is None
                         else f"set -gx {name} {_fish_quote(value)}")
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
    """The configured names; with a NAME, that provider as configured (or an error)."""
    target = load_target(args)
    if args.name:
        print(describe_provider(known_provider(target.config, args.name), target.config))
        return EXIT_OK
    for name in target.config.provider_names:
        print(name)
    return EXIT_OK


def describe_provider(provider, config):
    """A provider as configured, its name on the first line; the key shown by its mask only."""
    if provider.api_key:
        source = "the environment" if provider.key_source == "environment" else provider.key_source
        key = f"set in {source}: {mask_key(provider.api_key)}"
    else:
        key = provider.missing_key(config.env_path)
    models = "; ".join(f"{glob} -> {model}" for glob, model in provider.models.items()) or \
        "none (the requested model is sent as it is)"
    fields = [("base_url", provider.base_url), ("api_key_env", f"{provider.api_key_env} ({key})"),
              ("auth_header", provider.auth_header), ("models", models),
              ("enabled", "true" if provider.enabled else "false")]
    if provider.headers:  # names only: a configured header may carry a credential
        fields.append(("headers", ", ".join(provider.headers) + " (values not shown)"))
    width = max(len(name) for name, _ in fields) + 1
    return "\n".join([provider.name] + [f"  {name + ':':<{width}} {value}" for name, value in fields])



# --- which shells use the proxy -----------------------------------------------------


def register_session(paths, pid):
    """Record shell ``pid`` as a session using the proxy of ``paths``' state directory."""
    record = {"pid": pid, "identity": process.identity(pid)}
    try:
        paths.sessions.mkdir(parents=True, exist_ok=True)
        tmp = paths.sessions / f"{pid}.json.tmp"
        tmp.write_text(json.dumps(record), encoding="utf-8")
        os.replace(tmp, paths.sessions / f"{pid}.json")
    except OSError as exc:
        # The session still works; only claude-reset's "other sessions" count will miss it.
        print(f"claude-proxy: warning: cannot record this shell session in {paths.sessions}: "
              f"{exc.strerror or exc}", file=sys.stderr)


def forget_session(paths, pid):
    try:
        (paths.sessions / f"{pid}.json").unlink()
    except FileNotFoundError:  # forgotten already
        pass
    except OSError:  # e.g. a read-only folder: the shell exiting makes it dead all the same
        pass


def live_sessions(paths):
    """The pids of the registered shells still running; the records of the others are removed."""
    live = []
    try:
        files = sorted(paths.sessions.glob("*.json"))
    except OSError:  # no such folder (yet), or not readable: nobody registered
        return live
    for path in files:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            pid, expected = record["pid"], record.get("identity")
        except (OSError, ValueError, KeyError, TypeError):  # half-written or damaged: not a session
            record = pid = None
        alive = isinstance(pid, int) and (process.is_same_process(pid, expected) if expected
                                          else process.is_alive(pid))
        if alive:
            live.append(pid)
        else:
            forget_session(paths, path.stem)
    return live
