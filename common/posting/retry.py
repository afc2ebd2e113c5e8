"""When to try a failed PSA operation again, and when to give up (the operation is dead)."""
import random
from dataclasses import dataclass, field

from common.vendor_client import MalformedRecord, RateLimited, Rejected, Timeout, Transient, Unauthorized, VendorError

# what to do after a call failed
RETRY = "retry"          # answered with an error (429, 5xx, 401): not applied; try again after a backoff
DEAD = "dead"            # the vendor refused it (validation): retrying cannot help, a person must look
UNKNOWN = "unknown"      # outcome unknown (timeout, dropped answer, unreadable answer): re-read, never re-send as is
NOT_SENT = "not_sent"    # our own budget or concurrency slot said no: nothing left, no attempt counted


class NotSent(Exception):
    """Raised before a request left (budget exhausted, no concurrency slot)."""

    def __init__(self, message, retry_after=1.0):
        super().__init__(message)
        self.retry_after = float(retry_after)


def classify(exc):
    if isinstance(exc, NotSent):
        return NOT_SENT
    if isinstance(exc, Transient) and exc.request_sent is False:
        return RETRY          # the connection never opened
    if isinstance(exc, (Timeout, MalformedRecord)):
        return UNKNOWN
    if isinstance(exc, (RateLimited, Transient, Unauthorized)):
        return RETRY
    if isinstance(exc, Rejected):
        return DEAD
    if isinstance(exc, VendorError):
        return UNKNOWN if exc.request_sent is None else RETRY
    return UNKNOWN            # our own bug mid-call: assume it may have been sent


@dataclass
class RetryPolicy:
    """max_attempts sends per operation; backoff base * 2**(attempt-1), capped, jittered to 50-100 %,
    never shorter than the vendor's Retry-After."""

    max_attempts: int = 6
    base: float = 2.0
    cap: float = 600.0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def delay(self, attempt, retry_after=None):
        raw = min(self.cap, self.base * 2 ** max(attempt - 1, 0)) * self.rng.uniform(0.5, 1.0)
        return max(raw, float(retry_after or 0.0))

    def exhausted(self, attempts):
        return attempts >= self.max_attempts

    @classmethod
    def from_config(cls, config, prefix="POSTING"):
        backoff = config.get(f"{prefix}_BACKOFF", [2.0, 600.0])
        return cls(max_attempts=int(config.get(f"{prefix}_MAX_ATTEMPTS", 6)), base=float(backoff[0]),
                   cap=float(backoff[1]))
