"""One exception hierarchy; each error carries its HTTP status and stable code."""

from __future__ import annotations

from typing import Any


class NanoBananaError(Exception):
    status: int = 500
    code: str = "internal"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.headers: dict[str, str] = {}


class InvalidRequest(NanoBananaError):
    status = 422
    code = "invalid_request"


class WebhookUrlInvalid(InvalidRequest):
    """A `webhookUrl` (or `webhookEvents`) the outbound policy refuses (nano_banana.outbound): nothing is created."""

    code = "webhook_url_invalid"


class BadRequest(InvalidRequest):
    """Malformed syntax (unparseable JSON, broken multipart): 400 with the same code."""

    status = 400


class Unauthenticated(NanoBananaError):
    status = 401
    code = "unauthenticated"


class InvalidSignature(NanoBananaError):
    status = 401
    code = "invalid_signature"


class Forbidden(NanoBananaError):
    status = 403
    code = "forbidden"


class NotFound(NanoBananaError):
    status = 404
    code = "not_found"


class MethodNotAllowed(NanoBananaError):
    status = 405
    code = "method_not_allowed"


class InvalidTransition(NanoBananaError):
    status = 409
    code = "invalid_transition"


class IdempotencyConflict(NanoBananaError):
    status = 409
    code = "idempotency_conflict"


class FileTooLarge(NanoBananaError):
    status = 413
    code = "file_too_large"

    @classmethod
    def image(cls, max_bytes: int, **details: Any) -> FileTooLarge:
        """An upload over the image limit: the message names the same number as `details.maxBytes`."""
        return cls(
            f"the image is larger than the limit of {max_bytes} bytes ({max_bytes / 2**20:g} MiB)",
            details={"maxBytes": max_bytes, **details},
        )


class UnsupportedMediaType(NanoBananaError):
    status = 415
    code = "unsupported_media_type"


class _Limited(NanoBananaError):
    status = 429

    def __init__(
        self, message: str, *, retry_after_s: float, limit: int, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, details={**(details or {}), "retryAfterSeconds": max(1, int(retry_after_s + 0.999))})
        self.retry_after_s = max(1, int(retry_after_s + 0.999))
        self.limit = limit
        self.headers = {
            "Retry-After": str(self.retry_after_s),
            "RateLimit-Limit": str(limit),
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": str(self.retry_after_s),
        }


class RateLimited(_Limited):
    code = "rate_limited"


class ConcurrencyLimited(_Limited):
    code = "concurrency_limited"


class BudgetExceeded(_Limited):
    """The project's images for this UTC month would pass its budget: retry at the next month."""

    code = "budget_exceeded"


class Unavailable(NanoBananaError):
    """A dependency is down or contended past our retry budget; nothing was reserved."""

    status = 503
    code = "unavailable"

    def __init__(
        self, message: str = "a dependency is unavailable; retry shortly", *, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, details=details)
        self.headers = {"Retry-After": "2"}


class CallbackInProgress(Unavailable):
    """A duplicate of a callback delivery that is still being applied: retry, it is not done yet."""

    code = "callback_in_progress"

    def __init__(self, message: str, *, retry_after_s: int, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details=details)
        self.headers = {"Retry-After": str(retry_after_s)}


class IdempotencyKeyInUse(Unavailable):
    """Another request with this Idempotency-Key is still creating its job (its row is not written yet):
    retry after `Retry-After`, and the answer will be that job."""

    def __init__(self, message: str, *, retry_after_s: int = 2) -> None:
        super().__init__(message, details={"reason": "idempotency_key_in_use"})
        self.headers = {"Retry-After": str(retry_after_s)}


class StorageMisconfigured(Unavailable):
    """Storage refuses our own configuration (the key, the bucket): no retry fixes it, an operator must.
    Answered 503 like an outage (never NotFound, never a permanent job failure); `cause` names what is
    wrong (`key_rejected`, `key_not_service_role`, `bucket_not_found`, `request_refused`)."""

    def __init__(self, cause: str, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"storage is misconfigured: {message}", details={**(details or {}), "cause": cause})
        self.cause = cause


class GenerationFailed(NanoBananaError):
    """The model call failed for good (after retries within the deadline)."""

    status = 502
    code = "generation_failed"


class ContentBlocked(NanoBananaError):
    """The model refused on safety grounds, or answered with text only."""

    status = 422
    code = "content_blocked"


class ProcessorUnavailable(NanoBananaError):
    status = 502
    code = "processor_unavailable"


class TransientError(Exception):
    """A failure a retry may fix (task handlers answer non-2xx so the platform redelivers)."""
