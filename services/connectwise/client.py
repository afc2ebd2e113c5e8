"""ConnectWise Manage / PSA REST (apis/3.0) client: a flat list of the calls billing needs.

Built on common.vendor_client.VendorClient (timeouts, metrics per attempt, retries of reads only,
typed errors). What this module adds:

- Codebase discovery (``GET https://{site}/login/companyinfo/{companyId}``) when the credential has
  no ``base_url``; done lazily on the first API call, or explicitly with ``discover()``.
- Auth: ``Authorization: Basic base64("{companyId}+{publicKey}:{privateKey}")`` plus ``clientId``
  on every call. Neither is ever logged; ``repr()`` hides them.
- ``C``: a conditions builder. Values are always quoted/escaped by type; field names are checked
  against a strict pattern. ``list()``/``count()`` take only ``Condition`` objects, never text.
- ``list()`` follows the ``Link: rel="next"`` header (absolute URLs, same origin only) and returns
  a ``Listing``: an iterator over records plus ``.malformed`` (records that failed validation are
  collected there, counted in ``vendor_malformed_records_total`` and skipped, so one bad record
  never stops a sync; ``strict=True`` raises instead).
- Typed reads validated by services/connectwise/schemas.py (Decimal money, date/datetime).
- Writes (create / patch / cancel an addition) are unsafe: never retried, except once when the
  connection provably never opened. ``Timeout`` from a write means the outcome is unknown (the
  vendor may have applied it): the caller must re-read the agreement's additions and recompute,
  never re-send the same write. ``MalformedRecord`` from a write means the write *was* applied but
  the answer could not be read: treat it like a Timeout.

Endpoint labels (metrics ``vendor_requests_total{vendor="connectwise",endpoint,status}``) are
``"METHOD path-template"``, ids replaced by ``{id}``: e.g. ``GET finance/agreements/{id}/additions``,
``POST finance/agreements/{id}/additions``, ``GET login/companyinfo``.
"""
from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import logging
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Iterable, Iterator, Mapping, Optional
from urllib.parse import quote, urlsplit

import requests

from common.vendor_client import (VENDOR_MALFORMED, MalformedRecord, NotFound, Unauthorized,
                                  VendorClient, VendorError)

from . import schemas
from .schemas import Addition, Agreement, CatalogItem, Company, InvalidPayload

log = logging.getLogger(__name__)

API_PREFIX = "apis/3.0/"
MAX_PAGE_SIZE = 1000

# Collection paths (relative to the API base).
COMPANIES = "company/companies"
AGREEMENTS = "finance/agreements"
CATALOG = "procurement/catalog"


def additions_path(agreement_id: int) -> str:
    return f"{AGREEMENTS}/{_int_id(agreement_id, 'agreement_id')}/additions"


# --- conditions builder ----------------------------------------------------------------------

_FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:/[A-Za-z_][A-Za-z0-9_]*)*$")
_ORDER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:/[A-Za-z_][A-Za-z0-9_]*)*(?:\s+(?:asc|desc))?$",
                       re.IGNORECASE)


class Condition:
    """One piece of a ConnectWise ``conditions`` expression. Build with ``C``; combine with
    ``&`` / ``|`` (or ``C.and_`` / ``C.or_``); ``str()`` is the text sent to the vendor."""

    __slots__ = ("text", "kind", "parts")

    def __init__(self, text: str, kind: str = "cmp", parts: tuple = ()):
        self.text, self.kind, self.parts = text, kind, parts

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Condition({self.text!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Condition) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __and__(self, other: "Condition") -> "Condition":
        return C.and_(self, other)

    def __or__(self, other: "Condition") -> "Condition":
        return C.or_(self, other)


def _field(name: str) -> str:
    if not isinstance(name, str) or not _FIELD_RE.match(name):
        raise ValueError(f"not a ConnectWise field name: {name!r}")
    return name


def _literal(value: Any) -> str:
    """Python value -> ConnectWise literal. Strings are always double-quoted with \\ and \" escaped."""
    if value is None:
        return "null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (float, Decimal)):
        num = Decimal(repr(value)) if isinstance(value, float) else value
        if not num.is_finite():
            raise ValueError(f"not a finite number: {value!r}")
        return format(num, "f")
    if isinstance(value, dt.datetime):
        return f"[{schemas.format_datetime(value)}]"
    if isinstance(value, dt.date):
        return f"[{schemas.format_date(value)}]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"cannot use {type(value).__name__} in a ConnectWise condition")


class C:
    """Conditions builder: ``C.eq("company/id", 250) & C.in_("agreementStatus", ["Active"])``.

    Strings are quoted and escaped, dates/datetimes become ``[YYYY-MM-DDTHH:MM:SSZ]`` (UTC; a
    naive datetime is taken as UTC), booleans ``True``/``False``, ``None`` ``null``. In ``like``
    patterns ``*`` is the vendor's wildcard (the vendor's SQL back end may also treat ``%`` so);
    use ``contains`` to match user text literally.
    """

    @staticmethod
    def _cmp(field: str, op: str, value: Any) -> Condition:
        if value is None and op not in ("=", "!="):
            raise ValueError(f"cannot compare with null using {op}")
        return Condition(f"{_field(field)} {op} {_literal(value)}")

    @staticmethod
    def eq(field, value): return C._cmp(field, "=", value)

    @staticmethod
    def ne(field, value): return C._cmp(field, "!=", value)

    @staticmethod
    def lt(field, value): return C._cmp(field, "<", value)

    @staticmethod
    def le(field, value): return C._cmp(field, "<=", value)

    @staticmethod
    def gt(field, value): return C._cmp(field, ">", value)

    @staticmethod
    def ge(field, value): return C._cmp(field, ">=", value)

    @staticmethod
    def is_null(field): return C._cmp(field, "=", None)

    @staticmethod
    def not_null(field): return C._cmp(field, "!=", None)

    @staticmethod
    def _text_op(field, op, value) -> Condition:
        if not isinstance(value, str):
            raise TypeError(f"{op} needs a string, got {type(value).__name__}")
        return Condition(f"{_field(field)} {op} {_literal(value)}")

    @staticmethod
    def like(field, pattern: str): return C._text_op(field, "like", pattern)

    @staticmethod
    def not_like(field, pattern: str): return C._text_op(field, "not like", pattern)

    @staticmethod
    def contains(field, text: str): return C._text_op(field, "contains", text)

    @staticmethod
    def not_contains(field, text: str): return C._text_op(field, "not contains", text)

    @staticmethod
    def _list_op(field, op, values) -> Condition:
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise TypeError(f"{op} needs a list of values")
        items = list(dict.fromkeys(values))     # dedupe, keep order
        if not items:
            raise ValueError(f"{op} needs at least one value")
        if any(v is None for v in items):
            raise ValueError(f"{op} cannot hold null")
        return Condition(f"{_field(field)} {op} ({', '.join(_literal(v) for v in items)})")

    @staticmethod
    def in_(field, values: Iterable): return C._list_op(field, "in", values)

    @staticmethod
    def not_in(field, values: Iterable): return C._list_op(field, "not in", values)

    @staticmethod
    def _join(kind: str, conditions) -> Optional[Condition]:
        flat: list[Condition] = []
        for cond in conditions:
            if cond is None:
                continue
            if not isinstance(cond, Condition):
                raise TypeError("combine Condition objects only (build them with C)")
            flat.extend(cond.parts if cond.kind == kind else (cond,))
        if not flat:
            return None
        if len(flat) == 1:
            return flat[0]
        text = f" {kind} ".join(c.text if c.kind == "cmp" else f"({c.text})" for c in flat)
        return Condition(text, kind, tuple(flat))

    @staticmethod
    def and_(*conditions: Optional[Condition]) -> Optional[Condition]:
        """All of them (None parts are skipped; None when nothing is left)."""
        return C._join("and", conditions)

    @staticmethod
    def or_(*conditions: Optional[Condition]) -> Optional[Condition]:
        """Any of them (None parts are skipped; None when nothing is left)."""
        return C._join("or", conditions)


# --- helpers ---------------------------------------------------------------------------------

def _int_id(value, name) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return value


def _number(value, name):
    """Decimal/int/float/numeric string -> JSON number (int when whole, else float)."""
    if value is None or isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {value!r}")
    try:
        num = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not num.is_finite():
        raise ValueError(f"{name} must be finite, got {value!r}")
    return int(num) if num == num.to_integral_value() else float(num)


def _optional_number(value, name):
    return None if value is None else _number(value, name)


def _date_value(value, name):
    if value is None:
        return None
    if isinstance(value, (dt.date, str)):
        try:
            return schemas.format_date(value)
        except Exception:  # noqa: BLE001 - any unparsable input is the caller's mistake
            raise ValueError(f"{name} must be a date, got {value!r}") from None
    raise TypeError(f"{name} must be a date, got {value!r}")


def _text(value, name):
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be a string")
    return value


# update_addition(**changes): our name -> (vendor path, converter). Vendor spellings work too.
_PATCHABLE = {
    "quantity": ("quantity", _number),
    "less_included": ("lessIncluded", _number),
    "unit_price": ("unitPrice", _optional_number),
    "unit_cost": ("unitCost", _optional_number),
    "effective_date": ("effectiveDate", _date_value),
    "cancelled_date": ("cancelledDate", _date_value),
    "bill_customer": ("billCustomer", _text),
    "description": ("description", _text),
    "invoice_description": ("invoiceDescription", _text),
    "product_id": ("product", lambda v, n: {"id": _int_id(v, n)}),
}
_PATCHABLE.update({path: (path, conv) for path, conv in list(_PATCHABLE.values())})

_ID_SEGMENT = re.compile(r"^\d+$")


def endpoint_label(method: str, path: str) -> str:
    """'GET', 'finance/agreements/1000/additions?x' -> 'GET finance/agreements/{id}/additions'."""
    path = path.split("?", 1)[0].strip("/")
    return f"{method.upper()} " + "/".join("{id}" if _ID_SEGMENT.match(p) else p
                                            for p in path.split("/"))


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def site_root(site: str) -> str:
    """'api-na.myconnectwise.net' -> 'https://api-na.myconnectwise.net/'; a loopback site
    ('127.0.0.1:8603') -> 'http://127.0.0.1:8603/'. Plain http to any other host is refused
    (the private key would travel in clear text)."""
    if not isinstance(site, str) or not site.strip():
        raise ValueError("credential 'site' is required")
    text = site.strip().rstrip("/")
    if "://" not in text:
        host = urlsplit("//" + text).hostname or ""
        text = ("http://" if _is_loopback(host) else "https://") + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not a ConnectWise site: {site!r}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError("ConnectWise site must use https (http only for a loopback simulator)")
    return f"{parts.scheme}://{parts.netloc}/"


def _origin(url: str) -> tuple:
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.netloc or "").lower()


# --- listings --------------------------------------------------------------------------------

class Listing(Iterator):
    """The records of one list call, fetched page by page as you iterate (single use).

    - ``malformed``: MalformedRecord for every record that failed validation (skipped).
    - ``pages``: pages fetched so far; ``seen``: records yielded so far.
    - ``complete``: True once the last page was read (a VendorError raised from the iteration
      leaves the listing incomplete: never take a record's absence from it for a deletion).
    - ``all()``: the rest as a list.
    A record repeated on a later page (data moved between page reads) is yielded once.
    """

    def __init__(self, client: "ConnectWiseClient", path: str, params: dict, endpoint: str,
                 kind: Optional[str] = None, *, headers: Optional[dict] = None,
                 strict: bool = False, fill: Optional[dict] = None):
        self.client, self.path, self.params, self.endpoint = client, path, params, endpoint
        self.kind, self.headers, self.strict, self.fill = kind, headers, strict, fill or {}
        self.malformed: list[MalformedRecord] = []
        self.pages = 0
        self.seen = 0
        self.complete = False
        self._gen = self._records()

    def __next__(self):
        return next(self._gen)

    def __iter__(self):
        return self

    def all(self) -> list:
        return list(self)

    def _records(self):
        url: Optional[str] = self.path
        params: Optional[dict] = self.params
        visited: set[str] = set()
        ids: set = set()
        while url:
            response = self.client.request("GET", url, self.endpoint, params=params,
                                           headers=self.headers)
            self.pages += 1
            try:
                page = response.json()
            except ValueError:
                raise VendorError(f"list answer is not JSON: {response.text[:200]!r}",
                                  vendor=self.client.vendor, endpoint=self.endpoint,
                                  status=response.status_code) from None
            if not isinstance(page, list):
                raise MalformedRecord(None, "_schema", "a list answer is not a JSON array",
                                      vendor=self.client.vendor, endpoint=self.endpoint,
                                      status=response.status_code)
            for raw in page:
                rid = raw.get("id") if isinstance(raw, dict) else None
                if rid is not None and not isinstance(rid, (dict, list)):
                    if rid in ids:
                        continue
                    ids.add(rid)
                if self.kind is None:
                    self.seen += 1
                    yield raw
                    continue
                try:
                    record = self.client._validate(self.kind, raw, self.endpoint, self.fill)
                except MalformedRecord as err:
                    if self.strict:
                        raise
                    self.malformed.append(err)
                    continue
                self.seen += 1
                yield record
            visited.add(response.url)
            url, params = self.client._next_link(response, self.endpoint), None
            if url in visited:
                raise VendorError("Link rel=next points back to a page already read",
                                  vendor=self.client.vendor, endpoint=self.endpoint,
                                  status=response.status_code)
        self.complete = True


class AdditionsBatch:
    """additions_for(): the additions of several agreements, read agreement by agreement.

    ``by_agreement`` {agreement id: [Addition]} (every requested agreement that exists has a key,
    possibly an empty list), ``missing_agreements`` (404: the agreement is gone in the PSA),
    ``malformed`` (records skipped). Iterating yields every Addition.
    """

    def __init__(self):
        self.by_agreement: dict[int, list[Addition]] = {}
        self.missing_agreements: list[int] = []
        self.malformed: list[MalformedRecord] = []

    def __iter__(self):
        for items in self.by_agreement.values():
            yield from items

    def __len__(self):
        return sum(len(v) for v in self.by_agreement.values())


# --- the client ------------------------------------------------------------------------------

class ConnectWiseClient(VendorClient):
    vendor = "connectwise"

    CREDENTIAL_FIELDS = ("site", "company_id", "public_key", "private_key", "client_id")

    def __init__(self, credentials: Mapping[str, Any], **kwargs):
        """credentials: {site, base_url (optional; else discovered), company_id, public_key,
        private_key, client_id}. kwargs go to VendorClient (timeout, read_retries, backoff,
        session, sleep, max_wait)."""
        missing = [k for k in self.CREDENTIAL_FIELDS
                   if not (isinstance(credentials.get(k), str) and credentials.get(k).strip())
                   and not (k == "site" and credentials.get("base_url"))]
        if missing:
            raise ValueError(f"ConnectWise credential is missing {', '.join(missing)}")
        self.company_id = credentials["company_id"].strip()
        self._site = credentials.get("site")
        token = base64.b64encode(
            f"{self.company_id}+{credentials['public_key']}:{credentials['private_key']}"
            .encode("utf-8")).decode("ascii")
        self.__headers = {"Authorization": f"Basic {token}",
                          "clientId": credentials["client_id"].strip(),
                          "Accept": "application/json"}
        base_url = credentials.get("base_url")
        if base_url:
            root = site_root(base_url)              # same scheme rules as a site
            text = base_url.strip()
            path = urlsplit(text if "://" in text else "//" + text).path.strip("/")
            super().__init__(root + path + "/", **kwargs)
            self._discovered = True
        else:
            super().__init__(site_root(self._site), **kwargs)
            self._discovered = False

    def __repr__(self) -> str:  # never show keys
        return f"<ConnectWiseClient company_id={self.company_id!r} base_url={self.base_url!r}>"

    # --- VendorClient hooks ------------------------------------------------------------------
    def auth_headers(self) -> dict:
        return dict(self.__headers)

    def error_message(self, response: requests.Response) -> str:
        """The vendor's own words: ``{"code","message","errors":[...]}`` or the throttle body
        ``{"error","message"}`` -> 'InvalidObject: addition object is invalid; billCustomer:
        billCustomer is required (Required)'."""
        try:
            body = response.json()
        except ValueError:
            return super().error_message(response)
        if not isinstance(body, dict):
            return super().error_message(response)
        message = str(body.get("message") or body.get("error") or response.reason or "")
        code = body.get("code")
        text = f"{code}: {message}" if code and code not in message else message
        details = []
        for item in body.get("errors") or []:
            if isinstance(item, dict):
                part = str(item.get("message") or "")
                if item.get("field"):
                    part = f"{item['field']}: {part}"
                if item.get("code"):
                    part += f" ({item['code']})"
                details.append(part)
        return "; ".join([text, *details])[:1000]

    def retry_after(self, response: requests.Response) -> float | None:
        """Retry-After, else the seconds named in the throttle message ('try again in 30 seconds')."""
        seconds = super().retry_after(response)
        if seconds is None and response.status_code == 429:
            try:
                match = re.search(r"try again in (\d+(?:\.\d+)?) second",
                                  str(response.json().get("message", "")))
            except (ValueError, AttributeError):
                match = None
            seconds = float(match.group(1)) if match else None
        return seconds

    def request(self, method, url_or_path, endpoint, **kw) -> requests.Response:
        if kw.get("auth", True) and not self._discovered:
            self.discover()
        return super().request(method, url_or_path, endpoint, **kw)

    # --- discovery ---------------------------------------------------------------------------
    def discover(self) -> str:
        """Codebase discovery -> the API base URL (cached). NotFound: unknown company id."""
        if self._discovered:
            return self.base_url
        root = site_root(self._site)
        info = self.get_json(f"{root}login/companyinfo/{quote(self.company_id, safe='')}",
                             "GET login/companyinfo", auth=False)
        codebase = info.get("Codebase") if isinstance(info, dict) else None
        if not isinstance(codebase, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]+/?", codebase):
            raise MalformedRecord(self.company_id, "Codebase", f"unusable codebase {codebase!r}",
                                  vendor=self.vendor, endpoint="GET login/companyinfo")
        self.base_url = f"{root}{codebase.rstrip('/')}/{API_PREFIX}"
        self._discovered = True
        log.info("vendor=connectwise company_id=%s base_url=%s (discovered)", self.company_id,
                 self.base_url)
        return self.base_url

    # --- generic reads -----------------------------------------------------------------------
    def _validate(self, kind: str, raw: Any, endpoint: str, fill: Optional[dict] = None):
        payload = raw
        if fill and isinstance(raw, dict) and any(raw.get(k) is None for k in fill):
            payload = {**raw, **{k: v for k, v in fill.items() if raw.get(k) is None}}
        try:
            record = schemas.validate(kind, payload)
        except InvalidPayload as exc:
            VENDOR_MALFORMED.labels(self.vendor, endpoint).inc()
            log.warning("vendor=connectwise endpoint=%s malformed %s id=%s field=%s: %s",
                        endpoint, kind, exc.record_id, exc.field, exc.problem)
            raise MalformedRecord(exc.record_id, exc.field, f"{kind}: {exc.problem}",
                                  vendor=self.vendor, endpoint=endpoint,
                                  errors=exc.errors) from None
        return record

    def _next_link(self, response: requests.Response, endpoint: str) -> Optional[str]:
        url = (response.links.get("next") or {}).get("url")
        if not url:
            return None
        if _origin(url) != _origin(self.base_url):   # never send our keys anywhere else
            raise VendorError(f"Link rel=next leaves the API host: {url[:200]!r}",
                              vendor=self.vendor, endpoint=endpoint, status=response.status_code)
        return url

    @staticmethod
    def _list_params(conditions, order_by, fields, page_size, child_conditions=None) -> dict:
        params: dict[str, Any] = {}
        for name, cond in (("conditions", conditions), ("childConditions", child_conditions)):
            if cond is None:
                continue
            if not isinstance(cond, Condition):
                raise TypeError(f"{name} must be built with C (a Condition), not {type(cond).__name__}")
            params[name] = cond.text
        if order_by is not None:
            parts = [p.strip() for p in order_by.split(",")] if isinstance(order_by, str) else list(order_by)
            if not parts or not all(isinstance(p, str) and _ORDER_RE.match(p) for p in parts):
                raise ValueError(f"bad orderBy: {order_by!r}")
            params["orderBy"] = ", ".join(parts)
        if fields is not None:
            names = [f.strip() for f in fields.split(",")] if isinstance(fields, str) else list(fields)
            params["fields"] = ",".join(_field(f) for f in names)
        if page_size is not None:
            if isinstance(page_size, bool) or not isinstance(page_size, int) \
                    or not 1 <= page_size <= MAX_PAGE_SIZE:
                raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}")
            params["pageSize"] = page_size
        return params

    def list(self, path: str, conditions: Optional[Condition] = None, order_by=None, fields=None,
             page_size: int = MAX_PAGE_SIZE, *, child_conditions: Optional[Condition] = None,
             forward_only: bool = False, kind: Optional[str] = None, strict: bool = False,
             fill: Optional[dict] = None) -> Listing:
        """Every record of a collection, following Link rel="next" page by page (lazily).

        Raw dicts unless ``kind`` ("company", "agreement", "addition", "catalog") asks for
        validated records. ``forward_only`` uses the vendor's keyset paging (id order, stable
        while records are added or removed; no order_by). Each page is one GET (retried)."""
        path = path.strip("/")
        params = self._list_params(conditions, order_by, fields, page_size, child_conditions)
        headers = None
        if forward_only:
            if order_by is not None:
                raise ValueError("forward-only paging comes in id order; drop order_by")
            headers = {"pagination-type": "forward-only"}
        return Listing(self, path, params, endpoint_label("GET", path), kind, headers=headers,
                       strict=strict, fill=fill)

    def count(self, path: str, conditions: Optional[Condition] = None) -> int:
        path = path.strip("/") + "/count"
        body = self.get_json(path, endpoint_label("GET", path),
                             params=self._list_params(conditions, None, None, None))
        count = body.get("count") if isinstance(body, dict) else None
        if isinstance(count, bool) or not isinstance(count, int):
            raise MalformedRecord(None, "count", f"not a count: {body!r}"[:200], vendor=self.vendor,
                                  endpoint=endpoint_label("GET", path))
        return count

    def check_credentials(self) -> int:
        """A cheap call that proves the credential works (returns the company count). The vendor
        sometimes answers bad credentials with 404; on this always-present path that is
        reported as Unauthorized."""
        try:
            return self.count(COMPANIES)
        except NotFound as err:
            raise Unauthorized(err.message, vendor=self.vendor, endpoint=err.endpoint,
                               status=err.status) from None

    # --- typed reads -------------------------------------------------------------------------
    def companies(self, active_only: bool = True, conditions: Optional[Condition] = None) -> Listing:
        """Companies (status name "Active" when active_only)."""
        cond = C.and_(C.eq("status/name", "Active") if active_only else None, conditions)
        return self.list(COMPANIES, cond, order_by="id asc", kind="company")

    def agreements(self, company_id: Optional[int] = None, active_only: bool = True,
                   conditions: Optional[Condition] = None) -> Listing:
        """Agreements (agreementStatus Active and not cancelled when active_only)."""
        cond = C.and_(
            C.eq("company/id", _int_id(company_id, "company_id")) if company_id is not None else None,
            (C.eq("agreementStatus", "Active") & C.eq("cancelledFlag", False)) if active_only else None,
            conditions)
        return self.list(AGREEMENTS, cond, order_by="id asc", kind="agreement")

    def get_agreement(self, agreement_id: int) -> Agreement:
        path = f"{AGREEMENTS}/{_int_id(agreement_id, 'agreement_id')}"
        label = endpoint_label("GET", path)
        return self._validate("agreement", self.get_json(path, label), label)

    def catalog(self, active_only: bool = True, conditions: Optional[Condition] = None) -> Listing:
        """Catalog items (inactiveFlag False when active_only)."""
        cond = C.and_(C.eq("inactiveFlag", False) if active_only else None, conditions)
        return self.list(CATALOG, cond, order_by="id asc", kind="catalog")

    @staticmethod
    def _additions_condition(include_cancelled: bool, as_of: Optional[dt.date]):
        if include_cancelled:
            return None
        day = as_of or dt.datetime.now(dt.timezone.utc).date()
        # Still billing on `day`: never cancelled, or cancelled from a later day.
        return C.or_(C.is_null("cancelledDate"), C.gt("cancelledDate", day))

    def additions(self, agreement_id: int, include_cancelled: bool = False, *,
                  as_of: Optional[dt.date] = None, conditions: Optional[Condition] = None) -> Listing:
        """One agreement's additions, id order, up to 1,000 a page.

        include_cancelled=False leaves out additions cancelled on or before ``as_of`` (default:
        today, UTC); one whose cancelledDate lies in the future is still billing and is returned
        (check ``.cancelled_date``). NotFound if the agreement does not exist."""
        cond = C.and_(self._additions_condition(include_cancelled, as_of), conditions)
        return self.list(additions_path(agreement_id), cond, order_by="id asc", kind="addition",
                         fill={"agreementId": agreement_id})

    def additions_for(self, agreement_ids: Iterable[int], include_cancelled: bool = False, *,
                      as_of: Optional[dt.date] = None) -> AdditionsBatch:
        """The additions of many agreements. The API has no cross-agreement additions path, so
        this reads each agreement's additions (1,000 a page). An agreement that is gone (404) is
        listed in ``missing_agreements``; malformed records are collected, not raised; any other
        error is raised (the batch is all-or-nothing for the caller)."""
        batch = AdditionsBatch()
        for agreement_id in dict.fromkeys(agreement_ids):
            listing = self.additions(agreement_id, include_cancelled, as_of=as_of)
            try:
                batch.by_agreement[agreement_id] = listing.all()
            except NotFound:
                batch.missing_agreements.append(agreement_id)
            batch.malformed.extend(listing.malformed)
        return batch

    def get_addition(self, agreement_id: int, addition_id: int) -> Addition:
        path = f"{additions_path(agreement_id)}/{_int_id(addition_id, 'addition_id')}"
        label = endpoint_label("GET", path)
        return self._validate("addition", self.get_json(path, label), label,
                              {"agreementId": agreement_id})

    # --- writes (unsafe: never retried; Timeout = outcome unknown) ---------------------------
    def _write(self, method: str, path: str, body, agreement_id: int) -> Addition:
        label = endpoint_label(method, path)
        response = self.request(method, path, label, json=body, safe=False)
        try:
            raw = response.json()
        except ValueError:
            raise MalformedRecord(None, "_schema", "write applied but the answer is not JSON; "
                                  "re-read before doing anything else", vendor=self.vendor,
                                  endpoint=label, status=response.status_code) from None
        return self._validate("addition", raw, label, {"agreementId": agreement_id})

    def create_addition(self, agreement_id: int, product_id: int, quantity, unit_price, unit_cost,
                        effective_date, bill_customer: Optional[str] = "Billable",
                        description: Optional[str] = None, *,
                        invoice_description: Optional[str] = None) -> Addition:
        """POST a new addition -> the created record (201). unit_price / unit_cost None: the
        vendor fills them from the catalog item. Raises Rejected with the vendor's message for
        an invalid addition (agreement not active, unknown/inactive product, missing
        billCustomer, ...). Timeout: outcome unknown -> re-read the agreement's additions."""
        if effective_date is None:
            raise ValueError("effective_date is required (the vendor would default it to its today)")
        body = {"product": {"id": _int_id(product_id, "product_id")},
                "quantity": _number(quantity, "quantity"),
                "billCustomer": _text(bill_customer, "bill_customer"),
                "effectiveDate": _date_value(effective_date, "effective_date")}
        if unit_price is not None:
            body["unitPrice"] = _number(unit_price, "unit_price")
        if unit_cost is not None:
            body["unitCost"] = _number(unit_cost, "unit_cost")
        if description is not None:
            body["description"] = _text(description, "description")
        if invoice_description is not None:
            body["invoiceDescription"] = _text(invoice_description, "invoice_description")
        body = {k: v for k, v in body.items() if v is not None}
        return self._write("POST", additions_path(agreement_id), body, agreement_id)

    def update_addition(self, agreement_id: int, addition_id: int, **changes) -> Addition:
        """PATCH with a JSON-patch list of replace ops. Keys: quantity, unit_price, unit_cost,
        effective_date, cancelled_date (None un-cancels), bill_customer, description,
        invoice_description, less_included, product_id (or the vendor's names: unitPrice, ...).
        Values: Decimal/int for numbers, date for dates. -> the updated record."""
        if not changes:
            raise ValueError("update_addition needs at least one change")
        ops = []
        for key, value in changes.items():
            if key not in _PATCHABLE:
                raise ValueError(f"cannot change addition field {key!r}")
            path, convert = _PATCHABLE[key]
            ops.append({"op": "replace", "path": path, "value": convert(value, key)})
        path = f"{additions_path(agreement_id)}/{_int_id(addition_id, 'addition_id')}"
        return self._write("PATCH", path, ops, agreement_id)

    def cancel_addition(self, agreement_id: int, addition_id: int, cancelled_date) -> Addition:
        """Cancel a line from cancelled_date (PATCH cancelledDate); the line stays readable."""
        if cancelled_date is None:
            raise ValueError("cancelled_date is required")
        return self.update_addition(agreement_id, addition_id, cancelled_date=cancelled_date)


__all__ = ["C", "Condition", "ConnectWiseClient", "Listing", "AdditionsBatch", "endpoint_label",
           "site_root", "Addition", "Agreement", "CatalogItem", "Company"]
