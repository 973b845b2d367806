"""``proxy.py status|env|providers|check``: what they print, against real processes.

The daemon's lifecycle (start, stop, stale pid files) is in test_daemon.py.
Each test runs proxy.py as a child process with its own config and state
directory in tmp_path, on a free port of 127.0.0.1; every daemon started is
stopped at the end (daemon_support.workspace).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from daemon_support import (  # noqa: F401  (fake, workspace: fixtures)
    PROXY, assert_one_line_error, fake, url_of, workspace,
)
from fakes import Reply, Stall, Stream, closed_port, error_json, message_events, request

from claude_proxy import errors, session, status, wording
from claude_proxy.state import state_dir_problem


# --- status content ---------------------------------------------------------------------------


def test_status_shows_each_provider_state_and_never_a_key(workspace, fake):
    limited = fake(Reply(429, error_json(429, "rate_limit_error", "slow down"),
                         headers={"retry-after": "600"}))
    good = fake()
    config = workspace.config([
        ("limited", limited.url), ("good", good.url), ("keyless", good.url),
        {"name": "off", "base_url": good.url, "api_key_env": "KEY_OFF", "enabled": False},
    ])
    workspace.keys(KEY_LIMITED="secret-limited-1", KEY_GOOD="secret-good-2", KEY_OFF="secret-off-3")
    assert workspace.run("start", config=config).returncode == 0
    url = url_of(workspace.record(config))
    status, _, _ = request(url, headers={"x-api-key": workspace.token(config),
                                         "content-type": "application/json"},
                           body={"model": "m", "max_tokens": 5, "messages": []})
    assert status == 200

    shown = workspace.run("status", config=config)
    lines = shown.stdout.splitlines()
    row = {name: next(line for line in lines if f". {name} " in line)
           for name in ("limited", "good", "keyless", "off")}
    assert "cooling for 9m 5" in row["limited"] or "cooling for 10m 00s" in row["limited"]
    assert "ready" in row["good"] and "1 request, 0 failures" in row["good"]
    assert "in 12 out 7 cache read 3" in row["good"]  # the fake's usage
    # measured under fallback too, under the model of the request's first bytes: no "(null)"
    assert any(line.strip().startswith("speed (m): first token ") for line in lines), shown.stdout
    assert "no key (KEY_KEYLESS)" in row["keyless"]
    assert "disabled" in row["off"]
    assert any("last error: 429 rate_limit_error: slow down" in line for line in lines)
    as_json = workspace.run("status", "--json", config=config).stdout
    for secret in ("secret-limited-1", "secret-good-2", "secret-off-3"):
        assert secret not in shown.stdout and secret not in as_json


@pytest.mark.parametrize("session_url, expected", [
    (None, "normal"),
    ("{url}", "fallback through the proxy"),
    ("{url}/", "fallback through the proxy"),
    ("{url}/provider/p1", "pinned to p1"),
    ("https://api.anthropic.com", "not through this proxy"),
])
def test_status_shows_this_sessions_mode(workspace, fake, session_url, expected):
    config = workspace.config([("p1", fake().url)])
    port = json.loads(config.read_text())["proxy_port"]
    env = {}
    if session_url:
        env["ANTHROPIC_BASE_URL"] = session_url.format(url=f"http://127.0.0.1:{port}")
    shown = workspace.run("status", config=config, env=env)
    assert f"this session: {expected}" in shown.stdout


def test_status_and_fb_say_where_the_next_request_goes_and_why(workspace, fake):
    alpha = fake(Reply(529, error_json(529, "overloaded_error", "Overloaded"), headers={"retry-after": "46"}))
    beta = fake()
    config = workspace.config([("alpha", alpha.url), ("beta", beta.url)])
    workspace.keys(KEY_ALPHA="secret-alpha", KEY_BETA="secret-beta")
    assert workspace.run("start", "--quiet", config=config).returncode == 0
    url = url_of(workspace.record(config))
    token = workspace.token(config)
    assert request(url, headers={"x-api-key": token}, body={"model": "m", "messages": []})[0] == 200

    session = {"ANTHROPIC_BASE_URL": url, "ANTHROPIC_AUTH_TOKEN": token}
    shown = workspace.run("status", config=config, env=session).stdout
    assert re.search(r"next request: beta — alpha cooling for 4\ds after 529 overloaded_error\n", shown), shown
    assert "warning: this session's ANTHROPIC_AUTH_TOKEN" not in shown

    pinned = workspace.run("status", config=config, env={**session, "ANTHROPIC_BASE_URL": url + "/provider/alpha"})
    assert re.search(r"next request: alpha \(pinned; it is cooling for 4\ds after 529 overloaded_error, "
                     r"but a pinned session uses it anyway\)", pinned.stdout), pinned.stdout

    fb = workspace.run("env", "--announce", config=config).stderr
    assert re.search(r"\(fallback order: alpha \(cooling 4\ds\) > beta\)", fb), fb
    switch = workspace.run("env", "--announce", "--provider", "alpha", config=config).stderr
    assert re.search(r"warning: alpha cooling for 4\ds after 529 overloaded_error \(a pinned session uses "
                     r"it anyway; claude-fb fails over instead\)", switch), switch


def test_status_notices_a_session_token_that_is_not_the_proxys(workspace, fake):
    config = workspace.config([("p1", fake().url)])
    workspace.keys(KEY_P1="secret-p1")
    workspace.run("start", "--quiet", config=config)
    url = url_of(workspace.record(config))
    stale = workspace.run("status", config=config,
                          env={"ANTHROPIC_BASE_URL": url, "ANTHROPIC_AUTH_TOKEN": "cpx-an-old-token"})
    assert ("warning: this session's ANTHROPIC_AUTH_TOKEN is not the proxy's client token, so its "
            "requests get a 401; run claude-fb (or claude-switch) again in this session") in stale.stdout
    as_json = json.loads(workspace.run("status", "--json", config=config,
                                       env={"ANTHROPIC_BASE_URL": url,
                                            "ANTHROPIC_AUTH_TOKEN": "cpx-an-old-token"}).stdout)
    assert as_json["session"]["token_ok"] is False
    good = workspace.run("status", config=config,
                         env={"ANTHROPIC_BASE_URL": url, "ANTHROPIC_AUTH_TOKEN": workspace.token(config)})
    assert "warning" not in good.stdout and "next request: p1 (first in order)" in good.stdout


def test_where_next_when_everything_is_cooling_or_unusable():
    cooling = [{"name": "a", "state": "cooling", "cooldown_seconds_left": 90, "last_error": "429 x: y"},
               {"name": "b", "state": "cooling", "cooldown_seconds_left": 30, "last_error": "refused: no"}]
    assert wording.where_next(cooling) == \
        "b (every provider is cooling; the soonest to recover is tried first)"
    assert wording.where_next([{"name": "a", "state": "no_key", "key_env": "K"}]) == \
        "nowhere: no provider is usable (see below)"
    assert wording.where_next([{"name": "a", "state": "disabled"}], pinned="A") == "nowhere: a is disabled"
    assert wording.where_next([], pinned="zed") == "nowhere: zed is not a configured provider"


def test_session_mode_matches_loopback_names_and_ports():
    mode = status.session_mode
    assert mode("http://localhost:8787/provider/kimi", "http://127.0.0.1:8787")["provider"] == "kimi"
    assert mode("http://127.0.0.1:8788", "http://127.0.0.1:8787")["mode"] == "other"
    assert mode("http://127.0.0.1:8787/v1", "http://127.0.0.1:8787")["mode"] == "other"
    assert mode("http://127.0.0.1:bad", "http://127.0.0.1:8787")["mode"] == "other"
    assert mode("", "http://127.0.0.1:8787")["mode"] == "normal"


def test_durations_read_like_a_clock():
    assert wording.format_duration(5) == "5s"
    assert wording.format_duration(61) == "1m 01s"
    assert wording.format_duration(3723) == "1h 02m 03s"


# --- env ------------------------------------------------------------------------------------


def env_of(workspace, config, shell, *extra, **kw):
    result = workspace.run("env", "--shell", shell, *extra, config=config, **kw)
    assert result.returncode == 0, result.stderr
    return result.stdout


def run_shell(argv, script, environ):
    result = subprocess.run([*argv, script], capture_output=True, text=True, env=environ, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_env_output_evaluated_by_a_real_shell(workspace, fake, shell):
    if not shutil.which(shell):
        pytest.skip(f"{shell} is not installed")
    config = workspace.config([("p1", fake().url), ("Moon", fake().url)])
    port = json.loads(config.read_text())["proxy_port"]
    code = env_of(workspace, config, shell, "--provider", "moon")
    token = workspace.token(config)
    if shell == "fish":
        script = code + "\nprintf '%s\\n' $ANTHROPIC_BASE_URL $ANTHROPIC_AUTH_TOKEN; set -q ANTHROPIC_API_KEY; or echo cleared"
    else:
        script = code + '\nprintf "%s\\n" "$ANTHROPIC_BASE_URL" "$ANTHROPIC_AUTH_TOKEN" "${ANTHROPIC_API_KEY-cleared}"'
    environ = {**workspace.environ, "ANTHROPIC_API_KEY": "old-key"}
    out = run_shell([shell, "-c"], script, environ)
    assert out.splitlines() == [f"http://127.0.0.1:{port}/provider/Moon", token, "cleared"]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_env_quoting_survives_hostile_values(shell):
    if not shutil.which(shell):
        pytest.skip(f"{shell} is not installed")
    value = "it's $HOME `id` \"q\" \\ ; & | ‘x’ é"
    code = session.render_env({"ANTHROPIC_BASE_URL": value, "ANTHROPIC_API_KEY": None}, shell)
    show = "printf '%s' $ANTHROPIC_BASE_URL" if shell == "fish" else 'printf "%s" "$ANTHROPIC_BASE_URL"'
    assert run_shell([shell, "-c"], code + "\n" + show, dict(os.environ, LANG="C.UTF-8")) == value


def test_env_for_powershell_cmd_and_json(workspace, fake):
    config = workspace.config([("p1", fake().url)])
    port = json.loads(config.read_text())["proxy_port"]
    powershell = env_of(workspace, config, "powershell").splitlines()
    token = workspace.token(config)  # created by that first env
    assert powershell == [f"$env:ANTHROPIC_BASE_URL = 'http://127.0.0.1:{port}'",
                          f"$env:ANTHROPIC_AUTH_TOKEN = '{token}'",
                          "Remove-Item Env:ANTHROPIC_API_KEY -ErrorAction SilentlyContinue"]
    assert env_of(workspace, config, "cmd").splitlines() == [
        f'set "ANTHROPIC_BASE_URL=http://127.0.0.1:{port}"', f'set "ANTHROPIC_AUTH_TOKEN={token}"',
        "set ANTHROPIC_API_KEY="]
    data = json.loads(env_of(workspace, config, "json", "--provider", "P1"))
    assert data["variables"] == {"ANTHROPIC_BASE_URL": f"http://127.0.0.1:{port}/provider/p1",
                                 "ANTHROPIC_AUTH_TOKEN": token, "ANTHROPIC_API_KEY": None}
    assert list(data["variables"]) == list(session.SESSION_VARIABLES)
    assert data["mode"] == "pinned" and data["provider"] == "p1" and data["providers"] == ["p1"]
    assert "pinned to p1" in data["summary"]


def test_powershell_and_cmd_quoting():
    assert session._powershell_quote("a'b\u2019c") == "'a''b\u2019\u2019c'"
    with pytest.raises(errors.UsageError):
        session.render_env({"X": "100%"}, "cmd")


def test_env_with_an_unknown_provider_lists_the_configured_ones(workspace, fake):
    config = workspace.config([("p1", fake().url), ("p2", fake().url)])
    result = workspace.run("env", "--provider", "nope", config=config)
    assert_one_line_error(result)
    assert 'unknown provider "nope"' in result.stderr and "p1, p2" in result.stderr
    assert result.stdout == ""


def test_providers_with_a_name_checks_it_and_gives_its_configured_spelling(workspace, fake):
    config = workspace.config([("p1", fake().url), ("Moon", fake().url)])
    assert workspace.run("providers", config=config).stdout.split() == ["p1", "Moon"]
    known = workspace.run("providers", "moon", config=config)
    assert known.returncode == 0 and known.stdout.splitlines()[0] == "Moon"
    unknown = workspace.run("providers", "nope", config=config)
    assert_one_line_error(unknown)
    assert 'unknown provider "nope"; configured providers: p1, Moon' in unknown.stderr


def test_providers_with_a_name_shows_it_as_configured_with_the_key_masked(workspace, fake):
    url = fake().url
    config = workspace.config([{"name": "moon", "base_url": url + "/anthropic", "api_key_env": "KEY_MOON",
                                "auth_header": "bearer", "models": {"claude-*haiku*": "kimi-fast", "*": "kimi"},
                                "headers": {"Authorization": "Bearer secret-in-a-header"}},
                               ("keyless", url)])
    workspace.keys(KEY_MOON="secret-moon-0123456789")
    shown = workspace.run("providers", "moon", config=config).stdout
    assert shown.splitlines() == [
        "moon",
        f"  base_url:    {url}/anthropic",
        "  api_key_env: KEY_MOON (set in the environment: ****6789)",
        "  auth_header: bearer",
        "  models:      claude-*haiku* -> kimi-fast; * -> kimi",
        "  enabled:     true",
        "  headers:     Authorization (values not shown)",
    ]
    assert "secret" not in shown
    keyless = workspace.run("providers", "keyless", config=config).stdout
    assert f"  api_key_env: KEY_KEYLESS (KEY_KEYLESS is not set (environment or {config.parent / '.env'}))" in keyless


def test_env_without_a_token_requirement_gives_a_placeholder(workspace, fake):
    config = workspace.config([("p1", fake().url)], require_token=False)
    out = env_of(workspace, config, "bash")
    assert f"ANTHROPIC_AUTH_TOKEN={session.NO_TOKEN_PLACEHOLDER}" in out
    assert not workspace.state(config).token.exists()


def test_env_follows_the_running_daemon_when_it_picked_its_port(workspace, fake):
    config = workspace.config([("p1", fake().url)], port=0)
    before = workspace.run("env", config=config)
    assert_one_line_error(before)
    assert "proxy.py start" in before.stderr
    assert workspace.run("start", config=config).returncode == 0
    port = workspace.record(config)["port"]
    assert f"ANTHROPIC_BASE_URL=http://127.0.0.1:{port}\n" in env_of(workspace, config, "bash")


def test_env_warns_on_stderr_only_while_the_proxy_is_not_running(workspace, fake):
    config = workspace.config([("p1", fake().url)])
    workspace.keys(KEY_P1="secret-p1")
    port = json.loads(config.read_text())["proxy_port"]
    before = workspace.run("env", "--shell", "bash", config=config)
    assert before.returncode == 0
    token = workspace.token(config)
    expected = (f"export ANTHROPIC_BASE_URL=http://127.0.0.1:{port}\n"
                f"export ANTHROPIC_AUTH_TOKEN={token}\nunset ANTHROPIC_API_KEY\n")
    assert before.stdout == expected
    assert before.stderr.splitlines() == [
        "claude-proxy: warning: the proxy is not running, so these settings lead nowhere yet; "
        f"start it with `{sys.executable} {PROXY} start --config {config}`"]

    assert workspace.run("start", config=config).returncode == 0
    after = workspace.run("env", "--shell", "bash", config=config)
    assert after.stdout == expected
    assert after.stderr == ""


def test_a_key_set_after_the_start_is_pointed_out_with_what_to_do(workspace, fake, tmp_path):
    config = workspace.config([("p1", fake().url), ("p2", fake().url)])
    workspace.keys(KEY_P1="secret-p1")
    assert workspace.run("start", config=config).returncode == 0
    (tmp_path / ".env").write_text("KEY_P2=secret-p2\n", encoding="utf-8")

    status = workspace.run("status", config=config).stdout
    assert "no key (KEY_P2)" in status
    assert "KEY_P2 is set now, but the proxy reads keys when it starts: restart it" in status
    summary = workspace.run("env", "--announce", config=config).stderr
    assert "p2 (no key when the proxy started; restart it to use KEY_P2)" in summary
    assert "KEY_P2 not set" not in summary and "secret-p2" not in status + summary


def test_env_announce_summarises_on_stderr_only(workspace, fake):
    config = workspace.config([("p1", fake().url), ("p2", fake().url)])
    workspace.keys(KEY_P1="k")
    result = workspace.run("env", "--shell", "bash", "--announce", config=config)
    assert result.stdout.startswith("export ANTHROPIC_BASE_URL=")
    assert "fallback order: p1" in result.stderr and "p2 (KEY_P2 not set)" in result.stderr


def test_a_request_with_the_env_token_goes_through(workspace, fake):
    provider = fake()
    config = workspace.config([("p1", provider.url)])
    workspace.keys(KEY_P1="secret-p1")
    assert workspace.run("start", config=config).returncode == 0
    variables = json.loads(env_of(workspace, config, "json"))["variables"]
    status, _, body = request(variables["ANTHROPIC_BASE_URL"], headers={
        "authorization": f"Bearer {variables['ANTHROPIC_AUTH_TOKEN']}",
        "content-type": "application/json"}, body={"model": "m", "max_tokens": 5, "messages": []})
    assert status == 200, body
    assert provider.requests[-1].headers["x-api-key"] == "secret-p1"


# --- providers and check --------------------------------------------------------------------


def test_providers_one_per_line(workspace, fake):
    config = workspace.config([("minimax", fake().url), ("moonshot", fake().url)])
    assert workspace.run("providers", config=config).stdout == "minimax\nmoonshot\n"


def test_check_reports_every_problem(workspace, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"proxy_port": "x", "bogus": 1, "providers": [
        {"name": "a", "base_url": "ftp://x", "api_key_env": "A_KEY"}]}), encoding="utf-8")
    result = workspace.run("check", config=config)
    assert result.returncode == 1
    problems = [line for line in result.stdout.splitlines() if line.startswith("problem:")]
    assert len(problems) == 3, result.stdout
    assert "3 problems" in result.stdout.splitlines()[-1]
    config.write_text("{\n  oops", encoding="utf-8")
    result = workspace.run("check", config=config)
    assert result.returncode == 1 and "line 2" in result.stdout


def test_check_warns_about_missing_keys_and_env_typos(workspace, fake, tmp_path):
    config = workspace.config([("p1", fake().url), ("p2", fake().url)])
    (tmp_path / ".env").write_text("KEY_P1=secret-one\nKEY_PP2=typo\nnot a line\n", encoding="utf-8")
    (tmp_path / ".env").chmod(0o600)
    result = workspace.run("check", config=config)
    assert result.returncode == 0, result.stdout
    out = result.stdout
    assert f"ok: provider p1: {fake_url(config, 0)}, key KEY_P1 from {tmp_path / '.env'}" in out
    assert "warning: provider p2: KEY_P2 is not set" in out
    assert "KEY_PP2 is not the api_key_env of any provider" in out
    assert "line 3 is not KEY=value" in out
    assert "secret-one" not in out
    assert out.splitlines()[-1] == "check: config is usable (0 problems, 3 warnings)"


def test_check_and_start_say_why_a_key_that_is_set_cannot_be_used(workspace, fake, tmp_path):
    config = workspace.config([("p1", fake().url), ("p2", fake().url)])
    (tmp_path / ".env").write_text("KEY_P1=secret-one\nKEY_P2=\u201csecret-two\u201d\n", encoding="utf-8")
    (tmp_path / ".env").chmod(0o600)

    checked = workspace.run("check", config=config).stdout
    assert ("warning: provider p2: KEY_P2 in " + str(tmp_path / ".env") +
            " has a character an HTTP header cannot carry") in checked
    started = workspace.run("start", config=config)
    assert started.returncode == 0, started.stderr
    assert "provider p2 has no key: KEY_P2 in" in started.stderr
    status = workspace.run("status", config=config).stdout
    assert "unusable key (KEY_P2)" in status and "has a character an HTTP header cannot carry" in status
    summary = workspace.run("env", "--announce", config=config).stderr
    assert "p2 (KEY_P2 cannot be sent: see `proxy.py check`)" in summary
    for said in (checked, started.stdout + started.stderr, status, summary):
        assert "KEY_P2 is not set" not in said and "set KEY_P2" not in said
        assert "KEY_P2 not set" not in said and "secret-two" not in said


def fake_url(config, index):
    return json.loads(config.read_text())["providers"][index]["base_url"]


def test_check_without_any_usable_provider_fails(workspace, fake):
    config = workspace.config([("p1", fake().url)])
    result = workspace.run("check", config=config)
    assert result.returncode == 1
    assert "problem: no provider is usable" in result.stdout


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_check_warns_when_env_can_be_read_by_others(workspace, fake, tmp_path):
    config = workspace.config([("p1", fake().url)])
    dotenv = tmp_path / ".env"
    dotenv.write_text("KEY_P1=secret-one\n", encoding="utf-8")
    dotenv.chmod(0o644)
    result = workspace.run("check", config=config)
    assert result.returncode == 0
    assert (f"warning: .env {dotenv} can be read by other users (mode 0644); run `chmod 600 {dotenv}`"
            in result.stdout.splitlines())
    dotenv.chmod(0o600)
    result = workspace.run("check", config=config)
    assert "other users" not in result.stdout
    assert result.stdout.splitlines()[-1] == "check: config is usable (0 problems, 0 warnings)"


def test_check_reports_a_state_dir_that_is_a_file(workspace, fake, tmp_path):
    (tmp_path / "run").write_text("not a folder", encoding="utf-8")
    config = workspace.config([("p1", fake().url)], state_dir="run")
    workspace.keys(KEY_P1="secret-one")
    result = workspace.run("check", config=config)
    assert result.returncode == 1
    problems = [line for line in result.stdout.splitlines() if line.startswith("problem:")]
    assert problems == [f"problem: the state directory {tmp_path / 'run'} is a file, not a folder; "
                        f'set "state_dir" in {config} to a folder you can write to']


def test_state_dir_problems(tmp_path):
    (tmp_path / "file").write_text("x", encoding="utf-8")
    assert state_dir_problem(tmp_path) is None
    assert state_dir_problem(tmp_path / "new" / "deeper") is None  # start creates it
    assert "is a file, not a folder" in state_dir_problem(tmp_path / "file")
    assert f"cannot be created: {tmp_path / 'file'} is a file" in state_dir_problem(tmp_path / "file" / "sub")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="POSIX modes; root writes anywhere")
def test_a_state_dir_that_is_not_writable_is_a_problem(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert "is not writable by you" in state_dir_problem(locked)
        assert f"not writable by you (in {locked})" in state_dir_problem(locked / "sub")
    finally:
        locked.chmod(0o700)


def test_check_live_reports_reachability_auth_and_latency(workspace, fake):
    good = fake()
    denied = fake(Reply(401, error_json(401, "authentication_error", "bad key secret-denied")))
    busy = fake(Reply(529, error_json(529, "overloaded_error", "Overloaded")))
    config = workspace.config([
        {"name": "good", "base_url": good.url + "/anthropic", "api_key_env": "KEY_GOOD",
         "models": {"claude-*haiku*": "small-model"}},
        ("denied", denied.url), ("busy", busy.url), ("down", f"http://127.0.0.1:{closed_port()}"),
    ])
    workspace.keys(KEY_GOOD="secret-good", KEY_DENIED="secret-denied", KEY_BUSY="secret-busy",
                   KEY_DOWN="secret-down")
    result = workspace.run("check", "--live", config=config)
    assert result.returncode == 1
    out = result.stdout
    assert "ok: provider good: reachable, key accepted, model small-model answered in" in out
    assert "problem: provider denied: key rejected (401 authentication_error: bad key ***)" in out
    assert "warning: provider busy: reachable, but answering 529 overloaded_error" in out
    assert "problem: provider down: unreachable" in out and "refused" in out
    for secret in ("secret-good", "secret-denied", "secret-busy", "secret-down"):
        assert secret not in out
    sent = good.requests[-1]
    assert sent.path == "/anthropic/v1/messages"
    assert sent.json() == {"model": "small-model", "max_tokens": 1,
                           "messages": [{"role": "user", "content": "ping"}]}
    assert sent.headers["x-api-key"] == "secret-good"
    assert sent.headers["anthropic-version"] == "2023-06-01"


def test_output_into_a_closed_pipe_is_not_a_traceback(workspace, fake):
    config = workspace.config([("p1", fake().url)])
    read_end, write_end = os.pipe()
    os.close(read_end)  # `proxy.py status | head` after head has gone
    try:
        result = subprocess.run([sys.executable, str(PROXY), "status", "--config", str(config)],
                                stdout=write_end, stderr=subprocess.PIPE, text=True,
                                env=workspace.environ, timeout=60)
    finally:
        os.close(write_end)
    assert result.returncode == 1
    assert result.stderr == ""


def test_check_live_gives_up_after_its_timeout_whatever_the_providers_timeouts(workspace, fake):
    silent = fake(Stall(60))
    trickling = fake(Stream(message_events() * 40, delay=0.3))  # answers, but slowly forever
    config = workspace.config([
        {"name": "silent", "base_url": silent.url, "api_key_env": "KEY_SILENT", "read_timeout": 300},
        {"name": "trickling", "base_url": trickling.url, "api_key_env": "KEY_TRICKLING"}],
        read_timeout=300, connect_timeout=60)
    workspace.keys(KEY_SILENT="secret-silent", KEY_TRICKLING="secret-trickling")
    started = time.monotonic()
    result = workspace.run("check", "--live", "--timeout", "1.5", config=config)
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert elapsed < 15, elapsed  # a process start, then 1.5 s; never the 300 s read_timeout
    assert "problem: provider silent:" in result.stdout
    assert "problem: provider trickling: no answer within 1.5 seconds" in result.stdout


@pytest.mark.skipif(not shutil.which("fish"), reason="fish is not installed")
def test_env_for_fish_never_erases_a_universal_variable(tmp_path):
    code = session.render_env({"ANTHROPIC_API_KEY": None}, "fish")
    # A home of its own (no config.fish), where fish keeps its universal variables.
    environ = dict(os.environ, HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"),
                   XDG_DATA_HOME=str(tmp_path / "data"))
    environ.pop("ANTHROPIC_API_KEY", None)
    run_shell(["fish", "-c"], "set -Ux ANTHROPIC_API_KEY universal-key", environ)
    seen = run_shell(["fish", "-c"],
                     code + "\nprintf '[%s]\\n' \"$ANTHROPIC_API_KEY\"; env | grep -c '^ANTHROPIC_API_KEY=.' || true",
                     environ)
    assert seen.splitlines() == ["[]", "0"]  # hidden from this session and the programs it runs
    assert run_shell(["fish", "-c"], "printf '%s' $ANTHROPIC_API_KEY", environ) == "universal-key"


def test_check_live_asks_an_openai_provider_in_chat_completions(workspace, fake):
    openai = fake(ByPath(v1__chat=Reply(200, {"id": "c", "object": "chat.completion", "model": "gpt-fake",
                                              "choices": [{"index": 0, "finish_reason": "length",
                                                           "message": {"role": "assistant", "content": "p"}}]})))
    config = workspace.config([{"name": "oai", "type": "openai", "base_url": openai.url + "/v1",
                                "api_key_env": "KEY_OAI", "models": {"*": "gpt-fake"}}])
    workspace.keys(KEY_OAI="secret-oai")
    result = workspace.run("check", "--live", config=config)
    assert "ok: provider oai: reachable, key accepted, model gpt-fake answered in" in result.stdout
    assert [r.path for r in openai.requests] == ["/v1/models", "/v1/chat/completions"]  # no list: a message
    sent = openai.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer secret-oai"
    assert sent.json()["messages"] == [{"role": "user", "content": "ping"}] and sent.json()["max_tokens"] == 1


def test_env_and_status_with_a_sessions_own_strategy(workspace, fake):
    config = workspace.config([("a", fake().url), ("b", fake().url)])
    workspace.keys(KEY_A="secret-a", KEY_B="secret-b")
    workspace.run("start", "--quiet", config=config)
    url = url_of(workspace.record(config))

    variables = json.loads(env_of(workspace, config, "json", "--strategy", "round_robin"))
    assert variables["variables"]["ANTHROPIC_BASE_URL"] == f"{url}/strategy/round_robin"
    assert (variables["mode"], variables["strategy"]) == ("strategy", "round_robin")
    assert "(strategy round_robin over a, b)" in variables["summary"]

    shown = workspace.run("status", config=config, env={
        "ANTHROPIC_BASE_URL": f"{url}/strategy/round_robin", "ANTHROPIC_AUTH_TOKEN": workspace.token(config)})
    assert "this session: through the proxy with strategy round_robin" in shown.stdout
    assert "next request: by strategy round_robin among the ready providers" in shown.stdout
    assert "strategy: fallback (the default for sessions" in shown.stdout

    both = workspace.run("env", "--strategy", "random", "--provider", "a", config=config)
    assert_one_line_error(both)
    unknown = workspace.run("env", "--strategy", "cheapest", config=config)
    assert unknown.returncode == 2 and "invalid choice: 'cheapest'" in unknown.stderr


class ByPath:
    """Answer by request path: a behaviour per path prefix, else a 404."""

    def __init__(self, **routes):
        self.routes = {"/" + path.replace("__", "/"): reply for path, reply in routes.items()}

    def __call__(self, handler):
        path = handler.path.split("?")[0]
        reply = next((r for prefix, r in self.routes.items() if path.startswith(prefix)), None)
        (reply or Reply(404, error_json(404, "not_found_error", "no such route")))(handler)


def model_list(*ids):
    return Reply(200, {"data": [{"type": "model", "id": i} for i in ids], "has_more": False})


def test_check_live_compares_the_model_map_with_each_providers_model_list(workspace, fake):
    listing = fake(ByPath(v1__models=model_list("kimi-k2", "kimi-fast")))
    typo = fake(ByPath(v1__models=model_list("kimi-k2", "kimi-fast")))
    refused = fake(Reply(401, error_json(401, "authentication_error", "invalid key")))
    unlisted = fake(ByPath(v1__messages=Reply(200)))  # no model list: the message check instead
    openai = fake(ByPath(v1__models=Reply(200, {"object": "list", "data": [{"id": "gpt-4.1", "object": "model"}]})))
    config = workspace.config([
        {"name": "listing", "base_url": listing.url, "api_key_env": "K1",
         "models": {"claude-*haiku*": "kimi-fast", "*": ["kimi-k2", "kimi-fast"]}},
        {"name": "typo", "base_url": typo.url, "api_key_env": "K2", "models": {"*": "kimi-k2-typo"}},
        {"name": "refused", "base_url": refused.url, "api_key_env": "K3"},
        {"name": "unlisted", "base_url": unlisted.url, "api_key_env": "K4"},
        {"name": "oai", "type": "openai", "base_url": openai.url + "/v1", "api_key_env": "K5",
         "models": {"*": "gpt-4.1"}}])
    workspace.keys(K1="secret-k1", K2="secret-k2", K3="secret-k3", K4="secret-k4", K5="secret-k5")

    result = workspace.run("validate", config=config)

    assert result.returncode == 1
    out = result.stdout
    assert re.search(r"ok: provider listing: reachable, key accepted, 2 models listed in \d+ ms; "
                     r"the 2 mapped models are among them", out), out
    assert ("problem: provider typo: reachable, key accepted" in out
            and "but it does not list kimi-k2-typo among its 2 models: a typo in \"models\"?" in out)
    assert "problem: provider refused: key rejected (401 authentication_error: invalid key)" in out
    assert "ok: provider unlisted: reachable, key accepted, model claude-haiku-4-5 answered in" in out
    assert "ok: provider oai: reachable, key accepted, 1 models listed" in out
    assert openai.requests[0].path == "/v1/models" and listing.requests[0].path == "/v1/models?limit=1000"
    assert listing.requests[0].headers["x-api-key"] == "secret-k1"
    assert "secret-" not in out


def test_check_live_dump_prints_a_providers_model_list(workspace, fake):
    listing = fake(ByPath(v1__models=model_list("kimi-k2")))
    config = workspace.config([{"name": "moon", "base_url": listing.url, "api_key_env": "K1"}])
    workspace.keys(K1="secret-k1")

    result = workspace.run("check", "--live", "--dump", "moon", config=config)

    assert result.returncode == 0
    assert json.loads(result.stdout)["data"][0]["id"] == "kimi-k2"
    missing = workspace.run("check", "--dump", "nope", config=config)
    assert_one_line_error(missing)


def test_check_live_never_shows_any_key_of_a_pool(workspace, fake):
    echo = fake(Reply(401, error_json(401, "authentication_error",
                                      "keys pool-key-first and pool-key-second are invalid")))
    config = workspace.config([{"name": "mm", "base_url": echo.url, "api_key_env": "MM_KEYS"}])
    workspace.keys(MM_KEYS="pool-key-first,pool-key-second")
    result = workspace.run("check", "--live", config=config)
    assert "problem: provider mm: key rejected (401 authentication_error: keys *** and *** are invalid)" \
        in result.stdout
    assert "pool-key" not in result.stdout
