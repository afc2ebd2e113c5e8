"""Ingram Micro Cloud Marketplace API client (external-apis.md section 1; docs/vendor-clients.md).

Read-only: token, customers, products, subscriptions. Lists page with offset/limit and come back
as a `Listing`: iterate it for the valid records; records that fail validation are skipped and
kept in `listing.malformed` (MalformedRecord each) so a full sync can quarantine them and must not
take their absence for a deletion.
"""
from __future__ import annotations

import base64
import datetime as dt
import logging
from typing import Any, Iterable, Iterator
from urllib.parse import quote

from common.vendor_client import VENDOR_MALFORMED, MalformedRecord, VendorClient
from services.marketplace import schemas

log = logging.getLogger(__name__)

DEFAULT_BASE = "https://api.cloud.im/marketplace/{region}/"


class Listing:
    """One pass over every page of a list endpoint.

    Iterating yields validated records (dicts), each id once. After (or during) the pass:
    `malformed` - a MalformedRecord per record that failed validation (skipped, logged, counted);
    `total` - the vendor's pagination.total of the last page; `pages` - pages fetched.
    Transport errors (VendorError) propagate from the iteration: the listing is then incomplete.
    """

    def __init__(self, pages: Iterator[tuple[list, int]], schema, vendor: str, endpoint: str):
        self._pages, self._schema = pages, schema
        self.vendor, self.endpoint = vendor, endpoint
        self.malformed: list[MalformedRecord] = []
        self.total: int | None = None
        self.pages = 0
        self.complete = False
        self._records = self._run()

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        return next(self._records)

    def _run(self) -> Iterator[dict]:
        seen: set[str] = set()
        for data, total in self._pages:
            self.pages += 1
            self.total = total
            for raw in data:
                rid = schemas.record_id_of(raw)
                if rid is not None and rid in seen:  # offset paging over a list that grew meanwhile
                    continue
                try:
                    record = schemas.validate(self._schema, raw, vendor=self.vendor, endpoint=self.endpoint)
                except MalformedRecord as err:
                    self.malformed.append(err)
                    _report(err)
                    if rid is not None:
                        seen.add(rid)
                    continue
                seen.add(record["id"])
                yield record
        self.complete = True


def _report(err: MalformedRecord) -> None:
    VENDOR_MALFORMED.labels(err.vendor, err.endpoint).inc()
    log.warning("vendor=%s endpoint=%s malformed record %s field %s: %s", err.vendor, err.endpoint,
                err.record_id, err.field, err.problem)


def _when(value) -> str:
    """A date, datetime (naive = UTC) or ISO string for creationDateFrom/To."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


class MarketplaceClient(VendorClient):
    vendor = "ingram"

    def __init__(self, credentials: dict, **kw):
        """credentials: {base_url?, region, api_user, password, subscription_key, marketplace};
        kw: VendorClient options (timeout, read_retries, backoff, session, sleep, max_wait)."""
        base = credentials.get("base_url") or DEFAULT_BASE.format(region=credentials.get("region") or "na")
        super().__init__(base, **kw)
        self._user = credentials["api_user"]
        self._password = credentials["password"]
        self._key = credentials["subscription_key"]
        self.marketplace = credentials["marketplace"]
        self._token: str | None = None

    def __repr__(self) -> str:
        return f"<MarketplaceClient {self.base_url} user={self._user}>"

    # --- auth ----------------------------------------------------------------------------
    def token(self) -> str:
        """Fetch a new token (POST {base}/token) and cache it."""
        basic = base64.b64encode(f"{self._user}:{self._password}".encode()).decode()
        body = self.request("POST", "token", "POST /token", json={"marketplace": self.marketplace},
                            headers={"Authorization": f"Basic {basic}", "X-Subscription-Key": self._key},
                            safe=True, auth=False).json()
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise MalformedRecord("token", "token", "missing from the token answer", vendor=self.vendor,
                                  endpoint="POST /token", status=200)
        self._token = token
        return token

    def auth_headers(self) -> dict:
        if self._token is None:
            self.token()
        return {"Authorization": f"Bearer {self._token}", "X-Subscription-Key": self._key}

    def on_unauthorized(self) -> bool:
        self._token = None
        self.token()  # wrong credentials raise Unauthorized from here
        return True

    def error_message(self, response) -> str:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not body.get("message"):
            return super().error_message(response)
        message = str(body["message"])
        if body.get("correlationId"):
            message += f" (correlationId {body['correlationId']})"
        return message

    # --- endpoints -----------------------------------------------------------------------
    def customers(self, page_size: int = 100) -> Listing:
        return self._listing("customers", "GET /customers", {}, page_size, schemas.CUSTOMER)

    def products(self, page_size: int = 100) -> Listing:
        return self._listing("products", "GET /products", {}, page_size, schemas.PRODUCT)

    def product(self, product_id: str) -> dict:
        return self._one("products", product_id, "GET /products/{id}", schemas.PRODUCT)

    def subscriptions(self, status: str | Iterable[str] | None = None, customer_id: str | None = None,
                      created_from=None, created_to=None, page_size: int = 100) -> Listing:
        """Summaries (no quantities), newest first. status: one or several (sent comma-separated);
        created_from/created_to: date, datetime or ISO string, inclusive (a bare date covers its day)."""
        params: dict[str, Any] = {}
        if status:
            params["status"] = status if isinstance(status, str) else ",".join(status)
        if customer_id:
            params["customerId"] = customer_id
        if created_from is not None:
            params["creationDateFrom"] = _when(created_from)
        if created_to is not None:
            params["creationDateTo"] = _when(created_to)
        return self._listing("subscriptions", "GET /subscriptions", params, page_size,
                             schemas.SUBSCRIPTION_SUMMARY)

    def subscription(self, subscription_id: str) -> dict:
        """Summary + totalPrice + products[{mpn,name,quantity,unitPrice,extendedPrice}];
        MalformedRecord (naming this id and the field) when the record fails validation."""
        return self._one("subscriptions", subscription_id, "GET /subscriptions/{id}",
                         schemas.SUBSCRIPTION_DETAIL)

    # --- plumbing ------------------------------------------------------------------------
    def _one(self, path: str, record_id: str, endpoint: str, schema) -> dict:
        raw = self.get_json(f"{path}/{quote(str(record_id), safe='')}", endpoint)
        try:
            record = schemas.validate(schema, raw, record_id=str(record_id), vendor=self.vendor,
                                      endpoint=endpoint)
            if record["id"] != str(record_id):
                raise MalformedRecord(str(record_id), "id", f"answer is for {record['id']!r}",
                                      vendor=self.vendor, endpoint=endpoint)
        except MalformedRecord as err:
            _report(err)
            raise
        return record

    def _listing(self, path: str, endpoint: str, params: dict, page_size: int, schema) -> Listing:
        if not 1 <= page_size <= schemas.MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be within 1..{schemas.MAX_PAGE_SIZE}")
        return Listing(self._pages(path, endpoint, params, page_size), schema, self.vendor, endpoint)

    def _pages(self, path: str, endpoint: str, params: dict, page_size: int) -> Iterator[tuple[list, int]]:
        """(data, total) per page; stops when total is reached or a page is empty."""
        offset = 0
        while True:
            body = self.get_json(path, endpoint, params={**params, "offset": offset, "limit": page_size})
            data, total = self._envelope(body, endpoint, offset)
            yield data, total
            offset += len(data)  # not page_size: the vendor may clamp the limit
            if not data or offset >= total:
                return

    def _envelope(self, body, endpoint: str, offset: int) -> tuple[list, int]:
        data = body.get("data") if isinstance(body, dict) else None
        pagination = body.get("pagination") if isinstance(body, dict) else None
        total = pagination.get("total") if isinstance(pagination, dict) else None
        problem = None
        if not isinstance(data, list):
            problem = ("data", "missing or not a list")
        elif isinstance(total, bool) or not isinstance(total, int) or total < 0:
            problem = ("pagination.total", "missing or not a non-negative integer")
        if problem:
            err = MalformedRecord(f"page at offset {offset}", *problem, vendor=self.vendor, endpoint=endpoint,
                                  status=200)
            _report(err)
            raise err
        return data, total
