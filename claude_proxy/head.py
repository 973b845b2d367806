"""Header sections read and parsed without the ``email`` package where they are plain.

``http.server`` and ``http.client`` read a head's lines with the limits of
RFC 9112 as the standard library sets them (a line of at most 65536 bytes,
at most 100 lines counting the empty one that ends the head), then hand them
to ``email``'s parser, which is general, lenient and costs tens of
microseconds a head: most of what the proxy spends on a request.

:func:`read_head` takes a head that is already in the reader's buffer and
plain (every line a token, a colon, printable ASCII and CRLF: what every
client and provider sends) in a few C calls, and builds the
:class:`http.client.HTTPMessage` the ``email`` parser would have built from
it.  Anything else is read line by line as ``http.client`` reads it
(:func:`read_header_lines`: same limits, same exceptions) and, unless each
line is plain after all, parsed by the standard library
(:func:`parse_header_lines`), so behaviour cannot drift.  What a proxy must
refuse in a request's head is refused by :mod:`framing` either way: on the
raw lines (:func:`framing.head_problem`), or on the plain fields with the
same rules (:func:`framing.fields_problem`).
"""

import email.parser
import http.client
import re

from .framing import fields_problem, head_problem

MAX_LINE = 65536       # http.client._MAXLINE
MAX_HEADER_LINES = 100  # http.client._MAXHEADERS: header lines plus the empty line
_ENDS = (b"\r\n", b"\n", b"")

#: A plain field line: a token (RFC 9110 section 5.6.2), a colon, optional
#: whitespace, a value of printable ASCII and tabs, the line ending.
_PLAIN_FIELD = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([\t\x20-\x7e]*)\r?\n")
#: A whole plain head with CRLF line ends, and its fields one by one (in text).
_PLAIN_HEAD = re.compile(rb"(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e]*\r\n){0,98}\r\n")
_FIELDS = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([\t\x20-\x7e]*)\r\n")


def read_head(fp, version=None):
    """``(message, problem)``: the head's :class:`http.client.HTTPMessage`, read
    from the buffered reader ``fp`` as ``http.client.parse_headers`` reads it
    (raising ``LineTooLong`` or ``HTTPException`` as it does), and, for a
    request of HTTP ``version``, why :mod:`framing` refuses it (or None)."""
    taken = take_plain_head(fp)
    if taken is None:
        lines = read_header_lines(fp)
        return parse_header_lines(lines), (head_problem(lines, version) if version else None)
    block, fields = taken
    message = PlainHeaders()
    message._headers = fields
    message._payload = ""
    problem = None
    if version and fields_problem(fields, version):  # refused: in the words the raw lines give
        problem = head_problem(block.splitlines(True), version)
    return message, problem


def take_plain_head(fp):
    """``(block, fields)``: a plain head wholly in ``fp``'s buffer and its
    ``(name, value)`` fields, read past it; or None, having read nothing (not
    all there, or not plain)."""
    peek = getattr(fp, "peek", None)
    if peek is None:  # not a buffered reader
        return None
    buffered = peek(1)
    if buffered.startswith(b"\r\n"):  # no fields at all
        block = b"\r\n"
    else:
        end = buffered.find(b"\r\n\r\n")
        if end < 0:
            return None
        block = buffered[:end + 4]
    if _PLAIN_HEAD.fullmatch(block) is None:
        return None
    fp.read(len(block))
    return block, _FIELDS.findall(block.decode("ascii"))


def read_header_lines(fp):
    """The head's lines as read from ``fp``, up to and including the empty
    line (or b"" at the end of the input): ``http.client``'s reading, with
    its limits and exceptions (``LineTooLong``, ``HTTPException``)."""
    lines = []
    readline = fp.readline
    while True:
        line = readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise http.client.LineTooLong("header line")
        lines.append(line)
        if len(lines) > MAX_HEADER_LINES:
            raise http.client.HTTPException("got more than %d headers" % MAX_HEADER_LINES)
        if line in _ENDS:
            return lines


def parse_header_lines(lines):
    """The :class:`http.client.HTTPMessage` of ``lines`` (from :func:`read_header_lines`).

    A :class:`PlainHeaders` when every field line is plain, else what
    ``http.client.parse_headers`` makes of the same lines.
    """
    fields = []
    match = _PLAIN_FIELD.fullmatch
    for line in lines[:-1]:
        found = match(line)
        if found is None:
            return standard_headers(lines)
        name, value = found.groups()
        fields.append((name.decode("ascii"), value.decode("ascii")))
    message = PlainHeaders()
    message._headers = fields
    message._payload = ""  # what the email parser leaves after an empty line: no body
    return message


def standard_headers(lines):
    """What ``http.client.parse_headers`` makes of ``lines``: the ``email`` parser's message."""
    text = b"".join(lines).decode("iso-8859-1")
    return email.parser.Parser(_class=http.client.HTTPMessage).parsestr(text)


class PlainHeaders(http.client.HTTPMessage):
    """An ``HTTPMessage`` of plain fields, with lookups by name from an index.

    Its values are printable ASCII, which the ``email`` policy returns as
    they are, so the lookups below give what ``Message``'s give; the index
    is rebuilt whenever the list of fields changed, however it was changed.
    """

    _index_of = None  # (the fields it was built from, {lower-case name: [values]})

    def _index(self):
        fields = self._headers
        index = {}
        for name, value in fields:
            index.setdefault(name.lower(), []).append(value)
        self._index_of = (list(fields), index)
        return index

    def get(self, name, failobj=None):
        cached = self._index_of
        index = cached[1] if cached is not None and cached[0] == self._headers else self._index()
        values = index.get(name.lower())
        return values[0] if values else failobj

    def get_all(self, name, failobj=None):
        cached = self._index_of
        index = cached[1] if cached is not None and cached[0] == self._headers else self._index()
        values = index.get(name.lower())
        return list(values) if values else failobj

    def __getitem__(self, name):
        return self.get(name)

    def __contains__(self, name):
        cached = self._index_of
        index = cached[1] if cached is not None and cached[0] == self._headers else self._index()
        return name.lower() in index

    def items(self):
        return list(self._headers)

    def values(self):
        return [value for _, value in self._headers]
