"""Routing strategies through the running proxy: round robin, weighted, random,
fastest, per-session strategies in the base URL, and what they never change
(cooldowns first, pinned sessions)."""

import json
import math

import pytest

from fakes import MESSAGE, Reply, Stream, message_events

from claude_proxy.routing import Router, Speeds


def named(name, delay=0.0):
    return Reply(200, {**MESSAGE, "content": [{"type": "text", "text": name}]}, delay=delay)


def answered_by(running, requests=1, prefix=""):
    return [json.loads(running.post(prefix=prefix)[2])["content"][0]["text"] for _ in range(requests)]


def within(count, n, p, sigmas=6):
    """``count`` of ``n`` draws with probability ``p`` lies within ``sigmas`` standard
    deviations of its mean (6: fails about once in 500 million runs)."""
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_round_robin_spreads_requests_evenly(providers, proxy):
    fakes = [providers(named(n)) for n in ("a", "b", "c")]
    running = proxy(*fakes, names=["a", "b", "c"], strategy="round_robin")

    answers = answered_by(running, 300)

    assert [answers.count(n) for n in "abc"] == [100, 100, 100]
    assert answers[:6] == ["a", "b", "c", "a", "b", "c"]


def test_round_robin_fails_over_in_rotation_order(providers, proxy):
    a, b, c = providers(named("a")), providers(Reply(529)), providers(named("c"))
    running = proxy(a, b, c, names=["a", "b", "c"], strategy="round_robin", cooldown_minutes=0)

    assert answered_by(running, 3) == ["a", "c", "c"]  # the turn starting at b goes on to c, not a


def test_weighted_draws_the_first_provider_by_weight(providers, proxy):
    heavy, light = providers(named("heavy")), providers(named("light"))
    running = proxy(heavy, light, names=["heavy", "light"], strategy="weighted",
                    provider_settings={"heavy": {"weight": 3}})

    answers = answered_by(running, 300)

    assert within(answers.count("heavy"), 300, 0.75), answers.count("heavy")
    assert answers.count("heavy") + answers.count("light") == 300


def test_random_draws_evenly(providers, proxy):
    a, b = providers(named("a")), providers(named("b"))
    running = proxy(a, b, names=["a", "b"], strategy="random")

    answers = answered_by(running, 300)

    assert within(answers.count("a"), 300, 0.5), answers.count("a")


def test_weighted_fails_over_by_descending_weight():
    class Pick:  # always draws the lightest first
        def choices(self, population, weights):
            return [min(population, key=lambda i: weights[i])]

    class P:
        def __init__(self, name, weight):
            self.name, self.weight = name, weight

    providers = [P("w1", 1), P("w5", 5), P("w2", 2), P("w3", 3)]
    order = Router(rng=Pick()).order("weighted", providers)
    assert [p.name for p in order] == ["w1", "w5", "w3", "w2"]


def test_every_strategy_puts_cooling_providers_last(providers, proxy):
    for strategy in ("round_robin", "weighted", "random", "fastest"):
        cooling, ready = providers(Reply(429, headers={"retry-after": "60"})), providers(named("ready"))
        running = proxy(cooling, ready, names=["cooling", "ready"], strategy=strategy)
        running.post(prefix="/provider/cooling")  # it answers 429 and cools for 60 s
        before = len(cooling.requests)
        assert answered_by(running, 20) == ["ready"] * 20, strategy
        assert len(cooling.requests) == before  # never tried while another is ready
        running.stop()


def test_a_session_can_choose_its_strategy_in_its_base_url(providers, proxy):
    a, b = providers(named("a")), providers(named("b"))
    running = proxy(a, b, names=["a", "b"])

    assert answered_by(running, 4) == ["a"] * 4  # the config's: fallback
    assert answered_by(running, 4, prefix="/strategy/round_robin") == ["a", "b", "a", "b"]
    assert answered_by(running, 2, prefix="/provider/b") == ["b", "b"]  # pinned ignores strategies

    status, _, body = running.post(prefix="/strategy/cheapest")
    error = json.loads(body)["error"]
    assert status == 400 and "Unknown strategy 'cheapest'" in error["message"]
    assert "fallback, round_robin, weighted, random, fastest" in error["message"]


def test_fastest_moves_to_the_faster_provider_and_back(providers, proxy):
    slow = providers(Stream(message_events(output_tokens=50), delay=0.02))
    fast = providers(Stream(message_events(output_tokens=50)))
    running = proxy(slow, fast, names=["slow", "fast"], strategy="fastest")
    stream = {"model": "m", "max_tokens": 8, "stream": True, "messages": []}

    for _ in range(30):
        running.post(stream)
    assert len(fast.requests) > 20  # measured faster: it gets nearly all (exploration aside)
    assert len(slow.requests) >= 2  # measured at least once, and explored again

    slow.default, fast.default = (Stream(message_events(output_tokens=50)),
                                  Stream(message_events(output_tokens=50), delay=0.02))
    before = len(slow.requests)
    for _ in range(60):
        running.post(stream)
    assert len(slow.requests) - before > 30  # exploration noticed it recovered
    speed = running.policy.snapshot()[0]["speed"]
    assert speed and next(iter(speed.values()))["tokens_per_second"] > 0


def test_fastest_puts_a_provider_below_min_tps_last():
    class P:
        def __init__(self, name, min_tps=None):
            self.name, self.min_tps, self.weight = name, min_tps, 1

    speeds = Speeds()
    speeds.record("quick-but-thin", None, ttft=0.01, output_tokens=40, stream_seconds=1.0, now=0)  # scores 5.0 s
    speeds.record("steady", None, ttft=6.0, output_tokens=400, stream_seconds=1.0, now=0)          # scores 6.5 s
    router = Router()
    ready = [P("quick-but-thin"), P("steady")]
    assert [p.name for p in router.order("fastest", ready, speeds)][0] == "quick-but-thin"
    ordered = [[p.name for p in Router().order("fastest", ready, speeds, min_tps=50)] for _ in range(5)]
    assert all(names[0] == "steady" for names in ordered)
    per_provider = [P("quick-but-thin", min_tps=50), P("steady")]
    assert Router().order("fastest", per_provider, speeds)[0].name == "steady"


@pytest.mark.parametrize("value", ["fastest-first", 3])
def test_an_unknown_strategy_in_the_config_is_one_line(tmp_path, value):
    from claude_proxy.config import load_config
    from claude_proxy.errors import ConfigError
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"strategy": value, "providers": [
        {"name": "p", "base_url": "https://x.test", "api_key_env": "K"}]}), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert '"strategy" must be one of fallback, round_robin, weighted, random, fastest' in str(caught.value)


def test_a_speed_without_its_model_has_a_name_every_json_reader_takes():
    """None would be "null" in JSON, and PowerShell's ConvertFrom-Json refuses an empty name."""
    from claude_proxy.routing import ANY_MODEL, Speeds

    speeds = Speeds()
    speeds.record("p1", None, 0.1, 20, 1.0, now=0.0)
    speeds.record("p1", "claude-x", 0.2, 20, 1.0, now=0.0)
    assert set(speeds.snapshot("p1")) == {ANY_MODEL, "claude-x"}
    assert ANY_MODEL == "*"

