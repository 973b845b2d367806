"""How the commands word things for people: durations, counts, provider states.

One function per concept, so that ``status``, ``env``, ``start`` and the
banner say the same thing the same way.
"""


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


def describe_provider_state(row, brief=False):
    """A provider's state from its /status row; ``brief`` leaves out who disabled it
    (for a table where it is obvious, such as ``proxy.py top``)."""
    state = row.get("state")
    by_command = row.get("disabled_by_command")
    if state == "disabled" and by_command:
        left = by_command.get("seconds_left")
        how = "until enabled" if left is None else f"for {format_duration(left)} more"
        return f"disabled {how}" if brief else f"disabled by proxy.py disable {how}"
    if state == "cooling":
        return f"cooling for {format_duration(row.get('cooldown_seconds_left') or 0)}"
    if state == "no_key":
        return f"{'unusable' if row.get('key_problem') else 'no'} key ({row.get('key_env')})"
    return state or "?"



def describe_keys(keys):
    """A key pool in one line: each key by its mask, its state and its requests."""
    return ", ".join(
        f"{k['key']} " + ("refused" if k["state"] == "refused" else
                          f"cooling for {format_duration(k['cooldown_seconds_left'])}"
                          if k["state"] == "cooling" else "ready")
        + f" ({plural(k['requests'], 'request')})" for k in keys)


def key_set_since_start(config, row):
    """The running daemon found no key for this provider, but the config on disk has one now."""
    if config is None or row.get("state") != "no_key":
        return False
    provider = config.provider(row.get("name", ""))
    return provider is not None and bool(provider.api_key)



def why_skipped(config, row):
    """Why a provider of the daemon's /status is not in the fallback order, in a few words."""
    if row.get("state") == "disabled":
        return "disabled"
    if key_set_since_start(config, row):
        return f"no key when the proxy started; restart it to use {row.get('key_env')}"
    if row.get("key_problem"):
        return f"{row.get('key_env')} cannot be sent: see `proxy.py check`"
    return f"{row.get('key_env')} not set"


def short_error(row):
    """A provider's last error in a word or two: ``529 overloaded_error``, ``refused``."""
    return (row.get("last_error") or "a failure").split(":", 1)[0]


def cooling_phrase(row, named=True):
    """``alpha cooling for 46s after 529 overloaded_error`` (without the name if not ``named``)."""
    phrase = (f"cooling for {format_duration(row.get('cooldown_seconds_left') or 0)} "
              f"after {short_error(row)}")
    return f"{row.get('name')} {phrase}" if named else phrase


def where_next(rows, pinned=None):
    """Where a session's next request goes, and why, in one phrase.

    ``rows`` are the daemon's ``/status`` providers in config order;
    ``pinned`` is the provider a pinned session names.
    """
    if pinned is not None:
        row = next((r for r in rows if r.get("name", "").lower() == pinned.lower()), None)
        if row is None:
            return f"nowhere: {pinned} is not a configured provider"
        if row.get("state") == "cooling":
            return (f"{row['name']} (pinned; it is {cooling_phrase(row, named=False)}, "
                    "but a pinned session uses it anyway)")
        if row.get("state") == "no_key":
            return f"nowhere: {row['name']} has {describe_provider_state(row)}"
        if row.get("state") == "disabled":
            return f"nowhere: {row['name']} is disabled"
        return f"{row['name']} (pinned)"
    usable = [r for r in rows if r.get("state") in ("ready", "cooling")]
    if not usable:
        return "nowhere: no provider is usable (see below)"
    ready = next((r for r in usable if r.get("state") == "ready"), None)
    if ready is None:
        soonest = min(usable, key=lambda r: r.get("cooldown_seconds_left") or 0)
        return f"{soonest['name']} (every provider is cooling; the soonest to recover is tried first)"
    skipped = usable[:usable.index(ready)]
    if not skipped:
        return f"{ready['name']} (first in order)"
    return f"{ready['name']} — " + ", ".join(cooling_phrase(r) for r in skipped)

