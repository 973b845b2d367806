"""The usage record: ``usage.db`` in the state directory, one row per request
that reached the forwarding stage.

What a row holds: when the request began (UTC epoch seconds), the session's
mode (fallback, or pinned and to which provider), the provider that answered
and every provider tried with its outcome (table ``attempts``), the model the
client asked for and the model sent, the status the client got, the outcome,
whether the answer streamed, time to first byte and total time, and the
token counts.  Never a body, a header, a key or a token.

Off the request path: a request hands a small :class:`Entry` (made by
:meth:`Entry.of` from the ended :class:`forward.Exchange`) to
:meth:`UsageRecord.add`, which puts it in a bounded queue without waiting
(a full queue drops it and counts the drop).  One writer thread owns the
database: it takes what has queued up, inserts it in one short transaction
(WAL mode, so ``proxy.py usage`` reads while it writes) and prunes rows older
than ``usage_retention_days`` now and then.

The database is an application file (sqlite.org's guidance): the schema
version is ``PRAGMA user_version`` and :data:`MIGRATIONS` brings any older
file up to date.  Whatever goes wrong with it is the record's problem, never
a request's: a locked file is retried, a read-only one (its owner write bit
cleared, or SQLite saying so) is left alone until it is writable again, a
file that is not a database (garbage) is moved aside to
``usage.db.corrupt-<time>`` and a new one started.  Each is logged once,
saying what to do; :meth:`UsageRecord.stats` shows it in ``/status``.
"""

import dataclasses
import logging
import os
import queue
import sqlite3
import stat
import threading
import time
from pathlib import Path

from . import upstream

log = logging.getLogger("claude_proxy")

QUEUE_SIZE = 10_000          # entries waiting for the writer; more are dropped (and counted)
BATCH_MAX = 500              # entries written in one transaction at most
BATCH_LINGER = 0.1           # seconds the writer waits after a first entry for more to join it
BUSY_TIMEOUT = 2.0           # seconds SQLite waits for another program's lock before saying "locked"
LOCKED_RETRY = 5.0           # seconds before a batch that met a lock is tried again
PRUNE_EVERY = 3600.0         # seconds between retention passes
PRUNE_CHUNK = 5000           # rows deleted per transaction when pruning
PENDING_BODY_LIMIT = 32 * 1024 * 1024  # request bodies held for the writer (to read the model) at most
MODEL_HEAD = 64 * 1024       # what is kept of a body beyond that limit

#: Outcomes of a request (the ``outcome`` column).
OK, FAILED_OVER, ALL_FAILED, CANCELLED, CUT = "ok", "failed over", "all failed", "client cancelled", "cut"
NO_PROVIDER, SHUTTING_DOWN, ERROR = "no provider", "shutting down", "error"
#: Outcomes that are a failure in the end (the report's ``failures``).
FAILURES = (ALL_FAILED, CUT, NO_PROVIDER, SHUTTING_DOWN, ERROR)

#: ``MIGRATIONS[n]`` brings a database at ``user_version`` n to n + 1.  Only ever append.
MIGRATIONS = [
    (
        """CREATE TABLE requests (
            id INTEGER PRIMARY KEY,
            time REAL NOT NULL,               -- when it began, UTC epoch seconds
            mode TEXT NOT NULL,               -- the session's: fallback | strategy (its own) | pinned
            strategy TEXT,                    -- unless pinned: the strategy that ordered the providers
            pinned TEXT,                      -- pinned: the provider named in the URL
            method TEXT NOT NULL,
            path TEXT NOT NULL,               -- the API path, without the query
            provider TEXT,                    -- the provider that answered, if one did
            model TEXT,                       -- the model the client asked for
            model_sent TEXT,                  -- the model the answering provider was sent
            status INTEGER,                   -- the status the client got, if any
            outcome TEXT NOT NULL,            -- ok | failed over | all failed | client cancelled | cut | ...
            error TEXT,                       -- the proxy's words for a failure (never a provider's body)
            stream INTEGER NOT NULL,          -- 1: the answer was an event stream
            failovers INTEGER NOT NULL,       -- providers that failed and passed the request on
            ttfb_ms REAL,
            total_ms REAL NOT NULL,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            cache_read_input_tokens INTEGER NOT NULL,
            cache_creation_input_tokens INTEGER NOT NULL
        )""",
        "CREATE INDEX requests_time ON requests (time)",
        """CREATE TABLE attempts (
            request_id INTEGER NOT NULL,
            seq INTEGER NOT NULL,             -- 0 for the first provider tried
            provider TEXT NOT NULL,
            model TEXT,                       -- the model tried, when the provider has several for it
            outcome TEXT NOT NULL,            -- its status, or what went wrong (timeout, refused, ...)
            passed_on INTEGER NOT NULL,       -- 1: it failed and the request went on to another provider
            PRIMARY KEY (request_id, seq)
        ) WITHOUT ROWID""",
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)

REQUEST_COLUMNS = (
    "time", "mode", "strategy", "pinned", "method", "path", "provider", "model", "model_sent", "status",
    "outcome", "error", "stream", "failovers", "ttfb_ms", "total_ms", "input_tokens", "output_tokens",
    "cache_read_input_tokens", "cache_creation_input_tokens",
)
INSERT_REQUEST = (f"INSERT INTO requests (id, {', '.join(REQUEST_COLUMNS)}) "
                  f"VALUES ({', '.join('?' * (1 + len(REQUEST_COLUMNS)))})")
NEXT_REQUEST_ID = "SELECT COALESCE(MAX(id), 0) + 1 FROM requests"
MAX_ROWID = 2 ** 63 - 1
INSERT_ATTEMPT = ("INSERT INTO attempts (request_id, seq, provider, model, outcome, passed_on) "
                  "VALUES (?, ?, ?, ?, ?, ?)")


@dataclasses.dataclass
class Entry:
    """What a finished request hands the writer: copies and references, no work."""

    time: float
    method: str
    path: str
    mode: str          # the exchange's: the pinned provider's name, or the strategy in effect
    session: str       # fallback (the root URL), strategy (/strategy/NAME) or pinned (/provider/NAME)
    tried: list
    provider: object   # config.Provider that answered, or None
    status: int
    outcome: str
    failure: str
    stream: bool
    ttfb: float
    total: float
    tokens: tuple
    body: bytes        # the request body, when the model must still be read from it (by the writer)
    model: str = None  # the requested model, when it is known already
    target: str = None  # the model sent to the provider last tried, when the proxy chose it

    @classmethod
    def of(cls, ex, now=None, wall=None):
        """The entry for the :class:`forward.Exchange` ``ex``, which has ended."""
        now = time.monotonic() if now is None else now
        wall = time.time() if wall is None else wall
        usage = ex.usage
        model = ex.model_seen()  # the common case, and Claude Code's: the model named first
        body = ex.body if model is None and ex.body else b""  # else the writer reads it
        outcome = ex.outcome
        if outcome is None:  # ended without saying how: an internal error, or a hang-up
            outcome = CANCELLED if ex.cancel is not None and ex.cancel.is_set() else ERROR
        return cls(
            time=wall - (now - ex.started),
            method=ex.method, path=ex.api_path.partition("?")[0], mode=ex.mode, tried=list(ex.tried),
            session="pinned" if ex.path.startswith("/provider/") else
            "strategy" if ex.path.startswith("/strategy/") else "fallback",
            provider=ex.provider, status=ex.status, outcome=outcome, failure=ex.failure,
            stream=bool(ex.stream),
            ttfb=None if ex.first_byte is None else ex.first_byte - ex.started,
            total=now - ex.started,
            tokens=(0, 0, 0, 0) if usage is None else (
                usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_creation_tokens),
            body=body, model=model, target=ex.target,
        )


def attempts_of(tried):
    """``[(provider, model, outcome, passed_on), ...]`` from an exchange's ``tried`` notes
    ("name=outcome", or "name[model]=outcome" when a provider has several models).
    ``passed_on``: it failed and the request went on to another provider."""
    parsed = []
    for note in tried:
        name, _, outcome = note.rpartition("=")
        provider, bracket, model = name.partition("[")
        parsed.append((provider, model[:-1] if bracket else None, outcome))
    return [(provider, model, outcome, int(later is not None and later[0] != provider))
            for (provider, model, outcome), later in zip(parsed, [*parsed[1:], None])]


def requested_model(body):
    """The top-level ``"model"`` of a JSON request body, or None."""
    return upstream.model_first(body) or upstream.requested_model(body)


def row_of(entry, config):
    """The ``requests`` row and the ``attempts`` rows for ``entry`` (in the writer)."""
    attempts = attempts_of(entry.tried)
    failovers = sum(passed_on for *_, passed_on in attempts)
    outcome = entry.outcome
    if outcome == "answered":
        outcome = CUT if entry.failure else FAILED_OVER if failovers else OK
    model = entry.model if entry.model is not None else requested_model(entry.body)
    provider = entry.provider
    pinned = entry.session == "pinned"
    row = (
        entry.time, entry.session, None if pinned else entry.mode,
        entry.mode if pinned else None, entry.method, entry.path,
        provider.name if provider is not None else None, model,
        None if provider is None else entry.target or (provider.map_model(model) if model is not None else None),
        entry.status, outcome, entry.failure, int(entry.stream), failovers,
        None if entry.ttfb is None else round(entry.ttfb * 1000, 3), round(entry.total * 1000, 3),
        *entry.tokens,
    )
    return row, [(seq, *attempt) for seq, attempt in enumerate(attempts)]


MAX_PARAMETERS = 999  # per statement: SQLite's limit before 3.32 (SQLITE_MAX_VARIABLE_NUMBER)


def insert_rows(conn, insert, rows):
    """Run ``insert`` (an ``INSERT ... VALUES (?, ...)``) for each of ``rows``, as a few
    multi-row statements: SQLite runs each in one step, and the GIL is handed back
    and forth once per statement, where ``executemany`` does it once per row (which,
    with hundreds of request threads waiting for the GIL, costs far more than the insert)."""
    if not rows:
        return
    head, _, one = insert.rpartition(" VALUES ")
    per = MAX_PARAMETERS // len(rows[0])
    for start in range(0, len(rows), per):
        chunk = rows[start:start + per]
        conn.execute(f"{head} VALUES {', '.join([one] * len(chunk))}", [v for row in chunk for v in row])


def connect_for_reading(path):
    """A read-only connection to ``path`` (which must exist), for reports:
    it never writes, so it never blocks the daemon's writer or changes the file."""
    conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT)
    conn.execute("PRAGMA query_only = 1")
    return conn


def problem_kind(exc):
    """What a :class:`sqlite3.Error` says about the file: locked, readonly, corrupt, or other."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc).lower()
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text or "busy" in text:
        return "locked"
    if name.startswith("SQLITE_READONLY") or "readonly" in text or "read-only" in text:
        return "readonly"
    if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")) or "not a database" in text or "malformed" in text:
        return "corrupt"
    return "other"


class UsageRecord:
    """``usage.db`` and its writer thread.  :meth:`add` is all a request does."""

    def __init__(self, path, config, retention_days=90, queue_size=QUEUE_SIZE, clock=time.time):
        self.path = Path(path)
        self.config = config
        self.retention_days = retention_days
        self.clock = clock
        self.recorded = 0    # rows written
        self.dropped = 0     # entries dropped because the queue was full
        self.unwritten = 0   # entries the database could not take (read-only, newer schema, ...)
        self.problem = None  # the database's problem now, as logged; None when all is well
        self._problem_kind = None
        self._queue = queue.Queue(queue_size)
        self._lock = threading.Lock()
        self._pending_body_bytes = 0
        self._dropping = False
        self._closing = threading.Event()
        self._conn = None
        self._file_id = None
        self._next_prune = 0.0
        self._thread = threading.Thread(target=self._run, name="usage-writer", daemon=True)
        self._thread.start()

    # --- the request side -------------------------------------------------------

    def add(self, entry):
        """Hand an ended request's :class:`Entry` to the writer; never waits, never raises."""
        try:
            with self._lock:
                if self._pending_body_bytes + len(entry.body) > PENDING_BODY_LIMIT:
                    entry.body = entry.body[:MODEL_HEAD]
                self._pending_body_bytes += len(entry.body)
            self._queue.put_nowait(entry)
        except queue.Full:
            with self._lock:
                self._pending_body_bytes -= len(entry.body)
                self.dropped += 1
                first = not self._dropping
                self._dropping = True
            if first:
                log.warning("usage record: the writer is behind (%d entries queued); requests are not "
                            "slowed, their usage rows are dropped and counted (see status)",
                            self._queue.maxsize)
        except Exception:  # a bug here must never reach the request
            log.exception("usage record: could not hand over a request")

    def reconfigure(self, config):
        """A reload: prices and retention from ``config`` for the rows written from now on."""
        self.config, self.retention_days = config, config.usage_retention_days

    def stats(self):
        """For ``/status``: where the record is and how it is doing."""
        return {"database": str(self.path), "recorded": self.recorded, "queued": self._queue.qsize(),
                "dropped": self.dropped, "unwritten": self.unwritten, "problem": self.problem}

    def close(self, timeout=5.0):
        """Write what is queued (for up to ``timeout`` seconds) and stop the writer."""
        self._closing.set()
        try:
            self._queue.put_nowait(None)  # wake the writer now
        except queue.Full:  # it has plenty to wake it
            pass
        self._thread.join(timeout)

    # --- the writer thread --------------------------------------------------------

    def _run(self):
        try:
            while True:
                closing = self._closing.is_set()
                try:
                    batch = [self._queue.get(timeout=0.01 if closing else 0.5)]
                except queue.Empty:
                    if closing:
                        break
                    self._prune_if_due()
                    continue
                if not closing:  # let a few more arrive: one transaction for many requests
                    self._closing.wait(BATCH_LINGER)
                while len(batch) < BATCH_MAX:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                batch = [entry for entry in batch if entry is not None]  # None: close() waking it
                if batch:
                    self._write(batch)
                self._prune_if_due()
        except Exception:  # the record stops; requests go on
            log.exception("usage record: the writer stopped; usage is no longer recorded until a restart")
        finally:
            self._close_connection()

    def _write(self, batch):
        with self._lock:
            self._pending_body_bytes -= sum(len(e.body) for e in batch)
            self._dropping = False
        rows = [row_of(entry, self.config) for entry in batch]
        moved_aside = False
        while True:
            conn = None
            try:
                conn = self._connection()
                if conn is None:
                    self.unwritten += len(rows)
                    return
                conn.execute("BEGIN IMMEDIATE")
                # Ids given here (the transaction holds the write lock), so that each
                # table takes the whole batch in a few multi-row statements.
                first_id = conn.execute(NEXT_REQUEST_ID).fetchone()[0]
                if isinstance(first_id, int) and first_id + len(rows) <= MAX_ROWID:
                    ids = range(first_id, first_id + len(rows))
                    insert_rows(conn, INSERT_REQUEST, [(i, *request) for i, (request, _) in zip(ids, rows)])
                else:  # ids used up to the top (a row put there by hand): SQLite finds free ones
                    ids = [conn.execute(INSERT_REQUEST, (None, *request)).lastrowid for request, _ in rows]
                insert_rows(conn, INSERT_ATTEMPT, [(i, *attempt) for i, (_, attempts) in zip(ids, rows)
                                                   for attempt in attempts])
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn is not None:
                    _rollback(conn)
                kind = problem_kind(exc)
                if kind == "locked" and not self._closing.is_set():
                    self._trouble("locked", f"{self.path} is locked by another program ({exc}); usage rows "
                                  "wait and are retried (close whatever holds it open in a write transaction)")
                    self._closing.wait(LOCKED_RETRY)
                    continue
                if kind == "corrupt" and not moved_aside:
                    moved_aside = True
                    if self._move_aside(exc):
                        continue
                else:
                    self._trouble(kind, self._advice(kind, exc))
                self._close_connection()
                self.unwritten += len(rows)
                return
            self.recorded += len(rows)
            self._remember_file()
            self._all_well()
            return

    def _connection(self):
        """The open connection, reopened if the file changed under it; None if it must not
        be written.  Raises :class:`sqlite3.Error` when the file cannot be opened as a database."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            info = None
        except OSError as exc:
            self._trouble("other", f"cannot use {self.path}: {exc.strerror or exc}; usage is not recorded")
            return None
        if info is not None and not info.st_mode & stat.S_IWUSR:
            self._close_connection()
            self._trouble("readonly", self._advice("readonly", None))
            return None
        if self._conn is not None and info is not None and _identity(info) == self._file_id:
            return self._conn
        # Removed, replaced or written by another program: look again.  Its header is read
        # before the old connection closes: closing writes the journal back into the file.
        if info is not None and info.st_size and not _has_sqlite_header(self.path):
            if not self._move_aside("its first bytes are not SQLite's"):
                return None
        elif self._conn is not None:
            self._close_connection()
            if info is None:
                log.warning("usage record: %s was removed; starting a new one", self.path)
        return self._open()

    def _open(self):
        """Open (creating it if need be) and migrate the database; None if it is from a newer version."""
        try:
            if not self.path.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))  # owner-only, like the log
        except OSError as exc:
            self._trouble("other", f"cannot create {self.path}: {exc.strerror or exc}; usage is not recorded "
                                   "until it can be")
            return None
        conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                conn.close()
                self._trouble("newer", f"{self.path} was made by a newer claude-proxy (schema {version}, this "
                                       f"one knows {SCHEMA_VERSION}); usage is not recorded: upgrade, or move "
                                       "the file away to start a new one")
                return None
            for number in range(version, SCHEMA_VERSION):
                conn.execute("BEGIN IMMEDIATE")
                for statement in MIGRATIONS[number]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number + 1}")
                conn.execute("COMMIT")
        except sqlite3.Error:
            _rollback(conn)
            conn.close()
            raise
        self._conn = conn
        self._remember_file()
        return conn

    def _move_aside(self, why):
        """The file is not a database: move it (and its -wal, -shm) aside so that a new
        one is started.  False (after saying so) if it cannot be moved."""
        self._close_connection()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        number = 1
        while aside.exists():  # twice in a second: never over an earlier one
            number += 1
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{number}")
        try:
            for suffix in ("-wal", "-shm", ""):  # the journal first: never replayed into a new file
                source = Path(f"{self.path}{suffix}")
                if source.exists():
                    os.replace(source, Path(f"{aside}{suffix}"))
        except OSError as err:
            self._trouble("corrupt", f"{self.path} is not a usable database ({why}) and cannot be moved aside "
                                     f"({err.strerror or err}); usage is not recorded: move or delete it")
            return False
        log.warning("usage record: %s was not a usable database (%s); moved it aside to %s and started a "
                    "new one", self.path, why, aside.name)
        return True

    def _advice(self, kind, exc):
        if kind == "readonly":
            return (f"{self.path} is read-only; usage is not recorded until it is writable again "
                    f"(chmod u+w it, or move it away to start a new one)")
        if kind == "corrupt":
            return f"{self.path} is not a usable database ({exc}); usage is not recorded: move or delete it"
        return f"cannot write {self.path} ({exc}); usage is not recorded until it can be"

    def _trouble(self, kind, message):
        """Log a problem once (until it is over), and show it in status."""
        if self._problem_kind != kind:
            log.warning("usage record: %s", message)
            self._problem_kind = kind
            self.problem = message

    def _all_well(self):
        if self._problem_kind is not None:
            log.warning("usage record: %s is written again", self.path)
            self._problem_kind = self.problem = None

    def _remember_file(self):
        try:
            self._file_id = _identity(os.stat(self.path))
        except OSError:
            self._file_id = None

    def _close_connection(self):
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:  # a file gone bad: nothing more to save in it
                pass
            self._conn = None
            self._file_id = None

    # --- retention ---------------------------------------------------------------------

    def _prune_if_due(self):
        if not self.retention_days or time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + PRUNE_EVERY
        try:
            conn = self._connection()
        except sqlite3.Error:  # the next write says what is wrong
            return
        if conn is not None:
            self.prune(conn)

    def prune(self, conn):
        """Delete the rows older than ``retention_days``, a chunk per short transaction."""
        cutoff = self.clock() - self.retention_days * 86400
        removed = 0
        try:
            while True:
                conn.execute("BEGIN IMMEDIATE")
                ids = [row[0] for row in conn.execute(
                    "SELECT id FROM requests WHERE time < ? ORDER BY id LIMIT ?", (cutoff, PRUNE_CHUNK))]
                if ids:
                    conn.execute("DELETE FROM attempts WHERE request_id IN "
                                 "(SELECT id FROM requests WHERE time < ? AND id <= ?)", (cutoff, ids[-1]))
                    conn.execute("DELETE FROM requests WHERE time < ? AND id <= ?", (cutoff, ids[-1]))
                conn.execute("COMMIT")
                removed += len(ids)
                if len(ids) < PRUNE_CHUNK:
                    break
        except sqlite3.Error as exc:
            _rollback(conn)
            log.warning("usage record: pruning %s failed (%s); tried again later", self.path, exc)
            return removed
        self._remember_file()
        if removed:
            log.info("usage record: removed %d request(s) older than %g days from %s",
                     removed, self.retention_days, self.path.name)
        return removed


class NoRecord:
    """``usage_record`` false: nothing is written."""

    path = None

    def add(self, entry):
        pass

    def reconfigure(self, config):
        pass

    def stats(self):
        return {"database": None, "recorded": 0, "queued": 0, "dropped": 0, "unwritten": 0,
                "problem": "off (usage_record is false)"}

    def close(self, timeout=None):
        pass


def _identity(info):
    """What changes when the file is replaced or written by anyone but the writer."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def _has_sqlite_header(path):
    try:
        with open(path, "rb") as file:
            return file.read(16) == b"SQLite format 3\x00"
    except OSError:  # unreadable: opening it will say why
        return True


def _rollback(conn):
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:  # no transaction open (it failed to begin): nothing to undo
        pass
