"""Failover and cooldowns: which provider answers, and when the others are tried again."""

import json

import pytest

from claude_proxy.failover import FailoverPolicy, retry_after_seconds
from fakes import CutBody, Hangup, Reply, Reset, Stall, Stream, closed_port, error_json, eventually, message_events


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def use_clock(proxy):
    clock = FakeClock()
    proxy.server.policy.clock = clock
    return clock


def failing(status, **headers):
    error_type = {429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
    return Reply(status, error_json(status, error_type, f"fake {status}"), headers=headers)


# --- what triggers a failover -------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 529])
def test_failover_status_moves_on_to_the_next_provider(providers, proxy, status):
    first, second = providers(failing(status)), providers(Reply(200))
    running = proxy(first, second)

    code, _, body = running.post()

    assert code == 200
    assert json.loads(body)["content"][0]["text"] == "Hello from the fake provider"
    assert len(first.requests) == 1 and len(second.requests) == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_client_error_goes_straight_back_without_failover(providers, proxy, status):
    provider_body = b'{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 1 > 0"}}'
    first, second = providers(Reply(status, provider_body)), providers(Reply(200))
    running = proxy(first, second)

    code, _, body = running.post()

    assert code == status
    assert body == provider_body  # byte for byte: Claude Code reacts to the wording
    assert second.requests == []
    assert running.policy.cooling_for(running.config.providers[0]) == 0


def test_failover_statuses_are_configurable(providers, proxy):
    first, second = providers(failing(503)), providers(Reply(200))
    running = proxy(first, second, failover_statuses=[429])

    code, _, _ = running.post()

    assert code == 503
    assert second.requests == []


@pytest.mark.parametrize("behaviour", [Reset(), Hangup()], ids=["reset", "hangup"])
def test_connection_failure_before_the_answer_fails_over(providers, proxy, behaviour):
    first, second = providers(behaviour), providers(Reply(200))
    running = proxy(first, second)

    code, _, _ = running.post()

    assert code == 200
    assert len(second.requests) == 1
    assert running.policy.snapshot()[0]["state"] == "cooling"


def test_a_non_stream_body_cut_short_fails_over_before_the_client_sees_a_byte(providers, proxy):
    first, second = providers(CutBody()), providers(Reply(200))
    running = proxy(first, second)

    code, _, body = running.post()

    assert code == 200
    assert json.loads(body)["content"][0]["text"] == "Hello from the fake provider"
    assert running.policy.snapshot()[0]["state"] == "cooling"


def test_refused_connection_fails_over(providers, proxy):
    second = providers(Reply(200))
    running = proxy(f"http://127.0.0.1:{closed_port()}", second)

    code, _, _ = running.post()

    assert code == 200
    assert "refused" in running.policy.snapshot()[0]["last_error"]


def test_provider_silent_past_read_timeout_fails_over(providers, proxy):
    first, second = providers(Stall(30)), providers(Reply(200))
    running = proxy(first, second, provider_settings={"p1": {"read_timeout": 0.5}})

    code, _, _ = running.post()

    assert code == 200
    assert first.client_hung_up.wait(5), "the proxy must drop the stalled connection"
    assert "timeout" in running.policy.snapshot()[0]["last_error"]


def test_request_body_is_resent_unchanged_to_each_provider(providers, proxy):
    first, second = providers(failing(529)), providers(Reply(200))
    running = proxy(first, second)
    body = b'{"model":"claude-x",  "messages":[{"role":"system","content":"\\u00e9"}],"odd":1.0e3}'

    running.post(body=body)

    assert first.requests[0].body == body
    assert second.requests[0].body == body


# --- cooldowns ----------------------------------------------------------------------


def test_cooling_provider_is_skipped_while_another_is_ready(providers, proxy):
    first, second = providers(failing(429)), providers(Reply(200))
    running = proxy(first, second)

    running.post()
    first.default = Reply(200)
    code, _, _ = running.post()

    assert code == 200
    assert len(first.requests) == 1  # not tried again while cooling
    assert len(second.requests) == 2


def test_cooldown_lasts_cooldown_minutes_then_the_provider_is_tried_again(providers, proxy):
    first, second = providers(failing(500)), providers(Reply(200))
    running = proxy(first, second, cooldown_minutes=0.5)
    clock = use_clock(running)

    running.post()
    first.default = Reply(200)
    assert running.policy.cooling_for(running.config.providers[0]) == pytest.approx(30)
    clock.now += 29
    running.post()
    assert len(first.requests) == 1
    clock.now += 2
    running.post()

    assert len(first.requests) == 2
    assert len(second.requests) == 2


@pytest.mark.parametrize("headers, expected", [
    ({"retry-after": "7"}, 7.0),
    ({"retry-after-ms": "2500"}, 2.5),
    ({"retry-after": "7", "retry-after-ms": "1500"}, 1.5),
])
def test_retry_after_sets_the_cooldown_instead_of_cooldown_minutes(providers, proxy, headers, expected):
    first, second = providers(failing(429, **headers)), providers(Reply(200))
    running = proxy(first, second, cooldown_minutes=30)
    use_clock(running)

    running.post()

    assert running.policy.cooling_for(running.config.providers[0]) == pytest.approx(expected)


def test_retry_after_http_date_is_understood():
    headers = [("Retry-After", "Wed, 21 Oct 2026 07:28:00 GMT")]
    import email.utils
    now = email.utils.parsedate_to_datetime("Wed, 21 Oct 2026 07:27:00 GMT").timestamp()

    assert retry_after_seconds(headers, now=now) == pytest.approx(60)
    assert retry_after_seconds([("retry-after", "soon")]) is None
    assert retry_after_seconds([]) is None


def _policy(cooldown_minutes=30):
    from claude_proxy.config import Config, Provider

    providers = [Provider(name=n, base_url=f"http://127.0.0.1:{i + 1}", api_key_env="K", api_key="k")
                 for i, n in enumerate(("a", "b", "c"))]
    config = Config(path=None, exists=True, providers=providers, cooldown_seconds=cooldown_minutes * 60)
    clock = FakeClock()
    return FailoverPolicy(config, clock), providers, clock


def test_a_later_failure_extends_a_cooldown_but_never_shortens_it():
    policy, (a, _, _), clock = _policy()

    policy.record_failure(a, "429", retry_after=100)
    policy.record_failure(a, "429", retry_after=10)
    assert policy.cooling_for(a) == pytest.approx(100)

    policy.record_failure(a, "429", retry_after=500)
    assert policy.cooling_for(a) == pytest.approx(500)


def test_a_success_clears_the_cooldown():
    policy, (a, b, _), _ = _policy()
    policy.record_failure(a, "529")

    policy.record_success(a)

    assert policy.cooling_for(a) == 0
    assert policy.plan() == [a, b, policy.config.providers[2]]


def test_when_every_provider_is_cooling_all_are_tried_soonest_to_recover_first():
    policy, (a, b, c), _ = _policy()
    policy.record_failure(a, "429", retry_after=300)
    policy.record_failure(b, "429", retry_after=30)
    policy.record_failure(c, "429", retry_after=120)

    assert policy.plan() == [b, c, a]


def test_all_cooling_through_the_proxy_tries_the_soonest_to_recover(providers, proxy):
    first, second = providers(failing(429, **{"retry-after": "300"})), providers(failing(429, **{"retry-after": "60"}))
    running = proxy(first, second)
    running.post()
    second.default = Reply(200)

    code, _, _ = running.post()

    assert code == 200
    assert len(first.requests) == 1  # second recovers sooner, so it went first and served
    assert len(second.requests) == 2


def test_providers_without_a_key_or_disabled_are_skipped(providers, proxy):
    first, second, third = providers(Reply(200)), providers(Reply(200)), providers(Reply(200))
    env = {"KEY_P2": "k2", "KEY_P3": "k3"}
    running = proxy(first, second, third, environ=env, provider_settings={"p2": {"enabled": False}})

    code, _, _ = running.post()

    assert code == 200
    assert (len(first.requests), len(second.requests), len(third.requests)) == (0, 0, 1)
    assert [p["state"] for p in running.policy.snapshot()] == ["no_key", "disabled", "ready"]


# --- when everything fails -------------------------------------------------------------


def test_all_failed_returns_the_last_providers_real_answer(providers, proxy):
    last_body = error_json(429, "rate_limit_error", "You exceeded your quota")
    first = providers(failing(529))
    second = providers(Reply(429, last_body, headers={"retry-after": "12", "request-id": "req_2"}))
    running = proxy(first, second)

    code, headers, body = running.post()

    assert code == 429
    assert body == last_body
    assert headers["retry-after"] == "12"
    assert headers["request-id"] == "req_2"


def test_all_unreachable_is_a_502_api_error_naming_them(proxy):
    running = proxy(f"http://127.0.0.1:{closed_port()}", f"http://127.0.0.1:{closed_port()}")

    code, _, body = running.post()

    error = json.loads(body)
    assert code == 502
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
    assert "p1=refused" in error["error"]["message"] and "p2=refused" in error["error"]["message"]


def test_all_timed_out_is_a_504_timeout_error(providers, proxy):
    first, second = providers(Stall(30)), providers(Stall(30))
    settings = {"p1": {"read_timeout": 0.3}, "p2": {"read_timeout": 0.3}}
    running = proxy(first, second, provider_settings=settings)

    code, _, body = running.post()

    assert code == 504
    assert json.loads(body)["error"]["type"] == "timeout_error"


def test_an_error_answer_after_a_connection_failure_is_preferred(providers, proxy):
    first = providers(failing(429, **{"retry-after": "5"}))
    running = proxy(first, f"http://127.0.0.1:{closed_port()}")

    code, headers, _ = running.post()

    assert code == 429  # the client's own retry logic needs the real 429 and its retry-after
    assert headers["retry-after"] == "5"


def test_no_usable_provider_is_a_clear_503(proxy):
    running = proxy("http://127.0.0.1:1", environ={})

    code, headers, body = running.post()

    assert code == 503
    assert headers["x-should-retry"] == "false"
    assert "KEY_P1" in json.loads(body)["error"]["message"]


# --- pinned mode ---------------------------------------------------------------------------


def test_pinned_request_goes_only_to_that_provider(providers, proxy):
    first, second = providers(Reply(200)), providers(Reply(200))
    running = proxy(first, second, names=["minimax", "moonshot"])

    code, _, _ = running.post(prefix="/provider/moonshot")

    assert code == 200
    assert first.requests == []
    assert second.requests[0].path == "/v1/messages"


def test_pinned_provider_failure_is_not_failed_over(providers, proxy):
    first, second = providers(Reply(200)), providers(failing(529))
    running = proxy(first, second, names=["minimax", "moonshot"])

    code, _, body = running.post(prefix="/provider/moonshot")

    assert code == 529
    assert json.loads(body)["error"]["type"] == "overloaded_error"
    assert first.requests == []


def test_pinned_request_ignores_the_cooldown(providers, proxy):
    first, second = providers(failing(429)), providers(Reply(200))
    running = proxy(first, second, names=["minimax", "moonshot"])
    running.post()  # minimax now cooling
    first.default = Reply(200)

    code, _, _ = running.post(prefix="/provider/MiniMax")

    assert code == 200
    assert len(first.requests) == 2


def test_pinned_to_an_unknown_provider_lists_the_configured_ones(providers, proxy):
    running = proxy(providers(), providers(), names=["minimax", "moonshot"])

    code, _, body = running.post(prefix="/provider/openai")

    error = json.loads(body)["error"]
    assert code == 400 and error["type"] == "invalid_request_error"
    assert "openai" in error["message"] and "minimax, moonshot" in error["message"]


def test_pinned_sessions_and_fallback_sessions_coexist(providers, proxy):
    first, second = providers(Reply(200, {"id": "from-first"})), providers(Reply(200, {"id": "from-second"}))
    running = proxy(first, second, names=["minimax", "moonshot"])

    _, _, pinned = running.post(prefix="/provider/moonshot")
    _, _, fallback = running.post()

    assert json.loads(pinned)["id"] == "from-second"
    assert json.loads(fallback)["id"] == "from-first"


# --- stale pooled connections -------------------------------------------------------------


def test_stale_pooled_connection_is_retried_once_without_failover(providers, proxy):
    # Request 2 reuses the pooled connection; the provider drops it unanswered,
    # as a server does that closed an idle connection the moment it was reused.
    first, second = providers(Reply(200)), providers(Reply(200))
    first.queue(Reply(200), Hangup(), Reply(200))
    running = proxy(first, second)

    running.post()
    code, _, _ = running.post()

    assert code == 200
    assert second.requests == []
    assert first.connections == 2
    assert running.policy.snapshot()[0]["failures"] == 0


@pytest.mark.parametrize("poll", [False, True], ids=["reused-at-once", "polled-first"])
def test_connection_closed_while_idle_in_the_pool_is_not_a_failure(providers, proxy, monkeypatch, poll):
    if poll:  # idle long enough to be polled before reuse: the poll sees the close
        monkeypatch.setattr("claude_proxy.upstream.RECENT", 0.0)

    class ReplyThenClose(Reply):
        def __call__(self, handler):
            super().__call__(handler)
            handler.close_connection = True  # closes without saying "Connection: close"

    first, second = providers(ReplyThenClose(200)), providers(Reply(200))
    running = proxy(first, second)

    assert running.post()[0] == 200
    assert running.post()[0] == 200

    assert second.requests == []
    assert running.policy.snapshot()[0]["failures"] == 0


def test_connections_are_kept_alive_and_reused(providers, proxy):
    first = providers(Reply(200))
    running = proxy(first)

    for _ in range(5):
        running.post()

    assert first.connections == 1


def test_a_stream_that_fails_over_reaches_the_client_from_the_second(providers, proxy):
    frames = message_events("from second")
    first, second = providers(failing(529)), providers(Stream(frames))
    running = proxy(first, second)

    code, _, body = running.post(body={"model": "m", "stream": True, "messages": []})

    assert code == 200
    assert body == b"".join(frames)


def test_a_key_that_cannot_be_sent_is_named_in_the_503(providers, proxy):
    provider = providers(Reply(200))
    running = proxy(provider, environ={"KEY_P1": "sk-\u201cquoted\u201d"})

    for prefix in ("", "/provider/p1"):
        code, _, body = running.post(prefix=prefix)
        message = json.loads(body)["error"]["message"]
        assert code == 503 and "KEY_P1 in the environment has a character" in message, message
        assert "set KEY_P1" not in message and "quoted" not in message
    assert provider.requests == []


def test_pinned_to_a_provider_without_a_key_says_which_variable_to_set(providers, proxy):
    first, second = providers(Reply(200)), providers(Reply(200))
    running = proxy(first, second, names=["minimax", "moonshot"], environ={"KEY_MINIMAX": "k"})

    code, _, body = running.post(prefix="/provider/moonshot")

    assert code == 503
    assert "KEY_MOONSHOT" in json.loads(body)["error"]["message"]
    assert first.requests == [] and second.requests == []


def test_stale_retry_uses_a_fresh_connection_even_with_more_pooled(providers, proxy):
    class OncePerConnection(Reply):
        """Answers the first request on a connection; drops any reused one."""

        def __call__(self, handler):
            if getattr(handler, "answered", False):
                return Hangup()(handler)
            handler.answered = True
            return super().__call__(handler)

    first, second = providers(OncePerConnection(200, delay=0.3)), providers(Reply(200))
    running = proxy(first, second)
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(2) as pool:  # two at once: two connections end up pooled
        assert list(pool.map(lambda _: running.post()[0], range(2))) == [200, 200]

    code, _, _ = running.post()

    assert code == 200
    assert second.requests == []
    assert running.policy.snapshot()[0]["failures"] == 0


def test_when_the_ready_providers_fail_the_cooling_ones_are_tried(providers, proxy):
    first, second = providers(failing(429)), providers(Reply(200))
    running = proxy(first, second)
    running.post()  # p1 cooling, p2 served
    first.default, second.default = Reply(200), failing(429)

    code, _, _ = running.post()

    assert code == 200
    assert len(first.requests) == 2  # tried again once p2, the only ready one, failed


def test_plan_is_ready_providers_then_cooling_ones_soonest_first():
    policy, (a, b, c), _ = _policy()
    policy.record_failure(a, "429", retry_after=300)
    policy.record_failure(c, "429", retry_after=30)

    assert policy.plan() == [b, c, a]


# --- the log ------------------------------------------------------------------------------


def test_each_request_is_one_log_line_with_the_providers_tried(providers, proxy):
    first, second = providers(failing(529)), providers(Reply(200))
    running = proxy(first, second, names=["minimax", "moonshot"])

    running.post(path="/v1/messages?beta=true")

    assert eventually(lambda: "-> 200" in running.log_text())
    line = next(l for l in running.log_text().splitlines() if "-> 200" in l)
    assert "POST /v1/messages?beta=true fallback minimax=529 moonshot=200 -> 200" in line
    assert "ttfb=" in line and "total=" in line and "in=12 out=7" in line


def test_cooldown_start_and_end_are_logged(providers, proxy):
    first, second = providers(failing(429, **{"retry-after": "60"})), providers(Reply(200))
    running = proxy(first, second)
    clock = use_clock(running)

    running.post()
    clock.now += 61
    running.policy.plan()

    log = running.log_text()
    assert "p1: cooldown for 1m 00s (429 rate_limit_error: fake 429)" in log
    assert "p1: cooldown over" in log


def test_a_provider_that_dies_mid_stream_goes_into_cooldown(providers, proxy):
    first = providers(Stream(message_events(), cut_after=3))
    running = proxy(first, providers(Reply(200)))

    running.post(body={"model": "m", "stream": True, "messages": []})

    assert eventually(lambda: running.policy.snapshot()[0]["state"] == "cooling")


def test_a_stale_connection_is_retried_once_only_then_it_fails_over(providers, proxy):
    # Request 2: the pooled connection is dropped, and so is the fresh one: one retry, then failover.
    first, second = providers(Reply(200)), providers(Reply(200))
    first.queue(Reply(200), Hangup(), Hangup(), Hangup())
    running = proxy(first, second)
    running.post()

    code, _, _ = running.post()

    assert code == 200
    assert len(first.requests) == 3  # 1, then the stale one and exactly one fresh retry
    assert len(second.requests) == 1


def test_a_complete_answer_leaves_its_pooled_connection_alone(providers):
    """Once an answer is read to its end its connection is back in the pool: neither
    closing the answer nor a late client hang-up may touch it."""
    from claude_proxy.cancel import Cancel
    from claude_proxy.config import Provider
    from claude_proxy.upstream import Upstreams, upstream_headers

    fake = providers(Reply(200))
    provider = Provider(name="p", base_url=fake.url, api_key_env="K", api_key="k")
    upstreams = Upstreams([provider])
    try:
        for _ in range(3):
            cancel = Cancel()
            response = upstreams.send(provider, "POST", "/v1/messages",
                                      upstream_headers(provider, [], 2), b"{}", cancel)
            response.read_all(1 << 20)
            assert response.complete
            response.close()  # after completion: a no-op
            cancel.fire()     # a hang-up noticed late: the socket is no longer this request's
        assert fake.connections == 1  # every request reused the one pooled connection
    finally:
        upstreams.close()
