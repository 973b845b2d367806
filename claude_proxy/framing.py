"""Is a request's head unambiguous?  The rules a proxy must apply before it
forwards anything (RFC 9112), checked on the raw header lines, and the
request target's (:func:`target_problem`).

``http.server`` parses headers with the ``email`` package, which is lenient
where a proxy must not be: it splits lines at a bare CR, ends the header
section silently at a line it cannot read (``Transfer-Encoding : chunked``
is then simply not there), and keeps every duplicate.  A request that one
parser reads one way and the next hop another is how requests are smuggled,
so whatever could be read two ways is refused with a 400 and the
connection closed (RFC 9112 section 6.3: "the server MUST respond with a
400 (Bad Request) status code and then close the connection").

This runs on every request, so it is one regular expression per line and a
few comparisons; it takes the lines exactly as they were read, so it does
not depend on which parser produced ``self.headers``.
"""

import re
from urllib.parse import unquote

#: One header line: a field name (a token, RFC 9110 section 5.6.2) and a
#: colon with nothing between them (RFC 9112 section 5.1), then a value with
#: no CR of its own; or an obsolete continuation line (obs-fold, RFC 9112
#: section 5.2), which the header parser joins to the line before.
_FIELD_LINE = re.compile(rb"(?:([!#$%&'*+.^_`|~0-9A-Za-z-]+):|[ \t])[^\r\n]*\r?\n")
_LAST_LINES = (b"\r\n", b"\n")
_FRAMING = (b"content-length", b"transfer-encoding", b"host")


def head_problem(lines, version):
    """Why the header section in ``lines`` cannot be forwarded safely, or None.

    ``lines`` are the raw header lines as read (each with its line ending),
    up to and including the empty line that ends the head; ``version`` is
    the request's HTTP version (``"HTTP/1.1"``).  Refused, per RFC 9112:

    - a line whose field name is not a token: a space or a non-ASCII byte in
      it, a space before the colon (section 5.1), no colon at all;
    - a bare CR anywhere but at the end of a line (section 2.2);
    - a head cut off before its empty line;
    - a folded line (obs-fold) at the start of the head (section 2.2) or
      continuing ``Content-Length``, ``Transfer-Encoding`` or ``Host``
      (elsewhere it is joined with a space, as section 5.2 allows);
    - more than one ``Content-Length``, even with the same value (RFC 9110
      section 8.6 allows rejecting them; no real client sends two), or one
      that is not a plain decimal number;
    - ``Transfer-Encoding`` that is not exactly one ``chunked`` (section 6.1:
      a proxy must not guess at codings it does not decode), or with a
      ``Content-Length`` beside it (section 6.3: that "ought to be handled
      as an error"), or in an HTTP/1.0 request (section 6.1);
    - an HTTP/1.1 request without exactly one ``Host`` (section 3.2).
    """
    if not lines or lines[-1] not in _LAST_LINES:
        return "the request head ended before its empty line"
    fields = []
    name = None
    for line in lines[:-1]:
        match = _FIELD_LINE.fullmatch(line)
        if match is None:
            if b"\r" in line.rstrip(b"\r\n"):
                return "a header line has a bare CR in it"
            return f"malformed header line {_shown(line)}"
        if match.group(1) is None:  # a continuation of the line before
            if name is None or name in _FRAMING:
                return "a folded line at the start of the head or in a framing header"
            continue
        name = match.group(1).lower()
        if name in _FRAMING:
            fields.append((name.decode("ascii"), line[len(name) + 1:].decode("latin-1")))
    return fields_problem(fields, version)


def fields_problem(fields, version):
    """The rules of :func:`head_problem` on fields and values, for a head whose
    every line is a plain ``name: value`` (:mod:`head` parsed it so): the same
    answer for the same head.  ``fields`` are ``(name, value)`` pairs, in any
    case; only ``Content-Length``, ``Transfer-Encoding`` and ``Host`` matter."""
    lengths = codings = hosts = 0
    length_value = coding_value = ""
    for name, value in fields:
        name = name.lower()
        if name == "content-length":
            lengths += 1
            length_value = value
        elif name == "transfer-encoding":
            codings += 1
            coding_value = value
        elif name == "host":
            hosts += 1
    if lengths > 1:
        return "more than one Content-Length header"
    length_value = length_value.strip(" \t\r\n")
    if lengths and not (length_value.isascii() and length_value.isdigit()):  # "²" is a digit to str
        return f"invalid Content-Length {_shown(value_of(fields, 'content-length').encode('latin-1'))}"
    if codings:
        if version < "HTTP/1.1":
            return "Transfer-Encoding in an HTTP/1.0 request"
        if codings > 1 or coding_value.strip(" \t\r\n").lower() != "chunked":
            return "a Transfer-Encoding other than exactly \"chunked\""
        if lengths:
            return "both Content-Length and Transfer-Encoding"
    if hosts > 1 or (hosts == 0 and version >= "HTTP/1.1"):
        return "an HTTP/1.1 request needs exactly one Host header"
    return None


def value_of(fields, wanted):
    """The last value of the field ``wanted`` (lower case) in ``fields``."""
    return [value for name, value in fields if name.lower() == wanted][-1]


def _shown(data):
    """A few bytes of ``data`` for a message: printable, quoted, short."""
    return repr(data.rstrip(b"\r\n")[:40].decode("latin-1"))


_DOT_SEGMENTS = (".", "..")


def target_problem(target):
    """Why the request target ``target`` cannot be appended to a provider's
    base URL, or None.

    It must be a path (origin-form, RFC 9112 section 3.2.1: what clients
    send to a server; absolute-form is for forward proxies), and no segment
    of its path may be a dot-segment (RFC 3986 section 3.3): ``..`` would
    climb out of the provider's base path (``/anthropic``) with its key
    attached.  Encoded forms count (``%2e%2e``, ``.%2E``, encoded twice), and
    so do backslashes and encoded slashes inside a segment (``..\\``,
    ``%2f``), which some servers treat as separators.  Such a request is
    refused, not normalised: no client builds one (URLs are normalised
    before sending, RFC 3986 section 5.2.4), so one is a probe, and
    normalising it could quietly change which provider or endpoint it means.
    The query is not a path and is left alone.
    """
    if not target.startswith("/"):
        return "the request target must be a path starting with /"
    path = target.partition("?")[0]
    if "." not in path and "%" not in path and "\\" not in path:
        return None  # the usual /v1/messages: nothing to decode
    for segment in path.split("/"):
        for _ in range(3):  # decoded as often as a server behind might decode it
            if "%" not in segment:
                break
            segment = unquote(segment)
        if segment in _DOT_SEGMENTS or "/" in segment or "\\" in segment:
            return "the path has a dot-segment (.. or .), a backslash or an encoded slash"
    return None
