"""End to end with the real Claude Code CLI, when it is installed.

The binary is ``$CLAUDE_CODE_BIN``, else ``claude`` on PATH, else
``<repo>/node_modules/.bin/claude`` (``npm install --prefix <repo>
@anthropic-ai/claude-code@2.1.197``); without one the tests are skipped.
Claude Code runs headless (``-p``) with a throwaway HOME, no non-essential
traffic, few retries and a timeout, pointed at an in-process proxy in front
of fake providers on 127.0.0.1.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from fakes import Reply, Stream, error_json, message_events

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120  # seconds; a healthy run takes about two


def find_claude():
    candidates = [os.environ.get("CLAUDE_CODE_BIN"), shutil.which("claude"),
                  ROOT / "node_modules" / ".bin" / ("claude.cmd" if os.name == "nt" else "claude")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return str(candidate)
    return None


CLAUDE = find_claude()
pytestmark = pytest.mark.skipif(
    CLAUDE is None,
    reason="Claude Code is not installed: set CLAUDE_CODE_BIN, put `claude` on PATH, or run "
           "`npm install --prefix . @anthropic-ai/claude-code@2.1.197`")


def run_claude(base_url, token, home, prompt="say hi"):
    """``claude -p PROMPT --output-format json``; returns (exit code, parsed output, stderr)."""
    home.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "USERPROFILE": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_AUTH_TOKEN": token,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_MAX_RETRIES": "1",
        "API_TIMEOUT_MS": "60000",
    }
    for name in ("SYSTEMROOT", "TEMP", "TMP", "TMPDIR"):  # Windows needs these to start Node
        if name in os.environ:
            env[name] = os.environ[name]
    result = subprocess.run([CLAUDE, "-p", prompt, "--output-format", "json"], cwd=home, env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False,
                            encoding="utf-8", errors="replace", timeout=TIMEOUT)
    try:
        output = json.loads(result.stdout)
    except ValueError:
        output = None
    return result.returncode, output, result.stderr + result.stdout


def credentials(recorded):
    return {name.lower(): value for name, value in recorded.header_list
            if name.lower() in ("x-api-key", "authorization")}


def test_claude_code_keeps_working_through_a_529_on_the_first_provider(tmp_path, providers, proxy):
    first = providers(Reply(529, error_json(529, "overloaded_error", "Overloaded")))
    second = providers(Stream(message_events(text="Hi from the second provider", input_tokens=40,
                                             output_tokens=6)))
    running = proxy(first, second)

    code, output, log = run_claude(running.url, running.token, tmp_path / "home")

    assert code == 0, log
    assert output is not None, log
    assert output["is_error"] is False
    assert output["result"] == "Hi from the second provider"
    assert output["usage"]["input_tokens"] == 40 and output["usage"]["output_tokens"] == 6
    assert first.requests and second.requests
    for fake, key in ((first, "secret-key-p1-0"), (second, "secret-key-p2-1")):
        for recorded in fake.requests:
            assert recorded.method == "POST"
            assert recorded.path == "/v1/messages?beta=true"
            assert credentials(recorded) == {"x-api-key": key, "authorization": f"Bearer {key}"}
            assert all(running.token not in value for value in recorded.headers.values())
            assert recorded.headers["anthropic-version"]
            assert recorded.json()["stream"] is True


def test_claude_code_pinned_to_a_provider_uses_only_that_one(tmp_path, providers, proxy):
    first = providers(Stream(message_events(text="wrong provider")))
    second = providers(Stream(message_events(text="Pinned answer")))
    running = proxy(first, second)

    code, output, log = run_claude(running.url + "/provider/p2", running.token, tmp_path / "home")

    assert code == 0, log
    assert output["result"] == "Pinned answer"
    assert first.requests == []
    assert [r.path for r in second.requests] == ["/v1/messages?beta=true"] * len(second.requests)
    assert second.requests


def test_claude_code_shows_an_unknown_pinned_provider_as_the_proxys_own_message(tmp_path, providers, proxy):
    running = proxy(providers(), providers(), names=["alpha", "beta"])

    code, output, log = run_claude(running.url + "/provider/gamma", running.token, tmp_path / "home")

    assert output is not None, log
    assert output["is_error"] is True
    assert output["result"].startswith("API Error: 400 Unknown provider 'gamma' in ANTHROPIC_BASE_URL"), output
    assert "Configured providers: alpha, beta" in output["result"]
    assert "selected model" not in output["result"]  # what a 404 would have made it say


def test_three_claude_code_sessions_stream_on_while_the_config_is_saved(tmp_path, providers, proxy):
    """The issue's promise: edit config.json while sessions stream, nothing is interrupted,
    and the next session uses the new order."""
    import threading
    import time

    slow = providers(Stream(message_events(text="Hi from the first provider"), delay=0.4))
    other = providers(Stream(message_events(text="Hi from the second provider")))
    running = proxy(slow, other)
    results = [None] * 3

    def session(index):
        results[index] = run_claude(running.url, running.token, tmp_path / f"home{index}")

    sessions = [threading.Thread(target=session, args=(i,)) for i in range(3)]
    for thread in sessions:
        thread.start()
    deadline = time.monotonic() + TIMEOUT
    while slow.frames_sent < 3 and time.monotonic() < deadline:  # the streams are under way
        time.sleep(0.05)
    running.write_config([{"name": "p2", "base_url": other.url, "api_key_env": "KEY_P2"},
                          {"name": "p1", "base_url": slow.url, "api_key_env": "KEY_P1"}])
    while "config reloaded" not in running.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running.server.feed.in_flight, "the streams ended before the reload: make them slower"
    for thread in sessions:
        thread.join(TIMEOUT)

    for code, output, log in results:
        assert code == 0, log
        assert output["result"] == "Hi from the first provider"
    code, output, log = run_claude(running.url, running.token, tmp_path / "after")
    assert code == 0, log
    assert output["result"] == "Hi from the second provider"
