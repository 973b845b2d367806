"""What the proxy refuses to let through: ambiguous framing, foreign hosts and
origins, climbing paths, connection floods, forged log lines, echoed keys."""

import errno
import http.client
import json
import logging
import os
import socket
import threading
import time

import pytest

from claude_proxy.config import load_config
from daemon_support import fake, workspace  # noqa: F401 -- fixtures
from claude_proxy.logfile import LogFile
from fakes import Reply, Stream, eventually, request


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
    provider = providers(Reply(200))
    running = proxy(provider, max_body_mb=0.001)
    port = running.server.port

    unauthorized = request(running.url, "POST", "/v1/messages", b"{}", {"x-api-key": "wrong"})
    unknown = request(running.url, "POST", "/provider/nope/v1/messages", b"{}", running.auth())
    too_large = request(running.url, "POST", "/v1/messages", b"x" * 2000, running.auth())
    malformed, _ = raw_exchange(port, head(running, "Content-Length: 2", "Content-Length: 3") + b"{}")

    assert [unauthorized[0], unknown[0], too_large[0], status_of(malformed)] == [401, 400, 413, 400]
    for answer in (unauthorized, unknown, too_large):
        assert answer[1]["x-should-retry"] == "false"
    assert b"\r\nx-should-retry: false\r\n" in malformed
    assert provider.connections == 0


# --- browsers: Host, Origin and the proxy's own endpoints ---------------------------------------


def ask(running, method, path, *lines, host="own", token=True, version="HTTP/1.1"):
    """One raw request (closing the connection after it); returns ``(answer, closed)``."""
    port = running.server.port
    fields = [f"{method} {path} {version}"]
    if host is not None:
        fields.append(f"Host: {f'127.0.0.1:{port}' if host == 'own' else host}")
    if token:
        fields.append(f"x-api-key: {running.token}")
    fields += [*lines, "Connection: close"]
    if method == "POST":
        fields.append("Content-Length: 2")
    payload = ("\r\n".join(fields) + "\r\n\r\n").encode() + (b"{}" if method == "POST" else b"")
    return raw_exchange(port, payload)


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LocalHost:{port}",
                                  "[::1]:{port}", "my-laptop.local:{port}", "[fd00::1]:{port}"])
def test_requests_naming_the_proxys_own_address_are_answered(providers, proxy, host):
    running = proxy(providers(Reply(200)), allowed_hosts=["My-Laptop.local", "fd00::1"])

    answer, _ = ask(running, "GET", "/health", host=host.format(port=running.server.port))

    assert status_of(answer) == 200


@pytest.mark.parametrize("host", ["attacker.example:{port}", "127.0.0.1:1", "127.0.0.1", "localhost.:{port}",
                                  "127.0.0.1:{port}.attacker.example", ""])
@pytest.mark.parametrize("method, path", [("GET", "/health"), ("POST", "/v1/messages"),
                                          ("POST", "/shutdown"), ("HEAD", "/")])
def test_a_foreign_host_is_refused_whatever_the_token_setting(providers, proxy, host, method, path):
    """DNS rebinding: a page's own name, resolved to 127.0.0.1, is in the Host."""
    provider = providers(Reply(200))
    running = proxy(provider, require_token=False)

    answer, closed = ask(running, method, path, host=host.format(port=running.server.port))

    assert status_of(answer) == 421 and closed
    assert b"\r\nx-should-retry: false\r\n" in answer
    if method != "HEAD":
        assert error_of(answer)["type"] == "invalid_request_error"
    assert provider.connections == 0
    assert running.thread.is_alive() and ask(running, "GET", "/health")[0].startswith(b"HTTP/1.1 200")


def test_an_http10_request_without_host_is_answered(providers, proxy):
    running = proxy(providers(Reply(200)))

    answer, _ = ask(running, "GET", "/health", host=None, version="HTTP/1.0")

    assert status_of(answer) == 200


@pytest.mark.parametrize("origin", ["http://attacker.example", "null", "http://127.0.0.1:1",
                                    "https://127.0.0.1:{port}", "http://127.0.0.1:{port}.attacker.example"])
def test_a_request_from_a_foreign_web_page_is_refused(providers, proxy, origin):
    """A page's text/plain POST needs no preflight: only its Origin gives it away."""
    provider = providers(Reply(200))
    running = proxy(provider, require_token=False)
    origin = origin.format(port=running.server.port)

    shutdown, closed = ask(running, "POST", "/shutdown", f"Origin: {origin}", "Content-Type: text/plain")
    api, _ = ask(running, "POST", "/v1/messages", f"Origin: {origin}")

    assert status_of(shutdown) == status_of(api) == 403 and closed
    assert error_of(shutdown)["type"] == "permission_error"
    assert provider.connections == 0
    assert running.thread.is_alive() and not running.server.stopping


@pytest.mark.parametrize("origin", ["http://127.0.0.1:{port}", "http://localhost:{port}", "HTTP://[::1]:{port}"])
def test_the_proxys_own_origin_is_accepted(providers, proxy, origin):
    running = proxy(providers(Reply(200)))

    answer, _ = ask(running, "POST", "/v1/messages", f"Origin: {origin.format(port=running.server.port)}")

    assert status_of(answer) == 200


def test_status_and_shutdown_need_the_token_even_when_api_requests_do_not(providers, proxy):
    provider = providers(Reply(200))
    running = proxy(provider, require_token=False)

    assert status_of(ask(running, "POST", "/v1/messages", token=False)[0]) == 200
    assert status_of(ask(running, "GET", "/status", token=False)[0]) == 401
    assert status_of(ask(running, "POST", "/shutdown", token=False)[0]) == 401
    assert running.thread.is_alive()
    assert status_of(ask(running, "GET", "/status")[0]) == 200


def test_a_head_preconnect_does_not_reveal_which_provider_names_exist(providers, proxy):
    running = proxy(providers(Reply(200)), names=["secretname"])

    known, _ = ask(running, "HEAD", "/provider/secretname", token=False)
    unknown, _ = ask(running, "HEAD", "/provider/nope", token=False)

    strip_date = lambda answer: [l for l in answer.split(b"\r\n") if not l.startswith(b"Date:")]  # noqa: E731
    assert status_of(known) == 200 and strip_date(known) == strip_date(unknown)


# --- paths -----------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [
    "/provider/p1/../../v1/messages",
    "/v1/../../admin",
    "/provider/p1/%2e%2e/%2E%2e/v1/messages",
    "/v1/.%2E/x",
    "/v1/./messages",
    "/v1/messages/..",
    "/v1\\..\\..\\admin",
    "/v1/%5c../admin",
    "/v1/%2e%2e%2fadmin",
    "/v1/%252e%252e/admin",
    "http://127.0.0.1:{port}/v1/messages",
    "*",
])
def test_a_path_that_could_climb_out_of_the_base_path_is_a_400(providers, proxy, target):
    provider = providers(Reply(200))
    running = proxy(provider.url + "/anthropic")

    answer, _ = ask(running, "POST", target.format(port=running.server.port))

    assert status_of(answer) == 400
    assert error_of(answer)["type"] == "invalid_request_error"
    assert provider.connections == 0


@pytest.mark.parametrize("target", ["/v1/messages?beta=true&next=../..", "/v1/models/claude-3.5.x",
                                    "/v1/files/a%20b", "/v1/..x/..."])
def test_dots_that_are_not_dot_segments_go_through(providers, proxy, target):
    provider = providers(Reply(200))
    running = proxy(provider.url + "/anthropic")

    answer, _ = ask(running, "POST", target)

    assert status_of(answer) == 200
    assert provider.requests[0].path == "/anthropic" + target


# --- connection exhaustion -----------------------------------------------------------------------


def test_connections_over_the_cap_get_a_503_at_once_and_are_closed(providers, proxy):
    provider = providers(Reply(200))
    running = proxy(provider, max_connections=3)
    port = running.server.port
    held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
    try:
        assert eventually(lambda: running.server.connections == 3)
        threads = threading.active_count()

        over = [raw_exchange(port, b"") for _ in range(5)]

        for answer, closed in over:
            assert status_of(answer) == 503 and closed
            assert error_of(answer)["type"] == "api_error"
            assert b"\r\nx-should-retry: true\r\n" in answer
        assert threading.active_count() == threads  # no thread for them
        assert running.server.connections == 3
    finally:
        held.pop().close()
    assert eventually(lambda: running.server.connections == 2)
    assert status_of(ask(running, "POST", "/v1/messages")[0]) == 200
    for sock in held:
        sock.close()
    assert eventually(lambda: running.server.connections == 0)
    assert "max_connections" in running.log_text()


def test_the_default_cap_leaves_room_for_many_claude_code_sessions(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"providers": [{"name": "a", "base_url": "http://127.0.0.1:9",
                                               "api_key_env": "K"}]}))

    assert 200 <= load_config(path, environ={}).max_connections <= 1000


def drip(sock, data, every):
    """Send ``data`` a byte at a time; True if the proxy closed the connection meanwhile."""
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return True
        time.sleep(every)
    return False


@pytest.mark.parametrize("phase", ["head", "body"])
def test_a_request_dripping_in_is_cut_off_after_the_receive_timeout(providers, proxy, phase):
    provider = providers(Reply(200))
    running = proxy(provider, receive_timeout=0.6)
    whole = head(running, "Content-Length: 400") + b"{" + b" " * 398 + b"}"
    fast, slow = (whole[:5], whole[5:]) if phase == "head" else (whole[:-300], whole[-300:])
    sock = socket.create_connection(("127.0.0.1", running.server.port), timeout=5)
    with sock:
        sock.sendall(fast)
        started = time.monotonic()
        dripper = threading.Thread(target=drip, args=(sock, slow, 0.05), daemon=True)
        dripper.start()  # every read is well within the idle timeout (300 s)
        answer = b""
        while data := sock.recv(65536):
            answer += data
        elapsed = time.monotonic() - started

    assert 0.5 < elapsed < 3
    assert b"200 OK" not in answer
    assert provider.connections == 0
    assert "did not arrive within 0.6s" in running.log_text()


def test_idleness_between_requests_is_not_counted_as_receiving(providers, proxy):
    running = proxy(providers(Reply(200)), receive_timeout=0.3)
    conn = http.client.HTTPConnection("127.0.0.1", running.server.port, timeout=5)
    try:
        time.sleep(0.6)  # connected, nothing sent yet
        conn.request("POST", "/v1/messages", body=b"{}", headers=running.auth())
        first = conn.getresponse()
        first.read()
        time.sleep(0.6)  # idle keep-alive between requests
        conn.request("GET", "/health")
        second = conn.getresponse()
        second.read()
    finally:
        conn.close()

    assert (first.status, second.status) == (200, 200)


def test_running_out_of_file_descriptors_pauses_accepting_instead_of_spinning(providers, proxy, monkeypatch):
    running = proxy(providers(Reply(200)))
    listening = running.server.socket
    tries = []
    out_of_files = threading.Event()
    out_of_files.set()
    real_accept = socket.socket.accept

    def accept(sock):
        if sock is listening and out_of_files.is_set():
            tries.append(time.monotonic())
            raise OSError(errno.EMFILE, "Too many open files")
        return real_accept(sock)

    monkeypatch.setattr(socket.socket, "accept", accept)
    client = socket.create_connection(("127.0.0.1", running.server.port), timeout=5)
    with client:
        time.sleep(1.0)  # a spinning loop would try thousands of times
        out_of_files.clear()
        client.sendall(head(running, request_line="GET /health HTTP/1.1"))
        answer = client.recv(65536)

    assert 3 <= len(tries) <= 10
    assert status_of(answer) == 200  # it recovered and served the waiting connection
    log = running.log_text()
    assert log.count("cannot accept connections") == 1 and "accepting connections again" in log


# --- the log ---------------------------------------------------------------------------------


FORGED = "2031-01-01 09:00:00,000 WARNING forged line"


def test_provider_error_text_cannot_forge_a_log_line(providers, proxy):
    overloaded = Reply(529, {"type": "error", "error": {"type": "overloaded_error",
                                                        "message": f"busy\n{FORGED}\r\x1b[2J"}})
    error_event = {"type": "error", "error": {"type": f"x\n{FORGED}"}}
    error_first = Stream([f"event: error\ndata: {json.dumps(error_event)}\n\n".encode()])
    first, second = providers(overloaded), providers(error_first)
    running = proxy(first, second, cooldown_minutes=0.01)

    running.post()

    assert eventually(lambda: "all failed" in running.log_text())
    lines = running.log_text().splitlines()
    assert not any(line.startswith(FORGED) for line in lines)
    assert sum("\\x0a" + FORGED in line for line in lines) >= 3  # cooldown, request line, each escaped
    assert "\x1b" not in running.log_text()
    status = request(running.url, "GET", "/status", headers=running.auth())[2].decode()
    for row in json.loads(status)["providers"]:
        assert "\n" not in row["last_error"] and "\x1b" not in row["last_error"]


def test_the_log_and_its_rotated_files_are_readable_by_the_user_only(tmp_path):
    if os.name != "posix":
        pytest.skip("POSIX file modes")
    path = tmp_path / "proxy.log"
    path.write_text("from an older version\n")
    path.chmod(0o644)
    handler = LogFile(path, max_bytes=200, backups=2)
    try:
        record = logging.LogRecord("claude_proxy", logging.INFO, __file__, 1, "x" * 150, None, None)
        for _ in range(4):
            handler.handle(record)
    finally:
        handler.close()

    files = sorted(tmp_path.glob("proxy.log*"))
    assert [f.name for f in files] == ["proxy.log", "proxy.log.1", "proxy.log.2"]
    assert [f.stat().st_mode & 0o777 for f in files] == [0o600] * 3


def test_a_proxy_creates_its_log_readable_by_the_user_only(providers, proxy):
    running = proxy(providers(Reply(200)))
    running.post()

    if os.name == "posix":
        assert running.paths.log.stat().st_mode & 0o777 == 0o600


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_the_daemon_keeps_its_log_and_output_to_the_user(workspace, fake):
    config = workspace.config([("p1", fake().url)], require_token=False)
    workspace.keys(KEY_P1="fake-key-p1")
    state = workspace.state(config)

    started = workspace.run("start", config=config)
    assert started.returncode == 0, started.stderr
    status = workspace.run("status", config=config)  # needs the token, which exists regardless
    workspace.run("stop", config=config)

    assert status.returncode == 0, status.stdout + status.stderr
    assert [path.stat().st_mode & 0o777 for path in (state.log, state.out, state.token)] == [0o600] * 3


# --- keys echoed by providers ---------------------------------------------------------------------


KEY_1, KEY_2 = "secret-key-p1-0", "secret-key-p2-1"  # what the proxy fixture configures


class EchoKey:
    """An error answer quoting the key it was sent, and the other provider's."""

    def __init__(self, status, error_type, chunked=False):
        self.status, self.error_type, self.chunked = status, error_type, chunked

    def __call__(self, handler):
        Reply(self.status, echo_body(self.error_type, handler.headers["x-api-key"]), chunked=self.chunked,
              headers={"request-id": "req_echo"})(handler)


def echo_body(error_type, key):
    return (b'{"type":"error","error":{"type":"%s","message":"Invalid key %s (not %s) \\u00e9"}}'
            % (error_type.encode(), key.encode(), KEY_2.encode()))


def masked(body):
    return body.replace(KEY_1.encode(), b"****p1-0").replace(KEY_2.encode(), b"****p2-1")


@pytest.mark.parametrize("chunked", [False, True], ids=["with-length", "chunked"])
def test_a_key_echoed_in_a_passed_back_error_is_masked(providers, proxy, chunked):
    running = proxy(providers(EchoKey(401, "authentication_error", chunked)), providers(Reply(200)))

    code, headers, body = running.post()

    assert code == 401
    assert body == masked(echo_body("authentication_error", KEY_1))  # only the keys' bytes changed
    assert headers["content-length"] == str(len(body)) and headers["request-id"] == "req_echo"
    assert b"secret-key" not in body


def test_a_key_echoed_in_the_last_failover_answer_is_masked(providers, proxy):
    running = proxy(providers(EchoKey(429, "rate_limit_error")), providers(EchoKey(429, "rate_limit_error")))

    code, headers, body = running.post()

    assert code == 429
    assert body == masked(echo_body("rate_limit_error", KEY_2))  # p2's, the last one
    assert headers["content-length"] == str(len(body))


def test_a_key_echoed_in_a_streams_first_error_event_is_masked(providers, proxy):
    event = b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"%s"}}\n\n'
    running = proxy(providers(Stream([event % KEY_1.encode()])), names=["p1"])

    code, _, body = running.post(body={"model": "m", "stream": True, "messages": []})

    assert code == 200 and body == masked(event % KEY_1.encode())


def test_a_successful_answer_is_never_rewritten(providers, proxy):
    answer = b'{"id":"msg_1","content":[{"type":"text","text":"%s"}]}' % KEY_1.encode()
    running = proxy(providers(Reply(200, answer)), names=["p1"])

    assert running.post()[2] == answer
