"""Stopping the proxy while requests are in flight: new ones are refused in
Anthropic's shape, and what is still running after the grace period is ended
the way a provider's death is ended, never cut mid-frame."""

import http.client
import json
import threading

from fakes import Stall, Stream, message_events


def open_stream(running):
    conn = http.client.HTTPConnection("127.0.0.1", running.server.port, timeout=15)
    body = json.dumps({"model": "m", "max_tokens": 8, "stream": True, "messages": []}).encode()
    conn.request("POST", "/v1/messages", body=body, headers=running.auth())
    return conn, conn.getresponse()


def test_after_the_grace_period_a_stream_ends_with_an_error_event_and_a_clean_end(providers, proxy):
    frames = message_events()
    provider = providers(Stream(frames, stall_after=3))
    running = proxy(provider)
    conn, response = open_stream(running)
    try:
        received = b""
        while received != b"".join(frames[:3]):
            received += response.read1(65536)

        running.server.stop_soon(grace=0.5)
        status, headers, body = running.post()  # during the grace period
        assert status == 503
        assert headers["x-should-retry"] == "true"
        assert json.loads(body)["error"]["type"] == "api_error"
        assert "shutting down" in json.loads(body)["error"]["message"]

        rest = response.read()  # http.client raises IncompleteRead unless the chunked body ends cleanly
    finally:
        conn.close()
    assert rest.startswith(b"event: error\ndata: ")
    assert json.loads(rest.split(b"data: ", 1)[1])["error"]["message"] == \
        "claude-proxy is shutting down; the answer is incomplete."
    assert b"message_stop" not in rest
    assert running.policy.snapshot()[0]["failures"] == 0  # the provider did nothing wrong


def test_a_request_still_waiting_for_its_provider_gets_a_503_to_retry(providers, proxy):
    first, second = providers(Stall(30)), providers()
    running = proxy(first, second)
    answers = []
    waiting = threading.Thread(target=lambda: answers.append(running.post(timeout=15)))
    waiting.start()
    try:
        assert first.stalled.wait(5)
        running.server.stop_soon(grace=0.3)
        waiting.join(10)
    finally:
        first.release()
    ((status, headers, body),) = answers
    assert status == 503
    assert headers["x-should-retry"] == "true"
    assert not second.requests  # no failover: the proxy is going, not the provider
    assert running.policy.snapshot()[0]["state"] == "ready"
