"""Same-provider retries, the failure threshold (a circuit breaker), and answers
whose body asks for a failover."""

import json
import socket
import time

from fakes import MESSAGE, Reply, Reset, Stream, eventually, message_events


def overloaded():
    return Reply(529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})


def text_of(body):
    return json.loads(body)["content"][0]["text"]


def test_retries_recover_a_provider_that_fails_twice(providers, proxy):
    first = providers(Reply(200, {**MESSAGE, "content": [{"type": "text", "text": "third time"}]}))
    first.queue(overloaded(), Reset())
    second = providers()
    running = proxy(first, second, provider_settings={"p1": {"retries": 2, "retry_backoff_ms": 10}})

    status, _, body = running.post()

    assert (status, text_of(body)) == (200, "third time")
    assert len(first.requests) == 3 and second.requests == []
    # Its success cleared the cooldown: booked just after the answer was sent, so soon after it.
    assert eventually(lambda: running.policy.snapshot()[0]["state"] == "ready")


def test_retries_give_up_and_fail_over(providers, proxy):
    first, second = providers(overloaded()), providers()
    running = proxy(first, second, provider_settings={"p1": {"retries": 2, "retry_backoff_ms": 10}})

    assert running.post()[0] == 200
    assert len(first.requests) == 3 and len(second.requests) == 1


def test_a_429_is_not_retried_and_nothing_is_retried_after_the_first_byte(providers, proxy):
    limited = providers(Reply(429))
    cut = providers(Stream(message_events(), cut_after=3))
    running = proxy(limited, cut, provider_settings={"p1": {"retries": 3, "retry_backoff_ms": 10},
                                                     "p2": {"retries": 3, "retry_backoff_ms": 10}})

    status, _, body = running.post({"model": "m", "stream": True, "messages": []})

    assert status == 200 and body.rstrip().splitlines()[-2] == b"event: error"
    assert len(limited.requests) == 1 and len(cut.requests) == 1


def test_a_client_that_hangs_up_ends_the_wait_between_retries(providers, proxy):
    first = providers(overloaded())
    running = proxy(first, provider_settings={"p1": {"retries": 3, "retry_backoff_ms": 20000}})
    sock = socket.create_connection(("127.0.0.1", running.server.port), timeout=5)
    sock.sendall(f"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:{running.server.port}\r\n"
                 f"x-api-key: {running.token}\r\nContent-Length: 2\r\n\r\n{{}}".encode())
    assert eventually(lambda: len(first.requests) == 1)
    started = time.monotonic()
    sock.close()

    assert eventually(lambda: "client cancelled" in running.log_text(), timeout=5)
    assert time.monotonic() - started < 5  # not the 20 s pause
    assert len(first.requests) == 1


def test_a_provider_cools_only_after_failure_threshold_failures_in_a_row(providers, proxy):
    first, second = providers(overloaded()), providers()
    running = proxy(first, second, provider_settings={"p1": {"failure_threshold": 3}})

    for expected in ("ready", "ready", "cooling"):
        running.post()
        assert running.policy.snapshot()[0]["state"] == expected
    assert len(first.requests) == 3  # tried first each time until it tripped


def test_a_success_resets_the_failure_count(providers, proxy):
    first, second = providers(), providers()
    first.queue(overloaded(), overloaded(), Reply(200), overloaded(), overloaded())
    running = proxy(first, second, provider_settings={"p1": {"failure_threshold": 3}})

    for _ in range(5):
        running.post()

    assert running.policy.snapshot()[0]["state"] == "ready"  # two, a success, two more: never three


def test_a_retry_after_cools_at_once_whatever_the_threshold(providers, proxy):
    first = providers(Reply(429, headers={"retry-after": "30"}))
    running = proxy(first, providers(), provider_settings={"p1": {"failure_threshold": 5}})

    running.post()

    assert running.policy.snapshot()[0]["state"] == "cooling"


def test_a_body_that_says_so_makes_a_4xx_a_failover(providers, proxy):
    pool = providers(Reply(400, {"type": "error", "error": {"type": "invalid_request_error",
                                                            "message": "No available accounts, retry later"}}))
    other = providers(Reply(400, {"type": "error", "error": {"type": "invalid_request_error",
                                                             "message": "max_tokens too large"}}))
    backup = providers(Reply(200, {**MESSAGE, "content": [{"type": "text", "text": "backup"}]}))
    running = proxy(pool, backup, failover_on_body=["No available accounts"])

    status, _, body = running.post()
    assert (status, text_of(body)) == (200, "backup")
    assert running.policy.snapshot()[0]["state"] == "cooling"

    running2 = proxy(other, backup, failover_on_body=["No available accounts"])
    status, _, _ = running2.post()
    assert status == 400  # other 400s go straight back, as always


# --- waiting when every provider fails ---------------------------------------------------------


def test_waiting_succeeds_when_a_provider_recovers(providers, proxy):
    pool = providers(Reply(200, {**MESSAGE, "content": [{"type": "text", "text": "recovered"}]}))
    pool.queue(*[overloaded() for _ in range(3)])
    running = proxy(pool, wait_when_all_fail={"max_seconds": 10, "every_seconds": 0.3})
    seen_waiting = []

    def watch():
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not seen_waiting:
            if running.server.policy.waiting:
                seen_waiting.append(True)
            time.sleep(0.02)

    import threading
    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.monotonic()
    status, _, body = running.post(timeout=15)
    watcher.join()

    assert (status, text_of(body)) == (200, "recovered")
    assert len(pool.requests) == 4 and 0.8 < time.monotonic() - started < 8
    assert seen_waiting  # visible in status while it waited
    assert eventually(lambda: running.server.policy.waiting == 0)  # counted down after the answer


def test_waiting_ends_with_the_last_failure_when_the_time_is_up(providers, proxy):
    pool = providers(overloaded())
    running = proxy(pool, wait_when_all_fail={"max_seconds": 1, "every_seconds": 0.3})

    status, _, _ = running.post(timeout=15)

    assert status == 529 and 3 <= len(pool.requests) <= 5


def test_a_client_that_hangs_up_stops_the_waiting(providers, proxy):
    pool = providers(overloaded())
    running = proxy(pool, wait_when_all_fail={"max_seconds": 60, "every_seconds": 0.5})
    sock = socket.create_connection(("127.0.0.1", running.server.port), timeout=5)
    sock.sendall(f"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:{running.server.port}\r\n"
                 f"x-api-key: {running.token}\r\nContent-Length: 2\r\n\r\n{{}}".encode())
    assert eventually(lambda: running.server.policy.waiting == 1)
    sock.close()

    assert eventually(lambda: running.server.policy.waiting == 0, timeout=3)
    assert eventually(lambda: "client cancelled while waiting" in running.log_text(), timeout=3)
    count = len(pool.requests)
    time.sleep(1.2)
    assert len(pool.requests) == count  # no more tries for a client that left
