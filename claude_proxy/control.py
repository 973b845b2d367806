"""Runtime control of the running proxy: ``proxy.py disable|enable|cool|uncool``
and ``proxy.py reload``.

Each command asks the daemon (``POST /control``, with the client token) and
takes effect at once for new requests; requests in flight finish as they
started.  Nothing is written to ``config.json``, and a restart forgets it
all: a provider to leave out for good belongs in the config
(``"enabled": false``).  ``reload`` (``POST /reload``) has the daemon read
``config.json`` and ``.env`` again, as it does by itself when they change.
"""

import re
import sys
import time

from .daemon import DaemonClient, known_provider, load_target, probe, proxy_command
from .errors import EXIT_FAILURE, EXIT_OK, UsageError
from .wording import format_duration

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?\Z")


def parse_duration(text):
    """Seconds in ``text``: ``90s``, ``10m``, ``1h``, ``1h30m``, or a bare number of minutes."""
    text = text.strip().lower()
    try:
        minutes = float(text)
    except ValueError:
        match = _DURATION.match(text)
        if not text or not match or not any(match.groups()):
            raise UsageError(f"{text!r} is not a duration; write it like 90s, 10m, 1h or 1h30m") from None
        hours, mins, secs = (float(part or 0) for part in match.groups())
        seconds = hours * 3600 + mins * 60 + secs
    else:
        seconds = minutes * 60
    if seconds <= 0:
        raise UsageError(f"{text!r} is not a duration of more than 0 seconds")
    return seconds


def cmd_control(args, out=None):
    out = out or sys.stdout
    target = load_target(args, lenient=True)  # a broken config: the running proxy still acts
    seconds = parse_duration(args.duration) if getattr(args, "duration", None) else None
    print(control(target, args.command, getattr(args, "name", None), seconds), file=out)
    return EXIT_OK


def control(target, action, name=None, seconds=None):
    """Ask the running daemon of ``target`` to ``action`` (disable, enable, cool, uncool)
    the provider ``name`` (uncool: all when None), for ``seconds`` where it applies.
    Returns what it did in one line (:func:`describe`); raises :class:`UsageError`
    with the reason when it could not be done.  ``proxy.py top`` acts through this too."""
    if name is not None and target.config is not None:
        name = known_provider(target.config, name).name
    current = probe(target.paths, target.config)
    if not current.running:
        raise UsageError(f"the proxy is not running, so there is nothing to {action}; "
                         f"start it with `{proxy_command(target, 'start')}`")
    client = DaemonClient.for_record(current.record, target.paths, config=target.config)
    status, answer = client.control(action, name, seconds)
    if status != 200 or answer is None:
        message = ((answer or {}).get("error") or {}).get("message") or f"the proxy answered {status}"
        raise UsageError(f"{action} failed: {message}")
    return describe(action, answer, seconds)


def cmd_reload(args, out=None):
    out = out or sys.stdout
    target = load_target(args, lenient=True, warn=False)  # a broken config: the daemon says what
    current = probe(target.paths, target.config)
    if not current.running:
        raise UsageError(f"the proxy is not running, so there is nothing to reload; start it with "
                         f"`{proxy_command(target, 'start')}` (it reads the config as it starts)")
    client = DaemonClient.for_record(current.record, target.paths, config=target.config)
    status, answer = client.reload()
    if status != 200 or answer is None:
        message = ((answer or {}).get("error") or {}).get("message") or f"the proxy answered {status}"
        raise UsageError(f"reload failed: {message}")
    if not answer["applied"]:
        print(f"claude-proxy: the config has a problem, so the proxy goes on with the one it had: "
              f"{answer['error']}", file=sys.stderr)
        return EXIT_FAILURE
    changes = answer["changes"]
    if changes:
        print(f"reloaded: {'; '.join(changes)}", file=out)
    else:  # the proxy may have read a saved file by itself a moment before: say when
        read = answer.get("previous_read_at")
        since = (f" since the proxy read the config at {time.strftime('%H:%M:%S', time.localtime(read))}"
                 if isinstance(read, (int, float)) else "")
        print(f"reloaded: nothing changed{since}", file=out)
    for line in answer["restart_needed"]:
        print(f"  {line}", file=out)
    return EXIT_OK


def describe(action, answer, seconds):
    """What a control command did, in one line."""
    names = ", ".join(answer.get("providers") or [])
    how_long = f" for {format_duration(seconds)}" if seconds else ""
    if action == "disable":
        return (f"{names}: disabled{how_long or ' until `proxy.py enable`'}; requests go to the "
                "other providers (a restart forgets this)")
    if action == "enable":
        return f"{names}: enabled again"
    if action == "cool":
        return f"{names}: cooling{how_long or ' for cooldown_minutes'}; tried only when no other is ready"
    changed = answer.get("changed") or []
    return f"cooldowns cleared: {', '.join(changed)}" if changed else "no provider was cooling"
