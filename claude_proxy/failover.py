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
import logging
import math
import threading
import time

from .logfile import printable
from .routing import Router, Speeds
from .wording import format_duration

log = logging.getLogger(__name__)

def describe_error(status, body):
    """``429 rate_limit_error: message`` from a provider's error answer, for status and log."""
    detail = ""
    try:
        error = json.loads(body).get("error", {})
        detail = f" {error.get('type', '')}: {error.get('message', '')}".rstrip(": ")
    except (ValueError, AttributeError, UnicodeDecodeError):  # not JSON: the status alone
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
    except ValueError:  # not a number (maybe an HTTP date): the caller tries that
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
        #: (provider name, model) -> time.monotonic() its cooldown ends: for providers
        #: whose model map gives a list, a 429/5xx cools that model only.
        self._model_cooling = {}
        self.router = Router()
        self.speeds = Speeds()

    def plan(self, pinned=None, model=None, strategy=None):
        """The providers to try for a request for ``model``, in order.

        The ready ones in the order of ``strategy`` (default: the config's,
        see :mod:`routing`), then the cooling ones, the soonest to recover
        first.  A provider counts as cooling when it is, or when every model
        it would try for ``model`` is (then it is as soon ready as the first
        of them).  A pinned request tries its provider only.
        """
        if pinned is not None:
            return [pinned] if pinned.usable else []
        now = self.clock()
        ready, cooling = [], []
        with self._lock:
            for p in self.config.providers:
                if p.usable:
                    self._expire(p, now)
                    until = self._cooling_until(p, model, now)
                    if until:
                        cooling.append((until, p))
                    else:
                        ready.append(p)
        cooling.sort(key=lambda item: item[0])
        ordered = self.router.order(strategy or self.config.strategy, ready, self.speeds, model,
                                    self.config.min_tps)
        return ordered + [p for _, p in cooling]

    def record_speed(self, provider, model, ttft, output_tokens, stream_seconds):
        """A successful answer's speed, for the ``fastest`` strategy and status."""
        self.speeds.record(provider.name, model, ttft, output_tokens, stream_seconds, self.clock())

    def models_in_order(self, provider, model):
        """The provider's models for ``model``, ready ones first (in config order),
        then cooling ones, the soonest to recover first.  ``[None]`` when the
        requested model was not looked at (no provider maps a model to a list):
        the request's own model is then mapped as it goes out."""
        if model is None:
            return [None]
        models = provider.models_for(model)
        if len(models) < 2:
            return models
        now = self.clock()
        with self._lock:
            until = {m: self._model_until(provider, m, now) for m in models}
        return sorted(models, key=lambda m: (until[m] > 0, until[m]))

    def _cooling_until(self, provider, model, now):
        """When ``provider`` is ready again for ``model`` (0: now); lock held."""
        until = self._state[provider.name].cooling_until
        models = provider.models_for(model) if model is not None else ()
        if len(models) > 1:
            soonest = min(self._model_until(provider, m, now) for m in models)
            until = max(until, soonest)
        return until

    def _model_until(self, provider, model, now):
        """When ``model`` at ``provider`` is ready again (0: now); lock held."""
        until = self._model_cooling.get((provider.name, model), 0.0)
        if until and until <= now:
            del self._model_cooling[(provider.name, model)]
            log.warning("%s: cooldown of %s over; it is tried again", provider.name, model)
            return 0.0
        return until

    def cooling_for(self, provider):
        """Seconds left in ``provider``'s cooldown (0 when ready)."""
        now = self.clock()
        with self._lock:
            self._expire(provider, now)
            until = self._state[provider.name].cooling_until
        return max(0.0, until - now) if until else 0.0

    def record_failure(self, provider, reason, retry_after=None, model=None):
        """``provider`` failed; start or extend its cooldown (``model``'s only, when given)."""
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
            state.last_error = reason if model is None else f"{model}: {reason}"
            until = now + seconds
            current = state.cooling_until if model is None else self._model_cooling.get((provider.name, model), 0.0)
            if seconds > 0 and until > current:
                if model is None:
                    state.cooling_until = until
                else:
                    self._model_cooling[(provider.name, model)] = until
                log.warning("%s: cooldown%s %s %s (%s)", provider.name, f" of {model}" if model else "",
                            "extended to" if current else "for", format_duration(seconds), reason)

    def record_success(self, provider, usage=None, model=None):
        """``provider`` answered (with ``model``): clear its cooldown and count the tokens."""
        with self._lock:
            state = self._state[provider.name]
            state.requests += 1
            if state.cooling_until:
                state.cooling_until = 0.0
                log.info("%s: cooldown cleared (it answered)", provider.name)
            if model is not None and self._model_cooling.pop((provider.name, model), None):
                log.info("%s: cooldown of %s cleared (it answered)", provider.name, model)
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
                state = p.availability
                if state == "ready" and s.cooling_until:
                    state = "cooling"
                rows.append({
                    "name": p.name,
                    "base_url": p.base_url,
                    "type": p.type,
                    "enabled": p.enabled,
                    "key_set": bool(p.api_key),
                    "key_env": p.api_key_env,
                    "key_problem": p.key_problem,  # names the variable and file, never the key
                    "state": state,
                    "cooldown_seconds_left": round(max(0.0, s.cooling_until - now), 1)
                    if s.cooling_until else 0.0,
                    "models_cooling": sorted(
                        ({"model": model, "seconds_left": round(until - now, 1)}
                         for (name, model), until in self._model_cooling.items()
                         if name == p.name and until > now), key=lambda row: row["model"]),
                    "weight": p.weight,
                    "speed": self.speeds.snapshot(p.name),
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
