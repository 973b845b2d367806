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


def describe_provider_state(row):
    state = row.get("state")
    if state == "cooling":
        return f"cooling for {format_duration(row.get('cooldown_seconds_left') or 0)}"
    if state == "no_key":
        return f"{'unusable' if row.get('key_problem') else 'no'} key ({row.get('key_env')})"
    return state or "?"



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

