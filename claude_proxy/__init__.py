"""claude-proxy: a local failover proxy for Anthropic-compatible APIs.

Standard library only (Python 3.10+). One module per concern:

- ``config``   finds and validates ``config.json`` and reads ``.env``
- ``state``    the runtime files (token, pid, log) in the state directory
- ``upstream`` pooled keep-alive connections to the providers
- ``failover`` which provider to try next, and the cooldowns
- ``relay``    streams an answer to the client as it arrives
- ``server``   the HTTP server the clients talk to: routes, bodies, the commit point
- ``serve``    running it in the foreground: logging, banner, pid file, signals
- ``daemon``   start/stop/status/env/check of the background proxy
- ``process``  every platform-specific decision (detaching, pid identity)
- ``cli``      the ``proxy.py`` command line
"""

__version__ = "0.1.0"


class ProxyError(Exception):
    """Root of every error this package raises on purpose."""
