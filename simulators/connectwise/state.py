"""ConnectWise data: entity schemas, per-company (tenant) stores, validation and business rules.

Each ConnectWise companyId is its own data set (Tenant). Records are stored as the JSON the API
returns; writes build a new dict (copy-on-write) so a record handed to a response never changes.
"""
from __future__ import annotations

import copy
import itertools
from datetime import datetime, timezone

from .conditions import normalize_date

# --- schemas (field -> type; a dict is a reference object) ------------------------------

_INFO = {"lastUpdated": "date", "updatedBy": "str", "dateEntered": "date", "enteredBy": "str"}

SCHEMAS = {
    "company": {
        "id": "int", "identifier": "str", "name": "str",
        "status": {"id": "int", "name": "str"}, "website": "str", "_info": _INFO,
    },
    "agreement": {
        "id": "int", "name": "str", "type": {"id": "int", "name": "str"},
        "company": {"id": "int", "identifier": "str", "name": "str"},
        "startDate": "date", "endDate": "date", "noEndingDateFlag": "bool",
        "billingCycle": {"id": "int", "name": "str"}, "agreementStatus": "str",
        "cancelledFlag": "bool", "prorateFlag": "bool", "billAmount": "float", "_info": _INFO,
    },
    "addition": {
        "id": "int", "product": {"id": "int", "identifier": "str"},
        "quantity": "float", "lessIncluded": "float", "unitPrice": "float", "unitCost": "float",
        "billCustomer": "str", "effectiveDate": "date", "cancelledDate": "date",
        "invoiceDescription": "str", "agreementId": "int", "description": "str",
        "billedQuantity": "float", "extPrice": "float", "extCost": "float", "margin": "float",
        "prorateCurrentPeriodFlag": "bool", "taxableFlag": "bool", "_info": _INFO,
    },
    "catalog": {
        "id": "int", "identifier": "str", "description": "str", "inactiveFlag": "bool",
        "price": "float", "cost": "float", "productClass": "str", "recurringFlag": "bool",
        "recurringRevenue": "float", "recurringCost": "float", "_info": _INFO,
    },
}
# The vendor lets conditions name _info members directly (lastUpdated > [..]).
ALIASES = {"lastupdated": "_info/lastUpdated", "dateentered": "_info/dateEntered"}

READ_ONLY = {
    "company": {"id", "_info"},
    "agreement": {"id", "_info"},
    "addition": {"id", "_info", "agreementId", "billedQuantity", "extPrice", "extCost", "margin"},
    "catalog": {"id", "_info"},
}
RESOURCE = {"company": "company", "agreement": "agreement", "addition": "addition",
            "catalog": "catalogItem"}

AGREEMENT_STATUSES = ("Active", "Cancelled", "Expired", "Inactive")
BILL_CUSTOMER = ("Billable", "DoNotBill", "NoCharge")
PRODUCT_CLASSES = ("Agreement", "Bundle", "Inventory", "NonInventory", "Service")
# Fixed lookup tables (the vendor has setup tables; these are the ones our data uses).
COMPANY_STATUSES = {1: "Active", 2: "Inactive", 3: "Not-Approved"}
AGREEMENT_TYPES = {1: "Managed Services", 2: "Microsoft 365", 3: "Block Time", 4: "Cloud Services"}
BILLING_CYCLES = {1: "Monthly", 2: "Quarterly", 3: "Annually", 4: "Bi-Annually"}
FIRST_ID = {"company": 250, "agreement": 1000, "catalog": 100, "addition": 1}


class ApiError(Exception):
    """An error the API answers with; app.py renders it in the vendor's error shape."""

    def __init__(self, status, code, message, errors=None, headers=None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.errors, self.headers = errors, headers or {}

    def body(self):
        out = {"code": self.code, "message": self.message}
        if self.errors is not None:
            out["errors"] = self.errors
        return out


def invalid(kind, errors):
    return ApiError(400, "InvalidObject", f"{RESOURCE[kind]} object is invalid", errors)


def field_error(kind, field, message, code="InvalidField"):
    return {"code": code, "message": message, "resource": RESOURCE[kind], "field": field}


def not_found(kind, rec_id):
    return ApiError(404, "NotFound", f"{RESOURCE[kind]} recId {rec_id} not found.")


def utc_now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- value coercion ----------------------------------------------------------------------

def _coerce(kind, field, ftype, value, errs):
    """JSON value -> stored value for a scalar field; appends to errs on a bad value."""
    if value is None:
        return None
    ok = True
    if ftype in ("int", "float"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and ftype == "int":
            ok = float(value).is_integer()
            value = int(value) if ok else value
    elif ftype == "bool":
        ok = isinstance(value, bool)
    elif ftype == "str":
        ok = isinstance(value, str)
    elif ftype == "date":
        try:
            value = normalize_date(value)
        except (ValueError, TypeError):
            ok = False
    if not ok:
        errs.append(field_error(kind, field, f"{field} has an invalid value: {value!r}"))
        return None
    return value


def _lookup_ref(kind, field, value, table, errs, names=None):
    """Resolve a reference given as {"id"}, {"identifier"}/{"name"}, an int id, or a string
    identifier/name. Returns the stored record / (id, name) or None with an error appended."""
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        value = {"id": value} if isinstance(value, int) else {"identifier": value, "name": value}
    if not isinstance(value, dict):
        errs.append(field_error(kind, field, f"{field} must be a reference object"))
        return None
    if names is not None:  # fixed lookup table {id: name}
        if value.get("id") in names:
            return value["id"], names[value["id"]]
        wanted = str(value.get("name") or "").casefold()
        for rid, name in names.items():
            if wanted and name.casefold() == wanted:
                return rid, name
    else:
        if value.get("id") is not None:
            rec = table.get(value["id"]) if isinstance(value["id"], int) else None
            if rec is not None:
                return rec
        elif value.get("identifier") is not None:
            rec = table.find_identifier(value["identifier"])
            if rec is not None:
                return rec
    errs.append(field_error(kind, field, f"{field} {value!r} was not found", "NotFound"))
    return None


# --- tables ---------------------------------------------------------------------------------

class Table(dict):
    """id -> record, with a case-insensitive identifier index (companies, catalog)."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.ids = itertools.count(FIRST_ID[kind])
        self.by_identifier = {}

    def next_id(self):
        while True:
            rid = next(self.ids)
            if rid not in self:
                return rid

    def put(self, rec):
        old = self.get(rec["id"])
        if old is not None and old.get("identifier"):
            self.by_identifier.pop(old["identifier"].casefold(), None)
        self[rec["id"]] = rec
        if rec.get("identifier"):
            self.by_identifier[rec["identifier"].casefold()] = rec

    def remove(self, rid):
        rec = self.pop(rid)
        if rec.get("identifier"):
            self.by_identifier.pop(rec["identifier"].casefold(), None)
        return rec

    def find_identifier(self, ident):
        return self.by_identifier.get(str(ident).casefold())


class Tenant:
    """One ConnectWise company id (login company): credentials plus its data."""

    def __init__(self, company_id, name=None, credentials=None):
        self.company_id = company_id
        self.name = name or company_id
        self.credentials = credentials or []
        self.tables = {k: Table(k) for k in SCHEMAS}
        self.additions_by_agreement = {}  # agreement id -> {addition id: record}

    # -- reads --
    def table(self, kind):
        return self.tables[kind]

    def get(self, kind, rid):
        rec = self.tables[kind].get(rid)
        if rec is None:
            raise not_found(kind, rid)
        return rec

    def agreement_additions(self, agreement_id):
        self.get("agreement", agreement_id)
        return self.additions_by_agreement.get(agreement_id, {})

    def get_addition(self, agreement_id, addition_id):
        rec = self.agreement_additions(agreement_id).get(addition_id)
        if rec is None:
            raise not_found("addition", addition_id)
        return rec

    # -- writes --
    def create(self, kind, body, agreement_id=None, strict=True, now=None):
        if not isinstance(body, dict):
            raise ApiError(400, "InvalidObject", "Request body must be a JSON object")
        rid = body.get("id") if not strict and isinstance(body.get("id"), int) else None
        if rid is not None and rid in self.tables[kind]:
            raise invalid(kind, [field_error(kind, "id", f"id {rid} already exists", "ObjectExists")])
        rec = self._build(kind, body, None, agreement_id, strict, now)
        rec["id"] = rid if rid is not None else self.tables[kind].next_id()
        return self._store(kind, _ordered(kind, rec))

    def replace(self, kind, rid, body, agreement_id=None):
        old = self._existing(kind, rid, agreement_id)
        if not isinstance(body, dict):
            raise ApiError(400, "InvalidObject", "Request body must be a JSON object")
        rec = self._build(kind, body, None, agreement_id or old.get("agreementId"), True, None,
                          old=old)
        rec["id"] = rid
        return self._store(kind, _ordered(kind, rec))

    def patch(self, kind, rid, ops, agreement_id=None):
        old = self._existing(kind, rid, agreement_id)
        changes = apply_patch(kind, old, ops)
        rec = self._build(kind, changes, old, old.get("agreementId"), True, None, old=old)
        rec["id"] = rid
        return self._store(kind, _ordered(kind, rec))

    def delete(self, kind, rid, agreement_id=None):
        rec = self._existing(kind, rid, agreement_id)
        if kind == "company" and any(a["company"]["id"] == rid
                                     for a in self.tables["agreement"].values()):
            raise ApiError(400, "InvalidObject", "company object is invalid", [field_error(
                kind, "id", "Company is used by one or more agreements", "InUse")])
        if kind == "catalog" and any(a["product"]["id"] == rid
                                     for a in self.tables["addition"].values()):
            raise ApiError(400, "InvalidObject", "catalogItem object is invalid", [field_error(
                kind, "id", "Product is used on one or more agreement additions", "InUse")])
        if kind == "agreement":  # its additions go with it
            for add_id in list(self.additions_by_agreement.pop(rid, {})):
                self.tables["addition"].pop(add_id, None)
        if kind == "addition":
            self.additions_by_agreement.get(rec["agreementId"], {}).pop(rid, None)
        self.tables[kind].remove(rid)
        return rec

    def _existing(self, kind, rid, agreement_id):
        if kind == "addition":
            return self.get_addition(agreement_id, rid)
        return self.get(kind, rid)

    def _store(self, kind, rec):
        self.tables[kind].put(rec)
        if kind == "addition":
            self.additions_by_agreement.setdefault(rec["agreementId"], {})[rec["id"]] = rec
        return rec

    # -- validation and derived fields --
    def _build(self, kind, body, base, agreement_id, strict, now, old=None):
        """body (full object for POST/PUT, changed fields for PATCH over base) -> record."""
        errs = []
        schema = SCHEMAS[kind]
        rec = copy.deepcopy(base) if base else DEFAULTS[kind]()
        for key, value in body.items():
            if key in READ_ONLY[kind] or key not in schema:
                continue  # like the vendor: unknown and read-only properties are ignored
            ftype = schema[key]
            if isinstance(ftype, dict):
                rec[key] = value  # resolved below
            else:
                rec[key] = _coerce(kind, key, ftype, value, errs)
        getattr(self, f"_rules_{kind}")(rec, body, errs, strict, agreement_id, old)
        if errs:
            raise invalid(kind, errs)
        stamp = now or utc_now()
        info = dict((old or {}).get("_info") or {})
        info.setdefault("dateEntered", stamp)
        info.setdefault("enteredBy", "simulator")
        info.update(lastUpdated=stamp, updatedBy="simulator")
        rec["_info"] = info
        return rec

    def _unique_identifier(self, kind, rec, errs, old):
        ident = rec.get("identifier")
        if not ident:
            errs.append(field_error(kind, "identifier", "identifier is required", "Required"))
            return
        other = self.tables[kind].find_identifier(ident)
        if other is not None and (old is None or other["id"] != old["id"]):
            errs.append(field_error(kind, "identifier",
                                    f"The identifier '{ident}' already exists", "ObjectExists"))

    def _rules_company(self, rec, body, errs, strict, agreement_id, old):
        self._unique_identifier("company", rec, errs, old)
        if not rec.get("name"):
            errs.append(field_error("company", "name", "name is required", "Required"))
        if rec.get("status") is not None:
            found = _lookup_ref("company", "status", rec["status"], None, errs, COMPANY_STATUSES)
            rec["status"] = {"id": found[0], "name": found[1]} if found else None
        else:
            rec["status"] = {"id": 1, "name": "Active"}

    def _rules_catalog(self, rec, body, errs, strict, agreement_id, old):
        self._unique_identifier("catalog", rec, errs, old)
        if not rec.get("description"):
            errs.append(field_error("catalog", "description", "description is required", "Required"))
        if rec.get("productClass") not in PRODUCT_CLASSES:
            errs.append(field_error("catalog", "productClass",
                                    f"productClass must be one of {', '.join(PRODUCT_CLASSES)}"))

    def _rules_agreement(self, rec, body, errs, strict, agreement_id, old):
        k = "agreement"
        if not rec.get("name"):
            errs.append(field_error(k, "name", "name is required", "Required"))
        if rec.get("company") is None:
            errs.append(field_error(k, "company", "company is required", "Required"))
        else:
            comp = _lookup_ref(k, "company", rec["company"], self.tables["company"], errs)
            rec["company"] = ({"id": comp["id"], "identifier": comp["identifier"],
                               "name": comp["name"]} if comp else None)
        for field, table, default in (("type", AGREEMENT_TYPES, 1), ("billingCycle", BILLING_CYCLES, 1)):
            val = rec.get(field) if rec.get(field) is not None else {"id": default}
            found = _lookup_ref(k, field, val, None, errs, table)
            rec[field] = {"id": found[0], "name": found[1]} if found else None
        if rec.get("agreementStatus") not in AGREEMENT_STATUSES:
            errs.append(field_error(k, "agreementStatus",
                                    f"agreementStatus must be one of {', '.join(AGREEMENT_STATUSES)}"))
        # cancelledFlag and agreementStatus=Cancelled describe one fact; keep them in step.
        if "cancelledFlag" in body and "agreementStatus" not in body:
            if rec.get("cancelledFlag"):
                rec["agreementStatus"] = "Cancelled"
            elif rec.get("agreementStatus") == "Cancelled":
                rec["agreementStatus"] = "Active"
        rec["cancelledFlag"] = rec.get("agreementStatus") == "Cancelled"
        if rec.get("startDate") is None:
            errs.append(field_error(k, "startDate", "startDate is required", "Required"))
        if rec.get("endDate") is None:
            rec["noEndingDateFlag"] = True
        elif rec.get("startDate") and rec["endDate"] < rec["startDate"]:
            errs.append(field_error(k, "endDate", "endDate must be on or after startDate"))

    def _rules_addition(self, rec, body, errs, strict, agreement_id, old):
        k = "addition"
        agreement = self.get("agreement", agreement_id)
        rec["agreementId"] = agreement_id
        if old is None and strict and (agreement["agreementStatus"] != "Active"
                                       or agreement["cancelledFlag"]):
            errs.append(field_error(k, "agreementId",
                                    f"Agreement {agreement_id} is {agreement['agreementStatus']}; "
                                    "additions can only be added to an active agreement",
                                    "AgreementNotActive"))
        product = None
        if rec.get("product") is None:
            errs.append(field_error(k, "product", "product is required", "Required"))
        else:
            product = _lookup_ref(k, "product", rec["product"], self.tables["catalog"], errs)
            changed = old is None or (product and product["id"] != old["product"]["id"])
            if product and product["inactiveFlag"] and strict and changed:
                errs.append(field_error(k, "product",
                                        f"Product {product['identifier']} is inactive"))
            rec["product"] = ({"id": product["id"], "identifier": product["identifier"]}
                              if product else None)
        if rec.get("billCustomer") is None:
            errs.append(field_error(k, "billCustomer", "billCustomer is required", "Required"))
        elif rec["billCustomer"] not in BILL_CUSTOMER:
            errs.append(field_error(k, "billCustomer",
                                    f"billCustomer must be one of {', '.join(BILL_CUSTOMER)}"))
        if rec.get("quantity") is None:
            rec["quantity"] = 1
        for field in ("quantity", "lessIncluded"):
            if rec.get(field) is not None and rec[field] < 0:
                errs.append(field_error(k, field, f"{field} must be greater than or equal to 0"))
        if product is not None and old is None:
            # The vendor fills price, cost and descriptions from the catalog when not given.
            for field, src in (("unitPrice", "price"), ("unitCost", "cost"),
                               ("description", "description"),
                               ("invoiceDescription", "description")):
                if body.get(field) is None:
                    rec[field] = product.get(src)
        if rec.get("effectiveDate") is None:
            rec["effectiveDate"] = utc_now()[:10] + "T00:00:00Z"
        if rec.get("cancelledDate") and rec["cancelledDate"] < rec["effectiveDate"]:
            errs.append(field_error(k, "cancelledDate",
                                    "cancelledDate must be on or after effectiveDate"))
        if errs:
            return
        qty = rec["quantity"] or 0
        billed = max(0, qty - (rec.get("lessIncluded") or 0))
        rec["billedQuantity"] = billed
        rec["extPrice"] = round(billed * (rec.get("unitPrice") or 0), 2)
        rec["extCost"] = round(qty * (rec.get("unitCost") or 0), 2)
        rec["margin"] = round(rec["extPrice"] - rec["extCost"], 2)

    # -- admin --
    def summary(self):
        return {"company_id": self.company_id, "name": self.name,
                "credentials": [c["public_key"] for c in self.credentials],
                **{f"{k}_count": len(t) for k, t in self.tables.items()}}

    def dump(self):
        return {"company_id": self.company_id, "name": self.name,
                "credentials": self.credentials,
                **{k: list(t.values()) for k, t in self.tables.items()}}


DEFAULTS = {
    "company": lambda: {"id": None, "identifier": None, "name": None, "status": None,
                        "website": None},
    "agreement": lambda: {"id": None, "name": None, "type": None, "company": None,
                          "startDate": None, "endDate": None, "noEndingDateFlag": False,
                          "billingCycle": None, "agreementStatus": "Active",
                          "cancelledFlag": False, "prorateFlag": True, "billAmount": 0},
    "addition": lambda: {"id": None, "product": None, "quantity": None, "lessIncluded": 0,
                         "unitPrice": None, "unitCost": None, "billCustomer": None,
                         "effectiveDate": None, "cancelledDate": None,
                         "invoiceDescription": None, "agreementId": None, "description": None,
                         "billedQuantity": None, "extPrice": None, "extCost": None,
                         "margin": None, "prorateCurrentPeriodFlag": True,
                         "taxableFlag": False},
    "catalog": lambda: {"id": None, "identifier": None, "description": None,
                        "inactiveFlag": False, "price": 0, "cost": 0,
                        "productClass": "NonInventory", "recurringFlag": False,
                        "recurringRevenue": 0, "recurringCost": 0},
}


def _ordered(kind, rec):
    """Schema field order with id first, as the vendor returns it."""
    return {k: rec.get(k) for k in SCHEMAS[kind] if k in rec}


# --- JSON patch --------------------------------------------------------------------------------

def apply_patch(kind, old, ops):
    """Vendor JSON-patch list -> dict of changed top-level fields (references replaced whole).

    Paths are case-sensitive, may start with '/', and may name a member of a reference
    ("product/id"), which still replaces the whole reference (re-resolved from that member)."""
    errs = []
    changes = {}
    if not isinstance(ops, list) or not ops:
        raise ApiError(400, "InvalidObject", "PATCH body must be a non-empty list of operations")
    schema = SCHEMAS[kind]
    for i, op in enumerate(ops):
        if not isinstance(op, dict) or not isinstance(op.get("path"), str):
            errs.append(field_error(kind, f"[{i}]", "each operation needs op, path and value"))
            continue
        name = (op.get("op") or "").lower()
        path = op["path"].lstrip("/")
        head, _, member = path.partition("/")
        if name not in ("add", "replace", "remove"):
            errs.append(field_error(kind, path, f"Unsupported patch op {op.get('op')!r}"))
        elif head not in schema:
            errs.append(field_error(kind, path, f"Cannot find property '{path}'", "InvalidPath"))
        elif head in READ_ONLY[kind]:
            errs.append(field_error(kind, path, f"{path} is read-only", "ReadOnly"))
        elif member and (not isinstance(schema[head], dict) or member not in schema[head]):
            errs.append(field_error(kind, path, f"Cannot find property '{path}'", "InvalidPath"))
        elif name == "remove":
            changes[head] = None
        elif "value" not in op:
            errs.append(field_error(kind, path, "value is required", "Required"))
        else:
            changes[head] = {member: op["value"]} if member else op["value"]
    if errs:
        raise invalid(kind, errs)
    return changes


# --- the whole simulator state -------------------------------------------------------------------

class Store:
    """All tenants, keyed by lower-cased company id (login company ids are case-insensitive)."""

    def __init__(self):
        self.tenants = {}

    def reset(self):
        self.tenants.clear()

    def tenant(self, company_id):
        return self.tenants.get(str(company_id).casefold())

    def add_tenant(self, tenant):
        self.tenants[tenant.company_id.casefold()] = tenant
        return tenant

    def load_set(self, doc, now=None):
        """One entry of a /_sim/seed "companies_sets" list -> Tenant (replacing any existing)."""
        if not isinstance(doc, dict) or not doc.get("company_id"):
            raise ValueError("each companies_sets entry needs company_id")
        creds = []
        for c in doc.get("credentials") or [{}]:
            creds.append({"public_key": c.get("public_key", "public"),
                          "private_key": c.get("private_key", "private"),
                          "client_id": c.get("client_id"),
                          "read_only": bool(c.get("read_only", False))})
        tenant = Tenant(doc["company_id"], doc.get("name"), creds)
        stamp = now or "2025-01-01T00:00:00Z"
        try:
            for kind, key in (("company", "companies"), ("catalog", "catalog"),
                              ("agreement", "agreements")):
                for body in doc.get(key) or []:
                    tenant.create(kind, body, strict=False, now=stamp)
            for body in doc.get("additions") or []:
                agr = body.get("agreementId", body.get("agreement_id"))
                tenant.create("addition", body, agreement_id=agr, strict=False, now=stamp)
        except ApiError as exc:
            raise ValueError(f"{exc.message}: {exc.errors}") from None
        return self.add_tenant(tenant)
