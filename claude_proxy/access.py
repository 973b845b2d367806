"""Which requests are addressed to the proxy at all: their ``Host`` and ``Origin``.

A web page can make a browser send requests to ``127.0.0.1`` (a
``text/plain`` ``POST /shutdown`` needs no CORS preflight), and with DNS
rebinding a page's own name resolves to ``127.0.0.1``, so that the browser
treats the proxy as part of the page's site.  Browsers cannot hide either:
a rebound request carries the page's name in ``Host``, and a request a page
makes to another site carries the page's ``Origin``.  So, whatever the token
setting, the proxy answers only requests whose ``Host`` is one of its own
addresses, and refuses any that carries a foreign ``Origin``.

Claude Code, the SDKs and curl send ``Host: 127.0.0.1:PORT`` (the address
in ``ANTHROPIC_BASE_URL``) and no ``Origin``.  An HTTP/1.0 request may come
without ``Host`` (``framing`` refuses an HTTP/1.1 one without it): browsers
always send one, so its absence cannot be a rebinding, and it is let through.
"""

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
WILDCARDS = ("", "0.0.0.0", "::")


class LocalAddresses:
    """The ``Host`` values and ``Origin``\\ s that name this proxy.

    Its own names are the loopback ones, the address it listens on (unless
    that is a wildcard), and the configured ``allowed_hosts``, each with the
    proxy's port (and also without it when the port is 80, as clients omit
    it then, RFC 9110 section 7.2).  Host names compare case-insensitively
    (RFC 9110 section 4.2.3).
    """

    def __init__(self, listen_host, port, allowed_hosts=()):
        names = set(LOOPBACK_NAMES) | set(allowed_hosts)
        if listen_host not in WILDCARDS:
            names.add(f"[{listen_host}]" if ":" in listen_host else listen_host.lower())
        hosts = {f"{name}:{port}" for name in names}
        if port == 80:
            hosts |= names
        self.hosts = frozenset(hosts)
        self.origins = frozenset(f"http://{host}" for host in hosts)

    def host_allowed(self, host):
        """Is ``host`` (the request's ``Host`` value, None if it had none) one of ours?"""
        return host is None or host.strip().lower() in self.hosts

    def origin_allowed(self, origin):
        """Is ``origin`` (the ``Origin`` value, None if absent) ours or absent?

        ``Origin: null`` (a sandboxed page, a redirect) is foreign too.
        """
        return origin is None or origin.strip().lower() in self.origins
