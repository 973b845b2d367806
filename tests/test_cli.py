"""``python proxy.py`` as users run it: a real subprocess on 127.0.0.1.

Each test starts the real entry point with ``sys.executable`` (deprecations
are errors in the child too), a config in ``tmp_path`` and port 0; the port
it picked is read from its banner.  Nothing here waits a fixed time: every
wait is for an event (a banner line, an exit) with a generous deadline.
"""

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fakes import Reply, Stall, closed_port, error_json, eventually, request

from claude_proxy.config import CONFIG_ENV_VAR
from claude_proxy.http_server import SHUTDOWN_GRACE

ROOT = Path(__file__).resolve().parent.parent
PROXY = ROOT / "proxy.py"
DEADLINE = 30.0  # seconds; generous, for a busy 2-core machine
POSIX = os.name == "posix"
needs_posix = pytest.mark.skipif(not POSIX, reason="POSIX signals and file modes")


def child_env(**extra):
    """The test's environment without anything that would steer the proxy."""
    env = {k: v for k, v in os.environ.items()
           if k != CONFIG_ENV_VAR and not k.endswith("_API_KEY") and not k.startswith("CPX_")}
    env.update(extra)
    return env


def command(*args, script=PROXY):
    return [sys.executable, "-W", "error::DeprecationWarning", str(script), *args]


def run_once(*args, cwd, env=None, script=PROXY):
    """Run a command that is expected to exit by itself; returns CompletedProcess."""
    return subprocess.run(command(*args, script=script), cwd=cwd, env=env or child_env(),
                          capture_output=True, text=True, encoding="utf-8", errors="replace",
                          timeout=DEADLINE, check=False)


def write_config(folder, providers, **settings):
    path = Path(folder) / "config.json"
    path.write_text(json.dumps({"proxy_port": 0, "providers": providers, **settings}), encoding="utf-8")
    return path


def entry(name, url, **extra):
    return {"name": name, "base_url": url, "api_key_env": f"CPX_KEY_{name.upper()}", **extra}


def lines_of(text):
    return [line for line in text.splitlines() if line.strip()]


class Daemon:
    """``proxy.py`` running in the foreground as a child process."""

    def __init__(self, args, cwd, env, umask=-1, script=PROXY):
        kwargs = {"umask": umask} if POSIX else {}
        self.proc = subprocess.Popen(
            command(*args, script=script), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
            errors="replace", **kwargs)
        self._out, self._err = [], []
        self.url = None
        self._listening = threading.Event()
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stdout, self._out), daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, self._err), daemon=True)]
        for reader in self._readers:
            reader.start()

    def _read(self, stream, into):
        for line in stream:
            into.append(line)
            found = re.search(r"listening on (http://\S+)", line)
            if found and self.url is None:
                self.url = found.group(1)
                self._listening.set()
        self._listening.set()  # the stream ended: stop waiting

    @property
    def stdout(self):
        return "".join(self._out)

    @property
    def stderr(self):
        return "".join(self._err)

    def wait_listening(self):
        """Wait for the banner's URL, then for /health to answer: only then is the
        server loop running (and its signal handlers in place)."""
        self._listening.wait(DEADLINE)
        assert self.url, f"the proxy did not start (exit {self.proc.poll()}):\n{self.stderr}"
        status, _, _ = request(self.url, "GET", "/health", timeout=DEADLINE)
        assert status == 200
        return self.url

    def wait_line(self, predicate):
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            if any(predicate(line) for line in list(self._err)):
                return True
            time.sleep(0.02)
        return False

    def stop(self, signum=signal.SIGTERM):
        """Signal it (terminate it on Windows) and wait for its exit; returns the exit code."""
        if POSIX:
            self.proc.send_signal(signum)
        else:
            self.proc.terminate()
        code = self.proc.wait(DEADLINE)
        self._close_pipes()
        return code

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(DEADLINE)
        self._close_pipes()

    def _close_pipes(self):
        """Once the child has exited: let the readers reach the end, then close the pipes."""
        for reader in self._readers:
            reader.join(DEADLINE)
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()


@pytest.fixture
def daemon():
    """Start ``proxy.py`` children; any still running at the end are killed."""
    started = []

    def start(*args, cwd, env=None, umask=-1, script=PROXY):
        child = Daemon(args, cwd, env or child_env(), umask, script)
        started.append(child)
        return child

    yield start
    for child in started:
        child.kill()


@pytest.fixture
def app_copy(tmp_path):
    """proxy.py and its package copied to tmp_path/app, so that "config.json
    beside proxy.py" is a file this test controls."""
    app = tmp_path / "app"
    app.mkdir()
    shutil.copy2(PROXY, app / "proxy.py")
    shutil.copytree(ROOT / "claude_proxy", app / "claude_proxy",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return app


def token_of(state_dir):
    return (Path(state_dir) / "proxy.token").read_text(encoding="utf-8").strip()


# --- start-up ---------------------------------------------------------------------------


def test_banner_lists_providers_in_order_with_key_present_or_missing_and_never_a_key(tmp_path, daemon):
    config = write_config(tmp_path, [entry("first", "http://127.0.0.1:9/a"),
                                     entry("second", "http://127.0.0.1:9/b"),
                                     entry("third", "http://127.0.0.1:9/c")])
    (tmp_path / ".env").write_text("CPX_KEY_SECOND=fake-dotenv-secret-2222\n", encoding="utf-8")
    child = daemon("--config", str(config), cwd=tmp_path,
                   env=child_env(CPX_KEY_FIRST="fake-environ-secret-1111"))

    url = child.wait_listening()
    assert child.wait_line(lambda line: "third" in line and "CPX_KEY_THIRD" in line)
    child.stop()

    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url) and not url.endswith(":0")
    listed = [line for line in lines_of(child.stderr) if re.search(r"\b(first|second|third)\b", line)
              and "127.0.0.1:9" in line]
    assert [re.search(r"\b(first|second|third)\b", line).group(1) for line in listed] == \
        ["first", "second", "third"]
    first, second, third = (line.lower() for line in listed)
    assert "no key" not in first and "key" in first
    assert "no key" not in second and "key" in second
    assert "no key" in third and "cpx_key_third" in third
    output = child.stdout + child.stderr
    assert "fake-environ-secret-1111" not in output
    assert "fake-dotenv-secret-2222" not in output


def test_a_fresh_clone_without_config_starts_on_the_defaults_and_says_what_is_missing(app_copy, daemon):
    elsewhere = app_copy.parent / "cwd"
    elsewhere.mkdir()
    child = daemon("--port", "0", cwd=elsewhere, script=app_copy / "proxy.py")

    child.wait_listening()
    assert child.wait_line(lambda line: "MOONSHOT_API_KEY" in line)
    child.stop()

    assert "minimax" in child.stderr and "moonshot" in child.stderr
    assert "MINIMAX_API_KEY" in child.stderr
    assert "config.example.json" in child.stderr
    assert "Traceback" not in child.stderr


def test_a_port_given_to_serve_stays_through_a_reload(tmp_path, daemon):
    config = write_config(tmp_path, [entry("p1", "http://127.0.0.1:9")], proxy_port=1)
    child = daemon("--config", str(config), "serve", "--port", "0", cwd=tmp_path)
    child.wait_listening()
    done = run_once("--config", str(config), "reload", cwd=tmp_path)
    child.stop()
    assert done.stdout.startswith("reloaded: nothing changed since "), done.stderr


def test_config_json_beside_proxy_py_is_found_from_any_working_directory(app_copy, daemon):
    write_config(app_copy, [entry("besideprovider", "http://127.0.0.1:9")])
    elsewhere = app_copy.parent / "cwd"
    elsewhere.mkdir()
    write_config(elsewhere, [entry("cwdprovider", "http://127.0.0.1:9")])
    child = daemon(cwd=elsewhere, script=app_copy / "proxy.py")

    child.wait_listening()
    assert (app_copy / "proxy.pid").is_file()
    child.stop()

    assert "besideprovider" in child.stderr
    assert "cwdprovider" not in child.stderr


def test_the_environment_variable_names_the_config(tmp_path, app_copy):
    write_config(app_copy, [entry("p", "http://127.0.0.1:9")], _x=1, wrong_beside=1)
    named = tmp_path / "named.json"
    named.write_text('{"providers": [], "wrong_named": 1}', encoding="utf-8")

    result = run_once(cwd=tmp_path, env=child_env(**{CONFIG_ENV_VAR: str(named)}),
                      script=app_copy / "proxy.py")

    assert result.returncode == 2
    assert "wrong_named" in result.stderr and str(named) in result.stderr
    assert "wrong_beside" not in result.stderr


def test_the_config_option_wins_over_the_environment_variable(tmp_path):
    by_option = tmp_path / "option.json"
    by_option.write_text('{"wrong_option": 1}', encoding="utf-8")
    by_env = tmp_path / "env.json"
    by_env.write_text('{"wrong_env": 1}', encoding="utf-8")

    result = run_once("--config", str(by_option), cwd=tmp_path,
                      env=child_env(**{CONFIG_ENV_VAR: str(by_env)}))

    assert result.returncode == 2
    assert "wrong_option" in result.stderr
    assert "wrong_env" not in result.stderr


def test_the_config_option_before_the_command_is_honoured(tmp_path, app_copy):
    """``proxy.py --config X serve`` (as ``--help`` shows it) must use X."""
    (app_copy / "config.json").write_text('{"wrong_beside": 1}', encoding="utf-8")
    named = tmp_path / "named.json"
    named.write_text('{"wrong_named": 1}', encoding="utf-8")

    result = run_once("--config", str(named), "serve", cwd=tmp_path, script=app_copy / "proxy.py")

    assert result.returncode == 2
    assert "wrong_named" in result.stderr
    assert "wrong_beside" not in result.stderr


# --- failing to start, cleanly -------------------------------------------------------------


def test_bad_config_exits_2_with_one_line_per_problem_and_no_traceback(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"proxy_port": 0, "colldown_minutes": 5, "providers": [
        {"name": "a", "api_key_env": "CPX_KEY_A"},
        {"name": "b", "base_url": "http://127.0.0.1:9", "api_key_env": "CPX_KEY_B", "auth_header": "not a header"},
    ]}), encoding="utf-8")

    result = run_once("--config", str(config), cwd=tmp_path)

    assert result.returncode == 2
    problems = lines_of(result.stderr)
    assert len(problems) == 3, result.stderr
    assert all(str(config) in line for line in problems)
    assert any('"colldown_minutes"' in line for line in problems)
    assert any("base_url" in line for line in problems)
    assert any("auth_header" in line for line in problems)
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "proxy.pid").exists()


def test_invalid_json_exits_2_naming_file_line_and_column(tmp_path):
    config = tmp_path / "config.json"
    config.write_text('{\n  "proxy_port": 0,\n  "providers": [}\n}\n', encoding="utf-8")

    result = run_once("--config", str(config), cwd=tmp_path)

    assert result.returncode == 2
    [problem] = lines_of(result.stderr)
    assert str(config) in problem and "line 3" in problem and "column 17" in problem


def test_an_explicitly_named_missing_config_exits_2_naming_it(tmp_path):
    missing = tmp_path / "typo.json"

    result = run_once("--config", str(missing), cwd=tmp_path)

    assert result.returncode == 2
    [problem] = lines_of(result.stderr)
    assert str(missing) in problem
    assert "Traceback" not in result.stderr


def test_port_already_in_use_exits_1_with_one_line_and_no_traceback(tmp_path):
    config = write_config(tmp_path, [entry("a", "http://127.0.0.1:9")])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]

        result = run_once("--config", str(config), "--port", str(port), cwd=tmp_path,
                          env=child_env(CPX_KEY_A="sk-a"))

    assert result.returncode == 1
    [problem] = lines_of(result.stderr)
    assert str(port) in problem and "in use" in problem
    assert "Traceback" not in result.stderr + result.stdout


def test_a_command_line_host_cannot_bypass_the_token_rule(tmp_path):
    """``require_token: false`` is refused off loopback; ``--host`` must not sneak past it.

    192.0.2.1 (TEST-NET-1) is on no interface here, so even a proxy with the
    bug cannot really listen there; it would fail to bind instead of refusing.
    """
    config = write_config(tmp_path, [entry("a", "http://127.0.0.1:9")], require_token=False)

    result = run_once("--config", str(config), "serve", "--host", "192.0.2.1", "--port", "0",
                      cwd=tmp_path, env=child_env(CPX_KEY_A="sk-a"))

    assert result.returncode in (1, 2), result.stderr
    assert "require_token" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_state_dir_that_is_a_file_stops_the_foreground_run_with_one_line(tmp_path):
    (tmp_path / "run").write_text("not a folder", encoding="utf-8")
    config = write_config(tmp_path, [entry("a", "http://127.0.0.1:9")], state_dir="run")

    result = run_once("--config", str(config), "serve", cwd=tmp_path, env=child_env(CPX_KEY_A="sk-a"))

    assert result.returncode == 1, result.stderr
    [problem] = lines_of(result.stderr)
    assert f"the state directory {tmp_path / 'run'} is a file, not a folder" in problem
    assert '"state_dir"' in problem and "File exists" not in problem
    assert (tmp_path / "run").read_text(encoding="utf-8") == "not a folder"


# --- running -----------------------------------------------------------------------------


def test_a_provider_without_its_key_is_reported_and_skipped(tmp_path, daemon, providers):
    keyless, served = providers(), providers()
    config = write_config(tmp_path, [entry("keyless", keyless.url), entry("served", served.url)])
    child = daemon("--config", str(config), cwd=tmp_path, env=child_env(CPX_KEY_SERVED="sk-served"))
    url = child.wait_listening()

    status, _, body = request(url, body={"model": "m", "max_tokens": 1, "messages": []},
                              headers={"x-api-key": token_of(tmp_path)})
    child.stop()

    assert status == 200, body
    assert json.loads(body)["content"][0]["text"] == "Hello from the fake provider"
    assert keyless.requests == []
    assert len(served.requests) == 1
    warned = [line for line in lines_of(child.stderr) if "keyless" in line and "CPX_KEY_KEYLESS" in line]
    assert len(warned) == 1, child.stderr  # the banner's line, not a log line repeating it
    assert "CPX_KEY_KEYLESS is not set" in (tmp_path / "proxy.log").read_text(encoding="utf-8")
    assert "Traceback" not in child.stderr


@needs_posix
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_it_with_exit_0_and_removes_the_pid_file(tmp_path, daemon, signum):
    config = write_config(tmp_path, [entry("a", "http://127.0.0.1:9")])
    child = daemon("--config", str(config), cwd=tmp_path, env=child_env(CPX_KEY_A="sk-a"))
    url = child.wait_listening()
    record = json.loads((tmp_path / "proxy.pid").read_text(encoding="utf-8"))
    assert record["pid"] == child.proc.pid
    assert url.endswith(f":{record['port']}")

    code = child.stop(signum)

    assert code == 0
    assert not (tmp_path / "proxy.pid").exists()
    assert "Traceback" not in child.stderr


def in_flight(url, token):
    """Start a request in the background; ``.result()`` is its status, or the error it hit."""
    from concurrent.futures import ThreadPoolExecutor
    pool = ThreadPoolExecutor(1)

    def send():
        try:
            return request(url, body={"model": "m", "messages": []}, headers={"x-api-key": token},
                           timeout=DEADLINE)[0]
        except OSError as exc:
            return exc

    future = pool.submit(send)
    pool.shutdown(wait=False)
    return future


def test_shutdown_lets_a_request_in_flight_finish(tmp_path, daemon, providers):
    slow = providers(Reply(200, delay=1.0))
    config = write_config(tmp_path, [entry("a", slow.url)])
    child = daemon("--config", str(config), cwd=tmp_path, env=child_env(CPX_KEY_A="sk-a"))
    url = child.wait_listening()
    token = token_of(tmp_path)
    answer = in_flight(url, token)
    assert eventually(lambda: slow.requests, timeout=DEADLINE)

    assert request(url, "POST", "/shutdown", headers={"x-api-key": token})[0] == 200

    assert answer.result(DEADLINE) == 200
    assert child.proc.wait(DEADLINE) == 0


@pytest.mark.parametrize("how", ["grace=0", "second signal"])
def test_shutdown_without_grace_does_not_wait_for_requests_in_flight(tmp_path, daemon, providers, how):
    if how == "second signal" and not POSIX:
        pytest.skip("POSIX signals")
    stalled = providers(Stall(60))
    config = write_config(tmp_path, [entry("a", stalled.url)])
    child = daemon("--config", str(config), cwd=tmp_path, env=child_env(CPX_KEY_A="sk-a"))
    url = child.wait_listening()
    token = token_of(tmp_path)
    answer = in_flight(url, token)
    assert stalled.stalled.wait(DEADLINE)

    if how == "grace=0":
        assert request(url, "POST", "/shutdown?grace=0", headers={"x-api-key": token})[0] == 200
    else:
        child.proc.send_signal(signal.SIGTERM)
        assert child.wait_line(lambda line: "waiting up to 10s for 1 request(s) in flight" in line)
        assert child.proc.poll() is None  # the first signal waits for the request
        child.proc.send_signal(signal.SIGTERM)

    assert child.proc.wait(SHUTDOWN_GRACE / 2) == 0  # well before the default grace would end
    assert "still in flight" in child.stderr
    assert answer.result(DEADLINE) == 503  # the stalled request was ended with a 503 to retry, not left


@needs_posix
def test_the_token_file_is_owner_only_even_with_a_permissive_umask(tmp_path, daemon):
    config = write_config(tmp_path, [entry("a", "http://127.0.0.1:9")])
    child = daemon("--config", str(config), cwd=tmp_path, env=child_env(CPX_KEY_A="sk-a"), umask=0)
    url = child.wait_listening()

    mode = (tmp_path / "proxy.token").stat().st_mode & 0o777
    status, _, _ = request(url, "GET", "/status", headers={"x-api-key": token_of(tmp_path)})
    child.stop()

    assert mode == 0o600
    assert status == 200


def test_no_secret_reaches_the_log_status_or_console_even_when_requests_fail(tmp_path, daemon, providers):
    overloaded = providers(Reply(529, error_json(529, "overloaded_error", "Overloaded"),
                                 headers={"retry-after": "1"}))
    limited = providers(Reply(429, error_json(429, "rate_limit_error", "Slow down")))
    answering = providers()
    config = write_config(tmp_path, [
        entry("overloaded", overloaded.url), entry("refusing", f"http://127.0.0.1:{closed_port()}"),
        entry("answering", answering.url), entry("limited", limited.url)])
    keys = {"CPX_KEY_OVERLOADED": "fake-prov-secret-aaaa", "CPX_KEY_REFUSING": "fake-prov-secret-bbbb",
            "CPX_KEY_ANSWERING": "fake-prov-secret-cccc", "CPX_KEY_LIMITED": "fake-prov-secret-dddd"}
    child = daemon("--config", str(config), cwd=tmp_path, env=child_env(**keys))
    url = child.wait_listening()
    token = token_of(tmp_path)
    client_junk = "fake-client-credential-zzzz"
    body = {"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}

    answers = [
        request(url, body=body, headers={"x-api-key": token, "authorization": f"Bearer {client_junk}"}),
        request(url, body=body, headers={"authorization": f"Bearer {token}", "x-api-key": client_junk}),
        request(url + "/provider/limited", body=body, headers={"x-api-key": token}),
        request(url + "/provider/refusing", body=body, headers={"x-api-key": token}),
        request(url, body=body, headers={"x-api-key": client_junk}),
        request(url, body=body, headers={"authorization": f"Bearer {client_junk}"}),
    ]
    status_answer = request(url, "GET", "/status", headers={"x-api-key": token})
    child.stop()

    assert [status for status, _, _ in answers] == [200, 200, 429, 502, 401, 401]
    assert status_answer[0] == 200
    status_text = status_answer[2].decode()
    assert any(p["last_error"] for p in json.loads(status_text)["providers"])
    log_text = (tmp_path / "proxy.log").read_text(encoding="utf-8")
    assert "fallback" in log_text and "refusing" in log_text
    for secret in [*keys.values(), token, client_junk]:
        assert secret not in log_text, f"{secret} is in proxy.log"
        assert secret not in status_text, f"{secret} is in /status"
        assert secret not in child.stderr + child.stdout, f"{secret} is on the console"
        for _, _, answer_body in answers[2:]:
            assert secret.encode() not in answer_body


def test_a_provider_echoing_its_key_in_an_error_does_not_put_it_in_log_or_status(tmp_path, daemon,
                                                                                   providers):
    """Some providers quote the credential they rejected; the proxy passes the
    body to the client untouched but must not copy the key into its log or status."""
    key = "fake-prov-echoed-secret-eeee"
    echoing = providers(Reply(503, error_json(503, "api_error", f"upstream rejected key {key}")))
    answering = providers()
    config = write_config(tmp_path, [entry("echoing", echoing.url), entry("answering", answering.url)])
    child = daemon("--config", str(config), cwd=tmp_path,
                   env=child_env(CPX_KEY_ECHOING=key, CPX_KEY_ANSWERING="sk-other"))
    url = child.wait_listening()
    token = token_of(tmp_path)

    status, _, _ = request(url, body={"model": "m", "max_tokens": 1, "messages": []},
                           headers={"x-api-key": token})
    status_text = request(url, "GET", "/status", headers={"x-api-key": token})[2].decode()
    child.stop()

    assert status == 200
    assert "503" in status_text
    assert key not in status_text
    assert key not in (tmp_path / "proxy.log").read_text(encoding="utf-8")
    assert key not in child.stderr


@needs_posix
def test_a_stop_signal_the_moment_the_pid_file_exists_is_handled(tmp_path):
    """``proxy.py stop`` signals the pid in the pid file, so the signal handler
    must be in place before that file appears.

    Made deterministic: the child's stderr is not read until after the signal,
    and its start-up output (a warning and a banner line per key-less
    provider) is far beyond a pipe's capacity, so the child is held inside its
    start-up, just after writing the pid file, when the signal arrives.
    """
    filler = [{"name": f"k{n}", "base_url": "http://127.0.0.1:9", "api_key_env": f"CPX_{'X' * 2000}_{n}"}
              for n in range(600)]
    config = write_config(tmp_path, filler)
    pid_file = tmp_path / "proxy.pid"
    child = subprocess.Popen(command("--config", str(config)), cwd=tmp_path, env=child_env(),
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + DEADLINE
        while not pid_file.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pid_file.exists(), "no pid file appeared"

        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=DEADLINE)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()

    assert child.returncode == 0
    assert not pid_file.exists()
    assert b"Traceback" not in err


# --- the log file --------------------------------------------------------------------------


def test_under_load_log_lines_go_out_together(tmp_path):
    """A line right after a write waits for the batch writer (one system call for
    many requests); an idle log writes at once; flush and close lose nothing."""
    from claude_proxy.logfile import LogFile
    path = tmp_path / "proxy.log"
    handler = LogFile(path, max_bytes=10_000, backups=1, batch=30.0)
    try:
        handler.write(b"first\n")
        assert path.read_bytes() == b"first\n"  # nothing written lately: at once
        handler.write(b"second\n")
        handler.write(b"third\n")
        assert path.read_bytes() == b"first\n"  # within the batch time: they wait
        handler.flush()
        assert path.read_bytes() == b"first\nsecond\nthird\n"
        handler.write(b"fourth\n")
    finally:
        handler.close()
    assert path.read_bytes() == b"first\nsecond\nthird\nfourth\n"


def test_the_batch_writer_writes_waiting_lines_by_itself(tmp_path):
    from claude_proxy.logfile import LogFile
    path = tmp_path / "proxy.log"
    handler = LogFile(path, max_bytes=10_000, backups=1, batch=0.05)
    try:
        for number in range(50):
            handler.write(b"line %d\n" % number)
        assert eventually(lambda: path.read_bytes().count(b"\n") == 50, timeout=5)
        assert path.read_bytes() == b"".join(b"line %d\n" % n for n in range(50))
    finally:
        handler.close()


def test_the_log_rotates_by_size_keeping_every_line_in_order(tmp_path):
    from claude_proxy.logfile import LogFile
    path = tmp_path / "proxy.log"
    handler = LogFile(path, max_bytes=200, backups=3)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("test-log-rotation")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        for number in range(22):
            logger.warning("line %02d héllo %s", number, "x" * 20)  # 36 bytes in UTF-8: 5 per file
    finally:
        logger.removeHandler(handler)
        handler.close()

    files = [path.with_name(f"proxy.log.{n}") for n in (3, 2, 1)] + [path]
    assert all(f.stat().st_size <= 200 for f in files)
    assert not path.with_name("proxy.log.4").exists()  # three backups, the oldest dropped
    lines = "".join(f.read_text(encoding="utf-8") for f in files).splitlines()
    assert lines == [f"line {n:02d} héllo {'x' * 20}" for n in range(5, 22)]  # the first file dropped


def test_the_log_appends_to_what_an_earlier_run_wrote(tmp_path):
    from claude_proxy.logfile import LogFile
    path = tmp_path / "proxy.log"
    path.write_bytes(b"x" * 195 + b"\n")
    handler = LogFile(path, max_bytes=200, backups=1)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.handle(logging.makeLogRecord({"msg": "new run", "levelno": logging.INFO}))
    handler.close()
    assert path.read_text(encoding="utf-8") == "new run\n"  # the earlier 196 bytes counted: rotated
    assert path.with_name("proxy.log.1").read_bytes() == b"x" * 195 + b"\n"


def log_line(handler, text):
    return handler.handle(logging.makeLogRecord({"msg": text, "levelno": logging.INFO}))


def test_the_log_without_backups_starts_over_and_a_closed_log_drops_lines_quietly(tmp_path, capsys):
    from claude_proxy.logfile import LogFile
    path = tmp_path / "proxy.log"
    handler = LogFile(path, max_bytes=30, backups=0)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for text in ("first line of twenty", "second line of twenty"):
        log_line(handler, text)
    handler.close()
    assert path.read_text(encoding="utf-8") == "second line of twenty\n"
    assert list(tmp_path.iterdir()) == [path]

    assert log_line(handler, "after close") is False  # a request thread that outlived the stop
    assert capsys.readouterr().err == ""


def test_the_log_keeps_writing_when_it_cannot_be_rotated(tmp_path, monkeypatch):
    """On Windows another program holding proxy.log open makes the rename fail."""
    from claude_proxy import logfile
    path = tmp_path / "proxy.log"
    handler = logfile.LogFile(path, max_bytes=30, backups=2)
    handler.setFormatter(logging.Formatter("%(message)s"))

    def refuse(*args):
        raise PermissionError("in use by another process")

    monkeypatch.setattr(logfile.os, "replace", refuse)
    for number in range(4):
        log_line(handler, f"line {number} of twenty bytes")
    handler.close()

    assert path.read_text(encoding="utf-8").splitlines() == [f"line {n} of twenty bytes" for n in range(4)]


def test_log_lines_read_as_the_standard_formatter_writes_them_across_seconds():
    """The formatter makes each second's time text once; every line must still be
    what ``logging.Formatter`` makes of it, also when the second changes."""
    from claude_proxy.logfile import LineFormatter
    cases = [(LineFormatter(), logging.Formatter("%(asctime)s %(levelname)s %(message)s")),
             (LineFormatter("%H:%M:%S", level=False), logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))]
    for ours, standard in cases:
        for created in (1700000000.001, 1700000000.999, 1700000001.0, 1700000001.5, 1700000000.25, 1700003600.75):
            record = logging.makeLogRecord({"msg": "GET %s -> %s", "args": ("/v1/messages", 200),
                                            "levelno": logging.WARNING, "levelname": "WARNING",
                                            "created": created, "msecs": (created % 1) * 1000})
            assert ours.format(record) == standard.format(record)
        try:
            raise ValueError("boom")
        except ValueError:
            record = logging.makeLogRecord({"msg": "failed", "exc_info": sys.exc_info(), "levelname": "ERROR"})
        assert ours.format(record) == standard.format(record)


def test_after_setup_log_records_skip_the_caller_lookup_and_thread_fields(tmp_path):
    from claude_proxy.logfile import setup_logging
    from claude_proxy.state import StatePaths
    setup_logging(StatePaths(tmp_path), quiet=True)
    seen = []
    logger = logging.getLogger("claude_proxy")
    logger.addFilter(lambda record: seen.append(record) or True)
    try:
        logger.info("a request line %s", 1)
    finally:
        logger.filters.clear()
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
    record, = seen
    assert (record.funcName, record.threadName, record.process) == ("(unknown function)", None, None)
    assert (tmp_path / "proxy.log").read_text(encoding="utf-8").endswith(" INFO a request line 1\n")


def test_an_unknown_command_is_named_with_the_ones_there_are(tmp_path):
    result = run_once("frobnicate", cwd=tmp_path)

    assert result.returncode == 2
    assert "unknown command 'frobnicate' (commands: serve, start, stop, release, status, top, env, providers, disable, enable, cool, uncool, reload, check, validate, usage, dashboard)" \
        in result.stderr
    assert "Traceback" not in result.stderr
