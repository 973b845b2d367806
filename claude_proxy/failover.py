"""The failover policy: which providers to try, in what order, and cooldowns.

Rules (the README repeats them in plain words):

- Fallback mode tries usable providers (enabled, with a key) in config order,
  skipping those in cooldown while a ready one remains.  When every usable
  provider is cooling (from the start, or because the ready ones just failed),
  the cooling ones are tried anyway, the soonest to recover first.
- A failure (a failover status such as 429 or 5xx, a refused or reset
  connection, a timeout before the answer, an error as the first stream
  event) puts the provider in cooldown for its ``retry-after`` if it sent
  one, else ``cooldown_minutes``.  A later failure only extends a cooldown;
  a success clears it.
- Pinned mode tries the one provider, whatever its cooldown, and nothing else.

The policy only decides; sockets are the business of ``upstream``.
"""

import dataclasses
import email.utils
import json
import math
import logging
import threading
import time

from .logfile import printable

log = logging.getLogger(__name__)

def describe_error(status, body):
    """``429 rate_limit_error: message`` from a provider's error answer, for status and log."""
    detail = ""
    try:
        error = json.loads(body).get("error", {})
        detail = f" {error.get('type', '')}: {error.get('message', '')}".rstrip(": ")
    except (ValueError, AttributeError, UnicodeDecodeError):
        pass
    return printable(f"{status}{detail}"[:300])


def retry_after_seconds(headers, now=None):
    """The delay a provider asked for, from ``retry-after-ms`` or ``retry-after``.

    ``headers`` is a list of ``(name, value)``.  Returns seconds, or None when
    the provider gave no usable value: only a finite, non-negative number
    counts (``inf``, ``nan``, ``1e400`` and negative values are ignored).
    ``retry-after`` may be seconds or an HTTP date (RFC 9110 section 10.2.3).
    The policy caps whatever it gets at ``max_cooldown_minutes``.
    """
    values = {name.lower(): value.strip() for name, value in headers}
    milliseconds = _finite(values.get("retry-after-ms"))
    if milliseconds is not None:
        return milliseconds / 1000
    value = values.get("retry-after")
    if not value:
        return None
    seconds = _finite(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):  # not a date either: no usable value
        return None
    if when is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def _finite(text):
    """``text`` as a finite number >= 0, else None."""
    if text is None:
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


@dataclasses.dataclass
class ProviderState:
    """What the proxy has seen of one provider since it started."""

    cooling_until: float = 0.0  # time.monotonic() value; 0 when not cooling
    last_error: str | None = None
    requests: int = 0
    failures: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0


class FailoverPolicy:
    """Thread-safe provider ordering and cooldown book-keeping."""

    def __init__(self, config, clock=time.monotonic):
        self.config = config
        self.clock = clock
        self._lock = threading.Lock()
        self._state = {p.name: ProviderState() for p in config.providers}

    def plan(self, pinned=None):
        """The providers to try for one request, in order."""
        if pinned is not None:
            return [pinned] if pinned.usable else []
        now = self.clock()
        ready, cooling = [], []
        with self._lock:
            for p in self.config.providers:
                if p.usable:
                    self._expire(p, now)
                    (cooling if self._state[p.name].cooling_until else ready).append(p)
            cooling.sort(key=lambda p: self._state[p.name].cooling_until)
        return ready + cooling

    def cooling_for(self, provider):
        """Seconds left in ``provider``'s cooldown (0 when ready)."""
        now = self.clock()
        with self._lock:
            self._expire(provider, now)
            until = self._state[provider.name].cooling_until
        return max(0.0, until - now) if until else 0.0

    def record_failure(self, provider, reason, retry_after=None):
        """``provider`` failed; start or extend its cooldown."""
        if retry_after is None:
            seconds = self.config.cooldown_seconds
        else:  # the provider's word, within the user's bound
            seconds = min(retry_after, self.config.max_cooldown_seconds)
        reason = printable(provider.redact(reason))  # for the log and status: may be the provider's text
        now = self.clock()
        with self._lock:
            state = self._state[provider.name]
            state.requests += 1
            state.failures += 1
            state.last_error = reason
            until = now + seconds
            if seconds > 0 and until > state.cooling_until:
                extended = bool(state.cooling_until)
                state.cooling_until = until
                log.warning("%s: cooldown %s %s (%s)", provider.name,
                            "extended to" if extended else "for", _duration(seconds), reason)

    def record_success(self, provider, usage=None):
        """``provider`` answered: clear its cooldown and count the tokens."""
        with self._lock:
            state = self._state[provider.name]
            state.requests += 1
            if state.cooling_until:
                state.cooling_until = 0.0
                log.info("%s: cooldown cleared (it answered)", provider.name)
            if usage is not None:
                state.input_tokens += usage.input_tokens
                state.output_tokens += usage.output_tokens
                state.cache_read_tokens += usage.cache_read_tokens
                state.cache_creation_tokens += usage.cache_creation_tokens

    def record_answer(self, provider):
        """``provider`` answered with a status that is not a failover trigger (e.g. 400)."""
        with self._lock:
            self._state[provider.name].requests += 1

    def snapshot(self):
        """Per-provider state for the status endpoint (no secrets)."""
        now = self.clock()
        rows = []
        with self._lock:
            for p in self.config.providers:
                self._expire(p, now)
                s = self._state[p.name]
                if not p.enabled:
                    state = "disabled"
                elif not p.api_key:
                    state = "no_key"
                elif s.cooling_until:
                    state = "cooling"
                else:
                    state = "ready"
                rows.append({
                    "name": p.name,
                    "base_url": p.base_url,
                    "enabled": p.enabled,
                    "key_set": bool(p.api_key),
                    "key_env": p.api_key_env,
                    "key_problem": p.key_problem,  # names the variable and file, never the key
                    "state": state,
                    "cooldown_seconds_left": round(max(0.0, s.cooling_until - now), 1)
                    if s.cooling_until else 0.0,
                    "last_error": s.last_error,
                    "requests": s.requests,
                    "failures": s.failures,
                    "tokens": {
                        "input": s.input_tokens,
                        "output": s.output_tokens,
                        "cache_read": s.cache_read_tokens,
                        "cache_creation": s.cache_creation_tokens,
                    },
                })
        return rows

    def _expire(self, provider, now):
        state = self._state[provider.name]
        if state.cooling_until and state.cooling_until <= now:
            state.cooling_until = 0.0
            log.warning("%s: cooldown over; it is tried again", provider.name)


def _duration(seconds):
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}m{seconds:02d}s"
