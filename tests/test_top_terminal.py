"""``proxy.py top`` full screen, driven in a real pseudo-terminal.

The view runs as a child process whose standard streams are the slave side
of a pty; the test reads what it draws from the master side, types keys
into it, and resizes the window there (TIOCSWINSZ, then SIGWINCH: the child
has no controlling terminal, so the kernel would not send it).  What is on
the screen is worked out from the output by :class:`Screen`, which
understands the few sequences the view draws with.
"""

import fcntl
import json
import os
import re
import signal
import struct
import subprocess
import sys
import termios
import threading

import pytest

from daemon_support import PROXY, fake, wait_until, workspace  # noqa: F401  (fixtures)

from claude_proxy.terminal import ENTER_SCREEN, LEAVE_SCREEN

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX pseudo-terminals")

_SEQUENCE = re.compile(r"\x1b\[(\d+);1H|\x1b\[[0-9;?]*[A-Za-z]")


class Screen:
    """``proxy.py top`` in a pseudo-terminal of ``rows`` x ``columns``."""

    def __init__(self, argv, environ, rows=24, columns=100):
        self.master, slave = os.openpty()
        self.size(rows, columns)
        self.process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=environ,
                                        start_new_session=True)
        os.close(slave)
        self._output = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the child has exited and the slave side is closed
                return
            if not data:
                return
            with self._lock:
                self._output += data

    @property
    def output(self):
        with self._lock:
            return self._output.decode("utf-8", "replace")

    def rows(self):
        """The screen as drawn so far: each row's text, colours left out."""
        rows, current = {}, None
        text = self.output
        position = 0
        for match in _SEQUENCE.finditer(text):
            if current is not None:
                rows[current] += text[position:match.start()]
            if match.group(1):
                current = int(match.group(1))
                rows[current] = ""
            position = match.end()
        if current is not None:
            rows[current] += text[position:]
        return [rows.get(number, "") for number in range(1, max(rows, default=0) + 1)]

    def shows(self, pattern, timeout=15):
        """True once a row matches ``pattern`` (a regular expression)."""
        return wait_until(lambda: any(re.search(pattern, row) for row in self.rows()), timeout=timeout)

    def size(self, rows, columns):
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    def resize(self, rows, columns):
        self.size(rows, columns)
        self.process.send_signal(signal.SIGWINCH)

    def type(self, keys):
        os.write(self.master, keys.encode())

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self._reader.join(10)
        os.close(self.master)


@pytest.fixture
def daemon(workspace, fake):
    """A running daemon with providers p1 and p2; returns (workspace, config)."""
    config = workspace.config([("p1", fake().url), ("p2", fake().url)])
    workspace.keys(KEY_P1="secret-p1", KEY_P2="secret-p2")
    assert workspace.run("start", config=config).returncode == 0
    return workspace, config


@pytest.fixture
def screen(daemon):
    """``screen(**environ)``: top of the daemon's config in a pseudo-terminal; closed afterwards."""
    workspace, config = daemon
    opened = []

    def start(rows=24, columns=100, **environ):
        argv = [sys.executable, str(PROXY), "top", "--config", str(config)]
        opened.append(Screen(argv, {**workspace.environ, "TERM": "xterm", **environ}, rows, columns))
        return opened[-1]

    yield start
    for each in opened:
        each.close()


def provider_state(workspace, config, name):
    rows = json.loads(workspace.run("status", "--json", config=config).stdout)["providers"]
    return next(row for row in rows if row["name"] == name)["state"]


def test_it_draws_the_providers_follows_a_resize_and_q_restores_the_screen(screen):
    top = screen(rows=24, columns=100)
    assert top.shows(r"^> p1 +ready ")
    assert top.shows(r"^  p2 +ready ")
    assert top.output.startswith(ENTER_SCREEN)
    assert "\x1b[32mready" in top.output  # coloured: ready in green
    assert wait_until(lambda: top.rows()[23].startswith("q quit"))

    top.resize(30, 120)
    assert wait_until(lambda: len(top.rows()) >= 30 and top.rows()[29].startswith("q quit"))
    top.resize(12, 60)
    assert wait_until(lambda: top.rows()[11].startswith("q quit"), timeout=10)
    assert all(len(row) <= 60 for row in top.rows()[:12])  # cut to the new width, never wrapped

    top.type("q")
    assert top.process.wait(10) == 0
    top._reader.join(10)
    assert top.output.endswith(LEAVE_SCREEN)  # the cursor and the normal screen are back


def test_ctrl_c_restores_the_screen_too(screen):
    top = screen()
    assert top.shows(r"^> p1 ")
    top.process.send_signal(signal.SIGINT)
    assert top.process.wait(10) == 130
    top._reader.join(10)
    assert top.output.endswith(LEAVE_SCREEN)
    assert "Traceback" not in top.output


def test_NO_COLOR_draws_without_colours(screen):
    top = screen(NO_COLOR="1")
    assert top.shows(r"^> p1 +ready ")
    assert not re.search(r"\x1b\[[0-9;]*m", top.output)


def test_it_shows_the_daemon_gone_and_follows_it_when_it_is_back(daemon, screen):
    workspace, config = daemon
    top = screen()
    assert top.shows(r"^> p1 +ready ")
    assert workspace.run("stop", config=config).returncode == 0
    assert top.shows(r"^claude-proxy is not running \(config: ")
    assert top.shows(r"watching for it: trying again every second")
    assert workspace.run("start", config=config).returncode == 0
    pid = workspace.record(config)["pid"]
    assert top.shows(rf"\(pid {pid}\), up ")
    assert top.shows(r"^> p1 +ready ")
    assert top.process.poll() is None


def test_keys_disable_enable_and_clear_a_cooldown_of_the_selected_provider(daemon, screen):
    workspace, config = daemon
    top = screen()
    assert top.shows(r"^> p1 ")
    top.type("\x1b[B")  # down
    assert top.shows(r"^> p2 ")

    top.type("d")
    assert top.shows(r"^p2: disabled until `proxy.py enable`")
    assert provider_state(workspace, config, "p2") == "disabled"
    assert provider_state(workspace, config, "p1") == "ready"
    assert top.shows(r"^> p2 +disabled until enabled ")

    top.type("d")
    assert top.shows(r"^p2: enabled again")
    assert provider_state(workspace, config, "p2") == "ready"

    assert workspace.run("cool", "p2", "--for", "10m", config=config).returncode == 0
    assert top.shows(r"^> p2 +cooling for \d+m \d\ds ")
    top.type("c")
    assert top.shows(r"^cooldowns cleared: p2")
    assert provider_state(workspace, config, "p2") == "ready"

    top.type("\x1b[A")  # up
    assert top.shows(r"^> p1 ")
    top.type("q")
    assert top.process.wait(10) == 0
