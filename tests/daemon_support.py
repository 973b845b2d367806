"""Helpers for the tests that run ``proxy.py`` as real processes.

A :class:`Workspace` writes configs into a test's ``tmp_path``, runs
``proxy.py`` subcommands as child processes with a clean environment, and at
the end stops every daemon those configs may have started (through
``proxy.py stop``, then, for a daemon that would not stop, by its verified
pid).  Everything listens on 127.0.0.1 only.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROXY = ROOT / "proxy.py"

sys.path.insert(0, str(ROOT))

from claude_proxy import process  # noqa: E402
from fakes import MESSAGE, Reply, request  # noqa: E402
from claude_proxy.state import StatePaths, read_pid_file  # noqa: E402


def free_port():
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_environ(**extra):
    """This process's environment without anything that would steer the proxy or a client."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANTHROPIC_", "CLAUDE_PROXY_")) and not k.endswith("_API_KEY")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


def wait_until(predicate, timeout=10.0, interval=0.05):
    """Poll ``predicate`` until it is true or ``timeout`` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


class Workspace:
    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.configs = []
        self.environ = clean_environ()

    def config(self, providers, name="config.json", folder=None, port=None, **settings):
        """Write a config; ``providers`` is a list of (name, url) or dicts.  Returns its path."""
        folder = Path(folder) if folder else self.tmp_path
        folder.mkdir(parents=True, exist_ok=True)
        entries = []
        for item in providers:
            if isinstance(item, dict):
                entries.append(item)
                continue
            pname, url = item
            entries.append({"name": pname, "base_url": url, "api_key_env": f"KEY_{pname.upper()}"})
        data = {"proxy_port": free_port() if port is None else port, "providers": entries, **settings}
        path = folder / name
        path.write_text(json.dumps(data), encoding="utf-8")
        self.configs.append(path)
        return path

    def keys(self, **keys):
        """Provider keys for the processes this workspace runs: ``keys(KEY_P1="...")``."""
        self.environ.update(keys)

    def run(self, *args, config=None, env=None, timeout=60):
        """``proxy.py ARGS`` as a child process; returns the CompletedProcess (text)."""
        argv = [sys.executable, str(PROXY), *map(str, args)]
        if config is not None:
            argv += ["--config", str(config)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env={**self.environ, **(env or {})}, stdin=subprocess.DEVNULL)

    def state(self, config):
        return StatePaths(Path(config).parent)

    def record(self, config):
        return read_pid_file(self.state(config).pid)

    def token(self, config):
        return self.state(config).token.read_text(encoding="utf-8").strip()

    def cleanup(self):
        for config in self.configs:
            record = self.record(config)
            if record is None:
                continue  # nothing was started, or it was stopped already
            self.run("stop", "--grace", "0", "--quiet", config=config, timeout=60)
            if record is not None and process.is_alive(record["pid"]):
                process.terminate(record["pid"], record.get("identity"), timeout=5)


@pytest.fixture
def workspace(tmp_path):
    """A :class:`Workspace`; every daemon it may have started is stopped afterwards."""
    ws = Workspace(tmp_path)
    yield ws
    ws.cleanup()


@pytest.fixture
def fake(providers):
    """``fake(behaviour=None)``: a fake provider on 127.0.0.1, closed after the test."""
    return providers


def health(url):
    """The daemon's /health answer at ``url``, or None if nothing answers there."""
    try:
        status, _, body = request(url, "GET", "/health", timeout=2)
    except OSError:
        return None
    return json.loads(body) if status == 200 else None


def url_of(record):
    return f"http://127.0.0.1:{record['port']}"


def named(name):
    """A fake provider's answer whose text is ``name``: who answered, for :func:`asker`."""
    return Reply(200, {**MESSAGE, "content": [{"type": "text", "text": name}]})


def asker(workspace, config):
    """``ask()``: one request to the daemon of ``config``; the answer's text, or the status."""
    url, token = url_of(workspace.record(config)), workspace.token(config)

    def ask():
        status, _, body = request(url, headers={"x-api-key": token}, body={"model": "m", "messages": []})
        return json.loads(body)["content"][0]["text"] if status == 200 else status

    return ask


def assert_one_line_error(result):
    """A user error: non-zero exit, one line on stderr, no traceback."""
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("claude-proxy: ")
    assert "Traceback" not in result.stderr
