"""Providers that answer in ways the HTTP and SSE specs allow but naive code
does not expect: interim 1xx answers, absurd retry-after values, events
separated by CR alone, and streams without event boundaries."""

import http.client
import json
import math

import pytest

from fakes import MESSAGE, Reply, Stream, message_events, sse

from claude_proxy.failover import retry_after_seconds


def answer_text(body):
    return json.loads(body)["content"][0]["text"]


def reply_saying(text):
    return Reply(body={**MESSAGE, "content": [{"type": "text", "text": text}]})


class Interim:
    """Send interim (1xx) answers, then behave as ``then``."""

    def __init__(self, *statuses, then):
        self.statuses = statuses
        self.then = then

    def __call__(self, handler):
        for status in self.statuses:
            handler.wfile.write(b"HTTP/1.1 %d Interim\r\nLink: </style.css>; rel=preload\r\n\r\n" % status)
        self.then(handler)


# --- interim answers -----------------------------------------------------------------


@pytest.mark.parametrize("statuses", [(103,), (102,), (102, 103, 103)])
def test_interim_answers_are_skipped_and_the_pool_stays_in_step(providers, proxy, statuses):
    provider = providers().queue(Interim(*statuses, then=reply_saying("first")), reply_saying("second"))
    running = proxy(provider)
    conn = http.client.HTTPConnection("127.0.0.1", running.server.port, timeout=10)
    try:
        answers = []
        for _ in range(2):  # one client connection, so the proxy reuses its pooled provider connection
            conn.request("POST", "/v1/messages", body=b"{}", headers=running.auth())
            response = conn.getresponse()
            answers.append((response.status, answer_text(response.read())))
    finally:
        conn.close()

    assert answers == [(200, "first"), (200, "second")]
    assert provider.connections == 1  # the second request went over the pooled connection


# --- retry-after values ------------------------------------------------------------------


@pytest.mark.parametrize("value", ["inf", "Infinity", "1e400", "nan", "-5", "-inf"])
def test_a_retry_after_that_is_not_a_finite_delay_is_ignored(value):
    assert retry_after_seconds([("retry-after", value)]) is None
    assert retry_after_seconds([("retry-after-ms", value)]) is None


@pytest.mark.parametrize("value", ["inf", "1e400", "nan", "-5"])
def test_a_provider_sending_an_absurd_retry_after_still_fails_over(providers, proxy, value):
    first = providers(Reply(429, headers={"retry-after": value}))
    second = providers(reply_saying("from the second"))
    running = proxy(first, second, cooldown_minutes=2)

    status, _, body = running.post()

    assert (status, answer_text(body)) == (200, "from the second")
    left = running.policy.cooling_for(running.config.providers[0])
    assert 0 < left <= 120 and math.isfinite(left)  # cooldown_minutes, not the provider's value
    assert running.policy.snapshot()[0]["state"] == "cooling"


def test_a_provider_given_cooldown_is_capped_at_max_cooldown_minutes(providers, proxy):
    first = providers(Reply(429, headers={"retry-after": str(10 * 365 * 86400)}))
    running = proxy(first, providers(Reply(200)), max_cooldown_minutes=90)

    running.post()

    assert running.policy.cooling_for(running.config.providers[0]) == pytest.approx(90 * 60, abs=2)


# --- SSE line endings and event boundaries ---------------------------------------------------


def cr_only(frames):
    return [frame.replace(b"\n", b"\r") for frame in frames]


def stream_through(running, timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", running.server.port, timeout=timeout)
    body = json.dumps({"model": "m", "max_tokens": 8, "stream": True, "messages": []}).encode()
    conn.request("POST", "/v1/messages", body=body, headers=running.auth())
    return conn, conn.getresponse()


def test_a_stream_with_cr_line_endings_is_relayed_event_by_event(providers, proxy):
    frames = cr_only(message_events())
    provider = providers(Stream(frames, hold_after=2))
    running = proxy(provider)
    conn, response = stream_through(running)
    try:
        first_two = b""
        while first_two.count(b"\r\r") < 2:  # both events arrive while the provider holds the rest
            first_two += response.read1(65536)
        assert first_two == b"".join(frames[:2])
        provider.release()
        assert first_two + response.read() == b"".join(frames)
    finally:
        conn.close()


def test_an_error_first_event_with_cr_line_endings_fails_over(providers, proxy):
    overloaded = sse("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    first = providers(Stream(cr_only([overloaded])))
    second = providers(Stream(message_events()))
    running = proxy(first, second)
    conn, response = stream_through(running)
    try:
        assert response.read() == b"".join(message_events())
    finally:
        conn.close()
    assert running.policy.snapshot()[0]["state"] == "cooling"


def test_a_first_event_without_a_boundary_is_a_failure_before_the_commit_point(providers, proxy):
    endless = b"event: message_start\ndata: " + b"x" * (2 * 1024 * 1024)  # no blank line, ever
    first = providers(Stream([endless], stall_after=1))
    second = providers(Stream(message_events()))
    running = proxy(first, second)
    conn, response = stream_through(running)
    try:
        assert response.read() == b"".join(message_events())
    finally:
        conn.close()
    assert "no event boundary" in running.policy.snapshot()[0]["last_error"]


def test_an_event_without_a_boundary_after_the_commit_point_is_relayed_within_a_bound(providers, proxy):
    frames = message_events()
    endless = b"data: " + b"y" * (3 * 1024 * 1024)  # a provider that stopped separating events
    provider = providers(Stream([frames[0], endless], stall_after=2))
    running = proxy(provider)
    conn, response = stream_through(running)
    try:
        received = b""
        while len(received) < len(frames[0]) + 2 * 1024 * 1024:  # arrives while the provider stalls
            data = response.read1(1024 * 1024)
            assert data, "the stream ended early"
            received += data
        assert received.startswith(frames[0] + b"data: yyy")
    finally:
        provider.release()
        conn.close()


# --- the event buffer, unit by unit ------------------------------------------------------------

from hypothesis import given, strategies as st  # noqa: E402

from claude_proxy.sse import EventBuffer, split_events  # noqa: E402

ENDINGS = st.sampled_from([b"\n", b"\r\n", b"\r"])
LINE = st.binary(min_size=1, max_size=12).map(lambda b: b.replace(b"\r", b"x").replace(b"\n", b"y"))


@st.composite
def event_streams(draw):
    """Events of one or more lines, each line ending in any of the three endings."""
    events = []
    for _ in range(draw(st.integers(1, 6))):
        lines = draw(st.lists(LINE, min_size=1, max_size=3))
        events.append(b"".join(line + draw(ENDINGS) for line in lines) + draw(ENDINGS))
    return events


@given(event_streams(), st.lists(st.integers(1, 20), max_size=30))
def test_the_event_buffer_hands_out_whole_events_however_the_bytes_are_split(events, cuts):
    stream = b"".join(events)
    buffer, handed_out, position = EventBuffer(), [], 0
    for size in cuts + [len(stream)]:
        buffer.feed(stream[position:position + size])
        position += size
        taken = buffer.take_events()
        if taken:
            handed_out.append(taken)
    rest = buffer.take_all()
    assert b"".join(handed_out) + rest == stream  # byte for byte, nothing lost or added
    assert split_events(b"".join(handed_out) + rest) == split_events(stream)
    for piece in handed_out:  # every piece handed out ends at an event's end
        assert piece.rstrip(b"\r\n") != piece  # ends with a line ending (a whitespace-only event too)


def test_a_lone_crlf_is_one_line_ending_not_a_blank_line():
    buffer = EventBuffer()
    buffer.feed(b"event: ping\r\ndata: {}\r\n")
    assert buffer.take_events() == b""
    buffer.feed(b"\r\n")
    assert buffer.take_events() == b"event: ping\r\ndata: {}\r\n\r\n"
