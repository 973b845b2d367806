"""The terminal of a full-screen view (``proxy.py top``): every platform-specific
decision about consoles is made here, and nowhere else.

Drawing is ANSI escape sequences everywhere (ECMA-48 / xterm): the
alternate screen buffer (``CSI ? 1049 h``), a hidden cursor, absolute cursor
positioning, erase to end of line, SGR colours.  What differs is how the
terminal is prepared and how keys are read:

- POSIX: the input terminal in cbreak mode (:mod:`tty`; keys arrive one by
  one, unechoed, Ctrl+C still interrupts), keys read with :func:`select.select`
  and decoded from their escape sequences; a ``SIGWINCH`` handler wakes the
  key wait at once when the window is resized.
- Windows: virtual-terminal processing switched on for the console
  (``SetConsoleMode`` with ``ENABLE_VIRTUAL_TERMINAL_PROCESSING`` through
  :mod:`ctypes`, Windows 10 1511 and later), keys read with :mod:`msvcrt`.

A :class:`Terminal` is a context manager: entering switches to the
alternate screen and hides the cursor; leaving restores the cursor, the
normal screen, the input mode and the console mode, whatever ended the view
(a key, Ctrl+C, an exception).  Nothing here knows what is drawn.
"""

import contextlib
import os
import shutil
import sys
import threading
import time

from . import ProxyError

ESC = "\x1b"
ENTER_SCREEN = ESC + "[?1049h" + ESC + "[?25l"  # the alternate screen, cursor hidden
LEAVE_SCREEN = ESC + "[?25h" + ESC + "[?1049l"  # cursor shown, the normal screen back
ERASE_LINE_END = ESC + "[K"
RESET = ESC + "[0m"

#: Key names :meth:`Terminal.keys` gives besides single characters.
UP, DOWN, INTERRUPT, RESIZE = "up", "down", "interrupt", "resize"

WINDOWS_POLL = 0.02  # seconds between looks at the Windows keyboard buffer


class TerminalUnavailable(ProxyError):
    """This console cannot show a full-screen view (Windows without virtual-terminal support)."""


def colour_allowed(environ=None):
    """False when the user asked for plain text: ``NO_COLOR`` set to anything
    (https://no-color.org), or ``TERM=dumb``."""
    environ = os.environ if environ is None else environ
    return not environ.get("NO_COLOR") and environ.get("TERM") != "dumb"


def can_draw(stream, environ=None):
    """True if ``stream`` is a terminal that understands cursor movement."""
    environ = os.environ if environ is None else environ
    return _isatty(stream) and environ.get("TERM") != "dumb"


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no such method, or a closed stream: not a terminal
        return False


def size_of(stream):
    """``(columns, lines)`` of the terminal ``stream`` writes to (80x24 if it has none).

    The terminal's own size first: ``COLUMNS``/``LINES`` (which
    :func:`shutil.get_terminal_size` prefers) may be left over from before a resize."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, ValueError, OSError):  # not a terminal, or no file descriptor
        size = shutil.get_terminal_size()
    return max(size.columns, 1), max(size.lines, 1)


def frame(lines, columns, rows):
    """The text that draws ``lines`` over the whole screen, each row from its first column.

    Each line must already fit in ``columns`` (as it appears, escapes left
    aside); rows past the lines are blanked.  Nothing is written to the last
    column of the last row, where a terminal may wrap and scroll."""
    out = []
    for row in range(rows):
        out.append(f"{ESC}[{row + 1};1H")
        if row < len(lines):
            out.append(lines[row])
        out.append(ERASE_LINE_END)
    return "".join(out)


def decode_keys(text):
    """Key names in ``text`` as a POSIX terminal sends it: the arrow keys' escape
    sequences (``ESC [ A`` and ``ESC O A`` forms) as :data:`UP` and :data:`DOWN`,
    Ctrl+C as :data:`INTERRUPT`, other characters as themselves.  Other escape
    sequences (function keys, a lone Escape) are left out."""
    keys = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == ESC:
            if text[index + 1:index + 2] in ("[", "O"):
                end = index + 2
                while end < len(text) and not "@" <= text[end] <= "~":  # parameters, to the final byte
                    end += 1
                final = text[end:end + 1]
                if end == index + 2 and final in ("A", "B"):
                    keys.append(UP if final == "A" else DOWN)
                index = end + 1
            else:
                index += 1
            continue
        keys.append(INTERRUPT if char == "\x03" else char)
        index += 1
    return keys


class Terminal:
    """A terminal for one full-screen view; see the module docstring.

    ``keys(timeout)`` waits up to ``timeout`` seconds for keys and gives the
    ones pressed, as names (:func:`decode_keys`); :data:`RESIZE` when the
    window changed size (where the platform says so; :meth:`size` is right in
    any case).  Without a keyboard (input not a terminal) it only waits."""

    def __init__(self, stdin, stdout):
        self.stdin = stdin
        self.stdout = stdout
        self.reads_keys = _isatty(stdin)

    def __enter__(self):
        try:
            self._prepare()
            self.write(ENTER_SCREEN)
        except BaseException:  # half prepared: put back what was changed
            self._restore()
            raise
        return self

    def __exit__(self, *exc_info):
        try:
            self.write(RESET + LEAVE_SCREEN)
        except OSError:  # the terminal is gone (its window was closed): nothing left to restore there
            pass
        finally:
            self._restore()
        return False

    def write(self, text):
        self.stdout.write(text)
        self.stdout.flush()

    def size(self):
        return size_of(self.stdout)

    def _prepare(self):
        raise NotImplementedError

    def _restore(self):
        raise NotImplementedError

    def keys(self, timeout):
        raise NotImplementedError


_NOTHING = object()


class PosixTerminal(Terminal):
    """cbreak input, ``select`` for keys, ``SIGWINCH`` for resizes."""

    def __init__(self, stdin, stdout, termios_module=None, tty_module=None, signal_module=None):
        super().__init__(stdin, stdout)
        if termios_module is None:
            import termios as termios_module
        if tty_module is None:
            import tty as tty_module
        if signal_module is None:
            import signal as signal_module
        self._termios, self._tty, self._signal = termios_module, tty_module, signal_module
        self._saved_mode = None
        self._saved_handler = _NOTHING  # SIGWINCH's handler before ours (signal.signal may say None)
        self._saved_stops = {}  # SIGTERM's and SIGHUP's handlers before ours
        self._wake = None  # (read end, write end) of a pipe a resize writes to

    def _prepare(self):
        if self.reads_keys:
            fd = self.stdin.fileno()
            self._saved_mode = self._termios.tcgetattr(fd)
            self._tty.setcbreak(fd, self._termios.TCSANOW)
        self._wake = os.pipe()
        for end in self._wake:
            os.set_blocking(end, False)
        # Signal handlers belong to the main thread; elsewhere size() is polled instead.
        if threading.current_thread() is not threading.main_thread():
            return
        winch = getattr(self._signal, "SIGWINCH", None)
        if winch is not None:
            self._saved_handler = self._signal.signal(winch, self._resized)
        for name in ("SIGTERM", "SIGHUP"):  # a kill, or the window closed: leave as q does
            number = getattr(self._signal, name, None)
            if number is not None:
                self._saved_stops[number] = self._signal.signal(number, self._stopped)

    @staticmethod
    def _stopped(signum, frame):
        raise SystemExit(128 + signum)  # unwinds through __exit__, which restores the terminal

    def _resized(self, signum, frame):
        try:
            os.write(self._wake[1], b"w")
        except OSError:  # the pipe is full (resizes not read yet) or closed: one wake-up is enough
            pass

    def _restore(self):
        if self._saved_handler is not _NOTHING:
            self._signal.signal(self._signal.SIGWINCH, self._saved_handler)
            self._saved_handler = _NOTHING
        for number, handler in self._saved_stops.items():
            self._signal.signal(number, handler)
        self._saved_stops = {}
        try:
            if self._saved_mode is not None:
                mode, self._saved_mode = self._saved_mode, None
                self._termios.tcsetattr(self.stdin.fileno(), self._termios.TCSADRAIN, mode)
        finally:  # the terminal may be gone (termios.error): the pipe is closed all the same
            if self._wake is not None:
                for end in self._wake:
                    os.close(end)
                self._wake = None

    def keys(self, timeout):
        import select

        watched = [self._wake[0]] + ([self.stdin.fileno()] if self.reads_keys else [])
        readable, _, _ = select.select(watched, [], [], max(0.0, timeout))
        found = []
        if self._wake[0] in readable:
            while True:
                try:
                    if not os.read(self._wake[0], 512):
                        break
                except BlockingIOError:  # drained
                    break
            found.append(RESIZE)
        if self.reads_keys and self.stdin.fileno() in readable:
            data = os.read(self.stdin.fileno(), 1024)
            if not data:  # the terminal hung up: no more keys will come
                self.reads_keys = False
            found.extend(decode_keys(data.decode("utf-8", "replace")))
        return found


#: Console modes (wincon.h).
STD_OUTPUT_HANDLE = -11
ENABLE_PROCESSED_OUTPUT = 0x0001
ENABLE_VIRTUAL_TERMINAL_PROCESSING = 0x0004
#: What msvcrt.getwch gives before the second half of an arrow key.
_WINDOWS_PREFIXES = ("\x00", "\xe0")
_WINDOWS_KEYS = {"H": UP, "P": DOWN}


class WindowsConsole:
    """The console mode of a Windows standard output, through ``kernel32``."""

    def __init__(self, kernel32=None):
        import ctypes

        self._ctypes = ctypes
        self._kernel32 = kernel32 if kernel32 is not None else ctypes.WinDLL("kernel32", use_last_error=True)

    def output_handle(self):
        return self._kernel32.GetStdHandle(STD_OUTPUT_HANDLE)

    def mode(self, handle):
        """The console mode of ``handle``, or None if it is not a console."""
        mode = self._ctypes.c_uint32()
        if not self._kernel32.GetConsoleMode(handle, self._ctypes.byref(mode)):
            return None
        return mode.value

    def set_mode(self, handle, mode):
        return bool(self._kernel32.SetConsoleMode(handle, mode))

    @contextlib.contextmanager
    def virtual_terminal(self):
        """Virtual-terminal processing on for the block (yields whether it is), then as it was."""
        handle = self.output_handle()
        before = self.mode(handle)
        if before is None:
            yield False
            return
        wanted = before | ENABLE_PROCESSED_OUTPUT | ENABLE_VIRTUAL_TERMINAL_PROCESSING
        if wanted != before and not self.set_mode(handle, wanted):
            yield False  # a console before Windows 10 1511: no escape sequences
            return
        try:
            yield True
        finally:
            if wanted != before:
                self.set_mode(handle, before)


class WindowsTerminal(Terminal):
    """Virtual-terminal processing switched on for the view; ``msvcrt`` for keys."""

    def __init__(self, stdin, stdout, console=None, msvcrt_module=None, clock=time.monotonic,
                 sleep=time.sleep):
        super().__init__(stdin, stdout)
        if msvcrt_module is None:
            import msvcrt as msvcrt_module
        self._console = console if console is not None else WindowsConsole()
        self._msvcrt = msvcrt_module
        self._clock, self._sleep = clock, sleep
        self._vt = None

    def _prepare(self):
        self._vt = self._console.virtual_terminal()
        if not self._vt.__enter__():
            self._restore()
            raise TerminalUnavailable("this console cannot show the live view (it has no virtual-terminal "
                                      "support: Windows 10 or later, or Windows Terminal, has it)")

    def _restore(self):
        if self._vt is not None:
            vt, self._vt = self._vt, None
            vt.__exit__(None, None, None)

    def keys(self, timeout):
        deadline = self._clock() + timeout
        while not (self.reads_keys and self._msvcrt.kbhit()):
            if self._clock() >= deadline:
                return []
            self._sleep(min(WINDOWS_POLL, max(0.0, deadline - self._clock())))
        found = []
        while self._msvcrt.kbhit():
            char = self._msvcrt.getwch()
            if char in _WINDOWS_PREFIXES:
                key = _WINDOWS_KEYS.get(self._msvcrt.getwch())
                if key:
                    found.append(key)
            else:
                found.append(INTERRUPT if char == "\x03" else char)
        return found


def open_terminal(stdin=None, stdout=None, platform=os.name):
    """The :class:`Terminal` for this platform, on the process's standard streams by default."""
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    if platform == "nt":
        return WindowsTerminal(stdin, stdout)
    return PosixTerminal(stdin, stdout)


@contextlib.contextmanager
def escapes_shown(stream, environ=None, platform=os.name, console=None):
    """For one plain snapshot: yields True if colour escapes written to ``stream`` now
    show as colours (a terminal, colour allowed; on Windows with virtual-terminal
    processing, switched on for the block and put back after it)."""
    if not (can_draw(stream, environ) and colour_allowed(environ)):
        yield False
        return
    if platform != "nt":
        yield True
        return
    with (console if console is not None else WindowsConsole()).virtual_terminal() as on:
        yield on
