"""The terminal of the full-screen view (claude_proxy.terminal), on both platforms.

The POSIX branch runs on a real pseudo-terminal; the Windows branch, which
cannot run here, runs against fakes of ``kernel32`` (through the real
:mod:`ctypes` calls) and of :mod:`msvcrt` that behave as the documented
Windows functions do.
"""

import ctypes
import fcntl
import io
import os
import signal
import struct
import sys
import termios
import time
import types

import pytest

from claude_proxy import terminal
from claude_proxy.terminal import (DOWN, ENTER_SCREEN, INTERRUPT, LEAVE_SCREEN, RESIZE, UP, PosixTerminal,
                                   TerminalUnavailable, WindowsConsole, WindowsTerminal, decode_keys)

posix_only = pytest.mark.skipif(os.name == "nt", reason="a POSIX pseudo-terminal")


class Output(io.StringIO):
    """What a terminal was sent."""

    def isatty(self):
        return True


# --- shared -------------------------------------------------------------------------------


def test_decode_keys_reads_arrows_in_both_forms_and_leaves_other_sequences_out():
    assert decode_keys("\x1b[A\x1b[B\x1bOA\x1bOB") == [UP, DOWN, UP, DOWN]
    assert decode_keys("q\x1b[1;5Cd\x1b[15~c\x03") == ["q", "d", "c", INTERRUPT]
    assert decode_keys("\x1b") == [] and decode_keys("\x1b[") == []
    assert decode_keys("jk") == ["j", "k"]


def test_colour_is_left_out_for_NO_COLOR_and_a_dumb_terminal():
    assert terminal.colour_allowed({"TERM": "xterm-256color"})
    assert not terminal.colour_allowed({"TERM": "xterm", "NO_COLOR": "1"})
    assert not terminal.colour_allowed({"TERM": "dumb"})
    assert terminal.colour_allowed({"NO_COLOR": ""})  # no-color.org: set and not empty


def test_only_a_terminal_that_moves_its_cursor_gets_the_full_screen():
    assert terminal.can_draw(Output(), {"TERM": "xterm"})
    assert terminal.can_draw(Output(), {})
    assert not terminal.can_draw(Output(), {"TERM": "dumb"})
    assert not terminal.can_draw(io.StringIO(), {"TERM": "xterm"})  # a pipe or a file


def test_a_frame_draws_every_row_from_its_first_column():
    text = terminal.frame(["one", "two"], 10, 3)
    assert text == "\x1b[1;1Hone\x1b[K\x1b[2;1Htwo\x1b[K\x1b[3;1H\x1b[K"


def test_escapes_are_shown_only_on_a_terminal_with_colour_allowed():
    with terminal.escapes_shown(io.StringIO(), {"TERM": "xterm"}, platform="posix") as shown:
        assert not shown
    with terminal.escapes_shown(Output(), {"TERM": "xterm", "NO_COLOR": "1"}, platform="posix") as shown:
        assert not shown
    with terminal.escapes_shown(Output(), {"TERM": "xterm"}, platform="posix") as shown:
        assert shown


# --- POSIX, on a real pseudo-terminal ----------------------------------------------------------


@pytest.fixture
def pty_pair():
    """``(master fd, slave as a binary file)``; both closed afterwards."""
    master, slave = os.openpty()
    slave_file = os.fdopen(slave, "rb", buffering=0)
    yield master, slave_file
    slave_file.close()
    os.close(master)


def local_flags(tty_file):
    return termios.tcgetattr(tty_file.fileno())[3]


@posix_only
def test_posix_cbreak_while_open_and_the_mode_back_after(pty_pair):
    master, slave = pty_pair
    before = termios.tcgetattr(slave.fileno())
    assert local_flags(slave) & termios.ICANON and local_flags(slave) & termios.ECHO
    out = Output()
    with PosixTerminal(slave, out) as term:
        assert not local_flags(slave) & termios.ICANON  # keys one by one
        assert not local_flags(slave) & termios.ECHO
        assert local_flags(slave) & termios.ISIG  # Ctrl+C still interrupts
        assert out.getvalue() == ENTER_SCREEN
        os.write(master, b"\x1b[Aq")
        assert term.keys(2.0) == [UP, "q"]
    assert termios.tcgetattr(slave.fileno()) == before
    assert out.getvalue().endswith(LEAVE_SCREEN)


@posix_only
def test_posix_restores_everything_after_an_exception(pty_pair):
    _, slave = pty_pair
    before = termios.tcgetattr(slave.fileno())
    handler = signal.getsignal(signal.SIGWINCH)
    out = Output()
    with pytest.raises(ZeroDivisionError):
        with PosixTerminal(slave, out):
            1 / 0
    assert termios.tcgetattr(slave.fileno()) == before
    assert signal.getsignal(signal.SIGWINCH) == handler
    assert out.getvalue().endswith(LEAVE_SCREEN)


@posix_only
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
def test_posix_a_kill_or_a_closed_window_leaves_as_q_does(pty_pair, signum):
    _, slave = pty_pair
    before = termios.tcgetattr(slave.fileno())
    handler = signal.getsignal(signum)
    out = Output()
    with pytest.raises(SystemExit) as stopped:
        with PosixTerminal(slave, out):
            os.kill(os.getpid(), signum)
            time.sleep(5)  # the signal ends this at once
    assert stopped.value.code == 128 + signum
    assert termios.tcgetattr(slave.fileno()) == before
    assert signal.getsignal(signum) == handler
    assert out.getvalue().endswith(LEAVE_SCREEN)


@posix_only
def test_posix_a_resize_wakes_the_key_wait_at_once(pty_pair):
    master, slave = pty_pair
    with PosixTerminal(slave, Output()) as term:
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        started = time.monotonic()
        os.kill(os.getpid(), signal.SIGWINCH)
        assert term.keys(5.0) == [RESIZE]
        assert time.monotonic() - started < 2.0
        assert terminal.size_of(slave) == (100, 30)
        assert term.keys(0.05) == []


@posix_only
def test_posix_without_a_keyboard_only_waits():
    with open(os.devnull, "rb") as stdin:
        term = PosixTerminal(stdin, Output())
        assert not term.reads_keys
        with term:
            started = time.monotonic()
            assert term.keys(0.2) == []
            assert time.monotonic() - started >= 0.15


@posix_only
def test_the_size_is_the_terminals_own_not_a_stale_COLUMNS(pty_pair, monkeypatch):
    master, slave = pty_pair
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    monkeypatch.setenv("COLUMNS", "20")
    monkeypatch.setenv("LINES", "5")
    assert terminal.size_of(slave) == (120, 40)
    assert terminal.size_of(io.StringIO()) == (20, 5)  # no terminal: the environment's, as shutil says


# --- Windows, with fakes of kernel32 and msvcrt --------------------------------------------


class FakeKernel32:
    """GetStdHandle, GetConsoleMode and SetConsoleMode as a console has them (wincon.h)."""

    def __init__(self, mode=0x0003, console=True, accepts_vt=True):
        self.mode = mode
        self.console = console
        self.accepts_vt = accepts_vt
        self.set_calls = []

    def GetStdHandle(self, which):
        assert which == terminal.STD_OUTPUT_HANDLE
        return 7

    def GetConsoleMode(self, handle, mode_ref):
        assert handle == 7
        if not self.console:
            return 0  # ERROR_INVALID_HANDLE: not a console (a pipe, a file)
        mode_ref._obj.value = self.mode  # through ctypes.byref, as the real call writes it
        return 1

    def SetConsoleMode(self, handle, mode):
        assert handle == 7
        self.set_calls.append(mode)
        if mode & terminal.ENABLE_VIRTUAL_TERMINAL_PROCESSING and not self.accepts_vt:
            return 0  # ERROR_INVALID_PARAMETER: a console before Windows 10 1511
        self.mode = mode
        return 1


class FakeMsvcrt:
    """kbhit and getwch over a queue of characters, as the console's input buffer."""

    def __init__(self, chars=""):
        self.chars = list(chars)

    def kbhit(self):
        return bool(self.chars)

    def getwch(self):
        return self.chars.pop(0)


class FakeClock:
    def __init__(self):
        self.now = 100.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def windows_terminal(kernel32, chars="", clock=None):
    clock = clock or FakeClock()
    stdin = types.SimpleNamespace(isatty=lambda: True)
    return WindowsTerminal(stdin, Output(), console=WindowsConsole(kernel32), msvcrt_module=FakeMsvcrt(chars),
                           clock=clock, sleep=clock.sleep)


def test_windows_switches_virtual_terminal_processing_on_and_back_off():
    kernel32 = FakeKernel32(mode=0x0003)
    term = windows_terminal(kernel32)
    with term:
        assert kernel32.mode == 0x0003 | terminal.ENABLE_VIRTUAL_TERMINAL_PROCESSING
        assert term.stdout.getvalue() == ENTER_SCREEN
    assert kernel32.mode == 0x0003
    assert kernel32.set_calls == [0x0007, 0x0003]
    assert term.stdout.getvalue().endswith(LEAVE_SCREEN)


def test_windows_a_console_with_it_on_already_is_left_as_it_is():
    kernel32 = FakeKernel32(mode=0x0007)
    with windows_terminal(kernel32):
        pass
    assert kernel32.set_calls == []


def test_windows_puts_the_mode_back_after_an_exception():
    kernel32 = FakeKernel32(mode=0x0001)
    with pytest.raises(ZeroDivisionError):
        with windows_terminal(kernel32):
            1 / 0
    assert kernel32.mode == 0x0001


@pytest.mark.parametrize("kernel32", [FakeKernel32(accepts_vt=False), FakeKernel32(console=False)],
                         ids=["old console", "not a console"])
def test_windows_without_virtual_terminal_support_is_unavailable_and_changes_nothing(kernel32):
    term = windows_terminal(kernel32)
    with pytest.raises(TerminalUnavailable, match="virtual-terminal"):
        with term:
            pytest.fail("the view must not start")
    assert term.stdout.getvalue() == ""
    assert kernel32.mode == 0x0003


def test_windows_keys_arrows_come_in_two_halves():
    term = windows_terminal(FakeKernel32(), chars="\xe0H\x00Pq\xe0Md\x03")  # \xe0M: the right arrow
    with term:
        assert term.keys(1.0) == [UP, DOWN, "q", "d", INTERRUPT]


def test_windows_keys_wait_for_the_timeout_in_short_looks():
    clock = FakeClock()
    term = windows_terminal(FakeKernel32(), clock=clock)
    with term:
        assert term.keys(0.1) == []
    assert clock.now == pytest.approx(100.1)
    assert max(clock.sleeps) <= terminal.WINDOWS_POLL


def test_windows_escapes_for_a_snapshot_are_switched_on_for_it_only():
    kernel32 = FakeKernel32(mode=0x0003)
    with terminal.escapes_shown(Output(), {"TERM": "xterm"}, platform="nt",
                                console=WindowsConsole(kernel32)) as shown:
        assert shown and kernel32.mode & terminal.ENABLE_VIRTUAL_TERMINAL_PROCESSING
    assert kernel32.mode == 0x0003
    with terminal.escapes_shown(Output(), {"TERM": "xterm"}, platform="nt",
                                console=WindowsConsole(FakeKernel32(accepts_vt=False))) as shown:
        assert not shown


def test_open_terminal_picks_the_platforms(monkeypatch):
    kernel32 = FakeKernel32()
    monkeypatch.setattr(ctypes, "WinDLL", lambda name, use_last_error: kernel32, raising=False)
    monkeypatch.setitem(sys.modules, "msvcrt", FakeMsvcrt())
    windows = terminal.open_terminal(Output(), Output(), platform="nt")
    assert isinstance(windows, WindowsTerminal)
    with windows:
        assert kernel32.mode & terminal.ENABLE_VIRTUAL_TERMINAL_PROCESSING
    if os.name != "nt":
        assert isinstance(terminal.open_terminal(Output(), Output(), platform="posix"), PosixTerminal)
