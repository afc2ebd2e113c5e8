"""Autotask PSA REST (ATServicesRest V1.0) client: a flat list of endpoint methods.

Built on common.vendor_client.VendorClient, which owns timeouts, retries (reads only), metrics
(``vendor_requests_total{vendor="autotask", endpoint=<label>, status=<code or error class>}``)
and turning every failure into a typed VendorError. This module adds what is Autotask's own:

- zone discovery (``GET {zone_url}ZoneInformation?user=...`` -> ``url``; cached; API calls go to
  ``{url}V1.0/...``),
- the three auth headers (ApiIntegrationCode, UserName, Secret) on every call - never logged,
  never in ``repr()``,
- the error body ``{"errors": ["text", ...]}`` joined into the error message,
- status mapping: Autotask refuses invalid writes and queries with **500** and its reason in
  ``errors``; such a 500 is ``Rejected`` (the vendor's message, not retried). A 500 whose text is a
  generic server failure (see ``GENERIC_SERVER_ERROR``), or with no ``errors`` body, stays
  ``Transient``. 429 is ``RateLimited`` - the hourly budget (with Retry-After) and the thread
  threshold (no Retry-After: ``THREAD_RETRY_AFTER`` seconds is assumed),
- filters (``F``), paging over ``nextPageUrl``, ``in`` filters batched by 500 ids,
- marshmallow validation of the records we bill from (services/autotask/schemas.py).

Malformed records. ``get()`` raises ``MalformedRecord``. List/query methods never raise it: they
return a ``QueryResult`` (the marketplace ``Listing`` design) - iterate it for the valid records
(dicts with the vendor's camelCase keys, see schemas.py); every record the schema rejected is
skipped, counted in ``vendor_malformed_records_total``, logged (id and field, no values) and
appended to ``result.malformed`` (MalformedRecord: ``record_id`` = the vendor id, ``entity``,
``field``, ``problem``). ``malformed`` is final and ``complete`` True once the pass has finished.

Writes (add_contract_service, update_contract_service_price, add_adjustment, add_charge) are
unsafe: never retried, except when the connection provably never opened. A ``Timeout`` from a write
means the outcome is unknown (read timeout, connection lost after sending, or 504): the write may
have been applied. The caller must not re-send it as is: re-read the PSA (contract_services /
service_units) and recompute the difference.
"""
from __future__ import annotations

import datetime as dt
import decimal
import logging
import re
import threading
from typing import Any, Callable, Iterable, Iterator

from marshmallow import ValidationError

from common.vendor_client import (VENDOR_MALFORMED, MalformedRecord, NotFound, RateLimited, Rejected,
                                  Transient, Unauthorized, VendorClient, VendorError)
from services.autotask import schemas

log = logging.getLogger(__name__)

DEFAULT_ZONE_URL = "https://webservices.autotask.net/atservicesrest/v1.0/"
MAX_RECORDS = 500          # the vendor's page-size ceiling
IN_BATCH = 500             # ids per `in` filter
ZONE_ENDPOINT = "GET /ZoneInformation"
RECURRING_SERVICE = 7      # contractType
CONTRACT_ACTIVE = 1        # contract status
# canonical spelling of the entities we use: keeps metric labels to one form whatever the caller types
_ENTITY_NAMES = {n.lower(): n for n in ("Companies", "Contracts", "Services", "ContractServices",
                                        "ContractServiceUnits", "ContractServiceAdjustments",
                                        "ContractCharges")}


def _entity(name: str) -> str:
    return _ENTITY_NAMES.get(str(name).lower(), str(name))

__all__ = ["AutotaskClient", "F", "QueryResult", "DEFAULT_ZONE_URL", "VendorError", "Unauthorized",
           "RateLimited", "Transient", "Rejected", "NotFound", "MalformedRecord"]


# --- filters ---------------------------------------------------------------------------------

def _wire_value(value: Any) -> Any:
    """Python values -> JSON the vendor accepts (dates as yyyy-mm-dd, Decimal as number)."""
    if isinstance(value, dt.datetime):
        value = value.astimezone(dt.timezone.utc) if value.tzinfo else value
        return value.strftime("%Y-%m-%dT%H:%M:%S") + ("Z" if value.tzinfo else "")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_wire_value(v) for v in value]
    return value


class F:
    """Filter expressions for Autotask queries: plain dicts, so they can be nested and logged.

    F.eq("companyID", 5), F.in_("contractID", ids), F.or_(F.eq(...), F.and_(...)), F.all().
    A list of expressions passed to query() is an implicit AND.
    """

    @staticmethod
    def _cmp(op: str, field: str, value: Any = None, *, has_value: bool = True) -> dict:
        expr = {"op": op, "field": field}
        if has_value:
            expr["value"] = _wire_value(value)
        return expr

    @classmethod
    def eq(cls, field: str, value) -> dict:
        return cls._cmp("eq", field, value)

    @classmethod
    def noteq(cls, field: str, value) -> dict:
        return cls._cmp("noteq", field, value)

    @classmethod
    def gt(cls, field: str, value) -> dict:
        return cls._cmp("gt", field, value)

    @classmethod
    def gte(cls, field: str, value) -> dict:
        return cls._cmp("gte", field, value)

    @classmethod
    def lt(cls, field: str, value) -> dict:
        return cls._cmp("lt", field, value)

    @classmethod
    def lte(cls, field: str, value) -> dict:
        return cls._cmp("lte", field, value)

    @classmethod
    def begins_with(cls, field: str, value) -> dict:
        return cls._cmp("beginsWith", field, value)

    @classmethod
    def ends_with(cls, field: str, value) -> dict:
        return cls._cmp("endsWith", field, value)

    @classmethod
    def contains(cls, field: str, value) -> dict:
        return cls._cmp("contains", field, value)

    @classmethod
    def exist(cls, field: str) -> dict:
        return cls._cmp("exist", field, has_value=False)

    @classmethod
    def not_exist(cls, field: str) -> dict:
        return cls._cmp("notExist", field, has_value=False)

    @classmethod
    def in_(cls, field, values: Iterable):
        return cls._cmp("in", field, list(values))

    @classmethod
    def not_in(cls, field, values: Iterable):
        return cls._cmp("notIn", field, list(values))

    @staticmethod
    def and_(*items: dict) -> dict:
        return {"op": "and", "items": list(items)}

    @staticmethod
    def or_(*items: dict) -> dict:
        return {"op": "or", "items": list(items)}

    @classmethod
    def all(cls) -> dict:
        """Every record (the vendor needs at least one expression)."""
        return cls.gte("id", 0)


def _filters(filters) -> list[dict]:
    if filters is None:
        return [F.all()]
    if isinstance(filters, dict):
        return [filters]
    out = list(filters)
    return out or [F.all()]


def _chunks(ids: Iterable[int], size: int = IN_BATCH) -> list[list[int]]:
    unique = sorted({int(i) for i in ids})
    return [unique[i:i + size] for i in range(0, len(unique), size)]


# --- results ---------------------------------------------------------------------------------

class QueryResult:
    """One pass over every page of one or more queries (an `in` filter batched by 500 ids).

    Iterating yields validated records (dicts with the vendor's camelCase keys). After (or during)
    the pass: ``malformed`` - a MalformedRecord per record that failed validation (skipped, logged,
    counted in vendor_malformed_records_total); ``pages`` - pages fetched; ``complete`` - True once
    every page was read (False while iterating, or when a VendorError stopped the pass). Like the
    marketplace ``Listing``: treat malformed ids as present but quarantined, never as deleted.
    """

    def __init__(self, entity: str, pages: Iterator[list], loader: Callable[[Any], dict]):
        self.entity = entity
        self.malformed: list[MalformedRecord] = []
        self.pages = 0
        self.complete = False
        self._pages = pages
        self._loader = loader
        self._records = self._run()

    def _run(self) -> Iterator[dict]:
        for items in self._pages:
            self.pages += 1
            for raw in items:
                try:
                    record = self._loader(raw)
                except MalformedRecord as bad:
                    self.malformed.append(bad)
                    continue
                yield record
        self.complete = True

    def __iter__(self) -> "QueryResult":
        return self

    def __next__(self) -> dict:
        return next(self._records)

    def all(self) -> list[dict]:
        """Drain the rest of the pass into a list."""
        return list(self._records)


# --- the client ------------------------------------------------------------------------------

class AutotaskClient(VendorClient):
    """One Autotask database (tenant), from its credential document:
    ``{"zone_url" (optional), "api_user", "secret", "integration_code"}``.

    Extra keyword arguments go to VendorClient (timeout, read_retries, backoff, session, sleep,
    max_wait).
    """

    vendor = "autotask"
    # A 500 answer reading like one of these is a server failure (Transient), not a refusal.
    # "fault" covers the simulator's injected "simulated fault 500".
    GENERIC_SERVER_ERROR = re.compile(
        r"(?i)internal server error|unexpected error|an error (has )?occurred|try again|timed? ?out"
        r"|temporar|unavailable|deadlock|\bfault\b")
    THREAD_RETRY_AFTER = 1.0     # seconds; the thread-threshold 429 carries no Retry-After

    def __init__(self, credentials: dict, **kwargs):
        missing = [k for k in ("api_user", "secret", "integration_code") if not credentials.get(k)]
        if missing:
            raise ValueError(f"Autotask credentials lack {', '.join(missing)}")
        zone_url = credentials.get("zone_url") or DEFAULT_ZONE_URL
        super().__init__(zone_url, **kwargs)
        self._user = str(credentials["api_user"])
        self._secret = str(credentials["secret"])
        self._code = str(credentials["integration_code"])
        self._api_url: str | None = None
        self._zone: dict | None = None
        self._zone_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AutotaskClient(user={self._user!r}, zone={self._api_url or self.base_url!r})"

    # --- VendorClient hooks ------------------------------------------------------------------
    def auth_headers(self) -> dict:
        return {"ApiIntegrationCode": self._code, "UserName": self._user, "Secret": self._secret}

    def on_unauthorized(self) -> bool:
        # the database may have moved zone: look it up again on the next call; no blind retry
        with self._zone_lock:
            self._api_url = None
        return False

    @staticmethod
    def _errors(response) -> list[str] | None:
        try:
            body = response.json()
        except ValueError:
            return None
        errors = body.get("errors") if isinstance(body, dict) else None
        if isinstance(errors, list) and errors:
            return [str(e) for e in errors]
        return None

    def error_message(self, response) -> str:
        errors = self._errors(response)
        if errors:
            return "; ".join(errors)[:2000]
        return super().error_message(response)

    def error_class(self, response) -> type[VendorError]:
        if response.status_code == 500:
            errors = self._errors(response)
            if errors and not any(self.GENERIC_SERVER_ERROR.search(e) for e in errors):
                return Rejected
        return super().error_class(response)

    def retry_after(self, response) -> float | None:
        value = super().retry_after(response)
        if value is None and response.status_code == 429:
            errors = self._errors(response) or []
            if any("thread threshold" in e.lower() for e in errors):
                return self.THREAD_RETRY_AFTER
        return value

    # --- zone ----------------------------------------------------------------------------------
    def zone_information(self) -> dict:
        """GET ZoneInformation (no auth). Caches the API url. Unknown user -> Unauthorized."""
        try:
            body = self.get_json("ZoneInformation", ZONE_ENDPOINT, params={"user": self._user}, auth=False)
        except Rejected as err:  # 404 unknown user, 400, or a refusal: the credential is wrong
            raise Unauthorized(f"zone lookup failed for the API user: {err.message}", vendor=self.vendor,
                               endpoint=ZONE_ENDPOINT, status=err.status) from err
        url = body.get("url") if isinstance(body, dict) else None
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise self._malformed("ZoneInformation", None, "url", "missing or not an absolute url",
                                  ZONE_ENDPOINT)
        with self._zone_lock:
            self._zone = body
            self._api_url = url.rstrip("/") + "/V1.0/"
        return body

    def api_url(self) -> str:
        """``{zone url}V1.0/``, discovering the zone on first use."""
        if self._api_url is None:
            self.zone_information()
        return self._api_url  # type: ignore[return-value]

    def _url(self, path: str) -> str:
        return self.api_url() + path.lstrip("/")

    # --- validation ------------------------------------------------------------------------------
    def _load(self, entity: str, item: Any, endpoint: str, partial: bool = False) -> dict:
        """One vendor item -> validated dict (entities without a schema: returned as sent).

        Raises MalformedRecord (record_id = the vendor's id, .entity, field of the first problem,
        all problems in .errors) after logging and counting it.
        """
        name = schemas.SCHEMA_BY_LOWER.get(entity.lower())
        if not isinstance(item, dict):
            raise self._malformed(entity, None, "(record)", f"expected an object, got {type(item).__name__}",
                                  endpoint)
        if name is None:
            return item
        schema = schemas.SCHEMAS[name]
        try:
            loaded = schema.load(item, partial=partial)
        except ValidationError as exc:
            field, problem = schemas.first_problem(exc)
            raise self._malformed(name, schemas.record_id(item), field, problem, endpoint,
                                  errors=exc.messages) from None
        if partial:  # IncludeFields: keep what the vendor returned, not the load defaults
            sent = {str(k).lower() for k in item}
            loaded = {k: v for k, v in loaded.items() if k.lower() in sent}
        return loaded

    def _malformed(self, entity, rid, field, problem, endpoint, errors=None) -> MalformedRecord:
        err = MalformedRecord(rid, field, problem, vendor=self.vendor, endpoint=endpoint,
                              status=200, errors=errors if isinstance(errors, dict) else None)
        err.entity = entity
        VENDOR_MALFORMED.labels(self.vendor, endpoint).inc()
        # id and field only: values may be customer data
        log.warning("vendor=autotask endpoint=%s malformed %s id=%s field=%s", endpoint, entity, rid, field)
        return err

    # --- reads ---------------------------------------------------------------------------------
    def _pages(self, entity: str, filters: list[dict], include_fields, max_records: int) -> Iterator[list]:
        """The items of each page: POST {Entity}/query, then every nextPageUrl."""
        endpoint = f"POST /{entity}/query"
        body: dict[str, Any] = {"MaxRecords": int(max_records), "filter": filters}
        if include_fields:
            body["IncludeFields"] = list(include_fields)
        page = self.request("POST", self._url(f"{entity}/query"), endpoint, json=body, safe=True)
        while True:
            data = self._json(page, endpoint)
            items = data.get("items") if isinstance(data, dict) else None
            if not isinstance(items, list):  # a broken envelope ends the pass (complete stays False)
                raise self._malformed(entity, "page", "items", "missing or not a list", endpoint)
            yield items
            nxt = (data.get("pageDetails") or {}).get("nextPageUrl")
            if not nxt:
                return
            # the vendor's absolute url carries paging and search; it takes GET or POST - POST with
            # the first page's body, like the first call (a read: safe, retried)
            page = self.request("POST", nxt, f"POST /{entity}/query/next", json=body, safe=True)

    def _json(self, response, endpoint) -> Any:
        try:
            return response.json()
        except ValueError:
            raise Transient(f"answer is not JSON: {response.text[:200]!r}", vendor=self.vendor,
                            endpoint=endpoint, status=response.status_code) from None

    def query(self, entity: str, filters, include_fields=None, max_records: int = MAX_RECORDS) -> QueryResult:
        """POST {Entity}/query, following every nextPageUrl; a QueryResult of validated records.

        filters: one expression or a list (AND); None or [] means every record. include_fields
        limits the fields returned (records are then validated for the fields present only).
        """
        if not 1 <= int(max_records) <= MAX_RECORDS:
            raise ValueError(f"max_records must be 1..{MAX_RECORDS}")
        entity = _entity(entity)
        endpoint = f"POST /{entity}/query"
        partial = bool(include_fields)
        return QueryResult(entity, self._pages(entity, _filters(filters), include_fields, max_records),
                           lambda raw: self._load(entity, raw, endpoint, partial))

    def _batched(self, entity: str, field: str, ids: Iterable[int], extra: list[dict],
                 max_records: int = MAX_RECORDS) -> QueryResult:
        """One query per 500 ids (`in` filter) plus the extra expressions, as one result."""
        endpoint = f"POST /{entity}/query"

        def pages() -> Iterator[list]:
            for chunk in _chunks(ids):
                yield from self._pages(entity, [F.in_(field, chunk), *extra], None, max_records)
        return QueryResult(entity, pages(), lambda item: self._load(entity, item, endpoint))

    def count(self, entity: str, filters) -> int:
        """POST {Entity}/query/count -> the number of matching records."""
        entity = _entity(entity)
        endpoint = f"POST /{entity}/query/count"
        resp = self.request("POST", self._url(f"{entity}/query/count"), endpoint,
                            json={"filter": _filters(filters)}, safe=True)
        data = self._json(resp, endpoint)
        n = data.get("queryCount") if isinstance(data, dict) else None
        if not isinstance(n, int) or isinstance(n, bool):
            raise MalformedRecord(None, "queryCount", f"not an integer: {n!r}",
                                  vendor=self.vendor, endpoint=endpoint)
        return n

    def get(self, entity: str, record_id: int) -> dict | None:
        """GET {Entity}/{id} -> the validated record, or None when it does not exist.

        Raises MalformedRecord when the record fails validation.
        """
        entity = _entity(entity)
        endpoint = f"GET /{entity}/{{id}}"
        data = self.get_json(self._url(f"{entity}/{int(record_id)}"), endpoint)
        item = data.get("item") if isinstance(data, dict) else None
        if item is None:
            return None
        return self._load(entity, item, endpoint)

    def companies(self, active_only: bool = True) -> QueryResult:
        return self.query("Companies", [F.eq("isActive", True)] if active_only else None)

    def contracts(self, company_id: int | None = None, recurring_only: bool = True) -> QueryResult:
        """Contracts; recurring_only = Recurring Service (contractType 7) and active (status 1)."""
        filters = []
        if company_id is not None:
            filters.append(F.eq("companyID", int(company_id)))
        if recurring_only:
            filters += [F.eq("contractType", RECURRING_SERVICE), F.eq("status", CONTRACT_ACTIVE)]
        return self.query("Contracts", filters)

    def services(self, active_only: bool = True) -> QueryResult:
        return self.query("Services", [F.eq("isActive", True)] if active_only else None)

    def contract_services(self, contract_ids: Iterable[int]) -> QueryResult:
        """ContractServices of these contracts (500 ids a query). No unit count here: see service_units."""
        return self._batched("ContractServices", "contractID", contract_ids, [])

    def service_units(self, contract_ids: Iterable[int] | None = None,
                      contract_service_ids: Iterable[int] | None = None,
                      on_date: dt.date | None = None) -> QueryResult:
        """ContractServiceUnits in force on on_date (startDate <= d <= endDate; default: UTC today).

        Filter by contract ids or contract service ids (batched by 500); neither = every line.
        """
        day = on_date or dt.datetime.now(dt.timezone.utc).date()
        if isinstance(day, dt.datetime):
            day = day.date()
        in_force = [F.lte("startDate", day), F.gte("endDate", day)]
        if contract_ids is not None and contract_service_ids is not None:
            raise ValueError("give contract_ids or contract_service_ids, not both")
        if contract_ids is not None:
            return self._batched("ContractServiceUnits", "contractID", contract_ids, in_force)
        if contract_service_ids is not None:
            return self._batched("ContractServiceUnits", "contractServiceID", contract_service_ids, in_force)
        return self.query("ContractServiceUnits", in_force)

    def threshold_information(self) -> dict:
        """GET ThresholdInformation -> {"external_request_threshold", "request_threshold_timeframe"
        (minutes), "current_timeframe_request_count"}."""
        endpoint = "GET /ThresholdInformation"
        data = self.get_json(self._url("ThresholdInformation"), endpoint)
        keys = {"externalRequestThreshold": "external_request_threshold",
                "requestThresholdTimeframe": "request_threshold_timeframe",
                "currentTimeframeRequestCount": "current_timeframe_request_count"}
        if not isinstance(data, dict):
            raise MalformedRecord(None, "(record)", "not a JSON object", vendor=self.vendor, endpoint=endpoint)
        lower = {str(k).lower(): v for k, v in data.items()}
        out = {}
        for wire, name in keys.items():
            value = lower.get(wire.lower())
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise MalformedRecord(None, wire, f"not a number: {value!r}", vendor=self.vendor,
                                      endpoint=endpoint)
            out[name] = value
        return out

    # --- writes (unsafe: never retried; Timeout = outcome unknown) ---------------------------
    def _write(self, method: str, path: str, endpoint: str, body: dict) -> int:
        resp = self.request(method, self._url(path), endpoint, json=body, safe=False)
        data = self._json(resp, endpoint)
        item_id = data.get("itemId") if isinstance(data, dict) else None
        if not isinstance(item_id, int) or isinstance(item_id, bool):
            # the vendor accepted the write (200) but did not say which record: re-read to find it
            raise MalformedRecord(None, "itemId", f"not an integer: {item_id!r}",
                                  vendor=self.vendor, endpoint=endpoint, status=resp.status_code)
        return item_id

    @staticmethod
    def _money(value) -> float | None:
        return None if value is None else float(schemas.to_decimal(value))

    def add_contract_service(self, contract_id: int, service_id: int, unit_price, unit_cost,
                             invoice_description: str | None = None) -> int:
        """POST Contracts/{id}/Services -> the new ContractService id.

        Not retried. Timeout = outcome unknown: re-read contract_services() before trying again
        (the vendor refuses a duplicate service on a contract with Rejected).
        """
        body = {"contractID": int(contract_id), "serviceID": int(service_id),
                "unitPrice": self._money(unit_price), "unitCost": self._money(unit_cost)}
        if invoice_description is not None:
            body["invoiceDescription"] = invoice_description
        return self._write("POST", f"Contracts/{int(contract_id)}/Services", "POST /Contracts/{id}/Services", body)

    def update_contract_service_price(self, contract_id: int, contract_service_id: int, adjusted_price) -> int:
        """PATCH Contracts/{id}/Services {id, adjustedPrice} (the only price writable after creation).

        Not retried. Timeout = outcome unknown: re-read the ContractService and compare.
        """
        body = {"id": int(contract_service_id), "adjustedPrice": self._money(adjusted_price)}
        return self._write("PATCH", f"Contracts/{int(contract_id)}/Services", "PATCH /Contracts/{id}/Services", body)

    def add_adjustment(self, contract_id: int, service_id: int | None, contract_service_id: int | None,
                       unit_change: int, effective_date: dt.date, adjusted_unit_price=None,
                       adjusted_unit_cost=None) -> int:
        """POST ContractServiceAdjustments: change a line's units by unit_change (signed, not 0)
        from effective_date (date-only, sent as yyyy-mm-dd). Creates the ContractService if missing.

        Not retried (it is not idempotent: a second send adds the units twice). A Timeout means the
        outcome is unknown - it may have been applied: never re-send it as is; re-read
        service_units() and recompute the difference.
        """
        if isinstance(unit_change, bool) or not isinstance(unit_change, int) or unit_change == 0:
            raise ValueError("unit_change must be a non-zero int")
        if service_id is None and contract_service_id is None:
            raise ValueError("service_id or contract_service_id is required")
        if isinstance(effective_date, dt.datetime):
            effective_date = effective_date.date()
        body: dict[str, Any] = {"contractID": int(contract_id), "unitChange": unit_change,
                                "effectiveDate": effective_date.isoformat()}
        if service_id is not None:
            body["serviceID"] = int(service_id)
        if contract_service_id is not None:
            body["contractServiceID"] = int(contract_service_id)
        if adjusted_unit_price is not None:
            body["adjustedUnitPrice"] = self._money(adjusted_unit_price)
        if adjusted_unit_cost is not None:
            body["adjustedUnitCost"] = self._money(adjusted_unit_cost)
        return self._write("POST", "ContractServiceAdjustments", "POST /ContractServiceAdjustments", body)

    def add_charge(self, contract_id: int, name: str, unit_quantity, unit_price, date_purchased: dt.date, *,
                   unit_cost=None, description: str | None = None, product_id: int | None = None,
                   billing_code_id: int | None = None, charge_type: int | None = None,
                   is_billable_to_company: bool = True) -> int:
        """POST Contracts/{id}/Charges (one-time/usage charge) -> the ContractCharge id.

        productID or billingCodeID is required by the vendor. Not retried; Timeout = outcome unknown:
        query ContractCharges of the contract before trying again.
        """
        if product_id is None and billing_code_id is None:
            raise ValueError("product_id or billing_code_id is required")
        if isinstance(date_purchased, dt.datetime):
            date_purchased = date_purchased.date()
        body: dict[str, Any] = {"contractID": int(contract_id), "name": name,
                                "unitQuantity": self._money(unit_quantity), "unitPrice": self._money(unit_price),
                                "datePurchased": date_purchased.isoformat(),
                                "isBillableToCompany": bool(is_billable_to_company)}
        for key, value in (("unitCost", self._money(unit_cost)), ("description", description),
                           ("productID", product_id), ("billingCodeID", billing_code_id),
                           ("chargeType", charge_type)):
            if value is not None:
                body[key] = value
        return self._write("POST", f"Contracts/{int(contract_id)}/Charges", "POST /Contracts/{id}/Charges", body)
