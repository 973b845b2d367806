"""The request log (opt-in): one JSON object per line for every forwarded request.

On with ``request_log`` in the config or ``proxy.py serve --request-log
PATH``.  Each line has the request's time, method, path and mode, every
provider tried with its outcome, the status and outcome, timings, token
usage, the request's and the response's headers, and with ``"bodies":
true`` both bodies (a streamed answer as the raw SSE text the client got),
each cut at ``max_body_kb``.

Credentials never reach the file: ``x-api-key``, ``authorization``,
``proxy-authorization``, ``cookie`` and ``set-cookie`` are replaced by
``[redacted]`` wherever they appear, and the client token and every
configured provider key are masked in any other header value and in the
bodies.

Off the request path, like the usage record: a request hands over
references to a bounded queue (a full queue drops the line and counts it),
and one thread formats and writes.  The file is rotated by size
(``max_mb``, ``keep`` old files: ``requests.jsonl.1`` ..), readable by its
owner only.
"""

import datetime
import json
import logging
import queue
import threading

from .forward import key_masks, mask_keys
from .logfile import LogFile
from .relay import ClientWriter
from .usage import REQUEST_COLUMNS, attempts_of, row_of

log = logging.getLogger("claude_proxy")

QUEUE_SIZE = 1000
REDACTED = "[redacted]"
#: Headers whose whole value is a credential.
CREDENTIAL_HEADERS = frozenset({"x-api-key", "authorization", "proxy-authorization", "cookie", "set-cookie"})


class Capture:
    """What one request's client was sent: the status, the headers, and (``max_body``
    not None) the body up to ``max_body`` bytes."""

    def __init__(self, max_body=None):
        self.max_body = max_body
        self.status = None
        self.headers = []
        self.body = bytearray()
        self.truncated = False

    def head(self, status, headers, body=b""):
        self.status = status
        self.headers = list(headers)
        self.keep(body)

    def keep(self, data):
        if self.max_body is None or not data:
            return
        room = self.max_body - len(self.body)
        if len(data) > room:
            self.truncated = True
        if room > 0:
            self.body += data[:room]


class CapturingWriter(ClientWriter):
    """A :class:`relay.ClientWriter` that also keeps what it writes in a :class:`Capture`."""

    def __init__(self, wfile, chunked, capture):
        super().__init__(wfile, chunked)
        self.capture = capture

    def write(self, data):
        super().write(data)
        self.capture.keep(data)


class RequestLog:
    """The JSONL file and its writer thread."""

    def __init__(self, settings, config):
        self.settings = settings
        self.config = config
        self.path = settings.path
        self.written = 0
        self.dropped = 0
        self.problem = None
        self._masks = key_masks(config.providers)
        self._queue = queue.Queue(QUEUE_SIZE)
        self._closing = threading.Event()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = LogFile(self.path, settings.max_bytes, settings.keep)  # OSError: the caller says so
        self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
        self._thread.start()

    def reconfigure(self, config):
        """A reload: mask the keys of ``config`` too, and still every key of before: a
        request begun before a reload (or several) may have its line written after it."""
        masks = dict(self._masks)
        masks.update(key_masks(config.providers))
        self._masks = sorted(masks.items(), key=lambda mask: len(mask[0]), reverse=True)
        self.config = config

    def capture(self):
        """A new :class:`Capture` for a request about to be forwarded."""
        return Capture(self.settings.max_body_bytes if self.settings.bodies else None)

    def add(self, entry, body, client_headers, capture, token):
        """Hand a finished request to the writer (its :class:`usage.Entry`, and its body); never waits."""
        kept = body[:self.settings.max_body_bytes] if self.settings.bodies else None
        try:
            self._queue.put_nowait((entry, len(body), client_headers, capture, token, kept))
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1:
                log.warning("request log: the writer is behind; lines are dropped and counted (see status)")

    def stats(self):
        return {"path": str(self.path), "bodies": self.settings.bodies, "written": self.written,
                "dropped": self.dropped, "problem": self.problem}

    def close(self, timeout=5.0):
        self._closing.set()
        self._thread.join(timeout)
        self._file.close()

    def _run(self):
        while True:
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                if self._closing.is_set():
                    return
                continue
            try:
                line = json.dumps(self.line(*item), ensure_ascii=False) + "\n"
                self._file.write(line.encode("utf-8", "backslashreplace"))
                self.written += 1
                self.problem = None
            except OSError as exc:
                if self.problem is None:
                    self.problem = f"cannot write {self.path}: {exc.strerror or exc}"
                    log.warning("request log: %s; lines are lost until it can be written", self.problem)
            except Exception:  # a bug here must not stop the log
                log.exception("request log: could not write a line")

    def line(self, entry, body_size, client_headers, capture, token, request_body):
        """The JSON object logged for one request."""
        masks = self._masks_with(token)
        request, attempts = row_of(entry, self.config)
        fields = dict(zip(REQUEST_COLUMNS, request))
        when = datetime.datetime.fromtimestamp(entry.time, datetime.timezone.utc)
        record = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "method": entry.method,
            "path": entry.path,
            "mode": fields["mode"],
            "pinned": fields["pinned"],
            "provider": fields["provider"],
            "tried": [{"provider": name, "outcome": outcome, **({"model": model} if model else {})}
                      for name, model, outcome, _ in attempts_of(entry.tried)],
            "model": fields["model"],
            "model_sent": fields["model_sent"],
            "status": fields["status"],
            "outcome": fields["outcome"],
            "error": fields["error"],
            "stream": bool(fields["stream"]),
            "ttfb_ms": fields["ttfb_ms"],
            "total_ms": fields["total_ms"],
            "usage": {name: fields[name] for name in REQUEST_COLUMNS[-4:]},
            "request_headers": redact_headers(client_headers, masks),
            "response_headers": redact_headers(capture.headers if capture else [], masks),
        }
        if request_body is not None:
            record["request_body"] = _text(mask_keys(request_body, masks))
            record["request_body_truncated"] = body_size > len(request_body)
            record["response_body"] = _text(mask_keys(bytes(capture.body), masks)) if capture else ""
            record["response_body_truncated"] = bool(capture and capture.truncated)
        return record

    def _masks_with(self, token):
        if not token:
            return self._masks
        return sorted([(token.encode(), REDACTED.encode()), *self._masks], key=lambda m: len(m[0]), reverse=True)


def redact_headers(headers, masks):
    """``{name: value}`` (names lowercased, repeats joined with ", "), credentials redacted."""
    out = {}
    for name, value in headers:
        lowered = name.lower()
        if lowered in CREDENTIAL_HEADERS:
            value = REDACTED
        else:
            value = mask_keys(str(value).encode("utf-8", "surrogateescape"), masks).decode("utf-8", "replace")
        out[lowered] = f"{out[lowered]}, {value}" if lowered in out else value
    return out


def _text(data):
    return data.decode("utf-8", "replace")
