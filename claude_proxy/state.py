"""The runtime files in the state directory: client token, pid file, log.

The state directory is the config's folder unless ``state_dir`` says otherwise.
The token file is created once, readable by its owner only, and handed to
clients by the management commands (``proxy.py env``).
"""

import json
import os
import secrets
import time
from pathlib import Path

from .errors import UsageError

TOKEN_FILE = "proxy.token"
PID_FILE = "proxy.pid"
LOG_FILE = "proxy.log"
OUT_FILE = "proxy.out"
SESSIONS_DIR = "sessions"
USAGE_FILE = "usage.db"
#: Set by ``proxy.py start`` for the daemon it launches, and copied into the
#: pid file, so that start knows the record is its own daemon's.
LAUNCH_ID_ENV = "CLAUDE_PROXY_LAUNCH_ID"


class StatePaths:
    def __init__(self, state_dir):
        self.dir = Path(state_dir)
        self.token = self.dir / TOKEN_FILE
        self.pid = self.dir / PID_FILE
        self.log = self.dir / LOG_FILE
        self.out = self.dir / OUT_FILE  # a detached daemon's stdout and stderr
        self.sessions = self.dir / SESSIONS_DIR  # one file per shell session using the proxy
        self.usage = self.dir / USAGE_FILE  # the usage record (claude_proxy.usage)


def state_dir_problem(path, config_path=None):
    """Why ``path`` cannot be the state directory, as one line; None if it can.

    A folder that does not exist yet is fine as long as it can be created:
    ``start`` creates it.  With ``config_path``, the line ends with what to do.
    """
    problem = _state_dir_problem(Path(path))
    if problem and config_path is not None:
        problem += f"; set \"state_dir\" in {config_path} to a folder you can write to"
    return problem


def _state_dir_problem(path):
    try:
        if path.exists() and not path.is_dir():
            return f"the state directory {path} is a file, not a folder"
        existing = path
        while not existing.exists() and existing.parent != existing:
            existing = existing.parent
        if not existing.is_dir():
            return f"the state directory {path} cannot be created: {existing} is a file, not a folder"
        if not os.access(existing, os.W_OK | os.X_OK):
            where = "" if existing == path else f" (in {existing})"
            return f"the state directory {path} is not writable by you{where}"
    except OSError as exc:  # e.g. a parent folder we may not search
        return f"cannot use the state directory {path}: {exc.strerror or exc}"
    return None


def read_token(path):
    """The saved client token, or None when there is none yet."""
    try:
        token = Path(path).read_text(encoding="utf-8-sig").strip()
    except (FileNotFoundError, NotADirectoryError):  # none yet
        return None
    return token or None


def load_or_create_token(path):
    """Return the client token, creating it (owner-only) on first use.

    Two daemons starting at once (two shells' ``claude-fb``) must end up with
    the same token, the one in the file: the token is written to a file of
    its own first, then linked into place, which fails if the other won.
    Where hard links are not supported it is created in place, and a file
    found empty is given a moment to fill before it counts as broken (an
    interrupted write, a full disk) and is replaced.  The server also
    re-reads the file when a client offers a token it does not know
    (:meth:`server.ProxyServer.token_matches`), so the file has the last word.
    """
    path = Path(path)
    token = read_token(path)
    if token:
        return token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = "cpx-" + secrets.token_urlsafe(32)
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        _write_private(tmp, token)
        try:
            os.link(tmp, path)
            return token
        except FileExistsError:  # another start won: use its token, below
            pass
        except OSError:  # no hard links on this file system
            try:
                _write_private(path, token)
                return token
            except FileExistsError:  # another start won: use its token, below
                pass
        theirs = _read_token_when_written(path)
        if theirs:
            return theirs
        os.replace(tmp, path)
        return read_token(path) or token
    finally:
        _remove_quietly(tmp)


def _read_token_when_written(path, wait=0.5):
    """The token in ``path``, waiting up to ``wait`` seconds while it is empty
    (another process may be writing it in place)."""
    deadline = time.monotonic() + wait
    while True:
        token = read_token(path)
        if token or time.monotonic() >= deadline:
            return token
        time.sleep(0.02)


def _remove_quietly(path):
    """Delete ``path`` if it can be; on Windows a reader of its other name may hold it open."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _write_private(path, token):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")


def write_pid_file(path, *, host, port, config_path):
    """Record this process as the daemon for its state directory.

    ``identity`` names this process beyond its pid (see ``process.identity``):
    ``proxy.py stop`` signals a pid only while it still has that identity, so
    a stale record never leads to killing an unrelated process.
    """
    from .process import identity

    record = {
        "pid": os.getpid(),
        "identity": identity(os.getpid()),
        "host": host,
        "port": port,
        "config": str(config_path),
        "started": time.time(),
        "launch_id": os.environ.get(LAUNCH_ID_ENV),
    }
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record), encoding="utf-8")
    _retry_while_in_use(lambda: os.replace(tmp, path))
    return record


def read_pid_file(path):
    """The pid record, or None when absent or unreadable (treated as stale)."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):  # absent, or half-written by hand: treated as stale
        return None
    if not isinstance(record, dict) or not isinstance(record.get("pid"), int):
        return None
    return record


def remove_pid_file(path, pid=None):
    """Remove the pid file, but only if it still names ``pid`` (when given)."""
    path = Path(path)
    if pid is not None:
        record = read_pid_file(path)
        if record and record["pid"] != pid:
            return
    try:
        _retry_while_in_use(lambda: path.unlink(missing_ok=True))
    except PermissionError as exc:
        raise UsageError(f"cannot remove {path}: {exc.strerror or exc} (another program holds it "
                         "open?); close it, or delete the file yourself") from None


#: On Windows a file another process is reading cannot be replaced or deleted
#: for that moment (PermissionError, a sharing violation); it passes at once.
IN_USE_RETRIES = 20
IN_USE_PAUSE = 0.05


def _retry_while_in_use(action, retries=IN_USE_RETRIES, pause=IN_USE_PAUSE):
    """Run ``action``, again for a moment while the file is in use elsewhere."""
    for attempt in range(retries):
        try:
            return action()
        except PermissionError:
            if attempt == retries - 1:
                raise
            time.sleep(pause)
    return None
