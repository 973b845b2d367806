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

from .config import mask_key
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
class KeyState:
    """One key of a provider with several: its own cooldown, or refused for good."""

    cooling_until: float = 0.0
    refused: str | None = None  # why the provider refused it (401/403): never used again
    requests: int = 0
    failures: int = 0
    last_error: str | None = None


@dataclasses.dataclass
class ProviderState:
    """What the proxy has seen of one provider since it started."""

    cooling_until: float = 0.0  # time.monotonic() value; 0 when not cooling
    failures_in_a_row: int = 0  # toward failure_threshold; a success resets it
    disabled_until: float = 0.0  # by `proxy.py disable` (math.inf: until enabled); 0 when not
    disabled_at: float = 0.0     # wall-clock time of that command, for status
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
        #: provider name -> {key: KeyState}, for providers with several keys; by the key
        #: itself, so that a reload that adds or removes keys keeps the others' states.
        self._keys = {}
        self._key_turn = {}
        self.waiting = 0  # requests waiting for a provider to recover (wait_when_all_fail)

    def count_waiting(self, change):
        with self._lock:
            self.waiting += change

    def reconfigure(self, config):
        """Use ``config`` (a reload) from the next plan on.  Everything known of a
        provider (cooldowns, disabling, key states, counters, speeds) is kept under its
        name; requests in flight go on booking on the provider objects they have."""
        with self._lock:
            for p in config.providers:
                self._state.setdefault(p.name, ProviderState())
            self.config = config

    def plan(self, pinned=None, model=None, strategy=None, config=None):
        """The providers to try for a request for ``model``, in order.

        The ready ones in the order of ``strategy`` (default: the config's,
        see :mod:`routing`), then the cooling ones, the soonest to recover
        first.  A provider counts as cooling when it is, or when every model
        it would try for ``model`` is (then it is as soon ready as the first
        of them).  A pinned request tries its provider only.  ``config``: the
        one the request started with (default: the policy's, the latest).
        """
        if pinned is not None:
            return [pinned] if pinned.usable else []
        config = config or self.config
        now = self.clock()
        ready, cooling = [], []
        with self._lock:
            for p in config.providers:
                if p.usable and not self._disabled(p, now):
                    self._expire(p, now)
                    until = self._cooling_until(p, model, now)
                    if until:
                        cooling.append((until, p))
                    else:
                        ready.append(p)
        cooling.sort(key=lambda item: item[0])
        ordered = self.router.order(strategy or config.strategy, ready, self.speeds, model, config.min_tps)
        return ordered + [p for _, p in cooling]

    # --- several keys per provider ---------------------------------------------------

    def keys_in_order(self, provider):
        """The indexes of ``provider``'s keys to try for one request: the ready ones
        from the next in turn, then the cooling ones, the soonest to recover first;
        refused keys never.  ``[None]`` for a provider with one key."""
        if len(provider.api_keys) < 2:
            return [None]
        now = self.clock()
        with self._lock:
            states = [self._key_state(provider, key) for key in provider.api_keys]
            turn = self._key_turn.get(provider.name, 0)
            start = turn % len(states)
            self._key_turn[provider.name] = turn + 1
            turn = [(start + i) % len(states) for i in range(len(states))]
            ready = [i for i in turn if not states[i].refused and states[i].cooling_until <= now]
            cooling = sorted((i for i in turn if not states[i].refused and states[i].cooling_until > now),
                             key=lambda i: states[i].cooling_until)
        return ready + cooling

    def record_key_failure(self, provider, index, reason, retry_after=None, refused=False):
        """Key ``index`` of ``provider`` was rate-limited (cool it) or ``refused`` (401/403:
        never use it again).  The provider cools as a whole only when no key is left."""
        reason = printable(provider.redact(reason))
        seconds = self._cooldown_seconds(retry_after)
        now = self.clock()
        with self._lock:
            key = self._key_state(provider, provider.api_keys[index])
            key.requests += 1
            key.failures += 1
            key.last_error = reason
            if refused:
                key.refused = reason
                log.warning("%s: key %s refused (%s); it is not used again until a restart",
                            provider.name, mask_key(provider.api_keys[index]), reason)
            elif seconds > 0 and now + seconds > key.cooling_until:
                key.cooling_until = now + seconds
                log.warning("%s: key %s cooling for %s (%s)", provider.name,
                            mask_key(provider.api_keys[index]), format_duration(seconds), reason)

    def record_key_success(self, provider, index):
        with self._lock:
            key = self._key_state(provider, provider.api_keys[index])
            key.requests += 1
            key.cooling_until = 0.0

    def _key_state(self, provider, key):
        """The state of ``provider``'s ``key`` (lock held)."""
        states = self._keys.setdefault(provider.name, {})
        state = states.get(key)
        if state is None:
            state = states[key] = KeyState()
        return state

    def _key_rows(self, provider, now):
        """Each key of a provider with several, by its mask: for status (lock held)."""
        rows = []
        if len(provider.api_keys) < 2:
            return rows
        for key in provider.api_keys:
            state = self._key_state(provider, key)
            cooling = max(0.0, state.cooling_until - now)
            rows.append({"key": mask_key(key),
                         "state": "refused" if state.refused else "cooling" if cooling else "ready",
                         "cooldown_seconds_left": round(cooling, 1), "requests": state.requests,
                         "failures": state.failures, "last_error": state.last_error})
        return rows

    def record_speed(self, provider, model, ttft, output_tokens, stream_seconds):
        """A successful answer's speed, for the ``fastest`` strategy and status."""
        self.speeds.record(provider.name, model, ttft, output_tokens, stream_seconds, self.clock())

    # --- runtime control (proxy.py disable/enable/cool/uncool) ---------------------------

    def disable(self, provider, seconds=None):
        """Take ``provider`` out of every plan, for ``seconds`` or until :meth:`enable`."""
        with self._lock:
            state = self._state[provider.name]
            state.disabled_until = math.inf if seconds is None else self.clock() + seconds
            state.disabled_at = time.time()
        log.warning("%s: disabled %s by proxy.py disable", provider.name,
                    "until enabled" if seconds is None else f"for {format_duration(seconds)}")

    def enable(self, provider):
        with self._lock:
            was = self._state[provider.name].disabled_until
            self._state[provider.name].disabled_until = 0.0
        if was:
            log.warning("%s: enabled again by proxy.py enable", provider.name)
        return bool(was)

    def cool(self, provider, seconds):
        """Put ``provider`` in cooldown for ``seconds``, as a failure would."""
        with self._lock:
            self._state[provider.name].cooling_until = self.clock() + seconds
        log.warning("%s: cooldown for %s by proxy.py cool", provider.name, format_duration(seconds))

    def uncool(self, provider):
        """Clear every cooldown of ``provider``: its own, its models' and its keys'."""
        with self._lock:
            state = self._state[provider.name]
            cleared = bool(state.cooling_until)
            state.cooling_until = 0.0
            state.failures_in_a_row = 0
            for key in [k for k in self._model_cooling if k[0] == provider.name]:
                del self._model_cooling[key]
                cleared = True
            for key in self._keys.get(provider.name, {}).values():
                cleared = cleared or bool(key.cooling_until)
                key.cooling_until = 0.0
        if cleared:
            log.warning("%s: cooldowns cleared by proxy.py uncool", provider.name)
        return cleared

    def _disabled(self, provider, now):
        """Taken out by ``proxy.py disable`` and not yet back (lock held)."""
        state = self._state[provider.name]
        if state.disabled_until and state.disabled_until <= now:
            state.disabled_until = 0.0
            log.warning("%s: back in use (its proxy.py disable --for is over)", provider.name)
        return bool(state.disabled_until)

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

    def _cooldown_seconds(self, retry_after):
        """How long a failure cools: the provider's word within the user's bound, else
        ``cooldown_minutes``."""
        if retry_after is None:
            return self.config.cooldown_seconds
        return min(retry_after, self.config.max_cooldown_seconds)

    def record_failure(self, provider, reason, retry_after=None, model=None):
        """``provider`` failed; start or extend its cooldown (``model``'s only, when given)."""
        seconds = self._cooldown_seconds(retry_after)
        reason = printable(provider.redact(reason))  # for the log and status: may be the provider's text
        now = self.clock()
        with self._lock:
            state = self._state[provider.name]
            state.requests += 1
            state.failures += 1
            state.last_error = reason if model is None else f"{model}: {reason}"
            state.failures_in_a_row += 1
            if retry_after is None and state.failures_in_a_row < provider.failure_threshold:
                return  # the circuit breaker has not tripped yet (a retry-after always cools)
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
            state.failures_in_a_row = 0
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
                switched_off = self._disabled(p, now)
                if state == "ready" and switched_off:
                    state = "disabled"
                elif state == "ready" and s.cooling_until:
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
                    "disabled_by_command": {
                        "at": s.disabled_at,
                        "seconds_left": None if s.disabled_until == math.inf
                        else round(s.disabled_until - now, 1),
                    } if switched_off else None,
                    "weight": p.weight,
                    "keys": self._key_rows(p, now),
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
