"""The request log (opt-in JSONL): what a line holds, with and without bodies,
credentials redacted everywhere, rotation by size, and `serve --request-log`."""

import json
import subprocess
import sys

from daemon_support import PROXY, clean_environ, free_port, health, wait_until
from fakes import MESSAGE, Reply, Stream, eventually, message_events, request

CREDENTIALS = ("x-api-key", "authorization", "proxy-authorization", "cookie", "set-cookie")


def lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def logged(running, count, name="requests.jsonl"):
    path = running.paths.dir / name
    assert eventually(lambda: path.exists() and len(path.read_text().splitlines()) >= count)
    return lines(path)


def test_a_line_per_request_without_bodies(providers, proxy):
    provider = providers(Reply(200, headers={"x-request-id": "req_1"}))
    running = proxy(provider, request_log={"path": "requests.jsonl"})
    assert running.post(headers={"anthropic-version": "2023-06-01"})[0] == 200

    (line,) = logged(running, 1)
    assert {k: line[k] for k in ("method", "path", "mode", "pinned", "provider", "model", "model_sent",
                                 "status", "outcome", "stream")} == {
        "method": "POST", "path": "/v1/messages", "mode": "fallback", "pinned": None, "provider": "p1",
        "model": "claude-sonnet-4-5", "model_sent": "claude-sonnet-4-5", "status": 200, "outcome": "ok",
        "stream": False}
    assert line["tried"] == [{"provider": "p1", "outcome": "200"}]
    assert line["usage"] == {"input_tokens": 12, "output_tokens": 7, "cache_read_input_tokens": 3,
                             "cache_creation_input_tokens": 0}
    assert line["time"].endswith("Z") and line["ttfb_ms"] <= line["total_ms"]
    assert line["request_headers"]["anthropic-version"] == "2023-06-01"
    assert line["response_headers"]["x-request-id"] == "req_1"
    assert "request_body" not in line and "response_body" not in line
    stats = json_status(running)["request_log"]
    assert stats["written"] == 1 and stats["bodies"] is False


def json_status(running):
    status, _, body = request(running.url, "GET", "/status", headers=running.auth())
    return json.loads(body)


def test_every_credential_is_redacted_in_headers_and_bodies(providers, proxy):
    key = "secret-key-p1-0"
    echoed = {**MESSAGE, "content": [{"type": "text", "text": f"your key is {key}"}]}
    provider = providers(Reply(200, echoed, headers={"set-cookie": "session=abc123", "x-echo": f"k={key}"}))
    running = proxy(provider, request_log={"bodies": True})
    token = running.token
    sent = {"authorization": f"Bearer {token}", "proxy-authorization": "Basic dXNlcjpwYXNz",
            "cookie": "sid=s3cr3t", "x-note": f"token {token}"}
    body = {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": f"t={token}"}]}
    assert running.post(body, headers=sent)[0] == 200

    (line,) = logged(running, 1)
    text = (running.paths.dir / "requests.jsonl").read_text()
    for secret in (token, key, "session=abc123", "dXNlcjpwYXNz", "s3cr3t"):
        assert secret not in text
    for name in CREDENTIALS:
        headers = line["response_headers"] if name == "set-cookie" else line["request_headers"]
        assert headers[name] == "[redacted]", name
    assert line["request_headers"]["x-note"] == "token [redacted]"
    assert line["response_headers"]["x-echo"] == "k=****p1-0"
    assert "t=[redacted]" in line["request_body"]
    assert "your key is ****p1-0" in line["response_body"]


def test_bodies_hold_the_request_and_the_raw_stream_capped(providers, proxy):
    frames = message_events(text="Hello there, a streamed answer")
    provider = providers(Stream(frames))
    running = proxy(provider, request_log={"path": "logs/requests.jsonl", "bodies": True, "max_body_kb": 64})
    body = {"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}
    status, _, answer = running.post(body)
    assert status == 200

    (line,) = logged(running, 1, "logs/requests.jsonl")
    assert json.loads(line["request_body"]) == body and line["request_body_truncated"] is False
    assert line["response_body"] == b"".join(frames).decode() == answer.decode()
    assert line["response_body_truncated"] is False
    assert line["stream"] is True and line["usage"]["output_tokens"] == 9

    provider.default = Stream(message_events(text="x" * 3000, pieces=30))
    running.server.request_log.settings.max_body_bytes = 1000
    big = {**body, "messages": [{"role": "user", "content": "y" * 5000}]}
    assert running.post(big)[0] == 200
    second = logged(running, 2, "logs/requests.jsonl")[1]
    assert len(second["request_body"]) == 1000 and second["request_body_truncated"] is True
    assert len(second["response_body"]) == 1000 and second["response_body_truncated"] is True


def test_failed_over_and_all_failed_requests_are_logged_with_each_provider(providers, proxy):
    from fakes import error_json

    first, second = providers(Reply(529, error_json(529, "overloaded_error", "busy"))), providers(Reply(200))
    running = proxy(first, second, cooldown_minutes=0, request_log={})
    assert running.post()[0] == 200
    second.default = Reply(503, error_json(503, "api_error", "down"))
    assert running.post()[0] == 503
    over, failed = logged(running, 2)
    assert (over["outcome"], over["provider"], over["tried"]) == (
        "failed over", "p2", [{"provider": "p1", "outcome": "529"}, {"provider": "p2", "outcome": "200"}])
    assert (failed["outcome"], failed["provider"], failed["status"]) == ("all failed", None, 503)


def test_the_log_is_rotated_by_size_keeping_the_configured_number(providers, proxy):
    running = proxy(providers(Reply(200)), request_log={"max_mb": 0.002, "keep": 2})  # about 2 KB
    for _ in range(12):
        assert running.post()[0] == 200
    assert eventually(lambda: running.server.request_log.written == 12)
    folder = running.paths.dir
    names = sorted(p.name for p in folder.glob("requests.jsonl*"))
    assert names == ["requests.jsonl", "requests.jsonl.1", "requests.jsonl.2"]
    for name in names:
        assert (folder / name).stat().st_size <= 2 * 1024 + 2048  # one line may pass the limit
        assert all(line["status"] == 200 for line in lines(folder / name))
    assert sum(len(lines(folder / n)) for n in names) < 12  # the oldest were rotated away


def test_off_by_default(providers, proxy):
    running = proxy(providers(Reply(200)))
    assert running.post()[0] == 200
    assert not list(running.paths.dir.glob("requests.jsonl*"))
    assert json_status(running)["request_log"] is None


def test_serve_request_log_turns_it_on(tmp_path, providers):
    provider = providers(Reply(200))
    port = free_port()
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"proxy_port": port, "providers": [
        {"name": "p1", "base_url": provider.url, "api_key_env": "KEY_P1"}]}))
    log_path = tmp_path / "elsewhere" / "log.jsonl"
    env = clean_environ(KEY_P1="secret-key-p1")
    daemon = subprocess.Popen([sys.executable, str(PROXY), "serve", "--quiet", "--config", str(config),
                               "--request-log", str(log_path)], env=env, stdin=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        assert wait_until(lambda: health(url), timeout=15)
        token = (tmp_path / "proxy.token").read_text().strip()
        body = {"model": "m", "max_tokens": 1, "messages": []}
        assert request(url, "POST", "/v1/messages", body, {"x-api-key": token})[0] == 200
        assert wait_until(lambda: log_path.exists() and log_path.read_text().strip())
        (line,) = lines(log_path)
        assert line["model"] == "m" and line["request_headers"]["x-api-key"] == "[redacted]"
        assert token not in log_path.read_text()
    finally:
        daemon.terminate()
        daemon.wait(15)


def test_a_key_of_two_reloads_ago_is_still_masked_in_a_line_written_after_them(providers, proxy, tmp_path):
    # A long answer begun with the first key ends after two reloads have changed it twice.
    first = "sk-first-key-aaaa1111"
    env = tmp_path / ".env"
    env.write_text(f"KEY_P1={first}\n", encoding="utf-8")
    frames = message_events(text=f"your key is {first}", pieces=1)
    provider = providers(Stream(frames, hold_after=2))
    running = proxy(provider, environ={}, request_log={"bodies": True})
    with running.stream_held(provider, 2) as answer:
        for key in ("sk-second-key-bbbb2222", "sk-third-key-cccc3333"):
            env.write_text(f"KEY_P1={key}\n", encoding="utf-8")
            status, _, _ = request(running.url, "POST", "/reload", headers=running.auth())
            assert status == 200
    assert answer["r"][0] == 200
    (line,) = logged(running, 1)
    assert first not in (running.paths.dir / "requests.jsonl").read_text()
    assert "your key is ****1111" in line["response_body"]
