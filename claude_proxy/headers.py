"""Which headers are whose: the lists the config, the request path and the
answer path share, so that a header is classified in one place only."""

import re

#: RFC 9110 section 7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "proxy-connection", "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})
#: Framing, routing and hop-by-hop headers: the proxy sets these for each
#: connection, so the config cannot set them for a provider.
PROXY_SET_HEADERS = HOP_BY_HOP | {"host", "content-length", "accept-encoding", "expect"}
#: Client headers the proxy drops or replaces on the way to a provider:
#: those it sets, and the client's credentials (the provider gets its own key).
REPLACED_REQUEST_HEADERS = PROXY_SET_HEADERS | {"x-api-key", "authorization"}

#: RFC 9110 section 5.1: a field name is a token.
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")
#: What RFC 9110 allows in a field value: visible characters, spaces, tabs, and Latin-1 text.
HEADER_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*\Z")


def sendable_in_header(value):
    """Can ``value`` go into an HTTP header as it is?"""
    return bool(HEADER_VALUE.match(value))
