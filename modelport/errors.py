"""One error hierarchy for every provider and entry point.

Each class knows its ``kind`` (the vocabulary dialects translate into their own error
types) and the HTTP ``status`` a gateway answers with. Every error carries the provider,
the upstream status, the provider's own message and a ``hint`` that names the fix; a
``detail`` only the local user sees (``str()``, logs), never a gateway's caller.
"""

from __future__ import annotations

from typing import Any


class ModelportError(Exception):
    kind = "error"
    status = 500

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status: int | None = None,
        hint: str | None = None,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
        body: Any = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        if status is not None:
            self.status = status
        self.hint = hint
        self.code = code
        self.param = param
        self.retry_after = retry_after
        self.body = body
        # For the person running this process (str(), logs), never in a gateway's answer:
        # e.g. the internal URL a connection failed on.
        self.detail = detail

    def __str__(self) -> str:
        where = f"[{self.provider}] " if self.provider else ""
        detail = f" ({self.detail})" if self.detail else ""
        hint = f"\nhint: {self.hint}" if self.hint else ""
        return f"{where}{self.message}{detail}{hint}"


class ConfigError(ModelportError):
    """The call cannot be made as configured: unknown provider or model, missing key or file."""

    kind = "invalid_request"
    status = 400


class MissingKeyError(ConfigError):
    """No API key for a provider that needs one. Still a ConfigError (the fix is the
    caller's setup), but of kind "authentication": logs, batch jobs (which stop at once on
    it) and ``--json`` see a key problem, not a malformed request."""

    kind = "authentication"
    status = 401


class BadRequestError(ModelportError):
    kind = "invalid_request"
    status = 400


class ContextLengthError(BadRequestError):
    kind = "context_length"


class MethodNotAllowedError(BadRequestError):
    """The path exists but not for this HTTP method; ``allow`` lists the methods it takes
    (a gateway sends them in the ``Allow`` header)."""

    status = 405

    def __init__(self, message: str, *, allow: tuple[str, ...] = (), **kwargs: Any) -> None:
        kwargs.setdefault("code", "method_not_allowed")
        super().__init__(message, **kwargs)
        self.allow = allow


class AuthenticationError(ModelportError):
    kind = "authentication"
    status = 401


class PermissionDeniedError(ModelportError):
    kind = "permission"
    status = 403


class NotFoundError(ModelportError):
    kind = "not_found"
    status = 404


class RequestTooLargeError(ModelportError):
    kind = "request_too_large"
    status = 413


class RateLimitError(ModelportError):
    kind = "rate_limit"
    status = 429


class QuotaExceededError(RateLimitError):
    """A 429 that waiting will not fix (billing, exhausted quota): never retried."""

    kind = "quota"


class ServerError(ModelportError):
    kind = "server"
    status = 500


class OverloadedError(ServerError):
    kind = "overloaded"
    status = 503


class StateUnavailableError(OverloadedError):
    """The gateway's shared state (Redis counters, PostgreSQL records) cannot be reached:
    the request is refused rather than let through unchecked. A 503 in every dialect (not
    Anthropic's 529: nothing upstream is overloaded)."""

    kind = "unavailable"


class TimeoutError(ModelportError):  # noqa: A001 - the name users expect in this namespace
    kind = "timeout"
    status = 504


class ConnectionError(ModelportError):  # noqa: A001
    kind = "connection"
    status = 502


class StreamError(ModelportError):
    """The provider reported an error, or the connection broke, after the stream began."""

    kind = "server"
    status = 500


class UpstreamProtocolError(ModelportError):
    """The upstream answered, but its JSON is not shaped as its API defines (a list where an
    object belongs, a number where text belongs): a bad gateway, not the caller's mistake."""

    kind = "server"
    status = 502


class StructuredOutputError(ModelportError):
    """The model's answer does not parse or validate against the requested response_format.

    ``text`` is the answer as it came, ``error`` the parse or validation error, and
    ``response`` the whole ChatResponse (usage, finish_reason) for inspection or a retry.
    """

    kind = "server"
    status = 502  # the upstream answered, but not with what was asked for

    def __init__(self, message: str, *, text: str = "", error: BaseException | None = None,
                 response: Any = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.text = text
        self.error = error
        self.response = response


_BY_STATUS: dict[int, type[ModelportError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: QuotaExceededError,
    403: PermissionDeniedError,
    404: NotFoundError,
    408: TimeoutError,
    413: RequestTooLargeError,
    422: BadRequestError,
    429: RateLimitError,
    503: OverloadedError,
    504: TimeoutError,
    529: OverloadedError,
}

_CONTEXT_MARKERS = ("context_length", "context length", "maximum context", "too many tokens", "prompt is too long")
_QUOTA_MARKERS = ("insufficient_quota", "billing", "quota exceeded", "per day")


def error_for_status(status: int, message: str, *, code: str | None = None, **kwargs: Any) -> ModelportError:
    """The error class for an upstream HTTP status, refined by the provider's code or message."""
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else BadRequestError)
    probe = f"{code or ''} {message}".lower()
    if cls is BadRequestError and any(m in probe for m in _CONTEXT_MARKERS):
        cls = ContextLengthError
    elif cls is RateLimitError and any(m in probe for m in _QUOTA_MARKERS):
        cls = QuotaExceededError
    return cls(message, status=status, code=code, **kwargs)


def redact(text: str, secrets: list[str | None]) -> str:
    """Remove every secret from text meant for a person or a log."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, mask(secret))
    return text


def mask(secret: str) -> str:
    return f"{secret[:3]}…{secret[-4:]}" if len(secret) > 12 else "…"
