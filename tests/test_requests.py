"""Request handling: paths, headers, bodies, the token, the proxy's own endpoints."""

import http.client
import json
import socket
import time

import pytest

from fakes import Reply, eventually, request

# --- paths ---------------------------------------------------------------------


def test_path_and_query_are_forwarded_under_the_base_url_path(providers, proxy):
    provider = providers(Reply(200))
    running = proxy(provider.url + "/anthropic")
    provider_url = provider.url
    assert running.config.providers[0].base_url == provider_url + "/anthropic"

    running.post(path="/v1/messages?beta=true")

    assert provider.requests[0].path == "/anthropic/v1/messages?beta=true"


@pytest.mark.parametrize("method, path", [
    ("POST", "/v1/messages/count_tokens?beta=true"),
    ("GET", "/v1/models?limit=1000"),
])
def test_other_api_endpoints_pass_through(providers, proxy, method, path):
    provider = providers(Reply(200, {"input_tokens": 42}))
    running = proxy(provider)

    code, _, body = request(running.url, method, path, b"{}" if method == "POST" else None, running.auth())

    assert code == 200 and json.loads(body) == {"input_tokens": 42}
    assert (provider.requests[0].method, provider.requests[0].path) == (method, path)


class NoContent:
    def __call__(self, handler):
        handler.send_response(204)
        handler.end_headers()


class HeadAnswer:
    """What a server says to HEAD: the length of the body a GET would get, and no body."""

    def __call__(self, handler):
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", "1234")
        handler.end_headers()


def test_a_204_comes_back_without_a_length_and_the_connection_stays_usable(providers, proxy):
    provider = providers(NoContent())
    provider.queue(NoContent(), Reply(200))
    running = proxy(provider)
    conn = http.client.HTTPConnection("127.0.0.1", running.server.port, timeout=5)
    try:
        conn.request("DELETE", "/v1/files/file_1", headers=running.auth())
        response = conn.getresponse()
        assert (response.status, response.read()) == (204, b"")
        assert response.getheader("content-length") is None
        assert response.getheader("transfer-encoding") is None

        conn.request("POST", "/v1/messages", body=b"{}", headers=running.auth())
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def test_a_forwarded_head_reports_the_providers_length_without_a_body(providers, proxy):
    provider = providers(HeadAnswer())
    running = proxy(provider)
    sock = socket.create_connection(("127.0.0.1", running.server.port), timeout=5)
    with sock:
        one = b"HEAD /v1/models HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nx-api-key: %s\r\n\r\n" % (
            running.server.port, running.token.encode())
        sock.sendall(one + one)
        received = b""
        while received.count(b"\r\n\r\n") < 2:
            data = sock.recv(65536)
            assert data, received
            received += data
    first, second, rest = received.split(b"\r\n\r\n", 2)
    assert first.startswith(b"HTTP/1.1 200") and second.startswith(b"HTTP/1.1 200")  # no body between
    assert b"Content-Length: 1234" in first and rest == b""
    assert [r.method for r in provider.requests] == ["HEAD", "HEAD"]


@pytest.mark.parametrize("path", ["/", "/provider/p1", "/provider/p1/"])
def test_head_preconnect_is_answered_locally_without_a_token(providers, proxy, path):
    provider = providers(Reply(200))
    running = proxy(provider)

    code, _, body = request(running.url, "HEAD", path)

    assert code == 200 and body == b""
    assert provider.requests == []


def test_health_needs_no_token(providers, proxy):
    running = proxy(providers())

    code, _, body = request(running.url, "GET", "/health")

    assert code == 200 and json.loads(body)["status"] == "ok"


# --- the client token ---------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"x-api-key": "wrong"}, {"authorization": "Bearer wrong"}],
                         ids=["missing", "wrong-key", "wrong-bearer"])
def test_wrong_or_missing_token_is_a_401_in_anthropic_shape(providers, proxy, headers):
    provider = providers(Reply(200))
    running = proxy(provider)

    code, _, body = request(running.url, "POST", "/v1/messages", b"{}", headers)

    assert code == 401
    assert json.loads(body)["error"]["type"] == "authentication_error"
    assert provider.requests == []
    assert eventually(lambda: "POST /v1/messages -> 401 refused: Missing or wrong" in running.log_text())
    assert "wrong" not in running.log_text().replace("Missing or wrong", "")  # no offered token


@pytest.mark.parametrize("style", ["x-api-key", "bearer"])
def test_token_is_accepted_as_api_key_or_bearer(providers, proxy, style):
    running = proxy(providers(Reply(200)))
    headers = {"x-api-key": running.token} if style == "x-api-key" else \
        {"authorization": f"Bearer {running.token}"}

    code, _, _ = request(running.url, "POST", "/v1/messages", b"{}", headers)

    assert code == 200


def test_token_file_is_created_owner_only(providers, proxy):
    running = proxy(providers())

    assert running.paths.token.read_text().strip() == running.token
    if hasattr(running.paths.token, "stat") and __import__("os").name == "posix":
        assert running.paths.token.stat().st_mode & 0o777 == 0o600


def test_require_token_false_accepts_any_key(providers, proxy):
    running = proxy(providers(Reply(200)), require_token=False)

    code, _, _ = request(running.url, "POST", "/v1/messages", b"{}", {"x-api-key": "anything"})

    assert code == 200


def test_status_and_shutdown_need_the_token(providers, proxy):
    running = proxy(providers())

    assert request(running.url, "GET", "/status")[0] == 401
    assert request(running.url, "POST", "/shutdown")[0] == 401


# --- headers ------------------------------------------------------------------------


def test_client_credentials_never_reach_the_provider_and_its_key_is_sent(providers, proxy):
    provider = providers(Reply(200))
    running = proxy(provider, provider_settings={"p1": {"auth_header": "x-api-key"}})
    headers = {
        "authorization": f"Bearer {running.token}",
        "x-api-key": "fake-users-own-anthropic-key",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14",
        "x-claude-code-session-id": "session-1",
        "user-agent": "claude-cli/2.1.197 (external, cli)",
        "accept-encoding": "gzip, deflate, br, zstd",
        "connection": "keep-alive, x-hop",
        "keep-alive": "timeout=5",
        "x-hop": "dropped because Connection names it",
        "x-stainless-retry-count": "0",
    }

    code, _, _ = request(running.url, "POST", "/v1/messages", b"{}", headers)

    assert code == 200
    seen = provider.requests[0]
    assert seen.headers["x-api-key"] == "secret-key-p1-0"
    assert "authorization" not in seen.headers
    assert [v for k, v in seen.header_list if k.lower() == "x-api-key"] == ["secret-key-p1-0"]
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.headers["anthropic-beta"] == "claude-code-20250219,interleaved-thinking-2025-05-14"
    assert seen.headers["x-claude-code-session-id"] == "session-1"
    assert seen.headers["user-agent"] == "claude-cli/2.1.197 (external, cli)"
    assert seen.headers["x-stainless-retry-count"] == "0"
    assert seen.headers["accept-encoding"] == "identity"
    assert seen.headers["host"] == f"127.0.0.1:{provider.port}"
    for hop in ("keep-alive", "x-hop"):
        assert hop not in seen.headers
    assert "keep-alive" not in seen.headers.get("connection", "")


@pytest.mark.parametrize("mode, expected", [
    ("x-api-key", {"x-api-key": "secret-key-p1-0"}),
    ("bearer", {"authorization": "Bearer secret-key-p1-0"}),
    ("both", {"x-api-key": "secret-key-p1-0", "authorization": "Bearer secret-key-p1-0"}),
])
def test_auth_header_setting_chooses_how_the_key_is_sent(providers, proxy, mode, expected):
    provider = providers(Reply(200))
    running = proxy(provider, provider_settings={"p1": {"auth_header": mode}})

    running.post()

    seen = provider.requests[0].headers
    assert {k: seen.get(k) for k in ("x-api-key", "authorization") if k in seen} == expected


def test_configured_extra_headers_are_sent(providers, proxy):
    provider = providers(Reply(200))
    running = proxy(provider, provider_settings={"p1": {"headers": {"X-Org": "team-1", "anthropic-beta": "none"}}})

    running.post(headers={"anthropic-beta": "from-client"})

    seen = provider.requests[0].header_list
    assert ("X-Org", "team-1") in seen
    assert [v for k, v in seen if k.lower() == "anthropic-beta"] == ["none"]


def test_a_folded_client_header_is_unfolded_and_one_with_a_nul_dropped(providers, proxy):
    provider = providers(Reply(200))
    running = proxy(provider)
    with socket.create_connection(("127.0.0.1", running.server.port), timeout=5) as sock:
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nx-api-key: %s\r\n"
                     b"X-Folded: first\r\n  second\r\nX-Nul: a\x00b\r\n"
                     b"Content-Length: 2\r\n\r\n{}"
                     % (running.server.port, running.token.encode()))
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")

    seen = provider.requests[0].headers
    assert seen["x-folded"] == "first second"
    assert "x-nul" not in seen


def test_a_path_that_cannot_be_sent_on_is_a_400_and_no_provider_is_contacted(providers, proxy):
    provider = providers(Reply(200))
    running = proxy(provider)
    with socket.create_connection(("127.0.0.1", running.server.port), timeout=5) as sock:
        sock.sendall(b"POST /v1/messages/\xc3\xa9 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nx-api-key: %s\r\n"
                     b"Content-Length: 2\r\n\r\n{}" % (running.server.port, running.token.encode()))
        answer = sock.recv(65536)

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert json.loads(body)["error"]["type"] == "invalid_request_error"
    assert provider.requests == []
    assert running.policy.snapshot()[0]["failures"] == 0


def test_a_configured_authorization_header_is_sent_instead_of_the_one_from_the_key(providers, proxy):
    provider = providers(Reply(200))
    running = proxy(provider, provider_settings={"p1": {"headers": {"Authorization": "Token custom"}}})

    running.post()

    seen = provider.requests[0].header_list
    assert [v for k, v in seen if k.lower() == "authorization"] == ["Token custom"]
    assert [v for k, v in seen if k.lower() == "x-api-key"] == ["secret-key-p1-0"]


def test_provider_response_headers_come_back_except_hop_by_hop(providers, proxy):
    headers = {"request-id": "req_123", "anthropic-ratelimit-requests-remaining": "99",
               "retry-after": "3", "x-should-retry": "true", "keep-alive": "timeout=99"}
    running = proxy(providers(Reply(200, headers=headers)))

    _, seen, _ = running.post()

    for name in ("request-id", "anthropic-ratelimit-requests-remaining", "retry-after", "x-should-retry"):
        assert seen[name] == headers[name]
    assert "keep-alive" not in seen


# --- model mapping ---------------------------------------------------------------------


MODELS = {"claude-*haiku*": "kimi-k2-turbo-preview", "*": "kimi-k2-0905-preview"}


@pytest.mark.parametrize("requested, expected", [
    ("claude-haiku-4-5-20251001", "kimi-k2-turbo-preview"),
    ("claude-3-5-Haiku-latest", "kimi-k2-turbo-preview"),
    ("claude-sonnet-4-5", "kimi-k2-0905-preview"),
])
def test_model_is_mapped_by_the_first_matching_glob(providers, proxy, requested, expected):
    provider = providers(Reply(200))
    running = proxy(provider, provider_settings={"p1": {"models": MODELS}})

    running.post(body={"model": requested, "messages": []})

    assert provider.requests[0].json()["model"] == expected


def test_mapping_changes_only_the_model_bytes(providers, proxy):
    provider = providers(Reply(200))
    running = proxy(provider, provider_settings={"p1": {"models": MODELS}})
    before = (b'{ "max_tokens" :32000,\n  "model":"claude-sonnet-4-5", "messages":[{"role":"system",'
              b'"content":"caf\\u00e9 \xe2\x9c\x93"}],"temperature":1.0e0,"future_field":{"x":[1,2]}}')

    running.post(body=before)

    assert provider.requests[0].body == before.replace(b'"claude-sonnet-4-5"', b'"kimi-k2-0905-preview"')


@pytest.mark.parametrize("body", [
    b'{"model":"claude-sonnet-4-5"}',          # no model map: untouched
    b"not json at all",
    b'["model", "claude"]',
])
def test_bodies_pass_untouched_without_a_map_or_a_model(providers, proxy, body):
    provider = providers(Reply(200))
    running = proxy(provider)

    running.post(body=body)

    assert provider.requests[0].body == body


def test_each_provider_gets_its_own_model_name(providers, proxy):
    first, second = providers(Reply(529, b"{}")), providers(Reply(200))
    running = proxy(first, second, provider_settings={"p1": {"models": {"*": "MiniMax-M2"}},
                                                      "p2": {"models": MODELS}})

    running.post(body={"model": "claude-opus-4-1", "messages": []})

    assert first.requests[0].json()["model"] == "MiniMax-M2"
    assert second.requests[0].json()["model"] == "kimi-k2-0905-preview"


# --- body limit -------------------------------------------------------------------------


LIMIT_MB = 0.01  # 10 KiB keeps the tests fast
BIG = b'{"model":"m","messages":"' + b"x" * 300_000 + b'"}'


def _assert_413(code, body):
    assert code == 413
    assert json.loads(body)["error"]["type"] == "request_too_large"


def test_oversized_content_length_body_is_a_413_and_no_provider_is_contacted(providers, proxy):
    provider = providers(Reply(200))
    running = proxy(provider, max_body_mb=LIMIT_MB)

    code, _, body = running.post(body=BIG)

    _assert_413(code, body)
    assert provider.connections == 0
    assert eventually(lambda: "POST /v1/messages -> 413 refused: " in running.log_text())


def test_oversized_chunked_body_is_a_413(providers, proxy):
    provider = providers(Reply(200))
    running = proxy(provider, max_body_mb=LIMIT_MB)
    conn = http.client.HTTPConnection("127.0.0.1", running.server.port, timeout=10)
    chunks = (BIG[i:i + 4096] for i in range(0, len(BIG), 4096))

    try:
        conn.request("POST", "/v1/messages", body=chunks, headers=running.auth(), encode_chunked=True)
        response = conn.getresponse()
        _assert_413(response.status, response.read())
    finally:
        conn.close()
    assert provider.connections == 0


def test_chunked_body_within_the_limit_is_forwarded(providers, proxy):
    provider = providers(Reply(200))
    running = proxy(provider)
    conn = http.client.HTTPConnection("127.0.0.1", running.server.port, timeout=10)
    body = b'{"model":"m","messages":[]}'

    try:
        conn.request("POST", "/v1/messages", body=iter([body[:10], body[10:]]), headers=running.auth(),
                     encode_chunked=True)
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    assert provider.requests[0].body == body
    assert provider.requests[0].headers["content-length"] == str(len(body))


def test_a_client_still_sending_can_read_the_413_instead_of_a_reset(providers, proxy):
    running = proxy(providers(Reply(200)), max_body_mb=LIMIT_MB)
    sock = socket.create_connection(("127.0.0.1", running.server.port), timeout=10)
    head = (f"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:{running.server.port}\r\nx-api-key: {running.token}\r\n"
            f"Content-Length: {len(BIG)}\r\n\r\n").encode()

    sock.sendall(head)
    for i in range(0, len(BIG), 16384):  # keeps sending after the proxy has decided
        sock.sendall(BIG[i:i + 16384])
        time.sleep(0.001)
    answer = b""
    while True:
        data = sock.recv(65536)  # a reset here raises ConnectionResetError
        if not data:
            break
        answer += data
    sock.close()

    assert answer.startswith(b"HTTP/1.1 413")
    _assert_413(413, answer.split(b"\r\n\r\n", 1)[1])


def test_expect_100_continue_with_an_oversized_body_gets_413_before_sending(providers, proxy):
    running = proxy(providers(Reply(200)), max_body_mb=LIMIT_MB)
    sock = socket.create_connection(("127.0.0.1", running.server.port), timeout=10)

    sock.sendall((f"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:{running.server.port}\r\nx-api-key: {running.token}\r\n"
                  f"Expect: 100-continue\r\nContent-Length: {len(BIG)}\r\n\r\n").encode())
    answer = sock.recv(65536)
    sock.close()

    assert answer.startswith(b"HTTP/1.1 413")


# --- connections and the proxy's own errors ------------------------------------------------


def test_client_connection_is_kept_alive_across_requests(providers, proxy):
    provider = providers(Reply(200))
    running = proxy(provider)
    conn = http.client.HTTPConnection("127.0.0.1", running.server.port, timeout=10)

    statuses = []
    for _ in range(3):
        conn.request("POST", "/v1/messages", body=b"{}", headers=running.auth())
        response = conn.getresponse()
        response.read()
        statuses.append((response.status, response.version))
    local_port = conn.sock.getsockname()[1]
    conn.close()

    assert statuses == [(200, 11)] * 3
    assert local_port  # one connection served all three


def test_malformed_request_gets_a_json_error(providers, proxy):
    running = proxy(providers())
    sock = socket.create_connection(("127.0.0.1", running.server.port), timeout=10)

    sock.sendall(b"NONSENSE\r\n\r\n")
    answer = b""
    while data := sock.recv(65536):  # the proxy closes the connection after it
        answer += data
    sock.close()

    status_line, _, rest = answer.partition(b"\r\n")
    assert b" 400" in status_line
    assert json.loads(rest.split(b"\r\n\r\n", 1)[1])["type"] == "error"


def test_status_reports_providers_without_secrets(providers, proxy):
    first = providers(Reply(429, b'{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}'))
    second = providers(Reply(200))
    running = proxy(first, second)
    running.post()
    assert eventually(lambda: running.policy.snapshot()[1]["tokens"]["input"] == 12)

    code, _, body = request(running.url, "GET", "/status", headers=running.auth())

    status = json.loads(body)
    assert code == 200
    assert status["pid"] > 0 and status["listen"] == running.url
    p1, p2 = status["providers"]
    assert (p1["name"], p1["state"], p1["failures"], p1["key_set"]) == ("p1", "cooling", 1, True)
    assert p1["cooldown_seconds_left"] > 0 and "rate_limit_error" in p1["last_error"]
    assert (p2["state"], p2["requests"], p2["tokens"]["input"]) == ("ready", 1, 12)
    assert b"secret-key" not in body and running.token.encode() not in body


# --- the listening socket ----------------------------------------------------------------


def test_reuse_address_is_never_set_on_windows():
    from claude_proxy.http_server import reuse_address_allowed

    assert reuse_address_allowed("nt") is False
    assert reuse_address_allowed("posix") is True


def test_listen_backlog_and_nagle_settings():
    from claude_proxy.http_server import ProxyHandler, ProxyServer

    assert ProxyServer.request_queue_size >= 512
    assert ProxyHandler.disable_nagle_algorithm is True
    assert ProxyHandler.protocol_version == "HTTP/1.1"


def test_idle_client_connection_times_out(providers, proxy, monkeypatch):
    from claude_proxy.http_server import ProxyHandler

    monkeypatch.setattr(ProxyHandler, "timeout", 0.3)
    running = proxy(providers())
    sock = socket.create_connection(("127.0.0.1", running.server.port), timeout=10)

    started = time.monotonic()
    data = sock.recv(1)  # blocks until the proxy gives up on the idle connection
    sock.close()

    assert data == b""
    assert time.monotonic() - started < 9


def test_a_second_proxy_on_the_same_port_is_refused(providers, proxy, tmp_path):
    from claude_proxy.errors import UsageError
    from claude_proxy.http_server import ProxyServer

    running = proxy(providers())
    running.config.port = running.server.port

    with pytest.raises(UsageError, match="already in use"):
        ProxyServer(running.config, None)


# --- early answers keep the connection usable --------------------------------------------


def _raw_exchange(port, payload, timeout=10):
    """Send raw bytes; read until the proxy closes or stops sending."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(payload)
    answer = b""
    try:
        while data := sock.recv(65536):
            answer += data
    except socket.timeout:
        pass
    finally:
        sock.close()
    return answer


def test_unknown_pinned_provider_reads_the_body_so_the_next_request_works(providers, proxy):
    provider = providers(Reply(200))
    running = proxy(provider)
    conn = http.client.HTTPConnection("127.0.0.1", running.server.port, timeout=10)

    conn.request("POST", "/provider/nope/v1/messages", body=b'{"model":"m"}', headers=running.auth())
    first = conn.getresponse()
    first.read()
    conn.request("POST", "/v1/messages", body=b'{"model":"m"}', headers=running.auth())
    second = conn.getresponse()
    second.read()
    conn.close()

    assert (first.status, second.status) == (400, 200)


def test_unknown_pinned_provider_names_are_not_listed_without_the_token(providers, proxy):
    running = proxy(providers(), names=["secretname"])

    code, _, body = request(running.url, "POST", "/provider/nope/v1/messages", b"{}")

    assert code == 401 and b"secretname" not in body


def test_a_401_to_a_chunked_request_is_readable(providers, proxy):
    running = proxy(providers(Reply(200)))
    conn = http.client.HTTPConnection("127.0.0.1", running.server.port, timeout=10)

    conn.request("POST", "/v1/messages", body=iter([b'{"model":', b'"m"}']), encode_chunked=True)
    response = conn.getresponse()

    assert response.status == 401
    assert json.loads(response.read())["error"]["type"] == "authentication_error"
    conn.close()


@pytest.mark.parametrize("size_line, status", [(b"FFFFFFFFFFFF", 413), (b"-1", 400), (b"zz", 400)])
def test_chunk_sizes_are_checked_before_reading(providers, proxy, size_line, status):
    provider = providers(Reply(200))
    running = proxy(provider, max_body_mb=LIMIT_MB)

    answer = _raw_exchange(running.server.port, (
        f"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:{running.server.port}\r\nx-api-key: {running.token}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n").encode() + size_line + b"\r\nabc\r\n0\r\n\r\n")

    assert answer.startswith(b"HTTP/1.1 %d" % status)
    assert provider.connections == 0


def test_a_body_cut_short_by_the_client_is_not_forwarded(providers, proxy):
    provider = providers(Reply(200))
    running = proxy(provider)
    sock = socket.create_connection(("127.0.0.1", running.server.port), timeout=10)

    sock.sendall((f"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:{running.server.port}\r\nx-api-key: {running.token}\r\n"
                  "Content-Length: 1000\r\n\r\n{\"model\":").encode())
    sock.shutdown(socket.SHUT_WR)
    answer = sock.recv(65536)
    sock.close()

    assert answer == b""
    assert provider.requests == []


def test_empty_token_file_is_replaced_and_the_proxy_fails_closed(providers, proxy, tmp_path):
    from claude_proxy.state import load_or_create_token

    token_file = tmp_path / "proxy.token"
    token_file.write_text("")

    token = load_or_create_token(token_file)

    assert token and token_file.read_text().strip() == token
    if __import__("os").name == "posix":
        assert token_file.stat().st_mode & 0o777 == 0o600
    running = proxy(providers(Reply(200)))
    running.server.token = None  # whatever happens to the token, no token means no entry
    assert request(running.url, "POST", "/v1/messages", b"{}")[0] == 401


@pytest.mark.parametrize("case", ["fresh", "no-hard-links", "empty-file-left"])
def test_daemons_creating_the_token_at_once_all_get_the_one_in_the_file(tmp_path, monkeypatch, case):
    """Two shells' claude-fb start two daemons at once: both must hold the token
    clients will read from the file (without care, about one round in four lost)."""
    import os
    import threading
    from claude_proxy.state import load_or_create_token

    if case == "no-hard-links":  # FAT, exFAT, some network shares
        def no_link(*args):
            raise PermissionError("hard links are not supported here")
        monkeypatch.setattr(os, "link", no_link)

    for round_number in range(40 if case == "fresh" else 10):
        token_file = tmp_path / f"round{round_number}" / "proxy.token"
        token_file.parent.mkdir()
        if case == "empty-file-left":  # an earlier write was interrupted
            token_file.write_text("")
        barrier = threading.Barrier(6)
        got = []

        def create():
            barrier.wait()
            got.append(load_or_create_token(token_file))

        threads = [threading.Thread(target=create) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        in_file = token_file.read_text(encoding="utf-8").strip()
        if case == "fresh":
            assert got == [in_file] * 6
        else:  # a creator may have lost the race; its server then takes the file's token
            assert in_file and in_file in got
        assert [f.name for f in token_file.parent.iterdir()] == ["proxy.token"]  # no temporary left


def test_a_server_whose_token_was_replaced_in_the_file_takes_the_files(providers, proxy):
    running = proxy(providers(Reply(200)))
    old = running.token
    running.paths.token.write_text("fake-token-clients-now-read\n", encoding="utf-8")

    assert running.post(headers={"x-api-key": "fake-token-clients-now-read"})[0] == 200
    assert request(running.url, "POST", "/v1/messages", b"{}", {"x-api-key": old})[0] == 401
    assert request(running.url, "POST", "/v1/messages", b"{}", {"x-api-key": "guess"})[0] == 401


def test_the_request_head_and_a_small_body_go_to_the_provider_in_one_write(providers, monkeypatch):
    from claude_proxy.config import Provider
    from claude_proxy.upstream import Upstreams, _HTTPConnection, upstream_headers
    provider = providers(Reply(200))
    configured = Provider(name="p1", base_url=provider.url + "/base", api_key_env="K", api_key="sk-k")
    writes = []
    send = _HTTPConnection.send
    monkeypatch.setattr(_HTTPConnection, "send", lambda conn, data: (writes.append(bytes(data)),
                                                                      send(conn, data))[1])
    body = json.dumps({"model": "m", "messages": []}).encode()
    upstreams = Upstreams([configured])
    try:
        headers = upstream_headers(configured, [("anthropic-version", "2023-06-01")], len(body))
        answer = upstreams.send(configured, "POST", "/base/v1/messages", headers, body)
        assert answer.status == 200
        answer.read_all(1 << 20)
    finally:
        upstreams.close()

    assert len(writes) == 1 and writes[0].startswith(b"POST /base/v1/messages HTTP/1.1\r\n")
    assert writes[0].endswith(b"\r\n\r\n" + body)
    seen = provider.requests[0]
    assert seen.body == body and seen.headers["x-api-key"] == "sk-k"
    assert seen.headers["anthropic-version"] == "2023-06-01"


def test_a_client_gone_after_a_complete_answer_leaves_the_pooled_connection_alone(providers, proxy):
    """The answer was read whole (its connection is back in the pool) when the
    client turned out to be gone: that connection must not be closed under
    whichever request uses it next."""
    import struct
    provider = providers(Reply(200, delay=0.1))  # too short for the hang-up watcher to act
    running = proxy(provider, provider_settings={"p1": {"connect_timeout": 0.5}})
    sock = socket.create_connection(("127.0.0.1", running.server.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nx-api-key: %s\r\n"
                 b"Content-Length: 2\r\n\r\n{}" % (running.server.port, running.token.encode()))
    assert eventually(lambda: provider.requests)
    sock.close()  # a reset while the provider answers: writing the answer to the client fails
    assert eventually(lambda: "client cancelled" in running.log_text())
    provider.default = Reply(200, delay=1.0)  # longer than connect_timeout

    code, _, _ = running.post()

    assert code == 200
    assert running.policy.snapshot()[0]["failures"] == 0


def test_a_body_over_the_whole_body_limit_is_relayed_with_its_length(providers, proxy):
    from claude_proxy.forward import WHOLE_BODY_LIMIT
    big = json.dumps({"id": "msg_big", "content": [{"type": "text", "text": "x" * WHOLE_BODY_LIMIT}]}).encode()
    running = proxy(providers(Reply(200, big)))
    conn = http.client.HTTPConnection("127.0.0.1", running.server.port, timeout=10)
    try:
        conn.request("POST", "/v1/messages", body=b"{}", headers=running.auth())
        response = conn.getresponse()
        assert response.getheader("content-length") == str(len(big))
        assert response.read() == big
    finally:
        conn.close()
