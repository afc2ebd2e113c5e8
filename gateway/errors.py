"""Errors the API returns, and the one table that maps every exception to a status.

Responses are always JSON {"error", "message"}; an unexpected exception becomes a 500 with a
generic message (the detail goes to the log, never to the caller).
"""
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException


class ApiError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message, details=None):
        super().__init__(message)
        self.message = message
        self.details = details


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class Unavailable(ApiError):
    status, code = 503, "unavailable"


# remote exceptions from services arrive as nameko RemoteError with the original type's name
REMOTE_ERRORS = {
    "NotFound": NotFound, "TenantMismatch": NotFound, "ValidationError": BadRequest, "BadRequest": BadRequest,
    "Conflict": Conflict, "Forbidden": Forbidden, "PsaUnavailable": Unavailable, "VendorUnavailable": Unavailable,
    "MethodNotFound": Unavailable,  # a service of an older release that lacks the call
}


def to_api_error(exc):
    """Return (status, body) for any exception."""
    if isinstance(exc, ApiError):
        body = {"error": exc.code, "message": exc.message}
        if exc.details:
            body["details"] = exc.details
        return exc.status, body
    if isinstance(exc, ValidationError):
        return 400, {"error": "validation_error", "message": "the request body is not valid",
                     "details": exc.messages}
    if isinstance(exc, HTTPException):
        return exc.code or 500, {"error": (exc.name or "error").lower().replace(" ", "_"),
                                 "message": exc.description or exc.name}
    exc_type = getattr(exc, "exc_type", None)
    if exc_type in REMOTE_ERRORS:
        mapped = REMOTE_ERRORS[exc_type]
        return mapped.status, {"error": mapped.code, "message": str(getattr(exc, "value", "")) or mapped.code}
    if exc_type is None and type(exc).__name__ in ("RpcTimeout", "UnknownService", "MethodNotFound"):
        return 503, {"error": "unavailable", "message": "a backing service is not answering"}
    return 500, {"error": "internal_error", "message": "something went wrong on our side; it has been logged"}
