"""The dashboard: the proxy shown live in a browser (``GET /dashboard``).

The page (``dashboard.html`` beside this module, read once when the daemon
starts) is self-contained: inline CSS and script, no other file, nothing
from the network.  It follows ``GET /events`` (:mod:`feed`), reads
``GET /dashboard/data`` (:mod:`dashboard_data`) for its pictures, and
changes things with ``POST /control``, as ``proxy.py disable`` does.

Who may see it: whoever holds the client token, without the token ever
reaching the browser, the page or a URL.

1. ``proxy.py dashboard`` asks the daemon, with the token, for a one-time
   code (``POST /dashboard/link``): random, good once, for ``CODE_SECONDS``.
2. It opens ``/dashboard/login?code=CODE`` in the browser.  The daemon takes
   the code back (a used or expired one is refused), starts a session, and
   answers with a cookie holding the session's random secret and a 303 to
   ``/dashboard``: the code leaves the address bar, and a redirect leaves no
   history entry.  The cookie is ``HttpOnly`` (no script reads it) and
   ``SameSite=Strict`` (another site's page never sends it); not ``Secure``,
   since the proxy speaks plain HTTP on the loopback address.
3. The page's own requests carry the cookie: ``/dashboard``, its data,
   ``/events`` and ``/control`` accept it as they accept the token.  Nothing
   else does: API requests keep their token rules.

A *site* is a host without its port, so a page served by another program
on another port of 127.0.0.1 is the same site as the dashboard and its
requests would carry the cookie.  So a request signed in by the cookie is
also refused (403) when the browser says it comes from another page
(``Sec-Fetch-Site`` other than ``same-origin`` or ``none``), and one that
changes something (``POST``) must name the page's own origin in ``Origin``
(``fetch`` always does).  Only a link followed from another site's page
to the dashboard itself gets a page that shows nothing but goes to the
dashboard again, now as the dashboard's own navigation: then the cookie
goes along (``SameSite=Strict`` holds it back from the first one), and
the user sees the dashboard as if the address had been typed.  :mod:`access` applies as to every request: a
foreign ``Host`` gets a 421, a foreign ``Origin`` a 403.

Sessions live in the daemon's memory only: a restart signs every browser
out (run ``proxy.py dashboard`` again).  The cookie's name carries the
port, because cookies do not tell ports apart: two proxies (two configs)
keep a session each in one browser.
"""

import dataclasses
import html
import json
import logging
import re
import secrets
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs

from .errors import error_type

log = logging.getLogger("claude_proxy")

PAGE_FILE = Path(__file__).with_name("dashboard.html")
CODE_SECONDS = 60.0   # how long a sign-in link works
MAX_CODES = 16        # unused codes kept at most (the oldest is forgotten first)
MAX_SESSIONS = 64     # signed-in browsers kept at most (the oldest is signed out first)
MAX_DAYS = 366        # the longest tokens-per-day picture the data endpoint draws
SECRET_BYTES = 32     # of randomness in a code and in a session secret
LINK_PATH = "/dashboard/link"
LOGIN_PATH = "/dashboard/login"
PAGE_PATH = "/dashboard"
DATA_PATH = "/dashboard/data"
SAFE_METHODS = ("GET", "HEAD")
#: What ``Sec-Fetch-Site`` may say of a request signed in by the cookie: the page
#: itself, or the user (an address typed, a bookmark, a link opened from a terminal).
OWN_FETCH_SITES = ("same-origin", "none")

# How a request without the token fares on its dashboard session.
NO_SESSION = "no session"
SIGNED_IN = "signed in"
FOREIGN = "from another page"

_CODE_PARAMETER = re.compile(r"([?&]code=)[^&#]*")


class SignIns:
    """One-time codes and the sessions they start, in memory; thread-safe.

    ``clock`` is monotonic seconds (tests pass their own).
    """

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._codes = {}     # code -> when it expires; oldest first
        self._sessions = {}  # secret -> when it began; oldest first
        self._lock = threading.Lock()

    def new_code(self):
        """A fresh code, good once within ``CODE_SECONDS``."""
        code = secrets.token_urlsafe(SECRET_BYTES)
        with self._lock:
            self._forget_expired()
            while len(self._codes) >= MAX_CODES:
                del self._codes[next(iter(self._codes))]
            self._codes[code] = self._clock() + CODE_SECONDS
        return code

    def redeem(self, code):
        """The secret of a new session if ``code`` is a live code (which is used up
        by this), else None: unknown, used already, or expired."""
        with self._lock:
            self._forget_expired()
            if not code or self._codes.pop(code, None) is None:
                return None
            while len(self._sessions) >= MAX_SESSIONS:
                del self._sessions[next(iter(self._sessions))]
            secret = secrets.token_urlsafe(SECRET_BYTES)
            self._sessions[secret] = self._clock()
            return secret

    def knows(self, secrets_offered):
        """Is one of ``secrets_offered`` the secret of a session?"""
        with self._lock:
            return any(secret in self._sessions for secret in secrets_offered)

    def _forget_expired(self):
        now = self._clock()
        for code in [code for code, until in self._codes.items() if until <= now]:
            del self._codes[code]


@dataclasses.dataclass
class Answer:
    """A whole response of the dashboard's: status, headers, body."""

    status: int
    headers: list
    body: bytes = b""


@dataclasses.dataclass
class Request:
    """What the dashboard needs to know of a request under ``/dashboard``."""

    method: str
    path: str           # without the query
    query: str
    headers: object     # the request's headers (``get``, ``get_all``)
    token: bool         # it carries the client token
    figures: object     # ``figures(days)``: the data endpoint's JSON (a callable, run only if asked)


class Dashboard:
    """The sign-in and the page of one proxy listening on ``port``."""

    def __init__(self, port, clock=time.monotonic):
        self.sign_ins = SignIns(clock)
        self.cookie_name = f"claude_proxy_{port}"
        self._page = PAGE_FILE.read_text(encoding="utf-8")  # once: the page never changes while it runs

    # --- who is signed in ---------------------------------------------------------------

    def session_verdict(self, method, headers):
        """``SIGNED_IN``, ``NO_SESSION``, or ``FOREIGN``: the request's cookie names a
        session but it comes from another page (see the module's docstring)."""
        if not self.sign_ins.knows(self._cookie_values(headers)):
            return NO_SESSION
        site = (headers.get("sec-fetch-site") or "").strip().lower()
        if site and site not in OWN_FETCH_SITES:
            return FOREIGN
        if method not in SAFE_METHODS and not _same_origin(headers):
            return FOREIGN
        return SIGNED_IN

    def _cookie_values(self, headers):
        """The values the request's ``Cookie`` header gives this proxy's cookie (RFC 6265 section 5.4)."""
        values = []
        for field in headers.get_all("cookie") or ():
            for pair in field.split(";"):
                name, equals, value = pair.strip().partition("=")
                if equals and name == self.cookie_name:
                    values.append(value.strip().strip('"'))
        return values

    # --- the answers ----------------------------------------------------------------------

    def answer(self, request):
        """The :class:`Answer` to ``request`` (a :class:`Request` whose path is
        ``/dashboard`` or under it)."""
        path, method = request.path, request.method
        allowed = {PAGE_PATH: "GET", DATA_PATH: "GET", LOGIN_PATH: "GET", LINK_PATH: "POST"}.get(path)
        if allowed is None:
            return _json(404, _error(404, f"No such dashboard page: {path}."))
        # HEAD as GET, but never for a sign-in link: a link checker's HEAD must not use it up.
        if method != allowed and not (method == "HEAD" and path in (PAGE_PATH, DATA_PATH)):
            return _json(405, _error(405, f"{path} takes {allowed} only."), [("Allow", allowed)])
        if path == LINK_PATH:
            if not request.token:
                return _json(401, _error(401, "Missing or wrong claude-proxy token: `proxy.py dashboard` "
                                              "asks for the sign-in link with it."))
            return self._link()
        if path == LOGIN_PATH:
            return self._login(request.query)
        verdict = SIGNED_IN if request.token else self.session_verdict(method, request.headers)
        if verdict != SIGNED_IN and path == PAGE_PATH and _followed_from_another_site(request.headers):
            return _page_answer(200, _AGAIN_PAGE)
        if verdict == FOREIGN:
            return _page_answer(403, _message_page(
                "Refused", "The dashboard answers its own page only, not another page's requests."))
        if verdict == NO_SESSION:
            if path == DATA_PATH:
                return _json(401, _error(401, "Not signed in to the dashboard: run `proxy.py dashboard`."))
            return _page_answer(401, _message_page(
                "Not signed in", "Run <code>proxy.py dashboard</code> in a terminal: it opens this page "
                                 "signed in. (A restart of the proxy signs every browser out.)"))
        if path == DATA_PATH:
            days = parse_qs(request.query).get("days", ["14"])[0]
            if not (days.isdigit() and 1 <= int(days) <= MAX_DAYS):
                return _json(400, _error(400, f"days must be a whole number from 1 to {MAX_DAYS}."))
            return _json(200, request.figures(int(days)))
        return self._page_answer()

    def _link(self):
        code = self.sign_ins.new_code()
        return _json(200, {"path": f"{LOGIN_PATH}?code={code}", "expires_in_seconds": CODE_SECONDS})

    def _login(self, query):
        codes = parse_qs(query).get("code", [])
        secret = self.sign_ins.redeem(codes[0]) if len(codes) == 1 else None
        if secret is None:
            return _page_answer(401, _message_page(
                "This sign-in link does not work", "It was used already, or it is older than "
                f"{CODE_SECONDS:.0f} seconds: each link works once, right away. Run "
                "<code>proxy.py dashboard</code> again for a new one."))
        log.info("dashboard: a browser signed in with a one-time link")
        cookie = f"{self.cookie_name}={secret}; HttpOnly; SameSite=Strict; Path=/"
        return Answer(303, [("Location", PAGE_PATH), ("Set-Cookie", cookie), *_PRIVATE])

    def _page_answer(self):
        return _page_answer(200, self._page)


#: Headers for everything the dashboard answers: nothing cached, nothing referred.
_PRIVATE = [("Cache-Control", "no-store"), ("Referrer-Policy", "no-referrer"),
            ("X-Content-Type-Options", "nosniff")]


def _page_answer(status, template):
    """An HTML page from ``template``, whose ``{{nonce}}`` marks the scripts and
    styles that may run: none other runs, nothing is loaded from anywhere but
    the proxy, and no other page may frame it."""
    nonce = secrets.token_urlsafe(16)
    policy = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
              "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
              "frame-ancestors 'none'")
    return Answer(status, [("Content-Type", "text/html; charset=utf-8"), ("Content-Security-Policy", policy),
                           ("X-Frame-Options", "DENY"), *_PRIVATE],
                  template.replace("{{nonce}}", nonce).encode("utf-8"))


def _message_page(title, message_html):
    """A small page that says one thing (``message_html`` is the proxy's own words)."""
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"color-scheme\" content=\"light dark\">"
            f"<title>claude-proxy: {html.escape(title)}</title><style nonce=\"{{{{nonce}}}}\">"
            "body{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em}"
            "code{font-size:.95em}</style></head><body>"
            f"<h1>claude-proxy dashboard: {html.escape(title.lower())}</h1><p>{message_html}</p></body></html>")


def _json(status, payload, extra=()):
    return Answer(status, [("Content-Type", "application/json"), *extra, *_PRIVATE],
                  json.dumps(payload).encode())


def _error(status, message):
    return {"type": "error", "error": {"type": error_type(status), "message": message}}


def _followed_from_another_site(headers):
    """Is the request a link to a page followed from another site's page (or a redirect
    from one)?  (``Sec-Fetch-*``, sent by browsers since 2020; absent: no.)"""
    return ((headers.get("sec-fetch-site") or "").strip().lower() in ("same-site", "cross-site")
            and (headers.get("sec-fetch-mode") or "").strip().lower() == "navigate")


#: The answer to a link from another site: go to the dashboard again, as its own navigation.
_AGAIN_PAGE = (
    "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>claude-proxy dashboard</title>"
    "<script nonce=\"{{nonce}}\">location.replace(\"/dashboard\");</script></head>"
    "<body><p>Opening the dashboard… (<a href=\"/dashboard\">go on</a>)</p></body></html>")


def _same_origin(headers):
    """Does the request's ``Origin`` name the address it was sent to (its ``Host``)?"""
    origin, host = headers.get("origin"), headers.get("host")
    return bool(origin and host) and origin.strip().lower() == f"http://{host.strip().lower()}"


def without_code(path):
    """``path`` with the value of a ``code`` parameter left out, for the log: a
    sign-in code is a credential until it is used."""
    return _CODE_PARAMETER.sub(r"\1…", path)
