"""claude-proxy: a local failover proxy for Anthropic-compatible APIs.

Standard library only (Python 3.10+). One module per concern:

The proxy process
- ``config``      finds and validates ``config.json`` and reads ``.env``
- ``reload``      hot reload: watching both files, what a new config changes, what needs a restart
- ``run``         the process: banner, pid file, signals, the serve loop
- ``http_server`` the HTTP server clients talk to: routes, token, status, reload, shutdown
- ``feed``        the live feed for ``top`` and the dashboard: requests in flight and just ended
- ``framing``     is a request head unambiguous? (RFC 9112 rules, before anything is forwarded)
- ``access``      which requests are addressed to the proxy: their Host and Origin
- ``body``        reading a request: the body (length or chunked) within the size limit, all of it within the time limit
- ``framing``, ``access``  strict request heads, and who may ask (Host, Origin)
- ``head``        reading request and answer heads: plain ones without ``email``, the rest by the standard library
- ``forward``     the failover loop: try providers until one answers, book the outcome
- ``failover``    the policy: cooldowns (per provider, model and key), runtime control
- ``routing``     strategies: the order of the ready providers, measured speeds
- ``upstream``    pooled keep-alive connections to the providers
- ``headers``     which headers are whose
- ``sending``     writing to a socket in one system call where it can take the data at once
- ``relay``       streams an answer to the client as it arrives
- ``sse``         server-sent events off the wire (any line ending, bounded)
- ``signatures``  thinking blocks go only to the provider that signed them
- ``openai_forward``  an OpenAI-type provider in the failover loop, with
  ``openai_request`` and ``openai_answer`` (the translation both ways)
- ``cancel``      noticing a client hang-up and stopping the provider's work
- ``logfile``     ``proxy.log``, rotated by size
- ``usage``       ``usage.db``: a row per forwarded request, written by one thread off the request path
- ``feed``        the live feed of ``GET /events``: requests in flight and just ended, for the live views
- ``request_log`` the opt-in JSONL request log, credentials redacted, written off the request path
- ``state``       the runtime files (token, pid, sessions) in the state directory
- ``dashboard``   the dashboard page (``dashboard.html``): one-time sign-in links, session cookies
- ``dashboard_data``  what the dashboard's pictures read from ``usage.db``

The commands that manage it (``proxy.py start`` and friends)
- ``cli``         the ``proxy.py`` command line
- ``daemon``      finding the background daemon and talking to it
- ``lifecycle``   start, stop, release
- ``status``      the status report
- ``session``     ``env`` and ``providers``: pointing shell sessions at the proxy
- ``check``       validating the config, and ``--live`` provider checks
- ``control``     ``disable``, ``enable``, ``cool``, ``uncool`` and ``reload`` of the running proxy
- ``usage_report`` ``proxy.py usage``: requests, failovers, tokens and cost per day, provider, model
- ``dashboard_link`` ``proxy.py dashboard``: a one-time sign-in link, opened in the browser
- ``top``         ``proxy.py top``: the proxy live, full screen (or one snapshot), with
  ``top_layout`` (what it shows), ``feed_reader`` (following ``GET /events``) and
  ``terminal`` (every platform-specific decision about consoles)
- ``wording``     durations, counts and provider states worded once
- ``process``     every platform-specific decision (detaching, pid identity)
"""

__version__ = "0.1.0"


class ProxyError(Exception):
    """Root of every error this package raises on purpose."""
