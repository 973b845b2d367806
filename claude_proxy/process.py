"""Everything that differs between Windows and POSIX about processes.

Three jobs, and every ``os.name`` / ``sys.platform`` decision of the package
that concerns them is made here, from a platform name that tests can pass in:

- :func:`spawn_detached` starts the daemon so that it outlives the terminal
  that started it (POSIX: its own session, no terminal; Windows: its own
  process group and a console no one can see, so closing the PowerShell
  window does not take it down).
- :func:`identity` names a running process in a way that survives pid reuse
  (Linux: boot id and start time in clock ticks; macOS and other POSIX: the
  start time ``ps`` reports; Windows: the creation time).  The daemon writes
  its own identity into the pid file; a pid whose identity differs is some
  other program that inherited the number, and is never signalled.
- :func:`terminate` ends a process only after checking that identity (on
  Linux through a pidfd, so the check and the signal name the same process).

Windows is never asked ``os.kill(pid, 0)``: signal 0 is ``CTRL_C_EVENT``
there.  Liveness and termination go through process handles instead.
"""

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

# Windows process-creation flags (winbase.h); spelled out because the
# ``subprocess`` constants exist only on Windows.
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_NO_WINDOW = 0x08000000
CREATE_BREAKAWAY_FROM_JOB = 0x01000000
ERROR_ACCESS_DENIED = 5


def spawn_detached(argv, *, output, cwd=None, env=None, os_name=None, popen=subprocess.Popen):
    """Start ``argv`` detached from this terminal; stdout and stderr go to ``output``.

    ``output`` is an open binary file.  Returns the ``Popen`` object.
    """
    options = detached_options(os_name)
    common = dict(stdin=subprocess.DEVNULL, stdout=output, stderr=output, cwd=cwd, env=env,
                  close_fds=True)
    if "creationflags" not in options:
        return popen(argv, **common, **options)
    # Leave the terminal's job object if it allows that, so that closing the
    # terminal (which may kill the whole job) does not kill the daemon.
    try:
        flags = options["creationflags"] | CREATE_BREAKAWAY_FROM_JOB
        return popen(argv, **common, creationflags=flags)
    except OSError as exc:
        if getattr(exc, "winerror", None) != ERROR_ACCESS_DENIED:
            raise
    return popen(argv, **common, **options)  # the job forbids breakaway: stay in it


def detached_options(os_name=None):
    """The ``Popen`` options that detach a child, for ``os_name`` (``os.name``).

    On Windows the child gets a new process group (Ctrl+C in the terminal is
    not its business) and ``CREATE_NO_WINDOW``: a console of its own that is
    never shown.  ``DETACHED_PROCESS`` (no console at all) is avoided on
    purpose: a console program that the daemon's interpreter starts, such as
    the real interpreter behind a venv's ``python.exe``, would then open a
    visible console window.
    """
    if (os_name or os.name) == "nt":
        return {"creationflags": CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW}
    return {"start_new_session": True}


def default_shell(os_name=None):
    """The ``proxy.py env`` output format when ``--shell`` is not given."""
    return "powershell" if (os_name or os.name) == "nt" else "bash"


def python_command(executable=None, os_name=None, which=shutil.which):
    """How a user types this Python in a shell, for hints: ``python3`` or
    ``python`` when that name on PATH is this interpreter, ``py -3`` on
    Windows when this interpreter is not on PATH but the launcher is, else
    the interpreter's full path (quoted if it needs to be)."""
    executable = executable or sys.executable
    windows = (os_name or os.name) == "nt"
    for name in ("python3", "python"):
        found = which(name)
        if found and _same_file(found, executable):
            return name
    if windows and which("py"):
        return "py -3"
    return quote_for_shell(executable, os_name)


def quote_for_shell(text, os_name=None):
    """``text`` as one word for the user's shell (POSIX shells, or PowerShell and cmd)."""
    if (os_name or os.name) == "nt":
        return f'"{text}"' if " " in text else text
    return shlex.quote(text)


def _same_file(a, b):
    if os.path.normcase(a) == os.path.normcase(b):
        return True
    try:
        return os.path.samefile(a, b)  # a link to it (a venv's python3, a pyenv shim is not)
    except OSError:  # one of them is gone or unreadable: not the same, as far as a hint goes
        return False


def selector_capacity(os_name=None):
    """How many sockets one ``selectors.DefaultSelector`` may watch, or None for no limit.

    On Windows it is ``select()``, which takes at most 512 sockets (CPython
    builds it with FD_SETSIZE 512); a few are kept in reserve.  Elsewhere
    it is epoll, kqueue or poll, with no such limit.
    """
    return 500 if (os_name or os.name) == "nt" else None


def processes(os_name=None, sys_platform=None):
    """The process backend for a platform (by default, this one)."""
    if (os_name or os.name) == "nt":
        return WindowsProcesses()
    return PosixProcesses(sys_platform or sys.platform)


def is_alive(pid):
    return processes().is_alive(pid)


def identity(pid):
    """A string naming the process ``pid`` for as long as it runs, or None."""
    return processes().identity(pid)


def is_same_process(pid, expected_identity):
    """True if ``pid`` is alive and is the process that recorded ``expected_identity``."""
    return processes().is_same(pid, expected_identity)


def terminate(pid, expected_identity, timeout=5.0):
    """End ``pid`` if, and only if, it is the process named by ``expected_identity``.

    Asks politely first where the platform has a way to (SIGTERM), then
    forces it.  Returns True once that process is gone, False if it was not
    that process (or was already gone) and nothing was sent.
    """
    return processes().terminate(pid, expected_identity, timeout)


class PosixProcesses:
    """Linux, macOS and the other POSIX systems."""

    def __init__(self, sys_platform="linux", proc=Path("/proc")):
        self.linux = sys_platform.startswith("linux")
        self.proc = proc

    def is_alive(self, pid):
        if not isinstance(pid, int) or pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:  # no such process
            return False
        except PermissionError:  # it exists, and belongs to someone else
            pass
        return not self._is_zombie(pid)

    def identity(self, pid):
        if not self.is_alive(pid):
            return None
        if self.linux:
            return self._linux_identity(pid)
        return self._ps_identity(pid)

    def is_same(self, pid, expected_identity):
        return expected_identity is not None and self.identity(pid) == expected_identity

    def terminate(self, pid, expected_identity, timeout=5.0):
        if not self._signal(pid, expected_identity, signal.SIGTERM):
            return False
        if self._wait_gone(pid, expected_identity, timeout):
            return True
        self._signal(pid, expected_identity, signal.SIGKILL)
        return self._wait_gone(pid, expected_identity, timeout)

    def _signal(self, pid, expected_identity, signum):
        if expected_identity is None or not self.is_alive(pid):
            return False
        pidfd = None
        if self.linux and hasattr(os, "pidfd_open"):
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:  # gone already: nothing to end
                return False
            except OSError:  # kernel older than 5.3: check, then signal by pid
                pidfd = None
        try:
            # With a pidfd open, the process it names cannot be replaced by
            # another one under the same pid: check, then signal that one.
            if self.identity(pid) != expected_identity:
                return False
            if pidfd is not None:
                signal.pidfd_send_signal(pidfd, signum)
            else:
                os.kill(pid, signum)
            return True
        except ProcessLookupError:  # it exited between the check and the signal
            return False
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def _wait_gone(self, pid, expected_identity, timeout):
        deadline = time.monotonic() + timeout
        while self.identity(pid) == expected_identity:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def _stat_fields(self, pid):
        """Fields 3 onwards of /proc/PID/stat (after the parenthesised command name)."""
        try:
            text = (self.proc / str(pid) / "stat").read_text(encoding="ascii", errors="replace")
        except OSError:  # no such process (or no /proc): no identity
            return None
        return text[text.rfind(")") + 2:].split()

    def _is_zombie(self, pid):
        """A process that has exited but not been reaped still answers kill(0)."""
        if self.linux:
            fields = self._stat_fields(pid)
            return fields is not None and fields[0] in ("Z", "X")
        state = self._ps(pid, "stat=")
        return state is not None and state.startswith("Z")

    def _linux_identity(self, pid):
        fields = self._stat_fields(pid)
        if fields is None or len(fields) < 20:
            return None
        try:
            boot = (self.proc / "sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        except OSError:  # no boot id here: the start time alone names the process
            boot = "?"
        return f"linux:{boot}:{fields[19]}"  # field 22, starttime: ticks after boot

    def _ps_identity(self, pid):
        started = self._ps(pid, "lstart=")
        return f"ps:{started}" if started else None

    @staticmethod
    def _ps(pid, column):
        try:
            result = subprocess.run(["ps", "-o", column, "-p", str(pid)], capture_output=True,
                                    text=True, timeout=5, env={**os.environ, "LC_ALL": "C"})
        except (OSError, subprocess.TimeoutExpired):  # no ps, or it hung: identity unknown
            return None
        value = result.stdout.strip()
        return value if result.returncode == 0 and value else None


class WindowsProcesses:
    """Windows, through process handles (``kernel32`` by ctypes).

    ``kernel32`` and ``last_error`` can be handed in, so that the decisions
    (never ``os.kill(pid, 0)``, check the creation time before terminating)
    are testable anywhere.
    """

    PROCESS_TERMINATE = 0x0001
    PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
    SYNCHRONIZE = 0x00100000
    WAIT_TIMEOUT = 0x102

    def __init__(self, kernel32=None, last_error=None):
        self._kernel32 = kernel32
        self._last_error = last_error

    @property
    def kernel32(self):
        if self._kernel32 is None:
            import ctypes
            from ctypes import wintypes

            k32 = ctypes.WinDLL("kernel32", use_last_error=True)
            k32.OpenProcess.restype = wintypes.HANDLE
            k32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
            k32.WaitForSingleObject.restype = wintypes.DWORD
            k32.WaitForSingleObject.argtypes = (wintypes.HANDLE, wintypes.DWORD)
            k32.GetProcessTimes.restype = wintypes.BOOL
            k32.GetProcessTimes.argtypes = (wintypes.HANDLE,) + (ctypes.POINTER(wintypes.FILETIME),) * 4
            k32.TerminateProcess.restype = wintypes.BOOL
            k32.TerminateProcess.argtypes = (wintypes.HANDLE, wintypes.UINT)
            k32.CloseHandle.argtypes = (wintypes.HANDLE,)
            self._kernel32 = k32
            self._last_error = ctypes.get_last_error
        return self._kernel32

    def _open(self, pid, access):
        if not isinstance(pid, int) or pid <= 0:
            return None
        return self.kernel32.OpenProcess(access, False, pid) or None

    def is_alive(self, pid):
        handle = self._open(pid, self.SYNCHRONIZE | self.PROCESS_QUERY_LIMITED_INFORMATION)
        if handle is None:
            # No handle: either no such process, or one we may not open (it exists).
            return self._last_error() == ERROR_ACCESS_DENIED
        try:
            return self.kernel32.WaitForSingleObject(handle, 0) == self.WAIT_TIMEOUT
        finally:
            self.kernel32.CloseHandle(handle)

    def identity(self, pid):
        handle = self._open(pid, self.SYNCHRONIZE | self.PROCESS_QUERY_LIMITED_INFORMATION)
        if handle is None:
            return None
        try:
            return self._identity_of(handle)
        finally:
            self.kernel32.CloseHandle(handle)

    def is_same(self, pid, expected_identity):
        return expected_identity is not None and self.identity(pid) == expected_identity

    def terminate(self, pid, expected_identity, timeout=5.0):
        if expected_identity is None:
            return False
        access = self.SYNCHRONIZE | self.PROCESS_QUERY_LIMITED_INFORMATION | self.PROCESS_TERMINATE
        handle = self._open(pid, access)
        if handle is None:
            return False
        try:
            # The handle pins this one process: check it, then end that process.
            if self._identity_of(handle) != expected_identity:
                return False
            self.kernel32.TerminateProcess(handle, 1)
            return self.kernel32.WaitForSingleObject(handle, int(timeout * 1000)) != self.WAIT_TIMEOUT
        finally:
            self.kernel32.CloseHandle(handle)

    def _identity_of(self, handle):
        """``windows:<creation time>``, or None if the process has exited."""
        import ctypes
        from ctypes import wintypes

        if self.kernel32.WaitForSingleObject(handle, 0) != self.WAIT_TIMEOUT:
            return None
        times = [wintypes.FILETIME() for _ in range(4)]
        if not self.kernel32.GetProcessTimes(handle, *(ctypes.byref(t) for t in times)):
            return None
        created = times[0]
        return f"windows:{(created.dwHighDateTime << 32) | created.dwLowDateTime}"
