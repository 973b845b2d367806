"""``proxy.py start|stop`` and the daemon's lifecycle, against real processes.

What status, env, providers and check print is in test_daemon_output.py.

Each test runs proxy.py as a child process with its own config and state
directory in tmp_path, on a free port of 127.0.0.1; every daemon started is
stopped at the end (daemon_support.workspace).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

from daemon_support import (  # noqa: F401  (fake, workspace: fixtures)
    PROXY, assert_one_line_error, fake, health, url_of, wait_until, workspace,
)
from fakes import Stream, closed_port, request

from claude_proxy import errors, process
from claude_proxy.state import write_pid_file

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX sessions and signals")


# --- start / stop / status ----------------------------------------------------------------


def test_start_is_idempotent_and_stop_too(workspace, fake):
    config = workspace.config([("p1", fake().url)])
    workspace.keys(KEY_P1="secret-p1")

    started = workspace.run("start", config=config)
    assert started.returncode == 0, started.stderr
    record = workspace.record(config)
    assert f"started on {url_of(record)} (pid {record['pid']})" in started.stdout
    assert health(url_of(record))["pid"] == record["pid"]

    again = workspace.run("start", config=config)
    assert again.returncode == 0
    assert f"already running on {url_of(record)} (pid {record['pid']})" in again.stdout
    assert workspace.record(config)["pid"] == record["pid"]

    stopped = workspace.run("stop", config=config)
    assert stopped.returncode == 0, stopped.stderr
    assert f"stopped (pid {record['pid']})" in stopped.stdout
    assert workspace.record(config) is None
    assert not process.is_alive(record["pid"])
    assert health(url_of(record)) is None

    again = workspace.run("stop", config=config)
    assert again.returncode == 0
    assert "not running" in again.stdout


def test_status_tells_running_from_not_running(workspace, fake):
    config = workspace.config([("p1", fake().url)])
    workspace.keys(KEY_P1="secret-p1")
    stopped = workspace.run("status", config=config)
    assert stopped.returncode == errors.EXIT_NOT_RUNNING
    assert "not running" in stopped.stdout
    as_json = json.loads(workspace.run("status", "--json", config=config).stdout)
    assert as_json["running"] is False

    workspace.run("start", config=config)
    running = workspace.run("status", config=config)
    assert running.returncode == 0
    record = workspace.record(config)
    assert f"is running (pid {record['pid']}" in running.stdout
    assert url_of(record) in running.stdout
    assert str(workspace.state(config).log) in running.stdout
    as_json = json.loads(workspace.run("status", "--json", config=config).stdout)
    assert as_json["running"] is True
    assert as_json["pid"] == record["pid"]
    assert [p["name"] for p in as_json["providers"]] == ["p1"]


@posix_only
def test_the_daemon_outlives_the_terminal_that_started_it(workspace, fake):
    config = workspace.config([("p1", fake().url)])
    workspace.keys(KEY_P1="secret-p1")
    # A "terminal": a shell in a session of its own that starts the proxy, then waits.
    terminal = subprocess.Popen(
        ["bash", "-c", f'"$0" "{PROXY}" start --quiet --config "{config}" && echo up && exec sleep 60',
         sys.executable],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=workspace.environ, start_new_session=True)
    try:
        assert terminal.stdout.readline() == b"up\n"
        record = workspace.record(config)
        pid = record["pid"]
        assert os.getsid(pid) == pid != os.getsid(terminal.pid)  # its own session, no terminal
        if os.path.exists(f"/proc/{pid}/fd/0"):
            assert os.readlink(f"/proc/{pid}/fd/0") == os.devnull
        os.killpg(terminal.pid, signal.SIGHUP)  # the terminal closes
        terminal.wait(10)
    finally:
        if terminal.poll() is None:
            terminal.kill()
            terminal.wait(10)
        terminal.stdout.close()
        terminal.stderr.close()
    assert health(url_of(record))["pid"] == pid
    assert workspace.run("status", config=config).returncode == 0


def test_two_configs_run_side_by_side(workspace, fake, tmp_path):
    first = workspace.config([("p1", fake().url)], folder=tmp_path / "one")
    second = workspace.config([("p2", fake().url)], folder=tmp_path / "two")
    workspace.keys(KEY_P1="secret-p1", KEY_P2="secret-p2")
    assert workspace.run("start", config=first).returncode == 0
    assert workspace.run("start", env={"CLAUDE_PROXY_CONFIG": str(second)}).returncode == 0
    one, two = workspace.record(first), workspace.record(second)
    assert one["pid"] != two["pid"] and one["port"] != two["port"]
    providers = workspace.run("providers", env={"CLAUDE_PROXY_CONFIG": str(second)})
    assert providers.stdout == "p2\n"
    assert workspace.run("stop", config=first).returncode == 0
    assert health(url_of(two))["pid"] == two["pid"]


def test_a_second_config_sharing_the_state_directory_is_refused(workspace, fake):
    first = workspace.config([("p1", fake().url)])
    second = workspace.config([("p1", fake().url)], name="other.json")
    workspace.keys(KEY_P1="secret-p1")
    assert workspace.run("start", config=first).returncode == 0
    refused = workspace.run("start", config=second)
    assert_one_line_error(refused)
    assert "uses the state directory" in refused.stderr and "state_dir" in refused.stderr


# --- stale pid files ----------------------------------------------------------------------


@pytest.fixture
def bystander():
    """An unrelated live process whose pid a stale pid file may name."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield child
    child.kill()
    child.wait(10)


def fake_record(path, pid, identity, port):
    path.write_text(json.dumps({"pid": pid, "identity": identity, "host": "127.0.0.1", "port": port,
                                "config": "elsewhere", "started": 0}), encoding="utf-8")


def test_a_pid_file_of_a_process_that_is_gone_is_cleaned_up(workspace, fake):
    config = workspace.config([("p1", fake().url)])
    workspace.keys(KEY_P1="secret-p1")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(10)
    fake_record(workspace.state(config).pid, gone.pid, "linux:old:1", closed_port())

    status = workspace.run("status", config=config)
    assert status.returncode == errors.EXIT_NOT_RUNNING
    assert "` removes the stale pid file" in status.stdout
    stopped = workspace.run("stop", config=config)
    assert stopped.returncode == 0
    assert "stale pid file" in stopped.stdout
    assert workspace.record(config) is None

    fake_record(workspace.state(config).pid, gone.pid, "linux:old:1", closed_port())
    started = workspace.run("start", config=config)
    assert started.returncode == 0, started.stderr
    assert "removed a stale pid file" in started.stdout
    assert workspace.record(config)["pid"] != gone.pid


def test_a_reused_pid_is_never_killed(workspace, fake, bystander):
    config = workspace.config([("p1", fake().url)])
    workspace.keys(KEY_P1="secret-p1")
    pid_file = workspace.state(config).pid
    # The pid file names a live process that is not the proxy (its pid was reused).
    fake_record(pid_file, bystander.pid, "not-its-identity", closed_port())

    stopped = workspace.run("stop", config=config)
    assert stopped.returncode == 0
    assert "stale pid file" in stopped.stdout
    assert not pid_file.exists()
    assert bystander.poll() is None

    fake_record(pid_file, bystander.pid, "not-its-identity", closed_port())
    started = workspace.run("start", config=config)
    assert started.returncode == 0, started.stderr
    assert bystander.poll() is None
    assert workspace.run("stop", config=config).returncode == 0
    assert bystander.poll() is None


def test_a_live_pid_that_cannot_be_verified_is_left_alone(workspace, fake, bystander):
    config = workspace.config([("p1", fake().url)])
    pid_file = workspace.state(config).pid
    fake_record(pid_file, bystander.pid, None, closed_port())  # a record without identity

    status = workspace.run("status", config=config)
    assert status.returncode == errors.EXIT_NOT_RUNNING
    assert "cannot be verified as the proxy" in status.stdout and str(pid_file) in status.stdout
    assert "removes the stale pid file" not in status.stdout  # stop would refuse: do not promise it

    stopped = workspace.run("stop", config=config)
    assert_one_line_error(stopped)
    assert "left alone" in stopped.stderr and str(pid_file) in stopped.stderr
    assert bystander.poll() is None


@pytest.fixture
def hung_daemon():
    """``hung_daemon(pid_file)``: a process that writes its own pid record, then serves nothing.

    With ``listening=True`` it holds the recorded port (connections are
    queued, never accepted nor read), as a hung proxy does; its port is
    ``child.port``.  Otherwise nothing listens on the recorded port.
    """
    made = []

    def make(pid_file, listening=False):
        child = subprocess.Popen([sys.executable, "-c", (
            "import socket, sys, time\n"
            f"sys.path.insert(0, {str(PROXY.parent)!r})\n"
            "from claude_proxy.state import write_pid_file\n"
            "sock = socket.socket()\n"
            "sock.bind(('127.0.0.1', 0))\n"
            f"port = sock.getsockname()[1] if {listening!r} else {closed_port()}\n"
            f"if {listening!r}: sock.listen(8)\n"
            f"write_pid_file({str(pid_file)!r}, host='127.0.0.1', port=port, config_path='x')\n"
            "print(port, flush=True)\n"
            "time.sleep(120)\n")], stdout=subprocess.PIPE, text=True)
        made.append(child)
        child.port = int(child.stdout.readline())
        return child

    yield make
    for child in made:
        if child.poll() is None:
            child.kill()
        child.wait(10)
        child.stdout.close()


def test_a_daemon_that_does_not_answer_is_ended_by_its_verified_pid(workspace, fake, hung_daemon):
    config = workspace.config([("p1", fake().url)])
    pid_file = workspace.state(config).pid
    hung = hung_daemon(pid_file)
    stopped = workspace.run("stop", config=config)
    assert stopped.returncode == 0, stopped.stderr
    assert "ended by its pid" in stopped.stdout
    assert hung.wait(10) != 0
    assert not pid_file.exists()


def test_start_refuses_a_recorded_daemon_that_is_alive_but_silent(workspace, fake, hung_daemon):
    config = workspace.config([("p1", fake().url)])
    hung = hung_daemon(workspace.state(config).pid)
    result = workspace.run("start", config=config)
    assert_one_line_error(result)
    assert f"(pid {hung.pid}) is running but does not answer" in result.stderr
    assert "proxy.py stop" in result.stderr
    assert hung.poll() is None


def test_status_of_a_daemon_that_holds_its_port_but_does_not_answer(workspace, fake, hung_daemon):
    config = workspace.config([("p1", fake().url)])
    hung = hung_daemon(workspace.state(config).pid, listening=True)
    url = f"http://127.0.0.1:{hung.port}"

    shown = workspace.run("status", config=config)
    assert shown.returncode == errors.EXIT_FAILURE
    first, *rest = shown.stdout.splitlines()
    assert first.startswith(f"claude-proxy is running (pid {hung.pid}) but does not answer on {url}")
    assert any(str(workspace.state(config).log) in line for line in rest), shown.stdout
    assert any("proxy.py stop" in line for line in rest), shown.stdout
    assert "not running" not in shown.stdout

    as_json = json.loads(workspace.run("status", "--json", config=config).stdout)
    assert as_json["running"] is False and as_json["state"] == "not answering"
    assert as_json["pid"] == hung.pid and as_json["url"] == url
    assert hung.poll() is None  # status only looks


def test_status_of_a_pid_file_without_a_port_shows_the_configs_address(workspace, fake, bystander):
    config = workspace.config([("p1", fake().url)])
    workspace.keys(KEY_P1="secret-p1")
    port = json.loads(config.read_text())["proxy_port"]
    pid_file = workspace.state(config).pid
    pid_file.write_text(json.dumps({"pid": bystander.pid, "identity": "not-its-identity"}), encoding="utf-8")
    stale = workspace.run("status", config=config)
    assert stale.returncode == errors.EXIT_NOT_RUNNING
    assert f"does not answer on http://127.0.0.1:{port}\n" in stale.stdout
    assert "None" not in stale.stdout

    assert workspace.run("start", config=config).returncode == 0
    record = workspace.record(config)
    del record["port"]
    pid_file.write_text(json.dumps(record), encoding="utf-8")
    running = workspace.run("status", config=config)
    assert running.returncode == 0, running.stdout
    assert f"url:      http://127.0.0.1:{port}\n" in running.stdout
    assert "None" not in running.stdout
    stopped = workspace.run("stop", config=config)
    assert stopped.stdout.strip() == f"claude-proxy stopped (pid {record['pid']})"


def test_env_warns_on_stderr_about_a_daemon_that_does_not_answer(workspace, fake, hung_daemon):
    config = workspace.config([("p1", fake().url)])
    hung = hung_daemon(workspace.state(config).pid, listening=True)
    result = workspace.run("env", "--shell", "bash", config=config)
    assert result.returncode == 0
    assert result.stdout.startswith("export ANTHROPIC_BASE_URL=")
    [warning] = result.stderr.splitlines()
    assert f"(pid {hung.pid}) is running but does not answer on http://127.0.0.1:{hung.port}" in warning
    assert "proxy.py stop" in warning


def test_write_pid_file_records_the_process_identity(tmp_path):
    record = write_pid_file(tmp_path / "proxy.pid", host="127.0.0.1", port=1, config_path="c")
    assert record["identity"] == process.identity(os.getpid())


# --- what start points out -------------------------------------------------------------


def test_start_warns_about_each_enabled_provider_without_its_key(workspace, fake, tmp_path):
    config = workspace.config([
        ("p1", fake().url), ("p2", fake().url),
        {"name": "off", "base_url": fake().url, "api_key_env": "KEY_OFF", "enabled": False}])
    workspace.keys(KEY_P1="secret-p1")
    started = workspace.run("start", config=config)
    assert started.returncode == 0, started.stderr
    assert started.stderr.splitlines() == [
        f"claude-proxy: warning: provider p2 has no key: set KEY_P2 in {tmp_path / '.env'} "
        "(or the environment); it is skipped"]
    assert "secret-p1" not in started.stdout + started.stderr


def test_start_without_any_usable_provider_says_so_and_still_starts(workspace, fake, tmp_path):
    provider = fake()
    config = workspace.config([("p1", provider.url), ("p2", provider.url)])
    started = workspace.run("start", config=config)
    assert started.returncode == 0, started.stderr
    lines = started.stderr.splitlines()
    assert len(lines) == 3, started.stderr
    assert "provider p1 has no key: set KEY_P1" in lines[0] and "provider p2" in lines[1]
    assert lines[2].startswith("claude-proxy: warning: no provider is usable: every request gets a 503")
    assert "proxy.py stop" in lines[2] and "proxy.py start" in lines[2]
    # Up all the same: every request is answered with a 503 that says what is missing.
    status, _, body = request(url_of(workspace.record(config)),
                              headers={"x-api-key": workspace.token(config),
                                       "content-type": "application/json"},
                              body={"model": "m", "max_tokens": 5, "messages": []})
    assert status == 503 and b"KEY_P1" in body
    assert provider.requests == []


def test_start_quiet_leaves_the_key_warnings_to_the_shell_commands_summary(workspace, fake):
    config = workspace.config([("p1", fake().url)])
    started = workspace.run("start", "--quiet", config=config)
    assert started.returncode == 0
    assert started.stdout == started.stderr == ""


# --- start-up failures -------------------------------------------------------------------


def test_a_port_taken_by_another_program_is_a_plain_error(workspace, fake):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        config = workspace.config([("p1", fake().url)], port=port)
        result = workspace.run("start", config=config)
    assert_one_line_error(result)
    assert f"port {port}" in result.stderr and "another program" in result.stderr
    assert "proxy_port" in result.stderr
    assert workspace.record(config) is None


def test_a_port_taken_by_another_claude_proxy_says_so(workspace, fake, tmp_path):
    first = workspace.config([("p1", fake().url)], folder=tmp_path / "one")
    port = json.loads(first.read_text())["proxy_port"]
    second = workspace.config([("p1", fake().url)], folder=tmp_path / "two", port=port)
    assert workspace.run("start", config=first).returncode == 0
    result = workspace.run("start", config=second)
    assert_one_line_error(result)
    assert "another claude-proxy" in result.stderr


@posix_only
def test_output_of_a_daemon_that_dies_during_start_up_is_shown(workspace, fake):
    # Bound but not listening: the quick check finds nobody there, then the
    # daemon itself fails to bind and exits, explaining why.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        config = workspace.config([("p1", fake().url)], port=port)
        result = workspace.run("start", config=config)
    assert result.returncode == 1
    assert "already in use" in result.stderr  # the daemon's own words
    assert "exited during start-up (exit code 1)" in result.stderr
    assert str(workspace.state(config).out) in result.stderr
    assert "Traceback" not in result.stderr
    assert workspace.record(config) is None


def test_a_daemon_that_does_not_answer_in_time_is_stopped(workspace, fake):
    config = workspace.config([("p1", fake().url)])
    result = workspace.run("start", "--timeout", "0", config=config)
    assert result.returncode == 1
    assert "did not answer within 0 seconds and was stopped" in result.stderr
    port = json.loads(config.read_text())["proxy_port"]
    assert wait_until(lambda: workspace.record(config) is None and health(f"http://127.0.0.1:{port}") is None,
                      timeout=5)


def test_the_foreground_run_says_when_the_daemon_already_runs(workspace, fake):
    config = workspace.config([("p1", fake().url)])
    workspace.keys(KEY_P1="secret-p1")
    assert workspace.run("start", config=config).returncode == 0
    record = workspace.record(config)

    result = workspace.run("serve", config=config, timeout=30)

    assert_one_line_error(result)
    assert result.stderr.startswith(f"claude-proxy: already running on {url_of(record)} "
                                    f"(pid {record['pid']})")  # said once, not "claude-proxy: claude-proxy"
    assert "stop --config" in result.stderr
    assert workspace.record(config) == record  # untouched


def test_a_state_dir_that_is_a_file_is_a_plain_error(workspace, fake, tmp_path):
    (tmp_path / "run").write_text("not a folder", encoding="utf-8")
    config = workspace.config([("p1", fake().url)], state_dir="run")
    result = workspace.run("start", config=config)
    assert_one_line_error(result)
    assert f"the state directory {tmp_path / 'run'} is a file, not a folder" in result.stderr
    assert '"state_dir"' in result.stderr


def test_config_problems_are_reported_before_anything_starts(workspace, tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{"proxy_port": 1, "providers": [{"name": "x"}]}', encoding="utf-8")
    result = workspace.run("start", config=config)
    assert result.returncode == 2
    assert "base_url" in result.stderr and "api_key_env" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "proxy.out").exists()


def test_stop_still_works_when_the_config_was_broken_meanwhile(workspace, fake):
    config = workspace.config([("p1", fake().url)])
    assert workspace.run("start", config=config).returncode == 0
    pid = workspace.record(config)["pid"]
    config.write_text("{ not json", encoding="utf-8")
    stopped = workspace.run("stop", config=config)
    assert stopped.returncode == 0
    assert "has problems" in stopped.stderr
    assert not process.is_alive(pid)


def test_two_starts_at_once_leave_one_daemon_and_both_succeed(workspace, fake):
    config = workspace.config([("p1", fake().url)])
    argv = [sys.executable, str(PROXY), "start", "--config", str(config)]
    starters = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=workspace.environ) for _ in range(2)]
    results = [(s.wait(60), *s.communicate()) for s in starters]
    for code, out, err in results:
        assert code == 0, err
    record = workspace.record(config)
    assert health(url_of(record))["pid"] == record["pid"]
    assert all(f"(pid {record['pid']})" in out for _, out, _ in results), results


def test_stop_lets_a_request_in_flight_finish(workspace, fake):
    provider = fake(Stream(delay=0.2))
    config = workspace.config([("p1", provider.url)])
    workspace.keys(KEY_P1="secret-p1")
    assert workspace.run("start", config=config).returncode == 0
    url = url_of(workspace.record(config))
    answer = {}

    def stream():
        answer["result"] = request(url, headers={"x-api-key": workspace.token(config),
                                                 "content-type": "application/json"},
                                   body={"model": "m", "max_tokens": 5, "messages": [], "stream": True},
                                   timeout=30)

    client = threading.Thread(target=stream)
    client.start()
    assert wait_until(lambda: provider.requests, timeout=10)
    stopped = workspace.run("stop", config=config)
    client.join(30)
    assert stopped.returncode == 0, stopped.stderr
    status, _, body = answer["result"]
    assert status == 200 and b"event: message_stop" in body
    assert workspace.record(config) is None


# --- shells that share the proxy ------------------------------------------------------------


def shell_stand_in():
    """A live process standing in for a user's shell session."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def test_release_stops_the_proxy_only_when_no_other_shell_uses_it(workspace, fake):
    config = workspace.config([("p1", fake().url)])
    workspace.keys(KEY_P1="secret-p1")
    first, second = shell_stand_in(), shell_stand_in()
    try:
        assert workspace.run("start", "--quiet", config=config).returncode == 0
        for shell in (first, second):
            registered = workspace.run("env", "--session", shell.pid, config=config)
            assert registered.returncode == 0, registered.stderr
        pid = workspace.record(config)["pid"]

        kept = workspace.run("release", "--session", first.pid, config=config)
        assert kept.returncode == 0, kept.stderr
        assert kept.stdout.strip() == (f"claude-proxy keeps running for 1 other shell session "
                                       f"(pid {second.pid}); `{sys.executable} {PROXY} stop --config "
                                       f"{config}` stops it for them too")
        assert health(url_of(workspace.record(config)))["pid"] == pid

        second.kill()  # that shell is closed without claude-reset: it no longer counts
        second.wait(10)
        stopped = workspace.run("release", "--session", first.pid, config=config)
        assert stopped.returncode == 0, stopped.stderr
        assert f"stopped (pid {pid})" in stopped.stdout
        assert workspace.record(config) is None
        assert list(workspace.state(config).sessions.glob("*")) == []  # the dead one was cleaned up
    finally:
        for shell in (first, second):
            shell.kill()
            shell.wait(10)


def test_release_with_keep_running_only_forgets_the_shell(workspace, fake):
    config = workspace.config([("p1", fake().url)])
    workspace.keys(KEY_P1="secret-p1")
    shell = shell_stand_in()
    try:
        workspace.run("start", "--quiet", config=config)
        workspace.run("env", "--session", shell.pid, config=config)
        assert (workspace.state(config).sessions / f"{shell.pid}.json").exists()
        kept = workspace.run("release", "--session", shell.pid, "--keep-running", config=config)
        assert kept.returncode == 0 and kept.stdout == ""
        assert not (workspace.state(config).sessions / f"{shell.pid}.json").exists()
        assert health(url_of(workspace.record(config))) is not None
    finally:
        shell.kill()
        shell.wait(10)


def test_a_reused_session_pid_does_not_count_as_a_live_shell(workspace, fake):
    config = workspace.config([("p1", fake().url)])
    workspace.keys(KEY_P1="secret-p1")
    bystander = shell_stand_in()  # alive, but not the shell that registered under its pid
    try:
        workspace.run("start", "--quiet", config=config)
        sessions = workspace.state(config).sessions
        sessions.mkdir()
        (sessions / f"{bystander.pid}.json").write_text(
            json.dumps({"pid": bystander.pid, "identity": "another process's identity"}), encoding="utf-8")
        stopped = workspace.run("release", "--session", os.getpid(), config=config)
        assert "stopped" in stopped.stdout, stopped.stdout
    finally:
        bystander.kill()
        bystander.wait(10)
