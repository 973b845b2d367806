"""Routing strategies: in which order a request tries the ready providers.

The failover policy (:mod:`failover`) decides which providers are ready and
which are cooling; a strategy only orders the ready ones.  Cooling providers
always come after them, the soonest to recover first, whatever the strategy.

- ``fallback``: config order (the default).
- ``round_robin``: each request starts at the next ready provider in
  rotation; failover goes on through the others in rotation order.
- ``weighted``: the first provider is drawn at random in proportion to its
  ``weight`` (default 1); failover goes on by descending weight.
- ``random``: ``weighted`` with equal weights.
- ``fastest``: by measured speed (:class:`Speeds`): the provider expected to
  finish a typical answer soonest goes first.  A provider not measured yet
  counts as fast, so that it gets measured; one request in
  ``EXPLORE_EVERY`` starts at another ready provider, so that one that got
  faster again is noticed; a provider measured below its ``min_tps`` goes
  behind the others.
"""

import itertools
import random
import threading

STRATEGIES = ("fallback", "round_robin", "weighted", "random", "fastest")
ANY_MODEL = "*"  # status's name for speeds measured without knowing the model

HALF_LIFE = 120.0        # seconds: a measurement counts half as much two minutes later
REFERENCE_TOKENS = 200   # the answer size the fastest score is the time for
EXPLORE_EVERY = 10       # fastest: one request in this many starts elsewhere
MIN_STREAM_SECONDS = 0.05  # a shorter answer counts as this long (its speed is a lower bound)
MIN_WEIGHT = 0.3         # what one new measurement moves an average by, at least


class Speed:
    """Time to first token and output tokens per second, as decaying averages."""

    def __init__(self):
        self.ttft = None  # seconds
        self.tps = None   # output tokens per second
        self.samples = 0
        self._at = None

    def add(self, ttft, tps, now):
        weight = 1.0 if self._at is None else 1 - 0.5 ** ((now - self._at) / HALF_LIFE)
        weight = max(weight, MIN_WEIGHT)  # a new measurement always counts for something
        self.ttft = ttft if self.ttft is None else self.ttft + weight * (ttft - self.ttft)
        if tps is not None:
            self.tps = tps if self.tps is None else self.tps + weight * (tps - self.tps)
        self.samples += 1
        self._at = now

    def score(self):
        """Seconds for a REFERENCE_TOKENS answer (None: not measured yet)."""
        if self.ttft is None:
            return None
        return self.ttft + (REFERENCE_TOKENS / self.tps if self.tps else 0.0)

    def as_dict(self):
        score = self.score()
        return {"ttft_ms": None if self.ttft is None else round(self.ttft * 1000),
                "tokens_per_second": None if self.tps is None else round(self.tps, 1),
                "score_seconds": None if score is None else round(score, 3),
                "samples": self.samples}


class Speeds:
    """Measured speeds per provider and model; thread-safe."""

    def __init__(self):
        self._speeds = {}
        self._lock = threading.Lock()

    def record(self, provider_name, model, ttft, output_tokens, stream_seconds, now):
        # An answer over in less than MIN_STREAM_SECONDS is at least that fast: counted as such,
        # so that a provider that became fast replaces its old, slow figure.
        tps = output_tokens / max(stream_seconds, MIN_STREAM_SECONDS) if output_tokens else None
        with self._lock:
            self._speeds.setdefault((provider_name, model), Speed()).add(ttft, tps, now)

    def of(self, provider_name, model=None):
        """The speed measured for the provider (for ``model`` if measured, else its best model)."""
        with self._lock:
            if (provider_name, model) in self._speeds:
                return self._speeds[(provider_name, model)]
            measured = [s for (name, _), s in self._speeds.items() if name == provider_name]
        scored = [s for s in measured if s.score() is not None]
        return min(scored, key=Speed.score) if scored else None

    def snapshot(self, provider_name):
        """``{model: figures}``; ``"*"`` for answers whose model was not found (None
        would be ``"null"`` in JSON, and an empty name is refused by PowerShell's
        ``ConvertFrom-Json``)."""
        with self._lock:
            rows = {model or ANY_MODEL: speed.as_dict() for (name, model), speed in self._speeds.items()
                    if name == provider_name}
        return rows


class Router:
    """Orders ready providers by a strategy; keeps the round-robin position."""

    def __init__(self, rng=None):
        self._turn = itertools.count()
        self._rng = rng or random.Random()
        self._lock = threading.Lock()

    def order(self, strategy, ready, speeds=None, model=None, min_tps=None):
        """``ready`` (providers in config order) in the order ``strategy`` tries them."""
        if len(ready) < 2 or strategy == "fallback":
            return list(ready)
        if strategy == "round_robin":
            with self._lock:
                start = next(self._turn) % len(ready)
            return ready[start:] + ready[:start]
        if strategy in ("weighted", "random"):
            weights = [p.weight if strategy == "weighted" else 1 for p in ready]
            with self._lock:
                first = self._rng.choices(range(len(ready)), weights=weights)[0]
            rest = sorted((i for i in range(len(ready)) if i != first), key=lambda i: -weights[i])
            return [ready[first]] + [ready[i] for i in rest]
        if strategy == "fastest":
            return self._fastest(ready, speeds, model, min_tps)
        raise ValueError(f"unknown strategy {strategy!r}")

    def _fastest(self, ready, speeds, model, min_tps):
        def key(item):
            index, provider = item
            speed = speeds.of(provider.name, model) if speeds else None
            floor = provider.min_tps if provider.min_tps is not None else min_tps
            slow = bool(floor and speed and speed.tps is not None and speed.tps < floor)
            score = speed.score() if speed else None
            return (slow, 0.0 if score is None else score, index)

        ordered = [p for _, p in sorted(enumerate(ready), key=key)]
        with self._lock:
            explore = next(self._turn) % EXPLORE_EVERY == EXPLORE_EVERY - 1
            pick = self._rng.randrange(1, len(ordered)) if explore else 0
        if pick:
            ordered.insert(0, ordered.pop(pick))
        return ordered
