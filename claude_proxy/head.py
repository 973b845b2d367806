"""Header sections read and parsed without the ``email`` package where they are plain.

``http.server`` and ``http.client`` read a head's lines with the limits of
RFC 9112 as the standard library sets them (a line of at most 65536 bytes,
at most 100 lines counting the empty one that ends the head), then hand them
to ``email``'s parser, which is general, lenient and costs tens of
microseconds a head: most of what the proxy spends on a request.

:func:`read_header_lines` reads the lines exactly as ``http.client`` does
(same limits, same exceptions).  :func:`parse_header_lines` makes the same
:class:`http.client.HTTPMessage` from them: when every line is plain (a
token, a colon, printable ASCII, the line ending) it builds it directly,
which is what the ``email`` parser would have built; anything else (a folded
line, a control character, a byte above 0x7e, a line that is not a field)
goes to the standard library's parser, so behaviour cannot drift.  What a
proxy must refuse in a request's head is refused by :mod:`framing` on the
same raw lines, whichever parser made the headers.
"""

import email.parser
import http.client
import re

MAX_LINE = 65536       # http.client._MAXLINE
MAX_HEADER_LINES = 100  # http.client._MAXHEADERS: header lines plus the empty line
_ENDS = (b"\r\n", b"\n", b"")

#: A plain field line: a token (RFC 9110 section 5.6.2), a colon, optional
#: whitespace, a value of printable ASCII and tabs, the line ending.
_PLAIN_FIELD = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([\t\x20-\x7e]*)\r?\n")


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
        cached = self._index_of
        if cached is not None and cached[0] == fields:
            return cached[1]
        index = {}
        for name, value in fields:
            index.setdefault(name.lower(), []).append(value)
        self._index_of = (list(fields), index)
        return index

    def get(self, name, failobj=None):
        values = self._index().get(name.lower())
        return values[0] if values else failobj

    def get_all(self, name, failobj=None):
        values = self._index().get(name.lower())
        return list(values) if values else failobj

    def __getitem__(self, name):
        return self.get(name)

    def __contains__(self, name):
        return name.lower() in self._index()

    def items(self):
        return list(self._headers)

    def values(self):
        return [value for _, value in self._headers]
