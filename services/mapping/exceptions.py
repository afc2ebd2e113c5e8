"""Turning what the mapping service's collaborators raise into the errors its RPC callers get
(common.errors: the gateway maps their names to HTTP statuses)."""
from nameko.exceptions import RemoteError

from common.errors import BadRequest, NotFound, VendorUnavailable


def from_remote(exc, what):
    """A RemoteError from another service as one of ours, or None when it is none of those."""
    if not isinstance(exc, RemoteError):
        return None
    message = f"{what}: {exc.value}" if exc.value else what
    if exc.exc_type in ("NotFound", "TenantMismatch"):
        return NotFound(message)
    if exc.exc_type in ("VendorUnavailable", "PsaUnavailable"):
        return VendorUnavailable(message)
    if exc.exc_type in ("BadRequest", "ValidationError"):
        return BadRequest(message)
    if exc.exc_type == "UnknownService":
        return VendorUnavailable(f"{what}: the service is not running")
    return None


class RefreshFailed(Exception):
    """The PSA's records could not be read; the message says why (kept in billing_settings)."""
