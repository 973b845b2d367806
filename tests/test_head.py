"""The lean header parser (claude_proxy/head.py) against the standard library's.

For any header block, request or answer: the same lines read (or the same
refusal for a line too long or too many lines), the same headers in the same
order, the same values by every accessor, the same verdict from
``framing.head_problem``; and the provider's answer the same
``http.client.HTTPResponse`` state.  The lean parser may only be faster.
"""

import http.client
import io
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from claude_proxy.framing import head_problem  # noqa: E402
from claude_proxy.head import MAX_LINE, PlainHeaders, parse_header_lines, read_head, read_header_lines  # noqa: E402
from claude_proxy.upstream import _Response  # noqa: E402

TOKEN = "!#$%&'*+.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-"
NAMES = ["Host", "host", "Content-Length", "content-length", "Transfer-Encoding", "Connection", "Expect",
         "x-api-key", "Authorization", "Origin", "anthropic-version", "X-Custom", "keep-alive"]
ODD_BYTES = [b"\r", b"\x00", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", b"\x85", b"\xe9", b"\xff", b"\x7f",
             b"\t", b" ", b":", b"\xc3\xa9", b"\xb2", b"\xb9"]

names = st.one_of(st.sampled_from(NAMES), st.text(TOKEN, min_size=1, max_size=12))
plain_values = st.one_of(st.sampled_from(["", "0", "12", "chunked", "close", "keep-alive", "100-continue",
                                          "127.0.0.1:8080", "gzip, chunked", " x ", "a\tb", "Bearer k"]),
                         st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=30))
endings = st.sampled_from([b"\r\n", b"\n"])


@st.composite
def plain_line(draw):
    space = draw(st.sampled_from([b"", b" ", b"  ", b"\t", b" \t"]))
    trailing = draw(st.sampled_from([b"", b"", b" ", b"\t"]))
    return draw(names).encode() + b":" + space + draw(plain_values).encode() + trailing + draw(endings)


@st.composite
def odd_line(draw):
    """Lines the lean parser must leave to the standard one (or framing must refuse)."""
    kind = draw(st.integers(0, 6))
    ending = draw(endings)
    if kind == 0:  # obs-fold: a continuation line
        return draw(st.sampled_from([b" ", b"\t"])) + draw(plain_values).encode() + ending
    if kind == 1:  # a plain line with an odd byte somewhere in it
        line = draw(plain_line())
        at = draw(st.integers(0, len(line) - 1))
        return line[:at] + draw(st.sampled_from(ODD_BYTES)) + line[at:]
    if kind == 2:  # no colon
        return draw(st.text(TOKEN + " ", min_size=1, max_size=15)).encode() + ending
    if kind == 3:  # a space before the colon, an empty name
        return draw(st.sampled_from([b"Host : x", b"Transfer-Encoding : chunked", b": empty name",
                                     b"From x", b"From: x", b"Content-Length:\x0b5", b"Content-Length: \xb2",
                                     b"Content-Length: 1\xb9"])) + ending
    if kind == 4:  # a line ending in a bare CR, or cut without an ending
        return draw(plain_line()).rstrip(b"\r\n") + draw(st.sampled_from([b"\r", b""]))
    if kind == 5:  # raw bytes
        return draw(st.binary(max_size=20)) + ending
    return draw(plain_line()).replace(b":", b":\r", 1)


blocks = st.lists(st.one_of(plain_line(), plain_line(), odd_line()), max_size=12)
terminators = st.sampled_from([b"\r\n", b"\n", b"", b"\r\n{\"body\": 1}", b"\nrest"])


def lookups(message, lines):
    seen = {line.split(b":", 1)[0].decode("latin-1") for line in lines if b":" in line}
    out = []
    for name in sorted(seen | set(NAMES) | {"x-missing"}):
        for asked in (name, name.upper(), name.lower()):
            out.append((asked, message.get(asked), message.get(asked, "dflt"), message.get_all(asked),
                        asked in message, message[asked]))
    return out


def standard(block):
    """What http.server does with a head: http.client's reading and email's parsing, framing's verdict."""
    fp = io.BytesIO(block)
    try:
        lines = http.client._read_headers(fp)
    except http.client.LineTooLong as exc:
        return ("line too long", str(exc), fp.tell())
    except http.client.HTTPException as exc:
        return ("too many", str(exc), fp.tell())
    message = http.client.parse_headers(io.BytesIO(b"".join(lines)))
    return (message.items(), list(message.values()), lookups(message, lines), fp.tell(),
            head_problem(lines, "HTTP/1.1"), head_problem(lines, "HTTP/1.0"))


def lean(block, buffer_size=8192):
    """The handler's reading (``read_head``), from a buffered reader as the handler's ``rfile`` is."""
    fp = io.BufferedReader(io.BytesIO(block), buffer_size)
    try:
        message, problem11 = read_head(fp, "HTTP/1.1")
    except http.client.LineTooLong as exc:
        return ("line too long", str(exc), fp.tell())
    except http.client.HTTPException as exc:
        return ("too many", str(exc), fp.tell())
    problem10 = read_head(io.BufferedReader(io.BytesIO(block), buffer_size), "HTTP/1.0")[1]
    assert isinstance(message, http.client.HTTPMessage)
    lines = io.BytesIO(block[:fp.tell()]).readlines()
    return (message.items(), list(message.values()), lookups(message, lines), fp.tell(), problem11, problem10)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks, terminators, st.sampled_from([8192, 64]))
def test_any_header_block_reads_as_the_standard_library_reads_it(lines, terminator, buffer_size):
    block = b"".join(lines) + terminator
    assert lean(block, buffer_size) == standard(block)


@settings(max_examples=300, deadline=None)
@given(st.lists(plain_line(), max_size=12), endings)
def test_plain_blocks_take_the_lean_path(lines, terminator):
    block = b"".join(lines) + terminator
    message = parse_header_lines(read_header_lines(io.BytesIO(block)))
    assert type(message) is PlainHeaders
    if b"\n" not in block.replace(b"\r\n", b""):  # CRLF throughout: read in one step from the buffer
        assert type(read_head(io.BufferedReader(io.BytesIO(block + b"body")))[0]) is PlainHeaders


def test_content_length_digits_are_ascii_digits():
    for value in (b"\xb2", b"1\xb9"):  # superscript digits: str.isdigit() says yes
        lines = [b"Host: a\r\n", b"Content-Length: " + value + b"\r\n", b"\r\n"]
        assert head_problem(lines, "HTTP/1.1").startswith("invalid Content-Length")


def test_line_and_count_limits_are_the_standard_ones():
    for block in (b"X: " + b"a" * MAX_LINE + b"\r\n\r\n",          # a line too long
                  b"X: a\r\n" * 99 + b"\r\n",                       # 99 lines and the empty one: allowed
                  b"X: a\r\n" * 100 + b"\r\n",                      # one more: too many
                  b"X: a\r\n" * 150):
        assert lean(block) == standard(block)
    assert lean(b"X: a\r\n" * 99 + b"\r\n")[0] == [("X", "a")] * 99
    assert lean(b"X: a\r\n" * 100 + b"\r\n")[0] == "too many"
    for count in (97, 98, 99, 100):  # around where the one-step reading hands over to line by line
        assert lean(b"Host: a\r\n" + b"X: a\r\n" * count + b"\r\n", 1 << 16) == \
            standard(b"Host: a\r\n" + b"X: a\r\n" * count + b"\r\n")


def test_changed_headers_are_looked_up_as_changed():
    message = parse_header_lines([b"Host: a\r\n", b"X-One: 1\r\n", b"\r\n"])
    assert message.get("x-one") == "1"
    del message["X-One"]
    message["x-one"] = "2"
    message.replace_header("Host", "b")
    assert (message.get("X-ONE"), message["host"], "x-one" in message) == ("2", "b", True)
    assert message.items() == [("Host", "b"), ("x-one", "2")]


class _FakeSocket:
    def __init__(self, data):
        self.data = data

    def makefile(self, mode):
        return io.BytesIO(self.data)


def response_state(cls, raw, method="POST"):
    response = cls(_FakeSocket(raw), method=method)
    try:
        response.begin()
    except (http.client.HTTPException, ValueError) as exc:
        return (type(exc).__name__, str(exc))
    return (response.version, response.status, response.reason, response.msg.items(), response.chunked,
            response.length, response.will_close, response.getheader("content-type"),
            response.getheader("x-custom", "none"), response.fp.read())


class _StandardWith1xx(_Response):
    """The proxy's interim-skipping response with the standard library's begin()."""
    begin = http.client.HTTPResponse.begin


statuses = st.sampled_from([b"HTTP/1.1 200 OK\r\n", b"HTTP/1.0 200 OK\r\n", b"HTTP/1.1 204 No Content\r\n",
                            b"HTTP/1.1 429 Too Many Requests\r\n", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n",
                            b"HTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 529 Overloaded\r\n",
                            b"HTTP/2 200\r\n", b"HTTP/1.1 304 \r\n"])
framing_lines = st.lists(st.sampled_from([b"Content-Length: 5\r\n", b"content-length: -3\r\n",
                                          b"Content-Length: x\r\n", b"Transfer-Encoding: chunked\r\n",
                                          b"Transfer-Encoding: gzip\r\n", b"Connection: close\r\n",
                                          b"Connection: keep-alive\r\n", b"Keep-Alive: timeout=5\r\n",
                                          b"Content-Type: application/json\r\n"]), max_size=4)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(statuses, framing_lines, blocks, st.sampled_from([b"\r\n", b"\n"]), st.sampled_from(["POST", "HEAD"]))
def test_a_provider_answer_reads_as_http_client_reads_it(status, framing, lines, end, method):
    raw = status + b"".join(framing + lines) + end + b"hello"
    assert response_state(_Response, raw, method) == response_state(_StandardWith1xx, raw, method)


# --- the request line -------------------------------------------------------------------------

from claude_proxy.http_server import ProxyHandler  # noqa: E402


class _LineOnly:
    """Just enough of a handler to read a request line, recording the errors sent."""

    default_request_version = "HTTP/0.9"
    protocol_version = "HTTP/1.1"
    MessageClass = http.client.HTTPMessage

    def __init__(self, raw):
        self.raw_requestline = raw
        self.rfile = io.BufferedReader(io.BytesIO(b"\r\n"))  # no headers
        self.errors = []

    def send_error(self, code, message=None, explain=None):
        self.errors.append((int(code), message))

    def state(self, ok):
        return (ok, self.errors, getattr(self, "command", None), getattr(self, "path", None),
                self.request_version, self.close_connection)


def _standard_line(raw):
    import http.server
    handler = _LineOnly(raw)
    ok = http.server.BaseHTTPRequestHandler.parse_request(handler)
    return handler.state(ok)


def _ours(raw):
    handler = _LineOnly(raw)
    ok = ProxyHandler._parse_request_line(handler)
    return handler.state(ok)


request_lines = st.one_of(
    st.sampled_from([b"POST /v1/messages HTTP/1.1\r\n", b"GET / HTTP/1.0\r\n", b"GET /\r\n", b"POST /\r\n",
                     b"GET / HTTP/2.0\r\n", b"GET / HTTP/1\r\n", b"GET / FTP/1.1\r\n", b"GET / HTTP/1.1 x\r\n",
                     b"\r\n", b"  \r\n", b"GET //evil.example/x HTTP/1.1\r\n", b"GET / HTTP/01.01\r\n",
                     b"GET / HTTP/1.12345678901\r\n", b"GET\r\n", b"GET / HTTP/1.1\n", b"G\xe9T / HTTP/1.1\r\n"]),
    st.builds(lambda m, p, v: b" ".join(x for x in (m, p, v) if x) + b"\r\n",
              st.sampled_from([b"GET", b"POST", b"BREW", b""]), st.sampled_from([b"/", b"/a b", b"//x", b""]),
              st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/0.9", b"HTTP/3.0", b"HTTP/1.x", b"HTTP/a.1", b""])))


@settings(max_examples=200, deadline=None)
@given(request_lines)
def test_the_request_line_reads_as_http_server_reads_it(raw):
    if sys.version_info < (3, 11) and b"HTTP/1.12345678901" in raw:  # 3.10 took any length of digits
        assert _ours(raw)[0] is False
        return
    assert _ours(raw) == _standard_line(raw)


def test_a_version_with_a_sign_is_refused_on_every_python():
    """Python 3.10's http.server took int("+1"); 3.11 and later, and the proxy, refuse it."""
    ok, errors, *_ = _ours(b"GET / HTTP/+1.1\r\n")
    assert not ok and errors == [(400, "Bad request version ('HTTP/+1.1')")]
