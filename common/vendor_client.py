"""One base HTTP client for the outside vendors (Ingram Marketplace, Autotask, ConnectWise).

It owns what every vendor call needs: timeouts, metrics, logs without secrets, retries that
never repeat a write, and turning every failure into one typed VendorError. Vendor clients
subclass it and stay a flat list of endpoints (docs/vendor-clients.md).
"""
from __future__ import annotations

import email.utils
import logging
import random
import time
from typing import Any

import requests
from prometheus_client import Counter
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError

from common.metrics import VENDOR_REQUESTS, VENDOR_SECONDS

log = logging.getLogger(__name__)

VENDOR_MALFORMED = Counter("vendor_malformed_records_total", "Vendor records that failed validation",
                           ["vendor", "endpoint"])


class VendorError(Exception):
    """Any failed vendor call. request_sent: False = provably not sent, None = unknown, True = answered."""

    def __init__(self, message: str = "", *, vendor: str = "vendor", endpoint: str = "",
                 status: int | None = None, retry_after: float | None = None,
                 request_sent: bool | None = True):
        self.vendor, self.endpoint, self.status = vendor, endpoint, status
        self.message, self.retry_after, self.request_sent = message, retry_after, request_sent
        super().__init__(message)

    def __str__(self) -> str:
        status = f" {self.status}" if self.status is not None else ""
        return f"{self.vendor} {self.endpoint}{status}: {self.message}"


class Unauthorized(VendorError):
    """401 (and 403 by default): the credentials are wrong, expired or lack the right."""


class RateLimited(VendorError):
    """429; retry_after = seconds to wait (None when the vendor did not say)."""


class Transient(VendorError):
    """5xx (but 504), 408, or the connection could not be made (request_sent False)."""


class Timeout(VendorError):
    """Outcome unknown: read timeout, connection lost after sending, or 504. A write may have applied."""


class Rejected(VendorError):
    """Any other non-2xx answer; message is the vendor's own text."""


class NotFound(Rejected):
    """404."""


class MalformedRecord(VendorError):
    """A vendor record failed validation. str() names the record id and the field."""

    def __init__(self, record_id: Any, field: str | None, problem: str, *, vendor: str = "vendor",
                 endpoint: str = "", status: int | None = None, errors: dict | None = None):
        self.record_id, self.field, self.problem = record_id, field, problem
        self.errors = errors or ({field: problem} if field else {})
        super().__init__(f"record {record_id}: field {field}: {problem}", vendor=vendor,
                         endpoint=endpoint, status=status)


def _provably_not_sent(exc: BaseException) -> bool:
    """True only when the TCP/TLS connection was never established (nothing was sent)."""
    if isinstance(exc, (requests.exceptions.ConnectTimeout, requests.exceptions.SSLError,
                        requests.exceptions.ProxyError)):
        return True
    stack, seen = [exc], set()
    while stack:
        err = stack.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, ConnectTimeoutError):  # NewConnectionError (refused, DNS) is a subclass
            return True
        if isinstance(err, MaxRetryError):
            stack.append(err.reason)
        stack.extend(a for a in getattr(err, "args", ()) if isinstance(a, BaseException))
    return False


class VendorClient:
    vendor: str = "vendor"

    def __init__(self, base_url: str, *, timeout=(3.05, 30.0), read_retries: int = 3, backoff: float = 0.5,
                 session: requests.Session | None = None, sleep=time.sleep, max_wait: float = 30.0):
        self.base_url = base_url.rstrip("/") + "/"
        self.timeout = timeout
        self.read_retries = read_retries
        self.backoff = backoff
        self.max_wait = max_wait  # a longer Retry-After is raised to the caller instead of slept
        self.session = session or requests.Session()
        self.sleep = sleep
        self._rng = random.Random()

    # --- hooks for vendor clients --------------------------------------------------------
    def auth_headers(self) -> dict:
        return {}

    def on_unauthorized(self) -> bool:
        """Refresh credentials after a 401; True retries the call once."""
        return False

    def error_message(self, response: requests.Response) -> str:
        return (response.text or response.reason or "")[:500]

    def error_class(self, response: requests.Response) -> type[VendorError]:
        status = response.status_code
        if status in (401, 403):
            return Unauthorized
        if status == 429:
            return RateLimited
        if status == 504:
            return Timeout
        if status >= 500 or status == 408:
            return Transient
        return NotFound if status == 404 else Rejected

    def retry_after(self, response: requests.Response) -> float | None:
        """Retry-After (seconds or HTTP date), else X-RateLimit-Reset (seconds, or epoch seconds)."""
        value = response.headers.get("Retry-After")
        if value:
            try:
                return max(0.0, float(value))
            except ValueError:
                try:
                    when = email.utils.parsedate_to_datetime(value)
                except (TypeError, ValueError):
                    when = None
                if when is not None and when.tzinfo is not None:
                    return max(0.0, when.timestamp() - time.time())
        value = response.headers.get("X-RateLimit-Reset")
        try:
            reset = float(value) if value else None
        except ValueError:
            return None
        if reset is not None and reset > 1e9:  # an epoch timestamp, not a delay
            reset = reset - time.time()
        return None if reset is None else max(0.0, reset)

    # --- calls ---------------------------------------------------------------------------
    def get_json(self, url_or_path: str, endpoint: str, **kw) -> Any:
        response = self.request("GET", url_or_path, endpoint, **kw)
        try:
            return response.json()
        except ValueError:
            raise Transient(f"answer is not JSON: {response.text[:200]!r}", vendor=self.vendor,
                            endpoint=endpoint, status=response.status_code) from None

    def request(self, method: str, url_or_path: str, endpoint: str, *, params=None, json=None,
                headers=None, safe: bool | None = None, auth: bool = True, timeout=None) -> requests.Response:
        """The 2xx response, or a typed VendorError. auth=False skips auth_headers/on_unauthorized
        (a token call); timeout overrides the client's for this call."""
        method = method.upper()
        safe = method in ("GET", "HEAD") if safe is None else safe
        url = url_or_path if url_or_path.startswith(("http://", "https://")) \
            else self.base_url + url_or_path.lstrip("/")
        attempt = retries = 0
        refreshed = resent = False
        while True:
            attempt += 1
            sent_headers = {**(self.auth_headers() if auth else {}), **(headers or {})}
            try:
                return self._attempt(method, url, endpoint, attempt, params=params, json=json,
                                     headers=sent_headers, timeout=timeout or self.timeout)
            except Unauthorized as err:
                if not (auth and err.status == 401 and not refreshed and self.on_unauthorized()):
                    raise
                refreshed = True
                log.info("vendor=%s endpoint=%s status=401 attempt=%d: credentials refreshed, retrying",
                         self.vendor, endpoint, attempt)
            except (RateLimited, Transient, Timeout) as err:
                if safe and retries < self.read_retries and (err.retry_after or 0) <= self.max_wait:
                    wait = err.retry_after if err.retry_after is not None else self._backoff(retries)
                elif not safe and err.request_sent is False and not resent:
                    resent, wait = True, self._backoff(retries)
                else:
                    raise
                retries += 1
                log.warning("vendor=%s endpoint=%s status=%s attempt=%d: %s; retrying in %.2fs",
                            self.vendor, endpoint, err.status or type(err).__name__, attempt,
                            type(err).__name__, wait)
                self.sleep(wait)

    def _backoff(self, retries: int) -> float:
        return min(self.max_wait, self.backoff * 2 ** retries) * self._rng.uniform(0.5, 1.0)

    def _attempt(self, method, url, endpoint, attempt, **kw) -> requests.Response:
        started = time.monotonic()
        try:
            response = self.session.request(method, url, **kw)
        except requests.RequestException as exc:
            if isinstance(exc, ValueError):  # bad URL or header: our bug, not the vendor's
                raise
            if isinstance(exc, requests.TooManyRedirects):
                err = Rejected(str(exc), vendor=self.vendor, endpoint=endpoint)
            elif _provably_not_sent(exc):
                err = Transient(f"could not connect: {type(exc).__name__}", vendor=self.vendor,
                                endpoint=endpoint, request_sent=False)
            else:
                err = Timeout(f"no answer: {type(exc).__name__}", vendor=self.vendor, endpoint=endpoint,
                              request_sent=None)
            self._observe(endpoint, type(err).__name__, started)
            log.warning("vendor=%s endpoint=%s status=%s attempt=%d: %s", self.vendor, endpoint,
                        type(err).__name__, attempt, err.message)
            raise err from exc
        self._observe(endpoint, str(response.status_code), started)
        if 200 <= response.status_code < 300:
            log.debug("vendor=%s endpoint=%s status=%d attempt=%d", self.vendor, endpoint,
                      response.status_code, attempt)
            return response
        cls = self.error_class(response)
        err = cls(self.error_message(response), vendor=self.vendor, endpoint=endpoint,
                  status=response.status_code,
                  retry_after=self.retry_after(response) if cls in (RateLimited, Transient) else None,
                  request_sent=None if cls is Timeout else True)
        log.warning("vendor=%s endpoint=%s status=%d attempt=%d: %s %s", self.vendor, endpoint,
                    response.status_code, attempt, cls.__name__, err.message[:200])
        raise err

    def _observe(self, endpoint: str, status: str, started: float) -> None:
        VENDOR_REQUESTS.labels(self.vendor, endpoint, status).inc()
        VENDOR_SECONDS.labels(self.vendor, endpoint).observe(time.monotonic() - started)
