"""Config hot reload: a saved config.json or .env, ``proxy.py reload`` and SIGHUP.

In-process proxies (the ``proxy`` fixture) reload through the same file
watcher and ``POST /reload`` as the daemon; the daemon tests drive the real
``proxy.py`` commands.
"""

import json
import os
import re
import signal
import time

import pytest

from daemon_support import (assert_one_line_error, asker, fake, named, url_of, wait_until,  # noqa: F401
                            workspace)
from fakes import Reply, Stream, eventually, message_events, request

from claude_proxy.config import load_config
from claude_proxy.reload import describe_changes, restart_only


def entry(name, fake, **extra):
    return {"name": name, "base_url": fake.url, "api_key_env": f"KEY_{name.upper()}", **extra}


def answered_by(running):
    status, _, body = running.post()
    return json.loads(body)["content"][0]["text"] if status == 200 else status


def reload_now(running):
    status, _, body = request(running.url, "POST", "/reload", headers=running.auth())
    assert status == 200
    return json.loads(body)


def status_of(running):
    status, _, body = request(running.url, "GET", "/status", headers=running.auth())
    assert status == 200
    return json.loads(body)


# --- a saved file ---------------------------------------------------------------------------


def test_a_saved_config_is_used_by_the_next_requests_within_two_seconds(proxy, providers):
    p1, p2 = providers(named("p1")), providers(named("p2"))
    running = proxy(p1, p2)
    assert answered_by(running) == "p1"

    running.write_config([entry("p2", p2), entry("p1", p1)])
    saved = time.monotonic()
    assert wait_until(lambda: answered_by(running) == "p2", timeout=2.0)
    assert time.monotonic() - saved < 2.0
    assert eventually(lambda: "config reloaded (file changed): provider order now p2, p1" in running.log_text())


def test_a_reload_asked_for_is_not_done_again_by_the_watcher(proxy, providers):
    p1, p2 = providers(named("p1")), providers(named("p2"))
    running = proxy(p1, p2)
    watcher, calls = running.server.config_watcher, []
    reload_on_change = watcher.on_change
    watcher.on_change = lambda: (calls.append(time.monotonic()), reload_on_change())
    running.write_config([entry("p2", p2), entry("p1", p1)])
    reload_now(running)
    asked = time.monotonic()
    time.sleep(2.5)  # more than the watcher's poll and settling
    assert answered_by(running) == "p2"
    assert [at for at in calls if at > asked] == []


def test_proxy_reload_applies_at_once_and_says_what_changed(proxy, providers):
    p1, p2, p3 = providers(named("p1")), providers(named("p2")), providers(named("p3"))
    running = proxy(p1, p2, environ={"KEY_P1": "secret-key-one", "KEY_P2": "secret-key-two",
                                     "KEY_P3": "secret-key-three"}, cooldown_minutes=30)
    running.write_config([entry("p3", p3), entry("p1", p1, weight=2)], cooldown_minutes=5,
                         strategy="round_robin")
    answer = reload_now(running)
    assert answer["applied"] and answer["error"] is None
    assert answer["changes"] == ["providers added: p3", "providers removed: p2", "p1: weight 1 -> 2",
                                 "cooldown_minutes changed", "strategy fallback -> round_robin"]
    assert {answered_by(running) for _ in range(4)} == {"p1", "p3"}
    assert [p["name"] for p in status_of(running)["providers"]] == ["p3", "p1"]


def test_a_stream_in_flight_finishes_byte_for_byte_across_a_reload(proxy, providers):
    frames = message_events(text="the whole answer")
    p1, p2 = providers(Stream(frames, hold_after=2)), providers(named("p2"))
    running = proxy(p1, p2)
    with running.stream_held(p1, 2) as result:
        running.write_config([entry("p2", p2)])  # p1 removed, its pool retired
        answer = reload_now(running)
        assert answer["changes"] == ["providers removed: p1"]
        assert answered_by(running) == "p2"
    status, _, body = result["r"]
    assert status == 200 and body == b"".join(frames)
    assert running.server.upstreams._pools.keys() == {"p2"}


def test_a_removed_providers_connections_are_closed_once_idle(proxy, providers):
    p1, p2 = providers(named("p1")), providers(named("p2"))
    running = proxy(p1, p2)
    assert answered_by(running) == "p1"  # leaves an idle connection to p1 in its pool
    pool = running.server.upstreams._pools["p1"]
    assert len(pool._idle) == 1
    p1.queue(Stream(hold_after=2))
    with running.stream_held(p1, 2) as result:  # a second connection, in use
        running.write_config([entry("p2", p2)])
        reload_now(running)
        assert len(pool._idle) == 0  # the idle one closed at once
    assert result["r"][0] == 200
    assert len(pool._idle) == 0  # the one in use closed when it was given back


def test_a_broken_config_keeps_the_old_one_serving_and_says_why(proxy, providers):
    p1, p2 = providers(named("p1")), providers(named("p2"))
    running = proxy(p1, p2)
    running.config_path.write_text('{"providers": [\n  {"name": "p2",}\n]}', encoding="utf-8")
    assert eventually(lambda: status_of(running)["config_error"] is not None, timeout=3)
    error = status_of(running)["config_error"]
    assert "config.json: invalid JSON at line 2, column 17" in error["message"]
    assert answered_by(running) == "p1"  # still the old config
    assert "config reload (file changed) failed; still using the config loaded at" in running.log_text()

    answer = reload_now(running)  # asked again: the same error, not a second log line
    assert not answer["applied"] and "invalid JSON at line 2" in answer["error"]
    assert running.log_text().count("config reload") == 1

    running.write_config([entry("p2", p2)], cooldown_minutes="soon")  # valid JSON, a wrong value
    assert eventually(lambda: "cooldown_minutes" in (status_of(running)["config_error"] or {}).get(
        "message", ""), timeout=3)
    running.write_config([entry("p2", p2)])
    assert eventually(lambda: status_of(running)["config_error"] is None, timeout=3)
    assert answered_by(running) == "p2"


def test_a_dotenv_that_cannot_be_read_keeps_the_keys_there_were(proxy, providers):
    p1 = providers(named("p1"))
    running = proxy(p1, environ={})
    dotenv = running.config_path.parent / ".env"
    dotenv.write_text("KEY_P1=sk-the-key-5678\n", encoding="utf-8")
    assert reload_now(running)["applied"] and answered_by(running) == "p1"
    dotenv.unlink()
    dotenv.mkdir()  # not a file to read: as a file an editor holds locked
    answer = reload_now(running)
    assert not answer["applied"] and ".env: cannot read it" in answer["error"]
    assert answered_by(running) == "p1"  # the key is still there
    dotenv.rmdir()
    dotenv.write_text("KEY_P1=sk-the-key-5678\n", encoding="utf-8")
    assert eventually(lambda: status_of(running)["config_error"] is None, timeout=5)


def test_a_failed_read_is_tried_again_though_nothing_changed(proxy, providers):
    p1, p2 = providers(named("p1")), providers(named("p2"))
    running = proxy(p1, p2)
    server, read = running.server, running.server._loader
    failures = [PermissionError(13, "Permission denied")]

    def flaky():
        if failures:
            raise failures.pop()
        return read()

    server._loader = flaky
    running.write_config([entry("p2", p2), entry("p1", p1)])
    assert eventually(lambda: not failures, timeout=3)  # the watcher's first read failed
    assert eventually(lambda: answered_by(running) == "p2", timeout=3)  # and the next poll read it
    assert status_of(running)["config_error"] is None
    assert "cannot read it (Permission denied)" in running.log_text()


def test_a_key_added_to_dotenv_is_picked_up_without_a_restart(proxy, providers):
    p1 = providers(named("p1"))
    running = proxy(p1, environ={})
    assert answered_by(running) == 503
    (running.config_path.parent / ".env").write_text("KEY_P1=sk-the-new-key-1234\n", encoding="utf-8")
    assert wait_until(lambda: answered_by(running) == "p1", timeout=3)
    assert p1.requests[-1].headers["x-api-key"] == "sk-the-new-key-1234"
    log_text = running.log_text()
    assert "p1: 1 key added (KEY_P1)" in log_text
    assert "sk-the-new-key-1234" not in log_text


def test_cooldowns_counters_and_key_states_carry_over(proxy, providers):
    p1, p2 = providers(Reply(529, {"type": "error"})), providers(named("p2"))
    running = proxy(p1, p2, environ={"KEY_P1": "key-one-aaaa,key-one-bbbb", "KEY_P2": "key-two"})
    assert answered_by(running) == "p2"
    before = {p["name"]: p for p in status_of(running)["providers"]}
    assert before["p1"]["state"] == "cooling"

    running.write_config([entry("p1", p1, weight=3), entry("p2", p2), entry("p3", p2)])
    reload_now(running)
    after = {p["name"]: p for p in status_of(running)["providers"]}
    assert after["p1"]["state"] == "cooling"
    assert after["p1"]["cooldown_seconds_left"] <= before["p1"]["cooldown_seconds_left"]
    assert (after["p1"]["requests"], after["p1"]["failures"]) == (1, 1)
    assert after["p2"]["requests"] == 1 and after["p3"]["requests"] == 0
    assert after["p1"]["keys"] == before["p1"]["keys"]
    assert answered_by(running) == "p2"  # p1 still cooling: not asked
    assert len(p1.requests) == 1


def test_a_port_change_is_reported_not_applied(proxy, providers):
    p1 = providers(named("p1"))
    running = proxy(p1)
    port = running.server.port
    running.write_config([entry("p1", p1)], proxy_port=port + 1, cooldown_minutes=3)
    answer = reload_now(running)
    assert answer["applied"] and answer["changes"] == ["cooldown_minutes changed"]
    assert answer["restart_needed"] == ["proxy_port changed: restart to apply"]
    assert status_of(running)["restart_needed"] == ["proxy_port changed: restart to apply"]
    assert running.server.port == port and answered_by(running) == "p1"
    assert running.server.config.cooldown_seconds == 180
    assert "proxy_port changed: restart to apply" in running.log_text()


def test_a_reload_never_drops_the_token_where_the_proxy_listens_beyond_loopback(proxy, providers):
    # The file moves to 127.0.0.1 without a token, which its own check allows; but the
    # proxy listens on 0.0.0.0 until a restart, and must not answer there without one.
    p1 = providers(named("p1"))
    running = proxy(p1, proxy_host="0.0.0.0")
    running.write_config([entry("p1", p1)], proxy_host="127.0.0.1", require_token=False)
    answer = running.server.reload("test")
    assert not answer["applied"]
    assert 'refusing "require_token": false while the proxy listens on 0.0.0.0' in answer["error"]
    assert running.server.config.require_token and running.server.config_error is not None
    url = f"http://127.0.0.1:{running.server.port}"
    status, _, _ = request(url, "POST", "/v1/messages", {"model": "m", "messages": []},
                           {"content-type": "application/json"})
    assert status == 401


def test_a_pinned_session_to_a_removed_provider_is_told(proxy, providers):
    p1, p2 = providers(named("p1")), providers(named("p2"))
    running = proxy(p1, p2)
    running.write_config([entry("p2", p2)])
    reload_now(running)
    status, _, body = running.post(prefix="/provider/p1")
    assert status == 400 and "Unknown provider 'p1'" in json.loads(body)["error"]["message"]


# --- what changed, in words -------------------------------------------------------------------


def config_of(tmp_path, providers, environ=None, **settings):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"providers": providers, **settings}), encoding="utf-8")
    return load_config(path, environ=environ or {})


def test_changes_are_described_without_a_key(tmp_path):
    url = "http://127.0.0.1:9"
    old = config_of(tmp_path, [{"name": "a", "base_url": url, "api_key_env": "KA"},
                               {"name": "b", "base_url": url, "api_key_env": "KB"}],
                    {"KA": "sk-old-aaaa,sk-kept-cccc", "KB": "sk-b"})
    new = config_of(tmp_path, [{"name": "b", "base_url": url + "1", "api_key_env": "KB"},
                               {"name": "a", "base_url": url, "api_key_env": ["KA", "KA2"],
                                "models": {"x": "y"}}],
                    {"KA": "sk-kept-cccc", "KA2": "sk-new-dddd", "KB": "sk-b"}, strategy="weighted")
    changes = describe_changes(old, new)
    assert changes == [
        "provider order now b, a", "b: base_url http://127.0.0.1:9 -> http://127.0.0.1:91",
        "a: api_key_env KA -> KA, KA2", "a: models changed", "a: 1 key added (KA2)",
        "a: 1 key removed (KA)", "strategy fallback -> weighted"]
    assert not any("sk-" in change for change in changes)
    assert describe_changes(old, old) == []


def test_what_needs_a_restart(tmp_path):
    url = "http://127.0.0.1:9"
    old = config_of(tmp_path, [{"name": "a", "base_url": url, "api_key_env": "KA"}])
    new = config_of(tmp_path, [{"name": "a", "base_url": url, "api_key_env": "KA"}], proxy_port=9999,
                    proxy_host="127.0.0.2", usage_record=False)
    assert restart_only(old, new) == ["proxy_host changed: restart to apply",
                                      "proxy_port changed: restart to apply",
                                      "usage_record changed: restart to apply"]


# --- the daemon: proxy.py reload, SIGHUP, status and check --------------------------------------


@pytest.fixture
def daemon(workspace, fake):
    fakes = {"p1": fake(named("p1")), "p2": fake(named("p2"))}
    port = None

    def write(*names, **settings):
        return workspace.config([(n, fakes[n].url) for n in names], port=port, **settings)

    config = write("p1", "p2")
    port = json.loads(config.read_text())["proxy_port"]
    workspace.keys(KEY_P1="secret-p1", KEY_P2="secret-p2")
    assert workspace.run("start", "--quiet", config=config).returncode == 0
    ask = asker(workspace, config)

    return workspace, config, write, ask


def test_proxy_py_reload(daemon):
    workspace, config, write, ask = daemon
    write("p2", "p1")
    done = workspace.run("reload", config=config)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "reloaded: provider order now p2, p1"
    assert ask() == "p2"
    again = workspace.run("reload", config=config)
    assert re.fullmatch(r"reloaded: nothing changed since the proxy read the config at \d\d:\d\d:\d\d",
                        again.stdout.strip())


def test_a_reload_just_after_the_proxy_read_the_saved_file_says_when_it_did(daemon):
    workspace, config, write, ask = daemon
    write("p2", "p1")
    assert wait_until(lambda: ask() == "p2", timeout=3)  # read by itself, before `reload` runs
    done = workspace.run("reload", config=config)
    read_at = workspace.state(config).log.read_text().splitlines()
    read_at = next(line for line in reversed(read_at) if "config reloaded (file changed)" in line)
    assert done.stdout.strip() == f"reloaded: nothing changed since the proxy read the config at {read_at[11:19]}"


def test_proxy_py_reload_of_a_broken_config(daemon):
    workspace, config, write, ask = daemon
    config.write_text("{", encoding="utf-8")
    failed = workspace.run("reload", config=config)
    assert failed.returncode == 1
    assert_one_line_error(failed)
    assert "the config has a problem, so the proxy goes on with the one it had" in failed.stderr
    assert "invalid JSON at line 1" in failed.stderr
    assert ask() == "p1"

    shown = workspace.run("status", config=config)
    assert "config error since " in shown.stdout and "invalid JSON at line 1" in shown.stdout
    checked = workspace.run("check", config=config)
    assert "is not using this file: its reload at" in checked.stdout


def test_with_a_broken_config_the_running_proxy_can_still_be_controlled_and_watched(daemon):
    workspace, config, write, ask = daemon
    config.write_text("{", encoding="utf-8")
    assert workspace.run("reload", config=config).returncode == 1

    disabled = workspace.run("disable", "p1", "--for", "1m", config=config)
    assert disabled.returncode == 0, disabled.stderr
    assert disabled.stdout.startswith("p1: disabled for 1m")
    assert ask() == "p2"
    assert workspace.run("enable", "p1", config=config).returncode == 0
    assert ask() == "p1"
    unknown = workspace.run("disable", "nosuch", config=config)
    assert unknown.returncode == 1 and "unknown provider 'nosuch'" in unknown.stderr

    link = workspace.run("dashboard", "--no-browser", config=config)  # the page shows the config error
    assert link.returncode == 0, link.stderr
    assert "/dashboard/login?code=" in link.stdout


def test_check_warns_when_the_daemon_has_not_read_the_file(daemon, monkeypatch):
    workspace, config, write, ask = daemon
    write("p2")
    checked = workspace.run("check", config=config)
    assert "has not read this file since it changed" not in checked.stdout  # just saved: it will
    old = time.time() - 60
    os.utime(config, (old, old))  # as if the watcher had missed it a minute ago
    status, _, _ = request(url_of(workspace.record(config)), "POST", "/reload",
                           headers={"x-api-key": workspace.token(config)})
    assert status == 200
    later = time.time() + 30
    os.utime(config, (later, later))  # changed after the daemon last read it
    assert "has not read this file since it changed; run `proxy.py reload`" in \
        workspace.run("check", config=config).stdout


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="SIGHUP is POSIX")
def test_sighup_reloads(daemon):
    workspace, config, write, ask = daemon
    write("p2", "p1", cooldown_minutes=7)
    os.kill(workspace.record(config)["pid"], signal.SIGHUP)
    assert wait_until(lambda: ask() == "p2", timeout=3)
    log = (config.parent / "proxy.log").read_text(encoding="utf-8")
    assert wait_until(lambda: "config reloaded (SIGHUP)" in (config.parent / "proxy.log").read_text(
        encoding="utf-8") or "config reloaded (file changed)" in log)


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="SIGHUP is POSIX")
@pytest.mark.parametrize("attached, before, reloads", [
    (True, signal.SIG_DFL, False),   # in a terminal: closing it stops the proxy, as before
    (True, signal.SIG_IGN, True),    # under nohup in a terminal
    (False, signal.SIG_DFL, True),   # the background daemon
] if hasattr(signal, "SIGHUP") else [])
def test_sighup_reloads_unless_the_proxy_runs_in_a_terminal(attached, before, reloads):
    from claude_proxy.run import _reload_on_sighup

    previous = signal.signal(signal.SIGHUP, before)
    try:
        _reload_on_sighup(object(), attached=attached)
        handler = signal.getsignal(signal.SIGHUP)
        assert callable(handler) is reloads
        assert reloads or handler is before
    finally:
        signal.signal(signal.SIGHUP, previous)
