"""Runtime control of the running proxy: ``proxy.py disable|enable|cool|uncool``."""

import json
import time

import pytest

from daemon_support import (assert_one_line_error, asker, fake, named, url_of, wait_until,  # noqa: F401
                            workspace)
from fakes import request

from claude_proxy.control import parse_duration
from claude_proxy.errors import UsageError


@pytest.fixture
def running(workspace, fake):
    config = workspace.config([("p1", fake(named("p1")).url), ("p2", fake(named("p2")).url)])
    workspace.keys(KEY_P1="secret-p1", KEY_P2="secret-p2")
    assert workspace.run("start", "--quiet", config=config).returncode == 0
    ask = asker(workspace, config)

    def state(name):
        rows = json.loads(workspace.run("status", "--json", config=config).stdout)["providers"]
        return next(r for r in rows if r["name"] == name)

    return workspace, config, ask, state


def test_disable_and_enable_take_effect_at_once(running):
    workspace, config, ask, state = running
    assert ask() == "p1"

    done = workspace.run("disable", "P1", config=config)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("p1: disabled until `proxy.py enable`; requests go to the other "
                                   "providers (a restart forgets this)")
    assert ask() == "p2"
    assert state("p1")["state"] == "disabled"
    assert "p1  disabled by proxy.py disable until enabled" in workspace.run("status", config=config).stdout

    assert workspace.run("enable", "p1", config=config).stdout.strip() == "p1: enabled again"
    assert ask() == "p1"


def test_disable_for_a_while_expires_by_itself(running):
    workspace, config, ask, state = running
    workspace.run("disable", "p1", "--for", "1s", config=config)
    assert ask() == "p2"
    assert 0 < state("p1")["disabled_by_command"]["seconds_left"] <= 1
    assert wait_until(lambda: ask() == "p1", timeout=10)


def test_cool_and_uncool(running):
    workspace, config, ask, state = running
    cooled = workspace.run("cool", "p1", "--for", "10m", config=config)
    assert cooled.stdout.strip() == "p1: cooling for 10m 00s; tried only when no other is ready"
    assert ask() == "p2"
    assert 590 < state("p1")["cooldown_seconds_left"] <= 600

    cleared = workspace.run("uncool", config=config)
    assert cleared.stdout.strip() == "cooldowns cleared: p1"
    assert ask() == "p1" and state("p1")["state"] == "ready"
    assert workspace.run("uncool", "p2", config=config).stdout.strip() == "no provider was cooling"


def test_mistakes_are_one_line(running):
    workspace, config, _, _ = running
    unknown = workspace.run("disable", "nope", config=config)
    assert_one_line_error(unknown)
    assert 'unknown provider "nope"' in unknown.stderr
    bad = workspace.run("cool", "p1", "--for", "soon", config=config)
    assert_one_line_error(bad)
    assert "'soon' is not a duration" in bad.stderr

    workspace.run("stop", config=config)
    stopped = workspace.run("disable", "p1", config=config)
    assert_one_line_error(stopped)
    assert "claude-proxy: the proxy is not running, so there is nothing to disable" in stopped.stderr


def test_control_needs_the_token_even_without_require_token(workspace, fake):
    config = workspace.config([("p1", fake().url)], require_token=False)
    workspace.keys(KEY_P1="secret-p1")
    workspace.run("start", "--quiet", config=config)
    status, _, _ = request(url_of(workspace.record(config)), "POST", "/control?action=disable&provider=p1",
                           headers={"x-api-key": "anything"})
    assert status == 401


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("10m", 600), ("1h", 3600), ("1h30m", 5400),
                                           ("2", 120), ("0.5h", 1800), (" 45S ", 45)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "10x", "0", "-5", "m"])
def test_what_is_not_a_duration(text):
    with pytest.raises(UsageError):
        parse_duration(text)
