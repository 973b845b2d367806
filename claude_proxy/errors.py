"""The package's exceptions, all rooted at :class:`ProxyError`."""

from . import ProxyError

__all__ = ["ProxyError", "ConfigError", "UpstreamError", "UsageError"]


class ConfigError(ProxyError):
    """The configuration cannot be used. Each problem is one line for the user."""

    def __init__(self, problems):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class UsageError(ProxyError):
    """The user asked for something that cannot be done (unknown provider, port in use...)."""


class UpstreamError(ProxyError):
    """A provider could not be reached or did not answer in time.

    ``kind`` is a short word for the log (``refused``, ``reset``, ``timeout``,
    ``tls``, ``protocol``); ``retryable`` tells the failover policy whether
    another provider should be tried.
    """

    def __init__(self, provider, kind, detail, retryable=True):
        self.provider = provider
        self.kind = kind
        self.detail = detail
        self.retryable = retryable
        super().__init__(f"{provider}: {kind} ({detail})")
