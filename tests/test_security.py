"""What the proxy refuses to let through: ambiguous framing, foreign hosts and
origins, climbing paths, connection floods, forged log lines, echoed keys."""

import json
import socket

import pytest

from fakes import Reply


def raw_exchange(port, payload, timeout=5):
    """Send raw bytes; return ``(answer, closed)``: everything read, and whether
    the proxy closed the connection (rather than leaving it open)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        answer = b""
        try:
            while data := sock.recv(65536):
                answer += data
        except socket.timeout:
            return answer, False
        except ConnectionResetError:
            pass
        return answer, True


def status_of(answer):
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else None


def error_of(answer):
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]


def head(running, *lines, request_line="POST /v1/messages HTTP/1.1"):
    """A request head with the proxy's own Host and the token, plus ``lines``."""
    fields = [request_line, f"Host: 127.0.0.1:{running.server.port}", f"x-api-key: {running.token}"]
    return ("\r\n".join(fields) + "\r\n").encode() + b"".join(
        (line if isinstance(line, bytes) else line.encode()) + b"\r\n" for line in lines) + b"\r\n"


# --- request framing (RFC 9112) -------------------------------------------------------------


AMBIGUOUS = {
    "differing-content-lengths": (["Content-Length: 2", "Content-Length: 5"], b"{}abc"),
    "identical-content-lengths": (["Content-Length: 2", "Content-Length: 2"], b"{}"),
    "content-length-list": (["Content-Length: 2, 2"], b"{}"),
    "transfer-encoding-gzip": (["Transfer-Encoding: gzip"], b"2\r\n{}\r\n0\r\n\r\n"),
    "transfer-encoding-xchunked": (["Transfer-Encoding: xchunked"], b"2\r\n{}\r\n0\r\n\r\n"),
    "transfer-encoding-chunked-twice": (["Transfer-Encoding: chunked, chunked"], b"2\r\n{}\r\n0\r\n\r\n"),
    "transfer-encoding-two-fields": (["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"],
                                     b"2\r\n{}\r\n0\r\n\r\n"),
    "transfer-encoding-folded": (["Transfer-Encoding: chunked", " , identity"], b"2\r\n{}\r\n0\r\n\r\n"),
    "both-length-and-chunked": (["Content-Length: 2", "Transfer-Encoding: chunked"],
                                b"2\r\n{}\r\n0\r\n\r\n"),
    "space-before-colon": (["Transfer-Encoding : chunked", "Content-Length: 2"], b"{}"),
    "space-in-name": (["Content Length: 2"], b"{}"),
    "non-ascii-name": ([b"X-Caf\xc3\xa9: 1", b"Content-Length: 2"], b"{}"),
    "no-colon": (["Content-Length 2"], b"{}"),
    "bare-cr": ([b"X-Note: a\rContent-Length: 5", b"Content-Length: 2"], b"{}"),
}


@pytest.mark.parametrize("case", AMBIGUOUS)
def test_an_ambiguous_request_head_is_a_400_and_the_connection_closes(providers, proxy, case):
    provider = providers(Reply(200))
    running = proxy(provider)
    lines, body = AMBIGUOUS[case]

    answer, closed = raw_exchange(running.server.port, head(running, *lines) + body)

    assert status_of(answer) == 400 and closed
    assert error_of(answer)["type"] == "invalid_request_error"
    assert provider.connections == 0


def test_a_second_host_header_is_a_400(providers, proxy):
    provider = providers(Reply(200))
    running = proxy(provider)
    second_host = f"Host: 127.0.0.1:{running.server.port}"

    answer, closed = raw_exchange(running.server.port, head(running, "Content-Length: 2", second_host) + b"{}")

    assert status_of(answer) == 400 and closed
    assert provider.connections == 0


def test_a_folded_line_before_the_first_header_is_a_400(providers, proxy):
    provider = providers(Reply(200))
    running = proxy(provider)
    payload = (f"POST /v1/messages HTTP/1.1\r\n Host: evil\r\nHost: 127.0.0.1:{running.server.port}\r\n"
               f"x-api-key: {running.token}\r\nContent-Length: 2\r\n\r\n{{}}").encode()

    answer, closed = raw_exchange(running.server.port, payload)

    assert status_of(answer) == 400 and closed
    assert provider.connections == 0


def test_an_http11_request_without_host_is_a_400(providers, proxy):
    provider = providers(Reply(200))
    running = proxy(provider)
    payload = (f"POST /v1/messages HTTP/1.1\r\nx-api-key: {running.token}\r\n"
               "Content-Length: 2\r\n\r\n{}").encode()

    answer, closed = raw_exchange(running.server.port, payload)

    assert status_of(answer) == 400 and closed
    assert provider.connections == 0


def test_transfer_encoding_in_an_http10_request_is_a_400(providers, proxy):
    provider = providers(Reply(200))
    running = proxy(provider)
    payload = head(running, "Transfer-Encoding: chunked", request_line="POST /v1/messages HTTP/1.0")

    answer, closed = raw_exchange(running.server.port, payload + b"2\r\n{}\r\n0\r\n\r\n")

    assert status_of(answer) == 400 and closed
    assert provider.connections == 0


@pytest.mark.parametrize("lines, body", [
    (["Content-Length: 2"], b"{}"),
    (["Transfer-Encoding: chunked"], b"2\r\n{}\r\n0\r\n\r\n"),
    (["transfer-encoding:  Chunked "], b"2\r\n{}\r\n0\r\n\r\n"),
    (["Content-Length: 2", "X-Folded: a", "  b"], b"{}"),
], ids=["length", "chunked", "chunked-any-case-and-spaces", "folded-ordinary-header"])
def test_a_well_framed_request_goes_through(providers, proxy, lines, body):
    provider = providers(Reply(200))
    running = proxy(provider)

    answer, _ = raw_exchange(running.server.port, head(running, "Connection: close", *lines) + body)

    assert status_of(answer) == 200
    assert provider.requests[0].body == b"{}"


# --- refusals a retry cannot fix ---------------------------------------------------------------


def test_the_proxys_own_refusals_tell_clients_not_to_retry(providers, proxy):
    from fakes import request
    provider = providers(Reply(200))
    running = proxy(provider, max_body_mb=0.001)
    port = running.server.port

    unauthorized = request(running.url, "POST", "/v1/messages", b"{}", {"x-api-key": "wrong"})
    unknown = request(running.url, "POST", "/provider/nope/v1/messages", b"{}", running.auth())
    too_large = request(running.url, "POST", "/v1/messages", b"x" * 2000, running.auth())
    malformed, _ = raw_exchange(port, head(running, "Content-Length: 2", "Content-Length: 3") + b"{}")

    assert [unauthorized[0], unknown[0], too_large[0], status_of(malformed)] == [401, 404, 413, 400]
    for answer in (unauthorized, unknown, too_large):
        assert answer[1]["x-should-retry"] == "false"
    assert b"\r\nx-should-retry: false\r\n" in malformed
    assert provider.connections == 0
