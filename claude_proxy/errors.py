"""The package's exceptions, all rooted at :class:`ProxyError`."""

from . import ProxyError

__all__ = ["ConfigError", "ProxyError", "UpstreamError", "UsageError", "error_type"]

#: What every ``proxy.py`` command exits with: 0 ok, 1 failure, 2 bad config
#: or usage, 3 not running (``status``).
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_NOT_RUNNING = 0, 1, 2, 3


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
    ``tls``, ``dns``, ``protocol``, ``network``, ``cancelled``).
    """

    def __init__(self, provider, kind, detail):
        self.provider = provider
        self.kind = kind
        self.detail = detail
        super().__init__(f"{provider}: {kind} ({detail})")


#: Anthropic's error type for each status the proxy answers with itself.
ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
    500: "api_error", 502: "api_error", 503: "api_error", 504: "timeout_error",
    529: "overloaded_error",
}


def error_type(status):
    return ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
