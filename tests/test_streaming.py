"""The streaming relay: commit point, incremental delivery, cuts, cancels."""

import http.client
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from fakes import OVERLOADED_EVENT, CutBody, Reply, Stall, Stream, eventually, message_events, sse

STREAM_BODY = {"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": True,
               "messages": [{"role": "user", "content": "hi"}]}


def open_stream(running, prefix="", timeout=10):
    """Send a streaming request; return the connection and its (unread) response."""
    conn = http.client.HTTPConnection("127.0.0.1", running.server.port, timeout=timeout)
    conn.request("POST", prefix + "/v1/messages?beta=true", body=json.dumps(STREAM_BODY),
                 headers={**running.auth(), "content-type": "application/json"})
    return conn, conn.getresponse()


def read_events(response, count):
    """Read exactly ``count`` SSE events from a chunked response as they come."""
    data = b""
    while data.count(b"\n\n") < count:
        piece = response.read1(65536)
        assert piece, f"stream ended early: {data!r}"
        data += piece
    return data


def test_events_reach_the_client_while_the_provider_is_still_streaming(providers, proxy):
    frames = message_events("one two three four")
    provider = providers(Stream(frames, hold_after=2))  # sends 2 events, then waits for us
    running = proxy(provider)

    conn, response = open_stream(running)
    try:
        early = read_events(response, 2)  # times out (and fails) if the proxy buffers
        assert early == frames[0] + frames[1]
        provider.release()
        rest = response.read()
    finally:
        conn.close()

    assert early + rest == b"".join(frames)


def test_stream_is_relayed_byte_for_byte_with_chunked_encoding(providers, proxy):
    frames = message_events("x" * 5000, pieces=40) + [b": a comment line\n\n", b"event: ping\r\ndata: {}\r\n\r\n"]
    provider = providers(Stream(frames))
    running = proxy(provider)

    conn, response = open_stream(running)
    body = response.read()
    conn.close()

    assert response.getheader("transfer-encoding") == "chunked"
    assert response.getheader("content-type") == "text/event-stream"
    assert body == b"".join(frames)


def test_usage_is_read_from_the_stream(providers, proxy):
    provider = providers(Stream(message_events(input_tokens=120, output_tokens=33)))
    running = proxy(provider)

    conn, response = open_stream(running)
    response.read()
    conn.close()

    expected = {"input": 120, "output": 33, "cache_read": 5, "cache_creation": 2}
    assert eventually(lambda: running.policy.snapshot()[0]["tokens"] == expected)
    assert eventually(lambda: "in=120 out=33" in running.log_text())


def test_usage_is_read_wherever_its_events_fall_among_the_chunks():
    """Only message_start and message_delta carry usage: a chunk with neither (text that
    merely says "usage") counts nothing, and one with either counts it wherever it is."""
    from claude_proxy.relay import Usage

    events = message_events(input_tokens=120, output_tokens=33, text='the "usage": {"output_tokens": 999}')
    usage = Usage()
    for event in events:
        usage.feed_events(event)
    assert (usage.input_tokens, usage.output_tokens) == (120, 33)
    deltas = b"".join(e for e in events if b"content_block_delta" in e)
    usage.feed_events(deltas)  # a chunk of text deltas alone: nothing to count
    assert (usage.input_tokens, usage.output_tokens) == (120, 33)
    together = Usage()
    together.feed_events(b"".join(events))  # message_start first, message_delta after the text
    assert (together.input_tokens, together.output_tokens) == (120, 33)


def test_usage_is_read_from_a_short_stream_sent_with_a_length(providers, proxy):
    frames = message_events(input_tokens=77, output_tokens=4)
    provider = providers(Reply(200, body=b"".join(frames), content_type="text/event-stream"))
    running = proxy(provider)

    conn, response = open_stream(running)
    body = response.read()
    conn.close()

    assert body == b"".join(frames)
    assert response.getheader("content-length") == str(len(body))
    assert eventually(lambda: running.policy.snapshot()[0]["tokens"]["input"] == 77)
    assert running.policy.snapshot()[0]["tokens"]["output"] == 4


def test_error_as_first_event_fails_over(providers, proxy):
    good = message_events("from the second")
    first = providers(Stream([OVERLOADED_EVENT]))
    second = providers(Stream(good))
    running = proxy(first, second)

    conn, response = open_stream(running)
    body = response.read()
    conn.close()

    assert body == b"".join(good)
    assert "overloaded_error" in running.policy.snapshot()[0]["last_error"]


def test_error_first_event_from_the_last_provider_reaches_the_client(providers, proxy):
    first = providers(Stream([OVERLOADED_EVENT]))
    running = proxy(first)

    conn, response = open_stream(running)
    body = response.read()
    conn.close()

    assert response.status == 200
    assert body == OVERLOADED_EVENT


def test_provider_silent_before_the_first_event_fails_over(providers, proxy):
    first = providers(Stream(stall_after=0))  # headers, then nothing
    second = providers(Stream())
    running = proxy(first, second, provider_settings={"p1": {"read_timeout": 0.5}})

    conn, response = open_stream(running)
    body = response.read()
    conn.close()

    assert body == b"".join(message_events())
    assert first.client_hung_up.wait(5)


def _assert_ends_with_error_frame(body, kept_frames, error_type):
    head, _, tail = body.rpartition(b"event: error\n")
    assert head == b"".join(kept_frames)
    name_line, data_line = (b"event: error\n" + tail).strip().split(b"\n")
    error = json.loads(data_line[len(b"data: "):])
    assert error["type"] == "error" and error["error"]["type"] == error_type
    assert b"message_stop" not in body


def test_cut_mid_stream_ends_with_an_error_event_and_a_clean_chunked_end(providers, proxy):
    frames = message_events("a long answer", pieces=6)
    first = providers(Stream(frames, cut_after=4, reset=True))
    second = providers(Stream())
    running = proxy(first, second)

    conn, response = open_stream(running)
    body = response.read()  # raises IncompleteRead if the chunked body is not ended cleanly
    conn.close()

    _assert_ends_with_error_frame(body, frames[:4], "api_error")
    assert second.requests == []  # bytes went out: never switch provider
    assert eventually(lambda: running.policy.snapshot()[0]["failures"] == 1)


def test_cut_inside_an_event_never_sends_half_an_event(providers, proxy):
    frames = message_events("abc")
    partial = frames[3][:25]
    first = providers(Stream(frames[:3] + [partial, frames[3][25:]], cut_after=4))
    running = proxy(first)

    conn, response = open_stream(running)
    body = response.read()
    conn.close()

    _assert_ends_with_error_frame(body, frames[:3], "api_error")


def test_provider_silent_mid_stream_times_out_with_an_error_event(providers, proxy):
    frames = message_events()
    first = providers(Stream(frames, stall_after=3))
    running = proxy(first, provider_settings={"p1": {"read_timeout": 0.5}})

    conn, response = open_stream(running)
    body = response.read()
    conn.close()

    _assert_ends_with_error_frame(body, frames[:3], "timeout_error")


def test_client_hanging_up_mid_stream_closes_the_provider_connection(providers, proxy):
    provider = providers(Stream(message_events(), stall_after=2))  # then silent, "thinking"
    running = proxy(provider)

    conn, response = open_stream(running)
    read_events(response, 2)
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()

    assert provider.client_hung_up.wait(5), "the provider connection must be closed at once"
    # It answered, and the tokens its message_start announced were spent: they are booked.
    assert eventually(lambda: running.policy.snapshot()[0]["tokens"]["input"] == 25)
    assert running.policy.snapshot()[0]["failures"] == 0
    provider.default = Reply(200)
    assert running.post()[0] == 200  # and the proxy goes on serving
    assert eventually(lambda: "client cancelled" in running.log_text())
    assert "Traceback" not in running.log_text()


def test_client_hanging_up_while_waiting_for_a_non_stream_answer_stops_the_provider(providers, proxy):
    provider = providers(Stall(30))
    running = proxy(provider)
    sock = socket.create_connection(("127.0.0.1", running.server.port))
    body = json.dumps({"model": "m", "messages": []}).encode()
    sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nx-api-key: %s\r\nContent-Length: %d\r\n\r\n%s"
                 % (running.server.port, running.token.encode(), len(body), body))
    assert provider.stalled.wait(5)

    sock.close()

    assert provider.client_hung_up.wait(5)
    assert eventually(lambda: "client cancelled" in running.log_text())
    assert running.policy.snapshot()[0]["failures"] == 0  # a cancel is not the provider's fault


@pytest.fixture
def watcher():
    from claude_proxy.cancel import DisconnectWatcher
    made = DisconnectWatcher()
    yield made
    made.close()


def test_the_watcher_fires_only_the_cancel_of_the_request_still_waiting(watcher):
    ours, client = socket.socketpair()
    with ours, client:
        finished = watcher.watch(ours)
        time.sleep(watcher.INTERVAL * 2)  # long enough to be in the selector
        watcher.unwatch(ours)  # that answer is complete; the connection is kept alive
        waiting = watcher.watch(ours)  # the next request on it
        client.close()

        assert eventually(waiting.is_set, timeout=5)
        assert not finished.is_set()


def test_a_late_readiness_of_a_finished_request_touches_neither_it_nor_the_next(watcher):
    """The selector reported the socket of request A, but A ended (and B began on
    the same keep-alive connection) before the watcher looked at it."""
    ours, client = socket.socketpair()
    with ours, client:
        finished = watcher.watch(ours)
        assert eventually(lambda: watcher._selector.get_map(), timeout=5)  # A is in the selector
        watcher.unwatch(ours)
        waiting = watcher.watch(ours)
        client.close()

        watcher._check(ours, finished)  # what the watcher thread does with the stale event

        assert not finished.is_set()
        assert eventually(waiting.is_set, timeout=5)  # B is still watched, and fires on its own


def test_a_readiness_already_consumed_does_not_block_the_watcher(watcher):
    """The handler read the pipelined request between the watcher's select and
    its peek: the client socket (with its idle timeout) has nothing to read."""
    ours, client = socket.socketpair()
    with ours, client:
        ours.settimeout(30)  # as the handler's socket: CLIENT_IDLE_TIMEOUT
        cancel = watcher.watch(ours)
        looked = threading.Thread(target=watcher._check, args=(ours, cancel))
        looked.start()
        looked.join(10)
        assert not looked.is_alive(), "the watcher blocked on an empty socket"
        assert not cancel.is_set()


def test_closing_the_watcher_ends_its_thread(watcher):
    ours, client = socket.socketpair()
    with ours, client:
        watcher.watch(ours)
        watcher.close()
        watcher._thread.join(5)
    assert not watcher._thread.is_alive()


def test_the_watcher_notices_a_hang_up_soon_after_the_request_began(watcher):
    ours, client = socket.socketpair()
    with ours, client:
        cancel = watcher.watch(ours)
        client.close()  # at once: before the socket is handed to the selector
        assert eventually(cancel.is_set, timeout=5)

    quiet, other = socket.socketpair()
    with quiet, other:
        untouched = watcher.watch(quiet)
        watcher.unwatch(quiet)
        other.close()
        time.sleep(watcher.INTERVAL * 3)
        assert not untouched.is_set()


def test_a_hundred_concurrent_streams_all_arrive_complete(providers, proxy):
    frames = [sse("message_start", {"type": "message_start", "message": {"usage": {"input_tokens": 1}}})]
    frames += [sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                           "delta": {"type": "text_delta", "text": f"piece {i}"}})
               for i in range(20)]
    frames.append(sse("message_stop", {"type": "message_stop"}))
    provider = providers(Stream(frames, delay=0.01))
    running = proxy(provider)
    expected = b"".join(frames)
    barrier = threading.Barrier(100, timeout=30)

    def one(_):
        barrier.wait()
        conn, response = open_stream(running, timeout=60)
        try:
            return response.read()
        finally:
            conn.close()

    with ThreadPoolExecutor(100) as pool:
        bodies = list(pool.map(one, range(100)))

    assert all(body == expected for body in bodies)
    assert eventually(lambda: running.policy.snapshot()[0]["requests"] == 100)


def test_non_stream_chunked_answer_cut_midway_ends_the_client_connection(providers, proxy):
    running = proxy(providers(CutBody(chunked=True, reset=True)))
    conn = http.client.HTTPConnection("127.0.0.1", running.server.port, timeout=5)
    conn.request("POST", "/v1/messages", body=b"{}", headers=running.auth())
    response = conn.getresponse()

    with pytest.raises(http.client.IncompleteRead):
        response.read()  # a hang here (timeout) or a clean end would both be wrong
    conn.close()


class CloseDelimitedStream(Stream):
    """An SSE answer without length or chunking: the connection's close ends it."""

    def __call__(self, handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Connection", "close")
        handler.end_headers()
        for frame in self.frames[: self.cut_after]:
            handler.wfile.write(frame)
        handler.close_connection = True


def test_close_delimited_stream_cut_before_message_stop_ends_with_an_error_event(providers, proxy):
    frames = message_events()
    running = proxy(providers(CloseDelimitedStream(frames, cut_after=3)))

    conn, response = open_stream(running)
    body = response.read()
    conn.close()

    _assert_ends_with_error_frame(body, frames[:3], "api_error")


def test_close_delimited_complete_stream_passes_unchanged(providers, proxy):
    frames = message_events()
    running = proxy(providers(CloseDelimitedStream(frames)))

    conn, response = open_stream(running)
    body = response.read()
    conn.close()

    assert body == b"".join(frames)


def test_http_1_0_client_gets_the_stream_without_chunking(providers, proxy):
    frames = message_events()
    running = proxy(providers(Stream(frames)))
    sock = socket.create_connection(("127.0.0.1", running.server.port), timeout=10)
    body = json.dumps(STREAM_BODY).encode()

    sock.sendall(b"POST /v1/messages HTTP/1.0\r\nx-api-key: %s\r\nContent-Length: %d\r\n\r\n%s"
                 % (running.token.encode(), len(body), body))
    answer = b""
    while data := sock.recv(65536):  # the proxy's close ends the body
        answer += data
    sock.close()

    head, _, received = answer.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()
    assert received == b"".join(frames)


def test_a_late_hang_up_cannot_touch_a_connection_already_back_in_the_pool(monkeypatch):
    """Cancel.fire and Cancel.detach are atomic: once detach has returned (the
    answer is complete and its connection pooled), no shutdown of it is under way."""
    import socket as socket_module
    from claude_proxy.cancel import Cancel

    entered, proceed, detached = threading.Event(), threading.Event(), threading.Event()
    real_shutdown = socket_module.socket.shutdown

    def slow_shutdown(sock, how):
        entered.set()
        proceed.wait(5)
        real_shutdown(sock, how)

    monkeypatch.setattr(socket_module.socket, "shutdown", slow_shutdown)
    provider_side, other_end = socket_module.socketpair()
    try:
        cancel = Cancel()
        cancel.attach(provider_side)
        firing = threading.Thread(target=cancel.fire)
        firing.start()
        assert entered.wait(5)
        detaching = threading.Thread(target=lambda: (cancel.detach(), detached.set()))
        detaching.start()
        assert not detached.wait(0.3)  # detach waits for the shutdown under way to finish
        proceed.set()
        firing.join(5)
        assert detached.wait(5)
        detaching.join(5)
    finally:
        provider_side.close()
        other_end.close()


def test_the_hang_up_watcher_stays_within_its_selectors_capacity():
    """Windows' select() takes at most 512 sockets: past the capacity requests are not watched."""
    import socket as socket_module
    import time
    from claude_proxy.cancel import DisconnectWatcher
    from claude_proxy.process import selector_capacity

    assert selector_capacity("nt") == 500 and selector_capacity("posix") is None
    watcher = DisconnectWatcher(capacity=2)
    pairs = [socket_module.socketpair() for _ in range(4)]
    try:
        cancels = [watcher.watch(proxy_side) for proxy_side, _ in pairs]
        time.sleep(DisconnectWatcher.INTERVAL * 3)  # old enough to be promoted, if there is room
        assert len(watcher._selector.get_map()) == 2
        pairs[0][1].close()  # the first client, in the selector, hangs up: noticed
        assert eventually(cancels[0].is_set, timeout=3)
        assert eventually(lambda: len(watcher._selector.get_map()) == 2, timeout=3)  # the room is reused
        assert not any(cancel.is_set() for cancel in cancels[1:])
    finally:
        watcher.close()
        for proxy_side, client_side in pairs:
            proxy_side.close()
            client_side.close()
