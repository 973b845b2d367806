"""Platform decisions about processes (claude_proxy.process).

Windows behaviour is tested here with the platform passed in and a fake
kernel32, so that the rules (no ``os.kill(pid, 0)``, check the creation time
before terminating) hold on every machine.  POSIX behaviour is tested on
real processes.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from daemon_support import wait_until

from claude_proxy import process
from claude_proxy.process import (
    CREATE_BREAKAWAY_FROM_JOB, CREATE_NEW_PROCESS_GROUP, CREATE_NO_WINDOW, PosixProcesses,
    WindowsProcesses,
)

posix_only = pytest.mark.skipif(os.name != "posix", reason="real POSIX processes")
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")


# --- spawning ---------------------------------------------------------------------


def test_windows_child_gets_a_hidden_console_and_its_own_process_group():
    options = process.detached_options("nt")
    assert options == {"creationflags": CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW}


def test_posix_child_gets_its_own_session():
    assert process.detached_options("posix") == {"start_new_session": True}


class RecordingPopen:
    def __init__(self, failures=()):
        self.calls = []
        self.failures = list(failures)

    def __call__(self, argv, **kwargs):
        self.calls.append(kwargs)
        if self.failures:
            raise self.failures.pop(0)
        return "child"


def test_windows_spawn_tries_to_leave_the_terminals_job_first():
    popen = RecordingPopen()
    assert process.spawn_detached(["x"], output=None, os_name="nt", popen=popen) == "child"
    assert len(popen.calls) == 1
    assert popen.calls[0]["creationflags"] & CREATE_BREAKAWAY_FROM_JOB
    assert popen.calls[0]["stdin"] == subprocess.DEVNULL
    assert "start_new_session" not in popen.calls[0]


def test_windows_spawn_stays_in_a_job_that_forbids_breakaway():
    denied = OSError("access denied")
    denied.winerror = 5
    popen = RecordingPopen([denied])
    assert process.spawn_detached(["x"], output=None, os_name="nt", popen=popen) == "child"
    assert [c["creationflags"] & CREATE_BREAKAWAY_FROM_JOB for c in popen.calls] == [
        CREATE_BREAKAWAY_FROM_JOB, 0]
    assert popen.calls[1]["creationflags"] == CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW


def test_windows_spawn_reports_other_failures():
    popen = RecordingPopen([FileNotFoundError("no python")])
    with pytest.raises(FileNotFoundError):
        process.spawn_detached(["x"], output=None, os_name="nt", popen=popen)
    assert len(popen.calls) == 1


def test_posix_spawn_passes_start_new_session_and_no_creationflags():
    popen = RecordingPopen()
    process.spawn_detached(["x"], output=None, os_name="posix", popen=popen)
    assert popen.calls[0]["start_new_session"] is True
    assert "creationflags" not in popen.calls[0]
    assert popen.calls[0]["close_fds"] is True


def test_backend_and_default_shell_follow_the_platform():
    assert isinstance(process.processes("nt"), WindowsProcesses)
    assert isinstance(process.processes("posix", "linux"), PosixProcesses)
    assert process.processes("posix", "linux").linux
    assert not process.processes("posix", "darwin").linux
    assert process.default_shell("nt") == "powershell"
    assert process.default_shell("posix") == "bash"


# --- Windows, with a fake kernel32 ------------------------------------------------------


class FakeKernel32:
    """Processes by pid: {pid: (created, alive)}; pids in ``denied`` cannot be opened."""

    def __init__(self, processes, denied=()):
        self.processes = dict(processes)
        self.denied = set(denied)
        self.error = 0
        self.terminated = []
        self.open_handles = set()

    def OpenProcess(self, access, inherit, pid):
        if pid in self.denied:
            self.error = 5
            return 0
        if pid not in self.processes:
            self.error = 87  # ERROR_INVALID_PARAMETER: no such process
            return 0
        self.open_handles.add(pid)
        return pid

    def WaitForSingleObject(self, handle, milliseconds):
        return WindowsProcesses.WAIT_TIMEOUT if self.processes[handle][1] else 0

    def GetProcessTimes(self, handle, created, exited, kernel, user):
        created._obj.dwLowDateTime = self.processes[handle][0]
        created._obj.dwHighDateTime = 1
        return 1

    def TerminateProcess(self, handle, code):
        self.terminated.append(handle)
        self.processes[handle] = (self.processes[handle][0], False)
        return 1

    def CloseHandle(self, handle):
        self.open_handles.discard(handle)
        return 1


@pytest.fixture
def no_os_kill(monkeypatch):
    def refuse(*args):
        raise AssertionError("os.kill must not be used on Windows (signal 0 is CTRL_C_EVENT)")

    monkeypatch.setattr(os, "kill", refuse)


def windows(k32):
    return WindowsProcesses(kernel32=k32, last_error=lambda: k32.error)


def test_windows_liveness_uses_a_process_handle_never_os_kill(no_os_kill):
    k32 = FakeKernel32({10: (5, True), 11: (6, False)}, denied={12})
    backend = windows(k32)
    assert backend.is_alive(10)
    assert not backend.is_alive(11)  # exited, handle still obtainable
    assert backend.is_alive(12)      # exists but belongs to someone else
    assert not backend.is_alive(13)  # no such process
    assert not backend.is_alive(0)
    assert not k32.open_handles


def test_windows_identity_is_the_creation_time(no_os_kill):
    k32 = FakeKernel32({10: (5, True), 11: (6, False)})
    backend = windows(k32)
    assert backend.identity(10) == f"windows:{(1 << 32) | 5}"
    assert backend.identity(11) is None
    assert backend.identity(99) is None
    assert not k32.open_handles


def test_windows_terminate_checks_the_creation_time_through_the_same_handle(no_os_kill):
    k32 = FakeKernel32({10: (5, True)})
    backend = windows(k32)
    assert not backend.terminate(10, "windows:123")  # the pid was reused
    assert not backend.terminate(10, None)
    assert k32.terminated == []
    assert backend.terminate(10, backend.identity(10))
    assert k32.terminated == [10]
    assert not k32.open_handles


# --- POSIX, real processes -----------------------------------------------------------


def sleeper(*extra):
    code = "import signal, sys, time\n" + "\n".join(extra) + "\nsys.stdout.write('ready\\n'); sys.stdout.flush(); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert child.stdout.readline() == b"ready\n"
    return child


@pytest.fixture
def children():
    made = []

    def make(*extra):
        child = sleeper(*extra)
        made.append(child)
        return child

    yield make
    for child in made:
        if child.poll() is None:
            child.kill()
        child.wait(10)
        child.stdout.close()


@posix_only
def test_identity_is_stable_and_differs_between_processes(children):
    a, b = children(), children()
    assert process.identity(a.pid) == process.identity(a.pid) is not None
    assert process.identity(a.pid) != process.identity(b.pid)
    assert process.is_same_process(a.pid, process.identity(a.pid))
    assert not process.is_same_process(a.pid, process.identity(b.pid))
    assert not process.is_same_process(a.pid, None)


@posix_only
def test_a_reaped_process_is_gone_and_has_no_identity(children):
    child = children()
    child.kill()
    child.wait(10)
    assert not process.is_alive(child.pid)
    assert process.identity(child.pid) is None


@linux_only
def test_an_unreaped_zombie_counts_as_gone(children):
    child = children()
    os.kill(child.pid, signal.SIGKILL)
    # Not waited for: it stays a zombie, which kill(pid, 0) still reports as existing.
    assert wait_until(lambda: not process.is_alive(child.pid), timeout=10)


@posix_only
def test_terminate_leaves_a_process_with_another_identity_alone(children):
    victim, other = children(), children()
    assert not process.terminate(victim.pid, process.identity(other.pid), timeout=1)
    assert not process.terminate(victim.pid, None, timeout=1)
    time.sleep(0.2)
    assert victim.poll() is None


@posix_only
def test_terminate_ends_the_process_it_was_told_about(children):
    child = children()
    assert process.terminate(child.pid, process.identity(child.pid), timeout=10)
    assert child.wait(10) == -signal.SIGTERM


@posix_only
def test_terminate_forces_a_process_that_ignores_sigterm(children):
    child = children("signal.signal(signal.SIGTERM, signal.SIG_IGN)")
    assert process.terminate(child.pid, process.identity(child.pid), timeout=0.5)
    assert child.wait(10) == -signal.SIGKILL


@posix_only
def test_the_ps_based_identity_of_other_posix_systems(children):
    backend = PosixProcesses("darwin")
    a, b = children(), children()
    if backend.identity(os.getpid()) is None:
        pytest.skip("no ps here")
    assert backend.identity(a.pid).startswith("ps:")
    assert backend.is_same(a.pid, backend.identity(a.pid))
    assert backend.is_alive(b.pid)


def test_hints_name_the_python_a_user_can_type():
    same = {"python3": "/usr/bin/python3.12", "python": None, "py": None}
    assert process.python_command("/usr/bin/python3.12", "posix", same.get) == "python3"
    old_python3 = {"python3": "/usr/bin/python3.9", "python": "/opt/py/bin/python", "py": None}
    assert process.python_command("/usr/bin/python3.9x", "posix", old_python3.get) == "/usr/bin/python3.9x"
    launcher = {"python3": None, "python": None, "py": r"C:\Windows\py.exe"}
    assert process.python_command(r"C:\Python312\python.exe", "nt", launcher.get) == "py -3"
    assert process.python_command(r"C:\Program Files\Python\python.exe", "nt", {}.get) == \
        r'"C:\Program Files\Python\python.exe"'
    assert process.python_command("/home/me/my python/bin/python", "posix", {}.get) == \
        "'/home/me/my python/bin/python'"


def test_a_pid_file_in_use_for_a_moment_is_still_removed_and_replaced(tmp_path, monkeypatch):
    """Windows refuses to delete or replace a file another process is reading, for that moment."""
    from pathlib import Path
    from claude_proxy import state
    pid_file = tmp_path / "proxy.pid"
    busy = {"unlink": 2, "replace": 2}
    real_unlink, real_replace = Path.unlink, state.os.replace

    def unlink(self, missing_ok=False):
        if busy["unlink"]:
            busy["unlink"] -= 1
            raise PermissionError(13, "The process cannot access the file")
        return real_unlink(self, missing_ok=missing_ok)

    def replace(src, dst):
        if busy["replace"]:
            busy["replace"] -= 1
            raise PermissionError(13, "The process cannot access the file")
        return real_replace(src, dst)

    monkeypatch.setattr(Path, "unlink", unlink)
    monkeypatch.setattr(state.os, "replace", replace)
    monkeypatch.setattr(state, "IN_USE_PAUSE", 0.001)
    state.write_pid_file(pid_file, host="127.0.0.1", port=1, config_path="c")
    assert state.read_pid_file(pid_file)["port"] == 1
    state.remove_pid_file(pid_file)
    assert not pid_file.exists()


def test_a_pid_file_that_stays_in_use_is_one_clear_line(tmp_path, monkeypatch):
    from pathlib import Path
    from claude_proxy import state
    from claude_proxy.errors import UsageError
    pid_file = tmp_path / "proxy.pid"
    pid_file.write_text("{}", encoding="utf-8")

    def unlink(self, missing_ok=False):
        raise PermissionError(13, "The process cannot access the file")

    monkeypatch.setattr(Path, "unlink", unlink)
    monkeypatch.setattr(state, "IN_USE_PAUSE", 0.001)
    with pytest.raises(UsageError) as caught:
        state.remove_pid_file(pid_file)
    assert str(caught.value) == (f"cannot remove {pid_file}: The process cannot access the file (another "
                                 "program holds it open?); close it, or delete the file yourself")
