"""The log: ``proxy.log`` in the state directory, rotated by size, and the console.

Everything that came from outside (paths, provider error text) goes into a
line through :func:`printable`, so nobody can forge a log line.  The files
are readable by their owner only (:func:`open_private`), like the token.

A line is written for every request, so records are kept lean: no caller
lookup, thread, process or task fields (the switches the Logging HOWTO's
"Optimization" section documents; no line shows them), and each line is
built once, with its time text made once per second (:class:`LineFormatter`).
"""

import logging
import os
import sys
import threading
import time
from pathlib import Path

LOG_MAX_BYTES = 5 * 1024 * 1024
LOG_BACKUPS = 3
LOG_BATCH = 0.1  # seconds: under load, proxy.log's lines go out together this often


class LogFile(logging.Handler):
    """``proxy.log``: UTF-8 lines, rotated by size into ``proxy.log.1`` .. ``.N``.

    Unlike ``RotatingFileHandler`` it formats each record once, outside its
    lock, and counts the bytes it wrote instead of asking the file: the log
    line is on every request's path.  A line is one unbuffered write, so
    ``tail -f`` sees it at once, except under load when ``batch`` is given:
    a line that comes within ``batch`` seconds of the last write waits for
    the next one, at most ``batch`` seconds, written by a thread of its own
    with the lines that came meanwhile (one system call for many requests;
    a crash loses at most those).
    """

    def __init__(self, path, max_bytes, backups, batch=None):
        super().__init__()
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self._file = None
        self._size = 0
        self._open()
        self.batch = batch
        self._pending = []       # lines waiting for the batch writer
        self._last_write = 0.0   # time.monotonic() of the last write
        self._wake = threading.Event()
        if batch:
            threading.Thread(target=self._write_batches, name="log-writer", daemon=True).start()

    def _open(self):
        self._file = open_private(self.path)
        self._size = os.fstat(self._file.fileno()).st_size

    def handle(self, record):
        if not self.filter(record):
            return False
        try:
            line = (self.format(record) + "\n").encode("utf-8", "backslashreplace")
        except Exception:  # a bad format argument: logging's own policy, never the request's failure
            self.handleError(record)
            return False
        try:
            return self.write(line)
        except Exception:  # a full disk, say: reported by logging, the request goes on
            self.handleError(record)
        return True

    def write(self, line):
        """Append ``line`` (bytes, one whole line), rotating first if it would pass
        ``max_bytes`` (or hand it to the batch writer); False if the file is closed."""
        with self.lock:
            if self._file is None:  # closed: a request thread outlived the stop
                return False
            if self.batch:
                now = time.monotonic()
                if self._pending or now - self._last_write < self.batch:
                    self._pending.append(line)
                    if len(self._pending) == 1:
                        self._wake.set()
                    return True
                self._last_write = now
            self._append(line)
            return True

    def _append(self, data):
        """Write ``data`` (whole lines), rotating first if it would pass ``max_bytes`` (lock held)."""
        if self._size and self._size + len(data) > self.max_bytes:
            self._rotate()
        self._file.write(data)
        self._size += len(data)

    def flush(self):
        """Write the lines waiting for the batch writer now."""
        with self.lock:
            self._flush_pending()

    def _flush_pending(self):
        """(lock held)"""
        if not self._pending or self._file is None:
            return
        data, self._pending = b"".join(self._pending), []
        self._last_write = time.monotonic()
        try:
            self._append(data)
        except OSError as exc:  # a full disk, say: these lines are lost, the next ones are tried
            print(f"claude-proxy: cannot write {self.path}: {exc.strerror or exc}", file=sys.stderr)

    def _write_batches(self):
        while True:
            self._wake.wait()
            time.sleep(self.batch)
            with self.lock:
                self._wake.clear()
                self._flush_pending()
                if self._file is None:
                    return

    def emit(self, record):
        self.handle(record)

    def _rotate(self):
        self._file.close()
        try:
            for number in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{number}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{number + 1}"))
            if self.backups:
                os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
            else:
                self.path.unlink()
        except OSError:
            pass  # e.g. another program holds the file open on Windows: keep writing to it
        self._open()
        self._size = 0  # a failed rotation is tried again after another max_bytes, not per line

    def close(self):
        with self.lock:
            self._flush_pending()
            if self._file is not None:
                self._file.close()
                self._file = None
        self._wake.set()  # the batch writer sees the file closed and ends
        super().close()


class LineFormatter(logging.Formatter):
    """``TIME LEVEL message`` (or ``TIME message`` without ``level``), as
    ``Formatter("%(asctime)s %(levelname)s %(message)s", datefmt)`` makes it,
    built in one step, the time text (without milliseconds) made once per second."""

    def __init__(self, datefmt=None, level=True):
        super().__init__("%(asctime)s %(levelname)s %(message)s" if level else "%(asctime)s %(message)s",
                         datefmt)
        self.level = level
        self._second = (None, "")  # (whole second, its text): one tuple, swapped whole across threads

    def formatTime(self, record, datefmt=None):
        second = int(record.created)
        cached, text = self._second
        if cached != second:
            text = time.strftime(self.datefmt or self.default_time_format, self.converter(record.created))
            self._second = (second, text)
        if self.datefmt:
            return text
        return self.default_msec_format % (text, record.msecs)

    def format(self, record):
        record.message = record.getMessage()
        record.asctime = self.formatTime(record)
        if self.level:
            line = f"{record.asctime} {record.levelname} {record.message}"
        else:
            line = f"{record.asctime} {record.message}"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line = f"{line}\n{record.exc_text}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


def lean_records():
    """Make log records without the fields no line shows: the caller's file,
    line and function, the thread, the process, the asyncio task (the Logging
    HOWTO's "Optimization" switches; they apply to the whole process, which
    is the proxy's)."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    if hasattr(logging, "logAsyncioTasks"):  # 3.12+
        logging.logAsyncioTasks = False


def open_private(path, truncate=False):
    """``path`` opened for appending (or rewriting) unbuffered bytes, readable
    and writable by its owner only (0600 on POSIX; on Windows the folder's
    access list applies).  A file left by an older version with wider
    permissions is narrowed."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if truncate else os.O_APPEND)
    fd = os.open(path, flags | getattr(os, "O_BINARY", 0), 0o600)
    if os.name == "posix":
        try:
            os.fchmod(fd, 0o600)
        except OSError:  # not ours to change (another user's file): it still gets written
            pass
    return os.fdopen(fd, "wb" if truncate else "ab", buffering=0)


def setup_logging(paths, quiet):
    """Log to ``proxy.log`` (UTF-8, rotated by size) and, unless quiet, to stderr."""
    lean_records()
    logger = logging.getLogger("claude_proxy")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    paths.dir.mkdir(parents=True, exist_ok=True)
    file_handler = LogFile(paths.log, LOG_MAX_BYTES, LOG_BACKUPS, batch=LOG_BATCH)
    file_handler.setFormatter(LineFormatter())
    logger.addHandler(file_handler)
    if not quiet:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(LineFormatter("%H:%M:%S", level=False))
        console.addFilter(lambda record: getattr(record, "console", True))
        logger.addHandler(console)


def printable(text):
    """``text`` for a log line: control characters escaped, so a request cannot forge lines."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
