"""claude-proxy.sh, sourced in a real bash (and zsh where installed).

The scenarios run the four commands as a user would, send real requests
through the proxy with the official ``anthropic`` SDK (which, like Claude
Code, reads ANTHROPIC_BASE_URL and ANTHROPIC_AUTH_TOKEN from the
environment), and compare the session's variables before and after with the
shell's own ``declare -p`` / ``typeset -p``.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from daemon_support import ROOT, url_of, workspace  # noqa: F401  (workspace: fixture)
from fakes import MESSAGE, FakeProvider, Reply, Stream, message_events, request

from claude_proxy import errors, session

SCRIPT = ROOT / "claude-proxy.sh"
SHELLS = [
    "bash",
    pytest.param("zsh", marks=pytest.mark.skipif(not shutil.which("zsh"), reason="zsh is not installed")),
]
SNAPSHOT = {  # the shell's own account of the variables, set or not, exported or not
    "bash": "declare -p ANTHROPIC_BASE_URL ANTHROPIC_AUTH_TOKEN ANTHROPIC_API_KEY 2>&1 | sed 's/^.*declare: //'",
    "zsh": "for v in ANTHROPIC_BASE_URL ANTHROPIC_AUTH_TOKEN ANTHROPIC_API_KEY; do typeset -p $v 2>/dev/null || echo \"$v: unset\"; done",
}
# A client configured only by the session's environment, as Claude Code is:
# the official SDK (`client.py sdk`), or the same request by hand (faster to start).
CLIENT = """
import json, os, sys, urllib.request
assert "ANTHROPIC_API_KEY" not in os.environ, "ANTHROPIC_API_KEY must be cleared"
body = {"model": "claude-test-model", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
if sys.argv[1:] == ["sdk"]:
    import anthropic
    message = anthropic.Anthropic(max_retries=0, timeout=20).messages.create(**body)
    print("ANSWER", message.content[0].text)
else:
    request = urllib.request.Request(
        os.environ["ANTHROPIC_BASE_URL"] + "/v1/messages", json.dumps(body).encode(),
        {"Authorization": "Bearer " + os.environ["ANTHROPIC_AUTH_TOKEN"],
         "content-type": "application/json", "anthropic-version": "2023-06-01"})
    with urllib.request.urlopen(request, timeout=20) as answer:
        print("ANSWER", json.load(answer)["content"][0]["text"])
"""


def reply_from(name):
    return Reply(body={**MESSAGE, "content": [{"type": "text", "text": f"hello from {name}"}]})


@pytest.fixture
def setup(workspace, tmp_path):
    """Two fake providers behind a config; returns (workspace, config, p1, p2)."""
    p1, p2 = FakeProvider(reply_from("p1")), FakeProvider(reply_from("p2"))
    config = workspace.config([("p1", p1.url), ("p2", p2.url)])
    workspace.keys(KEY_P1="secret-p1", KEY_P2="secret-p2", CLAUDE_PROXY_PYTHON=sys.executable,
                   CLAUDE_PROXY_CONFIG=str(config))
    (tmp_path / "client.py").write_text(CLIENT, encoding="utf-8")
    yield workspace, config, p1, p2
    p1.close()
    p2.close()


def shell_argv(shell, script):
    argv = {"bash": ["bash", "--norc", "--noprofile", "-c"], "zsh": ["zsh", "-f", "-c"]}[shell]
    return [*argv, f'source "{SCRIPT}"\n{script}']


def run_in(shell, script, environ, timeout=60):
    return subprocess.run(shell_argv(shell, script), capture_output=True, text=True,
                          env=environ, timeout=timeout, cwd=str(ROOT.parent))


class ShellInBackground:
    """A shell that runs ``first``, then waits for a line on stdin before it runs ``then``."""

    def __init__(self, argv, environ):
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=environ, cwd=str(ROOT.parent))
        self.ready = self.process.stdout.readline()

    def finish(self, timeout=60):
        stdout, stderr = self.process.communicate("go\n", timeout=timeout)
        return self.ready + stdout, stderr

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()


def sections(stdout):
    """The lines between ``== NAME`` markers, by name."""
    found, name = {}, None
    for line in stdout.splitlines():
        if line.startswith("== "):
            name = line[3:]
            found[name] = []
        elif name is not None:
            found[name].append(line)
    return {k: "\n".join(v) for k, v in found.items()}


# --- static checks ----------------------------------------------------------------------


def test_bash_parses_it():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.skipif(not shutil.which("zsh"), reason="zsh is not installed")
def test_zsh_parses_it():
    subprocess.run(["zsh", "-n", str(SCRIPT)], check=True)


def test_shellcheck_passes():
    # Installed beside the interpreter (a venv's bin/), which need not be on PATH.
    shellcheck = shutil.which("shellcheck", path=os.pathsep.join(
        [os.path.dirname(sys.executable), os.environ.get("PATH", "")]))
    assert shellcheck, "shellcheck is a test dependency: pip install -r tests/requirements.txt"
    result = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_it_saves_exactly_the_variables_env_sets():
    loops = re.findall(r"for name in ([A-Z_ ]+); do", SCRIPT.read_text(encoding="utf-8"))
    assert len(loops) == 2
    for names in loops:
        assert tuple(names.split()) == session.SESSION_VARIABLES


# --- the commands in a real shell ----------------------------------------------------------


@pytest.mark.parametrize("shell", SHELLS)
def test_fb_switch_status_reset_round_trip(setup, tmp_path, shell):
    workspace, config, p1, p2 = setup
    script = f"""
export ANTHROPIC_API_KEY='original key'
ANTHROPIC_AUTH_TOKEN='a $shell variable, not exported'
unset ANTHROPIC_BASE_URL
echo "== before"; {SNAPSHOT[shell]}
echo "== fb"
claude-fb || echo "claude-fb failed: $?"
echo "URL=$ANTHROPIC_BASE_URL"
"$CLAUDE_PROXY_PYTHON" {tmp_path / "client.py"} sdk
echo "== switch"
claude-switch p2 || echo "claude-switch failed: $?"
echo "URL=$ANTHROPIC_BASE_URL"
"$CLAUDE_PROXY_PYTHON" {tmp_path / "client.py"}
echo "== status"
claude-status; echo "rc=$?"
echo "== reset"
claude-reset; echo "rc=$?"
echo "== after"; {SNAPSHOT[shell]}
echo "== leftovers"; echo "${{_CLAUDE_PROXY_SAVED-none}} ${{_CLAUDE_PROXY_OLD_ANTHROPIC_API_KEY-none}}"
echo "== status after"
claude-status; echo "rc=$?"
"""
    result = run_in(shell, script, workspace.environ)
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
    # today's figures per provider, from the usage record: one answer each
    assert "today, per provider" in parts["status"]
    assert re.search(r"^ +p1 +1 request, tokens in \d", parts["status"], re.M), parts["status"]
    assert re.search(r"^ +p2 +1 request, tokens in \d", parts["status"], re.M), parts["status"]
    assert "back as they were" in parts["reset"] and "stopped" in parts["reset"]
    assert parts["after"] == parts["before"]
    assert "original key" in parts["after"] and "not exported" in parts["after"]
    assert parts["leftovers"] == "none none"
    assert "not running" in parts["status after"] and parts["status after"].endswith(
        f"rc={errors.EXIT_NOT_RUNNING}")
    assert workspace.record(config) is None


@pytest.mark.parametrize("shell", SHELLS)
def test_reset_restores_the_values_from_before_the_first_activation(setup, shell):
    workspace, config, _, _ = setup
    script = f"""
export ANTHROPIC_BASE_URL=https://api.example.test
unset ANTHROPIC_AUTH_TOKEN ANTHROPIC_API_KEY
echo "== before"; {SNAPSHOT[shell]}
claude-fb 2>/dev/null && claude-switch p1 2>/dev/null && claude-fb 2>/dev/null || echo failed
echo "== reset"; claude-reset --keep-running
echo "== after"; {SNAPSHOT[shell]}
echo "== sessions"; ls "{workspace.state(config).sessions}"
"""
    result = run_in(shell, script, workspace.environ)
    parts = sections(result.stdout)
    assert "failed" not in result.stdout, result.stderr
    assert parts["after"] == parts["before"]
    assert "stopped" not in parts["reset"]
    assert parts["sessions"] == ""  # this shell is no longer counted as using it
    record = workspace.record(config)
    status, _, _ = request(f"http://127.0.0.1:{record['port']}", "GET", "/health")
    assert status == 200  # --keep-running left it up for other sessions


@pytest.mark.parametrize("shell", SHELLS)
def test_reset_leaves_the_proxy_running_while_another_shell_uses_it(setup, shell):
    workspace, config, _, _ = setup
    first = ShellInBackground(shell_argv(shell, 'claude-fb 2>/dev/null; echo "ready rc=$?"; read -r line\n'
                                                'claude-reset; echo "rc=$?"'), workspace.environ)
    try:
        assert first.ready == "ready rc=0\n"
        second = run_in(shell, 'claude-switch p2 2>/dev/null; claude-reset; echo "rc=$?"', workspace.environ)
        record = workspace.record(config)
        lines = second.stdout.splitlines()
        assert lines[0] == "claude-reset: this session's ANTHROPIC_* variables are back as they were"
        assert lines[1].startswith(f"claude-proxy keeps running for 1 other shell session (pid {first.process.pid}); ")
        assert lines[2:] == ["rc=0"], second.stdout + second.stderr
        assert record is not None and request(url_of(record), "GET", "/health")[0] == 200

        stdout, _ = first.finish()  # the last shell using it
        assert "claude-proxy stopped" in stdout and stdout.endswith("rc=0\n"), stdout
        assert workspace.record(config) is None
    finally:
        first.kill()


@pytest.mark.parametrize("shell", SHELLS)
def test_reset_in_a_shell_that_never_used_the_proxy_stops_nothing(setup, shell):
    workspace, config, _, _ = setup
    assert workspace.run("start", "--quiet", config=config).returncode == 0
    script = f"""
export ANTHROPIC_BASE_URL=https://api.example.test
echo "== before"; {SNAPSHOT[shell]}
echo "== reset"; claude-reset; echo "rc=$?"
echo "== after"; {SNAPSHOT[shell]}
"""
    parts = sections(run_in(shell, script, workspace.environ).stdout)
    assert parts["reset"] == ("claude-reset: this session was not using the proxy; nothing to restore, "
                              "and the proxy is left as it is\nrc=0")
    assert parts["after"] == parts["before"]
    record = workspace.record(config)
    assert record is not None and request(url_of(record), "GET", "/health")[0] == 200


@pytest.mark.parametrize("shell", SHELLS)
def test_switch_to_an_unknown_provider_changes_nothing(setup, shell):
    workspace, config, _, _ = setup
    script = f"""
export ANTHROPIC_BASE_URL=https://api.example.test
echo "== before"; {SNAPSHOT[shell]}
echo "== switch"; claude-switch nope; echo "rc=$?"
echo "== option"; claude-switch --help 2>/dev/null; echo "rc=$?"
echo "== after"; {SNAPSHOT[shell]}
echo "== saved"; echo "${{_CLAUDE_PROXY_SAVED-none}}"
"""
    result = run_in(shell, script, workspace.environ)
    parts = sections(result.stdout)
    assert parts["switch"] == "rc=1" and parts["option"] == "rc=1"
    assert result.stderr.strip() == 'claude-proxy: unknown provider "nope"; configured providers: p1, p2'
    assert parts["after"] == parts["before"]
    assert parts["saved"] == "none"
    assert workspace.record(config) is None  # and no proxy was started for it


@pytest.mark.parametrize("shell", SHELLS)
def test_usage_mistakes_are_explained(setup, shell):
    workspace, _, _, _ = setup
    result = run_in(shell, 'claude-switch; echo "rc=$?"; claude-reset --bogus; echo "rc=$?"; '
                           'claude-fb extra; echo "rc=$?"', workspace.environ)
    assert result.stdout.splitlines() == ["rc=2", "rc=2", "rc=2"]
    assert "usage: claude-switch PROVIDER   (one of: p1 p2)\n" in result.stderr
    assert "usage: claude-reset [--keep-running]" in result.stderr

    broken = run_in(shell, "claude-switch", {**workspace.environ,
                                             "CLAUDE_PROXY_CONFIG": str(workspace.tmp_path / "missing.json")})
    assert "usage: claude-switch PROVIDER   (no providers: see python proxy.py check)" in broken.stderr


def test_bash_completes_provider_names(setup):
    workspace, _, _, _ = setup
    script = ('COMP_WORDS=(claude-switch p); COMP_CWORD=1; _claude_proxy_complete_bash; '
              'echo "${COMPREPLY[*]}"; COMP_WORDS=(claude-switch p2); _claude_proxy_complete_bash; '
              'echo "${COMPREPLY[*]}"; complete -p claude-switch')
    result = run_in("bash", script, workspace.environ)
    assert result.stdout.splitlines() == ["p1 p2", "p2",
                                          "complete -F _claude_proxy_complete_bash claude-switch"]


@pytest.mark.skipif(not shutil.which("zsh"), reason="zsh is not installed")
def test_zsh_registers_its_completion_when_compinit_is_loaded(setup, tmp_path):
    workspace, _, _, _ = setup
    environ = {**workspace.environ, "HOME": str(tmp_path), "ZDOTDIR": str(tmp_path)}
    result = subprocess.run(
        ["zsh", "-f", "-c", f'autoload -Uz compinit && compinit -u -D && source "{SCRIPT}" && '
                            'print -r -- ${_comps[claude-switch]} && _claude_proxy_complete_zsh 2>/dev/null; true'],
        capture_output=True, text=True, env=environ, timeout=30)
    assert result.stdout.splitlines()[0] == "_claude_proxy_complete_zsh"


def test_a_missing_python_is_a_clear_one_line_error(setup):
    workspace, _, _, _ = setup
    environ = {**workspace.environ, "CLAUDE_PROXY_PYTHON": "/nonexistent/python3"}
    result = run_in("bash", 'claude-fb; echo "rc=$?"', environ)
    assert result.stdout == "rc=127\n"
    assert result.stderr.strip().splitlines() == [
        "claude-proxy: CLAUDE_PROXY_PYTHON is /nonexistent/python3, which is not a program; fix or unset it"]

    environ = {k: v for k, v in workspace.environ.items() if k != "CLAUDE_PROXY_PYTHON"}
    environ["PATH"] = "/nonexistent"
    result = subprocess.run([shutil.which("bash"), "--norc", "-c", f'source "{SCRIPT}"; claude-fb; echo "rc=$?"'],
                            capture_output=True, text=True, env=environ, timeout=30)
    assert result.stdout == "rc=127\n"
    assert "Python 3.10 or newer was not found" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def fake_pythons(folder, **versions):
    """Programs named like Pythons in ``folder``: ``python3="3.9"`` reports 3.9 and fails the
    version probe; ``python="real"`` runs this Python.  Each call is logged in ``folder/calls``."""
    folder.mkdir(exist_ok=True)
    log = folder / "calls"
    for name, version in versions.items():
        run = f'exec "{sys.executable}" "$@"' if version == "real" else f"echo {version}; exit 1"
        script = folder / name
        script.write_text(f"""#!/bin/sh
case "$*" in *version_info*) echo "{name} probed" >> "{log}" ;; *) echo "{name} $*" >> "{log}" ;; esac
{run}
""", encoding="utf-8")
        script.chmod(0o755)
    return log


def without_python_setting(environ, folder):
    """``environ`` without CLAUDE_PROXY_PYTHON, with ``folder`` first on PATH."""
    environ = {k: v for k, v in environ.items() if k != "CLAUDE_PROXY_PYTHON"}
    environ["PATH"] = f"{folder}{os.pathsep}{environ['PATH']}"
    return environ


@pytest.mark.parametrize("shell", SHELLS)
def test_an_old_python3_is_passed_over_for_a_new_python(setup, tmp_path, shell):
    workspace, _, _, _ = setup
    log = fake_pythons(tmp_path / "bin", python3="3.9", python="real")
    result = run_in(shell, 'claude-switch; echo "rc=$?"',
                    without_python_setting(workspace.environ, tmp_path / "bin"))
    assert result.stdout == "rc=2\n"
    assert result.stderr == "usage: claude-switch PROVIDER   (one of: p1 p2)\n"
    calls = log.read_text().splitlines()
    assert calls[:2] == ["python3 probed", "python probed"]
    assert all(call.startswith("python ") for call in calls[2:]) and calls[2:]  # proxy.py ran on python


@pytest.mark.parametrize("shell", SHELLS)
def test_no_new_enough_python_is_one_line_that_names_CLAUDE_PROXY_PYTHON(setup, tmp_path, shell):
    workspace, _, _, _ = setup
    fake_pythons(tmp_path / "bin", python3="3.9", python="2.7")
    result = run_in(shell, 'claude-fb; echo "rc=$?"', without_python_setting(workspace.environ, tmp_path / "bin"))
    assert result.stdout == "rc=127\n"
    assert result.stderr.splitlines() == [
        "claude-proxy: Python 3.10 or newer was not found (python3 is 3.9, python is 2.7); "
        "install it, or set CLAUDE_PROXY_PYTHON to its path"]

    environ = {**workspace.environ, "CLAUDE_PROXY_PYTHON": str(tmp_path / "bin" / "python3")}
    result = run_in(shell, 'claude-fb; echo "rc=$?"', environ)
    assert result.stdout == "rc=127\n"
    assert result.stderr.splitlines() == [  # a Python asked for by name is not passed over
        f"claude-proxy: CLAUDE_PROXY_PYTHON is {tmp_path / 'bin' / 'python3'}, which is Python 3.9; "
        "claude-proxy needs 3.10 or newer: fix or unset it"]
    assert workspace.record(setup[1]) is None


@pytest.mark.parametrize("shell", SHELLS)
def test_the_python_found_is_kept_until_path_or_CLAUDE_PROXY_PYTHON_changes(setup, tmp_path, shell):
    workspace, _, _, _ = setup
    log = fake_pythons(tmp_path / "bin", python3="real")
    script = f"""
echo "== same"; claude-status >/dev/null; claude-switch 2>/dev/null; claude-status >/dev/null
grep -c probed "{log}"
echo "== new PATH"; PATH="{tmp_path}:$PATH"; claude-status >/dev/null
grep -c probed "{log}"
echo "== setting"; CLAUDE_PROXY_PYTHON=/nonexistent/python3; claude-status; echo "rc=$?"
grep -c probed "{log}"
echo "== unset again"; unset CLAUDE_PROXY_PYTHON; claude-status >/dev/null
grep -c probed "{log}"
"""
    result = run_in(shell, script, without_python_setting(workspace.environ, tmp_path / "bin"))
    parts = sections(result.stdout)
    assert parts == {"same": "1", "new PATH": "2", "setting": "rc=127\n2", "unset again": "3"}, result.stderr
    assert "CLAUDE_PROXY_PYTHON is /nonexistent/python3, which is not a program" in result.stderr


def test_proxy_py_is_found_beside_the_script_from_any_directory(setup, tmp_path):
    workspace, _, _, _ = setup
    result = subprocess.run(["bash", "--norc", "-c", f'cd /tmp && source "{SCRIPT}" && cd / && claude-switch'],
                            capture_output=True, text=True, env=workspace.environ, timeout=30, cwd=tmp_path)
    assert "(one of: p1 p2)" in result.stderr


def test_the_readme_bash_commands_work_as_written(setup, tmp_path):
    workspace, config, _, _ = setup
    readme = ROOT.joinpath("README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", readme[readme.index("### bash and zsh"):], re.S).group(1)
    commands = [line for line in block.splitlines() if line.strip() != "claude"]  # Claude Code: not here
    home = tmp_path / "home"
    home.mkdir()
    (home / ".claude-proxy").symlink_to(ROOT)  # the clone the README assumes
    environ = {**workspace.environ, "HOME": str(home)}
    result = subprocess.run(["bash", "--norc", "--noprofile", "-c",
                             "\n".join([*commands, 'echo "URL=$ANTHROPIC_BASE_URL"'])],
                            capture_output=True, text=True, env=environ, timeout=60, cwd=str(tmp_path))
    url = f"http://127.0.0.1:{json.loads(config.read_text())['proxy_port']}"
    assert result.stdout.splitlines()[-1] == f"URL={url}", result.stdout + result.stderr

    new_session = subprocess.run(["bash", "-i", "-c", "type -t claude-fb claude-switch claude-status claude-reset"],
                                 capture_output=True, text=True, env=environ, timeout=30, stdin=subprocess.DEVNULL)
    assert new_session.stdout.split() == ["function"] * 4  # ~/.bashrc loads them in every new bash


# --- Claude Code itself, when installed ------------------------------------------------------

CLAUDE = os.environ.get("CLAUDE_CODE_BIN") or shutil.which("claude")


@pytest.mark.skipif(not CLAUDE, reason="Claude Code is not installed (set CLAUDE_CODE_BIN)")
def test_claude_code_works_in_a_session_set_up_by_claude_fb(setup, tmp_path):
    workspace, config, p1, _ = setup
    p1.default = Stream(message_events(text="hi from p1"))
    home = tmp_path / "home"
    home.mkdir()
    script = f"""
claude-fb 2>/dev/null || exit 10
HOME="{home}" XDG_CONFIG_HOME="{home}/.config" CLAUDE_CONFIG_DIR="{home}/.claude" \\
CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 DISABLE_AUTOUPDATER=1 CLAUDE_CODE_MAX_RETRIES=1 \\
API_TIMEOUT_MS=60000 timeout 120 "{CLAUDE}" -p "say hi" --output-format json </dev/null
echo "rc=$?"
claude-reset >/dev/null
"""
    result = run_in("bash", script, workspace.environ, timeout=180)
    output, _, code = result.stdout.rpartition("rc=")
    assert code.strip() == "0", result.stdout + result.stderr
    answer = json.loads(output)
    assert answer["is_error"] is False and "hi from p1" in answer["result"]
    assert any(r.path.startswith("/v1/messages") and r.headers.get("x-api-key") == "secret-p1"
               for r in p1.requests)
    assert workspace.record(config) is None


@pytest.mark.parametrize("shell", SHELLS)
def test_claude_fb_takes_a_strategy(setup, shell):
    workspace, config, _, _ = setup
    result = run_in(shell, 'claude-fb --strategy round_robin && echo "URL=$ANTHROPIC_BASE_URL"\n'
                           'claude-fb --strategy=fastest && echo "URL=$ANTHROPIC_BASE_URL"\n'
                           'claude-fb --strategy cheapest; echo "rc=$?"', workspace.environ)
    url = url_of(workspace.record(config))
    assert result.stdout.splitlines() == [f"URL={url}/strategy/round_robin", f"URL={url}/strategy/fastest",
                                          "rc=2"]
    assert "(strategy round_robin over p1, p2)" in result.stderr
    assert ("usage: claude-fb [--strategy NAME]   (this session goes through claude-proxy, with failover; "
            "NAME: fallback, round_robin, weighted, random, fastest)") in result.stderr


def test_the_strategy_list_is_proxy_pys():
    from claude_proxy.routing import STRATEGIES
    line = next(l for l in SCRIPT.read_text(encoding="utf-8").splitlines()
                if l.startswith("_claude_proxy_strategies="))
    assert tuple(line.split("=", 1)[1].strip('"').split()) == STRATEGIES


@pytest.mark.parametrize("shell", SHELLS)
def test_claude_proxy_runs_the_runtime_controls(setup, shell):
    workspace, config, _, _ = setup
    result = run_in(shell, 'claude-fb 2>/dev/null\nclaude-proxy disable p1 --for 10m\n'
                           'claude-proxy status | grep "p1  "\nclaude-proxy enable p1', workspace.environ)
    assert result.stdout.splitlines()[0] == ("p1: disabled for 10m 00s; requests go to the other providers "
                                             "(a restart forgets this)")
    assert "disabled by proxy.py disable for 9m 5" in result.stdout or "for 10m 00s more" in result.stdout
    assert result.stdout.splitlines()[-1] == "p1: enabled again"


@pytest.mark.parametrize("shell", SHELLS)
def test_claude_status_watch_runs_top(setup, shell):
    workspace, _, _, _ = setup
    script = ('echo "== down"; claude-status --watch; echo "rc=$?"\n'
              'claude-switch p2 2>/dev/null\n'
              'echo "== up"; claude-status --watch | cat; echo "rc=${PIPESTATUS[0]:-$pipestatus[1]}"\n'
              'echo "== once"; claude-status --watch --once; echo "rc=$?"\n'
              'claude-reset >/dev/null')
    assert_watch_sections(sections(run_in(shell, script, workspace.environ).stdout))


def assert_watch_sections(parts):
    """``claude-status --watch`` run by a shell's script: once with the proxy down ("down"),
    then up, its output piped ("up") and with ``--once`` ("once"), pinned to p2."""
    assert parts["down"].startswith("claude-proxy is not running (config: ")
    assert parts["down"].endswith(f"rc={errors.EXIT_NOT_RUNNING}")
    # Output that is not a terminal: proxy.py top's plain snapshot, with this session's mode.
    for name in ("up", "once"):
        assert "  this session: pinned to p2" in parts[name], parts[name]
        assert re.search(r"^  p1 +ready +0 +0 ", parts[name], re.M), parts[name]
        assert "IN FLIGHT (0)" in parts[name] and "\x1b" not in parts[name]
        assert parts[name].endswith("rc=0")


def test_bash_completes_claude_proxy_commands_and_provider_names(setup):
    workspace, _, _, _ = setup
    script = ('COMP_WORDS=(claude-proxy dis); COMP_CWORD=1; _claude_proxy_complete_control_bash; '
              'echo "${COMPREPLY[*]}"; COMP_WORDS=(claude-proxy disable p); COMP_CWORD=2; '
              '_claude_proxy_complete_control_bash; echo "${COMPREPLY[*]}"; '
              'COMP_WORDS=(claude-proxy usage p); _claude_proxy_complete_control_bash; echo "[${COMPREPLY[*]}]"')
    result = run_in("bash", script, workspace.environ)
    assert result.stdout.splitlines() == ["disable", "p1 p2", "[]"]
