"""claude-proxy.fish, sourced in a real fish.

The same scenarios as for bash and zsh (test_shell_functions.py): the four
commands as a user runs them, real requests through the proxy from a client
configured only by the session's environment, and the session's variables
compared before and after with fish's own ``set --show``.  Universal
variables get their own test, in a fish that keeps them in a throwaway home.
"""

import json
import re
import shutil
import subprocess

import pytest

from daemon_support import ROOT, url_of, workspace  # noqa: F401  (workspace: fixture)
from fakes import request
from test_shell_functions import (ShellInBackground, fake_pythons, sections, setup,  # noqa: F401  (setup: fixture)
                                  assert_watch_sections, without_python_setting)

from claude_proxy import errors, session

SCRIPT = ROOT / "claude-proxy.fish"
FISH = shutil.which("fish")
pytestmark = pytest.mark.skipif(not FISH, reason="fish is not installed")
# fish's own account of each variable: its scopes, exported or not, and every element.
SNAPSHOT = ("for v in ANTHROPIC_BASE_URL ANTHROPIC_AUTH_TOKEN ANTHROPIC_API_KEY; "
            "set -q $v; and set --show $v; or echo \"$v: unset\"; end")
LEFTOVERS = "set --names | string match -e __claude_proxy_ | string match -v -r '_dir|_variables|_python|_strategies'"


def fish_argv(script, config=False):
    """fish without the user's config (``config=True``: with the config in $HOME, for universal variables)."""
    return [FISH, *([] if config else ["--no-config"]), "-c", f'source "{SCRIPT}"\n{script}']


def run_fish(script, environ, timeout=60, config=False):
    return subprocess.run(fish_argv(script, config), capture_output=True, text=True, env=environ,
                          timeout=timeout, cwd=str(ROOT.parent))


def private_home(environ, tmp_path):
    """``environ`` with a home of its own, where fish keeps its universal variables."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    environ = {k: v for k, v in environ.items() if not k.startswith("XDG_")}
    return {**environ, "HOME": str(home)}


# --- static checks ----------------------------------------------------------------------


def test_fish_parses_it_and_it_is_indented_as_fish_indent_does():
    subprocess.run([FISH, "--no-execute", str(SCRIPT)], check=True)
    fish_indent = shutil.which("fish_indent")
    if fish_indent:
        assert subprocess.run([fish_indent], input=SCRIPT.read_text(encoding="utf-8"), capture_output=True,
                              text=True).stdout == SCRIPT.read_text(encoding="utf-8")


def test_it_saves_exactly_the_variables_env_sets():
    names = re.search(r"set -g __claude_proxy_variables ([A-Z_ ]+)\n", SCRIPT.read_text(encoding="utf-8"))
    assert tuple(names.group(1).split()) == session.SESSION_VARIABLES


# --- the commands in a real fish --------------------------------------------------------


def test_fb_switch_status_reset_round_trip(setup, tmp_path):
    workspace, config, p1, p2 = setup
    script = f"""
set -gx ANTHROPIC_API_KEY 'original key'
set -g ANTHROPIC_AUTH_TOKEN 'a fish variable, not exported' 'and its second element'
set -e ANTHROPIC_BASE_URL
echo "== before"; {SNAPSHOT}
echo "== fb"
claude-fb; or echo "claude-fb failed: $status"
echo "URL=$ANTHROPIC_BASE_URL"
$CLAUDE_PROXY_PYTHON {tmp_path / "client.py"} sdk
echo "== switch"
claude-switch p2; or echo "claude-switch failed: $status"
echo "URL=$ANTHROPIC_BASE_URL"
$CLAUDE_PROXY_PYTHON {tmp_path / "client.py"}
echo "== status"
claude-status; echo "rc=$status"
echo "== reset"
claude-reset; echo "rc=$status"
echo "== after"; {SNAPSHOT}
echo "== leftovers"; {LEFTOVERS}
echo "== status after"
claude-status; echo "rc=$status"
"""
    result = run_fish(script, workspace.environ)
    parts = sections(result.stdout)
    port = json.loads(config.read_text())["proxy_port"]
    url = f"http://127.0.0.1:{port}"

    assert "failed" not in result.stdout, result.stdout + result.stderr
    assert f"URL={url}\nANSWER hello from p1" in parts["fb"]
    assert f"this session now goes through {url} (fallback order: p1 > p2)" in result.stderr
    assert f"URL={url}/provider/p2\nANSWER hello from p2" in parts["switch"]
    assert f"pinned to p2 ({url}/provider/p2)" in result.stderr
    assert [r.headers["x-api-key"] for r in p1.requests] == ["secret-p1"]
    assert [r.headers["x-api-key"] for r in p2.requests] == ["secret-p2"]
    assert f"this session: pinned to p2 ({url}/provider/p2)" in parts["status"]
    assert "p1  ready" in parts["status"] and parts["status"].endswith("rc=0")
    assert "back as they were" in parts["reset"] and "stopped" in parts["reset"]
    assert parts["after"] == parts["before"]
    assert "|original key|" in parts["after"] and "set in global scope, unexported, with 2 elements" in parts["after"]
    assert "ANTHROPIC_BASE_URL: unset" in parts["after"]
    assert parts["leftovers"] == ""
    assert "not running" in parts["status after"] and parts["status after"].endswith(
        f"rc={errors.EXIT_NOT_RUNNING}")
    assert workspace.record(config) is None


def test_reset_restores_the_values_from_before_the_first_activation(setup):
    workspace, config, _, _ = setup
    script = f"""
set -gx ANTHROPIC_BASE_URL https://api.example.test
set -g ANTHROPIC_API_KEY  # set, unexported, with no elements
echo "== before"; {SNAPSHOT}
claude-fb 2>/dev/null; and claude-switch p1 2>/dev/null; and claude-fb 2>/dev/null; or echo failed
echo "== reset"; claude-reset --keep-running
echo "== after"; {SNAPSHOT}
echo "== sessions"; ls "{workspace.state(config).sessions}"
"""
    result = run_fish(script, workspace.environ)
    parts = sections(result.stdout)
    assert "failed" not in result.stdout, result.stderr
    assert parts["after"] == parts["before"]
    assert "ANTHROPIC_API_KEY: set in global scope, unexported, with 0 elements" in parts["after"]
    assert "stopped" not in parts["reset"]
    assert parts["sessions"] == ""  # this shell is no longer counted as using it
    record = workspace.record(config)
    assert request(url_of(record), "GET", "/health")[0] == 200  # --keep-running left it up


def test_universal_variables_are_never_changed(setup, tmp_path):
    workspace, config, _, _ = setup
    environ = private_home(workspace.environ, tmp_path)
    show_child = (f"$CLAUDE_PROXY_PYTHON -c 'import os; print(repr(os.environ.get(\"ANTHROPIC_API_KEY\")), "
                  f"os.environ.get(\"ANTHROPIC_BASE_URL\"))'")
    setting_up = run_fish("set -Ux ANTHROPIC_API_KEY 'universal key'; set -U ANTHROPIC_BASE_URL https://u.example.test",
                          environ, config=True)
    assert setting_up.returncode == 0, setting_up.stderr
    script = f"""
echo "== before"; {SNAPSHOT}
claude-fb 2>/dev/null; or echo failed
echo "== child"; {show_child}
claude-reset >/dev/null
echo "== after"; {SNAPSHOT}
"""
    result = run_fish(script, environ, config=True)
    parts = sections(result.stdout)
    assert "failed" not in result.stdout, result.stderr
    url = url_of(workspace.record(config) or {"port": json.loads(config.read_text())["proxy_port"]})
    assert parts["child"] == f"'' {url}"  # the universal key is hidden from programs, not erased
    assert parts["after"] == parts["before"]
    assert "set in universal scope, exported, with 1 elements" in parts["after"]

    later = run_fish("echo $ANTHROPIC_API_KEY; echo $ANTHROPIC_BASE_URL", environ, config=True)
    assert later.stdout == "universal key\nhttps://u.example.test\n"  # other fish sessions still have them


def test_switch_to_an_unknown_provider_changes_nothing(setup):
    workspace, config, _, _ = setup
    script = f"""
set -gx ANTHROPIC_BASE_URL https://api.example.test
echo "== before"; {SNAPSHOT}
echo "== switch"; claude-switch nope; echo "rc=$status"
echo "== option"; claude-switch --help 2>/dev/null; echo "rc=$status"
echo "== after"; {SNAPSHOT}
echo "== saved"; {LEFTOVERS}
"""
    result = run_fish(script, workspace.environ)
    parts = sections(result.stdout)
    assert parts["switch"] == "rc=1" and parts["option"] == "rc=1"
    assert result.stderr.strip() == 'claude-proxy: unknown provider "nope"; configured providers: p1, p2'
    assert parts["after"] == parts["before"]
    assert parts["saved"] == ""
    assert workspace.record(config) is None  # and no proxy was started for it


def test_usage_mistakes_are_explained(setup):
    workspace, _, _, _ = setup
    result = run_fish('claude-switch; echo "rc=$status"; claude-reset --bogus; echo "rc=$status"; '
                      'claude-fb extra; echo "rc=$status"', workspace.environ)
    assert result.stdout.splitlines() == ["rc=2", "rc=2", "rc=2"]
    assert result.stderr.splitlines() == [
        "usage: claude-switch PROVIDER   (one of: p1 p2)",
        "usage: claude-reset [--keep-running]",
        "usage: claude-fb [--strategy NAME]   (this session goes through claude-proxy, with failover; "
        "NAME: fallback, round_robin, weighted, random, fastest)"]

    broken = run_fish("claude-switch", {**workspace.environ,
                                        "CLAUDE_PROXY_CONFIG": str(workspace.tmp_path / "missing.json")})
    assert broken.stderr == "usage: claude-switch PROVIDER   (no providers: see python proxy.py check)\n"


def test_fish_completes_provider_names_for_the_first_argument_only(setup):
    workspace, _, _, _ = setup
    result = run_fish("complete --do-complete 'claude-switch p'; echo ==; "
                      "complete --do-complete 'claude-switch p1 '; echo ==; "
                      "complete --do-complete 'claude-reset --k'", workspace.environ)
    assert result.stdout.split("==\n") == ["p1\np2\n", "", "--keep-running\tleave the proxy running\n"]


def test_proxy_py_is_found_beside_the_real_file_from_any_directory(setup, tmp_path):
    workspace, _, _, _ = setup
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "claude-proxy.fish").symlink_to(SCRIPT)
    result = subprocess.run([FISH, "--no-config", "-c", 'source linked/claude-proxy.fish; cd /; claude-switch'],
                            capture_output=True, text=True, env=workspace.environ, timeout=30, cwd=tmp_path)
    assert result.stderr == "usage: claude-switch PROVIDER   (one of: p1 p2)\n"


# --- finding Python ---------------------------------------------------------------------


def test_an_old_python3_is_passed_over_for_a_new_python(setup, tmp_path):
    workspace, _, _, _ = setup
    log = fake_pythons(tmp_path / "bin", python3="3.9", python="real")
    result = run_fish('claude-switch; echo "rc=$status"', without_python_setting(workspace.environ, tmp_path / "bin"))
    assert result.stdout == "rc=2\n"
    assert result.stderr == "usage: claude-switch PROVIDER   (one of: p1 p2)\n"
    calls = log.read_text().splitlines()
    assert calls[:2] == ["python3 probed", "python probed"]
    assert all(call.startswith("python ") for call in calls[2:]) and calls[2:]  # proxy.py ran on python


def test_no_new_enough_python_is_one_line_that_names_CLAUDE_PROXY_PYTHON(setup, tmp_path):
    workspace, config, _, _ = setup
    fake_pythons(tmp_path / "bin", python3="3.9", python="2.7")
    result = run_fish('claude-fb; echo "rc=$status"', without_python_setting(workspace.environ, tmp_path / "bin"))
    assert result.stdout == "rc=127\n"
    assert result.stderr.splitlines() == [
        "claude-proxy: Python 3.10 or newer was not found (python3 is 3.9, python is 2.7); "
        "install it, or set CLAUDE_PROXY_PYTHON to its path"]

    environ = {**workspace.environ, "CLAUDE_PROXY_PYTHON": str(tmp_path / "bin" / "python3")}
    result = run_fish('claude-fb; echo "rc=$status"', environ)
    assert result.stdout == "rc=127\n"
    assert result.stderr.splitlines() == [
        f"claude-proxy: CLAUDE_PROXY_PYTHON is {tmp_path / 'bin' / 'python3'}, which is Python 3.9; "
        "claude-proxy needs 3.10 or newer: fix or unset it"]

    environ["CLAUDE_PROXY_PYTHON"] = "/nonexistent/python3"
    result = run_fish('claude-fb; echo "rc=$status"', environ)
    assert result.stdout == "rc=127\n"
    assert result.stderr.splitlines() == [
        "claude-proxy: CLAUDE_PROXY_PYTHON is /nonexistent/python3, which is not a program; fix or unset it"]
    assert workspace.record(config) is None


def test_the_python_found_is_kept_until_path_or_CLAUDE_PROXY_PYTHON_changes(setup, tmp_path):
    workspace, _, _, _ = setup
    log = fake_pythons(tmp_path / "bin", python3="real")
    script = f"""
echo "== same"; claude-status >/dev/null; claude-switch 2>/dev/null; claude-status >/dev/null
grep -c probed "{log}"
echo "== new PATH"; set -gx PATH {tmp_path} $PATH; claude-status >/dev/null
grep -c probed "{log}"
echo "== setting"; set -gx CLAUDE_PROXY_PYTHON /nonexistent/python3; claude-status; echo "rc=$status"
grep -c probed "{log}"
echo "== unset again"; set -e CLAUDE_PROXY_PYTHON; claude-status >/dev/null
grep -c probed "{log}"
"""
    result = run_fish(script, without_python_setting(workspace.environ, tmp_path / "bin"))
    parts = sections(result.stdout)
    assert parts == {"same": "1", "new PATH": "2", "setting": "rc=127\n2", "unset again": "3"}, result.stderr


# --- other shells using the same proxy ----------------------------------------------------


def test_reset_leaves_the_proxy_running_while_another_shell_uses_it(setup):
    workspace, config, _, _ = setup
    first = ShellInBackground(fish_argv('claude-fb 2>/dev/null; echo "ready rc=$status"; read line\n'
                                        'claude-reset; echo "rc=$status"'), workspace.environ)
    try:
        assert first.ready == "ready rc=0\n"
        second = run_fish('claude-switch p2 2>/dev/null; claude-reset; echo "rc=$status"', workspace.environ)
        lines = second.stdout.splitlines()
        assert lines[0] == "claude-reset: this session's ANTHROPIC_* variables are back as they were"
        assert lines[1].startswith(f"claude-proxy keeps running for 1 other shell session (pid {first.process.pid}); ")
        assert lines[2:] == ["rc=0"], second.stdout + second.stderr
        record = workspace.record(config)
        assert record is not None and request(url_of(record), "GET", "/health")[0] == 200

        stdout, _ = first.finish()  # the last shell using it
        assert "claude-proxy stopped" in stdout and stdout.endswith("rc=0\n"), stdout
        assert workspace.record(config) is None
    finally:
        first.kill()


def test_reset_in_a_shell_that_never_used_the_proxy_stops_nothing(setup):
    workspace, config, _, _ = setup
    assert workspace.run("start", "--quiet", config=config).returncode == 0
    script = f"""
set -gx ANTHROPIC_BASE_URL https://api.example.test
echo "== before"; {SNAPSHOT}
echo "== reset"; claude-reset; echo "rc=$status"
echo "== after"; {SNAPSHOT}
"""
    parts = sections(run_fish(script, workspace.environ).stdout)
    assert parts["reset"] == ("claude-reset: this session was not using the proxy; nothing to restore, "
                              "and the proxy is left as it is\nrc=0")
    assert parts["after"] == parts["before"]
    record = workspace.record(config)
    assert record is not None and request(url_of(record), "GET", "/health")[0] == 200


# --- the README, as written ---------------------------------------------------------------


def test_the_readme_fish_commands_work_as_written(setup, tmp_path):
    workspace, config, _, _ = setup
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### fish"):]
    block = re.search(r"```fish\n(.*?)```", section, re.S).group(1)
    commands = [line for line in block.splitlines() if line.strip() != "claude"]  # Claude Code: not here
    environ = private_home(workspace.environ, tmp_path)
    (tmp_path / "home" / ".claude-proxy").symlink_to(ROOT)  # the clone the README assumes
    result = subprocess.run([FISH, "-c", "\n".join([*commands, 'echo "URL=$ANTHROPIC_BASE_URL"'])],
                            capture_output=True, text=True, env=environ, timeout=60, cwd=str(tmp_path))
    url = f"http://127.0.0.1:{json.loads(config.read_text())['proxy_port']}"
    assert result.stdout.splitlines()[-1] == f"URL={url}", result.stdout + result.stderr

    new_session = subprocess.run([FISH, "-c", "functions -q claude-fb claude-switch claude-status claude-reset"],
                                 env=environ, timeout=30)
    assert new_session.returncode == 0  # config.fish loads them in every new fish


def test_claude_fb_takes_a_strategy(setup):
    workspace, config, _, _ = setup
    result = run_fish('claude-fb --strategy round_robin; and echo "URL=$ANTHROPIC_BASE_URL"; '
                      'claude-fb --strategy=fastest; and echo "URL=$ANTHROPIC_BASE_URL"', workspace.environ)
    url = url_of(workspace.record(config))
    assert result.stdout.splitlines() == [f"URL={url}/strategy/round_robin", f"URL={url}/strategy/fastest"]
    assert "(strategy round_robin over p1, p2)" in result.stderr


def test_the_strategy_list_is_proxy_pys():
    from claude_proxy.routing import STRATEGIES
    line = next(l for l in SCRIPT.read_text(encoding="utf-8").splitlines()
                if l.startswith("set -g __claude_proxy_strategies "))
    assert tuple(line.split()[3:]) == STRATEGIES


def test_claude_status_watch_runs_top(setup):
    workspace, _, _, _ = setup
    script = ('echo "== down"; claude-status --watch; echo "rc=$status"; '
              'claude-switch p2 2>/dev/null; '
              'echo "== up"; claude-status --watch | cat; echo "rc=$pipestatus[1]"; '
              'echo "== once"; claude-status --watch --once; echo "rc=$status"; '
              'echo "== complete"; complete --do-complete "claude-status --w"; '
              'claude-reset >/dev/null')
    parts = sections(run_fish(script, workspace.environ).stdout)
    assert_watch_sections(parts)
    assert parts["complete"].split()[0] == "--watch"


def test_claude_proxy_runs_the_runtime_controls_and_completes_names(setup):
    workspace, _, _, _ = setup
    result = run_fish("claude-fb 2>/dev/null; claude-proxy cool p1 --for 5m; claude-proxy uncool p1; "
                      "echo ==; complete --do-complete 'claude-proxy disable p'; echo ==; "
                      "complete --do-complete 'claude-proxy unc'", workspace.environ)
    cooled, completed, commands = result.stdout.split("==\n")
    assert cooled.splitlines() == ["p1: cooling for 5m 00s; tried only when no other is ready",
                                   "cooldowns cleared: p1"]
    assert completed.split() == ["p1", "p2"]
    assert commands.split() == ["uncool"]
